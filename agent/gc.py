"""The agent's clean-up: containers of finished tasks, old sandboxes, and task logs that grow without end.

As Mesos's agent does (`--gc_delay`, `--gc_disk_headroom`, `--disk_watch_interval`):
* a task's container is removed once its final status is acknowledged (the agent then forgets the task); a
  container of this agent that belongs to no task it holds and has exited is removed by the periodic sweep
  (an agent killed between the two);
* a finished task's sandbox is kept for a while for its logs, then deleted. How long: `gc_delay` scaled down as
  the work dir's file system fills, `gc_delay * max(0, 1 - headroom - used fraction)` (Mesos's formula): with
  the default headroom of 0.1, sandboxes go at once when the disk is 90 % full;
* a running task's `stdout`/`stderr` beyond `task_log_max_bytes` is rotated: the file is moved aside to
  `stdout.1` (replacing the previous one) and continued empty (the task appends, O_APPEND, so it keeps writing at
  the new end).

The pure part (`max_age`, `expired`) decides; `GarbageCollector` does the IO, in a worker thread for file work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import structlog

log = structlog.get_logger("drover.agent.gc")

LOG_FILES = ("stdout", "stderr")


# ---- the pure part ----------------------------------------------------------------------------------------------


def max_age(gc_delay: float, headroom: float, used: float) -> float:
    """Seconds a finished task's sandbox is kept, given the fraction `used` of its file system."""
    return gc_delay * max(0.0, 1.0 - headroom - used)


@dataclass(frozen=True)
class Sandbox:
    framework_id: str
    task_id: str
    age: float  # seconds since the task was forgotten (the directory's mtime)


def expired(sandboxes: list[Sandbox], held: set[tuple[str, str]], age_limit: float) -> list[Sandbox]:
    """The sandboxes to delete: of tasks the agent no longer holds, at least `age_limit` old; oldest first."""
    out = [s for s in sandboxes if (s.framework_id, s.task_id) not in held and s.age >= age_limit]
    return sorted(out, key=lambda s: (-s.age, s.framework_id, s.task_id))


# ---- the IO part -------------------------------------------------------------------------------------------------


@dataclass
class GCConfig:
    gc_delay: float = 7 * 24 * 3600.0  # Mesos: --gc_delay=1weeks
    headroom: float = 0.1  # Mesos: --gc_disk_headroom
    interval: float = 60.0  # Mesos: --disk_watch_interval
    task_log_max_bytes: int = 64 * 1024 * 1024  # per file (stdout, stderr), before rotation


class GarbageCollector:
    def __init__(self, work_dir: Path, config: GCConfig, held: Callable[[], set[tuple[str, str]]],
                 orphans: Callable[[], Awaitable[int]]):
        self.sandboxes = work_dir / "sandboxes"
        self.work_dir = work_dir
        self.config = config
        self.held = held  # the (framework, task) the agent holds: never collected
        self.orphans = orphans  # removes exited containers of tasks the agent does not hold; how many

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as e:  # logged, and tried again at the next interval
                log.warning("garbage collection sweep failed", error=repr(e)[:300])
            await asyncio.sleep(self.config.interval)

    async def sweep(self) -> dict[str, int]:
        held = set(self.held())
        removed = await asyncio.to_thread(self._sweep_files, held)
        try:
            removed["containers"] = await self.orphans()
        except Exception as e:  # podman down: the next sweep tries again
            log.warning("could not remove orphaned containers", error=str(e)[:200])
            removed["containers"] = 0
        if any(removed.values()):
            log.info("garbage collected", **removed)
        return removed

    def used_fraction(self) -> float:
        st = os.statvfs(self.work_dir)
        total = st.f_blocks * st.f_frsize
        return 0.0 if total <= 0 else 1.0 - (st.f_bavail * st.f_frsize) / total

    def _sweep_files(self, held: set[tuple[str, str]]) -> dict[str, int]:
        now = time.time()
        limit = max_age(self.config.gc_delay, self.config.headroom, self.used_fraction())
        found: list[Sandbox] = []
        rotated = 0
        for fw in _subdirs(self.sandboxes):
            for task in _subdirs(fw):
                key = (fw.name, task.name)
                if key in held:
                    rotated += sum(_rotate(task / name, self.config.task_log_max_bytes) for name in LOG_FILES)
                    continue
                with contextlib.suppress(OSError):
                    found.append(Sandbox(fw.name, task.name, now - task.lstat().st_mtime))
        gone = 0
        for s in expired(found, held, limit):
            path = self.sandboxes / s.framework_id / s.task_id
            try:
                shutil.rmtree(path)  # symlink-safe (fd based): never follows a link a task planted
                gone += 1
            except OSError as e:
                log.warning("could not remove a sandbox", path=str(path), error=str(e))
        for fw in _subdirs(self.sandboxes):
            with contextlib.suppress(OSError):
                fw.rmdir()  # only when empty
        return {"sandboxes": gone, "rotated_logs": rotated}


def _subdirs(path: Path) -> list[Path]:
    """Real directories under `path` (no symlinks), sorted; [] if it is not one."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))


def _rotate(path: Path, max_bytes: int) -> int:
    """Once `path` is larger than `max_bytes`, copy it aside to `path.1` (replacing the previous one, owned like
    it) and truncate it in place; 1 if rotated. The task appends (O_APPEND), so it goes on writing at the new end
    (a rename would leave it writing to the moved file). What it writes between the copy and the truncation is
    lost: a rotated log may miss a few lines at the cut."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not (st.st_mode & 0o170000 == 0o100000) or st.st_size <= max_bytes:  # a regular file, over the limit
        return 0
    aside = path.with_name(path.name + ".1")
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        tmp = aside.with_name(aside.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                os.write(out, chunk)
            os.fchown(out, st.st_uid, st.st_gid)
        finally:
            os.close(out)
        os.replace(tmp, aside)
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return 1
