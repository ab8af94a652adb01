"""The history endpoints behind the web UI's time travel (master/api/history.py) and the UI's static route
(master/ui): answers, bounds, every refused parameter, authorization and authentication. The store is the audit
tests' hand-made one (tests/test_audit.py: two frameworks, two agents, every way an offer ends)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drover.security import acls
from drover.security import credentials as creds
from drover.security import http as security
from eventstore import events as ev
from eventstore.store import EventStore
from master import state_json
from master.api.history import MAX_POINTS, add_history_routes, spread
from master.http import build_app
from master.ui import CSP
from replay.reader import open_store, state_at
from tests.test_audit import A, B, S0, Log, scenario
from tests.test_readcache import FakeCore

REVIEW_SECRET = "s" * 24

H = "/api/drover/history"


@pytest.fixture
def built(tmp_path) -> tuple[Path, dict[str, int]]:
    return scenario(tmp_path)


async def client(path: Path, may_read=lambda request: True) -> TestClient:
    app = web.Application()
    add_history_routes(app, path, may_read)
    c = TestClient(TestServer(app))
    await c.start_server()
    return c


def render(s) -> dict:
    return state_json.render(s, master_id="", http="", leader_http=None, version="", start_time=0.0,
                             elected_time=None, flags={})


async def test_state_at_an_index_is_master_states_shape_replayed(built):
    path, ix = built
    c = await client(path)
    try:
        r = await c.get(f"{H}/range")
        assert r.status == 200
        rng = await r.json()
        assert rng["first"] == 1 and rng["last"] == ix["removed"] and rng["last_ts"] >= rng["first_ts"]

        store = open_store(path)
        try:
            for idx in (1, ix["accept"] - 1, ix["accept"], ix["removed"]):
                r = await c.get(f"{H}/state?index={idx}")
                assert r.status == 200 and r.headers["Drover-State-Index"] == str(idx)
                got = await r.json()
                roles = got.pop("roles")
                assert got == json.loads(json.dumps(render(state_at(store, idx))))
                want = [] if idx == 1 else ["web"] if idx == ix["removed"] else ["batch", "web"]  # B removed last
                assert [x["name"] for x in roles] == want
            # backwards and forwards again: from the store, or folded on from the last state (the same answer)
            for idx in (ix["removed"] - 1, 3, ix["decline"], 2, 5):
                got = await (await c.get(f"{H}/state?index={idx}")).json()
                got.pop("roles")
                assert got == json.loads(json.dumps(render(state_at(store, idx)))), idx
        finally:
            store.close()
        before = await (await c.get(f"{H}/state?index={ix['accept'] - 1}")).json()
        after = await (await c.get(f"{H}/state?index={ix['accept']}")).json()
        tasks = lambda st: [t["id"] for f in st["frameworks"] for t in f["tasks"]]  # noqa: E731
        assert "a1" not in tasks(before) and "a1" in tasks(after)
    finally:
        await c.close()


async def test_allocation_series_is_bounded_and_sampled_over_the_log(built):
    path, ix = built
    c = await client(path)
    try:
        r = await c.get(f"{H}/allocation?by=framework&resource=cpus&points=5")
        assert r.status == 200
        out = await r.json()
        assert out["points"] == len(out["samples"]) == 5 and out["from"] == 1 and out["to"] == ix["removed"]
        assert [s["index"] for s in out["samples"]] == spread(1, ix["removed"], 5)
        assert {s["key"]: s["name"] for s in out["series"]} == {A: "alpha", B: "beta"}
        assert all(s["total"] in (0, 4.0) for s in out["samples"])
        at_accept = await (await c.get(f"{H}/allocation?by=role&from={ix['accept']}&to={ix['accept']}")).json()
        assert at_accept["samples"] == [{"index": ix["accept"], "total": 4.0, "offered": 2.0,
                                         "allocated": {"web": 1.0}, "ts": at_accept["samples"][0]["ts"]}]
        # the same parameters at the same last index: the cached answer
        assert await (await c.get(f"{H}/allocation?by=framework&points=5")).read() == await r.read()
    finally:
        await c.close()


def test_spread_is_bounded_and_keeps_both_ends():
    assert spread(1, 1, 200) == [1]
    assert spread(1, 3, 200) == [1, 2, 3]
    pts = spread(1, 100_000, MAX_POINTS)
    assert len(pts) == MAX_POINTS and pts[0] == 1 and pts[-1] == 100_000


async def test_a_long_log_gives_at_most_200_points(tmp_path):
    log = Log()
    log.add(0, ev.LeaderElected(leader_id="r1", http="h1:5050", term=1), ev.ClusterCreated(cluster_id="c0ffee"))
    log.add(1, ev.FrameworkSubscribed(framework_id=A, info=ev.FrameworkInfo(name="alpha", user="u", roles=["web"])))
    for n in range(300):
        log.add(2 + n, ev.RolesSuppressed(framework_id=A, roles=["web"]) if n % 2 == 0
                else ev.RolesRevived(framework_id=A, roles=["web"]))
    path = log.write(tmp_path / "events.sqlite")
    c = await client(path)
    try:
        out = await (await c.get(f"{H}/allocation")).json()
        assert out["points"] == MAX_POINTS and out["samples"][-1]["index"] == 303 and out["by"] == "role"
    finally:
        await c.close()


async def test_task_timeline_steps_carry_their_log_indexes(built):
    path, ix = built
    c = await client(path)
    try:
        r = await c.get(f"{H}/task?framework_id={A}&task_id=a1")
        assert r.status == 200
        out = await r.json()
        steps = [(s["step"], s["index"]) for s in out["steps"]]
        assert steps[:2] == [("offered", ix["first"]), ("accepted", ix["accept"])]
        assert [s for s, _ in steps[2:]] == ["starting", "running", "ended"]
        assert [i for _, i in steps] == sorted(i for _, i in steps)
        assert out["task"]["task_id"] == "a1" and out["offers"][0]["agent_id"] == S0
        assert "offer O0 on agent S0 (role web)" in out["steps"][0]["detail"]
        r = await c.get(f"{H}/task?framework_id={A}&task_id=nope")
        assert r.status == 404 and "no task 'nope'" in await r.text()
    finally:
        await c.close()


@pytest.mark.parametrize("query, status, words", [
    ("state", 400, "'index' is required"),
    ("state?index=", 400, "'index' is required"),
    ("state?index=x", 400, "parameter 'index'"),
    ("state?index=0", 400, "parameter 'index'"),
    ("state?index=-3", 400, "parameter 'index'"),
    ("state?index=1e3", 400, "parameter 'index'"),
    ("state?index=99999999999999999999", 400, "parameter 'index'"),
    ("state?index=999", 404, "index 999 is not in this replica's store"),
    ("state?index=1&index=2", 400, "'index' given more than once"),
    ("state?index=1&at=2", 400, "unknown parameter 'at'"),
    ("range?x=1", 400, "unknown parameter 'x'"),
    ("allocation?by=agent", 400, "parameter 'by'"),
    ("allocation?resource=ports", 400, "parameter 'resource'"),
    ("allocation?points=1", 400, "parameter 'points'"),
    ("allocation?points=201", 400, "parameter 'points'"),
    ("allocation?points=ten", 400, "parameter 'points'"),
    ("allocation?from=10&to=5", 400, "parameter 'to'"),
    ("allocation?to=999", 404, "parameter 'to'"),
    ("allocation?from=0", 400, "parameter 'from'"),
    ("task?task_id=a1", 400, "'framework_id' is required"),
    ("task?framework_id=x", 400, "'task_id' is required"),
    ("task?framework_id=x&task_id=" + "t" * 300, 400, "longer than 256"),
    ("nope", 404, "unknown history query 'nope'"),
])
async def test_bad_parameters_are_refused_with_their_name(built, query, status, words):
    c = await client(built[0])
    try:
        r = await c.get(f"{H}/{query}")
        text = await r.text()
        assert r.status == status and words in text, (r.status, text)
    finally:
        await c.close()


async def test_only_viewers_of_everything_and_only_with_a_store(tmp_path, built):
    c = await client(built[0], may_read=lambda request: False)
    try:
        r = await c.get(f"{H}/state?index=1")
        assert r.status == 403 and "may not view all frameworks" in await r.text()
    finally:
        await c.close()
    c = await client(tmp_path / "nothing" / "events.sqlite")
    try:
        for q in ("range", "state?index=1", "allocation", f"task?framework_id={A}&task_id=a1"):
            r = await c.get(f"{H}/{q}")
            assert r.status == 503, (q, r.status, await r.text())
    finally:
        await c.close()


async def test_an_empty_store_has_no_index(tmp_path):
    store = EventStore(tmp_path / "events.sqlite", create=True)
    store.close()
    c = await client(tmp_path / "events.sqlite")
    try:
        assert (await (await c.get(f"{H}/range")).json())["last"] == 0
        r = await c.get(f"{H}/state?index=1")
        assert r.status == 404 and "no events yet" in await r.text()
    finally:
        await c.close()


# ---- through build_app: the UI's files, the history of the replica's own store, authentication ------------------


def _core(tmp_path: Path, credentials=None) -> FakeCore:
    path, _ = scenario(tmp_path)
    store = open_store(path)
    try:
        core = FakeCore(tmp_path, state_at(store))
    finally:
        store.close()
    core.config.credentials = credentials
    return core


async def test_the_ui_is_served_at_the_root_with_a_strict_csp(tmp_path):
    async with TestClient(TestServer(build_app(_core(tmp_path)))) as c:
        for path, ctype in (("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
            r = await c.get(path)
            assert r.status == 200 and r.content_type == ctype, path
            assert r.headers["Content-Security-Policy"] == CSP and "script-src 'self'" in CSP
            assert "unsafe-inline" not in CSP and r.headers["X-Content-Type-Options"] == "nosniff"
        html = await (await c.get("/")).text()
        assert '<script type="module" src="/ui/app.js"></script>' in html and "<script>" not in html
        for bad in ("/ui/nope.js", "/ui/..%2Fhttp.py", "/ui/%2e%2e/__init__.py"):
            assert (await c.get(bad)).status == 404, bad
        # every module the page imports is served
        for name in ("api.js", "dom.js", "chart.js"):
            assert (await c.get(f"/ui/{name}")).status == 200
        r = await c.get(f"{H}/state?index=5")
        assert r.status == 200 and (await r.json())["pid"] == "master@127.0.0.1:5050"


async def test_with_credentials_the_ui_and_history_ask_for_them(tmp_path):
    secret = "s" * 24
    cred = creds.parse(json.dumps({"credentials": [{"principal": "ops", "secret": secret}]}).encode())
    async with TestClient(TestServer(build_app(_core(tmp_path, cred)))) as c:
        for path in ("/", "/ui/app.js", f"{H}/range", f"{H}/state?index=3", "/api/drover/why/task"):
            r = await c.get(path)
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"] == f'Basic realm="{security.READONLY}"'
        auth = {"Authorization": "Basic " + base64.b64encode(f"ops:{secret}".encode()).decode()}
        assert (await c.get("/", headers=auth)).status == 200
        assert (await c.get(f"{H}/state?index=3", headers=auth)).status == 200


def test_the_pages_never_parse_cluster_data_as_html():
    from master.ui import STATIC

    for js in STATIC.glob("*.js"):
        text = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, (js.name, sink)


async def test_states_from_a_snapshot_and_folded_on_are_the_replay_from_zero(built):
    from master.state import encode_snapshot, state_hash

    path, ix = built
    store = EventStore(path)
    snap = state_at(store, 10, use_snapshots=False)
    store.write_snapshot(10, state_hash(snap), encode_snapshot(snap))
    store.close()
    c = await client(path)
    try:
        ro = open_store(path)
        try:
            for idx in (5, 12, 13, 9, 10, ix["removed"]):  # from 0; past the snapshot; folded on; back; ...
                got = await (await c.get(f"{H}/state?index={idx}")).json()
                got.pop("roles")
                assert got == json.loads(json.dumps(render(state_at(ro, idx, use_snapshots=False)))), idx
        finally:
            ro.close()
    finally:
        await c.close()


# ---- from the second read of the UI (stop 20) ------------------------------------------------------------


async def test_history_state_keeps_view_flags_and_view_roles(tmp_path: Path):
    """A principal that may view every framework and task, but no flags and only role 'web': the live endpoints
    hide the flags and role 'batch'; the history's state must not show them either."""
    cred = creds.parse(json.dumps({"credentials": [{"principal": "p", "secret": REVIEW_SECRET}]}).encode())
    core = _core(tmp_path, cred)
    core.config.acls = acls.parse(json.dumps({
        "view_flags": [{"principals": {"values": ["p"]}, "flags": {"type": "NONE"}}],
        "view_roles": [{"principals": {"values": ["p"]}, "roles": {"values": ["web"]}},
                       {"principals": {"values": ["p"]}, "roles": {"type": "NONE"}}],
    }))
    async with TestClient(TestServer(build_app(core))) as c:
        live = await (await c.get("/master/state", headers=_review_auth("p"))).json()
        assert live["flags"] == {}
        live_roles = [r["name"] for r in (await (await c.get("/roles", headers=_review_auth("p"))).json())["roles"]]
        assert "batch" not in live_roles
        r = await c.get(f"{H}/state?index=20", headers=_review_auth("p"))
        assert r.status == 200
        past = await r.json()
        assert "batch" not in [x["name"] for x in past["roles"]], [x["name"] for x in past["roles"]]
        assert past["flags"] == {}, past["flags"]


def test_allocation_series_counts_a_shared_volume_once_per_role():
    """Two tasks of role db use one shared volume (100 MB): the role holds 100 MB of disk (as /roles and the agent's
    used_resources say, and as Mesos's sorters count it), not 200."""
    from master import state_json
    from master.api.history import sample
    from tests.test_shared_volumes import shared_volume
    from tests.test_volumes import launch, volume

    log = shared_volume()
    log.accept("DB", log.offers()["DB"], launch("t1", volume("pv1", shared=True)),
               launch("t2", volume("pv1", path="ro", mode="RO", shared=True)))
    roles = {r["name"]: r["allocated"] for r in state_json.roles(log.state, lambda r: True)["roles"]}
    got = sample(log.state, "role", "disk", {})
    assert got["allocated"]["db"] == roles["db"]["disk"] == 100.0, (got, roles)


def _review_auth(p: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{p}:{REVIEW_SECRET}".encode()).decode()}


async def test_too_many_waiting_history_requests_get_a_503(built, monkeypatch) -> None:
    """History requests fold the log in a pool of their own; beyond MAX_WAITING waiting, a 503 with Retry-After
    rather than an unbounded queue of folds."""
    from master.api import history

    path, _ = built
    monkeypatch.setattr(history, "MAX_WAITING", 0)
    c = await client(path)
    try:
        r = await c.get(f"{H}/range")
        assert r.status == 503 and r.headers["Retry-After"] == "1"
    finally:
        await c.close()
    monkeypatch.setattr(history, "MAX_WAITING", 16)
    c = await client(path)
    try:
        assert (await c.get(f"{H}/range")).status == 200
    finally:
        await c.close()
