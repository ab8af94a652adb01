"""The chaos workload: a framework on the public Mesos v1 scheduler API that records what it did.

Run as its own process (`python -m drover.chaos.workload ...`) so the harness can kill -9 it and start
another instance with the same framework id. It launches short tasks on offers (some fail, some get
killed) and keeps one long-running service task up (a web server on an offered port, health-checked over
HTTP by its agent, probed over HTTP by the workload whenever it is reported healthy, launched again if it
ends, killed when the run drains), and one stateful writer at a time on a persistent volume (see below). It
subscribes in role `chaos`. It acknowledges updates, and survives master failovers the way a real
scheduler does: on a broken or silent stream it finds the leader again (any replica redirects to it),
re-subscribes with its framework id and reconciles.

Every operation goes to the history file as JSON lines, Jepsen-style: `invoke` before a call, then `ok`
(with the log indices the leader returned in `Drover-Log-Index`), `fail` (a definite refusal) or `info`
(outcome unknown: timeout, connection lost). Events received are `event` lines. The file doubles as
this framework's persistent store: a new instance reads it to learn its framework id and tasks.

The stateful writer: on the first offer with enough unreserved disk, one ACCEPT reserves `disk(chaos):16`, creates
the persistent volume `chaos-SEED-state` from it and launches writer #0 on it. Whenever no writer is live and an
offer holds the volume, writer #k+1 is launched on it. Writer k checks that every write the workload saw FINISH
is in the volume's `log`, in order (as a subsequence: a writer whose end is unknown may or may not have written),
exits 7 if one is missing, else appends `k`. Its launch line records `seq` and `expect`; a new instance learns
the volume, its agent and the finished writes from the history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from drover.recordio import RecordIODecoder
from eventstore.vocab import TERMINAL_STATES, TaskState

API = "/api/v1/scheduler"
# A task that reconciles as TASK_UNKNOWN is over for a framework too: the master has no record of it.
TERMINAL = TERMINAL_STATES | {TaskState.UNKNOWN}
CALL_TIMEOUT = 10.0
CPUS, MEM = 0.1, 32.0
# The service task: its agent checks it every second and kills it after 3 failures in a row (none expected: no
# fault of this harness stops a container's web server); the workload probes it on every healthy report.
SERVICE_HEALTH_CHECK = {"type": "HTTP", "delay_seconds": 0, "interval_seconds": 1, "timeout_seconds": 2,
                        "grace_period_seconds": 10, "consecutive_failures": 3}
PROBE_ATTEMPTS = 10
ROLE = "chaos"  # the workload's role: its reservation and volume are for it alone
VOLUME_MB = 16.0
VOLUME_PATH = "data"  # where a writer sees the volume: $MESOS_SANDBOX/data, its working directory's data/
# A writer's exit codes (the agent reports "Command exited with status N"): a finished write is missing from the
# volume, or the volume is not mounted at all.
LOST_WRITE_EXIT, NO_VOLUME_EXIT = 7, 8


def service_task(task_id: str, agent_id: str, port: int) -> dict:
    """A busybox httpd on `port` (one of the offer's; the host's network, Mesos's default) serving a page from
    its sandbox, with an HTTP health check on that port."""
    return {"name": "chaos service", "task_id": {"value": task_id}, "agent_id": {"value": agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}},
                          {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}],
            "command": {"value": f"echo {task_id} > index.html && exec httpd -f -p $PORT -h .", "shell": True},
            "health_check": {**SERVICE_HEALTH_CHECK, "http": {"port": port, "path": "/"}},
            "kill_policy": {"grace_period": {"nanoseconds": 2_000_000_000}}}


def volume_resource(volume_id: str, principal: str | None) -> dict:
    """The persistent volume as a v1 resource: dynamically reserved disk of ROLE with persistence and a volume at
    `data`. On an authenticated cluster the master requires the creator's principal in `disk.persistence`."""
    who = {"principal": principal} if principal else {}
    return {"name": "disk", "type": "SCALAR", "scalar": {"value": VOLUME_MB},
            "reservations": [{"type": "DYNAMIC", "role": ROLE, **who}],
            "disk": {"persistence": {"id": volume_id, **who},
                     "volume": {"container_path": VOLUME_PATH, "mode": "RW"}}}


def writer_command(seq: int, expect: list[int]) -> str:
    """Check that the writes `expect` are in data/log in that order (other lines may come between: writes whose
    outcome the workload never learned), then append `seq`. busybox sh and awk."""
    want = " ".join(str(n) for n in expect)
    check = ("awk -v want=\"%s\" 'BEGIN{n=split(want,w,\" \");i=1} $0==w[i]{i++} END{exit i<=n?%d:0}' %s/log"
             % (want, LOST_WRITE_EXIT, VOLUME_PATH))
    return (f"[ -d {VOLUME_PATH} ] || exit {NO_VOLUME_EXIT}; touch {VOLUME_PATH}/log || exit $?; {check} || exit $?; "
            f"echo {seq} >> {VOLUME_PATH}/log && sync && sleep 1")


def writer_task(task_id: str, agent_id: str, volume: dict, seq: int, expect: list[int]) -> dict:
    return {"name": "chaos stateful", "task_id": {"value": task_id}, "agent_id": {"value": agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}}, volume],
            "command": {"value": writer_command(seq, expect), "shell": True}}


def offered_volume(offer: dict, volume_id: str) -> dict | None:
    """The offer's resource of this persistent volume (matched by persistence id), as offered."""
    return next((r for r in offer.get("resources", [])
                 if (r.get("disk") or {}).get("persistence", {}).get("id") == volume_id), None)


def unreserved_disk(offer: dict) -> float:
    return sum(r.get("scalar", {}).get("value", 0.0) for r in offer.get("resources", [])
               if r.get("name") == "disk" and r.get("role", "*") == "*" and not r.get("reservations")
               and not r.get("reservation") and "disk" not in r)


def offered_ports(offer: dict) -> list[tuple[int, int]]:
    return [(r["begin"], r["end"]) for res in offer.get("resources", []) if res.get("name") == "ports"
            for r in res.get("ranges", {}).get("range", [])]


class Lost(Exception):
    """The subscription is over (stream closed or silent, master gone, 403): subscribe again."""


class FailedOver(Exception):
    """Another instance of this framework took over: this one must stop."""


@dataclass
class TaskPlan:
    task_id: str
    seconds: float
    exit_code: int  # 0: TASK_FINISHED, else TASK_FAILED
    kill_after: float | None  # seconds after TASK_RUNNING to KILL it, or None


def plan_task(seed: int, instance: int, n: int) -> TaskPlan:
    """Task n of an instance, the same for the same seed (random.Random seeded with a string is stable)."""
    rnd = random.Random(f"{seed}:{instance}:{n}")
    seconds = round(rnd.uniform(0.5, 6.0), 1)
    exit_code = 3 if rnd.random() < 0.1 else 0
    kill_after = round(rnd.uniform(0.2, 1.0), 1) if rnd.random() < 0.1 else None
    return TaskPlan(f"chaos-{seed}-i{instance}-{n:04d}", seconds, exit_code, kill_after)


class History:
    def __init__(self, path: Path, instance: int):
        self.path, self.instance = path, instance
        self._f = open(path, "a", buffering=1)

    def write(self, kind: str, **fields) -> None:
        # One write() per line on an O_APPEND file: lines of concurrent instances do not interleave.
        line = json.dumps({"t": time.time(), "inst": self.instance, "type": kind, **fields}, sort_keys=True)
        self._f.write(line + "\n")

    def close(self) -> None:
        self._f.close()


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut short by kill -9
    return out


@dataclass
class Known:
    agent_id: str | None = None
    state: str | None = None
    kill_sent: bool = False
    port: int | None = None  # a service task's port
    probed: bool = False  # a service task: reported healthy, and the workload's probe of it is over
    probing: bool = False


@dataclass
class Workload:
    masters: list[str]
    history: History
    seed: int
    instance: int
    duration: float
    drain: float
    max_inflight: int = 8
    framework_id: str | None = None
    auth: dict[str, str] = field(default_factory=dict)  # the Authorization header on a --secure cluster
    tasks: dict[str, Known] = field(default_factory=dict)
    plans: dict[str, TaskPlan] = field(default_factory=dict)
    next_n: int = 0
    target: str | None = None
    stream_id: str | None = None
    heartbeat: float = 15.0
    tls_ca: Path | None = None  # HTTPS to the masters, verified against this CA (drover chaos run --tls)
    _want_kill: list[str] = field(default_factory=list)  # tasks whose planned KILL is due
    service: str | None = None  # the service task launched and not known to have ended
    services: int = 0  # service tasks launched (by every instance)
    _probes: set[asyncio.Task] = field(default_factory=set)
    principal: str | None = None  # who the workload authenticates as (a --secure cluster)
    # The stateful writer (every instance's, learnt from the history and from updates).
    volume_agent: str | None = None  # where the volume was created (or is being created)
    volume_seen: bool = False  # the volume exists: offered, or a writer ran on it
    writer: str | None = None  # the writer launched and not known to have ended
    writes: dict[str, int] = field(default_factory=dict)  # writer task id -> its seq
    finished_writes: list[int] = field(default_factory=list)  # seqs of the writers that ended TASK_FINISHED, in order
    next_seq: int = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_ca is not None else "http"

    @property
    def volume_id(self) -> str:
        return f"chaos-{self.seed}-state"

    def writer_seq(self, tid: str) -> int | None:
        """The seq of a writer task (any instance's), from its id; None for other tasks."""
        m = re.fullmatch(rf"chaos-{self.seed}-i\d+-state-(\d+)", tid)
        return int(m.group(1)) if m else None

    def writer_update(self, tid: str, state: str) -> None:
        seq = self.writer_seq(tid)
        if seq is None:
            return
        self.writes.setdefault(tid, seq)
        self.next_seq = max(self.next_seq, seq + 1)
        if state in ("TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"):
            self.volume_seen = True  # it ran with the volume mounted
        if state == "TASK_FINISHED" and seq not in self.finished_writes:
            self.finished_writes.append(seq)
        if state in TERMINAL:
            if self.writer == tid:
                self.writer = None
        elif self.writer is None:
            self.writer = tid  # e.g. an earlier instance's, learnt by reconciliation

    def recover(self, past: list[dict]) -> None:
        """What an earlier instance recorded: the framework id and the tasks (this framework's own store)."""
        for rec in past:
            if rec["type"] == "ok" and rec.get("op") == "subscribe":
                self.framework_id = rec["framework_id"]
            elif rec["type"] == "invoke" and rec.get("op") == "launch":
                for tid in rec["task_ids"]:
                    self.tasks.setdefault(tid, Known(agent_id=rec["agent_id"]))
                if rec.get("service"):
                    self.service, self.services = rec["service"], self.services + 1
                    self.tasks[rec["service"]].port = rec.get("port")
                if rec.get("stateful"):
                    self.writer = rec["stateful"]
                    self.writes[rec["stateful"]] = rec["seq"]
                    self.next_seq = max(self.next_seq, rec["seq"] + 1)
                    if rec.get("create"):
                        self.volume_agent = rec["agent_id"]
            elif rec["type"] == "volume" and rec.get("id") == self.volume_id:
                self.volume_seen, self.volume_agent = True, rec["agent_id"]
            elif rec["type"] == "probe" and rec.get("outcome") in ("ok", "failed") and rec["task_id"] in self.tasks:
                self.tasks[rec["task_id"]].probed = True  # (else the reconciliation's healthy status probes again)
            elif rec["type"] == "event" and rec.get("event") == "UPDATE":
                k = self.tasks.setdefault(rec["task_id"], Known(agent_id=rec.get("agent_id")))
                k.state = rec["state"]
                if rec["task_id"] == self.service and k.state in TERMINAL:
                    self.service = None
                self.writer_update(rec["task_id"], rec["state"])

    # ---- connection -------------------------------------------------------------------------------
    async def subscribe(self, http: aiohttp.ClientSession) -> aiohttp.ClientResponse:
        info = {"user": "root", "name": "drover-chaos", "failover_timeout": 3600.0, "checkpoint": True,
                "roles": [ROLE], "capabilities": [{"type": "PARTITION_AWARE"}, {"type": "TASK_KILLING_STATE"},
                                                  {"type": "MULTI_ROLE"}]}
        body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if self.framework_id:
            info["id"] = {"value": self.framework_id}
            body["framework_id"] = {"value": self.framework_id}
        order = ([self.target] if self.target else []) + [m for m in self.masters if m != self.target]
        attempt = 0
        while True:
            target = order[attempt % len(order)]
            attempt += 1
            for _ in range(3):  # follow redirects to the leader
                self.history.write("invoke", op="subscribe", master=target, framework_id=self.framework_id)
                try:
                    resp = await http.post(f"{self.scheme}://{target}{API}", json=body, allow_redirects=False,
                                           headers={"Accept": "application/json"},
                                           timeout=aiohttp.ClientTimeout(total=None, connect=2, sock_read=None))
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    self.history.write("info", op="subscribe", master=target, error=repr(e)[:200])
                    break
                if resp.status == 307 and resp.headers.get("Location"):
                    self.history.write("fail", op="subscribe", master=target, status=307)
                    target = resp.headers["Location"].lstrip("/").split("/", 1)[0]
                    resp.release()
                    continue
                if resp.status != 200:
                    self.history.write("fail", op="subscribe", master=target, status=resp.status,
                                       text=(await resp.text())[:200])
                    resp.release()
                    break
                self.target, self.stream_id = target, resp.headers["Mesos-Stream-Id"]
                return resp
            # Short pauses: while no replica leads (an election takes ~1 s) every one answers 503 at once.
            await asyncio.sleep(min(0.05 * attempt, 0.5))

    async def call(self, http: aiohttp.ClientSession, op: str, payload: dict, **fields) -> bool:
        """One call on the current subscription; records invoke/ok/fail/info. False: not done (or unknown)."""
        payload["framework_id"] = {"value": self.framework_id}
        self.history.write("invoke", op=op, **fields)
        try:
            async with http.post(f"{self.scheme}://{self.target}{API}", json=payload,
                                 headers={"Mesos-Stream-Id": self.stream_id or ""},
                                 timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as r:
                text = await r.text()
                if r.status == 202:
                    idx = r.headers.get("Drover-Log-Index")
                    first, _, last = idx.partition("-") if idx else (None, "", None)
                    self.history.write("ok", op=op, index=[int(first), int(last)] if idx else None, **fields)
                    return True
                # A 503 may come after the leader proposed (it lost leadership or the proposal timed out): the
                # outcome is unknown, as Jepsen's "info". Other refusals come before anything is proposed.
                self.history.write("info" if r.status == 503 else "fail", op=op, status=r.status, text=text[:200],
                                   **fields)
                if r.status in (403, 503, 307):
                    raise Lost(f"{op}: HTTP {r.status}")
                return False
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self.history.write("info", op=op, error=repr(e)[:200], **fields)
            raise Lost(f"{op}: {e!r}") from None

    # ---- the scheduler ----------------------------------------------------------------------------
    def launching(self, started: float) -> bool:
        return time.time() - started < self.duration

    def inflight(self) -> int:
        return sum(1 for k in self.tasks.values() if k.state not in TERMINAL)

    async def on_offers(self, http, offers: list[dict], started: float) -> None:
        for offer in offers:
            agent_id = offer["agent_id"]["value"]
            cpus = sum(r.get("scalar", {}).get("value", 0.0) for r in offer.get("resources", [])
                       if r.get("name") == "cpus")
            mem = sum(r.get("scalar", {}).get("value", 0.0) for r in offer.get("resources", [])
                      if r.get("name") == "mem")
            infos, ids = [], []
            service = None
            ops: list[dict] = []
            stateful: dict | None = None
            volume = offered_volume(offer, self.volume_id)
            if volume is not None and (not self.volume_seen or self.volume_agent != agent_id):
                self.history.write("volume", id=self.volume_id, agent_id=agent_id, offer_id=offer["id"]["value"])
            if volume is not None:
                self.volume_seen, self.volume_agent = True, agent_id
            if self.launching(started) and self.writer is None and cpus >= CPUS - 1e-9 and mem >= MEM - 1e-9:
                create = (volume is None and not self.volume_seen and self.volume_agent in (None, agent_id)
                          and unreserved_disk(offer) >= VOLUME_MB - 1e-9)
                if volume is not None or create:
                    # Created (again) only where it was first tried: a CREATE that did commit makes a second one
                    # fail there ("not unique"), where on another agent it would make a second volume.
                    seq, expect = self.next_seq, list(self.finished_writes)
                    tid = f"chaos-{self.seed}-i{self.instance}-state-{seq:03d}"
                    if create:
                        vol = volume_resource(self.volume_id, self.principal)
                        reserved = {k: v for k, v in vol.items() if k != "disk"}
                        ops = [{"type": "RESERVE", "reserve": {"resources": [reserved]}},
                               {"type": "CREATE", "create": {"volumes": [vol]}}]
                        volume = vol
                    infos.append(writer_task(tid, agent_id, volume, seq, expect))
                    ids.append(tid)
                    stateful = {"stateful": tid, "seq": seq, "expect": expect, "volume": self.volume_id,
                                "create": create}
                    cpus, mem = cpus - CPUS, mem - MEM
            if self.launching(started) and self.service is None and offered_ports(offer) \
                    and cpus >= CPUS - 1e-9 and mem >= MEM - 1e-9:
                # A port that moves on with each service task: the one before may still hold its own.
                (begin, end), n = offered_ports(offer)[0], self.services
                port = begin + n % (end - begin + 1)
                service = (f"chaos-{self.seed}-i{self.instance}-service-{n:03d}", port)
                infos.append(service_task(service[0], agent_id, port))
                ids.append(service[0])
                cpus, mem = cpus - CPUS, mem - MEM
            while (self.launching(started) and self.inflight() + len(infos) < self.max_inflight
                   and cpus >= CPUS - 1e-9 and mem >= MEM - 1e-9 and len(infos) < 3):
                plan = plan_task(self.seed, self.instance, self.next_n)
                self.next_n += 1
                cmd = f"sleep {plan.seconds}" + (f"; exit {plan.exit_code}" if plan.exit_code else "")
                infos.append({"name": plan.task_id, "task_id": {"value": plan.task_id},
                              "agent_id": {"value": agent_id},
                              "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
                                            {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}}],
                              "command": {"value": cmd, "shell": True}})
                ids.append(plan.task_id)
                self.plans[plan.task_id] = plan
                cpus, mem = cpus - CPUS, mem - MEM
            if infos:
                for tid in ids:  # known before the call: its outcome may stay unknown
                    self.tasks[tid] = Known(agent_id=agent_id, state="TASK_STAGING")
                extra: dict = {}
                if service is not None:
                    self.service, self.services = service[0], self.services + 1
                    self.tasks[service[0]].port = service[1]
                    extra = {"service": service[0], "port": service[1]}
                if stateful is not None:
                    self.writer, self.next_seq = stateful["stateful"], stateful["seq"] + 1
                    self.writes[stateful["stateful"]] = stateful["seq"]
                    if stateful["create"]:
                        self.volume_agent = agent_id
                    extra.update(stateful)
                done = await self.call(http, "launch", {"type": "ACCEPT", "accept": {
                    "offer_ids": [offer["id"]],
                    "operations": ops + [{"type": "LAUNCH", "launch": {"task_infos": infos}}],
                    "filters": {"refuse_seconds": 0.5}}},
                    task_ids=ids, agent_id=agent_id, offer_id=offer["id"]["value"], **extra)
                if not done and stateful is not None and self.writer == stateful["stateful"]:
                    self.writer = None  # refused outright (an unknown outcome raises Lost and reconciles)
            else:
                await self.call(http, "decline", {"type": "DECLINE", "decline": {
                    "offer_ids": [offer["id"]], "filters": {"refuse_seconds": 1.0}}}, offer_id=offer["id"]["value"])

    async def on_update(self, http, status: dict) -> None:
        tid, state = status["task_id"]["value"], status["state"]
        agent_id = (status.get("agent_id") or {}).get("value")
        self.history.write("event", event="UPDATE", task_id=tid, state=state, agent_id=agent_id,
                           uuid=status.get("uuid"), source=status.get("source"), reason=status.get("reason"),
                           timestamp=status.get("timestamp"), healthy=status.get("healthy"),
                           message=(status.get("message") or "")[:200] or None)
        k = self.tasks.setdefault(tid, Known(agent_id=agent_id))
        k.state = state
        if agent_id:
            k.agent_id = agent_id
        self.writer_update(tid, state)
        if tid == self.service and state in TERMINAL:
            self.service = None  # launched again on a later offer, while the run goes on
        elif state == "TASK_RUNNING" and status.get("healthy") is True and k.port is not None \
                and not (k.probed or k.probing):
            # Once per service task (a reconciliation repeats its latest status, healthy included).
            k.probing = True
            probe = asyncio.create_task(self.probe(tid, k))
            self._probes.add(probe)
            probe.add_done_callback(self._probes.discard)
        if "uuid" in status:
            await self.call(http, "ack", {"type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}},
                task_id=tid, uuid=status["uuid"], state=state)
        plan = self.plans.get(tid)
        if state == "TASK_RUNNING" and plan and plan.kill_after is not None and not k.kill_sent:
            k.kill_sent = True
            asyncio.get_running_loop().call_later(plan.kill_after, self._want_kill.append, tid)

    async def probe(self, tid: str, k: Known) -> None:
        """GET the service's page after its agent reported it healthy: up to PROBE_ATTEMPTS tries a second apart,
        given up (not a failure) once the task is known to be ending. Every container of the harness shares this
        host's network (host networking), so the page is on 127.0.0.1 whatever address its agent advertises."""
        try:
            await self._probe(tid, k)
        finally:
            k.probed = True

    async def _probe(self, tid: str, k: Known) -> None:
        url = f"http://127.0.0.1:{k.port}/"
        last = ""
        async with aiohttp.ClientSession() as session:
            for attempt in range(1, PROBE_ATTEMPTS + 1):
                if k.state in TERMINAL or k.kill_sent:
                    self.history.write("probe", task_id=tid, outcome="abandoned", attempts=attempt - 1, error=last)
                    return
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        body = await r.text()
                        if r.status == 200 and body.strip() == tid:
                            self.history.write("probe", task_id=tid, outcome="ok", attempts=attempt)
                            return
                        last = f"HTTP {r.status}: {body[:80]!r}"
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    last = repr(e)[:200]
                await asyncio.sleep(1.0)
        self.history.write("probe", task_id=tid, outcome="failed", attempts=PROBE_ATTEMPTS, error=last)

    async def reconcile(self, http) -> None:
        open_tasks = sorted(t for t, k in self.tasks.items() if k.state not in TERMINAL)
        tasks = [{"task_id": {"value": t}, **({"agent_id": {"value": self.tasks[t].agent_id}}
                                               if self.tasks[t].agent_id else {})} for t in open_tasks]
        # Explicit for what we know, then implicit: a standby instance learns its predecessor's tasks.
        if tasks:
            await self.call(http, "reconcile", {"type": "RECONCILE", "reconcile": {"tasks": tasks}},
                            task_ids=open_tasks)
        await self.call(http, "reconcile", {"type": "RECONCILE", "reconcile": {"tasks": []}}, task_ids=[])

    async def run(self) -> str:
        started = time.time()
        connector = None
        if self.tls_ca is not None:
            from drover.security.tls import client_context

            connector = aiohttp.TCPConnector(ssl=client_context(self.tls_ca))
        async with aiohttp.ClientSession(connector=connector, headers=self.auth) as http:
            while True:
                resp = await self.subscribe(http)
                try:
                    outcome = await self._session(http, resp, started)
                    if outcome:
                        return outcome
                except Lost as e:
                    self.history.write("lost", why=str(e)[:200], master=self.target)
                finally:
                    resp.close()

    async def _session(self, http, resp: aiohttp.ClientResponse, started: float) -> str | None:
        decoder = RecordIODecoder()
        last_reconcile = 0.0
        while True:
            timeout = 3 * self.heartbeat + 1 if self.framework_id else 10.0
            try:
                chunk = await asyncio.wait_for(resp.content.readany(), timeout)
            except asyncio.TimeoutError:
                raise Lost("no heartbeat") from None
            except (aiohttp.ClientError, OSError) as e:
                raise Lost(f"stream: {e!r}") from None
            if not chunk:
                raise Lost("stream closed")
            for e in decoder.feed(chunk):
                t = e["type"]
                if t == "SUBSCRIBED":
                    sub = e["subscribed"]
                    self.framework_id = sub["framework_id"]["value"]
                    self.heartbeat = float(sub.get("heartbeat_interval_seconds", 15.0))
                    self.history.write("ok", op="subscribe", master=self.target, framework_id=self.framework_id)
                    await self.reconcile(http)
                    last_reconcile = time.time()
                elif t == "ERROR":
                    msg = e["error"]["message"]
                    self.history.write("event", event="ERROR", message=msg)
                    if "failed over" in msg.lower():
                        raise FailedOver(msg)
                    raise Lost(f"ERROR: {msg}")
                elif t == "OFFERS":
                    offers = e["offers"]["offers"]
                    self.history.write("event", event="OFFERS", offer_ids=[o["id"]["value"] for o in offers],
                                       master=self.target)
                    await self.on_offers(http, offers, started)
                elif t == "RESCIND":
                    self.history.write("event", event="RESCIND", offer_id=e["rescind"]["offer_id"]["value"])
                elif t == "UPDATE":
                    await self.on_update(http, e["update"]["status"])
            while self._want_kill:
                tid = self._want_kill.pop(0)
                k = self.tasks.get(tid)
                if k is not None and k.state not in TERMINAL:
                    await self.call(http, "kill", {"type": "KILL", "kill": {
                        "task_id": {"value": tid}, **({"agent_id": {"value": k.agent_id}} if k.agent_id else {})}},
                        task_id=tid)
            if not self.launching(started):
                svc = self.tasks.get(self.service) if self.service else None
                if svc is not None and svc.state not in TERMINAL and not svc.kill_sent and svc.probed:
                    # The run is draining: the service ends too, once it has been healthy and probed (a run whose
                    # faults kept it from starting gives it the drain's time; sent again after a lost subscription).
                    svc.kill_sent = await self.call(http, "kill", {"type": "KILL", "kill": {
                        "task_id": {"value": self.service},
                        **({"agent_id": {"value": svc.agent_id}} if svc.agent_id else {})}}, task_id=self.service)
                if self.inflight() == 0:
                    return "drained"
                if time.time() - started > self.duration + self.drain:
                    return "drain timed out"
                if time.time() - last_reconcile > 3.0:
                    last_reconcile = time.time()
                    await self.reconcile(http)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drover.chaos.workload")
    p.add_argument("--masters", required=True, help="comma-separated HOST:PORT of the master replicas")
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--instance", type=int, default=1)
    p.add_argument("--duration", type=float, default=30.0, help="seconds to keep launching tasks")
    p.add_argument("--drain", type=float, default=60.0, help="seconds to then wait for every task to end")
    p.add_argument("--max-inflight", type=int, default=8)
    p.add_argument("--credentials", type=Path, default=None,
                   help="authenticate as the first principal of this credentials file (a --secure cluster)")
    p.add_argument("--tls-ca", type=Path, default=None, help="HTTPS to the masters, verified against this CA file")
    args = p.parse_args(argv)
    history = History(args.history, args.instance)
    w = Workload(masters=args.masters.split(","), history=history, seed=args.seed, instance=args.instance,
                 duration=args.duration, drain=args.drain, max_inflight=args.max_inflight, tls_ca=args.tls_ca)
    if args.credentials is not None:
        from drover.security.files import load_credential

        cred = load_credential(args.credentials)
        w.auth, w.principal = {"Authorization": cred.basic_header()}, cred.principal
    w.recover(read_history(args.history))
    history.write("start", pid=os.getpid(), framework_id=w.framework_id, known_tasks=len(w.tasks))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        outcome = asyncio.run(w.run())
    except FailedOver as e:
        history.write("end", outcome="failed over", message=str(e))
        return 0
    history.write("end", outcome=outcome, open_tasks=sorted(t for t, k in w.tasks.items() if k.state not in TERMINAL))
    return 0 if outcome == "drained" else 1


if __name__ == "__main__":
    sys.exit(main())
