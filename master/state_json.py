"""The legacy `/master/state` JSON (v0 vocabulary: slaves, plain-string IDs, resource summaries)."""

from __future__ import annotations

from eventstore.resources import Resource, Resources
from eventstore.events import TaskStatus
from master.codec import check_status_out, container_out, health_check_out, resources_out, resources_summary
from master.state import Offer, State, Task, holdings

_REFINED = ("RESERVATION_REFINEMENT",)


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


def render(state: State, *, master_id: str, http: str, leader_http: str | None, version: str, start_time: float,
           elected_time: float | None, flags: dict[str, str]) -> dict:
    host, _, port = http.rpartition(":")
    lhost, _, lport = (leader_http or "").rpartition(":")
    # Tasks, offers and completed tasks grouped once, in the state's order (the same sums as State.used_on_agent
    # and friends, which scan everything per agent: quadratic at 10,000 agents).
    used_on: dict[str, list[Resource]] = {}
    for t, held in holdings(state.all_tasks()):  # a task group's executor resources with its first task
        used_on.setdefault(t.agent_id, []).extend(held)
    offers_on: dict[str, list[Resource]] = {}
    offers_to: dict[str, list[Offer]] = {}
    for o in state.offers.values():
        offers_on.setdefault(o.agent_id, []).extend(o.resources)
        offers_to.setdefault(o.framework_id, []).append(o)
    summaries = _Summaries()
    completed_of: dict[str, list[Task]] = {}
    for t in state.completed_tasks:
        completed_of.setdefault(t.framework_id, []).append(t)
    frameworks = []
    for fw in state.frameworks.values():
        used = state.used_by_framework(fw.framework_id)
        fw_offers = offers_to.get(fw.framework_id, [])
        offered = Resources(r for o in fw_offers for r in o.resources)
        tasks = list(state.tasks.get(fw.framework_id, {}).values())
        d = {
            "id": fw.framework_id, "name": fw.info.name, "user": fw.info.user, "hostname": fw.info.hostname or "",
            "webui_url": fw.info.webui_url or "", "active": fw.active, "connected": fw.connected, "recovered": False,
            "failover_timeout": float(fw.info.failover_timeout), "checkpoint": fw.info.checkpoint,
            "registered_time": float(fw.registered_at), "capabilities": list(fw.info.capabilities),
            "used_resources": resources_summary(used), "offered_resources": resources_summary(offered),
            "resources": resources_summary(used + offered),
            "tasks": [_task(t, summaries) for t in tasks if t.state != "TASK_UNREACHABLE"],
            "unreachable_tasks": [_task(t, summaries) for t in tasks if t.state == "TASK_UNREACHABLE"],
            "completed_tasks": [_task(t, summaries) for t in completed_of.get(fw.framework_id, [])],
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
        frameworks.append(d)
    slaves = []
    for a in state.agents.values():
        total, unreserved, reserved = summaries.agent(a.resources)
        ahost, _, aport = a.http.rpartition(":")
        slaves.append({
            "id": a.agent_id, "hostname": a.hostname, "port": int(aport or 0), "pid": f"slave(1)@{a.http}",
            "attributes": {l.key: l.value for l in a.attributes}, "registered_time": float(a.registered_at),
            "resources": total, "used_resources": summaries.of(used_on.get(a.agent_id, [])),
            "offered_resources": summaries.of(offers_on.get(a.agent_id, [])),
            "unreserved_resources": unreserved, "reserved_resources": reserved,
            "active": a.connected, "deactivated": False, "version": version, "capabilities": [],
            # Mesos's full form of the reservations: each record with its DYNAMIC/STATIC reservation and any
            # persistent volume (disk.persistence, disk.volume, shared).
            "reserved_resources_full": {role: resources_out([r for r in a.resources if r.role == role],
                                                            _REFINED, dynamic=a.dynamic)
                                        for role in reserved},
        })
    out = {
        "version": version, "build_date": "", "build_time": 0.0, "build_user": "", "start_time": float(start_time),
        "id": state.cluster_id or "", "pid": f"master@{http}", "hostname": host,
        "activated_slaves": float(sum(1 for a in state.agents.values() if a.connected)),
        "deactivated_slaves": 0.0, "unreachable_slaves": float(len(state.unreachable_agents)),
        "flags": flags, "slaves": slaves, "recovered_slaves": [], "frameworks": frameworks,
        "completed_frameworks": [], "orphan_tasks": [], "unregistered_frameworks": [],
    }
    if elected_time is not None:
        out["elected_time"] = float(elected_time)
    if leader_http:
        out["leader"] = f"master@{leader_http}"
        out["leader_info"] = {"id": state.cluster_id or "", "hostname": lhost, "port": int(lport or 0),
                              "pid": f"master@{leader_http}",
                              "address": {"hostname": lhost, "ip": lhost, "port": int(lport or 0)}}
    return out
