"""The Mesos v1 JSON wire format, in one place (see ../shared/docs/mesos-v1-api.md).

The core speaks Drover's own types (eventstore.events, eventstore.resources);
this module turns Mesos JSON into them (validating as Mesos does, with messages
a user can act on) and renders them back in stout's JSON conventions: snake_case
names, enum names, doubles that keep their fraction (15.0), IDs as {"value": ..},
and every event payload nested under the lower-cased event type.
"""

from __future__ import annotations

import base64
import json
import math

from eventstore import events as ev
from eventstore.resources import UNRESERVED, Resource, Resources

CAPABILITIES = {
    "REVOCABLE_RESOURCES", "TASK_KILLING_STATE", "GPU_RESOURCES", "SHARED_RESOURCES", "PARTITION_AWARE",
    "MULTI_ROLE", "RESERVATION_REFINEMENT", "REGION_AWARE",
}
CALL_TYPES = {
    "SUBSCRIBE", "TEARDOWN", "ACCEPT", "DECLINE", "ACCEPT_INVERSE_OFFERS", "DECLINE_INVERSE_OFFERS", "REVIVE",
    "KILL", "SHUTDOWN", "ACKNOWLEDGE", "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE", "RECONCILE_OPERATIONS",
    "MESSAGE", "REQUEST", "SUPPRESS", "UPDATE_FRAMEWORK",
}


class CallError(Exception):
    """A malformed call: answered with 400 and this message."""


class TaskInvalid(Exception):
    """A task that fails validation: answered with TASK_ERROR / REASON_TASK_INVALID."""


def dumps(obj: object) -> bytes:
    # ASCII-only compact JSON: naive RecordIO clients count bytes and choke on raw UTF-8 less often.
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


def recordio(obj: object) -> bytes:
    body = dumps(obj)
    return str(len(body)).encode() + b"\n" + body


# ---- small input helpers ------------------------------------------------------------------------


def _obj(d: object, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise CallError(f"'{where}' must be a JSON object")
    return d


def _id(d: object, where: str, required: bool = True) -> str | None:
    if d is None:
        if required:
            raise CallError(f"Missing required fields: {where}")
        return None
    if not isinstance(d, dict) or not isinstance(d.get("value"), str):
        raise CallError(f"'{where}' must be an object like {{\"value\": \"...\"}}")
    return d["value"]


def _num(v: object, where: str) -> float:
    if isinstance(v, bool):
        raise CallError(f"'{where}' must be a number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)  # stout accepts numeric strings and "Infinity"
        except ValueError:
            pass
    raise CallError(f"'{where}' must be a number, got {v!r}")


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


def labels_in(d: object, where: str) -> list[ev.Label]:
    out = []
    for i, lab in enumerate(_list(_obj(d, where).get("labels"), f"{where}.labels")):
        lab = _obj(lab, f"{where}.labels[{i}]")
        out.append(ev.Label(_str(lab.get("key"), f"{where}.labels[{i}].key", True), _str(lab.get("value"), "value") or ""))
    return out


def labels_out(labels: list[ev.Label]) -> dict:
    return {"labels": [{"key": l.key, "value": l.value} if l.value else {"key": l.key} for l in labels]}


# ---- calls --------------------------------------------------------------------------------------


def parse_call(body: bytes) -> dict:
    try:
        call = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise CallError(f"Failed to parse body into JSON: {e}") from None
    if not isinstance(call, dict):
        raise CallError(f"{CONVERT}expecting a JSON object")
    t = call.get("type")
    if t is None:
        raise CallError(f"{VALIDATE}Expecting 'type' to be present")
    if not isinstance(t, str):
        raise CallError(f"{CONVERT}'type' must be an enum name")
    if t != "UNKNOWN" and t not in CALL_TYPES:
        raise CallError(f"{CONVERT}unknown call type '{t}'")
    return call


CONVERT = "Failed to convert JSON into Call protobuf: "
VALIDATE = "Failed to validate scheduler::Call: "

# Calls Mesos refuses without their payload (scheduler::call::validate); TEARDOWN, REVIVE, SUPPRESS and UNKNOWN
# need none.
PAYLOAD_REQUIRED = CALL_TYPES - {"SUBSCRIBE", "TEARDOWN", "REVIVE", "SUPPRESS"}


def conversion_error(e: Exception) -> CallError:
    """A structural error (missing required field, wrong JSON type) worded as Mesos words it."""
    msg = str(e)
    return CallError(msg if msg.startswith("Failed to") else CONVERT + msg)


def validate_call(call: dict) -> None:
    """A non-SUBSCRIBE call, checked as Mesos checks it before it looks the framework up, so a malformed
    call is a 400 even from an unknown or disconnected framework: first the JSON->protobuf conversion of
    its payload (proto2 required fields and JSON types, anywhere in the payload: a TaskInfo without a
    `name` fails the whole call, it is not a TASK_ERROR), then `scheduler::call::validate`."""
    t = call["type"]
    key = t.lower()
    payload = call.get(key)
    try:
        framework_id = _id(call.get("framework_id"), "framework_id", required=False)
        if payload is not None:
            _convert_payload(t, _obj(payload, key), key)
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
    if t == "UPDATE_FRAMEWORK":
        info_id = _id(payload["framework_info"].get("id"), "update_framework.framework_info.id", required=False)
        if info_id != framework_id:
            raise CallError(f"{VALIDATE}'framework_id' differs from 'update_framework.framework_info.id'")


def _ids(v: object, where: str) -> None:
    for i, x in enumerate(_list(v, where)):
        _id(x, f"{where}[{i}]")


def _strs(v: object, where: str) -> None:
    for i, x in enumerate(_list(v, where)):
        _str(x, f"{where}[{i}]", True)


def _convert_payload(t: str, p: dict, key: str) -> None:
    """Raise CallError where stout's JSON->protobuf conversion of this call payload fails."""
    if t == "ACCEPT":
        _ids(p.get("offer_ids"), f"{key}.offer_ids")
        for i, op in enumerate(_list(p.get("operations"), f"{key}.operations")):
            w = f"{key}.operations[{i}]"
            op = _obj(op, w)
            if op.get("type") is None:
                raise CallError(f"Missing required fields: {w}.type")
            if op.get("type") == "LAUNCH":
                launch = _obj(op.get("launch"), f"{w}.launch")
                for j, ti in enumerate(_list(launch.get("task_infos"), f"{w}.launch.task_infos")):
                    try:
                        parse_task_info(ti, f"{w}.launch.task_infos[{j}]")
                    except TaskInvalid:
                        pass  # well-formed but invalid: that task gets a TASK_ERROR, the call goes on
        parse_refuse_seconds(p.get("filters"))
    elif t in ("DECLINE", "ACCEPT_INVERSE_OFFERS", "DECLINE_INVERSE_OFFERS"):
        _ids(p.get("offer_ids" if t == "DECLINE" else "inverse_offer_ids"),
             f"{key}.{'offer_ids' if t == 'DECLINE' else 'inverse_offer_ids'}")
        parse_refuse_seconds(p.get("filters"))
    elif t in ("REVIVE", "SUPPRESS"):
        _strs(p.get("roles"), f"{key}.roles")
    elif t == "KILL":
        _id(p.get("task_id"), f"{key}.task_id")
        _id(p.get("agent_id"), f"{key}.agent_id", required=False)
        if p.get("kill_policy") is not None:
            gp = _obj(p["kill_policy"], f"{key}.kill_policy").get("grace_period")
            if gp is not None:
                _num(_obj(gp, f"{key}.kill_policy.grace_period").get("nanoseconds"),
                     f"{key}.kill_policy.grace_period.nanoseconds")
    elif t == "SHUTDOWN":
        _id(p.get("executor_id"), f"{key}.executor_id")
        _id(p.get("agent_id"), f"{key}.agent_id")
    elif t == "ACKNOWLEDGE":
        _id(p.get("agent_id"), f"{key}.agent_id")
        _id(p.get("task_id"), f"{key}.task_id")
        _str(p.get("uuid"), f"{key}.uuid", True)
    elif t == "ACKNOWLEDGE_OPERATION_STATUS":
        _id(p.get("agent_id"), f"{key}.agent_id", required=False)
        _id(p.get("resource_provider_id"), f"{key}.resource_provider_id", required=False)
        _str(p.get("uuid"), f"{key}.uuid", True)
        _id(p.get("operation_id"), f"{key}.operation_id")
    elif t in ("RECONCILE", "RECONCILE_OPERATIONS"):
        item, item_id = ("tasks", "task_id") if t == "RECONCILE" else ("operations", "operation_id")
        for i, x in enumerate(_list(p.get(item), f"{key}.{item}")):
            x = _obj(x, f"{key}.{item}[{i}]")
            _id(x.get(item_id), f"{key}.{item}[{i}].{item_id}")
            _id(x.get("agent_id"), f"{key}.{item}[{i}].agent_id", required=False)
    elif t == "MESSAGE":
        _id(p.get("agent_id"), f"{key}.agent_id")
        _id(p.get("executor_id"), f"{key}.executor_id")
        _str(p.get("data"), f"{key}.data", True)
    elif t == "REQUEST":
        for i, r in enumerate(_list(p.get("requests"), f"{key}.requests")):
            _obj(r, f"{key}.requests[{i}]")
    elif t == "UPDATE_FRAMEWORK":
        if p.get("framework_info") is None:
            raise CallError(f"Missing required fields: {key}.framework_info")
        try:
            parse_framework_info(p["framework_info"], f"{key}.framework_info")
        except FrameworkRefused:
            pass  # well-formed; whether it is acceptable is decided later
        _strs(p.get("suppressed_roles"), f"{key}.suppressed_roles")


def parse_framework_info(d: object, where: str = "framework_info") -> tuple[ev.FrameworkInfo, str | None]:
    """Returns the info and the `id` it carried (re-subscription).

    Structure first (CallError: a 400, as stout's conversion fails), then the checks Mesos makes when it
    subscribes the framework (FrameworkRefused: an ERROR event on the stream), so a refusal never hides
    a malformed field."""
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
    failover = _num(d.get("failover_timeout", 0.0), f"{where}.failover_timeout")
    principal = _str(d.get("principal"), f"{where}.principal")
    hostname = _str(d.get("hostname"), f"{where}.hostname")
    webui_url = _str(d.get("webui_url"), f"{where}.webui_url")
    labels = labels_in(d.get("labels"), f"{where}.labels") if d.get("labels") is not None else []
    framework_id = _id(d.get("id"), f"{where}.id", required=False)

    if roles_given is not None and role_given is not None:
        raise FrameworkRefused("'FrameworkInfo.role' and 'FrameworkInfo.roles' must not both be set")
    if roles_given is not None and (roles_list or "MULTI_ROLE" in caps):
        if "MULTI_ROLE" not in caps:
            raise FrameworkRefused("'FrameworkInfo.roles' requires the MULTI_ROLE capability")
        roles = roles_list
        if len(set(roles)) != len(roles):
            raise FrameworkRefused(f"Duplicate roles in FrameworkInfo.roles: {roles}")
        multi = True
    else:
        if "MULTI_ROLE" in caps and role_given is not None:
            raise FrameworkRefused("'FrameworkInfo.role' must not be set with the MULTI_ROLE capability")
        multi = "MULTI_ROLE" in caps
        # A MULTI_ROLE framework without `roles` is subscribed to no role (and gets no offers), as in Mesos.
        roles = [] if multi else [role_given if role_given is not None else "*"]
    for r in roles:
        validate_role(r)
    if failover < 0 or math.isnan(failover) or math.isinf(failover):
        raise FrameworkRefused(f"Invalid failover_timeout: {failover}")
    min_alloc = {}
    for role, f in _obj(d.get("offer_filters"), f"{where}.offer_filters").items():
        w = f"{where}.offer_filters.{role}"
        mar = _obj(f, w).get("min_allocatable_resources")
        if mar is None:
            continue
        alts = []
        for i, q in enumerate(_list(_obj(mar, f"{w}.min_allocatable_resources").get("quantities"),
                                    f"{w}.min_allocatable_resources.quantities")):
            wq = f"{w}.min_allocatable_resources.quantities[{i}].quantities"
            qs = _obj(_obj(q, f"{w}.min_allocatable_resources.quantities[{i}]").get("quantities"), wq)
            alts.append({n: _num(_obj(v, f"{wq}.{n}").get("value"), f"{wq}.{n}.value") for n, v in sorted(qs.items())})
        if role not in roles:
            raise FrameworkRefused(f"Offer filters are specified for role '{role}' which the framework is not "
                                   "subscribed to")
        min_alloc[role] = alts
    info = ev.FrameworkInfo(
        name=name, user=user, roles=roles, multi_role=multi, capabilities=caps, failover_timeout=failover,
        checkpoint=bool(d.get("checkpoint", False)), principal=principal, hostname=hostname, webui_url=webui_url,
        labels=labels, min_allocatable=dict(sorted(min_alloc.items())),
    )
    return info, framework_id


class FrameworkRefused(Exception):
    """SUBSCRIBE refused: an ERROR event on the 200 stream, then close (Mesos's behaviour)."""


_ROLE_BAD_CHARS = set("\t\n\v\f\r \x7f")


def validate_role(role: str) -> None:
    """Mesos's rules: '*' or '/'-separated components, none empty, '.', '..', starting with '-',
    or holding whitespace or DEL."""
    if role == "*":
        return
    if not role:
        raise FrameworkRefused("Empty role name is invalid")
    for part in role.split("/"):
        if part in ("", ".", "..", "*") or part.startswith("-") or any(c in _ROLE_BAD_CHARS for c in part):
            raise FrameworkRefused(f"Role name '{role}' is invalid: components must be non-empty, not '.', '..' or '*', "
                                   "not start with '-', and hold no whitespace or DEL")


def parse_resources(items: object, where: str) -> Resources:
    """Every resource is checked for structure (CallError) before any value is judged (TaskInvalid)."""
    out = []
    problem: str | None = None
    for i, r in enumerate(_list(items, where)):
        w = f"{where}[{i}]"
        r = _obj(r, w)
        name = _str(r.get("name"), f"{w}.name", True)
        typ = _str(r.get("type"), f"{w}.type", True)
        role = UNRESERVED
        if r.get("reservations"):
            last = _obj(_list(r["reservations"], f"{w}.reservations")[-1], f"{w}.reservations[-1]")
            role = _str(last.get("role"), f"{w}.reservations[-1].role") or UNRESERVED
        elif r.get("role") is not None:
            role = _str(r.get("role"), f"{w}.role") or UNRESERVED
        if typ == "SCALAR":
            v = _num(_required(_obj(r.get("scalar"), f"{w}.scalar").get("value"), f"{w}.scalar.value"),
                     f"{w}.scalar.value")
            if v < 0 or math.isnan(v) or math.isinf(v):
                problem = problem or f"Invalid scalar resource {name}: {v}"
                continue
            out.append(Resource(name, "SCALAR", scalar=round(v, 3), role=role))
        elif typ == "RANGES":
            rs = []
            for j, rg in enumerate(_list(_obj(r.get("ranges"), f"{w}.ranges").get("range"), f"{w}.ranges.range")):
                wr = f"{w}.ranges.range[{j}]"
                rg = _obj(rg, wr)
                b = int(_num(_required(rg.get("begin"), f"{wr}.begin"), f"{wr}.begin"))
                e = int(_num(_required(rg.get("end"), f"{wr}.end"), f"{wr}.end"))
                if b > e:
                    problem = problem or f"Invalid range [{b}-{e}] in resource {name}"
                rs.append((b, e))
            out.append(Resource(name, "RANGES", ranges=tuple(sorted(rs)), role=role))
        elif typ == "SET":
            its = _list(_obj(r.get("set"), f"{w}.set").get("item"), f"{w}.set.item")
            out.append(Resource(name, "SET", items=tuple(sorted(_str(x, f"{w}.set.item[]", True) for x in its)),
                                role=role))
        else:
            raise CallError(f"{w}.type: unknown resource type '{typ}'")
    if problem is not None:
        raise TaskInvalid(problem)
    return Resources(out)


def _required(v: object, where: str) -> object:
    if v is None:
        raise CallError(f"Missing required fields: {where}")
    return v


def parse_refuse_seconds(filters: object) -> float | None:
    if filters is None:
        return None
    f = _obj(filters, "filters")
    if f.get("refuse_seconds") is None:
        return None
    return _num(f["refuse_seconds"], "filters.refuse_seconds")


def parse_task_info(d: object, where: str) -> ev.TaskSpec:
    """A TaskInfo: its structure first (CallError: stout's conversion would fail the whole call with 400),
    then what Mesos's task validation and Drover's support decide (TaskInvalid: a TASK_ERROR for this task)."""
    d = _obj(d, where)
    task_id = _id(d.get("task_id"), f"{where}.task_id")
    name = _str(d.get("name"), f"{where}.name", True)
    agent_id = _id(d.get("agent_id"), f"{where}.agent_id")
    cmd = _obj(d.get("command"), f"{where}.command")
    shell = bool(cmd.get("shell", True))
    value = _str(cmd.get("value"), f"{where}.command.value")
    user = _str(cmd.get("user"), f"{where}.command.user")
    args = [_str(a, f"{where}.command.arguments[{i}]", True)
            for i, a in enumerate(_list(cmd.get("arguments"), f"{where}.command.arguments"))]
    env = []
    wenv = f"{where}.command.environment"
    for i, var in enumerate(_list(_obj(cmd.get("environment"), wenv).get("variables"), f"{wenv}.variables")):
        var = _obj(var, f"{wenv}.variables[{i}]")
        env.append(ev.Label(_str(var.get("name"), f"{wenv}.variables[{i}].name", True),
                            _str(var.get("value"), f"{wenv}.variables[{i}].value") or ""))
    try:
        resources, bad_resources = parse_resources(d.get("resources"), f"{where}.resources"), None
    except TaskInvalid as e:
        resources, bad_resources = Resources([]), str(e)
    image, bad_image = None, None
    if d.get("container") is not None:
        wc = f"{where}.container"
        c = _obj(d["container"], wc)
        ctype = _str(_required(c.get("type"), f"{wc}.type"), f"{wc}.type")
        if ctype == "DOCKER":
            image = _str(_obj(c.get("docker"), f"{wc}.docker").get("image"), f"{wc}.docker.image", True)
        elif ctype == "MESOS":
            img = _obj(_obj(c.get("mesos"), f"{wc}.mesos").get("image"), f"{wc}.mesos.image")
            if img:
                itype = _str(img.get("type", "DOCKER"), f"{wc}.mesos.image.type")
                if itype == "DOCKER":
                    image = _str(_obj(img.get("docker"), f"{wc}.mesos.image.docker").get("name"),
                                 f"{wc}.mesos.image.docker.name", True)
                elif itype == "APPC":
                    bad_image = "Only DOCKER images are supported in container.mesos.image"
                else:
                    raise CallError(f"{wc}.mesos.image.type: unknown image type '{itype}'")
        else:
            raise CallError(f"{wc}.type: unknown container type '{ctype}'")
    grace = None
    if d.get("kill_policy") is not None:
        wk = f"{where}.kill_policy"
        gp = _obj(_obj(d["kill_policy"], wk).get("grace_period"), f"{wk}.grace_period")
        if gp:
            grace = _num(_required(gp.get("nanoseconds"), f"{wk}.grace_period.nanoseconds"),
                         f"{wk}.grace_period.nanoseconds") / 1e9
    labels = labels_in(d.get("labels"), f"{where}.labels") if d.get("labels") else []
    data = _str(d.get("data"), f"{where}.data")

    if (not task_id or task_id.strip() != task_id or task_id in (".", "..")
            or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in task_id)):
        raise TaskInvalid(f"Task ID {task_id!r} is invalid: it must be non-empty, without '/', '\\', control "
                          "characters or outer spaces")
    if d.get("executor") is not None:
        raise TaskInvalid("Custom executors are not supported by Drover yet; use 'command'")
    if d.get("command") is None:
        raise TaskInvalid("Task must have exactly one of 'command' or 'executor' set")
    if shell and not value:
        raise TaskInvalid("Shell command of task must have a value")
    if not shell and not value:
        raise TaskInvalid("Non-shell command of task must have a value (the executable)")
    if bad_resources is not None:
        raise TaskInvalid(bad_resources)
    if not resources:
        raise TaskInvalid("Task uses no resources")
    if bad_image is not None:
        raise TaskInvalid(bad_image)
    return ev.TaskSpec(
        task_id=task_id, name=name, agent_id=agent_id, resources=resources.to_list(),
        command=ev.CommandSpec(shell=shell, value=value, arguments=args, env=env, user=user),
        image=image, labels=labels, kill_grace_seconds=grace, data=data,
    )


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
        is_dynamic = (r.name, r.role) in dyn
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
