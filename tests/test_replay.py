"""`drover replay` (state, diff, bisect, verify) over synthetic stores (unit and property tests) and over the
stores of a real 3-replica run (integration: one cluster for the module)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drover.cli import build_parser
from drover.errors import UsageError
from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master.allocation import decide_offers
from master.allocator import AllocatorConfig
from master.state import State, apply, encode_snapshot, state_hash
from replay.bisect import bisect
from replay.diff import diff_states
from replay.reader import iter_envelopes, open_store, state_at
from replay.verify import verify
from tests.cluster import run_framework, running_cluster
from tests.test_allocator import RecordingWorld, history

REPO = Path(__file__).resolve().parent.parent


# ---- helpers ---------------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    """`drover replay ARGV` in-process (as drover.cli.main runs it, minus logging setup)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(["replay", *map(str, argv)])
            rc = args.run(args)
        except UsageError as e:
            print(f"drover replay: error: {e}", file=sys.stderr)
            rc = 2
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def drover(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drover.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def write_store(path: Path, log: list[ev.Envelope], snapshot_every: int | None = None) -> list[str]:
    """Write envelopes (and, every few events, a snapshot with its hash) as a replica would;
    return the state hash after each index."""
    store = EventStore(path, create=True)
    store.append(log)
    state = State()
    hashes = []
    for env in log:
        apply(state, env)
        hashes.append(state_hash(state))
        if snapshot_every and env.index % snapshot_every == 0:
            store.write_snapshot(env.index, hashes[-1], encode_snapshot(state))
    store.close()
    return hashes


def copy_store(src: Path, dst: Path) -> Path:
    """A consistent copy of a (possibly live) store, through SQLite's backup API, read-only on the source."""
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    d = sqlite3.connect(dst)
    s.backup(d)
    s.close()
    d.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    d.close()
    return dst


def rows_of(path: Path) -> list[tuple]:
    store = open_store(path)
    try:
        return store.db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx").fetchall()
    finally:
        store.close()


def files_digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def no_traceback(err: str) -> None:
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 1, err


CID = "c0ffee00-0000-4000-8000-000000000000"
TASK = Resources.parse("cpus:0.1;mem:32").to_list()


def typical_log(n_events: int, agents: int = 2, tasks_per_framework: int = 3) -> tuple[list[ev.Envelope], State]:
    """A history shaped like `drover execute` runs on a `drover local` cluster, through the real fold and
    allocator: frameworks subscribe, get offers (the decision recorded as the leader records it), launch a
    few tasks, decline the rest; every task goes STARTING, RUNNING, FINISHED, each update acknowledged."""
    state, log = State(), []
    ts = 1_795_600_000.0

    def emit(event) -> None:
        env = ev.Envelope(index=state.index + 1, term=1, ts=ts, event=event)
        apply(state, env)
        log.append(env)

    emit(ev.LeaderElected(leader_id="127.0.0.1:7550", http="127.0.0.1:7451", term=1,
                          config=AllocatorConfig().to_record()))
    emit(ev.ClusterCreated(cluster_id=CID))
    for i in range(agents):
        emit(ev.AgentRegistered(agent_id=f"{CID}-S{i}", hostname=f"a{i}.local", http=f"127.0.0.1:{7461 + i}",
                                resources=Resources.parse("cpus:2;mem:2048;disk:8192;ports:[31000-32000]").to_list()))
    n_fw = n_task = 0
    while state.index < n_events:
        fid = f"{CID}-{n_fw:04d}"
        n_fw += 1
        ts += 0.5
        emit(ev.FrameworkSubscribed(framework_id=fid, info=ev.FrameworkInfo(name="drover-execute", user="root")))
        made = decide_offers(state, ts, "framework_added")
        if made is None:
            break
        emit(made)
        todo, running = tasks_per_framework, []
        for o in made.offers:
            if todo:
                specs = []
                for _ in range(todo):
                    tid = f"drover-execute-{n_task}"
                    n_task += 1
                    specs.append(ev.TaskSpec(task_id=tid, name=tid, agent_id=o.agent_id, resources=TASK,
                                             command=ev.CommandSpec(value="echo hi")))
                    running.append((tid, o.agent_id))
                todo = 0
                emit(ev.OffersAccepted(framework_id=fid, offer_ids=[o.offer_id], tasks=specs, refuse_seconds=1.0))
            else:
                emit(ev.OffersDeclined(framework_id=fid, offer_ids=[o.offer_id], refuse_seconds=60.0))
        for st_ in ("TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"):
            for tid, aid in running:
                ts += 0.01
                uuid = f"{tid}/{st_}"
                emit(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=aid,
                                      status=ev.TaskStatus(state=st_, source="SOURCE_EXECUTOR", timestamp=ts,
                                                           uuid=uuid)))
                emit(ev.StatusAcknowledged(framework_id=fid, task_id=tid, uuid=uuid))
        emit(ev.FrameworkRemoved(framework_id=fid, reason="teardown"))
    return log, state


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, list[ev.Envelope], list[str]]:
    d = tmp_path_factory.mktemp("small")
    log, _ = typical_log(300)
    hashes = write_store(d / "events.sqlite", log, snapshot_every=50)
    return d, log, hashes


# ---- property: random workloads through the fold, into a store, replayed --------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(history, st.integers(min_value=2, max_value=9))
def test_random_workloads_replay_to_the_live_hash_at_every_index_and_verify(tmp_path_factory, ops, every):
    live = RecordingWorld()
    for o in ops:
        live.step(o)
    path = tmp_path_factory.mktemp("prop") / "events.sqlite"
    hashes = write_store(path, live.log, snapshot_every=every)
    assert hashes == live.hashes
    store = open_store(path)
    try:
        assert state_hash(state_at(store, 0)) == state_hash(State())
        for i in range(1, len(live.log) + 1):
            assert state_hash(state_at(store, i)) == live.hashes[i - 1], f"index {i}"
        # From 0 as well (no snapshot), at a few places.
        for i in {1, len(live.log) // 2 or 1, len(live.log)}:
            assert state_hash(state_at(store, i, use_snapshots=False)) == live.hashes[i - 1]
        res = verify(store)
        assert res.ok, res.finding
        assert res.events == len(live.log)
        assert res.snapshots == len(live.log) // every
        assert res.decisions == sum(isinstance(e.event, ev.OffersMade) for e in live.log)
    finally:
        store.close()


# ---- unit: state, diff, bisect, verify on a synthetic store -------------------------------------------------


def test_state_json_matches_the_fold_and_text_summarises(small):
    d, log, hashes = small
    for at in (1, 7, 50, 51, 123, len(log)):
        rc, out, err = cli("state", "--store", d, "--at", at, "--json")
        assert rc == 0, err
        got = json.loads(out)
        assert got["index"] == at and got["state_hash"] == hashes[at - 1]
    rc, out, _ = cli("state", "--store", d / "events.sqlite", "--at", 40)
    assert rc == 0
    assert f"index       40 of {len(log)}" in out
    assert "frameworks:" in out and "agents: 2 (2 connected)" in out and "tasks:" in out


def test_state_json_has_every_field(small):
    d, log, _ = small
    i = next(e.index for e in log if isinstance(e.event, ev.OffersAccepted))
    rc, out, _ = cli("state", "--store", d, "--at", i, "--json")
    got = json.loads(out)
    assert set(State.__struct_fields__) <= set(got)
    fw = next(iter(got["frameworks"].values()))
    assert fw["connected"] is True and fw["active"] is True  # defaults are not omitted


def test_at_time_picks_the_last_event_at_or_before(small):
    d, log, hashes = small
    env = log[100]
    # Just after env.ts (rounded up to the microsecond ISO 8601 can say): the last event with ts <= that.
    t = math.ceil(env.ts * 1e6) / 1e6
    iso = dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()
    when = dt.datetime.fromisoformat(iso).timestamp()
    expected = max(e.index for e in log if e.ts <= when)
    rc, out, err = cli("state", "--store", d, "--at-time", iso.replace("+00:00", "Z"), "--json")
    assert rc == 0, err
    assert json.loads(out)["index"] == expected
    assert json.loads(out)["state_hash"] == hashes[expected - 1]
    # The same instant with an offset, and without one (UTC).
    iso2 = dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert json.loads(cli("state", "--store", d, "--at-time", iso2, "--json")[1])["index"] == expected
    assert json.loads(cli("state", "--store", d, "--at-time", iso.replace("+00:00", ""), "--json")[1])["index"] \
        == expected


def test_diff_between_indexes_and_of_a_state_with_itself(small):
    d, log, _ = small
    sub = next(e.index for e in log if isinstance(e.event, ev.FrameworkSubscribed))
    running = next(e.index for e in log if isinstance(e.event, ev.StatusUpdated)
                   and e.event.status.state == "TASK_RUNNING")
    tid = log[running - 1].event.task_id
    finished = next(e.index for e in log if isinstance(e.event, ev.StatusUpdated) and e.event.task_id == tid
                    and e.event.status.state == "TASK_FINISHED")
    rc, out, _ = cli("diff", "--store", d, sub - 1, finished, "--json")
    assert rc == 0
    got = json.loads(out)
    assert [f["id"] for f in got["frameworks"]["added"]] == [log[sub - 1].event.framework_id]
    assert any(t["task_id"] == tid and t["state"] == "TASK_FINISHED" for t in got["tasks"]["added"])
    rc, out, _ = cli("diff", "--store", d, running, finished, "--json")
    got = json.loads(out)
    assert any(t["task_id"] == tid and t["changes"]["state"] == ["TASK_RUNNING", "TASK_FINISHED"]
               for t in got["tasks"]["changed"])
    rc, text, _ = cli("diff", "--store", d, running, finished)
    assert f"{tid}" in text and "TASK_RUNNING -> TASK_FINISHED" in text
    rc, out, _ = cli("diff", "--store", d, "--store-b", d / "events.sqlite", 77, 77)
    assert rc == 0 and "no differences" in out


def test_diff_sections_cover_offers_filters_weights_quotas_allocations():
    base = State()
    log = []

    def emit(state, event, ts=10.0):
        env = ev.Envelope(index=state.index + 1, term=1, ts=ts, event=event)
        apply(state, env)
        log.append(env)

    emit(base, ev.LeaderElected(leader_id="m1", http="m1:5050", term=1))
    emit(base, ev.ClusterCreated(cluster_id="c"))
    emit(base, ev.AgentRegistered(agent_id="c-S0", hostname="h", http="h:1",
                                  resources=Resources.parse("cpus:4;mem:4096").to_list()))
    emit(base, ev.FrameworkSubscribed(framework_id="c-0000", info=ev.FrameworkInfo(name="f", user="u", roles=["r"])))
    a = State()
    for env in log:
        apply(a, env)
    b = a
    made = decide_offers(b, 10.0, "test")
    emit(b, made)
    a = State()
    for env in log[:4]:
        apply(a, env)
    d = diff_states(a, b)
    assert [o["id"] for o in d["offers"]["added"]] == ["c-O0"]
    assert d["allocations"]["changed"] == [{"role": "r", "a": {}, "b": {"cpus": 4.0, "mem": 4096.0}}]
    emit(b, ev.OffersDeclined(framework_id="c-0000", offer_ids=["c-O0"], refuse_seconds=5.0))
    emit(b, ev.WeightsUpdated(weights={"r": 2.0}))
    emit(b, ev.QuotaUpdated(role="r", guarantees={"cpus": 1.0}))
    emit(b, ev.RolesSuppressed(framework_id="c-0000", roles=["r"]))
    d = diff_states(a, b)
    assert d["offers"]["added"] == [] and len(d["filters"]["added"]) == 1
    assert d["weights"]["changed"] == [{"role": "r", "a": None, "b": 2.0}]
    assert d["quotas"]["changed"][0]["b"]["guarantees"] == {"cpus": 1.0}
    assert d["frameworks"]["changed"][0]["changes"]["suppressed_roles"] == [[], ["r"]]
    assert not d["identical"] and diff_states(b, b)["identical"]


def test_bisect_identical_edited_missing_and_ended(small, tmp_path):
    d, log, _ = small
    src = d / "events.sqlite"
    same = copy_store(src, tmp_path / "same.sqlite")
    a = open_store(src)
    res = bisect(a, open_store(same))
    assert res.identical and res.compared == len(log)
    # An edited payload: another valid event of the same type.
    edited = copy_store(src, tmp_path / "edited.sqlite")
    acks = [e.index for e in log if isinstance(e.event, ev.StatusAcknowledged)]
    db = sqlite3.connect(edited)
    db.execute("UPDATE events SET payload = (SELECT payload FROM events WHERE idx = ?) WHERE idx = ?",
               (acks[3], acks[5]))
    db.commit()
    db.close()
    res = bisect(a, open_store(edited))
    assert (res.kind, res.index, res.fields) == ("diverge", acks[5], ["payload"])
    assert res.differences and res.differences[0].startswith("$.")
    # A row deleted: a gap in one store, every event both hold the same.
    holed = copy_store(src, tmp_path / "holed.sqlite")
    db = sqlite3.connect(holed)
    db.execute("DELETE FROM events WHERE idx = 42")
    db.commit()
    db.close()
    res = bisect(a, open_store(holed))
    assert (res.kind, res.index, res.gaps, res.diverged_at) == ("missing", 42, [(42, "b")], None)
    # One store ends early.
    short = copy_store(src, tmp_path / "short.sqlite")
    db = sqlite3.connect(short)
    db.execute("DELETE FROM events WHERE idx > 200")
    db.execute("DELETE FROM snapshots WHERE idx > 200")
    db.commit()
    db.close()
    res = bisect(open_store(short), a)
    assert (res.kind, res.index) == ("ends", 201)
    rc, out, err = cli("bisect", "--store", short, "--store-b", src)
    assert rc == 1 and "diverge at index 201" in out and "store A ends at index 200" in out
    rc, out, err = cli("bisect", "--store", src, "--store-b", holed)
    assert rc == 1 and "store B is missing index 42" in out and "every event both stores hold is the same" in out


@pytest.mark.parametrize("damage, expect", [
    ("gap", "index 120 is missing"),
    ("undecodable", "index 120: payload does not decode"),
    ("unknown_type", "index 120: payload does not decode: unknown event type"),
    ("decision", "index {made}: re-running the OFFERS_MADE decision"),
    ("type_column", "index 120: the type column says"),
    ("snapshot_hash", "index 100: the snapshot's recorded state hash differs"),
    ("ts_backwards", "index 120: ts goes backwards"),
])
def test_verify_names_the_first_bad_index(small, tmp_path, damage, expect):
    d, log, _ = small
    path = copy_store(d / "events.sqlite", tmp_path / "events.sqlite")
    made = next(e.index for e in log if isinstance(e.event, ev.OffersMade) and e.index > 110)
    db = sqlite3.connect(path)
    if damage == "gap":
        db.execute("DELETE FROM events WHERE idx = 120")
    elif damage == "undecodable":
        db.execute("UPDATE events SET payload = ? WHERE idx = 120", (b'{"type": "STATUS_UPDATED", "task_id": 3}',))
    elif damage == "unknown_type":
        db.execute("UPDATE events SET payload = ? WHERE idx = 120", (b'{"type": "TASK_TELEPORTED"}',))
    elif damage == "decision":
        p = json.loads(db.execute("SELECT payload FROM events WHERE idx = ?", (made,)).fetchone()[0])
        p["offers"][0]["resources"][0]["scalar"] = 0.5
        db.execute("UPDATE events SET payload = ? WHERE idx = ?", (json.dumps(p).encode(), made))
    elif damage == "type_column":
        db.execute("UPDATE events SET type = 'WEIGHTS_UPDATED' WHERE idx = 120")
    elif damage == "snapshot_hash":
        db.execute("UPDATE snapshots SET hash = 'beef' WHERE idx = 100")
    elif damage == "ts_backwards":
        db.execute("UPDATE events SET ts = ts - 100 WHERE idx = 120")
    db.commit()
    db.close()
    rc, out, err = cli("verify", "--store", path)
    assert rc == 1, out
    assert expect.format(made=made) in out, out
    no_traceback(err)
    rc, out, err = cli("verify", "--store", path, "--json")
    got = json.loads(out)
    assert got["ok"] is False and expect.format(made=made) in got["failure"]["message"]


def test_fold_errors_are_reported_with_the_index(tmp_path):
    log = [
        ev.Envelope(index=1, term=1, ts=1.0, event=ev.LeaderElected(leader_id="m1", http="m1:5050", term=1)),
        ev.Envelope(index=2, term=1, ts=2.0, event=ev.AgentRegistered(agent_id="c-S0", hostname="h", http="h:1",
                                                                      resources=TASK)),
        # An agent whose resources name cpus twice, as a scalar and as ranges: the fold raises.
        ev.Envelope(index=3, term=1, ts=3.0, event=ev.AgentRegistered(
            agent_id="c-S1", hostname="h", http="h:1",
            resources=[TASK[0], msgspec.structs.replace(TASK[0], type="RANGES", scalar=0.0, ranges=((1, 2),))])),
    ]
    store = EventStore(tmp_path / "events.sqlite", create=True)
    store.append(log[:2])
    # The commit gate refuses such an event (ev.InvalidEvent), so it is written as a store from an older build
    # or a damaged disk would hold it: raw bytes at index 3.
    bad = msgspec.json.encode(log[2].event)
    with pytest.raises(ev.InvalidEvent):
        ev.encode_event(log[2].event)
    store.db.execute("INSERT INTO events(idx, term, ts, type, payload) VALUES (3, 1, 3.0, 'AGENT_REGISTERED', ?)",
                     (bad,))
    store.db.commit()
    store.close()
    rc, out, err = cli("verify", "--store", tmp_path)
    assert rc == 1 and "index 3" in out and "given as both SCALAR and RANGES" in out, out
    rc, out, err = cli("state", "--store", tmp_path)
    assert rc == 1 and "index 3" in err and "given as both SCALAR and RANGES" in err, err
    no_traceback(err)


def test_commands_do_not_modify_the_store(small, tmp_path):
    d, log, _ = small
    copy = tmp_path / "replica"
    copy.mkdir()
    shutil.copy(d / "events.sqlite", copy / "events.sqlite")
    before = files_digest(copy)
    for argv in (("state", "--store", copy), ("state", "--store", copy, "--at", 5, "--json"),
                 ("diff", "--store", copy, 3, 200), ("bisect", "--store", copy, "--store-b", d),
                 ("verify", "--store", copy)):
        rc, _, err = cli(*argv)
        assert rc == 0, err
    assert files_digest(copy) == before  # no -wal/-shm created either


def test_replay_speed(tmp_path, capsys):
    """Replay from 0 of a `drover execute`-shaped history gives the live state; prints the rates (docs/replay.md
    quotes them). No floor on them: a wall-clock figure measured on a shared CI host is no test result
    (bench/replay.py measures replay against a baseline in the same run)."""
    n = 60_000
    log, live = typical_log(n)
    path = tmp_path / "events.sqlite"
    store = EventStore(path, create=True)
    store.append(log)
    store.close()
    store = open_store(path)
    t0 = time.perf_counter()
    count = sum(1 for _ in iter_envelopes(store))
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = state_at(store, use_snapshots=False)
    replay_s = time.perf_counter() - t0
    folded = State()
    t0 = time.perf_counter()
    for env in log:
        apply(folded, env)
    fold_s = time.perf_counter() - t0
    store.close()
    assert count == len(log) and state_hash(state) == state_hash(live)
    with capsys.disabled():
        print(f"\nreplay speed, {len(log):,} events: read+decode {count / read_s:,.0f}/s; "
              f"fold alone (in memory) {len(log) / fold_s:,.0f}/s; replay from 0 (state_at) "
              f"{len(log) / replay_s:,.0f}/s")


# ---- CLI usage errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["state"], "the following arguments are required: --store"),
    (["state", "--store", "/nonexistent/m1"], "no event store at /nonexistent/m1"),
    (["state", "--store", "{d}", "--at", "100000"], "--at 100000: out of range"),
    (["state", "--store", "{d}", "--at", "-3"], "a log index is >= 0"),
    (["state", "--store", "{d}", "--at", "x"], "expected a log index"),
    (["state", "--store", "{d}", "--at-time", "tuesday"], "not an ISO 8601 time"),
    (["state", "--store", "{d}", "--at-time", "1999-01-01T00:00:00Z"], "no event at or before"),
    (["state", "--store", "{d}", "--at", "3", "--at-time", "2020-01-01"], "not allowed with argument --at"),
    (["diff", "--store", "{d}", "1"], "the following arguments are required: B"),
    (["diff", "--store", "{d}", "1", "100000"], "index B = 100000: out of range"),
    (["bisect", "--store", "{d}"], "the following arguments are required: --store-b"),
    (["verify", "--store", "/nonexistent"], "no event store at /nonexistent"),
    (["verify", "--store", "/"], "no event store in /"),
    ([], "the following arguments are required"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2_with_one_line(small, argv, message):
    d, _, _ = small
    r = drover("replay", *[a.format(d=d) for a in argv])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


# ---- integration: a real 3-replica run ---------------------------------------------------------------------


class Run:
    def __init__(self, cluster, stores: dict[str, Path], live: list[tuple[int, str]], statuses: dict, tmp: Path):
        self.cluster, self.stores, self.live, self.statuses, self.tmp = cluster, stores, live, statuses, tmp


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay-live")
    with running_cluster(tmp / "cluster", ["--snapshot-every", "7"]) as cluster:
        # Sample the leader's (applied_index, state_hash) while a framework runs.
        live: list[tuple[int, str]] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                st_ = cluster.status(cluster.wait_leader())
                if st_ is not None:
                    live.append((st_["applied_index"], st_["state_hash"]))
                time.sleep(0.02)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            out = run_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--tasks", "3")
            assert out["ok"], out
            # A leader failover, then a second framework under the new leader.
            old = cluster.wait_leader()
            cluster.kill(old)
            deadline = time.time() + 30
            while time.time() < deadline and cluster.leader() in (None, old):
                time.sleep(0.1)
            cluster.start_master(old)
            out = run_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--tasks", "2")
            assert out["ok"], out
        finally:
            stop.set()
            t.join()
        statuses = cluster.wait_converged(timeout=30)
        stores = {m["id"]: Path(m["data_dir"]) for m in cluster.layout["masters"]}
        yield Run(cluster, stores, live, statuses, tmp)


@pytest.mark.integration
def test_state_at_an_index_equals_the_live_state(real):
    for mid, st_ in real.statuses.items():
        rc, out, err = cli("state", "--store", real.stores[mid], "--at", st_["applied_index"], "--json")
        assert rc == 0, err
        assert json.loads(out)["state_hash"] == st_["state_hash"], mid
    # The hashes the leader served while the first framework ran, at their indexes (from snapshots).
    leader_store = open_store(real.stores["m1"])
    try:
        checked = 0
        for idx, digest in sorted(set(real.live)):
            if idx <= leader_store.last_index():
                assert state_hash(state_at(leader_store, idx)) == digest, idx
                checked += 1
        assert checked >= 5
        assert len(leader_store.snapshots()) >= 3
    finally:
        leader_store.close()


@pytest.mark.integration
def test_state_at_time_on_a_real_store(real):
    store = real.stores["m2"]
    rows = rows_of(store)
    i = len(rows) // 2
    t = rows[i - 1][2]
    iso = dt.datetime.fromtimestamp(math.ceil(t * 1e6) / 1e6, dt.timezone.utc).isoformat()
    when = dt.datetime.fromisoformat(iso).timestamp()
    expected = max(r[0] for r in rows if r[2] <= when)
    rc, out, err = cli("state", "--store", store, "--at-time", iso, "--json")
    assert rc == 0, err
    got = json.loads(out)
    s = open_store(store)
    try:
        assert got["index"] == expected and got["state_hash"] == state_hash(state_at(s, expected, False))
    finally:
        s.close()
    rc, text, _ = cli("state", "--store", store, "--at-time", iso)
    assert f"index       {expected} of" in text


@pytest.mark.integration
def test_diff_shows_the_framework_and_its_tasks_and_replicas_agree(real):
    rows = rows_of(real.stores["m1"])
    sub = next(r[0] for r in rows if r[3] == "FRAMEWORK_SUBSCRIBED")
    fid = json.loads(rows[sub - 1][4])["framework_id"]
    # Just before the framework goes away, every task it ran has finished.
    end = next((r[0] - 1 for r in rows if r[3] == "FRAMEWORK_REMOVED" and json.loads(r[4])["framework_id"] == fid),
               len(rows))
    rc, out, err = cli("diff", "--store", real.stores["m1"], sub - 1, end, "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert fid in [f["id"] for f in got["frameworks"]["added"]]
    finished = [t for t in got["tasks"]["added"] if t["framework_id"] == fid and t["state"] == "TASK_FINISHED"]
    assert len(finished) == 3, got["tasks"]
    rc, text, _ = cli("diff", "--store", real.stores["m1"], sub - 1, end)
    assert "frameworks: 1 added" in text and "TASK_FINISHED" in text
    # Two replicas at the same index: no differences.
    n = min(real.statuses[m]["applied_index"] for m in real.stores)
    rc, out, _ = cli("diff", "--store", real.stores["m1"], "--store-b", real.stores["m3"], n, n, "--json")
    assert json.loads(out)["identical"] is True
    rc, text, _ = cli("diff", "--store", real.stores["m2"], "--store-b", real.stores["m3"], n, n)
    assert "no differences" in text


@pytest.mark.integration
def test_every_replica_verifies_and_the_stores_are_identical(real):
    for mid, path in real.stores.items():
        r = drover("replay", "verify", "--store", path, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        got = json.loads(r.stdout)
        assert got["ok"] and got["events_checked"] == real.statuses[mid]["applied_index"]
        assert got["snapshots_checked"] >= 3 and got["decisions_rerun"] >= 2
    terms = {r[1] for r in rows_of(real.stores["m1"])}
    assert len(terms) >= 2, "the run should include a failover"
    for other in ("m2", "m3"):
        r = drover("replay", "bisect", "--store", real.stores["m1"], "--store-b", real.stores[other])
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("identical:")


@pytest.fixture(scope="module")
def copies(real):
    """Stopped copies of a replica's store to damage (the live ones stay untouched)."""
    d = real.tmp / "copies"
    d.mkdir(exist_ok=True)
    return lambda name: copy_store(real.stores["m1"] / "events.sqlite", d / f"{name}.sqlite")


@pytest.mark.integration
def test_bisect_names_an_edited_payload(real, copies):
    path = copies("edited")
    rows = rows_of(path)
    updates = [r for r in rows if r[3] == "STATUS_UPDATED"]
    victim, donor = updates[4], updates[1]
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET payload = ? WHERE idx = ?", (donor[4], victim[0]))
    db.commit()
    db.close()
    r = drover("replay", "bisect", "--store", real.stores["m1"], "--store-b", path)
    assert r.returncode == 1
    assert f"the stores diverge at index {victim[0]} (payload differ" in r.stdout, r.stdout
    assert "STATUS_UPDATED" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["decision", "undecodable", "deleted", "truncated", "garbage"])
def test_verify_on_damaged_copies(real, copies, damage):
    path = copies(damage)
    rows = rows_of(path)
    made = [r for r in rows if r[3] == "OFFERS_MADE"][1]
    mid = rows[len(rows) // 2]
    if damage == "decision":
        p = json.loads(made[4])
        p["offers"][0]["resources"] = p["offers"][0]["resources"][:1]  # an offer smaller than the decision
        db = sqlite3.connect(path)
        db.execute("UPDATE events SET payload = ? WHERE idx = ?", (json.dumps(p).encode(), made[0]))
        expect = f"index {made[0]}: re-running the OFFERS_MADE decision"
    elif damage == "undecodable":
        db = sqlite3.connect(path)
        db.execute("UPDATE events SET payload = ? WHERE idx = ?", (mid[4][: len(mid[4]) // 2], mid[0]))
        expect = f"index {mid[0]}: payload does not decode"
    elif damage == "deleted":
        db = sqlite3.connect(path)
        db.execute("DELETE FROM events WHERE idx = ?", (mid[0],))
        expect = f"index {mid[0]} is missing"
    if damage in ("decision", "undecodable", "deleted"):
        db.commit()
        db.close()
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        expect = f"{path} is not a valid event store"
    elif damage == "garbage":
        data = bytearray(path.read_bytes())
        data[:4096] = bytes(range(256)) * 16
        path.write_bytes(bytes(data))
        expect = f"{path} is not a valid event store: file is not a database"
    r = drover("replay", "verify", "--store", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("verify FAILED: ") and expect in r.stdout, r.stdout
    assert "Traceback" not in r.stderr and r.stderr == "", r.stderr
    if damage != "decision":  # (folding does not re-decide: the state is still there to see)
        # Folding from 0 runs into the same damage: one line, no traceback.
        r = drover("replay", "state", "--store", path, "--no-snapshots")
        assert r.returncode in (1, 2) and r.stdout == "", r.stdout
        assert expect in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_live_store_is_not_modified(real):
    d = real.stores["m2"]
    before = {p.name for p in d.iterdir()}
    main_before = hashlib.sha256((d / "events.sqlite").read_bytes()).hexdigest()
    rc, _, err = cli("state", "--store", d)
    assert rc == 0, err
    assert {p.name for p in d.iterdir()} == before
    assert hashlib.sha256((d / "events.sqlite").read_bytes()).hexdigest() == main_before
