"""Mesos's smaller read endpoints (issue 14): /slaves, /frameworks, /tasks, /roles and /state-summary, each also
under /master/ and with .json. Their shapes are Mesos's (src/master/readonly_handler.cpp: SlavesWriter,
FullFrameworkWriter, the tasks writer, roles, stateSummary); their agents, frameworks and tasks are /master/state's
own objects (master/state_json.py builds both), filtered for the reader as /master/state is (master/views.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eventstore import events as ev
from master import state_json
from master.http import build_app, read_paths
from master.state import MAX_COMPLETED_FRAMEWORK_RECORDS, decode_snapshot, encode_snapshot, state_hash
from master.views import Viewer, visible_state
from tests.test_fold import Log, base, info
from tests.test_readcache import VERSION, FakeCore, busy_state
from tests.test_security import acls, rule

SUMMARY_COUNTS = {"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_KILLED",
                  "TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_UNREACHABLE"}
# The fields Mesos's writers emit for each object (docs/endpoints/master/*.md examples, readonly_handler.cpp).
SLAVE_FIELDS = {"id", "hostname", "port", "pid", "attributes", "registered_time", "resources", "used_resources",
                "offered_resources", "reserved_resources", "unreserved_resources", "active", "deactivated", "version",
                "capabilities"}
FRAMEWORK_FIELDS = {"id", "name", "used_resources", "offered_resources", "capabilities", "hostname", "webui_url",
                    "active", "connected", "recovered", "user", "failover_timeout", "checkpoint", "registered_time",
                    "resources", "tasks", "unreachable_tasks", "completed_tasks", "offers", "executors"}
TASK_FIELDS = {"id", "name", "framework_id", "executor_id", "slave_id", "state", "resources", "statuses"}


def render_state(s) -> dict:
    return state_json.render(s, master_id="m1", http="m1:5050", leader_http="m1:5050", version=VERSION,
                             start_time=0.0, elected_time=1.0, flags={})


def test_slaves_and_frameworks_are_master_states_objects():
    s = busy_state().state
    full = render_state(s)
    out = state_json.slaves(s, VERSION)
    assert set(out) == {"slaves", "recovered_slaves"} and out["recovered_slaves"] == []
    for mine, theirs in zip(out["slaves"], full["slaves"], strict=True):
        assert SLAVE_FIELDS <= set(mine)
        assert {k: v for k, v in mine.items() if k in theirs} == theirs  # /master/state's agent, and more:
        assert set(mine) - set(theirs) == {"unreserved_resources_full", "used_resources_full",
                                           "offered_resources_full"}
    a2 = next(d for d in out["slaves"] if d["id"] == "A2")
    assert {r["name"] for r in a2["used_resources_full"]} == {"cpus", "mem"}
    assert a2["reserved_resources_full"]["web"][0]["reservations"][0]["type"] == "DYNAMIC"
    assert [d["id"] for d in state_json.slaves(s, VERSION, "A2")["slaves"]] == ["A2"]
    assert state_json.slaves(s, VERSION, "nope")["slaves"] == []

    fws = state_json.frameworks(s)
    assert set(fws) == {"frameworks", "completed_frameworks", "unregistered_frameworks"}
    assert fws["frameworks"] == full["frameworks"]
    for fw in fws["frameworks"]:
        assert FRAMEWORK_FIELDS <= set(fw)
        for t in fw["tasks"] + fw["completed_tasks"] + fw["unreachable_tasks"]:
            assert TASK_FIELDS <= set(t)
    assert [f["id"] for f in state_json.frameworks(s, "F2")["frameworks"]] == ["F2"]


def test_tasks_are_paged_by_their_first_status_newest_first():
    log = busy_state()
    s = log.state
    every = {(t.framework_id, t.task_id) for t in (*s.all_tasks(), *s.completed_tasks)}
    got = state_json.tasks(s)["tasks"]
    assert {(t["framework_id"], t["id"]) for t in got} == every  # live, unreachable and completed
    firsts = [t["statuses"][0]["timestamp"] for t in got]
    assert firsts == sorted(firsts, reverse=True)
    asc = state_json.tasks(s, order="asc")["tasks"]
    assert asc == list(reversed(got))
    assert state_json.tasks(s, limit=2, offset=1)["tasks"] == got[1:3]
    assert state_json.tasks(s, offset=100)["tasks"] == []
    assert state_json.tasks(s, limit=0)["tasks"] == []
    assert [t["id"] for t in state_json.tasks(s, framework_id="F2")["tasks"]] == ["t3", "t1"]
    assert [t["id"] for t in state_json.tasks(s, framework_id="F1", task_id="t0")["tasks"]] == ["t0"]
    t0 = next(t for t in got if t["id"] == "t0")
    f1 = next(f for f in render_state(s)["frameworks"] if f["id"] == "F1")
    assert t0 == next(t for t in f1["completed_tasks"] if t["id"] == "t0")  # /master/state's task object
    assert state_json.tasks(s, limit=10**9)["tasks"] == got  # served as MAX_TASK_LIMIT


def test_a_task_without_a_status_sorts_by_its_launch():
    log = busy_state()
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O8"], tasks=[ev.TaskSpec(
        task_id="fresh", name="fresh", agent_id="A2", resources=[], command=ev.CommandSpec(value="true"))],
        refuse_seconds=0.0), ts=500.0)
    assert state_json.tasks(log.state, limit=1)["tasks"][0]["id"] == "fresh"


def test_roles_and_state_summary_shapes():
    log = busy_state()
    log(ev.WeightsUpdated(weights={"web": 2.0, "ops": 3.0}))
    log(ev.QuotaUpdated(role="ops", guarantees={"cpus": 1.0}, limits={"cpus": 2.0}))
    s = log.state
    roles = {r["name"]: r for r in state_json.roles(s, lambda role: True)["roles"]}
    assert list(roles) == ["*", "ops", "web"]
    web = roles["web"]
    assert set(web) == {"name", "weight", "quota", "resources", "allocated", "offered", "reserved", "frameworks"}
    assert web["weight"] == 2.0 and web["frameworks"] == ["F2"]
    assert web["allocated"] == {"cpus": 2.0, "mem": 256.0}  # t1 and t3
    assert web["offered"] == {"cpus": 0.5, "mem": 64.0}
    assert web["reserved"] == {"mem": 64.0}
    assert web["resources"] == {"cpus": 2.5, "mem": 320.0}
    assert web["quota"]["consumed"] == {"cpus": 2.0, "mem": 64.0 + 256.0}  # its reservation, and unreserved use
    assert roles["ops"]["quota"] == {"role": "ops", "guarantee": {"cpus": 1.0}, "limit": {"cpus": 2.0},
                                     "consumed": {}}
    assert roles["ops"]["frameworks"] == []
    assert [r["name"] for r in state_json.roles(s, lambda role: role != "ops")["roles"]] == ["*", "web"]

    summary = state_json.state_summary(s, http="m1:5050", version=VERSION)
    assert set(summary) == {"hostname", "slaves", "frameworks"} and summary["hostname"] == "m1"
    a1 = next(a for a in summary["slaves"] if a["id"] == "A1")
    assert SLAVE_FIELDS | SUMMARY_COUNTS | {"framework_ids"} <= set(a1)
    assert a1["TASK_RUNNING"] == 1 and a1["TASK_FINISHED"] == 1 and a1["framework_ids"] == ["F1", "F2"]
    f2 = next(f for f in summary["frameworks"] if f["id"] == "F2")
    assert set(f2) == {"id", "name", "used_resources", "offered_resources", "capabilities", "hostname",
                       "webui_url", "active", "connected", "recovered", "slave_ids"} | SUMMARY_COUNTS
    assert f2["TASK_RUNNING"] == 2 and f2["TASK_UNREACHABLE"] == 0 and f2["slave_ids"] == ["A1", "A2"]
    f1 = next(f for f in summary["frameworks"] if f["id"] == "F1")
    assert f1["TASK_UNREACHABLE"] == 1 and f1["TASK_FINISHED"] == 1 and f1["slave_ids"] == ["A1", "A3"]


# ---- over HTTP ------------------------------------------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path):
    log = busy_state()
    core = FakeCore(tmp_path, log.state)
    async with TestClient(TestServer(build_app(core))) as c:
        yield c, core, log


@pytest.mark.parametrize("name", ["slaves", "frameworks", "tasks", "roles", "state-summary"])
async def test_each_endpoint_answers_at_its_four_paths_from_the_cache(client, name):
    c, core, log = client
    bodies = []
    for p in read_paths(name):
        r = await c.get(p)
        assert r.status == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8", p
        assert r.headers["Drover-State-Index"] == str(core.state.index)
        bodies.append(await r.read())
    assert len(set(bodies)) == 1
    assert (await (await c.get(f"/master/{name}?jsonp=cb")).text()) == f"cb({bodies[0].decode()});"
    log(ev.FrameworkSubscribed(framework_id="F3", info=info("fw3", roles=("new",))))
    r = await c.get(f"/{name}")
    assert r.headers["Drover-State-Index"] == str(core.state.index)
    if name in ("frameworks", "roles", "state-summary"):
        assert (await r.read()) != bodies[0]


async def test_tasks_query_parameters_and_their_refusals(client):
    c, core, log = client
    r = await c.get("/master/tasks", params={"framework_id": "F2", "order": "asc", "limit": "1", "offset": "1"})
    assert r.status == 200 and [t["id"] for t in (await r.json())["tasks"]] == ["t3"]
    r = await c.get("/tasks.json", params={"task_id": "t0", "framework_id": "F1", "other": "ignored"})
    assert [t["id"] for t in (await r.json())["tasks"]] == ["t0"]
    for params, words in [({"limit": "x"}, "'limit' must be an integer"), ({"limit": "-"}, "'limit'"),
                          ({"limit": "-1.5"}, "'limit'"), ({"offset": "-1"}, "'offset'"),
                          ({"offset": "1e3"}, "'offset' must be an integer"), ({"offset": "99999999999"}, "'offset'"),
                          ({"limit": "9" * 5000}, "'limit'"), ({"order": "sideways"}, "'order' must be 'asc' or"),
                          ({"limit": "١"}, "'limit'")]:
        r = await c.get("/tasks", params=params)
        assert r.status == 400 and words in await r.text(), params
    r = await c.get("/tasks", params={"limit": "100000"})  # beyond the bound: served as it
    assert r.status == 200 and len((await r.json())["tasks"]) == 4
    # A negative limit is Mesos's size_t: every task (served as the bound); the Mesos CLI's `task list` asks so.
    r = await c.get("/tasks", params={"order": "asc", "limit": "-1"})
    assert r.status == 200 and [t["id"] for t in (await r.json())["tasks"]] == \
        [t["id"] for t in reversed(state_json.tasks(core.state)["tasks"])]


async def test_read_endpoints_take_a_trailing_slash(client):
    """libprocess drops it; the Mesos CLI's `framework list` asks for `/master/frameworks/`."""
    c, core, log = client
    for name in ("frameworks", "slaves", "tasks"):
        assert await (await c.get(f"/master/{name}/")).read() == await (await c.get(f"/master/{name}")).read()
        assert (await c.get(f"/{name}/")).status == 200


async def test_readers_see_only_what_their_acls_allow(tmp_path: Path):
    log = busy_state()
    core = FakeCore(tmp_path, log.state)
    core.config = dataclasses.replace(core.config, acls=acls(permissive=False))  # nobody may view anything
    async with TestClient(TestServer(build_app(core))) as c:
        assert (await (await c.get("/frameworks")).json())["frameworks"] == []
        assert (await (await c.get("/tasks")).json())["tasks"] == []
        assert (await (await c.get("/roles")).json())["roles"] == []
        summary = await (await c.get("/state-summary")).json()
        assert summary["frameworks"] == [] and all(a["framework_ids"] == [] for a in summary["slaves"])
        assert len((await (await c.get("/slaves")).json())["slaves"]) == 3 - 1  # agents: shown to every reader


async def test_followers_redirect_to_the_leader(client):
    c, core, log = client
    core.serving = False
    for name in ("slaves", "tasks", "state-summary"):
        r = await c.get(f"/master/{name}?limit=1", allow_redirects=False)
        assert r.status == 307 and r.headers["Location"] == f"//{core.config.http}/master/{name}?limit=1"




# ---- completed frameworks (torn down, with their completed tasks) -------------------------------------------


def torn_down() -> Log:
    """busy_state, then F1 is torn down: t0 had finished, t2 (unreachable) is killed by the removal."""
    log = busy_state()
    log(ev.FrameworkRemoved(framework_id="F1", reason="teardown"), ts=300.0)
    return log


def test_a_torn_down_framework_is_a_completed_framework_with_its_completed_tasks():
    s = torn_down().state
    assert "F1" not in s.frameworks and list(s.completed_frameworks) == ["F1"]
    full = render_state(s)
    assert [f["id"] for f in full["frameworks"]] == ["F2"]
    (done,) = full["completed_frameworks"]
    assert FRAMEWORK_FIELDS <= set(done)
    assert done["id"] == "F1" and done["name"] == "fw" and done["user"] == "u" and done["role"] == "*"
    assert (done["active"], done["connected"], done["unregistered_time"]) == (False, False, 300.0)
    assert done["tasks"] == done["offers"] == done["unreachable_tasks"] == []
    assert done["used_resources"]["cpus"] == done["offered_resources"]["cpus"] == 0.0
    assert {t["id"]: t["state"] for t in done["completed_tasks"]} == {"t0": "TASK_FINISHED", "t2": "TASK_KILLED"}
    assert state_json.frameworks(s) == {"frameworks": full["frameworks"],
                                        "completed_frameworks": full["completed_frameworks"],
                                        "unregistered_frameworks": []}
    assert state_json.frameworks(s, "F1")["completed_frameworks"] == [done]
    assert {t["id"] for t in state_json.tasks(s, framework_id="F1")["tasks"]} == {"t0", "t2"}
    # /state-summary shows registered frameworks only, as Mesos does.
    assert [f["id"] for f in state_json.state_summary(s, http="m1:5050", version=VERSION)["frameworks"]] == ["F2"]


def test_completed_frameworks_are_bounded_oldest_first_and_round_trip_snapshots():
    log = base()
    n = MAX_COMPLETED_FRAMEWORK_RECORDS + 5
    for i in range(n):
        log(ev.FrameworkSubscribed(framework_id=f"F{i}", info=info(f"fw{i}")))
        log(ev.FrameworkRemoved(framework_id=f"F{i}", reason="teardown"))
    s = log.state
    assert list(s.completed_frameworks) == [f"F{i}" for i in range(5, n)]
    assert len(render_state(s)["completed_frameworks"]) == MAX_COMPLETED_FRAMEWORK_RECORDS
    back = decode_snapshot(encode_snapshot(s))
    assert back.completed_frameworks == s.completed_frameworks and state_hash(back) == state_hash(s)
    # A snapshot written before the field existed (no such key) decodes, with no records; a state without records
    # encodes (and hashes) as before.
    raw = msgspec.msgpack.decode(encode_snapshot(s))
    del raw["state"]["completed_frameworks"]
    old = decode_snapshot(msgspec.msgpack.encode(raw))
    assert old.completed_frameworks == {} and old.removed_frameworks == s.removed_frameworks
    assert b"completed_frameworks" not in encode_snapshot(busy_state().state)


def test_completed_frameworks_are_shown_to_whoever_may_see_them():
    s = torn_down().state
    hidden = Viewer("web", acls(view_frameworks=[rule(["web"], "NONE", "users")]))
    seen = visible_state(s, hidden)
    assert seen.completed_frameworks == {} and not [t for t in seen.completed_tasks if t.framework_id == "F1"]
    allowed = Viewer("web", acls(view_frameworks=[rule(["web"], ["u"], "users"), rule(["web"], "NONE", "users")],
                                 view_tasks=[rule(["web"], "ANY", "users")]))
    seen = visible_state(s, allowed)
    assert not allowed.sees_all and list(seen.completed_frameworks) == ["F1"]
    assert {t.task_id for t in seen.completed_tasks if t.framework_id == "F1"} == {"t0", "t2"}


async def test_completed_frameworks_over_http(tmp_path: Path):
    log = torn_down()
    core = FakeCore(tmp_path, log.state)
    async with TestClient(TestServer(build_app(core))) as c:
        for path in ("/master/state", "/frameworks"):
            body = await (await c.get(path)).json()
            assert [f["id"] for f in body["completed_frameworks"]] == ["F1"], path


def test_task_statuses_carry_their_container_status():
    """As Mesos's /master/state (and the v1 API's TaskStatus): the container the agent reported, when it did."""
    from eventstore.vocab import TaskState
    from master.state import Task

    with_id = ev.TaskStatus(state=TaskState.RUNNING, source="SOURCE_EXECUTOR", timestamp=1.0, container_id="c-1")
    without = ev.TaskStatus(state=TaskState.STARTING, source="SOURCE_EXECUTOR", timestamp=0.5)
    spec = ev.TaskSpec(task_id="t", name="t", agent_id="A1", resources=[], command=ev.CommandSpec())
    out = state_json._task(Task(framework_id="F", spec=spec, launched_at=0.0, state=TaskState.RUNNING,
                                statuses=[without, with_id]))
    assert "container_status" not in out["statuses"][0]
    assert out["statuses"][1]["container_status"] == {"container_id": {"value": "c-1"}}
