"""A real image registry for tests (imported by tests/conftest.py): Debian's `docker-registry` (distribution
registry v2, /usr/bin/docker-registry, installed by scripts/setup.sh) on 127.0.0.1:<free port>, plain HTTP, with
its storage in a temp dir. No registry on the internet is reachable from these machines, and none is needed.

`registry` (session) yields a `Registry`: its `address` `127.0.0.1:PORT` and its `log` (one access line per
request). `push_image(address, name)` pushes a copy of the
default busybox image there under `name` (podman tags a copy, pushes it, and removes only that copy: the shared
`localhost/drover-busybox:latest` is never touched) and returns the full image reference.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from agent import images

__all__ = ["registry", "push_image", "Registry", "REGISTRY_BIN"]

REGISTRY_BIN = "/usr/bin/docker-registry"

_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    log: Path

    def requests(self, needle: str) -> int:
        """How many requests so far had `needle` in their access line (e.g. "GET /v2/x/manifests/1 ")."""
        return sum(needle in line for line in self.log.read_text(errors="replace").splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    if not Path(REGISTRY_BIN).exists():
        pytest.fail(f"{REGISTRY_BIN} is missing: run scripts/setup.sh (apt package docker-registry)")
    d = tmp_path_factory.mktemp("registry")
    (d / "storage").mkdir()
    proc = None
    for _ in range(5):  # a port taken between the probe and the registry's bind: try another
        port = _free_port()
        (d / "config.yml").write_text(_CONFIG.format(root=d / "storage", port=port))
        with open(d / "registry.log", "ab") as logf:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(d / "config.yml")], stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                    if r.status == 200:
                        break
            time.sleep(0.05)
        if proc.poll() is None:
            break
    assert proc is not None and proc.poll() is None, (d / "registry.log").read_text()[-2000:]
    try:
        yield Registry(f"127.0.0.1:{port}", d / "registry.log")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def push_image(registry: str, name: str) -> str:
    """Push a copy of the default image to `registry` as `name` (e.g. "test/busybox:1"); the local copy of that
    name is removed again, so a task using it must pull it. Returns the full reference."""
    ref = f"{registry}/{name}"
    env = images.podman_env()
    podman = shutil.which("podman") or "podman"
    images.ensure_image(None)
    subprocess.run([podman, "tag", images.DEFAULT_IMAGE, ref], env=env, check=True, capture_output=True)
    try:
        subprocess.run([podman, "push", "--tls-verify=false", "--quiet", ref], env=env, check=True,
                       capture_output=True)
    finally:
        # `rmi` of a tag that shares its image with other names only removes that name
        subprocess.run([podman, "rmi", ref], env=env, capture_output=True)
    return ref
