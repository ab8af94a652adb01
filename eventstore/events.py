"""The event catalogue: every fact the master records, one typed record each.

Rules (see docs/events.md):
- Events are decisions already taken by the leader. Anything that is not a pure
  function of the log (time, new IDs, the allocator's choice) is a field here.
- The leader's timestamp, the Raft term and the log index are on the
  `Envelope`, not on each event: one batch shares one timestamp.
- Encoding is msgspec JSON with a "type" tag. Adding an optional field is a
  compatible change; renaming or removing one bumps CATALOGUE_VERSION.
  An unknown "type" is an error (`UnknownEvent`), never silently skipped.
"""

from __future__ import annotations

from typing import Union

import msgspec

from eventstore.resources import Resource

CATALOGUE_VERSION = 1


class UnknownEvent(Exception):
    """An event whose type this build does not know: replaying past it would be a lie."""


class Base(msgspec.Struct, tag_field="type", omit_defaults=True, forbid_unknown_fields=False):
    pass


# ---- value records used inside events ---------------------------------------------------


class Label(msgspec.Struct, array_like=True):
    key: str
    value: str = ""


class FrameworkInfo(msgspec.Struct, omit_defaults=True):
    name: str
    user: str
    roles: list[str] = msgspec.field(default_factory=lambda: ["*"])
    multi_role: bool = False  # subscribed with MULTI_ROLE (roles) vs the legacy single role
    capabilities: list[str] = msgspec.field(default_factory=list)
    failover_timeout: float = 0.0
    checkpoint: bool = False
    principal: str | None = None
    hostname: str | None = None
    webui_url: str | None = None
    labels: list[Label] = msgspec.field(default_factory=list)
    # FrameworkInfo.offer_filters: role -> alternative quantity sets an offer must hold ([] = anything)
    min_allocatable: dict[str, list[dict[str, float]]] = msgspec.field(default_factory=dict)

    def priority(self) -> float:
        """For `--framework-sorter priority`: the framework's `priority` label (a Drover extension)."""
        for label in self.labels:
            if label.key == "priority":
                try:
                    return float(label.value)
                except ValueError:
                    return 0.0
        return 0.0


class CommandSpec(msgspec.Struct, omit_defaults=True):
    shell: bool = True
    value: str | None = None
    arguments: list[str] = msgspec.field(default_factory=list)
    env: list[Label] = msgspec.field(default_factory=list)  # name/value pairs, in the framework's order
    user: str | None = None


class TaskSpec(msgspec.Struct, omit_defaults=True):
    """What a framework asked to run, as validated by the leader."""

    task_id: str
    name: str
    agent_id: str
    resources: list[Resource]
    command: CommandSpec
    image: str | None = None
    labels: list[Label] = msgspec.field(default_factory=list)
    kill_grace_seconds: float | None = None
    data: str | None = None  # base64, passed through
    role: str = "*"  # the allocation role of the offers it was launched from


class TaskStatus(msgspec.Struct, omit_defaults=True):
    """One status update. `uuid` (base64 of 16 bytes) is set only for agent updates that need an ack."""

    state: str
    source: str  # SOURCE_MASTER | SOURCE_AGENT | SOURCE_EXECUTOR
    timestamp: float
    uuid: str | None = None
    reason: str | None = None
    message: str | None = None
    container_id: str | None = None
    unreachable_time: float | None = None  # set on master-generated TASK_UNREACHABLE statuses (seconds)


class OfferRecord(msgspec.Struct, omit_defaults=True):
    offer_id: str
    framework_id: str
    agent_id: str
    role: str
    resources: list[Resource]


class Candidate(msgspec.Struct, array_like=True):
    """One entry of the allocator's sorted order when it decided: why this framework came first.
    `share` and `allocations` rank it among its role's frameworks; `role_share` ranks its role."""

    framework_id: str
    role: str
    share: float
    allocations: int
    role_share: float = 0.0


class AgentDecision(msgspec.Struct, omit_defaults=True):
    agent_id: str
    order: list[Candidate]
    stage: int = 2  # 1: quota guarantees, 2: everything
    skipped: list[list[str]] = msgspec.field(default_factory=list)  # [framework_id, why] pairs


class TaskReport(msgspec.Struct, omit_defaults=True):
    """A task an agent says it has, when it (re-)registers."""

    framework_id: str
    task_id: str
    state: str
    spec: TaskSpec | None = None


class Rejection(msgspec.Struct, omit_defaults=True):
    task_id: str
    state: str  # TASK_ERROR / TASK_LOST / TASK_DROPPED
    reason: str
    message: str


# ---- the events ---------------------------------------------------------------------------


class ClusterCreated(Base, tag="CLUSTER_CREATED"):
    cluster_id: str
    catalogue_version: int = CATALOGUE_VERSION


class LeaderElected(Base, tag="LEADER_ELECTED"):
    """A replica won an election and serves from here on.

    Folding it drops every outstanding offer (silently, as Mesos does on failover)
    and marks frameworks and agents disconnected until they reconnect to this leader.
    `config` is the leader's allocation-relevant flags, so `verify` can re-decide."""

    leader_id: str
    http: str
    term: int
    config: dict[str, object] = msgspec.field(default_factory=dict)


class FrameworkSubscribed(Base, tag="FRAMEWORK_SUBSCRIBED"):
    framework_id: str
    info: FrameworkInfo
    suppressed_roles: list[str] = msgspec.field(default_factory=list)
    resubscribe: bool = False


class FrameworkDisconnected(Base, tag="FRAMEWORK_DISCONNECTED"):
    framework_id: str


class FrameworkRemoved(Base, tag="FRAMEWORK_REMOVED"):
    framework_id: str
    reason: str  # "teardown" | "failover_timeout"


class RolesSuppressed(Base, tag="ROLES_SUPPRESSED"):
    framework_id: str
    roles: list[str]


class RolesRevived(Base, tag="ROLES_REVIVED"):
    framework_id: str
    roles: list[str]


class AgentRegistered(Base, tag="AGENT_REGISTERED"):
    agent_id: str
    hostname: str
    http: str
    resources: list[Resource]
    attributes: list[Label] = msgspec.field(default_factory=list)


class AgentReregistered(Base, tag="AGENT_REREGISTERED"):
    agent_id: str
    hostname: str
    http: str
    resources: list[Resource]
    attributes: list[Label] = msgspec.field(default_factory=list)
    tasks: list[TaskReport] = msgspec.field(default_factory=list)


class AgentDisconnected(Base, tag="AGENT_DISCONNECTED"):
    agent_id: str


class AgentUnreachable(Base, tag="AGENT_UNREACHABLE"):
    """The leader stopped hearing from an agent (no ping for agent_ping_timeout x max_agent_ping_timeouts,
    or its link stayed broken that long): its tasks become TASK_UNREACHABLE until it re-registers."""

    agent_id: str
    unreachable_time: float


class OffersMade(Base, tag="OFFERS_MADE"):
    """One allocation run: its inputs (trigger, candidate agents, shuffle seed; the time is the
    envelope's), the offers it made, and why (per agent: the order and shares it saw)."""

    offers: list[OfferRecord]
    trigger: str  # "periodic" | "framework_added" | "agent_added" | "revive" | ...
    decisions: list[AgentDecision] = msgspec.field(default_factory=list)
    seed: int = 0
    candidates: list[str] | None = None  # agent ids considered; None = every agent


class OffersRescinded(Base, tag="OFFERS_RESCINDED"):
    offer_ids: list[str]
    reason: str  # "offer_timeout" | "agent_disconnected" | "framework_removed" | ...


class OffersDeclined(Base, tag="OFFERS_DECLINED"):
    framework_id: str
    offer_ids: list[str]
    refuse_seconds: float  # effective filter duration; 0 = no filter


class OffersAccepted(Base, tag="OFFERS_ACCEPTED"):
    framework_id: str
    offer_ids: list[str]
    tasks: list[TaskSpec]
    refuse_seconds: float  # filter on the unused remainder (implicit decline)
    rejected: list[Rejection] = msgspec.field(default_factory=list)
    # Dynamic reservations made (RESERVE) and released (UNRESERVE) by this ACCEPT, applied before its tasks.
    reserved: list[Resource] = msgspec.field(default_factory=list)
    unreserved: list[Resource] = msgspec.field(default_factory=list)


class WeightsUpdated(Base, tag="WEIGHTS_UPDATED"):
    weights: dict[str, float]


class QuotaUpdated(Base, tag="QUOTA_UPDATED"):
    """A role's quota; empty guarantees and limits remove it. Limits: an absent name is unlimited."""

    role: str
    guarantees: dict[str, float] = msgspec.field(default_factory=dict)
    limits: dict[str, float] = msgspec.field(default_factory=dict)


class TaskKillRequested(Base, tag="TASK_KILL_REQUESTED"):
    framework_id: str
    task_id: str
    grace_seconds: float | None = None


class StatusUpdated(Base, tag="STATUS_UPDATED"):
    framework_id: str
    task_id: str
    agent_id: str
    status: TaskStatus


class StatusAcknowledged(Base, tag="STATUS_ACKNOWLEDGED"):
    framework_id: str
    task_id: str
    uuid: str


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
    WeightsUpdated,
    QuotaUpdated,
    TaskKillRequested,
    StatusUpdated,
    StatusAcknowledged,
]

EVENT_TYPES: dict[str, type] = {cls.__struct_config__.tag: cls for cls in Event.__args__}


class Envelope(msgspec.Struct, omit_defaults=True):
    """An event as committed: where it landed in the log and the leader's clock when proposed."""

    index: int
    term: int
    ts: float
    event: Event


class Batch(msgspec.Struct):
    """What one Raft entry carries: events decided together by one leader at one instant."""

    term: int
    ts: float
    events: list[Event]
    proposal: str = ""  # the proposer's id for this batch (lets it find its own commit)


_json_enc = msgspec.json.Encoder()
_event_dec = msgspec.json.Decoder(Event)
_batch_dec = msgspec.msgpack.Decoder(Batch)
_msgpack_enc = msgspec.msgpack.Encoder()


def encode_event(ev: Event) -> bytes:
    return _json_enc.encode(ev)


def decode_event(data: bytes | str) -> Event:
    try:
        return _event_dec.decode(data)
    except msgspec.ValidationError as e:
        if "Invalid value" in str(e) and "$.type" in str(e):
            raise UnknownEvent(f"unknown event type in {data[:80]!r}: {e}") from None
        raise


def event_type(ev: Event) -> str:
    return ev.__struct_config__.tag


def encode_batch(b: Batch) -> bytes:
    return _msgpack_enc.encode(b)


def decode_batch(data: bytes) -> Batch:
    try:
        return _batch_dec.decode(data)
    except msgspec.ValidationError as e:
        raise UnknownEvent(f"undecodable batch: {e}") from None


def to_builtins(obj) -> object:
    return msgspec.to_builtins(obj)
