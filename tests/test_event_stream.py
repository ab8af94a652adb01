"""The committed history as a stream: GET /api/v1/events on any replica, and the Mesos operator
API's SUBSCRIBE (plus GET_STATE and its parts) on the leader. Integration tests run a real cluster
and an unmodified pymesos framework; the unit tests at the end check the pieces without one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest

from eventstore import events as ev
from master import operator_json
from master.api.events import parse_query
from master.replica import MasterServer
from master.state import clone
from tests.cluster import Cluster, run_framework, running_cluster
from tests.test_fold import AGENT_RES, info, offer, res, with_fw_and_agent
from tests.v1client import JSON, Scheduler, request

EVENTS = "/api/v1/events"
OPERATOR = "/api/v1"
WAIT = 60.0


# ---- helpers ------------------------------------------------------------------------------------------


class Records:
    """A RecordIO response (`<decimal length>\\n<json>`...) read in the background into a queue."""

    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()
        self.seen: list[dict] = []
        self.ended = False
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        content = self.response.content
        try:
            while line := await content.readline():
                await self.queue.put(json.loads(await content.readexactly(int(line))))
        except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.queue.put_nowait(None)

    async def next(self, timeout: float = WAIT) -> dict | None:
        """The next record (None once the stream is over)."""
        if self.ended:
            return None
        r = await asyncio.wait_for(self.queue.get(), timeout)
        if r is None:
            self.ended = True
        else:
            self.seen.append(r)
        return r

    async def until(self, done, timeout: float = WAIT) -> list[dict]:
        """Records (heartbeats included) up to and including the first one for which done(r) holds."""
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            r = await self.next(max(0.0, deadline - time.monotonic()))
            if r is None:
                raise AssertionError(f"the stream ended before the awaited record; got {out[-5:]}")
            out.append(r)
            if done(r):
                return out

    async def rest(self, timeout: float = WAIT) -> list[dict]:
        """Every record until the server ends the stream."""
        out = []
        while (r := await self.next(timeout)) is not None:
            out.append(r)
        return out

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


async def open_events(http: aiohttp.ClientSession, addr: str, query: str = "") -> Records:
    r = await http.get(f"http://{addr}{EVENTS}{query}", timeout=_NO_TIMEOUT, allow_redirects=False)
    assert r.status == 200, (r.status, await r.text())
    assert r.headers["Content-Type"] == JSON
    return Records(r)


async def history(http: aiohttp.ClientSession, addr: str, query: str = "") -> list[dict]:
    sep = "&" if query else "?"
    s = await open_events(http, addr, f"{query}{sep}follow=false" if query else "?follow=false")
    try:
        return await s.rest()
    finally:
        await s.close()


def store_rows(cluster: Cluster, mid: str) -> list[dict]:
    """A replica's SQLite history, as the stream must render it."""
    path = Path(next(m["data_dir"] for m in cluster.layout["masters"] if m["id"] == mid)) / "events.sqlite"
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx").fetchall()
    finally:
        db.close()
    return [{"index": i, "term": t, "ts": ts, "type": typ, "event": json.loads(p)} for i, t, ts, typ, p in rows]


def mentions(x: object, key: str, value: str) -> bool:
    if isinstance(x, dict):
        return any((k == key and v == value) or mentions(v, key, value) for k, v in x.items())
    if isinstance(x, list):
        return any(mentions(v, key, value) for v in x)
    return False


def last_index(cluster: Cluster) -> int:
    return cluster.status(cluster.wait_leader())["applied_index"]


async def run_echo(cluster: Cluster, tasks: int = 2) -> dict:
    # pymesos needs a main thread: its own process, awaited from a worker thread.
    return await asyncio.to_thread(run_framework, "pymesos_echo.py", "--master", cluster.leader_endpoint(),
                                   "--tasks", str(tasks))


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("event-stream") / "cluster") as c:
        # Some history to stream: a framework that ran two tasks to completion.
        out = run_framework("pymesos_echo.py", "--master", c.leader_endpoint(), "--tasks", "2")
        assert set(out["final"].values()) == {"TASK_FINISHED"}
        c.echo_framework = out  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---- GET /api/v1/events -------------------------------------------------------------------------------


@pytest.mark.integration
async def test_history_is_the_store_on_leader_and_follower(cluster, http):
    cluster.wait_converged()
    leader, follower = cluster.wait_leader(), cluster.follower()
    for mid in (leader, follower):
        got = await history(http, cluster.master_http(mid))
        rows = store_rows(cluster, mid)
        assert got, mid
        assert [r["index"] for r in got] == list(range(1, len(got) + 1))
        assert got == rows[:len(got)], mid
        assert {"FRAMEWORK_SUBSCRIBED", "OFFERS_ACCEPTED", "STATUS_UPDATED", "FRAMEWORK_REMOVED"} <= {
            r["type"] for r in got}
    # The same committed history on both replicas (a follower streams its own copy, no redirect).
    a = await history(http, cluster.master_http(leader))
    b = await history(http, cluster.master_http(follower))
    n = min(len(a), len(b))
    assert n > 0 and a[:n] == b[:n]


@pytest.mark.integration
async def test_resume_from_the_middle_gives_exactly_the_rest(cluster, http):
    addr = cluster.master_http(cluster.follower())
    whole = await history(http, addr)
    mid = len(whole) // 2
    rest = await history(http, addr, f"?from={mid + 1}")
    assert rest[0]["index"] == mid + 1
    assert whole[:mid] + rest[:len(whole) - mid] == whole
    # A following reader that goes away after k records resumes with from=<last index + 1>.
    s = await open_events(http, addr, "?from=1")
    first = [await s.next() for _ in range(5)]
    await s.close()
    resumed = await history(http, addr, f"?from={first[-1]['index'] + 1}")
    assert [r["index"] for r in first + resumed] == list(range(1, len(first) + len(resumed) + 1))
    assert (first + resumed)[:len(whole)] == whole
    # Past the end: nothing (yet).
    assert await history(http, addr, f"?from={len(whole) + 1000}") == []
    # The /master/ alias serves the same stream.
    alias = await http.get(f"http://{addr}/master{EVENTS}?follow=false&from={mid + 1}&type=FRAMEWORK_SUBSCRIBED")
    assert alias.status == 200
    await alias.read()


@pytest.mark.integration
async def test_type_framework_and_agent_filters(cluster, http):
    leader = cluster.wait_leader()
    addr = cluster.master_http(leader)
    types = {"STATUS_UPDATED", "FRAMEWORK_SUBSCRIBED"}
    got = await history(http, addr, "?type=STATUS_UPDATED,FRAMEWORK_SUBSCRIBED")
    rows = store_rows(cluster, leader)  # read after the stream: the stream's events are a prefix of it
    assert got and {r["type"] for r in got} == types
    assert got == [r for r in rows if r["type"] in types][:len(got)]

    fid = next(r["event"]["framework_id"] for r in rows if r["type"] == "FRAMEWORK_SUBSCRIBED")
    got = await history(http, addr, f"?framework={fid}")
    rows = store_rows(cluster, leader)
    assert got == [r for r in rows if mentions(r["event"], "framework_id", fid)][:len(got)]
    assert {"FRAMEWORK_SUBSCRIBED", "OFFERS_MADE", "OFFERS_ACCEPTED", "STATUS_UPDATED", "STATUS_ACKNOWLEDGED",
            "FRAMEWORK_REMOVED"} <= {r["type"] for r in got}
    assert "AGENT_REGISTERED" not in {r["type"] for r in got}

    aid = next(r["event"]["agent_id"] for r in rows if r["type"] == "AGENT_REGISTERED")
    got = await history(http, addr, f"?agent={aid}&type=AGENT_REGISTERED,STATUS_UPDATED,OFFERS_MADE")
    rows = store_rows(cluster, leader)
    assert got and all(mentions(r["event"], "agent_id", aid) for r in got)
    assert got == [r for r in rows if r["type"] in {"AGENT_REGISTERED", "STATUS_UPDATED", "OFFERS_MADE"}
                   and mentions(r["event"], "agent_id", aid)][:len(got)]
    assert await history(http, addr, f"?framework={fid}&type=AGENT_REGISTERED") == []


@pytest.mark.integration
async def test_bad_parameters_are_400(cluster, http):
    addr = cluster.master_http(cluster.follower())
    for query, message in [("?from=0", "positive integer"), ("?from=-3", "positive integer"),
                           ("?from=abc", "positive integer"), ("?from=1.5", "positive integer"), ("?from=", "'from'"),
                           ("?type=STATUS_UPDATED,NOPE", "'NOPE'"), ("?type=", "'type'"),
                           ("?follow=maybe", "'follow'"), ("?framework=", "'framework'"),
                           ("?fromm=3", "'fromm'"), ("?from=1&from=2", "more than once")]:
        r = await request(http, addr, None, method="GET", path=EVENTS + query, content_type=None)
        assert r.status == 400 and message in r.text, (query, r)
    r = await request(http, addr, {}, path=EVENTS)
    assert r.status == 405


@pytest.mark.integration
async def test_follow_receives_new_events_on_leader_and_follower(cluster, http):
    cluster.wait_converged()
    start = last_index(cluster) + 1
    streams = [await open_events(http, cluster.master_http(mid), f"?from={start}")
               for mid in (cluster.wait_leader(), cluster.follower())]
    try:
        # Idle: heartbeats (1 s in tests), nothing else.
        for s in streams:
            assert await s.next(timeout=5) == {"type": "HEARTBEAT"}
        out = await run_echo(cluster)
        tids = set(out["final"])

        def all_finished(seen: list[dict]) -> bool:
            done = {r["event"]["task_id"] for r in seen if r.get("type") == "STATUS_UPDATED"
                    and r["event"]["status"]["state"] == "TASK_FINISHED"}
            return tids <= done

        got = []
        for s in streams:
            await s.until(lambda r, s=s: all_finished(s.seen))
            events = [r for r in s.seen if r["type"] != "HEARTBEAT"]
            assert [r["index"] for r in events] == list(range(start, start + len(events)))
            got.append(events)
        n = min(len(g) for g in got)
        assert got[0][:n] == got[1][:n]
        types = [r["type"] for r in got[0]]
        assert types.index("FRAMEWORK_SUBSCRIBED") < types.index("OFFERS_MADE") < types.index("OFFERS_ACCEPTED")
        launched = {t["task_id"] for r in got[0] if r["type"] == "OFFERS_ACCEPTED" for t in r["event"]["tasks"]}
        assert launched == tids
    finally:
        for s in streams:
            await s.close()


# ---- the operator API: SUBSCRIBE, GET_STATE -------------------------------------------------------------


async def operator_stream(http: aiohttp.ClientSession, addr: str) -> Records:
    r = await http.post(f"http://{addr}{OPERATOR}", json={"type": "SUBSCRIBE"}, headers={"Accept": JSON},
                        timeout=_NO_TIMEOUT, allow_redirects=False)
    assert r.status == 200, (r.status, await r.text())
    assert r.headers["Content-Type"] == JSON
    assert "Mesos-Stream-Id" not in r.headers
    assert r.headers.get("Transfer-Encoding") == "chunked"
    return Records(r)


def check_task(t: dict) -> None:
    for key in ("name", "task_id", "framework_id", "agent_id", "state", "resources"):
        assert key in t, (key, t)
    assert all(isinstance(t[k]["value"], str) for k in ("task_id", "framework_id", "agent_id"))
    assert t["state"].startswith("TASK_")
    for r in t["resources"]:
        assert {"name", "type", "role"} <= set(r) and r["allocation_info"] == {"role": "*"}
    for st in t.get("statuses", []):
        assert st["task_id"] == t["task_id"] and isinstance(st["timestamp"], float)


def check_framework(f: dict) -> None:
    info_ = f["framework_info"]
    assert {"user", "name", "id", "failover_timeout", "checkpoint"} <= set(info_)
    assert isinstance(f["active"], bool) and isinstance(f["connected"], bool) and isinstance(f["recovered"], bool)
    assert isinstance(f["registered_time"]["nanoseconds"], int)


def check_agent(a: dict) -> None:
    ai = a["agent_info"]
    assert {"hostname", "port", "resources", "id"} <= set(ai)
    assert isinstance(a["active"], bool) and a["deactivated"] is False and a["version"]
    assert isinstance(a["registered_time"]["nanoseconds"], int)
    cpus = [r for r in a["total_resources"] if r["name"] == "cpus"]
    assert cpus == [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"}]


@pytest.mark.integration
async def test_operator_subscribe_follows_a_framework(cluster, http):
    s = await operator_stream(http, cluster.leader_endpoint())
    try:
        first = await s.next()
        assert first["type"] == "SUBSCRIBED" and set(first) == {"type", "subscribed"}
        sub = first["subscribed"]
        assert sub["heartbeat_interval_seconds"] == 1.0
        assert set(sub["get_state"]) == {"get_tasks", "get_executors", "get_frameworks", "get_agents"}
        assert len(sub["get_state"]["get_agents"]["agents"]) == 2
        # The earlier framework's tasks are completed (acknowledged, framework gone).
        done = sub["get_state"]["get_tasks"]["completed_tasks"]
        assert {t["task_id"]["value"] for t in done} >= set(cluster.echo_framework["final"])
        for t in done:
            check_task(t)
        assert await s.next(timeout=1) == {"type": "HEARTBEAT"}  # immediately after SUBSCRIBED

        runner = asyncio.create_task(run_echo(cluster))
        added = (await s.until(lambda r: r["type"] == "FRAMEWORK_ADDED"))[-1]["framework_added"]["framework"]
        check_framework(added)
        assert added["framework_info"]["name"] == "pymesos-echo" and added["connected"] is True
        fid = added["framework_info"]["id"]["value"]
        out = await runner
        tids = set(out["final"])

        def finished(r: dict) -> bool:
            got = {e["task_updated"]["status"]["task_id"]["value"] for e in s.seen
                   if e["type"] == "TASK_UPDATED" and e["task_updated"]["state"] == "TASK_FINISHED"}
            return tids <= got

        await s.until(finished)
        await s.until(lambda r: r["type"] == "FRAMEWORK_REMOVED")
        seen = [r for r in s.seen[1:] if r["type"] != "HEARTBEAT"]
        task_added = [r["task_added"]["task"] for r in seen if r["type"] == "TASK_ADDED"]
        assert {t["task_id"]["value"] for t in task_added} == tids
        for t in task_added:
            check_task(t)
            assert t["state"] == "TASK_STAGING" and t["framework_id"]["value"] == fid
        for tid in tids:
            updates = [r["task_updated"] for r in seen if r["type"] == "TASK_UPDATED"
                       and r["task_updated"]["status"]["task_id"]["value"] == tid]
            # Only state changes, each once, in order; `state` is the master's latest state.
            assert [u["state"] for u in updates] == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
            assert all(u["status"]["state"] == u["state"] and u["framework_id"] == {"value": fid} for u in updates)
        types = [r["type"] for r in seen]
        assert types.index("FRAMEWORK_ADDED") < types.index("TASK_ADDED") < types.index("TASK_UPDATED")
        removed = next(r for r in seen if r["type"] == "FRAMEWORK_REMOVED")["framework_removed"]
        assert removed["framework_info"]["id"] == {"value": fid}
        assert {"SUBSCRIBED", "AGENT_ADDED", "AGENT_REMOVED"}.isdisjoint(types)
    finally:
        await s.close()


@pytest.mark.integration
async def test_get_state_and_parts_and_framework_updated(cluster, http):
    leader = cluster.leader_endpoint()
    stream = await operator_stream(http, leader)
    sched = await Scheduler(http, leader, name="state-shape").subscribe()
    try:
        await stream.until(lambda r: r["type"] == "FRAMEWORK_ADDED")
        got = (await request(http, leader, {"type": "GET_STATE"}, path=OPERATOR)).json()
        assert got["type"] == "GET_STATE"
        state = got["get_state"]
        assert set(state) == {"get_tasks", "get_executors", "get_frameworks", "get_agents"}
        fws = state["get_frameworks"]["frameworks"]
        mine = next(f for f in fws if f["framework_info"]["id"]["value"] == sched.framework_id)
        check_framework(mine)
        assert mine["active"] and mine["connected"] and not mine["recovered"]
        assert mine["framework_info"]["name"] == "state-shape" and mine["framework_info"]["role"] == "*"
        # It holds offers: they show as offers and offered resources (with their allocation role).
        await sched.offers()
        mine = next(f for f in (await request(http, leader, {"type": "GET_FRAMEWORKS"}, path=OPERATOR)).json()[
            "get_frameworks"]["frameworks"] if f["framework_info"]["id"]["value"] == sched.framework_id)
        assert mine["offers"] and all(o["framework_id"]["value"] == sched.framework_id for o in mine["offers"])
        assert all(r["allocation_info"] == {"role": "*"} for r in mine["offered_resources"])
        for a in state["get_agents"]["agents"]:
            check_agent(a)
        for t in state["get_tasks"].get("completed_tasks", []):
            check_task(t)
        for call, key in [("GET_TASKS", "get_tasks"), ("GET_AGENTS", "get_agents"),
                          ("GET_EXECUTORS", "get_executors")]:
            r = await request(http, leader, {"type": call}, path=OPERATOR)
            assert r.status == 200 and set(r.json()) == {"type", key}, (call, r)
            assert r.json()["type"] == call
        agents = (await request(http, leader, {"type": "GET_AGENTS"}, path=OPERATOR)).json()["get_agents"]["agents"]
        assert sorted(a["agent_info"]["id"]["value"] for a in agents) == sorted(
            a["agent_info"]["id"]["value"] for a in state["get_agents"]["agents"])

        # Re-subscribing (same id, new connection) is FRAMEWORK_UPDATED on the operator stream.
        body = {"type": "SUBSCRIBE", "framework_id": {"value": sched.framework_id},
                "subscribe": {"framework_info": {**sched.info, "id": {"value": sched.framework_id}}}}
        again = await http.post(f"http://{leader}/api/v1/scheduler", json=body, headers={"Accept": JSON},
                                timeout=_NO_TIMEOUT)
        assert again.status == 200
        sched.stream_id = again.headers["Mesos-Stream-Id"]  # TEARDOWN (below) goes through the new stream
        try:
            upd = (await stream.until(lambda r: r["type"] == "FRAMEWORK_UPDATED"))[-1]["framework_updated"]
            assert upd["framework"]["framework_info"]["id"] == {"value": sched.framework_id}
            assert "reregistered_time" in upd["framework"] and upd["framework"]["connected"] is True
        finally:
            assert (await sched.call("TEARDOWN")).status == 202
            again.close()
        await stream.until(lambda r: r["type"] == "FRAMEWORK_REMOVED")
    finally:
        await sched.close()
        await stream.close()


@pytest.mark.integration
async def test_operator_calls_on_a_follower_redirect(cluster, http):
    follower = cluster.master_http(cluster.follower())
    leader = cluster.master_http(cluster.wait_leader())
    for call in ("SUBSCRIBE", "GET_STATE", "GET_TASKS"):
        r = await request(http, follower, {"type": call}, path=OPERATOR)
        assert r.status == 307 and r.headers["Location"] == f"//{leader}/api/v1", (call, r, r.headers)
    r = await request(http, cluster.leader_endpoint(), {"type": "SUBSCRIBE"}, path=OPERATOR,
                      headers={"Accept": "application/x-protobuf"})
    assert r.status == 406


# ---- unit tests: no cluster ----------------------------------------------------------------------------


def test_query_parsing():
    from multidict import MultiDict

    q = parse_query(MultiDict({"from": "7", "type": "STATUS_UPDATED, OFFERS_MADE", "framework": "F1,F2",
                               "follow": "false"}))
    assert q.start == 7 and q.types == {"STATUS_UPDATED", "OFFERS_MADE"} and q.frameworks == {"F1", "F2"}
    assert q.follow is False and q.agents is None
    assert parse_query(MultiDict()).start == 1 and parse_query(MultiDict()).follow is True


async def test_a_full_listener_is_dropped_and_the_rest_keep_going():
    class Fake:
        event_listeners: set

    fake = Fake()
    fake.event_listeners = set()
    fake.drop_listener = lambda q: MasterServer.drop_listener(fake, q)
    slow, fast = asyncio.Queue(2), asyncio.Queue(10)
    fake.event_listeners |= {slow, fast}
    for i in range(3):
        MasterServer._notify_listeners(fake, [i])
    assert fake.event_listeners == {fast}
    assert slow.get_nowait() is None and slow.empty()  # emptied, then the end marker
    assert [fast.get_nowait() for _ in range(3)] == [[0], [1], [2]]


def test_derive_operator_events_from_the_fold():
    log = with_fw_and_agent()
    shadow = clone(log.state)
    version = "1.11.0"

    def step(event) -> list[dict]:
        log(event)
        return operator_json.derive(shadow, log.envelopes[-1], version)

    assert step(ev.OffersMade(offers=[offer("O1")], trigger="periodic")) == []
    spec = ev.TaskSpec(task_id="T1", name="t", agent_id="A1", resources=res("cpus:1;mem:128"),
                       command=ev.CommandSpec(value="true"))
    [added] = step(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[spec], refuse_seconds=5.0))
    task = added["task_added"]["task"]
    assert task["state"] == "TASK_STAGING" and task["task_id"] == {"value": "T1"} and task["user"] == "u"
    assert {r["name"]: r["scalar"]["value"] for r in task["resources"]} == {"cpus": 1.0, "mem": 128.0}

    def status(state: str, uuid: str | None = None) -> ev.StatusUpdated:
        return ev.StatusUpdated(framework_id="F1", task_id="T1", agent_id="A1",
                                status=ev.TaskStatus(state=state, source="SOURCE_EXECUTOR", timestamp=log.ts,
                                                     uuid=uuid))

    [running] = step(status("TASK_RUNNING", "AAAAAAAAAAAAAAAAAAAAAA=="))
    assert running["task_updated"]["state"] == "TASK_RUNNING"
    assert running["task_updated"]["framework_id"] == {"value": "F1"}
    assert step(status("TASK_RUNNING", "BAAAAAAAAAAAAAAAAAAAAA==")) == []  # no state change: no event
    [resub] = step(ev.FrameworkSubscribed(framework_id="F1", info=info(), resubscribe=True))
    assert resub["type"] == "FRAMEWORK_UPDATED" and resub["framework_updated"]["framework"]["reregistered_time"]
    [new_fw] = step(ev.FrameworkSubscribed(framework_id="F2", info=info("other")))
    assert new_fw["type"] == "FRAMEWORK_ADDED"
    assert new_fw["framework_added"]["framework"]["framework_info"]["name"] == "other"
    [new_agent] = step(ev.AgentRegistered(agent_id="A2", hostname="h2", http="h2:5051", resources=res(AGENT_RES)))
    assert new_agent["agent_added"]["agent"]["agent_info"]["id"] == {"value": "A2"}
    assert step(ev.AgentReregistered(agent_id="A2", hostname="h2", http="h2:5051", resources=res(AGENT_RES))) == []
    killed, removed = step(ev.FrameworkRemoved(framework_id="F1", reason="teardown"))
    assert killed["task_updated"]["state"] == "TASK_KILLED"
    assert killed["task_updated"]["status"]["reason"] == "REASON_FRAMEWORK_REMOVED"
    assert removed == {"type": "FRAMEWORK_REMOVED", "framework_removed": {
        "framework_info": {"user": "u", "name": "fw", "id": {"value": "F1"}, "failover_timeout": 0.0,
                           "checkpoint": False, "role": "*"}}}
    # The shadow went through the same fold as the state.
    from master.state import state_hash
    assert state_hash(shadow) == state_hash(log.state)
    # GET_STATE of it renders, and the completed task is there.
    got = operator_json.get_state(shadow, version)
    assert [t["state"] for t in got["get_tasks"]["completed_tasks"]] == ["TASK_KILLED"]
    assert [f["framework_info"]["name"] for f in got["get_frameworks"]["frameworks"]] == ["other"]
