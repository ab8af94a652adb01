"""Deciders for the Mesos v1 scheduler API: one pure function per call.

Every decider is `(state, call, now, config) -> Decision`: `state` is the folded master state, `call` a typed
value the wire codec built from Mesos JSON (master.codec.parse_subscribe / parse_scheduler_call; deciders never
see JSON), `now` the leader's clock, `config` the master's DecideConfig. A decider validates the call against
the state and Drover's limits, in Mesos's order, and answers with
- `refusal`: a 4xx (for SUBSCRIBE, Mesos's ERROR event on the stream), nothing committed;
- `events`: what the call causes, each one the fold accepts (the commit gate refuses anything else);
- `messages`: answers that are not history (reconciliation, TASK_LOST for invalid offers, OPERATION_ERROR),
  sent once the events are folded;
- `reply`: what the handler needs beyond that (the framework id a SUBSCRIBE got, UPDATE_FRAMEWORK's 200).

No asyncio, IO, clock, uuid or randomness here; sets are only used for membership (anything iterated is sorted
or in log order). Streams (opening, replacing, closing) stay in master/api/scheduler.py.

Calls Drover accepts without acting on, on purpose (each has its decider saying why): MESSAGE (the command
executor ignores framework messages, as Mesos's does), REQUEST (Mesos's allocator ignores it too),
ACCEPT/DECLINE_INVERSE_OFFERS (Drover makes no inverse offers; unknown ids are ignored, as in Mesos),
ACKNOWLEDGE_OPERATION_STATUS (Drover sends no operation status that needs one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence, Union, get_args

import msgspec

from drover.security.acls import authorized
from eventstore import events as ev
from eventstore.resources import Resources, conversion, host_ports_problem
from eventstore.vocab import Reason, Source, TaskState
from master import codec
from master import effects as fx
from master.allocator import effective_refuse_seconds
from master.decide import DecideConfig, Decision
from master.decide import volumes as vol
from master.limits import Limits
from master.state import Framework, Offer, State, Task

# ---- the typed calls (built by master.codec) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    framework_id: str | None  # the id asked for (re-subscription, or a new framework choosing its id); None: new
    info: ev.FrameworkInfo | None  # None when `invalid`
    invalid: str | None = None  # why Mesos's framework::validate refuses the FrameworkInfo
    suppressed_roles: tuple[str, ...] = ()
    offer_constraints: bool = False  # any set (Drover does not implement them)
    principal: str | None = None  # who the request was authenticated as (set by the handler; None: no authentication)


@dataclass(frozen=True, slots=True)
class UpdateFramework:
    framework_id: str
    requested_id: str | None  # update_framework.framework_info.id
    info: ev.FrameworkInfo | None
    invalid: str | None = None
    suppressed_roles: tuple[str, ...] = ()
    offer_constraints: bool = False


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A TaskInfo of an ACCEPT: its ids as sent, and either a valid spec or why it is refused."""

    task_id: str  # as sent (at most codec.MAX_ECHOED_ID characters): a rejection echoes it
    agent_id: str
    spec: ev.TaskSpec | None  # None when id_problem or problem is set
    id_problem: str | None = None
    problem: str | None = None  # the first problem the task has on its own (unsupported field, bad resources)


@dataclass(frozen=True, slots=True)
class Launch:
    tasks: tuple[TaskRequest, ...]
    operation_id: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchGroup:
    task_ids: tuple[str, ...]
    operation_id: str | None = None
    tasks: tuple[TaskRequest, ...] = ()
    executor: ev.ExecutorSpec | None = None  # None when executor_problem (task_ids not filled in yet)
    executor_framework_id: str | None = None  # ExecutorInfo.framework_id as sent (None: the master fills it in)
    executor_problem: str | None = None


@dataclass(frozen=True, slots=True)
class ResourceOp:
    """RESERVE, UNRESERVE (resources) or CREATE, DESTROY (persistent volumes) in an ACCEPT."""

    kind: Literal["RESERVE", "UNRESERVE", "CREATE", "DESTROY"]
    resources: Resources | None  # None when `problem`
    problem: str | None = None
    operation_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnsupportedOperation:
    kind: str  # one of codec.UNSUPPORTED_OPERATIONS
    operation_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownOperation:
    operation_id: str | None = None


Operation = Union[Launch, LaunchGroup, ResourceOp, UnsupportedOperation, UnknownOperation]


@dataclass(frozen=True, slots=True)
class Accept:
    framework_id: str
    offer_ids: tuple[str, ...]
    operations: tuple[Operation, ...]
    refuse_seconds: float | None = None  # None: the default filter


@dataclass(frozen=True, slots=True)
class Decline:
    framework_id: str
    offer_ids: tuple[str, ...]
    refuse_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Acknowledge:
    framework_id: str
    agent_id: str
    task_id: str
    uuid: str  # base64 of 16 bytes (checked by the codec)


@dataclass(frozen=True, slots=True)
class Kill:
    framework_id: str
    task_id: str
    agent_id: str | None = None
    grace_seconds: float | None = None  # in [0, MAX_SECONDS] (checked by the codec)


@dataclass(frozen=True, slots=True)
class Reconcile:
    framework_id: str
    tasks: tuple[tuple[str, str | None], ...]  # (task id, agent id); empty: implicit reconciliation


@dataclass(frozen=True, slots=True)
class Revive:
    framework_id: str
    roles: tuple[str, ...]  # empty: all the framework's roles


@dataclass(frozen=True, slots=True)
class Suppress:
    framework_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Teardown:
    framework_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    framework_id: str
    executor_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class Message:
    framework_id: str
    agent_id: str
    executor_id: str


@dataclass(frozen=True, slots=True)
class Request:
    framework_id: str
    requests: int


@dataclass(frozen=True, slots=True)
class InverseOffers:
    framework_id: str
    accept: bool  # ACCEPT_INVERSE_OFFERS (True) or DECLINE_INVERSE_OFFERS
    inverse_offer_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AcknowledgeOperationStatus:
    framework_id: str
    agent_id: str | None
    operation_id: str


@dataclass(frozen=True, slots=True)
class ReconcileOperations:
    framework_id: str
    operations: tuple[tuple[str, str | None, str | None], ...]  # (operation id, agent id, resource provider id)


@dataclass(frozen=True, slots=True)
class Unknown:
    """Call type UNKNOWN: the handler answers 501 once the framework checks pass (no decider)."""

    framework_id: str


SchedulerCall = Union[Accept, Decline, Acknowledge, Kill, Reconcile, Revive, Suppress, Teardown, Shutdown, Message,
                      Request, InverseOffers, AcknowledgeOperationStatus, ReconcileOperations, UpdateFramework,
                      Unknown]


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBSCRIBE's reply: the framework id it got, and whether it was known."""

    framework_id: str
    resubscribe: bool


# REASON_TASK_GROUP_INVALID is Mesos's reason for a refused task group (not in eventstore.vocab.Reason yet).
TASK_GROUP_INVALID = "REASON_TASK_GROUP_INVALID"
TASK_GROUP_UNAUTHORIZED = "REASON_TASK_GROUP_UNAUTHORIZED"
MAX_MESSAGE = 4096  # characters of one rejection message (what it quotes is clipped)
LISTED_IDS = 10  # ids an error message lists before it says how many more


# ---- helpers ---------------------------------------------------------------------------------------------


def _listing(ids: list[str]) -> str:
    """At most LISTED_IDS ids, each clipped, and how many more: never a message whose size grows with the call."""
    shown = ", ".join(codec.clip(i) for i in ids[:LISTED_IDS])
    return shown if len(ids) <= LISTED_IDS else f"{shown} and {len(ids) - LISTED_IDS} more"


def _msg(text: str) -> str:
    return codec.clip(text, MAX_MESSAGE)


def _connected(state: State, framework_id: str) -> tuple[Framework | None, Decision | None]:
    """The subscribed framework a call comes from, or the refusal Mesos gives (the handler checks the same with
    its streams; a decider must hold on its own)."""
    fw = state.frameworks.get(framework_id)
    if fw is None:
        return None, Decision.refuse(400, "Framework cannot be found")
    if not fw.connected:
        return None, Decision.refuse(403, "Framework is not subscribed")
    return fw, None


def _over(what: str, n: int, limit: int, name: str) -> Decision:
    return Decision.refuse(400, f"{what}: {n} given, at most {limit} are allowed per call (limits.{name})")


def _offers_of(state: State, framework_id: str, ids: tuple[str, ...]) -> tuple[list[Offer], list[str]]:
    """Split offer ids into this framework's live offers and the invalid ones (unknown, another framework's,
    repeated), each in the order given."""
    valid: list[Offer] = []
    invalid: list[str] = []
    seen: set[str] = set()
    for oid in ids:
        o = state.offers.get(oid)
        if o is None or o.framework_id != framework_id or oid in seen:
            invalid.append(oid)
        else:
            valid.append(o)
        seen.add(oid)
    return valid, invalid


def _task_update(state: State, framework_id: str, task_id: str, agent_id: str | None, task_state: TaskState,
                 reason: str, message: str, now: float, unreachable_time: float | None = None) -> fx.ToFramework:
    st = ev.TaskStatus(state=task_state, source=Source.MASTER, timestamp=now, reason=reason, message=message,
                       unreachable_time=unreachable_time)
    return fx.ToFramework(framework_id, fx.update_event(state, framework_id, task_id, agent_id, st))


def _operation_error(framework_id: str, operation_id: str, message: str) -> fx.ToFramework:
    status = codec.operation_status_out(operation_id, "OPERATION_ERROR", _msg(message))
    return fx.ToFramework(framework_id, codec.ev_update_operation_status(status))


def _rejection(task_id: str, message: str, reason: str = Reason.TASK_INVALID,
               state: TaskState = TaskState.ERROR) -> ev.Rejection:
    return ev.Rejection(task_id=task_id, state=state, reason=reason, message=_msg(message))


def _framework_problem(info: ev.FrameworkInfo | None, invalid: str | None, limits: Limits) -> str | None:
    """Why a FrameworkInfo is refused before the state is looked at: Mesos's framework::validate (from the
    codec), then the configured limits."""
    if invalid is not None or info is None:
        return invalid or "FrameworkInfo is invalid"
    if len(info.roles) > limits.max_roles_per_call:
        return (f"'FrameworkInfo.roles' has {len(info.roles)} roles; at most {limits.max_roles_per_call} are "
                "allowed (limits.max_roles_per_call)")
    if len(info.labels) > limits.max_labels:
        return (f"'FrameworkInfo.labels' has {len(info.labels)} labels; at most {limits.max_labels} are allowed "
                "(limits.max_labels)")
    return None


def _suppressed_problem(info: ev.FrameworkInfo, suppressed: tuple[str, ...]) -> str | None:
    extra = sorted(set(suppressed) - set(info.roles))
    if extra:
        return f"Suppressed roles {{{_listing(extra)}}} are not contained in the set of roles"
    return None


OFFER_CONSTRAINTS_UNSUPPORTED = "Offer constraints are not supported by Drover yet"


# ---- SUBSCRIBE / UPDATE_FRAMEWORK ---------------------------------------------------------------------------


def decide_subscribe(state: State, call: Subscribe, now: float, config: DecideConfig) -> Decision:
    """A framework (re-)subscribes. A refusal is answered with an ERROR event on the stream, as Mesos does
    (its status is what an UPDATE_FRAMEWORK would get); the reply is `Subscribed`. Checks, in Mesos's order
    (master.cpp Master::subscribe): the FrameworkInfo (roles, id, offer filters, failover timeout, Drover's
    limits), a removed framework id, suppressed roles, offer constraints, an immutable field changed, and
    Drover's limit on the number of frameworks."""
    limits = config.limits
    problem = _framework_problem(call.info, call.invalid, limits)
    if problem is not None:
        return Decision.refuse(400, problem)
    info = call.info
    assert info is not None
    framework_id = call.framework_id
    if config.authenticate:
        if (problem := principal_problem(info.principal, call.principal)) is not None:
            return Decision.refuse(400, problem)
        if info.principal is None:  # Mesos: an authenticated framework that names no principal gets its own
            info = msgspec.structs.replace(info, principal=call.principal)
    if (problem := _registration_problem(config, framework_id, info)) is not None:
        return Decision.refuse(403, problem)
    if framework_id is not None and framework_id in state.removed_frameworks:
        return Decision.refuse(403, "Framework has been removed")
    if (problem := _suppressed_problem(info, call.suppressed_roles)) is not None:
        return Decision.refuse(400, problem)
    if call.offer_constraints:
        return Decision.refuse(400, OFFER_CONSTRAINTS_UNSUPPORTED)
    existing = state.frameworks.get(framework_id) if framework_id is not None else None
    if existing is not None:
        if existing.info.principal != info.principal:
            return Decision.refuse(400, "Changing framework's principal is not allowed.")
        # Mesos silently keeps these immutable fields on re-subscription (preserveImmutableFields).
        info = msgspec.structs.replace(info, user=existing.info.user, checkpoint=existing.info.checkpoint)
    elif len(state.frameworks) >= limits.max_frameworks:
        return Decision.refuse(403, f"Too many frameworks: this master serves at most {limits.max_frameworks} "
                                    "(limits.max_frameworks); tear down unused ones")
    if framework_id is None:
        framework_id = _new_framework_id(state)
    event = ev.FrameworkSubscribed(framework_id=framework_id, info=info,
                                   suppressed_roles=sorted(set(call.suppressed_roles)),
                                   resubscribe=existing is not None)
    return Decision(events=[event], reply=Subscribed(framework_id, existing is not None))


def principal_problem(declared: str | None, authenticated: str | None) -> str | None:
    """A framework's FrameworkInfo.principal must be the principal its requests were authenticated as (unset: it
    becomes that one). Mesos's text (scheduler::call validation), answered 400."""
    if authenticated is None:
        return "Failed to validate scheduler::Call: the request was not authenticated"
    if declared is not None and declared != authenticated:
        return (f"Failed to validate scheduler::Call: Authenticated principal '{codec.clip(authenticated)}' does not "
                f"match principal '{codec.clip(declared)}' set in `FrameworkInfo`")
    return None


def call_principal_problem(framework_id: str, declared: str | None, authenticated: str | None) -> str | None:
    """A call as a framework (not SUBSCRIBE) from a principal other than the one it registered with. A framework
    recorded without a principal (registered before authentication was on) cannot be called as by anyone: it
    must be torn down (the operator's TEARDOWN) and registered again."""
    if declared is None:
        return (f"Failed to validate scheduler::Call: framework {codec.clip(framework_id)} was registered without a "
                f"principal; an authenticated principal cannot act for it")
    return principal_problem(declared, authenticated)


def _registration_problem(config: DecideConfig, framework_id: str | None, info: ev.FrameworkInfo) -> str | None:
    """The `register_frameworks` ACL: the framework's principal must be allowed every role it subscribes with."""
    if all(authorized(config.acls, "register_frameworks", info.principal, role) for role in info.roles):
        return None
    return (f"Not authorized to register framework {codec.clip(framework_id or info.name)} with roles "
            f"{{ {', '.join(codec.clip(r) for r in info.roles)} }}")


def task_user(task: ev.TaskSpec, info: ev.FrameworkInfo) -> str:
    """Who a task runs as: its command's user, else its framework's (Mesos); "" = the image's user."""
    return task.command.user or info.user


def _new_framework_id(state: State) -> str:
    """`<cluster id>-NNNN`, as Mesos numbers frameworks; past any id a framework chose for itself."""
    n = state.next_framework
    while True:
        fid = f"{state.cluster_id}-{n:04d}"
        if fid not in state.frameworks and fid not in state.removed_frameworks:
            return fid
        n += 1


def decide_update_framework(state: State, call: UpdateFramework, now: float, config: DecideConfig) -> Decision:
    """UPDATE_FRAMEWORK: the same rules as a re-subscription, answered synchronously (200, or 400 with the
    reason; Mesos's validateUpdate refuses a changed principal, user or checkpoint). The framework's outstanding
    offers are rescinded (announced: the framework must not use them) before the new info is recorded."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    assert fw is not None
    problem = _framework_problem(call.info, call.invalid, config.limits)
    if problem is not None:
        return Decision.refuse(400, problem)
    info = call.info
    assert info is not None
    old = fw.info
    if config.authenticate and info.principal is None:
        info = msgspec.structs.replace(info, principal=old.principal)
    if old.principal != info.principal:
        return Decision.refuse(400, "Changing framework's principal is not allowed.")
    if (problem := _registration_problem(config, fw.framework_id, info)) is not None:
        return Decision.refuse(403, problem)
    if old.user != info.user:
        return Decision.refuse(400, f"Updating 'FrameworkInfo.user' is unsupported; attempted to update from "
                                    f"'{codec.clip(old.user)}' to '{codec.clip(info.user)}'")
    if old.checkpoint != info.checkpoint:
        return Decision.refuse(400, f"Updating 'FrameworkInfo.checkpoint' is unsupported; attempted to update from "
                                    f"'{str(old.checkpoint).lower()}' to '{str(info.checkpoint).lower()}'")
    if (problem := _suppressed_problem(info, call.suppressed_roles)) is not None:
        return Decision.refuse(400, problem)
    if call.offer_constraints:
        return Decision.refuse(400, OFFER_CONSTRAINTS_UNSUPPORTED)
    events: list[ev.Event] = []
    offer_ids = [o.offer_id for o in state.offers.values() if o.framework_id == fw.framework_id]
    if offer_ids:
        events.append(ev.OffersRescinded(offer_ids=offer_ids, reason="framework_updated"))
    events.append(ev.FrameworkSubscribed(framework_id=fw.framework_id, info=info,
                                         suppressed_roles=sorted(set(call.suppressed_roles)), resubscribe=True))
    return Decision(events=events, reply=200)


# ---- ACCEPT / DECLINE ----------------------------------------------------------------------------------------


def decide_accept(state: State, call: Accept, now: float, config: DecideConfig) -> Decision:
    """ACCEPT, as Mesos's Master::accept: the limits of one call (400); then the offers (unknown, rescinded,
    another framework's, repeated, on several agents or roles: every task TASK_LOST, or TASK_DROPPED for a
    PARTITION_AWARE framework, every other operation with an id OPERATION_ERROR, the valid offers go back
    unfiltered); then an operation Drover does not implement (nothing is done: every task TASK_ERROR, the offers
    go back unfiltered); then each operation in order: RESERVE / UNRESERVE (an invalid one is dropped, with
    OPERATION_ERROR if it has an id; one with an id asks for feedback no Drover agent gives), LAUNCH (each task
    in Mesos's order: task id, duplicate id, agent, its own problems, room in what is left of the offers; a
    refused task gets TASK_ERROR), LAUNCH_GROUP (`_launch_group`: the whole group, or every task of it
    TASK_ERROR). What the offers hold beyond the
    tasks goes back with the call's filter (an implicit decline)."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    assert fw is not None
    limits = config.limits
    n_tasks = sum(len(op.tasks) if isinstance(op, Launch) else len(op.task_ids)
                  for op in call.operations if isinstance(op, (Launch, LaunchGroup)))
    if len(call.offer_ids) > limits.max_offers_per_call:
        return _over("Too many offer ids in ACCEPT", len(call.offer_ids), limits.max_offers_per_call,
                     "max_offers_per_call")
    if len(call.operations) > limits.max_operations_per_call:
        return _over("Too many operations in ACCEPT", len(call.operations), limits.max_operations_per_call,
                     "max_operations_per_call")
    if n_tasks > limits.max_tasks_per_call:
        return _over("Too many tasks in ACCEPT", n_tasks, limits.max_tasks_per_call, "max_tasks_per_call")
    fid = fw.framework_id
    valid, invalid = _offers_of(state, fid, call.offer_ids)
    problem = None
    if not call.offer_ids:
        problem = "No offers specified"
    elif invalid:
        problem = (f"Offer(s) {_listing(invalid)} are no longer valid (unknown, rescinded, already used or not "
                   "yours)")
    elif len({o.agent_id for o in valid}) > 1:
        problem = "Offers must all be on the same agent"
    elif len({o.role for o in valid}) > 1:
        problem = "Offers must all be allocated to the same role"
    elif valid[0].agent_id not in state.agents:
        problem = f"Agent {valid[0].agent_id} is not registered"
    if problem is not None:
        return _invalid_offers(state, fw, call, valid, problem, now)
    unsupported = sorted({op.kind for op in call.operations if isinstance(op, UnsupportedOperation)})
    if unsupported:
        return _unsupported_operations(fid, call, valid, unsupported)

    agent_id, role = valid[0].agent_id, valid[0].role
    remaining = Resources(r for o in valid for r in o.resources)
    # The offered shared volumes: tasks are judged against `remaining`'s other resources plus these, which they do
    # not use up (Mesos master.cpp, LAUNCH: several tasks on one offered copy; the fold allocates the copies beyond
    # it). CREATE and DESTROY reset it to what `remaining` holds, as Mesos's `remainingSharedResources`.
    shared = remaining.shared()
    checkpointed = Resources(state.agents[agent_id].dynamic)  # this ACCEPT's operations applied as they go
    actor = vol.Actor(fw.info.principal, role, "SHARED_RESOURCES" in fw.info.capabilities)
    operations: list[ev.ResourceOperation] = []
    rescinds: list[str] = []
    rejected: list[ev.Rejection] = []
    tasks: list[ev.TaskSpec] = []
    messages: list[fx.Effect] = []
    seen: set[str] = set()
    executors: set[str] = set()  # of the task groups launched by this ACCEPT
    in_use: dict[str, str] | None = None  # executor id -> why it is taken (_executors_in_use), built once if needed
    for op in call.operations:
        if isinstance(op, ResourceOp):
            why = op.problem
            if why is None and op.operation_id is not None:
                why = (f"Operation requested feedback, but agent {agent_id} does not have the required "
                       "RESOURCE_PROVIDER capability (Drover agents give no operation feedback)")
            elif why is not None:
                why = f"Operation attempted with invalid resources: {why}"
            elif op.resources is not None:
                why = _resource_op_problem(state, op.kind, op.resources, actor, agent_id, remaining, checkpointed,
                                           config, tasks)
            if why is not None:
                # Dropped, as Mesos drops an invalid operation (OPERATION_ERROR when it has an id).
                if op.operation_id is not None:
                    messages.append(_operation_error(fid, op.operation_id, f"{why}; on agent {agent_id}"))
                continue
            assert op.resources is not None
            consumed, converted = conversion(op.kind, op.resources)
            remaining = remaining - consumed + converted
            checkpointed = checkpointed - consumed.reserved() + converted.reserved()
            operations.append(ev.ResourceOperation(kind=op.kind, resources=op.resources.to_list()))
            if op.kind in ("CREATE", "DESTROY"):
                shared = remaining.shared()
            if op.kind == "DESTROY":
                # Every other offer of a shared volume being destroyed goes, this framework's own too (Mesos
                # master.cpp, DESTROY: all the agent's offers but those being accepted).
                rescinds += vol.offers_holding(state, agent_id, op.resources, skip=call.offer_ids)
        elif isinstance(op, Launch):
            if op.operation_id is not None:
                rejected += [_rejection(t.task_id, "The `id` field cannot be set on LAUNCH operations")
                             for t in op.tasks]
                continue
            for t in op.tasks:
                why = _task_problem(state, fid, t, agent_id, seen)
                if why is None and t.task_id in executors:
                    # A command task's executor ID is its task ID (Mesos): not one of this ACCEPT's group executors.
                    # (One of an earlier group's is not looked for: that would scan every task of the framework
                    # per LAUNCH. SHUTDOWN of such an ID then means the command task.)
                    why = (f"Task ID '{codec.clip(t.task_id)}' is the ID of a task group's executor launched by "
                           "this ACCEPT: a command task's executor ID is its task ID")
                need = Resources()
                if why is None:
                    assert t.spec is not None
                    # A task that names no user runs as its image's USER, root for most images: judged as root.
                    user = task_user(t.spec, fw.info) or "root"
                    if not authorized(config.acls, "run_tasks", fw.info.principal, user):
                        rejected.append(_rejection(t.task_id, f"Not authorized to launch as user "
                                                   f"'{codec.clip(user)}'", Reason.TASK_UNAUTHORIZED))
                        continue
                    need = Resources(t.spec.resources)
                    available = remaining.non_shared() + shared if shared else remaining
                    if not available.contains(need):
                        why = f"Task uses more resources {need.format()} than available {available.format()}"
                if why is not None:
                    rejected.append(_rejection(t.task_id, why))
                    continue
                assert t.spec is not None
                seen.add(t.task_id)
                remaining = remaining - need
                tasks.append(msgspec.structs.replace(t.spec, role=role))
        elif isinstance(op, LaunchGroup):
            in_use = _executors_in_use(state, fid) if in_use is None else in_use
            available = remaining.non_shared() + shared if shared else remaining
            group, why, reason = _launch_group(state, fw, op, agent_id, available, seen, executors, in_use, config)
            if why is not None:  # atomic: the whole group is refused, every task with the same status
                rejected += [_rejection(tid, why, reason) for tid in op.task_ids]
                continue
            seen.update(t.task_id for t in group)
            executors.add(group[0].executor.executor_id if group[0].executor is not None else "")
            remaining = remaining - _group_total(group)
            tasks += [msgspec.structs.replace(t, role=role) for t in group]
        # UnknownOperation: ignored, as Mesos does ("Ignoring unknown operation").
    secs = effective_refuse_seconds(call.refuse_seconds, config.allocation_interval)
    accepted = ev.OffersAccepted(framework_id=fid, offer_ids=[o.offer_id for o in valid], tasks=tasks,
                                 refuse_seconds=secs, rejected=rejected, operations=operations)
    events: list[ev.Event] = []
    if rescinds:
        events.append(ev.OffersRescinded(offer_ids=sorted(set(rescinds)), reason="volume_destroyed"))
    return Decision(events=[*events, accepted], messages=messages)


# Mesos's minimum executor resources (src/master/constants.hpp: MIN_CPUS, MIN_MEM).
MIN_EXECUTOR_CPUS = 0.01
MIN_EXECUTOR_MEM_MB = 32.0


def _group_total(group: list[ev.TaskSpec]) -> Resources:
    """What a task group takes from the offers: its tasks' resources and its executor's."""
    total = Resources(r for t in group for r in t.resources)
    ex = group[0].executor if group else None
    return total if ex is None else total + Resources(ex.resources)


def _executors_in_use(state: State, fid: str) -> dict[str, str]:
    """The executor IDs a framework's tasks hold, each with what holds it ("group:TASK": a task group's executor, held
    by its task TASK; "command:TASK": the executor of live command task TASK, whose ID is its task ID). One pass over
    the framework's tasks, once per ACCEPT (not once per operation); the first holder in launch order is named."""
    out: dict[str, str] = {}
    for t in state.tasks.get(fid, {}).values():
        if t.spec.executor is not None:
            out.setdefault(t.spec.executor.executor_id, f"group:{t.task_id}")
        elif not t.terminal:
            out.setdefault(t.task_id, f"command:{t.task_id}")
    return out


def _launch_group(state: State, fw: Framework, op: LaunchGroup, agent_id: str, available: Resources,
                  seen: set[str], executors: set[str], in_use: dict[str, str], config: DecideConfig,
                  ) -> tuple[list[ev.TaskSpec], str | None, str]:
    """A LAUNCH_GROUP, as Mesos's Master::accept and validation.cpp (task::group::validate) judge it, in their order:
    operation feedback, authorization (REASON_TASK_GROUP_UNAUTHORIZED), each task (id, duplicate id, agent, its own
    problems; a task of a group joins its executor's network), then the executor (framework id, type DEFAULT,
    minimum resources, the group's total within the offers, host ports). Returns (the group's specs, None, "") or
    ([], why, reason): one refusal for every task of the group (atomic: all of it launches, or none)."""
    fid = fw.framework_id
    if op.operation_id is not None:
        return [], "The `id` field cannot be set on LAUNCH_GROUP operations", TASK_GROUP_INVALID
    if not op.tasks:
        return [], "Task group must have at least one task", TASK_GROUP_INVALID
    if len(op.tasks) > ev.MAX_GROUP_TASKS:
        # Bounded (Mesos sets no bound): every task of a group carries the group's task IDs in the log.
        return [], (f"Task group has {len(op.tasks)} tasks; Drover runs at most {ev.MAX_GROUP_TASKS} in one group"), \
            TASK_GROUP_INVALID
    for t in op.tasks:
        if t.spec is not None:
            user = task_user(t.spec, fw.info) or "root"
            if not authorized(config.acls, "run_tasks", fw.info.principal, user):
                return [], (f"Task '{codec.clip(t.task_id)}' is not authorized to launch as user "
                            f"'{codec.clip(user)}'"), TASK_GROUP_UNAUTHORIZED
    in_group: set[str] = set()
    for t in op.tasks:
        why = _task_problem(state, fid, t, agent_id, seen | in_group)
        if why is None and t.spec is not None and (t.spec.network is not None or t.spec.port_mappings):
            why = ("a task of a task group joins its executor's network: set 'container.network_infos' on the "
                   "executor, not on the task")
        if why is not None:
            return [], f"Task '{codec.clip(t.task_id)}' is invalid: {why}", TASK_GROUP_INVALID
        in_group.add(t.task_id)
    ex = op.executor
    if op.executor_problem is not None or ex is None:
        return [], op.executor_problem or "Invalid executor", TASK_GROUP_INVALID
    name = f"Executor '{codec.clip(ex.executor_id)}'"
    if op.executor_framework_id is not None and op.executor_framework_id != fid:
        return [], (f"ExecutorInfo has an invalid FrameworkID (Actual: {codec.clip(op.executor_framework_id)} vs "
                    f"Expected: {fid})"), TASK_GROUP_INVALID
    if ex.executor_id in executors:
        return [], (f"{name} is already in use by another task group of this ACCEPT: Drover runs one task group "
                    "per executor"), TASK_GROUP_INVALID
    holder = in_use.get(ex.executor_id)
    if holder is not None and holder.startswith("group:"):
        return [], (f"{name} is already in use by task '{codec.clip(holder[6:])}': Drover runs one task "
                    "group per executor (launch a new group with a new executor ID)"), TASK_GROUP_INVALID
    if holder is not None:
        return [], f"{name} is the executor of command task '{codec.clip(holder[8:])}'", TASK_GROUP_INVALID
    if ex.executor_id in in_group or ex.executor_id in seen:
        return [], f"{name} has the ID of a task launched with it", TASK_GROUP_INVALID
    ex_res = Resources(ex.resources)
    if ex_res.has_shared():
        # Mesos refuses them in a command task's executor (validation.cpp, "for simplicity"); Drover in a task
        # group's executor too: a group's tasks may share a volume, its executor holds none.
        return [], (f"Executor resources {ex_res.format()} should not contain any shared resources"), \
            TASK_GROUP_INVALID
    cpus, mem = ex_res.scalar("cpus"), ex_res.scalar("mem")
    if cpus < MIN_EXECUTOR_CPUS:
        return [], f"{name} uses less CPUs ({cpus:g}) than the minimum required ({MIN_EXECUTOR_CPUS:g})", \
            TASK_GROUP_INVALID
    if mem < MIN_EXECUTOR_MEM_MB:
        return [], (f"{name} uses less memory ({mem:g}MB) than the minimum required "
                    f"({MIN_EXECUTOR_MEM_MB:g}MB)"), TASK_GROUP_INVALID
    if not any(r.name == "disk" for r in ex_res):
        return [], f"{name} uses no disk", TASK_GROUP_INVALID
    executor = msgspec.structs.replace(ex, task_ids=[t.task_id for t in op.tasks])
    group = [msgspec.structs.replace(t.spec, executor=executor) for t in op.tasks if t.spec is not None]
    pids: set[tuple[str, str]] = set()
    for r in [*ex.resources, *(r for t in group for r in t.resources)]:
        if r.persistence is not None and not r.shared:  # one task of the group may use a (non-shared) volume
            if (r.role, r.persistence.id) in pids:
                return [], (f"Task group and executor use duplicate persistence ID: Persistence ID "
                            f"'{r.persistence.id}' is not unique"), TASK_GROUP_INVALID
            pids.add((r.role, r.persistence.id))
    total = _group_total(group)
    if not available.contains(_one_copy(total)):
        return [], (f"Total resources {total.format()} required by task group and its executor are more than "
                    f"available {available.format()}"), TASK_GROUP_INVALID
    mapped = ((m.host_port, m.protocol) for m in ex.port_mappings)
    if (why := host_ports_problem(list(total), mapped)) is not None:
        return [], f"{name} is invalid: {why.replace('Task maps', 'its container maps')}", TASK_GROUP_INVALID
    return group, None, ""


def _one_copy(res: Resources) -> Resources:
    """`res` with one copy of each shared volume: the tasks of a group may share one, as tasks of a LAUNCH do."""
    if not res.has_shared():
        return res
    return Resources(msgspec.structs.replace(r, copies=1) if r.shared else r for r in res)


def _task_problem(state: State, framework_id: str, t: TaskRequest, agent_id: str, seen: set[str]) -> str | None:
    """Mesos's task validation order (validation.cpp validateTask): task id, unique id, agent, then the rest."""
    if t.id_problem is not None:
        return t.id_problem
    if t.task_id in seen or state.task(framework_id, t.task_id) is not None:
        return f"Task has duplicate ID: {t.task_id}"
    if t.agent_id != agent_id:
        return f"Task uses invalid agent {codec.clip(t.agent_id)} while agent {agent_id} is expected"
    if t.problem is not None or t.spec is None:
        return t.problem
    # A task forwards only host ports it holds (its `ports` resources, which the ACCEPT checks against the offers).
    return host_ports_problem(t.spec.resources, ((m.host_port, m.protocol) for m in t.spec.port_mappings))


def _invalid_offers(state: State, fw: Framework, call: Accept, valid: list[Offer], problem: str,
                    now: float) -> Decision:
    fid = fw.framework_id
    lost = TaskState.DROPPED if "PARTITION_AWARE" in fw.info.capabilities else TaskState.LOST
    message = _msg(f"Task launched with invalid offers: {problem}")
    messages: list[fx.Effect] = []
    for op in call.operations:
        if isinstance(op, Launch):
            task_ids = [t.task_id for t in op.tasks]
        elif isinstance(op, LaunchGroup):
            task_ids = list(op.task_ids)
        else:
            if op.operation_id is not None:
                messages.append(_operation_error(fid, op.operation_id,
                                                 f"Operation attempted with invalid offers: {problem}"))
            continue
        messages += [_task_update(state, fid, tid, None, lost, Reason.INVALID_OFFERS, message, now)
                     for tid in task_ids]
    events: list[ev.Event] = []
    if valid:  # the valid offers go back to the allocator, unfiltered, as Mesos discards them
        events.append(ev.OffersDeclined(framework_id=fid, offer_ids=[o.offer_id for o in valid], refuse_seconds=0.0))
    return Decision(events=events, messages=messages)


def _unsupported_operations(fid: str, call: Accept, valid: list[Offer], kinds: list[str]) -> Decision:
    """An ACCEPT asking for an operation Drover does not implement does nothing at all: launching its tasks
    without (say) the volume the framework asked for would be wrong. Its tasks get TASK_ERROR, its operations
    with an id OPERATION_ERROR, and its offers go back unfiltered."""
    why = f"ACCEPT contains unsupported operation {', '.join(kinds)}: Drover does not implement it yet"
    rejected: list[ev.Rejection] = []
    messages: list[fx.Effect] = []
    for op in call.operations:
        if isinstance(op, Launch):
            rejected += [_rejection(t.task_id, why) for t in op.tasks]
        elif isinstance(op, LaunchGroup):
            rejected += [_rejection(tid, why, TASK_GROUP_INVALID) for tid in op.task_ids]
        if op.operation_id is not None and not isinstance(op, (Launch, LaunchGroup)):
            text = f"{op.kind} is not supported by Drover yet" if isinstance(op, UnsupportedOperation) else why
            messages.append(_operation_error(fid, op.operation_id, text))
    accepted = ev.OffersAccepted(framework_id=fid, offer_ids=[o.offer_id for o in valid], tasks=[],
                                 refuse_seconds=0.0, rejected=rejected)
    return Decision(events=[accepted], messages=messages)


def _resource_op_problem(state: State, kind: str, res: Resources, actor: vol.Actor, agent_id: str,
                         remaining: Resources, checkpointed: Resources, config: DecideConfig,
                         launched: Sequence[ev.TaskSpec] = ()) -> str | None:
    """Why a framework's RESERVE / UNRESERVE / CREATE / DESTROY in an ACCEPT is dropped, or None (Mesos's
    validation order: the operation, then the ACL, then that the offers hold what it consumes). `launched`: the
    tasks this ACCEPT launched before it (a DESTROY of a volume one of them uses is refused, as Mesos, which adds
    them to the agent's used resources as it goes: the fold applies operations before tasks)."""
    why = vol.validation_problem(kind, res, actor, checkpointed)
    if why is None and kind == "DESTROY" and (vol.volumes_in_use(state, agent_id, res)
                                              or vol.specs_use(launched, res)):
        why = "Persistent volumes in use"
    if why is None:
        why = vol.acl_problem(kind, res, actor.principal, config.acls)
    if why is None:
        consumed, _ = conversion(kind, res)
        if not remaining.contains(consumed):
            why = f"{remaining.format()} does not contain {consumed.format()}"
    return why


def decide_decline(state: State, call: Decline, now: float, config: DecideConfig) -> Decision:
    """DECLINE: this framework's live offers go back with the filter (Mesos's rules:
    effective_refuse_seconds); unknown ids are ignored, as Mesos does."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    limits = config.limits
    if len(call.offer_ids) > limits.max_offers_per_call:
        return _over("Too many offer ids in DECLINE", len(call.offer_ids), limits.max_offers_per_call,
                     "max_offers_per_call")
    valid, _ = _offers_of(state, call.framework_id, call.offer_ids)
    if not valid:
        return Decision()
    secs = effective_refuse_seconds(call.refuse_seconds, config.allocation_interval)
    return Decision(events=[ev.OffersDeclined(framework_id=call.framework_id, offer_ids=[o.offer_id for o in valid],
                                              refuse_seconds=secs)])


# ---- tasks: ACKNOWLEDGE, KILL, SHUTDOWN, RECONCILE ------------------------------------------------------------


def decide_acknowledge(state: State, call: Acknowledge, now: float, config: DecideConfig) -> Decision:
    """An acknowledgement of the task's pending update is recorded (the agent is told by effects); a stale or
    unknown one changes nothing (202: pymesos acknowledges from its callbacks, and any non-2xx kills it)."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    task = state.task(call.framework_id, call.task_id)
    if task is None or task.pending is None or task.pending.uuid != call.uuid:
        return Decision()
    return Decision(events=[ev.StatusAcknowledged(framework_id=call.framework_id, task_id=call.task_id,
                                                  uuid=call.uuid)])


def decide_kill(state: State, call: Kill, now: float, config: DecideConfig) -> Decision:
    """KILL: an unknown task gets a reconciliation answer (Mesos's explicit reconciliation), a kill naming
    another agent is ignored, a live task's kill is recorded (effects tell its agent; a later KILL may change
    the grace period)."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    assert fw is not None
    task = state.task(call.framework_id, call.task_id)
    if task is None:
        return Decision(messages=_reconcile_one(state, fw, call.task_id, call.agent_id, now))
    if call.agent_id is not None and call.agent_id != task.agent_id:
        return Decision()  # Mesos ignores a kill naming the wrong agent
    if task.terminal:
        return Decision()
    return Decision(events=[ev.TaskKillRequested(framework_id=call.framework_id, task_id=call.task_id,
                                                 grace_seconds=call.grace_seconds)])


def decide_shutdown(state: State, call: Shutdown, now: float, config: DecideConfig) -> Decision:
    """SHUTDOWN of an executor. Every Drover task runs under its own command executor, whose id is the task's
    id (as Mesos's command executor): shutting it down kills that task; a task group's executor (LAUNCH_GROUP) is
    its pod: shutting it down kills each of its live tasks. Anything else is ignored (202), as
    Mesos ignores a shutdown for an executor it does not know."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    task = state.task(call.framework_id, call.executor_id)
    if task is None or task.spec.executor is not None:
        # A task group's executor (its pod): shutting it down kills every live task of the group.
        group = [t for t in state.tasks.get(call.framework_id, {}).values() if t.spec.executor is not None
                 and t.spec.executor.executor_id == call.executor_id and t.agent_id == call.agent_id
                 and not t.terminal]
        return Decision(events=[ev.TaskKillRequested(framework_id=call.framework_id, task_id=t.task_id)
                                for t in group])
    if task.agent_id != call.agent_id or task.terminal:
        return Decision()
    return Decision(events=[ev.TaskKillRequested(framework_id=call.framework_id, task_id=task.task_id)])


def decide_reconcile(state: State, call: Reconcile, now: float, config: DecideConfig) -> Decision:
    """RECONCILE: answers from the master (no uuid, REASON_RECONCILIATION), as messages: for every task the
    master holds for the framework when the call names none, else for each task named."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    assert fw is not None
    limits = config.limits
    if len(call.tasks) > limits.max_reconcile_tasks:
        return _over("Too many tasks in RECONCILE", len(call.tasks), limits.max_reconcile_tasks,
                     "max_reconcile_tasks")
    fid = fw.framework_id
    messages: list[fx.Effect] = []
    if not call.tasks:
        for task in state.tasks.get(fid, {}).values():
            messages.append(fx.ToFramework(fid, fx.update_event(state, fid, task.task_id, task.agent_id,
                                                                latest_status(state, task, now))))
        return Decision(messages=messages)
    for task_id, agent_id in call.tasks:
        messages += _reconcile_one(state, fw, task_id, agent_id, now)
    return Decision(messages=messages)


def _reconcile_one(state: State, fw: Framework, task_id: str, agent_id: str | None, now: float) -> list[fx.Effect]:
    """Mesos's explicit reconciliation of one task (docs/reconciliation.md; the framework sees TASK_LOST for the
    partition-aware states unless it is PARTITION_AWARE, by codec.state_for)."""
    fid = fw.framework_id
    task = state.task(fid, task_id)
    if task is not None:
        return [fx.ToFramework(fid, fx.update_event(state, fid, task_id, task.agent_id,
                                                    latest_status(state, task, now)))]
    if agent_id is not None and agent_id in state.unreachable_agents:
        # A task we do not know on an unreachable agent: it may be there.
        return [_task_update(state, fid, task_id, agent_id, TaskState.UNREACHABLE, Reason.RECONCILIATION,
                             "Reconciliation: Task is unreachable", now,
                             state.unreachable_agents[agent_id].unreachable_at)]
    if agent_id is not None and agent_id in state.agents:
        if not state.agents[agent_id].connected:
            return []  # the agent may still re-register with this task: say nothing yet, as Mesos does
        return [_task_update(state, fid, task_id, agent_id, TaskState.GONE, Reason.RECONCILIATION,
                             "Reconciliation: Task is unknown to the agent", now)]
    return [_task_update(state, fid, task_id, agent_id, TaskState.UNKNOWN, Reason.RECONCILIATION,
                         "Reconciliation: Task is unknown", now)]


def latest_status(state: State, task: Task, now: float) -> ev.TaskStatus:
    """A reconciliation answer for a task the master knows: its latest state (with its latest status's `healthy`,
    `check_status` and container); for a TASK_UNREACHABLE task with its unreachable_time (the framework sees
    TASK_LOST unless it is PARTITION_AWARE)."""
    unreachable_time = None
    if task.state == TaskState.UNREACHABLE:
        agent = state.unreachable_agents.get(task.agent_id)
        unreachable_time = agent.unreachable_at if agent is not None else next(
            (s.unreachable_time for s in reversed(task.statuses) if s.unreachable_time is not None), None)
    # As Mesos's master (Master::_reconcileTasks): the latest status's health, check status and container.
    last = task.statuses[-1] if task.statuses else None
    return ev.TaskStatus(state=TaskState(task.state), source=Source.MASTER, timestamp=now, reason=Reason.RECONCILIATION,
                         message="Reconciliation: Latest task state", unreachable_time=unreachable_time,
                         healthy=last.healthy if last is not None else None,
                         check_status=last.check_status if last is not None else None,
                         container_id=last.container_id if last is not None else None)


# ---- offers: REVIVE, SUPPRESS ----------------------------------------------------------------------------------


def _roles(fw: Framework, roles: tuple[str, ...]) -> list[str] | None:
    if not roles:
        return list(fw.info.roles)
    if not set(roles) <= set(fw.info.roles):
        return None  # Mesos drops the whole call silently (still 202)
    return sorted(set(roles))


def decide_revive(state: State, call: Revive, now: float, config: DecideConfig) -> Decision:
    """REVIVE: unsuppress the roles named (all the framework's roles if none) and clear their filters; a role
    the framework is not subscribed to (or an invalid one) drops the whole call, as Mesos does."""
    return _revive_or_suppress(state, call, config, ev.RolesRevived, "REVIVE")


def decide_suppress(state: State, call: Suppress, now: float, config: DecideConfig) -> Decision:
    """SUPPRESS: no more offers for the roles named until REVIVE (outstanding offers stay); same role rules."""
    return _revive_or_suppress(state, call, config, ev.RolesSuppressed, "SUPPRESS")


def _revive_or_suppress(state: State, call: Revive | Suppress, config: DecideConfig,
                        event: type[ev.RolesRevived] | type[ev.RolesSuppressed], name: str) -> Decision:
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    assert fw is not None
    limits = config.limits
    if len(call.roles) > limits.max_roles_per_call:
        return _over(f"Too many roles in {name}", len(call.roles), limits.max_roles_per_call, "max_roles_per_call")
    roles = _roles(fw, call.roles)
    if roles is None:
        return Decision()
    return Decision(events=[event(framework_id=fw.framework_id, roles=roles)])


# ---- TEARDOWN --------------------------------------------------------------------------------------------------


def decide_teardown(state: State, call: Teardown, now: float, config: DecideConfig) -> Decision:
    """TEARDOWN: the framework's offers are rescinded and it is removed (its tasks are killed by effects);
    the handler then closes its stream."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    events: list[ev.Event] = []
    offer_ids = [o.offer_id for o in state.offers.values() if o.framework_id == call.framework_id]
    if offer_ids:
        events.append(ev.OffersRescinded(offer_ids=offer_ids, reason="framework_removed"))
    events.append(ev.FrameworkRemoved(framework_id=call.framework_id, reason="teardown"))
    return Decision(events=events)


# ---- calls accepted without effect, on purpose ----------------------------------------------------------------


def decide_message(state: State, call: Message, now: float, config: DecideConfig) -> Decision:
    """MESSAGE to an executor: Drover runs every task under the command executor, which (like Mesos's) ignores
    framework messages, and Mesos delivers messages best-effort anyway. Accepted (202), nothing happens."""
    _, refusal = _connected(state, call.framework_id)
    return refusal or Decision()


def decide_request(state: State, call: Request, now: float, config: DecideConfig) -> Decision:
    """REQUEST: Mesos's built-in allocator ignores resource requests; so does Drover's (202)."""
    _, refusal = _connected(state, call.framework_id)
    return refusal or Decision()


def decide_inverse_offers(state: State, call: InverseOffers, now: float, config: DecideConfig) -> Decision:
    """ACCEPT/DECLINE_INVERSE_OFFERS: Drover has no maintenance schedules, so it never makes inverse offers, and
    Mesos ignores unknown inverse offer ids (202)."""
    _, refusal = _connected(state, call.framework_id)
    return refusal or Decision()


def decide_acknowledge_operation_status(state: State, call: AcknowledgeOperationStatus, now: float,
                                        config: DecideConfig) -> Decision:
    """ACKNOWLEDGE_OPERATION_STATUS: Drover never sends an operation status that needs one (its only operation
    statuses are OPERATION_ERROR and reconciliation answers, without uuid); Mesos drops acknowledgements for
    unknown operations (202)."""
    _, refusal = _connected(state, call.framework_id)
    return refusal or Decision()


def decide_reconcile_operations(state: State, call: ReconcileOperations, now: float,
                                config: DecideConfig) -> Decision:
    """RECONCILE_OPERATIONS: Drover keeps no operations (those with an id are refused with OPERATION_ERROR), so
    implicit reconciliation has nothing to say and every operation named is unknown; the answer depends on its
    agent, as Mesos's Master::reconcileOperations gives it."""
    fw, refusal = _connected(state, call.framework_id)
    if refusal is not None:
        return refusal
    limits = config.limits
    if len(call.operations) > limits.max_reconcile_tasks:
        return _over("Too many operations in RECONCILE_OPERATIONS", len(call.operations), limits.max_reconcile_tasks,
                     "max_reconcile_tasks")
    messages: list[fx.Effect] = []
    for operation_id, agent_id, provider_id in call.operations:
        if agent_id is None:
            st, text = "OPERATION_UNKNOWN", "Reconciliation: Operation is unknown and no 'agent_id' was provided"
        elif agent_id in state.agents:
            if state.agents[agent_id].connected:
                st, text = "OPERATION_UNKNOWN", "Reconciliation: Operation is unknown"
            else:
                st, text = "OPERATION_RECOVERING", "Reconciliation: Agent is recovered but has not re-registered"
        elif agent_id in state.unreachable_agents:
            st, text = "OPERATION_UNREACHABLE", "Reconciliation: Agent is unreachable"
        else:
            st, text = "OPERATION_UNKNOWN", "Reconciliation: Both operation and agent are unknown"
        status = codec.operation_status_out(operation_id, st, text, agent_id, provider_id)
        messages.append(fx.ToFramework(call.framework_id, codec.ev_update_operation_status(status)))
    return Decision(messages=messages)


# ---- dispatch ---------------------------------------------------------------------------------------------------

DECIDERS: dict[type, Callable[[State, object, float, DecideConfig], Decision]] = {
    Subscribe: decide_subscribe,  # type: ignore[dict-item]
    UpdateFramework: decide_update_framework,  # type: ignore[dict-item]
    Accept: decide_accept,  # type: ignore[dict-item]
    Decline: decide_decline,  # type: ignore[dict-item]
    Acknowledge: decide_acknowledge,  # type: ignore[dict-item]
    Kill: decide_kill,  # type: ignore[dict-item]
    Shutdown: decide_shutdown,  # type: ignore[dict-item]
    Reconcile: decide_reconcile,  # type: ignore[dict-item]
    Revive: decide_revive,  # type: ignore[dict-item]
    Suppress: decide_suppress,  # type: ignore[dict-item]
    Teardown: decide_teardown,  # type: ignore[dict-item]
    Message: decide_message,  # type: ignore[dict-item]
    Request: decide_request,  # type: ignore[dict-item]
    InverseOffers: decide_inverse_offers,  # type: ignore[dict-item]
    AcknowledgeOperationStatus: decide_acknowledge_operation_status,  # type: ignore[dict-item]
    ReconcileOperations: decide_reconcile_operations,  # type: ignore[dict-item]
}
# Every call type has a decider, except UNKNOWN (501, answered by the handler).
assert set(DECIDERS) | {Unknown} == set(get_args(SchedulerCall)) | {Subscribe}


def decide(state: State, call: Subscribe | SchedulerCall, now: float, config: DecideConfig) -> Decision:
    """The decider for `call`'s type."""
    return DECIDERS[type(call)](state, call, now, config)
