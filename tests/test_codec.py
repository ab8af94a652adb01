"""Unit tests for master.codec: Mesos v1 JSON in and out."""

import json
import re

import msgspec
import pytest

from eventstore import events as ev
from eventstore.resources import Resource, Resources
from master import codec
from eventstore.values import MAX_SECONDS
from master.codec import CallError, FrameworkRefused, InvalidValue, TaskInvalid


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
    with pytest.raises(FrameworkRefused):
        codec.parse_framework_info(fw(failover_timeout=-1))
    # A non-finite number cannot be recorded (JSON has none): a malformed call, 400, wherever it is.
    for bad in ("NaN", "Infinity", "-Infinity", float("inf"), 10**400):
        with pytest.raises(CallError, match="finite"):
            codec.parse_framework_info(fw(failover_timeout=bad))
    # Huge but finite: capped, as Mesos caps durations (MAX_SECONDS, 100 years).
    assert codec.parse_framework_info(fw(failover_timeout=1e300))[0].failover_timeout == MAX_SECONDS
    assert codec.parse_framework_info(fw(failover_timeout=None))[0].failover_timeout == 0.0
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
        command={"shell": False, "value": "/bin/echo", "arguments": ["echo", "hi"], "user": "",
                 "environment": {"variables": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}}), "task")
    assert (spec.task_id, spec.name, spec.agent_id) == ("t1", "t", "A1")
    assert Resources(spec.resources) == Resources.parse("cpus:1;mem:128")
    # (an empty command.user is no user: the task runs as its framework's)
    assert spec.command == ev.CommandSpec(shell=False, value="/bin/echo", arguments=["echo", "hi"],
                                          env=[ev.Label("B", "2"), ev.Label("A", "1")])
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


# ---- validation rules (issue 9): ids, numbers, sizes, features Drover does not implement ---------------------


def accept_call(*task_infos: dict, **payload) -> dict:
    p = {"offer_ids": [{"value": "O1"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": list(task_infos)}}]}
    p.update(payload)
    return {"type": "ACCEPT", "framework_id": {"value": "F1"}, "accept": p}


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999", float("nan"), 10**400])
def test_non_finite_numbers_are_a_400_everywhere(bad):
    wheres = {
        "kill": {"type": "KILL", "framework_id": {"value": "F1"},
                 "kill": {"task_id": {"value": "t"}, "kill_policy": {"grace_period": {"nanoseconds": bad}}}},
        "scalar": accept_call(task_info(resources=[scalar("cpus", bad)])),
        "task grace": accept_call(task_info(kill_policy={"grace_period": {"nanoseconds": bad}})),
    }
    for name, body in wheres.items():
        with pytest.raises(CallError, match="finite") as exc:
            codec.parse_scheduler_call(body)
        assert str(exc.value).startswith("Failed to convert JSON into Call protobuf"), name
    with pytest.raises(CallError, match="finite"):
        codec.parse_framework_info(fw(role="web", offer_filters={"web": {"min_allocatable_resources": {
            "quantities": [{"quantities": {"cpus": {"value": bad}}}]}}}))


@pytest.mark.parametrize("begin, end", [(1.5, 2), (-1, 2), (1, 2**63), (1e300, 1e300), ("x", 1), (True, 2)])
def test_range_bounds_must_be_integers_in_range(begin, end):
    with pytest.raises(CallError, match="integer"):
        codec.parse_resources([{"name": "ports", "type": "RANGES",
                                "ranges": {"range": [{"begin": begin, "end": end}]}}], "r")


def test_range_bounds_as_numeric_strings_and_integral_doubles():
    r = codec.parse_resources([{"name": "ports", "type": "RANGES",
                                "ranges": {"range": [{"begin": "31000", "end": 31001.0}]}}], "r")
    assert r == Resources.parse("ports:[31000-31001]")


def test_scalars_are_bounded():
    with pytest.raises(TaskInvalid, match="cpus"):
        codec.parse_resources([scalar("cpus", 1e13)], "r")
    assert codec.parse_resources([scalar("cpus", 1e12)], "r") == Resources.parse("cpus:1000000000000")


def test_one_resource_name_one_type_within_a_task():
    ranges = {"name": "cpus", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 2}]}}
    for items in ([scalar("cpus", 1), ranges], [scalar("cpus", 1), dict(ranges, role="web")]):
        with pytest.raises(TaskInvalid, match="both SCALAR and RANGES"):
            codec.parse_resources(items, "r")
        with pytest.raises(TaskInvalid, match="both"):
            codec.parse_task_info(task_info(resources=items), "task")


def test_resource_roles_are_validated():
    with pytest.raises(TaskInvalid, match="Role name"):
        codec.parse_resources([scalar("cpus", 1, role="a b")], "r")


@pytest.mark.parametrize("extra", [{"disk": {"source": {"type": "MOUNT"}}}, {"revocable": {}},
                                   {"provider_id": {"value": "p"}}])
def test_resource_kinds_drover_does_not_implement_are_refused(extra):
    with pytest.raises(TaskInvalid, match="not supported by Drover"):
        codec.parse_resources([dict(scalar("disk", 10), **extra)], "r")


def pv(pid="pv1", path="data", mode="RW", role="db", size=100.0, **extra):
    disk = {"persistence": {"id": pid, "principal": "ops"}, "volume": {"container_path": path, "mode": mode}}
    return dict(scalar("disk", size, role=role), disk=disk, **extra)


def test_persistent_volumes_parse_and_render_back():
    res = codec.parse_resources([pv(), pv("s1", "logs", "RO", shared={})], "r")
    vols = list(res)
    assert [(r.persistence.id, r.persistence.principal, r.volume.container_path, r.volume.mode, r.shared)
            for r in vols] == [("pv1", "ops", "data", "RW", False), ("s1", "ops", "logs", "RO", True)]
    out = codec.resources_out(res, caps=["RESERVATION_REFINEMENT"])
    assert out[0]["disk"] == {"persistence": {"id": "pv1", "principal": "ops"},
                              "volume": {"container_path": "data", "mode": "RW"}}
    assert out[0]["reservations"] == [{"type": "DYNAMIC", "role": "db"}] and "shared" not in out[0]
    assert out[1]["shared"] == {}
    assert codec.parse_resources(out, "again") == res


@pytest.mark.parametrize("record, message", [
    (pv(role="*"), "Invalid DiskInfo: Persistent volumes cannot be created from unreserved resources"),
    (dict(scalar("disk", 1, role="db"), disk={"persistence": {"id": "p"}}),
     "Invalid DiskInfo: Expecting 'volume' to be set for persistent volume"),
    (dict(scalar("disk", 1, role="db"), disk={"volume": {"container_path": "d", "mode": "RW"}}),
     "Invalid DiskInfo: Non-persistent volume not supported"),
    (dict(scalar("disk", 1, role="db"), disk={}), "Invalid DiskInfo: DiskInfo is set but empty"),
    (pv(pid="a b"), "Invalid DiskInfo: Invalid persistence ID for persistent volume"),
    (pv(path="a/b"), "must be one relative path component"),
    (pv(path="/abs"), "must be one relative path component"),
    (dict(pv(), disk={"persistence": {"id": "p"}, "volume": {"container_path": "d", "mode": "RW",
                                                               "host_path": "/etc"}}),
     "Expecting 'host_path' to be unset for persistent volume"),
    (dict(scalar("disk", 1, role="db"), shared={}), "Only persistent volumes can be shared"),
    (dict(pv(), revocable={}), "cannot be created from revocable resources"),
    (dict(pv(), name="mem"), "Only 'disk'"),
])
def test_persistent_volume_refusals(record, message):
    with pytest.raises(TaskInvalid) as err:
        codec.parse_resources([record], "r")
    assert message in str(err.value)


def test_persistent_volume_structure_errors_are_400s():
    with pytest.raises(CallError):
        codec.parse_resources([dict(pv(), disk={"persistence": {"id": "p"}, "volume": {"container_path": "d"}})],
                              "r")
    with pytest.raises(CallError):
        codec.parse_resources([dict(pv(), disk={"persistence": {}})], "r")


UNSUPPORTED_TASK_FIELDS = {
    "max_completion_time": {"max_completion_time": {"nanoseconds": 10**9}},
    "limits": {"limits": {"cpus": {"value": 2}}},
    "container.volumes": {"container": {"type": "MESOS", "volumes": [{"container_path": "/d", "mode": "RW"}]}},
    "container.network_infos": {"container": {"type": "MESOS", "network_infos": [{"name": "n"}]}},
    "container.docker.network USER": {"container": {"type": "DOCKER", "docker": {"image": "a", "network": "USER"}}},
    "container.network_infos ": {"container": {"type": "MESOS", "network_infos": [
        {"port_mappings": [{"host_port": 31000, "container_port": 80}]}, {}]}},
    "container.network_infos  ": {"container": {"type": "MESOS", "network_infos": [
        {"ip_addresses": [{"ip_address": "10.0.0.5"}]}]}},
    "container.docker.privileged": {"container": {"type": "DOCKER", "docker": {"image": "a", "privileged": True}}},
    "container.docker.parameters": {"container": {"type": "DOCKER", "docker": {
        "image": "a", "parameters": [{"key": "k", "value": "v"}]}}},
    "container.linux_info": {"container": {"type": "MESOS", "linux_info": {"share_pid_namespace": True}}},
    "container.rlimit_info": {"container": {"type": "MESOS", "rlimit_info": {"rlimits": [{"type": "RLMT_CPU"}]}}},
}


@pytest.mark.parametrize("field", UNSUPPORTED_TASK_FIELDS)
def test_task_fields_drover_does_not_implement_are_task_errors_naming_them(field):
    with pytest.raises(TaskInvalid) as exc:
        codec.parse_task_info(task_info(**UNSUPPORTED_TASK_FIELDS[field]), "task")
    assert f"TaskInfo.{field.strip()} is not supported by Drover yet" in str(exc.value)


def test_command_uris_travel_in_the_task_spec():
    uris = [{"value": "https://example.com/a/app.tar.gz"},
            {"value": "http://10.0.0.1:8080/run.sh?v=1", "executable": True, "extract": False, "cache": True,
             "output_file": "bin/run"},
            {"value": "file:///srv/artifacts/x.zip"}, {"value": "/srv/artifacts/y"}]
    spec = codec.parse_task_info(task_info(command={"value": "./bin/run", "uris": uris}), "task")
    assert spec.command.uris == [
        ev.FetchURI("https://example.com/a/app.tar.gz"),
        ev.FetchURI("http://10.0.0.1:8080/run.sh?v=1", executable=True, extract=False, cache=True,
                    output_file="bin/run"),
        ev.FetchURI("file:///srv/artifacts/x.zip"), ev.FetchURI("/srv/artifacts/y")]
    assert spec.command.uris[0].extract is True  # Mesos's default
    accepted = ev.OffersAccepted(framework_id="F", offer_ids=["o1"], tasks=[spec], refuse_seconds=5.0)
    assert ev.decode_event(ev.encode_event(accepted)).tasks == [spec]  # committed and read back as it was


def test_a_command_without_uris_encodes_as_before():
    # old events (no `uris`) decode to the same spec, and a spec without URIs encodes without the field
    spec = codec.parse_task_info(task_info(), "task")
    assert spec.command.uris == []
    assert b"uris" not in msgspec.json.encode(spec)


@pytest.mark.parametrize("uri, says", [
    ({"value": "ftp://example.com/a"}, "scheme 'ftp'"),
    ({"value": "hdfs://nn/a"}, "scheme 'hdfs'"),
    ({"value": "relative/path"}, "absolute path"),
    ({"value": ""}, "must not be empty"),
    ({"value": "http:///nohost"}, "no host"),
    ({"value": "https://user:pw@example.com/a"}, "user information"),
    ({"value": "file://otherhost/etc/passwd"}, "file:///ABSOLUTE/PATH"),
    ({"value": "http://example.com/a b"}, "whitespace"),
    ({"value": "http://example.com/" + "a" * 5000}, "longer than 4096"),
    ({"value": "http://example.com/a", "output_file": "../escape"}, "output_file"),
    ({"value": "http://example.com/a", "output_file": "/etc/passwd"}, "relative to the sandbox"),
    ({"value": "http://example.com/a", "output_file": "a//b"}, "components"),
])
def test_bad_command_uris_are_task_errors_naming_them(uri, says):
    with pytest.raises(TaskInvalid, match="Task's command URI 0") as exc:
        codec.parse_task_info(task_info(command={"value": "x", "uris": [uri]}), "task")
    assert says in str(exc.value)


def test_too_many_command_uris():
    uris = [{"value": f"http://example.com/{i}"} for i in range(101)]
    with pytest.raises(TaskInvalid, match="more than 100 URIs"):
        codec.parse_task_info(task_info(command={"value": "x", "uris": uris}), "task")


@pytest.mark.parametrize("uri", [{"executable": True}, {"value": 5}, {"value": "http://a/b", "extract": "yes"},
                                 "http://a/b", {"value": "http://a/b", "output_file": 1}])
def test_malformed_command_uris_fail_the_call(uri):
    with pytest.raises(codec.CallError):
        codec.parse_task_info(task_info(command={"value": "x", "uris": [uri]}), "task")


def test_task_fields_that_are_fine():
    for extra in ({"discovery": {"visibility": "FRAMEWORK", "name": "x"}},  # metadata: ignored
                  {"command": {"value": "x", "user": ""}, "limits": {}},
                  {"container": {"type": "DOCKER", "docker": {"image": "a", "network": "HOST"}}},
                  {"container": {"type": "DOCKER", "docker": {"image": "a", "network": "NONE", "privileged": False}}},
                  {"container": {"type": "DOCKER", "docker": {"image": "a", "network": "SOMETHING_NEW"}}}):
        codec.parse_task_info(task_info(**extra), "task")


PORTS = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31009}]}}


def _docker(**docker) -> dict:
    return {"type": "DOCKER", "docker": {"image": "a", **docker}}


@pytest.mark.parametrize("container, network, mappings", [
    (None, None, []),  # no container: the host's network
    (_docker(), None, []),
    (_docker(network="HOST"), None, []),  # HOST is recorded as the default: a spec as before
    (_docker(network="SOMETHING_NEW"), None, []),  # stout drops an unknown enum value: the default
    (_docker(network="NONE"), "NONE", []),
    (_docker(network="BRIDGE"), "BRIDGE", []),
    (_docker(network="BRIDGE", port_mappings=[{"host_port": 31000, "container_port": 80},
                                              {"host_port": 31001, "container_port": 53, "protocol": "UDP"}]),
     "BRIDGE", [ev.PortMapping(31000, 80), ev.PortMapping(31001, 53, "udp")]),
    ({"type": "MESOS", "network_infos": [{"port_mappings": [{"host_port": 31002, "container_port": 8080,
                                                             "protocol": "tcp"}],
                                          "labels": {"labels": [{"key": "k"}]}, "groups": ["g"]}]},
     "BRIDGE", [ev.PortMapping(31002, 8080)]),
    ({"type": "MESOS", "network_infos": [{}]}, None, []),  # an unnamed network without mappings: the host's
])
def test_a_task_asks_for_its_network_and_port_mappings(container, network, mappings):
    ti = task_info(container=container, resources=[scalar("cpus", 1), PORTS])
    spec = codec.parse_task_info(ti, "task")
    assert (spec.network, spec.port_mappings) == (network, mappings)
    accepted = ev.OffersAccepted(framework_id="F", offer_ids=["o1"], tasks=[spec], refuse_seconds=5.0)
    assert ev.decode_event(ev.encode_event(accepted)).tasks == [spec]  # committed and read back as it was
    if network is None and not mappings:  # the default network leaves the spec as it was before the field
        assert b"network" not in ev.encode_event(accepted) and b"port_mappings" not in ev.encode_event(accepted)


@pytest.mark.parametrize("container, says", [
    (_docker(port_mappings=[{"host_port": 31000, "container_port": 80}]),
     "Port mappings are only supported for the BRIDGE network"),
    (_docker(network="HOST", port_mappings=[{"host_port": 31000, "container_port": 80}]),
     "Port mappings are only supported for the BRIDGE network"),
    (_docker(network="BRIDGE", port_mappings=[{"host_port": 31000, "container_port": 0}]),
     "port outside [1, 65535]"),
    (_docker(network="BRIDGE", port_mappings=[{"host_port": 70000, "container_port": 80}]),
     "port outside [1, 65535]"),
    (_docker(network="BRIDGE", port_mappings=[{"host_port": 31000, "container_port": 80, "protocol": "icmp"}]),
     "protocol 'icmp'"),
])
def test_port_mappings_drover_cannot_make_are_task_errors(container, says):
    with pytest.raises(TaskInvalid, match=re.escape(says)):
        codec.parse_task_info(task_info(container=container, resources=[scalar("cpus", 1), PORTS]), "task")


@pytest.mark.parametrize("mapping", [{"container_port": 80}, {"host_port": 31000}, {"host_port": -1,
                                     "container_port": 80}, {"host_port": "x", "container_port": 80},
                                     {"host_port": 31000, "container_port": 80, "protocol": 6}])
def test_a_malformed_port_mapping_is_a_400(mapping):
    with pytest.raises(CallError):
        codec.parse_task_info(task_info(container=_docker(network="BRIDGE", port_mappings=[mapping])), "task")


@pytest.mark.parametrize("user", ["nobody", "_svc-1.a", "root"])
def test_a_task_names_the_user_it_runs_as(user):
    spec = codec.parse_task_info(task_info(command={"value": "id -u", "user": user}), "task")
    assert spec.command.user == user
    accepted = ev.OffersAccepted(framework_id="F", offer_ids=["o1"], tasks=[spec], refuse_seconds=5.0)
    assert ev.decode_event(ev.encode_event(accepted)).tasks == [spec]  # committed and read back as it was


@pytest.mark.parametrize("user", ["a b", "bob:wheel", "../etc", "-x", "x" * 33, "4294967295", "r\u00f6\u00f6t",
                                  "root\n",
                                  "0", "65534"])  # a uid: the run_tasks ACL judges names, "0" must not pass for "root"
def test_a_user_no_image_can_have_is_a_400(user):
    with pytest.raises(InvalidValue) as e:
        codec.parse_task_info(task_info(command={"value": "id -u", "user": user}), "task")
    assert isinstance(e.value, CallError)  # answered 400, the whole call refused
    msg = str(e.value)
    assert msg.startswith("'task.command.user' ") and "is invalid: it must be a POSIX user name" in msg
    with pytest.raises(CallError, match="'task.command.user' must be a string"):
        codec.parse_task_info(task_info(command={"value": "x", "user": 7}), "task")


def test_negative_durations_in_a_task_are_mesos_task_errors():
    with pytest.raises(TaskInvalid, match="'kill_policy.grace_period' must be non-negative"):
        codec.parse_task_info(task_info(kill_policy={"grace_period": {"nanoseconds": -1}}), "task")
    with pytest.raises(TaskInvalid, match="at most"):
        codec.parse_task_info(task_info(kill_policy={"grace_period": {"nanoseconds": 1e30}}), "task")
    with pytest.raises(TaskInvalid, match="`max_completion_time` must be non-negative"):
        codec.parse_task_info(task_info(max_completion_time={"nanoseconds": -5}), "task")


def test_task_sizes_are_bounded():
    cases = {
        "Task name": task_info(name="n" * 1025),
        "command value": task_info(command={"value": "x" * (64 * 1024 + 1)}),
        "arguments": task_info(command={"shell": False, "value": "x", "arguments": ["a"] * 1001}),
        "environment": task_info(command={"value": "x", "environment": {"variables": [
            {"name": f"V{i}", "value": "1"} for i in range(1001)]}}),
        "labels": task_info(labels={"labels": [{"key": f"k{i}"} for i in range(1001)]}),
        "image": task_info(container={"type": "DOCKER", "docker": {"image": "i" * 1025}}),
    }
    for what, ti in cases.items():
        with pytest.raises(TaskInvalid, match=what):
            codec.parse_task_info(ti, "task")


def test_task_data_must_be_base64_and_task_ids_echoable():
    with pytest.raises(CallError, match="base64"):
        codec.parse_task_info(task_info(data="not base64!"), "task")
    with pytest.raises(InvalidValue, match="longer than 1024"):
        codec.parse_task_info(task_info(task_id={"value": "x" * 1025}), "task")
    with pytest.raises(TaskInvalid, match="longer than 255"):
        codec.parse_task_info(task_info(task_id={"value": "x" * 256}), "task")


@pytest.mark.parametrize("body, where", [
    ({"type": "KILL", "kill": {"task_id": {"value": "a/b"}}}, "kill.task_id"),
    ({"type": "KILL", "kill": {"task_id": {"value": "t"}, "agent_id": {"value": ".."}}}, "kill.agent_id"),
    ({"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": {"value": "A1"}, "task_id": {"value": "t\x00"},
                                             "uuid": "AAECAwQFBgcICQoLDA0ODw=="}}, "acknowledge.task_id"),
    ({"type": "SHUTDOWN", "shutdown": {"executor_id": {"value": ""}, "agent_id": {"value": "A1"}}},
     "shutdown.executor_id"),
    ({"type": "DECLINE", "decline": {"offer_ids": [{"value": "a b"}]}}, "decline.offer_ids[0]"),
    (accept_call(), None),
    ({"type": "ACCEPT", "accept": {"offer_ids": [{"value": "O1"}], "operations": [
        {"type": "RESERVE", "id": {"value": "x/y"}, "reserve": {"resources": []}}]}}, "accept.operations[0].id"),
])
def test_ids_in_calls_follow_the_id_rules(body, where):
    body = {"framework_id": {"value": "F1"}, **body}
    if where is None:
        codec.parse_scheduler_call(body)
        body["framework_id"] = {"value": ".."}
        where = "framework_id"
    with pytest.raises(InvalidValue, match=f"Invalid '{where.replace('[', '.').replace(']', '.')}'"):
        codec.parse_scheduler_call(body)


def test_structure_errors_come_before_value_rules_and_validation():
    # A malformed call from no framework at all is still a conversion error.
    with pytest.raises(CallError, match="Missing required fields: kill.task_id"):
        codec.parse_scheduler_call({"type": "KILL", "kill": {}})
    with pytest.raises(CallError, match="Expecting 'framework_id' to be present"):
        codec.parse_scheduler_call({"type": "KILL", "kill": {"task_id": {"value": "t"}}})


def test_parse_call_refuses_deep_nesting():
    deep = b'{"type":"REVIVE","x":' + b"[" * 100 + b"]" * 100 + b"}"
    with pytest.raises(CallError, match="nested deeper than 64"):
        codec.parse_call(deep)
    codec.parse_call(deep, max_depth=200)
    with pytest.raises(CallError, match="nested too deeply"):
        codec.parse_call(b"[" * 200_000 + b"]" * 200_000)


def test_framework_info_rules():
    with pytest.raises(FrameworkRefused, match="'FrameworkInfo.id' '..' is invalid"):
        codec.parse_framework_info(fw(id={"value": ".."}))
    assert codec.parse_framework_info(fw(id={"value": ""}))[1] is None  # empty: a new framework, as Mesos
    with pytest.raises(FrameworkRefused, match="'FrameworkInfo.name' is longer than 1024"):
        codec.parse_framework_info(fw(name="n" * 1025))
    with pytest.raises(FrameworkRefused, match="labels"):
        codec.parse_framework_info(fw(labels={"labels": [{"key": "k", "value": "v" * (64 * 1024 + 1)}]}))
    with pytest.raises(CallError, match="checkpoint"):
        codec.parse_framework_info(fw(checkpoint="yes"))
    with pytest.raises(FrameworkRefused, match="roles; at most 1000"):
        codec.parse_framework_info(fw(roles=[f"r{i}" for i in range(1001)], capabilities=caps("MULTI_ROLE")))


@pytest.mark.parametrize("quantities, says", [({}, "at least one quantity"),
                                              ({"cpus": {"value": -1}}, "Negative values not supported"),
                                              ({"cpus": {"value": 1e13}}, "more than")])
def test_offer_filter_quantities_follow_mesos(quantities, says):
    with pytest.raises(FrameworkRefused, match=says):
        codec.parse_framework_info(fw(role="web", offer_filters={"web": {"min_allocatable_resources": {
            "quantities": [{"quantities": quantities}]}}}))


def test_validate_role_uses_the_shared_rule():
    for role in ("a" * 1025, "a/\x01"):
        with pytest.raises(FrameworkRefused, match="Role name"):
            codec.validate_role(role)


def test_parse_subscribe_and_typed_operations():
    from master.decide import scheduler as sd
    c = codec.parse_subscribe({"type": "SUBSCRIBE", "framework_id": {"value": "F1"}, "subscribe": {
        "framework_info": fw(id={"value": "F1"}, role="web"), "suppressed_roles": ["web"]}})
    assert c == sd.Subscribe(framework_id="F1", info=c.info, suppressed_roles=("web",))
    a = codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": "F1"}, "accept": {
        "offer_ids": [{"value": "O1"}], "operations": [
            {"type": "GROW_VOLUME", "id": {"value": "op"}, "grow_volume": {}},
            {"type": "LAUNCH_GROUP", "launch_group": {"executor": {"executor_id": {"value": "e1"}, "type": "DEFAULT"},
                                                      "task_group": {"tasks": [task_info()]}}},
            {"type": "UNRESERVE", "unreserve": {"resources": [scalar("cpus", 1, role="web")]}},
            {"type": "WHATEVER"}]}})
    create, group, unreserve, unknown = a.operations
    assert create == sd.UnsupportedOperation(kind="GROW_VOLUME", operation_id="op")
    assert group.task_ids == ("t1",) and [t.task_id for t in group.tasks] == ["t1"]
    assert group.executor == ev.ExecutorSpec(executor_id="e1", resources=[], task_ids=[])  # the decider fills them in
    assert unreserve.kind == "UNRESERVE" and unreserve.resources == Resources.parse("cpus(web):1")
    assert unknown == sd.UnknownOperation()
    with pytest.raises(CallError, match="Missing required fields: accept.operations\\[0\\].type"):
        codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": "F1"},
                                    "accept": {"operations": [{}]}})


def test_operation_status_out():
    st = codec.operation_status_out("op", "OPERATION_ERROR", "m", "A1")
    assert codec.ev_update_operation_status(st) == {"type": "UPDATE_OPERATION_STATUS", "update_operation_status": {
        "status": {"operation_id": {"value": "op"}, "state": "OPERATION_ERROR", "message": "m",
                   "agent_id": {"value": "A1"}}}}


@pytest.mark.parametrize("raw, want", [("Infinity", 1e300), (float("inf"), 1e300), ("1e999", 1e300), (10**400, 1e300),
                                       ("NaN", None), (float("nan"), None), ("-Infinity", None), (7, 7.0)])
def test_refuse_seconds_as_mesos_takes_them(raw, want):
    """A filter of Infinity is capped (master.allocator.effective_refuse_seconds: 365 days) and NaN is the default
    filter, as in Mesos: never a 400, which a pymesos driver takes as fatal."""
    assert codec.parse_refuse_seconds({"refuse_seconds": raw}) == want


@pytest.mark.parametrize("container, out", [
    (None, None),
    (_docker(), {"type": "DOCKER", "docker": {"image": "a", "network": "HOST", "privileged": False}}),
    (_docker(network="BRIDGE", port_mappings=[{"host_port": 31000, "container_port": 80}]),
     {"type": "DOCKER", "docker": {"image": "a", "network": "BRIDGE", "privileged": False,
                                   "port_mappings": [{"host_port": 31000, "container_port": 80, "protocol": "tcp"}]}}),
    ({"type": "MESOS", "network_infos": [{"port_mappings": [{"host_port": 31001, "container_port": 53,
                                                             "protocol": "udp"}]}]},
     {"type": "MESOS", "network_infos": [{"port_mappings": [{"host_port": 31001, "container_port": 53,
                                                             "protocol": "udp"}]}]}),
])
def test_a_tasks_container_is_rendered_as_mesos_does(container, out):
    spec = codec.parse_task_info(task_info(container=container, resources=[scalar("cpus", 1), PORTS]), "task")
    assert codec.container_out(spec) == out
    if out is not None:  # and it parses back to the same network
        again = codec.parse_task_info(task_info(container=out, resources=[scalar("cpus", 1), PORTS]), "task")
        assert (again.network, again.port_mappings) == (spec.network, spec.port_mappings)


# ---- TaskInfo.health_check and TaskInfo.check (docs/services.md, "Health checks and checks") -------------------------


def test_a_health_check_is_parsed_with_mesoss_defaults():
    spec = codec.parse_task_info(task_info(health_check={"type": "HTTP", "http": {"port": 8080}}), "task")
    assert spec.health_check == ev.HealthCheckSpec(type="HTTP", port=8080)
    hc = spec.health_check
    assert (hc.delay_seconds, hc.interval_seconds, hc.timeout_seconds, hc.consecutive_failures,
            hc.grace_period_seconds, hc.scheme, hc.path) == (15.0, 10.0, 20.0, 3, 10.0, "http", None)
    # older events (no such field) decode the same; the spec round-trips through the commit gate
    e = ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[spec], refuse_seconds=0.0)
    assert ev.decode_event(ev.encode_event(e)) == e


def test_every_kind_of_health_check_and_check():
    hc = {"type": "COMMAND", "command": {"value": "test -f ok", "environment": {"variables": [
        {"name": "A", "value": "1"}]}}, "delay_seconds": 0, "interval_seconds": "1.5", "timeout_seconds": 0,
          "consecutive_failures": 1, "grace_period_seconds": 0}
    check = {"type": "TCP", "tcp": {"port": 65535}, "delay_seconds": 1}
    spec = codec.parse_task_info(task_info(health_check=hc, check=check), "task")
    assert spec.health_check == ev.HealthCheckSpec(
        type="COMMAND", command=ev.CheckCommand(value="test -f ok", env=[ev.Label("A", "1")]), delay_seconds=0.0,
        interval_seconds=1.5, timeout_seconds=0.0, consecutive_failures=1, grace_period_seconds=0.0)
    assert spec.check == ev.CheckSpec(type="TCP", port=65535, delay_seconds=1.0)
    https = {"type": "HTTP", "http": {"port": 1, "path": "/h?x=1", "scheme": "https", "protocol": "IPv6",
                                      "statuses": [200]}}
    spec = codec.parse_task_info(task_info(health_check=https, check={
        "type": "COMMAND", "command": {"command": {"shell": False, "value": "/bin/true", "arguments": ["true"]}}}),
        "task")
    assert spec.health_check == ev.HealthCheckSpec(type="HTTP", port=1, path="/h?x=1", scheme="https", ipv6=True)
    assert spec.check.command == ev.CheckCommand(shell=False, value="/bin/true", arguments=["true"])
    # the type of a health check with one sub-message may be left out (as Mesos's master infers it)
    spec = codec.parse_task_info(task_info(health_check={"tcp": {"port": 80}}), "task")
    assert spec.health_check.type == "TCP"
    # rendered back in Mesos's JSON
    assert codec.health_check_out(ev.HealthCheckSpec(type="TCP", port=80), True) == {
        "type": "TCP", "tcp": {"port": 80, "protocol": "IPv4"}, "delay_seconds": 15.0, "interval_seconds": 10.0,
        "timeout_seconds": 20.0, "consecutive_failures": 3, "grace_period_seconds": 10.0}


REFUSED_CHECKS = [
    ({"http": {"port": 80}, "tcp": {"port": 80}}, "must specify 'type'"),
    ({"type": "UNKNOWN"}, "'UNKNOWN' is not a valid health check type"),
    ({"type": "HTTP", "tcp": {"port": 80}}, "Expecting 'http' to be set for HTTP health check"),
    ({"type": "COMMAND"}, "Expecting 'command' to be set"),
    ({"type": "COMMAND", "command": {"shell": True}}, "must contain a shell command"),
    ({"type": "COMMAND", "command": {"value": "x", "user": "root"}}, "runs as the task's user"),
    ({"type": "COMMAND", "command": {"value": "x", "uris": [{"value": "http://a/b"}]}}, "cannot fetch URIs"),
    ({"type": "COMMAND", "command": {"value": "x" * 70_000}}, "longer than"),
    ({"type": "HTTP", "http": {"port": 80, "scheme": "ftp"}}, "Unsupported HTTP health check scheme: 'ftp'"),
    ({"type": "HTTP", "http": {"port": 80, "path": "health"}}, "must start with '/'"),
    ({"type": "HTTP", "http": {"port": 80, "path": "/" * 5000}}, "longer than"),
    # the event's bound (CheckSpec.path is a Name): a TASK_ERROR, never an event the commit gate refuses
    ({"type": "HTTP", "http": {"port": 80, "path": "/" * 1025}}, "longer than 1024 characters"),
    ({"type": "TCP", "tcp": {"port": 0}}, "outside [1, 65535]"),
    ({"type": "TCP", "tcp": {"port": 65536}}, "outside [1, 65535]"),
    ({"type": "TCP", "tcp": {"port": 80}, "delay_seconds": -1}, "'delay_seconds' to be non-negative"),
    ({"type": "TCP", "tcp": {"port": 80}, "interval_seconds": -0.5}, "'interval_seconds' to be non-negative"),
    ({"type": "TCP", "tcp": {"port": 80}, "timeout_seconds": -1}, "'timeout_seconds' to be non-negative"),
    ({"type": "TCP", "tcp": {"port": 80}, "grace_period_seconds": -1}, "'grace_period_seconds' to be non-negative"),
    ({"type": "TCP", "tcp": {"port": 80}, "interval_seconds": 1e300}, "at most"),
    ({"type": "TCP", "tcp": {"port": 80}, "grace_period_seconds": MAX_SECONDS * 2}, "at most"),
]


@pytest.mark.parametrize("hc,message", REFUSED_CHECKS, ids=[m for _, m in REFUSED_CHECKS])
def test_a_health_check_mesos_refuses_is_a_task_error(hc, message):
    with pytest.raises(TaskInvalid) as exc:
        codec.parse_task_info(task_info(health_check=hc), "task")
    assert message in str(exc.value) and "health check is invalid" in str(exc.value)


def test_a_check_mesos_refuses_is_a_task_error():
    for check, message in [({"type": "COMMAND", "command": {"value": "x"}}, "Missing required fields"),
                           ({"tcp": {"port": 80}}, "CheckInfo must specify 'type'"),
                           ({"type": "HTTP", "http": {"port": 80, "path": "x"}}, "of HTTP check must start"),
                           ({"type": "TCP", "tcp": {"port": 80}, "delay_seconds": -1}, "non-negative")]:
        with pytest.raises((TaskInvalid, CallError)) as exc:
            codec.parse_task_info(task_info(check=check), "task")
        assert message in str(exc.value)
    # a check has no grace period or failure count to refuse: they are not CheckInfo's fields, and ignored
    spec = codec.parse_task_info(task_info(check={"type": "TCP", "tcp": {"port": 80}, "consecutive_failures": -1}),
                                 "task")
    assert spec.check == ev.CheckSpec(type="TCP", port=80)


MALFORMED_CHECKS = [
    ([], "must be a JSON object"),
    ({"type": "GRPC"}, "unknown health check type"),
    ({"type": "TCP", "tcp": {}}, "Missing required fields"),
    ({"type": "TCP", "tcp": {"port": "eighty"}}, "must be an integer"),
    ({"type": "TCP", "tcp": {"port": 2**32}}, "must be an integer in"),
    ({"type": "TCP", "tcp": {"port": -1}}, "must be an integer in"),
    ({"type": "TCP", "tcp": {"port": 80, "protocol": "IPX"}}, "unknown protocol"),
    ({"type": "TCP", "tcp": {"port": 80}, "delay_seconds": "NaN"}, "finite"),
    ({"type": "TCP", "tcp": {"port": 80}, "timeout_seconds": float("inf")}, "finite"),
    ({"type": "TCP", "tcp": {"port": 80}, "interval_seconds": 10**400}, "finite"),
    ({"type": "TCP", "tcp": {"port": 80}, "consecutive_failures": -1}, "must be an integer in"),
    ({"type": "TCP", "tcp": {"port": 80}, "consecutive_failures": 2**32}, "must be an integer in"),
    ({"type": "TCP", "tcp": {"port": 80}, "consecutive_failures": 1.5}, "must be an integer"),
    ({"type": "COMMAND", "command": {"value": 3}}, "must be a string"),
    ({"type": "HTTP", "http": {"port": 80, "statuses": ["x"]}}, "must be an integer"),
    ({"type": "HTTP", "http": "80"}, "must be a JSON object"),
]


@pytest.mark.parametrize("hc,message", MALFORMED_CHECKS, ids=[m for _, m in MALFORMED_CHECKS])
def test_a_malformed_health_check_fails_the_call(hc, message):
    with pytest.raises(CallError) as exc:
        codec.parse_task_info(task_info(health_check=hc), "task")
    assert message in str(exc.value) and not isinstance(exc.value, TaskInvalid)


def test_zero_consecutive_failures_is_taken_as_mesos_takes_it():
    """Mesos does not refuse 0: its checker kills at the first failure counted, as with 1 (agent/checks.py)."""
    spec = codec.parse_task_info(task_info(health_check={"type": "TCP", "tcp": {"port": 80},
                                                         "consecutive_failures": 0}), "task")
    assert spec.health_check.consecutive_failures == 0


def test_health_and_check_status_in_mesoss_json():
    st = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=1.0, healthy=False,
                       check_status=ev.CheckStatus(type="COMMAND", exit_code=0))
    out = codec.status_out("F", "t", "A", st, [])
    assert out["healthy"] is False and out["check_status"] == {"type": "COMMAND", "command": {"exit_code": 0}}
    empty = codec.status_out("F", "t", "A", ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR",
                                                          timestamp=1.0, check_status=ev.CheckStatus(type="TCP")), [])
    assert empty["check_status"] == {"type": "TCP", "tcp": {}} and "healthy" not in empty
