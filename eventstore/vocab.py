"""The one definition of Mesos's task vocabulary: task states, which are terminal, status sources, reasons.

Everything else (the fold, effects, the agent, the chaos workload, `drover execute`) imports from here.
Values are the Mesos enum names, as they appear on the wire and in events.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class TaskState(StrEnum):
    STAGING = "TASK_STAGING"
    STARTING = "TASK_STARTING"
    RUNNING = "TASK_RUNNING"
    KILLING = "TASK_KILLING"
    FINISHED = "TASK_FINISHED"
    FAILED = "TASK_FAILED"
    KILLED = "TASK_KILLED"
    ERROR = "TASK_ERROR"
    LOST = "TASK_LOST"
    DROPPED = "TASK_DROPPED"
    UNREACHABLE = "TASK_UNREACHABLE"
    GONE = "TASK_GONE"
    GONE_BY_OPERATOR = "TASK_GONE_BY_OPERATOR"
    UNKNOWN = "TASK_UNKNOWN"


# The type of a `state` field in an event: a Mesos task state name, nothing else decodes.
TaskStateName = Literal[
    "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED",
    "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_UNREACHABLE", "TASK_GONE",
    "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN",
]
assert set(get_args(TaskStateName)) == {s.value for s in TaskState}

# States a task never leaves (Mesos's `protobuf::isTerminalState`). TASK_UNKNOWN is not a state a task is in:
# only a reconciliation answer for a task the master does not know.
TERMINAL_STATES: frozenset[str] = frozenset({
    TaskState.FINISHED, TaskState.FAILED, TaskState.KILLED, TaskState.ERROR, TaskState.LOST, TaskState.DROPPED,
    TaskState.GONE, TaskState.GONE_BY_OPERATOR,
})


class Source(StrEnum):
    MASTER = "SOURCE_MASTER"
    AGENT = "SOURCE_AGENT"
    EXECUTOR = "SOURCE_EXECUTOR"


SourceName = Literal["SOURCE_MASTER", "SOURCE_AGENT", "SOURCE_EXECUTOR"]


class Reason(StrEnum):
    """The reasons Drover gives (a subset of Mesos's TaskStatus.Reason)."""

    AGENT_REMOVED = "REASON_AGENT_REMOVED"
    AGENT_REREGISTERED = "REASON_AGENT_REREGISTERED"
    CONTAINER_LAUNCH_FAILED = "REASON_CONTAINER_LAUNCH_FAILED"
    RESOURCES_UNKNOWN = "REASON_RESOURCES_UNKNOWN"  # a task uses a volume its agent has not checkpointed
    CONTAINER_LIMITATION_DISK = "REASON_CONTAINER_LIMITATION_DISK"
    CONTAINER_LIMITATION_MEMORY = "REASON_CONTAINER_LIMITATION_MEMORY"
    EXECUTOR_TERMINATED = "REASON_EXECUTOR_TERMINATED"
    FRAMEWORK_REMOVED = "REASON_FRAMEWORK_REMOVED"
    INVALID_OFFERS = "REASON_INVALID_OFFERS"
    RECONCILIATION = "REASON_RECONCILIATION"
    TASK_INVALID = "REASON_TASK_INVALID"
    TASK_KILLED_DURING_LAUNCH = "REASON_TASK_KILLED_DURING_LAUNCH"
    TASK_UNAUTHORIZED = "REASON_TASK_UNAUTHORIZED"
    COMMAND_EXECUTOR_FAILED = "REASON_COMMAND_EXECUTOR_FAILED"
    # A TASK_RUNNING that reports a (health) check's new result (docs/services.md, "Health checks and checks"); the
    # health check's kill ends TASK_KILLED with the first of them too (a Drover choice: Mesos sets none there).
    TASK_HEALTH_CHECK_STATUS_UPDATED = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
    TASK_CHECK_STATUS_UPDATED = "REASON_TASK_CHECK_STATUS_UPDATED"


# The reasons of a TASK_RUNNING that only reports a (health) check's result: the master keeps the latest of a run of
# them, not each (as Mesos's master keeps one status per state in a row), and always tells operator subscribers.
CHECK_REASONS: frozenset[str] = frozenset({Reason.TASK_HEALTH_CHECK_STATUS_UPDATED, Reason.TASK_CHECK_STATUS_UPDATED})

# The kinds of a HealthCheck / CheckInfo (Mesos's HealthCheck.Type and CheckInfo.Type without UNKNOWN).
CheckType = Literal["COMMAND", "HTTP", "TCP"]
CHECK_TYPES: tuple[str, ...] = get_args(CheckType)


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES
