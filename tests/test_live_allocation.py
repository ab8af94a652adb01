"""The hierarchical allocator in the live master: weights and quota set through the operator API
(POST /api/v1) shape the offers real frameworks receive."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.cluster import Cluster, running_cluster
from tests.v1client import Scheduler, request

pytestmark = pytest.mark.integration
OPERATOR = "/api/v1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("live-alloc") / "cluster") as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def operator(http, cluster: Cluster, body: dict, addr: str | None = None):
    return await request(http, addr or cluster.leader_endpoint(), body, path=OPERATOR)


def cpus(offer: dict) -> float:
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == "cpus")


async def test_weights_round_trip_and_bad_input(cluster, http):
    ok = await operator(http, cluster, {"type": "UPDATE_WEIGHTS", "update_weights": {
        "weight_infos": [{"role": "analytics", "weight": 2.5}]}})
    assert ok.status == 200, ok.text
    got = await operator(http, cluster, {"type": "GET_WEIGHTS"})
    assert {"role": "analytics", "weight": 2.5} in got.json()["get_weights"]["weight_infos"]
    for info, message in [({"role": "analytics", "weight": 0}, "must be a positive number"),
                          ({"role": "*", "weight": 2}, "role '*'"),
                          ({"role": "a b", "weight": 2}, "is invalid"),
                          ({"weight": 2}, "weight_infos[0].role")]:
        bad = await operator(http, cluster, {"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [info]}})
        assert bad.status == 400 and message in bad.text, (info, bad.status, bad.text)
    follower = cluster.master_http(cluster.follower())
    moved = await operator(http, cluster, {"type": "GET_WEIGHTS"}, addr=follower)
    assert moved.status == 307 and moved.headers["Location"].endswith("/api/v1")


async def test_quota_validation(cluster, http):
    def quota(role, guarantees=None, limits=None, force=False):
        cfg = {"role": role}
        if guarantees is not None:
            cfg["guarantees"] = {k: {"value": v} for k, v in guarantees.items()}
        if limits is not None:
            cfg["limits"] = {k: {"value": v} for k, v in limits.items()}
        return {"type": "UPDATE_QUOTA", "update_quota": {"force": force, "quota_configs": [cfg]}}

    for body, message in [(quota("q", {"cpus": 2}, {"cpus": 1}), "exceeds its limit"),
                          (quota("q/sub", {"cpus": 1}), "top-level role"),
                          (quota("q", {"cpus": 1000}), "exceed the cluster's capacity"),
                          (quota("q", {"cpus": -1}), "non-negative"),
                          ({"type": "UPDATE_QUOTA", "update_quota": {}}, "quota_configs")]:
        r = await operator(http, cluster, body)
        assert r.status == 400 and message in r.text, (body, r.status, r.text)
    forced = await operator(http, cluster, quota("q", {"cpus": 1000}, force=True))
    assert forced.status == 200, forced.text
    got = (await operator(http, cluster, {"type": "GET_QUOTA"})).json()["get_quota"]["status"]["configs"]
    assert {"role": "q", "guarantees": {"cpus": {"value": 1000.0}}, "limits": {}} in got
    cleared = await operator(http, cluster, quota("q", {}, {}))
    assert cleared.status == 200
    got = (await operator(http, cluster, {"type": "GET_QUOTA"})).json()["get_quota"]["status"]["configs"]
    assert all(c["role"] != "q" for c in got)


async def test_quota_limit_caps_what_a_role_is_offered(cluster, http):
    r = await operator(http, cluster, {"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [
        {"role": "capped", "limits": {"cpus": {"value": 1.0}}}]}})
    assert r.status == 200, r.text
    sched = await Scheduler(http, cluster.leader_endpoint(), name="capped", role="capped").subscribe()
    try:
        offers = await sched.offers()
        await asyncio.sleep(1.5)  # a few allocation runs: nothing more may come
        while True:
            try:
                offers += (await sched.expect("OFFERS", timeout=0.5))["offers"]["offers"]
            except AssertionError:
                break
        # Two agents of 2 cpus each, but the role may hold 1 cpu at most.
        assert sum(cpus(o) for o in offers) == pytest.approx(1.0)
        state = cluster.state()
        fw = next(f for f in state["frameworks"] if f["id"] == sched.framework_id)
        assert fw["offered_resources"]["cpus"] == pytest.approx(1.0)
        roles = (await operator(http, cluster, {"type": "GET_ROLES"})).json()["get_roles"]["roles"]
        capped = next(r for r in roles if r["name"] == "capped")
        assert {"value": sched.framework_id} in capped["frameworks"]
    finally:
        await sched.call("TEARDOWN")
        await sched.close()
