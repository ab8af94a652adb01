"""The legacy `/master/state` JSON (v0 vocabulary: slaves, plain-string IDs, resource summaries)."""

from __future__ import annotations

from eventstore.resources import Resources
from master.codec import resources_summary
from master.state import State, Task


def _task(t: Task) -> dict:
    d = {
        "id": t.task_id, "name": t.spec.name, "framework_id": t.framework_id, "executor_id": "",
        "slave_id": t.agent_id, "state": t.state, "resources": resources_summary(Resources(t.spec.resources)),
        "statuses": [{"state": s.state, "timestamp": float(s.timestamp)} for s in t.statuses],
    }
    if t.spec.labels:
        d["labels"] = [{"key": l.key, "value": l.value} for l in t.spec.labels]
    if t.spec.image:
        d["container"] = {"type": "DOCKER", "docker": {"image": t.spec.image}}
    return d


def render(state: State, *, master_id: str, http: str, leader_http: str | None, version: str, start_time: float,
           elected_time: float | None, flags: dict[str, str]) -> dict:
    host, _, port = http.rpartition(":")
    lhost, _, lport = (leader_http or "").rpartition(":")
    frameworks = []
    for fw in state.frameworks.values():
        used = state.used_by_framework(fw.framework_id)
        offered = state.offered_to_framework(fw.framework_id)
        tasks = list(state.tasks.get(fw.framework_id, {}).values())
        d = {
            "id": fw.framework_id, "name": fw.info.name, "user": fw.info.user, "hostname": fw.info.hostname or "",
            "webui_url": fw.info.webui_url or "", "active": fw.active, "connected": fw.connected, "recovered": False,
            "failover_timeout": float(fw.info.failover_timeout), "checkpoint": fw.info.checkpoint,
            "registered_time": float(fw.registered_at), "capabilities": list(fw.info.capabilities),
            "used_resources": resources_summary(used), "offered_resources": resources_summary(offered),
            "resources": resources_summary(used + offered),
            "tasks": [_task(t) for t in tasks if t.state != "TASK_UNREACHABLE"],
            "unreachable_tasks": [_task(t) for t in tasks if t.state == "TASK_UNREACHABLE"],
            "completed_tasks": [_task(t) for t in state.completed_tasks if t.framework_id == fw.framework_id],
            "offers": [{"id": o.offer_id, "framework_id": o.framework_id, "slave_id": o.agent_id,
                        "resources": resources_summary(Resources(o.resources))}
                       for o in state.offers.values() if o.framework_id == fw.framework_id],
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
        total = a.total()
        used = state.used_on_agent(a.agent_id)
        offered = state.offered_on_agent(a.agent_id)
        ahost, _, aport = a.http.rpartition(":")
        slaves.append({
            "id": a.agent_id, "hostname": a.hostname, "port": int(aport or 0), "pid": f"slave(1)@{a.http}",
            "attributes": {l.key: l.value for l in a.attributes}, "registered_time": float(a.registered_at),
            "resources": resources_summary(total), "used_resources": resources_summary(used),
            "offered_resources": resources_summary(offered),
            "unreserved_resources": resources_summary(total.unreserved()),
            "reserved_resources": {role: resources_summary(Resources(r for r in total if r.role == role))
                                   for role in sorted({r.role for r in total} - {"*"})},
            "active": a.connected, "deactivated": False, "version": version, "capabilities": [],
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
