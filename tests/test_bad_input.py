"""Bad input to the scheduler API gets the answer Mesos gives, and changes nothing.

Raw HTTP against a real cluster (no client library in between), checked against
../shared/docs/mesos-v1-api.md sections 1.6 (status codes, in Mesos's order), 1.7
(leader redirect) and 2 (ACCEPT/DECLINE/ACKNOWLEDGE/KILL). "Changes nothing" is
checked on the leader's `/drover/status` applied index (a rejected call must not
append to the log) and on `/master/state`; every test ends with the replicas
converged on the same index and state hash, so no bad call corrupted the log.

Mesos converts and validates the whole call before it looks at the framework,
so a malformed call is a 400 even from an unknown or disconnected framework;
several cases pin that order down.

One cluster serves the whole module (starting one costs seconds): each test
works with its own frameworks and compares before/after, so tests do not depend
on each other's leftovers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any, AsyncIterator, Iterator

import aiohttp
import pytest

from agent.images import podman_env
from tests.cluster import Cluster, running_cluster
from tests.v1client import API, JSON, WAIT, Scheduler, request

pytestmark = pytest.mark.integration

QUIET = 1.0  # no commit for this long (two allocation intervals) = the log is at rest

# ---- the cluster ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """tests.cluster's `cluster` fixture, started once for this module instead of once per test."""
    with running_cluster(tmp_path_factory.mktemp("bad-input") / "cluster") as c:
        yield c


@pytest.fixture(autouse=True)
def _replicas_converge_afterwards(cluster: Cluster) -> Iterator[None]:
    """After every test's bad calls the three replicas still agree on the log: nothing got corrupted."""
    yield
    cluster.wait_converged()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def subscribe(cluster: Cluster, http: aiohttp.ClientSession):
    """`await subscribe(**framework_info)` -> a subscribed Scheduler; all are closed at the end of the test."""
    opened: list[Scheduler] = []

    async def _subscribe(**framework_info: Any) -> Scheduler:
        s = Scheduler(http, cluster.leader_endpoint(), **framework_info)
        opened.append(s)
        return await s.subscribe()

    yield _subscribe
    for s in opened:
        await s.close()


# ---- raw HTTP -----------------------------------------------------------------------------------------


async def applied_index(http: aiohttp.ClientSession, cluster: Cluster) -> int:
    async with http.get(f"http://{cluster.leader_endpoint()}/drover/status") as r:
        return (await r.json())["applied_index"]


async def settled_index(http: aiohttp.ClientSession, cluster: Cluster) -> int:
    """The leader's applied index once nothing has been committed for QUIET seconds (offers made, ...)."""
    deadline = time.monotonic() + WAIT
    last, since = await applied_index(http, cluster), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = await applied_index(http, cluster)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET:
            return now
    raise AssertionError("the leader's log never came to rest")


async def master_state(http: aiohttp.ClientSession, cluster: Cluster) -> dict:
    async with http.get(f"http://{cluster.leader_endpoint()}/master/state") as r:
        return await r.json()


def framework_ids(state: dict) -> set[str]:
    return {f["id"] for f in state["frameworks"]}


def tasks_named(state: dict, task_id: str) -> list[dict]:
    return [t for f in state["frameworks"] for t in f["tasks"] + f["completed_tasks"] if t["id"] == task_id]


def containers_of(task_id: str) -> list[str]:
    out = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=drover.task={task_id}"],
                         env=podman_env(), capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def scalar(resources: list[dict], name: str) -> float:
    return sum(r["scalar"]["value"] for r in resources if r["name"] == name and r["type"] == "SCALAR")


def task_info(task_id: str, agent_id: str, cpus: float = 0.1, mem: float = 32.0, cmd: str = "sleep 300") -> dict:
    return {"name": task_id, "task_id": {"value": task_id}, "agent_id": {"value": agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}}],
            "command": {"value": cmd}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


SUBSCRIBE = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "tester", "name": "bad-input"}}}

# body, optional content_type (None: no header) and headers -> the status and a part of the message
REJECTED = {
    "malformed-json": dict(body=b'{"type": "SUBSCRIBE", "subscribe": {', status=400,
                           says="Failed to parse body into JSON"),
    "json-not-an-object": dict(body=b'["SUBSCRIBE"]', status=400, says="JSON object"),
    "missing-type": dict(body={"subscribe": SUBSCRIBE["subscribe"]}, status=400,
                         says="Expecting 'type' to be present"),
    "unknown-call-type": dict(body={"type": "LAUNCH_ROCKETS"}, status=400, says="LAUNCH_ROCKETS"),
    "missing-content-type": dict(body=SUBSCRIBE, content_type=None, status=400,
                                 says="Expecting 'Content-Type' to be present"),
    "content-type-text-plain": dict(body=SUBSCRIBE, content_type="text/plain", status=415,
                                    says="Expecting 'Content-Type' of application/json"),
    # Mesos compares the exact string: parameters are not tolerated.
    "content-type-with-charset": dict(body=SUBSCRIBE, content_type="application/json; charset=utf-8", status=415,
                                      says="Expecting 'Content-Type' of application/json"),
    "subscribe-with-stream-id": dict(body=SUBSCRIBE, headers={"Mesos-Stream-Id": str(uuid.uuid4())}, status=400,
                                     says="should not include the 'Mesos-Stream-Id' header"),
    "subscribe-accepting-only-html": dict(body=SUBSCRIBE, headers={"Accept": "text/html"}, status=406,
                                          says="application/json"),
    "subscribe-framework-id-differs-from-info-id": dict(
        body={"type": "SUBSCRIBE", "framework_id": {"value": "fw-a"},
              "subscribe": {"framework_info": {"user": "tester", "name": "bad-input", "id": {"value": "fw-b"}}}},
        status=400, says="'framework_id' differs from 'subscribe.framework_info.id'"),
    "subscribe-framework-id-without-info-id": dict(
        body={**SUBSCRIBE, "framework_id": {"value": "fw-a"}},
        status=400, says="'framework_id' differs from 'subscribe.framework_info.id'"),
    "subscribe-without-user": dict(
        body={"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "bad-input"}}},
        status=400, says="framework_info.user"),
    "call-without-framework-id": dict(body={"type": "REVIVE"}, headers={"Mesos-Stream-Id": str(uuid.uuid4())},
                                      status=400, says="Expecting 'framework_id' to be present"),
    "call-for-unknown-framework": dict(body={"type": "REVIVE", "framework_id": {"value": "no-such-framework"}},
                                       headers={"Mesos-Stream-Id": str(uuid.uuid4())},
                                       status=400, says="Framework cannot be found"),
    # Mesos converts and validates the whole call before it looks the framework up.
    "call-missing-its-payload": dict(body={"type": "ACCEPT", "framework_id": {"value": "no-such-framework"}},
                                     status=400, says="Expecting 'accept' to be present"),
    "acknowledge-uuid-not-16-bytes": dict(
        body={"type": "ACKNOWLEDGE", "framework_id": {"value": "no-such-framework"},
              "acknowledge": {"agent_id": {"value": "S0"}, "task_id": {"value": "t"}, "uuid": "AAAA"}},
        status=400, says="Failed to validate scheduler::Call"),
    "task-info-missing-a-required-field": dict(
        body={"type": "ACCEPT", "framework_id": {"value": "no-such-framework"},
              "accept": {"offer_ids": [{"value": "O1"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                  {k: v for k, v in task_info("t", "S0").items() if k != "name"}]}}]}},
        status=400, says="Missing required fields: accept.operations[0].launch.task_infos[0].name"),
    # Drover's value rules (issue 9): answered before the framework is looked up, like any malformed call.
    "call-with-invalid-framework-id": dict(body={"type": "REVIVE", "framework_id": {"value": ".."}},
                                           headers={"Mesos-Stream-Id": str(uuid.uuid4())},
                                           status=400, says="Invalid 'framework_id'"),
    "kill-grace-period-not-finite": dict(
        body={"type": "KILL", "framework_id": {"value": "no-such-framework"},
              "kill": {"task_id": {"value": "t"}, "kill_policy": {"grace_period": {"nanoseconds": "NaN"}}}},
        status=400, says="must be a finite number"),
    # An infinite filter is not malformed: Mesos caps it (and pymesos sends float('inf') as a bare Infinity), so
    # the call gets as far as the framework lookup (tests/test_codec.py: test_refuse_seconds_as_mesos_takes_them).
    "decline-filter-infinite": dict(
        body={"type": "DECLINE", "framework_id": {"value": "no-such-framework"},
              "decline": {"offer_ids": [], "filters": {"refuse_seconds": "Infinity"}}},
        status=400, says="Framework cannot be found"),
    "subscribe-offer-filter-infinite": dict(
        body={"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "tester", "name": "bad-input", "offer_filters": {"*": {"min_allocatable_resources": {
                "quantities": [{"quantities": {"cpus": {"value": "Infinity"}}}]}}}}}},
        status=400, says="must be a finite number"),
    "range-bound-not-an-integer": dict(
        body={"type": "ACCEPT", "framework_id": {"value": "no-such-framework"},
              "accept": {"offer_ids": [{"value": "O1"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                  {**task_info("t", "S0"), "resources": [{"name": "ports", "type": "RANGES",
                                                          "ranges": {"range": [{"begin": 1.5, "end": 1e300}]}}]}]}}]}},
        status=400, says="must be an integer"),
    "offer-id-with-a-slash": dict(
        body={"type": "DECLINE", "framework_id": {"value": "no-such-framework"},
              "decline": {"offer_ids": [{"value": "../O1"}]}},
        status=400, says="Invalid 'decline.offer_ids[0]'"),
    # a user no image can have (it would become podman's --user): refused before anything else, issue 11
    "task-user-not-a-user-name": dict(
        body={"type": "ACCEPT", "framework_id": {"value": "no-such-framework"},
              "accept": {"offer_ids": [{"value": "O1"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                  {**task_info("t", "S0"), "command": {"value": "id", "user": "root:root"}}]}}]}},
        status=400, says="'accept.operations[0].launch.task_infos[0].command.user' 'root:root' is invalid"),
    "deeply-nested-json": dict(body=b'{"type":"SUBSCRIBE","x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                               status=400, says="Failed to parse body into JSON"),
    "call-type-UNKNOWN-for-unknown-framework": dict(
        body={"type": "UNKNOWN", "framework_id": {"value": "no-such-framework"}},
        headers={"Mesos-Stream-Id": str(uuid.uuid4())}, status=400, says="Framework cannot be found"),
}


@pytest.mark.parametrize("case", REJECTED.values(), ids=REJECTED.keys())
async def test_malformed_call_is_rejected_and_changes_nothing(cluster, http, case):
    index = await settled_index(http, cluster)
    before = framework_ids(await master_state(http, cluster))

    r = await request(http, cluster.leader_endpoint(), case["body"], content_type=case.get("content_type", JSON),
                      headers=case.get("headers"))

    assert r.status == case["status"], r
    assert case["says"] in r.text, r
    assert await applied_index(http, cluster) == index
    assert framework_ids(await master_state(http, cluster)) == before


async def test_get_is_405_with_allow_post(cluster, http):
    index = await settled_index(http, cluster)
    r = await request(http, cluster.leader_endpoint(), method="GET", content_type=None)
    assert r.status == 405, r
    assert r.headers["Allow"] == "POST"
    assert await applied_index(http, cluster) == index


async def test_oversized_body_is_413(cluster, http):
    index = await settled_index(http, cluster)
    before = framework_ids(await master_state(http, cluster))
    info = {**SUBSCRIBE["subscribe"]["framework_info"], "name": "x" * (4 * 1024 * 1024 + 1)}

    r = await request(http, cluster.leader_endpoint(), {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}})

    assert r.status == 413, r
    assert "body size" in r.text, r
    assert await applied_index(http, cluster) == index
    assert framework_ids(await master_state(http, cluster)) == before


# ---- calls from a framework that is not (or no longer) the subscribed one ----------------------------------


async def test_call_without_stream_id_is_400(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    index = await settled_index(http, cluster)

    r = await sched.call("REVIVE", stream_id=None)

    assert r.status == 400, r
    assert "Mesos-Stream-Id" in r.text, r
    assert await applied_index(http, cluster) == index


async def test_call_with_wrong_stream_id_is_400(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    index = await settled_index(http, cluster)
    wrong = str(uuid.uuid4())

    r = await sched.call("REVIVE", stream_id=wrong)

    assert r.status == 400, r
    assert f"The stream ID '{wrong}' included in this request didn't match" in r.text, r
    assert await applied_index(http, cluster) == index


async def test_call_from_disconnected_framework_is_403(cluster, http, subscribe):
    sched = await subscribe(failover_timeout=3600.0)  # known to the master after its stream closes
    await sched.close()
    deadline = time.monotonic() + WAIT
    while True:
        fw = next(f for f in (await master_state(http, cluster))["frameworks"] if f["id"] == sched.framework_id)
        if not fw["connected"]:
            break
        assert time.monotonic() < deadline, "the master never noticed the closed stream"
        await asyncio.sleep(0.1)
    index = await settled_index(http, cluster)

    r = await sched.call("REVIVE")

    assert r.status == 403, r
    assert "Framework is not subscribed" in r.text, r
    # A malformed call is a 400 even so: Mesos validates the call before it looks at the framework.
    r = await sched.call("ACKNOWLEDGE", {"agent_id": {"value": "S0"}, "task_id": {"value": "t"}, "uuid": "AAAA"})
    assert r.status == 400, r
    assert "uuid" in r.text.lower(), r
    r = await sched.call("KILL", {})
    assert r.status == 400, r
    assert "Missing required fields: kill.task_id" in r.text, r
    assert await applied_index(http, cluster) == index


# Calls that Mesos refuses without their payload (scheduler::call::validate); TEARDOWN, REVIVE, SUPPRESS need none.
NEED_PAYLOAD = ["ACCEPT", "DECLINE", "ACCEPT_INVERSE_OFFERS", "DECLINE_INVERSE_OFFERS", "KILL", "SHUTDOWN",
                "ACKNOWLEDGE", "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE", "RECONCILE_OPERATIONS", "MESSAGE",
                "REQUEST", "UPDATE_FRAMEWORK"]


async def test_call_missing_its_payload_is_400(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    index = await settled_index(http, cluster)

    for type_ in NEED_PAYLOAD:
        r = await sched.call(type_)
        assert r.status == 400, (type_, r)
        assert f"Expecting '{type_.lower()}' to be present" in r.text, (type_, r)
    assert await applied_index(http, cluster) == index


async def test_call_type_unknown_is_501_only_once_the_framework_checks_pass(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    index = await settled_index(http, cluster)

    r = await sched.call("UNKNOWN", stream_id=str(uuid.uuid4()))
    assert r.status == 400 and "didn't match" in r.text, r
    r = await sched.call("UNKNOWN")
    assert r.status == 501, r
    assert await applied_index(http, cluster) == index


# ---- stale or invalid content: 202, and the answer is an event on the stream -----------------------------


@pytest.mark.parametrize("capabilities, lost_state",
                         [([], "TASK_LOST"), ([{"type": "PARTITION_AWARE"}], "TASK_DROPPED")],
                         ids=["plain-framework", "partition-aware-framework"])
async def test_accept_of_unknown_offer_loses_the_task(cluster, http, subscribe, capabilities, lost_state):
    sched = await subscribe(capabilities=capabilities)
    offer = (await sched.offers())[0]
    index = await settled_index(http, cluster)
    tid = unique("lost")

    r = await sched.call("ACCEPT", {
        "offer_ids": [{"value": "no-such-offer"}],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task_info(tid, offer["agent_id"]["value"])]}}]})

    assert r.status == 202, r
    status = await sched.update(tid)
    assert status["state"] == lost_state
    assert status["reason"] == "REASON_INVALID_OFFERS"
    assert status["source"] == "SOURCE_MASTER"
    assert "uuid" not in status  # master-generated: nothing to acknowledge
    assert await applied_index(http, cluster) == index
    state = await master_state(http, cluster)
    assert tasks_named(state, tid) == []
    assert offer["id"]["value"] in {o["id"] for f in state["frameworks"] for o in f["offers"]}  # still outstanding


async def test_decline_of_unknown_offer_is_202_and_appends_nothing(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    index = await settled_index(http, cluster)

    r = await sched.call("DECLINE", {"offer_ids": [{"value": "no-such-offer"}], "filters": {"refuse_seconds": 30.0}})

    assert r.status == 202, r
    assert r.text == ""
    await asyncio.sleep(QUIET)
    assert await applied_index(http, cluster) == index


async def test_task_bigger_than_its_offer_is_task_error_and_returns_the_offer(cluster, http, subscribe):
    sched = await subscribe()
    offer = (await sched.offers())[0]
    agent_id = offer["agent_id"]["value"]
    cpus, mem = scalar(offer["resources"], "cpus"), scalar(offer["resources"], "mem")
    tid = unique("too-big")

    r = await sched.call("ACCEPT", {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task_info(tid, agent_id, cpus + 1, mem + 1)]}}],
        "filters": {"refuse_seconds": 0.0}})

    assert r.status == 202, r
    status = await sched.update(tid)
    assert status["state"] == "TASK_ERROR"
    assert status["reason"] == "REASON_TASK_INVALID"
    assert status["source"] == "SOURCE_MASTER"
    assert "uuid" not in status
    assert "more resources" in status["message"] and "cpus" in status["message"], status
    # The unused offer went back to the allocator: the same agent's resources are offered again, whole.
    again = await sched.expect(lambda e: e.get("type") == "OFFERS" and any(
        o["agent_id"]["value"] == agent_id for o in e["offers"]["offers"]))
    back = next(o for o in again["offers"]["offers"] if o["agent_id"]["value"] == agent_id)
    assert (scalar(back["resources"], "cpus"), scalar(back["resources"], "mem")) == (cpus, mem)
    # Nothing was launched: not in the master's state, not on any agent, no container.
    assert tasks_named(await master_state(http, cluster), tid) == []
    for a in cluster.layout["agents"]:
        assert all(t["task_id"] != tid for t in cluster.agent_state(a["id"])["tasks"])
    assert await asyncio.to_thread(containers_of, tid) == []


async def test_task_info_missing_a_required_field_fails_the_whole_call(cluster, http, subscribe):
    """A proto2 required field missing anywhere in the call is a conversion error: 400, not a TASK_ERROR."""
    sched = await subscribe()
    offer = (await sched.offers())[0]
    index = await settled_index(http, cluster)
    tid = unique("nameless")
    good = task_info(unique("fine"), offer["agent_id"]["value"])
    nameless = {k: v for k, v in task_info(tid, offer["agent_id"]["value"]).items() if k != "name"}

    r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]],
                                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": [good, nameless]}}]})

    assert r.status == 400, r
    assert "Missing required fields: accept.operations[0].launch.task_infos[1].name" in r.text, r
    assert await applied_index(http, cluster) == index
    state = await master_state(http, cluster)
    assert tasks_named(state, tid) == [] and tasks_named(state, good["task_id"]["value"]) == []
    assert offer["id"]["value"] in {o["id"] for f in state["frameworks"] for o in f["offers"]}  # not consumed


async def test_duplicate_task_id_in_one_accept_is_task_error_for_the_second(cluster, http, subscribe):
    sched = await subscribe()
    offer = (await sched.offers())[0]
    agent_id = offer["agent_id"]["value"]
    tid = unique("dup")

    r = await sched.call("ACCEPT", {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task_info(tid, agent_id, cmd="sleep 300"),
                                                                     task_info(tid, agent_id, cmd="echo second")]}}]})

    assert r.status == 202, r
    error = await sched.update(tid, lambda s: s["source"] == "SOURCE_MASTER")
    assert error["state"] == "TASK_ERROR"
    assert error["reason"] == "REASON_TASK_INVALID"
    assert "duplicate" in error["message"].lower() and tid in error["message"], error
    # The first one was launched: the agent reports on it.
    launched = await sched.update(tid, lambda s: s["source"] != "SOURCE_MASTER")
    assert launched["state"] != "TASK_ERROR" and "uuid" in launched, launched
    assert len(tasks_named(await master_state(http, cluster), tid)) == 1
    agent = next(a["id"] for a in cluster.layout["agents"] if cluster.agent_state(a["id"])["id"] == agent_id)
    assert [t["task_id"] for t in cluster.agent_state(agent)["tasks"]].count(tid) == 1


@pytest.mark.parametrize("bad_uuid", ["not base64!", "AAAA", "AAECAwQFBgcICQoLDA0ODxAR"],
                         ids=["not-base64", "3-bytes", "18-bytes"])
async def test_acknowledge_with_bad_uuid_is_400(cluster, http, subscribe, bad_uuid):
    sched = await subscribe()
    offer = (await sched.offers())[0]
    index = await settled_index(http, cluster)

    r = await sched.call("ACKNOWLEDGE", {"agent_id": offer["agent_id"], "task_id": {"value": "some-task"},
                                         "uuid": bad_uuid})

    assert r.status == 400, r
    assert "uuid" in r.text.lower(), r
    assert await applied_index(http, cluster) == index


async def test_kill_of_unknown_task_is_202_and_a_reconciliation_update(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    index = await settled_index(http, cluster)
    tid = unique("ghost")

    r = await sched.call("KILL", {"task_id": {"value": tid}})

    assert r.status == 202, r
    status = await sched.update(tid)
    assert status["state"] == "TASK_LOST"  # not partition-aware
    assert status["reason"] == "REASON_RECONCILIATION"
    assert status["source"] == "SOURCE_MASTER"
    assert "uuid" not in status
    assert await applied_index(http, cluster) == index
    assert tasks_named(await master_state(http, cluster), tid) == []


# ---- followers -------------------------------------------------------------------------------------------


async def test_follower_redirects_to_the_leader(cluster, http):
    leader = cluster.master_http(cluster.wait_leader())
    follower = cluster.master_http(cluster.follower())
    index = await settled_index(http, cluster)

    for path in (API, "/master/api/v1/scheduler?x=1"):
        for body in (SUBSCRIBE, {"type": "REVIVE", "framework_id": {"value": "whatever"}}, b"not even json"):
            r = await request(http, follower, body, path=path)
            assert r.status == 307, (path, body, r)
            assert r.headers["Location"] == f"//{leader}{path}"
    r = await request(http, follower, method="GET", content_type=None)  # redirect comes before the 405
    assert (r.status, r.headers["Location"]) == (307, f"//{leader}{API}")

    for path in ("/master/redirect", "/redirect"):
        r = await request(http, follower, method="GET", path=path, content_type=None)
        assert (r.status, r.headers["Location"]) == (307, f"//{leader}")

    r = await request(http, follower, method="GET", path="/health", content_type=None)
    assert (r.status, r.text) == (200, "")
    assert "Location" not in r.headers
    assert await applied_index(http, cluster) == index


# ---- issue 9: refusals that are events, limits, features Drover does not implement ------------------------------


def records(body: str) -> list[dict]:
    """The RecordIO records of a finished stream's body."""
    out, rest = [], body.encode()
    while rest:
        n, _, rest = rest.partition(b"\n")
        out.append(json.loads(rest[: int(n)]))
        rest = rest[int(n):]
    return out


@pytest.mark.parametrize("info, says", [
    ({"id": {"value": ".."}}, "'FrameworkInfo.id' '..' is invalid"),
    ({"id": {"value": "a/b"}}, "'FrameworkInfo.id' 'a/b' is invalid"),
    ({"role": "a b"}, "Role name 'a b' is invalid"),
    ({"name": "n" * 2000}, "'FrameworkInfo.name' is longer than 1024"),
], ids=["id-dotdot", "id-slash", "role-with-space", "name-too-long"])
async def test_refused_subscription_is_an_error_event_and_changes_nothing(cluster, http, info, says):
    """As Mesos: a 200 stream whose only record is ERROR, then closed by the master."""
    index = await settled_index(http, cluster)
    before = framework_ids(await master_state(http, cluster))
    fi = {"user": "tester", "name": "bad-input", **info}
    body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": fi}}
    if "id" in info:
        body["framework_id"] = info["id"]

    r = await request(http, cluster.leader_endpoint(), body)

    assert r.status == 200, r
    (error,) = records(r.text)
    assert error["type"] == "ERROR" and says in error["error"]["message"], error
    assert await applied_index(http, cluster) == index
    assert framework_ids(await master_state(http, cluster)) == before


async def test_accept_beyond_the_offer_limit_is_400_and_changes_nothing(cluster, http, subscribe):
    sched = await subscribe()
    offer = (await sched.offers())[0]
    index = await settled_index(http, cluster)
    tasks = [task_info(unique("t"), offer["agent_id"]["value"]) for _ in range(100)]

    r = await sched.call("ACCEPT", {"offer_ids": [{"value": f"no-such-offer-{i}"} for i in range(2000)],
                                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}]})

    assert r.status == 400, r
    assert "limits.max_offers_per_call" in r.text and len(r.text) < 500, r
    assert await applied_index(http, cluster) == index


async def test_unimplemented_operation_launches_nothing_and_says_so(cluster, http, subscribe):
    """GROW_VOLUME is not built yet: the task would run without what it asked for, so nothing of the ACCEPT is
    done; the task gets TASK_ERROR, the operation OPERATION_ERROR, the offer comes back whole."""
    sched = await subscribe()
    offer = (await sched.offers())[0]
    agent_id = offer["agent_id"]["value"]
    tid = unique("needs-volume")

    r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
        {"type": "GROW_VOLUME", "id": {"value": "vol-1"}, "grow_volume": {}},
        {"type": "LAUNCH", "launch": {"task_infos": [task_info(tid, agent_id)]}}],
        "filters": {"refuse_seconds": 60.0}})

    assert r.status == 202, r
    status = await sched.update(tid)
    assert (status["state"], status["reason"]) == ("TASK_ERROR", "REASON_TASK_INVALID")
    assert "unsupported operation GROW_VOLUME" in status["message"], status
    op = (await sched.expect("UPDATE_OPERATION_STATUS"))["update_operation_status"]["status"]
    assert op["operation_id"] == {"value": "vol-1"} and op["state"] == "OPERATION_ERROR"
    assert "GROW_VOLUME" in op["message"] and "uuid" not in op
    # Declined without a filter (not the 60 s asked for): offered again, whole.
    again = await sched.expect(lambda e: e.get("type") == "OFFERS" and any(
        o["agent_id"]["value"] == agent_id for o in e["offers"]["offers"]))
    back = next(o for o in again["offers"]["offers"] if o["agent_id"]["value"] == agent_id)
    assert scalar(back["resources"], "cpus") == scalar(offer["resources"], "cpus")
    assert tasks_named(await master_state(http, cluster), tid) == []


async def test_task_field_drover_does_not_implement_is_task_error_naming_it(cluster, http, subscribe):
    sched = await subscribe()
    offer = (await sched.offers())[0]
    tid = unique("limited")
    ti = {**task_info(tid, offer["agent_id"]["value"]), "limits": {"cpus": {"value": 2}}}

    r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]],
                                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": [ti]}}]})

    assert r.status == 202, r
    status = await sched.update(tid)
    assert status["state"] == "TASK_ERROR" and "TaskInfo.limits is not supported" in status["message"]
    assert tasks_named(await master_state(http, cluster), tid) == []


async def test_update_framework(cluster, http, subscribe):
    sched = await subscribe()
    await sched.offers()
    info = {**sched.info, "id": {"value": sched.framework_id}}

    r = await sched.call("UPDATE_FRAMEWORK", {"framework_info": {**info, "user": "someone-else"}})
    assert r.status == 400 and "Updating 'FrameworkInfo.user' is unsupported" in r.text, r

    r = await sched.call("UPDATE_FRAMEWORK", {"framework_info": {**info, "name": "renamed"}})
    assert r.status == 200, r
    assert r.headers.get("Drover-Log-Index"), r.headers
    await sched.expect("RESCIND")  # its outstanding offers were rescinded, announced
    fw = next(f for f in (await master_state(http, cluster))["frameworks"] if f["id"] == sched.framework_id)
    assert fw["name"] == "renamed"


async def test_a_task_runs_as_its_command_user_else_as_its_frameworks(cluster, http, subscribe):
    """Mesos's rule (issue 11): CommandInfo.user if set, else FrameworkInfo.user, which must exist in the task's
    image, else the agent fails the task naming the user (tests/test_hardening.py has the agent's side)."""
    sched = await subscribe(user="ghost")
    offer = (await sched.offers())[0]
    agent_id = offer["agent_id"]["value"]
    as_nobody, as_ghost = unique("as-nobody"), unique("as-ghost")
    nobody = {**task_info(as_nobody, agent_id), "command": {"value": 'test "$(id -u)" = 65534', "user": "nobody"}}

    r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
        {"type": "LAUNCH", "launch": {"task_infos": [nobody, task_info(as_ghost, agent_id, cmd="true")]}}]})

    assert r.status == 202, r
    final = {}
    while len(final) < 2:
        status = await sched.expect(lambda e: e.get("type") == "UPDATE"
                                    and e["update"]["status"]["task_id"]["value"] in (as_nobody, as_ghost))
        status = status["update"]["status"]
        if "uuid" in status:
            ack = await sched.call("ACKNOWLEDGE", {"agent_id": status["agent_id"], "task_id": status["task_id"],
                                                   "uuid": status["uuid"]})
            assert ack.status == 202, ack
        if status["state"] not in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"):
            final[status["task_id"]["value"]] = status
    assert final[as_nobody]["state"] == "TASK_FINISHED", final[as_nobody]  # it ran as uid 65534
    ghost = final[as_ghost]
    assert (ghost["state"], ghost["reason"], ghost["source"]) == (
        "TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED", "SOURCE_AGENT"), ghost
    assert "User 'ghost' does not exist in image 'localhost/drover-busybox:latest'" in ghost["message"], ghost
