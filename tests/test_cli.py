"""The `drover` command as a user runs it: execute against a real cluster, local up/down, bad flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from drover.local import free_port_block
from tests.cluster import start_framework

pytestmark = pytest.mark.integration


def drover(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drover.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_execute_exit_status_follows_the_tasks(cluster):
    ok = drover("execute", "--master", cluster.leader_endpoint(), "--command", "echo hi", "--instances", "2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("TASK_FINISHED") == 2
    failed = drover("execute", "--master", cluster.leader_endpoint(), "--command", "exit 3")
    assert failed.returncode == 1
    assert "TASK_FAILED (Command exited with status 3)" in failed.stdout
    missing = drover("execute", "--master", cluster.leader_endpoint(), "--command", "true", "--image", "nosuch:1")
    assert missing.returncode == 1
    assert "Failed to pull image 'nosuch:1'" in missing.stdout  # not present, and no registry has it


@pytest.mark.parametrize("args, message", [
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--resources", "cpus:x"],
     "bad scalar 'x' for cpus"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--resources",
      "ports:[5-x]"], "bad range"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--task-pids-limit", "8"],
     "--task-pids-limit must be from 16 to 4194304, got 8"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--task-pids-limit",
      "lots"], "invalid int value: 'lots'"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--registry-insecure",
      "http://registry.example.com"], "expected HOST or HOST:PORT, got 'http://registry.example.com'"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--image-pull-timeout",
      "0"], "must be > 0"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--fetcher-cache-size",
      "lots"], "expected a size such as 2GB"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--fetcher-allowed-dir",
      "relative/dir"], "--fetcher-allowed-dir relative/dir: must be an existing directory"),
    (["master", "--id", "m", "--http", "127.0.0.1:1", "--raft", "127.0.0.1:2", "--data-dir", "/tmp/x",
      "--peer", "nonsense"], "--peer 'nonsense'"),
    (["master", "--id", "m", "--http", "localhost", "--raft", "127.0.0.1:2", "--data-dir", "/tmp/x"],
     "expected HOST:PORT"),
    (["execute", "--master", "127.0.0.1:1", "--command", "true"], "cannot reach the master"),
    (["master", "--id", "m", "--http", "127.0.0.1:1", "--raft", "127.0.0.1:2", "--data-dir", "/tmp/x",
      "--role-sorter", "nope"], "--role-sorter must be one of drf, priority"),
    (["master", "--id", "m", "--http", "127.0.0.1:1", "--raft", "127.0.0.1:2", "--data-dir", "/tmp/x",
      "--min-allocatable-resources", "cpus:-1"], "--min-allocatable-resources: cpus must be a non-negative"),
    (["sim", "/nonexistent/scenario.json"], "cannot read /nonexistent/scenario.json"),
    (["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2", "--work-dir", "/tmp/x", "--gc-delay", "nan"],
     "must be a finite number"),
    (["master", "--id", "m", "--http", "127.0.0.1:1", "--raft", "127.0.0.1:2", "--data-dir", "/tmp/x",
      "--allocation-interval", "inf"], "must be a finite number"),
])
def test_bad_flags_get_one_clear_line_and_no_traceback(args, message):
    r = drover(*args, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_local_cluster_on_a_busy_port_says_so_and_starts_nothing(tmp_path):
    import socket

    base = free_port_block()
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 11))  # agent a1's port
        s.listen()
        r = drover("local", "--data-dir", str(tmp_path / "local"), "--base-port", str(base), timeout=60)
    assert r.returncode == 2
    assert f"port(s) {base + 11} on 127.0.0.1 are in use" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "local" / "podman.log").exists()


def test_local_cluster_starts_writes_endpoints_and_stops_cleanly(tmp_path):
    data = tmp_path / "local"
    base = free_port_block()
    proc = subprocess.Popen([sys.executable, "-m", "drover.cli", "local", "--data-dir", str(data),
                             "--base-port", str(base)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 90
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        assert any("cluster is up" in l for l in lines), "".join(lines)
        layout = json.loads((data / "local.json").read_text())
        assert [m["id"] for m in layout["masters"]] == ["m1", "m2", "m3"]
        assert all({"id", "http", "raft", "data_dir"} <= set(m) for m in layout["masters"])
        assert [a["id"] for a in layout["agents"]] == ["a1", "a2"]
        assert all({"id", "http", "work_dir"} <= set(a) for a in layout["agents"])
        # A framework that vanishes (kill -9) with failover_timeout=60 leaves its tasks running:
        # stopping the cluster must remove their containers.
        ready = tmp_path / "ready"
        fw = start_framework("pymesos_echo.py", "--master", layout["leader"], "--tasks", "2", "--command",
                             "sleep 300", "--ready-file", str(ready), log_path=tmp_path / "fw.log")
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.1)
        fw.kill()
        fw.wait()
        assert ready.exists(), (tmp_path / "fw.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    assert proc.returncode == 0
    agent_ids = [json.loads((data / a / "meta" / "agent.json").read_text())["agent_id"] for a in ("a1", "a2")]
    from agent.images import podman_env
    for aid in agent_ids:
        left = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=drover.agent={aid}"],
                              capture_output=True, text=True, env={**os.environ, **podman_env()}).stdout.split()
        assert left == [], f"containers of agent {aid} left behind"
    ps = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout.split()
    assert ps == [], "processes of the local cluster left behind"


def test_sizes_are_read_as_mesos_reads_bytes_flags():
    from drover.cli import _bytes

    assert _bytes("2GB") == 2 * 1024**3
    assert _bytes("512MB") == 512 * 1024**2
    assert _bytes("1048576") == 1048576
    assert _bytes("10 kb") == 10240


@pytest.mark.parametrize("args", [("exec", "t1", "--master", "127.0.0.1:1", "--", "ls", "-l"),
                                  ("exec", "--master", "127.0.0.1:1", "t1", "--", "ls"),
                                  ("log", "t1", "--master", "127.0.0.1:1")])
def test_task_options_go_before_or_after_the_task_id(args):
    # `drover task exec TASK --master M -- CMD` (as docs/services.md writes it) asks M, not the default master
    r = drover("task", *args)
    assert r.returncode == 2 and "cannot reach 127.0.0.1:1 " in r.stderr, r.stderr


def test_task_exec_needs_the_command_after_a_double_dash():
    r = drover("task", "exec", "t1", "--master", "127.0.0.1:1", "ls")
    assert r.returncode == 2 and "expected the command to run after --" in r.stderr, r.stderr
