"""`drover chaos run`: a local cluster, the workload, a seeded fault schedule, then the invariants.

The run: start the cluster (each master and agent in its own network namespace when root), start
workload instance 1, inject faults until `duration` is over (each held for a while, healed, then the
harness waits until the cluster is whole again), let the workload drain, wait for the replicas to
converge, look at the agents and podman, stop everything, and check (checks.py) and report
(report.py). Timestamps are wall-clock time on this host, which every component shares.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.images import podman_env
from drover.chaos import checks, netns
from drover.chaos.faults import SCENARIOS, Fault, Injector, hold_seconds
from drover.chaos.workload import read_history
from drover.local import LocalCluster
from eventstore import events as ev

# Short timeouts so that faults are noticed within a run; all are ordinary master flags.
PING_TIMEOUT, MAX_PINGS = 1.0, 4
MASTER_ARGS = ["--heartbeat-interval", "1", "--allocation-interval", "0.5", "--offer-timeout", "10",
               "--agent-ping-timeout", str(PING_TIMEOUT), "--max-agent-ping-timeouts", str(MAX_PINGS),
               "--agent-reregister-timeout", "10"]
RECOVERY_TIMEOUT = 60.0
DRAIN = 90.0
MARKER = ".drover-chaos"


class ChaosError(Exception):
    """A run that cannot start (bad data dir, no network namespaces): a usage error, not a verdict."""


class ChaosCluster(LocalCluster):
    """LocalCluster whose masters and agents may live in network namespaces (`network`)."""

    network: netns.Network | None = None

    def plan(self) -> dict:
        if self.network is None:
            return super().plan()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        masters, agents = [], []
        for i in range(self.masters):
            ip = self.network.add(f"m{i + 1}")
            masters.append({"id": f"m{i + 1}", "http": f"{ip}:5050", "raft": f"{ip}:5150",
                            "data_dir": str(self.data_dir / f"m{i + 1}")})
        for i in range(self.agents):
            ip = self.network.add(f"a{i + 1}")
            agents.append({"id": f"a{i + 1}", "http": f"{ip}:5051", "work_dir": str(self.data_dir / f"a{i + 1}")})
        # No floating leader address: it would have to move between namespaces. The workload and the agents
        # take the list of replicas and follow redirects, as Mesos clients do.
        self.layout = {"leader": None, "masters": masters, "agents": agents,
                       "podman_socket": str(self.data_dir / "podman.sock")}
        return self.layout

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        if self.network is not None and name in self.network.nodes:
            argv = self.network.wrap(name, argv)
        return super()._spawn(name, argv)


@dataclass
class ChaosRun:
    scenario: str
    seed: int
    duration: float
    data_dir: Path
    use_netns: bool | None = None  # None: when available (root)
    agents: int = 2
    secure: bool = False  # authentication and ACLs on every port (drover local --secure)
    tls: bool = False  # HTTPS on every port of the cluster (LocalCluster.tls); the workload verifies its CA
    # The ports the agents offer. Every container shares this host's network (the workload's service task
    # serves on one of them), so runs at the same time on one host need ranges of their own.
    task_ports: tuple[int, int] = (31000, 32000)
    out: object = sys.stdout
    cluster: ChaosCluster | None = None
    faults: list[Fault] = field(default_factory=list)
    workload_instance: int = 0
    workload_proc: subprocess.Popen | None = None  # the newest instance
    workload_procs: list[subprocess.Popen] = field(default_factory=list)
    t0: float = 0.0
    _threads: list[threading.Thread] = field(default_factory=list)

    def say(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.2f}s] {msg}", file=self.out, flush=True)

    @property
    def history_path(self) -> Path:
        return self.data_dir / "history.jsonl"

    # ---- the workload ----------------------------------------------------------------------------------
    def masters_csv(self) -> str:
        return ",".join(m["http"] for m in self.cluster.layout["masters"])

    def start_workload(self) -> int:
        self.workload_instance += 1
        inst = self.workload_instance
        remaining = max(1.0, self.t0 + self.duration - time.time())
        with open(self.data_dir / f"workload-{inst}.log", "ab") as log:
            self.workload_proc = subprocess.Popen(
                [sys.executable, "-m", "drover.chaos.workload", "--masters", self.masters_csv(),
                 "--history", str(self.history_path), "--seed", str(self.seed), "--instance", str(inst),
                 "--duration", f"{remaining:.1f}", "--drain", str(DRAIN),
                 *(["--credentials", self.cluster.layout["credentials"]] if self.secure else []),
                 *(["--tls-ca", self.cluster.layout["tls_ca"]] if self.cluster.tls else [])],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workload_procs.append(self.workload_proc)
        return inst

    def kill_workload(self, every: bool = False) -> None:
        """kill -9 the newest instance (a fault), or every instance still running (the end of a run)."""
        for proc in (self.workload_procs if every else [self.workload_proc]):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    # ---- watching ----------------------------------------------------------------------------------------
    def _status(self, mid: str, timeout: float = 0.5) -> dict | None:
        return self.cluster.status(mid, timeout=timeout)

    def watch_step_down(self, f: Fault) -> None:
        """How long an isolated leader goes on serving (it must step down and refuse writes)."""
        def poll() -> None:
            deadline = f.at + 30
            while time.time() < deadline:
                st = self._status(f.target)
                if st is not None and not st.get("serving"):
                    f.timings["old_leader_stepped_down_s"] = time.time() - f.at
                    return
                time.sleep(0.05)
            f.notes.append("the isolated leader still served after 30 s")
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        self._threads.append(t)

    def whole(self) -> tuple[bool, str]:
        """Leader serving; every replica reachable and caught up; every agent and the framework connected."""
        c = self.cluster
        sts = {m["id"]: self._status(m["id"]) for m in c.layout["masters"]}
        serving = [k for k, s in sts.items() if s and s.get("serving")]
        if len(serving) != 1:
            return False, f"serving replicas: {serving}"
        missing = [k for k, s in sts.items() if s is None]
        if missing:
            return False, f"replicas not answering: {missing}"
        if len({(s["applied_index"], s["state_hash"]) for s in sts.values()}) != 1:
            # Events keep coming (offers, heartbeats): compare again a moment later.
            return False, "replicas not converged: " + ", ".join(f"{k}@{s['applied_index']}" for k, s in sts.items())
        lead = next(m for m in c.layout["masters"] if m["id"] == serving[0])
        try:
            state = c.get_json(lead["http"], "/master/state", timeout=2)
        except OSError as e:
            return False, f"/master/state: {e}"
        inactive = [s["id"] for s in state["slaves"] if not s["active"]]
        if inactive or len(state["slaves"]) < len(c.layout["agents"]):
            return False, f"agents not active: {inactive or 'missing'}"
        if self.workload_proc is not None and self.workload_proc.poll() is None:
            fws = [fw for fw in state["frameworks"] if fw["name"] == "drover-chaos"]
            if not fws or not all(fw["connected"] for fw in fws):
                return False, "framework not connected"
        return True, ""

    def wait_whole(self, f: Fault | None, timeout: float = RECOVERY_TIMEOUT) -> bool:
        deadline = time.time() + timeout
        why = ""
        while time.time() < deadline:
            ok, why = self.whole()
            if ok:
                if f is not None:
                    f.recovered, f.recovered_at = True, time.time()
                return True
            time.sleep(0.1)
        if f is not None:
            f.recovered = False
            f.notes.append(f"after {timeout:g} s: {why}")
        return False

    # ---- the run -------------------------------------------------------------------------------------
    def setup(self) -> None:
        # Emptied first, but only if it is one of ours: this may run as root.
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            if not (self.data_dir / MARKER).exists():
                raise ChaosError(f"{self.data_dir} is not empty and not a drover chaos data dir; "
                                 f"choose another --data-dir")
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / MARKER).write_text("a drover chaos run; the next run with this --data-dir empties it\n")
        use = netns.available() if self.use_netns is None else self.use_netns
        if use and not netns.available():
            raise RuntimeError("network namespaces need root, ip and iptables (run without --netns)")
        self.cluster = ChaosCluster(data_dir=self.data_dir / "cluster", agents=self.agents,
                                    master_args=list(MASTER_ARGS), secure=self.secure, tls=self.tls)
        low, high = self.task_ports
        self.cluster.agent_resources = re.sub(r"ports:\[[^]]*\]", f"ports:[{low}-{high}]",
                                              self.cluster.agent_resources)
        if use:
            self.cluster.network = netns.Network.for_this_process()
            self.cluster.network.up()

    def execute(self) -> dict:
        kinds = SCENARIOS[self.scenario]
        rnd = random.Random(self.seed)
        self.t0 = time.time()
        try:
            self.setup()
            c = self.cluster
            mode = "netns" if c.network is not None else "process"
            self.say(f"scenario {self.scenario}, seed {self.seed}, {self.duration:g} s, faults as {mode}"
                     f"{', HTTPS' if c.tls else ''}; data in {self.data_dir}")
            c.start()
            c.wait_leader(60)
            c.wait_agents(60)
            self.t0 = time.time()  # the workload's clock starts now
            self.start_workload()
            self.wait_whole(None, 30)
            time.sleep(rnd.uniform(2.0, 4.0))
            unreachable_after = PING_TIMEOUT * MAX_PINGS
            injector = Injector(self, rnd)
            i = 0
            while time.time() < self.t0 + self.duration - 2:
                kind = kinds[i % len(kinds)] if self.scenario != "mixed" else rnd.choice(kinds)
                i += 1
                f = injector.inject(kind)
                if f is None:
                    time.sleep(0.5)
                    continue
                self.faults.append(f)
                self.say(f"fault {len(self.faults)}: {f.kind} of {f.target} ({f.mode})")
                time.sleep(hold_seconds(kind, rnd, unreachable_after))
                injector.heal(f)
                ok = self.wait_whole(f)
                self.say(f"  healed; cluster whole again after {f.recovered_at - f.healed_at:.2f} s" if ok else
                         f"  NOT whole again: {f.notes[-1]}")
                time.sleep(rnd.uniform(1.0, 3.0))
            self.say("faults over; the workload drains")
            self.restore()
            self.wait_workload()
            self.wait_whole(None, 60)
            collected = self.collect()
        finally:
            for t in self._threads:
                t.join(timeout=1)
            self.kill_workload(every=True)
            c = self.cluster
            try:
                if c is not None and c.layout:
                    c.stop()
            finally:
                if c is not None and c.network is not None:
                    c.network.down()
        return self.verdict(collected)

    def restore(self) -> None:
        """Anything still down comes back (a fault interrupted by the end of the run)."""
        c = self.cluster
        if c.network is not None:
            c.network.heal()
        for m in c.layout["masters"]:
            c.kill(m["id"], signal.SIGCONT, wait=False)
            if not c.alive(m["id"]):
                c.start_master(m["id"])
        for a in c.layout["agents"]:
            c.kill(a["id"], signal.SIGCONT, wait=False)
            if not c.alive(a["id"]):
                c.start_agent(a["id"])
        if not c.alive("podman"):
            c.start_podman()

    def wait_workload(self) -> None:
        proc = self.workload_proc
        try:
            proc.wait(timeout=max(30.0, self.t0 + self.duration + DRAIN + 30 - time.time()))
        except subprocess.TimeoutExpired:
            self.say("the workload did not finish in time: killing it")
            proc.kill()
            proc.wait()

    def settle_volumes(self, timeout: float = 10.0) -> None:
        """Wait (briefly) until every agent's checkpointed volumes (meta/resources.json) are the leader's view of
        it: the last CHECKPOINT_RESOURCES (sent again on every re-registration) may still be on its way. The
        `stateful` check then compares the files with the final log."""
        c = self.cluster
        deadline, why = time.time() + timeout, ""
        while time.time() < deadline:
            lead = c.leader()
            try:
                state = c.get_json(next(m["http"] for m in c.layout["masters"] if m["id"] == lead), "/master/state",
                                   timeout=2) if lead else None
            except OSError as e:
                state, why = None, f"/master/state: {e}"
            if state is not None:
                dirs = {c.agent_id(a["id"]): a["work_dir"] for a in c.layout["agents"]}
                why = ""
                for s in state["slaves"]:
                    want = {(role, r["disk"]["persistence"]["id"])
                            for role, rs in s.get("reserved_resources_full", {}).items()
                            for r in rs if (r.get("disk") or {}).get("persistence")}
                    have, _ = checks.checkpointed_volumes(Path(dirs.get(s["id"]) or "/nonexistent"))
                    if have != want:
                        why = f"agent {s['id']}: master {sorted(want)}, meta/resources.json {sorted(have or [])}"
                if not why:
                    return
            time.sleep(0.25)
        self.say(f"agents' checkpointed volumes not settled after {timeout:g} s: {why}")

    def collect(self) -> dict:
        c = self.cluster
        self.settle_volumes()
        agents = {a["id"]: c.agent_state(a["id"]) for a in c.layout["agents"]}
        history = read_history(self.history_path)
        fids = sorted({r["framework_id"] for r in history if r["type"] == "ok" and r.get("op") == "subscribe"})
        env = {**os.environ, **podman_env()}
        blind: list[str] = []
        containers: dict[str, int] = {}
        starts: dict[str, int] = {}
        for fid in fids:
            ps = subprocess.run(["podman", "ps", "-a", "--filter", f"label=drover.framework={fid}", "--format", "json"],
                                env=env, capture_output=True, text=True, timeout=120)
            if ps.returncode != 0:
                blind.append(f"podman ps exited {ps.returncode}: {ps.stderr.strip()[-200:]}")
            for ctr in json.loads(ps.stdout or "[]"):
                tid = (ctr.get("Labels") or {}).get("drover.task")
                containers[tid] = containers.get(tid, 0) + 1
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t0 - 60))
        evs = subprocess.run(["podman", "events", "--stream=false", "--since", since, "--filter", "event=start",
                              "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
        if evs.returncode != 0:
            blind.append(f"podman events exited {evs.returncode}: {evs.stderr.strip()[-200:]}")
        for line in evs.stdout.splitlines():
            try:
                attrs = json.loads(line).get("Attributes") or {}
            except ValueError:
                continue
            if attrs.get("drover.framework") in fids:
                tid = attrs.get("drover.task")
                starts[tid] = starts.get(tid, 0) + 1
        agent_ids = {a["id"]: c.agent_id(a["id"]) for a in c.layout["agents"]}
        work_dirs = {agent_ids[a["id"]]: a["work_dir"] for a in c.layout["agents"] if agent_ids[a["id"]]}
        return {"agents": agents, "framework_ids": fids, "containers": containers, "starts": starts,
                "agent_ids": agent_ids, "work_dirs": work_dirs, "blind": blind,
                "open_tasks": self.open_task_containers(history, env)}

    def open_task_containers(self, history: list[dict], env: dict) -> dict[str, list[dict]]:
        """Podman's view of the containers of tasks the workload still had open at its end (a liveness failure):
        the evidence for why no exit was reported, kept in the report."""
        ends = [r for r in history if r["type"] == "end"]
        open_tasks = ends[-1].get("open_tasks", []) if ends else []
        out: dict[str, list[dict]] = {}
        for tid in open_tasks[:10]:
            ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=drover.task={tid}"], env=env,
                                 capture_output=True, text=True, timeout=60).stdout.split()
            views = []
            for cid in ids:
                proc = subprocess.run(["podman", "inspect", cid], env=env, capture_output=True, text=True, timeout=60)
                try:
                    st = json.loads(proc.stdout)[0]["State"]
                except (ValueError, IndexError, KeyError):
                    views.append({"id": cid, "inspect": (proc.stdout or proc.stderr)[-300:]})
                    continue
                pid = st.get("Pid") or 0
                views.append({"id": cid[:12], "status": st.get("Status"), "pid": pid, "exit_code": st.get("ExitCode"),
                              "pid_alive": bool(pid) and os.path.exists(f"/proc/{pid}"),
                              "conmon_pid": st.get("ConmonPid"), "error": st.get("Error")})
            out[tid] = views
        return out

    # ---- verdict ---------------------------------------------------------------------------------------
    def verdict(self, collected: dict) -> dict:
        c = self.cluster
        stores = {m["id"]: Path(m["data_dir"]) for m in c.layout["masters"]}
        history = read_history(self.history_path)
        fids = set(collected["framework_ids"])
        digests = {rid: checks.store_digest(p) for rid, p in stores.items()}
        ref = max(stores, key=lambda rid: digests[rid][0])
        facts = checks.LogFacts.read(stores[ref], fids)
        timings(self.faults, facts, history, collected["agent_ids"])
        results = [
            checks.check_tasks(facts, history, collected["agents"], collected["containers"], collected["starts"],
                               collected["blind"]),
            checks.check_acknowledged(facts, history, fids, digests),
            checks.check_replay(stores),
            checks.check_recovery(self.faults),
            checks.check_service(history),
            checks.check_stateful(history, facts, {aid: Path(d) for aid, d in collected["work_dirs"].items()}),
            checks.check_liveness(history),
        ]
        return {
            "scenario": self.scenario, "seed": self.seed, "duration": self.duration, "secure": self.secure,
            "fault_mode": "netns" if c.network is not None else "process", "tls": c.tls,
            "data_dir": str(self.data_dir), "started": self.t0,
            "ok": all(r.ok for r in results),
            "faults": [f.to_json(self.t0) for f in self.faults],
            "checks": [r.to_json() for r in results],
            "workload": workload_summary(history),
            "open_task_containers": collected.get("open_tasks", {}),
            "recovery": recovery_summary(self.faults),
        }


def timings(faults: list[Fault], facts: checks.LogFacts, history: list[dict], agent_ids: dict[str, str | None]) -> None:
    """Recovery timings from the final log (the leader's clock) and the history (the workload's)."""
    envs = facts.envelopes
    offers_seen = [r["t"] for r in history if r["type"] == "event" and r.get("event") == "OFFERS"]
    running_seen = [r["t"] for r in history if r["type"] == "event" and r.get("event") == "UPDATE"
                    and r.get("state") == "TASK_RUNNING"]

    def first_after(ts: list[float], t: float) -> float | None:
        return next((x for x in ts if x >= t), None)

    for f in faults:
        if f.kind in ("kill-leader", "partition-leader"):
            elected = next((e for e in envs if isinstance(e.event, ev.LeaderElected) and e.ts >= f.at), None)
            if elected is not None:
                f.timings["new_leader_s"] = elected.ts - f.at
                offer = first_after(offers_seen, elected.ts)
                if offer is not None:
                    f.timings["first_offer_s"] = offer - f.at
        elif f.kind in ("kill-agent", "partition-agent"):
            aid = agent_ids.get(f.target)
            if f.kind == "partition-agent":
                lost = next((e for e in envs if isinstance(e.event, ev.AgentUnreachable) and e.event.agent_id == aid
                             and e.ts >= f.at), None)
                if lost is not None:
                    f.timings["marked_unreachable_s"] = lost.ts - f.at
            back = next((e for e in envs if isinstance(e.event, ev.AgentReregistered) and e.event.agent_id == aid
                         and e.ts >= (f.healed_at or f.at)), None)
            if back is not None:
                f.timings["reregistered_s"] = back.ts - (f.healed_at or f.at)
        elif f.kind in ("kill-framework", "standby-framework"):
            start = f.healed_at if f.kind == "kill-framework" else f.at
            sub = next((r["t"] for r in history if r["type"] == "ok" and r.get("op") == "subscribe"
                        and r["t"] >= (start or f.at) and r["inst"] > 1), None)
            if sub is not None:
                f.timings["resubscribed_s"] = sub - (start or f.at)
        elif f.kind == "kill-podman":
            run = first_after(running_seen, f.healed_at or f.at)
            if run is not None:
                f.timings["next_task_running_s"] = run - (f.healed_at or f.at)
        if f.recovered_at is not None and f.healed_at is not None:
            f.timings["whole_again_s"] = f.recovered_at - f.healed_at


def workload_summary(history: list[dict]) -> dict:
    launched = {t for r in history if r["type"] == "invoke" and r.get("op") == "launch" for t in r["task_ids"]}
    finals: dict[str, str] = {}
    for r in history:
        if r["type"] == "event" and r.get("event") == "UPDATE":
            finals[r["task_id"]] = r["state"]
    counts: dict[str, int] = {}
    for s in finals.values():
        counts[s] = counts.get(s, 0) + 1
    return {"instances": len({r["inst"] for r in history}), "tasks_launched": len(launched),
            "acknowledged_calls": sum(1 for r in history if r["type"] == "ok"),
            "indeterminate_calls": sum(1 for r in history if r["type"] == "info"),
            "last_states": dict(sorted(counts.items()))}


def recovery_summary(faults: list[Fault]) -> dict:
    out: dict[str, dict] = {}
    for f in faults:
        for k, v in f.timings.items():
            out.setdefault(k, []).append(v)
    return {k: {"n": len(vs), "median": round(statistics.median(vs), 3), "max": round(max(vs), 3)}
            for k, vs in sorted(out.items())}
