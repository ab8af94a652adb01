"""A real local cluster for integration tests: master replica processes (pysyncobj on loopback),
agent processes and a Podman service, started as `drover local` starts them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from drover.local import LocalCluster

# Short intervals keep tests quick; they are flags an operator could set too.
MASTER_ARGS = ["--heartbeat-interval", "1", "--allocation-interval", "0.5"]
REPO = Path(__file__).resolve().parent.parent


class Cluster(LocalCluster):
    def leader_endpoint(self) -> str:
        return self.layout["leader"]

    def master_http(self, mid: str) -> str:
        return next(m["http"] for m in self.layout["masters"] if m["id"] == mid)

    def follower(self) -> str:
        lead = self.wait_leader()
        return next(m["id"] for m in self.layout["masters"] if m["id"] != lead)

    def get(self, addr: str, path: str, timeout: float = 5.0) -> dict:
        return self.get_json(addr, path, timeout=timeout)

    def state(self) -> dict:
        return self.get(self.leader_endpoint(), "/master/state")

    def statuses(self) -> dict[str, dict]:
        return {m["id"]: self.status(m["id"]) for m in self.layout["masters"]}

    def wait_converged(self, timeout: float = 20.0) -> dict[str, dict]:
        """Wait until every live replica has applied the same index with the same state hash."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            sts = {k: v for k, v in self.statuses().items() if v is not None}
            if len(sts) == len([m for m in self.layout["masters"] if self.procs[m["id"]].poll() is None]):
                if len({(s["applied_index"], s["state_hash"]) for s in sts.values()}) == 1:
                    return sts
            last = sts
            time.sleep(0.2)
        raise AssertionError(f"replicas did not converge: {last}")

    def log(self, name: str) -> str:
        return (self.data_dir / f"{name}.log").read_text(errors="replace")


@contextlib.contextmanager
def running_cluster(data_dir: Path, extra_master_args: list[str] = (),
                    agent_args: list[str] = (), **options) -> Iterator[Cluster]:
    """`options`: LocalCluster's other fields (secure, tls, extra_principals, acl_rules, ...). Disk quotas are
    enforced (as in `drover local`), sandboxes measured every second."""
    options.setdefault("container_disk_watch_interval", 1.0)
    c = Cluster(data_dir=data_dir, master_args=list(MASTER_ARGS) + list(extra_master_args),
                agent_args=list(agent_args), **options)
    c.start()
    try:
        c.wait_leader()
        c.wait_agents()
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "cluster") as c:
        yield c


def run_framework(script: str, *args: str, timeout: float = 120.0, env: dict | None = None) -> dict:
    """Run a framework script under tests/frameworks as its own process (pymesos needs the main thread)
    and return the JSON object it prints last."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "frameworks" / script), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def start_framework(script: str, *args: str, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "frameworks" / script), *args],
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT, text=True)
