"""Scenarios and the faults they inject.

A scenario is a list of fault kinds; the schedule (which kind, which target, how long it holds, the gap
before the next) comes from a `random.Random(seed)`, so a seed names a run. Each injector does the
fault and returns a `Fault` record; `heal` undoes it (restart, reconnect). With network namespaces
(root) partitions drop packets; without them a partition is emulated by SIGSTOP/SIGCONT of the process,
which is what a long GC pause or a hung VM looks like to its peers.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drover.chaos.run import ChaosRun

SCENARIOS: dict[str, list[str]] = {
    "leader-kill": ["kill-leader"],
    "leader-partition": ["partition-leader"],
    "follower-flap": ["flap-follower"],
    "agent-kill-restart": ["kill-agent"],
    "agent-partition": ["partition-agent"],
    "framework-failover": ["kill-framework", "standby-framework"],
    "podman-restart": ["kill-podman"],
}
SCENARIOS["mixed"] = sorted({k for kinds in SCENARIOS.values() for k in kinds})


@dataclass
class Fault:
    kind: str
    target: str
    at: float  # wall time the fault was injected
    mode: str = "process"  # "process" (signals, kill -9) or "netns" (packets dropped)
    healed_at: float | None = None
    recovered_at: float | None = None  # the cluster was whole again (leader serving, agents linked, ...)
    recovered: bool | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self, t0: float) -> dict:
        rel = lambda t: None if t is None else round(t - t0, 3)  # noqa: E731
        return {"kind": self.kind, "target": self.target, "mode": self.mode, "at": rel(self.at),
                "healed_at": rel(self.healed_at), "recovered_at": rel(self.recovered_at), "recovered": self.recovered,
                "timings": {k: round(v, 3) for k, v in sorted(self.timings.items())}, "notes": self.notes}


def hold_seconds(kind: str, rnd: random.Random, unreachable_after: float) -> float:
    """How long a fault lasts before it is healed."""
    if kind == "partition-agent":
        # Long enough for the master to declare the agent unreachable, then it comes back.
        return unreachable_after + rnd.uniform(1.0, 3.0)
    if kind == "partition-leader":
        return rnd.uniform(3.0, 6.0)
    if kind == "standby-framework":
        return 0.0
    return rnd.uniform(1.0, 4.0)


class Injector:
    """Does and undoes faults on a ChaosRun's cluster and workload."""

    def __init__(self, run: "ChaosRun", rnd: random.Random):
        self.run, self.rnd = run, rnd

    @property
    def cluster(self):
        return self.run.cluster

    def inject(self, kind: str) -> Fault | None:
        return getattr(self, "_inject_" + kind.replace("-", "_"))()

    def heal(self, fault: Fault) -> None:
        getattr(self, "_heal_" + fault.kind.replace("-", "_"))(fault)
        fault.healed_at = time.time()

    # ---- masters -----------------------------------------------------------------------------------
    def _inject_kill_leader(self) -> Fault | None:
        leader = self.cluster.leader()
        if leader is None:
            return None
        self.cluster.kill(leader)
        return Fault("kill-leader", leader, time.time())

    def _heal_kill_leader(self, f: Fault) -> None:
        self.cluster.start_master(f.target)

    def _others(self, mid: str) -> list[str]:
        return [m["id"] for m in self.cluster.layout["masters"] if m["id"] != mid]

    def _inject_partition_leader(self) -> Fault | None:
        leader = self.cluster.leader()
        if leader is None:
            return None
        f = Fault("partition-leader", leader, time.time(), mode=self._partition(leader, self._others(leader)))
        if f.mode == "netns":
            # The harness still reaches the isolated leader: time how long it goes on believing it leads.
            self.run.watch_step_down(f)
        return f

    def _heal_partition_leader(self, f: Fault) -> None:
        self._unpartition(f)

    def _inject_flap_follower(self) -> Fault | None:
        leader = self.cluster.leader()
        followers = self._others(leader) if leader else []
        if not followers:
            return None
        target = self.rnd.choice(followers)
        f = Fault("flap-follower", target, time.time())
        # Several short outages in a row: cut off, back, cut off, back...
        flaps = self.rnd.randint(2, 4)
        for i in range(flaps):
            f.mode = self._partition(target, self._others(target))
            time.sleep(self.rnd.uniform(0.3, 1.5))
            self._unpartition(f)
            if i < flaps - 1:
                time.sleep(self.rnd.uniform(0.3, 1.5))
        f.notes.append(f"{flaps} flaps")
        return f

    def _heal_flap_follower(self, f: Fault) -> None:
        pass  # every flap already ended

    # ---- agents ------------------------------------------------------------------------------------
    def _pick_agent(self) -> str:
        return self.rnd.choice([a["id"] for a in self.cluster.layout["agents"]])

    def _inject_kill_agent(self) -> Fault:
        aid = self._pick_agent()
        self.cluster.kill(aid)
        return Fault("kill-agent", aid, time.time())

    def _heal_kill_agent(self, f: Fault) -> None:
        self.cluster.start_agent(f.target)

    def _inject_partition_agent(self) -> Fault:
        aid = self._pick_agent()
        masters = [m["id"] for m in self.cluster.layout["masters"]]
        return Fault("partition-agent", aid, time.time(), mode=self._partition(aid, masters))

    def _heal_partition_agent(self, f: Fault) -> None:
        self._unpartition(f)

    def _inject_kill_podman(self) -> Fault:
        self.cluster.kill("podman")
        return Fault("kill-podman", "podman", time.time())

    def _heal_kill_podman(self, f: Fault) -> None:
        self.cluster.start_podman()

    # ---- the framework -----------------------------------------------------------------------------
    def _inject_kill_framework(self) -> Fault:
        inst = self.run.workload_instance
        self.run.kill_workload()
        return Fault("kill-framework", f"instance {inst}", time.time())

    def _heal_kill_framework(self, f: Fault) -> None:
        inst = self.run.start_workload()
        f.notes.append(f"instance {inst} took over")

    def _inject_standby_framework(self) -> Fault:
        old = self.run.workload_instance
        f = Fault("standby-framework", f"instance {old}", time.time())
        inst = self.run.start_workload()  # subscribes with the same id: the old instance gets "failed over"
        f.notes.append(f"instance {inst} took over while {old} ran")
        return f

    def _heal_standby_framework(self, f: Fault) -> None:
        pass

    # ---- partitions ----------------------------------------------------------------------------------
    def _partition(self, node: str, peers: list[str]) -> str:
        net = self.cluster.network
        if net is not None:
            net.partition(node, peers)
            return "netns"
        self.cluster.kill(node, signal.SIGSTOP, wait=False)
        return "process"

    def _unpartition(self, f: Fault) -> None:
        net = self.cluster.network
        if net is not None and f.mode == "netns":
            net.heal(f.target)
        else:
            self.cluster.kill(f.target, signal.SIGCONT, wait=False)
