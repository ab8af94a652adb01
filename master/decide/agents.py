"""Deciders for the agent calls (`POST /api/drover/agent`, docs/agent-protocol.md): SUBSCRIBE and UPDATE.

    decide_agent_subscribe(state, call, now, config) -> Decision   AGENT_REGISTERED / AGENT_REREGISTERED;
                                                                   reply: the agent's id
    decide_agent_update(state, agent_id, call, now, config) -> Decision
                                                                   STATUS_UPDATED, or (a retry) a message only

PING is chatter (the leader's memory of when it last heard from an agent), not history: it has no decider.
What a call may hold is checked here, before any event is built: an agent is a peer, not a trusted part of
the master, and everything it sends is folded on every replica forever. Pure: no IO, no clock (`now` is
given), no randomness (a new agent id derives from the state's counter).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import get_args

import msgspec

from drover.security.acls import authorized
from eventstore import events as ev
from eventstore.resources import Resource, Resources, resources_problem
from eventstore.values import (MAX_NAME_LENGTH, MAX_SECONDS, MAX_TEXT_LENGTH, MAX_TIMESTAMP, Address, id_problem,
                               number_problem, role_problem, user_problem)
from eventstore.vocab import Source, TaskState
from master import effects as fx
from master.decide import DecideConfig, Decision
from master.decide.gate import events_problem
from master.decide.volumes import offers_holding
from master.state import State

# ---- the calls, as an agent sends them (decoded with msgspec at the edge) ----------------------------------


class AgentSubscribe(msgspec.Struct):
    hostname: str
    http: str
    resources: list[Resource]
    agent_id: str | None = None
    attributes: list[ev.Label] = msgspec.field(default_factory=list)
    tasks: list[ev.TaskReport] = msgspec.field(default_factory=list)
    # what the agent has checkpointed of the master's CHECKPOINT_RESOURCES: dynamic reservations and volumes
    checkpointed: list[Resource] = msgspec.field(default_factory=list)


class AgentUpdate(msgspec.Struct):
    framework_id: str
    task_id: str
    status: ev.TaskStatus


class AgentCall(msgspec.Struct):
    type: str
    agent_id: str | None = None
    subscribe: AgentSubscribe | None = None
    update: AgentUpdate | None = None


# ---- the rules ----------------------------------------------------------------------------------------------

# States only the master gives a task (Mesos: an agent never sends them); an agent claiming one is refused.
MASTER_ONLY_STATES = frozenset({TaskState.UNREACHABLE, TaskState.GONE_BY_OPERATOR, TaskState.UNKNOWN})
AGENT_STATES = frozenset(s.value for s in TaskState) - MASTER_ONLY_STATES
AGENT_SOURCES = frozenset({Source.AGENT.value, Source.EXECUTOR.value})
MAX_RESOURCES = 10_000  # resource records an agent may advertise (or one reported task may hold)
MAX_UUID_LENGTH = 64

_ADDRESS_META = get_args(Address)[1]
assert isinstance(_ADDRESS_META, msgspec.Meta) and _ADDRESS_META.pattern is not None
_ADDRESS = re.compile(_ADDRESS_META.pattern)  # host:port, the one definition (eventstore.values)
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


def address_problem(value: object, what: str) -> str | None:
    """`host:port` (a bracketed IPv6 host allowed), port 1-65535: how agents are reached and shown in offers."""
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH or not _ADDRESS.search(value):
        return f"'{what}' must be an address like host:port, got {str(value)[:64]!r}"
    port = int(value.rpartition(":")[2])
    if not 1 <= port <= 65535:
        return f"'{what}' has an invalid port {port} (1-65535)"
    return None


def _name_problem(value: object, what: str) -> str | None:
    """A hostname or container id: non-empty, bounded, no whitespace or control characters."""
    if not isinstance(value, str) or not value:
        return f"'{what}' must be a non-empty string"
    if len(value) > MAX_NAME_LENGTH:
        return f"'{what}' is longer than {MAX_NAME_LENGTH} characters"
    if _CONTROL_OR_SPACE.search(value):
        return f"'{what}' {value[:64]!r} must not contain whitespace or control characters"
    return None


def _text_problem(value: object, what: str, limit: int) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        return f"'{what}' must be a string of at most {limit} characters"
    return None


def _labels_problem(labels: list[ev.Label], what: str, config: DecideConfig) -> str | None:
    if len(labels) > config.limits.max_labels:
        return f"'{what}' has {len(labels)} entries, more than the limit of {config.limits.max_labels}"
    for i, label in enumerate(labels):
        if (why := _text_problem(label.key, f"{what}[{i}] key", MAX_NAME_LENGTH)
                or _text_problem(label.value, f"{what}[{i}] value", MAX_TEXT_LENGTH)):
            return why
    return None


def _resources_problem(resources: list[Resource], what: str) -> str | None:
    if len(resources) > MAX_RESOURCES:
        return f"'{what}' has {len(resources)} records, more than the limit of {MAX_RESOURCES}"
    why = resources_problem(resources)
    return None if why is None else f"'{what}': {why}"


def _spec_problem(spec: ev.TaskSpec, report: ev.TaskReport, agent_id: str | None, types: dict[str, str],
                  what: str, config: DecideConfig) -> str | None:
    """A reported task's spec: it may be adopted into the log (a task this log never saw launched)."""
    if spec.task_id != report.task_id:
        return f"'{what}.task_id' ({spec.task_id[:64]!r}) differs from the reported task id"
    if spec.agent_id != agent_id:
        return f"'{what}.agent_id' ({spec.agent_id[:64]!r}) is not the id of the agent reporting it"
    if (why := _text_problem(spec.name, f"{what}.name", MAX_NAME_LENGTH)) \
            or (why := role_problem(spec.role)) \
            or (why := _resources_problem(spec.resources, f"{what}.resources")) \
            or (why := _text_problem(spec.image, f"{what}.image", MAX_NAME_LENGTH)) \
            or (why := _labels_problem(spec.labels, f"{what}.labels", config)) \
            or (why := _text_problem(spec.command.value, f"{what}.command.value", MAX_TEXT_LENGTH)) \
            or (spec.command.user is not None
                and (why := user_problem(spec.command.user, f"'{what}.command.user'"))) \
            or (why := _labels_problem(spec.command.env, f"{what}.command.env", config)):
        return why
    if len(spec.command.arguments) > config.limits.max_labels \
            or any(_text_problem(a, "", MAX_TEXT_LENGTH) for a in spec.command.arguments):
        return f"'{what}.command.arguments' must be at most {config.limits.max_labels} strings of at most " \
               f"{MAX_TEXT_LENGTH} characters"
    grace = spec.kill_grace_seconds
    if grace is not None and (why := number_problem(grace, f"'{what}.kill_grace_seconds'", 0.0, MAX_SECONDS)):
        return why
    for r in spec.resources:
        if types.setdefault(r.name, r.type) != r.type:
            return f"'{what}.resources': {r.name} is {r.type} here but {types[r.name]} on the agent"
    return None


def _report_problem(report: ev.TaskReport, agent_id: str | None, types: dict[str, str], what: str,
                    config: DecideConfig) -> str | None:
    if (why := id_problem(report.framework_id, f"'{what}.framework_id'")) \
            or (why := id_problem(report.task_id, f"'{what}.task_id'")):
        return why
    if report.state not in AGENT_STATES:
        return f"'{what}.state' must be a task state an agent reports, got {str(report.state)[:64]!r}"
    if report.spec is not None:
        return _spec_problem(report.spec, report, agent_id, types, f"{what}.spec", config)
    return None


def subscribe_problem(sub: AgentSubscribe, config: DecideConfig) -> str | None:
    """What makes a SUBSCRIBE invalid whatever the state (checked before the stream opens); None if nothing."""
    if sub.agent_id is not None and (why := id_problem(sub.agent_id, "'subscribe.agent_id'")):
        return why
    if (why := _name_problem(sub.hostname, "subscribe.hostname")) \
            or (why := address_problem(sub.http, "subscribe.http")) \
            or (why := _resources_problem(sub.resources, "subscribe.resources")) \
            or (why := _labels_problem(sub.attributes, "subscribe.attributes", config)) \
            or (why := _resources_problem(sub.checkpointed, "subscribe.checkpointed")):
        return why
    if any(r.persistence is not None for r in sub.resources):
        return "'subscribe.resources' holds a persistent volume: volumes are checkpointed resources"
    if any(r.role == "*" or r.copies != 1 for r in sub.checkpointed):
        return "'subscribe.checkpointed' holds unreserved resources or a volume counted more than once"
    limit = config.limits.max_reported_tasks
    if len(sub.tasks) > limit:
        return f"'subscribe.tasks' reports {len(sub.tasks)} tasks, more than the limit of {limit} (max_reported_tasks)"
    types: dict[str, str] = {r.name: r.type for r in sub.resources}
    seen: set[tuple[str, str]] = set()
    for i, report in enumerate(sub.tasks):
        if (why := _report_problem(report, sub.agent_id, types, f"subscribe.tasks[{i}]", config)):
            return why
        key = (report.framework_id, report.task_id)
        if key in seen:
            return f"'subscribe.tasks[{i}]': task {report.task_id!r} of framework {report.framework_id!r} is " \
                   "reported twice"
        seen.add(key)
    return None


def update_problem(agent_id: str, upd: AgentUpdate) -> str | None:
    """What makes an UPDATE invalid whatever the state; None if nothing."""
    st = upd.status
    if (why := id_problem(agent_id, "'agent_id'")) \
            or (why := id_problem(upd.framework_id, "'update.framework_id'")) \
            or (why := id_problem(upd.task_id, "'update.task_id'")):
        return why
    if st.state not in AGENT_STATES:
        return f"'update.status.state' must be a task state an agent reports, got {str(st.state)[:64]!r}"
    if st.source not in AGENT_SOURCES:
        return f"'update.status.source' must be SOURCE_AGENT or SOURCE_EXECUTOR, got {str(st.source)[:64]!r}"
    if (why := number_problem(st.timestamp, "'update.status.timestamp'", 0.0, MAX_TIMESTAMP)):
        return why
    if st.unreachable_time is not None and (
            why := number_problem(st.unreachable_time, "'update.status.unreachable_time'", 0.0, MAX_TIMESTAMP)):
        return why
    if st.uuid is not None and (why := uuid_problem(st.uuid, "update.status.uuid")):
        return why
    if (why := _text_problem(st.reason, "update.status.reason", MAX_NAME_LENGTH)) \
            or (why := _text_problem(st.message, "update.status.message", MAX_TEXT_LENGTH)):
        return why
    if st.container_id is not None and (why := _name_problem(st.container_id, "update.status.container_id")):
        return why
    if st.check_status is not None and (why := check_status_problem(st.check_status, "update.status.check_status")):
        return why
    return None


_CHECK_RESULT_FIELD = {"COMMAND": "exit_code", "HTTP": "status_code", "TCP": "succeeded"}


def check_status_problem(cs: ev.CheckStatus, what: str) -> str | None:
    """Mesos's validateCheckStatusInfo: a result of its own type only (the field of another type set is refused);
    the ranges are the type's (eventstore.events.CheckStatus)."""
    own = _CHECK_RESULT_FIELD.get(cs.type)
    if own is None:
        return f"'{what}.type' must be one of COMMAND, HTTP, TCP"
    for field in sorted(_CHECK_RESULT_FIELD.values()):
        if field != own and getattr(cs, field) is not None:
            return f"'{what}' of type {cs.type} must not hold '{field}'"
    return None


def uuid_problem(value: object, what: str) -> str | None:
    """A status update uuid: base64 of 16 bytes (as Mesos's UUID::fromBytes requires)."""
    if not isinstance(value, str) or len(value) > MAX_UUID_LENGTH:
        return f"'{what}' must be the base64 of 16 bytes"
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"'{what}' is not valid base64"
    if len(raw) != 16:
        return f"'{what}' must be the base64 of 16 bytes, got {len(raw)} bytes"
    return None


# ---- the deciders -------------------------------------------------------------------------------------------


def _agent_count(state: State) -> int:
    return len(state.agents) + len(state.unreachable_agents)


def _issued_here(state: State, agent_id: str) -> bool:
    """An id this cluster gave out (`{cluster_id}-S{n}`, n below the counter), though the state no longer holds it."""
    prefix = f"{state.cluster_id}-S"
    if not agent_id.startswith(prefix):
        return False
    n = agent_id[len(prefix):]
    return n.isdigit() and n.isascii() and len(n) < 19 and int(n) < state.next_agent


def new_agent_id(state: State) -> str:
    """`{cluster_id}-S{next_agent}`: from the log's counter, so replay derives the same; never an id in use."""
    n = state.next_agent
    while (aid := f"{state.cluster_id}-S{n}") in state.agents or aid in state.unreachable_agents:
        n += 1
    return aid


def agent_principal_problem(state: State, agent_id: str, principal: str | None, config: DecideConfig) -> str | None:
    """With authentication on, only the principal an agent registered as may call as that agent (ping, update,
    re-register): another principal cannot keep a dead agent alive or finish its tasks. An agent recorded
    without a principal (registered before authentication was turned on) may be claimed by a principal the
    `register_agents` ACL allows (its re-registration then records it)."""
    if not config.authenticate:
        return None
    agent = state.agents.get(agent_id) or state.unreachable_agents.get(agent_id)
    if agent is None or agent.principal == principal:
        return None
    if agent.principal is None:
        if authorized(config.acls, "register_agents", principal, None):
            return None
        return f"Not authorized to act as agent {agent_id} (register_agents)"
    return f"Agent {agent_id} is registered by another principal"


def decide_agent_subscribe(state: State, sub: AgentSubscribe, now: float, config: DecideConfig,
                           principal: str | None = None) -> Decision:
    """An agent (re-)registers. A known id (registered, or marked unreachable), or one this cluster gave out,
    re-registers with its reported tasks; anything else (first start, an agent of another cluster) gets a new
    id. A new agent beyond `limits.max_agents` is refused. `principal`: who the call was authenticated as (the
    `register_agents` ACL; recorded, and only it may call as this agent later). `reply` is the agent's id."""
    if (why := subscribe_problem(sub, config)) is not None:
        return Decision.refuse(400, f"Invalid agent subscription: {why}")
    if not authorized(config.acls, "register_agents", principal, None):
        return Decision.refuse(403, f"Not authorized to register an agent as principal '{principal or ''}'")
    if state.cluster_id is None:
        return Decision.refuse(409, "The cluster has no id yet; retry")
    aid = sub.agent_id
    if aid is not None and (why := agent_principal_problem(state, aid, principal, config)) is not None:
        return Decision.refuse(403, why)
    known = aid is not None and (aid in state.agents or aid in state.unreachable_agents)
    if not known and _agent_count(state) >= config.limits.max_agents:
        return Decision.refuse(403, f"Agent refused: the cluster already has {_agent_count(state)} agents, the "
                                    f"limit (max_agents)")
    event: ev.Event
    rescind: list[str] = []
    if aid is not None and (known or _issued_here(state, aid)):
        held = state.agents.get(aid) or state.unreachable_agents.get(aid)
        dynamic = Resources(held.dynamic) if held is not None else Resources()
        if dynamic and not Resources(sub.resources).contains(dynamic.as_unreserved()):
            # Its data would be offered as free disk (and its reservations lost): loud, as Mesos's agent is.
            return Decision.refuse(400, f"Agent {aid}'s resources ({Resources(sub.resources).format()}) no longer "
                                        f"hold the reservations and persistent volumes the log made on it "
                                        f"({dynamic.format()}): restart it with resources that hold them")
        event = ev.AgentReregistered(agent_id=aid, hostname=sub.hostname, http=sub.http, resources=sub.resources,
                                     attributes=sub.attributes, tasks=sub.tasks, principal=principal)
        # A task the log never saw is adopted with its resources: offers holding a volume it uses go first (they
        # would hand it to another task while this one writes to it).
        adopted = Resources(r for t in sub.tasks if t.spec is not None and state.task(t.framework_id, t.task_id)
                            is None for r in t.spec.resources if r.persistence is not None)
        if adopted and aid in state.agents:
            rescind = offers_holding(state, aid, adopted)
    else:
        aid = new_agent_id(state)
        event = ev.AgentRegistered(agent_id=aid, hostname=sub.hostname, http=sub.http, resources=sub.resources,
                                   attributes=sub.attributes, principal=principal, checkpointed=sub.checkpointed)
    if (why := events_problem([event])) is not None:
        return Decision.refuse(400, f"Invalid agent subscription: {why}")
    pre: list[ev.Event] = [ev.OffersRescinded(offer_ids=rescind, reason="volume_adopted")] if rescind else []
    return Decision(events=[*pre, event], reply=aid)


def decide_agent_update(state: State, agent_id: str, upd: AgentUpdate, now: float, config: DecideConfig) -> Decision:
    """A status update from a (linked) agent. Updates are deduplicated by uuid:
    - a new one becomes STATUS_UPDATED (forwarded to the framework as the event's effect);
    - a retry of the update the framework has not acknowledged yet is forwarded again (a message);
    - a retry of one already acknowledged, or an update for a task the master no longer tracks on this agent
      (completed, its framework removed), is acknowledged straight back to the agent: nobody else will."""
    if (why := update_problem(agent_id, upd)) is not None:
        return Decision.refuse(400, f"Invalid status update: {why}")
    fid, tid, uuid = upd.framework_id, upd.task_id, upd.status.uuid
    task = state.task(fid, tid)
    if task is None or task.agent_id != agent_id:
        return Decision(messages=[fx.ToAgent(agent_id, fx.ack_message(fid, tid, uuid))] if uuid else [])
    if uuid and any(s.uuid == uuid for s in task.statuses):
        if task.pending is not None and task.pending.uuid == uuid:
            return Decision(messages=[fx.ToFramework(fid, fx.update_event(state, fid, tid, agent_id, task.pending))])
        return Decision(messages=[fx.ToAgent(agent_id, fx.ack_message(fid, tid, uuid))])
    event = ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=agent_id, status=upd.status)
    if (why := events_problem([event])) is not None:
        return Decision.refuse(400, f"Invalid status update: {why}")
    return Decision(events=[event])
