"""Disk limits of a task's sandbox, pure (no file system, no clock): what a task may use and what using more means.

As Mesos's `disk/du` isolator (src/slave/containerizer/mesos/isolators/posix/disk.cpp, docs/isolators/disk-du.md):
the agent measures a sandbox every `--container-disk-watch-interval` (agent/disk.py walks it) and, with
`--enforce-container-disk-quota`, a task whose sandbox holds more than its `disk` resources is killed and ends
TASK_FAILED with REASON_CONTAINER_LIMITATION_DISK. docs/services.md, "Disk limits".
"""

from __future__ import annotations

import math
from typing import Iterable

from eventstore.resources import Resource

MB = 1024 * 1024  # a `disk` resource is in MB (Mesos's megabytes: 2^20 bytes)

# Mesos's --container_disk_watch_interval default (15 secs).
DEFAULT_CONTAINER_DISK_WATCH_INTERVAL = 15.0


def sandbox_disk_limit(resources: Iterable[Resource]) -> int | None:
    """The bytes a task's sandbox may hold: the sum of its `disk` SCALAR resources (every role), in bytes (Mesos's
    `Resources::disk()`, truncated to whole bytes). None when it has no disk, or none left after adding (Mesos drops
    an empty resource: a `disk` of 0 is no quota at all).

    Persistent volumes are disk too but are not the sandbox's: they are left out (Mesos: the sandbox's quota is the
    disk without a `volume`)."""
    total = sum(r.scalar for r in resources if r.name == "disk" and r.type == "SCALAR" and r.persistence is None)
    if not total > 0 or not math.isfinite(total):
        return None
    return int(total * MB)


def format_bytes(n: int, *, up: bool = True) -> str:
    """A size in MB as people read it: whole MB as such ("10MB"), else to a tenth of an MB, rounded up (a usage:
    just over a limit never reads as the limit itself) or down (`up=False`, a limit). Mesos prints the largest
    unit that loses nothing (stout's Bytes: "20484KB"), exact but harder to compare."""
    if n % MB == 0:
        return f"{n // MB}MB"
    tenths = math.ceil(n * 10 / MB) if up else math.floor(n * 10 / MB)
    return f"{tenths / 10:.1f}MB"


def disk_limitation(used: int, limit: int | None) -> str | None:
    """The message of the limitation a sandbox holding `used` bytes under `limit` hits, or None: over means strictly
    more (Mesos: `currentUsage > quota`); no limit, no limitation."""
    if limit is None or used <= limit:
        return None
    return f"Disk usage ({format_bytes(used)}) exceeds quota ({format_bytes(limit, up=False)})"


def volume_limits(resources: Iterable[Resource]) -> list[tuple[str, str, int]]:
    """(role, persistence id, bytes) of each persistent volume a task uses: a volume may hold its size."""
    return [(r.role, r.persistence.id, int(r.scalar * MB)) for r in resources
            if r.persistence is not None and r.name == "disk" and r.type == "SCALAR" and r.scalar > 0]
