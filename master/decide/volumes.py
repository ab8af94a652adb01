"""The rules of RESERVE, UNRESERVE, CREATE and DESTROY, for frameworks (in ACCEPT) and operators (the operator
API's RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES, DESTROY_VOLUMES) alike.

Mesos's validation (src/master/validation.cpp, `operation::validate`) with its messages where it has one.
Drover's own rules, stated where they apply: volumes are carved from *dynamically* reserved disk only (the log
cannot tell a flag-reserved `disk(db)` from a dynamic one once a volume is made of it), and a volume's
container_path is one path component (the codec and `eventstore.resources.container_path_problem`).

Pure: the state and the call in, a reason or None out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from drover.security.acls import ACLs, authorized
from eventstore import events as ev
from eventstore.resources import UNRESERVED, Resources, key_of
from master.state import State, tasks_on_agent

# The operator calls and the offer operation each stands for.
OPERATOR_CALLS = {"RESERVE_RESOURCES": "RESERVE", "UNRESERVE_RESOURCES": "UNRESERVE",
                  "CREATE_VOLUMES": "CREATE", "DESTROY_VOLUMES": "DESTROY"}
ACL_ACTIONS = {"RESERVE": "reserve_resources", "UNRESERVE": "unreserve_resources", "CREATE": "create_volumes",
               "DESTROY": "destroy_volumes"}


@dataclass(frozen=True)
class Actor:
    """Who asks: a framework (its principal, its allocation role for the offers, whether it may hold shared
    resources) or an operator (principal only)."""

    principal: str | None
    role: str | None = None  # the offers' allocation role; None for an operator
    shared_ok: bool = True  # SHARED_RESOURCES capability (operators: always)


def validation_problem(kind: str, res: Resources, actor: Actor, checkpointed: Resources) -> str | None:
    """Why operation `kind` on `res` is invalid whatever the agent holds free (Mesos's `operation::validate`),
    or None. `checkpointed` is the agent's dynamic reservations and volumes, this call's earlier operations
    applied."""
    if not res:
        return f"{kind} names no resources"
    if kind in ("RESERVE", "UNRESERVE"):
        for r in res:
            if r.persistence is not None:
                if kind == "UNRESERVE":
                    return (f"A dynamically reserved persistent volume {Resources([r]).format()} cannot be "
                            "unreserved directly. Please destroy the persistent volume first then unreserve the "
                            "resource")
                return "Persistent volumes cannot be reserved: reserve the disk, then CREATE the volume"
            if r.role == UNRESERVED:
                return f"{kind} resources must name a reservation role"
        if kind == "RESERVE" and actor.role is not None and any(r.role != actor.role for r in res):
            return f"RESERVE must reserve for the offer's allocation role {actor.role!r}"
        if kind == "UNRESERVE" and not checkpointed.non_volumes().contains(res):
            held = checkpointed.non_volumes().format() or "none"
            return (f"Resource {res.format()} is not dynamically reserved on this agent (its dynamic reservations "
                    f"outside volumes: {held}; disk of a persistent volume is released by destroying the volume)")
        return None
    for r in res:
        if r.persistence is None:
            return f"Not a persistent volume: Resource {Resources([r]).format()} does not have DiskInfo"
    if kind == "CREATE":
        return _create_problem(res, actor, checkpointed)
    if not checkpointed.contains(res):
        return f"Persistent volumes not found: {res.format()} (a volume is named by its role, id and size)"
    return None


def _create_problem(res: Resources, actor: Actor, checkpointed: Resources) -> str | None:
    existing = {(role, pid) for role, pid in checkpointed.persistence_ids()}
    seen: set[tuple[str, str]] = set()
    for r in res:
        assert r.persistence is not None
        if r.volume is not None and r.volume.mode == "RO":
            return "Not a persistent volume: Read-only persistent volume not supported"
        if r.shared and not actor.shared_ok:
            return (f"Create volume operation for '{Resources([r]).format()}' has been attempted by a framework "
                    "with no SHARED_RESOURCES capability")
        if actor.principal is not None:
            if r.persistence.principal is None:
                return (f"Create volume operation attempted by principal '{actor.principal}', but there is a "
                        "volume in the operation with no principal set in 'disk.persistence'")
            if r.persistence.principal != actor.principal:
                return (f"Create volume operation attempted by authenticated principal '{actor.principal}', which "
                        f"does not match a volume in the operation with principal '{r.persistence.principal}' "
                        "set in 'disk.persistence'")
        pid = (r.role, r.persistence.id)
        if pid in existing or pid in seen:
            return f"Persistence ID '{r.persistence.id}' is not unique"
        seen.add(pid)
        if actor.role is not None and r.role != actor.role:
            return f"Persistent volume {Resources([r]).format()} is not reserved for the offer's role {actor.role!r}"
    if not checkpointed.non_volumes().contains(res.stripped()):
        return (f"Persistent volumes are created from dynamically reserved disk: {res.stripped().format()} is not "
                "reserved dynamically on this agent (RESERVE it first)")
    return None


def acl_problem(kind: str, res: Resources, principal: str | None, acls: ACLs) -> str | None:
    """The ACL of the operation, judged per role (and, for DESTROY, per volume creator, which Mesos's
    `creator_principals` names)."""
    action = ACL_ACTIONS[kind]
    if kind == "DESTROY":
        for r in res:
            creator = r.persistence.principal if r.persistence is not None else None
            if not authorized(acls, action, principal, r.role, by={"creator_principals": creator}):
                return (f"Not authorized to destroy persistent volume '{r.persistence.id if r.persistence else ''}' "
                        f"of role '{r.role}'")
        return None
    for role in sorted({r.role for r in res}):
        if not authorized(acls, action, principal, role):
            return f"Not authorized to {kind.lower()} resources for role '{role}'"
    return None


def volumes_in_use(state: State, agent_id: str, volumes: Resources) -> bool:
    """Does a task on the agent that is not terminal (unreachable ones too: they may come back) use one of
    `volumes`? Mesos: "Persistent volumes in use"."""
    return specs_use([t.spec for t in tasks_on_agent(state, agent_id) if not t.terminal], volumes)


def specs_use(specs: Iterable[ev.TaskSpec], volumes: Resources) -> bool:
    """Does one of these tasks (or its task group's executor) use one of `volumes`?"""
    keys = {key_of(r)[:3] for r in volumes}
    for spec in specs:
        res = list(spec.resources) + (list(spec.executor.resources) if spec.executor is not None else [])
        if any(r.persistence is not None and key_of(r)[:3] in keys for r in res):
            return True
    return False


def offers_holding(state: State, agent_id: str, res: Resources, skip: Iterable[str] = ()) -> list[str]:
    """Ids of live offers on the agent holding any record of a key `res` needs, but those in `skip` (sorted:
    decisions are deterministic)."""
    keys = {key_of(r) for r in res}
    skipped = set(skip)
    out = []
    for o in state.offers.values():
        if o.agent_id != agent_id or o.offer_id in skipped:
            continue
        if any(key_of(r) in keys for r in o.resources):
            out.append(o.offer_id)
    return sorted(out)
