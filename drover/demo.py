"""The service of `drover local --demo`: a small framework (the public v1 scheduler API only) that keeps one web
server running, as Marathon would: a busybox `httpd` task on a port of its offer, health-checked over HTTP by its
agent, launched again when it ends. It prints the URL to open once the task is healthy.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
from typing import TextIO

import aiohttp

from drover.scheduler_session import SchedulerError, SchedulerSession, port_ranges, scalar
from drover.security.credentials import Credential
from eventstore.vocab import TERMINAL_STATES

CPUS, MEM = 0.1, 32.0
IMAGE = "localhost/drover-busybox:latest"

# The page names the task and where it runs; every value comes from the task's environment (the agent sets them).
PAGE = ("<!doctype html><title>Drover demo</title><h1>Hello from Drover</h1>"
        "<p>Task %s of framework %s, on agent %s, serving on port %s from its own container.</p>\\n")
COMMAND = (f"mkdir -p www && printf '{PAGE}' \"$MESOS_TASK_ID\" \"$MESOS_FRAMEWORK_ID\" \"$MESOS_AGENT_ID\" "
           f"\"$PORT\" > www/index.html && exec httpd -f -p \"$PORT\" -h www")


def web_task(task_id: str, offer: dict, port: int) -> dict:
    """The TaskInfo of the demo's web server on `port` (one of the offer's), with an HTTP health check."""
    return {
        "name": "demo web server", "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}],
        "command": {"value": COMMAND, "shell": True},
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}},
        "health_check": {"type": "HTTP", "http": {"port": port, "path": "/"}, "delay_seconds": 0,
                         "interval_seconds": 2, "timeout_seconds": 2, "grace_period_seconds": 10,
                         "consecutive_failures": 3},
        "kill_policy": {"grace_period": {"nanoseconds": 1_000_000_000}},
    }


def _fits(offer: dict) -> int | None:
    """The first port of the offer if it can hold the web server, else None."""
    ranges = port_ranges(offer)
    if not ranges or scalar(offer, "cpus") < CPUS - 1e-9 or scalar(offer, "mem") < MEM - 1e-9:
        return None
    return ranges[0][0]


async def serve_web(master: str, *, credential: Credential | None = None, ssl_context: ssl.SSLContext | None = None,
                    out: TextIO = sys.stdout, name: str = "demo-web") -> None:
    """Keep one web server task running until cancelled; then TEARDOWN (the task is killed)."""
    info = {"user": "root", "name": name, "failover_timeout": 0.0,
            "capabilities": [{"type": "TASK_KILLING_STATE"}]}
    async with SchedulerSession(master, info, credential=credential, ssl_context=ssl_context) as s:
        await s.subscribe()
        running: str | None = None  # the task id of the server launched and not ended
        url: str | None = None
        generation = 0
        # As Marathon: a server that ends before it was ever healthy is launched again after a growing delay.
        backoff, not_before = 1.0, 0.0
        loop = asyncio.get_running_loop()
        revive: asyncio.Task | None = None

        async def revive_at(when: float) -> None:
            await asyncio.sleep(max(0.0, when - loop.time()))
            await call({"type": "REVIVE"})

        async def call(payload: dict) -> bool:
            """A call whose refusal is reported, not fatal: the service goes on with the next offer."""
            try:
                await s.call(payload)
                return True
            except SchedulerError as e:
                print(f"demo service: {e}", file=out, flush=True)
                return False

        try:
            async for e in s.events():
                t = e["type"]
                if t == "OFFERS":
                    for offer in e["offers"]["offers"]:
                        port = _fits(offer) if running is None and loop.time() >= not_before else None
                        if port is None:
                            await call({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]],
                                                                          "filters": {"refuse_seconds": 30.0}}})
                            continue
                        tid = f"{name}-{generation}"
                        generation += 1
                        if await call({"type": "ACCEPT", "accept": {
                                "offer_ids": [offer["id"]],
                                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                                    web_task(tid, offer, port)]}}],
                                "filters": {"refuse_seconds": 30.0}}}):
                            running, url = tid, f"http://{offer['hostname']}:{port}/"
                elif t == "UPDATE":
                    st = e["update"]["status"]
                    tid, state = st["task_id"]["value"], st["state"]
                    if "uuid" in st:
                        await call({"type": "ACKNOWLEDGE", "acknowledge": {
                            "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}})
                    if tid != running:
                        continue
                    if state == "TASK_RUNNING" and st.get("healthy") is True:
                        backoff = 1.0
                        print(f"demo service: task {tid} is healthy; open {url}", file=out, flush=True)
                    elif state == "TASK_RUNNING" and st.get("healthy") is False:
                        print(f"demo service: task {tid} failed its health check", file=out, flush=True)
                    elif state in TERMINAL_STATES:
                        why = f" ({st['message']})" if st.get("message") else ""
                        print(f"demo service: task {tid} ended {state}{why}; launching another in {backoff:g} s",
                              file=out, flush=True)
                        running = None
                        not_before = loop.time() + backoff
                        backoff = min(backoff * 2, 60.0)
                        if revive is not None:
                            revive.cancel()
                        revive = asyncio.create_task(revive_at(not_before))
        finally:
            if revive is not None:
                revive.cancel()
            await s.teardown()


class DemoService:
    """`serve_web` on a thread of its own (the `drover local` process waits on signals in its main thread)."""

    def __init__(self, master: str, *, credential: Credential | None, ssl_context: ssl.SSLContext | None):
        self._args = (master, credential, ssl_context)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-service", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        master, credential, ssl_context = self._args

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._ready.set()
            try:
                await serve_web(master, credential=credential, ssl_context=ssl_context)
            except (SchedulerError, OSError, aiohttp.ClientError) as e:
                print(f"demo service stopped: {e}", file=sys.stderr, flush=True)

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel the framework (it tears itself down: the task is killed) and wait for it."""
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)
