"""Persistent volumes end to end: an unmodified pymesos framework, real master replicas, real agents and Podman
containers; the data survives an agent kill -9 and a leader kill -9; the operator API over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.cluster import Cluster, run_framework, running_cluster
from tests.test_replay import cli as replay_cli
from tests.v1client import Scheduler, acked_update, request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("volumes") / "cluster") as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def volume_dirs(cluster: Cluster, role: str, vid: str) -> list[tuple[str, Path]]:
    """(agent name, directory) of every agent work dir holding the volume."""
    return [(a["id"], Path(a["work_dir"]) / "volumes" / "roles" / role / vid) for a in cluster.layout["agents"]
            if (Path(a["work_dir"]) / "volumes" / "roles" / role / vid).is_dir()]


def checkpointed_ids(cluster: Cluster, name: str) -> list[str]:
    a = next(a for a in cluster.layout["agents"] if a["id"] == name)
    path = Path(a["work_dir"]) / "meta" / "resources.json"
    if not path.exists():
        return []
    return sorted(r["persistence"]["id"] for r in json.loads(path.read_text()) if "persistence" in r)


def agent_volume_ids(cluster: Cluster, name: str) -> list[str]:
    """The volumes the agent's own /state shows (what it checkpointed)."""
    state = cluster.agent_state(name) or {}
    return sorted(r["disk"]["persistence"]["id"] for res in state.get("reserved_resources_full", {}).values()
                  for r in res if "disk" in r)


def master_volume_ids(cluster: Cluster, agent_id: str) -> list[str]:
    state = cluster.state()
    slave = next(s for s in state["slaves"] if s["id"] == agent_id)
    return sorted(r["disk"]["persistence"]["id"] for res in slave.get("reserved_resources_full", {}).values()
                  for r in res if "disk" in r)


def phase(cluster: Cluster, name: str, vid: str, data: str, master: str | None = None) -> dict:
    return run_framework("pymesos_volumes.py", "--master", master or cluster.leader_endpoint(), "--phase", name,
                         "--volume", vid, "--data", data)


async def offers_seen_by(http: aiohttp.ClientSession, cluster: Cluster, role: str, seconds: float) -> list[dict]:
    """Every offer a framework of `role` gets for a while (each declined at once, so it comes back)."""
    sched = await Scheduler(http, cluster.leader_endpoint(), name="observer", roles=[role],
                            capabilities=[{"type": "MULTI_ROLE"}]).subscribe()
    seen: list[dict] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                offers = (await sched.expect("OFFERS", timeout=max(0.1, deadline - time.monotonic())))["offers"]
            except AssertionError:
                break
            seen += offers["offers"]
            await sched.call("DECLINE", {"offer_ids": [o["id"] for o in offers["offers"]],
                                         "filters": {"refuse_seconds": 0.1}})
    finally:
        await sched.call("TEARDOWN")
        await sched.close()
    return seen


async def test_a_volume_keeps_its_data_across_agent_and_leader_kills(cluster, http):
    vid = f"vol-{uuid.uuid4().hex[:6]}"
    out = await asyncio.to_thread(phase, cluster, "write", vid, "hello-1")
    assert out["final"] == "TASK_FINISHED", out
    (holder, path), = volume_dirs(cluster, "db", vid)
    assert (path / "file").read_text() == "hello-1"
    agent_id = cluster.agent_id(holder)
    assert master_volume_ids(cluster, agent_id) == checkpointed_ids(cluster, holder) == [vid]
    assert agent_volume_ids(cluster, holder) == [vid]

    # Offered back to its role only: a framework of another role never sees it.
    seen = await offers_seen_by(http, cluster, "web", 3.0)
    assert seen and not [r for o in seen for r in o["resources"] if "disk" in r and "persistence" in r["disk"]]

    # kill -9 the agent holding it, and start it again: the volume is still there, and the master agrees.
    cluster.kill(holder)
    cluster.start_agent(holder)
    cluster.wait_agents()
    # kill -9 the leader; a new one takes over; the old one comes back as a follower.
    old = cluster.wait_leader()
    cluster.kill(old)
    deadline = time.time() + 30
    while time.time() < deadline and cluster.leader() in (None, old):
        await asyncio.sleep(0.1)
    cluster.start_master(old)
    new = cluster.wait_leader()
    assert new != old

    out = await asyncio.to_thread(phase, cluster, "read", vid, "hello-1", cluster.master_http(new))
    assert out["final"] == "TASK_FINISHED", out  # the task found the data
    assert master_volume_ids(cluster, agent_id) == checkpointed_ids(cluster, holder) == [vid]

    out = await asyncio.to_thread(phase, cluster, "destroy", vid, "", cluster.master_http(new))
    # DESTROY gives the disk back to the reservation (offered as plain reserved disk), then UNRESERVE releases it
    assert out["after_destroy"] == {"volumes": [], "reserved_disk": 64}, out
    assert out["after_unreserve"] == {"reserved_disk": 0}, out
    deadline = time.time() + 20
    while time.time() < deadline and volume_dirs(cluster, "db", vid):
        await asyncio.sleep(0.2)
    assert not volume_dirs(cluster, "db", vid) and checkpointed_ids(cluster, holder) == []
    assert master_volume_ids(cluster, agent_id) == []

    # Every replica's log replays and verifies.
    cluster.wait_converged(timeout=30)
    for m in cluster.layout["masters"]:
        rc, text, err = replay_cli("verify", "--store", m["data_dir"])
        assert rc == 0, (m["id"], text, err)


async def operator(http: aiohttp.ClientSession, cluster: Cluster, call: str, agent_id: str, key: str,
                   items: list[dict]):
    body = {"type": call, call.lower(): {"agent_id": {"value": agent_id}, key: items}}
    leader = cluster.master_http(cluster.wait_leader())
    return await request(http, leader, body, path="/api/v1")


def disk(size: float, role: str = "ops") -> dict:
    return {"name": "disk", "type": "SCALAR", "scalar": {"value": size},
            "reservations": [{"type": "DYNAMIC", "role": role}]}


def volume(vid: str, size: float, role: str = "ops") -> dict:
    return dict(disk(size, role), disk={"persistence": {"id": vid}, "volume": {"container_path": "data",
                                                                               "mode": "RW"}})


async def test_operator_reserves_creates_destroys_and_unreserves(cluster, http):
    agent = cluster.layout["agents"][0]
    agent_id = cluster.agent_id(agent["id"])
    vid = f"op-{uuid.uuid4().hex[:6]}"
    r = await operator(http, cluster, "RESERVE_RESOURCES", agent_id, "resources", [disk(32)])
    assert r.status == 202, r
    r = await operator(http, cluster, "CREATE_VOLUMES", agent_id, "volumes", [volume(vid, 32)])
    assert r.status == 202, r
    get = await request(http, cluster.master_http(cluster.wait_leader()),
                        {"type": "GET_AGENTS"}, path="/api/v1")
    total = next(a for a in get.json()["get_agents"]["agents"]
                 if a["agent_info"]["id"]["value"] == agent_id)["total_resources"]
    (v,) = [x for x in total if x.get("disk", {}).get("persistence", {}).get("id") == vid]
    assert v["reservations"] == [{"type": "DYNAMIC", "role": "ops"}] and v["scalar"]["value"] == 32
    path = Path(agent["work_dir"]) / "volumes" / "roles" / "ops" / vid
    deadline = time.time() + 20
    while time.time() < deadline and not path.is_dir():
        await asyncio.sleep(0.2)
    assert path.is_dir()
    # refusals over HTTP: Mesos's statuses and texts
    r = await operator(http, cluster, "CREATE_VOLUMES", agent_id, "volumes", [volume(vid, 32)])
    assert r.status == 400 and f"Persistence ID '{vid}' is not unique" in r.text, r
    r = await operator(http, cluster, "RESERVE_RESOURCES", "no-such-agent", "resources", [disk(1)])
    assert (r.status, r.text) == (400, "No agent found with specified ID"), r
    r = await operator(http, cluster, "RESERVE_RESOURCES", agent_id, "resources", [disk(1e9)])
    assert r.status == 409 and "do not contain" in r.text, r
    r = await operator(http, cluster, "UNRESERVE_RESOURCES", agent_id, "resources", [volume(vid, 32)])
    assert r.status == 400 and "cannot be unreserved directly" in r.text, r
    r = await operator(http, cluster, "DESTROY_VOLUMES", agent_id, "volumes", [volume(vid, 32)])
    assert r.status == 202, r
    r = await operator(http, cluster, "UNRESERVE_RESOURCES", agent_id, "resources", [disk(32)])
    assert r.status == 202, r
    deadline = time.time() + 20
    while time.time() < deadline and path.exists():
        await asyncio.sleep(0.2)
    assert not path.exists()


def task_info(tid: str, agent_id: str, command: str, *resources: dict) -> dict:
    return {"name": tid, "task_id": {"value": tid}, "agent_id": {"value": agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}, *resources],
            "command": {"value": command}}


async def test_a_task_writing_past_its_volume_is_killed_with_the_disk_reason(cluster, http):
    agent = cluster.layout["agents"][1]
    agent_id = cluster.agent_id(agent["id"])
    vid = f"small-{uuid.uuid4().hex[:6]}"
    assert (await operator(http, cluster, "RESERVE_RESOURCES", agent_id, "resources", [disk(10, "tiny")])).status == 202
    assert (await operator(http, cluster, "CREATE_VOLUMES", agent_id, "volumes", [volume(vid, 10, "tiny")])).status \
        == 202
    sched = await Scheduler(http, cluster.master_http(cluster.wait_leader()), name="filler", roles=["tiny"],
                            capabilities=[{"type": "MULTI_ROLE"}]).subscribe()
    try:
        offer = (await sched.expect(lambda e: e.get("type") == "OFFERS" and any(
            r.get("disk", {}).get("persistence", {}).get("id") == vid
            for o in e["offers"]["offers"] for r in o["resources"])))["offers"]["offers"]
        offer = next(o for o in offer if o["agent_id"]["value"] == agent_id)
        vol = next(r for r in offer["resources"] if r.get("disk", {}).get("persistence", {}).get("id") == vid)
        tid = f"fill-{uuid.uuid4().hex[:6]}"
        r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {
            "task_infos": [task_info(tid, agent_id, "dd if=/dev/zero of=data/big bs=1M count=20; sleep 600", vol)]}}]})
        assert r.status == 202, r
        status = await acked_update(sched, tid)
        while status["state"] in ("TASK_STARTING", "TASK_RUNNING"):
            status = await acked_update(sched, tid)
        assert (status["state"], status["source"], status["reason"]) == (
            "TASK_FAILED", "SOURCE_AGENT", "REASON_CONTAINER_LIMITATION_DISK"), status
        assert f"Persistent volume '{vid}'" in status["message"] and "exceeds quota" in status["message"]
    finally:
        await sched.call("TEARDOWN")
        await sched.close()


async def test_two_tasks_share_a_shared_volume(cluster, http):
    agent = cluster.layout["agents"][0]
    agent_id = cluster.agent_id(agent["id"])
    vid = f"shared-{uuid.uuid4().hex[:6]}"
    shared = dict(volume(vid, 8, "team"), shared={})
    assert (await operator(http, cluster, "RESERVE_RESOURCES", agent_id, "resources", [disk(8, "team")])).status == 202
    assert (await operator(http, cluster, "CREATE_VOLUMES", agent_id, "volumes", [shared])).status == 202
    sched = await Scheduler(http, cluster.master_http(cluster.wait_leader()), name="sharers", roles=["team"],
                            capabilities=[{"type": "MULTI_ROLE"}, {"type": "SHARED_RESOURCES"}]).subscribe()
    try:
        offers = (await sched.expect(lambda e: e.get("type") == "OFFERS" and any(
            r.get("disk", {}).get("persistence", {}).get("id") == vid
            for o in e["offers"]["offers"] for r in o["resources"])))["offers"]["offers"]
        offer = next(o for o in offers if o["agent_id"]["value"] == agent_id)
        vol = next(r for r in offer["resources"] if r.get("disk", {}).get("persistence", {}).get("id") == vid)
        assert vol["shared"] == {}
        writer, reader = f"w-{uuid.uuid4().hex[:6]}", f"r-{uuid.uuid4().hex[:6]}"
        # Both at once on the one offered copy: the writer leaves a file, the reader waits for it.
        ro = dict(vol, disk=dict(vol["disk"], volume={"container_path": "shared", "mode": "RO"}))
        r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {
            "task_infos": [task_info(writer, agent_id, "echo hi > data/note && sleep 30", vol),
                           task_info(reader, agent_id, "for i in $(seq 60); do test -f shared/note && exit 0; "
                                                       "sleep 0.5; done; exit 1", ro)]}}]})
        assert r.status == 202, r
        final = {}
        while reader not in final:
            st = await acked_update(sched, reader)
            if st["state"] not in ("TASK_STARTING", "TASK_RUNNING"):
                final[reader] = st
        assert final[reader]["state"] == "TASK_FINISHED", final[reader]
        # the writer still runs on it: DESTROY is refused
        r = await operator(http, cluster, "DESTROY_VOLUMES", agent_id, "volumes", [shared])
        assert r.status == 400 and "in use" in r.text, r
        await sched.call("KILL", {"task_id": {"value": writer}, "agent_id": {"value": agent_id}})
        st = await acked_update(sched, writer)
        while st["state"] in ("TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"):
            st = await acked_update(sched, writer)
        assert st["state"] == "TASK_KILLED", st
    finally:
        await sched.call("TEARDOWN")
        await sched.close()
    deadline = time.time() + 20
    while True:
        r = await operator(http, cluster, "DESTROY_VOLUMES", agent_id, "volumes", [shared])
        if r.status == 202 or time.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert r.status == 202, r
