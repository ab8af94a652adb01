"""`drover chaos run`, each scenario for a short while, on real processes and containers: every run must
inject its faults, the cluster must recover from each, and every invariant must hold (checks.py; the
checker itself is tested on made-up histories in test_chaos_checks.py). As root the masters and agents
live in network namespaces and partitions drop packets; otherwise they are SIGSTOP/SIGCONT.

A run spends most of its time waiting (faults are held, then the harness waits for the cluster to be whole
again): it uses about half a core. So the runs of the selected tests go two at a time in the background (the
longest first, then in the tests' order); each test waits for its own run's report and checks it. Each run
has its own cluster, data dir, ports, network namespaces (netns.Network tags keep concurrent runs apart) and
Podman service, and offers task ports of its own (--task-ports: every container shares the host's network, so
two runs' service tasks would otherwise take the same port), as two operators' runs on one host would.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest

from drover.chaos.faults import SCENARIOS

REPO_CMD = [sys.executable, "-m", "drover.cli", "chaos"]
# Not three: on 2 cores, three at a time made recovery slower, and the module's 20 s runs fitted fewer faults
# (30 instead of 36-37, sequential or two at a time): they would have explored less.
CONCURRENT_RUNS = 2
# One task port range per concurrent run (inside the agents' default 31000-32000).
TASK_PORTS = ["31000-31499", "31500-31999"]


def chaos_run(data_dir: Path, scenario: str, *extra: str, duration: int = 20, seed: int = 7) -> dict:
    report = data_dir / "report.json"
    proc = subprocess.run([*REPO_CMD, "run", "--scenario", scenario, "--seed", str(seed), "--duration", str(duration),
                           "--data-dir", str(data_dir / "run"), "--report", str(report), *extra],
                          capture_output=True, text=True, timeout=600)
    assert report.exists(), f"no report; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    assert proc.returncode == (0 if data["ok"] else 1)
    assert data["ok"], proc.stdout[-6000:]
    # The acknowledged check is only as strong as the indices the leader returned: there must be many.
    history = [json.loads(line) for line in (data_dir / "run" / "history.jsonl").read_text().splitlines()]
    indexed = [r for r in history if r["type"] == "ok" and r.get("index")]
    assert len(indexed) > 20 and {r["op"] for r in indexed} >= {"launch", "ack"}
    return data


# test node name -> the arguments of its run (chaos_run's after data_dir)
RUNS: dict[str, tuple[tuple, dict]] = {
    **{f"test_scenario[{s}]": ((s,), {}) for s in sorted(s for s in SCENARIOS if s != "mixed")},
    "test_mixed_on_a_secure_cluster": (("mixed", "--secure"), {"duration": 40, "seed": 3}),
    "test_leader_kill_over_tls": (("leader-kill", "--tls"), {}),
    "test_partition_without_namespaces_is_a_paused_process": (("leader-partition", "--no-netns"), {}),
}


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[dict[str, tuple[Path, Future]]]:
    """The chaos runs of this module's selected tests, CONCURRENT_RUNS at a time (the longest first, then in the
    tests' order): test name -> (its data dir, the future of chaos_run's report)."""
    names = [item.name for item in request.session.items
             if item.module is request.module and item.name in RUNS]
    names.sort(key=lambda name: -RUNS[name][1].get("duration", 20))
    ranges: queue.Queue[str] = queue.Queue()
    for r in TASK_PORTS[:CONCURRENT_RUNS]:
        ranges.put(r)

    def run(data_dir: Path, args: tuple, kwargs: dict) -> dict:
        ports = ranges.get()  # one is free: there are as many as runs at a time
        try:
            return chaos_run(data_dir, *args, "--task-ports", ports, **kwargs)
        finally:
            ranges.put(ports)

    pool = ThreadPoolExecutor(max_workers=CONCURRENT_RUNS, thread_name_prefix="chaos")
    started: dict[str, tuple[Path, Future]] = {}
    for name in names:
        args, kwargs = RUNS[name]
        d = tmp_path_factory.mktemp("chaos")
        started[name] = (d, pool.submit(run, d, args, kwargs))
    try:
        yield started
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def chaos(request: pytest.FixtureRequest, runs) -> Callable[[], tuple[Path, dict]]:
    """`chaos()` waits for this test's run and returns (its data dir, its checked report); a failed run fails
    the test there, as a run in the test's body would."""
    data_dir, future = runs[request.node.name]
    return lambda: (data_dir, future.result())


@pytest.mark.parametrize("scenario", sorted(s for s in SCENARIOS if s != "mixed"))
def test_scenario(chaos, scenario):
    _, data = chaos()
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


def test_mixed_on_a_secure_cluster(chaos):
    # Every fault kind, with authentication and ACLs on every port: the workload, the agents and the harness
    # authenticate, and failovers do not lose anyone's credentials. (Its run: "mixed", "--secure", 40 s, seed 3.)
    data_dir, data = chaos()
    assert data["secure"] is True
    assert len({f["kind"] for f in data["faults"]}) >= 3
    # The stateful writers' volume (created with the workload's principal) kept every finished write.
    stateful = next(c for c in data["checks"] if c["name"] == "stateful")
    assert stateful["ok"], stateful
    history = [json.loads(line) for line in (data_dir / "run" / "history.jsonl").read_text().splitlines()]
    writers = {r["stateful"] for r in history if r["type"] == "invoke" and r.get("stateful")}
    assert len(writers) >= 2 and any(r["type"] == "event" and r.get("task_id") in writers
                                     and r["state"] == "TASK_FINISHED" for r in history)


def test_leader_kill_over_tls(chaos):
    """The cluster on HTTPS (a generated CA; in namespaces the certificate names their addresses): agents and the
    workload follow the leader through kills over TLS, and every invariant holds. (Its run: leader-kill, --tls.)"""
    data_dir, data = chaos()
    assert data["tls"] and data["faults"] and all(f["recovered"] for f in data["faults"])
    assert (data_dir / "run" / "cluster" / "tls" / "ca.pem").exists()


def test_partition_without_namespaces_is_a_paused_process(chaos):
    _, data = chaos()  # its run: leader-partition, --no-netns
    assert data["fault_mode"] == "process" and {f["mode"] for f in data["faults"]} == {"process"}


@pytest.mark.parametrize("args,message", [
    (["run", "--scenario", "nope"], "invalid choice: 'nope'"),
    (["run", "--scenario", "leader-kill", "--duration", "3"], "a run needs at least 10 s"),
    (["run", "--scenario", "leader-kill", "--agents", "0"], "--agents must be at least 1"),
    (["run", "--scenario", "leader-kill", "--task-ports", "32000-31000"], "expected LOW-HIGH"),
])
def test_usage_errors_are_one_line(args, message):
    proc = subprocess.run([*REPO_CMD, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_list_names_every_scenario():
    out = subprocess.run([*REPO_CMD, "list"], capture_output=True, text=True, timeout=60).stdout
    for name in SCENARIOS:
        assert name in out
