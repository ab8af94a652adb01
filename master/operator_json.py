"""Operator API (v1, `master.proto`) JSON shapes rendered from the folded state, and the operator
SUBSCRIBE events derived from committed events (mesos-v1-api.md sections 6 and 6.1).

Mesos vocabulary, not /master/state's: IDs as {"value": ..}, times as TimeInfo {"nanoseconds": int},
resources as v1 Resource lists in the "ENDPOINT" format Mesos uses for operator output (the
`reservations` stack plus the legacy `role`), `framework_info` / `agent_info` sub-messages.

`derive(shadow, env)` is a pure function of a state and the next committed event: it folds the
event into `shadow` and returns the operator events it causes. A SUBSCRIBE stream keeps its own
shadow (a clone of the state it rendered SUBSCRIBED from), so it needs nothing from the applier
but the committed batches, and every event is rendered from the state exactly at its index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.vocab import CHECK_REASONS
from master import codec
from master.state import TERMINAL_STATES, Agent, Framework, Offer, State, Task, apply

# Operator output reports the master's own task states, never a framework's downgraded view.
_ALL_STATES = ("PARTITION_AWARE", "TASK_KILLING_STATE")
_REFINED = ("RESERVATION_REFINEMENT",)


def time_info(ts: float) -> dict:
    return {"nanoseconds": int(round(ts * 1e9))}


# While a GET_* response is built (`_memoized`): rendered resources by their input. Most of a big cluster's agents
# and tasks hold one of a few resource shapes, and rendering them was most of a GET_STATE build. The output may
# then share dicts between places, so it is only for output that is serialized, never changed.
_memo: dict | None = None


@contextlib.contextmanager
def _memoized() -> Iterator[None]:
    global _memo
    if _memo is not None:  # nested (get_state builds its parts): the outer build's memo
        yield
        return
    _memo = {}
    try:
        yield
    finally:
        _memo = None


def resources(res, alloc_role: str | None = None, dynamic=()) -> list[dict]:
    """v1 Resources in Mesos's ENDPOINT format: the post-refinement `reservations` stack plus `role`; reserved
    resources found in `dynamic` (an agent's dynamic reservations) are DYNAMIC, the others STATIC."""
    if _memo is not None:
        key = ("r", tuple(res), alloc_role, tuple(dynamic))
        if (hit := _memo.get(key)) is None:
            hit = _memo[key] = _resources(res, alloc_role, dynamic)
        return hit
    return _resources(res, alloc_role, dynamic)


def _resources(res, alloc_role: str | None, dynamic=()) -> list[dict]:
    res = Resources(res)
    out = codec.resources_out(res, _REFINED, alloc_role, dynamic=dynamic)
    for d, r in zip(out, res, strict=False):
        d["role"] = r.role
    return out


def _by_role(items: list[tuple[str, list]]) -> list[dict]:
    """Resources held under several allocation roles, each with its `allocation_info`."""
    if _memo is not None:
        key = ("b", tuple((role, tuple(res)) for role, res in items))
        if (hit := _memo.get(key)) is None:
            hit = _memo[key] = _by_role_of(items)
        return hit
    return _by_role_of(items)


def _by_role_of(items: list[tuple[str, list]]) -> list[dict]:
    roles: dict[str, Resources] = {}
    for role, res in items:
        roles[role] = roles.get(role, Resources()) + Resources(res)
    return [d for role in sorted(roles) for d in resources(roles[role], role)]


# ---- Task, Framework, Agent ------------------------------------------------------------------------


def status(framework_id: str, task_id: str, agent_id: str | None, st: ev.TaskStatus) -> dict:
    return codec.status_out(framework_id, task_id, agent_id, st, _ALL_STATES)


def task(state: State, t: Task) -> dict:
    spec = t.spec
    d: dict = {"name": spec.name, "task_id": codec.ident(t.task_id), "framework_id": codec.ident(t.framework_id),
               "agent_id": codec.ident(t.agent_id), "state": t.state,
               "resources": resources(spec.resources, spec.role),
               "statuses": [status(t.framework_id, t.task_id, t.agent_id, s) for s in t.statuses]}
    last = next((s for s in reversed(t.statuses) if s.uuid), None)
    if last is not None:  # the latest update sent to the framework with a uuid (acknowledged or not)
        d["status_update_state"], d["status_update_uuid"] = last.state, last.uuid
    if spec.executor is not None:
        d["executor_id"] = codec.ident(spec.executor.executor_id)
    if spec.labels:
        d["labels"] = codec.labels_out(spec.labels)
    if (container := codec.container_out(spec)) is not None:
        d["container"] = container
    if spec.health_check is not None:
        d["health_check"] = codec.health_check_out(spec.health_check, True)
    if t.kill_grace_seconds is not None:
        d["kill_policy"] = {"grace_period": {"nanoseconds": int(round(t.kill_grace_seconds * 1e9))}}
    fw = state.frameworks.get(t.framework_id)
    user = spec.command.user or (fw.info.user if fw is not None else None)
    if user:
        d["user"] = user
    if not d["statuses"]:
        del d["statuses"]  # repeated fields are omitted when empty
    return d


class Groups:
    """Tasks and offers grouped by agent and by framework, in one pass over each, in the state's own order.

    The GET_* builders need, for every agent and framework, its tasks and offers; scanning all of them once per
    agent or framework is quadratic (10,000 agents x 10,000 tasks: a minute of a blocked event loop). A builder
    of one item (an operator event) passes none and gets the scan, which is the same output."""

    def __init__(self, state: State):
        self.tasks_on: dict[str, list[Task]] = {}
        for t in state.all_tasks():
            self.tasks_on.setdefault(t.agent_id, []).append(t)
        self.offers_on: dict[str, list[Offer]] = {}
        self.offers_to: dict[str, list[Offer]] = {}
        for o in state.offers.values():
            self.offers_on.setdefault(o.agent_id, []).append(o)
            self.offers_to.setdefault(o.framework_id, []).append(o)


def framework(state: State, fw: Framework, groups: Groups | None = None) -> dict:
    fid = fw.framework_id
    fw_offers = groups.offers_to.get(fid, []) if groups is not None else [
        o for o in state.offers.values() if o.framework_id == fid]
    d: dict = {"framework_info": codec.framework_info_out(fid, fw.info), "active": fw.active,
               "connected": fw.connected,
               # Known from before this leader but not re-subscribed to it yet: what Mesos calls recovered.
               "recovered": not fw.connected and fw.disconnected_by_failover,
               "registered_time": time_info(fw.registered_at)}
    if fw.reregistered_at is not None:
        d["reregistered_time"] = time_info(fw.reregistered_at)
    if fw.disconnected_at is not None:
        d["unregistered_time"] = time_info(fw.disconnected_at)
    offers = []
    for o in fw_offers:
        agent = state.agents.get(o.agent_id)
        if agent is not None:
            offers.append(codec.offer_out(o.offer_id, fid, o.agent_id, agent.hostname, agent.http, o.role,
                                          o.resources, ["MULTI_ROLE", *_REFINED], agent.attributes, agent.dynamic))
    if offers:
        d["offers"] = offers
    allocated = _by_role([(t.spec.role, t.spec.resources) for t in state.tasks.get(fid, {}).values()
                          if not t.terminal])
    offered = _by_role([(o.role, o.resources) for o in fw_offers])
    if allocated:
        d["allocated_resources"] = allocated
    if offered:
        d["offered_resources"] = offered
    return d


def agent_info(a: Agent) -> dict:
    _, _, port = a.http.rpartition(":")
    # AgentInfo.resources: what the agent's flags give it (Mesos), so without the dynamic reservations the log made
    dyn = Resources(a.dynamic)
    flags = Resources(a.resources) - dyn + dyn.as_unreserved() if dyn else a.resources
    d: dict = {"hostname": a.hostname, "port": int(port or 5051), "resources": resources(flags),
               "id": codec.ident(a.agent_id)}
    if a.attributes:
        d["attributes"] = [{"name": l.key, "type": "TEXT", "text": {"value": l.value}} for l in a.attributes]
    return d


def agent(state: State, a: Agent, version: str, groups: Groups | None = None) -> dict:
    d: dict = {"agent_info": agent_info(a), "active": a.connected, "deactivated": False, "version": version,
               "pid": f"slave(1)@{a.http}", "registered_time": time_info(a.registered_at)}
    if a.reregistered_at is not None:
        d["reregistered_time"] = time_info(a.reregistered_at)
    d["total_resources"] = resources(a.resources, dynamic=a.dynamic)
    if groups is not None:
        tasks, offers = groups.tasks_on.get(a.agent_id, []), groups.offers_on.get(a.agent_id, [])
    else:
        tasks = [t for t in state.all_tasks() if t.agent_id == a.agent_id]
        offers = [o for o in state.offers.values() if o.agent_id == a.agent_id]
    allocated = _by_role([(t.spec.role, t.spec.resources) for t in tasks if not t.terminal])
    offered = _by_role([(o.role, o.resources) for o in offers])
    if allocated:
        d["allocated_resources"] = allocated
    if offered:
        d["offered_resources"] = offered
    if not d["total_resources"]:
        del d["total_resources"]
    return d


# ---- GET_* responses ---------------------------------------------------------------------------------


def get_tasks(state: State) -> dict:
    d: dict = {}
    with _memoized():
        tasks = [task(state, t) for t in state.all_tasks()]
        completed = [task(state, t) for t in state.completed_tasks]
    if tasks:
        d["tasks"] = tasks
    if completed:
        d["completed_tasks"] = completed
    return d


def get_executors(state: State) -> dict:
    # Drover runs command tasks only; Mesos lists no executor for those (the agent makes them up).
    return {}


def get_frameworks(state: State, groups: Groups | None = None) -> dict:
    # Removed frameworks: the state keeps only their ids, not the FrameworkInfo `completed_frameworks` needs.
    groups = groups or Groups(state)
    with _memoized():
        fws = [framework(state, fw, groups) for fw in state.frameworks.values()]
    return {"frameworks": fws} if fws else {}


def get_agents(state: State, version: str, groups: Groups | None = None) -> dict:
    groups = groups or Groups(state)
    with _memoized():
        agents = [agent(state, a, version, groups) for a in state.agents.values()]
    return {"agents": agents} if agents else {}


def get_state(state: State, version: str) -> dict:
    groups = Groups(state)
    with _memoized():
        return {"get_tasks": get_tasks(state), "get_executors": get_executors(state),
                "get_frameworks": get_frameworks(state, groups), "get_agents": get_agents(state, version, groups)}


# ---- operator SUBSCRIBE events -------------------------------------------------------------------------


def subscribed(state: State, version: str, heartbeat: float) -> dict:
    return {"type": "SUBSCRIBED", "subscribed": {"get_state": get_state(state, version),
                                                 "heartbeat_interval_seconds": float(heartbeat)}}


def _event(kind: str, body: dict) -> dict:
    return {"type": kind, kind.lower(): body}


def task_updated(t: Task, st: ev.TaskStatus) -> dict:
    return _event("TASK_UPDATED", {"framework_id": codec.ident(t.framework_id),
                                   "status": status(t.framework_id, t.task_id, t.agent_id, st), "state": t.state})


def derive(shadow: State, env: ev.Envelope, version: str) -> list[dict]:
    """Fold `env` into `shadow` and return the operator events it causes (Mesos's master.cpp emits
    them from the same transitions): TASK_ADDED for a launched or adopted task; TASK_UPDATED when a
    task's state changes; AGENT_ADDED for a new agent; FRAMEWORK_ADDED / FRAMEWORK_UPDATED on
    subscription / re-subscription; FRAMEWORK_REMOVED (after a TASK_UPDATED for each task it kills);
    AGENT_REMOVED when an agent is marked unreachable (after a TASK_UPDATED for each of its tasks), and
    AGENT_ADDED plus TASK_UPDATEDs when it comes back, as Mesos does."""
    e = env.event
    out: list[dict] = []
    if isinstance(e, ev.OffersAccepted):
        before = {s.task_id: shadow.task(e.framework_id, s.task_id) for s in e.tasks}
        apply(shadow, env)
        for s in e.tasks:
            t = shadow.task(e.framework_id, s.task_id)
            if t is not None and t is not before[s.task_id]:
                out.append(_event("TASK_ADDED", {"task": task(shadow, t)}))
    elif isinstance(e, ev.StatusUpdated):
        t = shadow.task(e.framework_id, e.task_id)
        was = t.state if t is not None else None
        apply(shadow, env)
        # As Mesos: on a new state, and on every (health) check update (a TASK_RUNNING reporting a result).
        if t is not None and was not in TERMINAL_STATES and (t.state != was or e.status.reason in CHECK_REASONS):
            out.append(task_updated(t, e.status))
    elif isinstance(e, ev.AgentRegistered):
        apply(shadow, env)
        out.append(_event("AGENT_ADDED", {"agent": agent(shadow, shadow.agents[e.agent_id], version)}))
    elif isinstance(e, ev.AgentUnreachable):
        on_agent = [t for t in shadow.all_tasks() if t.agent_id == e.agent_id and not t.terminal]
        was = {id(t): t.state for t in on_agent}
        apply(shadow, env)
        for t in on_agent:
            if t.state != was[id(t)]:
                out.append(task_updated(t, t.statuses[-1]))
        if e.agent_id in shadow.unreachable_agents:
            out.append(_event("AGENT_REMOVED", {"agent_id": codec.ident(e.agent_id)}))
    elif isinstance(e, ev.AgentReregistered):
        known = e.agent_id in shadow.agents
        back = [t for t in shadow.all_tasks() if t.agent_id == e.agent_id and t.state == "TASK_UNREACHABLE"]
        before = {(r.framework_id, r.task_id): shadow.task(r.framework_id, r.task_id) for r in e.tasks}
        apply(shadow, env)
        for t in back:  # back from unreachable: running again, or gone
            if t.state != "TASK_UNREACHABLE":
                out.append(task_updated(t, t.statuses[-1]))
        if not known:
            out.append(_event("AGENT_ADDED", {"agent": agent(shadow, shadow.agents[e.agent_id], version)}))
        for key, old in before.items():
            t = shadow.task(*key)
            if t is not None and t is not old:  # a task the log never saw launched, adopted from the agent
                out.append(_event("TASK_ADDED", {"task": task(shadow, t)}))
    elif isinstance(e, ev.FrameworkSubscribed):
        known = e.framework_id in shadow.frameworks
        apply(shadow, env)
        kind = "FRAMEWORK_UPDATED" if known else "FRAMEWORK_ADDED"
        out.append(_event(kind, {"framework": framework(shadow, shadow.frameworks[e.framework_id])}))
    elif isinstance(e, ev.FrameworkRemoved):
        fw = shadow.frameworks.get(e.framework_id)
        live = [t for t in shadow.tasks.get(e.framework_id, {}).values() if not t.terminal]
        apply(shadow, env)
        for t in live:  # the fold killed them (TASK_KILLED, REASON_FRAMEWORK_REMOVED)
            out.append(task_updated(t, t.statuses[-1]))
        if fw is not None:
            out.append(_event("FRAMEWORK_REMOVED", {"framework_info": codec.framework_info_out(fw.framework_id,
                                                                                              fw.info)}))
    else:
        apply(shadow, env)
    return out

