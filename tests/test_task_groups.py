"""Task groups (LAUNCH_GROUP), the pure parts: the codec and the decider judge a group as Mesos's master does
(validation.cpp, task::group), atomically; the fold accounts its executor's resources once, held while any task of
the group holds its own; the effects send the group to its agent as one LAUNCH_GROUP. docs/services.md, "Task groups".
The pods themselves: tests/test_task_groups_live.py."""

from __future__ import annotations

import msgspec
import pytest

from eventstore import events as ev
from eventstore.resources import Resources
from master import effects as fx
from master.allocation import allocator_of, rebuild
from master.state import State, apply, clone, decode_snapshot, encode_snapshot, state_hash
from tests.test_decide_scheduler import (accept, call, cluster, decided, launch, scalar, task_info, the_accept)

EXECUTOR_RES = [scalar("cpus", 0.1), scalar("mem", 32), scalar("disk", 10)]


def executor(eid: str = "e1", **kw) -> dict:
    return {"type": "DEFAULT", "executor_id": {"value": eid}, "resources": list(EXECUTOR_RES), **kw}


def group(*tasks: dict, ex: dict | None = None, **op) -> dict:
    return {"type": "LAUNCH_GROUP", "launch_group": {"executor": ex if ex is not None else executor(),
                                                     "task_group": {"tasks": list(tasks)}}, **op}


def refusals(d) -> list[tuple[str, str, str]]:
    return [(r.task_id, r.reason, r.message) for r in the_accept(d).rejected]


def test_a_good_group_launches_every_task_with_its_executor():
    log = cluster()
    d = decided(log.state, accept(("O1",), group(task_info("a"), task_info("b"))), fold=log)
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["a", "b"] and not e.rejected
    for t in e.tasks:
        assert t.executor is not None and t.executor.executor_id == "e1" and t.executor.task_ids == ["a", "b"]
        assert Resources(t.executor.resources) == Resources.parse("cpus:0.1;mem:32;disk:10")
    # the executor's resources are used once, with the tasks'
    assert log.state.used_on_agent("A1") == Resources.parse("cpus:2.1;mem:288;disk:10")
    assert log.state.used_by_framework("F1") == Resources.parse("cpus:2.1;mem:288;disk:10")
    # /master/state and the operator API show the executor id
    assert log.state.task("F1", "a").spec.executor.executor_id == "e1"


def test_the_group_goes_to_its_agent_as_one_launch_group():
    log = cluster()
    d = decided(log.state, accept(("O1",), group(task_info("a"), task_info("b")), launch(task_info("solo"))))
    env = ev.Envelope(index=log.state.index + 1, term=1, ts=200.0, event=the_accept(d))
    msgs = [m for m in fx.plan(log.state, env) if isinstance(m, fx.ToAgent)]
    assert [(m.agent_id, m.message["type"]) for m in msgs] == [("A1", "LAUNCH_GROUP"), ("A1", "LAUNCH")]
    lg = msgs[0].message["launch_group"]
    assert [t["task_id"] for t in lg["tasks"]] == ["a", "b"] and lg["framework_id"] == "F1"
    # after a failover, an agent that did not report the group gets it again, once
    apply(log.state, env)
    # (first, always, what the agent must have checkpointed: here nothing)
    resync = fx.resync_agent(log.state, "A1", [])
    assert [m["type"] for m in resync] == ["CHECKPOINT_RESOURCES", "LAUNCH_GROUP", "LAUNCH"]
    assert resync[0]["checkpoint_resources"] == {"resources": []}
    reported = [ev.TaskReport(framework_id="F1", task_id=t, state="TASK_STARTING") for t in ("a", "b", "solo")]
    assert [m["type"] for m in fx.resync_agent(log.state, "A1", reported)] == ["CHECKPOINT_RESOURCES"]


def status(log, tid: str, state: str, uuid: str | None = None) -> None:
    log(ev.StatusUpdated(framework_id="F1", task_id=tid, agent_id="A1",
                         status=ev.TaskStatus(state=state, source="SOURCE_EXECUTOR", timestamp=101.0, uuid=uuid)))


def allocation(state: State) -> tuple:
    """The allocator's view of agent A1: what is available and what each (framework, role) holds."""
    ag = allocator_of(state).agents["A1"]
    return ag.available.format(), sorted((k, v.format()) for k, v in ag.allocated.items())


def test_executor_resources_return_when_the_last_task_of_the_group_ends():
    log = cluster()
    decided(log.state, accept(("O1",), group(task_info("a"), task_info("b"))), fold=log)
    # O2 (agent A2) is still out; agent A1: the group holds cpus 2.1, the rest went back
    full = allocation(log.state)
    status(log, "a", "TASK_RUNNING")
    status(log, "b", "TASK_RUNNING")
    status(log, "a", "TASK_FINISHED")
    assert log.state.used_on_agent("A1") == Resources.parse("cpus:1.1;mem:160;disk:10")
    assert allocation(log.state) == allocation(_rebuilt(log.state)) != full
    status(log, "b", "TASK_KILLED")
    assert not log.state.used_on_agent("A1")
    assert allocation(log.state) == allocation(_rebuilt(log.state))
    assert allocation(log.state)[1] == []  # nothing held on A1 any more: the executor's resources came back too


def _rebuilt(state: State) -> State:
    """The same fields, the allocator rebuilt from them (as after a reconfiguration)."""
    from master.allocation import ALLOCATOR_KEY
    s = clone(state)
    s.__dict__[ALLOCATOR_KEY] = rebuild(s)
    return s


def test_snapshot_and_replay_of_a_group_fold_the_same():
    log = cluster()
    decided(log.state, accept(("O1",), group(task_info("a"), task_info("b"))), fold=log)
    status(log, "a", "TASK_FAILED")
    again = decode_snapshot(encode_snapshot(log.state))
    assert state_hash(again) == state_hash(log.state)
    # the OFFERS_ACCEPTED event round-trips through its committed bytes
    e = the_accept(decided(cluster().state, accept(("O1",), group(task_info("a"), task_info("b")))))
    assert ev.decode_event(ev.encode_event(e)) == e


def test_an_old_offers_accepted_without_executors_decodes_as_before():
    old = (b'{"type":"OFFERS_ACCEPTED","framework_id":"F1","offer_ids":["O1"],"refuse_seconds":0.0,"tasks":[{'
           b'"task_id":"t","name":"t","agent_id":"A1","resources":[],"command":{"value":"true"}}]}')
    e = ev.decode_event(old)
    assert e.tasks[0].executor is None and ev.encode_event(e) == msgspec.json.encode(e)


@pytest.mark.parametrize("ops, says", [
    (lambda: [group(task_info("a"), id={"value": "op"})], "The `id` field cannot be set on LAUNCH_GROUP operations"),
    (lambda: [group(task_info("a"), task_info("a"))], "Task 'a' is invalid: Task has duplicate ID: a"),
    (lambda: [group(task_info("a"), task_info("b", agent="A2"))],
     "Task 'b' is invalid: Task uses invalid agent A2 while agent A1 is expected"),
    (lambda: [group(task_info("a"), ex=dict(executor(), type="CUSTOM", command={"value": "./x"}))],
     "Custom executors (ExecutorInfo.type CUSTOM, with a command) are not supported by Drover"),
    (lambda: [group(task_info("a"), ex=dict(executor(), command={"value": "./x"}))],
     "'ExecutorInfo.command' must not be set for 'DEFAULT' executor"),
    (lambda: [group(task_info("a"), ex={k: v for k, v in executor().items() if k != "type"})],
     "'ExecutorInfo.type' must be set"),
    (lambda: [group(task_info("a"), ex=dict(executor(), resources=[scalar("cpus", 0.1), scalar("mem", 32)]))],
     "Executor 'e1' uses no disk"),
    (lambda: [group(task_info("a"), ex=dict(executor(), resources=[scalar("mem", 32), scalar("disk", 1)]))],
     "Executor 'e1' uses less CPUs (0) than the minimum required (0.01)"),
    (lambda: [group(task_info("a"), ex=dict(executor(), resources=[scalar("cpus", 1), scalar("disk", 1)]))],
     "Executor 'e1' uses less memory (0MB) than the minimum required (32MB)"),
    (lambda: [group(task_info("a", cpus=3), task_info("b", cpus=1))],
     "Total resources cpus:4.1;disk:10;mem:288 required by task group and its executor are more than available"),
    (lambda: [group(task_info("a"), ex=dict(executor(), framework_id={"value": "F9"}))],
     "ExecutorInfo has an invalid FrameworkID (Actual: F9 vs Expected: F1)"),
    (lambda: [group(task_info("a", executor=executor("other")))],
     "The `ExecutorInfo` of task 'a' is different from executor 'e1'"),
    (lambda: [group(task_info("a", container={"type": "DOCKER", "docker": {"image": "busybox"}}))],
     "Task 'a' is invalid: Docker ContainerInfo is not supported on the task"),
    (lambda: [group(task_info("a", container={"type": "MESOS", "network_infos": [
        {"port_mappings": [{"host_port": 31000, "container_port": 80}]}]}, resources=[
            scalar("cpus", 1), {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000,
                                                                                       "end": 31000}]}}]))],
     "a task of a task group joins its executor's network"),
    (lambda: [group(task_info("a"), ex=dict(executor(), container={"type": "MESOS", "network_infos": [
        {"port_mappings": [{"host_port": 31000, "container_port": 80}]}]}))],
     "Executor 'e1' is invalid: its container maps host port 31000, which is not in its 'ports' resources"),
    (lambda: [group(task_info("a"), ex=dict(executor(), container={"type": "DOCKER", "docker": {"image": "x"}}))],
     "'ExecutorInfo.container.type' must be 'MESOS' for 'DEFAULT' executor"),
    (lambda: [group(task_info("a")), group(task_info("b"))], "Executor 'e1' is already in use"),
    (lambda: [launch(task_info("e1")), group(task_info("a"))], "Executor 'e1' has the ID of a task launched"),
    (lambda: [group(*(task_info(f"t{i}", cpus=0.01, mem=1) for i in range(ev.MAX_GROUP_TASKS)), task_info("a"))],
     f"Task group has {ev.MAX_GROUP_TASKS + 1} tasks; Drover runs at most {ev.MAX_GROUP_TASKS} in one group"),
])
def test_a_bad_group_is_refused_whole_with_task_error(ops, says):
    d = decided(cluster().state, accept(("O1",), *ops()))
    refused = [r for r in refusals(d) if r[0] in ("a", "b")]
    assert refused and all(r[1] == "REASON_TASK_GROUP_INVALID" and says in r[2] for r in refused), refusals(d)
    assert {r.state for r in the_accept(d).rejected} == {"TASK_ERROR"}
    assert not {t.task_id for t in the_accept(d).tasks} & {r[0] for r in refused}  # none of the group runs


def test_a_group_with_its_executor_on_the_task_and_bridge_ports_launches():
    ports = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31000}]}}
    ex = dict(executor(), resources=EXECUTOR_RES + [ports], container={"type": "MESOS", "network_infos": [
        {"port_mappings": [{"host_port": 31000, "container_port": 80}]}]})
    d = decided(cluster().state, accept(("O1",), group(task_info("a", executor=ex), task_info("b"), ex=ex)))
    (a, b) = the_accept(d).tasks
    assert a.executor == b.executor and a.executor.network == "BRIDGE"
    assert [(m.host_port, m.container_port) for m in a.executor.port_mappings] == [(31000, 80)]


def test_an_executor_without_an_id_is_a_bad_call():
    with pytest.raises(Exception, match="executor_id"):
        accept(("O1",), group(task_info("a"), ex={"type": "DEFAULT"}))


def test_shutdown_of_a_group_executor_kills_its_tasks_and_kill_names_one():
    log = cluster()
    decided(log.state, accept(("O1",), group(task_info("a"), task_info("b"))), fold=log)
    d = decided(log.state, call("SHUTDOWN", {"executor_id": {"value": "e1"}, "agent_id": {"value": "A1"}}))
    assert sorted(e.task_id for e in d.events) == ["a", "b"]
    d = decided(log.state, call("KILL", {"task_id": {"value": "a"}}))
    assert [e.task_id for e in d.events] == ["a"]  # the agent kills the rest of the group (default executor)


def test_master_state_shows_the_executor_id():
    from master import operator_json, state_json
    log = cluster()
    decided(log.state, accept(("O1",), group(task_info("a"), task_info("b"))), fold=log)
    t = log.state.task("F1", "a")
    assert state_json._task(t)["executor_id"] == "e1"
    assert operator_json.task(log.state, t)["executor_id"] == {"value": "e1"}


# ---- the agent's pure parts -------------------------------------------------------------------------------------


def _group_specs(*tids: str, **ex_kw) -> list[ev.TaskSpec]:
    ex = ev.ExecutorSpec(executor_id="e1", resources=Resources.parse("cpus:0.1;mem:32;disk:1").to_list(),
                         task_ids=list(tids), **ex_kw)
    return [ev.TaskSpec(task_id=t, name=t, agent_id="A1", resources=Resources.parse("cpus:1").to_list(),
                        command=ev.CommandSpec(value="true"), executor=ex) for t in tids]


def test_the_agent_checks_a_group_again():
    from agent import rules
    assert rules.group_problem(_group_specs("a", "b")) is None
    assert rules.group_problem([]) == "A task group must have at least one task"
    a, b = _group_specs("a", "b")
    other = msgspec.structs.replace(b, executor=msgspec.structs.replace(b.executor, executor_id="e2"))
    assert "must carry the group's executor" in rules.group_problem([a, other])
    assert "names a task twice" in rules.group_problem([a, a])
    (c,) = _group_specs("c")
    stranger = msgspec.structs.replace(c, executor=a.executor)
    assert "not one of its executor's tasks" in rules.group_problem([a, stranger])
    (x,) = _group_specs("x")
    dotted = msgspec.structs.replace(x, executor=msgspec.structs.replace(x.executor, executor_id=".."))
    assert "Executor ID" in rules.group_problem([dotted])
    mapped = _group_specs("a", network="BRIDGE", port_mappings=[ev.PortMapping(host_port=31000, container_port=80)])
    assert "not in its 'ports' resources" in rules.group_problem(mapped)
    on_host = _group_specs("a", port_mappings=[ev.PortMapping(host_port=31000, container_port=80)])
    assert "only supported for the BRIDGE network" in rules.group_problem(on_host)
    own_net = [msgspec.structs.replace(a, network="NONE")]
    assert "no network of its own" in rules.group_problem(own_net)
    assert rules.GROUP_KILL_STATES == {"TASK_FAILED", "TASK_KILLED"}  # not FINISHED: the others run on


def test_an_executor_sandbox_is_collected_once_its_group_is_gone(tmp_path):
    import asyncio
    import os
    import time

    from agent.gc import GarbageCollector, GCConfig

    for eid, age in (("old", 500), ("held", 5000), ("young", 10)):
        box = tmp_path / "executors" / "F" / eid
        box.mkdir(parents=True)
        (box / "note").write_text("x")
        os.utime(box, (time.time() - age, time.time() - age))

    async def no_orphans() -> int:
        return 0

    gc = GarbageCollector(tmp_path, GCConfig(gc_delay=100.0, headroom=0.0), lambda: set(), no_orphans,
                          lambda: {("F", "held")})
    gc.used_fraction = lambda: 0.0  # type: ignore[method-assign]
    assert asyncio.run(gc.sweep())["sandboxes"] == 1
    assert sorted(p.name for p in (tmp_path / "executors" / "F").iterdir()) == ["held", "young"]


def test_a_command_task_cannot_take_the_id_of_a_group_executor_of_its_accept():
    d = decided(cluster().state, accept(("O1",), group(task_info("a")), launch(task_info("e1"))))
    assert [t.task_id for t in the_accept(d).tasks] == ["a"]
    assert refusals(d) == [("e1", "REASON_TASK_INVALID", "Task ID 'e1' is the ID of a task group's executor launched "
                                                         "by this ACCEPT: a command task's executor ID is its task ID")]


def test_the_commit_gate_refuses_a_group_whose_tasks_disagree_on_their_executor():
    log = cluster()
    e = the_accept(decided(log.state, accept(("O1",), group(task_info("a"), task_info("b"))), fold=log))
    assert ev.event_problem(e) is None
    other = msgspec.structs.replace(e.tasks[1].executor, name="other")
    bad = msgspec.structs.replace(e, tasks=[e.tasks[0], msgspec.structs.replace(e.tasks[1], executor=other)])
    assert ev.event_problem(bad) == "the tasks of task group executor 'e1' carry different executors"
    stray = msgspec.structs.replace(e.tasks[0].executor, task_ids=["b"])
    bad = msgspec.structs.replace(e, tasks=[msgspec.structs.replace(e.tasks[0], executor=stray)])
    assert ev.event_problem(bad) == "task 'a' is not in the task IDs of its executor 'e1'"
