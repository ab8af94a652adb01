"""Unit tests for master.codec: Mesos v1 JSON in and out."""

import json

import pytest

from eventstore import events as ev
from eventstore.resources import Resource, Resources
from master import codec
from master.codec import CallError, FrameworkRefused, TaskInvalid


def fw(**kw) -> dict:
    d = {"user": "alice", "name": "fw"}
    d.update(kw)
    return d


def caps(*names) -> list[dict]:
    return [{"type": n} for n in names]


# ---- FrameworkInfo --------------------------------------------------------------------------------


def test_framework_info_defaults_to_star_role():
    info, fid = codec.parse_framework_info(fw())
    assert fid is None
    assert info.roles == ["*"] and not info.multi_role
    assert (info.name, info.user, info.failover_timeout, info.checkpoint) == ("fw", "alice", 0.0, False)


def test_framework_info_legacy_role():
    info, _ = codec.parse_framework_info(fw(role="web", id={"value": "F1"}, checkpoint=True, principal="p",
                                            hostname="h", webui_url="http://x", labels={"labels": [{"key": "k"}]}))
    assert info.roles == ["web"] and not info.multi_role
    assert info.checkpoint and info.principal == "p" and info.hostname == "h" and info.webui_url == "http://x"
    assert info.labels == [ev.Label("k", "")]


def test_framework_info_multi_role():
    info, _ = codec.parse_framework_info(fw(roles=["a", "b/c", "*"], capabilities=caps("MULTI_ROLE", "BOGUS")))
    assert info.roles == ["a", "b/c", "*"] and info.multi_role
    assert info.capabilities == ["MULTI_ROLE"]  # unknown capability names are dropped


def test_framework_info_multi_role_without_roles_field():
    info, _ = codec.parse_framework_info(fw(capabilities=caps("MULTI_ROLE")))
    assert info.multi_role


def test_framework_info_capabilities_sorted_and_unique():
    info, _ = codec.parse_framework_info(fw(capabilities=caps("PARTITION_AWARE", "GPU_RESOURCES", "PARTITION_AWARE")))
    assert info.capabilities == ["GPU_RESOURCES", "PARTITION_AWARE"]


@pytest.mark.parametrize("d", [
    fw(roles=["a"]),  # roles without MULTI_ROLE
    fw(role="a", capabilities=caps("MULTI_ROLE")),  # role with MULTI_ROLE
    fw(role="a", roles=["a"], capabilities=caps("MULTI_ROLE")),  # both
    fw(roles=["a", "a"], capabilities=caps("MULTI_ROLE")),  # duplicates
])
def test_framework_info_role_field_conflicts_refused(d):
    with pytest.raises(FrameworkRefused):
        codec.parse_framework_info(d)


@pytest.mark.parametrize("role", [".", "..", "-a", "/a", "a/", "a//b", "a/./b", "a/../b", "a b", "a\tb", "a/-b",
                                  "a/*", "*/a"])
def test_invalid_roles_refused(role):
    with pytest.raises(FrameworkRefused) as exc:
        codec.parse_framework_info(fw(role=role))
    assert role in str(exc.value)
    with pytest.raises(FrameworkRefused):
        codec.parse_framework_info(fw(roles=["ok", role], capabilities=caps("MULTI_ROLE")))


@pytest.mark.parametrize("role", ["*", "web", "a/b/c", "a.b", "a-b", "a_b", "A1"])
def test_valid_roles_accepted(role):
    codec.validate_role(role)
    info, _ = codec.parse_framework_info(fw(role=role))
    assert info.roles == [role]


# Mesos (src/common/roles.cpp): a component may not be ".", "..", "*", start with "-" or hold whitespace or DEL;
# anything else (a backslash, a "*" inside a name) is a valid role.
@pytest.mark.parametrize("role", ["a\\b", "a*b"])
def test_roles_mesos_accepts(role):
    codec.validate_role(role)


def test_role_with_del_refused():
    with pytest.raises(FrameworkRefused):
        codec.validate_role("a\x7fb")


def test_empty_role_refused():
    with pytest.raises(FrameworkRefused):
        codec.parse_framework_info(fw(role=""))


def test_empty_roles_list_without_multi_role_accepted():
    info, _ = codec.parse_framework_info(fw(roles=[]))
    assert info.roles == ["*"] and not info.multi_role


def test_multi_role_without_roles_has_no_roles():
    info, _ = codec.parse_framework_info(fw(capabilities=caps("MULTI_ROLE")))
    assert info.roles == []


def test_failover_timeout_int_float_and_string():
    assert codec.parse_framework_info(fw(failover_timeout=60))[0].failover_timeout == 60.0
    assert isinstance(codec.parse_framework_info(fw(failover_timeout=60))[0].failover_timeout, float)
    assert codec.parse_framework_info(fw(failover_timeout=1.5))[0].failover_timeout == 1.5
    assert codec.parse_framework_info(fw(failover_timeout="2"))[0].failover_timeout == 2.0
    for bad in (-1, "NaN", "Infinity"):
        with pytest.raises(FrameworkRefused):
            codec.parse_framework_info(fw(failover_timeout=bad))
    with pytest.raises(CallError):
        codec.parse_framework_info(fw(failover_timeout=True))
    with pytest.raises(CallError):
        codec.parse_framework_info(fw(failover_timeout="soon"))


def test_framework_info_required_fields():
    with pytest.raises(CallError, match="user"):
        codec.parse_framework_info({"name": "x"})
    with pytest.raises(CallError, match="name"):
        codec.parse_framework_info({"user": "x"})
    with pytest.raises(CallError):
        codec.parse_framework_info([])
    with pytest.raises(CallError):
        codec.parse_framework_info(fw(id="F1"))  # ids are {"value": ...}


def test_framework_info_out_round_trip():
    info, _ = codec.parse_framework_info(fw(roles=["a"], capabilities=caps("MULTI_ROLE"), failover_timeout=10))
    out = codec.framework_info_out("F1", info)
    assert out["roles"] == ["a"] and "role" not in out
    assert out["failover_timeout"] == 10.0 and b"10.0" in codec.dumps(out)
    again, fid = codec.parse_framework_info(json.loads(codec.dumps(out)))
    assert fid == "F1" and again == info
    legacy, _ = codec.parse_framework_info(fw(role="web"))
    out = codec.framework_info_out("F2", legacy)
    assert out["role"] == "web" and "roles" not in out


# ---- TaskInfo -------------------------------------------------------------------------------------


def scalar(name: str, v, **kw) -> dict:
    return {"name": name, "type": "SCALAR", "scalar": {"value": v}, **kw}


def task_info(**kw) -> dict:
    d = {"name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "A1"},
         "resources": [scalar("cpus", 1), scalar("mem", 128)], "command": {"value": "echo hi"}}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


def test_parse_task_info_basic():
    spec = codec.parse_task_info(task_info(
        kill_policy={"grace_period": {"nanoseconds": 2_500_000_000}}, data="ZGF0YQ==",
        labels={"labels": [{"key": "k", "value": "v"}]},
        command={"shell": False, "value": "/bin/echo", "arguments": ["echo", "hi"], "user": "bob",
                 "environment": {"variables": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}}), "task")
    assert (spec.task_id, spec.name, spec.agent_id) == ("t1", "t", "A1")
    assert Resources(spec.resources) == Resources.parse("cpus:1;mem:128")
    assert spec.command == ev.CommandSpec(shell=False, value="/bin/echo", arguments=["echo", "hi"],
                                          env=[ev.Label("B", "2"), ev.Label("A", "1")], user="bob")
    assert spec.kill_grace_seconds == 2.5 and spec.data == "ZGF0YQ==" and spec.labels == [ev.Label("k", "v")]
    assert spec.image is None


def test_parse_task_info_shell_default():
    spec = codec.parse_task_info(task_info(), "task")
    assert spec.command.shell and spec.command.value == "echo hi"


def test_task_without_command_is_invalid():
    with pytest.raises(TaskInvalid, match="command"):
        codec.parse_task_info(task_info(command=None), "task")
    with pytest.raises(TaskInvalid):
        codec.parse_task_info(task_info(command={"shell": True}), "task")
    with pytest.raises(TaskInvalid):
        codec.parse_task_info(task_info(command={"shell": False, "arguments": ["x"]}), "task")


def test_custom_executor_is_invalid():
    with pytest.raises(TaskInvalid, match="[Ee]xecutor"):
        codec.parse_task_info(task_info(executor={"executor_id": {"value": "e"}, "command": {"value": "x"}}), "task")
    with pytest.raises(TaskInvalid, match="[Ee]xecutor"):
        codec.parse_task_info(task_info(command=None, executor={"executor_id": {"value": "e"}}), "task")


def test_task_without_resources_is_invalid():
    with pytest.raises(TaskInvalid, match="resources"):
        codec.parse_task_info(task_info(resources=None), "task")
    with pytest.raises(TaskInvalid, match="resources"):
        codec.parse_task_info(task_info(resources=[scalar("cpus", 0)]), "task")


@pytest.mark.parametrize("tid", ["", " t1", "t1 ", "a/b", ".", "..", "a\x00b"])
def test_bad_task_id_is_invalid(tid):
    with pytest.raises(TaskInvalid, match="Task ID"):
        codec.parse_task_info(task_info(task_id={"value": tid}), "task")


@pytest.mark.parametrize("tid", ["a\\b", "a\nb", "a\x01b"])
def test_task_id_mesos_refuses(tid):
    with pytest.raises(TaskInvalid):
        codec.parse_task_info(task_info(task_id={"value": tid}), "task")


def test_task_id_missing_is_a_call_error():
    with pytest.raises(CallError, match="task_id"):
        codec.parse_task_info(task_info(task_id=None), "task")
    with pytest.raises(CallError):
        codec.parse_task_info(task_info(task_id="t1"), "task")


def test_docker_image_from_docker_container():
    spec = codec.parse_task_info(task_info(container={"type": "DOCKER", "docker": {"image": "alpine:3"}}), "task")
    assert spec.image == "alpine:3"
    with pytest.raises(CallError, match="image"):
        codec.parse_task_info(task_info(container={"type": "DOCKER", "docker": {}}), "task")


def test_docker_image_from_mesos_container():
    spec = codec.parse_task_info(task_info(container={
        "type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "busybox"}}}}), "task")
    assert spec.image == "busybox"
    spec = codec.parse_task_info(task_info(container={"type": "MESOS", "mesos": {"image": {
        "docker": {"name": "busybox"}}}}), "task")
    assert spec.image == "busybox"
    spec = codec.parse_task_info(task_info(container={"type": "MESOS"}), "task")
    assert spec.image is None
    with pytest.raises(TaskInvalid, match="DOCKER"):
        codec.parse_task_info(task_info(container={"type": "MESOS", "mesos": {"image": {
            "type": "APPC", "appc": {"name": "x"}}}}), "task")
    # An unknown enum name fails the JSON->protobuf conversion: the whole call is malformed.
    with pytest.raises(CallError, match="LXC"):
        codec.parse_task_info(task_info(container={"type": "LXC"}), "task")


# ---- resources in --------------------------------------------------------------------------------


def test_parse_resources_unreserved_and_types():
    r = codec.parse_resources([
        scalar("cpus", 1.5),
        scalar("mem", 128),
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31010},
                                                                 {"begin": 31000, "end": 31002}]}},
        {"name": "zones", "type": "SET", "set": {"item": ["b", "a"]}},
    ], "resources")
    assert r == Resources.parse("cpus:1.5;mem:128;ports:[31000-31002,31005-31010];zones:{a,b}")


def test_parse_resources_pre_refinement_format():
    r = codec.parse_resources([scalar("cpus", 1, role="web"), scalar("mem", 64, role="*"),
                               scalar("disk", 10, role="web", reservation={"principal": "p"})], "resources")
    assert r == Resources.parse("cpus(web):1;mem:64;disk(web):10")


def test_parse_resources_refinement_format():
    r = codec.parse_resources([
        scalar("cpus", 1, reservations=[{"type": "STATIC", "role": "web"}]),
        scalar("mem", 64, reservations=[{"type": "STATIC", "role": "a"}, {"type": "DYNAMIC", "role": "a/b"}]),
        scalar("disk", 10, reservations=[]),
    ], "resources")
    # The last reservation in the stack is the one that counts.
    assert r == Resources.parse("cpus(web):1;mem(a/b):64;disk:10")


def test_parse_resources_errors():
    with pytest.raises(TaskInvalid):
        codec.parse_resources([scalar("cpus", -1)], "r")
    with pytest.raises(TaskInvalid):
        codec.parse_resources([{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 5, "end": 1}]}}], "r")
    with pytest.raises(CallError, match=r"r\[0\]"):
        codec.parse_resources([{"name": "x", "type": "TEXT"}], "r")
    with pytest.raises(CallError, match=r"r\[1\].name"):
        codec.parse_resources([scalar("cpus", 1), {"type": "SCALAR"}], "r")
    with pytest.raises(CallError):
        codec.parse_resources({"name": "cpus"}, "r")


def test_parse_resources_rounds_scalars():
    assert codec.parse_resources([scalar("cpus", 0.1 + 0.2)], "r") == Resources.parse("cpus:0.3")


# ---- resources out ------------------------------------------------------------------------------


RES = Resources.parse("cpus:2;cpus(web):1;ports:[31000-31001,31005-31005];zones:{a,b}")


def test_resources_out_pre_refinement():
    out = codec.resources_out(RES)
    assert out == [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"},
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}, "role": "web"},
        {"name": "ports", "type": "RANGES",
         "ranges": {"range": [{"begin": 31000, "end": 31001}, {"begin": 31005, "end": 31005}]}, "role": "*"},
        {"name": "zones", "type": "SET", "set": {"item": ["a", "b"]}, "role": "*"},
    ]
    assert codec.parse_resources(json.loads(codec.dumps(out)), "r") == RES


def test_resources_out_with_refinement_and_allocation_info():
    out = codec.resources_out(RES, ["RESERVATION_REFINEMENT", "MULTI_ROLE"], alloc_role="web")
    by = {(d["name"], d.get("reservations", [{}])[-1].get("role", "*")): d for d in out}
    assert "role" not in by[("cpus", "*")] and "reservations" not in by[("cpus", "*")]
    assert by[("cpus", "web")]["reservations"] == [{"type": "STATIC", "role": "web"}]
    assert all(d["allocation_info"] == {"role": "web"} for d in out)
    assert codec.parse_resources(json.loads(codec.dumps(out)), "r") == RES


def test_resources_out_without_allocation_info():
    assert all("allocation_info" not in d for d in codec.resources_out(RES, ["RESERVATION_REFINEMENT"]))


def test_offer_out_multi_role_and_single_role():
    res = Resources.parse("cpus:1;mem:32").to_list()
    multi = codec.offer_out("O1", "F1", "A1", "h", "10.0.0.1:5051", "web", res, ["MULTI_ROLE"], [ev.Label("rack", "r")])
    assert multi["allocation_info"] == {"role": "web"}
    assert all(d["allocation_info"] == {"role": "web"} for d in multi["resources"])
    assert multi["id"] == {"value": "O1"} and multi["url"]["address"]["port"] == 5051
    assert multi["attributes"] == [{"name": "rack", "type": "TEXT", "text": {"value": "r"}}]
    single = codec.offer_out("O1", "F1", "A1", "h", "10.0.0.1:5051", "*", res, [], [])
    assert "allocation_info" not in single and "attributes" not in single
    assert all("allocation_info" not in d for d in single["resources"])


# ---- framing and numbers ------------------------------------------------------------------------


def test_recordio_framing_counts_bytes():
    frame = codec.recordio({"type": "HEARTBEAT"})
    body = b'{"type":"HEARTBEAT"}'
    assert frame == str(len(body)).encode() + b"\n" + body
    assert frame == b"20\n" + body


def test_recordio_non_ascii_is_escaped_and_length_is_bytes():
    msg = {"type": "ERROR", "error": {"message": "caf\u00e9 \u2603 \U0001F600"}}
    frame = codec.recordio(msg)
    head, _, body = frame.partition(b"\n")
    assert int(head) == len(body)
    body.decode("ascii")  # ASCII only: non-ASCII is \\u-escaped
    assert b"\\u00e9" in body and b"\\u2603" in body and b"\\ud83d\\ude00" in body
    assert json.loads(body) == msg
    # Several frames in a row can be split again by counting bytes.
    stream = codec.recordio(msg) + codec.recordio({"type": "HEARTBEAT"})
    out, rest = [], stream
    while rest:
        n, _, rest = rest.partition(b"\n")
        out.append(json.loads(rest[: int(n)]))
        rest = rest[int(n):]
    assert out == [msg, {"type": "HEARTBEAT"}]


def test_doubles_keep_their_fraction():
    assert codec.dumps({"x": 15.0}) == b'{"x":15.0}'
    out = codec.resources_out(Resources.parse("cpus:15"))
    assert b'"value":15.0' in codec.dumps(out)
    st = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_AGENT", timestamp=15)
    assert b'"timestamp":15.0' in codec.dumps(codec.status_out("F1", "t1", "A1", st, []))
    sub = codec.ev_subscribed("F1", 15, {"id": "m"})
    assert b'"heartbeat_interval_seconds":15.0' in codec.dumps(sub)
    assert codec.resources_summary(Resources.parse("cpus:2;ports:[1-2,4-5]")) == {
        "cpus": 2.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0, "ports": "[1-2, 4-5]"}


# ---- status mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize("state, legacy", [
    ("TASK_DROPPED", "TASK_LOST"),
    ("TASK_UNREACHABLE", "TASK_LOST"),
    ("TASK_GONE", "TASK_LOST"),
    ("TASK_GONE_BY_OPERATOR", "TASK_LOST"),
    ("TASK_UNKNOWN", "TASK_LOST"),
    ("TASK_LOST", "TASK_LOST"),
    ("TASK_RUNNING", "TASK_RUNNING"),
    ("TASK_FINISHED", "TASK_FINISHED"),
    ("TASK_KILLING", "TASK_RUNNING"),
])
def test_status_state_mapping_for_legacy_frameworks(state, legacy):
    st = ev.TaskStatus(state=state, source="SOURCE_MASTER", timestamp=1.0)
    assert codec.status_out("F1", "t1", None, st, [])["state"] == legacy
    aware = codec.status_out("F1", "t1", None, st, ["PARTITION_AWARE", "TASK_KILLING_STATE"])["state"]
    assert aware == state


def test_status_out_fields():
    st = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_AGENT", timestamp=2.5, uuid="dXVpZA==", reason="R",
                       message="m", container_id="c1")
    d = codec.status_out("F1", "t1", "A1", st, [])
    assert d == {"task_id": {"value": "t1"}, "state": "TASK_RUNNING", "source": "SOURCE_AGENT",
                 "agent_id": {"value": "A1"}, "executor_id": {"value": "t1"}, "message": "m", "reason": "R",
                 "timestamp": 2.5, "uuid": "dXVpZA==", "container_status": {"container_id": {"value": "c1"}}}
    bare = codec.status_out("F1", "t1", None, ev.TaskStatus(state="TASK_ERROR", source="SOURCE_MASTER",
                                                            timestamp=1.0), [])
    assert "agent_id" not in bare and "uuid" not in bare
    assert codec.ev_update(d) == {"type": "UPDATE", "update": {"status": d}}


# ---- calls ---------------------------------------------------------------------------------------


def test_parse_call():
    assert codec.parse_call(b'{"type":"SUBSCRIBE"}')["type"] == "SUBSCRIBE"
    for bad in (b"{", b"[]", b"{}", b'{"type":1}', b'{"type":"NOPE"}', b"\xff"):
        with pytest.raises(CallError):
            codec.parse_call(bad)


def test_parse_refuse_seconds():
    assert codec.parse_refuse_seconds(None) is None
    assert codec.parse_refuse_seconds({}) is None
    assert codec.parse_refuse_seconds({"refuse_seconds": 0}) == 0.0
    assert codec.parse_refuse_seconds({"refuse_seconds": 3}) == 3.0


def test_decode_uuid():
    assert codec.decode_uuid("AAAAAAAAAAAAAAAAAAAAAA==") == bytes(16)
    for bad in (None, "!!", "AAAA"):
        with pytest.raises(CallError):
            codec.decode_uuid(bad)


def test_resource_type_preserved():
    assert codec.resources_out([Resource("gpus", "SCALAR", scalar=1.0)])[0]["scalar"] == {"value": 1.0}


def test_dynamic_reservations_render_as_dynamic():
    from eventstore.resources import Resources
    res = Resources.parse("cpus(db):1;cpus(web):2;mem:64")
    dynamic = Resources.parse("cpus(db):1").to_list()
    refined = codec.resources_out(res, ["RESERVATION_REFINEMENT"], dynamic=dynamic)
    by_role = {tuple(x["reservations"][0].values()) if "reservations" in x else None: x for x in refined}
    assert ("DYNAMIC", "db") in by_role and ("STATIC", "web") in by_role
    legacy = codec.resources_out(res, [], dynamic=dynamic)
    db = next(x for x in legacy if x.get("role") == "db")
    web = next(x for x in legacy if x.get("role") == "web")
    assert db["reservation"] == {} and "reservation" not in web
