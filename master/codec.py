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
        raise CallError("Failed to convert JSON into Call protobuf: expecting a JSON object")
    t = call.get("type")
    if t is None:
        raise CallError("Failed to validate scheduler::Call: Expecting 'type' to be present")
    if not isinstance(t, str):
        raise CallError("Failed to convert JSON into Call protobuf: 'type' must be an enum name")
    if t != "UNKNOWN" and t not in CALL_TYPES:
        raise CallError(f"Failed to convert JSON into Call protobuf: unknown call type '{t}'")
    return call


def parse_framework_info(d: object) -> tuple[ev.FrameworkInfo, str | None]:
    """Returns the info and the `id` it carried (re-subscription)."""
    d = _obj(d, "framework_info")
    user = _str(d.get("user"), "framework_info.user", True)
    name = _str(d.get("name"), "framework_info.name", True)
    caps = []
    for i, c in enumerate(_list(d.get("capabilities"), "framework_info.capabilities")):
        t = _obj(c, f"framework_info.capabilities[{i}]").get("type")
        if isinstance(t, str) and t in CAPABILITIES:  # unknown enum names are dropped, as stout does
            caps.append(t)
    caps = sorted(set(caps))
    roles_given = d.get("roles")
    role_given = d.get("role")
    if roles_given is not None and role_given is not None:
        raise FrameworkRefused("'FrameworkInfo.role' and 'FrameworkInfo.roles' must not both be set")
    if roles_given is not None:
        if "MULTI_ROLE" not in caps:
            raise FrameworkRefused("'FrameworkInfo.roles' requires the MULTI_ROLE capability")
        roles = [_str(r, "framework_info.roles[]", True) for r in _list(roles_given, "framework_info.roles")]
        if len(set(roles)) != len(roles):
            raise FrameworkRefused(f"Duplicate roles in FrameworkInfo.roles: {roles}")
        multi = True
    else:
        if "MULTI_ROLE" in caps and role_given is not None:
            raise FrameworkRefused("'FrameworkInfo.role' must not be set with the MULTI_ROLE capability")
        roles = [_str(role_given, "framework_info.role") or "*"]
        multi = "MULTI_ROLE" in caps
    for r in roles:
        validate_role(r)
    failover = _num(d.get("failover_timeout", 0.0), "framework_info.failover_timeout")
    if failover < 0 or math.isnan(failover) or math.isinf(failover):
        raise FrameworkRefused(f"Invalid failover_timeout: {failover}")
    info = ev.FrameworkInfo(
        name=name, user=user, roles=roles, multi_role=multi, capabilities=caps, failover_timeout=failover,
        checkpoint=bool(d.get("checkpoint", False)), principal=_str(d.get("principal"), "framework_info.principal"),
        hostname=_str(d.get("hostname"), "framework_info.hostname"),
        webui_url=_str(d.get("webui_url"), "framework_info.webui_url"),
        labels=labels_in(d.get("labels"), "framework_info.labels") if d.get("labels") is not None else [],
    )
    return info, _id(d.get("id"), "framework_info.id", required=False)


class FrameworkRefused(Exception):
    """SUBSCRIBE refused: an ERROR event on the 200 stream, then close (Mesos's behaviour)."""


def validate_role(role: str) -> None:
    if role == "*":
        return
    if not role or role in (".", "..") or role.startswith("-") or role.startswith("/") or role.endswith("/"):
        raise FrameworkRefused(f"Role '{role}' is invalid")
    for part in role.split("/"):
        if part in ("", ".", "..") or part.startswith("-") or any(c.isspace() or c in "\\*" for c in part):
            raise FrameworkRefused(f"Role '{role}' is invalid")


def parse_resources(items: object, where: str) -> Resources:
    out = []
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
            v = _num(_obj(r.get("scalar"), f"{w}.scalar").get("value"), f"{w}.scalar.value")
            if v < 0 or math.isnan(v) or math.isinf(v):
                raise TaskInvalid(f"Invalid scalar resource {name}: {v}")
            out.append(Resource(name, "SCALAR", scalar=round(v, 3), role=role))
        elif typ == "RANGES":
            rs = []
            for j, rg in enumerate(_list(_obj(r.get("ranges"), f"{w}.ranges").get("range"), f"{w}.ranges.range")):
                rg = _obj(rg, f"{w}.ranges.range[{j}]")
                b, e = int(_num(rg.get("begin"), "begin")), int(_num(rg.get("end"), "end"))
                if b > e:
                    raise TaskInvalid(f"Invalid range [{b}-{e}] in resource {name}")
                rs.append((b, e))
            out.append(Resource(name, "RANGES", ranges=tuple(sorted(rs)), role=role))
        elif typ == "SET":
            its = _list(_obj(r.get("set"), f"{w}.set").get("item"), f"{w}.set.item")
            out.append(Resource(name, "SET", items=tuple(sorted(str(x) for x in its)), role=role))
        else:
            raise CallError(f"{w}.type: unknown resource type '{typ}'")
    return Resources(out)


def parse_refuse_seconds(filters: object) -> float | None:
    if filters is None:
        return None
    f = _obj(filters, "filters")
    if f.get("refuse_seconds") is None:
        return None
    return _num(f["refuse_seconds"], "filters.refuse_seconds")


def parse_task_info(d: object, where: str) -> ev.TaskSpec:
    d = _obj(d, where)
    task_id = _id(d.get("task_id"), f"{where}.task_id")
    name = _str(d.get("name"), f"{where}.name", True)
    agent_id = _id(d.get("agent_id"), f"{where}.agent_id")
    if not task_id or task_id.strip() != task_id or "/" in task_id or task_id in (".", "..") or "\x00" in task_id:
        raise TaskInvalid(f"Task ID '{task_id}' is invalid: it must be non-empty, without '/', NUL or outer spaces")
    if d.get("executor") is not None:
        raise TaskInvalid("Custom executors are not supported by Drover yet; use 'command'")
    if d.get("command") is None:
        raise TaskInvalid("Task must have exactly one of 'command' or 'executor' set")
    cmd = _obj(d["command"], f"{where}.command")
    shell = bool(cmd.get("shell", True))
    value = _str(cmd.get("value"), f"{where}.command.value")
    args = [_str(a, f"{where}.command.arguments[]", True) for a in _list(cmd.get("arguments"), "arguments")]
    if shell and not value:
        raise TaskInvalid("Shell command of task must have a value")
    if not shell and not value:
        raise TaskInvalid("Non-shell command of task must have a value (the executable)")
    env = []
    for i, var in enumerate(_list(_obj(cmd.get("environment"), "environment").get("variables"), "variables")):
        var = _obj(var, f"{where}.command.environment.variables[{i}]")
        env.append(ev.Label(_str(var.get("name"), "name", True), _str(var.get("value"), "value") or ""))
    resources = parse_resources(d.get("resources"), f"{where}.resources")
    if not resources:
        raise TaskInvalid("Task uses no resources")
    image = None
    if d.get("container") is not None:
        c = _obj(d["container"], f"{where}.container")
        ctype = c.get("type")
        if ctype == "DOCKER":
            image = _str(_obj(c.get("docker"), "docker").get("image"), f"{where}.container.docker.image", True)
        elif ctype == "MESOS":
            img = _obj(_obj(c.get("mesos"), "mesos").get("image"), "image")
            if img:
                if img.get("type", "DOCKER") != "DOCKER":
                    raise TaskInvalid("Only DOCKER images are supported in container.mesos.image")
                image = _str(_obj(img.get("docker"), "docker").get("name"), f"{where}.container.mesos.image.docker.name", True)
        else:
            raise TaskInvalid(f"ContainerInfo.type must be DOCKER or MESOS, got {ctype!r}")
    grace = None
    if d.get("kill_policy") is not None:
        gp = _obj(_obj(d["kill_policy"], "kill_policy").get("grace_period"), "grace_period")
        if gp.get("nanoseconds") is not None:
            grace = _num(gp["nanoseconds"], "kill_policy.grace_period.nanoseconds") / 1e9
    return ev.TaskSpec(
        task_id=task_id, name=name, agent_id=agent_id, resources=resources.to_list(),
        command=ev.CommandSpec(shell=shell, value=value, arguments=args, env=env, user=_str(cmd.get("user"), "user")),
        image=image, labels=labels_in(d.get("labels"), f"{where}.labels") if d.get("labels") else [],
        kill_grace_seconds=grace, data=_str(d.get("data"), f"{where}.data"),
    )


def decode_uuid(b64: object) -> bytes:
    if not isinstance(b64, str):
        raise CallError("Failed to validate scheduler::Call: 'acknowledge.uuid' must be a base64 string")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, TypeError):
        raise CallError("Failed to convert JSON into Call protobuf: 'acknowledge.uuid' is not valid base64") from None
    if len(raw) != 16:
        raise CallError(f"Failed to validate scheduler::Call: UUID must be 16 bytes, got {len(raw)}")
    return raw


# ---- output -------------------------------------------------------------------------------------


def resources_out(res: list[Resource] | Resources, caps: list[str] | tuple = (), alloc_role: str | None = None) -> list[dict]:
    refinement = "RESERVATION_REFINEMENT" in caps
    out = []
    for r in res:
        d: dict = {"name": r.name, "type": r.type}
        if r.type == "SCALAR":
            d["scalar"] = {"value": float(r.scalar)}
        elif r.type == "RANGES":
            d["ranges"] = {"range": [{"begin": b, "end": e} for b, e in r.ranges]}
        else:
            d["set"] = {"item": list(r.items)}
        if refinement:
            if r.role != UNRESERVED:
                d["reservations"] = [{"type": "STATIC", "role": r.role}]
        else:
            d["role"] = r.role
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
              resources: list[Resource], caps: list[str], attributes: list[ev.Label]) -> dict:
    multi = "MULTI_ROLE" in caps
    host, _, port = agent_http.rpartition(":")
    d = {
        "id": ident(offer_id), "framework_id": ident(framework_id), "agent_id": ident(agent_id),
        "hostname": hostname,
        "url": {"scheme": "http", "address": {"hostname": hostname, "ip": host, "port": int(port or 0)},
                "path": "/slave(1)"},
        "resources": resources_out(resources, caps, role if multi else None),
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
