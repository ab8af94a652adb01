"""The HTTP and TCP probes of health checks and checks (agent/probes.py, agent/probe.py) against real local servers:
statuses, refused connections, timeouts. COMMAND probes and probes in a task's network namespace need Podman:
tests/test_health.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from agent import probes
from eventstore import events as ev
from tests.netutil import free_port, serve_app

HELPER = Path(probes.__file__).with_name("probe.py")


async def _server(status: int) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(3)
        return web.Response(status=status if request.path != "/missing" else 404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner, port = await serve_app(app)
    return runner, port


async def _probe(spec: ev.CheckSpec, timeout: float = 5.0):
    # this process stands for a host-network task's namespace (the container's being the agent's)
    return await probes.probe(spec, socket_path=Path("/nonexistent"), container_id="", network=None,
                              timeout=timeout, slots=asyncio.Semaphore(1), same_netns=True)


async def test_http_and_tcp_probes_on_the_hosts_loopback():
    runner, port = await _server(204)
    try:
        assert (await _probe(ev.HealthCheckSpec(type="HTTP", port=port, path="/ok"))).value == 204
        assert (await _probe(ev.CheckSpec(type="HTTP", port=port, path="/missing"))).value == 404
        slow = await _probe(ev.CheckSpec(type="HTTP", port=port, path="/slow"), timeout=0.5)
        assert slow.value is None and "timed out" in slow.error
        assert (await _probe(ev.CheckSpec(type="TCP", port=port))).value is True
    finally:
        await runner.cleanup()
    refused = await _probe(ev.CheckSpec(type="HTTP", port=port))
    assert refused.value is None and "failed" in refused.error and not refused.transient
    assert (await _probe(ev.CheckSpec(type="TCP", port=port))).value is False


def _helper(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-S", str(HELPER), *args], capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


async def test_the_network_namespace_helper_probes_as_the_agent_does():
    runner, port = await _server(200)
    try:
        assert await asyncio.to_thread(_helper, "http", "http", "127.0.0.1", str(port), "/x", "5") == {"value": 200}
        assert await asyncio.to_thread(_helper, "tcp", "127.0.0.1", str(port), "5") == {"value": True}
        slow = await asyncio.to_thread(_helper, "http", "http", "127.0.0.1", str(port), "/slow", "0.5")
        assert "error" in slow
    finally:
        await runner.cleanup()
    assert await asyncio.to_thread(_helper, "tcp", "127.0.0.1", str(port), "5") == {"value": False}
    assert "error" in await asyncio.to_thread(_helper, "http", "http", "127.0.0.1", str(port), "/", "5")
    assert "bad probe arguments" in (await asyncio.to_thread(_helper, "udp"))["error"]


def test_command_argv_is_a_tasks_own():
    assert probes.command_argv(ev.CheckCommand(value="test -f ok")) == ["/bin/sh", "-c", "test -f ok"]
    assert probes.command_argv(ev.CheckCommand(shell=False, value="/bin/test", arguments=["test", "-f", "ok"])) == [
        "/bin/test", "-f", "ok"]


async def test_an_http_path_that_is_not_a_path_is_never_requested():
    # The master refuses it; the agent trusts no LAUNCH: "@host/x" must not become part of the URL's authority.
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner, port = await serve_app(app)
    try:
        bad = await _probe(ev.CheckSpec(type="HTTP", port=port, path=f"@127.0.0.1:{port}/x"))
        assert bad.value is None and "does not start with '/'" in bad.error and hits == []
    finally:
        await runner.cleanup()


async def test_a_host_network_probe_waits_while_podman_cannot_say_where_the_task_is():
    # Unless this process is in the host's namespace (then the podman service's containers are too), where a
    # host-network task listens is podman's to say; while it cannot be reached the probe is transient (ignored),
    # never a failure that counts towards a kill.
    got = await probes.probe(ev.CheckSpec(type="TCP", port=free_port()), socket_path=Path("/nonexistent"),
                             container_id="c", network=None, timeout=1.0, slots=asyncio.Semaphore(1))
    if probes._agent_in_hosts_netns():
        assert got.value is False  # probed directly: nothing listens there
    else:
        assert got.transient and got.value is None
