"""A master replica's metrics: Prometheus exposition (`GET /metrics`) and Mesos's `GET /metrics/snapshot` JSON.

Collected only at the IO edges or derived from the folded state at scrape time; the fold and the deciders know
nothing of them (docs/operating.md lists every metric):

* counters of committed events, observed where the replica takes a committed batch (MasterServer._apply_batch and
  _apply_own: every replica counts the same events, each since its own start). Task state transitions need the
  task's state before the event: `transition` (master/state.py) reads it just before the fold (in _apply_batch,
  and in `stage` on the leader, whose events are folded when staged); they are counted once committed;
* histograms timed around the leader's allocation run (`decide_offers`) and around the commit of a Raft entry
  (proposed -> committed and stored);
* HTTP requests, by route template (never the raw path) and status code: an aiohttp middleware (master/http.py);
* gauges read from the replica at scrape time (`_StateCollector`): counts of frameworks, agents, tasks and offers,
  resources, the applied index, whether this replica is the elected leader, event-stream listeners, store size.

Each replica has its own registry (never prometheus_client's global one), so tests run several in one process.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from drover.http_metrics import CONTENT_TYPE  # noqa: F401 (master/http.py serves with it)
from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.vocab import TaskState
from master.state import State, Transition, holdings, transition  # noqa: F401 (transition: re-exported)

if TYPE_CHECKING:
    from master.replica import MasterServer

MB = 1024 * 1024  # Mesos counts mem and disk in MB; Prometheus in bytes
# Buckets (seconds): an allocation run takes ~1 ms on a small cluster and ~1 s at 10,000 agents; a Raft commit
# (one round trip and an fsync) a few ms on loopback and tens of ms across hosts.
ALLOCATION_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)
RESOURCES = ("cpus", "mem", "disk", "gpus")


class MasterMetrics:
    """The metrics of one master replica (MasterServer.metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.leader_changes = Counter(
            "drover_master_leader_changes", "Leader elections committed to the log (LeaderElected events).",
            registry=r)
        self.offers_made = Counter("drover_master_offers_made", "Offers made (committed).", registry=r)
        self.offers_declined = Counter("drover_master_offers_declined", "Offers declined (committed).", registry=r)
        self.offers_accepted = Counter("drover_master_offers_accepted", "Offers accepted (committed).", registry=r)
        self.offers_rescinded = Counter("drover_master_offers_rescinded", "Offers rescinded (committed).",
                                        registry=r)
        self.task_status_updates = Counter(
            "drover_master_task_status_updates", "Task status updates committed, by the state and reason they "
            "carry (reason \"\" when none).", ["state", "reason"], registry=r)
        self.task_transitions = Counter(
            "drover_master_task_state_transitions", "Task state transitions committed: status updates that changed "
            "the task's state (repeats, such as a running task's health updates, are not counted), by the state "
            "before, the state after and the update's reason (\"\" when none).", ["from_state", "to_state", "reason"],
            registry=r)
        self.allocation_seconds = Histogram(
            "drover_master_allocation_run_duration_seconds", "Time of one allocation run (decide_offers) on the "
            "leader.", registry=r, buckets=ALLOCATION_BUCKETS)
        self.commit_seconds = Histogram(
            "drover_master_raft_commit_duration_seconds", "From proposing a Raft entry (a group of decisions) to its "
            "being committed and stored, on the leader.", registry=r, buckets=COMMIT_BUCKETS)
        self.http_requests = Counter(
            "drover_master_http_requests", "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "code"], registry=r)
        # Mesos's counters of terminal task states (master/tasks_finished ...), from the same committed updates.
        self.terminal: Tally[str] = Tally()

    def bind(self, core: "MasterServer") -> None:
        """Gauges read from `core` at scrape time."""
        self.registry.register(_StateCollector(core))

    # ---- the edges ---------------------------------------------------------------------------------------------
    def observe_committed(self, envs: Iterable[ev.Envelope], transitions: Iterable[Transition] = ()) -> None:
        """Count what committed events say (called once per committed batch, by every replica), and the task state
        transitions `transition` found in them before their fold."""
        for from_state, to_state, reason in transitions:
            self.task_transitions.labels(from_state, to_state, reason).inc()
        for env in envs:
            e = env.event
            if isinstance(e, ev.OffersMade):
                self.offers_made.inc(len(e.offers))
            elif isinstance(e, ev.OffersDeclined):
                self.offers_declined.inc(len(e.offer_ids))
            elif isinstance(e, ev.OffersAccepted):
                self.offers_accepted.inc(len(e.offer_ids))
            elif isinstance(e, ev.OffersRescinded):
                self.offers_rescinded.inc(len(e.offer_ids))
            elif isinstance(e, ev.StatusUpdated):
                state = str(e.status.state)
                self.task_status_updates.labels(state, str(e.status.reason or "")).inc()
                self.terminal[state] += 1
            elif isinstance(e, ev.LeaderElected):
                self.leader_changes.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def framework_states(state: State) -> Tally[str]:
    out: Tally[str] = Tally()
    for fw in state.frameworks.values():
        out["disconnected" if not fw.connected else "active" if fw.active else "inactive"] += 1
    return out


def agent_states(state: State) -> Tally[str]:
    out: Tally[str] = Tally(connected=0, disconnected=0, unreachable=len(state.unreachable_agents))
    for a in state.agents.values():
        out["connected" if a.connected else "disconnected"] += 1
    return out


def task_states(state: State) -> Tally[str]:
    """Tasks the master tracks (not the completed ones it retains), by state."""
    return Tally(t.state for fw in state.tasks.values() for t in fw.values())


def resource_totals(state: State) -> dict[str, dict[str, float]]:
    """{"total"|"used"|"offered": {resource: quantity}} over the registered agents (mem and disk in MB)."""
    total = Resources(r for a in state.agents.values() for r in a.resources).quantities_view()
    used = Resources(r for _, res in holdings(state.all_tasks()) for r in res).quantities_view()
    offered = Resources(r for o in state.offers.values() for r in o.resources).quantities_view()
    return {kind: {name: float(q.get(name, 0.0)) for name in RESOURCES}
            for kind, q in (("total", total), ("used", used), ("offered", offered))}


def store_bytes(path: os.PathLike[str] | str) -> int:
    """The SQLite store's size on disk, its write-ahead log included."""
    size = 0
    for suffix in ("", "-wal"):
        try:
            size += os.stat(f"{os.fspath(path)}{suffix}").st_size
        except OSError:
            pass
    return size


class _StateCollector:
    """Gauges computed from the replica at scrape time: counts over the folded state (cheap), never a walk of the
    log."""

    def __init__(self, core: "MasterServer"):
        self.core = core

    def collect(self) -> Iterator[Metric]:
        core, state = self.core, self.core.state

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def by(name: str, doc: str, label: str, values: dict[str, int], keys: Iterable[str] = ()) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=[label])
            for k in sorted(set(keys) | set(values)):
                g.add_metric([k], values.get(k, 0))
            return g

        yield gauge("drover_master_elected", "1 if this replica is the elected leader and serving, else 0.",
                    1.0 if core.serving else 0.0)
        yield gauge("drover_master_applied_index", "The last committed log index folded into this replica's state.",
                    core.committed_index)
        yield gauge("drover_master_start_time_seconds", "When this replica started (Unix time).", core.started_at)
        yield gauge("drover_master_event_stream_listeners",
                    "Live readers of the event stream (GET /api/v1/events, operator SUBSCRIBE) on this replica.",
                    len(core.event_listeners))
        yield gauge("drover_master_store_size_bytes", "Size of this replica's event store (SQLite and its WAL).",
                    store_bytes(core.store.path))
        yield by("drover_master_frameworks", "Registered frameworks by state (active, inactive, disconnected).",
                 "state", framework_states(state), ("active", "inactive", "disconnected"))
        yield by("drover_master_agents", "Agents by state (connected, disconnected, unreachable).", "state",
                 agent_states(state))
        yield by("drover_master_tasks", "Tasks the master tracks, by state (completed tasks are not counted).",
                 "state", task_states(state), (TaskState.STAGING, TaskState.STARTING, TaskState.RUNNING,
                                               TaskState.KILLING, TaskState.UNREACHABLE))
        yield gauge("drover_master_outstanding_offers", "Offers made and not yet accepted, declined or rescinded.",
                    len(state.offers))
        res = resource_totals(state)
        for name, metric, scale, doc in (("cpus", "drover_master_cpus", 1, "CPUs"),
                                         ("gpus", "drover_master_gpus", 1, "GPUs"),
                                         ("mem", "drover_master_memory_bytes", MB, "Memory (bytes)"),
                                         ("disk", "drover_master_disk_bytes", MB, "Disk (bytes)")):
            g = GaugeMetricFamily(metric, f"{doc} of the registered agents: total, used by tasks, offered.",
                                  labels=["kind"])
            for kind in ("total", "used", "offered"):
                g.add_metric([kind], res[kind][name] * scale)
            yield g


def snapshot(core: "MasterServer", metrics: MasterMetrics) -> dict[str, float]:
    """Mesos's /metrics/snapshot, for the metrics that map (docs/operating.md; Mesos's docs/monitoring.md)."""
    state = core.state
    out: dict[str, float] = {
        "master/elected": 1.0 if core.serving else 0.0,
        "master/uptime_secs": max(0.0, time.time() - core.started_at),
        "master/outstanding_offers": float(len(state.offers)),
        "master/operator_event_stream_subscribers": float(len(core.event_listeners)),
    }
    fws = framework_states(state)
    out["master/frameworks_active"] = float(fws["active"])
    out["master/frameworks_inactive"] = float(fws["inactive"] + fws["disconnected"])
    out["master/frameworks_connected"] = float(fws["active"] + fws["inactive"])
    out["master/frameworks_disconnected"] = float(fws["disconnected"])
    ags = agent_states(state)
    out["master/slaves_active"] = float(len(state.agents))
    out["master/slaves_inactive"] = 0.0  # no maintenance mode: a registered agent is active
    out["master/slaves_connected"] = float(ags["connected"])
    out["master/slaves_disconnected"] = float(ags["disconnected"])
    out["master/slaves_unreachable"] = float(ags["unreachable"])
    live = task_states(state)
    for st in (TaskState.STAGING, TaskState.STARTING, TaskState.RUNNING, TaskState.KILLING, TaskState.UNREACHABLE):
        out[f"master/{_mesos_task_key(st)}"] = float(live[st])
    for st in (TaskState.FINISHED, TaskState.FAILED, TaskState.KILLED, TaskState.LOST, TaskState.ERROR,
               TaskState.DROPPED, TaskState.GONE, TaskState.GONE_BY_OPERATOR):
        out[f"master/{_mesos_task_key(st)}"] = float(metrics.terminal[st])
    res = resource_totals(state)
    for name in RESOURCES:
        total, used = res["total"][name], res["used"][name]
        out[f"master/{name}_total"] = total
        out[f"master/{name}_used"] = used
        out[f"master/{name}_percent"] = used / total if total else 0.0
    return dict(sorted(out.items()))


def _mesos_task_key(state: str) -> str:
    return "tasks_" + state.removeprefix("TASK_").lower()
