"""End to end with an unmodified pymesos scheduler: real master replicas, agents and Podman containers.

The tests that only run frameworks share one cluster (`shared`; each looks only at its own framework's tasks and
sandboxes); the test that kills the leader has a cluster of its own (`cluster`)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pytest

from master.state import state_hash
from replay.reader import replay_store
from tests.cluster import Cluster, run_framework, running_cluster, start_framework

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[Cluster]:
    """tests.cluster's `cluster`, started once for the tests that kill nothing."""
    with running_cluster(tmp_path_factory.mktemp("pymesos") / "cluster") as c:
        yield c


def test_five_echo_tasks_finish(shared):
    cluster = shared
    out = run_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--tasks", "5")
    assert len(out["final"]) == 5
    assert set(out["final"].values()) == {"TASK_FINISHED"}
    for states in out["history"].values():
        assert states == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    # Each task really ran in its own container and wrote its sandbox stdout (and this framework ran no other).
    outputs = sorted(p.read_text().strip()
                     for p in cluster.data_dir.glob(f"a*/sandboxes/{out['framework_id']}/*/stdout"))
    assert outputs == sorted(f"hello from {tid}" for tid in out["final"])


def test_client_pointed_at_a_follower_follows_the_redirect(shared):
    cluster = shared
    follower = cluster.follower()
    out = run_framework("pymesos_echo.py", "--master", cluster.master_http(follower), "--tasks", "2")
    assert set(out["final"].values()) == {"TASK_FINISHED"}


def test_kill_a_long_task_and_reconcile(shared):
    cluster = shared
    out = run_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--kill-reconcile")
    victim, survivor = sorted(out["final"])
    assert out["history"][victim] == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]
    # Reconciliation answers come from the master, without a uuid: the survivor is still running.
    assert out["reconciled"][survivor] == ["TASK_RUNNING", "REASON_RECONCILIATION"]
    assert out["reconciled"][victim][0] in ("TASK_KILLED", "TASK_LOST")
    assert out["final"][survivor] == "TASK_KILLED"


def test_leader_kill_failover(cluster, tmp_path):
    ready = tmp_path / "ready"
    proc = start_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--tasks", "3",
                           "--command", "sleep 5; echo done", "--ready-file", str(ready), "--timeout", "90",
                           log_path=tmp_path / "fw.log")
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert ready.exists(), (tmp_path / "fw.log").read_text()
    old = cluster.wait_leader()
    t0 = time.time()
    cluster.kill(old)
    new = cluster.wait_leader(timeout=30)
    print(f"new leader {new} serving {time.time() - t0:.2f}s after kill -9 of {old}")
    assert new != old
    proc.wait(timeout=120)
    import json
    out = json.loads([l for l in (tmp_path / "fw.log").read_text().splitlines() if l.startswith("{")][-1])
    assert proc.returncode == 0, (tmp_path / "fw.log").read_text()[-3000:]
    assert set(out["final"].values()) == {"TASK_FINISHED"}
    assert out["reregistered"] >= 1
    # Agents found the new leader and re-registered under the same ids.
    state = cluster.state()
    assert len(state["slaves"]) == 2 and all(s["active"] for s in state["slaves"])
    cluster.wait_converged()


def _rows(path: Path) -> list[tuple]:
    db = sqlite3.connect(path / "events.sqlite")
    try:
        return db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx").fetchall()
    finally:
        db.close()


def test_replicas_hold_identical_stores_and_replay_to_live_state(shared):
    cluster = shared
    run_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--tasks", "4")
    statuses = cluster.wait_converged()
    leader = cluster.wait_leader()
    live_hash, live_index = statuses[leader]["state_hash"], statuses[leader]["applied_index"]
    stores = {m["id"]: Path(m["data_dir"]) for m in cluster.layout["masters"]}
    # The cluster keeps running, so a store may already hold a later event: compare the converged prefix.
    rows = {mid: _rows(p) for mid, p in stores.items()}
    first = rows[leader][:live_index]
    assert len(first) == live_index
    for mid, r in rows.items():
        assert r[:live_index] == first, f"replica {mid}'s event store differs from the leader's"
    for mid, p in stores.items():
        replayed = replay_store(p, upto=live_index)
        assert replayed.index == live_index
        assert state_hash(replayed) == live_hash, f"folding {mid}'s events does not give the leader's live state"
