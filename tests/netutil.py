"""Ports and HTTP fetches for tests of tasks that serve on the host's network."""

from __future__ import annotations

import random
import socket
import time
import urllib.error
import urllib.request


def free_port(low: int = 31000, high: int = 32000) -> int:
    """A TCP port in [low, high] nothing on this host listens on now (others may run tests at the same time)."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


def fetch(url: str, timeout: float = 30.0) -> tuple[int, str]:
    """GET url, retried until something answers or `timeout` passes: (status, body)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise AssertionError(f"nothing answered at {url}: {last}")


async def serve_app(app) -> tuple:
    """Serve an aiohttp `web.Application` on 127.0.0.1 and a free port: (its runner, to clean up; the port)."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port
