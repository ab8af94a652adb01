"""The leader's decision pipeline (master/pipeline.py): group commit, order, per-decision indexes, fencing, and
what happens when a proposal fails.

Unit tests on the codec and the Raft consumer, then a real single replica (pysyncobj, SQLite, aiohttp; the
fixture of tests/test_http_fuzz.py) driven through `stage()`, then a real 3-replica cluster whose leader is
killed while many decisions are in flight: nothing it acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import urllib.error
import urllib.request
from collections import deque

import pytest

from eventstore import events as ev
from eventstore.raftlog import ProposalFailed, _Log
from eventstore.store import EventStore
from master.pipeline import Group, Staged, take_group
from master.replica import NotLeader
from master.state import State, apply
from tests.test_http_fuzz import Replica, replica  # noqa: F401 (the fixture)


def weights(role: str, w: float = 2.0) -> ev.WeightsUpdated:
    return ev.WeightsUpdated(weights={role: w})


# ---- the codec and the Raft consumer --------------------------------------------------------------------


def test_an_entry_of_several_decisions_keeps_each_decisions_time() -> None:
    payloads = [ev.encode_event(weights(f"r{i}")) for i in range(3)]
    data = ev.encode_entry(4, 10.0, "p", payloads, parts=[(10.0, 2), (11.5, 1)], epoch=7)
    batch = ev.decode_batch(data)
    assert batch.parts == [(10.0, 2), (11.5, 1)] and batch.epoch == 7 and batch.term == 4
    envs = batch.envelopes(100)
    assert [(e.index, e.ts) for e in envs] == [(100, 10.0), (101, 10.0), (102, 11.5)]
    assert [e.event for e in envs] == [weights("r0"), weights("r1"), weights("r2")]


def test_parts_that_do_not_add_up_are_refused() -> None:
    payloads = [ev.encode_event(weights("r"))]
    with pytest.raises(ev.InvalidEvent, match="parts count 2 events"):
        ev.decode_batch(ev.encode_entry(1, 1.0, "p", payloads, parts=[(1.0, 2)]))
    log = _Log()
    assert log.append(ev.encode_entry(1, 1.0, "p", payloads, parts=[(1.0, 2)]), _doApply=True) == 0
    assert log.last_index == 0


def test_an_entry_without_parts_is_one_decision() -> None:
    """Entries written before group commit (no parts, no epoch) still decode, all events at the entry's time."""
    raw = ev._msgpack_enc.encode([3, 5.0, "p", [ev.encode_event(weights("a")), ev.encode_event(weights("b"))]])
    batch = ev.decode_batch(raw)
    assert batch.parts is None and batch.epoch == 0
    assert [e.ts for e in batch.envelopes(1)] == [5.0, 5.0]


def entry(term: int, epoch: int, *events: ev.Event) -> bytes:
    return ev.encode_entry(term, 1.0, f"p{term}-{epoch}", [ev.encode_event(e) for e in events], epoch=epoch)


def elected(term: int) -> ev.LeaderElected:
    return ev.LeaderElected(leader_id="m1", http="h:1", term=term)


def test_a_leader_elected_again_in_the_same_term_fences_its_earlier_serving_period() -> None:
    """A failed proposal ends a serving period; the same replica may be elected again in the same Raft term. Its
    entries still in flight from the earlier period (epoch = index of that period's LEADER_ELECTED) are refused
    once the new LEADER_ELECTED is in the log, on every replica alike."""
    results = []
    for _ in range(3):
        log = _Log()
        results.append([
            log.append(entry(2, 0, elected(2)), _doApply=True),  # index 1: serving period with epoch 1
            log.append(entry(2, 1, weights("a")), _doApply=True),  # 2
            log.append(entry(2, 0, elected(2)), _doApply=True),  # 3: elected again, same term, epoch 3
            log.append(entry(2, 1, weights("late")), _doApply=True),  # from the first period: fenced
            log.append(entry(2, 3, weights("b")), _doApply=True),  # 4
        ])
    assert results[0] == results[1] == results[2] == [1, 2, 3, -2, 4]


def staged(n_events: int, size: int = 10) -> Staged:
    envs = [ev.Envelope(index=i + 1, term=1, ts=1.0, event=weights("r")) for i in range(n_events)]
    return Staged(envs=envs, payloads=[b"x" * size] * n_events, effects=[], messages=[],
                  done=asyncio.Future(loop=asyncio.new_event_loop()))


def test_a_group_takes_decisions_in_order_within_its_bounds() -> None:
    queue = deque([staged(3), staged(3), staged(3), staged(1)])
    first = take_group(queue, max_events=7)
    assert [len(d.envs) for d in first] == [3, 3] and len(queue) == 2
    assert [len(d.envs) for d in take_group(queue, max_events=7)] == [3, 1] and not queue
    # One decision larger than the bounds still goes, alone.
    queue = deque([staged(5, size=100), staged(1)])
    assert [len(d.envs) for d in take_group(queue, max_events=2, max_bytes=50)] == [5]
    queue = deque([staged(1, size=40), staged(1, size=40)])
    assert len(take_group(queue, max_bytes=50)) == 1


def test_a_group_entry_lists_each_decision() -> None:
    a, b = staged(2), staged(1)
    b.envs[0] = ev.Envelope(index=3, term=1, ts=2.5, event=weights("z"))
    a.payloads = [ev.encode_event(e.event) for e in a.envs]
    b.payloads = [ev.encode_event(b.envs[0].event)]
    batch = ev.decode_batch(Group("p", [a, b]).entry(term=1, epoch=9))
    assert batch.parts == [(1.0, 2), (2.5, 1)] and batch.epoch == 9 and batch.proposal == "p"


# ---- a real replica --------------------------------------------------------------------------------------


def stored(rep: Replica, first: int = 1) -> list[ev.Envelope]:
    store = EventStore(rep.core.store.path)
    try:
        return list(store.iter_envelopes(first))
    finally:
        store.close()


def folded(envs: list[ev.Envelope]) -> State:
    state = State()
    for env in envs:
        apply(state, env)
    return state


async def test_concurrent_decisions_commit_in_decision_order_in_few_entries(replica: Replica) -> None:  # noqa: F811
    core = replica.core
    before = dict(core.pipeline_counts)
    decisions = [core.stage([weights(f"r{i}", 1.0 + i)]) for i in range(200)]
    # Each decision saw the ones before it: they are in the state at once, numbered in decision order.
    assert [d.first for d in decisions] == list(range(decisions[0].first, decisions[0].first + 200))
    assert core.state.weights["r199"] == 200.0 and core.committed_index < decisions[-1].first
    firsts = await asyncio.gather(*(core.committed(d) for d in decisions))
    assert firsts == [d.first for d in decisions]
    entries = core.pipeline_counts["entries"] - before["entries"]
    assert core.pipeline_counts["decisions"] - before["decisions"] == 200
    assert entries < 200 / 4, f"200 concurrent decisions took {entries} Raft entries"
    envs = stored(replica, decisions[0].first)
    assert [e.event for e in envs[:200]] == [weights(f"r{i}", 1.0 + i) for i in range(200)]
    assert folded(stored(replica)).weights == core.state.weights


async def test_each_decision_keeps_its_own_time_in_a_group(replica: Replica) -> None:  # noqa: F811
    core = replica.core
    t = core.now()
    ds = [core.stage([weights("a")], ts=t + 1), core.stage([weights("b"), weights("c")], ts=t + 2),
          core.stage([weights("d")], ts=t + 1.5)]  # never backwards: taken at the state's time
    await asyncio.gather(*(core.committed(d) for d in ds))
    envs = {e.index: e.ts for e in stored(replica, ds[0].first)}
    assert [envs[i] for i in range(ds[0].first, ds[0].first + 4)] == [t + 1, t + 2, t + 2, t + 2]


async def test_messages_and_follow_ups_run_after_the_commit_in_decision_order(replica: Replica) -> None:  # noqa: F811
    core = replica.core
    seen: list[tuple[str, int]] = []
    ds = []
    for i in range(5):
        d = core.stage([weights(f"f{i}")])
        d.then.append(lambda i=i: seen.append(("then", i, core.committed_index)))
        ds.append(d)
    empty = core.stage([])  # nothing to commit: released after what was decided before it
    empty.then.append(lambda: seen.append(("empty", -1, core.committed_index)))
    assert seen == []  # nothing leaves before the commit
    await asyncio.gather(*(core.committed(d) for d in ds), core.committed(empty))
    assert [s[:2] for s in seen] == [("then", i) for i in range(5)] + [("empty", -1)]
    assert all(committed >= ds[i].first for (_, i, committed) in seen[:5])
    assert seen[-1][2] >= ds[-1].first


async def test_a_failed_proposal_fails_what_follows_and_the_state_is_rebuilt(
        replica: Replica, monkeypatch) -> None:  # noqa: F811
    core = replica.core
    real = core.raft.propose_entry
    calls = []

    def failing_once(data: bytes, term: int, timeout: float = 5.0):
        calls.append(data)
        if len(calls) == 1:
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(ProposalFailed("raft append failed: simulated"))
            return fut  # never proposed
        return real(data, term, timeout)

    monkeypatch.setattr(core.raft, "propose_entry", failing_once)
    committed = core.committed_index
    ds = [core.stage([weights(f"lost{i}")]) for i in range(10)]
    results = await asyncio.gather(*(core.committed(d) for d in ds), return_exceptions=True)
    assert isinstance(results[0], NotLeader), results[0]
    # Decisions after the failed one were decided on its events: none of them is answered as committed.
    assert all(isinstance(r, NotLeader) for r in results), results
    monkeypatch.setattr(core.raft, "propose_entry", real)
    for _ in range(200):  # the replica leads again (it is still the Raft leader), on a rebuilt state
        if core.serving:
            break
        await asyncio.sleep(0.05)
    assert core.serving and core.failed is None
    envs = stored(replica)
    assert not any(isinstance(e.event, ev.WeightsUpdated) and "lost0" in e.event.weights for e in envs)
    assert folded(envs).weights == core.state.weights and core.state.index == core.committed_index
    assert core.committed_index > committed  # the new LEADER_ELECTED (and whatever of the second entry committed)
    d = core.stage([weights("after")])
    assert await core.committed(d) == d.first and core.state.weights["after"] == 2.0


async def test_stepping_down_answers_every_pending_decision(replica: Replica) -> None:  # noqa: F811
    core = replica.core
    ds = [core.stage([weights(f"s{i}")]) for i in range(20)]
    await core._step_down("test")
    results = await asyncio.gather(*(core.committed(d) for d in ds), return_exceptions=True)
    assert all(isinstance(r, (int, NotLeader)) for r in results), results
    with pytest.raises(NotLeader):
        core.stage([weights("x")])
    for _ in range(200):
        if core.serving:
            break
        await asyncio.sleep(0.05)
    # Whatever was answered committed is in the store; the state is the store's.
    envs = stored(replica)
    names = {r for e in envs if isinstance(e.event, ev.WeightsUpdated) for r in e.event.weights}
    assert all(f"s{i}" in names for i, r in enumerate(results) if isinstance(r, int))
    assert folded(envs).weights == core.state.weights


# ---- a real cluster: kill the leader while decisions are in flight ------------------------------------------


@pytest.mark.integration
def test_a_leader_killed_mid_batch_loses_nothing_it_acknowledged(tmp_path) -> None:
    from tests.cluster import MASTER_ARGS, Cluster

    c = Cluster(data_dir=tmp_path / "cluster", agents=0, master_args=list(MASTER_ARGS))
    c.start()
    try:
        leader = c.wait_leader()
        acked: list[str] = []
        stop = threading.Event()

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                role = f"w{w}-{i}"
                body = json.dumps({"type": "UPDATE_WEIGHTS",
                                   "update_weights": {"weight_infos": [{"role": role, "weight": 2.0}]}}).encode()
                req = urllib.request.Request(f"http://{c.leader_endpoint()}/api/v1", data=body,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        if r.status == 200:
                            acked.append(role)
                except (urllib.error.URLError, OSError):
                    pass  # refused, 503 or cut off: the outcome is unknown, nothing is claimed
                i += 1

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(16)]
        for t in threads:
            t.start()
        while len(acked) < 300:
            threading.Event().wait(0.05)
        c.kill(leader, signal.SIGKILL)
        killed_at = len(acked)
        new = c.wait_leader(timeout=30)
        assert new != leader
        while len(acked) < killed_at + 100:  # the new leader takes decisions too
            threading.Event().wait(0.05)
        stop.set()
        for t in threads:
            t.join(10)
        req = urllib.request.Request(f"http://{c.leader_endpoint()}/api/v1", data=b'{"type": "GET_WEIGHTS"}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            names = {w["role"] for w in json.load(r)["get_weights"]["weight_infos"]}
        lost = [r for r in acked if r not in names]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged decisions were lost, e.g. {lost[:5]}"
        c.start_master(leader)  # the old leader comes back and catches up to the same state
        c.wait_converged(timeout=60)
    finally:
        c.stop()


def test_peeking_at_an_entry_reads_its_head_only() -> None:
    data = ev.encode_entry(3, 1.0, "prop", [ev.encode_event(weights("a")), ev.encode_event(weights("b"))],
                           parts=[(1.0, 2)], epoch=5)
    head = ev.peek_entry(data)
    assert head is not None and (head.term, head.proposal, head.event_count) == (3, "prop", 2)
    assert head.decode() == ev.decode_batch(data)
    assert ev.peek_entry(b"not msgpack") is None


def test_an_entry_lands_at_the_index_it_was_decided_for_or_not_at_all() -> None:
    """Each group was decided on the state the groups before it make: if one of them is lost (refused, or a
    stalled deposed leader's queue forwarded to its successor without it), the next is refused alike everywhere
    instead of being committed at the lost one's index."""
    def at(first: int, *events: ev.Event) -> bytes:
        return ev.encode_entry(1, 1.0, f"p{first}", [ev.encode_event(e) for e in events], epoch=1, first=first)

    results = []
    for _ in range(3):
        log = _Log()
        results.append([
            log.append(entry(1, 0, elected(1)), _doApply=True),  # index 1, a barrier: anywhere
            log.append(at(2, weights("a"), weights("b")), _doApply=True),  # 2-3
            log.append(at(6, weights("d")), _doApply=True),  # decided after a group at 4-5 that never came
            log.append(at(4, weights("c")), _doApply=True),  # 4
            log.append(at(4, weights("c")), _doApply=True),  # the same place twice: refused
        ])
    from eventstore.raftlog import OUT_OF_PLACE
    assert results[0] == results[1] == results[2] == [1, 2, OUT_OF_PLACE, 4, OUT_OF_PLACE]


async def test_an_old_stream_ending_during_a_resubscription_does_not_disconnect_the_framework(
        replica: Replica, monkeypatch) -> None:  # noqa: F811
    """A framework re-subscribes; before that subscription is committed (its stream is registered only then), the
    old stream's client goes away. Its handler must not record the framework as disconnected: the new stream takes
    over (MasterServer.link_generation)."""
    core = replica.core
    body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "race", "failover_timeout": 0}}}
    old = await replica.http.post(replica.url("/api/v1/scheduler"), json=body)
    first = json.loads(await old.content.readexactly(int(await old.content.readline())))
    fid = first["subscribed"]["framework_id"]["value"]
    for _ in range(100):
        if fid in core.framework_streams:
            break
        await asyncio.sleep(0.02)
    old_stream = core.framework_streams[fid]

    held: list = []
    release = asyncio.Event()
    real = core.raft.propose_entry

    def holding(data: bytes, term: int, timeout: float = 5.0):
        out = asyncio.get_running_loop().create_future()

        async def later() -> None:
            await release.wait()
            try:
                out.set_result(await real(data, term, timeout))
            except Exception as e:  # noqa: BLE001 (handed on as is)
                out.set_exception(e)

        held.append(asyncio.ensure_future(later()))
        return out

    monkeypatch.setattr(core.raft, "propose_entry", holding)
    resub = dict(body)
    resub["subscribe"] = {"framework_info": {**body["subscribe"]["framework_info"], "id": {"value": fid}}}
    resub["framework_id"] = {"value": fid}
    new_task = asyncio.ensure_future(replica.http.post(replica.url("/api/v1/scheduler"), json=resub))
    for _ in range(200):  # the re-subscription is staged, its commit held
        if held:
            break
        await asyncio.sleep(0.01)
    assert held, (new_task.done() and new_task.result(), core.pipeline_counts, len(core._staged))
    assert core.framework_streams.get(fid) is old_stream
    old.close()  # the old client goes away now
    await asyncio.wait_for(old_stream.closed.wait(), 10)
    await asyncio.sleep(0.1)  # its handler has run to its end
    release.set()
    new = await asyncio.wait_for(new_task, 10)
    replica.streams.append(new)
    assert new.status == 200
    resubscribed = json.loads(await new.content.readexactly(int(await new.content.readline())))
    assert resubscribed["type"] == "SUBSCRIBED"
    monkeypatch.setattr(core.raft, "propose_entry", real)
    d = core.stage([weights("after-race")])  # a barrier: everything before it is committed
    await core.committed(d)
    assert core.state.frameworks[fid].connected, "the framework was recorded as disconnected"
    assert not any(isinstance(e.event, (ev.FrameworkDisconnected, ev.FrameworkRemoved))
                   and e.event.framework_id == fid for e in stored(replica))


async def test_a_timer_event_the_gate_refuses_is_left_out_and_allocation_still_runs(
        replica: Replica, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A decider bug, never an input: a timer decision with an event the commit gate refuses. The events the gate
    takes are committed, the other is left out, and the tick's allocation run still happens (it used to raise
    before the run, every tick, until the leader changed)."""
    from master import replica as replica_mod
    from master.decide import Decision
    from master.decide.timers import TimersReply

    core = replica.core
    bad = ev.WeightsUpdated(weights={"bad": float("nan")})  # constructed, not decoded: only the gate checks it
    monkeypatch.setattr(replica_mod, "decide_timers",
                        lambda *a, **k: Decision(events=[weights("good-timer"), bad], reply=TimersReply()))
    runs = []
    monkeypatch.setattr(replica_mod, "decide_offers", lambda *a, **k: runs.append(a[2]))
    await core.run_timers_and_allocate("periodic")
    assert runs == ["periodic"]
    assert "good-timer" in core.state.weights and "bad" not in core.state.weights
    assert core.serving and core.failed is None


async def test_allocation_triggers_do_not_outlive_a_serving_period(replica: Replica) -> None:  # noqa: F811
    core = replica.core
    core.request_allocation("agent_added", "c-S9")
    await core._step_down("test")
    assert core._pending_triggers == [] and not core._alloc_wakeup.is_set()


async def test_an_agent_subscription_the_gate_refuses_is_an_error_on_its_stream(
        replica: Replica, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A decider bug, never an input: the agent's SUBSCRIBE decided an event the commit gate refuses. The agent gets
    an ERROR record (as the scheduler's handler answers a 400), nothing is staged, and the replica keeps serving."""
    from master.api import agent as agent_api
    from master.decide import Decision

    core = replica.core
    before = core.state.index
    bad = ev.WeightsUpdated(weights={"bad": float("nan")})
    monkeypatch.setattr(agent_api, "decide_agent_subscribe", lambda *a, **k: Decision(events=[bad], reply="c-S9"))
    body = json.dumps({"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "127.0.0.1:9", "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": 1.0}]}}).encode()
    assert await replica.post("/api/drover/agent", body) == 200
    record = json.loads(replica.answers[-1][3])
    assert record["type"] == "ERROR" and "invalid event" in record["error"]["message"]
    assert core.state.index == before and core.serving and core.failed is None
    assert "c-S9" not in core.agent_links


async def test_an_unreachable_agents_link_is_closed_once_its_event_is_committed(
        replica: Replica, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Nothing leaves the leader before the decision is committed: the link of an agent the timers mark unreachable
    is closed when AGENT_UNREACHABLE commits, not when it is staged."""
    from master import replica as replica_mod
    from master.decide import Decision
    from master.decide.timers import TimersReply

    core = replica.core
    body = json.dumps({"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "127.0.0.1:9", "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": 1.0}]}}).encode()
    assert await replica.post("/api/drover/agent", body) == 200
    agent_id = json.loads(replica.answers[-1][3])["registered"]["agent_id"]
    link = core.agent_links[agent_id]
    monkeypatch.setattr(replica_mod, "decide_timers", lambda *a, **k: Decision(
        events=[ev.AgentUnreachable(agent_id=agent_id, unreachable_time=core.now())],
        reply=TimersReply(unreachable=[agent_id])))
    tick = asyncio.create_task(core.run_timers_and_allocate("periodic"))
    await asyncio.sleep(0)  # staged, not yet committed (the commit needs a Raft round trip)
    assert agent_id in core.state.unreachable_agents and core.committed_index < core.state.index
    assert core.agent_links.get(agent_id) is link and link.close_reason is None
    await tick
    assert agent_id not in core.agent_links and link.close_reason == "unreachable"
