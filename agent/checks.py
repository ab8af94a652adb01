"""Health checks and checks of a task: the rules, as Mesos's checker library has them (src/checks/), pure.

The agent probes (agent/probes.py) and feeds each probe's `Result` here; these functions say what follows: the
status update to send (if any), whether to kill the task, when to probe next. No clock (the caller gives the time
elapsed since the checker started), no IO.

Health checks (TaskInfo.health_check, Mesos's HealthChecker):
- a result is healthy when the command exited 0, the HTTP status is in [200, 400), the TCP connection was made; a
  probe that could not be performed (timed out, connection refused) is a failure;
- while `initializing` (no success yet) failures within `grace_period_seconds` of the checker's start are ignored;
- the first success, and the first success after failures, sends `healthy: true`; every other success sends nothing;
- every counted failure sends `healthy: false`; the one that makes `consecutive_failures` in a row kills the task.

Checks (TaskInfo.check, Mesos's Checker): never kill; the result (a CheckStatus: exit code, HTTP status, TCP
success; empty when the probe could not be performed) is sent whenever it differs from the one sent before, which
starts out empty.

A probe that failed for a reason that is not the task's (the podman service is down) is `transient`: ignored by
both, as Mesos ignores a check it could not start.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from eventstore import events as ev

MAX_MESSAGE = 1024  # characters of a probe's failure kept in a status message


class Result(NamedTuple):
    """One probe's outcome: `value` is the exit code (COMMAND), HTTP status code (HTTP) or whether the connection
    was made (TCP); None when the probe could not be performed, `error` then saying why."""

    value: int | bool | None
    error: str | None = None
    transient: bool = False


class HealthState(msgspec.Struct, omit_defaults=True, frozen=True):
    """What a task's health checker remembers between probes (checkpointed, so an agent restart keeps it)."""

    initializing: bool = True  # no success yet
    failures: int = 0  # consecutive failures counted (past the grace period)


class HealthStep(NamedTuple):
    state: HealthState
    healthy: bool | None  # the `healthy` of the TASK_RUNNING update to send, None: no update
    kill: bool  # the failures in a row reached the limit: kill the task
    failure: str | None  # why this probe failed (None: it succeeded or was ignored)


def failure_of(spec: ev.CheckSpec, result: Result) -> str | None:
    """Why a result is unhealthy (Mesos's interpretCheckStatusInfo), or None if it is healthy."""
    if result.value is None or isinstance(result.value, bool) != (spec.type == "TCP"):
        return (result.error or "the check could not be performed")[:MAX_MESSAGE]
    if spec.type == "COMMAND" and result.value != 0:
        return f"Command exited with status {int(result.value)}"
    if spec.type == "HTTP" and not 200 <= int(result.value) < 400:
        return f"Unexpected HTTP response code: {int(result.value)}"
    if spec.type == "TCP" and result.value is not True:
        return "TCP connection failed"
    return None


def health_step(spec: ev.HealthCheckSpec, state: HealthState, result: Result, elapsed: float) -> HealthStep:
    """The health checker's answer to one probe, `elapsed` seconds after it started (Mesos's HealthChecker)."""
    if result.transient:
        return HealthStep(state, None, False, None)
    why = failure_of(spec, result)
    if why is None:
        send = state.initializing or state.failures > 0
        return HealthStep(HealthState(initializing=False, failures=0), True if send else None, False, None)
    grace = spec.grace_period_seconds
    if state.initializing and grace > 0 and elapsed <= grace:
        return HealthStep(state, None, False, None)  # still in its grace period
    failures = min(state.failures + 1, 2**32)
    kill = failures >= spec.consecutive_failures
    return HealthStep(HealthState(initializing=state.initializing, failures=failures), False, kill, why)


def kill_message(spec: ev.HealthCheckSpec, state: HealthState, failure: str | None) -> str:
    """The message of the TASK_KILLED a failing health check ends the task with."""
    return (f"Task killed: its {spec.type} health check failed {state.failures} consecutive "
            f"time{'s' if state.failures != 1 else ''}; the last failure: {failure or 'unknown'}")[:MAX_MESSAGE * 2]


def empty_status(spec: ev.CheckSpec) -> ev.CheckStatus:
    """A check's status before its first result, or of a probe that could not be performed (Mesos sends every
    status of a checked task with one of these at least)."""
    return ev.CheckStatus(type=spec.type)


def check_status_of(spec: ev.CheckSpec, result: Result) -> ev.CheckStatus:
    """A probe's result as a CheckStatus of the check's type (empty if it could not be performed)."""
    v = result.value
    if spec.type == "COMMAND" and isinstance(v, int) and not isinstance(v, bool) and -2**31 <= v < 2**31:
        return ev.CheckStatus(type="COMMAND", exit_code=v)
    if spec.type == "HTTP" and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 999:
        return ev.CheckStatus(type="HTTP", status_code=v)
    if spec.type == "TCP" and isinstance(v, bool):
        return ev.CheckStatus(type="TCP", succeeded=v)
    return empty_status(spec)


def check_step(spec: ev.CheckSpec, last: ev.CheckStatus | None, result: Result) -> ev.CheckStatus | None:
    """The check status to send after a probe (Mesos's Checker: on change), or None. `last`: the one sent before
    (None: none yet, which counts as the empty one)."""
    if result.transient:
        return None
    new = check_status_of(spec, result)
    return None if new == (last if last is not None else empty_status(spec)) else new


# Drover's bounds on what a framework asks (Mesos has none): a probe is never repeated sooner than this after the one
# before (an interval of 0 would make a tight loop of podman execs), and never takes longer than MAX_PROBE_SECONDS (a
# timeout of 0, Mesos's "none", or of years would let a task that never answers hold one of the agent's probe slots
# for good; it then counts as a timed-out probe).
MIN_INTERVAL_SECONDS = 1.0
MAX_PROBE_SECONDS = 60.0


def first_delay(spec: ev.CheckSpec) -> float:
    return float(spec.delay_seconds)


def next_delay(spec: ev.CheckSpec) -> float:
    """From the end of one probe to the start of the next (Mesos schedules the next once a result is in), at least
    MIN_INTERVAL_SECONDS."""
    return max(float(spec.interval_seconds), MIN_INTERVAL_SECONDS)


def timeout_of(spec: ev.CheckSpec) -> float:
    """How long one probe may take: its timeout (Mesos: 0 is none), at most MAX_PROBE_SECONDS."""
    return min(float(spec.timeout_seconds), MAX_PROBE_SECONDS) if spec.timeout_seconds > 0 else MAX_PROBE_SECONDS
