"""Output hygiene of `drover audit` and `drover replay`: what frameworks and agents name things is data, never
instructions to a spreadsheet (CSV cells that start like a formula) or to a terminal (control characters,
ANSI escape sequences)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drover import cli
from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master.api.audit import add_audit_routes
from replay import audit
from replay.audit import _csv_safe
from replay.state_view import printable, printable_lines

C = "c0ffee"
A, S0 = f"{C}-0000", f"{C}-S0"
T0 = 1_800_000_000.0

RED = "\x1b[31mred\x1b[0m"  # an ANSI colour
TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
WIPE = "\x1b[2J"  # clears the screen
CSI = "\x9b31m"  # the one-byte (C1) form of ESC [
BIDI = "\u202eevil"  # right-to-left override

# A terminal must never receive these; a table keeps its newlines only between rows.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def res(text: str) -> list:
    return Resources.parse(text).to_list()


def hostile_store(path: Path) -> Path:
    """Names, roles, task ids and messages as a hostile framework or agent could send them (they all pass the
    event rules: names and messages are free text; ids and roles only exclude whitespace, '/' and controls)."""
    envs: list[ev.Envelope] = []

    def add(dt: float, *events: ev.Event) -> None:
        for e in events:
            envs.append(ev.Envelope(index=len(envs) + 1, term=1, ts=T0 + dt, event=e))

    spec = ev.TaskSpec(task_id="=1+2", name=f"{TITLE}name", agent_id=S0, resources=res("cpus:1;mem:32"),
                       command=ev.CommandSpec(value="true"), role="@evil")

    def status(state: str, uuid: str, message: str) -> ev.StatusUpdated:
        return ev.StatusUpdated(framework_id=A, task_id="=1+2", agent_id=S0,
                                status=ev.TaskStatus(state=state, source="SOURCE_EXECUTOR", timestamp=T0,
                                                     uuid=uuid, message=message))

    add(0, ev.ClusterCreated(cluster_id=C), ev.LeaderElected(leader_id="m1", http="127.0.0.1:5050", term=1))
    add(1, ev.AgentRegistered(agent_id=S0, hostname=f"{WIPE}host{BIDI}", http="127.0.0.1:5051",
                              resources=res("cpus:4;mem:1024")))
    add(2, ev.FrameworkSubscribed(framework_id=A, info=ev.FrameworkInfo(
        name=f'=HYPERLINK("http://x.example/","click"){RED}', user="u", roles=["@evil", "+r"])))
    add(3, ev.OffersMade(offers=[ev.OfferRecord(offer_id=f"{C}-O0", framework_id=A, agent_id=S0, role="@evil",
                                                resources=res("cpus:2;mem:512"))], trigger="framework_added"))
    add(4, ev.OffersAccepted(framework_id=A, offer_ids=[f"{C}-O0"], tasks=[spec], refuse_seconds=0.0,
                             rejected=[ev.Rejection(task_id="@bad", state="TASK_ERROR", reason="REASON_TASK_INVALID",
                                                    message="@SUM(A1)")]))
    add(5, status("TASK_STARTING", "u1", "-2+3"), status("TASK_RUNNING", "u2", "\tTAB"),
        status("TASK_RUNNING", "u3", "\rCR"), status("TASK_RUNNING", "u4", f"{RED} {CSI} line\nbreak"))
    add(6, ev.OffersMade(offers=[ev.OfferRecord(offer_id=f"{C}-O1", framework_id=A, agent_id=S0, role="+r",
                                                resources=res("cpus:1"))], trigger="periodic"))
    # The next leader's clock is 1.5 s behind: the dropped offer's latency is negative (a number, not a formula).
    add(4.5, ev.LeaderElected(leader_id="m2", http="127.0.0.1:5052", term=2))
    store = EventStore(path, create=True)
    store.append(envs)
    store.close()
    return path


@pytest.fixture
def store_path(tmp_path) -> Path:
    return hostile_store(tmp_path / "events.sqlite")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- the helpers ----------------------------------------------------------------------------------------------


def test_printable():
    assert printable("plain text, é, 日本, -1.5") == "plain text, é, 日本, -1.5"
    assert printable(RED) == "\\x1b[31mred\\x1b[0m"
    assert printable("a\nb\tc\rd\x00\x7f" + CSI + BIDI) == "a\\nb\\tc\\rd\\x00\\x7f\\x9b31m\\u202eevil"
    assert printable(printable(RED + TITLE)) == printable(RED + TITLE)  # what it writes is printable
    assert printable_lines(f"one {RED}\ntwo\x07") == "one \\x1b[31mred\\x1b[0m\ntwo\\x07"


@pytest.mark.parametrize("cell, shown", [
    ("=1+2", "'=1+2"), ("+r", "'+r"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tTAB", "'\tTAB"),
    ("\rCR", "'\rCR"), ("-", "'-"), ("-inf", "'-inf"), ("-1.5e3x", "'-1.5e3x"),
    ("-1.5", "-1.5"), ("+3", "+3"), ("-1e-05", "-1e-05"), ("-.5", "-.5"), ("12", "12"), ("", ""),
    ("cpus:1;mem:32", "cpus:1;mem:32"), ("a=b", "a=b"),
])
def test_csv_cells_that_start_like_a_formula(cell, shown):
    assert _csv_safe(cell) == shown


# ---- drover audit -------------------------------------------------------------------------------------------------


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_audit_csv_neutralises_formulas(store_path, capsys):
    outputs = {}
    for kind in audit.QUERIES:
        code, out, _ = run(capsys, "audit", kind, "--store", str(store_path), "--format", "csv")
        assert code == 0
        outputs[kind] = csv_rows(out)
        for row in outputs[kind]:
            for value in row.values():  # every cell: text as text, numbers as numbers
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")) or re.fullmatch(r"-[\d.e-]+", value)
    (fw,) = outputs["frameworks"]
    assert fw["name"] == f"'=HYPERLINK(\"http://x.example/\",\"click\"){RED}" and fw["roles"] == "'@evil,+r"
    tasks = outputs["tasks"]
    assert [r["task_id"] for r in tasks] == ["'=1+2"] * 4 + ["'@bad"]
    assert [r["status_message"] for r in tasks] == ["'-2+3", "'\tTAB", "'\rCR", f"{RED} {CSI} line\nbreak",
                                                    "'@SUM(A1)"]
    assert {r["role"] for r in tasks} == {"'@evil"}
    offers = {r["offer_id"]: r for r in outputs["offers"]}
    assert offers[f"{C}-O0"]["role"] == "'@evil" and offers[f"{C}-O1"]["role"] == "'+r"
    assert (offers[f"{C}-O1"]["outcome"], offers[f"{C}-O1"]["latency"]) == ("dropped:leader_change", "-1.5")
    # JSON is unchanged: the values as they were sent.
    code, out, _ = run(capsys, "audit", "tasks", "--store", str(store_path), "--format", "json")
    assert json.loads(out)[0]["task_id"] == "=1+2" and json.loads(out)[0]["statuses"][3]["message"].startswith(RED)


def test_audit_table_escapes_control_characters(store_path, capsys):
    for kind in audit.QUERIES:
        code, out, _ = run(capsys, "audit", kind, "--store", str(store_path))
        assert code == 0
        assert not CONTROL.search(out), (kind, out)
        lines = out.splitlines()
        header = lines[1]
        starts = [m.start() for m in re.finditer(r"(?<=  )\S", header)]
        for line in lines[2:]:  # still aligned: each column starts where its header does
            assert all(line[s - 2:s] == "  " for s in starts if s < len(line)), (kind, line)
    code, out, _ = run(capsys, "audit", "frameworks", "--store", str(store_path))
    # Shown escaped; and as is otherwise (a table is not a spreadsheet).
    assert '=HYPERLINK("http://x.example/","click")\\x1b[31mred\\x1b[0m' in out


async def test_audit_table_over_http(store_path):
    app = web.Application()
    add_audit_routes(app, store_path)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for kind in audit.QUERIES:
            r = await client.get(f"/api/drover/audit/{kind}", params={"format": "table"})
            assert r.status == 200 and not CONTROL.search(await r.text())
        r = await client.get("/api/drover/audit/tasks", params={"format": "csv"})
        assert csv_rows(await r.text())[0]["task_id"] == "'=1+2"
    finally:
        await client.close()


def test_audit_table_of_a_message(capsys):
    """The tasks table has no message column; a record rendered with one shows it escaped."""
    records = [{"framework_id": A, "task_id": "t", "agent_id": S0, "role": "*", "resources": "cpus:1",
                "origin": "accept", "offer_ids": [], "launched_at": None, "launched_index": 1, "state": RED,
                "ended_at": None, "kill_requested_at": None, "statuses": []}]
    table = audit.render("tasks", records, "table", C)
    assert "\\x1b[31mred\\x1b[0m" in table and not CONTROL.search(table)


# ---- drover replay --------------------------------------------------------------------------------------------------


def test_replay_text_escapes_control_characters(store_path, tmp_path, capsys):
    code, out, _ = run(capsys, "replay", "state", "--store", str(store_path))
    assert code == 0 and not CONTROL.search(out), out
    assert "\\x1b[2Jhost\\u202eevil" in out  # the agent's hostname, escaped

    code, out, _ = run(capsys, "replay", "diff", "--store", str(store_path), "1", "last")
    assert code == 0 and not CONTROL.search(out), out
    assert "\\x1b[2Jhost" in out

    code, out, _ = run(capsys, "replay", "state", "--store", str(store_path), "--json")
    assert code == 0 and not CONTROL.search(out)
    state = json.loads(out)  # the same values, with \u escapes
    (task,) = [t for fw in state["tasks"].values() for t in fw.values()]
    assert task["spec"]["name"] == f"{TITLE}name" and task["statuses"][-1]["message"].startswith(f"{RED} {CSI}")

    # Two stores that differ in a hostile payload: bisect prints both payloads.
    other = tmp_path / "other.sqlite"
    store = EventStore(store_path)
    rows = list(store.db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx"))
    store.close()
    copy = EventStore(other, create=True)
    changed = [(i, t, ts, ty, p.replace(b"host", b"h\x1b[5mst") if i == 3 else p) for i, t, ts, ty, p in rows]
    copy.db.executemany("INSERT INTO events(idx, term, ts, type, payload) VALUES (?,?,?,?,?)", changed)
    copy.db.commit()
    copy.close()
    code, out, _ = run(capsys, "replay", "bisect", "--store", str(store_path), "--store-b", str(other))
    assert code == 1 and "diverge at index 3" in out
    assert not CONTROL.search(out), out
