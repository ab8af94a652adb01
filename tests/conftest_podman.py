"""Pytest fixtures for tests that need a real podman service (imported by tests/conftest.py).

`podman_socket` (session): a private `podman system service` on a temp socket, using deploy/containers.conf (via
agent.images.podman_env) and the default global store, with the default busybox image present. At the end every
container labelled drover.test=1 is force-removed and the service is stopped. Tests must put TEST_LABELS on every
container they create so nothing leaks into the shared store.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent import images

__all__ = ["podman_socket", "TEST_LABELS", "start_podman_service", "stop_podman_service"]

TEST_LABELS = {"drover.test": "1"}


def start_podman_service(socket_path: Path, log_path: Path, timeout: float = 30) -> subprocess.Popen:
    """Start `podman system service` on socket_path and wait until it answers /_ping."""
    from podman import PodmanClient

    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
            env=images.podman_env(), cwd=socket_path.parent, stdin=subprocess.DEVNULL,
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
    client = PodmanClient(base_url=f"unix://{socket_path}", timeout=10)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"podman service exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            if socket_path.exists():
                with contextlib.suppress(Exception):
                    if client.ping():
                        return proc
            time.sleep(0.05)
    finally:
        client.close()
    stop_podman_service(proc)
    raise RuntimeError(f"podman service did not answer on {socket_path} within {timeout} s")


def stop_podman_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remove_test_containers(socket_path: Path) -> None:
    from podman import PodmanClient

    with PodmanClient(base_url=f"unix://{socket_path}", timeout=60) as c:
        flt = [f"label={k}={v}" for k, v in TEST_LABELS.items()]
        for ctr in c.containers.list(all=True, filters=flt):
            with contextlib.suppress(Exception):
                ctr.remove(force=True)


@pytest.fixture(scope="session")
def podman_socket(tmp_path_factory) -> Iterator[Path]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/setup.sh (the README test command does)")
    d = tmp_path_factory.mktemp("podman")
    sock = d / "podman.sock"
    proc = start_podman_service(sock, d / "podman-service.log")
    try:
        images.ensure_image(sock)
        yield sock
    finally:
        with contextlib.suppress(Exception):
            _remove_test_containers(sock)
        stop_podman_service(proc)
