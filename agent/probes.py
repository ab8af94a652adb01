"""The probes of health checks and checks (the IO; the rules are agent/checks.py). Each returns a checks.Result and
never raises; none blocks the event loop; each is bounded by the check's timeout (and by MAX_PROBES at once).

Where a probe runs (docs/services.md, "Health checks and checks"):
- COMMAND: in the task's container, as its user, with its environment plus the check's variables, in its sandbox:
  a podman exec session over the podman service's socket (agent/podman_api.py). One that outlives its timeout is
  killed (SIGKILL) and counts as a failure.
- HTTP and TCP: to 127.0.0.1 (::1 for IPv6) and the check's port *in the task's network namespace*. On the host
  network (the default) that is the agent host's own loopback: probed from the agent directly (aiohttp, asyncio),
  unless the agent itself runs in a network namespace other than the host's and the container's (then as below;
  while podman cannot say where the container is, the probe is transient: ignored).
  On the BRIDGE or NONE network the agent enters the container's namespace: it runs agent/probe.py (standard
  library only) under `nsenter --net=/proc/PID/ns/net`, PID being the container's (podman's inspect); that process
  is killed when the timeout is over. As Mesos, which enters the task's namespace to run curl.
A probe that fails because the podman service cannot be reached is `transient` (ignored, as Mesos ignores a check
it could not start); one that fails because the container is gone is a failure (the task is ending anyway).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import sys
from pathlib import Path

import aiohttp

from agent import podman_api
from agent.checks import Result
from eventstore import events as ev

MAX_PROBES = 32  # probes running at once on one agent
MAX_PROBES_PER_FRAMEWORK = 8  # of them, one framework's (each probe lasts at most checks.MAX_PROBE_SECONDS)
MAX_OUTPUT = 64 * 1024  # bytes of a COMMAND check's output read (the rest is drained and dropped)
_HELPER = Path(__file__).resolve().with_name("probe.py")


def command_argv(cmd: ev.CheckCommand) -> list[str]:
    """As a task's own command (agent/containerizer.py): `sh -c value`, or value with arguments[1:] (Mesos's
    `arguments` hold argv[0])."""
    if cmd.shell:
        return ["/bin/sh", "-c", cmd.value or ""]
    return [cmd.value or "", *list(cmd.arguments)[1:]]


async def probe(spec: ev.CheckSpec, *, socket_path: Path, container_id: str, network: str | None,
                timeout: float | None, slots: asyncio.Semaphore, same_netns: bool | None = None) -> Result:
    """One probe of `spec` against the task in container `container_id` (on `network`: None is the host's), once
    one of the agent's `slots` (MAX_PROBES of them) is free."""
    async with slots:
        try:
            if spec.type == "COMMAND" and spec.command is not None:
                return await _command(spec.command, socket_path, container_id, timeout)
            if spec.type == "HTTP" and not (spec.path or "/").startswith("/"):
                # checked by the master too; the agent trusts no LAUNCH (a path is never part of the authority)
                return Result(None, "the HTTP check's path does not start with '/'")
            if spec.type in ("HTTP", "TCP") and spec.port is not None:
                host = "::1" if spec.ipv6 else "127.0.0.1"
                ours = same_netns
                if ours is None:
                    ours = True if network in ("BRIDGE", "NONE") else await _in_our_netns(socket_path, container_id)
                if ours is None:
                    # Not known where to probe (the podman service is restarting): as a probe that could not start.
                    return Result(None, "cannot find the task's network namespace (podman unreachable)",
                                  transient=True)
                if network in ("BRIDGE", "NONE") or not ours:
                    return await _in_netns(spec, host, socket_path, container_id, timeout)
                if spec.type == "HTTP":
                    return await _http(spec, host, timeout)
                return await _tcp(host, spec.port, timeout)
            return Result(None, f"cannot probe a {spec.type} check without its {spec.type.lower()} settings")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a probe never fails its checker
            return Result(None, f"the probe failed: {e or type(e).__name__}"[:1000])


def _scheme(spec: ev.CheckSpec) -> str:
    return spec.scheme if isinstance(spec, ev.HealthCheckSpec) else "http"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _http(spec: ev.CheckSpec, host: str, timeout: float | None) -> Result:
    url = f"{_scheme(spec)}://{_url_host(host)}:{spec.port}{spec.path or '/'}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(url, ssl=False, allow_redirects=False,
                             headers={"User-Agent": "drover-health-check"}) as r:
                return Result(r.status)
    except asyncio.TimeoutError:
        return Result(None, f"HTTP request to {url} timed out after {timeout:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return Result(None, f"HTTP request to {url} failed: {e or type(e).__name__}"[:1000])


async def _tcp(host: str, port: int, timeout: float | None) -> Result:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return Result(None, f"TCP connection to {host}:{port} timed out after {timeout:g}s")
    except OSError:
        return Result(False)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return Result(True)


async def _container_pid(socket_path: Path, container_id: str) -> int | None:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)),
                                     timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.get(f"{podman_api.API}/containers/{container_id}/json") as r:
            if r.status == 404:
                return None
            if r.status != 200:
                raise podman_api.PodmanAPIError(f"podman inspect answered {r.status}")
            d = await r.json(content_type=None)
    st = d.get("State") or {}
    pid = st.get("Pid")
    return pid if isinstance(pid, int) and pid > 1 and st.get("Running", True) else None


@functools.cache
def _agent_in_hosts_netns() -> bool:
    """Whether this process is in the host's network namespace (init's): then no podman call is needed to know."""
    try:
        ours, init = os.stat("/proc/self/ns/net"), os.stat("/proc/1/ns/net")
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (init.st_dev, init.st_ino)


_SAME_NETNS: dict[str, bool] = {}  # container id -> its network namespace is the agent's (fixed while it runs)
_SAME_NETNS_MAX = 4096


async def _in_our_netns(socket_path: Path, container_id: str) -> bool | None:
    """Whether a host-network task's namespace is the agent's own: not when the agent runs in a network namespace
    of its own while the podman service (and so every host-network container) is in the host's, as in `drover chaos`
    runs. None: unknown for now (podman unreachable). A container that is gone: True (the probe says what it finds).
    Remembered per container: a running container keeps its namespace."""
    if _agent_in_hosts_netns():
        return True  # the podman service, and so every host-network container, is in the host's too
    if (known := _SAME_NETNS.get(container_id)) is not None:
        return known
    try:
        pid = await _container_pid(socket_path, container_id)
        if pid is None:
            return True
        theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/self/ns/net")
    except (aiohttp.ClientError, OSError, podman_api.PodmanAPIError):
        return None
    same = (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
    if len(_SAME_NETNS) >= _SAME_NETNS_MAX:
        _SAME_NETNS.pop(next(iter(_SAME_NETNS)))
    _SAME_NETNS[container_id] = same
    return same


async def _in_netns(spec: ev.CheckSpec, host: str, socket_path: Path, container_id: str,
                    timeout: float | None) -> Result:
    try:
        pid = await _container_pid(socket_path, container_id)
    except (aiohttp.ClientError, OSError, podman_api.PodmanAPIError) as e:
        return Result(None, f"cannot find the task's network namespace: {e}"[:1000], transient=True)
    if pid is None:
        return Result(None, "the task's container is not running")
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    inner = str(timeout if timeout is not None else 3600.0)
    args = ["http", _scheme(spec), host, str(spec.port), spec.path or "/", inner] if spec.type == "HTTP" \
        else ["tcp", host, str(spec.port), inner]
    proc = await asyncio.create_subprocess_exec(
        nsenter, f"--net=/proc/{pid}/ns/net", "--", sys.executable, "-S", str(_HELPER), *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), None if timeout is None else timeout + 1.0)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return Result(None, f"{spec.type} probe in the task's network namespace timed out after {timeout:g}s")
    except asyncio.CancelledError:
        proc.kill()
        raise
    try:
        d = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = err.decode(errors="replace").strip()[:500] or f"exit status {proc.returncode}"
        return Result(None, f"cannot enter the task's network namespace: {why}")
    v = d.get("value") if isinstance(d, dict) else None
    if isinstance(v, bool) or (isinstance(v, int) and spec.type == "HTTP"):
        return Result(v)
    return Result(None, str(d.get("error") if isinstance(d, dict) else d)[:1000])


async def _command(cmd: ev.CheckCommand, socket_path: Path, container_id: str, timeout: float | None) -> Result:
    env = [f"{v.key}={v.value}" for v in cmd.env]
    try:
        exec_id = await podman_api.exec_create(socket_path, container_id, command_argv(cmd), env=env)
    except podman_api.PodmanAPIError as e:
        return Result(None, f"cannot run the check's command in the task's container: {e}"[:1000])
    except (aiohttp.ClientError, OSError) as e:
        return Result(None, f"the podman service cannot be reached: {e}"[:1000], transient=True)
    output = bytearray()

    async def drain() -> None:
        async for _kind, data in podman_api.exec_output(socket_path, exec_id):
            if len(output) < MAX_OUTPUT:
                output.extend(data[:MAX_OUTPUT - len(output)])

    try:
        await asyncio.wait_for(drain(), timeout)
    except asyncio.TimeoutError:
        await _kill_quietly(socket_path, exec_id)
        return Result(None, f"Command timed out after {timeout:g}s")
    except asyncio.CancelledError:
        await asyncio.shield(_kill_quietly(socket_path, exec_id))
        raise
    except (aiohttp.ClientError, OSError, podman_api.PodmanAPIError) as e:
        await _kill_quietly(socket_path, exec_id)
        return Result(None, f"the check's command could not be followed: {e}"[:1000])
    for _ in range(50):  # podman records the exit a moment after the stream ends
        try:
            code = await podman_api.exec_exit_code(socket_path, exec_id)
        except (aiohttp.ClientError, OSError, podman_api.PodmanAPIError) as e:
            return Result(None, f"the check's exit status is unknown: {e}"[:1000])
        if code is not None:
            return Result(code, None if code == 0 else output.decode(errors="replace")[-500:].strip() or None)
        await asyncio.sleep(0.1)
    return Result(None, "the check's exit status is unknown")


async def _kill_quietly(socket_path: Path, exec_id: str) -> None:
    try:
        await podman_api.exec_kill(socket_path, exec_id)
    except Exception:  # best effort: the session ends with its container anyway
        pass
