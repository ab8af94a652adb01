"""Every input that once broke the cluster (issue 9, "Why"), sent to a real cluster: each is refused with a
4xx (or a Mesos-style ERROR event) and commits nothing; afterwards every replica applies the same log, `drover
replay verify` passes on each replica's store, a replica restarted from its store comes back, and a new task
still runs.

Raw HTTP, no client library: a client library would refuse to send most of these.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from tests.cluster import REPO, Cluster, running_cluster
from tests.test_bad_input import settled_index, task_info, unique
from tests.v1client import API, JSON, Scheduler

pytestmark = pytest.mark.integration

AGENT_API = "/api/drover/agent"
OPERATOR_API = "/api/v1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("hostile") / "cluster") as c:
        yield c


async def post(http: aiohttp.ClientSession, cluster: Cluster, path: str, body: Any, *,
               raw: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    """POST and read what comes back within a second (a refused SUBSCRIBE is a 200 stream with an ERROR)."""
    data = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    hdrs = {"Content-Type": JSON, "Accept": JSON, **(headers or {})}
    async with http.post(f"http://{cluster.leader_endpoint()}{path}", data=data, headers=hdrs,
                         timeout=aiohttp.ClientTimeout(total=30)) as r:
        text = ""
        try:
            text = (await asyncio.wait_for(r.content.read(64 * 1024), 1.0)).decode(errors="replace")
        except asyncio.TimeoutError:
            pass
        return r.status, text


def refused(status: int, text: str) -> bool:
    """A 4xx, or a subscription answered with an ERROR event and closed."""
    return 400 <= status < 500 or (status == 200 and '"type":"ERROR"' in text.replace(" ", ""))


def agent_subscribe(**overrides: Any) -> dict:
    sub = {"hostname": "evil.local", "http": "127.0.0.1:1",
           "resources": [{"name": "cpus", "type": "SCALAR", "scalar": 1.0}]}
    sub.update(overrides)
    return {"type": "SUBSCRIBE", "subscribe": sub}


def scalar(name: str, v: Any) -> dict:
    return {"name": name, "type": "SCALAR", "scalar": v}


def framework(fid: str | None = None, **info: Any) -> dict:
    fi: dict = {"user": "tester", "name": "hostile", **info}
    body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": fi}}
    if fid is not None:
        fi["id"] = {"value": fid}
        body["framework_id"] = {"value": fid}
    return body


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def until(s: Scheduler, task_id: str, state: str) -> dict:
    """Take this task's updates, acknowledging each (the agent resends an update until it is), until `state`."""
    while True:
        status = await s.update(task_id)
        if "uuid" in status:
            r = await s.call("ACKNOWLEDGE", {"agent_id": status["agent_id"], "task_id": status["task_id"],
                                             "uuid": status["uuid"]})
            assert r.status == 202, r
        if status["state"] == state:
            return status
        assert status["state"] in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"), status


def replay_verify(store: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drover.cli", "replay", "verify", "--store", store],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


async def test_hostile_inputs_are_refused_and_the_cluster_lives_on(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        victim = await Scheduler(http, cluster.leader_endpoint(), name="victim").subscribe()
        offer = (await victim.offers())[0]
        agent_id = offer["agent_id"]["value"]
        running = unique("victim")
        reply = await victim.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
            {"type": "LAUNCH", "launch": {"task_infos": [task_info(running, agent_id)]}}]})
        assert reply.status == 202, reply
        await until(victim, running, "TASK_RUNNING")

        unknown_offers = [{"value": f"nope-{i}"} for i in range(2000)]
        hostile: dict[str, tuple[str, Any, bytes | None]] = {
            # agent calls: resources the fold could not add up, numbers it could not round, addresses and ids
            "agent resource SCALAR and RANGES": (AGENT_API, agent_subscribe(resources=[
                scalar("cpus", 1.0), {"name": "cpus", "type": "RANGES", "ranges": [[1, 2]]}]), None),
            "agent scalar 1e306": (AGENT_API, agent_subscribe(resources=[scalar("cpus", 1e306)]), None),
            "agent scalar NaN": (AGENT_API, agent_subscribe(resources=[scalar("cpus", float("nan"))]), None),
            "agent range end Infinity": (AGENT_API, agent_subscribe(resources=[
                {"name": "ports", "type": "RANGES", "ranges": [[1, float("inf")]]}]), None),
            "agent http without port": (AGENT_API, agent_subscribe(http="nohost"), None),
            "agent id ..": (AGENT_API, agent_subscribe(agent_id=".."), None),
            "agent update absurd unreachable_time": (AGENT_API, {
                "type": "UPDATE", "agent_id": agent_id, "update": {
                    "framework_id": victim.framework_id, "task_id": running,
                    "status": {"state": "TASK_RUNNING", "source": "SOURCE_EXECUTOR", "timestamp": 1.0,
                               "unreachable_time": 1e300}}}, None),
            "agent update NaN timestamp": (AGENT_API, {
                "type": "UPDATE", "agent_id": agent_id, "update": {
                    "framework_id": victim.framework_id, "task_id": running,
                    "status": {"state": "TASK_FINISHED", "source": "SOURCE_EXECUTOR", "timestamp": float("nan")}}},
                None),
            "agent update unknown state": (AGENT_API, {
                "type": "UPDATE", "agent_id": agent_id, "update": {
                    "framework_id": victim.framework_id, "task_id": running,
                    "status": {"state": "TASK_BOGUS", "source": "SOURCE_EXECUTOR", "timestamp": 1.0}}}, None),
            # framework ids that would become path components on agents, or simply are not ids
            "framework id ..": (API, framework(".."), None),
            "framework id a/b": (API, framework("a/b"), None),
            "framework id control characters": (API, framework("a\x01\x1b[31mb"), None),
            "framework id 3 MiB": (API, framework("x" * (3 * 1024 * 1024)), None),
            # non-finite numbers
            "failover_timeout Infinity": (API, framework(failover_timeout="Infinity"), None),
            "failover_timeout NaN": (API, framework(failover_timeout=float("nan")), None),
            "min_allocatable Infinity": (API, framework(
                roles=["hostile"], capabilities=[{"type": "MULTI_ROLE"}],
                offer_filters={"hostile": {"min_allocatable_resources": {"quantities": [
                    {"quantities": {"cpus": {"value": "Infinity"}}}]}}}), None),
            "kill grace Infinity": (API, {"type": "KILL", "framework_id": {"value": victim.framework_id},
                                          "kill": {"task_id": {"value": running},
                                                   "kill_policy": {"grace_period": {"nanoseconds": "Infinity"}}}},
                                    None),
            # unbounded work
            "accept 2000 unknown offers x 100 tasks": (API, {
                "type": "ACCEPT", "framework_id": {"value": victim.framework_id}, "accept": {
                    "offer_ids": unknown_offers, "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                        task_info(f"t{i}", agent_id) for i in range(100)]}}]}}, None),
            "reconcile 20000 tasks": (API, {
                "type": "RECONCILE", "framework_id": {"value": victim.framework_id}, "reconcile": {"tasks": [
                    {"task_id": {"value": f"t{i}"}} for i in range(20_000)]}}, None),
            "nested JSON scheduler": (API, None, nested(100_000)),
            "nested JSON operator": (OPERATOR_API, None, nested(100_000)),
            "nested JSON agent": (AGENT_API, None, nested(100_000)),
            # malformed ranges in a task
            "task range begin after end": (API, {
                "type": "ACCEPT", "framework_id": {"value": victim.framework_id}, "accept": {
                    "offer_ids": [{"value": "nope"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                        **task_info("bad-range", agent_id), "resources": [
                            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                            {"name": "ports", "type": "RANGES",
                             "ranges": {"range": [{"begin": 32000, "end": 31000}]}}]}]}}]}}, None),
            "task range begin 1e300": (API, {
                "type": "ACCEPT", "framework_id": {"value": victim.framework_id}, "accept": {
                    "offer_ids": [{"value": "nope"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                        **task_info("bad-range2", agent_id), "resources": [
                            {"name": "ports", "type": "RANGES",
                             "ranges": {"range": [{"begin": 1e300, "end": 1e300}]}}]}]}}]}}, None),
            # operator writes
            "weight Infinity": (OPERATOR_API, {"type": "UPDATE_WEIGHTS", "update_weights": {
                "weight_infos": [{"role": "hostile", "weight": "Infinity"}]}}, None),
            "quota 1e306": (OPERATOR_API, {"type": "UPDATE_QUOTA", "update_quota": {"force": True, "quota_configs": [
                {"role": "hostile", "guarantees": {"cpus": {"value": 1e306}}}]}}, None),
        }
        headers = {"Mesos-Stream-Id": victim.stream_id}
        before = await settled_index(http, cluster)
        answers = {}
        for name, (path, body, raw) in hostile.items():
            status, text = await post(http, cluster, path, body, raw=raw,
                                      headers=headers if path == API and body and body["type"] != "SUBSCRIBE" else None)
            answers[name] = (status, text[:200])
        server_errors = {k: v for k, v in answers.items() if v[0] >= 500}
        assert not server_errors, server_errors
        not_refused = {k: v for k, v in answers.items()
                       if not refused(*v) and not k.startswith(("task range", "kill grace", "reconcile"))}
        assert not not_refused, not_refused
        # The ones a Mesos scheduler may legitimately get a 202 for (TASK_ERROR / nothing to do) still commit
        # nothing harmful; everything else committed nothing at all.
        for name in ("task range begin after end", "task range begin 1e300", "kill grace Infinity",
                     "reconcile 20000 tasks"):
            assert answers[name][0] in (202, 400), (name, answers[name])
        assert await settled_index(http, cluster) == before, answers

        # The event stream refuses absurd starting points instead of failing.
        for start in ("9" * 100, str(2**63), "-1", "1e9"):
            async with http.get(f"http://{cluster.leader_endpoint()}/api/v1/events?from={start}&follow=false") as r:
                assert r.status == 400, (start, r.status, await r.text())

        # An empty framework id is no id, as in Mesos (validateFrameworkId): the framework gets a new one.
        fresh = Scheduler(http, cluster.leader_endpoint(), name="empty-id", id={"value": ""})
        await fresh.subscribe()
        assert fresh.framework_id and fresh.framework_id != ""
        await fresh.close()

        # The victim's task was never touched by the forged updates.
        st = cluster.state()
        tasks = [t for f in st["frameworks"] for t in f["tasks"] if t["id"] == running]
        assert tasks and tasks[0]["state"] == "TASK_RUNNING", tasks
        await victim.close()

    # Every replica applies the same log, and each store replays and verifies.
    cluster.wait_converged()
    for m in cluster.layout["masters"]:
        res = replay_verify(m["data_dir"])
        assert res.returncode == 0, (m["id"], res.stdout, res.stderr)
        health = cluster.get(m["http"], "/drover/status")
        assert health["failed"] is None

    # A follower restarted from its own store comes back and catches up.
    follower = cluster.follower()
    cluster.kill(follower)
    cluster.start_master(follower)
    cluster.wait_converged(timeout=60)

    # And the cluster still runs new work.
    async with aiohttp.ClientSession() as http:
        s = await Scheduler(http, cluster.leader_endpoint(), name="after").subscribe()
        offer = (await s.offers())[0]
        tid = unique("after")
        reply = await s.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
            {"type": "LAUNCH", "launch": {"task_infos": [task_info(tid, offer["agent_id"]["value"], cmd="echo ok")]}}]})
        assert reply.status == 202, reply
        await until(s, tid, "TASK_FINISHED")
        await s.close()
