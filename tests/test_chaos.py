"""`drover chaos run`, each scenario for a short while, on real processes and containers: every run must
inject its faults, the cluster must recover from each, and every invariant must hold (checks.py; the
checker itself is tested on made-up histories in test_chaos_checks.py). As root the masters and agents
live in network namespaces and partitions drop packets; otherwise they are SIGSTOP/SIGCONT."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from drover.chaos.faults import SCENARIOS

REPO_CMD = [sys.executable, "-m", "drover.cli", "chaos"]


def chaos(tmp_path, scenario: str, *extra: str, duration: int = 20, seed: int = 7) -> dict:
    report = tmp_path / "report.json"
    proc = subprocess.run([*REPO_CMD, "run", "--scenario", scenario, "--seed", str(seed), "--duration", str(duration),
                           "--data-dir", str(tmp_path / "run"), "--report", str(report), *extra],
                          capture_output=True, text=True, timeout=600)
    assert report.exists(), f"no report; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    assert proc.returncode == (0 if data["ok"] else 1)
    assert data["ok"], proc.stdout[-6000:]
    # The acknowledged check is only as strong as the indices the leader returned: there must be many.
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    indexed = [r for r in history if r["type"] == "ok" and r.get("index")]
    assert len(indexed) > 20 and {r["op"] for r in indexed} >= {"launch", "ack"}
    return data


@pytest.mark.parametrize("scenario", sorted(s for s in SCENARIOS if s != "mixed"))
def test_scenario(tmp_path, scenario):
    data = chaos(tmp_path, scenario)
    kinds = set(SCENARIOS[scenario])
    assert data["faults"] and {f["kind"] for f in data["faults"]} <= kinds
    assert all(f["recovered"] for f in data["faults"])
    assert [c["name"] for c in data["checks"]] == ["tasks", "acknowledged", "replay", "recovery", "service",
                                                   "stateful", "liveness"]
    assert data["workload"]["tasks_launched"] > 0
    if scenario in ("leader-kill", "leader-partition"):
        assert all("new_leader_s" in f["timings"] and "first_offer_s" in f["timings"] for f in data["faults"])
    if scenario == "agent-partition":
        assert all("marked_unreachable_s" in f["timings"] and "reregistered_s" in f["timings"] for f in data["faults"])
    if scenario == "agent-kill-restart":
        assert all("reregistered_s" in f["timings"] for f in data["faults"])
    if scenario == "framework-failover":
        assert data["workload"]["instances"] > 1


def test_mixed_on_a_secure_cluster(tmp_path):
    # Every fault kind, with authentication and ACLs on every port: the workload, the agents and the harness
    # authenticate, and failovers do not lose anyone's credentials.
    data = chaos(tmp_path, "mixed", "--secure", duration=40, seed=3)
    assert data["secure"] is True
    assert len({f["kind"] for f in data["faults"]}) >= 3
    # The stateful writers' volume (created with the workload's principal) kept every finished write.
    stateful = next(c for c in data["checks"] if c["name"] == "stateful")
    assert stateful["ok"], stateful
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    writers = {r["stateful"] for r in history if r["type"] == "invoke" and r.get("stateful")}
    assert len(writers) >= 2 and any(r["type"] == "event" and r.get("task_id") in writers
                                     and r["state"] == "TASK_FINISHED" for r in history)


def test_leader_kill_over_tls(tmp_path):
    """The cluster on HTTPS (a generated CA; in namespaces the certificate names their addresses): agents and the
    workload follow the leader through kills over TLS, and every invariant holds."""
    data = chaos(tmp_path, "leader-kill", "--tls")
    assert data["tls"] and data["faults"] and all(f["recovered"] for f in data["faults"])
    assert (tmp_path / "run" / "cluster" / "tls" / "ca.pem").exists()


def test_partition_without_namespaces_is_a_paused_process(tmp_path):
    data = chaos(tmp_path, "leader-partition", "--no-netns")
    assert data["fault_mode"] == "process" and {f["mode"] for f in data["faults"]} == {"process"}


@pytest.mark.parametrize("args,message", [
    (["run", "--scenario", "nope"], "invalid choice: 'nope'"),
    (["run", "--scenario", "leader-kill", "--duration", "3"], "a run needs at least 10 s"),
    (["run", "--scenario", "leader-kill", "--agents", "0"], "--agents must be at least 1"),
])
def test_usage_errors_are_one_line(args, message):
    proc = subprocess.run([*REPO_CMD, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_list_names_every_scenario():
    out = subprocess.run([*REPO_CMD, "list"], capture_output=True, text=True, timeout=60).stdout
    for name in SCENARIOS:
        assert name in out
