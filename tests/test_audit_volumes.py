"""`drover audit reservations` and `drover audit volumes`: who reserved this disk, when, and which tasks used the
volume (replay/audit.py), over a log made by the real deciders and fold (the helpers of tests/test_volumes.py),
with a few hand-made events: an operation the fold skips, and a legacy ACCEPT with reserved/unreserved lists."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drover import cli
from eventstore import events as ev
from eventstore.resources import Persistence, Resources
from eventstore.store import EventStore
from master.api.audit import add_audit_routes
from replay import audit
from replay.audit import Filters, iso
from replay.reader import FoldError
from tests.test_volumes import Log, create, destroy, disk, launch, operator, reserve, unreserve, volume


class RecordedLog(Log):
    """tests/test_volumes.py's log (events decided by the real deciders, folded at once), keeping its envelopes."""

    def __init__(self) -> None:
        self.envs: list[ev.Envelope] = []
        super().__init__()

    def __call__(self, event: ev.Event) -> None:
        super().__call__(event)
        self.envs.append(ev.Envelope(index=self.state.index, term=1, ts=self.ts, event=event))

    def status(self, tid: str, state: str) -> int:
        self(ev.StatusUpdated(framework_id="DB", task_id=tid, agent_id="A1", status=ev.TaskStatus(
            state=state, source="SOURCE_AGENT", timestamp=self.ts)))
        return self.state.index

    def revive(self) -> None:
        self(ev.RolesRevived(framework_id="DB", roles=[]))

    def write(self, path: Path) -> Path:
        store = EventStore(path, create=True)
        store.append(self.envs)
        store.close()
        return path


def res(text: str) -> list:
    return Resources.parse(text).to_list()


def scenario() -> tuple[RecordedLog, dict[str, int]]:
    """An operator reserves disk and creates pv1; framework DB (principal dbp) reserves more and creates pv2 in the
    accept that launches t1 on it; t1 finishes; t2 (read-only, at its own path) and t3 (on pv1) use the volumes;
    a skipped operator operation and a skipped framework operation; DB destroys pv2 and unreserves its disk, then
    creates pv2 again; the operator destroys pv1; a legacy ACCEPT with reserved/unreserved lists."""
    log, ix = RecordedLog(), {}
    assert operator(log, "RESERVE_RESOURCES", disk(200)).reply == 202
    ix["op_reserve"] = log.state.index
    assert operator(log, "CREATE_VOLUMES", volume("pv1", principal="ops")).reply == 202
    ix["op_create"] = log.state.index
    log.subscribe("DB", "db", principal="dbp")
    log.accept("DB", log.offers()["DB"], reserve(disk(50)), create(volume("pv2", 50, principal="dbp")),
               launch("t1", volume("pv2", 50)))
    ix["fw_create"] = log.state.index
    ix["t1_end"] = log.status("t1", "TASK_FINISHED")
    log.revive()
    log.accept("DB", log.offers()["DB"], launch("t2", volume("pv2", 50, path="snap", mode="RO")),
               launch("t3", volume("pv1")))
    ix["t2_launch"] = log.state.index
    log.status("t2", "TASK_RUNNING")
    ix["t2_end"] = log.status("t2", "TASK_FAILED")

    # Never decided, so hand-made: an operator operation on resources that are not free (all offered) ...
    log.revive()
    offer = log.offers()["DB"]
    log(ev.AgentOperationsApplied(agent_id="A1", call="RESERVE_RESOURCES", principal="ops", operations=[
        ev.ResourceOperation("RESERVE", res("disk(db):5000"))]))
    ix["skipped_op"] = log.state.index
    # ... and an accept whose first operation destroys a volume its offer does not hold; the second applies.
    nope = Resources(r for r in Resources(offer.resources) if r.persistence is not None).to_list()[0]
    nope = msgspec.structs.replace(nope, persistence=Persistence(id="nope"))
    log(ev.OffersAccepted(framework_id="DB", offer_ids=[offer.offer_id], tasks=[], refuse_seconds=0.0,
                          operations=[ev.ResourceOperation("DESTROY", [nope]),
                                      ev.ResourceOperation("RESERVE", res("cpus(db):1"))]))
    ix["half_skipped"] = log.state.index

    log.revive()
    log.accept("DB", log.offers()["DB"], destroy(volume("pv2", 50)), unreserve(disk(50)))
    ix["fw_destroy"] = log.state.index
    log.revive()
    log.accept("DB", log.offers()["DB"], reserve(disk(30)), create(volume("pv2", 30, path="again", principal="dbp")))
    ix["fw_recreate"] = log.state.index
    ix["t3_end"] = log.status("t3", "TASK_KILLED")
    assert operator(log, "DESTROY_VOLUMES", volume("pv1", principal="ops")).reply == 202
    ix["op_destroy"] = log.state.index

    # A log written before `operations`: the net change of reserved/unreserved, all or nothing.
    log.revive()
    offer = log.offers()["DB"]
    log(ev.OffersAccepted(framework_id="DB", offer_ids=[offer.offer_id], tasks=[], refuse_seconds=0.0,
                          reserved=res("mem(db):64"), unreserved=res("cpus(db):1")))
    ix["legacy"] = log.state.index
    return log, ix


@pytest.fixture(scope="module")
def built() -> tuple[RecordedLog, dict[str, int]]:
    return scenario()


def q(log: RecordedLog, kind: str, **filters) -> list[dict]:
    return audit.query_envelopes(log.envs, kind, Filters.parse(**filters))


FW = "framework DB (principal dbp)"


def test_reservations_are_the_operations_the_fold_applied(built):
    log, ix = built
    rows = [(r["index"], r["kind"], r["resources"], r["actor"], r["via"]) for r in q(log, "reservations")]
    assert rows == [
        (ix["op_reserve"], "RESERVE", "disk(db):200", "operator ops", "RESERVE_RESOURCES"),
        (ix["op_create"], "CREATE", "disk(db)[pv1:data]:100", "operator ops", "CREATE_VOLUMES"),
        (ix["fw_create"], "RESERVE", "disk(db):50", FW, "ACCEPT"),
        (ix["fw_create"], "CREATE", "disk(db)[pv2:data]:50", FW, "ACCEPT"),
        # the skipped operator RESERVE and the skipped DESTROY of "nope" are not there
        (ix["half_skipped"], "RESERVE", "cpus(db):1", FW, "ACCEPT"),
        (ix["fw_destroy"], "DESTROY", "disk(db)[pv2:data]:50", FW, "ACCEPT"),
        (ix["fw_destroy"], "UNRESERVE", "disk(db):50", FW, "ACCEPT"),
        (ix["fw_recreate"], "RESERVE", "disk(db):30", FW, "ACCEPT"),
        (ix["fw_recreate"], "CREATE", "disk(db)[pv2:again]:30", FW, "ACCEPT"),
        (ix["op_destroy"], "DESTROY", "disk(db)[pv1:data]:100", "operator ops", "DESTROY_VOLUMES"),
        (ix["legacy"], "RESERVE", "mem(db):64", FW, "ACCEPT (reserved/unreserved)"),
        (ix["legacy"], "UNRESERVE", "cpus(db):1", FW, "ACCEPT (reserved/unreserved)"),
    ]
    first = q(log, "reservations")[0]
    assert first == {"index": ix["op_reserve"], "time": iso(log.envs[ix["op_reserve"] - 1].ts), "agent_id": "A1",
                     "role": "db", "kind": "RESERVE", "resources": "disk(db):200", "actor": "operator ops",
                     "actor_type": "operator", "framework_id": None, "principal": "ops", "via": "RESERVE_RESOURCES"}
    fw = [r for r in q(log, "reservations") if r["actor_type"] == "framework"][0]
    assert (fw["framework_id"], fw["principal"]) == ("DB", "dbp")
    # What the fold holds at the end is what the rows add up to.
    assert Resources(log.state.agents["A1"].dynamic).format() == "disk(db):200;disk(db)[pv2:again]:30;mem(db):64"


def test_volumes_one_per_incarnation_with_the_tasks_that_used_it(built):
    log, ix = built
    ts = {k: iso(log.envs[i - 1].ts) for k, i in ix.items()}
    vols = q(log, "volumes")
    assert [(v["persistence_id"], v["incarnation"], v["status"]) for v in vols] == [
        ("pv1", 1, "destroyed"), ("pv2", 1, "destroyed"), ("pv2", 2, "live")]
    pv1, pv2, pv2b = vols
    assert {k: pv2[k] for k in ("agent_id", "role", "size", "container_path", "mode", "shared", "principal",
                                "created_index", "created_at", "created_by", "destroyed_index", "destroyed_at",
                                "destroyed_by")} == {
        "agent_id": "A1", "role": "db", "size": 50.0, "container_path": "data", "mode": "RW", "shared": False,
        "principal": "dbp", "created_index": ix["fw_create"], "created_at": ts["fw_create"], "created_by": FW,
        "destroyed_index": ix["fw_destroy"], "destroyed_at": ts["fw_destroy"], "destroyed_by": FW}
    assert pv2["tasks"] == [
        {"framework_id": "DB", "task_id": "t1", "launched_at": ts["fw_create"], "launched_index": ix["fw_create"],
         "container_path": "data", "mode": "RW", "state": "TASK_FINISHED", "ended_at": ts["t1_end"]},
        {"framework_id": "DB", "task_id": "t2", "launched_at": ts["t2_launch"], "launched_index": ix["t2_launch"],
         "container_path": "snap", "mode": "RO", "state": "TASK_FAILED", "ended_at": ts["t2_end"]}]
    assert (pv1["created_by"], pv1["destroyed_by"], pv1["destroyed_index"]) == \
        ("operator ops", "operator ops", ix["op_destroy"])
    assert [(t["task_id"], t["state"], t["ended_at"]) for t in pv1["tasks"]] == [("t3", "TASK_KILLED", ts["t3_end"])]
    assert (pv2b["size"], pv2b["container_path"], pv2b["created_index"], pv2b["tasks"], pv2b["destroyed_at"]) == \
        (30.0, "again", ix["fw_recreate"], [], None)
    # The live incarnations are the volumes the fold holds.
    held = {(aid, role, pid) for aid, a in log.state.agents.items()
            for role, pid in Resources(a.dynamic).persistence_ids()}
    assert held == {(v["agent_id"], v["role"], v["persistence_id"]) for v in vols if v["status"] == "live"}


def test_a_running_task_is_shown_running():
    log, _ = scenario()
    log.revive()
    log.accept("DB", log.offers()["DB"], launch("t4", volume("pv2", 30, path="again")))
    log.status("t4", "TASK_RUNNING")
    (pv2b,) = q(log, "volumes", volume="pv2", since=iso(log.ts))
    assert [(t["task_id"], t["state"], t["ended_at"]) for t in pv2b["tasks"]] == [("t4", "TASK_RUNNING", None)]


def test_filters(built):
    log, ix = built
    assert [v["incarnation"] for v in q(log, "volumes", volume="pv2")] == [1, 2]
    assert [(r["kind"], r["index"]) for r in q(log, "reservations", volume="pv2")] == [
        ("CREATE", ix["fw_create"]), ("DESTROY", ix["fw_destroy"]), ("CREATE", ix["fw_recreate"])]
    assert {r["actor_type"] for r in q(log, "reservations", framework="DB")} == {"framework"}
    assert q(log, "reservations", framework="OTHER") == [] and q(log, "volumes", role="web") == []
    assert [r["kind"] for r in q(log, "reservations", role="db", until=iso(log.envs[ix["op_create"] - 1].ts))] == [
        "RESERVE", "CREATE"]
    assert q(log, "volumes", agent="A2") == [] and len(q(log, "volumes", agent="A1")) == 3
    # A volume is kept while it lived in the window; a framework, when it made, destroyed or used it.
    after = iso(log.envs[ix["fw_destroy"] - 1].ts + 0.5)
    assert [(v["persistence_id"], v["incarnation"]) for v in q(log, "volumes", since=after)] == [
        ("pv1", 1), ("pv2", 2)]
    assert len(q(log, "volumes", framework="DB")) == 3  # pv1 through t3
    with pytest.raises(audit.AuditError) as e:
        q(log, "tasks", volume="pv1")
    assert e.value.param == "volume"


def test_formats(built, tmp_path):
    log, ix = built
    for kind in ("reservations", "volumes"):
        records = q(log, kind)
        assert json.loads(audit.render(kind, records, "json", "c")) == records
    vols = q(log, "volumes")
    rows = list(csv.DictReader(io.StringIO(audit.render("volumes", vols, "csv", "c"))))
    # one row per task that used a volume; a volume no task used has one row
    assert [(r["persistence_id"], r["incarnation"], r["task_id"], r["task_state"], r["task_mode"]) for r in rows] == [
        ("pv1", "1", "t3", "TASK_KILLED", "RW"), ("pv2", "1", "t1", "TASK_FINISHED", "RW"),
        ("pv2", "1", "t2", "TASK_FAILED", "RO"), ("pv2", "2", "", "", "")]
    table = audit.render("volumes", vols, "table", "c").splitlines()
    assert table[0] == "# cluster c (ids shown without the 'c-' prefix); 3 volumes"
    assert table[1].split()[:5] == ["AGENT", "ROLE", "VOLUME", "INC", "SIZE"]
    assert table[3].split()[:6] == ["A1", "db", "pv2", "1", "50", "data"]
    assert table[3].endswith("DB/t1 FINISHED, DB/t2 FAILED") and " live " in table[4]
    table = audit.render("reservations", q(log, "reservations"), "table", "c").splitlines()
    assert table[1].split() == ["INDEX", "TIME", "AGENT", "ROLE", "KIND", "RESOURCES", "ACTOR", "VIA"]
    assert table[3].split()[4:] == ["CREATE", "disk(db)[pv1:data]:100", "operator", "ops", "CREATE_VOLUMES"]
    rows = list(csv.DictReader(io.StringIO(audit.render("reservations", q(log, "reservations"), "csv", "c"))))
    assert rows[2]["framework_id"] == "DB" and rows[2]["principal"] == "dbp" and rows[0]["framework_id"] == ""


def test_an_unauthenticated_operator_and_a_framework_without_a_principal():
    log = RecordedLog()
    operator(log, "RESERVE_RESOURCES", disk(100), principal=None)
    log.subscribe("DB", "db")
    log.accept("DB", log.offers()["DB"], create(volume("pv1")))
    assert [r["actor"] for r in q(log, "reservations")] == ["operator (unauthenticated)", "framework DB (no principal)"]


def test_the_audit_stops_when_its_reading_of_the_operations_disagrees_with_the_fold(built, monkeypatch):
    """The audit takes the applied operations from the fold's rule and checks it against what the fold did: a fold
    that applied something else (forced here) fails the query naming the index, as a fold error does."""
    log, ix = built
    monkeypatch.setattr(audit, "conversion", lambda kind, res: (Resources(), Resources()))
    with pytest.raises(FoldError) as e:
        q(log, "reservations")
    assert e.value.index == ix["op_reserve"] and "does not match the fold's" in str(e.value)
    assert q(log, "tasks")  # the other queries do not follow operations


# ---- CLI and HTTP --------------------------------------------------------------------------------


@pytest.fixture
def store_path(built, tmp_path) -> Path:
    return built[0].write(tmp_path / "events.sqlite")


def test_cli(store_path, capsys):
    assert cli.main(["audit", "volumes", "--store", str(store_path), "--volume", "pv2", "--format", "json"]) == 0
    assert [v["incarnation"] for v in json.loads(capsys.readouterr().out)] == [1, 2]
    assert cli.main(["audit", "reservations", "--store", str(store_path), "--framework", "DB"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# cluster c (ids shown without the 'c-' prefix); 9 reservations"
    assert cli.main(["audit", "offers", "--store", str(store_path), "--volume", "pv1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["drover audit: error: --volume: only the reservations and volumes queries take a volume filter"]


async def test_http(store_path):
    app = web.Application()
    add_audit_routes(app, store_path)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        r = await client.get("/api/drover/audit/volumes", params={"volume": "pv1"})
        assert r.status == 200 and [v["destroyed_by"] for v in await r.json()] == ["operator ops"]
        r = await client.get("/api/drover/audit/reservations", params={"format": "csv", "framework": "DB"})
        assert r.status == 200 and r.content_type == "text/csv"
        assert len(list(csv.DictReader(io.StringIO(await r.text())))) == 9
        r = await client.get("/api/drover/audit/tasks", params={"volume": "pv1"})
        assert r.status == 400 and "parameter 'volume'" in await r.text()
    finally:
        await client.close()


async def test_http_needs_the_same_authorization_as_the_other_queries(store_path):
    app = web.Application()
    add_audit_routes(app, store_path, lambda request: False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for kind in ("reservations", "volumes"):
            r = await client.get(f"/api/drover/audit/{kind}")
            assert r.status == 403
    finally:
        await client.close()
