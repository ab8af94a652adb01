"""Podman containerizer for the Drover agent (podman 4.3.1 REST service, podman-py 5.8.0).

Design notes (background: the platform notes on podman 4.3.1 / podman-py 5.8.0 quirks):

* podman-py is blocking. Its calls run in a private thread pool (not asyncio's default executor, which has only
  min(32, cpus+4) = 6 threads here and would be starved by long `stop` calls), with one PodmanClient per thread
  because a requests session is not meant to be shared across threads.
* wait() does not hold a thread or make the service poll: one aiohttp stream of podman "died" events (cancellable,
  reconnects if the service restarts) wakes the waiters; every waiter re-inspects after subscribing (no lost wake-up)
  and every 30 s as a safety net.
* stdout/stderr: every task runs as
      /bin/sh -c 'exec >>/mnt/mesos/sandbox/stdout 2>>/mnt/mesos/sandbox/stderr; exec "$@"' drover-wrapper ARGV...
  where ARGV is ["/bin/sh", "-c", value] (shell=True) or [value, *arguments[1:]] (shell=False). The wrapper only
  redirects and exec()s, so the task's exit code (and signal status, e.g. 137) is passed through unchanged, and the
  task itself sees exactly Mesos' `sh -c value` ($0, $@ untouched). Costs: the image must have /bin/sh, and with
  shell=False argv[0] becomes `value` (a POSIX sh has no portable `exec -a`).
  k8s-file logs (podman logs) then only hold wrapper errors, e.g. an unwritable sandbox.
* init=True: catatonit is PID 1 and forwards SIGTERM, so a stop takes ~0.2 s instead of the full grace period.
* Limits: every container gets a CFS quota (period 100 ms) and a memory limit with no swap on top. A spec without
  cpus or mem gets agent.rules.DEFAULT_CPUS (0.1) / DEFAULT_MEM_MB (32), Mesos's command executor allowance: no
  container ever runs without limits.
* Hardening: every container drops all capabilities (a root task gets rules.ROOT_TASK_CAPABILITIES back, any other
  user none), has no-new-privileges and a pids limit. The task runs as `spec.user` (else the image's USER), which
  must exist in the image's /etc/passwd: it is resolved here to uid:gid before anything is created, so an unknown
  user is a clear ContainerLaunchError, and the sandbox is chowned to it (the only host directory it sees). The
  image's /etc/passwd and /etc/group are read from a never-started probe container, once per image id (content
  addressed: its files never change).
* Images: an image not in the store is pulled from its registry (libpod's pull API, in the thread pool) before
  anything is created: one pull per image at a time, shared by concurrent launches; bounded by `pull_timeout`; TLS
  verified unless the image's registry is in `insecure_registries`. A failed pull is a ContainerLaunchError naming
  the image and podman's error. The default image is rebuilt locally instead (agent/images.py).
* Containers are never auto-removed: exit codes must survive agent restarts (reconcile via list()).
* OOMKilled is always false with conmon 2.1.6 + podman 4.3.1, so exit 137 not caused by our kill() is reported as
  `oom_suspected`. The "we killed it" memory is in-process only: after an agent restart it is lost.
* ContainerState: podman's transient "stopped" (exited, cleanup pending) is reported as "exited"; a container that
  vanished is reported by wait() as status="removed", exit_code=None. Timestamps are ISO 8601 UTC ("...Z"),
  microseconds from inspect(), whole seconds from list() (podman's list only has epoch seconds).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import logging
import math
import os
import stat
import re
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import aiohttp
from podman import PodmanClient
from podman.errors import APIError, NotFound

from agent import images, rules
from eventstore.values import user_problem

T = TypeVar("T")

SANDBOX_MOUNT = "/mnt/mesos/sandbox"
EXECUTOR_SANDBOX_MOUNT = "/mnt/mesos/executor_sandbox"  # a task group's shared sandbox (its executor's)
_WRAPPER = f'exec >>{SANDBOX_MOUNT}/stdout 2>>{SANDBOX_MOUNT}/stderr; exec "$@"'
# podman's own name rule; checked up front so a bad name is a clear spec error, not a podman 500.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# "lost": podman still says created/configured, but the container's process has come and gone. Seen when the
# podman service is killed in the middle of a start: runc ran the task, conmon watched it, but the service's
# database never recorded it running, so nothing ever records its exit either; waiting on it would be forever.
_DONE_STATES = {"exited", "stopped", "removed", "dead", "lost"}
# Never started. "initialized" is what a podman service killed in the middle of a start can leave: the runtime has
# created the container (its pid waits for the start), the start itself never came. Treated like "created".
_NOT_STARTED = ("created", "configured", "initialized")


def _status_of(status: str, pid: int) -> str:
    """podman's status, normalised; "lost" for created/configured with a pid that is gone. The agent must share
    podman's PID namespace (it runs on the same host) for the pid check to mean anything."""
    if status in _NOT_STARTED and _pid_gone(pid):
        return "lost"
    return _norm_status(status)


def _pid_gone(pid: int) -> bool:
    return pid > 0 and not os.path.exists(f"/proc/{pid}")


def _norm_status(status: str) -> str:
    # "stopped" is podman's short (~0.1 s) pre-cleanup state: the process has exited and ExitCode/FinishedAt are
    # already final. Reported as "exited" so callers only need to know one terminal status.
    return "exited" if status == "stopped" else status
_API_TIMEOUT = 60  # seconds per REST call (stop adds the grace period)
_ACCOUNT_FILES = ("/etc/passwd", "/etc/group")
_MAX_ACCOUNT_FILE = 4 * 1024 * 1024  # bytes: an image's /etc/passwd or /etc/group beyond this is refused
_ACCOUNTS_CACHE = 64  # images whose account files are remembered
# Probe containers carry the launching spec's labels minus the task's (so whoever removes an agent's or a test's
# containers removes a probe an agent died with, and nothing counts it as the task's), plus this one.
PROBE_LABEL = "drover.probe"
_TASK_LABELS = ("drover.framework", "drover.task")
_NETWORK_MODES = ("host", "bridge", "none")
_PROTOCOLS = ("tcp", "udp", "sctp")
_SAFETY_POLL = 30.0  # seconds: re-inspect waiters even without an event


@dataclass
class ContainerSpec:
    name: str
    image: str | None
    shell: bool
    value: str | None
    arguments: list[str]
    env: dict[str, str]
    cpus: float | None  # None: rules.DEFAULT_CPUS
    mem_mb: float | None  # None: rules.DEFAULT_MEM_MB
    labels: dict[str, str]
    sandbox_dir: Path
    network: str = "none"  # podman's network mode: "host", "bridge" or "none" (the agent sets it per task)
    ports: list[tuple[int, int, str]] = field(default_factory=list)  # (host, container, protocol); bridge only
    user: str | None = None  # a user name or uid of the image (user_problem); None: the image's USER, else root
    pids_limit: int = rules.DEFAULT_TASK_PIDS_LIMIT
    # A task of a task group: the pod it joins (which holds the network: `network` and `ports` are the pod's then),
    # and its executor's sandbox, shared by the group, bind-mounted at EXECUTOR_SANDBOX_MOUNT.
    pod: str | None = None
    shared_dir: Path | None = None
    # Persistent volumes: (host dir, path in the sandbox, read only, shared), bind-mounted at
    # SANDBOX_MOUNT/<path> (a relative container_path lands in the sandbox, as in Mesos).
    volumes: list[tuple[str, str, bool, bool]] = field(default_factory=list)


@dataclass
class PodSpec:
    """A task group's pod (docs/services.md, "Task groups"): its network namespace is its tasks' (podman's infra
    container holds it), `network` as ContainerSpec's, `ports` published by the pod (bridge only)."""

    name: str
    labels: dict[str, str]
    network: str = "host"
    ports: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass
class PodState:
    name: str
    labels: dict[str, str]
    running_tasks: int  # its containers that run, the infra container not counted


@dataclass
class ContainerState:
    container_id: str
    name: str
    labels: dict[str, str]
    status: str
    exit_code: int | None
    started_at: str | None
    finished_at: str | None
    oom_suspected: bool = False


class ContainerLaunchError(Exception):
    """A task container could not be created or started; str(e) is meant for users (TASK_FAILED message)."""


def _iso(value: Any) -> str | None:
    """Normalize podman timestamps (RFC 3339 with ns from inspect, epoch seconds from list) to ISO 8601 UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        if value <= 0:
            return None
        return datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z")
    s = str(value)
    if s.startswith("0001-01-01"):  # Go zero time: never started / not finished
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    if not m:
        return s
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")  # Python parses at most microseconds
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    dt = datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").astimezone(timezone.utc)
    return dt.isoformat().replace("+00:00", "Z")


def _api_message(e: Exception) -> str:
    if isinstance(e, APIError):
        return (e.explanation or str(e)).strip()
    return str(e)


def _prepare_volumes(spec: ContainerSpec, sandbox: Path, uid: int, gid: int) -> list[dict]:
    """Mount points and mounts of the task's persistent volumes. The mount point `sandbox/<path>` must be a real
    directory: a reused sandbox may hold a symlink the task planted there. A volume's root (not its content) is
    given to the task's user, as Mesos does, unless it is shared and already someone's (another user may be
    using it)."""
    mounts = []
    for host, path, read_only, shared in spec.volumes:
        if "/" in path or path in ("", ".", ".."):
            raise ContainerLaunchError(f"invalid persistent volume container_path {path!r}")
        point = sandbox / path
        try:
            st = os.lstat(point)
        except FileNotFoundError:
            os.mkdir(point, 0o755)
            os.chown(point, uid, gid)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise ContainerLaunchError(f"cannot mount persistent volume at '{path}': the sandbox holds a "
                                           "file or symlink of that name")
        root = os.lstat(host)
        if not stat.S_ISDIR(root.st_mode):
            raise ContainerLaunchError(f"persistent volume directory {host} is missing")
        if not shared or root.st_uid == 0:
            os.chown(host, uid, gid, follow_symlinks=False)
        mounts.append({"type": "bind", "source": host, "target": f"{SANDBOX_MOUNT}/{path}", "read_only": read_only})
    return mounts


def _own_tree(root: Path, uid: int, gid: int) -> None:
    """Give the sandbox, and whatever an earlier launch of the same task id left in it, to the task's user, so it
    can write there (as podman's `U` mount option would). Symlinks are changed themselves, never followed."""
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into symlinked directories
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(path, uid, gid, follow_symlinks=False)


MAX_CONCURRENT_PULLS = 4  # images pulled at once by one agent (more wait their turn)


class PodmanContainerizer:
    def __init__(self, socket_path: Path, *, start_service: bool = True, log: logging.Logger | Any = None,
                 insecure_registries: frozenset[str] | set[str] = frozenset(),
                 pull_timeout: float = rules.DEFAULT_IMAGE_PULL_TIMEOUT):
        self.socket_path = Path(socket_path)
        # Registries (HOST[:PORT]) pulled from over plain HTTP or with an unverified certificate: only these.
        self.insecure_registries = frozenset(insecure_registries)
        self.pull_timeout = float(pull_timeout)
        self._pulls: dict[str, concurrent.futures.Future] = {}  # image -> the pull under way (shared)
        self._pulls_lock = threading.Lock()
        self.start_service = start_service
        self.log = log or logging.getLogger("drover.containerizer")
        self._base_url = f"unix://{self.socket_path}"
        self._service: subprocess.Popen | None = None
        self._owns_service = False  # we started the service: we restart it if it dies
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="podman")
        # Pulls run on threads of their own (a pull may hold one for --image-pull-timeout): the pool above stays free
        # for kills, waits and launches. At most MAX_CONCURRENT_PULLS images are pulled at once; launches waiting for
        # an image another launch is pulling hold no thread at all (_apulls).
        self._pull_executor = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_PULLS,
                                                                    thread_name_prefix="podman-pull")
        self._apulls: dict[str, asyncio.Future] = {}  # image -> the pull under way, for launches on the loop
        self._tls = threading.local()
        self._clients: list[PodmanClient] = []
        self._clients_lock = threading.Lock()
        self._killed: set[str] = set()  # full ids of containers stopped by kill()
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._events_task: asyncio.Task | None = None
        self._events_connected: asyncio.Event | None = None
        self._accounts: dict[str, tuple[str | None, str | None]] = {}  # image id -> (/etc/passwd, /etc/group)
        self._accounts_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ plumbing
    def _client(self) -> PodmanClient:
        c = getattr(self._tls, "client", None)
        if c is None:
            c = PodmanClient(base_url=self._base_url, timeout=_API_TIMEOUT)
            self._tls.client = c
            with self._clients_lock:
                self._clients.append(c)
        return c

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except Exception:
            return False

    async def available(self) -> bool:
        """The podman service answers (a failed call while it does not is the service's fault, not the task's)."""
        return await self._run(self._ping)

    # ------------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if not await self._run(self._ping):
            if not self.start_service:
                raise ContainerLaunchError(f"no podman service answers on {self.socket_path}")
            await self._run(self._start_service)
        self._events_connected = asyncio.Event()
        self._events_task = asyncio.create_task(self._watch_events(), name="podman-events")
        await self._run(lambda: images.ensure_image(self._client()))

    def _start_service(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket from a dead service (nothing answered the ping)
        log_path = self.socket_path.with_name(self.socket_path.name + ".log")
        with open(log_path, "ab") as logf:
            # Own session: a Ctrl-C on our terminal must not kill the service (its containers survive anyway).
            # cwd = socket dir: conmon drops stray `oom` files into the cwd of whoever started the service.
            self._service = subprocess.Popen(
                ["podman", "system", "service", "--time=0", self._base_url],
                env=images.podman_env(), cwd=self.socket_path.parent, stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._service.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                self._service = None
                raise ContainerLaunchError(f"podman system service exited immediately; log {log_path}:\n{tail}")
            if self.socket_path.exists() and self._ping():
                self.log.info("started podman service pid=%s socket=%s", self._service.pid, self.socket_path)
                self._owns_service = True
                return
            time.sleep(0.05)
        self._terminate_service()
        raise ContainerLaunchError(f"podman system service did not answer on {self.socket_path} within 30 s")

    def _restart_service_if_ours(self) -> bool:
        """The service we started died (killed, crashed): start another on the same socket. Containers live on
        (conmon runs them); a new service reads their state from the store. A service someone else started is
        theirs to restart: we only wait for it. Returns True if a new service was started."""
        if not self._owns_service or (self._service is not None and self._service.poll() is None):
            return False
        if self._ping():  # something answers on the socket again: leave it alone
            return False
        self.log.warning("podman service (pid %s) is gone: starting a new one",
                         self._service.pid if self._service is not None else "?")
        self._start_service()
        return True

    def _terminate_service(self) -> None:
        p, self._service = self._service, None
        if p is None or p.poll() is not None:
            return
        p.terminate()  # only the service process: conmon/containers live in their own sessions and keep running
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    async def stop(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._events_task
            self._events_task = None
        for futs in self._waiters.values():
            for f in futs:
                if not f.done():
                    f.cancel()
        self._waiters.clear()
        self._owns_service = False
        await self._run(self._terminate_service)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for c in clients:
            with contextlib.suppress(Exception):
                c.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="podman")
        self._pull_executor.shutdown(wait=False, cancel_futures=True)
        self._pull_executor = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_PULLS,
                                                                    thread_name_prefix="podman-pull")
        self._apulls.clear()
        self._tls = threading.local()

    # ------------------------------------------------------------------------------------------------ state
    def _state_from_inspect(self, attrs: dict) -> ContainerState:
        st = attrs.get("State") or {}
        status = _status_of(st.get("Status", "unknown"), st.get("Pid") or 0)
        cid = attrs["Id"]
        exit_code = st.get("ExitCode") if status in _DONE_STATES and status != "lost" else None
        return ContainerState(
            container_id=cid,
            name=attrs.get("Name", "").lstrip("/"),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
            status=status,
            exit_code=exit_code,
            started_at=_iso(st.get("StartedAt")),
            finished_at=_iso(st.get("FinishedAt")) if status in _DONE_STATES and status != "lost" else None,
            oom_suspected=exit_code == 137 and cid not in self._killed,
        )

    def _state_from_list(self, attrs: dict) -> ContainerState:
        # sparse list items already carry State/ExitCode/ExitedAt/Labels: no per-container inspect needed
        status = _status_of(attrs.get("State", "unknown"), attrs.get("Pid") or 0)
        cid = attrs["Id"]
        exit_code = attrs.get("ExitCode") if status in _DONE_STATES and status != "lost" else None
        names = attrs.get("Names") or [""]
        return ContainerState(
            container_id=cid,
            name=names[0],
            labels=dict(attrs.get("Labels") or {}),
            status=status,
            exit_code=exit_code,
            started_at=_iso(attrs.get("StartedAt")),
            finished_at=_iso(attrs.get("ExitedAt")) if status in _DONE_STATES else None,
            oom_suspected=exit_code == 137 and cid not in self._killed,
        )

    def _inspect_sync(self, container_id: str) -> ContainerState | None:
        # Under load podman 4.3 sometimes answers an inspect with a transient 500 ("GET operation failed")
        # while other containers are created or cleaned up: retry before reporting an error.
        for attempt in range(4):
            try:
                resp = self._client().api.get(f"/containers/{container_id}/json")
                resp.raise_for_status()
                return self._state_from_inspect(resp.json())
            except NotFound:
                return None
            except APIError:
                if attempt == 3:
                    raise
                time.sleep(0.1 * (attempt + 1))

    async def inspect(self, container_id: str) -> ContainerState | None:
        return await self._run(self._inspect_sync, container_id)

    def _list_sync(self, labels: dict[str, str]) -> list[ContainerState]:
        # list of "label=k=v" strings: ANDed. (A dict with a list value is sent as "['k=v']" and matches nothing.)
        filters = [f"label={k}={v}" for k, v in labels.items()]
        cs = self._client().containers.list(all=True, filters=filters) if filters else \
            self._client().containers.list(all=True)
        return [self._state_from_list(c.attrs) for c in cs]

    async def list(self, labels: dict[str, str]) -> list[ContainerState]:
        return await self._run(self._list_sync, dict(labels))

    # ------------------------------------------------------------------------------------------------ launch
    def _build_argv(self, spec: ContainerSpec, image_attrs: dict) -> list[str]:
        if spec.shell:
            if not spec.value:
                raise ContainerLaunchError("invalid task command: shell=true requires a command value")
            return ["/bin/sh", "-c", spec.value]
        if spec.value:
            return [spec.value, *list(spec.arguments)[1:]]
        # Mesos: no value with shell=false -> the image's entrypoint, with `arguments` (else the image CMD) after it
        cfg = image_attrs.get("Config") or {}
        argv = list(cfg.get("Entrypoint") or []) + (list(spec.arguments) or list(cfg.get("Cmd") or []))
        if not argv:
            raise ContainerLaunchError("invalid task command: no command value and the image has no entrypoint/cmd")
        return argv

    def validate(self, spec: ContainerSpec) -> None:
        """Raise ContainerLaunchError if the spec itself is invalid (no podman involved)."""
        self._validate(spec)

    def _validate(self, spec: ContainerSpec) -> None:
        if not spec.name or not _NAME_RE.match(spec.name):
            raise ContainerLaunchError(f"invalid container name {spec.name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        cpus, mem_mb = rules.container_limits(spec.cpus, spec.mem_mb)
        if not (cpus > 0 and math.isfinite(cpus)):
            raise ContainerLaunchError(f"invalid cpus {cpus!r}: must be > 0")
        if not (mem_mb >= 6 and math.isfinite(mem_mb)):
            # podman's own minimum; checked here for a clearer message
            raise ContainerLaunchError(f"invalid mem {mem_mb!r} MB: must be >= 6 MB")
        if not Path(spec.sandbox_dir).is_absolute():
            raise ContainerLaunchError(f"sandbox dir must be an absolute path, got {str(spec.sandbox_dir)!r}")
        if spec.user is not None and (why := user_problem(spec.user, "The task's user")) is not None:
            raise ContainerLaunchError(why)
        if spec.network not in _NETWORK_MODES:
            raise ContainerLaunchError(f"invalid network mode {spec.network!r}: must be one of "
                                       f"{', '.join(_NETWORK_MODES)}")
        if spec.ports and spec.network != "bridge":
            raise ContainerLaunchError("port mappings are only supported for the bridge network")
        for host, cont, proto in spec.ports:
            if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in (host, cont)) \
                    or proto not in _PROTOCOLS:
                raise ContainerLaunchError(f"invalid port mapping {(host, cont, proto)!r}")
        if isinstance(spec.pids_limit, bool) or not isinstance(spec.pids_limit, int) \
                or not rules.MIN_TASK_PIDS_LIMIT <= spec.pids_limit <= rules.MAX_TASK_PIDS_LIMIT:
            raise ContainerLaunchError(f"invalid pids limit {spec.pids_limit!r}: must be an integer in "
                                       f"[{rules.MIN_TASK_PIDS_LIMIT}, {rules.MAX_TASK_PIDS_LIMIT}]")

    def _existing(self, name: str, start: bool = True) -> str | None:
        """Idempotent relaunch: a container with this name exists -> make sure it was started, return its id."""
        try:
            c = self._client().containers.get(name)
        except NotFound:
            return None
        state = c.attrs["State"]
        if start and state["Status"] in _NOT_STARTED and not _pid_gone(state.get("Pid") or 0):
            # the agent died between create and start: finish the launch (a "lost" one already ran: see wait)
            self._start_or_cleanup(c)
        return c.id

    def _start_or_cleanup(self, c) -> None:
        try:
            c.start()
        except APIError as e:
            with contextlib.suppress(Exception):
                c.remove(force=True)  # don't leave a never-started container behind a name a retry will reuse
            raise ContainerLaunchError(f"failed to start container: {_api_message(e)}") from e

    def _launch_sync(self, spec: ContainerSpec, start: bool = True) -> str:
        self._validate(spec)
        client = self._client()
        if (cid := self._existing(spec.name, start)) is not None:
            return cid
        image = spec.image or images.DEFAULT_IMAGE
        try:
            if not client.images.exists(image):
                if image == images.DEFAULT_IMAGE:
                    images.ensure_image(client, image)  # someone removed the default image: rebuild it locally
                else:
                    self._pull_shared(image)
            image_attrs = client.images.get(image).attrs
        except APIError as e:
            raise ContainerLaunchError(f"cannot look up image '{image}': {_api_message(e)}") from e
        argv = self._build_argv(spec, image_attrs)
        uid, gid = self._task_ids(spec, image, image_attrs)

        sandbox = Path(spec.sandbox_dir)
        sandbox.mkdir(parents=True, exist_ok=True)
        _own_tree(sandbox, uid, gid)
        volume_mounts = _prepare_volumes(spec, sandbox, uid, gid)
        env = {str(k): str(v) for k, v in spec.env.items()}
        env["MESOS_SANDBOX"] = SANDBOX_MOUNT
        kwargs: dict[str, Any] = dict(
            name=spec.name,
            # explicit entrypoint overrides any image ENTRYPOINT (Mesos: the command replaces it)
            entrypoint=["/bin/sh", "-c", _WRAPPER, "drover-wrapper"],
            command=argv,
            environment=env,
            labels={str(k): str(v) for k, v in spec.labels.items()},
            mounts=[{"type": "bind", "source": str(sandbox), "target": SANDBOX_MOUNT}]
            + ([{"type": "bind", "source": str(spec.shared_dir), "target": EXECUTOR_SANDBOX_MOUNT}]
               if spec.shared_dir is not None else [])
            + volume_mounts,
            working_dir=SANDBOX_MOUNT,  # Mesos runs tasks with the sandbox as cwd
            init=True,
            network_mode=spec.network,
            # numeric, as resolved above: podman looks nothing up again, and the chown above matches it
            user=f"{uid}:{gid}",
            cap_drop=["ALL"],
            cap_add=rules.task_capabilities(uid),
            no_new_privileges=True,  # podman-py's security_opt would go to SELinux options: not this
            pids_limit=spec.pids_limit,
        )
        if spec.pod is not None:
            env["MESOS_EXECUTOR_SANDBOX"] = EXECUTOR_SANDBOX_MOUNT
            # The pod's network namespace (and its published ports, its sysctls): nothing of the network here.
            del kwargs["network_mode"]
            kwargs["pod"] = spec.pod
        elif spec.network != "host":
            # A network namespace of its own: any port of it is the task's to bind, as Docker (20.10+) sets too.
            # Host ports stay privileged (host networking gets no NET_BIND_SERVICE: rules.task_capabilities).
            kwargs["sysctls"] = {"net.ipv4.ip_unprivileged_port_start": "0"}
        if spec.ports and spec.pod is None:
            published: dict[str, list[int]] = {}
            for host, cont, proto in spec.ports:
                published.setdefault(f"{cont}/{proto}", []).append(host)
            kwargs["ports"] = published
        # Always limited: a spec without cpus/mem gets the defaults (rules.container_limits).
        cpus, mem_mb = rules.container_limits(spec.cpus, spec.mem_mb)
        # nano_cpus is silently dropped by podman-py 5.8 -> CFS quota/period
        kwargs["cpu_period"] = 100_000
        kwargs["cpu_quota"] = max(1000, int(round(cpus * 100_000)))
        mem = int(mem_mb * 1024 * 1024)
        kwargs["mem_limit"] = mem
        kwargs["memswap_limit"] = mem  # like Mesos: no swap on top of the limit
        try:
            c = client.containers.create(image, **kwargs)
        except APIError as e:
            msg = _api_message(e)
            if "already in use" in msg:  # lost a race with a concurrent launch of the same name
                if (cid := self._existing(spec.name, start)) is not None:
                    return cid
            raise ContainerLaunchError(f"failed to create container: {msg}") from e
        if start:
            self._start_or_cleanup(c)
        return c.id

    def _start_sync(self, container_id: str) -> None:
        c = self._client().containers.get(container_id)
        state = c.attrs["State"]
        if state["Status"] in _NOT_STARTED and not _pid_gone(state.get("Pid") or 0):
            self._start_or_cleanup(c)

    async def _run_launch(self, fn: Callable[..., T], *args: Any) -> T:
        """`_run` for a step of a launch: a podman API error is the launch's (ContainerLaunchError)."""
        try:
            return await self._run(fn, *args)
        except ContainerLaunchError:
            raise
        except APIError as e:
            raise ContainerLaunchError(f"podman error: {_api_message(e)}") from e

    async def start_container(self, container_id: str) -> None:
        """Start a container created by `launch(spec, start=False)`; nothing if it was started already."""
        await self._run_launch(self._start_sync, container_id)

    # ------------------------------------------------------------------------------------------------ pods
    def _create_pod_sync(self, spec: PodSpec) -> str:
        client = self._client()
        if spec.network not in _NETWORK_MODES:
            raise ContainerLaunchError(f"invalid network mode {spec.network!r} for a pod")
        if spec.ports and spec.network != "bridge":
            raise ContainerLaunchError("port mappings are only supported for the bridge network")
        if not _NAME_RE.match(spec.name):
            raise ContainerLaunchError(f"invalid pod name {spec.name!r}")
        if client.pods.exists(spec.name):
            return spec.name  # idempotent: a group resumed after an agent restart
        # The pod's name would be its hostname, and the kernel takes at most 64 bytes of one (sethostname: EINVAL).
        kwargs: dict[str, Any] = {"labels": {str(k): str(v) for k, v in spec.labels.items()},
                                  "netns": {"nsmode": spec.network}, "hostname": spec.name[:63].rstrip("-._")}
        if spec.network != "host":
            # as a task's own network namespace: any port of it is the group's to bind
            kwargs["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "0"}
        if spec.ports:
            kwargs["portmappings"] = [{"host_port": h, "container_port": c, "protocol": p} for h, c, p in spec.ports]
        try:
            client.pods.create(spec.name, **kwargs)
        except APIError as e:
            if "already exists" in _api_message(e) or "in use" in _api_message(e):
                return spec.name
            raise ContainerLaunchError(f"failed to create pod: {_api_message(e)}") from e
        return spec.name

    async def create_pod(self, spec: PodSpec) -> str:
        return await self._run_launch(self._create_pod_sync, spec)

    def _remove_pod_sync(self, name: str) -> bool:
        client = self._client()
        if not client.pods.exists(name):
            return False
        try:
            client.pods.get(name).remove(force=True)
        except NotFound:
            return False
        return True

    async def remove_pod(self, name: str) -> bool:
        """Remove a pod, its containers (running ones killed) and its infra container; False if there was none."""
        return await self._run(self._remove_pod_sync, name)

    def _list_pods_sync(self, labels: dict[str, str]) -> list[PodState]:
        filters = [f"label={k}={v}" for k, v in labels.items()]
        out = []
        for p in self._client().pods.list(filters=filters):
            a = p.attrs
            infra = a.get("InfraId") or ""
            running = sum(1 for c in a.get("Containers") or []
                          if c.get("Id") != infra and str(c.get("Status", "")).lower() == "running")
            out.append(PodState(name=a.get("Name", ""), labels=dict(a.get("Labels") or {}), running_tasks=running))
        return out

    async def list_pods(self, labels: dict[str, str]) -> list[PodState]:
        return await self._run(self._list_pods_sync, dict(labels))

    def _pull_shared(self, image: str) -> None:
        """Pull `image` from its registry; concurrent launches of one image share one pull (its outcome too)."""
        with self._pulls_lock:
            fut = self._pulls.get(image)
            mine = fut is None
            if fut is None:
                fut = self._pulls[image] = concurrent.futures.Future()
        if not mine:
            try:
                fut.result(timeout=2 * self.pull_timeout + _API_TIMEOUT)
            except concurrent.futures.TimeoutError:
                raise ContainerLaunchError(f"Failed to pull image '{image}': another launch's pull of it did "
                                           f"not finish in time") from None
            return
        try:
            self._pull(image)
            fut.set_result(None)
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self._pulls_lock:
                self._pulls.pop(image, None)

    def _pull(self, image: str) -> None:
        """One pull through podman's libpod API. TLS is verified unless the image's registry was named with
        --registry-insecure. Bounded by pull_timeout: each read of podman's progress stream, and the whole pull
        between two progress messages."""
        registry = rules.image_registry(image)
        tls_verify = registry is None or registry not in self.insecure_registries
        started = time.monotonic()
        self.log.info("pulling image %s (tls_verify=%s)", image, tls_verify)
        try:
            resp = self._client().api.post(
                "/images/pull", params={"reference": image, "tlsVerify": tls_verify, "policy": "missing"},
                stream=True, timeout=(10, self.pull_timeout))
        except APIError as e:
            raise ContainerLaunchError(f"Failed to pull image '{image}': {_api_message(e)}") from e
        error: str | None = None
        pulled = False
        try:
            if resp.status_code >= 400:
                try:
                    error = str(resp.json().get("message") or resp.text)
                except ValueError:
                    error = resp.text
            else:
                for line in resp.iter_lines():
                    if time.monotonic() - started > self.pull_timeout:
                        error = f"not pulled within {self.pull_timeout:g} s (--image-pull-timeout)"
                        break
                    if not line.strip():
                        continue
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and msg.get("error"):
                        error = str(msg["error"])
                    elif isinstance(msg, dict) and (msg.get("id") or msg.get("images")):
                        pulled = True
        except Exception as e:  # requests' read timeout, a service that went away
            if "timed out" in str(e).lower():
                error = f"not pulled within {self.pull_timeout:g} s (--image-pull-timeout)"
            else:
                error = f"{type(e).__name__}: {e}"
        finally:
            resp.close()
        if error is None and not pulled:
            error = "podman reported no image"
        if error is not None:
            raise ContainerLaunchError(f"Failed to pull image '{image}': {error.strip()[:2000]}")
        self.log.info("pulled image %s", image)

    def _task_ids(self, spec: ContainerSpec, image: str, image_attrs: dict) -> tuple[int, int]:
        """(uid, gid) the task runs as: spec.user, else the image's USER, else root; looked up in the image."""
        default = str((image_attrs.get("Config") or {}).get("User") or "")
        if spec.user is None and default == "":
            return 0, 0
        passwd, group = self._account_files(image_attrs.get("Id") or image, spec)
        try:
            if spec.user is not None:
                return rules.resolve_user(spec.user, passwd, group, image)
            return rules.resolve_user(default, passwd, group, image, image_default=True)
        except rules.UserProblem as e:
            raise ContainerLaunchError(str(e)) from None

    def _account_files(self, image_id: str, spec: ContainerSpec) -> tuple[str | None, str | None]:
        """The image's /etc/passwd and /etc/group (None: it has none), cached by image id."""
        with self._accounts_lock:
            if (hit := self._accounts.get(image_id)) is not None:
                return hit
        labels = {k: v for k, v in spec.labels.items() if k not in _TASK_LABELS}
        probe = self._client().containers.create(
            image_id, name=f"drover-probe-{uuid.uuid4().hex[:16]}", labels={**labels, PROBE_LABEL: "1"},
            entrypoint=["/drover-probe-never-started"], network_mode="none")
        try:
            files = (self._read_file(probe, _ACCOUNT_FILES[0]), self._read_file(probe, _ACCOUNT_FILES[1]))
        finally:
            with contextlib.suppress(Exception):
                probe.remove(force=True)
        with self._accounts_lock:
            if len(self._accounts) >= _ACCOUNTS_CACHE:
                self._accounts.pop(next(iter(self._accounts)))
            self._accounts[image_id] = files
        return files

    @staticmethod
    def _read_file(container, path: str) -> str | None:
        """A file of a (never started) container's rootfs, None if there is none (or it is not a regular file)."""
        try:
            stream, _ = container.get_archive(path)
        except NotFound:
            return None
        data = bytearray()
        for chunk in stream:
            data += chunk
            if len(data) > _MAX_ACCOUNT_FILE + 64 * 1024:  # the tar headers are a few blocks
                raise ContainerLaunchError(f"the image's {path} is larger than {_MAX_ACCOUNT_FILE} bytes")
        with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
            member = next((m for m in tf.getmembers() if m.isfile()), None)
            f = tf.extractfile(member) if member is not None else None
            return f.read().decode("utf-8", errors="replace") if f is not None else None

    def _image_present(self, image: str) -> bool:
        """Whether `image` is in the store; the default image is built here if it is missing (never pulled)."""
        try:
            if self._client().images.exists(image):
                return True
        except APIError as e:
            raise ContainerLaunchError(f"cannot look up image '{image}': {_api_message(e)}") from e
        if image == images.DEFAULT_IMAGE:
            images.ensure_image(self._client(), image)
            return True
        return False

    def _pull_done(self, image: str, fut: asyncio.Future) -> None:
        self._apulls.pop(image, None)
        if not fut.cancelled():
            fut.exception()  # retrieved: every launch waiting for it may have gone (each sees it through shield)

    async def prepare_image(self, image: str | None) -> None:
        """Make sure `image` (None: the default image) is in the store, pulling it if need be (launch() does it too:
        this lets a caller act on what happened meanwhile, e.g. a kill, before anything is created)."""
        image = image or images.DEFAULT_IMAGE
        try:
            if await self._run(self._image_present, image):
                return
            pull = self._apulls.get(image)
            if pull is None:
                loop = asyncio.get_running_loop()
                pull = self._apulls[image] = loop.run_in_executor(self._pull_executor, self._pull_shared, image)
                pull.add_done_callback(lambda f: self._pull_done(image, f))
            await asyncio.shield(pull)  # one launch cancelled (its agent stopping) leaves the others' pull alone
        except ContainerLaunchError:
            raise
        except APIError as e:
            raise ContainerLaunchError(f"podman error: {_api_message(e)}") from e

    async def launch(self, spec: ContainerSpec, start: bool = True) -> str:
        """Create and start the task's container (idempotent: by its name). start=False: create it only (a task
        group's containers are all created, then started together)."""
        try:
            return await self._run(self._launch_sync, spec, start)
        except ContainerLaunchError:
            raise
        except APIError as e:
            raise ContainerLaunchError(f"podman error: {_api_message(e)}") from e
        except OSError as e:
            raise ContainerLaunchError(f"cannot prepare sandbox or reach podman: {e}") from e

    # ------------------------------------------------------------------------------------------------ wait
    async def _watch_events(self) -> None:
        """Single "died" event stream for all waiters; reconnects (and re-checks every waiter) on any error."""
        filters = json.dumps({"type": ["container"], "event": ["died"]})
        while True:
            try:
                conn = aiohttp.UnixConnector(path=str(self.socket_path))
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
                async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
                    async with s.get("http://d/v4.0.0/libpod/events",
                                     params={"stream": "true", "filters": filters}) as r:
                        r.raise_for_status()
                        self._events_connected.set()
                        # events may have been missed while (re)connecting
                        for cid in list(self._waiters):
                            asyncio.create_task(self._check_waiter(cid))
                        async for line in r.content:
                            if not line.strip():
                                continue
                            try:
                                ev = json.loads(line)
                            except ValueError:
                                continue
                            cid = (ev.get("Actor") or {}).get("ID") or ev.get("id")
                            if cid in self._waiters:
                                asyncio.create_task(self._check_waiter(cid))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # service restarting, socket gone, ...
                self.log.debug("podman event stream error: %r", e)
            self._events_connected.clear()
            try:
                await self._run(self._restart_service_if_ours)
            except Exception as e:
                self.log.warning("could not restart the podman service: %s", e)
                await asyncio.sleep(2.0)
            await asyncio.sleep(0.5)

    async def _check_waiter(self, cid: str) -> None:
        try:
            st = await self.inspect(cid)
        except Exception as e:
            self.log.debug("inspect %s failed: %r", cid, e)
            return
        if st is None or st.status in _DONE_STATES:
            for f in self._waiters.pop(cid, []):
                if not f.done():
                    f.set_result(st)

    async def wait(self, container_id: str) -> ContainerState:
        """Wait until the container has exited. If it disappears (removed), returns a state with status="removed"
        and exit_code=None instead of raising."""
        gone = ContainerState(container_id, "", {}, "removed", None, None, None, False)
        st = await self.inspect(container_id)
        if st is None:
            return gone
        if st.status in _DONE_STATES:
            return st
        cid = st.container_id  # full id: events carry full ids, the caller may have given a name
        if self._events_task is None:
            raise RuntimeError("PodmanContainerizer.start() was not called")
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._events_connected.wait(), _SAFETY_POLL)
            fut = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(cid, []).append(fut)
            # re-inspect after subscribing: an exit between the first inspect and now has no event left to see
            await self._check_waiter(cid)
            try:
                res = await asyncio.wait_for(asyncio.shield(fut), _SAFETY_POLL)
                return res if res is not None else gone
            except asyncio.TimeoutError:
                lst = self._waiters.get(cid, [])
                if fut in lst:
                    lst.remove(fut)
                    if not lst:
                        self._waiters.pop(cid, None)
            except asyncio.CancelledError:
                lst = self._waiters.get(cid, [])
                if fut in lst:
                    lst.remove(fut)
                    if not lst:
                        self._waiters.pop(cid, None)
                raise

    # ------------------------------------------------------------------------------------------------ kill/remove
    def _kill_sync(self, container_id: str, grace_seconds: float) -> None:
        client = self._client()
        try:
            c = client.containers.get(container_id)
        except NotFound:
            return
        self._killed.add(c.id)  # before stopping: the 137 that follows is ours, not an OOM
        status = c.attrs["State"]["Status"]
        if status in _DONE_STATES:
            return
        if status in _NOT_STARTED:
            # never started: podman's stop is a no-op here and wait() would block forever. Removing it makes the
            # kill terminal (wait() then reports status="removed", exit_code=None).
            with contextlib.suppress(NotFound):
                c.remove(force=True)
            return
        # podman stop = StopSignal (SIGTERM), SIGKILL after t seconds; done server-side so it completes even if we
        # are cancelled. t is whole seconds in the API -> round the grace up.
        t = max(0, math.ceil(grace_seconds))
        try:
            resp = client.api.post(f"/containers/{c.id}/stop", params={"timeout": t}, timeout=t + _API_TIMEOUT)
            resp.raise_for_status()  # 304 (already stopped) is fine
        except NotFound:
            return
        except APIError as e:
            if "not running" in _api_message(e) or "stopped" in _api_message(e):
                return
            raise

    async def kill(self, container_id: str, grace_seconds: float = rules.DEFAULT_KILL_GRACE_SECONDS) -> None:
        # bounded here too: [0, rules.MAX_KILL_GRACE_SECONDS], NaN or a non-number -> the default
        await self._run(self._kill_sync, container_id, rules.kill_grace(grace_seconds))

    def _remove_sync(self, container_id: str) -> bool:
        try:
            self._client().containers.get(container_id).remove(force=True)
            return True
        except NotFound:
            return False

    async def remove(self, container_id: str) -> None:
        await self._run(self._remove_sync, container_id)

    async def remove_all(self, labels: dict[str, str]) -> int:
        if not labels:
            raise ValueError("remove_all needs at least one label (refusing to remove every container)")
        states = await self.list(labels)
        done = await asyncio.gather(*(self._run(self._remove_sync, s.container_id) for s in states))
        return sum(done)
