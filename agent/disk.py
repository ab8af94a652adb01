"""How much disk a directory tree holds, measured as `du -x` would (the IO half of disk limits; the rules are in
agent/disk_limits.py). The agent runs it on task sandboxes every `--container-disk-watch-interval`, in a thread.

What is counted: every entry's allocated blocks (`st_blocks * 512`, so a sparse file counts what it really holds,
not its apparent size), the root directory and every directory included; a file with several hard links once
(by `(st_dev, st_ino)`); a symlink as itself, never what it points to; nothing on another file system (a mount
point is neither counted nor entered).

Everything under a sandbox belongs to its task, which can change it while it is measured: directories are opened
by fd relative to their parent, never following a link (`O_NOFOLLOW`), and checked to be on the root's device once
open, so a directory swapped for a symlink is skipped, not followed (the walk never leaves the tree). An entry that
vanishes mid-walk is skipped without a word.

Bounded: at most `max_entries` entries are looked at and `max_depth` directories deep (each level holds two file
descriptors). Beyond either, the walk stops there and the result says it is incomplete: the count is then a lower
bound (the tree holds at least that much), which the agent logs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

MAX_ENTRIES = 500_000
MAX_DEPTH = 128

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)


class Usage(NamedTuple):
    bytes: int  # blocks allocated, in bytes
    entries: int  # entries looked at (the root included)
    complete: bool  # False: a bound was met, `bytes` is what was counted until then (a lower bound)
    errors: int = 0  # entries that could not be read for another reason than vanishing (not counted)


def _open_dir(name: str | Path, dir_fd: int | None) -> int:
    try:
        return os.open(name, _OPEN_DIR, dir_fd=dir_fd)
    except PermissionError:
        # O_NOATIME is only allowed to the file's owner (or CAP_FOWNER): try again without it.
        return os.open(name, _OPEN_DIR & ~getattr(os, "O_NOATIME", 0), dir_fd=dir_fd)


def measure(path: Path | str, *, max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH) -> Usage:
    """The disk `path` holds (see the module's doc). A `path` that does not exist holds 0; one that is a symlink
    counts as the link alone. Raises OSError only if `path` itself cannot be read."""
    try:
        root = os.lstat(path)
    except FileNotFoundError:
        return Usage(0, 0, True)
    if not stat.S_ISDIR(root.st_mode):
        return Usage(root.st_blocks * 512, 1, True)
    try:
        fd = _open_dir(path, None)
    except (FileNotFoundError, NotADirectoryError):
        return Usage(0, 0, True)  # gone since the lstat
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Usage(0, 0, True)  # swapped for a symlink since the lstat: not followed
        raise
    dev = root.st_dev
    total, entries, errors, complete = 0, 1, 0, True
    linked: set[tuple[int, int]] = set()
    # One directory per level: its fd and the iterator over its entries (scandir holds a dup of the fd; the
    # entries' stat() is relative to ours).
    stack: list[tuple[int, Any]] = []
    try:
        own = os.fstat(fd)
        if (own.st_dev, own.st_ino) != (root.st_dev, root.st_ino):
            os.close(fd)
            return Usage(0, 0, True)  # swapped since the lstat
        top = os.scandir(fd)
    except OSError:
        os.close(fd)
        raise
    total += own.st_blocks * 512
    stack.append((fd, top))
    try:
        while stack:
            parent, it = stack[-1]
            try:
                entry = next(it, None)
            except OSError:  # the directory went away while it was read
                entry = None
            if entry is None:
                stack.pop()
                it.close()
                os.close(parent)
                continue
            if entries >= max_entries:
                complete = False
                break
            entries += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                errors += 1
                continue
            if st.st_dev != dev:
                continue  # a mount point: another file system's, not this tree's
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= max_depth:
                    total += st.st_blocks * 512
                    complete = False
                    continue
                try:
                    child = _open_dir(entry.name, parent)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as e:
                    if e.errno != errno.ELOOP:  # swapped for a symlink meanwhile: not followed
                        errors += 1
                    continue
                try:
                    cst = os.fstat(child)
                    if cst.st_dev != dev or (cst.st_ino, cst.st_dev) != (st.st_ino, st.st_dev):
                        os.close(child)  # not the directory we looked at: swapped meanwhile
                        continue
                    child_it = os.scandir(child)
                except OSError:
                    os.close(child)
                    errors += 1
                    continue
                total += cst.st_blocks * 512
                stack.append((child, child_it))
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in linked:
                    continue
                linked.add(key)
            total += st.st_blocks * 512
    finally:
        for parent, it in stack:
            it.close()
            with contextlib.suppress(OSError):
                os.close(parent)
    return Usage(total, entries, complete, errors)


def usage(path: Path | str, *, max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH) -> int:
    """The bytes `path` holds (`measure(...).bytes`: a lower bound when a bound was met)."""
    return measure(path, max_entries=max_entries, max_depth=max_depth).bytes
