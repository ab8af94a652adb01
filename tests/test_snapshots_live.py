"""Live replicas write state snapshots (with their hash) into their stores; replaying to a snapshot's
index gives that hash, replaying from a snapshot gives the live state, and a restarted replica
starts from its latest snapshot."""

from pathlib import Path

import pytest

from eventstore.store import EventStore
from master.state import state_hash
from replay.reader import state_at
from tests.cluster import run_framework, running_cluster

pytestmark = pytest.mark.integration


def test_snapshots_match_replay_and_restart_uses_them(tmp_path):
    with running_cluster(tmp_path / "cluster", ["--snapshot-every", "7"]) as cluster:
        run_framework("pymesos_echo.py", "--master", cluster.leader_endpoint(), "--tasks", "3")
        statuses = cluster.wait_converged()
        live = next(iter(statuses.values()))
        for m in cluster.layout["masters"]:
            store = EventStore(Path(m["data_dir"]))
            try:
                snaps = store.snapshots()
                assert len(snaps) >= 2, f"{m['id']} wrote no snapshots"
                for idx, digest in snaps:
                    assert state_hash(state_at(store, idx, use_snapshots=False)) == digest, (m["id"], idx)
                from_snapshot = state_at(store, live["applied_index"], use_snapshots=True)
                assert state_hash(from_snapshot) == live["state_hash"]
            finally:
                store.close()
        # A follower restarted: it starts from its latest snapshot and converges with the others.
        follower = cluster.follower()
        cluster.kill(follower)
        cluster.start_master(follower)
        after = cluster.wait_converged(timeout=30)
        assert after[follower]["state_hash"] == after[cluster.wait_leader()]["state_hash"]
