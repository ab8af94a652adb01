"""Unit tests for master.decide.scheduler: every scheduler-call decider, on states built by folding events.

Calls are built from Mesos JSON through the wire codec (codec.parse_scheduler_call / parse_subscribe), as the
handler builds them, so each test also pins the parse -> decide path. Every decision a test takes is checked by
`decided`: the decider did not touch the state, deciding again gives the same decision, and every event it
produced passes the commit gate (eventstore.events.encode_event) and folds.
"""

from __future__ import annotations

import dataclasses

import pytest

from eventstore import events as ev
from eventstore.resources import Resources
from master import codec
from master.decide import DecideConfig, Decision
from master.decide import scheduler as sd
from master.effects import ToFramework
from master.limits import Limits
from master.state import State, apply, state_hash

CID = "c1"
NOW = 500.0
CFG = DecideConfig(allocation_interval=1.0)
AGENT_RES = "cpus:4;mem:4096;disk:8192;ports:[31000-32000]"
PA = ["PARTITION_AWARE"]


# ---- building states ------------------------------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.state = State()
        self.ts = 100.0

    def __call__(self, event) -> None:
        apply(self.state, ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event))


def res(text: str) -> list:
    return Resources.parse(text).to_list()


def fw_info(name: str = "fw", roles=("*",), caps=(), **kw) -> ev.FrameworkInfo:
    return ev.FrameworkInfo(name=name, user="u", roles=list(roles), capabilities=list(caps), **kw)


def spec(tid: str, text: str = "cpus:1;mem:128", aid: str = "A1") -> ev.TaskSpec:
    return ev.TaskSpec(task_id=tid, name=tid, agent_id=aid, resources=res(text),
                       command=ev.CommandSpec(value="sleep 100"))


def cluster(caps=(), roles=("*",)) -> Log:
    """Agents A1 and A2, framework F1 (subscribed), offers O1 (all of A1) and O2 (all of A2) to F1."""
    log = Log()
    log(ev.ClusterCreated(cluster_id=CID))
    log(ev.LeaderElected(leader_id="m1:1", http="m1:5050", term=1, config={"allocation_interval": 1.0}))
    log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES)))
    log(ev.AgentRegistered(agent_id="A2", hostname="h2", http="h2:5051", resources=res(AGENT_RES)))
    log(ev.FrameworkSubscribed(framework_id="F1", info=fw_info(roles=roles, caps=caps)))
    role = roles[0] if roles else "*"
    log(ev.OffersMade(offers=[
        ev.OfferRecord(offer_id="O1", framework_id="F1", agent_id="A1", role=role, resources=res(AGENT_RES)),
        ev.OfferRecord(offer_id="O2", framework_id="F1", agent_id="A2", role=role, resources=res(AGENT_RES)),
    ], trigger="t"))
    return log


def running(log: Log, tid: str = "t1", uuid: str = "dXVpZDE=") -> None:
    """Launch `tid` on A1 from O1 and report it RUNNING with a pending (unacknowledged) update."""
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[spec(tid)], refuse_seconds=0.0))
    log(ev.StatusUpdated(framework_id="F1", task_id=tid, agent_id="A1",
                         status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=101.0,
                                              uuid=uuid)))


# ---- parse and decide ----------------------------------------------------------------------------------------


def call(type_: str, payload: dict | None = None, framework_id: str = "F1"):
    body: dict = {"type": type_, "framework_id": {"value": framework_id}}
    if payload is not None:
        body[type_.lower()] = payload
    return codec.parse_scheduler_call(body)


def subscribe_call(framework_id: str | None = None, suppressed=(), **info):
    fi = {"user": "u", "name": "fw", **info}
    body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": fi, "suppressed_roles": list(suppressed)}}
    if framework_id is not None:
        fi["id"] = {"value": framework_id}
        body["framework_id"] = {"value": framework_id}
    return codec.parse_subscribe(body)


def decided(state: State, c, config: DecideConfig = CFG, fold: Log | None = None) -> Decision:
    """Decide; check purity, determinism and the commit gate; fold the events into `fold` if given."""
    before = state_hash(state)
    d = sd.decide(state, c, NOW, config)
    assert state_hash(state) == before, "a decider changed the state"
    assert sd.decide(state, c, NOW, config) == d, "deciding twice gave another decision"
    for e in d.events:
        ev.encode_event(e)  # the commit gate: raises on an event the fold would not take
    assert d.refusal is None or not d.events
    if fold is not None:
        for e in d.events:
            fold(e)
    return d


def refused(d: Decision, status: int, says: str) -> None:
    assert d.refusal is not None, d
    assert d.refusal.status == status and says in d.refusal.message, d.refusal
    assert not d.events and not d.messages


def updates(d: Decision, framework_id: str = "F1") -> list[dict]:
    return [m.event["update"]["status"] for m in d.messages
            if isinstance(m, ToFramework) and m.framework_id == framework_id and m.event["type"] == "UPDATE"]


def operation_updates(d: Decision) -> list[dict]:
    return [m.event["update_operation_status"]["status"] for m in d.messages
            if isinstance(m, ToFramework) and m.event["type"] == "UPDATE_OPERATION_STATUS"]


def scalar(name: str, v) -> dict:
    return {"name": name, "type": "SCALAR", "scalar": {"value": v}}


def task_info(tid: str, agent: str = "A1", cpus=1, mem=128, **kw) -> dict:
    d = {"name": tid, "task_id": {"value": tid}, "agent_id": {"value": agent},
         "resources": [scalar("cpus", cpus), scalar("mem", mem)], "command": {"value": "sleep 100"}}
    d.update(kw)
    return d


def launch(*tasks: dict, **op) -> dict:
    return {"type": "LAUNCH", "launch": {"task_infos": list(tasks)}, **op}


def accept(offers=("O1",), *operations: dict, refuse=None) -> sd.Accept:
    p: dict = {"offer_ids": [{"value": o} for o in offers], "operations": list(operations)}
    if refuse is not None:
        p["filters"] = {"refuse_seconds": refuse}
    return call("ACCEPT", p)


def the_accept(d: Decision) -> ev.OffersAccepted:
    (e,) = [e for e in d.events if isinstance(e, ev.OffersAccepted)]
    return e


# ---- SUBSCRIBE -------------------------------------------------------------------------------------------------


def test_subscribe_new_framework_gets_the_next_id():
    log = cluster()
    d = decided(log.state, subscribe_call(), fold=log)
    assert d.reply == sd.Subscribed(f"{CID}-0001", resubscribe=False)
    (e,) = d.events
    assert isinstance(e, ev.FrameworkSubscribed) and e.framework_id == f"{CID}-0001" and not e.resubscribe
    assert log.state.frameworks[f"{CID}-0001"].connected


def test_subscribe_new_id_skips_ids_frameworks_chose():
    log = cluster()
    log(ev.FrameworkSubscribed(framework_id=f"{CID}-0002", info=fw_info()))  # chose the id its turn would give
    assert log.state.next_framework == 2
    d = decided(log.state, subscribe_call())
    assert d.reply.framework_id == f"{CID}-0003"


def test_resubscribe_keeps_user_and_checkpoint_and_refuses_a_principal_change():
    log = cluster()
    log(ev.FrameworkSubscribed(framework_id="F9", info=fw_info(checkpoint=True, principal="p")))
    d = decided(log.state, subscribe_call("F9", user="someone-else", principal="p"))
    (e,) = d.events
    assert e.resubscribe and e.info.user == "u" and e.info.checkpoint is True
    assert d.reply == sd.Subscribed("F9", resubscribe=True)
    refused(decided(log.state, subscribe_call("F9", principal="q")), 400, "Changing framework's principal")


def test_subscribe_with_an_unknown_id_registers_it():
    d = decided(cluster().state, subscribe_call("mine"))
    assert d.reply == sd.Subscribed("mine", resubscribe=False)


def test_subscribe_removed_framework_is_refused():
    log = cluster()
    log(ev.FrameworkRemoved(framework_id="F1", reason="teardown"))
    refused(decided(log.state, subscribe_call("F1")), 403, "Framework has been removed")


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "a\\b", "a b", "tab\there", "x" * 256])
def test_subscribe_with_an_invalid_framework_id_is_an_error_event(bad):
    c = subscribe_call(bad)
    assert c.info is None and "FrameworkInfo.id" in c.invalid
    refused(decided(cluster().state, c), 400, "FrameworkInfo.id")


def test_subscribe_with_an_empty_framework_id_is_a_new_framework():
    c = codec.parse_subscribe({"type": "SUBSCRIBE", "framework_id": {"value": ""}, "subscribe": {
        "framework_info": {"user": "u", "name": "n", "id": {"value": ""}}}})
    assert c.framework_id is None
    assert decided(cluster().state, c).reply.framework_id == f"{CID}-0001"


def test_subscribe_invalid_role_is_refused():
    refused(decided(cluster().state, subscribe_call(role="a/../b")), 400, "Role name 'a/../b' is invalid")


def test_subscribe_suppressed_roles_must_be_the_frameworks():
    d = decided(cluster().state, subscribe_call(suppressed=["web"], role="db"))
    refused(d, 400, "Suppressed roles {web} are not contained in the set of roles")
    ok = decided(cluster().state, subscribe_call(suppressed=["db", "db"], role="db"))
    assert ok.events[0].suppressed_roles == ["db"]


def test_subscribe_with_offer_constraints_is_refused():
    c = codec.parse_subscribe({"type": "SUBSCRIBE", "subscribe": {
        "framework_info": {"user": "u", "name": "n"},
        "offer_constraints": {"role_constraints": {"*": {"groups": []}}}}})
    refused(decided(cluster().state, c), 400, "Offer constraints are not supported")


def test_subscribe_beyond_max_frameworks_is_refused_but_known_ones_resubscribe():
    log = cluster()  # F1 is registered
    config = DecideConfig(limits=Limits(max_frameworks=1))
    refused(decided(log.state, subscribe_call(), config), 403, "limits.max_frameworks")
    assert decided(log.state, subscribe_call("F1"), config).reply == sd.Subscribed("F1", True)


def test_subscribe_beyond_the_configured_role_and_label_limits_is_refused():
    config = DecideConfig(limits=Limits(max_roles_per_call=2, max_labels=1))
    c = subscribe_call(roles=["a", "b", "c"], capabilities=[{"type": "MULTI_ROLE"}])
    refused(decided(cluster().state, c, config), 400, "limits.max_roles_per_call")
    c = subscribe_call(labels={"labels": [{"key": "a"}, {"key": "b"}]})
    refused(decided(cluster().state, c, config), 400, "limits.max_labels")


def test_subscribe_huge_failover_timeout_is_capped_and_commits():
    d = decided(cluster().state, subscribe_call(failover_timeout=1e300))
    assert d.events[0].info.failover_timeout == 100 * 365 * 86400.0


# ---- UPDATE_FRAMEWORK ------------------------------------------------------------------------------------------


def update_call(**info):
    fi = {"user": "u", "name": "fw", "id": {"value": "F1"}, **info}
    return call("UPDATE_FRAMEWORK", {"framework_info": fi})


def test_update_framework_rescinds_offers_and_records_the_new_info():
    log = cluster()
    d = decided(log.state, update_call(name="renamed"), fold=log)
    assert d.reply == 200
    rescind, sub = d.events
    assert isinstance(rescind, ev.OffersRescinded) and rescind.offer_ids == ["O1", "O2"]
    assert rescind.reason == "framework_updated"  # announced: the framework must not use them
    assert isinstance(sub, ev.FrameworkSubscribed) and sub.resubscribe
    assert log.state.frameworks["F1"].info.name == "renamed" and not log.state.offers


def test_update_framework_refusals():
    state = cluster().state
    refused(decided(state, update_call(user="other")), 400, "Updating 'FrameworkInfo.user' is unsupported")
    refused(decided(state, update_call(checkpoint=True)), 400, "Updating 'FrameworkInfo.checkpoint'")
    refused(decided(state, update_call(principal="p")), 400, "principal")
    refused(decided(state, update_call(role="a b")), 400, "Role name")
    with pytest.raises(codec.CallError, match="differs"):
        call("UPDATE_FRAMEWORK", {"framework_info": {"user": "u", "name": "fw", "id": {"value": "F2"}}})


# ---- ACCEPT ----------------------------------------------------------------------------------------------------


def test_accept_launches_with_the_offers_role_and_declines_the_rest():
    log = cluster(roles=("web",))
    d = decided(log.state, accept(("O1",), launch(task_info("t1")), refuse=30), fold=log)
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["t1"] and e.tasks[0].role == "web"
    assert e.offer_ids == ["O1"] and e.refuse_seconds == 30.0 and not e.rejected and not d.messages
    assert log.state.task("F1", "t1").state == "TASK_STAGING"


def test_accept_default_and_huge_filters():
    state = cluster().state
    assert the_accept(decided(state, accept(("O1",)))).refuse_seconds == 5.0  # Mesos's default filter
    assert the_accept(decided(state, accept(("O1",), refuse=1e300))).refuse_seconds == 365 * 86400.0
    # Infinity (pymesos sends float('inf') as a bare Infinity) is capped like any huge filter, as Mesos does;
    # NaN is no duration: the default filter.
    assert the_accept(decided(state, accept(("O1",), refuse="Infinity"))).refuse_seconds == 365 * 86400.0
    assert the_accept(decided(state, accept(("O1",), refuse=float("nan")))).refuse_seconds == 5.0


@pytest.mark.parametrize("caps, lost", [((), "TASK_LOST"), (PA, "TASK_DROPPED")])
def test_accept_with_invalid_offers_loses_every_task_and_returns_the_valid_offers(caps, lost):
    log = cluster(caps=caps)
    d = decided(log.state, accept(("O1", "nope"), launch(task_info("t1"), task_info("t2"))), fold=log)
    assert [(s["task_id"]["value"], s["state"], s["reason"]) for s in updates(d)] == [
        ("t1", lost, "REASON_INVALID_OFFERS"), ("t2", lost, "REASON_INVALID_OFFERS")]
    assert all(s["source"] == "SOURCE_MASTER" and "uuid" not in s and "nope" in s["message"] for s in updates(d))
    (e,) = d.events  # the valid offer goes back, unfiltered
    assert isinstance(e, ev.OffersDeclined) and e.offer_ids == ["O1"] and e.refuse_seconds == 0.0
    assert not log.state.tasks["F1"] and "O1" not in log.state.offers and not log.state.filters


@pytest.mark.parametrize("offers, says", [((), "No offers specified"), (("O1", "O1"), "O1"),
                                          (("O1", "O2"), "same agent")])
def test_accept_offer_rules(offers, says):
    d = decided(cluster().state, accept(offers, launch(task_info("t1"))))
    (st,) = updates(d)
    assert st["state"] == "TASK_LOST" and says in st["message"]


def test_accept_of_another_frameworks_offer_is_invalid():
    log = cluster()
    log(ev.FrameworkSubscribed(framework_id="F2", info=fw_info("other")))
    d = decided(log.state, call("ACCEPT", {"offer_ids": [{"value": "O1"}], "operations": [launch(task_info("t"))]},
                                framework_id="F2"))
    (st,) = updates(d, "F2")
    assert st["state"] == "TASK_LOST" and not d.events


def test_accept_naming_thousands_of_unknown_offers_stays_small():
    ids = [f"unknown-offer-{i}" for i in range(2000)]
    c = accept(ids, launch(*[task_info(f"t{i}") for i in range(100)]))
    # Over the default limit: one 400 naming the limit, nothing else.
    refused(decided(cluster().state, c), 400, "limits.max_offers_per_call")
    # Allowed by the configuration: still no message that grows with offers x tasks.
    d = decided(cluster().state, c, DecideConfig(limits=Limits(max_offers_per_call=5000)))
    sts = updates(d)
    assert len(sts) == 100
    assert all(len(s["message"]) < 1500 and "and 1990 more" in s["message"] for s in sts)
    assert sum(len(codec.dumps(m.event)) for m in d.messages) < 200_000


def test_accept_limits_on_operations_and_tasks():
    config = DecideConfig(limits=Limits(max_operations_per_call=2, max_tasks_per_call=3))
    state = cluster().state
    refused(decided(state, accept(("O1",), launch(), launch(), launch()), config), 400,
            "limits.max_operations_per_call")
    four = [task_info(f"t{i}", cpus=0.1, mem=1) for i in range(4)]
    refused(decided(state, accept(("O1",), launch(*four[:2]), launch(*four[2:])), config), 400,
            "limits.max_tasks_per_call")
    assert len(the_accept(decided(state, accept(("O1",), launch(*four[:3])), config)).tasks) == 3


def test_accept_task_rules_in_mesos_order():
    log = cluster()
    running(log, "old")  # consumes O1; launch from O2 (A2) below
    tasks = [
        task_info("ok", agent="A2"),
        task_info("ok", agent="A2"),  # duplicate within the call
        task_info("old", agent="A2"),  # duplicate of a live task
        task_info("a/b", agent="nope"),  # invalid id (checked before the agent)
        task_info("elsewhere", agent="A1"),  # wrong agent
        task_info("huge", agent="A2", cpus=100),  # more than the offer holds
        task_info("late", agent="A2", cpus=3.5),  # fits what is left after "ok"? no: 4 - 1 = 3
        task_info("fits", agent="A2", cpus=3),
    ]
    d = decided(log.state, accept(("O2",), launch(*tasks)), fold=log)
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["ok", "fits"]
    why = {r.task_id: (r.state, r.reason, r.message) for r in e.rejected}
    assert all(s == "TASK_ERROR" and r == "REASON_TASK_INVALID" for s, r, _ in why.values())
    assert "Task has duplicate ID: ok" in why["ok"][2] and "Task has duplicate ID: old" in why["old"][2]
    assert "Task ID 'a/b' is invalid" in why["a/b"][2]
    assert why["elsewhere"][2] == "Task uses invalid agent A1 while agent A2 is expected"
    assert "more resources" in why["huge"][2] and "more resources" in why["late"][2]
    assert log.state.task("F1", "fits") is not None


def test_accept_task_with_an_unsupported_field_gets_task_error_naming_it():
    d = decided(cluster().state, accept(("O1",), launch(
        task_info("hc", max_completion_time={"nanoseconds": 10**9}),
        task_info("fine"))))
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["fine"]
    (r,) = e.rejected
    assert r.task_id == "hc" and "max_completion_time" in r.message and "not supported" in r.message


def _bridge(*mappings: tuple[int, int]) -> dict:
    return {"type": "DOCKER", "docker": {"image": "a", "network": "BRIDGE", "port_mappings": [
        {"host_port": h, "container_port": c} for h, c in mappings]}}


def test_accept_a_task_forwards_only_host_ports_it_was_given():
    log = cluster()
    ports = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}

    def with_ports(tid: str, container: dict) -> dict:
        t = task_info(tid, container=container)
        t["resources"] = t["resources"] + [ports] if tid not in ("no-ports", "no-container") else t["resources"]
        return t

    d = decided(log.state, accept(("O1",), launch(
        with_ports("mapped", _bridge((31000, 80), (31001, 8080))),
        with_ports("not-given", _bridge((31000, 80), (31005, 81))),
        with_ports("no-ports", _bridge((31000, 80))),
        with_ports("twice", _bridge((31000, 80), (31000, 81))),
        with_ports("no-container", None))), fold=log)
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["mapped", "no-container"]
    (mapped, _) = e.tasks
    assert mapped.network == "BRIDGE" and [(m.host_port, m.container_port) for m in mapped.port_mappings] == \
        [(31000, 80), (31001, 8080)]
    why = {r.task_id: (r.state, r.reason, r.message) for r in e.rejected}
    assert why == {
        "not-given": ("TASK_ERROR", "REASON_TASK_INVALID",
                      "Task maps host port 31005, which is not in its 'ports' resources"),
        "no-ports": ("TASK_ERROR", "REASON_TASK_INVALID",
                     "Task maps host port 31000, which is not in its 'ports' resources"),
        "twice": ("TASK_ERROR", "REASON_TASK_INVALID", "Task maps host port 31000/tcp more than once")}
    assert log.state.task("F1", "mapped").spec == mapped  # folded as decided


def test_accept_launch_with_an_operation_id_is_task_error():
    d = decided(cluster().state, accept(("O1",), launch(task_info("t1"), id={"value": "op1"})))
    (r,) = the_accept(d).rejected
    assert r.message == "The `id` field cannot be set on LAUNCH operations"
    assert not the_accept(d).tasks


def test_accept_a_custom_executor_group_is_task_error_and_the_rest_goes_on():
    # Task groups themselves: tests/test_task_groups.py
    group = {"type": "LAUNCH_GROUP", "launch_group": {
        "executor": {"type": "CUSTOM", "executor_id": {"value": "e1"}, "command": {"value": "./my-executor"},
                     "resources": [scalar("cpus", 0.1), scalar("mem", 32), scalar("disk", 10)]},
        "task_group": {"tasks": [task_info("g1"), task_info("g2")]}}}
    d = decided(cluster().state, accept(("O1",), group, launch(task_info("solo"))))
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["solo"]
    assert [(r.task_id, r.reason) for r in e.rejected] == [("g1", "REASON_TASK_GROUP_INVALID"),
                                                           ("g2", "REASON_TASK_GROUP_INVALID")]
    assert all("Custom executors" in r.message for r in e.rejected)


@pytest.mark.parametrize("kind", codec.UNSUPPORTED_OPERATIONS)
def test_accept_with_an_unsupported_operation_does_nothing_and_says_so(kind):
    log = cluster(roles=("db",))
    reserve = {"type": "RESERVE", "reserve": {"resources": [dict(scalar("cpus", 1), role="db")]}}
    d = decided(log.state, accept(("O1",), reserve, {"type": kind, "id": {"value": "op-1"}},
                                  launch(task_info("t1")), refuse=60), fold=log)
    e = the_accept(d)
    assert not e.tasks and not e.operations and e.refuse_seconds == 0.0  # offers back, unfiltered
    (r,) = e.rejected
    assert r.task_id == "t1" and r.state == "TASK_ERROR" and f"unsupported operation {kind}" in r.message
    (op,) = operation_updates(d)
    assert op == {"operation_id": {"value": "op-1"}, "state": "OPERATION_ERROR",
                  "message": f"{kind} is not supported by Drover yet"}
    assert not log.state.agents["A1"].dynamic and not log.state.filters


def test_accept_reserve_and_launch_on_it():
    log = cluster(roles=("db",))
    reserve = {"type": "RESERVE", "reserve": {"resources": [dict(scalar("cpus", 2), role="db")]}}
    on_it = task_info("t1", resources=[dict(scalar("cpus", 1), role="db"), scalar("mem", 64)])
    d = decided(log.state, accept(("O1",), reserve, launch(on_it)), fold=log)
    e = the_accept(d)
    assert [(op.kind, Resources(op.resources)) for op in e.operations] == [("RESERVE", Resources.parse("cpus(db):2"))]
    assert [t.task_id for t in e.tasks] == ["t1"]
    assert Resources(log.state.agents["A1"].dynamic) == Resources.parse("cpus(db):2")


def test_accept_invalid_reservations_are_dropped_with_operation_error_when_they_have_an_id():
    log = cluster(roles=("db",))
    too_much = {"type": "RESERVE", "reserve": {"resources": [dict(scalar("cpus", 99), role="db")]}}
    wrong_role = {"type": "RESERVE", "id": {"value": "r2"},
                  "reserve": {"resources": [dict(scalar("cpus", 1), role="web")]}}
    not_reserved = {"type": "UNRESERVE", "unreserve": {"resources": [dict(scalar("cpus", 1), role="db")]}}
    mixed_types = {"type": "RESERVE", "id": {"value": "r4"}, "reserve": {"resources": [
        dict(scalar("cpus", 1), role="db"),
        {"name": "cpus", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 2}]}, "role": "db"}]}}
    d = decided(log.state, accept(("O1",), too_much, wrong_role, not_reserved, mixed_types))
    e = the_accept(d)
    assert not e.operations
    ops = {o["operation_id"]["value"]: o for o in operation_updates(d)}
    assert set(ops) == {"r2", "r4"} and all(o["state"] == "OPERATION_ERROR" for o in ops.values())
    # An operation with an id asks for feedback no Drover agent gives (Mesos: no RESOURCE_PROVIDER capability).
    assert "RESOURCE_PROVIDER" in ops["r2"]["message"]
    assert "invalid resources" in ops["r4"]["message"] and "both SCALAR and RANGES" in ops["r4"]["message"]


def test_accept_unknown_operation_is_ignored():
    d = decided(cluster().state, accept(("O1",), {"type": "SOMETHING_NEW"}, launch(task_info("t1"))))
    assert [t.task_id for t in the_accept(d).tasks] == ["t1"]


def test_accept_task_id_beyond_what_a_rejection_can_echo_is_a_400():
    with pytest.raises(codec.InvalidValue, match="longer than 1024"):
        accept(("O1",), launch(task_info("x" * 2000)))


def test_calls_from_unknown_or_disconnected_frameworks_are_refused():
    log = cluster()
    refused(decided(log.state, call("REVIVE", framework_id="F404")), 400, "Framework cannot be found")
    log(ev.FrameworkDisconnected(framework_id="F1"))
    for c in (accept(("O1",)), call("DECLINE", {"offer_ids": []}), call("REVIVE"), call("TEARDOWN"),
              call("KILL", {"task_id": {"value": "t"}}), call("RECONCILE", {"tasks": []})):
        refused(decided(log.state, c), 403, "Framework is not subscribed")


# ---- DECLINE ---------------------------------------------------------------------------------------------------


def test_decline_filters_the_valid_offers_and_ignores_unknown_ones():
    log = cluster()
    d = decided(log.state, call("DECLINE", {"offer_ids": [{"value": "O2"}, {"value": "nope"}],
                                            "filters": {"refuse_seconds": 30}}), fold=log)
    (e,) = d.events
    assert isinstance(e, ev.OffersDeclined) and e.offer_ids == ["O2"] and e.refuse_seconds == 30.0
    assert decided(log.state, call("DECLINE", {"offer_ids": [{"value": "nope"}]})) == Decision()


def test_decline_limits_and_ids():
    ids = [{"value": f"o{i}"} for i in range(1001)]
    refused(decided(cluster().state, call("DECLINE", {"offer_ids": ids})), 400, "limits.max_offers_per_call")
    with pytest.raises(codec.InvalidValue, match="decline.offer_ids"):
        call("DECLINE", {"offer_ids": [{"value": ".."}]})


# ---- ACKNOWLEDGE / KILL / SHUTDOWN ---------------------------------------------------------------------------------

UUID = "AAECAwQFBgcICQoLDA0ODw=="  # 16 bytes


def ack(task_id: str, uuid: str = UUID):
    return call("ACKNOWLEDGE", {"agent_id": {"value": "A1"}, "task_id": {"value": task_id}, "uuid": uuid})


def test_acknowledge_of_the_pending_update_is_recorded_and_stale_ones_change_nothing():
    log = cluster()
    running(log, "t1", uuid=UUID)
    d = decided(log.state, ack("t1"), fold=log)
    assert d.events == [ev.StatusAcknowledged(framework_id="F1", task_id="t1", uuid=UUID)]
    assert log.state.task("F1", "t1").pending is None
    assert decided(log.state, ack("t1")) == Decision()  # already acknowledged
    assert decided(log.state, ack("nope")) == Decision()


def test_kill_of_a_live_task_is_recorded_with_its_grace_period():
    log = cluster()
    running(log)
    d = decided(log.state, call("KILL", {"task_id": {"value": "t1"},
                                         "kill_policy": {"grace_period": {"nanoseconds": 2_500_000_000}}}), fold=log)
    assert d.events == [ev.TaskKillRequested(framework_id="F1", task_id="t1", grace_seconds=2.5)]
    assert log.state.task("F1", "t1").kill_requested
    # Naming another agent: ignored, as Mesos does.
    assert decided(log.state, call("KILL", {"task_id": {"value": "t1"}, "agent_id": {"value": "A2"}})) == Decision()


@pytest.mark.parametrize("ns, says", [(-1, "non-negative"), (1e30, "at most"), ("NaN", "finite"),
                                      ("Infinity", "finite")])
def test_kill_grace_period_must_be_finite_and_in_range(ns, says):
    with pytest.raises(codec.CallError, match=says):
        call("KILL", {"task_id": {"value": "t1"}, "kill_policy": {"grace_period": {"nanoseconds": ns}}})


@pytest.mark.parametrize("caps, state", [((), "TASK_LOST"), (PA, "TASK_UNKNOWN")])
def test_kill_of_an_unknown_task_is_a_reconciliation_answer(caps, state):
    d = decided(cluster(caps=caps).state, call("KILL", {"task_id": {"value": "ghost"}}))
    assert not d.events
    (st,) = updates(d)
    assert (st["state"], st["reason"], st["source"]) == (state, "REASON_RECONCILIATION", "SOURCE_MASTER")
    assert "uuid" not in st and st["timestamp"] == NOW


def test_kill_of_a_terminal_task_changes_nothing():
    log = cluster()
    running(log)
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1",
                         status=ev.TaskStatus(state="TASK_FINISHED", source="SOURCE_EXECUTOR", timestamp=102.0,
                                              uuid="dXVpZDI=")))
    assert log.state.task("F1", "t1").terminal  # still held: its last update is not acknowledged
    assert decided(log.state, call("KILL", {"task_id": {"value": "t1"}})) == Decision()


def test_shutdown_of_a_tasks_command_executor_kills_the_task():
    log = cluster()
    running(log)
    d = decided(log.state, call("SHUTDOWN", {"executor_id": {"value": "t1"}, "agent_id": {"value": "A1"}}))
    assert d.events == [ev.TaskKillRequested(framework_id="F1", task_id="t1")]
    for other in ({"executor_id": {"value": "t1"}, "agent_id": {"value": "A2"}},
                  {"executor_id": {"value": "nope"}, "agent_id": {"value": "A1"}}):
        assert decided(log.state, call("SHUTDOWN", other)) == Decision()


# ---- RECONCILE -----------------------------------------------------------------------------------------------------


def test_implicit_reconciliation_answers_for_every_task():
    log = cluster()
    running(log, "t1")
    d = decided(log.state, call("RECONCILE", {"tasks": []}))
    (st,) = updates(d)
    assert (st["task_id"]["value"], st["state"], st["reason"]) == ("t1", "TASK_RUNNING", "REASON_RECONCILIATION")
    assert "uuid" not in st and not d.events


def test_reconciliation_answers_carry_the_latest_health_and_container():
    # As Mesos's master: a reconciliation answer has its task's latest `healthy`, check status and container.
    log = cluster()
    running(log, "t1")
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1",
                         status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=103.0,
                                              uuid="dXVpZDM=", reason="REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
                                              healthy=True, container_id="c-1")))
    (st,) = updates(decided(log.state, call("RECONCILE", {"tasks": [{"task_id": {"value": "t1"}}]})))
    assert (st["state"], st["reason"], st["healthy"]) == ("TASK_RUNNING", "REASON_RECONCILIATION", True)
    assert st["container_status"] == {"container_id": {"value": "c-1"}}


def test_explicit_reconciliation_by_agent_state():
    log = cluster(caps=PA)
    running(log, "t1")
    log(ev.AgentDisconnected(agent_id="A2"))
    log(ev.FrameworkSubscribed(framework_id="F1", info=fw_info(caps=PA), resubscribe=True))
    entries = [("t1", None), ("ghost", "A1"), ("ghost", "A2"), ("ghost", "A9"), ("ghost", None)]
    d = decided(log.state, call("RECONCILE", {"tasks": [
        {"task_id": {"value": t}, **({"agent_id": {"value": a}} if a else {})} for t, a in entries]}))
    # A2 is disconnected: it may still come back with the task, so nothing is said about it.
    assert [s["state"] for s in updates(d)] == ["TASK_RUNNING", "TASK_GONE", "TASK_UNKNOWN", "TASK_UNKNOWN"]


def test_reconciliation_on_an_unreachable_agent():
    log = cluster()
    running(log, "t1")
    log(ev.OffersRescinded(offer_ids=["O2"], reason="x"))
    log(ev.AgentUnreachable(agent_id="A1", unreachable_time=200.0))
    d = decided(log.state, call("RECONCILE", {"tasks": [{"task_id": {"value": "t1"}},
                                                        {"task_id": {"value": "z"}, "agent_id": {"value": "A1"}}]}))
    assert [s["state"] for s in updates(d)] == ["TASK_LOST", "TASK_LOST"]  # not partition-aware
    assert all(s["unreachable_time"] == {"nanoseconds": 200_000_000_000} for s in updates(d))


def test_reconcile_limit():
    entries = [{"task_id": {"value": f"t{i}"}} for i in range(11)]
    config = DecideConfig(limits=Limits(max_reconcile_tasks=10))
    refused(decided(cluster().state, call("RECONCILE", {"tasks": entries}), config), 400,
            "limits.max_reconcile_tasks")
    with pytest.raises(codec.InvalidValue, match=r"reconcile.tasks\[0\].task_id"):
        call("RECONCILE", {"tasks": [{"task_id": {"value": "a/b"}}]})


# ---- REVIVE / SUPPRESS / TEARDOWN ----------------------------------------------------------------------------------


def test_revive_and_suppress_roles():
    log = cluster(roles=("a", "b"))
    assert decided(log.state, call("SUPPRESS")).events == [ev.RolesSuppressed(framework_id="F1", roles=["a", "b"])]
    assert decided(log.state, call("REVIVE", {"roles": ["b", "b"]})).events == [
        ev.RolesRevived(framework_id="F1", roles=["b"])]
    # A role the framework does not have (or an invalid one): Mesos drops the whole call, still 202.
    assert decided(log.state, call("REVIVE", {"roles": ["b", "c"]})) == Decision()
    assert decided(log.state, call("SUPPRESS", {"roles": ["a/../x"]})) == Decision()
    config = DecideConfig(limits=Limits(max_roles_per_call=1))
    refused(decided(log.state, call("SUPPRESS", {"roles": ["a", "b"]}), config), 400, "limits.max_roles_per_call")


def test_teardown_rescinds_and_removes():
    log = cluster()
    d = decided(log.state, call("TEARDOWN"), fold=log)
    assert d.events == [ev.OffersRescinded(offer_ids=["O1", "O2"], reason="framework_removed"),
                        ev.FrameworkRemoved(framework_id="F1", reason="teardown")]
    assert "F1" in log.state.removed_frameworks


# ---- calls accepted without effect ---------------------------------------------------------------------------------


def test_calls_drover_accepts_without_acting():
    state = cluster().state
    for c in (call("MESSAGE", {"agent_id": {"value": "A1"}, "executor_id": {"value": "e"}, "data": "aGk="}),
              call("REQUEST", {"requests": [{"agent_id": {"value": "A1"}}]}),
              call("ACCEPT_INVERSE_OFFERS", {"inverse_offer_ids": [{"value": "i1"}]}),
              call("DECLINE_INVERSE_OFFERS", {"inverse_offer_ids": [{"value": "i1"}]}),
              call("ACKNOWLEDGE_OPERATION_STATUS", {"agent_id": {"value": "A1"}, "uuid": UUID,
                                                    "operation_id": {"value": "op"}})):
        assert decided(state, c) == Decision(), c
    with pytest.raises(codec.CallError, match="base64"):
        call("MESSAGE", {"agent_id": {"value": "A1"}, "executor_id": {"value": "e"}, "data": "not base64!"})


def test_reconcile_operations_answers_unknown_operations_by_agent():
    log = cluster()
    log(ev.AgentDisconnected(agent_id="A2"))
    ops = [("op", None), ("op", "A1"), ("op", "A2"), ("op", "A9")]
    d = decided(log.state, call("RECONCILE_OPERATIONS", {"operations": [
        {"operation_id": {"value": o}, **({"agent_id": {"value": a}} if a else {})} for o, a in ops]}))
    assert [s["state"] for s in operation_updates(d)] == [
        "OPERATION_UNKNOWN", "OPERATION_UNKNOWN", "OPERATION_RECOVERING", "OPERATION_UNKNOWN"]
    assert all("uuid" not in s for s in operation_updates(d)) and not d.events
    assert decided(log.state, call("RECONCILE_OPERATIONS", {"operations": []})) == Decision()


def test_every_call_type_has_a_decider():
    parsed = {type(call(t, {})) for t in codec.CALL_TYPES - {"SUBSCRIBE", "UPDATE_FRAMEWORK", "ACKNOWLEDGE",
                                                                 "ACKNOWLEDGE_OPERATION_STATUS", "KILL", "SHUTDOWN",
                                                                 "MESSAGE"}}
    assert parsed <= set(sd.DECIDERS) | {sd.Unknown}
    assert {f.name for f in dataclasses.fields(sd.Accept)} == {"framework_id", "offer_ids", "operations",
                                                                "refuse_seconds"}
