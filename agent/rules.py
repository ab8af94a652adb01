"""The agent's task rules, pure (no podman, no network): which ids it accepts, where a task's files may go, what
limits a container gets, how long a kill may take, and what a container's end means as a task status.

The agent does not trust the master with any of this: ids are checked again here before one becomes a path
component, and every path built from ids must resolve inside the agent's work dir.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

from eventstore.values import id_problem
from eventstore.vocab import Reason, Source, TaskState

# Kill grace periods (KILL's `grace_seconds`, TaskSpec.kill_grace_seconds). Mesos has no upper bound; here a
# kill holds one podman `stop` call (and one of the containerizer's threads) for the whole grace period, so a
# framework must not be able to make that unbounded.
DEFAULT_KILL_GRACE_SECONDS = 3.0  # Mesos's default KillPolicy grace period for command tasks
MAX_KILL_GRACE_SECONDS = 600.0

# A container never runs without limits. A task that asks for no cpus (or no mem) gets Mesos's command executor
# allowance (src/slave/constants.hpp: DEFAULT_EXECUTOR_CPUS = 0.1, DEFAULT_EXECUTOR_MEM = 32 MB) instead.
DEFAULT_CPUS = 0.1
DEFAULT_MEM_MB = 32.0


class UnsafePath(ValueError):
    """A path built from ids would not be a directory of its own inside the agent's work dir."""


def launch_problem(framework_id: object, task_id: object, task_agent_id: object, own_agent_id: object) -> str | None:
    """Why the agent refuses a LAUNCH outright (TASK_ERROR, REASON_TASK_INVALID), or None."""
    return (id_problem(framework_id, "Framework ID") or id_problem(task_id, "Task ID")
            or id_problem(task_agent_id, "The task's agent ID") or id_problem(own_agent_id, "This agent's ID"))


def inside(root: Path, *components: str) -> Path:
    """`root/components...`, resolved, after checking that every component is one valid id-like path component
    and that the result (symlinks followed) is strictly inside `root`. Raises UnsafePath otherwise."""
    for c in components:
        if (problem := id_problem(c, "Path component")) is not None:
            raise UnsafePath(problem)
    base = Path(root).resolve()
    path = base.joinpath(*components).resolve()
    if path == base or not path.is_relative_to(base):
        raise UnsafePath(f"{base.joinpath(*components)} resolves to {path}, outside the agent's work dir {base}")
    return path


def sandbox_path(work_dir: Path, framework_id: str, task_id: str) -> Path:
    """The task's sandbox: WORK_DIR/sandboxes/FRAMEWORK_ID/TASK_ID (ids used as they are: no two tasks share one)."""
    return inside(work_dir, "sandboxes", framework_id, task_id)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def kill_grace(*candidates: Any) -> float:
    """The grace period of a kill: the first candidate that is a number (a KILL's own `grace_seconds`, then the
    task's `kill_grace_seconds`), else DEFAULT_KILL_GRACE_SECONDS; negative (-inf included) counts as 0, above
    MAX_KILL_GRACE_SECONDS (+inf included) as MAX_KILL_GRACE_SECONDS. NaN and non-numbers are skipped."""
    for c in candidates:
        v = _number(c)
        if v is not None:
            return min(max(v, 0.0), MAX_KILL_GRACE_SECONDS)
    return DEFAULT_KILL_GRACE_SECONDS


def container_limits(cpus: float | None, mem_mb: float | None) -> tuple[float, float]:
    """The cpus and mem (MB) a container gets: the task's own where it asked for a positive amount, else the
    defaults. Values that are present but unusable (negative, NaN, inf) are left for validation to refuse."""
    return (DEFAULT_CPUS if cpus is None or cpus == 0 else cpus,
            DEFAULT_MEM_MB if mem_mb is None or mem_mb == 0 else mem_mb)


def partition_aware(framework_info: Any) -> bool:
    """Whether a LAUNCH's framework_info declares PARTITION_AWARE (as a list of names or of {"type": name})."""
    caps = framework_info.get("capabilities") if isinstance(framework_info, dict) else None
    if not isinstance(caps, list):
        return False
    return any(c == "PARTITION_AWARE" or (isinstance(c, dict) and c.get("type") == "PARTITION_AWARE") for c in caps)


def reused_id_state(framework_info: Any) -> str:
    """Mesos's agent drops a command task whose TaskID is still in use on it (slave.cpp, Slave::run: "Cannot reuse
    an already existing executor for a command task", MESOS-9657): TASK_DROPPED for partition-aware frameworks,
    TASK_LOST for the others, with REASON_TASK_INVALID."""
    return TaskState.DROPPED if partition_aware(framework_info) else TaskState.LOST


class Outcome(NamedTuple):
    state: str
    source: str
    reason: str | None
    message: str


def exit_outcome(st: Any, killed: bool) -> Outcome:
    """The terminal status of a task whose container ended. `st` is the containerizer's ContainerState from
    wait() (None or status "removed": the container is gone); `killed`: a kill was asked for or done by us."""
    if killed:
        return Outcome(TaskState.KILLED, Source.EXECUTOR, None, "Command terminated by a kill request")
    if st is not None and st.status == "lost":
        return Outcome(TaskState.FAILED, Source.AGENT, Reason.EXECUTOR_TERMINATED,
                       "The task's process ended while the podman service was restarting, and podman lost its "
                       "exit status")
    if st is None or st.status == "removed" or st.exit_code is None:
        # Removed behind our back (podman rm, a store reset): no exit status to report.
        return Outcome(TaskState.LOST, Source.AGENT, Reason.EXECUTOR_TERMINATED, "The task's container disappeared")
    if st.exit_code == 0:
        return Outcome(TaskState.FINISHED, Source.EXECUTOR, None, "Command exited with status 0")
    if st.oom_suspected:
        return Outcome(TaskState.FAILED, Source.EXECUTOR, Reason.CONTAINER_LIMITATION_MEMORY,
                       "Command was killed (exit 137): memory limit probably reached")
    return Outcome(TaskState.FAILED, Source.EXECUTOR, None, f"Command exited with status {st.exit_code}")
