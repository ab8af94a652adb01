"""Agent loss (issue 5): AGENT_UNREACHABLE, its fold and effects, re-registration, reconciliation,
the leader's ping bookkeeping; and one real cluster whose agent is frozen (SIGSTOP) and thawed."""

from __future__ import annotations

import signal

import aiohttp
import msgspec
import pytest

from eventstore import events as ev
from master import effects as fx
from master.allocation import allocator_of, decide_offers
from master import codec
from master.decide import DecideConfig
from master.decide import scheduler as sd
from master.state import State, apply, decode_snapshot, encode_snapshot, state_hash
from tests.test_fold import AGENT_RES, Log, base, info, offer, res, status, task

PA = ["PARTITION_AWARE"]


def lost_agent_log() -> Log:
    """F1 (partition-aware) and F2 (not) each run a task on A1; A2 is idle; F3 is disconnected."""
    log = base()
    log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES)))
    log(ev.AgentRegistered(agent_id="A2", hostname="h2", http="h2:5051", resources=res(AGENT_RES)))
    log(ev.FrameworkSubscribed(framework_id="F1", info=info("pa", caps=PA)))
    log(ev.FrameworkSubscribed(framework_id="F2", info=info("plain")))
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("away")))
    log(ev.FrameworkDisconnected(framework_id="F3"))
    log(ev.OffersMade(offers=[offer("O1", text="cpus:1;mem:128"), offer("O2", fid="F2", text="cpus:1;mem:128")],
                      trigger="t"))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[task("t1")], refuse_seconds=0.0))
    log(ev.OffersAccepted(framework_id="F2", offer_ids=["O2"], tasks=[task("t2")], refuse_seconds=0.0))
    for fid, tid, u in (("F1", "t1", "u1"), ("F2", "t2", "u2")):
        log(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id="A1", status=status("TASK_RUNNING", u)))
        log(ev.StatusAcknowledged(framework_id=fid, task_id=tid, uuid=u))
    log(ev.OffersMade(offers=[offer("O3", text="cpus:1")], trigger="t"))  # outstanding on A1
    return log


def envelope(log: Log, event, ts: float) -> ev.Envelope:
    return ev.Envelope(index=log.state.index + 1, term=1, ts=ts, event=event)


def mark_unreachable(log: Log, ts: float = 200.0) -> tuple[list, list]:
    """Fold the leader's batch; return (effects of the rescind, effects of AGENT_UNREACHABLE)."""
    out = []
    for e in (ev.OffersRescinded(offer_ids=["O3"], reason="agent_unreachable"),
              ev.AgentUnreachable(agent_id="A1", unreachable_time=ts)):
        env = envelope(log, e, ts)
        out.append(fx.plan(log.state, env))
        log(e, ts=ts)
    return out[0], out[1]


def updates(effects: list, fid: str) -> list[dict]:
    return [e.event["update"]["status"] for e in effects
            if isinstance(e, fx.ToFramework) and e.framework_id == fid and e.event["type"] == "UPDATE"]


# ---- the fold -----------------------------------------------------------------------------------------


def test_unreachable_fold_marks_agent_and_tasks_and_recovers_resources():
    log = lost_agent_log()
    assert allocator_of(log.state).agents["A1"].allocated
    mark_unreachable(log)
    s = log.state
    assert "A1" not in s.agents and s.unreachable_agents["A1"].unreachable_at == 200.0
    assert not s.unreachable_agents["A1"].connected
    assert s.offers == {}
    for fid, tid in (("F1", "t1"), ("F2", "t2")):
        t = s.task(fid, tid)
        assert t.state == "TASK_UNREACHABLE" and not t.terminal and not t.holds_resources
        st = t.statuses[-1]
        assert (st.state, st.source, st.reason, st.uuid, st.unreachable_time, st.timestamp) == (
            "TASK_UNREACHABLE", "SOURCE_MASTER", "REASON_AGENT_REMOVED", None, 200.0, 200.0)
    # Its resources are recovered; the agent is out of the allocator and is never offered.
    assert "A1" not in allocator_of(s).agents
    assert not s.used_by_framework("F1") and not s.used_by_framework("F2")
    made = decide_offers(s, 201.0, "t")
    assert made is not None and {o.agent_id for o in made.offers} == {"A2"}
    # Replicas and replays agree: through the wire encoding, and through a snapshot.
    fresh = State()
    for env in log.envelopes:
        apply(fresh, msgspec.json.decode(msgspec.json.encode(env), type=ev.Envelope))
    assert state_hash(fresh) == state_hash(s)
    assert state_hash(decode_snapshot(encode_snapshot(s))) == state_hash(s)


def test_unreachable_twice_or_unknown_changes_nothing_but_the_index():
    log = lost_agent_log()
    mark_unreachable(log)
    before = msgspec.json.encode(log.state.unreachable_agents)
    log(ev.AgentUnreachable(agent_id="A1", unreachable_time=300.0), ts=300)
    log(ev.AgentUnreachable(agent_id="nope", unreachable_time=300.0), ts=300)
    assert msgspec.json.encode(log.state.unreachable_agents) == before
    assert len(log.state.task("F1", "t1").statuses) == 2


def test_disconnect_of_an_unreachable_agent_is_ignored():
    log = lost_agent_log()
    mark_unreachable(log)
    log(ev.AgentDisconnected(agent_id="A1"))
    assert "A1" not in log.state.agents and "A1" in log.state.unreachable_agents


# ---- effects ----------------------------------------------------------------------------------------


def test_unreachable_effects_update_per_task_and_failure_to_connected_frameworks():
    log = lost_agent_log()
    rescind_fx, fx_ = mark_unreachable(log)
    assert rescind_fx == [fx.ToFramework("F1", {"type": "RESCIND", "rescind": {"offer_id": {"value": "O3"}}})]
    (pa,) = updates(fx_, "F1")
    assert pa["state"] == "TASK_UNREACHABLE" and pa["task_id"] == {"value": "t1"}
    assert pa["reason"] == "REASON_AGENT_REMOVED" and pa["source"] == "SOURCE_MASTER" and "uuid" not in pa
    assert pa["unreachable_time"] == {"nanoseconds": 200_000_000_000}
    assert pa["agent_id"] == {"value": "A1"}
    (plain,) = updates(fx_, "F2")
    assert plain["state"] == "TASK_LOST" and plain["reason"] == "REASON_AGENT_REMOVED" and "uuid" not in plain
    failures = [e for e in fx_ if e.event["type"] == "FAILURE"]
    assert failures == [fx.ToFramework(f, {"type": "FAILURE", "failure": {"agent_id": {"value": "A1"}}})
                        for f in ("F1", "F2")]  # not F3: it is disconnected


def test_plan_of_unreachable_for_an_unknown_agent_is_empty():
    log = lost_agent_log()
    assert fx.plan(log.state, envelope(log, ev.AgentUnreachable(agent_id="nope", unreachable_time=1.0), 1.0)) == []


# ---- re-registration ----------------------------------------------------------------------------------


def reregister(log: Log, reports: list[ev.TaskReport], ts: float = 300.0) -> list:
    e = ev.AgentReregistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES), tasks=reports)
    effects = fx.plan(log.state, envelope(log, e, ts))
    log(e, ts=ts)
    return effects


def test_reregistration_brings_reported_tasks_back_and_the_rest_is_gone():
    log = lost_agent_log()
    mark_unreachable(log)
    spec = log.state.task("F1", "t1").spec
    effects = reregister(log, [ev.TaskReport(framework_id="F1", task_id="t1", state="TASK_RUNNING", spec=spec)])
    s = log.state
    agent = s.agents["A1"]
    assert agent.connected and agent.unreachable_at is None and "A1" not in s.unreachable_agents
    t1 = s.task("F1", "t1")
    assert t1.state == "TASK_RUNNING" and t1.holds_resources
    assert (t1.statuses[-1].source, t1.statuses[-1].reason, t1.statuses[-1].uuid) == (
        "SOURCE_MASTER", "REASON_AGENT_REREGISTERED", None)
    # t2 was not reported: TASK_GONE (terminal, nothing to acknowledge: completed).
    assert s.task("F2", "t2") is None
    assert s.completed_tasks[-1].task_id == "t2" and s.completed_tasks[-1].state == "TASK_GONE"
    # Allocated again: t1's resources, not t2's.
    a = allocator_of(s)
    assert a.agents["A1"].active
    assert a.agents["A1"].allocated.get(("F1", "*")) and not a.agents["A1"].allocated.get(("F2", "*"))
    assert s.used_by_framework("F1") and not s.used_by_framework("F2")
    (back,) = updates(effects, "F1")
    assert back["state"] == "TASK_RUNNING" and back["reason"] == "REASON_AGENT_REREGISTERED"
    assert back["source"] == "SOURCE_MASTER" and "uuid" not in back and "unreachable_time" not in back
    (gone,) = updates(effects, "F2")
    assert gone["state"] == "TASK_LOST" and gone["reason"] == "REASON_AGENT_REREGISTERED"
    # Replay agrees, and the agent is offered again (what t1 does not use).
    fresh = State()
    for env in log.envelopes:
        apply(fresh, env)
    assert state_hash(fresh) == state_hash(s)
    made = decide_offers(s, 301.0, "t", ["A1"])
    assert made is not None and made.offers


def test_reregistration_partition_aware_gone_and_plain_reregistration_unchanged():
    log = lost_agent_log()
    mark_unreachable(log)
    effects = reregister(log, [ev.TaskReport(framework_id="F2", task_id="t2", state="TASK_RUNNING")])
    (gone,) = updates(effects, "F1")
    assert gone["state"] == "TASK_GONE"
    (back,) = updates(effects, "F2")
    assert back["state"] == "TASK_RUNNING"
    # A later ordinary re-registration (link broke, came back) says nothing to frameworks.
    log(ev.AgentDisconnected(agent_id="A1"))
    assert updates(reregister(log, [ev.TaskReport(framework_id="F2", task_id="t2", state="TASK_RUNNING")], 400.0),
                   "F2") == []


def test_framework_removed_while_its_agent_is_unreachable():
    log = lost_agent_log()
    mark_unreachable(log)
    log(ev.FrameworkRemoved(framework_id="F1", reason="teardown"))
    assert log.state.completed_tasks[-1].state == "TASK_KILLED"
    reregister(log, [])  # t1 is not reported; the framework is gone anyway
    assert log.state.task("F2", "t2") is None
    assert not allocator_of(log.state).agents["A1"].allocated


def test_status_update_on_unreachable_task_keeps_accounting_straight():
    log = lost_agent_log()
    mark_unreachable(log)
    # (An update that raced the mark; the fold must not recover what was already recovered.)
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_FINISHED")))
    assert log.state.completed_tasks[-1].task_id == "t1"
    reregister(log, [ev.TaskReport(framework_id="F2", task_id="t2", state="TASK_RUNNING")])
    a = allocator_of(log.state)
    assert not a.agents["A1"].allocated.get(("F1", "*")) and a.agents["A1"].allocated.get(("F2", "*"))


# ---- reconciliation ----------------------------------------------------------------------------------


def reconcile(state: State, fid: str, entries: list[dict]) -> list[dict]:
    """RECONCILE's answers, from the wire codec and the pure decider, as the handler sends them."""
    call = codec.parse_scheduler_call({"type": "RECONCILE", "framework_id": {"value": fid},
                                       "reconcile": {"tasks": entries}})
    d = sd.decide_reconcile(state, call, 500.0, DecideConfig())
    return [m.event["update"]["status"] for m in d.messages if isinstance(m, fx.ToFramework)]


def test_reconcile_on_an_unreachable_agent():
    log = lost_agent_log()
    mark_unreachable(log)
    s = log.state
    (st,) = reconcile(s, "F1", [{"task_id": {"value": "t1"}, "agent_id": {"value": "A1"}}])
    assert st["state"] == "TASK_UNREACHABLE" and st["reason"] == "REASON_RECONCILIATION"
    assert st["unreachable_time"] == {"nanoseconds": 200_000_000_000} and "uuid" not in st
    (st,) = reconcile(s, "F2", [{"task_id": {"value": "t2"}}])
    assert st["state"] == "TASK_LOST" and st["reason"] == "REASON_RECONCILIATION"
    # A task the master does not know, on the unreachable agent.
    (st,) = reconcile(s, "F1", [{"task_id": {"value": "zz"}, "agent_id": {"value": "A1"}}])
    assert st["state"] == "TASK_UNREACHABLE" and st["unreachable_time"] == {"nanoseconds": 200_000_000_000}
    (st,) = reconcile(s, "F2", [{"task_id": {"value": "zz"}, "agent_id": {"value": "A1"}}])
    assert st["state"] == "TASK_LOST"
    # Implicit reconciliation.
    (st,) = reconcile(s, "F1", [])
    assert st["state"] == "TASK_UNREACHABLE" and "unreachable_time" in st
    (st,) = reconcile(s, "F2", [])
    assert st["state"] == "TASK_LOST"


# ---- the leader's bookkeeping ----------------------------------------------------------------------------
# The ping-timeout and re-registration-window rules are unit tests of the timer decider: tests/test_decide_timers.py.


# ---- a real cluster ------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_frozen_agent_becomes_unreachable_and_comes_back(tmp_path):
    from tests.cluster import running_cluster
    from tests.v1client import Scheduler

    with running_cluster(tmp_path / "cluster",
                         ["--agent-ping-timeout", "0.5", "--max-agent-ping-timeouts", "2"]) as cluster:
        agent_id = cluster.agent_state("a1")["id"]
        other_id = cluster.agent_state("a2")["id"]
        async with aiohttp.ClientSession() as http:
            sched = await Scheduler(http, cluster.leader_endpoint(), name="agent-loss",
                                    capabilities=[{"type": "PARTITION_AWARE"}]).subscribe()
            try:
                offer_ = None
                while offer_ is None:
                    offer_ = next((o for o in await sched.offers() if o["agent_id"]["value"] == agent_id), None)
                long_task = {"name": "long", "task_id": {"value": "long"}, "agent_id": {"value": agent_id},
                             "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                                           {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
                             "command": {"value": "sleep 600"}}
                r = await sched.call("ACCEPT", {"offer_ids": [offer_["id"]], "operations": [
                    {"type": "LAUNCH", "launch": {"task_infos": [long_task]}}]})
                assert r.status == 202, r
                while True:
                    st = await sched.update("long")
                    if "uuid" in st:
                        await sched.call("ACKNOWLEDGE", {"agent_id": {"value": agent_id},
                                                         "task_id": {"value": "long"}, "uuid": st["uuid"]})
                    if st["state"] == "TASK_RUNNING":
                        break

                proc = cluster.procs["a1"]
                proc.send_signal(signal.SIGSTOP)
                try:
                    st = await sched.update("long", lambda s: s["state"] == "TASK_UNREACHABLE")
                    assert st["reason"] == "REASON_AGENT_REMOVED" and st["source"] == "SOURCE_MASTER"
                    assert "uuid" not in st and st["unreachable_time"]["nanoseconds"] > 0
                    failure = await sched.expect("FAILURE")
                    assert failure["failure"]["agent_id"]["value"] == agent_id
                    state = cluster.state()
                    assert agent_id not in {a["id"] for a in state.get("slaves", [])}
                    assert other_id in {a["id"] for a in state.get("slaves", []) if a.get("active")}
                    r = await sched.call("RECONCILE", {"tasks": [{"task_id": {"value": "long"}}]})
                    assert r.status == 202
                    st = await sched.update("long", lambda s: s.get("reason") == "REASON_RECONCILIATION")
                    assert st["state"] == "TASK_UNREACHABLE"
                finally:
                    proc.send_signal(signal.SIGCONT)

                st = await sched.update("long", lambda s: s.get("reason") == "REASON_AGENT_REREGISTERED")
                assert st["state"] == "TASK_RUNNING" and st["source"] == "SOURCE_MASTER" and "uuid" not in st
                assert st["agent_id"]["value"] == agent_id
                # Still running, on a reachable agent, and nothing more to say about it.
                r = await sched.call("RECONCILE", {"tasks": [{"task_id": {"value": "long"}}]})
                st = await sched.update("long", lambda s: s.get("reason") == "REASON_RECONCILIATION")
                assert st["state"] == "TASK_RUNNING" and "unreachable_time" not in st
                # The agent that kept pinging was never lost.
                assert [e for e in sched._kept if e.get("type") == "FAILURE"] == []
            finally:
                await sched.close()
        cluster.wait_converged()


def test_operator_events_for_an_agent_lost_and_back():
    from master import operator_json
    from master.state import clone

    log = lost_agent_log()
    shadow = clone(log.state)
    out = []
    for e in (ev.OffersRescinded(offer_ids=["O3"], reason="agent_unreachable"),
              ev.AgentUnreachable(agent_id="A1", unreachable_time=200.0)):
        out += operator_json.derive(shadow, envelope(log, e, 200.0), "1.11.0")
        log(e, ts=200.0)
    assert [o["type"] for o in out] == ["TASK_UPDATED", "TASK_UPDATED", "AGENT_REMOVED"]
    assert {o["task_updated"]["state"] for o in out[:2]} == {"TASK_UNREACHABLE"}
    assert out[2]["agent_removed"] == {"agent_id": {"value": "A1"}}
    spec = log.state.task("F1", "t1").spec
    back = ev.AgentReregistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES),
                                tasks=[ev.TaskReport(framework_id="F1", task_id="t1", state="TASK_RUNNING", spec=spec)])
    out = operator_json.derive(shadow, envelope(log, back, 300.0), "1.11.0")
    kinds = [o["type"] for o in out]
    assert kinds.count("TASK_UPDATED") == 2 and "AGENT_ADDED" in kinds  # t1 running again, t2 gone
    states = {o["task_updated"]["status"]["task_id"]["value"]: o["task_updated"]["state"]
              for o in out if o["type"] == "TASK_UPDATED"}
    assert states["t1"] == "TASK_RUNNING"


def test_audit_shows_tasks_going_unreachable_and_coming_back(tmp_path):
    from eventstore.store import EventStore
    from replay.audit import query

    log = lost_agent_log()
    mark_unreachable(log)
    spec = log.state.task("F1", "t1").spec
    reregister(log, [ev.TaskReport(framework_id="F1", task_id="t1", state="TASK_RUNNING", spec=spec)])
    store = EventStore(tmp_path / "events.sqlite", create=True)
    store.append(log.envelopes)
    tasks = {t["task_id"]: t for t in query(store, "tasks")}
    store.close()
    assert [s["state"] for s in tasks["t1"]["statuses"]] == ["TASK_RUNNING", "TASK_UNREACHABLE", "TASK_RUNNING"]
    assert tasks["t1"]["statuses"][-1]["reason"] == "REASON_AGENT_REREGISTERED"
    assert [s["state"] for s in tasks["t2"]["statuses"]][-2:] == ["TASK_UNREACHABLE", "TASK_GONE"]
    assert tasks["t2"]["state"] == "TASK_GONE"
