"""Fencing in the replicated log: a batch decided in a serving term older than the newest LEADER_ELECTED is
refused when applied (same on every replica), so a deposed leader's decisions never reach a store."""

from __future__ import annotations

from eventstore import events as ev
from eventstore.raftlog import _Log


def batch(term: int, *events) -> bytes:
    return ev.encode_batch(ev.Batch(term=term, ts=1.0, events=list(events), proposal=f"p{term}"))


def elected(term: int) -> ev.LeaderElected:
    return ev.LeaderElected(leader_id=f"r{term}", http="h:5050", term=term)


def test_a_deposed_leaders_batch_is_refused_and_gets_no_index():
    log, sunk = _Log(), []
    log.sink = lambda first, b: sunk.append((first, b.term))
    assert log.append(batch(3, elected(3)), _doApply=True) == 1
    assert log.append(batch(3, ev.AgentDisconnected(agent_id="a")), _doApply=True) == 2
    assert log.append(batch(5, elected(5)), _doApply=True) == 3
    # The old leader (term 3) has not noticed yet; its proposal reaches the log after the term-5 election.
    assert log.append(batch(3, ev.AgentDisconnected(agent_id="a")), _doApply=True) == -5
    assert log.last_index == 3 and sunk == [(1, 3), (2, 3), (3, 5)]
    # The new leader goes on as usual.
    assert log.append(batch(5, ev.AgentDisconnected(agent_id="b")), _doApply=True) == 4


def test_every_replica_fences_alike():
    entries = [batch(1, elected(1)), batch(1, ev.AgentDisconnected(agent_id="a")), batch(2, elected(2)),
               batch(1, ev.AgentDisconnected(agent_id="x")), batch(2, ev.AgentDisconnected(agent_id="b"))]
    results = []
    for _ in range(3):
        log = _Log()
        results.append([log.append(e, _doApply=True) for e in entries])
    assert results[0] == results[1] == results[2] == [1, 2, 3, -2, 4]


def raw_entry(term: int, *payloads: bytes) -> bytes:
    return ev._msgpack_enc.encode(ev._RaftEntry(term=term, ts=1.0, proposal="p", payloads=list(payloads)))


def test_an_entry_breaking_a_value_rule_is_refused_alike_and_gets_no_index():
    """Only a broken peer proposes it (a leader's events pass the commit gate): every replica refuses it."""
    log, sunk = _Log(), []
    log.sink = lambda first, b: sunk.append(first)
    assert log.append(batch(1, elected(1)), _doApply=True) == 1
    bad = b'{"type":"AGENT_DISCONNECTED","agent_id":".."}'
    assert log.append(raw_entry(1, bad), _doApply=True) == 0
    assert log.append(b"not msgpack", _doApply=True) == 0
    assert log.last_index == 1 and sunk == [1]


def test_an_entry_of_a_newer_build_stops_the_applier_but_keeps_the_numbering():
    """An unknown event type (a newer build in a rolling upgrade): skipping it would number this replica's log
    differently from the others', so its events are counted and the applier is handed the error (fail-stop)."""
    log, sunk = _Log(), []
    log.sink = lambda first, b: sunk.append((first, type(b).__name__))
    assert log.append(batch(1, elected(1)), _doApply=True) == 1
    newer = b'{"type":"SOMETHING_NEW","x":1}'
    assert log.append(raw_entry(1, newer, newer), _doApply=True) == 2
    assert log.last_index == 3 and sunk == [(1, "Batch"), (2, "UnknownEvent")]
