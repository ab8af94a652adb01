"""The event catalogue: every fact the master records, one typed record each.

Rules (see docs/events.md):
- Events are decisions already taken by the leader. Anything that is not a pure
  function of the log (time, new IDs, the allocator's choice) is a field here.
- The leader's timestamp, the Raft term and the log index are on the
  `Envelope`, not on each event: one batch shares one timestamp.
- Encoding is msgspec JSON with a "type" tag, and it is the only encoding: a
  Raft entry carries each event's JSON bytes and the store keeps those same
  bytes, so a live replica, a restarted one and replay fold identical input.
  Adding an optional field is a compatible change; renaming or removing one
  bumps CATALOGUE_VERSION. An unknown "type" is an error (`UnknownEvent`).
- Every field's rules (eventstore/values.py: ids, roles, finite bounded
  numbers, sizes) are part of its type. `encode_event` is the commit gate: it
  refuses (`InvalidEvent`) an event that would not decode, or that breaks a
  rule the fold relies on (`event_problem`), so only events the fold accepts
  are ever committed. Non-finite floats cannot be represented (JSON has none).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

import msgspec

from eventstore.resources import Resource, resources_problem
from eventstore.values import (MAX_LIST, MAX_OUTPUT_FILE_LENGTH, MAX_URI_LENGTH, MAX_URIS, Address, Count, Id, Name,
                               Role, Scalar, Seconds, Text, Timestamp, Weight)
from eventstore.vocab import CheckType, Source, TaskState

# 2: events travel as JSON on the Raft log too (was msgpack), and carry their value rules.
CATALOGUE_VERSION = 2

Data = Annotated[str, msgspec.Meta(max_length=4 * 1024 * 1024)]  # base64 task data, passed through
Finite = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]
Uuid = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9+/=_-]+$")]
# A task id as a framework sent it, for a rejection: it may be the very reason the task was refused (an
# invalid id), so only its length is bounded; it never becomes a path or a key of state.
AnyTaskId = Annotated[str, msgspec.Meta(max_length=1024)]


_BIG = msgspec.Meta(max_length=MAX_LIST)  # any list in an event
_1K = msgspec.Meta(max_length=1000)  # roles, labels, arguments, resources of one task
_10K = msgspec.Meta(max_length=10_000)  # resources of one agent or offer


class InvalidEvent(ValueError):
    """An event that must not be committed: it would not decode, or the fold could not take it."""


class UnknownEvent(Exception):
    """An event whose type this build does not know: replaying past it would be a lie."""


class Base(msgspec.Struct, tag_field="type", omit_defaults=True, forbid_unknown_fields=False):
    pass


# ---- value records used inside events ---------------------------------------------------


class Label(msgspec.Struct, array_like=True):
    key: Name
    value: Text = ""


class FrameworkInfo(msgspec.Struct, omit_defaults=True):
    name: Name
    user: Name
    roles: Annotated[list[Role], _1K] = msgspec.field(default_factory=lambda: ["*"])
    multi_role: bool = False  # subscribed with MULTI_ROLE (roles) vs the legacy single role
    capabilities: Annotated[list[Name], msgspec.Meta(max_length=100)] = msgspec.field(default_factory=list)
    failover_timeout: Seconds = 0.0
    checkpoint: bool = False
    principal: Name | None = None
    hostname: Name | None = None
    webui_url: Text | None = None
    labels: Annotated[list[Label], _1K] = msgspec.field(default_factory=list)
    # FrameworkInfo.offer_filters: role -> alternative quantity sets an offer must hold ([] = anything)
    min_allocatable: dict[Role, Annotated[list[dict[Name, Scalar]], msgspec.Meta(max_length=100)]] = msgspec.field(
        default_factory=dict)

    def priority(self) -> float:
        """For `--framework-sorter priority`: the framework's `priority` label (a Drover extension)."""
        for label in self.labels:
            if label.key == "priority":
                try:
                    return float(label.value)
                except ValueError:
                    return 0.0
        return 0.0


class FetchURI(msgspec.Struct, omit_defaults=True):
    """CommandInfo.URI: fetched into the sandbox by the agent before the task starts (agent/fetcher.py). The codec
    checks `value` (values.uri_problem) and `output_file` (values.output_file_problem); the agent again."""

    value: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URI_LENGTH)]
    executable: bool = False
    extract: bool = True  # Mesos's default
    cache: bool = False
    output_file: Annotated[str, msgspec.Meta(max_length=MAX_OUTPUT_FILE_LENGTH)] | None = None


class CommandSpec(msgspec.Struct, omit_defaults=True):
    shell: bool = True
    value: Text | None = None
    arguments: Annotated[list[Text], _1K] = msgspec.field(default_factory=list)
    env: Annotated[list[Label], _1K] = msgspec.field(default_factory=list)  # framework's order
    user: Name | None = None
    # Added after catalogue version 2: absent (no URIs) in older events, which decode and fold as before.
    uris: Annotated[list[FetchURI], msgspec.Meta(max_length=MAX_URIS)] = msgspec.field(default_factory=list)


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
# A task's network (docs/services.md, "Networking and ports"): None is the host's network (Mesos's default without
# CNI), BRIDGE podman's default bridge network with port mappings, NONE a network namespace of its own (loopback).
Network = Literal["HOST", "BRIDGE", "NONE"]


class PortMapping(msgspec.Struct, omit_defaults=True):
    """A host port (one of the task's `ports` resources) forwarded to a port of the task's container (BRIDGE)."""

    host_port: Port
    container_port: Port
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"


# Tasks of one task group: every task of a group carries the group's task IDs, so a group's share of an event grows
# with the square of its size; bounded so that one ACCEPT cannot make an event of hundreds of megabytes.
MAX_GROUP_TASKS = 32


class ExecutorSpec(msgspec.Struct, omit_defaults=True):
    """The DEFAULT executor of a task group (LAUNCH_GROUP), as validated by the leader: one Podman pod on the agent
    (docs/services.md, "Task groups"). Every task of the group carries the same one. Its `resources` are allocated
    once, with the group's tasks, and go back when the last task of the group stops holding resources."""

    executor_id: Id
    resources: Annotated[list[Resource], _1K]
    task_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_GROUP_TASKS)]  # the group, in the framework's order
    name: Name | None = None
    network: Network | None = None  # the pod's: None is HOST, BRIDGE with port_mappings
    port_mappings: Annotated[list[PortMapping], _1K] = msgspec.field(default_factory=list)


class CheckCommand(msgspec.Struct, omit_defaults=True):
    """The command of a COMMAND (health) check: run in the task's container, as its user, with its environment plus
    these variables; healthy (or its check's result) by exit code."""

    shell: bool = True
    value: Text | None = None
    arguments: Annotated[list[Text], _1K] = msgspec.field(default_factory=list)
    env: Annotated[list[Label], _1K] = msgspec.field(default_factory=list)


class CheckSpec(msgspec.Struct, omit_defaults=True):
    """TaskInfo.check (Mesos's CheckInfo), as validated by the leader: what to probe, and when. `command` is set for
    COMMAND, `port` for HTTP and TCP (127.0.0.1, or ::1 with `ipv6`, in the task's network namespace), `path` for
    HTTP. A timeout of 0 is none (Mesos's). Never kills the task; its results go to the framework on change."""

    type: CheckType
    command: CheckCommand | None = None
    port: Port | None = None
    path: Name | None = None  # HTTP: the request path, '/...'; None: '/'
    ipv6: bool = False  # a HealthCheck's http/tcp `protocol` IPv6
    delay_seconds: Seconds = 15.0
    interval_seconds: Seconds = 10.0
    timeout_seconds: Seconds = 20.0


class HealthCheckSpec(CheckSpec, omit_defaults=True):
    """TaskInfo.health_check (Mesos's HealthCheck): a check whose failures, past the grace period, count; after
    `consecutive_failures` of them in a row the agent kills the task (agent/checks.py). `scheme`: HTTP only."""

    scheme: Literal["http", "https"] = "http"
    consecutive_failures: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 3
    grace_period_seconds: Seconds = 10.0


class CheckStatus(msgspec.Struct, omit_defaults=True):
    """A check's result (Mesos's CheckStatusInfo), flat: the field of its type, or none (no result yet, or the check
    could not be performed: it timed out, the connection failed)."""

    type: CheckType
    exit_code: Annotated[int, msgspec.Meta(ge=-2**31, le=2**31 - 1)] | None = None  # COMMAND
    status_code: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None  # HTTP
    succeeded: bool | None = None  # TCP


class TaskSpec(msgspec.Struct, omit_defaults=True):
    """What a framework asked to run, as validated by the leader."""

    task_id: Id
    name: Name
    agent_id: Id
    resources: Annotated[list[Resource], _1K]
    command: CommandSpec
    image: Name | None = None
    labels: Annotated[list[Label], _1K] = msgspec.field(default_factory=list)
    kill_grace_seconds: Seconds | None = None
    data: Data | None = None  # base64, passed through
    role: Role = "*"  # the allocation role of the offers it was launched from
    network: Network | None = None  # None: HOST (the codec records HOST as None, so old specs are unchanged)
    port_mappings: Annotated[list[PortMapping], _1K] = msgspec.field(default_factory=list)
    # Added after catalogue version 2 (absent in older events, which decode and fold as before).
    health_check: HealthCheckSpec | None = None
    check: CheckSpec | None = None
    # Added after catalogue version 2: set on the tasks of a task group (LAUNCH_GROUP), absent on a command task.
    executor: ExecutorSpec | None = None


class TaskStatus(msgspec.Struct, omit_defaults=True):
    """One status update. `uuid` (base64 of 16 bytes) is set only for agent updates that need an ack."""

    state: TaskState
    source: Source
    timestamp: Timestamp
    uuid: Uuid | None = None
    reason: Name | None = None
    message: Text | None = None
    container_id: Name | None = None
    unreachable_time: Timestamp | None = None  # set on master-generated TASK_UNREACHABLE statuses (seconds)
    # Added after catalogue version 2: a health-checked task's health (set by its agent from its first result on);
    # a checked task's latest check result (of the check's type, empty before the first).
    healthy: bool | None = None
    check_status: CheckStatus | None = None


class OfferRecord(msgspec.Struct, omit_defaults=True):
    offer_id: Id
    framework_id: Id
    agent_id: Id
    role: Role
    resources: Annotated[list[Resource], _10K]


class Candidate(msgspec.Struct, array_like=True):
    """One entry of the allocator's sorted order when it decided: why this framework came first.
    `share` and `allocations` rank it among its role's frameworks; `role_share` ranks its role."""

    framework_id: Id
    role: Role
    share: Finite
    allocations: Count
    role_share: Finite = 0.0


class AgentDecision(msgspec.Struct, omit_defaults=True):
    agent_id: Id
    order: Annotated[list[Candidate], _BIG]
    stage: Literal[1, 2] = 2  # 1: quota guarantees, 2: everything
    skipped: Annotated[list[Annotated[list[Text], msgspec.Meta(max_length=2)]], _BIG] = msgspec.field(
        default_factory=list)


class TaskReport(msgspec.Struct, omit_defaults=True):
    """A task an agent says it has, when it (re-)registers."""

    framework_id: Id
    task_id: Id
    state: TaskState
    spec: TaskSpec | None = None


class Rejection(msgspec.Struct, omit_defaults=True):
    task_id: AnyTaskId
    state: TaskState  # TASK_ERROR / TASK_LOST / TASK_DROPPED
    reason: Name
    message: Text


# ---- the events ---------------------------------------------------------------------------


class ClusterCreated(Base, tag="CLUSTER_CREATED"):
    cluster_id: Id
    catalogue_version: Count = CATALOGUE_VERSION


class LeaderElected(Base, tag="LEADER_ELECTED"):
    """A replica won an election and serves from here on.

    Folding it drops every outstanding offer (silently, as Mesos does on failover)
    and marks frameworks and agents disconnected until they reconnect to this leader.
    `config` is the leader's allocation-relevant flags, so `verify` can re-decide."""

    leader_id: Name
    http: Address
    term: Count
    config: dict[Name, object] = msgspec.field(default_factory=dict)


class FrameworkSubscribed(Base, tag="FRAMEWORK_SUBSCRIBED"):
    framework_id: Id
    info: FrameworkInfo
    suppressed_roles: Annotated[list[Role], _1K] = msgspec.field(default_factory=list)
    resubscribe: bool = False


class FrameworkDisconnected(Base, tag="FRAMEWORK_DISCONNECTED"):
    framework_id: Id


class FrameworkRemoved(Base, tag="FRAMEWORK_REMOVED"):
    framework_id: Id
    reason: Name  # "teardown" | "failover_timeout"


class RolesSuppressed(Base, tag="ROLES_SUPPRESSED"):
    framework_id: Id
    roles: Annotated[list[Role], _1K]


class RolesRevived(Base, tag="ROLES_REVIVED"):
    framework_id: Id
    roles: Annotated[list[Role], _1K]


class AgentRegistered(Base, tag="AGENT_REGISTERED"):
    agent_id: Id
    hostname: Name
    http: Address
    resources: Annotated[list[Resource], _10K]
    attributes: Annotated[list[Label], _1K] = msgspec.field(default_factory=list)
    principal: Name | None = None  # who the agent authenticated as (only it may call as this agent)
    # The dynamic reservations and persistent volumes the agent had checkpointed (an agent that lost its id but
    # kept its volumes): adopted, as Mesos's master does for a registering agent, so its data is not deleted.
    checkpointed: Annotated[list[Resource], _10K] = msgspec.field(default_factory=list)


class AgentReregistered(Base, tag="AGENT_REREGISTERED"):
    agent_id: Id
    hostname: Name
    http: Address
    resources: Annotated[list[Resource], _10K]
    attributes: Annotated[list[Label], _1K] = msgspec.field(default_factory=list)
    principal: Name | None = None  # who the agent authenticated as (only it may call as this agent)
    tasks: Annotated[list[TaskReport], _BIG] = msgspec.field(default_factory=list)


class AgentDisconnected(Base, tag="AGENT_DISCONNECTED"):
    agent_id: Id


class AgentUnreachable(Base, tag="AGENT_UNREACHABLE"):
    """The leader stopped hearing from an agent (no ping for agent_ping_timeout x max_agent_ping_timeouts,
    or its link stayed broken that long): its tasks become TASK_UNREACHABLE until it re-registers."""

    agent_id: Id
    unreachable_time: Timestamp


class OffersMade(Base, tag="OFFERS_MADE"):
    """One allocation run: its inputs (trigger, candidate agents, shuffle seed; the time is the
    envelope's) and the offers it made. Why (per agent: the order and shares it saw) is re-derived
    on demand from the inputs (`master.allocation.explanation`); older leaders recorded it in
    `decisions`, which the leader now leaves empty."""

    offers: Annotated[list[OfferRecord], _BIG]
    trigger: Name  # "periodic" | "framework_added" | "agent_added" | "revive" | ...
    decisions: Annotated[list[AgentDecision], _BIG] = msgspec.field(default_factory=list)  # empty: not recorded
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    candidates: Annotated[list[Id], _BIG] | None = None  # agent ids considered; None = every agent


class OffersRescinded(Base, tag="OFFERS_RESCINDED"):
    offer_ids: Annotated[list[Id], _BIG]
    reason: Name  # "offer_timeout" | "agent_disconnected" | "framework_removed" | ...


class OffersDeclined(Base, tag="OFFERS_DECLINED"):
    framework_id: Id
    offer_ids: Annotated[list[Id], _BIG]
    refuse_seconds: Seconds  # effective filter duration; 0 = no filter


OperationKind = Literal["RESERVE", "UNRESERVE", "CREATE", "DESTROY"]


class ResourceOperation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One operation on an agent's resources (Mesos `Offer.Operation` RESERVE, UNRESERVE, CREATE, DESTROY):
    RESERVE and UNRESERVE name reserved resources, CREATE and DESTROY persistent volumes. What it consumes and
    yields is `eventstore.resources.conversion`."""

    kind: OperationKind
    resources: Annotated[list[Resource], _10K]


def operation_problem(op: ResourceOperation) -> str | None:
    """The shape rules of one operation that the fold relies on (the deciders check everything else)."""
    if not op.resources:
        return f"{op.kind} names no resources"
    if op.kind in ("RESERVE", "UNRESERVE"):
        if any(r.role == "*" for r in op.resources):
            return f"{op.kind} resources must name a reservation role"
        if any(r.persistence is not None for r in op.resources):
            return f"{op.kind} cannot name persistent volumes"
    elif any(r.persistence is None for r in op.resources):
        return f"{op.kind} names a resource that is not a persistent volume"
    elif any(r.copies != 1 for r in op.resources):
        return f"{op.kind} names a shared volume with more than one copy"
    return resources_problem(op.resources)


class OffersAccepted(Base, tag="OFFERS_ACCEPTED"):
    framework_id: Id
    offer_ids: Annotated[list[Id], _BIG]
    tasks: Annotated[list[TaskSpec], _BIG]
    refuse_seconds: Seconds  # filter on the unused remainder (implicit decline)
    rejected: Annotated[list[Rejection], _BIG] = msgspec.field(default_factory=list)
    # Dynamic reservations made (RESERVE) and released (UNRESERVE) by this ACCEPT, applied before its tasks.
    # Written by leaders before persistent volumes, kept so their logs fold as they did: new ones write
    # `operations` instead, which keeps the order (RESERVE then CREATE; DESTROY then UNRESERVE).
    reserved: Annotated[list[Resource], _10K] = msgspec.field(default_factory=list)
    unreserved: Annotated[list[Resource], _10K] = msgspec.field(default_factory=list)
    # The ACCEPT's RESERVE / UNRESERVE / CREATE / DESTROY operations that were valid, in order, applied to the
    # offered resources before its tasks take theirs. The framework (and its principal) is the actor.
    operations: Annotated[list[ResourceOperation], _1K] = msgspec.field(default_factory=list)


OperatorCall = Literal["RESERVE_RESOURCES", "UNRESERVE_RESOURCES", "CREATE_VOLUMES", "DESTROY_VOLUMES"]


class AgentOperationsApplied(Base, tag="AGENT_OPERATIONS_APPLIED"):
    """An operator's RESERVE_RESOURCES / UNRESERVE_RESOURCES / CREATE_VOLUMES / DESTROY_VOLUMES on an agent's
    unallocated resources (the leader rescinds offers holding them first, in the same decision). `principal` is
    who called (None without authentication), for the audit. A replica that does not know this type stops
    loudly instead of folding past it."""

    agent_id: Id
    call: OperatorCall
    operations: Annotated[list[ResourceOperation], _1K]
    principal: Name | None = None


class WeightsUpdated(Base, tag="WEIGHTS_UPDATED"):
    weights: dict[Role, Weight]


class QuotaUpdated(Base, tag="QUOTA_UPDATED"):
    """A role's quota; empty guarantees and limits remove it. Limits: an absent name is unlimited."""

    role: Role
    guarantees: dict[Name, Scalar] = msgspec.field(default_factory=dict)
    limits: dict[Name, Scalar] = msgspec.field(default_factory=dict)


class TaskKillRequested(Base, tag="TASK_KILL_REQUESTED"):
    framework_id: Id
    task_id: Id
    grace_seconds: Seconds | None = None


class StatusUpdated(Base, tag="STATUS_UPDATED"):
    framework_id: Id
    task_id: Id
    agent_id: Id
    status: TaskStatus


class StatusAcknowledged(Base, tag="STATUS_ACKNOWLEDGED"):
    framework_id: Id
    task_id: Id
    uuid: Uuid


Event = Union[
    ClusterCreated,
    LeaderElected,
    FrameworkSubscribed,
    FrameworkDisconnected,
    FrameworkRemoved,
    RolesSuppressed,
    RolesRevived,
    AgentRegistered,
    AgentReregistered,
    AgentDisconnected,
    AgentUnreachable,
    OffersMade,
    OffersRescinded,
    OffersDeclined,
    OffersAccepted,
    AgentOperationsApplied,
    WeightsUpdated,
    QuotaUpdated,
    TaskKillRequested,
    StatusUpdated,
    StatusAcknowledged,
]

EVENT_CLASSES: tuple[type, ...] = get_args(Event)
EVENT_TYPES: dict[str, type] = {str(cls.__struct_config__.tag): cls for cls in EVENT_CLASSES}  # type: ignore[attr-defined]


class Envelope(msgspec.Struct, omit_defaults=True):
    """An event as committed: where it landed in the log and the leader's clock when proposed."""

    index: int
    term: int
    ts: float
    event: Event


class Batch(msgspec.Struct):
    """What one Raft entry carries: the events of one or more decisions of one leader, in decision order.

    A leader commits decisions in groups (master/pipeline.py): one Raft entry, one fsync for many decisions. Each
    decision keeps its own time: `parts` lists (ts, number of events) per decision, in order; without it the
    entry is one decision taken at `ts`. `epoch` is the log index of the LEADER_ELECTED that began the proposer's
    serving period (0: a leadership barrier, proposed before it had one), for fencing (raftlog._Log). `first` is
    the index its first event was decided at: it was decided on every entry before it, so it commits there or not
    at all (0: a barrier, anywhere).

    On the wire (`encode_batch`) the events travel as their JSON bytes (`payloads`), the same bytes the store
    keeps: `decode_batch` returns both, and replicas store the payloads they folded."""

    term: Count
    ts: Timestamp
    events: list[Event]
    proposal: Name = ""  # the proposer's id for this batch (lets it find its own commit)
    payloads: list[bytes] = msgspec.field(default_factory=list)
    parts: list[tuple[float, int]] | None = None
    epoch: int = 0
    first: int = 0  # the index its first event must get (0: wherever it lands); see raftlog._Log

    @property
    def event_count(self) -> int:
        return len(self.events)

    def timestamps(self) -> list[float]:
        """Each event's time: its decision's."""
        if not self.parts:
            return [self.ts] * len(self.events)
        return [ts for ts, n in self.parts for _ in range(n)]

    def envelopes(self, first: int) -> list[Envelope]:
        return [Envelope(index=first + i, term=self.term, ts=ts, event=e)
                for i, (e, ts) in enumerate(zip(self.events, self.timestamps(), strict=True))]


class UndecodedEntry(msgspec.Struct):
    """A committed Raft entry whose events are not decoded (yet): the leader's own group (peek_entry)."""

    term: int
    proposal: str
    event_count: int
    data: bytes

    def decode(self) -> Batch:
        return decode_batch(self.data)


class _Part(msgspec.Struct, array_like=True):
    ts: Timestamp
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST)]


class _RaftEntry(msgspec.Struct, array_like=True):
    term: Count
    ts: Timestamp
    proposal: Name
    payloads: Annotated[list[bytes], msgspec.Meta(max_length=MAX_LIST)]
    parts: Annotated[list[_Part], msgspec.Meta(max_length=MAX_LIST)] | None = None
    epoch: Count = 0
    first: Count = 0


_json_enc = msgspec.json.Encoder()
_event_dec = msgspec.json.Decoder(Event)
_entry_dec = msgspec.msgpack.Decoder(_RaftEntry)
_msgpack_enc = msgspec.msgpack.Encoder()


def encode_event(e: Event) -> bytes:
    """The commit gate: an event's bytes, only if they decode back (every value rule of its type holds; no
    non-finite number, which JSON cannot hold) and the fold can take it (`event_problem`). InvalidEvent if not."""
    data = _json_enc.encode(e)
    try:
        decode_event(data)
    except (msgspec.ValidationError, InvalidEvent) as err:
        raise InvalidEvent(f"refusing to commit an invalid {event_type(e)} event: {err}") from None
    return data


def decode_event(data: bytes | str) -> Event:
    """An event from its committed bytes; raises UnknownEvent for a type this build does not know, and
    msgspec.ValidationError / InvalidEvent for bytes that break a rule (never committed by this build)."""
    try:
        e = _event_dec.decode(data)
    except msgspec.ValidationError as err:
        if "Invalid value" in str(err) and "$.type" in str(err):
            raise UnknownEvent(f"unknown event type in {data[:80]!r}: {err}") from None
        raise
    problem = event_problem(e)
    if problem is not None:
        raise InvalidEvent(f"{event_type(e)}: {problem}")
    return e


def event_problem(e: Event) -> str | None:
    """The rules the fold relies on that a field's type cannot express, or None when the event keeps them."""
    lists: list[list[Resource]] = []
    if isinstance(e, (AgentRegistered, AgentReregistered)):
        lists.append(e.resources)
        if any(r.persistence is not None for r in e.resources):
            return "an agent's resources hold no persistent volume (they are checkpointed resources)"
        if isinstance(e, AgentRegistered):
            lists.append(e.checkpointed)
            if any(r.role == "*" or r.copies != 1 for r in e.checkpointed):
                return "checkpointed resources are reserved, and a volume counts one copy there"
        if isinstance(e, AgentReregistered):
            lists += [t.spec.resources for t in e.tasks if t.spec is not None]
    elif isinstance(e, OffersMade):
        lists += [o.resources for o in e.offers]
    elif isinstance(e, OffersAccepted):
        # The fold adds all of these up: one name must have one type across them.
        lists.append([r for t in e.tasks for r in t.resources] + list(e.reserved) + list(e.unreserved)
                     + [r for t in e.tasks if t.executor is not None for r in t.executor.resources]
                     + [r for op in e.operations for r in op.resources])
        if e.operations and (e.reserved or e.unreserved):
            return "an event carries either operations or the older reserved/unreserved lists, not both"
        for op in e.operations:
            if (problem := operation_problem(op)) is not None:
                return problem
        # A task group's tasks carry one and the same executor, which lists them (the fold and a rebuilt allocator
        # count its resources once, by it).
        groups: dict[str, ExecutorSpec] = {}
        for t in e.tasks:
            if t.executor is None:
                continue
            first = groups.setdefault(t.executor.executor_id, t.executor)
            if t.executor != first:
                return f"the tasks of task group executor {t.executor.executor_id!r} carry different executors"
            if t.task_id not in t.executor.task_ids:
                return f"task {t.task_id!r} is not in the task IDs of its executor {t.executor.executor_id!r}"
    elif isinstance(e, AgentOperationsApplied):
        if not e.operations:
            return f"{e.call} applies no operation"
        want = {"RESERVE_RESOURCES": "RESERVE", "UNRESERVE_RESOURCES": "UNRESERVE", "CREATE_VOLUMES": "CREATE",
                "DESTROY_VOLUMES": "DESTROY"}[e.call]
        for op in e.operations:
            if op.kind != want:
                return f"{e.call} carries a {op.kind} operation"
            if (problem := operation_problem(op)) is not None:
                return problem
        lists.append([r for op in e.operations for r in op.resources])
    elif isinstance(e, QuotaUpdated):
        if e.role == "*" or "/" in e.role:
            return f"quota can only be set on a top-level role other than '*', not {e.role!r}"
        for name, g in e.guarantees.items():
            if name in e.limits and g > e.limits[name]:
                return f"the guarantee of {name} ({g:g}) exceeds its limit ({e.limits[name]:g})"
    for items in lists:
        problem = resources_problem(items)
        if problem is not None:
            return problem
    return None


def event_type(e: Event) -> str:
    return str(e.__struct_config__.tag)


def encode_batch(b: Batch) -> bytes:
    """A batch as one Raft entry: each event through the commit gate (InvalidEvent if one is refused)."""
    payloads = b.payloads if len(b.payloads) == len(b.events) else [encode_event(e) for e in b.events]
    return encode_entry(b.term, b.ts, b.proposal, payloads, b.parts, b.epoch, b.first)


def encode_entry(term: int, ts: float, proposal: str, payloads: list[bytes],
                 parts: list[tuple[float, int]] | None = None, epoch: int = 0, first: int = 0) -> bytes:
    """A Raft entry from payloads that already passed the commit gate (`encode_event`)."""
    return _msgpack_enc.encode(_RaftEntry(term=term, ts=ts, proposal=proposal, payloads=payloads,
                                          parts=None if parts is None else [_Part(t, n) for t, n in parts],
                                          epoch=epoch, first=first))


class _EntryHead(msgspec.Struct, array_like=True):
    term: int
    ts: float
    proposal: str
    payloads: list[msgspec.Raw]


_head_dec = msgspec.msgpack.Decoder(_EntryHead)


def peek_entry(data: bytes) -> UndecodedEntry | None:
    """An entry's term, proposal and number of events, without decoding its events (None if even that fails)."""
    try:
        head = _head_dec.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return UndecodedEntry(term=head.term, proposal=head.proposal, event_count=len(head.payloads), data=data)


def batch_length(data: bytes) -> int:
    """How many events a Raft entry holds, from its envelope alone (0 if even that does not decode)."""
    try:
        return len(_entry_dec.decode(data).payloads)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return 0


def decode_batch(data: bytes) -> Batch:
    """A Raft entry back into a batch, events decoded from the very bytes the store will keep.
    UnknownEvent / InvalidEvent if any part does not decode."""
    try:
        entry = _entry_dec.decode(data)
        events = [decode_event(p) for p in entry.payloads]
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        raise InvalidEvent(f"undecodable batch: {err}") from None
    parts = None
    if entry.parts is not None:
        parts = [(p.ts, p.count) for p in entry.parts]
        if sum(n for _, n in parts) != len(events):
            raise InvalidEvent(f"undecodable batch: its parts count {sum(n for _, n in parts)} events, "
                               f"it holds {len(events)}")
    return Batch(term=entry.term, ts=entry.ts, events=events, proposal=entry.proposal, payloads=entry.payloads,
                 parts=parts, epoch=entry.epoch, first=entry.first)


def to_builtins(obj: object) -> object:
    return msgspec.to_builtins(obj)
