"""Reads off the hot path (issue 10): /master/state, operator GET_STATE and its parts and /drover/status's state
hash are built at most once per state version (master/readcache.py), give the bytes a fresh build gives, and are
built again once the state moves. The builders group tasks and offers once instead of scanning them per agent
and per framework; their output is the scan's.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eventstore import events as ev
from eventstore.resources import Resources
from master import operator_json, state_json
from master.codec import resources_summary
from master.http import build_app
from master.readcache import ReadCache
from master.replica import MasterConfig
from master.state import State, state_hash
from tests.test_fold import AGENT_RES, Log, info, offer, res, status, task, with_fw_and_agent

VERSION = "1.11.0"


def busy_state() -> Log:
    """Two frameworks, three agents (one unreachable), tasks running, finished and unreachable, offers out."""
    log = with_fw_and_agent()
    log(ev.AgentRegistered(agent_id="A2", hostname="h2", http="h2:5051", resources=res(AGENT_RES)))
    log(ev.AgentRegistered(agent_id="A3", hostname="h3", http="h3:5051", resources=res(AGENT_RES)))
    log(ev.FrameworkSubscribed(framework_id="F2", info=info("fw2", roles=("web",))))
    for i, aid in enumerate(("A1", "A2", "A3", "A1")):
        fid = "F1" if i % 2 == 0 else "F2"
        role = "*" if fid == "F1" else "web"
        log(ev.OffersMade(offers=[offer(f"O{i}", fid, aid, role, "cpus:1;mem:128")], trigger="periodic",
                          seed=log.state.index, candidates=[aid]))
        spec = task(f"t{i}", aid=aid)
        if fid == "F2":
            spec = ev.TaskSpec(task_id=spec.task_id, name=spec.name, agent_id=aid, resources=spec.resources,
                               command=spec.command, role="web")
        reserved = Resources.parse("mem(web):64").to_list() if i == 1 else []  # a dynamic reservation on A2
        log(ev.OffersAccepted(framework_id=fid, offer_ids=[f"O{i}"], tasks=[spec], refuse_seconds=0.0,
                              reserved=reserved))
        log(ev.StatusUpdated(framework_id=fid, task_id=f"t{i}", agent_id=aid, status=status("TASK_RUNNING", f"u{i}")))
    log(ev.StatusUpdated(framework_id="F1", task_id="t0", agent_id="A1", status=status("TASK_FINISHED", "u9")))
    log(ev.StatusAcknowledged(framework_id="F1", task_id="t0", uuid="u9"))
    log(ev.AgentUnreachable(agent_id="A3", unreachable_time=200.0))
    log(ev.OffersMade(offers=[offer("O8", "F1", "A2", "*", "cpus:1;mem:64"), offer("O9", "F2", "A1", "web",
                                                                                  "cpus:0.5;mem:64")],
                      trigger="periodic", seed=log.state.index, candidates=["A1", "A2"]))
    return log


# ---- the builders: grouped once, the same output as the scans -----------------------------------------------


def test_grouped_builders_give_the_scans_output():
    s = busy_state().state
    assert s.completed_tasks and s.unreachable_agents and len(s.offers) == 2
    # GET_* builds (grouped, rendered resources memoized) against one item at a time (scans, no memo).
    got = operator_json.get_state(s, VERSION)
    assert got["get_agents"]["agents"] == [operator_json.agent(s, a, VERSION) for a in s.agents.values()]
    assert got["get_frameworks"]["frameworks"] == [operator_json.framework(s, fw) for fw in s.frameworks.values()]
    assert got["get_tasks"] == {"tasks": [operator_json.task(s, t) for t in s.all_tasks()],
                                "completed_tasks": [operator_json.task(s, t) for t in s.completed_tasks]}
    assert json.dumps(got["get_agents"]) == json.dumps(operator_json.get_agents(s, VERSION))
    out = state_json.render(s, master_id="m1", http="m1:5050", leader_http="m1:5050", version=VERSION,
                            start_time=0.0, elected_time=1.0, flags={})
    assert s.agents["A2"].dynamic
    for slave in out["slaves"]:
        total = s.agents[slave["id"]].total()
        assert slave["resources"] == resources_summary(total)
        assert slave["unreserved_resources"] == resources_summary(total.unreserved())
        assert slave["reserved_resources"] == {role: resources_summary(Resources(r for r in total if r.role == role))
                                               for role in sorted({r.role for r in total} - {"*"})}
        assert slave["used_resources"] == resources_summary(s.used_on_agent(slave["id"]))
        assert slave["offered_resources"] == resources_summary(s.offered_on_agent(slave["id"]))
    assert out["slaves"][1]["reserved_resources"]
    tasks = {t.task_id: t for t in [*s.all_tasks(), *s.completed_tasks]}
    for fw in out["frameworks"]:
        assert fw["offered_resources"] == resources_summary(s.offered_to_framework(fw["id"]))
        for t in fw["tasks"] + fw["unreachable_tasks"] + fw["completed_tasks"]:
            assert t["resources"] == resources_summary(Resources(tasks[t["id"]].spec.resources))
        assert [o["id"] for o in fw["offers"]] == [o.offer_id for o in s.offers.values() if o.framework_id == fw["id"]]
        assert [t["id"] for t in fw["completed_tasks"]] == [t.task_id for t in s.completed_tasks
                                                           if t.framework_id == fw["id"]]


# ---- ReadCache ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hash_build(state: State, builds: list[int]):
    def build() -> bytes:
        builds.append(state.index)
        return state_hash(state).encode()
    return build


def test_one_build_per_index_and_a_new_one_when_it_moves():
    log = busy_state()
    s = log.state
    cache, builds = ReadCache(), []
    first = [cache.get("h", s, hash_build(s, builds)) for _ in range(5)]
    assert builds == [s.index]
    assert first == [(state_hash(s).encode(), s.index)] * 5  # the bytes a fresh build gives
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("fw3")))
    body, index = cache.get("h", s, hash_build(s, builds))
    assert builds == [s.index - 1, s.index] and index == s.index
    assert body == state_hash(s).encode() != first[0][0]


def test_another_state_object_or_extra_is_another_answer():
    a, b = busy_state().state, busy_state().state
    assert a.index == b.index
    cache, builds = ReadCache(), []
    cache.get("h", a, hash_build(a, builds))
    cache.get("h", b, hash_build(b, builds))  # e.g. the state rebuilt from the store: same index, new object
    cache.get("h", b, hash_build(b, builds), extra="leader m2")
    cache.get("h", b, hash_build(b, builds), extra="leader m2")
    assert len(builds) == 3


def test_slow_builds_may_be_served_stale_within_the_bound():
    log = busy_state()
    s = log.state
    clock = Clock()
    cache = ReadCache(slow=0.05, ratio=4.0, max_stale=5.0, clock=clock)
    builds: list[int] = []

    def slow_build() -> bytes:
        builds.append(s.index)
        clock.now += 1.0  # this build "took" a second
        return str(s.index).encode()

    assert cache.get("x", s, slow_build) == (str(s.index).encode(), s.index)
    built_at = s.index
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("fw3")))
    clock.now += 2.0
    assert cache.get("x", s, slow_build) == (str(built_at).encode(), built_at)  # 3 s old, bound min(5, 4 x 1)
    assert cache.get("x", s, slow_build, exact=True)[1] == s.index  # exact: never stale
    log(ev.FrameworkSubscribed(framework_id="F4", info=info("fw4")))
    clock.now += 4.5  # past the bound
    assert cache.get("x", s, slow_build)[1] == s.index
    assert len(builds) == 3


def test_fast_builds_are_never_stale():
    log = busy_state()
    s = log.state
    cache = ReadCache(clock=Clock())  # the clock never moves: every build took 0 s
    builds: list[int] = []
    cache.get("h", s, hash_build(s, builds))
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("fw3")))
    assert cache.get("h", s, hash_build(s, builds)) == (state_hash(s).encode(), s.index)


# ---- the endpoints ---------------------------------------------------------------------------------------


class FakeCore:
    """What build_app's read endpoints use of a MasterServer: a serving leader at a folded state."""

    def __init__(self, tmp: Path, state: State):
        self.config = MasterConfig(id="m1", http="127.0.0.1:5050", raft="127.0.0.1:5051", peers=[], data_dir=tmp)
        self.state = state
        self.serving = True
        self.failed = None
        self.raft = SimpleNamespace(is_leader=True, term=1, tick_lag=lambda: {"max_s": 0.0})
        self.committed_index = state.index
        self.pipeline_counts = {"entries": 0, "decisions": 0, "events": 0}
        self.started_at, self.elected_at = 10.0, 20.0
        self.store = SimpleNamespace(path=tmp / "events.sqlite")
        self.on_serving_change = None
        self.event_listeners: set = set()
        from master.metrics import MasterMetrics

        self.metrics = MasterMetrics()  # as MasterServer has, read at scrape time
        self.metrics.bind(self)  # type: ignore[arg-type]

    def leader_http(self) -> str:
        return self.config.http


@pytest.fixture
async def endpoints(tmp_path: Path):
    log = busy_state()
    core = FakeCore(tmp_path, log.state)
    async with TestClient(TestServer(build_app(core))) as client:
        yield client, core, log


def fresh_master_state(core: FakeCore) -> bytes:
    flags = {"allocation_interval": f"{core.config.allocator.allocation_interval}secs",
             "offer_timeout": str(core.config.allocator.offer_timeout or ""),
             "heartbeat_interval": f"{core.config.heartbeat_interval}secs"}
    return json.dumps(state_json.render(core.state, master_id="m1", http=core.config.http,
                                        leader_http=core.config.http, version=VERSION, start_time=10.0,
                                        elected_time=20.0, flags=flags)).encode()


async def get(client: TestClient, path: str) -> aiohttp.ClientResponse:
    r = await client.get(path)
    assert r.status == 200
    return r


async def test_master_state_is_served_from_the_cache_until_the_state_moves(endpoints):
    client, core, log = endpoints
    r1 = await get(client, "/master/state")
    r2 = await get(client, "/state.json")
    b1, b2 = await r1.read(), await r2.read()
    assert b1 == b2 == fresh_master_state(core)
    assert r1.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r1.headers["Drover-State-Index"] == str(core.state.index)
    jsonp = await (await get(client, "/master/state?jsonp=cb")).text()
    assert jsonp == f"cb({b1.decode()});"
    assert (await get(client, "/master/state?jsonp=angular.callbacks._0")).status == 200
    for code in ("alert(1)", "cb;fetch('//x')", "a b", "1cb"):  # a callback is an identifier path, nothing else
        assert (await client.get("/master/state", params={"jsonp": code})).status == 400, code
    assert await (await get(client, "/master/state?jsonp=")).read() == b1
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("fw3")))
    r3 = await get(client, "/master/state")
    b3 = await r3.read()
    assert b3 == fresh_master_state(core) != b1
    assert r3.headers["Drover-State-Index"] == str(core.state.index)
    assert "fw3" in {f["name"] for f in json.loads(b3)["frameworks"]}


async def test_drover_status_hashes_once_per_index(endpoints, monkeypatch):
    client, core, log = endpoints
    import master.http
    calls: list[int] = []
    real = master.http.state_hash

    def counting(state: State) -> str:
        calls.append(state.index)
        return real(state)

    monkeypatch.setattr(master.http, "state_hash", counting)
    for _ in range(3):
        st = await (await get(client, "/drover/status")).json()
        assert (st["applied_index"], st["state_hash"]) == (core.state.index, real(core.state))
    assert calls == [core.state.index]
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("fw3")))
    st = await (await get(client, "/drover/status")).json()
    assert (st["applied_index"], st["state_hash"]) == (core.state.index, real(core.state))
    assert len(calls) == 2


@pytest.mark.parametrize("call", ["GET_STATE", "GET_TASKS", "GET_FRAMEWORKS", "GET_AGENTS"])
async def test_operator_reads_are_served_from_the_cache_until_the_state_moves(endpoints, call):
    client, core, log = endpoints
    fresh = {"GET_STATE": lambda s: operator_json.get_state(s, VERSION), "GET_TASKS": operator_json.get_tasks,
             "GET_FRAMEWORKS": operator_json.get_frameworks,
             "GET_AGENTS": lambda s: operator_json.get_agents(s, VERSION)}[call]

    async def read() -> tuple[bytes, str]:
        r = await client.post("/api/v1", json={"type": call}, headers={"Content-Type": "application/json"})
        assert r.status == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8"
        return await r.read(), r.headers["Drover-State-Index"]

    def expected() -> bytes:  # what `_ok` (web.json_response) gave before the cache
        return json.dumps({"type": call, call.lower(): fresh(core.state)}).encode()

    (b1, i1), (b2, i2) = await read(), await read()
    assert b1 == b2 == expected() and i1 == i2 == str(core.state.index)
    log(ev.AgentRegistered(agent_id="A4", hostname="h4", http="h4:5051", resources=res(AGENT_RES)))
    log(ev.OffersMade(offers=[offer("O10", "F1", "A4", "*", "cpus:1;mem:64")], trigger="periodic",
                      seed=core.state.index, candidates=["A4"]))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O10"], tasks=[task("t10", aid="A4")], refuse_seconds=0.0))
    b3, i3 = await read()
    assert b3 == expected() != b1 and i3 == str(core.state.index)
