"""Unit tests for master.decide.timers: the leader's timers (offer timeout, failover timeout, unreachable agents)
and broken links, as pure deciders over folded states."""

from __future__ import annotations

import pytest

from eventstore import events as ev
from master.decide import DecideConfig
from master.decide import timers
from master.decide.timers import (TimersReply, agent_deadline, decide_disconnect, decide_timers, rescind_events,
                                  unreachable_agents)
from master.state import clone
from tests.test_agent_loss import lost_agent_log
from tests.test_fold import AGENT_RES, Log, base, info, offer, res

CFG = DecideConfig(agent_unreachable_after=6.0, agent_reregister_timeout=10.0, framework_failover_grace=60.0)


def fold(log: Log, events: list, ts: float) -> None:
    for e in events:
        log(e, ts=ts)


# ---- unreachable agents ---------------------------------------------------------------------------------------


def test_unreachable_after_silence_or_disconnection():
    """Ping timeout 2 s x 3; re-registration window 10 s after the election (at 100)."""
    log = lost_agent_log()
    log(ev.AgentDisconnected(agent_id="A2"), ts=103)
    s = log.state
    seen = {"A1": 104.0, "A2": 103.0}  # record_disconnect: the disconnected agent gets the whole grace
    assert unreachable_agents(s, 108.9, CFG, seen) == []
    assert unreachable_agents(s, 109.0, CFG, seen) == ["A2"]
    assert unreachable_agents(s, 110.0, CFG, seen) == ["A1", "A2"]
    # A new leader: agents not heard from since its election get the re-registration window.
    assert unreachable_agents(s, 109.9, CFG, {}) == [] and unreachable_agents(s, 110.0, CFG, {}) == ["A1", "A2"]
    # A1 re-registered, then went silent: back to ping timeouts (101 + 6).
    seen = {"A1": 101.0}
    assert unreachable_agents(s, 106.9, CFG, seen) == [] and unreachable_agents(s, 107.0, CFG, seen) == ["A1"]


def test_deadline_counts_from_the_election_when_it_is_later():
    log = lost_agent_log()  # elected at 100
    assert agent_deadline(log.state, "A1", CFG, {"A1": 50.0}) == 106.0
    # A ping timeout longer than the re-registration window: the longer one applies to the unheard.
    long = DecideConfig(agent_unreachable_after=20.0, agent_reregister_timeout=10.0)
    assert agent_deadline(log.state, "A1", long, {}) == 120.0


def test_an_unreachable_agent_is_not_marked_again():
    log = lost_agent_log()
    d = decide_timers(log.state, 200.0, CFG, {"A2": 199.0})
    fold(log, d.events, 200.0)
    assert "A1" in log.state.unreachable_agents
    assert decide_timers(log.state, 300.0, CFG, {"A2": 299.0}).events == []


def test_timers_mark_a_silent_agent_unreachable_rescinding_its_offers_first():
    log = lost_agent_log()  # O3 is outstanding on A1
    seen = {"A1": 101.0, "A2": 200.0}
    before = clone(log.state)
    d = decide_timers(log.state, 200.0, CFG, seen)
    assert d.refusal is None and d.messages == []
    # F3 (disconnected, failover timeout 0) goes first, then A1: its offers, then itself.
    assert d.events == [ev.FrameworkRemoved(framework_id="F3", reason="failover_timeout"),
                        ev.OffersRescinded(offer_ids=["O3"], reason="agent_unreachable"),
                        ev.AgentUnreachable(agent_id="A1", unreachable_time=200.0)]
    assert d.reply == TimersReply(unreachable=["A1"], removed=["F3"])
    assert seen == {"A1": 101.0, "A2": 200.0}  # an input, never changed
    assert log.state == before  # pure: the state is read only
    assert decide_timers(log.state, 200.0, CFG, seen) == d  # and deterministic
    fold(log, d.events, 200.0)
    assert "A1" in log.state.unreachable_agents and log.state.task("F1", "t1").state == "TASK_UNREACHABLE"


def test_nothing_due_nothing_decided():
    log = lost_agent_log()
    log(ev.FrameworkRemoved(framework_id="F3", reason="teardown"))
    d = decide_timers(log.state, 101.0, CFG, {"A1": 100.5, "A2": 100.5})
    assert d.events == [] and d.reply == TimersReply()


# ---- offer timeouts -------------------------------------------------------------------------------------------


def offer_timeout_log(timeout: float = 10.0) -> Log:
    log = Log()
    log(ev.ClusterCreated(cluster_id="c1"))
    log(ev.LeaderElected(leader_id="m1:1", http="m1:5050", term=1,
                         config={"allocation_interval": 1.0, "offer_timeout": timeout}))
    log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES)))
    log(ev.FrameworkSubscribed(framework_id="F1", info=info()))
    log(ev.OffersMade(offers=[offer("O1", text="cpus:1")], trigger="t"), ts=100)
    log(ev.OffersMade(offers=[offer("O2", text="cpus:1")], trigger="t"), ts=105)
    return log


def test_offers_past_the_offer_timeout_are_rescinded():
    log = offer_timeout_log()
    seen = {"A1": 100.0}
    assert decide_timers(log.state, 109.9, CFG, {"A1": 109.0}).events == []
    d = decide_timers(log.state, 110.0, CFG, {"A1": 109.0})
    assert d.events == [ev.OffersRescinded(offer_ids=["O1"], reason="offer_timeout")]
    # An expired offer on an agent that is also lost is rescinded once, as expired.
    d = decide_timers(log.state, 116.0, CFG, seen)
    assert d.events == [ev.OffersRescinded(offer_ids=["O1", "O2"], reason="offer_timeout"),
                        ev.AgentUnreachable(agent_id="A1", unreachable_time=116.0)]
    fold(log, d.events, 116.0)
    assert log.state.offers == {}


def test_rescinds_are_chunked():
    ids = [f"O{i}" for i in range(2 * timers.RESCIND_CHUNK + 1)]
    events = rescind_events(ids, "offer_timeout")
    assert [len(e.offer_ids) for e in events] == [timers.RESCIND_CHUNK, timers.RESCIND_CHUNK, 1]
    assert [i for e in events for i in e.offer_ids] == ids
    assert rescind_events([], "x") == []


# ---- failover timeouts ------------------------------------------------------------------------------------------


def test_a_disconnected_framework_is_removed_after_its_failover_timeout():
    log = base()
    log(ev.FrameworkSubscribed(framework_id="F1", info=ev.FrameworkInfo(name="f", user="u", failover_timeout=30.0)))
    log(ev.FrameworkSubscribed(framework_id="F2", info=info()))
    log(ev.FrameworkDisconnected(framework_id="F1"), ts=200)
    assert decide_timers(log.state, 229.9, CFG, {}).events == []
    d = decide_timers(log.state, 230.0, CFG, {})
    assert d.events == [ev.FrameworkRemoved(framework_id="F1", reason="failover_timeout")]
    assert d.reply == TimersReply(removed=["F1"])


def test_a_framework_disconnected_by_a_leader_change_gets_the_grace():
    log = base()
    log(ev.FrameworkSubscribed(framework_id="F1", info=ev.FrameworkInfo(name="f", user="u", failover_timeout=5.0)))
    log(ev.LeaderElected(leader_id="m2:1", http="m2:5050", term=2, config={"allocation_interval": 1.0}), ts=300)
    fw = log.state.frameworks["F1"]
    assert fw.disconnected_by_failover and fw.disconnected_at == 300.0
    assert decide_timers(log.state, 359.9, CFG, {}).events == []  # max(5, grace 60)
    assert decide_timers(log.state, 360.0, CFG, {}).events == [
        ev.FrameworkRemoved(framework_id="F1", reason="failover_timeout")]


# ---- bounded work and the commit gate -------------------------------------------------------------------------


def test_one_tick_commits_a_bounded_number_of_events(monkeypatch):
    monkeypatch.setattr(timers, "MAX_TIMER_EVENTS", 2)
    log = base()
    for i in range(4):
        log(ev.AgentRegistered(agent_id=f"A{i}", hostname="h", http="h:1", resources=res("cpus:1")))
    d = decide_timers(log.state, 1000.0, CFG, {})
    assert d.reply.unreachable == ["A0", "A1"]
    fold(log, d.events, 1000.0)
    d = decide_timers(log.state, 1001.0, CFG, {})  # the rest at the next tick
    assert d.reply.unreachable == ["A2", "A3"]


def test_an_event_the_gate_would_refuse_is_left_out_not_raised():
    log = base()
    # An agent id that breaks today's rules, as a state from an older build could hold.
    log(ev.AgentRegistered(agent_id="bad id", hostname="h", http="h:1", resources=res("cpus:1")))
    log(ev.AgentRegistered(agent_id="A1", hostname="h", http="h:1", resources=res("cpus:1")))
    d = decide_timers(log.state, 1000.0, CFG, {})
    assert d.events == [ev.AgentUnreachable(agent_id="A1", unreachable_time=1000.0)]
    assert d.reply.unreachable == ["A1"] and len(d.reply.skipped) == 1 and "AGENT_UNREACHABLE" in d.reply.skipped[0]


# ---- broken links -----------------------------------------------------------------------------------------------


def test_a_broken_framework_stream_rescinds_its_offers_and_disconnects_it():
    log = lost_agent_log()  # O3 is F1's, on A1
    d = decide_disconnect(log.state, framework_id="F1")
    assert d.events == [ev.OffersRescinded(offer_ids=["O3"], reason="framework_disconnected"),
                        ev.FrameworkDisconnected(framework_id="F1")]
    assert decide_disconnect(log.state, framework_id="F2").events == [ev.FrameworkDisconnected(framework_id="F2")]
    assert decide_disconnect(log.state, framework_id="F3").events == []  # already disconnected
    assert decide_disconnect(log.state, framework_id="nope").events == []


def test_a_broken_agent_link_rescinds_its_offers_and_disconnects_it():
    log = lost_agent_log()
    d = decide_disconnect(log.state, agent_id="A1")
    assert d.events == [ev.OffersRescinded(offer_ids=["O3"], reason="agent_disconnected"),
                        ev.AgentDisconnected(agent_id="A1")]
    fold(log, d.events, 150.0)
    assert decide_disconnect(log.state, agent_id="A1").events == []  # already disconnected
    assert decide_disconnect(log.state, agent_id="nope").events == []
    with pytest.raises(AssertionError):
        decide_disconnect(log.state, agent_id="A1", framework_id="F1")
