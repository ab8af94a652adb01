"""Agent checkpoints: what an agent must remember across its own restarts.

Written atomically (temp file + rename + fsync), so a crash leaves either the
old or the new file, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from agent.checks import HealthState
from eventstore import events as ev


class TaskRecord(msgspec.Struct, omit_defaults=True):
    framework_id: str
    spec: ev.TaskSpec
    framework_info: dict = msgspec.field(default_factory=dict)
    container_id: str | None = None
    state: str = "TASK_STAGING"
    kill_requested: bool = False
    # The latest KILL's own grace period (its kill_policy), bounded (rules.kill_grace): a kill that waits for the
    # container to exist, or is resumed after an agent restart, still uses it. None: the task's own.
    kill_grace_seconds: float | None = None
    terminal_sent: bool = False  # a terminal update was queued: the task needs nothing more
    unacked: list[ev.TaskStatus] = msgspec.field(default_factory=list)  # in order; the head is in flight
    # Chosen when the agent accepts the launch; part of the container's name, so a task ID reused after the agent
    # forgot the earlier task gets a container of its own. None in checkpoints from before it existed.
    launch_id: str | None = None
    # A launch refused before anything was created (its ids are invalid): kept in memory only, until its
    # TASK_ERROR is acknowledged; never checkpointed, never reported on re-registration.
    refused: bool = False
    # Health checks and checks (agent/checks.py): the health checker's memory (None: no result counted yet), the
    # `healthy` and check status last sent (later updates carry them, as Mesos's carry the last status's), and the
    # TASK_KILLED message once a failing health check had the task killed. Checkpointed so that a restarted agent
    # checks on where it left off: no second `healthy: true`, no failures forgotten, the kill finished.
    health: HealthState | None = None
    healthy: bool | None = None
    check_status: ev.CheckStatus | None = None
    health_kill: str | None = None
    # A task of a group another task of which was killed by its health check: its terminal status says
    # `healthy: false` too (Mesos's default executor). Set when that kill starts, so it outlives the other's ack.
    group_unhealthy: bool = False
    # The message of the disk limitation the agent killed the task for (its sandbox held more than its `disk`:
    # agent/disk_limits.py): its terminal status is then TASK_FAILED, REASON_CONTAINER_LIMITATION_DISK with it.
    # Checkpointed before the kill starts, so a restarted agent finishes the kill and still says why.
    disk_limitation: str | None = None


class AgentCheckpoint(msgspec.Struct, omit_defaults=True):
    agent_id: str | None = None
    cluster_id: str | None = None
    tasks: list[TaskRecord] = msgspec.field(default_factory=list)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # Owner-only from the start: a checkpoint holds every task's command and environment.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must be durable too: without this a crash can bring back the old file (or none).
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointStore:
    def __init__(self, work_dir: Path):
        self.path = work_dir / "meta" / "agent.json"

    def load(self) -> AgentCheckpoint:
        if not self.path.exists():
            return AgentCheckpoint()
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=AgentCheckpoint)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            # Refuse to start rather than forget tasks that may still be running (Mesos's --strict).
            raise RuntimeError(f"agent checkpoint {self.path} is unreadable ({e}); move it away to start "
                               f"this agent afresh (its containers will then be unknown to it)") from e

    def save(self, cp: AgentCheckpoint) -> None:
        write_atomic(self.path, msgspec.json.encode(cp))
