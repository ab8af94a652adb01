"""The Mesos v1 JSON wire format, in one place (see ../shared/docs/mesos-v1-api.md).

The core speaks Drover's own types (eventstore.events, eventstore.resources, the typed scheduler calls of
master.decide.scheduler); this module turns Mesos JSON into them and renders them back in stout's JSON
conventions: snake_case names, enum names, doubles that keep their fraction (15.0), IDs as {"value": ..},
and every event payload nested under the lower-cased event type.

Parsing checks, in Mesos's order, what can be judged without the master's state:
- structure (`CallError`, a 400 worded as stout words it: "Failed to convert JSON into Call protobuf: ..."):
  missing required fields, wrong JSON types, numbers that are not finite (stout accepts "Infinity"; Drover
  cannot record it), integers that are not integers;
- `scheduler::call::validate` (`CallError`, "Failed to validate scheduler::Call: ...");
- Drover's value rules for ids in calls (`InvalidValue`, a 400): eventstore.values.id_problem;
- per task (`TaskInvalid`, a TASK_ERROR for that task): Mesos's task validation (ids, resources, kill policy)
  and every TaskInfo field Drover does not implement, named;
- per framework (`FrameworkRefused`, an ERROR event for SUBSCRIBE, a 400 for UPDATE_FRAMEWORK): Mesos's
  `framework::validate` (roles, id, offer filters, failover timeout) and Drover's size bounds.
What needs the state (offers, duplicate task ids, limits from the configuration) is the deciders' job.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter
from typing import TYPE_CHECKING

import msgspec

from eventstore import events as ev
from eventstore.resources import (UNRESERVED, DiskVolume, Persistence, Resource, Resources, container_path_problem,
                                  resources_problem, volume_problem)
from eventstore.values import (MAX_NAME_LENGTH, MAX_OUTPUT_FILE_LENGTH, MAX_RANGE_VALUE, MAX_SCALAR, MAX_SECONDS,
                               MAX_TEXT_LENGTH, MAX_URI_LENGTH, MAX_URIS, id_problem, output_file_problem,
                               role_problem, uri_problem, user_problem)

if TYPE_CHECKING:
    from master.decide import scheduler as sd

CAPABILITIES = {
    "REVOCABLE_RESOURCES", "TASK_KILLING_STATE", "GPU_RESOURCES", "SHARED_RESOURCES", "PARTITION_AWARE",
    "MULTI_ROLE", "RESERVATION_REFINEMENT", "REGION_AWARE",
}
CALL_TYPES = {
    "SUBSCRIBE", "TEARDOWN", "ACCEPT", "DECLINE", "ACCEPT_INVERSE_OFFERS", "DECLINE_INVERSE_OFFERS", "REVIVE",
    "KILL", "SHUTDOWN", "ACKNOWLEDGE", "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE", "RECONCILE_OPERATIONS",
    "MESSAGE", "REQUEST", "SUPPRESS", "UPDATE_FRAMEWORK",
}
# Offer operations Drover does not implement yet: an ACCEPT holding one launches nothing (master.decide.scheduler).
UNSUPPORTED_OPERATIONS = ("GROW_VOLUME", "SHRINK_VOLUME", "CREATE_DISK", "DESTROY_DISK")

# Entries in one list of a task or a framework (labels, environment, arguments, resources, roles): the bound
# the event types carry (eventstore.events); a configured limit (Limits.max_labels, max_roles_per_call) may be
# lower, and the deciders apply it.
MAX_SPEC_LIST = 1000
# The longest task id a TASK_ERROR can echo back (a rejection carries the id as sent, since an invalid id may be
# why the task was refused); a longer one makes the whole call a 400.
MAX_ECHOED_ID = 1024
MAX_DATA_LENGTH = 4 * 1024 * 1024  # TaskInfo.data, base64
MAX_FILTER_ALTERNATIVES = 100  # min_allocatable_resources quantity sets per role


class CallError(Exception):
    """A malformed call: answered with 400 and this message."""


class InvalidValue(CallError):
    """A well-formed call holding a value Drover's rules refuse (an invalid id, a negative grace period): 400."""


class TaskInvalid(Exception):
    """A task that fails validation: answered with TASK_ERROR / REASON_TASK_INVALID."""


class FrameworkRefused(Exception):
    """SUBSCRIBE refused: an ERROR event on the 200 stream, then close (Mesos's behaviour)."""


_json_enc = msgspec.json.Encoder()


def dumps(obj: object) -> bytes:
    # ASCII-only compact JSON: naive RecordIO clients count bytes and choke on raw UTF-8 less often. msgspec first
    # (the same compact bytes, ~10x faster: offers to frameworks were 9% of a busy leader's time at 5,000 agents);
    # the standard library for non-ASCII text (which it escapes). Numbers sent are finite (values are checked at the
    # boundary); msgspec would write a non-finite one as null.
    try:
        body = _json_enc.encode(obj)
    except (TypeError, ValueError):
        body = b"\x80"
    if body.isascii():
        return body
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


def recordio(obj: object) -> bytes:
    body = dumps(obj)
    return str(len(body)).encode() + b"\n" + body


def clip(text: str, n: int = 64) -> str:
    """`text` shortened for a message: what a framework sent can be megabytes long."""
    return text if len(text) <= n else text[:n] + "..."


def _calls():
    """master.decide.scheduler, where the typed calls live, imported on first use: master.decide imports
    master.effects, which imports this module, so a module-level import would be circular."""
    from master.decide import scheduler

    return scheduler


# ---- small input helpers ------------------------------------------------------------------------


def _obj(d: object, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise CallError(f"'{where}' must be a JSON object")
    return d


def _id(d: object, where: str, required: bool = True) -> str | None:
    """An `{"value": "..."}` id, structure only (see `parse_id` for the value rules)."""
    if d is None:
        if required:
            raise CallError(f"Missing required fields: {where}")
        return None
    if not isinstance(d, dict) or not isinstance(d.get("value"), str):
        raise CallError(f"'{where}' must be an object like {{\"value\": \"...\"}}")
    return d["value"]


def parse_id(d: object, where: str, required: bool = True) -> str | None:
    """An id a call names (offer, agent, task, executor, operation): structure, then eventstore.values.id_problem
    (non-empty, at most 255 characters, not '.' or '..', no '/', '\\', whitespace or control characters)."""
    v = _id(d, where, required)
    if v is not None and (problem := id_problem(v, "ID")) is not None:
        raise InvalidValue(f"Invalid '{where}': {problem}")
    return v


def _num(v: object, where: str) -> float:
    """A JSON number (or a numeric string, as stout accepts), finite: a non-finite number cannot be recorded."""
    if isinstance(v, bool):
        raise CallError(f"'{where}' must be a number")
    f: float | None = None
    if isinstance(v, (int, float)):
        try:
            f = float(v)
        except OverflowError:  # an integer beyond any double
            f = math.inf
    elif isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            pass
    if f is None:
        raise CallError(f"'{where}' must be a number, got {clip(repr(v))}")
    if not math.isfinite(f):
        raise CallError(f"'{where}' must be a finite number, got {clip(repr(v))}")
    return f


def _int(v: object, where: str, lo: int = 0, hi: int = MAX_RANGE_VALUE) -> int:
    """A JSON integer (or a numeric string) in [lo, hi]: stout's conversion of an int64/uint64 field."""
    n: int | None = None
    if isinstance(v, bool):
        n = None
    elif isinstance(v, int):
        n = v
    elif isinstance(v, float):
        n = int(v) if math.isfinite(v) and v.is_integer() else None
    elif isinstance(v, str):
        try:
            n = int(v.strip())
        except ValueError:
            n = None
    if n is None:
        raise CallError(f"'{where}' must be an integer, got {clip(repr(v))}")
    if not lo <= n <= hi:
        raise CallError(f"'{where}' must be an integer in [{lo}, {hi}], got {clip(str(n))}")
    return n


def _bool(v: object, where: str, default: bool = False) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        raise CallError(f"'{where}' must be a boolean")
    return v


def _list(v: object, where: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise CallError(f"'{where}' must be a JSON array")
    return v


def _str(v: object, where: str, required: bool = False) -> str | None:
    if v is None:
        if required:
            raise CallError(f"Missing required fields: {where}")
        return None
    if not isinstance(v, str):
        raise CallError(f"'{where}' must be a string")
    return v


def _required(v: object, where: str) -> object:
    if v is None:
        raise CallError(f"Missing required fields: {where}")
    return v


def _base64(v: str, where: str) -> None:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise CallError(f"'{where}' is not valid base64") from None


def labels_in(d: object, where: str) -> list[ev.Label]:
    out = []
    for i, lab in enumerate(_list(_obj(d, where).get("labels"), f"{where}.labels")):
        lab = _obj(lab, f"{where}.labels[{i}]")
        out.append(ev.Label(_str(lab.get("key"), f"{where}.labels[{i}].key", True),
                            _str(lab.get("value"), f"{where}.labels[{i}].value") or ""))
    return out


def labels_out(labels: list[ev.Label]) -> dict:
    return {"labels": [{"key": l.key, "value": l.value} if l.value else {"key": l.key} for l in labels]}


def _labels_problem(labels: list[ev.Label], what: str) -> str | None:
    """Drover's size bounds on a label list (and on environment variables, which share the shape)."""
    if len(labels) > MAX_SPEC_LIST:
        return f"{what} has {len(labels)} entries; at most {MAX_SPEC_LIST} are allowed"
    for lab in labels:
        if len(lab.key) > MAX_NAME_LENGTH:
            return f"{what}: a key or name is longer than {MAX_NAME_LENGTH} characters ({clip(lab.key)!r})"
        if len(lab.value) > MAX_TEXT_LENGTH:
            return f"{what}: the value of {clip(lab.key)!r} is longer than {MAX_TEXT_LENGTH} characters"
    return None


def _length_problem(value: str | None, what: str, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        return f"{what} is longer than {limit} characters"
    return None


# ---- calls --------------------------------------------------------------------------------------


def parse_call(body: bytes, max_depth: int = 64) -> dict:
    """The call's JSON object and its type (a known call type, or UNKNOWN); anything else is a CallError."""
    try:
        call = json.loads(body)
    except RecursionError:
        raise CallError("Failed to parse body into JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CallError(f"Failed to parse body into JSON: {clip(str(e), 200)}") from None
    if _deeper_than(call, max_depth):
        raise CallError(f"Failed to parse body into JSON: nested deeper than {max_depth} levels")
    if not isinstance(call, dict):
        raise CallError(f"{CONVERT}expecting a JSON object")
    t = call.get("type")
    if t is None:
        raise CallError(f"{VALIDATE}Expecting 'type' to be present")
    if not isinstance(t, str):
        raise CallError(f"{CONVERT}'type' must be an enum name")
    if t != "UNKNOWN" and t not in CALL_TYPES:
        raise CallError(f"{CONVERT}unknown call type '{clip(t)}'")
    return call


def _deeper_than(obj: object, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if isinstance(o, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in o.values())
        elif isinstance(o, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in o)
    return False


CONVERT = "Failed to convert JSON into Call protobuf: "
VALIDATE = "Failed to validate scheduler::Call: "

# Calls Mesos refuses without their payload (scheduler::call::validate); TEARDOWN, REVIVE, SUPPRESS and UNKNOWN
# need none.
PAYLOAD_REQUIRED = CALL_TYPES - {"SUBSCRIBE", "TEARDOWN", "REVIVE", "SUPPRESS"}


def conversion_error(e: Exception) -> CallError:
    """A structural error (missing required field, wrong JSON type) worded as Mesos words it."""
    if isinstance(e, InvalidValue):
        return e
    msg = str(e)
    return CallError(msg if msg.startswith("Failed to") else CONVERT + msg)


def parse_scheduler_call(call: dict) -> "sd.SchedulerCall":
    """A non-SUBSCRIBE call (from `parse_call`) as its typed value, checked as Mesos checks it before it looks
    the framework up, so a malformed call is a 400 even from an unknown or disconnected framework: first the
    JSON->protobuf conversion of its payload (proto2 required fields and JSON types, anywhere in the payload: a
    TaskInfo without a `name` fails the whole call, it is not a TASK_ERROR), then `scheduler::call::validate`,
    then Drover's rules for the ids it names."""
    t = call["type"]
    key = t.lower()
    payload = call.get(key)
    built = None
    try:
        framework_id = _id(call.get("framework_id"), "framework_id", required=False)
        if payload is not None or t not in PAYLOAD_REQUIRED:
            built = _BUILDERS[t](framework_id or "", _obj(payload, key), key)
    except CallError as e:
        raise conversion_error(e) from None
    if framework_id is None:
        raise CallError(f"{VALIDATE}Expecting 'framework_id' to be present")
    if t in PAYLOAD_REQUIRED and payload is None:
        raise CallError(f"{VALIDATE}Expecting '{key}' to be present")
    if t in ("ACKNOWLEDGE", "ACKNOWLEDGE_OPERATION_STATUS"):
        decode_uuid(payload["uuid"], f"{key}.uuid")
    if t == "ACKNOWLEDGE_OPERATION_STATUS" and payload.get("agent_id") is None:
        raise CallError(f"{VALIDATE}Expecting 'agent_id' to be present")
    if t == "UPDATE_FRAMEWORK" and built.requested_id != framework_id:
        raise CallError(f"{VALIDATE}'framework_id' differs from 'update_framework.framework_info.id'")
    if (problem := id_problem(framework_id, "ID")) is not None:
        raise InvalidValue(f"Invalid 'framework_id': {problem}")
    return built


def parse_subscribe(call: dict) -> "sd.Subscribe":
    """A SUBSCRIBE call: structure and `scheduler::call::validate` (CallError: a 400 before any stream), then
    what Mesos's `framework::validate` refuses, kept in `invalid` (the decider answers it with an ERROR event)."""
    C = _calls()
    if call.get("subscribe") is None:
        raise CallError(f"{VALIDATE}Expecting 'subscribe' to be present")
    invalid: str | None = None
    try:
        sub = _obj(call.get("subscribe"), "subscribe")
        if sub.get("framework_info") is None:
            raise CallError("Missing required fields: subscribe.framework_info")
        top_id = _id(call.get("framework_id"), "framework_id", required=False)
        info: ev.FrameworkInfo | None
        try:
            info, info_id = parse_framework_info(sub.get("framework_info"), "subscribe.framework_info")
        except FrameworkRefused as e:  # well-formed (structure is checked first), but refused
            invalid, info = str(e), None
            raw_id = _obj(sub.get("framework_info"), "framework_info").get("id")
            info_id = _id(raw_id, "subscribe.framework_info.id", required=False)
        suppressed = tuple(_str(r, f"subscribe.suppressed_roles[{i}]", True)
                           for i, r in enumerate(_list(sub.get("suppressed_roles"), "subscribe.suppressed_roles")))
        constraints = _offer_constraints(sub.get("offer_constraints"), "subscribe.offer_constraints")
    except CallError as e:
        raise conversion_error(e) from None
    # An empty id is no id: Mesos subscribes a new framework then.
    if (top_id or None) != (info_id or None):
        raise CallError(f"{VALIDATE}'framework_id' differs from 'subscribe.framework_info.id'")
    return C.Subscribe(framework_id=info_id or None, info=info, invalid=invalid, suppressed_roles=suppressed,
                       offer_constraints=constraints)


def _offer_constraints(d: object, where: str) -> bool:
    """Whether any offer constraint is set (Drover does not implement them: the decider refuses them)."""
    return bool(_obj(_obj(d, where).get("role_constraints"), f"{where}.role_constraints"))


# ---- per call type: the typed call (structure and value rules) ---------------------------------------------


def _b_accept(fid: str, p: dict, key: str) -> "sd.Accept":
    C = _calls()
    offer_ids = tuple(parse_id(o, f"{key}.offer_ids[{i}]") for i, o in enumerate(_list(p.get("offer_ids"),
                                                                                        f"{key}.offer_ids")))
    ops: list = []
    for i, op in enumerate(_list(p.get("operations"), f"{key}.operations")):
        w = f"{key}.operations[{i}]"
        op = _obj(op, w)
        kind = op.get("type")
        if kind is None:
            raise CallError(f"Missing required fields: {w}.type")
        if not isinstance(kind, str):
            raise CallError(f"'{w}.type' must be an enum name")
        op_id = parse_id(op.get("id"), f"{w}.id", required=False)
        if kind == "LAUNCH":
            launch = _obj(op.get("launch"), f"{w}.launch")
            tasks = tuple(parse_launch_task(ti, f"{w}.launch.task_infos[{j}]")
                          for j, ti in enumerate(_list(launch.get("task_infos"), f"{w}.launch.task_infos")))
            ops.append(C.Launch(tasks=tasks, operation_id=op_id))
        elif kind == "LAUNCH_GROUP":
            lg = _obj(op.get("launch_group"), f"{w}.launch_group")
            raw_executor = _obj(_required(lg.get("executor"), f"{w}.launch_group.executor"),
                                f"{w}.launch_group.executor")
            executor, executor_fid, executor_problem = parse_executor_info(raw_executor, f"{w}.launch_group.executor")
            wt = f"{w}.launch_group.task_group"
            tg = _obj(_required(lg.get("task_group"), wt), wt)
            tasks = tuple(parse_launch_task(ti, f"{wt}.tasks[{j}]", group_executor=raw_executor)
                          for j, ti in enumerate(_list(tg.get("tasks"), f"{wt}.tasks")))
            ops.append(C.LaunchGroup(task_ids=tuple(t.task_id for t in tasks), operation_id=op_id, tasks=tasks,
                                     executor=executor, executor_framework_id=executor_fid,
                                     executor_problem=executor_problem))
        elif kind in ("RESERVE", "UNRESERVE", "CREATE", "DESTROY"):
            wr = f"{w}.{kind.lower()}"
            body = _obj(op.get(kind.lower()), wr)
            field = "volumes" if kind in ("CREATE", "DESTROY") else "resources"
            resources, problem = None, None
            try:
                resources = parse_resources(body.get(field), f"{wr}.{field}")
                if kind == "RESERVE" and _list(body.get("source"), f"{wr}.source"):
                    problem = "Reservation updates are not yet implemented for the scheduler API"
                elif kind == "RESERVE":
                    problem = reserve_problem(body.get(field))
            except TaskInvalid as e:
                problem = str(e)
            ops.append(C.ResourceOp(kind=kind, resources=resources, problem=problem, operation_id=op_id))
        elif kind in UNSUPPORTED_OPERATIONS:
            ops.append(C.UnsupportedOperation(kind=kind, operation_id=op_id))
        else:  # UNKNOWN, or an enum name this build does not know (stout drops it): Mesos ignores the operation
            ops.append(C.UnknownOperation(operation_id=op_id))
    return C.Accept(framework_id=fid, offer_ids=offer_ids, operations=tuple(ops),
                    refuse_seconds=parse_refuse_seconds(p.get("filters")))


def _b_decline(fid: str, p: dict, key: str) -> "sd.Decline":
    ids = tuple(parse_id(o, f"{key}.offer_ids[{i}]") for i, o in enumerate(_list(p.get("offer_ids"),
                                                                                  f"{key}.offer_ids")))
    return _calls().Decline(framework_id=fid, offer_ids=ids, refuse_seconds=parse_refuse_seconds(p.get("filters")))


def _b_inverse(fid: str, p: dict, key: str) -> "sd.InverseOffers":
    ids = tuple(parse_id(o, f"{key}.inverse_offer_ids[{i}]")
                for i, o in enumerate(_list(p.get("inverse_offer_ids"), f"{key}.inverse_offer_ids")))
    parse_refuse_seconds(p.get("filters"))
    return _calls().InverseOffers(framework_id=fid, accept=key.startswith("accept"), inverse_offer_ids=ids)


def _b_roles(fid: str, p: dict, key: str) -> "sd.Revive | sd.Suppress":
    roles = tuple(_str(r, f"{key}.roles[{i}]", True) for i, r in enumerate(_list(p.get("roles"), f"{key}.roles")))
    C = _calls()
    return (C.Revive if key == "revive" else C.Suppress)(framework_id=fid, roles=roles)


def _b_kill(fid: str, p: dict, key: str) -> "sd.Kill":
    task_id = parse_id(p.get("task_id"), f"{key}.task_id")
    agent_id = parse_id(p.get("agent_id"), f"{key}.agent_id", required=False)
    grace = None
    if p.get("kill_policy") is not None:
        gp = _obj(p["kill_policy"], f"{key}.kill_policy").get("grace_period")
        if gp is not None:
            w = f"{key}.kill_policy.grace_period.nanoseconds"
            grace = _num(_obj(gp, f"{key}.kill_policy.grace_period").get("nanoseconds"), w) / 1e9
            if grace < 0:
                raise InvalidValue(f"'{key}.kill_policy.grace_period' must be non-negative")
            if grace > MAX_SECONDS:
                raise InvalidValue(f"'{key}.kill_policy.grace_period' must be at most {MAX_SECONDS:g} seconds")
    return _calls().Kill(framework_id=fid, task_id=task_id, agent_id=agent_id, grace_seconds=grace)


def _b_shutdown(fid: str, p: dict, key: str) -> "sd.Shutdown":
    return _calls().Shutdown(framework_id=fid, executor_id=parse_id(p.get("executor_id"), f"{key}.executor_id"),
                             agent_id=parse_id(p.get("agent_id"), f"{key}.agent_id"))


def _b_acknowledge(fid: str, p: dict, key: str) -> "sd.Acknowledge":
    agent_id = parse_id(p.get("agent_id"), f"{key}.agent_id")
    task_id = parse_id(p.get("task_id"), f"{key}.task_id")
    uuid = _str(p.get("uuid"), f"{key}.uuid", True)
    return _calls().Acknowledge(framework_id=fid, agent_id=agent_id, task_id=task_id, uuid=uuid)


def _b_acknowledge_operation_status(fid: str, p: dict, key: str) -> "sd.AcknowledgeOperationStatus":
    agent_id = parse_id(p.get("agent_id"), f"{key}.agent_id", required=False)
    parse_id(p.get("resource_provider_id"), f"{key}.resource_provider_id", required=False)
    _str(p.get("uuid"), f"{key}.uuid", True)
    operation_id = parse_id(p.get("operation_id"), f"{key}.operation_id")
    return _calls().AcknowledgeOperationStatus(framework_id=fid, agent_id=agent_id, operation_id=operation_id)


def _b_reconcile(fid: str, p: dict, key: str) -> "sd.Reconcile":
    tasks = []
    for i, x in enumerate(_list(p.get("tasks"), f"{key}.tasks")):
        x = _obj(x, f"{key}.tasks[{i}]")
        tasks.append((parse_id(x.get("task_id"), f"{key}.tasks[{i}].task_id"),
                      parse_id(x.get("agent_id"), f"{key}.tasks[{i}].agent_id", required=False)))
    return _calls().Reconcile(framework_id=fid, tasks=tuple(tasks))


def _b_reconcile_operations(fid: str, p: dict, key: str) -> "sd.ReconcileOperations":
    ops = []
    for i, x in enumerate(_list(p.get("operations"), f"{key}.operations")):
        w = f"{key}.operations[{i}]"
        x = _obj(x, w)
        ops.append((parse_id(x.get("operation_id"), f"{w}.operation_id"),
                    parse_id(x.get("agent_id"), f"{w}.agent_id", required=False),
                    parse_id(x.get("resource_provider_id"), f"{w}.resource_provider_id", required=False)))
    return _calls().ReconcileOperations(framework_id=fid, operations=tuple(ops))


def _b_message(fid: str, p: dict, key: str) -> "sd.Message":
    agent_id = parse_id(p.get("agent_id"), f"{key}.agent_id")
    executor_id = parse_id(p.get("executor_id"), f"{key}.executor_id")
    _base64(_str(p.get("data"), f"{key}.data", True), f"{key}.data")
    return _calls().Message(framework_id=fid, agent_id=agent_id, executor_id=executor_id)


def _b_request(fid: str, p: dict, key: str) -> "sd.Request":
    requests = _list(p.get("requests"), f"{key}.requests")
    for i, r in enumerate(requests):
        _obj(r, f"{key}.requests[{i}]")
    return _calls().Request(framework_id=fid, requests=len(requests))


def _b_teardown(fid: str, p: dict, key: str) -> "sd.Teardown":
    return _calls().Teardown(framework_id=fid)


def _b_unknown(fid: str, p: dict, key: str) -> "sd.Unknown":
    return _calls().Unknown(framework_id=fid)


def _b_update_framework(fid: str, p: dict, key: str) -> "sd.UpdateFramework":
    if p.get("framework_info") is None:
        raise CallError(f"Missing required fields: {key}.framework_info")
    invalid, info = None, None
    try:
        info, info_id = parse_framework_info(p["framework_info"], f"{key}.framework_info")
    except FrameworkRefused as e:  # well-formed; refused by the decider (400)
        invalid = str(e)
        info_id = _id(_obj(p["framework_info"], f"{key}.framework_info").get("id"), f"{key}.framework_info.id",
                      required=False)
    suppressed = tuple(_str(r, f"{key}.suppressed_roles[{i}]", True)
                       for i, r in enumerate(_list(p.get("suppressed_roles"), f"{key}.suppressed_roles")))
    constraints = _offer_constraints(p.get("offer_constraints"), f"{key}.offer_constraints")
    return _calls().UpdateFramework(framework_id=fid, requested_id=info_id, info=info, invalid=invalid,
                                    suppressed_roles=suppressed, offer_constraints=constraints)


_BUILDERS = {
    "ACCEPT": _b_accept, "DECLINE": _b_decline, "ACCEPT_INVERSE_OFFERS": _b_inverse,
    "DECLINE_INVERSE_OFFERS": _b_inverse, "REVIVE": _b_roles, "SUPPRESS": _b_roles, "KILL": _b_kill,
    "SHUTDOWN": _b_shutdown, "ACKNOWLEDGE": _b_acknowledge,
    "ACKNOWLEDGE_OPERATION_STATUS": _b_acknowledge_operation_status, "RECONCILE": _b_reconcile,
    "RECONCILE_OPERATIONS": _b_reconcile_operations, "MESSAGE": _b_message, "REQUEST": _b_request,
    "TEARDOWN": _b_teardown, "UPDATE_FRAMEWORK": _b_update_framework, "UNKNOWN": _b_unknown,
}
assert set(_BUILDERS) == (CALL_TYPES - {"SUBSCRIBE"}) | {"UNKNOWN"}


# ---- FrameworkInfo ---------------------------------------------------------------------------------


def parse_framework_info(d: object, where: str = "framework_info") -> tuple[ev.FrameworkInfo, str | None]:
    """Returns the info and the `id` it carried (re-subscription; None for no id or an empty one).

    Structure first (CallError: a 400, as stout's conversion fails), then the checks of Mesos's
    `framework::validate`, in its order (roles, id, offer filters, failover timeout), then Drover's size bounds
    (FrameworkRefused: an ERROR event on the stream), so a refusal never hides a malformed field."""
    d = _obj(d, where)
    user = _str(d.get("user"), f"{where}.user", True)
    name = _str(d.get("name"), f"{where}.name", True)
    caps = []
    for i, c in enumerate(_list(d.get("capabilities"), f"{where}.capabilities")):
        t = _obj(c, f"{where}.capabilities[{i}]").get("type")
        if isinstance(t, str) and t in CAPABILITIES:  # unknown enum names are dropped, as stout does
            caps.append(t)
    caps = sorted(set(caps))
    roles_given = d.get("roles")
    role_given = _str(d.get("role"), f"{where}.role")
    roles_list = [_str(r, f"{where}.roles[{i}]", True) for i, r in enumerate(_list(roles_given, f"{where}.roles"))]
    raw_failover = d.get("failover_timeout")
    failover = 0.0 if raw_failover is None else _num(raw_failover, f"{where}.failover_timeout")
    principal = _str(d.get("principal"), f"{where}.principal")
    hostname = _str(d.get("hostname"), f"{where}.hostname")
    webui_url = _str(d.get("webui_url"), f"{where}.webui_url")
    checkpoint = _bool(d.get("checkpoint"), f"{where}.checkpoint")
    labels = labels_in(d.get("labels"), f"{where}.labels") if d.get("labels") is not None else []
    framework_id = _id(d.get("id"), f"{where}.id", required=False) or None
    filters = []  # (role, [alternative quantity sets]), structure checked here, values judged below
    for role, f in _obj(d.get("offer_filters"), f"{where}.offer_filters").items():
        w = f"{where}.offer_filters.{clip(role)}"
        mar = _obj(f, w).get("min_allocatable_resources")
        if mar is None:
            continue
        alts = []
        for i, q in enumerate(_list(_obj(mar, f"{w}.min_allocatable_resources").get("quantities"),
                                    f"{w}.min_allocatable_resources.quantities")):
            wq = f"{w}.min_allocatable_resources.quantities[{i}].quantities"
            qs = _obj(_obj(q, f"{w}.min_allocatable_resources.quantities[{i}]").get("quantities"), wq)
            alts.append({n: _num(_obj(v, f"{wq}.{clip(n)}").get("value"), f"{wq}.{clip(n)}.value")
                         for n, v in sorted(qs.items())})
        filters.append((role, alts))

    if roles_given is not None and role_given is not None:
        raise FrameworkRefused("'FrameworkInfo.role' and 'FrameworkInfo.roles' must not both be set")
    if roles_given is not None and (roles_list or "MULTI_ROLE" in caps):
        if "MULTI_ROLE" not in caps:
            raise FrameworkRefused("'FrameworkInfo.roles' requires the MULTI_ROLE capability")
        roles = roles_list
        if len(roles) > MAX_SPEC_LIST:
            raise FrameworkRefused(f"'FrameworkInfo.roles' has {len(roles)} roles; at most {MAX_SPEC_LIST} are allowed")
        if len(set(roles)) != len(roles):
            dups = sorted(r for r, n in Counter(roles).items() if n > 1)
            raise FrameworkRefused(f"Duplicate roles in FrameworkInfo.roles: {[clip(r) for r in dups[:10]]}")
        multi = True
    else:
        if "MULTI_ROLE" in caps and role_given is not None:
            raise FrameworkRefused("'FrameworkInfo.role' must not be set with the MULTI_ROLE capability")
        multi = "MULTI_ROLE" in caps
        # A MULTI_ROLE framework without `roles` is subscribed to no role (and gets no offers), as in Mesos.
        roles = [] if multi else [role_given if role_given is not None else "*"]
    for r in roles:
        validate_role(r)
    if framework_id is not None and (problem := id_problem(framework_id, "'FrameworkInfo.id'")) is not None:
        raise FrameworkRefused(problem)
    min_alloc = {}
    for role, alts in filters:
        if role not in roles:
            raise FrameworkRefused(f"Offer filters are specified for role '{clip(role)}' which the framework is not "
                                   "subscribed to")
        if len(alts) > MAX_FILTER_ALTERNATIVES:
            raise FrameworkRefused(f"Offer filters for role '{clip(role)}' hold {len(alts)} quantity sets; at most "
                                   f"{MAX_FILTER_ALTERNATIVES} are allowed")
        for alt in alts:
            if not alt:
                raise FrameworkRefused("Resource quantities must contain at least one quantity")
            for n, v in alt.items():
                if not n or len(n) > MAX_NAME_LENGTH:
                    raise FrameworkRefused(f"Invalid resource name in offer filters: {clip(n)!r}")
                if v < 0:
                    raise FrameworkRefused(f"Invalid resource quantity for '{clip(n)}': Negative values not supported")
                if v > MAX_SCALAR:
                    raise FrameworkRefused(f"Invalid resource quantity for '{clip(n)}': more than {MAX_SCALAR:g}")
        min_alloc[role] = alts
    if failover < 0:
        raise FrameworkRefused(f"The framework failover_timeout ({failover:g}) is invalid: it must be non-negative")
    # Mesos refuses a timeout its Duration cannot hold (~292 years); Drover caps durations at MAX_SECONDS.
    failover = min(failover, MAX_SECONDS)
    for value, what, limit in ((name, "name", MAX_NAME_LENGTH), (user, "user", MAX_NAME_LENGTH),
                               (principal, "principal", MAX_NAME_LENGTH), (hostname, "hostname", MAX_NAME_LENGTH),
                               (webui_url, "webui_url", MAX_TEXT_LENGTH)):
        if (problem := _length_problem(value, f"'FrameworkInfo.{what}'", limit)) is not None:
            raise FrameworkRefused(problem)
    if (problem := _labels_problem(labels, "'FrameworkInfo.labels'")) is not None:
        raise FrameworkRefused(problem)
    info = ev.FrameworkInfo(
        name=name, user=user, roles=roles, multi_role=multi, capabilities=caps, failover_timeout=failover,
        checkpoint=checkpoint, principal=principal, hostname=hostname, webui_url=webui_url,
        labels=labels, min_allocatable=dict(sorted(min_alloc.items())),
    )
    return info, framework_id


def validate_role(role: str) -> None:
    """Mesos's role rules (eventstore.values.role_problem): '*' or '/'-separated components, none empty, '.',
    '..' or '*', none starting with '-' or holding whitespace, control characters or DEL; bounded length.
    Raises FrameworkRefused."""
    problem = role_problem(role)
    if problem is not None:
        detail = problem.partition(" is invalid: ")[2] or problem
        shown = clip(role) if isinstance(role, str) else repr(role)
        raise FrameworkRefused(f"Role name '{shown}' is invalid: {detail}")


# ---- resources ---------------------------------------------------------------------------------------


def parse_resources(items: object, where: str) -> Resources:
    """Every resource is checked for structure (CallError) before any value is judged (TaskInvalid):
    scalars in [0, MAX_SCALAR], ranges of integers with begin <= end, one type per name, valid roles
    (eventstore.resources.resources_problem), and no resource kind Drover does not implement."""
    records: list[Resource] = []
    problem: str | None = None
    for i, r in enumerate(_list(items, where)):
        w = f"{where}[{i}]"
        r = _obj(r, w)
        name = _str(r.get("name"), f"{w}.name", True)
        typ = _str(r.get("type"), f"{w}.type", True)
        role = UNRESERVED
        if r.get("reservations"):
            stack = _list(r["reservations"], f"{w}.reservations")
            last = _obj(stack[-1], f"{w}.reservations[{len(stack) - 1}]")
            role = _str(last.get("role"), f"{w}.reservations[{len(stack) - 1}].role") or UNRESERVED
        elif r.get("role") is not None:
            role = _str(r.get("role"), f"{w}.role") or UNRESERVED
        persistence, volume, why = _disk_info(r, f"{w}.disk")
        problem = problem or why
        shared = r.get("shared") is not None
        _obj(r.get("shared"), f"{w}.shared")
        for field in ("revocable", "provider_id"):
            if r.get(field) is not None:
                problem = problem or f"Resource {clip(name)}: '{field}' resources are not supported by Drover yet"
        if r.get("revocable") is not None and persistence is not None:
            problem = "Invalid DiskInfo: Persistent volumes cannot be created from revocable resources"
        if typ == "SCALAR":
            v = _num(_required(_obj(r.get("scalar"), f"{w}.scalar").get("value"), f"{w}.scalar.value"),
                     f"{w}.scalar.value")
            if v < 0 or v > MAX_SCALAR:
                problem = problem or (f"Invalid scalar resource {clip(name)}: {v:g} (it must be in "
                                      f"[0, {MAX_SCALAR:g}])")
                continue
            rec = Resource(name, "SCALAR", scalar=round(v, 3), role=role)
            if persistence is not None or volume is not None or shared:
                rec = msgspec.structs.replace(rec, persistence=persistence, volume=volume, shared=shared)
                if (why := volume_problem(rec)) is not None:
                    problem = problem or f"Invalid DiskInfo: {why}"
                    continue
            records.append(rec)
        elif typ == "RANGES":
            rs = []
            for j, rg in enumerate(_list(_obj(r.get("ranges"), f"{w}.ranges").get("range"), f"{w}.ranges.range")):
                wr = f"{w}.ranges.range[{j}]"
                rg = _obj(rg, wr)
                b = _int(_required(rg.get("begin"), f"{wr}.begin"), f"{wr}.begin")
                e = _int(_required(rg.get("end"), f"{wr}.end"), f"{wr}.end")
                if b > e:
                    problem = problem or f"Invalid range [{b}-{e}] in resource {clip(name)}: begin is after end"
                rs.append((b, e))
            records.append(Resource(name, "RANGES", ranges=tuple(sorted(rs)), role=role))
        elif typ == "SET":
            its = _list(_obj(r.get("set"), f"{w}.set").get("item"), f"{w}.set.item")
            records.append(Resource(name, "SET", items=tuple(sorted(_str(x, f"{w}.set.item[{k}]", True)
                                                                     for k, x in enumerate(its))), role=role))
        else:
            raise CallError(f"{w}.type: unknown resource type '{clip(typ)}'")
    problem = problem or resources_problem(records)
    if problem is None:
        # A bag keeps one record per volume: a repeated persistence id must be refused here, before it is lost
        # (Mesos: "Task uses duplicate persistence ID" for a task, "... is not unique" for CREATE).
        ids = [(r.role, r.persistence.id) for r in records if r.persistence is not None]
        dup = next((pid for i, (role, pid) in enumerate(ids) if (role, pid) in ids[:i]), None)
        if dup is not None:
            problem = (f"Persistence ID '{dup}' is not unique" if ".volumes" in where
                       else f"Task uses duplicate persistence ID: {dup}")
        elif ".volumes" not in where:
            # two mounts at one place: podman would refuse the container (Drover's rule, checked up front)
            paths = [r.volume.container_path for r in records if r.volume is not None]
            if len(paths) != len(set(paths)):
                same = next(p for i, p in enumerate(paths) if p in paths[:i])
                problem = f"Task mounts more than one persistent volume at container_path '{same}'"
    if problem is not None:
        raise TaskInvalid(problem)
    return Resources(records)


def reserve_problem(items: object) -> str | None:
    """What a RESERVE's resources ask that Drover does not do (their structure is checked already): a reservation
    that is not DYNAMIC (Mesos refuses those too), or a refinement (a stack of more than one reservation: Drover
    reserves unreserved resources for one role, so `[db, db/x]` would skip reserving for `db` first)."""
    for r in items if isinstance(items, list) else []:
        stack = r.get("reservations") if isinstance(r, dict) else None
        if not isinstance(stack, list) or not stack:
            continue
        if len(stack) > 1:
            return ("Reservation refinement (more than one entry in 'reservations') is not supported by Drover: "
                    "RESERVE reserves unreserved resources for one role")
        last = stack[-1]
        if isinstance(last, dict) and last.get("type", "DYNAMIC") != "DYNAMIC":
            return f"Invalid reservation: RESERVE makes DYNAMIC reservations, not {clip(str(last.get('type')))}"
    return None


def _disk_info(r: dict, w: str) -> tuple[Persistence | None, DiskVolume | None, str | None]:
    """A resource's `disk` (Mesos DiskInfo): the persistence and volume of a persistent volume, and why it is
    refused (Mesos's validateDiskInfo texts; a disk `source` is not supported). Structure errors are CallErrors."""
    disk = _obj(r.get("disk"), w)
    if r.get("disk") is not None and not disk:
        return None, None, "Invalid DiskInfo: DiskInfo is set but empty"
    if disk.get("source") is not None:
        return None, None, f"Resource {clip(str(r.get('name')))}: disk.source (disk resource providers) is not " \
                           "supported by Drover"
    persistence = volume = None
    if disk.get("persistence") is not None:
        p = _obj(disk["persistence"], f"{w}.persistence")
        pid = _str(_required(p.get("id"), f"{w}.persistence.id"), f"{w}.persistence.id")
        if (why := id_problem(pid, "persistence ID")) is not None:
            return None, None, f"Invalid DiskInfo: Invalid persistence ID for persistent volume: {why}"
        principal = _str(p.get("principal"), f"{w}.persistence.principal") if p.get("principal") is not None \
            else None
        persistence = Persistence(pid, principal)
    if disk.get("volume") is not None:
        v = _obj(disk["volume"], f"{w}.volume")
        mode = _str(_required(v.get("mode"), f"{w}.volume.mode"), f"{w}.volume.mode")
        path = _str(_required(v.get("container_path"), f"{w}.volume.container_path"), f"{w}.volume.container_path")
        if mode not in ("RW", "RO"):
            raise CallError(f"'{w}.volume.mode' must be RW or RO")
        if v.get("host_path") is not None:
            return None, None, "Invalid DiskInfo: Expecting 'host_path' to be unset for persistent volume"
        if v.get("source") is not None or v.get("image") is not None:
            return None, None, "Invalid DiskInfo: a persistent volume's volume has no 'source' or 'image'"
        if (why := container_path_problem(path)) is not None:
            return None, None, f"Invalid DiskInfo: {why}"
        volume = DiskVolume(path, mode)  # type: ignore[arg-type]
    return persistence, volume, None


def parse_refuse_seconds(filters: object) -> float | None:
    """Filters.refuse_seconds: None when absent (the default filter applies); a finite number otherwise (its
    range is Mesos's filter rule: master.allocator.effective_refuse_seconds)."""
    if filters is None:
        return None
    f = _obj(filters, "filters")
    if f.get("refuse_seconds") is None:
        return None
    raw = f["refuse_seconds"]
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        try:
            v = float(raw)  # stout parses "Infinity"; pymesos sends json.dumps(float('inf')): a bare Infinity
        except OverflowError:  # an integer beyond any float
            v = math.inf
        except ValueError:
            v = 0.0  # not a number at all: _num below says so
        if not math.isfinite(v):
            # As Mesos: a filter that long is capped (effective_refuse_seconds caps it at 365 days); NaN or -inf
            # is no duration, and the default filter applies. Never a 400: pymesos takes any non-2xx as fatal.
            return 1e300 if v > 0 else None
    return _num(raw, "filters.refuse_seconds")


# ---- TaskInfo ----------------------------------------------------------------------------------------


def parse_task_info(d: object, where: str) -> ev.TaskSpec:
    """A TaskInfo: its structure first (CallError: stout's conversion would fail the whole call with 400),
    then what Mesos's task validation and Drover's support decide (TaskInvalid: a TASK_ERROR for this task)."""
    _task_id, _agent_id, spec, id_prob, problem = _task_parts(d, where)
    if id_prob is not None or problem is not None:
        raise TaskInvalid(id_prob or problem)
    return spec


def parse_launch_task(d: object, where: str, group_executor: dict | None = None) -> "sd.TaskRequest":
    """A TaskInfo of a LAUNCH (or LAUNCH_GROUP): structure errors fail the call; the rest is kept for the decider,
    which judges it in Mesos's order (task id, duplicate id, agent, then the task's own problems)."""
    task_id, agent_id, spec, id_prob, problem = _task_parts(d, where, group_executor)
    return _calls().TaskRequest(task_id=task_id, agent_id=agent_id, spec=spec, id_problem=id_prob, problem=problem)


def parse_executor_info(d: dict, where: str) -> tuple[ev.ExecutorSpec | None, str | None, str | None]:
    """The ExecutorInfo of a LAUNCH_GROUP: (spec or None, its framework id as sent, why it is refused). Structure
    errors fail the call; the rest follows Mesos's executor validation (validation.cpp, executor::internal and
    task::group::internal::validateExecutor), for the DEFAULT executor, the only kind Drover runs (as a pod)."""
    executor_id = _id(d.get("executor_id"), f"{where}.executor_id")
    assert executor_id is not None
    framework_id = _id(d.get("framework_id"), f"{where}.framework_id", required=False)
    kind = _str(d.get("type"), f"{where}.type")
    name = _str(d.get("name"), f"{where}.name")
    _obj(d.get("command"), f"{where}.command")
    try:
        resources, bad = parse_resources(d.get("resources"), f"{where}.resources"), None
    except TaskInvalid as e:
        resources, bad = Resources([]), str(e)
    net, container_problem, ctype = _Net(), None, None
    if d.get("container") is not None:
        wc = f"{where}.container"
        c = _obj(d["container"], wc)
        ctype = _str(_required(c.get("type"), f"{wc}.type"), f"{wc}.type")
        if ctype == "MESOS":
            image, container_problem, net = _container(c, wc)
            if image is not None:
                container_problem = "'ExecutorInfo.container.mesos.image' must not be set for 'DEFAULT' executor"
    def problem() -> str | None:
        if (why := id_problem(executor_id, "Executor ID")) is not None:
            return why
        if bad is not None:
            return f"Executor uses invalid resources: {bad}"
        if kind is None or kind not in ("DEFAULT", "CUSTOM", "UNKNOWN"):
            return "'ExecutorInfo.type' must be set"
        if kind == "UNKNOWN":
            return "Unknown executor type"
        if kind == "CUSTOM":
            return ("Custom executors (ExecutorInfo.type CUSTOM, with a command) are not supported by Drover; "
                    "use the DEFAULT executor")
        if d.get("command") is not None:
            return "'ExecutorInfo.command' must not be set for 'DEFAULT' executor"
        if ctype is not None and ctype != "MESOS":
            return "'ExecutorInfo.container.type' must be 'MESOS' for 'DEFAULT' executor"
        if container_problem is not None:
            return container_problem.replace("TaskInfo.", "ExecutorInfo.")
        if net.problem is not None:
            return net.problem.replace("Task", "Executor")
        return _length_problem(name, "Executor name", MAX_NAME_LENGTH)

    why = problem()
    spec = None
    if why is None:
        spec = ev.ExecutorSpec(executor_id=executor_id, resources=resources.to_list(), task_ids=[], name=name,
                               network=net.network, port_mappings=net.mappings)  # type: ignore[arg-type]
    return spec, framework_id, why


def _task_parts(d: object, where: str, group_executor: dict | None = None,
                ) -> tuple[str, str, ev.TaskSpec | None, str | None, str | None]:
    """(task id, agent id, spec or None, the task id's problem, the first other problem). `group_executor`: the
    ExecutorInfo of the task's LAUNCH_GROUP (the task may repeat it, as Mesos's master copies it into each task)."""
    d = _obj(d, where)
    task_id = _id(d.get("task_id"), f"{where}.task_id")
    if len(task_id) > MAX_ECHOED_ID:
        raise InvalidValue(f"'{where}.task_id' is longer than {MAX_ECHOED_ID} characters")
    name = _str(d.get("name"), f"{where}.name", True)
    agent_id = _id(d.get("agent_id"), f"{where}.agent_id")
    wcmd = f"{where}.command"
    cmd = _obj(d.get("command"), wcmd)
    shell = _bool(cmd.get("shell"), f"{wcmd}.shell", True)
    value = _str(cmd.get("value"), f"{wcmd}.value")
    # The user the task runs as (else its framework's). An empty one is no user, as before; anything else must be
    # a user name or uid the agent can hand to podman: a malformed call, not a task to judge.
    user = _str(cmd.get("user"), f"{wcmd}.user") or None
    if user is not None and (why := user_problem(user, f"'{wcmd}.user'")) is not None:
        raise InvalidValue(why)
    uris = _uris(_list(cmd.get("uris"), f"{wcmd}.uris"), f"{wcmd}.uris")
    args = [_str(a, f"{wcmd}.arguments[{i}]", True) for i, a in enumerate(_list(cmd.get("arguments"),
                                                                                 f"{wcmd}.arguments"))]
    env = []
    wenv = f"{wcmd}.environment"
    for i, var in enumerate(_list(_obj(cmd.get("environment"), wenv).get("variables"), f"{wenv}.variables")):
        var = _obj(var, f"{wenv}.variables[{i}]")
        env.append(ev.Label(_str(var.get("name"), f"{wenv}.variables[{i}].name", True),
                            _str(var.get("value"), f"{wenv}.variables[{i}].value") or ""))
    try:
        resources, bad_resources = parse_resources(d.get("resources"), f"{where}.resources"), None
    except TaskInvalid as e:
        resources, bad_resources = Resources([]), str(e)
    image, unsupported_container, net = None, None, _Net()
    if d.get("container") is not None:
        image, unsupported_container, net = _container(_obj(d["container"], f"{where}.container"),
                                                       f"{where}.container")
    grace = None
    if d.get("kill_policy") is not None:
        wk = f"{where}.kill_policy"
        gp = _obj(_obj(d["kill_policy"], wk).get("grace_period"), f"{wk}.grace_period")
        if gp:
            grace = _num(_required(gp.get("nanoseconds"), f"{wk}.grace_period.nanoseconds"),
                         f"{wk}.grace_period.nanoseconds") / 1e9
    max_completion = None
    if d.get("max_completion_time") is not None:
        w = f"{where}.max_completion_time"
        max_completion = _num(_required(_obj(d["max_completion_time"], w).get("nanoseconds"), f"{w}.nanoseconds"),
                              f"{w}.nanoseconds")
    for field in ("discovery", "executor", "limits"):
        _obj(d.get(field), f"{where}.{field}")
    health_check, health_problem = (None, None) if d.get("health_check") is None else \
        _check_parts(_obj(d["health_check"], f"{where}.health_check"), f"{where}.health_check", health=True)
    check, check_problem = (None, None) if d.get("check") is None else \
        _check_parts(_obj(d["check"], f"{where}.check"), f"{where}.check", health=False)
    labels = labels_in(d.get("labels"), f"{where}.labels") if d.get("labels") else []
    data = _str(d.get("data"), f"{where}.data")
    if data is not None:
        _base64(data, f"{where}.data")

    def problem() -> str | None:
        # Mesos's order (validation.cpp task::internal::validateTask, then the executor), with the fields Drover
        # does not implement at the place of their kind. `discovery` is metadata for service discovery: kept out.
        if d.get("executor") is not None and group_executor is None:
            return "Custom executors are not supported by Drover yet; use 'command'"
        if d.get("executor") is not None and d.get("executor") != group_executor:
            return (f"The `ExecutorInfo` of task '{clip(task_id)}' is different from executor "
                    f"'{clip(str(_obj(group_executor.get('executor_id'), where).get('value')))}'")
        if group_executor is not None and _obj(d.get("container"), f"{where}.container").get("type") == "DOCKER":
            return "Docker ContainerInfo is not supported on the task"
        if d.get("command") is None:
            return "Task must have exactly one of 'command' or 'executor' set"
        if grace is not None and grace < 0:
            return "Task's 'kill_policy.grace_period' must be non-negative"
        if grace is not None and grace > MAX_SECONDS:
            return f"Task's 'kill_policy.grace_period' must be at most {MAX_SECONDS:g} seconds"
        if max_completion is not None:
            if max_completion < 0:
                return "Task's `max_completion_time` must be non-negative"
            return _unsupported("max_completion_time")
        if check_problem is not None:
            return f"Task's check is invalid: {check_problem}"
        if health_problem is not None:
            return f"Task's health check is invalid: {health_problem}"
        if bad_resources is not None:
            return bad_resources
        if not resources:
            return "Task uses no resources"
        if len(resources.to_list()) > MAX_SPEC_LIST:
            return f"Task uses more than {MAX_SPEC_LIST} resources"
        if (why := _uris_problem(uris)) is not None:
            return why
        if shell and not value:
            return "Shell command of task must have a value"
        if not shell and not value:
            return "Non-shell command of task must have a value (the executable)"
        if unsupported_container is not None:
            return unsupported_container
        if net.problem is not None:
            return net.problem
        if len(net.mappings) > MAX_SPEC_LIST:
            return f"Task has more than {MAX_SPEC_LIST} port mappings"
        if d.get("limits"):
            return _unsupported("limits", "task resource limits; the task's resources are its limits")
        return (_length_problem(name, "Task name", MAX_NAME_LENGTH)
                or _length_problem(value, "Task's command value", MAX_TEXT_LENGTH)
                or _length_problem(image, "Task's container image", MAX_NAME_LENGTH)
                or _length_problem(data, "Task's data", MAX_DATA_LENGTH)
                or (f"Task's command has {len(args)} arguments; at most {MAX_SPEC_LIST} are allowed"
                    if len(args) > MAX_SPEC_LIST else None)
                or next((f"Task's command argument {i} is longer than {MAX_TEXT_LENGTH} characters"
                         for i, a in enumerate(args) if len(a) > MAX_TEXT_LENGTH), None)
                or _labels_problem(env, "Task's environment")
                or _labels_problem(labels, "Task's labels"))

    id_prob = id_problem(task_id, "Task ID")
    why = problem()
    spec = None
    if id_prob is None and why is None:
        spec = ev.TaskSpec(
            task_id=task_id, name=name, agent_id=agent_id, resources=resources.to_list(),
            command=ev.CommandSpec(shell=shell, value=value, arguments=args, env=env, user=user, uris=uris),
            image=image, labels=labels, kill_grace_seconds=grace, data=data,
            network=net.network, port_mappings=net.mappings,  # type: ignore[arg-type]
            health_check=health_check, check=check,  # type: ignore[arg-type]
        )
    return task_id, agent_id, spec, id_prob, why


# ---- TaskInfo.health_check / TaskInfo.check (docs/services.md, "Health checks and checks") ------------------------
# As Mesos's common/validation.cpp validateHealthCheck / validateCheckInfo, plus Drover's bounds: a malformed structure
# (a wrong JSON type, an unknown enum name, a port or count that is no uint32, a number that is not finite) fails the
# call (400); a value Mesos refuses, or one beyond Drover's bounds, is a TASK_ERROR for the task.
_CHECK_KINDS = ("COMMAND", "HTTP", "TCP")
MAX_CHECK_PATH = MAX_NAME_LENGTH  # characters of an HTTP check's path (CheckSpec.path is a Name)


def _check_parts(c: dict, where: str, *, health: bool) -> tuple[ev.CheckSpec | None, str | None]:
    """A HealthCheck (`health`) or CheckInfo: (its spec, None) or (None, why the task cannot have it)."""
    what = "health check" if health else "check"
    ctype = _str(c.get("type"), f"{where}.type")
    if ctype is not None and ctype not in _CHECK_KINDS + ("UNKNOWN",):
        raise CallError(f"'{where}.type': unknown {what} type '{clip(ctype)}'")
    subs = {k: c.get(k.lower()) for k in _CHECK_KINDS}
    for k, v in subs.items():
        _obj(v, f"{where}.{k.lower()}")
    if ctype is None and health and sum(v is not None for v in subs.values()) == 1:
        # As Mesos's master does for frameworks older than HealthCheck.type: the one sub-message given names it.
        ctype = next(k for k, v in subs.items() if v is not None)
    durations: dict[str, float] = {}
    names = ("delay_seconds", "interval_seconds", "timeout_seconds") + (("grace_period_seconds",) if health else ())
    for name in names:
        if c.get(name) is not None:
            durations[name] = _num(c[name], f"{where}.{name}")
    failures = 3
    if health and c.get("consecutive_failures") is not None:
        failures = _int(c["consecutive_failures"], f"{where}.consecutive_failures", 0, 2**32 - 1)
    # The sub-message of the type, structure first (a 400 whatever the type turns out to be).
    command: ev.CheckCommand | None = None
    command_problem: str | None = None
    port: int | None = None
    path: str | None = None
    scheme = "http"
    ipv6 = False
    sub = subs.get(ctype or "")
    if ctype == "COMMAND" and sub is not None:
        wc = f"{where}.command" + ("" if health else ".command")
        cmd = sub if health else _obj(_required(sub.get("command"), wc), wc)
        command, command_problem = _check_command(cmd, wc)
    elif ctype in ("HTTP", "TCP") and sub is not None:
        w = f"{where}.{ctype.lower()}"
        port = _int(_required(sub.get("port"), f"{w}.port"), f"{w}.port", 0, 2**32 - 1)
        if health:
            proto = _str(sub.get("protocol"), f"{w}.protocol")
            if proto is not None and proto not in ("IPv4", "IPv6"):
                raise CallError(f"'{w}.protocol': unknown protocol '{clip(proto)}'")
            ipv6 = proto == "IPv6"
        if ctype == "HTTP":
            path = _str(sub.get("path"), f"{w}.path")
            if health:
                scheme = _str(sub.get("scheme"), f"{w}.scheme") or "http"
                for i, code in enumerate(_list(sub.get("statuses"), f"{w}.statuses")):
                    _int(code, f"{w}.statuses[{i}]", 0, 2**32 - 1)  # unused, as in Mesos: [200, 400) is healthy

    def problem() -> str | None:
        if ctype is None:
            return f"{'HealthCheck' if health else 'CheckInfo'} must specify 'type'"
        if ctype == "UNKNOWN":
            return f"'UNKNOWN' is not a valid {what} type"
        if sub is None:
            return f"Expecting '{ctype.lower()}' to be set for {ctype} {what}"
        if ctype == "COMMAND" and command_problem is not None:
            return command_problem
        if ctype == "HTTP" and health and scheme not in ("http", "https"):
            return f"Unsupported HTTP health check scheme: '{clip(scheme)}'"
        if ctype == "HTTP" and path is not None and not path.startswith("/"):
            return f"The path '{clip(path)}' of HTTP {what} must start with '/'"
        if path is not None and len(path) > MAX_CHECK_PATH:
            return f"The path of HTTP {what} is longer than {MAX_CHECK_PATH} characters"
        if port is not None and not 1 <= port <= 65535:
            return f"The port {port} of {ctype} {what} is outside [1, 65535]"
        for name in names:
            v = durations.get(name)
            if v is not None and v < 0:
                return f"Expecting '{name}' to be non-negative"
            if v is not None and v > MAX_SECONDS:
                return f"Expecting '{name}' to be at most {MAX_SECONDS:g}"
        return None

    why = problem()
    if why is not None:
        return None, why
    common = dict(type=ctype, command=command, port=port, path=path, ipv6=ipv6, **durations)
    if health:
        return ev.HealthCheckSpec(**common, scheme=scheme, consecutive_failures=failures), None  # type: ignore[arg-type]
    return ev.CheckSpec(**common), None  # type: ignore[arg-type]


def _check_command(cmd: dict, where: str) -> tuple[ev.CheckCommand | None, str | None]:
    """A (health) check's CommandInfo: shell, value, arguments, environment. It runs as the task's user, in its
    container: `user` and `uris` are refused (Mesos ignores them), as a missing value is (Mesos refuses that)."""
    shell = _bool(cmd.get("shell"), f"{where}.shell", True)
    value = _str(cmd.get("value"), f"{where}.value")
    user = _str(cmd.get("user"), f"{where}.user")
    uris = _list(cmd.get("uris"), f"{where}.uris")
    items = _list(cmd.get("arguments"), f"{where}.arguments")
    args = [_str(a, f"{where}.arguments[{i}]", True) or "" for i, a in enumerate(items[:MAX_SPEC_LIST + 1])]
    env = []
    wenv = f"{where}.environment"
    variables = _list(_obj(cmd.get("environment"), wenv).get("variables"), f"{wenv}.variables")
    for i, var in enumerate(variables[:MAX_SPEC_LIST + 1]):
        var = _obj(var, f"{wenv}.variables[{i}]")
        env.append(ev.Label(_str(var.get("name"), f"{wenv}.variables[{i}].name", True) or "",
                            _str(var.get("value"), f"{wenv}.variables[{i}].value") or ""))
    why = None
    if value is None:
        why = f"Command check must contain {'a shell command' if shell else 'an executable path'}"
    elif user:
        why = "A check's command runs as the task's user: 'command.user' is not supported"
    elif uris:
        why = "A check's command cannot fetch URIs: 'command.uris' is not supported"
    elif len(args) > MAX_SPEC_LIST:
        why = f"The check's command has more than {MAX_SPEC_LIST} arguments"
    else:
        why = (_length_problem(value, "The check's command value", MAX_TEXT_LENGTH)
               or next((f"The check's command argument {i} is longer than {MAX_TEXT_LENGTH} characters"
                        for i, a in enumerate(args) if len(a) > MAX_TEXT_LENGTH), None)
               or _labels_problem(env, "The check's environment"))
    if why is not None:
        return None, why
    return ev.CheckCommand(shell=shell, value=value, arguments=args, env=env), None


def health_check_out(spec: ev.CheckSpec, health: bool) -> dict:
    """A TaskSpec's health_check / check in Mesos's JSON (as the master's state and operator API show a task)."""
    d: dict = {"type": spec.type, "delay_seconds": float(spec.delay_seconds),
               "interval_seconds": float(spec.interval_seconds), "timeout_seconds": float(spec.timeout_seconds)}
    if spec.command is not None:
        c = spec.command
        cmd: dict = {"shell": c.shell, "value": c.value or ""}
        if c.arguments:
            cmd["arguments"] = list(c.arguments)
        if c.env:
            cmd["environment"] = {"variables": [{"name": v.key, "type": "VALUE", "value": v.value} for v in c.env]}
        d["command"] = cmd if health else {"command": cmd}
    elif spec.port is not None:
        sub: dict = {"port": spec.port}
        if spec.type == "HTTP":
            if spec.path is not None:
                sub["path"] = spec.path
            if isinstance(spec, ev.HealthCheckSpec):
                sub["scheme"] = spec.scheme
        if health:
            sub["protocol"] = "IPv6" if spec.ipv6 else "IPv4"
        d[spec.type.lower()] = sub
    if isinstance(spec, ev.HealthCheckSpec):
        d["consecutive_failures"] = spec.consecutive_failures
        d["grace_period_seconds"] = float(spec.grace_period_seconds)
    return d


def check_status_out(cs: ev.CheckStatus) -> dict:
    """A CheckStatusInfo in Mesos's JSON: its type and the (maybe empty) message of that type."""
    sub: dict = {}
    if cs.type == "COMMAND" and cs.exit_code is not None:
        sub["exit_code"] = cs.exit_code
    elif cs.type == "HTTP" and cs.status_code is not None:
        sub["status_code"] = cs.status_code
    elif cs.type == "TCP" and cs.succeeded is not None:
        sub["succeeded"] = cs.succeeded
    return {"type": cs.type, cs.type.lower(): sub}


def _uris(items: list, where: str) -> list[ev.FetchURI]:
    """CommandInfo.uris, structure only (a malformed one fails the call); their values are judged by
    _uris_problem. A value beyond any bound is cut here and refused there, never kept whole."""
    out = []
    for i, item in enumerate(items[:MAX_URIS + 1]):
        w = f"{where}[{i}]"
        u = _obj(item, w)
        value = _str(u.get("value"), f"{w}.value", True) or ""
        output_file = _str(u.get("output_file"), f"{w}.output_file")
        out.append(ev.FetchURI(value=value[:MAX_URI_LENGTH + 1],
                               executable=_bool(u.get("executable"), f"{w}.executable"),
                               extract=_bool(u.get("extract"), f"{w}.extract", True),
                               cache=_bool(u.get("cache"), f"{w}.cache"),
                               output_file=None if output_file is None else output_file[:MAX_OUTPUT_FILE_LENGTH + 1]))
    return out


def _uris_problem(uris: list[ev.FetchURI]) -> str | None:
    if len(uris) > MAX_URIS:
        return f"Task's command has more than {MAX_URIS} URIs"
    for i, u in enumerate(uris):
        what = f"Task's command URI {i}"
        why = uri_problem(u.value, what) or (
            None if u.output_file is None else output_file_problem(u.output_file, f"{what} output_file"))
        if why is not None:
            return why
    return None


def _unsupported(field: str, note: str = "") -> str:
    return f"TaskInfo.{field} is not supported by Drover yet" + (f" ({note})" if note else "")


_DOCKER_NETWORKS = ("HOST", "BRIDGE", "NONE", "USER")
_PROTOCOLS = ("tcp", "udp", "sctp")


class _Net(msgspec.Struct):
    """What a TaskInfo's container asks of the network: the TaskSpec's `network` (None: HOST) and
    `port_mappings`, or why the task cannot have it (a TASK_ERROR)."""

    network: str | None = None
    mappings: list[ev.PortMapping] = msgspec.field(default_factory=list)
    problem: str | None = None


def _port_mappings(items: list, where: str) -> tuple[list[ev.PortMapping], str | None]:
    """Mesos's PortMapping (docker's and NetworkInfo's alike): host_port and container_port (uint32, required),
    protocol (optional; "tcp" when absent). A port outside [1, 65535] or an unknown protocol is the task's
    problem (TASK_ERROR); a malformed entry is the call's (400)."""
    out: list[ev.PortMapping] = []
    problem = None
    for i, m in enumerate(items):
        wm = f"{where}[{i}]"
        m = _obj(m, wm)
        host = _int(_required(m.get("host_port"), f"{wm}.host_port"), f"{wm}.host_port", 0, 2**32 - 1)
        cont = _int(_required(m.get("container_port"), f"{wm}.container_port"), f"{wm}.container_port",
                    0, 2**32 - 1)
        proto = (_str(m.get("protocol"), f"{wm}.protocol") or "tcp").lower()
        if not 1 <= host <= 65535 or not 1 <= cont <= 65535:
            problem = problem or f"Task's port mapping {i} has a port outside [1, 65535]"
        elif proto not in _PROTOCOLS:
            problem = problem or (f"Task's port mapping {i} has protocol '{clip(proto)}': "
                                  f"only {', '.join(_PROTOCOLS)} are supported")
        else:
            out.append(ev.PortMapping(host_port=host, container_port=cont, protocol=proto))  # type: ignore[arg-type]
    if len(items) > MAX_SPEC_LIST:
        problem = problem or f"Task has more than {MAX_SPEC_LIST} port mappings"
    return out, problem


def _network_infos(items: list, wc: str) -> tuple[list[ev.PortMapping], str | None]:
    """`container.network_infos`: Drover has one network besides the host's, podman's default bridge, and no CNI.
    An entry without a name and with `port_mappings` asks for that bridge; an entry without a name and without
    mappings is the host's network (as in Mesos, where an unnamed NetworkInfo joins no CNI network). Names (CNI
    networks), `ip_addresses` and more than one entry are refused. `groups` and `labels` are metadata."""
    mappings: list[ev.PortMapping] = []
    problem = None
    if len(items) > 1:
        problem = _unsupported("container.network_infos", "more than one network")
    for i, n in enumerate(items):
        wn = f"{wc}.network_infos[{i}]"
        n = _obj(n, wn)
        if _str(n.get("name"), f"{wn}.name"):
            problem = problem or _unsupported("container.network_infos",
                                              "named (CNI) networks; use port_mappings without a name for the "
                                              "bridge network")
        if _list(n.get("ip_addresses"), f"{wn}.ip_addresses"):
            problem = problem or _unsupported("container.network_infos", "ip_addresses")
        found, why = _port_mappings(_list(n.get("port_mappings"), f"{wn}.port_mappings"), f"{wn}.port_mappings")
        mappings += found
        problem = problem or why
    return mappings, problem


def _container(c: dict, wc: str) -> tuple[str | None, str | None, _Net]:
    """(image, why the container asks for something Drover does not implement or None, its network)."""
    ctype = _str(_required(c.get("type"), f"{wc}.type"), f"{wc}.type")
    image = None
    unsupported = None
    net = _Net()
    if _list(c.get("volumes"), f"{wc}.volumes"):
        unsupported = unsupported or _unsupported("container.volumes")
    for field in ("linux_info", "rlimit_info", "tty_info"):
        if _obj(c.get(field), f"{wc}.{field}"):
            unsupported = unsupported or _unsupported(f"container.{field}")
    info_mappings, net.problem = _network_infos(_list(c.get("network_infos"), f"{wc}.network_infos"), wc)
    if ctype == "DOCKER":
        wd = f"{wc}.docker"
        docker = _obj(c.get("docker"), wd)
        image = _str(docker.get("image"), f"{wd}.image", True)
        network = _str(docker.get("network"), f"{wd}.network")
        if network == "USER":  # an unknown name is dropped by stout: the default, HOST
            unsupported = unsupported or _unsupported(f"container.docker.network {network}",
                                                      "user-defined networks; BRIDGE and HOST are")
        mappings, why = _port_mappings(_list(docker.get("port_mappings"), f"{wd}.port_mappings"),
                                       f"{wd}.port_mappings")
        net.problem = net.problem or why
        net.mappings = mappings + info_mappings
        net.network = network if network in ("BRIDGE", "NONE") else None
        if net.mappings and net.network != "BRIDGE":
            # Mesos's docker containerizer: port mappings need a bridge (or user-defined) network.
            net.problem = net.problem or "Port mappings are only supported for the BRIDGE network"
        if _list(docker.get("parameters"), f"{wd}.parameters"):
            unsupported = unsupported or _unsupported("container.docker.parameters")
        if _bool(docker.get("privileged"), f"{wd}.privileged"):
            unsupported = unsupported or _unsupported("container.docker.privileged")
    elif ctype == "MESOS":
        net.mappings = info_mappings
        net.network = "BRIDGE" if info_mappings else None
        img = _obj(_obj(c.get("mesos"), f"{wc}.mesos").get("image"), f"{wc}.mesos.image")
        if img:
            itype = _str(img.get("type", "DOCKER"), f"{wc}.mesos.image.type")
            if itype == "DOCKER":
                image = _str(_obj(img.get("docker"), f"{wc}.mesos.image.docker").get("name"),
                             f"{wc}.mesos.image.docker.name", True)
            elif itype == "APPC":
                unsupported = "Only DOCKER images are supported in container.mesos.image"
            else:
                raise CallError(f"{wc}.mesos.image.type: unknown image type '{clip(itype)}'")
    else:
        raise CallError(f"{wc}.type: unknown container type '{clip(ctype)}'")
    return image, unsupported, net


def decode_uuid(b64: object, where: str = "acknowledge.uuid") -> bytes:
    if b64 is None:
        raise CallError(f"{CONVERT}Missing required fields: {where}")
    if not isinstance(b64, str):
        raise CallError(f"{CONVERT}'{where}' must be a base64 string")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, TypeError):
        raise CallError(f"{CONVERT}'{where}' is not valid base64") from None
    if len(raw) != 16:
        raise CallError(f"{VALIDATE}'{where}' is not a valid UUID: it must be 16 bytes, got {len(raw)}")
    return raw


# ---- output -------------------------------------------------------------------------------------


def resources_out(res: list[Resource] | Resources, caps: list[str] | tuple = (), alloc_role: str | None = None,
                  dynamic: list[Resource] | Resources = ()) -> list[dict]:
    """v1 Resources. `dynamic` holds the agent's dynamic reservations: reserved resources of a (name, role)
    found there are rendered as DYNAMIC reservations (legacy format: with a `reservation` object)."""
    refinement = "RESERVATION_REFINEMENT" in caps
    dyn = {(r.name, r.role) for r in dynamic}
    out = []
    for r in res:
        d: dict = {"name": r.name, "type": r.type}
        if r.type == "SCALAR":
            d["scalar"] = {"value": float(r.scalar)}
        elif r.type == "RANGES":
            d["ranges"] = {"range": [{"begin": b, "end": e} for b, e in r.ranges]}
        else:
            d["set"] = {"item": list(r.items)}
        if r.persistence is not None:
            pers: dict = {"id": r.persistence.id}
            if r.persistence.principal is not None:
                pers["principal"] = r.persistence.principal
            d["disk"] = {"persistence": pers}
            if r.volume is not None:
                d["disk"]["volume"] = {"container_path": r.volume.container_path, "mode": r.volume.mode}
            if r.shared:
                d["shared"] = {}
        # volumes are only made of dynamically reserved disk
        is_dynamic = (r.name, r.role) in dyn or r.persistence is not None
        if refinement:
            if r.role != UNRESERVED:
                d["reservations"] = [{"type": "DYNAMIC" if is_dynamic else "STATIC", "role": r.role}]
        else:
            d["role"] = r.role
            if is_dynamic:
                d["reservation"] = {}
        if alloc_role is not None:
            d["allocation_info"] = {"role": alloc_role}
        out.append(d)
    return out


def resources_summary(res: Resources) -> dict:
    """The v0 /state summary object: {"cpus": 2.0, "mem": ..., "ports": "[31000-32000]"}."""
    out: dict = {"cpus": 0.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0}
    for name, q in res.quantities().items():
        out[name] = float(q)
    for r in res:
        if r.type == "RANGES":
            out[r.name] = "[" + ", ".join(f"{b}-{e}" for b, e in res.ranges(r.name)) + "]"
        elif r.type == "SET":
            out[r.name] = "{" + ", ".join(r.items) + "}"
    return out


def ident(v: str) -> dict:
    return {"value": v}


def master_info(master_id: str, http: str, version: str) -> dict:
    host, _, port = http.rpartition(":")
    ip_parts = host.split(".")
    ip_num = 0
    if len(ip_parts) == 4 and all(p.isdigit() for p in ip_parts):
        ip_num = sum(int(p) << (8 * i) for i, p in enumerate(ip_parts))
    return {
        "id": master_id, "ip": ip_num, "port": int(port), "pid": f"master@{http}", "hostname": host,
        "version": version, "address": {"hostname": host, "ip": host, "port": int(port)},
        "capabilities": [{"type": "AGENT_UPDATE"}],
    }


def ev_subscribed(framework_id: str, heartbeat: float, minfo: dict) -> dict:
    return {"type": "SUBSCRIBED", "subscribed": {"framework_id": ident(framework_id),
                                                 "heartbeat_interval_seconds": float(heartbeat), "master_info": minfo}}


def ev_heartbeat() -> dict:
    return {"type": "HEARTBEAT"}


def ev_error(message: str) -> dict:
    return {"type": "ERROR", "error": {"message": message}}


def ev_rescind(offer_id: str) -> dict:
    return {"type": "RESCIND", "rescind": {"offer_id": ident(offer_id)}}


def ev_failure(agent_id: str) -> dict:
    return {"type": "FAILURE", "failure": {"agent_id": ident(agent_id)}}


def offer_out(offer_id: str, framework_id: str, agent_id: str, hostname: str, agent_http: str, role: str,
              resources: list[Resource], caps: list[str], attributes: list[ev.Label],
              dynamic: list[Resource] = ()) -> dict:
    multi = "MULTI_ROLE" in caps
    host, _, port = agent_http.rpartition(":")
    d = {
        "id": ident(offer_id), "framework_id": ident(framework_id), "agent_id": ident(agent_id),
        "hostname": hostname,
        "url": {"scheme": "http", "address": {"hostname": hostname, "ip": host, "port": int(port or 0)},
                "path": "/slave(1)"},
        "resources": resources_out(resources, caps, role if multi else None, dynamic),
    }
    if attributes:
        d["attributes"] = [{"name": a.key, "type": "TEXT", "text": {"value": a.value}} for a in attributes]
    if multi:
        d["allocation_info"] = {"role": role}
    return d


def container_out(spec: ev.TaskSpec) -> dict | None:
    """A task's ContainerInfo as Mesos renders it in state and the operator API: its image, network and port
    mappings (DOCKER-style when it names an image, else MESOS with one unnamed NetworkInfo); None for a task that
    asked for neither."""
    maps = [{"host_port": m.host_port, "container_port": m.container_port, "protocol": m.protocol}
            for m in spec.port_mappings]
    if spec.image:
        docker: dict = {"image": spec.image, "network": spec.network or "HOST", "privileged": False}
        if maps:
            docker["port_mappings"] = maps
        return {"type": "DOCKER", "docker": docker}
    if spec.network is None and not maps:
        return None
    if spec.network == "NONE":  # only a DOCKER container (with an image) asks for it
        return {"type": "MESOS"}
    return {"type": "MESOS", "network_infos": [{"port_mappings": maps} if maps else {}]}


def ev_offers(offers: list[dict]) -> dict:
    return {"type": "OFFERS", "offers": {"offers": offers}}


PARTITION_AWARE_ONLY = {"TASK_DROPPED": "TASK_LOST", "TASK_UNREACHABLE": "TASK_LOST", "TASK_GONE": "TASK_LOST",
                        "TASK_GONE_BY_OPERATOR": "TASK_LOST", "TASK_UNKNOWN": "TASK_LOST"}


def state_for(state: str, caps: list[str]) -> str:
    if "PARTITION_AWARE" not in caps:
        state = PARTITION_AWARE_ONLY.get(state, state)
    if state == "TASK_KILLING" and "TASK_KILLING_STATE" not in caps:
        state = "TASK_RUNNING"
    return state


def status_out(framework_id: str, task_id: str, agent_id: str | None, st: ev.TaskStatus, caps: list[str]) -> dict:
    d: dict = {"task_id": ident(task_id), "state": state_for(st.state, caps), "source": st.source}
    if agent_id:
        d["agent_id"] = ident(agent_id)
        d["executor_id"] = ident(task_id)  # command executor: executor id = task id
    if st.message:
        d["message"] = st.message
    if st.reason:
        d["reason"] = st.reason
    d["timestamp"] = float(st.timestamp)
    if st.uuid:
        d["uuid"] = st.uuid
    if st.container_id:
        d["container_status"] = {"container_id": ident(st.container_id)}
    if st.unreachable_time is not None:
        d["unreachable_time"] = {"nanoseconds": int(round(st.unreachable_time * 1e9))}
    if st.healthy is not None:
        d["healthy"] = st.healthy
    if st.check_status is not None:
        d["check_status"] = check_status_out(st.check_status)
    return d


def ev_update(status: dict) -> dict:
    return {"type": "UPDATE", "update": {"status": status}}


def framework_info_out(framework_id: str, info: ev.FrameworkInfo) -> dict:
    d: dict = {"user": info.user, "name": info.name, "id": ident(framework_id),
               "failover_timeout": float(info.failover_timeout), "checkpoint": info.checkpoint}
    if info.multi_role:
        d["roles"] = list(info.roles)
    else:
        d["role"] = info.roles[0]
    if info.hostname:
        d["hostname"] = info.hostname
    if info.principal:
        d["principal"] = info.principal
    if info.webui_url:
        d["webui_url"] = info.webui_url
    if info.capabilities:
        d["capabilities"] = [{"type": c} for c in info.capabilities]
    if info.labels:
        d["labels"] = labels_out(info.labels)
    return d


def operation_status_out(operation_id: str, state: str, message: str, agent_id: str | None = None,
                         resource_provider_id: str | None = None) -> dict:
    """A v1 OperationStatus as the master sends it unreliably (no uuid: nothing to acknowledge)."""
    d: dict = {"operation_id": ident(operation_id), "state": state, "message": message}
    if agent_id is not None:
        d["agent_id"] = ident(agent_id)
    if resource_provider_id is not None:
        d["resource_provider_id"] = ident(resource_provider_id)
    return d


def ev_update_operation_status(status: dict) -> dict:
    return {"type": "UPDATE_OPERATION_STATUS", "update_operation_status": {"status": status}}
