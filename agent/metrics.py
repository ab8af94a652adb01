"""An agent's metrics: Prometheus exposition (`GET /metrics`) and Mesos's `GET /metrics/snapshot` (slave/...).

Counted at the agent's IO edges (a launch reaching TASK_RUNNING, a health probe's result, a podman call that
failed, an HTTP answer) and read from the agent's task records at scrape time. Its own registry per agent
(never prometheus_client's global one). docs/operating.md lists every metric.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from eventstore.resources import Resources
from eventstore.vocab import TERMINAL_STATES, TaskState

if TYPE_CHECKING:
    from agent.agent import Agent

# Seconds from a launch's arrival to TASK_RUNNING: ~0.3 s with a local image, minutes with a pull.
LAUNCH_BUCKETS = (.1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HEALTH_OUTCOMES = ("healthy", "unhealthy", "grace_period", "transient")
PODMAN_OPERATIONS = ("launch", "launch_group", "start", "wait", "kill", "remove")


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.started_at = time.time()
        self.launch_seconds = Histogram(
            "drover_agent_task_launch_duration_seconds", "From a launch's arrival to TASK_RUNNING (fetch, image "
            "pull, container create and start); launches that fail are not observed.", registry=r,
            buckets=LAUNCH_BUCKETS)
        self.health_checks = Counter(
            "drover_agent_health_checks", "Health check probes by outcome: healthy, unhealthy (a counted failure), "
            "grace_period (a failure ignored in the grace period), transient (not the task's fault: podman down).",
            ["outcome"], registry=r)
        self.podman_errors = Counter(
            "drover_agent_podman_errors", "Podman calls that failed (each retry counts), by operation.",
            ["operation"], registry=r)
        self.http_requests = Counter(
            "drover_agent_http_requests", "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "code"], registry=r)
        for outcome in HEALTH_OUTCOMES:  # present at 0 from the start, so rate() sees the first one
            self.health_checks.labels(outcome)
        for op in PODMAN_OPERATIONS:
            self.podman_errors.labels(op)

    def bind(self, agent: "Agent") -> None:
        self.registry.register(_AgentCollector(agent, self))

    def podman_error(self, operation: str) -> None:
        self.podman_errors.labels(operation).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def task_states(agent: "Agent") -> Tally[str]:
    return Tally(r.state for r in agent.tasks.values() if not r.refused)


def containers(agent: "Agent") -> int:
    """Tasks with a container that have not ended (their container runs, or is being stopped)."""
    return sum(1 for r in agent.tasks.values()
               if not r.refused and r.container_id is not None and r.state not in TERMINAL_STATES)


class _AgentCollector:
    def __init__(self, agent: "Agent", metrics: AgentMetrics):
        self.agent, self.metrics = agent, metrics

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        yield GaugeMetricFamily("drover_agent_registered", "1 if the agent is registered with a leader, else 0.",
                                value=1.0 if agent.registered.is_set() else 0.0)
        yield GaugeMetricFamily("drover_agent_start_time_seconds", "When this agent started (Unix time).",
                                value=self.metrics.started_at)
        yield GaugeMetricFamily("drover_agent_containers_running",
                                "Task containers created and not ended (running or being stopped).",
                                value=containers(agent))
        g = GaugeMetricFamily("drover_agent_tasks", "Tasks the agent holds, by state.", labels=["state"])
        states = task_states(agent)
        for st in sorted(set(states) | {TaskState.STAGING, TaskState.STARTING, TaskState.RUNNING}):
            g.add_metric([st], states.get(st, 0))
        yield g


def used(agent: "Agent") -> dict[str, float]:
    """What the agent's tasks that have not ended hold (a task group's executor once), by scalar name."""
    held = Resources()
    executors: set[tuple[str, str]] = set()
    for r in agent.tasks.values():
        if r.refused or r.state in TERMINAL_STATES:
            continue
        held = held + Resources(r.spec.resources)
        ex = r.spec.executor
        if ex is not None and (r.framework_id, ex.executor_id) not in executors:
            executors.add((r.framework_id, ex.executor_id))
            held = held + Resources(ex.resources)
    return held.quantities()


def snapshot(agent: "Agent", metrics: AgentMetrics) -> dict[str, float]:
    """Mesos's agent /metrics/snapshot, for the metrics that map: registration, uptime, tasks by state, and
    `slave/<cpus|mem|disk|gpus>_<total|used|percent>` (mem and disk in MB, percent as a fraction, as Mesos)."""
    states = task_states(agent)
    out = {"slave/registered": 1.0 if agent.registered.is_set() else 0.0,
           "slave/uptime_secs": max(0.0, time.time() - metrics.started_at)}
    for st in (TaskState.STAGING, TaskState.STARTING, TaskState.RUNNING, TaskState.KILLING):
        out["slave/tasks_" + st.removeprefix("TASK_").lower()] = float(states.get(st, 0))
    total, held = agent.config.resources.quantities(), used(agent)
    for name in ("cpus", "mem", "disk", "gpus"):
        t, u = total.get(name, 0.0), held.get(name, 0.0)
        out[f"slave/{name}_total"], out[f"slave/{name}_used"] = t, u
        out[f"slave/{name}_percent"] = u / t if t > 0 else 0.0
    return dict(sorted(out.items()))
