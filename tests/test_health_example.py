"""The worked example of docs/services.md, as a user would run it: an unmodified pymesos scheduler
(docs/examples/web_service.py) keeps two health-checked web servers running on a real cluster (master replicas,
agents, Podman); each reports healthy, its page is fetched from the host at the URL it printed, and Ctrl-C tears the
framework down with its tasks killed. In between, `drover task log` and `drover task exec` as the docs use them."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cluster import running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "web_service.py"
WAIT = 120.0  # an upper bound for anything awaited; never asserted as a duration


def _lines(proc: subprocess.Popen) -> "queue.Queue[str]":
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            q.put(line)
        q.put("")

    threading.Thread(target=pump, daemon=True).start()
    return q


def _until(q: "queue.Queue[str]", pattern: str, seen: list[str], count: int = 1) -> list[re.Match]:
    found: list[re.Match] = []
    deadline = time.monotonic() + WAIT
    while len(found) < count:
        line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(line)
        assert line, "the example exited:\n" + "".join(seen)
        if m := re.search(pattern, line):
            found.append(m)
    return found


def test_the_web_service_example_serves_healthy_pages_and_tears_down(tmp_path):
    with running_cluster(tmp_path / "cluster") as cluster:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--master", cluster.leader_endpoint(),
                                 "--instances", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        try:
            q = _lines(proc)
            healthy = _until(q, r"^(web-\d+) is healthy: open (http://\S+)$", seen, count=2)
            for m in healthy:
                with urllib.request.urlopen(m.group(2), timeout=10) as r:
                    page = r.read().decode()
                assert r.status == 200 and f"<h1>{m.group(1)}</h1>" in page, page
            state = cluster.state()
            tasks = {t["id"]: t for f in state["frameworks"] for t in f["tasks"]}
            assert {m.group(1) for m in healthy} <= set(tasks)
            for m in healthy:
                last = tasks[m.group(1)]["statuses"][-1]
                assert last["state"] == "TASK_RUNNING" and last["healthy"] is True, last

            # The docs' next steps, exactly as written there: the server's log, and a command in its container.
            first = healthy[0].group(1)
            drover = [sys.executable, "-m", "drover.cli", "task"]
            deadline = time.monotonic() + WAIT
            while True:  # httpd -v logs each request (the health checks' too) to stderr
                log = subprocess.run([*drover, "log", first, "--stream", "stderr", "--master",
                                      cluster.leader_endpoint()], capture_output=True, text=True, timeout=60)
                if "response:200" in log.stdout or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert log.returncode == 0 and "response:200" in log.stdout, log
            ls = subprocess.run([*drover, "exec", first, "--master", cluster.leader_endpoint(), "--", "ls", "www"],
                                capture_output=True, text=True, timeout=60)
            assert (ls.returncode, ls.stdout) == (0, "index.html\n"), ls

            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(timeout=60) == 0, "".join(seen)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # Torn down: the framework is gone and its servers were stopped (their ports refuse connections).
        assert not [f for f in cluster.state()["frameworks"] if f["name"] == "web-service"]
        for m in healthy:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(m.group(2), timeout=2).close()
                except OSError:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"{m.group(2)} still serves after the teardown")
