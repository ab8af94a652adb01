"""Fuzz of the master's HTTP surface: malformed and hostile bodies and queries for every endpoint.

A real master replica (`MasterServer` + `build_app`, single-node Raft, its own SQLite store) in this process,
driven over HTTP. Bodies start from a valid call of each type and get one or more parts replaced by hostile
values (non-finite numbers, huge numbers, ids that are paths, control characters, wrong JSON types, long
strings, deep nesting) or are not JSON at all. For every request:
- no answer is a 5xx;
- a refused call (4xx) changed nothing: the applied log index is the same before and after.
At the end the replica is still healthy, and folding its store from index 1 gives the live state hash.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drover.local import free_port
from eventstore.raftlog import RaftTuning
from eventstore.store import EventStore
from master.http import build_app
from master.replica import MasterConfig, MasterServer
from master.state import State, apply, state_hash

HOSTILE: list[Any] = [
    None, True, False, -1, 0, 2**70, -(2**70), 1e308, -1e308, 1.5, float("nan"), float("inf"), float("-inf"),
    "NaN", "Infinity", "-Infinity", "1e999", "", ".", "..", "a/b", "a\\b", "\x00", "\x1b[31mred", " x", "x" * 5000,
    [], {}, [None], {"value": ".."}, {"value": ""}, {"value": 12}, {"value": "x" * 300}, {"value": "a\nb"},
    {"nanoseconds": "Infinity"}, {"value": float("nan")}, [{"value": "x"}] * 3,
]


def deep(n: int) -> Any:
    v: Any = "x"
    for _ in range(n):
        v = [v]
    return v


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value (dict keys and list positions), the root excluded."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + (k,))
            out += paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(prefix + (i,))
            out += paths(v, prefix + (i,))
    return out


def replace(obj: Any, path: tuple, value: Any, drop: bool) -> Any:
    obj = copy.deepcopy(obj)
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    if drop:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> bytes:
    """A base call with 1-3 parts replaced or dropped, or extra nesting, or not JSON at all."""
    kind = draw(st.sampled_from(["mutate"] * 8 + ["raw", "deep", "extra"]))
    if kind == "raw":
        return draw(st.sampled_from([b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"type": 1}', b'"SUBSCRIBE"',
                                     b'{"type":"SUBSCRIBE","subscribe":' + b"[" * 5000]))
    body = base
    if kind == "deep":
        p = draw(st.sampled_from(paths(body) or [("type",)]))
        body = replace(body, p, deep(draw(st.integers(50, 3000))), False)
    elif kind == "extra":
        key = draw(st.sampled_from(["unknown", "framework_id", "type"]))
        body = dict(body, **{key: draw(st.sampled_from(HOSTILE))})
    else:
        for _ in range(draw(st.integers(1, 3))):
            ps = paths(body)
            if not ps:
                break
            p = draw(st.sampled_from(ps))
            body = replace(body, p, draw(st.sampled_from(HOSTILE)), draw(st.booleans()) and len(p) > 1)
    try:
        return json.dumps(body, allow_nan=True).encode()  # NaN/Infinity literals: Python's json reads them
    except (ValueError, RecursionError):
        return b"[" * 10000


class Replica:
    def __init__(self, core: MasterServer, server: TestServer, http: aiohttp.ClientSession):
        self.core, self.server, self.http = core, server, http
        self.streams: list[aiohttp.ClientResponse] = []
        self.answers: list[tuple[str, int, bytes, str]] = []

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def post(self, path: str, body: bytes, headers: dict | None = None) -> int:
        """POST; a 200 stream is kept open (closing it would commit a disconnection while we check the log)."""
        before = self.core.state.index
        r = await self.http.post(self.url(path), data=body, headers={"Content-Type": "application/json",
                                                                     **(headers or {})})
        if r.status == 200 and r.headers.get("Content-Type", "").startswith("application/json") \
                and r.headers.get("Transfer-Encoding") == "chunked":
            self.streams.append(r)
            # A subscription commits after its response has started: its first record comes once it is folded.
            line = await asyncio.wait_for(r.content.readline(), 10)
            text = (await asyncio.wait_for(r.content.readexactly(int(line)), 10)).decode()[:300] if line else ""
        else:
            text = (await r.read()).decode(errors="replace")[:300]
            r.release()
        self.answers.append((path, r.status, body[:200], text))
        assert r.status < 500, (path, r.status, body[:300], text)
        if 400 <= r.status < 500:
            assert self.core.state.index == before, ("a refused call changed the log", path, body[:300], text)
        return r.status

    async def get(self, path: str) -> int:
        before = self.core.state.index
        async with self.http.get(self.url(path), timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = ""
            if r.headers.get("Transfer-Encoding") != "chunked":
                text = (await r.read()).decode(errors="replace")[:300]
            assert r.status < 500, (path, r.status, text)
            if 400 <= r.status < 500:
                assert self.core.state.index == before
            return r.status


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    cfg = MasterConfig(id="m1", http="127.0.0.1:1", raft=f"127.0.0.1:{free_port()}", peers=[],
                       data_dir=tmp_path / "m1", heartbeat_interval=5.0,
                       raft_tuning=RaftTuning(fsync_journal=False))
    core = MasterServer(cfg)
    server = TestServer(build_app(core), host="127.0.0.1", port=free_port())
    await server.start_server()
    core.config.http = f"127.0.0.1:{server.port}"
    await core.start()
    for _ in range(200):
        if core.serving:
            break
        await asyncio.sleep(0.05)
    assert core.serving, "a single replica elects itself"
    async with aiohttp.ClientSession() as http:
        rep = Replica(core, server, http)
        yield rep
        for s in rep.streams:
            s.close()
    await core.stop()
    await server.close()


def check_store(rep: Replica) -> None:
    assert rep.core.failed is None, rep.core.failed
    store = EventStore(rep.core.store.path)
    try:
        state = State()
        for env in store.iter_envelopes():
            apply(state, env)
    finally:
        store.close()
    assert state.index == rep.core.state.index
    assert state_hash(state) == state_hash(rep.core.state)


async def subscribed(rep: Replica) -> tuple[str, str]:
    """A framework subscribed for the calls that need one: (framework id, stream id)."""
    body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "fuzz"}}}
    r = await rep.http.post(rep.url("/api/v1/scheduler"), json=body)
    assert r.status == 200
    rep.streams.append(r)
    length = int(await r.content.readline())
    first = json.loads(await r.content.readexactly(length))
    return first["subscribed"]["framework_id"]["value"], r.headers["Mesos-Stream-Id"]


def scheduler_calls(fid: str) -> list[dict]:
    f = {"value": fid}
    task = {"name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "a1"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 2}]}}],
            "command": {"value": "true", "environment": {"variables": [{"name": "A", "value": "b"}]}},
            "kill_policy": {"grace_period": {"nanoseconds": 1000}}}
    return [
        {"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "u", "name": "n", "failover_timeout": 10, "roles": ["r"], "capabilities": [{"type": "MULTI_ROLE"}],
            "offer_filters": {"r": {"min_allocatable_resources": {"quantities": [
                {"quantities": {"cpus": {"value": 1}}}]}}}}}},
        {"type": "ACCEPT", "framework_id": f, "accept": {
            "offer_ids": [{"value": "o1"}], "filters": {"refuse_seconds": 5},
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}},
                           {"type": "RESERVE", "reserve": {"resources": task["resources"]}}]}},
        {"type": "DECLINE", "framework_id": f, "decline": {"offer_ids": [{"value": "o1"}],
                                                            "filters": {"refuse_seconds": 5}}},
        {"type": "ACKNOWLEDGE", "framework_id": f, "acknowledge": {
            "agent_id": {"value": "a1"}, "task_id": {"value": "t1"}, "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="}},
        {"type": "KILL", "framework_id": f, "kill": {"task_id": {"value": "t1"}, "agent_id": {"value": "a1"},
                                                     "kill_policy": {"grace_period": {"nanoseconds": 5}}}},
        {"type": "RECONCILE", "framework_id": f, "reconcile": {"tasks": [
            {"task_id": {"value": "t1"}, "agent_id": {"value": "a1"}}]}},
        {"type": "REVIVE", "framework_id": f, "revive": {"roles": ["*"]}},
        {"type": "SUPPRESS", "framework_id": f, "suppress": {"roles": ["*"]}},
        {"type": "SHUTDOWN", "framework_id": f, "shutdown": {"executor_id": {"value": "e"},
                                                             "agent_id": {"value": "a1"}}},
        {"type": "MESSAGE", "framework_id": f, "message": {"agent_id": {"value": "a1"},
                                                           "executor_id": {"value": "e"}, "data": "eA=="}},
        {"type": "REQUEST", "framework_id": f, "request": {"requests": [{"agent_id": {"value": "a1"}}]}},
        {"type": "UPDATE_FRAMEWORK", "framework_id": f, "update_framework": {
            "framework_info": {"user": "u", "name": "fuzz", "id": f}}},
        {"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": f, "acknowledge_operation_status": {
            "agent_id": {"value": "a1"}, "uuid": "AAAAAAAAAAAAAAAAAAAAAA==", "operation_id": {"value": "op"}}},
        {"type": "RECONCILE_OPERATIONS", "framework_id": f, "reconcile_operations": {"operations": [
            {"operation_id": {"value": "op"}}]}},
    ]


OPERATOR_CALLS = [
    {"type": "GET_STATE"}, {"type": "GET_TASKS"}, {"type": "GET_FRAMEWORKS"}, {"type": "GET_AGENTS"},
    {"type": "GET_HEALTH"}, {"type": "GET_VERSION"}, {"type": "GET_FLAGS"}, {"type": "GET_WEIGHTS"},
    {"type": "GET_QUOTA"}, {"type": "GET_ROLES"}, {"type": "GET_EXECUTORS"}, {"type": "GET_MASTER"},
    {"type": "GET_METRICS", "get_metrics": {"timeout": {"nanoseconds": 1000}}}, {"type": "GET_LOGGING_LEVEL"},
    {"type": "GET_MAINTENANCE_STATUS"}, {"type": "GET_MAINTENANCE_SCHEDULE"},
    {"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "r", "weight": 2.0}]}},
    {"type": "UPDATE_QUOTA", "update_quota": {"force": True, "quota_configs": [
        {"role": "r", "guarantees": {"cpus": {"value": 1}}, "limits": {"cpus": {"value": 2}}}]}},
]

AGENT_CALLS = [
    {"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "127.0.0.1:9", "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": 1.0},
        {"name": "ports", "type": "RANGES", "ranges": [[1, 10]]}],
        "attributes": [["rack", "a"]], "tasks": [{"framework_id": "f", "task_id": "t", "state": "TASK_RUNNING"}]}},
    {"type": "UPDATE", "agent_id": "a1", "update": {"framework_id": "f", "task_id": "t", "status": {
        "state": "TASK_RUNNING", "source": "SOURCE_EXECUTOR", "timestamp": 1.0, "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="}}},
    {"type": "PING", "agent_id": "a1"},
]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


async def test_scheduler_api_fuzz(replica: Replica) -> None:
    fid, sid = await subscribed(replica)
    calls = scheduler_calls(fid)

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        base = data.draw(st.sampled_from(calls))
        body = data.draw(mutated(base))
        headers = {} if base["type"] == "SUBSCRIBE" else {"Mesos-Stream-Id": sid}
        pending.append((body, headers))

    # hypothesis drives a synchronous function: draw the cases first, then send them on this loop.
    pending: list[tuple[bytes, dict]] = []
    run()
    for body, headers in pending:
        await replica.post("/api/v1/scheduler", body, headers)
    assert len(pending) >= 100
    check_store(replica)


async def test_operator_and_agent_api_fuzz(replica: Replica) -> None:
    pending: list[tuple[str, bytes]] = []

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path, calls = data.draw(st.sampled_from([("/api/v1", OPERATOR_CALLS), ("/api/drover/agent", AGENT_CALLS)]))
        pending.append((path, data.draw(mutated(data.draw(st.sampled_from(calls))))))

    run()
    for path, body in pending:
        await replica.post(path, body)
    check_store(replica)


QUERY_VALUES = ["", "1", "0", "-1", "9" * 40, "1e300", "-1e300", "2026-13-45", str(2**63), "1e9", "NaN", "true",
                "x" * 3000, "..", "%00", "%ff",
                "a,b", ",,,", "STATUS_UPDATED", "NOPE"]


async def test_read_endpoints_fuzz(replica: Replica) -> None:
    pending: list[str] = []

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = data.draw(st.sampled_from([
            "/api/v1/events", "/master/api/v1/events", "/master/state", "/state.json", "/drover/status", "/health",
            "/version", "/redirect", "/master/redirect/x", "/api/drover/audit/offers", "/api/drover/audit/tasks",
            "/api/drover/audit/allocations", "/api/drover/audit/frameworks", "/api/drover/audit/nope", "/slaves",
            "/master/frameworks.json", "/tasks", "/master/tasks.json", "/roles", "/state-summary",
            "/api/drover/why/framework", "/api/drover/why/task", "/api/drover/why/role", "/api/drover/why/x",
            "/api/drover/history/range", "/api/drover/history/state", "/api/drover/history/allocation",
            "/api/drover/history/task", "/api/drover/history/x", "/", "/ui/app.js", "/ui/x"]))
        params = data.draw(st.lists(st.tuples(
            st.sampled_from(["from", "type", "framework", "agent", "follow", "jsonp", "since", "until", "limit",
                             "format", "x", "offset", "order", "framework_id", "task_id", "slave_id", "index",
                             "role", "by", "resource", "points", "to"]),
            st.sampled_from(QUERY_VALUES)), max_size=3))
        query = "&".join(f"{k}={v}" for k, v in params)
        if "events" in path:
            query += ("&" if query else "") + "follow=false"
        pending.append(f"{path}?{query}" if query else path)

    run()
    for p in pending:
        await replica.get(p)
    check_store(replica)
