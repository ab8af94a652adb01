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
import secrets
import shutil
import stat
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
                 orphans: Callable[[], Awaitable[int]],
                 held_executors: Callable[[], set[tuple[str, str]]] = lambda: set()):
        self.sandboxes = work_dir / "sandboxes"
        # Task groups' shared sandboxes (WORK_DIR/executors/FRAMEWORK_ID/EXECUTOR_ID): collected as task sandboxes
        # are, once no task of their executor is held.
        self.executors = work_dir / "executors"
        self.held_executors = held_executors
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
                    for name in LOG_FILES:
                        try:
                            rotated += _rotate(task / name, self.config.task_log_max_bytes)
                        except OSError as e:  # one task's odd files never stop the sweep
                            log.warning("could not rotate a task log", path=str(task / name), error=str(e))
                    continue
                with contextlib.suppress(OSError):
                    found.append(Sandbox(fw.name, task.name, now - task.lstat().st_mtime))
        gone = 0
        for s in expired(found, held, limit):
            if (s.framework_id, s.task_id) in self.held_now():
                continue  # launched again (a reused task id) while this sweep ran
            path = self.sandboxes / s.framework_id / s.task_id
            try:
                shutil.rmtree(path)  # symlink-safe (fd based): never follows a link a task planted
                gone += 1
            except OSError as e:
                log.warning("could not remove a sandbox", path=str(path), error=str(e))
        for fw in _subdirs(self.sandboxes):
            with contextlib.suppress(OSError):
                fw.rmdir()  # only when empty
        gone += self._sweep_executors(limit, now)
        return {"sandboxes": gone, "rotated_logs": rotated}

    def _sweep_executors(self, limit: float, now: float) -> int:
        held = set(self.held_executors())
        found: list[Sandbox] = []
        for fw in _subdirs(self.executors):
            for ex in _subdirs(fw):
                with contextlib.suppress(OSError):  # removed meanwhile: that entry only, never the whole sweep
                    found.append(Sandbox(fw.name, ex.name, now - ex.lstat().st_mtime))
        gone = 0
        for s in expired(found, held, limit):
            if (s.framework_id, s.task_id) in self.held_executors():
                continue  # a new group of this executor id launched meanwhile
            try:
                shutil.rmtree(self.executors / s.framework_id / s.task_id)
                gone += 1
            except OSError as e:
                log.warning("could not remove an executor sandbox", path=str(self.executors / s.framework_id
                                                                              / s.task_id), error=str(e))
        for fw in _subdirs(self.executors):
            with contextlib.suppress(OSError):
                fw.rmdir()
        return gone

    def held_now(self) -> set[tuple[str, str]]:
        """The tasks held right now (read from the sweep's thread: the agent's dict may change meanwhile)."""
        for _ in range(5):
            try:
                return set(self.held())
            except RuntimeError:  # changed size during iteration: read again
                continue
        return set(self.held())


def _subdirs(path: Path) -> list[Path]:
    """Real directories under `path` (no symlinks), sorted; [] if it is not one."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))


def _rotate(path: Path, max_bytes: int) -> int:
    """Once `path` holds more than `max_bytes` on disk, copy its last `max_bytes` aside to `path.1` (replacing the
    previous copy, owned like it) and truncate it in place; 1 if rotated. The task appends (O_APPEND), so it goes on
    writing at the new end (a rename would leave it writing to the moved file); what it writes between the copy and
    the truncation is lost. Everything here is the task's to tamper with: nothing is followed (no link, in the
    sandbox's directory only), only a regular file is touched, its size on disk (not its apparent size: a sparse
    file) decides, at most `max_bytes` are copied, and a failure leaves no temporary file behind."""
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        try:
            fd = os.open(path.name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_blocks * 512 <= max_bytes:
                return 0
            tmp = f".{path.name}.1.{secrets.token_hex(8)}.tmp"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                try:
                    start, left = max(0, st.st_size - max_bytes), max_bytes
                    while left > 0 and (chunk := os.pread(fd, min(left, 1 << 20), start)):
                        os.write(out, chunk)
                        start, left = start + len(chunk), left - len(chunk)
                    os.fchown(out, st.st_uid, st.st_gid)
                finally:
                    os.close(out)
                os.replace(tmp, f"{path.name}.1", src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                # `path.1` is not a file we can replace (the task put a directory there): the log is still cut,
                # so that it cannot fill the disk.
            os.ftruncate(fd, 0)
            return 1
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def set_aside(path: Path) -> Path | None:
    """Move the directory `path` aside, in its own parent, to a hidden name of its own (`.stale-<random>`), so that a
    new directory can be made in its place at once; the moved one is then removed (`remove_tree`), or collected by a
    later sweep as a sandbox of nothing held. Nothing in it is followed or opened: a rename of the directory entry
    (a symlink in its place is moved as a link). None if there was nothing at `path`."""
    aside = path.parent / f".stale-{secrets.token_hex(8)}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside


def remove_tree(path: Path) -> None:
    """Remove a directory set aside (symlink-safe: shutil.rmtree is fd based, never follows a link); what cannot be
    removed now is left to the sweep."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError as e:
        log.warning("could not remove a stale directory yet", path=str(path), error=str(e))
