"""The agent process: registers with the leading master, runs tasks in Podman, reports their status.

- Master link: SUBSCRIBE on `/api/drover/agent` of any master replica, following
  307s to the leader; a broken stream means: find the leader again and
  re-register with the same agent id and the tasks we hold. With `tls_ca` the link
  is HTTPS and each master's certificate must verify against that CA (docs/tls.md).
- Status updates are reliable: per task, in order, the head is (re)sent until the
  master forwards the framework's ACKNOWLEDGE; only then the next one goes.
- Everything the agent must not forget (its id, its tasks, unacknowledged updates)
  is checkpointed in the work dir before it acts on it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import math
import os
import re
import signal
from functools import partial
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import structlog
from aiohttp import web

from agent import checks, disk, disk_limits, fetcher, probes, rules
from agent.volumes import VolumeError, VolumeStore, compatible_problem
from agent.checkpoint import CheckpointStore, TaskRecord
from agent.http_api import AgentAPI
from agent import metrics as agent_metrics
from agent.metrics import AgentMetrics
from drover import http_metrics as metrics_http
from drover.http_metrics import request_counter
from agent.gc import GarbageCollector, GCConfig, remove_tree, set_aside
from drover.recordio import RecordIODecoder
from drover.security import http as security
from drover.security.acls import ACLs, OPEN
from drover.security.credentials import Credential, Credentials
from drover.security.tls import client_context, server_context
from agent.containerizer import ContainerLaunchError, ContainerSpec, PodmanContainerizer, PodSpec
from eventstore import events as ev
from eventstore.resources import Resource, Resources, resources_problem
from eventstore.values import MAX_TEXT_LENGTH, is_valid_id
from eventstore.vocab import TERMINAL_STATES, Reason, Source, TaskState

log = structlog.get_logger("drover.agent")
MAX_REDIRECTS = 3  # 307s followed in a row when looking for the leader

TASK_GROUP_INVALID = "REASON_TASK_GROUP_INVALID"  # Mesos's reason for a refused task group


@dataclass
class AgentConfig:
    masters: list[str]  # host:port of master replicas (any of them; the agent finds the leader)
    http: str  # host:port the agent serves its own endpoints on
    work_dir: Path
    resources: Resources
    podman_socket: Path
    hostname: str = field(default_factory=socket.gethostname)
    attributes: list[ev.Label] = field(default_factory=list)
    update_retry_initial: float = 2.0  # Mesos waits 10 s; reconnecting clients here are local and fast
    update_retry_max: float = 60.0
    start_podman_service: bool = True
    # A launch that finds the podman service down (restarting) waits for it this long before TASK_FAILED.
    launch_retry_seconds: float = 60.0
    # The trust boundary (docs/security.md): this agent's own principal for the master (HTTP Basic on every call),
    # and who may read its HTTP API (None: anyone).
    credential: Credential | None = field(default=None, repr=False)
    credentials: Credentials | None = field(default=None, repr=False)
    acls: ACLs = OPEN  # what each principal may do with the agent's API (--acls; agent/http_api.py)
    # TLS (docs/tls.md). tls_cert/tls_key: serve the agent's own endpoints over HTTPS. tls_ca: reach the masters
    # over HTTPS, verifying their certificates against this CA file; None: plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # Processes (and threads) of one task's container (--task-pids-limit), in [rules.MIN_TASK_PIDS_LIMIT,
    # rules.MAX_TASK_PIDS_LIMIT]
    task_pids_limit: int = rules.DEFAULT_TASK_PIDS_LIMIT
    # Images (docs/services.md): registries (HOST:PORT) pulled from without TLS verification (--registry-insecure),
    # and how long a pull may take (--image-pull-timeout).
    insecure_registries: list[str] = field(default_factory=list)
    image_pull_timeout: float = rules.DEFAULT_IMAGE_PULL_TIMEOUT
    # The fetcher (agent/fetcher.py, docs/services.md): directories local files may be fetched from
    # (--fetcher-allowed-dir; none: local URIs are refused), and the cache's size in bytes (--fetcher-cache-size;
    # the cache is WORK_DIR/fetch-cache).
    fetcher_allowed_dirs: list[Path] = field(default_factory=list)
    fetcher_cache_size: int = fetcher.DEFAULT_CACHE_SIZE
    # Clean-up (agent/gc.py): finished sandboxes kept --gc-delay scaled by disk use, sweeps every
    # --disk-watch-interval, task logs rotated beyond --task-log-max-size.
    gc: GCConfig = field(default_factory=GCConfig)
    # Disk limits (agent/disk_limits.py, docs/services.md "Disk limits"), Mesos's disk/du: with
    # --enforce-container-disk-quota every running task's sandbox is measured every --container-disk-watch-interval
    # seconds and a task holding more than its `disk` is killed. Off by default, as in Mesos.
    enforce_container_disk_quota: bool = False
    container_disk_watch_interval: float = disk_limits.DEFAULT_CONTAINER_DISK_WATCH_INTERVAL


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.cp_store = CheckpointStore(config.work_dir)
        self.cp = self.cp_store.load()
        # Persistent volumes: what the master last checkpointed here (a sync a crash cut short is finished first).
        # Refuse to start if the flags no longer hold it, as Mesos's agent does: the data would not fit.
        self.volumes = VolumeStore(config.work_dir)
        self.checkpointed = self.volumes.load()
        if (why := compatible_problem(self.checkpointed, config.resources)) is not None:
            raise VolumeError(why)
        self._volume_lock = asyncio.Lock()
        self.tasks: dict[tuple[str, str], TaskRecord] = {(t.framework_id, t.spec.task_id): t for t in self.cp.tasks}
        self.containerizer = PodmanContainerizer(config.podman_socket, start_service=config.start_podman_service,
                                                 insecure_registries=frozenset(config.insecure_registries),
                                                 pull_timeout=config.image_pull_timeout)
        self.fetcher = fetcher.Fetcher(fetcher.FetcherConfig(
            cache_dir=config.work_dir / "fetch-cache", cache_size=config.fetcher_cache_size,
            allowed_dirs=tuple(config.fetcher_allowed_dirs), denied_dirs=(config.work_dir,)))
        self.master: str | None = None  # the leader we are linked to
        self.registered = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._refused: tuple[tuple[int, str], float] | None = None  # the last refusal logged, and when
        self._update_wakeup = asyncio.Event()
        self._bg: set[asyncio.Task] = set()
        self._watchers: dict[tuple[str, str], asyncio.Task] = {}
        self._checkers: dict[tuple[str, str], list[asyncio.Task]] = {}  # a task's health checker and checker
        self._probe_slots = asyncio.Semaphore(probes.MAX_PROBES)  # probes running at once
        # ... of which one framework's: no framework's tasks can take every slot (and stop everyone's checks)
        self._framework_probe_slots: dict[str, asyncio.Semaphore] = {}
        self._killed_by_us: set[tuple[str, str]] = set()
        self._stopping: dict[tuple[str, str], asyncio.Task] = {}
        self.metrics = AgentMetrics()  # counted at the IO edges below, read from `tasks` at scrape (agent/metrics.py)
        self.metrics.bind(self)
        self._sigkill_by: dict[tuple[str, str], float] = {}  # loop time by which a stopping task gets SIGKILL
        self._resend_all = False
        self._silence_timeout = 60.0  # until REGISTERED tells us the master's heartbeat interval
        self._ping_interval = 5.0  # REGISTERED tells us the leader's (its --agent-ping-timeout)
        # Checked before anything starts (ValueError of one line): the CLI has checked the files already.
        self._server_ssl: ssl.SSLContext | None = server_context(config.tls_cert, config.tls_key) \
            if config.tls_cert is not None or config.tls_key is not None else None
        self._client_ssl: ssl.SSLContext | None = client_context(config.tls_ca) if config.tls_ca else None
        self._scheme = "https" if self._client_ssl is not None else "http"
        self._tls_warned: set[str] = set()
        self.completed: collections.deque[TaskRecord] = collections.deque(maxlen=200)  # forgotten: for /state
        # The last measurement of each watched task's sandbox (bytes used, bytes allowed): for the statistics.
        self.disk_usage: dict[tuple[str, str], tuple[int, int]] = {}

    # ---- checkpointing --------------------------------------------------------------------------
    def checkpoint(self) -> None:
        self.cp.tasks = [r for r in self.tasks.values() if not r.refused]
        self.cp_store.save(self.cp)

    # ---- lifecycle ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        for d in (self.config.work_dir, self.config.work_dir / "meta", self.config.work_dir / "sandboxes"):
            _private_dir(d)
        await self.containerizer.start()
        await self._recover()
        auth = {"Authorization": self.config.credential.basic_header()} if self.config.credential else {}
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3), headers=auth,
            connector=aiohttp.TCPConnector(ssl=self._client_ssl) if self._client_ssl is not None else None)
        runner = await self._serve_http()
        self.gc = GarbageCollector(self.config.work_dir, self.config.gc, lambda: set(self.tasks),
                                   self._remove_orphaned_containers, self._held_executors)
        tasks = [asyncio.create_task(self._link_loop(), name="master-link"),
                 asyncio.create_task(self._update_loop(), name="status-updates"),
                 asyncio.create_task(self._ping_loop(), name="ping"),
                 asyncio.create_task(self.gc.run(), name="gc")]
        if self.config.enforce_container_disk_quota:
            tasks.append(asyncio.create_task(self._disk_loop(), name="disk-watch"))
        await stop.wait()
        checkers = [t for ts in self._checkers.values() for t in ts]
        for t in tasks + list(self._bg) + list(self._watchers.values()) + list(self._stopping.values()) + checkers:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self._session.close()
        await runner.cleanup()
        await self.containerizer.stop()

    async def _recover(self) -> None:
        """After an agent restart: re-attach to our containers; report the ones that ended while we were down."""
        if not self.tasks:
            return
        groups: dict[tuple[str, str, str | None], list[TaskRecord]] = {}
        for rec in list(self.tasks.values()):
            if rec.terminal_sent:
                continue
            if rec.spec.executor is not None and (rec.container_id is None or rec.state == TaskState.STARTING
                                                  or rec.state == TaskState.STAGING):
                # A task group's launch cut short: resumed as one (its pod and containers are found by name).
                groups.setdefault(self._group_key(rec), []).append(rec)
                continue
            if rec.container_id is None:
                # We died between accepting the launch and creating the container: launch it now.
                self._spawn(self._launch(rec))
                continue
            self._watch(rec)
            if rec.disk_limitation is not None:
                self._stop(rec, self._grace(rec))  # a disk kill we may not have begun: no TASK_KILLING (as then)
            elif rec.kill_requested or rec.health_kill is not None:
                # We may have died between checkpointing the kill and asking podman to stop the container.
                self._announce_killing(rec)
                self._stop(rec, self._grace(rec))
            else:
                self._start_checks(rec)  # a running task goes on being checked where its checkers left off
        for recs in groups.values():
            self._spawn(self._launch_group(recs))
        for rec in list(self.tasks.values()):
            # A group whose task failed or was killed just before we died: its others may not be killed yet.
            if rec.spec.executor is not None and rec.terminal_sent and rec.state in rules.GROUP_KILL_STATES:
                self._kill_group(rec)
        log.info("recovered tasks from checkpoint", tasks=len(self.tasks))

    # ---- the agent's own endpoints --------------------------------------------------------------------
    async def _serve_http(self) -> web.AppRunner:
        async def health(request):
            return web.Response(status=200)

        # The request counter outermost: a 401 is counted too.
        app = web.Application(middlewares=[request_counter(self.metrics.http_requests),
                                           security.middleware(self.config.credentials, security.agent_realm)])
        app.router.add_get("/health", health)
        AgentAPI(self).add_routes(app)  # state, files, statistics, /api/v1

        async def prometheus(request):
            return web.Response(body=self.metrics.exposition(), headers={"Content-Type": metrics_http.CONTENT_TYPE})

        async def metrics_snapshot(request):
            return web.json_response(agent_metrics.snapshot(self, self.metrics))

        # Authenticated in the read-only realm (drover/security/http.py: agent_realm), as Mesos's agent endpoints.
        app.router.add_get("/metrics", prometheus)
        for path in ("/metrics/snapshot", "/slave(1)/metrics/snapshot"):
            app.router.add_get(path, metrics_snapshot)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        host, _, port = self.config.http.rpartition(":")
        await web.TCPSite(runner, host, int(port), reuse_address=True, ssl_context=self._server_ssl).start()
        return runner

    # ---- master link ----------------------------------------------------------------------------------
    def _subscribe_body(self) -> bytes:
        reports = [ev.TaskReport(framework_id=r.framework_id, task_id=r.spec.task_id, state=r.state, spec=r.spec)
                   for r in self.tasks.values() if not r.refused and not (r.terminal_sent and not r.unacked)]
        call = {"type": "SUBSCRIBE", "subscribe": {
            "agent_id": self.cp.agent_id, "hostname": self.config.hostname, "http": self.config.http,
            "resources": msgspec.to_builtins(self.config.resources.to_list()),
            "attributes": msgspec.to_builtins(self.config.attributes),
            "tasks": msgspec.to_builtins(reports),
            "checkpointed": msgspec.to_builtins(self.checkpointed.to_list())}}
        return json.dumps(call).encode()

    async def _link_loop(self) -> None:
        i = 0
        candidates = list(self.config.masters)
        while True:
            target = candidates[i % len(candidates)]
            try:
                await self._link(target)
            except asyncio.CancelledError:
                raise
            except aiohttp.ClientSSLError as e:
                # A certificate that does not verify (wrong CA, a name it does not hold) or a master that does not
                # speak TLS: a configuration error, said once per master and error, not a passing failure.
                if f"{target} {e}" not in self._tls_warned:
                    self._tls_warned.add(f"{target} {e}")
                    log.warning("TLS connection to a master failed", master=target, error=str(e))
            except Exception as e:
                log.debug("master link attempt failed", master=target, error=str(e))
            self.registered.clear()
            self.master = None
            i += 1
            await asyncio.sleep(0.25 if i % len(candidates) else 0.5)

    def _api_url(self, master: str) -> str:
        return f"{self._scheme}://{master}/api/drover/agent"

    async def _link(self, target: str, hops: int = 0) -> None:
        url = self._api_url(target)
        async with self._session.post(url, data=self._subscribe_body(), allow_redirects=False,
                                      headers={"Content-Type": "application/json"}) as resp:
            if resp.status == 307:
                loc = resp.headers.get("Location", "")
                leader = loc.lstrip("/").split("/", 1)[0]
                if leader and leader != target:
                    # Bounded, as the chaos workload's: two replicas with stale views naming each other would
                    # otherwise bounce the agent until Python's recursion limit.
                    if hops >= MAX_REDIRECTS:
                        raise RuntimeError(f"more than {MAX_REDIRECTS} redirects from {target} (last: {leader})")
                    await self._link(leader, hops + 1)
                return
            if resp.status in (401, 403):
                # Not a transient failure: say so where the operator looks (the agent keeps retrying), once per
                # change or per minute, not at every retry.
                why = resp.headers.get("Drover-Auth-Error") or (await resp.text())[:200]
                now = time.monotonic()
                if self._refused is None or self._refused[0] != (resp.status, why) or now - self._refused[1] > 60:
                    self._refused = ((resp.status, why), now)
                    log.warning("the master refused this agent", master=target, status=resp.status, why=why,
                                principal=self.config.credential.principal if self.config.credential else None)
                raise RuntimeError(f"master {target} answered {resp.status}")
            if resp.status != 200:
                raise RuntimeError(f"master {target} answered {resp.status}")
            decoder = RecordIODecoder()
            while True:
                # A master that went silent (partitioned, hung) is as good as gone: find the leader again.
                try:
                    chunk = await asyncio.wait_for(resp.content.readany(), self._silence_timeout)
                except asyncio.TimeoutError:
                    raise RuntimeError(f"no heartbeat from {target} for {self._silence_timeout:g}s") from None
                if not chunk:
                    return
                for record in decoder.feed(chunk):
                    await self._on_message(target, record)

    async def _on_message(self, master: str, msg: dict) -> None:
        t = msg.get("type")
        if t == "REGISTERED":
            reg = msg["registered"]
            if self.cp.agent_id != reg["agent_id"]:
                self.cp.agent_id, self.cp.cluster_id = reg["agent_id"], reg.get("cluster_id")
                self.checkpoint()
            self._silence_timeout = 3 * float(reg.get("heartbeat_interval_seconds", 15.0)) + 1
            self._ping_interval = float(reg.get("ping_interval_seconds", self._ping_interval))
            self.master = master
            self.registered.set()
            self._resend_all = True
            self._update_wakeup.set()  # resend unacknowledged updates to the (new) leader now
            log.info("registered with master", master=master, agent_id=self.cp.agent_id)
        elif t == "CHECKPOINT_RESOURCES":
            # Awaited before the next record: the launches that follow it find their volumes.
            await self._checkpoint_resources(msg.get("checkpoint_resources"))
        elif t == "LAUNCH":
            self._on_launch(msg.get("launch"))
        elif t == "LAUNCH_GROUP":
            self._on_launch_group(msg.get("launch_group"))
        elif t == "KILL":
            k = msg.get("kill") or {}
            await self._kill(k.get("framework_id"), k.get("task_id"), k.get("grace_seconds"))
        elif t == "ACKNOWLEDGE":
            a = msg.get("acknowledge") or {}
            self._acknowledged(a.get("framework_id"), a.get("task_id"), a.get("uuid"))
        elif t == "ERROR":
            raise RuntimeError(msg.get("error", {}).get("message", "error from master"))

    async def _checkpoint_resources(self, body: object) -> None:
        """CHECKPOINT_RESOURCES: the whole set of dynamic reservations and volumes the master's log holds for this
        agent. Never trusted: a malformed one is logged and ignored (the next registration sends it again)."""
        raw = body.get("resources") if isinstance(body, dict) else None
        try:
            items = msgspec.convert(raw, list[Resource])
        except msgspec.ValidationError as e:
            log.warning("CHECKPOINT_RESOURCES ignored: malformed", error=str(e)[:200])
            return
        why = resources_problem(items) or next(("unreserved resources or a volume counted twice" for r in items
                                                if r.role == "*" or r.copies != 1), None)
        if why is None:
            why = compatible_problem(Resources(items), self.config.resources)
        if why is not None:
            log.warning("CHECKPOINT_RESOURCES ignored", why=why[:300])
            return
        target = Resources(items)
        async with self._volume_lock:
            if target == self.checkpointed:
                return
            before = {k for k in self.checkpointed.persistence_ids()}
            try:
                await asyncio.to_thread(self.volumes.sync, target)
            except (VolumeError, OSError) as e:
                # Mesos's agent exits here; this one says so and keeps the old set (a re-registration retries).
                log.error("persistent volumes could not be synced with the master's checkpoint", error=str(e))
                return
            self.checkpointed = target
            after = set(target.persistence_ids())
            log.info("checkpointed resources updated", resources=target.format()[:500],
                     created=sorted(f"{r}/{p}" for r, p in after - before),
                     destroyed=sorted(f"{r}/{p}" for r, p in before - after))

    def _volume_mounts(self, resources: list[Resource]) -> tuple[list[tuple[str, str, bool, bool]], str | None]:
        """The task's volumes as (host dir, container path, read only, shared), or why it cannot have them: one
        this agent has not checkpointed (Mesos: TASK_DROPPED, REASON_RESOURCES_UNKNOWN)."""
        known = set(self.checkpointed.persistence_ids())
        mounts = []
        for r in resources:
            if r.persistence is None:
                continue
            if (r.role, r.persistence.id) not in known or r.volume is None:
                return [], ("The checkpointed resources being used by the task or task group are unknown to the "
                            f"agent: persistent volume '{r.persistence.id}' of role '{r.role}'")
            try:
                host = self.volumes.path(r.role, r.persistence.id)
            except VolumeError as e:
                return [], str(e)
            mounts.append((str(host), r.volume.container_path, r.volume.mode == "RO", r.shared))
        return mounts, None

    def _on_launch(self, launch: object) -> None:
        """A LAUNCH from the master. Never trusted: ids are checked before anything is built from them, and a
        launch that cannot run ends with a status instead of breaking the master link."""
        task = launch.get("task") if isinstance(launch, dict) else None
        fid = launch.get("framework_id") if isinstance(launch, dict) else None
        tid = task.get("task_id") if isinstance(task, dict) else None
        if not isinstance(fid, str) or not isinstance(tid, str):
            log.warning("LAUNCH without a framework id and task id ignored (no task to report on)")
            return
        info = launch.get("framework_info")
        info = info if isinstance(info, dict) else {}
        key = (fid, tid)
        problem = rules.launch_problem(fid, tid, task.get("agent_id"), self.cp.agent_id)
        spec: ev.TaskSpec | None = None
        try:
            spec = msgspec.convert(task, ev.TaskSpec)
        except msgspec.ValidationError as e:
            problem = problem or f"Invalid task: {e}"
        if spec is not None:
            problem = problem or rules.ports_problem(
                spec.resources, spec.network, ((m.host_port, m.protocol) for m in spec.port_mappings))
            if spec.executor is not None:
                problem = problem or "A task of a task group comes in a LAUNCH_GROUP, with its group"
        existing = self.tasks.get(key)
        if existing is not None:
            if existing.refused or (problem is None and existing.spec == spec):
                return  # idempotent: a new leader re-sends launches it cannot know we got
            self._refuse_reused_id(existing, info)
            return
        if problem is not None:
            # Nothing is created for it, nor checkpointed: an id that is not a valid path component never
            # becomes one. After an agent restart the master re-sends the launch and it is refused again.
            placeholder = spec or ev.TaskSpec(task_id=tid, name="", agent_id="", resources=[],
                                              command=ev.CommandSpec())
            rec = TaskRecord(framework_id=fid, spec=placeholder, framework_info=info, refused=True)
            self.tasks[key] = rec
            log.warning("launch refused", framework_id=fid[:64], task_id=tid[:64], problem=problem)
            self._status(rec, TaskState.ERROR, reason=Reason.TASK_INVALID, message=problem)
            return
        rec = TaskRecord(framework_id=fid, spec=spec, framework_info=info, launch_id=uuid.uuid4().hex)
        self.tasks[key] = rec
        self.checkpoint()
        self._spawn(self._launch(rec))

    def _refuse_reused_id(self, rec: TaskRecord, framework_info: dict) -> None:
        """A LAUNCH of a different task under the ID of a task this agent still holds (running, or ended with
        its final status not acknowledged yet). As Mesos's agent (slave.cpp, Slave::run, MESOS-9657): the new
        task is dropped (TASK_DROPPED, or TASK_LOST for frameworks that are not partition-aware) with
        REASON_TASK_INVALID; the task already here is left alone. The status goes on that task ID's update
        stream, after the updates already queued there."""
        tid = rec.spec.task_id
        held = "ended, its final status not acknowledged yet" if rec.terminal_sent else f"in state {rec.state}"
        message = (f"Task ID '{tid}' is already in use on this agent by a task that is {held}: a task ID "
                   f"cannot be reused until the agent has forgotten the earlier task")
        log.warning("launch refused: task id in use", framework_id=rec.framework_id, task_id=tid)
        self._enqueue(rec, self._new_status(rules.reused_id_state(framework_info), Source.AGENT,
                                            Reason.TASK_INVALID, message, None))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ---- tasks ----------------------------------------------------------------------------------------
    def _container_name(self, rec: TaskRecord) -> str:
        raw = f"{self.cp.agent_id}-{rec.framework_id}-{rec.spec.task_id}"
        clean = re.sub(r"[^a-zA-Z0-9_.-]", "_", raw)[:100]
        # The launch id makes each launch's name its own (a reused task id must not find the earlier container),
        # while a launch resumed after an agent restart finds the container it may have created already.
        unique = raw if rec.launch_id is None else f"{raw}/{rec.launch_id}"
        return f"drover-{clean}-{hashlib.sha1(unique.encode()).hexdigest()[:8]}"

    def _grace(self, rec: TaskRecord) -> float:
        """The grace period of the task's kill: the latest KILL's own, else the task's kill policy, else 3 s."""
        return rules.kill_grace(rec.kill_grace_seconds, rec.spec.kill_grace_seconds)

    def _killed_before_launch(self, rec: TaskRecord) -> None:
        self._status(rec, TaskState.KILLED, reason=Reason.TASK_KILLED_DURING_LAUNCH,
                     message="Task killed before it was launched")
        # After an agent restart, or a launch cut short, the container may exist although we never recorded its id.
        self._spawn(self._kill_strays(rec.framework_id, rec.spec.task_id, self._grace(rec)))

    async def _launch(self, rec: TaskRecord) -> None:
        """Launch the task; whatever goes wrong, the task ends with a status (never left in STARTING)."""
        try:
            await self._launch_task(rec)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("task launch failed unexpectedly", task=rec.spec.task_id)
            self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED,
                         message=f"The agent could not launch the task: {e}")
            self._spawn(self._kill_strays(rec.framework_id, rec.spec.task_id, self._grace(rec)))

    async def _launch_task(self, rec: TaskRecord) -> None:
        launched = time.monotonic()
        if rec.kill_requested:
            self._killed_before_launch(rec)
            return
        # Checked again: a record from a checkpoint written before ids were checked must not become a path either.
        problem = rules.launch_problem(rec.framework_id, rec.spec.task_id, rec.spec.agent_id, self.cp.agent_id)
        if problem is not None:
            self._status(rec, TaskState.ERROR, reason=Reason.TASK_INVALID, message=problem)
            return
        volumes, unknown = self._volume_mounts(rec.spec.resources)
        if unknown is not None:
            self._status(rec, rules.reused_id_state(rec.framework_info), reason=Reason.RESOURCES_UNKNOWN,
                         message=unknown)
            return
        if rec.state == TaskState.STAGING:  # a launch resumed after an agent restart already announced it
            self._status(rec, TaskState.STARTING, source=Source.EXECUTOR)
        try:
            user = rules.task_user(rec.spec.command.user, rec.framework_info)
        except rules.UserProblem as e:
            self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED, message=str(e))
            return
        res = Resources(rec.spec.resources)
        sandbox: Path | None = None
        try:
            sandbox = rules.sandbox_path(self.config.work_dir, rec.framework_id, rec.spec.task_id)
            sandbox.mkdir(parents=True, exist_ok=True)
            rules.sandbox_path(self.config.work_dir, rec.framework_id, rec.spec.task_id)  # still inside
            sandbox.parent.chmod(0o700)  # the framework's sandboxes: the containerizer gives this one to the task
        except rules.UnsafePath as e:
            self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED,
                         message=f"Refusing to use the task's sandbox: {e}")
            return
        except OSError as e:
            self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED,
                         message=f"Cannot create the task's sandbox {sandbox or self.config.work_dir}: "
                                 f"{e.strerror or e}")
            return
        # Marathon's PORT0..n/PORT/PORTS first: the framework's own variables win, the MESOS_* ones are the agent's.
        env = rules.port_environment(rec.spec.resources)
        env.update({v.key: v.value for v in rec.spec.command.env})
        env.update({"MESOS_TASK_ID": rec.spec.task_id, "MESOS_FRAMEWORK_ID": rec.framework_id,
                    "MESOS_AGENT_ID": self.cp.agent_id or ""})
        spec = ContainerSpec(
            name=self._container_name(rec), image=rec.spec.image, shell=rec.spec.command.shell,
            value=rec.spec.command.value, arguments=list(rec.spec.command.arguments), env=env,
            # None (no such resource): the containerizer's default limits apply, never none at all
            cpus=res.scalar("cpus") or None, mem_mb=res.scalar("mem") or None,
            labels={"drover.agent": self.cp.agent_id or "", "drover.framework": rec.framework_id,
                    "drover.task": rec.spec.task_id},
            sandbox_dir=sandbox, user=user, pids_limit=self.config.task_pids_limit,
            network=rules.network_mode(rec.spec.network),
            ports=[(m.host_port, m.container_port, m.protocol) for m in rec.spec.port_mappings],
            volumes=volumes,
        )
        try:
            self.containerizer.validate(spec)  # the task's own fault: no waiting for podman would help
        except ContainerLaunchError as e:
            self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED, message=str(e))
            return
        if rec.spec.command.uris:
            # Into the sandbox before the container exists; the containerizer then gives the sandbox (and so the
            # fetched files) to the task's user. After an agent restart mid-fetch the launch, fetch included, is
            # done again (files are replaced, cached URIs come from the cache).
            try:
                # A KILL stops the fetch (between chunks and archive members): the task then never starts.
                await self.fetcher.fetch_all(rec.spec.command.uris, sandbox, cancelled=lambda: rec.kill_requested)
            except fetcher.Cancelled:
                self._killed_before_launch(rec)
                return
            except fetcher.FetchError as e:
                self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED, message=str(e))
                return
            if rec.kill_requested:
                self._killed_before_launch(rec)
                return
        deadline = time.monotonic() + self.config.launch_retry_seconds
        backoff = 0.25
        while True:
            try:
                # the image first (a pull may take long): a task killed meanwhile never gets a container
                await self.containerizer.prepare_image(spec.image)
                if rec.kill_requested:
                    self._killed_before_launch(rec)
                    return
                cid = await self.containerizer.launch(spec)
                break
            except Exception as e:
                self.metrics.podman_error("launch")
                # The podman service is down (killed, restarting): the task is not at fault, so wait for the
                # service rather than fail it; a relaunch is idempotent (the container name is the task's).
                # A connection error (requests' are OSErrors) is the service's too, even if it answers again by
                # the time we ask (it was restarting).
                unreachable = isinstance(e, OSError) and not isinstance(e, ContainerLaunchError)
                if time.monotonic() < deadline and not rec.kill_requested and (
                        unreachable or not await self.containerizer.available()):
                    log.warning("podman service unavailable; launch retried", task=rec.spec.task_id, error=str(e))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if rec.kill_requested:
                    self._killed_before_launch(rec)
                    return
                msg = str(e) if isinstance(e, ContainerLaunchError) else f"launch failed: {e}"
                self._status(rec, TaskState.FAILED, reason=Reason.CONTAINER_LAUNCH_FAILED, message=msg)
                # The service may have created (even started) it before it went away: nothing of it may run on.
                self._spawn(self._kill_strays(rec.framework_id, rec.spec.task_id, self._grace(rec)))
                return
        rec.container_id = cid
        self.checkpoint()
        if rec.kill_requested:
            self._stop(rec, self._grace(rec))
        self.metrics.launch_seconds.observe(time.monotonic() - launched)
        self._status(rec, TaskState.RUNNING, source=Source.EXECUTOR, container_id=cid)
        self._watch(rec)
        self._start_checks(rec)

    def _watch(self, rec: TaskRecord) -> None:
        key = (rec.framework_id, rec.spec.task_id)
        if key not in self._watchers:
            self._watchers[key] = asyncio.create_task(self._wait_exit(rec))

    async def _wait_exit(self, rec: TaskRecord) -> None:
        key = (rec.framework_id, rec.spec.task_id)
        try:
            # While the podman service is down or restarting the container (run by conmon) lives on: keep asking.
            _, st = await _with_backoff(lambda: self.containerizer.wait(rec.container_id),
                                        "cannot wait for a container yet", rec.spec.task_id,
                                        on_error=partial(self.metrics.podman_error, "wait"))
        finally:
            self._watchers.pop(key, None)
        out = rules.exit_outcome(st, killed=rec.kill_requested or key in self._killed_by_us
                                 or rec.health_kill is not None, disk_limitation=rec.disk_limitation)
        if rec.health_kill is not None and out.state == TaskState.KILLED:
            # Killed by its failing health check: `healthy: false` (as Mesos's command executor), and (a Drover
            # choice, where Mesos sets no reason) the health check's reason and a message saying what failed.
            self._status(rec, out.state, source=out.source, reason=Reason.TASK_HEALTH_CHECK_STATUS_UPDATED,
                         message=rec.health_kill, healthy=False)
        else:
            # As Mesos's default executor: once a task of a group was killed by its health check, every later
            # terminal status of the group says `healthy: false` too (the group ended because of it).
            self._status(rec, out.state, source=out.source, reason=out.reason, message=out.message,
                         healthy=False if rec.group_unhealthy else None)
        if rec.spec.executor is not None and out.state in rules.GROUP_KILL_STATES:
            self._kill_group(rec)

    async def _kill(self, framework_id: object, task_id: object, grace: object) -> None:
        """A KILL from the master. Never blocks nor fails the master link: podman's stop (which may take the
        whole grace period, or fail while the podman service is down) runs in the background, retried. The grace
        period is bounded (rules.kill_grace)."""
        if not (is_valid_id(framework_id) and is_valid_id(task_id)):
            log.warning("KILL with an invalid id ignored (no task of ours can have it)")
            return
        key = (framework_id, task_id)
        rec = self.tasks.get(key)
        if rec is None or rec.terminal_sent:
            # Not ours (any more): maybe a container we lost track of; make sure it is gone.
            self._spawn(self._kill_strays(framework_id, task_id, rules.kill_grace(grace)))
            return
        own = rules.kill_grace(grace) if rules.is_grace(grace) else None
        self._stop_checks(rec)  # as Mesos's executor: no (health) check updates once the task is being killed
        if not rec.kill_requested or (own is not None and own != rec.kill_grace_seconds):
            rec.kill_requested = True
            rec.kill_grace_seconds = own if own is not None else rec.kill_grace_seconds
            self.checkpoint()
        if rec.container_id is not None:
            self._announce_killing(rec)
            self._stop(rec, self._grace(rec))
        # else: _launch sees kill_requested once the container exists (or before creating it)

    def _announce_killing(self, rec: TaskRecord) -> None:
        """As Mesos's command executor: TASK_KILLING when the kill of a running task starts, only to frameworks with
        the TASK_KILLING_STATE capability, and once (the master re-sends KILLs when the agent re-registers). Then
        SIGTERM, and SIGKILL after the grace period (_stop)."""
        if rec.state == TaskState.RUNNING and rules.sends_killing(rec.framework_info):
            self._status(rec, TaskState.KILLING, source=Source.EXECUTOR)

    def _stop(self, rec: TaskRecord, grace: float) -> None:
        key = (rec.framework_id, rec.spec.task_id)
        self._killed_by_us.add(key)
        now = asyncio.get_running_loop().time()
        if key in self._stopping:
            # Already on it (the master re-sends KILLs on re-registration). As Mesos's command executor: a later
            # KILL whose grace period ends sooner brings the SIGKILL forward; one that ends later changes nothing.
            if now + grace < self._sigkill_by.get(key, math.inf):
                self._sigkill_by[key] = now + grace
                self._spawn(self._escalate(rec, grace))
            return
        self._sigkill_by[key] = now + grace
        task = asyncio.create_task(self._stop_container(rec, grace))
        self._stopping[key] = task

        def done(_t: asyncio.Task) -> None:
            self._stopping.pop(key, None)
            self._sigkill_by.pop(key, None)

        task.add_done_callback(done)

    async def _escalate(self, rec: TaskRecord, grace: float) -> None:
        """SIGKILL (podman stop with no grace) after `grace` seconds, unless the task has ended by then."""
        await asyncio.sleep(grace)
        if not rec.terminal_sent:
            await _with_backoff(lambda: self.containerizer.kill(rec.container_id, 0.0), "kill failed; retrying",
                                rec.spec.task_id, go_on=lambda: not rec.terminal_sent,
                                on_error=partial(self.metrics.podman_error, "kill"))

    async def _stop_container(self, rec: TaskRecord, grace: float) -> None:
        await _with_backoff(lambda: self.containerizer.kill(rec.container_id, grace), "kill failed; retrying",
                            rec.spec.task_id, go_on=lambda: not rec.terminal_sent,
                            on_error=partial(self.metrics.podman_error, "kill"))

    async def _kill_strays(self, framework_id: str, task_id: str, grace: float) -> None:
        async def kill_running() -> None:
            for c in await self.containerizer.list({"drover.framework": framework_id, "drover.task": task_id}):
                if c.status == "running":
                    await self.containerizer.kill(c.container_id, grace)

        await _with_backoff(kill_running, "cannot check for a stray container yet", task_id, attempts=20,
                            on_error=partial(self.metrics.podman_error, "kill"))

    # ---- task groups (LAUNCH_GROUP): one Podman pod per executor ----------------------------------------------------
    @staticmethod
    def _group_key(rec: TaskRecord) -> tuple[str, str, str | None]:
        ex = rec.spec.executor
        return rec.framework_id, ex.executor_id if ex is not None else "", rec.launch_id

    def _group_of(self, rec: TaskRecord) -> list[TaskRecord]:
        """The tasks of rec's group the agent holds (rec too, if it still holds it), in the group's order."""
        key = self._group_key(rec)
        return [r for r in self.tasks.values() if r.spec.executor is not None and not r.refused
                and self._group_key(r) == key]

    def _held_executors(self) -> set[tuple[str, str]]:
        return {(r.framework_id, r.spec.executor.executor_id) for r in list(self.tasks.values())
                if r.spec.executor is not None}

    def _pod_name(self, rec: TaskRecord) -> str:
        ex = rec.spec.executor
        raw = f"{self.cp.agent_id}-{rec.framework_id}-{ex.executor_id if ex else ''}"
        clean = re.sub(r"[^a-zA-Z0-9_.-]", "_", raw)[:100]
        return f"drover-pod-{clean}-{hashlib.sha1(f'{raw}/{rec.launch_id}'.encode()).hexdigest()[:8]}"

    def _on_launch_group(self, lg: object) -> None:
        """A LAUNCH_GROUP from the master: a task group, launched as one (all of it, or none). Never trusted: ids and
        the group are checked before anything is built from them; a group that cannot run ends with a status for
        each of its tasks. A group the agent already has is ignored (a new leader re-sends it)."""
        raw = lg.get("tasks") if isinstance(lg, dict) else None
        fid = lg.get("framework_id") if isinstance(lg, dict) else None
        if not isinstance(fid, str) or not isinstance(raw, list) or not raw \
                or not all(isinstance(t, dict) and isinstance(t.get("task_id"), str) for t in raw):
            log.warning("LAUNCH_GROUP without a framework id and task ids ignored (no task to report on)")
            return
        info = lg.get("framework_info") if isinstance(lg, dict) else None
        info = info if isinstance(info, dict) else {}
        tids: list[str] = [t["task_id"] for t in raw]
        problem: str | None = None
        specs: list[ev.TaskSpec | None] = []
        for t in raw:
            problem = problem or rules.launch_problem(fid, t["task_id"], t.get("agent_id"), self.cp.agent_id)
            try:
                specs.append(msgspec.convert(t, ev.TaskSpec))
            except msgspec.ValidationError as e:
                problem = problem or f"Invalid task: {e}"
                specs.append(None)
        if problem is None:
            problem = rules.group_problem(specs)
        existing = [self.tasks.get((fid, tid)) for tid in tids]
        if any(e is not None for e in existing):
            if problem is None and all(e is not None and (e.refused or e.spec == sp)
                                       for e, sp in zip(existing, specs, strict=True)):
                return  # idempotent: a new leader re-sends launches it cannot know we got
            # A task id of the group is in use here: none of the group runs (as Mesos's agent drops it).
            for tid, e, sp in zip(tids, existing, specs, strict=True):
                if e is not None:
                    if not (e.refused or e.spec == sp):
                        self._refuse_reused_id(e, info)
                    continue
                self._refuse(fid, tid, sp, info, rules.reused_id_state(info), Reason.TASK_INVALID,
                             "Another task of its task group has a task ID in use on this agent")
            return
        if problem is not None:
            for tid, sp in zip(tids, specs, strict=True):
                self._refuse(fid, tid, sp, info, TaskState.ERROR, TASK_GROUP_INVALID, problem)
            return
        launch_id = uuid.uuid4().hex  # one for the group: its pod's name, and how its tasks find each other
        recs = [TaskRecord(framework_id=fid, spec=sp, framework_info=info, launch_id=launch_id)
                for sp in specs if sp is not None]
        for rec in recs:
            self.tasks[(fid, rec.spec.task_id)] = rec
        self.checkpoint()
        self._spawn(self._launch_group(recs))

    def _refuse(self, fid: str, tid: str, spec: ev.TaskSpec | None, info: dict, state: str, reason: str,
                message: str) -> None:
        """A launched task refused before anything is created for it (not checkpointed; see _on_launch)."""
        placeholder = spec or ev.TaskSpec(task_id=tid, name="", agent_id="", resources=[], command=ev.CommandSpec())
        rec = TaskRecord(framework_id=fid, spec=placeholder, framework_info=info, refused=True)
        self.tasks[(fid, tid)] = rec
        log.warning("launch refused", framework_id=fid[:64], task_id=tid[:64], problem=message)
        self._status(rec, state, reason=reason, message=message)

    def _fail_group(self, recs: list[TaskRecord], message: str, state: str = TaskState.FAILED,
                    reason: str = Reason.CONTAINER_LAUNCH_FAILED) -> None:
        """The group's launch failed: every task TASK_FAILED (TASK_KILLED if a kill of the group came meanwhile: a
        killed group never ends FAILED), and its pod removed, with every container in it (a started one is killed)."""
        killed = any(r.kill_requested for r in recs)
        for rec in recs:
            if killed:
                self._status(rec, TaskState.KILLED, reason=Reason.TASK_KILLED_DURING_LAUNCH,
                             message="Task killed before it was launched")
            else:
                self._status(rec, state, reason=reason, message=message)
        # Nothing of it may run on: its pod (and every container in it) goes now.
        self._spawn(self._remove_group_pod(recs))

    async def _remove_group_pod(self, recs: list[TaskRecord]) -> None:
        """Remove a failed group's pod with its containers (podman kills a running one), retried with backoff as
        _kill_strays is: the podman service being down is often why the launch failed, and a container started
        before that must not run on while its task reports FAILED."""
        pod = self._pod_name(recs[0])
        done, _ = await _with_backoff(lambda: self.containerizer.remove_pod(pod),
                                      "cannot remove a failed task group's pod yet", recs[0].spec.task_id,
                                      attempts=20, on_error=partial(self.metrics.podman_error, "remove"))
        if not done:  # tried again when its last task is forgotten (_forget)
            log.warning("a failed task group's pod not removed", pod=pod)

    def _kill_starting_group(self, recs: list[TaskRecord]) -> None:
        """A kill of a group whose containers exist (some maybe started): every task of it is killed and watched,
        and ends TASK_KILLED (a container never started is removed by the kill: `containerizer.kill`)."""
        for r in recs:  # a kill of one task of a group is a kill of all of it (default executor)
            r.kill_requested = True
        self.checkpoint()
        for r in recs:
            self._stop(r, self._grace(r))
            self._watch(r)

    def _fresh_executor_sandbox(self, recs: list[TaskRecord], shared: Path) -> None:
        """A new group's executor sandbox starts empty: one left by an earlier group of the same executor id (that
        the agent has forgotten, or whose tasks have all ended) is set aside and removed, never followed."""
        first = recs[0]
        ex = first.spec.executor
        assert ex is not None
        mine = {id(r) for r in recs}
        if any(id(r) not in mine and not r.terminal_sent and r.framework_id == first.framework_id
               and r.spec.executor is not None and r.spec.executor.executor_id == ex.executor_id
               for r in list(self.tasks.values())):
            log.warning("executor sandbox still used by a live group: not emptied", executor=ex.executor_id)
            return
        aside = set_aside(shared)
        if aside is not None:
            log.info("stale executor sandbox set aside", executor=ex.executor_id)
            self._spawn(asyncio.to_thread(remove_tree, aside))

    async def _launch_group(self, recs: list[TaskRecord]) -> None:
        """Launch a task group; whatever goes wrong, each of its tasks ends with a status."""
        try:
            await self._launch_group_tasks(recs)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("task group launch failed unexpectedly", tasks=[r.spec.task_id for r in recs])
            self._fail_group(recs, f"The agent could not launch the task group: {e}")

    async def _launch_group_tasks(self, recs: list[TaskRecord]) -> None:
        """The pod first (the group's network namespace, and its ports), then every task's container created in it,
        then all of them started: no task of the group starts before every one of them could be created."""
        launched = time.monotonic()
        # Nothing of this launch exists yet (a launch resumed after an agent restart announced TASK_STARTING before
        # it made anything): its executor sandbox, if there is one, is an earlier group's.
        fresh = all(r.state == TaskState.STAGING for r in recs)
        if any(r.kill_requested for r in recs):
            for r in recs:
                self._killed_before_launch(r)
            return
        for r in recs:
            problem = rules.launch_problem(r.framework_id, r.spec.task_id, r.spec.agent_id, self.cp.agent_id)
            if problem is not None:
                for r2 in recs:
                    self._status(r2, TaskState.ERROR, reason=TASK_GROUP_INVALID, message=problem)
                return
        for r in recs:
            if r.state == TaskState.STAGING:  # a launch resumed after an agent restart already announced it
                self._status(r, TaskState.STARTING, source=Source.EXECUTOR)
        first = recs[0]
        ex = first.spec.executor
        assert ex is not None
        fid = first.framework_id
        try:
            shared = rules.executor_sandbox_path(self.config.work_dir, fid, ex.executor_id)
            _private_dir(self.config.work_dir / "executors")
            if fresh:
                self._fresh_executor_sandbox(recs, shared)
            shared.mkdir(parents=True, exist_ok=True)
            rules.executor_sandbox_path(self.config.work_dir, fid, ex.executor_id)  # still inside
            shared.parent.chmod(0o700)
            # Every task of the group may write here, whatever user it runs as (sticky, as /tmp): only the group's
            # containers see it (its parents are the agent's alone).
            shared.chmod(0o1777)
        except (rules.UnsafePath, OSError) as e:
            self._fail_group(recs, f"Cannot create the task group's sandbox: {e}")
            return
        specs: list[ContainerSpec] = []
        pod = self._pod_name(first)
        for r in recs:
            try:
                user = rules.task_user(r.spec.command.user, r.framework_info)
                sandbox = rules.sandbox_path(self.config.work_dir, fid, r.spec.task_id)
                sandbox.mkdir(parents=True, exist_ok=True)
                rules.sandbox_path(self.config.work_dir, fid, r.spec.task_id)  # still inside
                sandbox.parent.chmod(0o700)
            except (rules.UserProblem, rules.UnsafePath, OSError) as e:
                self._fail_group(recs, f"Task '{r.spec.task_id}' of the group cannot be launched: {e}")
                return
            volumes, unknown = self._volume_mounts(r.spec.resources)
            if unknown is not None:
                self._fail_group(recs, unknown, state=rules.reused_id_state(r.framework_info),
                                 reason=Reason.RESOURCES_UNKNOWN)
                return
            res = Resources(r.spec.resources)
            env = rules.port_environment(list(r.spec.resources) + list(ex.resources))
            env.update({v.key: v.value for v in r.spec.command.env})
            env.update({"MESOS_TASK_ID": r.spec.task_id, "MESOS_FRAMEWORK_ID": fid,
                        "MESOS_AGENT_ID": self.cp.agent_id or "", "MESOS_EXECUTOR_ID": ex.executor_id})
            specs.append(ContainerSpec(
                name=self._container_name(r), image=r.spec.image, shell=r.spec.command.shell,
                value=r.spec.command.value, arguments=list(r.spec.command.arguments), env=env,
                cpus=res.scalar("cpus") or None, mem_mb=res.scalar("mem") or None,
                labels={"drover.agent": self.cp.agent_id or "", "drover.framework": fid,
                        "drover.task": r.spec.task_id, "drover.executor": ex.executor_id},
                sandbox_dir=sandbox, user=user, pids_limit=self.config.task_pids_limit,
                network=rules.network_mode(ex.network), pod=pod, shared_dir=shared, volumes=volumes))
        try:
            for cs in specs:
                self.containerizer.validate(cs)
        except ContainerLaunchError as e:
            self._fail_group(recs, str(e))
            return
        for r, cs in zip(recs, specs, strict=True):
            if r.spec.command.uris:
                try:
                    # A KILL of any task of the group stops the fetch: then no task of it starts.
                    await self.fetcher.fetch_all(r.spec.command.uris, cs.sandbox_dir,
                                                 cancelled=lambda: any(t.kill_requested for t in recs))
                except fetcher.Cancelled:
                    for t in recs:
                        self._killed_before_launch(t)
                    return
                except fetcher.FetchError as e:
                    self._fail_group(recs, f"Task '{r.spec.task_id}': {e}")
                    return
        pod_spec = PodSpec(name=pod, network=rules.network_mode(ex.network),
                           ports=[(m.host_port, m.container_port, m.protocol) for m in ex.port_mappings],
                           labels={"drover.agent": self.cp.agent_id or "", "drover.framework": fid,
                                   "drover.executor": ex.executor_id, "drover.launch": first.launch_id or ""})
        deadline = time.monotonic() + self.config.launch_retry_seconds
        backoff = 0.25
        while True:
            try:
                for cs in specs:
                    await self.containerizer.prepare_image(cs.image)
                if any(r.kill_requested for r in recs):
                    for r in recs:
                        self._killed_before_launch(r)
                    return
                await self.containerizer.create_pod(pod_spec)
                cids = [await self.containerizer.launch(cs, start=False) for cs in specs]
                break
            except Exception as e:
                self.metrics.podman_error("launch_group")
                if time.monotonic() < deadline and not any(r.kill_requested for r in recs) \
                        and not await self.containerizer.available():
                    log.warning("podman service unavailable; group launch retried", executor=ex.executor_id,
                                error=str(e))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if any(r.kill_requested for r in recs):
                    for r in recs:
                        self._killed_before_launch(r)
                    return
                msg = str(e) if isinstance(e, ContainerLaunchError) else f"launch failed: {e}"
                self._fail_group(recs, msg)
                return
        for r, cid in zip(recs, cids, strict=True):
            r.container_id = cid
        self.checkpoint()
        # A KILL meanwhile (of any task of the group) kills all of it: checked before each start, and after a start
        # that failed (the kill removes a container not started yet, so its start fails), never a TASK_FAILED.
        for cid in cids:
            if any(r.kill_requested for r in recs):
                self._kill_starting_group(recs)
                return
            try:
                await self.containerizer.start_container(cid)
            except Exception as e:
                self.metrics.podman_error("start")
                if any(r.kill_requested for r in recs):
                    self._kill_starting_group(recs)
                else:
                    self._fail_group(recs, str(e) if isinstance(e, ContainerLaunchError) else f"start failed: {e}")
                return
        if any(r.kill_requested for r in recs):
            self._kill_starting_group(recs)
            return
        self.metrics.launch_seconds.observe(time.monotonic() - launched)  # the group's, once
        for r in recs:
            self._status(r, TaskState.RUNNING, source=Source.EXECUTOR, container_id=r.container_id)
            self._watch(r)
            self._start_checks(r)

    def _kill_group(self, rec: TaskRecord) -> None:
        """As Mesos's default executor: a task of the group failed or was killed, so every other live task of it is
        killed (with its own kill policy) and reports TASK_KILLED. Checkpointed before any stop begins."""
        others = [r for r in self._group_of(rec) if r is not rec and not r.terminal_sent and not r.kill_requested]
        if not others:
            return
        log.info("killing the rest of a task group", executor=rec.spec.executor.executor_id if rec.spec.executor
                 else None, trigger=rec.spec.task_id, state=rec.state)
        for r in others:
            r.kill_requested = True
        self.checkpoint()
        for r in others:
            if r.container_id is not None:
                self._announce_killing(r)
                self._stop(r, self._grace(r))
            # else: its launch sees kill_requested before creating (or starting) anything

    # ---- status updates ------------------------------------------------------------------------------------
    @staticmethod
    def _new_status(state: str, source: str, reason: str | None, message: str | None,
                    container_id: str | None, healthy: bool | None = None,
                    check_status: ev.CheckStatus | None = None) -> ev.TaskStatus:
        return ev.TaskStatus(state=str(state), source=str(source), timestamp=time.time(),
                             uuid=base64.b64encode(uuid.uuid4().bytes).decode(),
                             reason=None if reason is None else str(reason),
                             # within the master's bound (a podman error can be long): an update the master
                             # refused would be retried for ever, holding up the task's later updates
                             message=None if message is None else message[:MAX_TEXT_LENGTH - 1024],
                             container_id=container_id, healthy=healthy, check_status=check_status)

    def _status(self, rec: TaskRecord, state: str, *, source: str = Source.AGENT, reason: str | None = None,
                message: str | None = None, container_id: str | None = None, healthy: bool | None = None) -> None:
        """The task's next state; nothing after a terminal one. As Mesos's command executor, a new state's status
        of a checked task carries an empty check status of the check's type."""
        if rec.terminal_sent:
            return
        rec.state = str(state)
        if state in TERMINAL_STATES:
            rec.terminal_sent = True
            self._stop_checks(rec)
        empty = checks.empty_status(rec.spec.check) if rec.spec.check is not None else None
        self._enqueue(rec, self._new_status(state, source, reason, message, container_id or rec.container_id,
                                            healthy, empty))

    # ---- health checks and checks (the rules: agent/checks.py; the probes: agent/probes.py) ------------------
    def _start_checks(self, rec: TaskRecord) -> None:
        """Start the task's health checker and checker (those it has, once): after its TASK_RUNNING, and for a
        running task after an agent restart."""
        key = (rec.framework_id, rec.spec.task_id)
        if key in self._checkers or not self._checking(rec):
            return
        loops = []
        if rec.spec.health_check is not None:
            loops.append(asyncio.create_task(self._health_loop(rec, rec.spec.health_check), name="health-check"))
        if rec.spec.check is not None:
            loops.append(asyncio.create_task(self._check_loop(rec, rec.spec.check), name="check"))
        if loops:
            self._checkers[key] = loops

    def _stop_checks(self, rec: TaskRecord) -> None:
        me = asyncio.current_task()
        for t in self._checkers.pop((rec.framework_id, rec.spec.task_id), []):
            if t is not me:
                t.cancel()

    def _checking(self, rec: TaskRecord) -> bool:
        """Whether the task is still checked: running, ours, not ended, nor being killed."""
        return (rec.state == TaskState.RUNNING and rec.container_id is not None and not rec.terminal_sent
                and not rec.kill_requested and rec.health_kill is None and rec.disk_limitation is None
                and self.tasks.get((rec.framework_id, rec.spec.task_id)) is rec)

    async def _probe(self, rec: TaskRecord, spec: ev.CheckSpec) -> checks.Result:
        mine = self._framework_probe_slots.setdefault(rec.framework_id,
                                                      asyncio.Semaphore(probes.MAX_PROBES_PER_FRAMEWORK))
        async with mine:
            return await probes.probe(spec, socket_path=self.containerizer.socket_path,
                                      container_id=rec.container_id or "",
                                      # a task of a group is in its pod's network namespace (the executor's network)
                                      network=rec.spec.executor.network if rec.spec.executor else rec.spec.network,
                                      timeout=checks.timeout_of(spec), slots=self._probe_slots)

    async def _health_loop(self, rec: TaskRecord, spec: ev.HealthCheckSpec) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()  # the grace period counts from here (after an agent restart too, if no success yet)
        state = rec.health or checks.HealthState()
        await asyncio.sleep(checks.first_delay(spec))
        while self._checking(rec):
            result = await self._probe(rec, spec)
            if not self._checking(rec):
                return
            step = checks.health_step(spec, state, result, loop.time() - started)
            self.metrics.health_checks.labels(
                "transient" if result.transient else "unhealthy" if step.failure is not None
                else "healthy" if checks.failure_of(spec, result) is None else "grace_period").inc()
            if step.failure is not None:
                log.info("health check failed", task=rec.spec.task_id[:64], failures=step.state.failures,
                         why=step.failure[:200])
            state = rec.health = step.state
            if step.healthy is not None:
                rec.healthy = step.healthy
                self._check_update(rec, Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
            if step.kill:
                self._kill_unhealthy(rec, checks.kill_message(spec, state, step.failure))
                return
            await asyncio.sleep(checks.next_delay(spec))

    async def _check_loop(self, rec: TaskRecord, spec: ev.CheckSpec) -> None:
        await asyncio.sleep(checks.first_delay(spec))
        while self._checking(rec):
            result = await self._probe(rec, spec)
            if not self._checking(rec):
                return
            new = checks.check_step(spec, rec.check_status, result)
            if new is not None:
                rec.check_status = new
                self._check_update(rec, Reason.TASK_CHECK_STATUS_UPDATED)
            await asyncio.sleep(checks.next_delay(spec))

    def _check_update(self, rec: TaskRecord, reason: str) -> None:
        """A TASK_RUNNING reporting a (health) check's result, with the latest of both (as Mesos's executor builds
        it from the last status it sent)."""
        check_status = rec.check_status
        if check_status is None and rec.spec.check is not None:
            check_status = checks.empty_status(rec.spec.check)
        self._enqueue(rec, self._new_status(TaskState.RUNNING, Source.EXECUTOR, reason, None, rec.container_id,
                                            rec.healthy, check_status))

    def _kill_unhealthy(self, rec: TaskRecord, message: str) -> None:
        """The health check failed `consecutive_failures` times in a row: kill the task (its kill policy's grace
        period, SIGTERM then SIGKILL); it ends TASK_KILLED with `healthy: false` (_wait_exit)."""
        log.warning("killing a task whose health check keeps failing", task=rec.spec.task_id[:64], why=message)
        rec.health_kill = message
        if rec.spec.executor is not None:
            for r in self._group_of(rec):
                r.group_unhealthy = True
        self._stop_checks(rec)
        self.checkpoint()
        self._announce_killing(rec)
        self._stop(rec, self._grace(rec))

    # ---- disk limits (the rule: agent/disk_limits.py; the measurement: agent/disk.py) ------------------------------
    async def _disk_loop(self) -> None:
        """Mesos's disk/du: every --container-disk-watch-interval, each running task's sandbox measured (one walk
        at a time, in a thread) against its `disk`; one over it is killed."""
        while True:
            await asyncio.sleep(self.config.container_disk_watch_interval)
            try:
                await self._check_disk()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # logged, and tried again at the next interval
                log.warning("disk usage check failed", error=repr(e)[:300])

    async def _check_disk(self) -> None:
        for key in [k for k in self.disk_usage if k not in self.tasks]:
            del self.disk_usage[key]
        for rec in list(self.tasks.values()):
            key = (rec.framework_id, rec.spec.task_id)
            limit = disk_limits.sandbox_disk_limit(rec.spec.resources)
            vols = disk_limits.volume_limits(rec.spec.resources)
            if (limit is None and not vols) or not self._checking(rec):
                self.disk_usage.pop(key, None)
                continue
            # Each persistent volume against its own size (Mesos disk/du measures a volume's path too)
            for role, pid, vlimit in vols:
                try:
                    vused = await asyncio.to_thread(disk.measure, self.volumes.path(role, pid))
                except (VolumeError, OSError) as e:
                    log.warning("cannot measure a persistent volume", volume=pid, error=str(e)[:200])
                    continue
                if not self._checking(rec):
                    break
                if (message := disk_limits.disk_limitation(vused.bytes, vlimit)) is not None:
                    self._kill_over_disk(rec, f"Persistent volume '{pid}': {message}")
                    break
            if limit is None or not self._checking(rec):
                continue
            try:
                sandbox = rules.sandbox_path(self.config.work_dir, rec.framework_id, rec.spec.task_id)
                used = await asyncio.to_thread(disk.measure, sandbox)
            except (rules.UnsafePath, OSError) as e:
                log.warning("cannot measure a task's sandbox", task=rec.spec.task_id[:64], error=str(e)[:200])
                continue
            if not used.complete:
                log.warning("a task's sandbox has too many entries, or too deep, to measure all of it: counted what "
                            "was reached (a lower bound)", task=rec.spec.task_id[:64], entries=used.entries,
                            counted_bytes=used.bytes)
            if not self._checking(rec):
                continue  # ended, or being killed, while it was measured
            self.disk_usage[key] = (used.bytes, limit)
            if (message := disk_limits.disk_limitation(used.bytes, limit)) is not None:
                self._kill_over_disk(rec, message)

    def _kill_over_disk(self, rec: TaskRecord, message: str) -> None:
        """The task's sandbox holds more than its `disk`: kill it (its kill policy's grace period, SIGTERM then
        SIGKILL); it ends TASK_FAILED, SOURCE_AGENT, REASON_CONTAINER_LIMITATION_DISK (_wait_exit). No TASK_KILLING:
        Mesos's agent destroys a limited container without one."""
        log.warning("killing a task over its disk quota", task=rec.spec.task_id[:64], why=message)
        rec.disk_limitation = message
        self._stop_checks(rec)
        self.checkpoint()
        self._stop(rec, self._grace(rec))

    def _enqueue(self, rec: TaskRecord, st: ev.TaskStatus) -> None:
        """Queue an update on the task's stream (checkpointed before it is sent). A (health) check's TASK_RUNNING
        replaces the one of its kind (same reason) queued behind the update in flight (the head) and behind nothing
        but such updates: each carries the latest health and check status, so nothing is lost, and a framework slow
        to acknowledge cannot make the queue (and each checkpoint) grow without end."""
        if _check_only(st):
            for i in range(len(rec.unacked) - 1, 0, -1):
                if not _check_only(rec.unacked[i]):
                    break
                if rec.unacked[i].reason == st.reason:
                    del rec.unacked[i]
                    break
        rec.unacked.append(st)
        self.checkpoint()
        self._update_wakeup.set()
        log.info("task status", task=rec.spec.task_id[:64], state=st.state, message=st.message)

    def _acknowledged(self, framework_id: object, task_id: object, uuid_b64: object) -> None:
        if not isinstance(framework_id, str) or not isinstance(task_id, str):
            return
        rec = self.tasks.get((framework_id, task_id))
        if rec is None or not rec.unacked or rec.unacked[0].uuid != uuid_b64:
            return
        rec.unacked.pop(0)
        if rec.terminal_sent and not rec.unacked:
            self._forget(rec)  # nothing left to remember about it
        self.checkpoint()
        self._update_wakeup.set()

    def _forget(self, rec: TaskRecord) -> None:
        """Drop a task the agent needs nothing more of; its id may then be used by a new launch. Its container goes
        now; its sandbox stays for its logs until the garbage collector's delay is over (counted from now: the
        sandbox's mtime)."""
        key = (rec.framework_id, rec.spec.task_id)
        if self.tasks.get(key) is rec:
            del self.tasks[key]
            if not any(fid == rec.framework_id for fid, _ in self.tasks):
                self._framework_probe_slots.pop(rec.framework_id, None)
            if not rec.refused:
                self.completed.append(rec)
            self._killed_by_us.discard(key)
            if not rec.refused:
                with contextlib.suppress(OSError, ValueError):
                    os.utime(rules.sandbox_path(self.config.work_dir, rec.framework_id, rec.spec.task_id))
            pod = None
            if rec.spec.executor is not None and not rec.refused and not self._group_of(rec):
                pod = self._pod_name(rec)  # the group's last task: its pod goes too
                with contextlib.suppress(OSError, ValueError):  # its shared sandbox ages from now
                    os.utime(rules.executor_sandbox_path(self.config.work_dir, rec.framework_id,
                                                         rec.spec.executor.executor_id))
            if rec.container_id is not None or pod is not None:
                self._spawn(self._remove_container(rec.container_id, pod))

    async def _remove_container(self, container_id: str | None, pod: str | None = None) -> None:
        try:
            if container_id is not None:
                await self.containerizer.remove(container_id)
            if pod is not None:
                await self.containerizer.remove_pod(pod)
        except Exception as e:  # podman down: the garbage collector's sweep removes it later
            log.info("container not removed yet", container_id=(container_id or "")[:12], pod=pod,
                     error=str(e)[:200])

    async def _remove_orphaned_containers(self) -> int:
        """Exited containers of this agent whose task it no longer holds (an agent killed between forgetting a task
        and removing its container). Running ones are left to the master (it kills what must not run)."""
        if not self.cp.agent_id:
            return 0
        removed = 0
        for c in await self.containerizer.list({"drover.agent": self.cp.agent_id}):
            key = (c.labels.get("drover.framework", ""), c.labels.get("drover.task", ""))
            if key not in self.tasks and c.status in ("exited", "lost"):
                try:
                    await self.containerizer.remove(c.container_id)
                    removed += 1
                except Exception as e:  # gone meanwhile (removed with its task), or podman down: next sweep
                    log.info("orphaned container not removed", container_id=c.container_id[:12], error=str(e)[:200])
        # Pods of task groups the agent no longer holds (killed between forgetting a group's last task and removing
        # its pod), once none of their tasks' containers runs.
        held = {self._group_key(r) for r in self.tasks.values() if r.spec.executor is not None}
        for p in await self.containerizer.list_pods({"drover.agent": self.cp.agent_id}):
            key3 = (p.labels.get("drover.framework", ""), p.labels.get("drover.executor", ""),
                    p.labels.get("drover.launch") or None)
            if key3 not in held and p.running_tasks == 0:
                try:
                    removed += await self.containerizer.remove_pod(p.name)
                except Exception as e:
                    log.info("orphaned pod not removed", pod=p.name, error=str(e)[:200])
        return removed

    async def _update_loop(self) -> None:
        sent: dict[tuple[str, str], tuple[str, float, float]] = {}  # key -> (uuid, next retry, backoff)
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._update_wakeup.wait(), 0.5)
            self._update_wakeup.clear()
            if not self.registered.is_set() or self._resend_all:
                sent.clear()  # resend every head to whoever we register with next
                self._resend_all = False
            if not self.registered.is_set():
                continue
            now = loop.time()
            for key, rec in list(self.tasks.items()):
                if not rec.unacked:
                    sent.pop(key, None)
                    continue
                head = rec.unacked[0]
                prev = sent.get(key)
                if prev is not None and prev[0] == head.uuid and now < prev[1]:
                    continue
                backoff = self.config.update_retry_initial if prev is None or prev[0] != head.uuid else \
                    min(prev[2] * 2, self.config.update_retry_max)
                sent[key] = (head.uuid, now + backoff, backoff)
                await self._send_update(rec, head)

    async def _ping_loop(self) -> None:
        """Tell the leader we are alive every ping interval: its heartbeats only go the other way, and it marks
        an agent it has not heard from for a while unreachable."""
        while True:
            await self.registered.wait()
            if self.master is None:
                await asyncio.sleep(0.1)
                continue
            body = {"type": "PING", "agent_id": self.cp.agent_id}
            try:
                async with self._session.post(self._api_url(self.master), json=body, allow_redirects=False,
                                              timeout=aiohttp.ClientTimeout(total=self._ping_interval)) as resp:
                    if resp.status != 202:
                        log.debug("ping not accepted", status=resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                log.debug("ping failed", error=str(e))
            await asyncio.sleep(self._ping_interval)

    async def _send_update(self, rec: TaskRecord, st: ev.TaskStatus) -> None:
        if self.master is None:
            return
        body = {"type": "UPDATE", "agent_id": self.cp.agent_id,
                "update": {"framework_id": rec.framework_id, "task_id": rec.spec.task_id,
                           "status": msgspec.to_builtins(st)}}
        try:
            async with self._session.post(self._api_url(self.master), json=body,
                                          allow_redirects=False, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == 400 and rec.refused:
                    # The master will not take an update naming these ids at all: resending cannot help.
                    log.warning("refused launch's status not accepted by the master; forgotten",
                                text=(await resp.text())[:200])
                    self._forget(rec)
                elif resp.status != 202:
                    log.debug("status update not accepted", status=resp.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            log.debug("status update send failed", error=str(e))


def _check_only(st: ev.TaskStatus) -> bool:
    """A TASK_RUNNING that only reports a health check's or a check's result."""
    return st.state == TaskState.RUNNING and st.reason in (Reason.TASK_HEALTH_CHECK_STATUS_UPDATED,
                                                           Reason.TASK_CHECK_STATUS_UPDATED)


def _private_dir(path: Path) -> None:
    """A directory of the work dir only the agent may enter: a task sees its own sandbox (bind-mounted) and nothing
    else of it, whatever user it runs as; other users of the host see nothing of it either."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # one made by an earlier version, or before the umask


async def _with_backoff(op, warning: str, task_id: str, *, go_on=lambda: True, attempts: int | None = None,
                        on_error=lambda: None):
    """Run `op()` until it succeeds (podman calls fail while its service restarts), backing off 0.5 s to 5 s,
    while `go_on()` holds and for at most `attempts` tries. Returns (True, result), or (False, None) on giving up."""
    backoff, tries = 0.5, 0
    while go_on() and (attempts is None or tries < attempts):
        tries += 1
        try:
            return True, await op()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            on_error()
            log.warning(warning, task=task_id, error=str(e))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
    return False, None


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await Agent(config).run(stop)
