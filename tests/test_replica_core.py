"""master/core.py, the replica's sans-IO core (docs/plans/simulation-cores.md), driven directly: no asyncio, no
Raft, no store; time comes in as an argument. Grows with each step of the move out of master/replica.py."""

from __future__ import annotations

from eventstore import events as ev
from master.core import ReplicaCore
from master.state import apply


def elected(rc: ReplicaCore, ts: float) -> None:
    env = ev.Envelope(index=rc.state.index + 1, term=1, ts=ts, event=ev.LeaderElected(leader_id="m1", http="m1:1",
                                                                                      term=1))
    apply(rc.state, env)


def test_time_never_runs_behind_the_log():
    rc = ReplicaCore()
    assert rc.now(5.0) == 5.0
    elected(rc, 100.0)
    assert rc.now(50.0) == 100.0 and rc.now(150.0) == 150.0  # a lagging clock reads the log's time


def test_link_generations():
    rc = ReplicaCore()
    g1 = rc.new_link("framework", "f")
    g2 = rc.new_link("framework", "f")
    assert (g1, g2) == (1, 2)
    assert rc.latest_link("framework", "f", 2) and not rc.latest_link("framework", "f", 1)
    assert not rc.latest_link("agent", "f", 2)  # kinds are apart


def test_agents_are_heard_from_no_earlier_than_the_election():
    rc = ReplicaCore()
    elected(rc, 100.0)
    assert rc.agent_last_seen("a1") == 100.0  # never heard: counts from this leader's election
    rc.agent_heard("a1", 130.0)
    assert rc.agent_last_seen("a1") == 130.0
    rc.agent_heard("a2", 10.0)  # a clock behind the log: the log's time
    assert rc.agent_seen["a2"] == 100.0
