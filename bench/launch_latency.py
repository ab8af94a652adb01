"""Benchmark: ACCEPT -> TASK_RUNNING latency through a local Drover cluster, vs raw podman-py create+start.

    .venv/bin/python -m bench.launch_latency            # 30 tasks per row, under a minute
    .venv/bin/python -m bench.launch_latency --quick    # 3 tasks per row, ~10 s

Cluster: `drover.local.LocalCluster` with 3 master replicas (the default shape; `--masters 1` for a single replica)
and 1 agent, each its own `drover master` / `drover agent` process, plus one `podman system service`, all in a temp
dir. A small framework in this process subscribes over the v1 HTTP scheduler API (aiohttp, as drover/execute.py
does), and for each task takes an offer, sends ACCEPT with one LAUNCH (0.1 cpus, 32 MB, default image, command
`true`) and measures until the TASK_RUNNING UPDATE arrives on its event stream. Every update is acknowledged at once
(the agent sends a task's next update only after the previous one is acknowledged, so TASK_STARTING's ack is on the
path). Tasks run one at a time: the next starts after the previous one is terminal.

Baselines, same run, same podman service (the cluster's socket), same image/command/limits/mounts as
agent/containerizer.py uses (entrypoint wrapper, sandbox bind mount, init, network none, CFS quota, memory limit):

* raw podman-py: `containers.create(...)` + `start()` on one reused `PodmanClient`;
* `PodmanContainerizer.launch` called directly (adds the name lookup, image lookups and sandbox mkdir).

The three rows are measured in rotating order within each round, each on a quiet system (the previous container
has exited and been removed). Nothing asserts on times.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from bench import eprint, fmt, run_main, machine_line, median, percentile, sigterm_as_keyboard_interrupt, table

CPUS, MEM = 0.1, 32.0
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE",
            "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}
MASTER_ARGS = ["--allocation-interval", "0.5", "--heartbeat-interval", "5"]
BENCH_LABEL = "drover.bench"


# ------------------------------------------------------------------------------------------------ baselines
def podman_kwargs(name: str, sandbox: Path, command: str, env: dict[str, str], labels: dict[str, str]) -> dict:
    """The create() arguments PodmanContainerizer._launch_sync builds for a shell command task with cpus/mem."""
    from agent.containerizer import _WRAPPER, SANDBOX_MOUNT

    mem = int(MEM * 1024 * 1024)
    return dict(
        name=name,
        entrypoint=["/bin/sh", "-c", _WRAPPER, "drover-wrapper"],
        command=["/bin/sh", "-c", command],
        environment={**env, "MESOS_SANDBOX": SANDBOX_MOUNT},
        labels=labels,
        mounts=[{"type": "bind", "source": str(sandbox), "target": SANDBOX_MOUNT}],
        working_dir=SANDBOX_MOUNT,
        init=True,
        network_mode="none",
        cpu_period=100_000,
        cpu_quota=max(1000, int(round(CPUS * 100_000))),
        mem_limit=mem,
        memswap_limit=mem,
    )


class RawPodman:
    """podman-py create+start, timed; one client used from one thread (as the agent's pool threads do)."""

    def __init__(self, socket: Path):
        from podman import PodmanClient

        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-podman")
        self.client = PodmanClient(base_url=f"unix://{socket}", timeout=60)

    def _launch(self, image: str, kwargs: dict) -> tuple[float, str]:
        Path(kwargs["mounts"][0]["source"]).mkdir(parents=True, exist_ok=True)  # untimed, like the agent's mkdir
        t0 = time.perf_counter()
        c = self.client.containers.create(image, **kwargs)
        c.start()
        dt = time.perf_counter() - t0
        return dt, c.id

    def _finish(self, cid: str) -> int:
        from podman.errors import APIError

        for attempt in range(20):
            try:
                c = self.client.containers.get(cid)
                break
            except APIError as e:
                # podman's inspect can race a short-lived container's exit ("read /proc/PID/cgroup: no such
                # process", a 500): ask again.
                if "no such process" not in str(e) or attempt == 19:
                    raise
                time.sleep(0.05)
        rc = c.wait(interval="20ms")
        c.remove(force=True)
        return rc

    async def launch(self, image: str, kwargs: dict) -> tuple[float, str]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._launch, image, kwargs)

    async def finish(self, cid: str) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._finish, cid)

    def remove_labelled(self, run_id: str) -> int:
        n = 0
        for c in self.client.containers.list(all=True, filters=[f"label={BENCH_LABEL}={run_id}"]):
            with contextlib.suppress(Exception):
                c.remove(force=True)
                n += 1
        return n

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


# ------------------------------------------------------------------------------------------------ framework
class Framework:
    """A minimal v1 HTTP scheduler: subscribe, queue offers, record (and acknowledge) every status update."""

    def __init__(self, master: str, name: str):
        self.master = master
        self.name = name
        self.session = None
        self.stream_id = None
        self.framework_id = None
        self.offers: asyncio.Queue = asyncio.Queue()
        self.updates: dict[str, dict[str, tuple[float, float, dict]]] = {}  # task -> state -> (perf, wall, status)
        self._waiters: dict[tuple[str, str], asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._resp = None
        self._bg: set[asyncio.Task] = set()

    async def start(self, timeout: float = 30.0) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        target = self.master
        deadline = time.time() + timeout
        while True:
            body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {
                "user": "root", "name": self.name, "failover_timeout": 0.0,
                "capabilities": [{"type": "TASK_KILLING_STATE"}]}}}
            resp = await self.session.post(f"http://{target}/api/v1/scheduler", json=body, allow_redirects=False,
                                           headers={"Accept": "application/json"})
            if resp.status == 307:
                target = resp.headers["Location"].lstrip("/").split("/", 1)[0]
                resp.release()
            elif resp.status in (503,) or (resp.status != 200 and time.time() < deadline):
                resp.release()
                await asyncio.sleep(0.3)
            else:
                break
            if time.time() > deadline:
                raise RuntimeError(f"SUBSCRIBE to {target} did not succeed within {timeout}s")
        if resp.status != 200:
            raise RuntimeError(f"SUBSCRIBE failed: HTTP {resp.status} {await resp.text()}")
        self.master, self._resp = target, resp
        self.stream_id = resp.headers["Mesos-Stream-Id"]
        subscribed = asyncio.get_running_loop().create_future()
        self._waiters[("", "SUBSCRIBED")] = subscribed
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(subscribed, timeout)

    async def _records(self):
        buf = b""
        async for chunk in self._resp.content.iter_any():
            buf += chunk
            while b"\n" in buf:
                nl = buf.index(b"\n")
                n = int(buf[:nl])
                if len(buf) < nl + 1 + n:
                    break
                rec, buf = buf[nl + 1:nl + 1 + n], buf[nl + 1 + n:]
                yield json.loads(rec)

    async def _read(self) -> None:
        async for e in self._records():
            now_perf, now_wall = time.perf_counter(), time.time()
            t = e["type"]
            if t == "SUBSCRIBED":
                self.framework_id = e["subscribed"]["framework_id"]["value"]
                self._resolve(("", "SUBSCRIBED"), True)
            elif t == "OFFERS":
                for o in e["offers"]["offers"]:
                    self.offers.put_nowait(o)
            elif t == "UPDATE":
                st = e["update"]["status"]
                tid, state = st["task_id"]["value"], st["state"]
                self.updates.setdefault(tid, {})[state] = (now_perf, now_wall, st)
                if "uuid" in st:
                    self._spawn(self.call({"type": "ACKNOWLEDGE", "acknowledge": {
                        "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}}))
                self._resolve((tid, state), st)
                if state in TERMINAL:
                    self._resolve((tid, "TERMINAL"), st)
            elif t == "ERROR":
                eprint(f"framework ERROR event: {e}")
        for f in self._waiters.values():
            if not f.done():
                f.set_exception(RuntimeError("the master closed the framework's event stream"))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _resolve(self, key, value) -> None:
        f = self._waiters.get(key)
        if f is None:
            f = self._waiters[key] = asyncio.get_running_loop().create_future()
        if not f.done():
            f.set_result(value)

    async def wait_for(self, task_id: str, state: str, timeout: float = 60.0) -> dict:
        key = (task_id, state)
        f = self._waiters.get(key)
        if f is None:
            f = self._waiters[key] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(asyncio.shield(f), timeout)

    async def call(self, payload: dict) -> int:
        payload["framework_id"] = {"value": self.framework_id}
        async with self.session.post(f"http://{self.master}/api/v1/scheduler", json=payload,
                                     headers={"Mesos-Stream-Id": self.stream_id}) as r:
            if r.status >= 300:
                raise RuntimeError(f"{payload['type']} failed: HTTP {r.status} {await r.text()}")
            return r.status

    def task_info(self, offer: dict, task_id: str, command: str) -> dict:
        return {"name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
                              {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}}],
                "command": {"value": command, "shell": True}}

    async def close(self) -> None:
        if self.framework_id is not None:
            with contextlib.suppress(Exception):
                await self.call({"type": "TEARDOWN"})
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for t in list(self._bg):
            t.cancel()
        if self._resp is not None:
            self._resp.close()
        if self.session is not None:
            await self.session.close()


# ------------------------------------------------------------------------------------------------ the run
async def measure(cluster, root: Path, n: int, command: str, run_id: str) -> dict:
    from agent import images
    from agent.containerizer import ContainerSpec, PodmanContainerizer

    sock = Path(cluster.layout["podman_socket"])
    raw = RawPodman(sock)
    cz = PodmanContainerizer(sock, start_service=False)
    fw = Framework(cluster.layout["leader"], f"bench-launch-{run_id}")
    res: dict[str, list] = {"raw": [], "containerizer": [], "drover": [], "drover_starting": [],
                            "accept_http": [], "dispatch": [], "agent_launch": [], "report": []}
    labels = {BENCH_LABEL: run_id}
    env = {"MESOS_TASK_ID": "x", "MESOS_FRAMEWORK_ID": "bench", "MESOS_AGENT_ID": "bench"}
    failures: list[str] = []
    try:
        await cz.start()
        await fw.start()
        # one untimed warm-up of each path (first create on a fresh service loads more state)
        for i in range(-1, n):
            order = ("raw", "containerizer", "drover")[i % 3:] + ("raw", "containerizer", "drover")[:i % 3]
            for row in order:
                name = f"drover-bench-{run_id}-{row}-{i + 1}"
                if row == "raw":
                    dt, cid = await raw.launch(images.DEFAULT_IMAGE,
                                               podman_kwargs(name, root / "sandboxes" / name, command, env, labels))
                    await raw.finish(cid)
                    if i >= 0:
                        res["raw"].append(dt)
                elif row == "containerizer":
                    spec = ContainerSpec(name=name, image=None, shell=True, value=command, arguments=[], env=env,
                                         cpus=CPUS, mem_mb=MEM, labels=labels, sandbox_dir=root / "sandboxes" / name)
                    t0 = time.perf_counter()
                    cid = await cz.launch(spec)
                    dt = time.perf_counter() - t0
                    await cz.wait(cid)
                    await cz.remove(cid)
                    if i >= 0:
                        res["containerizer"].append(dt)
                else:
                    offer = await asyncio.wait_for(fw.offers.get(), 60)
                    tid = f"t{i + 1}-{uuid.uuid4().hex[:6]}"
                    accept = {"type": "ACCEPT", "accept": {
                        "offer_ids": [offer["id"]],
                        "operations": [{"type": "LAUNCH",
                                        "launch": {"task_infos": [fw.task_info(offer, tid, command)]}}],
                        "filters": {"refuse_seconds": 0.0}}}
                    t0, w0 = time.perf_counter(), time.time()
                    await fw.call(accept)
                    t_http = time.perf_counter()
                    await fw.wait_for(tid, "TASK_RUNNING")
                    final = await fw.wait_for(tid, "TERMINAL")
                    if final["state"] != "TASK_FINISHED":
                        failures.append(f"{tid}: {final['state']} {final.get('message', '')}")
                    if i < 0:
                        continue
                    ups = fw.updates[tid]
                    p_run, w_run, s_run = ups["TASK_RUNNING"]
                    res["drover"].append(p_run - t0)
                    res["accept_http"].append(t_http - t0)
                    if "TASK_STARTING" in ups:
                        p_st, _, s_st = ups["TASK_STARTING"]
                        res["drover_starting"].append(p_st - t0)
                        res["dispatch"].append(s_st["timestamp"] - w0)
                        res["agent_launch"].append(s_run["timestamp"] - s_st["timestamp"])
                    res["report"].append(w_run - s_run["timestamp"])
            if i >= 0 and (i + 1) % 5 == 0:
                eprint(f"  {i + 1}/{n} rounds")
    finally:
        await fw.close()
        with contextlib.suppress(Exception):
            await cz.remove_all(labels)
        await cz.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(raw.remove_labelled, run_id)
        raw.close()
    res["failures"] = failures
    return res


def report(res: dict, masters: int, command: str) -> None:
    ms = lambda xs, f: fmt(f(xs) * 1000, 1)  # noqa: E731
    p95 = lambda xs: percentile(xs, 95)  # noqa: E731
    raw_med = median(res["raw"])
    rows = []
    for key, label in (("raw", "raw podman-py create+start"),
                       ("containerizer", "PodmanContainerizer.launch"),
                       ("drover", "Drover ACCEPT -> TASK_RUNNING")):
        xs = res[key]
        if key == "raw":
            over = paired = "-"
        else:
            over = f"{(median(xs) - raw_med) * 1000:+,.1f} ms ({median(xs) / raw_med:.2f}x)"
            # rows are measured in the same rounds: the median of per-round differences is robust to drift
            paired = f"{median([a - b for a, b in zip(xs, res['raw'], strict=False)]) * 1000:+,.1f} ms"
        rows.append([label, str(len(xs)), ms(xs, median), ms(xs, p95), ms(xs, min), over, paired])
    print()
    print(f"Launch latency: {masters} master replica(s) + 1 agent + podman service, tasks one at a time, "
          f"command {command!r}, {CPUS:g} cpus / {MEM:g} MB, network none")
    print(machine_line())
    print(table(["row", "n", "median ms", "p95 ms", "min ms", "vs raw: medians", "vs raw: paired"], rows,
                right={1, 2, 3, 4, 6}))
    print("vs raw: medians = difference (and ratio) of the medians; paired = median of the per-round differences.")
    print()
    print("Drover row, broken down (medians, ms; wall clock, all processes on this machine):")
    parts = [
        ("ACCEPT call answered (202, OffersAccepted committed)", res["accept_http"]),
        ("ACCEPT -> agent starts the container (TASK_STARTING timestamp)", res["dispatch"]),
        ("agent: launch (TASK_STARTING -> TASK_RUNNING timestamps)", res["agent_launch"]),
        ("TASK_RUNNING timestamp -> UPDATE received by the framework", res["report"]),
        ("ACCEPT -> TASK_STARTING UPDATE received", res["drover_starting"]),
    ]
    print(table(["part", "median ms", "p95 ms"], [[p, ms(xs, median), ms(xs, p95)] for p, xs in parts],
                right={1, 2}))
    if res["failures"]:
        print(f"tasks that did not finish: {res['failures']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.launch_latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (3 tasks per row)")
    ap.add_argument("--tasks", type=int, default=None, help="tasks per row (default 30, --quick 3)")
    ap.add_argument("--masters", type=int, default=3, choices=(1, 3))
    ap.add_argument("--command", default="true", help="task command (shell); default: true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (process logs)")
    args = ap.parse_args(argv)
    n = args.tasks or (3 if args.quick else 30)
    sigterm_as_keyboard_interrupt()

    from drover.local import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="drover-bench-launch-"))
    run_id = uuid.uuid4().hex[:8]
    cluster = LocalCluster(data_dir=root / "cluster", masters=args.masters, agents=1, master_args=list(MASTER_ARGS))
    t0 = time.time()
    try:
        cluster.start()
        cluster.wait_leader(timeout=60)
        cluster.wait_agents(timeout=120)
        eprint(f"cluster up in {time.time() - t0:.1f}s ({root})")
        res = asyncio.run(measure(cluster, root, n, args.command, run_id))
    finally:
        cluster.stop()
        if args.keep:
            eprint(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(res, args.masters, args.command)
    return 0


if __name__ == "__main__":
    run_main(main)
