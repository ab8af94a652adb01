"""The few libpod REST calls the agent's HTTP API needs beyond podman-py: container stats and exec sessions, over
the podman service's unix socket with aiohttp (streams, no thread held while a session runs).

An exec session runs in the task's container as the container's own user (the task's), with the container's
capabilities, no-new-privileges and limits: never more privileged than the task.
"""

from __future__ import annotations

import os
import signal
import struct
from pathlib import Path
from typing import AsyncIterator

import aiohttp

API = "http://d/v4.0.0/libpod"
STDOUT, STDERR = 1, 2
MAX_FRAME = 1 << 20  # bytes: a frame podman announces as longer is a broken stream


class PodmanAPIError(Exception):
    pass


class Demux:
    """Podman's (Docker's) multiplexed exec stream: frames of an 8-byte header (stream byte, 3 zero bytes, big-endian
    length) and the payload. Feed it bytes as they come; it yields (stream, payload)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= 8:
            kind, n = struct.unpack(">B3xI", self._buf[:8])
            if kind > 2 or n > MAX_FRAME:
                raise PodmanAPIError(f"malformed exec stream frame header {self._buf[:8]!r}")
            if len(self._buf) < 8 + n:
                break
            out.append((kind, self._buf[8:8 + n]))
            self._buf = self._buf[8 + n:]
        return out


def _session(socket_path: Path, total: float | None = 30.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)),
                                 timeout=aiohttp.ClientTimeout(total=total, sock_connect=5))


async def stats(socket_path: Path, container_ids: list[str]) -> dict[str, dict]:
    """podman's one-shot stats of these (running) containers, by full container id."""
    if not container_ids:
        return {}
    async with _session(socket_path) as s:
        async with s.get(f"{API}/containers/stats",
                         params=[("stream", "false")] + [("containers", c) for c in container_ids]) as r:
            if r.status != 200:
                raise PodmanAPIError(f"podman stats answered {r.status}: {(await r.text())[:200]}")
            body = await r.json(content_type=None)
    return {st["ContainerID"]: st for st in (body.get("Stats") or []) if isinstance(st, dict)}


async def exec_create(socket_path: Path, container_id: str, argv: list[str], env: list[str] | None = None) -> str:
    """Create an exec session of `argv` in the container (its own user, no TTY, no stdin; the container's
    environment plus `env`, NAME=VALUE each): the session's id."""
    body = {"Cmd": argv, "AttachStdout": True, "AttachStderr": True, "AttachStdin": False, "Tty": False,
            "Privileged": False, "WorkingDir": "/mnt/mesos/sandbox"}
    if env:
        body["Env"] = env
    async with _session(socket_path) as s:
        async with s.post(f"{API}/containers/{container_id}/exec", json=body) as r:
            text = await r.text()
            if r.status != 201:
                raise PodmanAPIError(f"podman exec answered {r.status}: {text[:200]}")
    return str((await _json(text))["Id"])


async def _json(text: str) -> dict:
    import json

    d = json.loads(text)
    if not isinstance(d, dict):
        raise PodmanAPIError("unexpected answer from podman")
    return d


async def exec_output(socket_path: Path, exec_id: str) -> AsyncIterator[tuple[int, bytes]]:
    """Start the session and yield its (stream, bytes) as they come, until the command exits."""
    demux = Demux()
    async with _session(socket_path, total=None) as s:
        async with s.post(f"{API}/exec/{exec_id}/start", json={"Detach": False, "Tty": False}) as r:
            if r.status != 200:
                raise PodmanAPIError(f"podman exec start answered {r.status}: {(await r.text())[:200]}")
            async for chunk in r.content.iter_any():
                for frame in demux.feed(chunk):
                    yield frame


async def exec_exit_code(socket_path: Path, exec_id: str) -> int | None:
    """The session's exit code (None while it runs)."""
    async with _session(socket_path) as s:
        async with s.get(f"{API}/exec/{exec_id}/json") as r:
            if r.status != 200:
                raise PodmanAPIError(f"podman exec inspect answered {r.status}")
            d = await r.json(content_type=None)
    return None if d.get("Running") else int(d.get("ExitCode") or 0)


async def exec_kill(socket_path: Path, exec_id: str) -> None:
    """End a session that is still running (its client went away): SIGKILL to its process, whose pid (in the
    host's PID namespace, which the agent shares with podman) podman's inspect gives."""
    async with _session(socket_path) as s:
        async with s.get(f"{API}/exec/{exec_id}/json") as r:
            if r.status != 200:
                return
            d = await r.json(content_type=None)
    pid = d.get("Pid")
    if d.get("Running") and isinstance(pid, int) and pid > 1:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
