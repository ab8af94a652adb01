"""A replica whose applier fails anyway stops serving, leaves Raft and says so on /health (issue 9, item 4).

The fold cannot fail on a committed event (tests/test_fold_total.py); this forces a failure to check what the
replica does if it ever happens: the caller waiting on the commit gets a 503 (never a 500 or a hang), the
replica no longer serves or leads, /health answers 503 with the reason and /drover/status shows it.

On the leader, a decision's events are folded when it is staged (master/pipeline.py), before they are committed;
its applier then stores them. So the applier's failure is forced in the store write, and a fold failing at stage
time is a case of its own: nothing is committed, the caller gets a 503, and the leader rebuilds its state from
the store and serves again.
"""

from __future__ import annotations

import asyncio

import master.replica
from eventstore import events as ev
from tests.test_http_fuzz import Replica, replica  # noqa: F401 (the fixture)


async def test_a_failed_applier_stops_the_replica(replica: Replica, monkeypatch) -> None:  # noqa: F811
    store = replica.core.store
    real_append = store.append

    async def failing(envs, payloads=None):
        if any(isinstance(env.event, ev.WeightsUpdated) for env in envs):
            raise RuntimeError("simulated applier failure")
        return await real_append(envs, payloads)

    monkeypatch.setattr(store, "append", failing)
    async with replica.http.get(replica.url("/health")) as r:
        assert r.status == 200
    async with replica.http.post(replica.url("/api/v1"), data=WEIGHTS,
                                 headers={"Content-Type": "application/json"}) as r:
        assert r.status == 503, await r.text()
    async with replica.http.get(replica.url("/health")) as r:
        text = await r.text()
        assert r.status == 503 and "simulated applier failure" in text, text
    async with replica.http.get(replica.url("/drover/status")) as r:
        status = await r.json()
    assert status["serving"] is False and status["raft_leader"] is False
    assert "simulated applier failure" in status["failed"]
    assert not replica.core.serving


WEIGHTS = b'{"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "r", "weight": 2.0}]}}'


async def test_a_fold_failing_at_stage_time_commits_nothing_and_the_leader_recovers(
        replica: Replica, monkeypatch) -> None:  # noqa: F811
    core = replica.core
    real_apply = master.replica.apply
    calls = []

    def failing(state, env):
        if isinstance(env.event, ev.WeightsUpdated) and not calls:
            calls.append(env.index)
            state.weights["half-applied"] = 3.0  # a fold that fails half way
            raise RuntimeError("simulated fold failure")
        return real_apply(state, env)

    monkeypatch.setattr(master.replica, "apply", failing)
    committed = core.committed_index
    async with replica.http.post(replica.url("/api/v1"), data=WEIGHTS,
                                 headers={"Content-Type": "application/json"}) as r:
        assert r.status == 503, await r.text()
    # The replica re-elects itself (it is still the Raft leader), on a state rebuilt from the store.
    for _ in range(200):
        if core.serving:
            break
        await asyncio.sleep(0.05)
    assert core.serving and core.failed is None
    assert "half-applied" not in core.state.weights
    stored = await core.store.read(committed + 1, 100)
    assert not any(isinstance(env.event, ev.WeightsUpdated) for env in stored)
    async with replica.http.post(replica.url("/api/v1"), data=WEIGHTS,
                                 headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
    assert core.state.weights.get("r") == 2.0
