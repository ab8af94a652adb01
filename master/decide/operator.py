"""Deciders for the operator API's writes (`POST /api/v1`).

    decide_update_weights(state, call, now, config) -> Decision   WEIGHTS_UPDATED
    decide_update_quota(state, call, now, config) -> Decision     QUOTA_UPDATED per role
    decide_teardown_framework(state, call, now, config)           OFFERS_RESCINDED, FRAMEWORK_REMOVED
    decide_agent_operation(state, call, now, config)              OFFERS_RESCINDED, AGENT_OPERATIONS_APPLIED
      (RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES, DESTROY_VOLUMES; reply 202)

The handler turns the JSON into these calls (shape and types: master/api/operator.py); every value rule is
checked here, with Mesos's messages where it has them: roles valid, weights finite and in (0, MAX_WEIGHT],
quota quantities finite and in [0, MAX_SCALAR], a guarantee no larger than its limit, quota only on top-level
roles, and, unless `force`, total guarantees within the cluster's capacity. Pure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

from drover.security.acls import authorized
from eventstore import events as ev
from eventstore.resources import Resources, conversion, round3
from eventstore.values import MAX_NAME_LENGTH, MAX_SCALAR, MAX_WEIGHT, MIN_WEIGHT, id_problem, role_problem
from master.decide import DecideConfig, Decision
from master.allocation import allocator_of
from master.decide import volumes as vol
from master.decide.gate import events_problem
from master.state import State

MAX_QUOTA_NAMES = 1000  # resource names in one role's guarantees (or limits)
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


@dataclass(frozen=True)
class WeightInfo:
    role: str
    weight: float


@dataclass(frozen=True)
class UpdateWeights:
    weight_infos: list[WeightInfo]
    principal: str | None = None  # who the call was authenticated as (the handler's; the ACLs judge it)


@dataclass(frozen=True)
class QuotaConfig:
    role: str
    guarantees: Mapping[str, float] = field(default_factory=dict)
    limits: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateQuota:
    quota_configs: list[QuotaConfig]
    force: bool = False
    principal: str | None = None


@dataclass(frozen=True)
class TeardownFramework:
    framework_id: str
    principal: str | None = None


def _count_problem(n: int, what: str, config: DecideConfig) -> str | None:
    if n == 0:
        return f"Expecting '{what}' to be present and non-empty"
    if n > config.limits.max_roles_per_call:
        return f"'{what}' has {n} entries, more than the limit of {config.limits.max_roles_per_call} " \
               "(max_roles_per_call)"
    return None


def decide_update_weights(state: State, call: UpdateWeights, now: float, config: DecideConfig) -> Decision:
    if (why := _count_problem(len(call.weight_infos), "update_weights.weight_infos", config)):
        return Decision.refuse(400, why)
    weights: dict[str, float] = {}
    for i, w in enumerate(call.weight_infos):
        if (why := role_problem(w.role)):
            return Decision.refuse(400, f"'update_weights.weight_infos[{i}].role': {why}")
        if w.role == "*":
            return Decision.refuse(400, "Updating the weight of role '*' is not allowed")
        if not authorized(config.acls, "update_weights", call.principal, w.role):
            return Decision.refuse(403, f"Not authorized to update the weight of role '{w.role}'")
        weight = w.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            return Decision.refuse(400, f"Weight of role '{w.role}' must be a positive number no smaller than "
                                        f"{MIN_WEIGHT:g} "
                                        f"and no larger than {MAX_WEIGHT:g}, got {weight}")
        weights[w.role] = float(weight)  # a role named twice: the last one counts
    event = ev.WeightsUpdated(weights=dict(sorted(weights.items())))
    if (why := events_problem([event])):
        return Decision.refuse(400, f"Invalid weights: {why}")
    return Decision(events=[event])


def _quantities(q: Mapping[str, float], where: str) -> tuple[dict[str, float] | None, str | None]:
    """Resource name -> quantity, each finite in [0, MAX_SCALAR], rounded as Mesos's fixed point does."""
    if len(q) > MAX_QUOTA_NAMES:
        return None, f"'{where}' names {len(q)} resources, more than the limit of {MAX_QUOTA_NAMES}"
    out = {}
    for name, v in q.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or _CONTROL_OR_SPACE.search(name):
            return None, f"'{where}': invalid resource name {str(name)[:64]!r}"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= MAX_SCALAR:
            return None, f"'{where}.{name}.value' must be a finite non-negative number no larger than " \
                         f"{MAX_SCALAR:g}, got {v}"
        out[name] = round3(float(v))
    return dict(sorted(out.items())), None


def cluster_capacity(state: State) -> dict[str, float]:
    """Scalar totals over the reachable agents, by name (what quota guarantees are held against)."""
    totals: dict[str, float] = {}
    for agent in state.agents.values():
        for r in agent.resources:
            if r.type == "SCALAR":
                totals[r.name] = round3(totals.get(r.name, 0.0) + r.scalar)
    return totals


def decide_update_quota(state: State, call: UpdateQuota, now: float, config: DecideConfig) -> Decision:
    if (why := _count_problem(len(call.quota_configs), "update_quota.quota_configs", config)):
        return Decision.refuse(400, why)
    configs: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for i, c in enumerate(call.quota_configs):
        w = f"update_quota.quota_configs[{i}]"
        if (why := role_problem(c.role)):
            return Decision.refuse(400, f"'{w}.role': {why}")
        if c.role == "*" or "/" in c.role:
            return Decision.refuse(400, f"{w}.role: quota can only be set on a top-level role other than '*', "
                                        f"not {c.role!r}")
        if c.role in configs:
            return Decision.refuse(400, f"{w}.role: role {c.role!r} is configured more than once")
        if not authorized(config.acls, "update_quotas", call.principal, c.role):
            return Decision.refuse(403, f"Not authorized to update the quota of role '{c.role}'")
        g, why = _quantities(c.guarantees, f"{w}.guarantees")
        if g is None:
            return Decision.refuse(400, why or "invalid guarantees")
        lim, why = _quantities(c.limits, f"{w}.limits")
        if lim is None:
            return Decision.refuse(400, why or "invalid limits")
        for name, v in g.items():
            if name in lim and v > lim[name]:
                return Decision.refuse(400, f"{w}: the guarantee of {name} ({v:g}) exceeds its limit ({lim[name]:g})")
        configs[c.role] = (g, lim)
    if not call.force:
        # Mesos refuses guarantees the cluster cannot hold, unless forced.
        after = {r: dict(q.guarantees) for r, q in state.quotas.items()}
        after.update({r: g for r, (g, _) in configs.items()})
        totals = cluster_capacity(state)
        for name in sorted({n for g in after.values() for n in g}):
            want = 0.0
            for role in sorted(after):
                want = round3(want + after[role].get(name, 0.0))
            if want > totals.get(name, 0.0):
                return Decision.refuse(400, f"Total quota guarantees for {name} ({want:g}) exceed the cluster's "
                                            f"capacity ({totals.get(name, 0.0):g}); use 'force' to set them anyway")
    events: list[ev.Event] = [ev.QuotaUpdated(role=r, guarantees=g, limits=lim) for r, (g, lim) in configs.items()]
    if (why := events_problem(events)):
        return Decision.refuse(400, f"Invalid quota: {why}")
    return Decision(events=events)


def decide_teardown_framework(state: State, call: TeardownFramework, now: float, config: DecideConfig) -> Decision:
    """The operator's TEARDOWN: the framework, connected or not, is removed (its offers rescinded; effects kill its
    tasks and close its stream). The `teardown_frameworks` ACL judges the framework's principal."""
    if (why := id_problem(call.framework_id, "'teardown.framework_id.value'")) is not None:
        return Decision.refuse(400, why)
    fw = state.frameworks.get(call.framework_id)
    if fw is None:
        return Decision.refuse(400, f"Framework {call.framework_id} not found")
    if not authorized(config.acls, "teardown_frameworks", call.principal, fw.info.principal):
        return Decision.refuse(403, f"Not authorized to tear down framework {call.framework_id}")
    events: list[ev.Event] = []
    offer_ids = [o.offer_id for o in state.offers.values() if o.framework_id == call.framework_id]
    if offer_ids:
        events.append(ev.OffersRescinded(offer_ids=offer_ids, reason="framework_removed"))
    events.append(ev.FrameworkRemoved(framework_id=call.framework_id, reason="teardown"))
    return Decision(events=events)


@dataclass(frozen=True)
class AgentOperation:
    """RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES or DESTROY_VOLUMES on one agent."""

    call: str  # a key of volumes.OPERATOR_CALLS
    agent_id: str
    resources: Resources | None  # None when `problem`
    problem: str | None = None  # why the resources were refused by the codec (Mesos's texts)
    principal: str | None = None


def decide_agent_operation(state: State, call: AgentOperation, now: float, config: DecideConfig) -> Decision:
    """An operator's operation on an agent's *unallocated* resources (Mesos `Master::Http::_operation`): 400 for
    an unknown agent or an invalid operation, 403 for the ACL, then offers on the agent are rescinded (in offer id
    order) until its free resources hold what the operation consumes; 409 if even all of them do not; else the
    operation is applied and the answer is 202 (the agent learns it from CHECKPOINT_RESOURCES)."""
    kind = vol.OPERATOR_CALLS[call.call]
    if (why := id_problem(call.agent_id, "'agent_id.value'")) is not None:
        return Decision.refuse(400, why)
    agent = state.agents.get(call.agent_id)
    free_now = allocator_of(state).agents.get(call.agent_id)
    if agent is None or free_now is None:
        return Decision.refuse(400, "No agent found with specified ID")
    invalid = f"Invalid {kind} operation on agent {call.agent_id}: "
    if call.problem is not None or call.resources is None:
        return Decision.refuse(400, invalid + (call.problem or "no resources"))
    res = call.resources
    why = vol.validation_problem(kind, res, vol.Actor(call.principal), Resources(agent.dynamic))
    if why is None and kind == "DESTROY" and vol.volumes_in_use(state, call.agent_id, res):
        why = "Persistent volumes in use"
    if why is not None:
        return Decision.refuse(400, invalid + why)
    if (why := vol.acl_problem(kind, res, call.principal, config.acls)) is not None:
        return Decision.refuse(403, why)
    consumed, _ = conversion(kind, res)
    free = free_now.available
    # A shared volume is free while offers hold it (the allocator keeps it available): destroying it rescinds every
    # offer holding it, as a framework's DESTROY does (Mesos's greedy rescinds below would leave the others).
    rescind = vol.offers_holding(state, call.agent_id, consumed.shared()) if consumed.has_shared() else []
    if not free.contains(consumed):
        for offer in sorted((o for o in state.offers.values() if o.agent_id == call.agent_id),
                            key=lambda o: o.offer_id):
            if offer.offer_id in rescind:
                continue
            rescind.append(offer.offer_id)
            free = free + Resources(offer.resources)
            if free.contains(consumed):
                break
    if not free.contains(consumed):
        return Decision.refuse(409, f"The agent's unallocated resources ({free.format() or 'none'}) do not contain "
                                    f"{consumed.format()}, which the operation needs (the rest is used by tasks)")
    events: list[ev.Event] = []
    if rescind:
        events.append(ev.OffersRescinded(offer_ids=rescind, reason="operator_operation"))
    events.append(ev.AgentOperationsApplied(agent_id=call.agent_id, call=call.call,  # type: ignore[arg-type]
                                            operations=[ev.ResourceOperation(kind, res.to_list())],  # type: ignore[arg-type]
                                            principal=call.principal))
    if (why := events_problem(events)):
        return Decision.refuse(400, invalid + why)
    return Decision(events=events, reply=202)
