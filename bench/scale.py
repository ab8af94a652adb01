"""Benchmark: a 3-replica Drover cluster under thousands of emulated agents and 10 busy frameworks (issue 10).

    .venv/bin/python -m bench.scale                        # N = 100, 1000, 5000, 10000 agents; at most ~5 min per N
    .venv/bin/python -m bench.scale --agents 100,1000      # chosen N
    .venv/bin/python -m bench.scale --quick                # 50 agents, short phases: a smoke run (~40 s)

For each N, a fresh cluster: 3 real `drover master` processes (drover.local.LocalCluster's command lines: a Raft
secret file of mode 0600, journal fsync on, every other flag at its default) on free loopback ports. Then, each
phase bounded by a cap, and reporting what it reached if the cap hits first:

1. **register**: N emulated agents (bench/emulated.py, 1 process up to 2,000 agents, else 2) subscribe at once;
   time until every one has its REGISTERED.
2. **idle**: agents registered (and pinging), no framework: CPU of all 3 replicas, and per 1,000 agents above what
   the replicas use idle with no agent at all (measured first, right after the election).
3. **load**: 10 emulated frameworks, each keeping 20 tasks in flight (0.01 cpus, 32 MB; the agents finish them at
   once). After a warm-up, a measured window: tasks finished and acknowledged per second, offer -> TASK_RUNNING
   and ACCEPT -> TASK_FINISHED acknowledged latencies (seen by the framework), Raft entries, decisions and events
   committed by the leader (its /drover/status `pipeline` counters; on a master without them, pysyncobj's commit
   index and the store), bytes per event type (the leader's SQLite store), leader CPU (/proc/PID/stat) and RSS.
4. **reads**: `GET /master/state` and operator `GET_STATE` on the leader, timed, workload still running.
5. **failover**: SIGKILL of the leader, workload still running; time until a survivor serves (/drover/status),
   until every agent has re-registered, and until every framework has re-subscribed and been offered again.

Baseline, same run, same machine: raw pysyncobj sequential one-entry commits/s on 3 replicas (bench.raftlog's raw
cluster: pysyncobj journal, no fsync, no Raft secret), printed beside the load phase's Raft entries/s.

Everything runs on this one machine: the emulators compete with the replicas for CPU (their CPU is reported).
Progress goes to stderr, tables to stdout. Nothing asserts on times. Every process and the temp dir are cleaned up,
also on Ctrl-C or SIGTERM (exit status 130).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import eprint, fmt, machine_line, median, run_main, sigterm_as_keyboard_interrupt, table

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Plan:
    """Phase lengths and caps (seconds)."""
    start_cap: float = 30.0  # cluster up, leader serving
    register_cap: float = 75.0
    idle0: float = 10.0  # the 3 replicas idle before any agent registers
    settle: float = 3.0  # after registration, before the idle measurement (registration's allocation runs)
    idle: float = 20.0
    subscribe_cap: float = 20.0
    warmup: float = 5.0
    load: float = 30.0
    reads: int = 3  # samples of each read
    reads_cap: float = 20.0
    failover_cap: float = 60.0
    baseline_commits: int = 1000


QUICK = Plan(start_cap=30, register_cap=30, idle0=2, settle=1, idle=3, subscribe_cap=15, warmup=2, load=6, reads=2,
             reads_cap=10, failover_cap=30, baseline_commits=100)


# ============================================================================================ processes
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def http(url: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


class Masters:
    """3 `drover master` processes, started with LocalCluster's command lines (no agents, no Podman)."""

    def __init__(self, root: Path):
        from drover.local import LocalCluster

        self.cluster = LocalCluster(data_dir=root, masters=3, agents=0)
        self.cluster.plan()
        self.cluster.layout["leader"] = None  # no floating leader address: clients find the leader themselves
        self.masters = {m["id"]: m for m in self.cluster.layout["masters"]}
        self.killed: set[str] = set()
        self._raft_admin = None

    def start(self) -> None:
        for mid in self.masters:
            self.cluster.start_master(mid)

    def addresses(self) -> list[str]:
        return [m["http"] for m in self.masters.values()]

    def pid(self, mid: str) -> int:
        return self.cluster.procs[mid].pid

    def alive(self) -> list[str]:
        return [mid for mid in self.masters if self.cluster.alive(mid)]

    def serving(self) -> str | None:
        for mid in self.alive():
            code, body = http(f"http://{self.masters[mid]['http']}/drover/status", timeout=2)
            if code == 200 and json.loads(body).get("serving"):
                return mid
        return None

    def wait_serving(self, cap: float) -> str | None:
        deadline = time.time() + cap
        while time.time() < deadline:
            for mid in set(self.masters) - self.killed:
                p = self.cluster.procs[mid]
                if p.poll() is not None:
                    raise RuntimeError(f"master {mid} exited with status {p.returncode}")
            lead = self.serving()
            if lead:
                return lead
            time.sleep(0.05)
        return None

    def status(self, mid: str) -> dict:
        code, body = http(f"http://{self.masters[mid]['http']}/drover/status", timeout=10)
        return json.loads(body) if code == 200 else {}

    def commit_counts(self, mid: str) -> dict[str, int]:
        """What replica `mid` has committed as leader so far: Raft entries, decisions and events, from the `pipeline`
        counters of its /drover/status. A master without them: Raft entries only, from pysyncobj."""
        counts = self.status(mid).get("pipeline")
        if isinstance(counts, dict):
            return counts
        index = self.raft_commit_index(mid)
        return {} if index is None else {"entries": index}

    def raft_commit_index(self, mid: str) -> int | None:
        """pysyncobj's commit index on replica `mid`: its count of Raft entries (election no-ops included). Asked with
        pysyncobj's own admin command `status` on the Raft port, authenticated with the cluster's secret. None if
        it does not answer."""
        from pysyncobj.utility import TcpUtility, UtilityException

        from eventstore.raftlog import read_secret_file

        if self._raft_admin is None:  # derives a key from the secret (PBKDF2): once
            self._raft_admin = TcpUtility(password=read_secret_file(self.cluster.raft_secret_file), timeout=5)
        try:
            return int(self._raft_admin.executeCommand(self.masters[mid]["raft"], ["status"])["commit_idx"])
        except (UtilityException, KeyError, TypeError, ValueError, OSError):
            return None

    def store(self, mid: str) -> Path:
        return Path(self.masters[mid]["data_dir"]) / "events.sqlite"

    def kill(self, mid: str) -> None:
        self.killed.add(mid)
        self.cluster.kill(mid, signal.SIGKILL)

    def stop(self) -> None:
        self.cluster.stop()


class Worker:
    """An emulator process (bench/emulated.py): commands in on stdin, JSON lines out on stdout."""

    def __init__(self, name: str, argv: list[str], log: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.emulated", *argv, "--parent", str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, cwd=REPO, env=env,
                start_new_session=True)
        self.name, self.log = name, log
        self.status: dict = {}
        self.replies: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "status":
                self.status = msg
            elif kind == "ready":
                self.ready.set()
            else:
                self.replies.put(msg)

    def send(self, **cmd) -> None:
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def request(self, timeout: float, **cmd) -> dict | None:
        self.send(**cmd)
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"{self.name} did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send(cmd="stop")
            try:
                self.proc.stdin.close()  # end of input ends the emulator too
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def total(workers: list[Worker], key: str) -> float:
    return sum(w.status.get(key) or 0 for w in workers)


def latest(workers: list[Worker], key: str) -> float | None:
    values = [w.status.get(key) for w in workers if w.status.get(key) is not None]
    return max(values) if values else None


def wait_until(cond, cap: float, every: float = 0.2) -> bool:
    deadline = time.time() + cap
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


# ============================================================================================ phases
def phase_register(n: int, agents: list[Worker], plan: Plan, leader_pid: int) -> dict:
    # The status lines lag by up to 0.5 s; the time comes from the workers' own REGISTERED timestamps.
    cpu0, t0 = cpu_seconds(leader_pid), time.time()
    for w in agents:
        w.send(cmd="go")
    done = wait_until(lambda: total(agents, "since_count") >= n, plan.register_cap)
    time.sleep(0.6)  # one more status line from each worker
    reached = int(total(agents, "since_count"))
    last = latest(agents, "since_last") or time.time()
    seconds = (last - t0) if done else plan.register_cap
    return {"registered": reached, "seconds": seconds, "rate": reached / seconds if seconds > 0 else 0.0,
            "complete": done, "leader_cpu": 100 * (cpu_seconds(leader_pid) - cpu0) / (time.time() - t0)}


def replicas_cpu(masters: Masters, seconds: float) -> dict[str, float]:
    """CPU % (of one core) of each live replica over the next `seconds`."""
    pids = {mid: masters.pid(mid) for mid in masters.alive()}
    cpu0, t0 = {m: cpu_seconds(p) for m, p in pids.items()}, time.time()
    time.sleep(seconds)
    wall = time.time() - t0
    return {m: 100 * (cpu_seconds(p) - cpu0[m]) / wall for m, p in pids.items()}


def phase_idle(n: int, masters: Masters, plan: Plan, leader: str, no_agents: float) -> dict:
    """Agents registered and pinging, no framework. Per 1,000 agents: above the replicas' own idle CPU
    (`no_agents`, measured before any agent registered: Raft heartbeats, timers)."""
    time.sleep(plan.settle)
    cpu = replicas_cpu(masters, plan.idle)
    all3 = sum(cpu.values())
    return {"cpu_all": all3, "cpu_leader": cpu[leader], "no_agents": no_agents,
            "per_1k": (all3 - no_agents) / (n / 1000), "leader_rss": rss_mib(masters.pid(leader))}


def phase_load(frameworks: Worker, workers: list[Worker], masters: Masters, plan: Plan, leader: str,
               count: int) -> dict:
    frameworks.send(cmd="go")
    subscribed = wait_until(lambda: frameworks.status.get("subscribed", 0) >= count, plan.subscribe_cap)
    if not subscribed:
        eprint(f"  only {frameworks.status.get('subscribed', 0)}/{count} frameworks subscribed; measuring anyway")
    time.sleep(plan.warmup)
    pid = masters.pid(leader)
    emu_cpu0 = sum(w.status.get("cpu", 0) for w in workers)
    counts0 = masters.commit_counts(leader)
    cpu0, t0 = cpu_seconds(pid), time.time()
    time.sleep(plan.load)
    cpu1, t1 = cpu_seconds(pid), time.time()
    counts1 = masters.commit_counts(leader)
    leader_after = masters.serving()
    time.sleep(0.6)  # one more status line, for the emulators' CPU
    emu_cpu1 = sum(w.status.get("cpu", 0) for w in workers)
    rep = frameworks.request(30, cmd="report", t0=t0, t1=t1) or {}
    out = {"leader": leader, "leader_after": leader_after, "seconds": t1 - t0, "report": rep,
           "tasks_per_s": rep.get("done", 0) / (t1 - t0), "fw_status": dict(frameworks.status),
           "leader_cpu": 100 * (cpu1 - cpu0) / (t1 - t0), "leader_rss": rss_mib(pid),
           "emu_cpu": 100 * (emu_cpu1 - emu_cpu0) / (t1 - t0 + 0.6)}
    out["log"] = lg = log_stats(masters.store(leader), t0, t1)
    # Committed by the leader in the window; the store's count of decisions where the master keeps none itself.
    for key in ("entries", "decisions", "events"):
        if key in counts0 and key in counts1:
            lg[key] = counts1[key] - counts0[key]
        lg.setdefault(key, None)
        lg[f"{key}_per_s"] = lg[key] / (t1 - t0) if lg[key] is not None else float("nan")
    return out


def log_stats(db: Path, t0: float, t1: float) -> dict:
    """Decisions and events in [t0, t1) from a replica's store, and bytes per event type. Every event carries its
    decision's (term, ts), so a run of events with the same pair is one decision (two decisions taken at the same
    time, e.g. an allocation run's timers and offers, count as one). Raft entries cannot be told from the store: a
    leader commits several decisions in one entry (the decision pipeline)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT term, ts, type, length(payload) FROM events WHERE ts >= ? AND ts < ? ORDER BY idx",
                           (t0, t1)).fetchall()
    finally:
        con.close()
    sizes, by_type, prev = [], {}, None
    for term, ts, etype, nbytes in rows:
        if (term, ts) != prev:
            sizes.append(0)
            prev = (term, ts)
        sizes[-1] += 1
        n, b, top = by_type.get(etype, (0, 0, 0))
        by_type[etype] = (n + 1, b + nbytes, max(top, nbytes))
    wall = t1 - t0
    return {"decisions": len(sizes), "events": len(rows),
            "bytes_per_s": sum(b for _, b, _ in by_type.values()) / wall, "by_type": by_type}


def phase_reads(masters: Masters, leader: str, plan: Plan) -> dict:
    base = f"http://{masters.masters[leader]['http']}"
    out: dict[str, list] = {"state": [], "get_state": []}
    sizes: dict[str, int] = {}
    failures: dict[str, list[int]] = {"state": [], "get_state": []}  # HTTP status of failed reads (0: no answer)
    deadline = time.time() + plan.reads_cap
    for _ in range(plan.reads):
        for key, path, body in (("state", "/master/state", None), ("get_state", "/api/v1", {"type": "GET_STATE"})):
            left = deadline - time.time()
            if left <= 0:
                break
            t = time.perf_counter()
            code, data = http(base + path, body, timeout=left)
            if code == 200:
                out[key].append((time.perf_counter() - t) * 1000)
                sizes[key] = len(data)
            else:
                failures[key].append(code)
    return {"state_ms": median(out["state"]), "get_state_ms": median(out["get_state"]),
            "state_kb": sizes.get("state", 0) / 1024, "get_state_kb": sizes.get("get_state", 0) / 1024,
            "samples": {k: len(v) for k, v in out.items()}, "failures": failures}


def phase_failover(n: int, masters: Masters, leader: str, agents: list[Worker], frameworks: Worker, count: int,
                   plan: Plan) -> dict:
    t_kill = time.time()
    for w in agents + [frameworks]:
        w.send(cmd="since", t=t_kill)  # count only (re-)registrations and offers from now on
    masters.kill(leader)
    new = masters.wait_serving(plan.failover_cap)
    t_leader = time.time() - t_kill if new else None
    left = max(0.0, plan.failover_cap - (time.time() - t_kill))
    agents_back = wait_until(lambda: total(agents, "since_count") >= n, left)
    left = max(0.0, plan.failover_cap - (time.time() - t_kill))
    offered = wait_until(lambda: frameworks.status.get("offered_since", 0) >= count, left)
    time.sleep(0.6)
    since_last = latest(agents, "since_last")
    offered_last = frameworks.status.get("offered_since_last")
    return {"new_leader": new, "leader_s": t_leader,
            "agents_s": since_last - t_kill if agents_back and since_last else None,
            "agents_back": int(total(agents, "since_count")),
            "offered_s": offered_last - t_kill if offered and offered_last else None,
            "offered": frameworks.status.get("offered_since", 0)}


# ============================================================================================ one N
def agent_workers(n: int, masters: Masters, root: Path, args) -> list[Worker]:
    count = args.agent_workers or (1 if n <= 2000 else 2)
    share = [n // count + (1 if i < n % count else 0) for i in range(count)]
    workers, first = [], 0
    for i, k in enumerate(share):
        argv = ["agents", "--masters", ",".join(masters.addresses()), "--count", str(k), "--first", str(first),
                "--resources", args.agent_resources, "--task-seconds", str(args.task_seconds)]
        if args.starting:
            argv.append("--starting")
        workers.append(Worker(f"agents{i + 1}", argv, root / f"agents{i + 1}.log"))
        first += k
    return workers


def current_leader(masters: Masters, was: str, n: int) -> str:
    """Leadership can move under load (an election): each phase measures the replica serving when it starts."""
    now = masters.wait_serving(10) or was
    if now != was:
        eprint(f"[{n} agents] the leader is now {now} (was {was})")
    return now


def elections(db: Path) -> int:
    """LEADER_ELECTED events in a replica's store (the first election included)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM events WHERE type = 'LEADER_ELECTED'").fetchone()[0]
    finally:
        con.close()


def run_one(n: int, root: Path, args, plan: Plan) -> dict:
    res: dict = {"n": n, "loadavg": [os.getloadavg()[0]]}
    masters = Masters(root)
    workers: list[Worker] = []
    try:
        masters.start()
        leader = masters.wait_serving(plan.start_cap)
        if leader is None:
            raise RuntimeError(f"no master served within {plan.start_cap:g} s; logs in {root}")
        agents = agent_workers(n, masters, root, args)
        workers += agents
        fws = Worker("frameworks", ["frameworks", "--masters", ",".join(masters.addresses()), "--count",
                                    str(args.frameworks), "--inflight", str(args.inflight),
                                    "--tasks-per-offer", str(args.tasks_per_offer),
                                    "--decline-refuse", str(args.decline_refuse)], root / "frameworks.log")
        workers.append(fws)
        for w in workers:
            w.wait_ready()
        res["workers"] = len(agents)
        no_agents = sum(replicas_cpu(masters, plan.idle0).values())
        eprint(f"[{n} agents] cluster up, leader {leader}, {no_agents:.1f}% CPU idle (3 replicas); registering")
        res["register"] = reg = phase_register(n, agents, plan, masters.pid(leader))
        eprint(f"[{n} agents] {reg['registered']}/{n} registered in {reg['seconds']:.1f} s; idle phase")
        res["idle"] = phase_idle(n, masters, plan, leader, no_agents)
        eprint(f"[{n} agents] idle: {res['idle']['cpu_all']:.1f}% CPU (3 replicas); load phase")
        leader = current_leader(masters, leader, n)
        res["load"] = load = phase_load(fws, workers, masters, plan, leader, args.frameworks)
        eprint(f"[{n} agents] load: {load['report'].get('done', 0)} tasks in {load['seconds']:.0f} s, "
               f"{fmt(load['log']['entries_per_s'], 0)} Raft entries/s; reads")
        leader = current_leader(masters, leader, n)
        res["reads"] = phase_reads(masters, leader, plan)
        leader = current_leader(masters, leader, n)
        res["elections"] = elections(masters.store(leader))
        res["tick_lag"] = {mid: masters.status(mid).get("raft_tick_lag") for mid in masters.alive()}
        eprint(f"[{n} agents] failover: SIGKILL {leader}")
        res["failover"] = fo = phase_failover(n, masters, leader, agents, fws, args.frameworks, plan)
        eprint(f"[{n} agents] failover: new leader {fo['new_leader']} after {fmt(fo['leader_s'], 2)} s, "
               f"{fo['agents_back']}/{n} agents back, {fo['offered']}/{args.frameworks} frameworks offered")
        res["agents_status"] = [dict(w.status) for w in agents]
    except RuntimeError as e:
        res["error"] = str(e)
        eprint(f"[{n} agents] stopped: {e}")
    finally:
        res["loadavg"].append(os.getloadavg()[0])
        for w in workers:
            w.stop()
        masters.stop()
    return res


def raw_baseline(root: Path, commits: int) -> dict:
    """bench.raftlog's raw pysyncobj cluster: sequential one-entry appends (a 1-event Batch) on the leader."""
    from bench.raftlog import WARMUP, BenchCluster

    c = BenchCluster("raw", root)
    try:
        c.start()
        c.leader()
        r = c.run(1, commits, WARMUP)
        return {"commits_per_s": len(r["committed"]) / r["wall"], "p50_ms": median(r["committed"]) * 1000}
    finally:
        c.stop()


# ============================================================================================ report
def describe_commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "master", "eventstore", "replay", "drover", "agent")
    return head + (" (+ uncommitted changes in master/eventstore/...)" if dirty else "")


def ms(x) -> str:
    return fmt(x, 0)


def read_cells(rd: dict, plan: Plan) -> list[str]:
    def latency(key: str) -> str:
        if rd["samples"][key]:
            return ms(rd[f"{key}_ms"])
        failed = rd["failures"][key]
        return f"failed: HTTP {failed}" if failed else f"none in {plan.reads_cap:g} s"

    return [latency("state"), fmt(rd["state_kb"], 0), latency("get_state"), fmt(rd["get_state_kb"], 0)]


def failover_cells(r: dict, frameworks: int) -> list[str]:
    fo = r.get("failover")
    if fo is None:
        return ["-"] * 3
    return [fmt(fo["leader_s"], 2) if fo["leader_s"] is not None else "none in cap",
            fmt(fo["agents_s"], 1) if fo["agents_s"] is not None else f"{fo['agents_back']:,}/{r['n']:,} in cap",
            fmt(fo["offered_s"], 1) if fo["offered_s"] is not None else f"{fo['offered']}/{frameworks} in cap"]


def report(results: list[dict], baseline: dict, args, plan: Plan) -> None:
    print()
    print(f"Scale: 3 master replicas (fsync on, defaults) + emulated agents + {args.frameworks} frameworks x "
          f"{args.inflight} tasks in flight ({args.tasks_per_offer} per offer at most), all on this machine")
    print(f"{machine_line()}  commit {describe_commit()}")
    print(f"agents advertise {args.agent_resources}; tasks 0.01 cpus / 32 MB, finished "
          f"{args.task_seconds:g} s after TASK_RUNNING{' (TASK_STARTING first)' if args.starting else ''}; "
          f"DECLINE refuse_seconds {args.decline_refuse:g}")
    print(f"phases: register cap {plan.register_cap:g} s, idle {plan.idle0:g} s (0 agents) and {plan.idle:g} s, "
          f"load {plan.warmup:g} s warm-up + {plan.load:g} s measured, failover cap {plan.failover_cap:g} s")
    ok = [r for r in results if "register" in r]

    print("\nRegistration and idle")
    rows = []
    for r in ok:
        reg, idle = r["register"], r.get("idle")
        took = f"{reg['seconds']:.1f}" if reg["complete"] else f">{reg['seconds']:.0f} (cap)"
        idle_cells = [fmt(idle["no_agents"], 1), fmt(idle["cpu_all"], 1), fmt(idle["cpu_leader"], 1),
                      fmt(idle["per_1k"], 2), fmt(idle["leader_rss"], 0)] if idle else ["-"] * 5
        rows.append([str(r["n"]), str(r["workers"]), f"{reg['registered']:,}", took, fmt(reg["rate"], 0),
                     fmt(reg["leader_cpu"], 0), *idle_cells])
    print(table(["agents", "emulator procs", "registered", "time to all s", "agents/s", "leader CPU % (reg)",
                 "idle CPU % 3 replicas, 0 agents", "with agents", "of it leader", "idle CPU %/1k agents",
                 "leader RSS MiB (idle)"], rows, right=set(range(1, 11))))

    print(f"\nLoad ({args.frameworks} frameworks, measured window)")
    rows = []
    for r in ok:
        if "load" not in r:
            continue
        ld, rep, lg = r["load"], r["load"]["report"], r["load"]["log"]
        entries = lg["entries"]
        per_entry = lambda x, e=entries: fmt(x / e, 2) if e else "-"  # noqa: E731
        rows.append([str(r["n"]), f"{rep.get('done', 0):,} in {ld['seconds']:.0f} s", fmt(ld["tasks_per_s"], 1),
                     ms(rep.get("offer_to_running_p50")), ms(rep.get("offer_to_running_p99")),
                     ms(rep.get("accept_to_done_p50")), fmt(lg["entries_per_s"], 0), fmt(lg["decisions_per_s"], 0),
                     fmt(lg["events_per_s"], 0), per_entry(lg["decisions"]), per_entry(lg["events"]),
                     fmt(lg["bytes_per_s"] / 1024, 0), fmt(ld["leader_cpu"], 0), fmt(ld["leader_rss"], 0),
                     fmt(ld["emu_cpu"], 0)])
    print(table(["agents", "tasks done", "tasks/s", "offer->RUNNING p50 ms", "p99 ms", "ACCEPT->FINISHED acked p50 ms",
                 "Raft entries/s", "decisions/s", "events/s", "decisions/entry", "events/entry", "log KiB/s",
                 "leader CPU %", "leader RSS MiB", "emulators CPU %"], rows, right=set(range(2, 15))))
    print(f"baseline: raw pysyncobj, 3 replicas, sequential appends of one 1-event entry (no fsync, no secret): "
          f"{fmt(baseline.get('commits_per_s'), 0)} Raft entries/s (p50 {fmt(baseline.get('p50_ms'), 2)} ms)")

    print("\nReads and failover (SIGKILL of the leader under load)")
    rows = []
    for r in ok:
        if "reads" in r:
            rows.append([str(r["n"]), *read_cells(r["reads"], plan), *failover_cells(r, args.frameworks)])
    print(table(["agents", "/master/state ms (median)", "KiB", "GET_STATE ms (median)", "KiB", "new leader s",
                 "all agents back s", "all frameworks offered s"], rows, right=set(range(1, 8))))

    print()
    for r in results:
        print(f"{r['n']} agents: 1-min load average {r['loadavg'][0]:.1f} at the start, {r['loadavg'][-1]:.1f} at the "
              f"end; elections before the kill: {r.get('elections', '?')} (1 = only the first)")
        lags = {m: lag for m, lag in (r.get("tick_lag") or {}).items() if lag}
        if lags:
            print(f"{r['n']} agents: longest stall of each replica's Raft tick thread before the kill (s; and how many "
                  f"exceeded half the minimum election timeout): " + ", ".join(
                      f"{m} {lag.get('max_s')} ({lag.get('over_half_election_timeout')})" for m, lag in lags.items()))
        if "error" in r:
            print(f"{r['n']} agents: stopped early: {r['error']}")
        if "load" in r:
            by_type = r["load"]["log"]["by_type"]
            top = sorted(by_type.items(), key=lambda kv: -kv[1][1])[:4]
            st = r["load"]["fw_status"]
            if r["load"]["leader_after"] != r["load"].get("leader"):
                print(f"{r['n']} agents: the leader changed during the load window (an election): its figures mix "
                      f"two leaders; now {r['load']['leader_after']}")
            print(f"{r['n']} agents, load window: " + ", ".join(
                f"{t} {n:,} ({b / 1024:,.0f} KiB, max {m / 1024:,.1f} KiB)" for t, (n, b, m) in top)
                + f"; offers {st.get('offers', 0):,}, declined {st.get('declined', 0):,}, failed {st.get('failed')}, "
                  f"call errors {st.get('call_errors')}")
        for a in r.get("agents_status", []):
            print(f"{r['n']} agents, an agent emulator: {a['updates']:,} updates (not 202: {a['update_errors']}; "
                  f"{a['update_retries']:,} resent for want of an ack), {a['pings']:,} pings (not 202: "
                  f"{a['ping_errors']}), {a['registrations']:,} REGISTERED, {a['links_lost']:,} links lost, "
                  f"{a['link_attempts']:,} link attempts")
    print("tasks/s: tasks whose TASK_FINISHED acknowledgement was answered 202 in the window; latencies as the "
          "framework saw them.\nRaft entries, decisions, events: committed by the leader in the window (its "
          "/drover/status `pipeline` counters;\nwithout them, entries from pysyncobj's commit index, decisions and "
          "events from its store). CPU % is of one core.\nidle CPU %/1k agents = (with agents - 0 agents) / "
          "(agents / 1000); a phase that hit its cap shows what it reached. HTTP status 0 = no answer (refused,\n"
          "connection lost, timeout).")


# ============================================================================================ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="100,1000,5000,10000", help="comma-separated agent counts")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 agents, short phases")
    ap.add_argument("--frameworks", type=int, default=10)
    ap.add_argument("--inflight", type=int, default=20, help="tasks each framework keeps in flight")
    ap.add_argument("--tasks-per-offer", type=int, default=1,
                    help="tasks a framework launches on one offer (in one ACCEPT), as many as fit up to this")
    ap.add_argument("--task-seconds", type=float, default=0.0, help="TASK_RUNNING -> TASK_FINISHED on the agent")
    ap.add_argument("--starting", action="store_true", help="agents send TASK_STARTING first, as the real agent")
    ap.add_argument("--agent-resources", default="cpus:1;mem:1024;disk:10240;ports:[31000-32000]",
                    help="what each emulated agent advertises (default: `drover agent`'s default)")
    ap.add_argument("--decline-refuse", type=float, default=5.0, help="refuse_seconds of DECLINEs (Mesos: 5)")
    ap.add_argument("--agent-workers", type=int, default=0, help="emulator processes for agents (0: 1, or 2 "
                                                                  "above 2,000 agents)")
    ap.add_argument("--load-seconds", type=float, default=None, help="measured load window (default 30, quick 6)")
    ap.add_argument("--register-cap", type=float, default=None)
    ap.add_argument("--failover-cap", type=float, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (replica logs and stores)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    for name, attr in (("load_seconds", "load"), ("register_cap", "register_cap"), ("failover_cap", "failover_cap")):
        if getattr(args, name) is not None:
            setattr(plan, attr, getattr(args, name))
    ns = [50] if args.quick else [int(x) for x in args.agents.split(",") if x.strip()]
    sigterm_as_keyboard_interrupt()
    # Inherited by the masters and emulators: one socket per agent on both sides of the link.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if max(ns) * 1.2 > hard:
        eprint(f"warning: RLIMIT_NOFILE hard limit {hard} is low for {max(ns)} agents")

    root = Path(tempfile.mkdtemp(prefix="drover-bench-scale-"))
    results = []
    try:
        eprint(f"baseline: raw pysyncobj, {plan.baseline_commits} sequential commits")
        baseline = raw_baseline(root, plan.baseline_commits)
        for n in ns:
            t = time.time()
            results.append(run_one(n, root / f"n{n}", args, plan))
            eprint(f"[{n} agents] done in {time.time() - t:.0f} s")
    finally:
        if args.keep:
            eprint(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(results, baseline, args, plan)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    run_main(main)
