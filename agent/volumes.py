"""Persistent volumes on the agent: where each one lives, and keeping the directories in step with the master.

A volume is a directory `WORK_DIR/volumes/roles/<role>/<persistence id>` (Mesos's layout, src/slave/paths.cpp;
a '/' of a hierarchical role becomes a space, which no role component may hold, so the name is unambiguous). It
outlives the tasks that use it and agent restarts; it goes when the master's checkpoint no longer holds it.

The master sends CHECKPOINT_RESOURCES with the agent's *whole* set of dynamic reservations and volumes (the log's
view wins). `VolumeStore.sync` does what Mesos's agent does with it (slave.cpp, checkpointResourceState): write
it to `meta/resources.target`, create the directories of its volumes, delete those of volumes it no longer holds
(only volumes this agent checkpointed itself: never a path it did not make), then rename the target to
`meta/resources.json`. A crash in between leaves the target, and the next start finishes the sync.

No path here is ever resolved through a symlink: directories are opened one component at a time with O_NOFOLLOW
relative to their parent, created with `mkdir(dir_fd=...)` and deleted with `rmtree(dir_fd=...)`, so nothing a
task wrote (a volume's content is the task's) can send the agent elsewhere. The directories above the volumes
are root-only (0700): a container sees only the volume it mounts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec

from agent.checkpoint import write_atomic
from eventstore.resources import Resource, Resources
from eventstore.values import id_problem, role_problem


class VolumeError(Exception):
    """A volume directory cannot be made, found or removed safely; str(e) is meant for users."""


def volume_components(role: str, persistence_id: str) -> tuple[str, ...]:
    """The path components of a volume below the work dir, after checking both names (a checkpoint or message
    from a master is never trusted to be a path)."""
    if role == "*" or (why := role_problem(role)) is not None:
        raise VolumeError(f"Invalid role {role[:64]!r} for a persistent volume")
    if (why := id_problem(persistence_id, "persistence ID")) is not None:
        raise VolumeError(why)
    return ("volumes", "roles", role.replace("/", " "), persistence_id)


def volume_keys(res: Resources) -> list[tuple[str, str]]:
    """(role, persistence id) of each volume, in bag order."""
    return res.persistence_ids()


def compatible_problem(checkpointed: Resources, flags: Resources) -> str | None:
    """Why the agent may not start with these flags (Mesos: "Checkpointed resources ... are incompatible with agent
    resources ..."): what it checkpointed must be carved from what its flags give it."""
    if flags.contains(checkpointed.as_unreserved()):
        return None
    return (f"Checkpointed resources {checkpointed.format()} are incompatible with agent resources {flags.format()}"
            ": start the agent with resources that hold them, or with a fresh work dir")


def _open_dirs(root: Path, parts: tuple[str, ...], create: bool) -> int:
    """An fd of `root/parts...`, every component opened without following a symlink; created (0700) if asked."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: open it (O_NOFOLLOW still applies)
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                raise VolumeError(f"{part!r} under {root} is not a directory (or is a symlink): {e.strerror}") from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


class VolumeStore:
    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.current = self.work_dir / "meta" / "resources.json"
        self.target = self.work_dir / "meta" / "resources.target"

    def path(self, role: str, persistence_id: str) -> Path:
        """Where a volume lives (for mounting). Its directories were made by `sync`, root-only, never symlinks."""
        return self.work_dir.joinpath(*volume_components(role, persistence_id))

    def load(self) -> Resources:
        """What this agent has checkpointed, after finishing a sync a crash interrupted."""
        if self.target.exists():
            self.sync(self._read(self.target))
        return self._read(self.current) if self.current.exists() else Resources()

    def _read(self, path: Path) -> Resources:
        try:
            return Resources(msgspec.json.decode(path.read_bytes(), type=list[Resource]))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise VolumeError(f"{path} is damaged: {e}") from None

    def sync(self, target: Resources) -> None:
        """Make the volume directories match `target` (blocking: run it in a thread)."""
        old = self._read(self.current) if self.current.exists() else Resources()
        write_atomic(self.target, msgspec.json.encode(target.to_list()))
        keep = set(volume_keys(target))
        for role, pid in volume_keys(target):
            os.close(_open_dirs(self.work_dir, volume_components(role, pid), create=True))
        for role, pid in volume_keys(old):
            if (role, pid) not in keep:
                self._remove(role, pid)
        os.replace(self.target, self.current)

    def _remove(self, role: str, pid: str) -> None:
        *parents, name = volume_components(role, pid)
        try:
            fd = _open_dirs(self.work_dir, tuple(parents), create=False)
        except FileNotFoundError:
            return
        try:
            shutil.rmtree(name, dir_fd=fd)  # fd-based: never follows a symlink planted inside the volume
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
