"""Master state and the fold that derives it from the event log.

`apply(state, envelope)` is the only writer of master state, on every replica,
in log order. It is deterministic: no clock (time comes from the envelope), no
randomness, no IO, and every collection is either a dict filled in log order
or sorted. It mutates `state` in place and returns it (copying a cluster's
state per event would make replay slow); callers that need an old state keep
a copy (`clone`).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Callable, Iterable

import msgspec

from eventstore import events as ev
from eventstore.resources import Resource, Resources, conversion, key_of
from eventstore.vocab import CHECK_REASONS, TERMINAL_STATES, Reason, Source, TaskState
from master.allocation import ALLOCATOR_KEY, allocator_of, digest, reset
from master.allocator.config import AllocatorConfig
from master.allocator.hierarchical import HierarchicalAllocator

# Not terminal, but its resources are no longer allocated (recovered when its agent became unreachable).
UNREACHABLE = TaskState.UNREACHABLE
MAX_COMPLETED_TASKS = 1000
MAX_COMPLETED_FRAMEWORKS = 1000  # removed framework ids remembered (a removed id may never subscribe again)
# Torn-down frameworks whose record (info, times) is kept for /master/state's `completed_frameworks`: Mesos's
# --max_completed_frameworks default. Their completed tasks are those of `State.completed_tasks`.
MAX_COMPLETED_FRAMEWORK_RECORDS = 50


class Framework(msgspec.Struct, omit_defaults=True):
    framework_id: str
    info: ev.FrameworkInfo
    registered_at: float
    connected: bool = True
    active: bool = True
    reregistered_at: float | None = None
    disconnected_at: float | None = None
    disconnected_by_failover: bool = False  # the leader changed under it: it gets the re-registration grace
    suppressed_roles: list[str] = msgspec.field(default_factory=list)


class Agent(msgspec.Struct, omit_defaults=True):
    agent_id: str
    hostname: str
    http: str
    resources: list[Resource]
    registered_at: float
    attributes: list[ev.Label] = msgspec.field(default_factory=list)
    connected: bool = True
    reregistered_at: float | None = None
    # Dynamic reservations recorded by the log; `resources` (the total) already includes them, and an agent
    # that re-registers with its flag's resources gets them applied again.
    dynamic: list[Resource] = msgspec.field(default_factory=list)
    unreachable_at: float | None = None  # set while it is in `State.unreachable_agents`
    principal: str | None = None  # who it authenticated as when it last (re-)registered

    def total(self) -> Resources:
        return Resources(self.resources)


def shares(info: ev.FrameworkInfo) -> bool:
    """May the framework be offered shared resources (its SHARED_RESOURCES capability)?"""
    return "SHARED_RESOURCES" in info.capabilities


def with_reservations(base: Resources, dynamic: Resources) -> Resources:
    """An agent's flag resources with what the log checkpointed on it applied: its dynamic reservations and the
    persistent volumes made of them."""
    if not dynamic:
        return base
    plain = dynamic.as_unreserved()
    if not base.contains(plain):
        return base
    return base - plain + dynamic


class Task(msgspec.Struct, omit_defaults=True):
    framework_id: str
    spec: ev.TaskSpec
    launched_at: float
    state: str = TaskState.STAGING
    statuses: list[ev.TaskStatus] = msgspec.field(default_factory=list)
    pending: ev.TaskStatus | None = None  # latest update with a uuid the framework has not acknowledged
    kill_requested: bool = False
    kill_grace_seconds: float | None = None

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    @property
    def agent_id(self) -> str:
        return self.spec.agent_id

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def holds_resources(self) -> bool:
        """Allocated in the allocator: not terminal and not on an unreachable agent (as Mesos recovers those)."""
        return self.state not in TERMINAL_STATES and self.state != UNREACHABLE


class Offer(msgspec.Struct, omit_defaults=True):
    offer_id: str
    framework_id: str
    agent_id: str
    role: str
    resources: list[Resource]
    made_at: float


class Filter(msgspec.Struct, omit_defaults=True):
    """A decline filter: don't offer a subset of `resources` on `agent_id` to (framework, role) until `expires_at`."""

    framework_id: str
    role: str
    agent_id: str
    resources: list[Resource]
    expires_at: float


class QuotaRecord(msgspec.Struct, omit_defaults=True):
    guarantees: dict[str, float] = msgspec.field(default_factory=dict)
    limits: dict[str, float] = msgspec.field(default_factory=dict)


class State(msgspec.Struct, omit_defaults=True, dict=True):
    """The folded master state. Its fields are the record; the allocator (`master.allocation`)
    is an index derived from them and kept in step by the fold, held outside the fields."""

    index: int = 0  # last applied log index
    ts: float = 0.0  # leader timestamp of the last applied event
    cluster_id: str | None = None
    term: int = 0
    leader_id: str | None = None
    leader_http: str | None = None
    elected_at: float | None = None
    config: dict[str, object] = msgspec.field(default_factory=dict)
    next_framework: int = 0
    next_agent: int = 0
    next_offer: int = 0
    frameworks: dict[str, Framework] = msgspec.field(default_factory=dict)
    removed_frameworks: dict[str, float] = msgspec.field(default_factory=dict)  # id -> removed_at
    # The last MAX_COMPLETED_FRAMEWORK_RECORDS removed frameworks, oldest first, as they were when removed (inactive,
    # disconnected, `disconnected_at` = removal time). Added after snapshots without it: those decode to {}.
    completed_frameworks: dict[str, Framework] = msgspec.field(default_factory=dict)
    agents: dict[str, Agent] = msgspec.field(default_factory=dict)
    # Agents marked unreachable (AGENT_UNREACHABLE): not offered, not in the allocator, until they re-register.
    unreachable_agents: dict[str, Agent] = msgspec.field(default_factory=dict)
    tasks: dict[str, dict[str, Task]] = msgspec.field(default_factory=dict)  # framework_id -> task_id -> Task
    completed_tasks: list[Task] = msgspec.field(default_factory=list)
    offers: dict[str, Offer] = msgspec.field(default_factory=dict)
    filters: list[Filter] = msgspec.field(default_factory=list)
    weights: dict[str, float] = msgspec.field(default_factory=dict)
    quotas: dict[str, QuotaRecord] = msgspec.field(default_factory=dict)

    # -- derived views (pure) ----------------------------------------------------------------
    def task(self, framework_id: str, task_id: str) -> Task | None:
        return self.tasks.get(framework_id, {}).get(task_id)

    def all_tasks(self) -> list[Task]:
        return [t for fw in self.tasks.values() for t in fw.values()]

    def used_on_agent(self, agent_id: str) -> Resources:
        return Resources(r for _, res in holdings(t for t in self.all_tasks() if t.agent_id == agent_id)
                         for r in res)

    def offered_on_agent(self, agent_id: str) -> Resources:
        return Resources(r for o in self.offers.values() if o.agent_id == agent_id for r in o.resources)

    def available_on_agent(self, agent_id: str) -> Resources:
        agent = self.agents[agent_id]
        return agent.total() - self.used_on_agent(agent_id) - self.offered_on_agent(agent_id)

    def used_by_framework(self, framework_id: str) -> Resources:
        return Resources(r for _, res in holdings(self.tasks.get(framework_id, {}).values()) for r in res)

    def offered_to_framework(self, framework_id: str) -> Resources:
        return Resources(r for o in self.offers.values() if o.framework_id == framework_id for r in o.resources)


def executor_key(task: Task) -> tuple[str, str, str] | None:
    """A task group's executor (framework, agent, executor id), or None for a command task."""
    ex = task.spec.executor
    return None if ex is None else (task.framework_id, task.agent_id, ex.executor_id)


Transition = tuple[str, str, str]  # (from_state, to_state, reason)


def transition(state: State, event: ev.Event) -> Transition | None:
    """The task state transition `event` makes when folded into `state`, read before the fold: a status update of a
    known task that changes its state. As in the fold, a terminal task's state never changes and an update of an
    unknown task changes nothing. (The fold does not count it: master/metrics.py does, from what the leader's
    staging and a follower's applier read here.)"""
    if not isinstance(event, ev.StatusUpdated):
        return None
    task = state.task(event.framework_id, event.task_id)
    if task is None or task.terminal or task.state == event.status.state:
        return None
    return str(task.state), str(event.status.state), str(event.status.reason or "")


def holdings(tasks: Iterable[Task]) -> list[tuple[Task, list[Resource]]]:
    """What each of these tasks holds in the allocator, in their order: its own resources, and for the first holding
    task of each task group its executor's too (an executor holds its resources while any task of its group does)."""
    out: list[tuple[Task, list[Resource]]] = []
    seen: set[tuple[str, str, str]] = set()
    for t in tasks:
        if not t.holds_resources:
            continue
        key = executor_key(t)
        if key is not None and key not in seen and t.spec.executor is not None:
            seen.add(key)
            out.append((t, list(t.spec.resources) + list(t.spec.executor.resources)))
        else:
            out.append((t, list(t.spec.resources)))
    return out


def group_holds(s: State, task: Task) -> bool:
    """Whether another task of this task's group (same executor on the same agent) holds resources."""
    key = executor_key(task)
    return key is not None and any(t is not task and t.holds_resources and executor_key(t) == key
                                   for t in s.tasks.get(task.framework_id, {}).values())


def clone(state: State) -> State:
    """An independent copy: the fields through msgpack, the derived allocator deep-copied."""
    new = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=State)
    new.__dict__.update(copy.deepcopy(state.__dict__))
    return new


_hash_enc = msgspec.msgpack.Encoder()


class Snapshot(msgspec.Struct):
    """A state at one index, exact enough to fold on from: the fields and the allocator's record."""

    state: State
    allocator: dict[str, object]


def encode_snapshot(state: State) -> bytes:
    return _hash_enc.encode(Snapshot(state=state, allocator=allocator_of(state).to_record()))


def decode_snapshot(data: bytes) -> State:
    snap = msgspec.msgpack.decode(data, type=Snapshot)
    a = snap.state.__dict__[ALLOCATOR_KEY] = HierarchicalAllocator.from_record(snap.allocator)
    for rec in snap.allocator.get("frameworks", ()):  # type: ignore[attr-defined]
        fw = snap.state.frameworks.get(rec[0])
        if len(rec) < 7 and fw is not None and rec[0] in a.frameworks:
            # A snapshot from before the allocator recorded SHARED_RESOURCES: the framework's info has it.
            a.frameworks[rec[0]].shared_ok = shares(fw.info)
    return snap.state


_state_dec = msgspec.msgpack.Decoder(State)


def state_hash(state: State) -> str:
    """A digest of the whole state, allocator included; equal on every replica at the same index.

    The fields are hashed in a canonical encoding: one msgpack round trip first. msgspec's `omit_defaults` omits a
    str or float field only when it *is* the default object, and decoders differ in which equal objects they
    return (msgpack returns the cached "*" for a one-character string, JSON a fresh one): without the round trip,
    the same state folded from the log and restored from a snapshot would hash differently (found by
    tests/test_decide_property.py: an agent resource with an explicit "role": "*")."""
    h = hashlib.sha256(_hash_enc.encode(_state_dec.decode(_hash_enc.encode(state))))
    h.update(digest(allocator_of(state)).encode())
    return h.hexdigest()


# ---- the fold -----------------------------------------------------------------------------------


def apply(state: State, env: ev.Envelope) -> State:
    if env.index != state.index + 1:
        raise ValueError(f"event index {env.index} does not follow applied index {state.index}")
    handler = _HANDLERS.get(type(env.event))
    if handler is None:
        raise ev.UnknownEvent(f"no fold for event type {type(env.event).__name__}")
    handler(state, env.event, env.ts)
    state.index = env.index
    state.ts = max(state.ts, env.ts)
    return state


def _cluster_created(s: State, e: ev.ClusterCreated, ts: float) -> None:
    s.cluster_id = e.cluster_id


def _leader_elected(s: State, e: ev.LeaderElected, ts: float) -> None:
    s.term, s.leader_id, s.leader_http, s.elected_at = e.term, e.leader_id, e.http, ts
    a = allocator_of(s)
    for o in s.offers.values():
        a.recover(o.framework_id, o.role, o.agent_id, Resources(o.resources))
    s.offers.clear()
    if dict(e.config) != s.config and _valid_config(e.config):
        s.config = dict(e.config)
        reset(s)  # other allocation flags: the allocator is rebuilt from the fields
        a = allocator_of(s)
    # Streams and agent links lived on the old leader: everyone must reconnect to this one.
    for fw in s.frameworks.values():
        if fw.connected:
            fw.connected = fw.active = False
            fw.disconnected_at = ts
            fw.disconnected_by_failover = True
        if fw.framework_id in a.frameworks:
            a.deactivate_framework(fw.framework_id)
    for agent in s.agents.values():
        agent.connected = False
        a.activate_agent(agent.agent_id, False)
    # Offers were dropped silently above (Mesos sends no RESCIND on failover); the frameworks were
    # deactivated, which drops their filters (as a Mesos failover loses them).
    s.filters.clear()
    a.clear_filters()


def _framework_subscribed(s: State, e: ev.FrameworkSubscribed, ts: float) -> None:
    fw = s.frameworks.get(e.framework_id)
    a = allocator_of(s)
    if fw is None:
        s.frameworks[e.framework_id] = Framework(
            framework_id=e.framework_id, info=e.info, registered_at=ts, suppressed_roles=sorted(e.suppressed_roles)
        )
        s.tasks.setdefault(e.framework_id, {})
        s.next_framework += 1
        a.add_framework(e.framework_id, list(e.info.roles), sorted(e.suppressed_roles),
                        min_allocatable=dict(e.info.min_allocatable), priority=e.info.priority(),
                        shared_ok=shares(e.info))
        return
    fw.info = e.info
    fw.connected = fw.active = True
    fw.reregistered_at = ts
    fw.disconnected_at = None
    fw.disconnected_by_failover = False
    fw.suppressed_roles = sorted(e.suppressed_roles)
    # A re-subscription silently invalidates the framework's outstanding offers.
    _drop_offers(s, [o for o in s.offers.values() if o.framework_id == e.framework_id])
    a.update_framework(e.framework_id, list(e.info.roles), sorted(e.suppressed_roles),
                       min_allocatable=dict(e.info.min_allocatable), shared_ok=shares(e.info))
    a.activate_framework(e.framework_id)


def _framework_disconnected(s: State, e: ev.FrameworkDisconnected, ts: float) -> None:
    fw = s.frameworks.get(e.framework_id)
    if fw is None:
        return
    fw.connected = fw.active = False
    fw.disconnected_at = ts
    _drop_framework_offers_and_filters(s, e.framework_id)
    allocator_of(s).deactivate_framework(e.framework_id)


def _framework_removed(s: State, e: ev.FrameworkRemoved, ts: float) -> None:
    fw = s.frameworks.pop(e.framework_id, None)
    if fw is None:
        return
    _drop_framework_offers_and_filters(s, e.framework_id)
    allocator_of(s).remove_framework(e.framework_id)  # gives back everything it held, tasks included
    for task in s.tasks.pop(e.framework_id, {}).values():
        if not task.terminal:
            task.state = TaskState.KILLED
            task.statuses.append(
                ev.TaskStatus(state=TaskState.KILLED, source=Source.MASTER, timestamp=ts,
                              reason=Reason.FRAMEWORK_REMOVED, message=f"Framework removed ({e.reason})")
            )
        task.pending = None
        _complete(s, task)
    s.removed_frameworks[e.framework_id] = ts
    while len(s.removed_frameworks) > MAX_COMPLETED_FRAMEWORKS:
        del s.removed_frameworks[next(iter(s.removed_frameworks))]
    fw.connected = fw.active = False
    fw.disconnected_at = ts
    fw.disconnected_by_failover = False
    fw.suppressed_roles = []
    s.completed_frameworks[e.framework_id] = fw
    while len(s.completed_frameworks) > MAX_COMPLETED_FRAMEWORK_RECORDS:
        del s.completed_frameworks[next(iter(s.completed_frameworks))]


def _drop_offers(s: State, offers: list[Offer], refuse: float = 0.0, ts: float = 0.0) -> None:
    """Offers go away; their resources return to the allocator (with a decline filter if `refuse`)."""
    a = allocator_of(s)
    for o in offers:
        s.offers.pop(o.offer_id, None)
        if o.framework_id in a.frameworks:
            a.recover(o.framework_id, o.role, o.agent_id, Resources(o.resources), refuse, ts)
        if refuse > 0:
            _add_filter(s, Filter(framework_id=o.framework_id, role=o.role, agent_id=o.agent_id,
                                  resources=o.resources, expires_at=ts + refuse))


# A lower bound of `State.filters`' expiry times, kept outside the fields (like the allocator): the fold drops
# expired filters on every OFFERS_MADE, and without it would look at every filter every time.
FILTERS_EXPIRY_KEY = "_filters_expire_from"


def _add_filter(s: State, f: Filter) -> None:
    s.filters.append(f)
    bound = s.__dict__.get(FILTERS_EXPIRY_KEY)
    if bound is not None and f.expires_at < bound:
        s.__dict__[FILTERS_EXPIRY_KEY] = f.expires_at


def _expire_filters(s: State, ts: float) -> None:
    """Drop the filters with `expires_at <= ts` (the others keep their order); a look at each only when one may
    have expired. Removals elsewhere leave the bound a lower bound."""
    if not s.filters:
        return
    bound = s.__dict__.get(FILTERS_EXPIRY_KEY)
    if bound is None or bound <= ts:
        s.filters = [f for f in s.filters if f.expires_at > ts]
        s.__dict__[FILTERS_EXPIRY_KEY] = min((f.expires_at for f in s.filters), default=float("inf"))


def _drop_framework_offers_and_filters(s: State, framework_id: str) -> None:
    _drop_offers(s, [o for o in s.offers.values() if o.framework_id == framework_id])
    s.filters = [f for f in s.filters if f.framework_id != framework_id]


def _roles_suppressed(s: State, e: ev.RolesSuppressed, ts: float) -> None:
    fw = s.frameworks.get(e.framework_id)
    if fw is not None:
        fw.suppressed_roles = sorted(set(fw.suppressed_roles) | set(e.roles))
        allocator_of(s).suppress(e.framework_id, list(e.roles))


def _roles_revived(s: State, e: ev.RolesRevived, ts: float) -> None:
    fw = s.frameworks.get(e.framework_id)
    if fw is None:
        return
    roles = set(e.roles)
    fw.suppressed_roles = sorted(set(fw.suppressed_roles) - roles)
    s.filters = [f for f in s.filters if not (f.framework_id == e.framework_id and f.role in roles)]
    allocator_of(s).revive(e.framework_id, sorted(roles))


def _valid_config(config: dict[str, object]) -> bool:
    """Whether a LEADER_ELECTED's allocation flags make an allocator (always, for a leader's own flags)."""
    try:
        AllocatorConfig.from_record(dict(config))
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def _agent_registered(s: State, e: ev.AgentRegistered, ts: float) -> None:
    if e.agent_id in s.agents or e.agent_id in s.unreachable_agents:
        return  # never decided (a known agent re-registers); a second registration changes nothing
    a = allocator_of(s)  # before the agent is in the fields: a first use rebuilds from them
    agent = s.agents[e.agent_id] = Agent(
        agent_id=e.agent_id, hostname=e.hostname, http=e.http, resources=e.resources, attributes=e.attributes,
        registered_at=ts, principal=e.principal,
    )
    s.next_agent += 1
    kept = Resources(e.checkpointed)
    if kept and Resources(e.resources).contains(kept.as_unreserved()):  # else the agent refuses to start
        agent.dynamic = kept.to_list()
        agent.resources = with_reservations(Resources(e.resources), kept).to_list()
    a.add_agent(e.agent_id, agent.total())


def unreachable_status(ts: float, e: ev.AgentUnreachable, hostname: str) -> ev.TaskStatus:
    """The master-generated status every live task on an agent gets when the agent is marked unreachable."""
    return ev.TaskStatus(state=UNREACHABLE, source=Source.MASTER, timestamp=ts, reason=Reason.AGENT_REMOVED,
                         message=f"Agent {hostname} is unreachable", unreachable_time=e.unreachable_time)


def tasks_on_agent(s: State, agent_id: str) -> list[Task]:
    """The tasks the master holds on an agent, in log order (frameworks, then tasks, as they were added)."""
    return [t for t in s.all_tasks() if t.agent_id == agent_id]


def returning_tasks(s: State, e: ev.AgentReregistered, ts: float) -> list[tuple[Task, ev.TaskStatus]]:
    """For an unreachable agent that re-registers: each of its TASK_UNREACHABLE tasks and the status it gets.
    Reported (live) tasks get their reported state back; tasks the agent does not report are TASK_GONE."""
    if e.agent_id not in s.unreachable_agents:
        return []
    reported = {(r.framework_id, r.task_id): r for r in e.tasks}
    out = []
    for task in tasks_on_agent(s, e.agent_id):
        if task.state != UNREACHABLE:
            continue
        r = reported.get((task.framework_id, task.task_id))
        if r is not None:
            st = ev.TaskStatus(state=r.state, source=Source.MASTER, timestamp=ts, reason=Reason.AGENT_REREGISTERED,
                               message="Agent reregistered")
        else:
            st = ev.TaskStatus(state=TaskState.GONE, source=Source.MASTER, timestamp=ts,
                               reason=Reason.AGENT_REREGISTERED, message="Task is unknown to the reregistered agent")
        out.append((task, st))
    return out


def _agent_unreachable(s: State, e: ev.AgentUnreachable, ts: float) -> None:
    agent = s.agents.get(e.agent_id)
    if agent is None:
        return
    a = allocator_of(s)
    # Its offers were rescinded in the same batch; any left (none, normally) go silently.
    _drop_offers(s, [o for o in s.offers.values() if o.agent_id == e.agent_id])
    a.remove_agent(e.agent_id)  # gives back what its tasks held and drops its filters, as Mesos does
    s.filters = [f for f in s.filters if f.agent_id != e.agent_id]
    del s.agents[e.agent_id]
    agent.connected = False
    agent.unreachable_at = e.unreachable_time
    s.unreachable_agents[e.agent_id] = agent
    for task in tasks_on_agent(s, e.agent_id):
        if task.terminal:
            continue
        task.state = UNREACHABLE
        task.statuses.append(unreachable_status(ts, e, agent.hostname))


def _agent_reregistered(s: State, e: ev.AgentReregistered, ts: float) -> None:
    a = allocator_of(s)
    agent = s.agents.get(e.agent_id)
    if agent is None and e.agent_id in s.unreachable_agents:
        # Back from unreachable: its tasks come back (or are gone), then it rejoins the allocator.
        for task, st in returning_tasks(s, e, ts):
            task.state = st.state
            task.statuses.append(st)
            if task.terminal and task.pending is None:
                _complete(s, task)
        agent = s.agents[e.agent_id] = s.unreachable_agents.pop(e.agent_id)
        agent.unreachable_at = None
        agent.resources = with_reservations(Resources(e.resources), Resources(agent.dynamic)).to_list()
        used = [(t.framework_id, t.spec.role, Resources(res)) for t, res in holdings(tasks_on_agent(s, e.agent_id))]
        a.add_agent(e.agent_id, agent.total(), used)
    if agent is None:
        agent = s.agents[e.agent_id] = Agent(
            agent_id=e.agent_id, hostname=e.hostname, http=e.http, resources=e.resources, registered_at=ts
        )
        a.add_agent(e.agent_id, Resources(e.resources))
    reported = with_reservations(Resources(e.resources), Resources(agent.dynamic)).to_list()
    if Resources(agent.resources) != Resources(reported):
        # The agent came back with other resources: re-add it, keeping what runs there allocated.
        _drop_offers(s, [o for o in s.offers.values() if o.agent_id == e.agent_id])
        a.remove_agent(e.agent_id)  # which drops the agent's filters, as Mesos does on an agent update
        s.filters = [f for f in s.filters if f.agent_id != e.agent_id]
        used = [(t.framework_id, t.spec.role, Resources(res)) for t, res in holdings(tasks_on_agent(s, e.agent_id))]
        a.add_agent(e.agent_id, Resources(reported), used)
    agent.hostname, agent.http, agent.resources, agent.attributes = e.hostname, e.http, reported, e.attributes
    agent.principal = e.principal
    agent.connected = True
    agent.reregistered_at = ts
    a.activate_agent(e.agent_id, True)
    for report in e.tasks:
        spec = report.spec
        if spec is not None and s.task(report.framework_id, report.task_id) is None \
                and report.framework_id in s.frameworks and report.state not in TERMINAL_STATES \
                and spec.agent_id == e.agent_id and spec.task_id == report.task_id:
            # A task this log never saw launched (e.g. recorded only on a lost replica): adopt it.
            task = s.tasks.setdefault(report.framework_id, {})[report.task_id] = Task(
                framework_id=report.framework_id, spec=spec, launched_at=ts, state=report.state
            )
            a.allocate(report.framework_id, spec.role, e.agent_id, _held_alone(s, task))


def _agent_disconnected(s: State, e: ev.AgentDisconnected, ts: float) -> None:
    agent = s.agents.get(e.agent_id)
    if agent is not None:
        agent.connected = False
        allocator_of(s).activate_agent(e.agent_id, False)


def _offers_made(s: State, e: ev.OffersMade, ts: float) -> None:
    a = allocator_of(s)
    for o in e.offers:
        if o.offer_id in s.offers or o.agent_id not in s.agents or o.framework_id not in s.frameworks:
            continue  # never decided by the allocator (it offers known agents to known frameworks, new ids)
        s.offers[o.offer_id] = Offer(
            offer_id=o.offer_id, framework_id=o.framework_id, agent_id=o.agent_id, role=o.role,
            resources=o.resources, made_at=ts,
        )
        a.allocate(o.framework_id, o.role, o.agent_id, Resources(o.resources))
    s.next_offer += len(e.offers)
    # Expired filters can no longer matter to any decision from here on.
    _expire_filters(s, ts)
    a.expire_filters(ts)


def _offers_rescinded(s: State, e: ev.OffersRescinded, ts: float) -> None:
    _drop_offers(s, [s.offers[oid] for oid in e.offer_ids if oid in s.offers])


def _offers_declined(s: State, e: ev.OffersDeclined, ts: float) -> None:
    # One filter per declined offer: each is one (agent, role).
    _drop_offers(s, [s.offers[oid] for oid in e.offer_ids if oid in s.offers], e.refuse_seconds, ts)


def _offers_accepted(s: State, e: ev.OffersAccepted, ts: float) -> None:
    # The decider accepts only the framework's own live offers, all on one agent and for one role; anything
    # else in a committed event is ignored rather than folded into a state no decision could have led to.
    candidates = [s.offers[oid] for oid in dict.fromkeys(e.offer_ids) if oid in s.offers]
    candidates = [o for o in candidates if o.framework_id == e.framework_id]
    if not candidates or candidates[0].agent_id not in s.agents:
        return
    role, agent_id = candidates[0].role, candidates[0].agent_id
    offers = [o for o in candidates if o.agent_id == agent_id and o.role == role]
    for o in offers:
        del s.offers[o.offer_id]
    offered = Resources(r for o in offers for r in o.resources)
    if e.operations:
        # RESERVE / UNRESERVE / CREATE / DESTROY, in order: the offered resources change owner or shape before
        # the tasks take theirs.
        for op in e.operations:
            consumed, converted = conversion(op.kind, Resources(op.resources))
            if offered.contains(consumed):  # the decider only converts what the offers hold
                _convert(s, agent_id, consumed, converted, (e.framework_id, role))
                offered = offered - consumed + converted
    else:
        to_role, to_star = net_reservations(Resources(e.reserved), Resources(e.unreserved))
        consumed = to_role.as_unreserved() + to_star
        if consumed and offered.contains(consumed):  # a log written before `operations`: the net change at once
            converted = to_role + to_star.as_unreserved()
            _convert(s, agent_id, consumed, converted, (e.framework_id, role))
            offered = offered - consumed + converted
    fw_tasks = s.tasks.setdefault(e.framework_id, {})
    specs = [t for t in e.tasks if t.agent_id == agent_id and t.task_id not in fw_tasks]
    used = Resources(r for t in specs for r in t.resources)
    executors = {t.executor.executor_id: t.executor for t in specs if t.executor is not None}
    used = used + Resources(r for ex in executors.values() for r in ex.resources)  # once per group
    for spec in specs:
        if spec.role != role:  # a task is allocated to the role of the offers it was launched from
            spec = msgspec.structs.replace(spec, role=role)
        fw_tasks[spec.task_id] = Task(framework_id=e.framework_id, spec=spec, launched_at=ts,
                                      kill_grace_seconds=spec.kill_grace_seconds)
    # What the tasks use stays allocated; the rest goes back, filtered (an implicit decline).
    leftover = offered - used
    a = allocator_of(s)
    if used.has_shared() and e.framework_id in a.frameworks:
        # N tasks may use one offered copy of a shared volume (Mesos master.cpp, LAUNCH: "additional shared
        # resources"): the copies beyond those offered are allocated too (the offers' copies stay, the leftover
        # holds none of them), so that each task gives back its own when it ends. Only volumes the offers held.
        more = Resources(r for r in used.shared() - offered.shared() if offered.get(key_of(r)) is not None)
        if more:
            a.allocate(e.framework_id, role, agent_id, more, count=False)
    if leftover:
        if e.framework_id in a.frameworks:
            a.recover(e.framework_id, role, agent_id, leftover, e.refuse_seconds, ts)
        if e.refuse_seconds > 0:
            _add_filter(s, Filter(framework_id=e.framework_id, role=role, agent_id=agent_id,
                                  resources=leftover.to_list(), expires_at=ts + e.refuse_seconds))


def checkpoint_after(dynamic: Resources, consumed: Resources, converted: Resources) -> Resources:
    """An agent's checkpointed resources (dynamic reservations and volumes) after an operation."""
    return dynamic - consumed.reserved() + converted.reserved()


def _convert(s: State, agent_id: str, consumed: Resources, converted: Resources,
             holder: tuple[str, str] | None) -> None:
    """One operation on an agent: its total and its checkpointed resources (dynamic reservations and volumes)
    trade `consumed` for `converted`; in the allocator they are allocated to `holder` (framework, role), or
    unallocated (an operator's operation)."""
    agent = s.agents[agent_id]
    agent.resources = (agent.total() - consumed + converted).to_list()
    agent.dynamic = checkpoint_after(Resources(agent.dynamic), consumed, converted).to_list()
    a = allocator_of(s)
    if holder is not None:
        a.convert(agent_id, holder[0], holder[1], consumed, converted)
    elif agent_id in a.agents:
        a.convert_unallocated(agent_id, consumed, converted)


def _agent_operations_applied(s: State, e: ev.AgentOperationsApplied, ts: float) -> None:
    # The leader rescinded the offers holding what these need, in the same decision, and checked that the
    # agent's unallocated resources hold it; an operation they do not hold is skipped, not folded into a state no
    # decision could have led to.
    a = allocator_of(s)
    if e.agent_id not in s.agents or e.agent_id not in a.agents:
        return
    for op in e.operations:
        consumed, converted = conversion(op.kind, Resources(op.resources))
        if a.agents[e.agent_id].available.contains(consumed):
            _convert(s, e.agent_id, consumed, converted, None)


def net_reservations(reserved: Resources, unreserved: Resources) -> tuple[Resources, Resources]:
    """What one ACCEPT's RESERVEs and UNRESERVEs do together: (newly reserved, in their roles; released, in their
    roles). One ACCEPT may reserve cpus(db):2 and then unreserve cpus(db):1 of it: only the net change moves,
    whatever the order of its operations (the decider checked them in order)."""
    to_role: list[Resource] = []
    to_star: list[Resource] = []
    for role in sorted({r.role for r in reserved} | {r.role for r in unreserved}):
        r_in = Resources(r for r in reserved if r.role == role)
        u_in = Resources(r for r in unreserved if r.role == role)
        for r in r_in.as_unreserved() - u_in.as_unreserved():
            to_role.append(msgspec.structs.replace(r, role=role))
        for r in u_in.as_unreserved() - r_in.as_unreserved():
            to_star.append(msgspec.structs.replace(r, role=role))
    return Resources(to_role), Resources(to_star)


def _weights_updated(s: State, e: ev.WeightsUpdated, ts: float) -> None:
    s.weights.update(e.weights)
    allocator_of(s).update_weights(dict(e.weights))


def _quota_updated(s: State, e: ev.QuotaUpdated, ts: float) -> None:
    if e.guarantees or e.limits:
        s.quotas[e.role] = QuotaRecord(guarantees=dict(e.guarantees), limits=dict(e.limits))
    else:
        s.quotas.pop(e.role, None)
    allocator_of(s).set_quota(e.role, dict(e.guarantees), dict(e.limits))


def _task_kill_requested(s: State, e: ev.TaskKillRequested, ts: float) -> None:
    task = s.task(e.framework_id, e.task_id)
    if task is not None and not task.terminal:
        task.kill_requested = True
        if e.grace_seconds is not None:
            task.kill_grace_seconds = e.grace_seconds


def _status_updated(s: State, e: ev.StatusUpdated, ts: float) -> None:
    task = s.task(e.framework_id, e.task_id)
    if task is None:
        return
    if not task.terminal:  # as Mesos: a terminal task's state never changes again (resources were recovered)
        held = task.holds_resources
        task.state = e.status.state
        a = allocator_of(s)
        if task.agent_id in a.agents and task.framework_id in a.frameworks and held != task.holds_resources:
            # A task group's executor resources move with its last (or first) holding task.
            if held:
                a.recover(task.framework_id, task.spec.role, task.agent_id, _held_alone(s, task))
            else:  # TASK_UNREACHABLE -> live again
                a.allocate(task.framework_id, task.spec.role, task.agent_id, _held_alone(s, task))
    last = task.statuses[-1] if task.statuses else None
    if last is not None and e.status.reason in CHECK_REASONS and last.reason in CHECK_REASONS \
            and last.state == e.status.state:
        # A (health) check's result after another one: keep the latest (as Mesos keeps the last status of a run of
        # one state), so a task checked for months holds a bounded list. Older logs have no such statuses.
        task.statuses[-1] = e.status
    else:
        task.statuses.append(e.status)
    if e.status.uuid is not None:
        task.pending = e.status
    if task.terminal and task.pending is None:
        _complete(s, task)


def _held_alone(s: State, task: Task) -> Resources:
    """What starting (or stopping) to hold resources changes for this task: its own resources, plus its executor's
    when no other task of its group holds any."""
    res = Resources(task.spec.resources)
    if task.spec.executor is not None and not group_holds(s, task):
        res = res + Resources(task.spec.executor.resources)
    return res


def _status_acknowledged(s: State, e: ev.StatusAcknowledged, ts: float) -> None:
    task = s.task(e.framework_id, e.task_id)
    if task is None or task.pending is None or task.pending.uuid != e.uuid:
        return
    task.pending = None
    if task.terminal:
        _complete(s, task)


def _complete(s: State, task: Task) -> None:
    fw_tasks = s.tasks.get(task.framework_id)
    if fw_tasks is not None:
        fw_tasks.pop(task.task_id, None)
    s.completed_tasks.append(task)
    if len(s.completed_tasks) > MAX_COMPLETED_TASKS:
        del s.completed_tasks[: len(s.completed_tasks) - MAX_COMPLETED_TASKS]


_HANDLERS: dict[type, Callable[[State, Any, float], None]] = {
    ev.ClusterCreated: _cluster_created,
    ev.LeaderElected: _leader_elected,
    ev.FrameworkSubscribed: _framework_subscribed,
    ev.FrameworkDisconnected: _framework_disconnected,
    ev.FrameworkRemoved: _framework_removed,
    ev.RolesSuppressed: _roles_suppressed,
    ev.RolesRevived: _roles_revived,
    ev.AgentRegistered: _agent_registered,
    ev.AgentReregistered: _agent_reregistered,
    ev.AgentDisconnected: _agent_disconnected,
    ev.AgentUnreachable: _agent_unreachable,
    ev.OffersMade: _offers_made,
    ev.OffersRescinded: _offers_rescinded,
    ev.OffersDeclined: _offers_declined,
    ev.OffersAccepted: _offers_accepted,
    ev.AgentOperationsApplied: _agent_operations_applied,
    ev.WeightsUpdated: _weights_updated,
    ev.QuotaUpdated: _quota_updated,
    ev.TaskKillRequested: _task_kill_requested,
    ev.StatusUpdated: _status_updated,
    ev.StatusAcknowledged: _status_acknowledged,
}

assert set(_HANDLERS) == set(ev.EVENT_CLASSES), "every event type needs a fold"
