"""Effects: what the leader must tell frameworks and agents, derived from events and state.

Pure functions. `plan(state, envelope)` is called with the state *before* the
event is folded (a rescinded offer must still be there to know whose it was);
`resync_agent` / `resync_framework` re-derive everything pending when a peer
(re)connects, which is what makes a new leader pick up where the old one left
off: launches not yet confirmed, kills not yet done, updates not yet acked.
Receivers are idempotent, so sending twice is safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from eventstore import events as ev
from eventstore.vocab import TERMINAL_STATES
from master import codec
from eventstore.resources import Resources, conversion
from master.state import State, Task, checkpoint_after, returning_tasks, tasks_on_agent, unreachable_status

# Rescinds Mesos does not announce: on failover and re-subscription offers vanish silently.
SILENT_RESCIND_REASONS = {"leader_change", "framework_disconnected", "framework_removed"}


@dataclass(frozen=True)
class ToFramework:
    framework_id: str
    event: dict


@dataclass(frozen=True)
class ToAgent:
    agent_id: str
    message: dict


Effect = ToFramework | ToAgent


def launch_message(state: State, framework_id: str, spec: ev.TaskSpec) -> dict:
    fw = state.frameworks.get(framework_id)
    # capabilities: the agent answers a reused task id with TASK_DROPPED to PARTITION_AWARE frameworks, as Mesos.
    info = {"name": fw.info.name, "user": fw.info.user, "checkpoint": fw.info.checkpoint,
            "capabilities": [{"type": c} for c in fw.info.capabilities]} if fw else {}
    return {"type": "LAUNCH", "launch": {"framework_id": framework_id, "framework_info": info,
                                         "task": msgspec.to_builtins(spec)}}


def launch_group_message(state: State, framework_id: str, specs: list[ev.TaskSpec]) -> dict:
    """A task group for its agent, as one unit (docs/agent-protocol.md): every task carries the group's executor."""
    fw = state.frameworks.get(framework_id)
    info = {"name": fw.info.name, "user": fw.info.user, "checkpoint": fw.info.checkpoint,
            "capabilities": [{"type": c} for c in fw.info.capabilities]} if fw else {}
    return {"type": "LAUNCH_GROUP", "launch_group": {"framework_id": framework_id, "framework_info": info,
                                                     "tasks": [msgspec.to_builtins(s) for s in specs]}}


def launches(state: State, framework_id: str, specs: list[ev.TaskSpec]) -> list[dict]:
    """LAUNCH for each command task, one LAUNCH_GROUP per task group (at its first task), in the specs' order."""
    out: list[dict] = []
    groups: dict[str, list[ev.TaskSpec]] = {}
    for spec in specs:
        if spec.executor is None:
            out.append(launch_message(state, framework_id, spec))
        elif spec.executor.executor_id not in groups:
            groups[spec.executor.executor_id] = [s for s in specs if s.executor is not None
                                                 and s.executor.executor_id == spec.executor.executor_id]
            out.append(launch_group_message(state, framework_id, groups[spec.executor.executor_id]))
    return out


def checkpoint_message(checkpointed: Resources) -> dict:
    """CHECKPOINT_RESOURCES: the agent's whole set of dynamic reservations and persistent volumes, as the log has
    it (docs/agent-protocol.md). The agent makes its volumes match: it creates new ones and deletes the others."""
    return {"type": "CHECKPOINT_RESOURCES",
            "checkpoint_resources": {"resources": msgspec.to_builtins(checkpointed.to_list())}}


def _checkpoint_after(state: State, agent_id: str, ops: list[ev.ResourceOperation]) -> dict | None:
    agent = state.agents.get(agent_id)
    if agent is None or not ops:
        return None
    dyn = Resources(agent.dynamic)
    for op in ops:
        dyn = checkpoint_after(dyn, *conversion(op.kind, Resources(op.resources)))
    return checkpoint_message(dyn)


def kill_message(task: Task) -> dict:
    return {"type": "KILL", "kill": {"framework_id": task.framework_id, "task_id": task.task_id,
                                     "grace_seconds": task.kill_grace_seconds}}


def ack_message(framework_id: str, task_id: str, uuid: str) -> dict:
    return {"type": "ACKNOWLEDGE", "acknowledge": {"framework_id": framework_id, "task_id": task_id, "uuid": uuid}}


def update_event(state: State, framework_id: str, task_id: str, agent_id: str | None, status: ev.TaskStatus) -> dict:
    fw = state.frameworks.get(framework_id)
    caps = fw.info.capabilities if fw else []
    return codec.ev_update(codec.status_out(framework_id, task_id, agent_id, status, caps))


def plan(state: State, env: ev.Envelope) -> list[Effect]:
    e = env.event
    out: list[Effect] = []
    if isinstance(e, ev.OffersMade):
        by_fw: dict[str, list[dict]] = {}
        for o in e.offers:
            fw, agent = state.frameworks.get(o.framework_id), state.agents.get(o.agent_id)
            if fw is None or agent is None:
                continue
            by_fw.setdefault(o.framework_id, []).append(codec.offer_out(
                o.offer_id, o.framework_id, o.agent_id, agent.hostname, agent.http, o.role, o.resources,
                fw.info.capabilities, agent.attributes, agent.dynamic))
        out.extend(ToFramework(fid, codec.ev_offers(offers)) for fid, offers in by_fw.items())
    elif isinstance(e, ev.OffersRescinded):
        if e.reason not in SILENT_RESCIND_REASONS:
            for oid in e.offer_ids:
                o = state.offers.get(oid)
                if o is not None:
                    out.append(ToFramework(o.framework_id, codec.ev_rescind(oid)))
    elif isinstance(e, ev.OffersAccepted):
        offer = next((state.offers[oid] for oid in e.offer_ids if oid in state.offers), None)
        if offer is not None and (msg := _checkpoint_after(state, offer.agent_id, list(e.operations))):
            out.append(ToAgent(offer.agent_id, msg))  # before the launches that use the new volumes
        for spec_msg in launches(state, e.framework_id, list(e.tasks)):
            body = spec_msg.get("launch") or spec_msg["launch_group"]
            agent_id = (body["task"] if "task" in body else body["tasks"][0])["agent_id"]
            out.append(ToAgent(agent_id, spec_msg))
        for rej in e.rejected:
            st = ev.TaskStatus(state=rej.state, source="SOURCE_MASTER", timestamp=env.ts, reason=rej.reason,
                               message=rej.message)
            out.append(ToFramework(e.framework_id, update_event(state, e.framework_id, rej.task_id, None, st)))
    elif isinstance(e, ev.AgentOperationsApplied):
        if (msg := _checkpoint_after(state, e.agent_id, list(e.operations))) is not None:
            out.append(ToAgent(e.agent_id, msg))
    elif isinstance(e, ev.TaskKillRequested):
        task = state.task(e.framework_id, e.task_id)
        if task is not None and not task.terminal:
            grace = e.grace_seconds if e.grace_seconds is not None else task.kill_grace_seconds
            out.append(ToAgent(task.agent_id, {"type": "KILL", "kill": {
                "framework_id": e.framework_id, "task_id": e.task_id, "grace_seconds": grace}}))
    elif isinstance(e, ev.StatusUpdated):
        out.append(ToFramework(e.framework_id, update_event(state, e.framework_id, e.task_id, e.agent_id, e.status)))
    elif isinstance(e, ev.StatusAcknowledged):
        task = state.task(e.framework_id, e.task_id)
        if task is not None:
            out.append(ToAgent(task.agent_id, ack_message(e.framework_id, e.task_id, e.uuid)))
    elif isinstance(e, ev.AgentUnreachable):
        agent = state.agents.get(e.agent_id)
        if agent is not None:
            st = unreachable_status(env.ts, e, agent.hostname)  # no uuid: not retried, not acknowledged
            for task in tasks_on_agent(state, e.agent_id):
                if not task.terminal:
                    out.append(ToFramework(task.framework_id,
                                           update_event(state, task.framework_id, task.task_id, e.agent_id, st)))
            for fw in state.frameworks.values():
                if fw.connected:
                    out.append(ToFramework(fw.framework_id, codec.ev_failure(e.agent_id)))
    elif isinstance(e, ev.AgentReregistered):
        for task, st in returning_tasks(state, e, env.ts):
            out.append(ToFramework(task.framework_id,
                                   update_event(state, task.framework_id, task.task_id, e.agent_id, st)))
    elif isinstance(e, ev.FrameworkRemoved):
        for task in state.tasks.get(e.framework_id, {}).values():
            if not task.terminal:
                out.append(ToAgent(task.agent_id, kill_message(task)))
    return out


def resync_agent(state: State, agent_id: str, reported: list[ev.TaskReport]) -> list[dict]:
    """Messages for an agent that just (re-)registered with this leader."""
    known = {(r.framework_id, r.task_id) for r in reported}
    # First what the agent must have checkpointed (always, even nothing: volumes destroyed while it was away go),
    # so the launches below find their volumes.
    agent = state.agents.get(agent_id)
    msgs: list[dict] = [checkpoint_message(Resources(agent.dynamic if agent is not None else []))]
    groups: set[tuple[str, str]] = set()
    for task in state.all_tasks():
        if task.agent_id != agent_id or task.terminal:
            continue
        if (task.framework_id, task.task_id) not in known and task.state == "TASK_STAGING":
            ex = task.spec.executor
            if ex is None:
                msgs.append(launch_message(state, task.framework_id, task.spec))
            elif (task.framework_id, ex.executor_id) not in groups:
                # The whole group again (the agent ignores a group it has): its tasks the log still holds.
                groups.add((task.framework_id, ex.executor_id))
                fw_tasks = state.tasks.get(task.framework_id, {})
                specs = [fw_tasks[tid].spec for tid in ex.task_ids if tid in fw_tasks and not fw_tasks[tid].terminal]
                msgs.append(launch_group_message(state, task.framework_id, specs))
        if task.kill_requested:
            msgs.append(kill_message(task))
    for r in sorted(reported, key=lambda r: (r.framework_id, r.task_id)):
        task = state.task(r.framework_id, r.task_id)
        if (task is None or task.terminal) and r.state not in TERMINAL_STATES:
            # The log says this task should not be running (framework removed, task completed): stop it.
            msgs.append({"type": "KILL", "kill": {"framework_id": r.framework_id, "task_id": r.task_id,
                                                  "grace_seconds": None}})
    return msgs


def resync_framework(state: State, framework_id: str) -> list[dict]:
    """Updates a (re-)subscribed framework has not acknowledged yet, oldest task first."""
    out = []
    for task in state.tasks.get(framework_id, {}).values():
        if task.pending is not None:
            out.append(update_event(state, framework_id, task.task_id, task.agent_id, task.pending))
    return out
