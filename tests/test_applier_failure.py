"""A replica whose applier fails anyway stops serving, leaves Raft and says so on /health (issue 9, item 4).

The fold cannot fail on a committed event (tests/test_fold_total.py); this forces a failure to check what the
replica does if it ever happens: the caller waiting on the commit gets a 503 (never a 500 or a hang), the
replica no longer serves or leads, /health answers 503 with the reason and /drover/status shows it.
"""

from __future__ import annotations

import master.replica
from eventstore import events as ev
from tests.test_http_fuzz import Replica, replica  # noqa: F401 (the fixture)


async def test_a_failed_applier_stops_the_replica(replica: Replica, monkeypatch) -> None:  # noqa: F811
    real_apply = master.replica.apply

    def failing(state, env):
        if isinstance(env.event, ev.WeightsUpdated):
            raise RuntimeError("simulated fold failure")
        return real_apply(state, env)

    monkeypatch.setattr(master.replica, "apply", failing)
    async with replica.http.get(replica.url("/health")) as r:
        assert r.status == 200
    body = b'{"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "r", "weight": 2.0}]}}'
    async with replica.http.post(replica.url("/api/v1"), data=body,
                                 headers={"Content-Type": "application/json"}) as r:
        assert r.status == 503, await r.text()
    async with replica.http.get(replica.url("/health")) as r:
        text = await r.text()
        assert r.status == 503 and "simulated fold failure" in text, text
    async with replica.http.get(replica.url("/drover/status")) as r:
        status = await r.json()
    assert status["serving"] is False and status["raft_leader"] is False
    assert "simulated fold failure" in status["failed"]
    assert not replica.core.serving
