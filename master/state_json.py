"""The legacy `/master/state` JSON (v0 vocabulary: slaves, plain-string IDs, resource summaries)."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from eventstore.resources import Resource, Resources
from eventstore.events import TaskStatus
from master.codec import check_status_out, container_out, health_check_out, resources_out, resources_summary
from master.state import Agent, Framework, Offer, State, Task, holdings

_REFINED = ("RESERVATION_REFINEMENT",)
MAX_COMPLETED_TASKS_PER_FRAMEWORK = 1000  # Mesos's --max_completed_tasks_per_framework default


class _Summaries:
    """Resource summaries by their input, for one render: most agents and tasks of a big cluster hold one of a few
    resource shapes, and summing them was most of the render. Summaries are shared between places in the output,
    which is serialized, never changed."""

    def __init__(self) -> None:
        self._memo: dict[tuple, dict] = {}

    def of(self, items: list[Resource]) -> dict:
        key = tuple(items)
        if (hit := self._memo.get(key)) is None:
            hit = self._memo[key] = resources_summary(Resources(items))
        return hit

    def agent(self, resources: list[Resource]) -> tuple[dict, dict, dict]:
        """An agent's total, unreserved and reserved-by-role summaries."""
        key = ("agent", *resources)
        if (hit := self._memo.get(key)) is None:
            total = Resources(resources)
            hit = self._memo[key] = (
                resources_summary(total), resources_summary(total.unreserved()),
                {role: resources_summary(Resources(r for r in total if r.role == role))
                 for role in sorted({r.role for r in total} - {"*"})})
        return hit


def _status(s: TaskStatus) -> dict:
    d: dict = {"state": s.state, "timestamp": float(s.timestamp)}
    if s.healthy is not None:
        d["healthy"] = s.healthy
    if s.check_status is not None:
        d["check_status"] = check_status_out(s.check_status)
    if s.container_id:
        # as the v1 API's TaskStatus (codec.status_out): Mesos's /master/state has it too (network_infos: Drover's
        # agents report no container addresses)
        d["container_status"] = {"container_id": {"value": s.container_id}}
    return d


def _task(t: Task, summaries: _Summaries | None = None) -> dict:
    d = {
        "id": t.task_id, "name": t.spec.name, "framework_id": t.framework_id,
        "executor_id": t.spec.executor.executor_id if t.spec.executor is not None else "",
        "slave_id": t.agent_id, "state": t.state,
        "resources": (summaries or _Summaries()).of(t.spec.resources),
        "statuses": [_status(s) for s in t.statuses],
    }
    if t.spec.health_check is not None:
        d["health_check"] = health_check_out(t.spec.health_check, True)
    if t.spec.labels:
        d["labels"] = [{"key": l.key, "value": l.value} for l in t.spec.labels]
    if (container := container_out(t.spec)) is not None:
        d["container"] = container
    return d


class _Grouped:
    """Tasks, offers and completed tasks grouped once per render, in the state's order (the same sums as
    State.used_on_agent and friends, which scan everything per agent: quadratic at 10,000 agents)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.summaries = _Summaries()
        self.used_on: dict[str, list[Resource]] = {}
        for t, held in holdings(state.all_tasks()):  # a task group's executor resources with its first task
            self.used_on.setdefault(t.agent_id, []).extend(held)
        self.offers_on: dict[str, list[Resource]] = {}
        self.offers_to: dict[str, list[Offer]] = {}
        for o in state.offers.values():
            self.offers_on.setdefault(o.agent_id, []).extend(o.resources)
            self.offers_to.setdefault(o.framework_id, []).append(o)
        self.completed_of: dict[str, list[Task]] = {}
        for t in state.completed_tasks:
            self.completed_of.setdefault(t.framework_id, []).append(t)


def framework(g: _Grouped, fw: Framework, *, completed: bool = False) -> dict:
    """One framework as Mesos's /master/state and /frameworks show it; `completed`: a torn-down one (no tasks or
    offers of its own any more, only its completed tasks)."""
    state, summaries = g.state, g.summaries
    used = Resources() if completed else state.used_by_framework(fw.framework_id)
    fw_offers = [] if completed else g.offers_to.get(fw.framework_id, [])
    offered = Resources(r for o in fw_offers for r in o.resources)
    tasks = [] if completed else list(state.tasks.get(fw.framework_id, {}).values())
    d = {
        "id": fw.framework_id, "name": fw.info.name, "user": fw.info.user, "hostname": fw.info.hostname or "",
        "webui_url": fw.info.webui_url or "", "active": fw.active, "connected": fw.connected, "recovered": False,
        "failover_timeout": float(fw.info.failover_timeout), "checkpoint": fw.info.checkpoint,
        "registered_time": float(fw.registered_at), "capabilities": list(fw.info.capabilities),
        "used_resources": resources_summary(used), "offered_resources": resources_summary(offered),
        "resources": resources_summary(used + offered),
        "tasks": [_task(t, summaries) for t in tasks if t.state != "TASK_UNREACHABLE"],
        "unreachable_tasks": [_task(t, summaries) for t in tasks if t.state == "TASK_UNREACHABLE"],
        "completed_tasks": [_task(t, summaries)
                            for t in g.completed_of.get(fw.framework_id, [])[-MAX_COMPLETED_TASKS_PER_FRAMEWORK:]],
        "offers": [{"id": o.offer_id, "framework_id": o.framework_id, "slave_id": o.agent_id,
                    "resources": summaries.of(o.resources)} for o in fw_offers],
        "executors": [],
    }
    if fw.reregistered_at is not None:
        d["reregistered_time"] = float(fw.reregistered_at)
    if fw.disconnected_at is not None:
        d["unregistered_time"] = float(fw.disconnected_at)
    if fw.info.principal:
        d["principal"] = fw.info.principal
    if fw.info.multi_role:
        d["roles"] = list(fw.info.roles)
    else:
        d["role"] = fw.info.roles[0]
    return d


def slave(g: _Grouped, a: Agent, version: str) -> dict:
    """One agent as Mesos's /master/state shows it (/slaves adds the other `*_full` forms: `slave_full`)."""
    total, unreserved, reserved = g.summaries.agent(a.resources)
    ahost, _, aport = a.http.rpartition(":")
    d = {
        "id": a.agent_id, "hostname": a.hostname, "port": int(aport or 0), "pid": f"slave(1)@{a.http}",
        "attributes": {l.key: l.value for l in a.attributes}, "registered_time": float(a.registered_at),
        "resources": total, "used_resources": g.summaries.of(g.used_on.get(a.agent_id, [])),
        "offered_resources": g.summaries.of(g.offers_on.get(a.agent_id, [])),
        "unreserved_resources": unreserved, "reserved_resources": reserved,
        "active": a.connected, "deactivated": False, "version": version, "capabilities": [],
        # Mesos's full form of the reservations: each record with its DYNAMIC/STATIC reservation and any
        # persistent volume (disk.persistence, disk.volume, shared).
        "reserved_resources_full": {role: resources_out([r for r in a.resources if r.role == role],
                                                        _REFINED, dynamic=a.dynamic)
                                    for role in reserved},
    }
    if a.reregistered_at is not None:
        d["reregistered_time"] = float(a.reregistered_at)
    return d


def slave_full(g: _Grouped, a: Agent, version: str) -> dict:
    """One agent as Mesos's /slaves shows it: /master/state's fields and the full form of its unreserved, used
    and offered resources."""
    d = slave(g, a, version)
    d["unreserved_resources_full"] = resources_out(a.total().unreserved(), _REFINED)
    d["used_resources_full"] = resources_out(Resources(g.used_on.get(a.agent_id, [])), _REFINED, dynamic=a.dynamic)
    d["offered_resources_full"] = resources_out(Resources(g.offers_on.get(a.agent_id, [])), _REFINED,
                                                dynamic=a.dynamic)
    return d


def completed_frameworks(g: _Grouped) -> list[dict]:
    """The torn-down frameworks the fold keeps a record of, oldest first, with their completed tasks."""
    return [framework(g, fw, completed=True) for fw in g.state.completed_frameworks.values()]


def render(state: State, *, master_id: str, http: str, leader_http: str | None, version: str, start_time: float,
           elected_time: float | None, flags: dict[str, str]) -> dict:
    host, _, port = http.rpartition(":")
    lhost, _, lport = (leader_http or "").rpartition(":")
    g = _Grouped(state)
    out = {
        "version": version, "build_date": "", "build_time": 0.0, "build_user": "", "start_time": float(start_time),
        "id": state.cluster_id or "", "pid": f"master@{http}", "hostname": host,
        "activated_slaves": float(sum(1 for a in state.agents.values() if a.connected)),
        "deactivated_slaves": 0.0, "unreachable_slaves": float(len(state.unreachable_agents)),
        "flags": flags, "slaves": [slave(g, a, version) for a in state.agents.values()], "recovered_slaves": [],
        "frameworks": [framework(g, fw) for fw in state.frameworks.values()],
        "completed_frameworks": completed_frameworks(g), "orphan_tasks": [], "unregistered_frameworks": [],
    }
    if elected_time is not None:
        out["elected_time"] = float(elected_time)
    if leader_http:
        out["leader"] = f"master@{leader_http}"
        out["leader_info"] = {"id": state.cluster_id or "", "hostname": lhost, "port": int(lport or 0),
                              "pid": f"master@{leader_http}",
                              "address": {"hostname": lhost, "ip": lhost, "port": int(lport or 0)}}
    return out


# ---- Mesos's smaller read endpoints: the same per-object builders as /master/state --------------------------

TASK_LIMIT = 100  # /tasks' default `limit`, as Mesos's
MAX_TASK_LIMIT = 1000  # a larger `limit` is served as this one: the work of one request stays bounded
_SUMMARY_STATES = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_KILLED",
                   "TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_UNREACHABLE")


def slaves(state: State, version: str, slave_id: str | None = None) -> dict:
    """Mesos's /slaves: the registered agents (or the one `slave_id`), each with the full form of its resources."""
    g = _Grouped(state)
    return {"slaves": [slave_full(g, a, version) for a in state.agents.values()
                       if slave_id is None or a.agent_id == slave_id],
            "recovered_slaves": []}


def frameworks(state: State, framework_id: str | None = None) -> dict:
    """Mesos's /frameworks: the frameworks and the completed ones (or the one `framework_id`), as /master/state."""
    g = _Grouped(state)
    return {"frameworks": [framework(g, fw) for fw in state.frameworks.values()
                           if framework_id is None or fw.framework_id == framework_id],
            "completed_frameworks": [d for d in completed_frameworks(g)
                                     if framework_id is None or d["id"] == framework_id],
            "unregistered_frameworks": []}


def _started(t: Task) -> float:
    """Mesos sorts /tasks by a task's first status; a task without one yet (just launched) by its launch."""
    return float(t.statuses[0].timestamp) if t.statuses else float(t.launched_at)


def tasks(state: State, *, framework_id: str | None = None, task_id: str | None = None, limit: int = TASK_LIMIT,
          offset: int = 0, order: str = "desc") -> dict:
    """Mesos's /tasks: live, unreachable and completed tasks, by their first status's time (newest first unless
    `order` is "asc"), `limit` of them from `offset`. Only the page is rendered, and selecting it costs
    O(n log(offset + limit)) for n tasks; ties are broken by (framework, task) id, so pages are stable."""
    limit = max(0, min(limit, MAX_TASK_LIMIT))
    chosen = [t for t in (*state.all_tasks(), *state.completed_tasks)
              if (framework_id is None or t.framework_id == framework_id) and (task_id is None or t.task_id == task_id)]
    n = offset + limit
    if order == "asc":
        page = heapq.nsmallest(n, chosen, key=lambda t: (_started(t), t.framework_id, t.task_id))
    else:
        page = heapq.nlargest(n, chosen, key=lambda t: (_started(t), t.framework_id, t.task_id))
    summaries = _Summaries()
    return {"tasks": [_task(t, summaries) for t in page[offset:]]}


def _quantities(res: Resources) -> dict[str, float]:
    return {name: float(q) for name, q in sorted(res.quantities().items())}


def roles(state: State, may_view: Callable[[str], bool]) -> dict:
    """Mesos's /roles: every role with a framework, a weight or a quota (those `may_view` lets through), with its
    weight, quota, and what is allocated to it, offered to it and reserved for it (as quantities)."""
    names = set(state.weights) | set(state.quotas)
    for fw in state.frameworks.values():
        names |= set(fw.info.roles)
    allocated: dict[str, list[Resource]] = {}
    for t, held in holdings(state.all_tasks()):
        allocated.setdefault(t.spec.role, []).extend(held)
    offered: dict[str, list[Resource]] = {}
    for o in state.offers.values():
        offered.setdefault(o.role, []).extend(o.resources)
    reserved: dict[str, list[Resource]] = {}
    for a in state.agents.values():
        for r in a.resources:
            if r.role != "*":
                reserved.setdefault(r.role, []).append(r)
    out = []
    for name in sorted(names):
        if not may_view(name):
            continue
        alloc, offer = Resources(allocated.get(name, [])), Resources(offered.get(name, []))
        held = Resources(reserved.get(name, []))
        quota = state.quotas.get(name)
        # Quota consumed, as Mesos counts it: the role's reservations, and what it is allocated beyond them.
        consumed = held + alloc.unreserved()
        out.append({
            "name": name, "weight": float(state.weights.get(name, 1.0)),
            "quota": {"role": name, "guarantee": dict(sorted(quota.guarantees.items())) if quota else {},
                      "limit": dict(sorted(quota.limits.items())) if quota else {},
                      "consumed": _quantities(consumed)},
            "resources": _quantities(alloc + offer), "allocated": _quantities(alloc), "offered": _quantities(offer),
            "reserved": _quantities(held),
            "frameworks": [fid for fid, fw in state.frameworks.items() if name in fw.info.roles],
        })
    return {"roles": out}


def state_summary(state: State, *, http: str, version: str) -> dict:
    """Mesos's /state-summary: each agent and framework in brief, with its tasks counted by state and the
    frameworks (agents) it shares a task with (live, unreachable or completed)."""
    g = _Grouped(state)
    by_agent: dict[str, dict[str, int]] = {}
    by_framework: dict[str, dict[str, int]] = {}
    fws_on: dict[str, dict[str, None]] = {}
    agents_of: dict[str, dict[str, None]] = {}
    for t in (*state.all_tasks(), *state.completed_tasks):
        if t.framework_id not in state.frameworks:
            continue  # as Mesos: the tasks of registered frameworks
        for counts in (by_agent.setdefault(t.agent_id, {}), by_framework.setdefault(t.framework_id, {})):
            counts[t.state] = counts.get(t.state, 0) + 1
        fws_on.setdefault(t.agent_id, {})[t.framework_id] = None
        agents_of.setdefault(t.framework_id, {})[t.agent_id] = None
    agents = []
    for a in state.agents.values():
        d = slave(g, a, version)
        del d["reserved_resources_full"]  # /state-summary's agents are SlaveWriter's fields only
        counts = by_agent.get(a.agent_id, {})
        d.update({s: counts.get(s, 0) for s in _SUMMARY_STATES})
        d["framework_ids"] = sorted(fws_on.get(a.agent_id, {}))
        agents.append(d)
    fws = []
    for fw in state.frameworks.values():
        used = state.used_by_framework(fw.framework_id)
        offered = Resources(r for o in g.offers_to.get(fw.framework_id, []) for r in o.resources)
        counts = by_framework.get(fw.framework_id, {})
        d = {"id": fw.framework_id, "name": fw.info.name, "used_resources": resources_summary(used),
             "offered_resources": resources_summary(offered), "capabilities": list(fw.info.capabilities),
             "hostname": fw.info.hostname or "", "webui_url": fw.info.webui_url or "", "active": fw.active,
             "connected": fw.connected, "recovered": False}
        d.update({s: counts.get(s, 0) for s in _SUMMARY_STATES})
        d["slave_ids"] = sorted(agents_of.get(fw.framework_id, {}))
        fws.append(d)
    return {"hostname": http.rpartition(":")[0], "slaves": agents, "frameworks": fws}
