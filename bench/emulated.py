"""Emulated agents and frameworks for bench.scale, each kind run as its own process.

    python -m bench.emulated agents --masters H:P,H:P,H:P --count 5000 --first 0 --parent PID
    python -m bench.emulated frameworks --masters H:P,H:P,H:P --count 10 --inflight 20 --parent PID

Both speak only the public wire protocols, as real peers do:

* an **agent** opens `POST /api/drover/agent` SUBSCRIBE (following 307s to the leader), reads the RecordIO
  command stream (REGISTERED, LAUNCH, KILL, ACKNOWLEDGE, HEARTBEAT), PINGs every `ping_interval_seconds`, and
  "runs" a launched task by queueing TASK_RUNNING and, `--task-seconds` later, TASK_FINISHED (with `--starting`,
  TASK_STARTING first, as agent/agent.py does). As in agent/agent.py, a task's updates go one at a time: the head
  is (re)sent (2 s, doubling to 60 s) until the master forwards the framework's ACKNOWLEDGE, and every head is
  resent at once after a (re-)registration, which reports the tasks still held. One stream connection per agent;
  UPDATE and PING calls share a keep-alive pool.
* a **framework** subscribes on the v1 scheduler API, keeps `--inflight` tasks in flight (at most
  `--tasks-per-offer` on one offer, in one ACCEPT; default one, so tasks spread over agents), DECLINEs every
  offer it does not use in one call, ACKNOWLEDGEs every update, and
  re-subscribes with its framework id when its stream breaks (leader failover).

Control: the driver (bench/scale.py) writes JSON commands, one per line, on stdin; the process writes JSON lines on
stdout: {"type": "ready"} once, a {"type": "status", ...} line every 0.5 s, and a reply to `report`. End of stdin
(the driver is gone) ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field

import aiohttp

from bench import exit_when_orphaned, percentile
from drover.recordio import RecordIODecoder

JSON = {"Content-Type": "application/json"}
AGENT_API, SCHEDULER_API = "/api/drover/agent", "/api/v1/scheduler"
UPDATE_RETRY_INITIAL, UPDATE_RETRY_MAX = 2.0, 60.0  # agent/agent.py's AgentConfig defaults
# A link silent this long is dead, as agent/agent.py decides: 60 s until REGISTERED, then 3 heartbeats + 1 s.
SILENCE_BEFORE_REGISTERED = 60.0
STREAM_SILENCE = 3 * 15.0 + 1  # frameworks: the master's default heartbeat is 15 s
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE",
            "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_nofile_limit() -> None:
    """One socket per emulated agent: thousands of them need the hard limit, not the usual soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def new_uuid() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def leader_of(resp: aiohttp.ClientResponse) -> str:
    """host:port from a 307's protocol-relative `Location: //host:port/path`."""
    return resp.headers.get("Location", "").lstrip("/").split("/", 1)[0]


async def backoff_sleep(attempt: int) -> None:
    # Jittered, so thousands of peers that lost the leader together do not come back in lockstep.
    await asyncio.sleep(random.uniform(0.1, 0.3) * min(attempt, 5))


async def commands(handle) -> None:
    """Feed each JSON line from stdin to `handle(cmd)`; return at end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            if handle(json.loads(line)) is False:
                return


async def serve(handle, status, background: set) -> None:
    """An emulator process's life: say ready, report status, obey the driver's commands; then cancel its tasks."""
    reporter = asyncio.create_task(report_status(status))
    emit({"type": "ready"})
    try:
        await commands(handle)
    finally:
        reporter.cancel()
        for t in list(background):
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)


async def post(session: aiohttp.ClientSession, target: str, path: str, body: dict) -> int:
    """One call; the HTTP status, 0 if the connection failed or timed out."""
    try:
        async with session.post(f"http://{target}{path}", data=json.dumps(body).encode(), headers=JSON,
                                allow_redirects=False) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return 0


# ============================================================================================ agents
@dataclass
class EmuTask:
    framework_id: str
    task_id: str
    spec: dict  # the LAUNCH's task, reported back as it came when the agent re-registers
    container_id: str = field(default_factory=lambda: os.urandom(16).hex())
    state: str = "TASK_STAGING"
    terminal: bool = False
    unacked: list = field(default_factory=list)  # statuses not acknowledged yet; the head is the one sent
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class EmulatedAgent:
    def __init__(self, fleet: "AgentFleet", index: int):
        self.fleet = fleet
        self.index = index
        self.agent_id: str | None = None
        self.master: str | None = None  # the leader our live link goes to (set on REGISTERED)
        self.registered_at = 0.0  # wall clock of the latest REGISTERED
        self.ping_interval = 15.0
        self.silence = SILENCE_BEFORE_REGISTERED
        self.tasks: dict[tuple[str, str], EmuTask] = {}

    # ---- the link ----------------------------------------------------------------------------------
    def subscribe_body(self) -> bytes:
        reports = [{"framework_id": t.framework_id, "task_id": t.task_id, "state": t.state, "spec": t.spec}
                   for t in self.tasks.values()]
        return json.dumps({"type": "SUBSCRIBE", "subscribe": {
            "agent_id": self.agent_id, "hostname": f"emu-{self.index}.scale",
            "http": f"127.0.0.1:{20000 + self.index % 40000}",  # never connected to: nothing serves it
            "resources": self.fleet.resources, "attributes": [], "tasks": reports}}).encode()

    async def run(self) -> None:
        attempt = 0
        masters = self.fleet.masters
        while True:
            target = masters[(self.index + attempt) % len(masters)]  # spread first contacts over the replicas
            attempt += 1
            self.fleet.link_attempts += 1
            try:
                if await self._link(target):
                    attempt = 0  # it was registered: start over calmly
            except asyncio.TimeoutError:
                self.fleet.link_timeouts += 1
            except (aiohttp.ClientError, OSError, ValueError):
                pass
            if self.master is not None:
                self.fleet.links_lost += 1
            self.master = None
            await backoff_sleep(attempt + 1)

    async def _link(self, target: str) -> bool:
        """One SUBSCRIBE, following redirects; reads the stream until it ends. True if it was registered."""
        for _ in range(3):
            async with self.fleet.streams.post(f"http://{target}{AGENT_API}", data=self.subscribe_body(),
                                               headers=JSON, allow_redirects=False) as resp:
                if resp.status == 307:
                    target = leader_of(resp) or target
                    continue
                if resp.status != 200:
                    return False
                self.silence = SILENCE_BEFORE_REGISTERED
                decoder = RecordIODecoder()
                while chunk := await asyncio.wait_for(resp.content.readany(), self.silence):
                    for record in decoder.feed(chunk):
                        if not self._on_record(target, record):
                            return self.master is not None
                return self.master is not None
        return False

    def _on_record(self, target: str, msg: dict) -> bool:
        """Handle one command from the master; False ends the link."""
        t = msg.get("type")
        if t == "REGISTERED":
            reg = msg["registered"]
            self.agent_id = reg["agent_id"]
            self.silence = 3 * float(reg.get("heartbeat_interval_seconds", 15.0)) + 1
            self.fleet.registrations += 1
            self.ping_interval = float(reg.get("ping_interval_seconds", self.ping_interval))
            self.master, self.registered_at = target, time.time()
            for task in self.tasks.values():
                task.wakeup.set()  # resend every unacknowledged head to this leader now
        elif t == "LAUNCH":
            self._launch(msg["launch"])
        elif t == "ACKNOWLEDGE":
            a = msg["acknowledge"]
            self._acknowledged(a["framework_id"], a["task_id"], a["uuid"])
        elif t == "KILL":
            k = msg["kill"]
            task = self.tasks.get((k["framework_id"], k["task_id"]))
            if task is not None and not task.terminal:
                self._enqueue(task, "TASK_KILLED", "Command terminated by a kill request")
        elif t == "ERROR":
            return False
        return True

    async def ping_loop(self) -> None:
        await asyncio.sleep(random.uniform(0, self.ping_interval))  # spread the fleet's pings over the interval
        while True:
            if self.master is not None:
                ping = {"type": "PING", "agent_id": self.agent_id}
                status = await post(self.fleet.calls, self.master, AGENT_API, ping)
                self.fleet.pings += 1
                if status != 202:
                    self.fleet.ping_errors[status] = self.fleet.ping_errors.get(status, 0) + 1
            await asyncio.sleep(self.ping_interval)

    # ---- tasks -------------------------------------------------------------------------------------
    def _launch(self, launch: dict) -> None:
        task_spec = launch["task"]
        key = (launch["framework_id"], task_spec["task_id"])
        if key in self.tasks:
            return  # a new leader re-sends launches it cannot know arrived: idempotent, as agent/agent.py
        task = self.tasks[key] = EmuTask(key[0], key[1], task_spec)
        self.fleet.launches += 1
        if self.fleet.send_starting:
            self._enqueue(task, "TASK_STARTING")
        self._enqueue(task, "TASK_RUNNING")
        if self.fleet.task_seconds <= 0:
            self._enqueue(task, "TASK_FINISHED", "Command exited with status 0")
        else:
            asyncio.get_running_loop().call_later(self.fleet.task_seconds, self._finish, task)
        self.fleet.spawn(self._deliver(task))

    def _finish(self, task: EmuTask) -> None:
        if not task.terminal:
            self._enqueue(task, "TASK_FINISHED", "Command exited with status 0")

    def _enqueue(self, task: EmuTask, state: str, message: str | None = None) -> None:
        status = {"state": state, "source": "SOURCE_EXECUTOR", "timestamp": time.time(), "uuid": new_uuid(),
                  "container_id": task.container_id}
        if message:
            status["message"] = message
        task.state = state
        task.terminal = state in TERMINAL
        task.unacked.append(status)
        task.wakeup.set()

    def _acknowledged(self, framework_id: str, task_id: str, uuid: str) -> None:
        task = self.tasks.get((framework_id, task_id))
        if task is not None and task.unacked and task.unacked[0]["uuid"] == uuid:
            task.unacked.pop(0)
            task.wakeup.set()

    async def _deliver(self, task: EmuTask) -> None:
        """Send a task's updates one at a time, each until acknowledged; forget the task after its last ack."""
        backoff = UPDATE_RETRY_INITIAL
        while task.unacked or not task.terminal:
            if not task.unacked or self.master is None:
                task.wakeup.clear()  # no await since the check: nothing set in between is lost
                await task.wakeup.wait()
                continue
            head = task.unacked[0]
            task.wakeup.clear()  # before sending: an ack that comes back during the call is not missed
            status = await post(self.fleet.calls, self.master, AGENT_API, {
                "type": "UPDATE", "agent_id": self.agent_id,
                "update": {"framework_id": task.framework_id, "task_id": task.task_id, "status": head}})
            self.fleet.updates += 1
            if status != 202:
                self.fleet.update_errors[status] = self.fleet.update_errors.get(status, 0) + 1
            try:
                await asyncio.wait_for(task.wakeup.wait(), backoff)
            except asyncio.TimeoutError:
                backoff = min(backoff * 2, UPDATE_RETRY_MAX)
                self.fleet.update_retries += 1
                continue
            if not task.unacked or task.unacked[0] is not head:
                backoff = UPDATE_RETRY_INITIAL  # acknowledged; a kick (re-registration) keeps the backoff
        self.tasks.pop((task.framework_id, task.task_id), None)


class AgentFleet:
    def __init__(self, args):
        from eventstore.resources import Resources
        import msgspec

        self.masters = args.masters.split(",")
        self.resources = msgspec.to_builtins(Resources.parse(args.resources).to_list())
        self.task_seconds = args.task_seconds
        self.send_starting = args.starting
        self.agents = [EmulatedAgent(self, i) for i in range(args.first, args.first + args.count)]
        self.since = 0.0
        self.launches = self.updates = self.update_retries = self.pings = self.link_attempts = 0
        self.update_errors: dict[int, int] = {}  # HTTP status (0: no answer) -> count, for answers other than 202
        self.ping_errors: dict[int, int] = {}
        self.registrations = self.links_lost = self.link_timeouts = 0
        self._bg: set[asyncio.Task] = set()
        self.streams: aiohttp.ClientSession | None = None
        self.calls: aiohttp.ClientSession | None = None

    def spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def status(self) -> dict:
        since = [a.registered_at for a in self.agents if a.master is not None and a.registered_at >= self.since]
        return {"type": "status", "agents": len(self.agents),
                "linked": sum(1 for a in self.agents if a.master is not None),
                "since_count": len(since), "since_last": max(since, default=None),
                "launches": self.launches, "updates": self.updates, "update_errors": self.update_errors,
                "update_retries": self.update_retries, "pings": self.pings, "ping_errors": self.ping_errors,
                "link_attempts": self.link_attempts, "registrations": self.registrations,
                "links_lost": self.links_lost, "link_timeouts": self.link_timeouts,
                "tasks_held": sum(len(a.tasks) for a in self.agents),
                "cpu": cpu_seconds()}

    def handle(self, cmd: dict) -> bool:
        c = cmd["cmd"]
        if c == "go":
            self.since = time.time()
            for a in self.agents:
                self.spawn(a.run())
                self.spawn(a.ping_loop())
        elif c == "since":
            self.since = float(cmd["t"])
        elif c == "stop":
            return False
        return True

    async def main(self) -> None:
        # Streams: one connection each, no pool limit. Calls: a shared keep-alive pool.
        self.streams = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        self.calls = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                           timeout=aiohttp.ClientTimeout(total=10))
        try:
            await serve(self.handle, self.status, self._bg)
        finally:
            await self.streams.close()
            await self.calls.close()


async def report_status(status) -> None:
    while True:
        emit(status())
        await asyncio.sleep(0.5)


# ============================================================================================ frameworks
@dataclass
class TaskTimes:
    t_offer: float  # the OFFERS event it was launched from arrived
    t_accept: float  # ACCEPT sent
    t_running: float | None = None  # TASK_RUNNING update arrived
    t_done: float | None = None  # TASK_FINISHED's ACKNOWLEDGE answered 202
    open: bool = True  # counted in flight


class Lost(Exception):
    """The subscription is over: subscribe again."""


class EmulatedFramework:
    def __init__(self, pool: "FrameworkPool", index: int):
        self.pool = pool
        self.name = f"scale-fw-{index}"
        self.index = index
        self.framework_id: str | None = None
        self.target: str | None = None
        self.stream_id: str | None = None
        self.subscribed_at = 0.0  # wall clock of the current subscription's SUBSCRIBED
        self.first_offer_at: float | None = None  # first OFFERS on the current subscription
        self.inflight = 0
        self.next_task = 0
        self.tasks: dict[str, TaskTimes] = {}
        self.session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        try:
            while True:
                resp = await self._subscribe()
                try:
                    await self._read(resp)
                except (Lost, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                    pass
                finally:
                    resp.close()
                self.stream_id = None
                self.pool.resubscriptions += 1
        finally:
            await self.session.close()

    async def _subscribe(self) -> aiohttp.ClientResponse:
        info = {"user": "root", "name": self.name, "failover_timeout": 3600.0,
                "capabilities": [{"type": "TASK_KILLING_STATE"}]}
        body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if self.framework_id:
            info["id"] = body["framework_id"] = {"value": self.framework_id}
        masters = self.pool.masters
        attempt = 0
        while True:
            target = self.target if attempt == 0 and self.target else masters[(self.index + attempt) % len(masters)]
            attempt += 1
            for _ in range(3):
                try:
                    resp = await self.session.post(f"http://{target}{SCHEDULER_API}", json=body,
                                                   allow_redirects=False, headers={"Accept": "application/json"})
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    break
                if resp.status == 307:
                    target = leader_of(resp) or target
                    resp.release()
                    continue
                if resp.status != 200:
                    resp.release()
                    break
                self.target, self.stream_id = target, resp.headers["Mesos-Stream-Id"]
                return resp
            await backoff_sleep(attempt)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        decoder = RecordIODecoder()
        while True:
            chunk = await asyncio.wait_for(resp.content.readany(), STREAM_SILENCE)
            if not chunk:
                raise Lost("stream closed")
            now = time.time()
            for e in decoder.feed(chunk):
                t = e["type"]
                if t == "SUBSCRIBED":
                    self.framework_id = e["subscribed"]["framework_id"]["value"]
                    self.subscribed_at, self.first_offer_at = now, None
                elif t == "OFFERS":
                    if self.first_offer_at is None:
                        self.first_offer_at = now
                    self._on_offers(e["offers"]["offers"], now)
                elif t == "UPDATE":
                    self._on_update(e["update"]["status"], now)
                elif t == "ERROR":
                    raise Lost(e["error"]["message"])

    # ---- calls ---------------------------------------------------------------------------------------
    async def call(self, payload: dict) -> int:
        payload["framework_id"] = {"value": self.framework_id}
        status = await post_with_headers(self.session, self.target, payload, {"Mesos-Stream-Id": self.stream_id or ""})
        if status != 202:
            self.pool.call_errors[f"{payload['type']} {status}"] = \
                self.pool.call_errors.get(f"{payload['type']} {status}", 0) + 1
        return status

    def _on_offers(self, offers: list[dict], now: float) -> None:
        self.pool.offers += len(offers)
        unused = []
        for offer in offers:
            n = min(self.pool.per_offer, self.pool.max_inflight - self.inflight, fitting(offer))
            if self.pool.launching and n > 0:
                self._launch(offer, now, n)
            else:
                unused.append(offer["id"])
        for i in range(0, len(unused), 1000):  # the master's limit of offer ids per call
            self.pool.declined += len(unused[i:i + 1000])
            self.pool.spawn(self.call({"type": "DECLINE", "decline": {
                "offer_ids": unused[i:i + 1000], "filters": {"refuse_seconds": self.pool.decline_refuse}}}))

    def _launch(self, offer: dict, t_offer: float, n: int = 1) -> None:
        """`n` tasks on one offer, in one ACCEPT (--tasks-per-offer: how a framework packs an agent)."""
        infos, all_times = [], []
        for _ in range(n):
            tid = f"{self.name}-{self.next_task}"
            self.next_task += 1
            self.inflight += 1
            all_times.append(self.tasks.setdefault(tid, TaskTimes(t_offer=t_offer, t_accept=time.time())))
            infos.append({"name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                          "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": self.pool.cpus}},
                                        {"name": "mem", "type": "SCALAR", "scalar": {"value": self.pool.mem}}],
                          "command": {"value": "true", "shell": True}})
            self.pool.launched += 1

        async def accept() -> None:
            status = await self.call({"type": "ACCEPT", "accept": {
                "offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {"task_infos": infos}}],
                "filters": {"refuse_seconds": self.pool.accept_refuse}}})
            if status != 202:
                for times in all_times:  # refused, or the outcome is unknown (failover): no longer in flight
                    self._close(times)

        self.pool.spawn(accept())

    def _close(self, times: TaskTimes) -> None:
        if times.open:
            times.open = False
            self.inflight -= 1

    def _on_update(self, st: dict, now: float) -> None:
        tid, state = st["task_id"]["value"], st["state"]
        times = self.tasks.get(tid)
        if times is not None and state == "TASK_RUNNING" and times.t_running is None:
            times.t_running = now
        if state in TERMINAL and times is not None:
            self._close(times)
            if state != "TASK_FINISHED":
                self.pool.failed[state] = self.pool.failed.get(state, 0) + 1
        if "uuid" in st:
            self.pool.spawn(self._ack(st, times if state == "TASK_FINISHED" else None))

    async def _ack(self, st: dict, finished: TaskTimes | None) -> None:
        status = await self.call({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}})
        if status == 202 and finished is not None and finished.t_done is None:
            finished.t_done = time.time()
            self.pool.completed += 1


async def post_with_headers(session: aiohttp.ClientSession, target: str | None, payload: dict, headers: dict) -> int:
    if target is None:
        return 0
    try:
        async with session.post(f"http://{target}{SCHEDULER_API}", data=json.dumps(payload).encode(),
                                headers={**JSON, **headers}, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=30)) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return 0


def scalar(offer: dict, name: str) -> float:
    return sum(r.get("scalar", {}).get("value", 0.0) for r in offer.get("resources", []) if r.get("name") == name)


def fitting(offer: dict) -> int:
    """How many of our small tasks the offer holds."""
    return int(min(scalar(offer, "cpus") / FrameworkPool.cpus + 1e-9, scalar(offer, "mem") / FrameworkPool.mem + 1e-9))


class FrameworkPool:
    cpus, mem = 0.01, 32.0  # a small task; 32 MB is the master's default min allocatable mem

    def __init__(self, args):
        self.masters = args.masters.split(",")
        self.max_inflight = args.inflight
        self.per_offer = args.tasks_per_offer
        self.decline_refuse = args.decline_refuse
        self.accept_refuse = args.accept_refuse
        self.frameworks = [EmulatedFramework(self, i) for i in range(args.count)]
        self.launching = False
        self.since = 0.0
        self.offers = self.declined = self.launched = self.completed = self.resubscriptions = 0
        self.failed: dict[str, int] = {}
        self.call_errors: dict[str, int] = {}
        self._bg: set[asyncio.Task] = set()

    def spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def status(self) -> dict:
        again = [f.first_offer_at for f in self.frameworks
                 if f.subscribed_at >= self.since and f.first_offer_at is not None]
        return {"type": "status", "subscribed": sum(1 for f in self.frameworks if f.stream_id and f.subscribed_at),
                "offered_since": len(again), "offered_since_last": max(again, default=None),
                "subscribed_since_last": max((f.subscribed_at for f in self.frameworks
                                              if f.subscribed_at >= self.since), default=None),
                "inflight": sum(f.inflight for f in self.frameworks), "launched": self.launched,
                "completed": self.completed, "offers": self.offers, "declined": self.declined,
                "resubscriptions": self.resubscriptions, "failed": self.failed, "call_errors": self.call_errors,
                "cpu": cpu_seconds()}

    def report(self, t0: float, t1: float) -> dict:
        """What happened in the window [t0, t1): tasks finished (acknowledged) and latencies, in ms."""
        every = [t for f in self.frameworks for t in f.tasks.values()]
        done = [t for t in every if t.t_done is not None and t0 <= t.t_done < t1]
        running = [t for t in every if t.t_running is not None and t0 <= t.t_running < t1]
        to_running = [(t.t_running - t.t_offer) * 1000 for t in running]
        end_to_end = [(t.t_done - t.t_accept) * 1000 for t in done]
        return {"type": "report", "done": len(done), "running": len(running),
                "launched": sum(1 for t in every if t0 <= t.t_accept < t1),
                "offer_to_running_p50": percentile(to_running, 50), "offer_to_running_p99": percentile(to_running, 99),
                "accept_to_done_p50": percentile(end_to_end, 50), "accept_to_done_p99": percentile(end_to_end, 99)}

    def handle(self, cmd: dict) -> bool:
        c = cmd["cmd"]
        if c == "go":
            self.since = time.time()
            self.launching = True
            for f in self.frameworks:
                self.spawn(f.run())
        elif c == "launch":
            self.launching = bool(cmd["on"])
        elif c == "since":
            self.since = float(cmd["t"])
        elif c == "report":
            emit(self.report(float(cmd["t0"]), float(cmd["t1"])))
        elif c == "stop":
            return False
        return True

    async def main(self) -> None:
        await serve(self.handle, self.status, self._bg)


# ============================================================================================ entry point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.emulated")
    ap.add_argument("kind", choices=("agents", "frameworks"))
    ap.add_argument("--masters", required=True, help="comma-separated HOST:PORT of every master replica")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True, help="exit when this process is gone")
    ap.add_argument("--first", type=int, default=0, help="agents: index of the first agent (hostnames)")
    ap.add_argument("--resources", default="cpus:1;mem:1024;disk:10240;ports:[31000-32000]")
    ap.add_argument("--task-seconds", type=float, default=0.0)
    ap.add_argument("--starting", action="store_true", help="agents: send TASK_STARTING before TASK_RUNNING")
    ap.add_argument("--inflight", type=int, default=20)
    ap.add_argument("--tasks-per-offer", type=int, default=1)
    ap.add_argument("--decline-refuse", type=float, default=5.0)
    ap.add_argument("--accept-refuse", type=float, default=1.0)
    args = ap.parse_args(argv)
    exit_when_orphaned(args.parent)
    raise_nofile_limit()
    runner = AgentFleet(args) if args.kind == "agents" else FrameworkPool(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner.main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
