"""The agent's `/files` endpoints, confined to task sandboxes (Mesos's files/browse.json, read.json, download).

A path a client names is the real path of a file or directory in a sandbox, WORK_DIR/sandboxes/FRAMEWORK/TASK/...
(the `directory` the agent's state gives each executor and task). It is resolved (symlinks followed) and must stay
inside a sandbox; a file is checked again once it is open (the task owns its sandbox and could swap a symlink
between the check and the open). Pure parts (the read window, the query values) first, then the filesystem edge.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

PAGE = 4096
MAX_READ = 16 * PAGE  # bytes one read.json may return (Mesos: 16 pages)
MAX_ENTRIES = 10_000  # entries one browse.json lists
MAX_PATH = 4096


class FilesError(Exception):
    """A request the files endpoints refuse: `status` (400, 403, 404) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---- pure ----------------------------------------------------------------------------------------------------
def parse_int(value: str | None, name: str, default: int) -> int:
    """A query parameter that must be an integer (absent: `default`)."""
    if value is None or value == "":
        return default
    v = value.strip()
    if not (v.lstrip("-").isdigit() and len(v) <= 19 and v.count("-") <= int(v.startswith("-"))):
        raise FilesError(400, f"Failed to parse {name}: {value[:40]!r} is not an integer")
    return int(v)


def read_window(size: int, offset: int, length: int) -> tuple[int, int] | None:
    """What read.json reads of a file of `size` bytes: (start, count), or None when the answer is only the size
    (offset -1, as Mesos). Negative offsets other than -1 and negative lengths other than -1 (to the end) are
    refused; count is at most MAX_READ; an offset at or past the end reads nothing."""
    if offset == -1:
        return None
    if offset < -1:
        raise FilesError(400, f"Negative offset provided: {offset}")
    if length < -1:
        raise FilesError(400, f"Negative length provided: {length}")
    if offset >= size:
        return (size, 0)
    left = size - offset
    count = left if length == -1 else min(length, left)
    return (offset, min(count, MAX_READ))


def utf8_prefix(data: bytes) -> bytes:
    """`data` without an incomplete UTF-8 sequence at its end (the next page starts with it)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return data[:-back] if need > back else data
    return data


def sandbox_of(root: Path, real: Path) -> tuple[str, str] | None:
    """(framework id, task id) of a resolved path inside `root` (the resolved WORK_DIR/sandboxes), None when it is
    not inside one task's sandbox (root itself, or a framework's directory, is nobody's)."""
    try:
        rel = real.relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) < 2 or ".." in parts:
        return None
    return parts[0], parts[1]


def mode_string(mode: int) -> str:
    return stat.filemode(mode)


# ---- the filesystem edge -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    path: Path  # resolved
    framework_id: str
    task_id: str


def resolve(root: Path, path: str | None) -> Target:
    """The sandbox file or directory `path` names: 400 for a malformed path, 404 for one that does not exist or is
    outside every sandbox (the same answer: nothing is said about the rest of the host)."""
    if not path:
        raise FilesError(400, "Expecting 'path=value' in query.")
    if len(path) > MAX_PATH or "\x00" in path:
        raise FilesError(400, "Invalid path")
    if not path.startswith("/"):
        raise FilesError(400, "Expecting an absolute path (the 'directory' of a task in the agent's state)")
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, ValueError):
        raise FilesError(404, "No such file or directory") from None
    owner = sandbox_of(root, real)
    if owner is None:
        raise FilesError(404, "No such file or directory")
    return Target(real, *owner)


def check_open(root: Path, fd: int, target: Target) -> None:
    """The file open at `fd` is still inside the same task's sandbox (nothing was swapped under us)."""
    real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    if sandbox_of(root, real) != (target.framework_id, target.task_id):
        raise FilesError(404, "No such file or directory")


def open_checked(root: Path, target: Target) -> int:
    """Open `target` for reading, but only once it is known to be a regular file or a directory of the same task's
    sandbox: it is first looked at through an O_PATH descriptor (which opens nothing: opening a device as root can
    act on it, and a task may swap a directory of its path for a link between the resolution and the open), then
    that very inode is opened through /proc."""
    try:
        pfd = os.open(target.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise FilesError(404, "No such file or directory") from None
    try:
        check_open(root, pfd, target)
        mode = os.fstat(pfd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise FilesError(400, "Not a regular file")
        try:
            return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise FilesError(404, "No such file or directory") from None
    finally:
        os.close(pfd)


def open_file(root: Path, target: Target) -> tuple[int, os.stat_result]:
    """Open a regular file of a sandbox for reading: (fd, its stat). 400 for a directory or special file."""
    fd = open_checked(root, target)
    try:
        check_open(root, fd, target)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FilesError(400, "Cannot read a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FilesError(400, "Not a regular file")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read(root: Path, target: Target, offset: int, length: int) -> dict:
    """read.json's answer: {"data": str, "offset": int} (Mesos), plus Drover's "next_offset" (where the next page
    starts: `data` is UTF-8, with undecodable bytes replaced, so its length in bytes is not the bytes read)."""
    fd, st = open_file(root, target)
    try:
        window = read_window(st.st_size, offset, length)
        if window is None:
            return {"data": "", "offset": st.st_size}
        start, count = window
        data = os.pread(fd, count, start) if count else b""
    finally:
        os.close(fd)
    kept = utf8_prefix(data) if len(data) == count and start + count < st.st_size else data
    return {"data": kept.decode("utf-8", errors="replace"), "offset": start, "next_offset": start + len(kept)}


def _names() -> tuple[dict[int, str], dict[int, str]]:
    import grp
    import pwd

    return {p.pw_uid: p.pw_name for p in pwd.getpwall()}, {g.gr_gid: g.gr_name for g in grp.getgrall()}


def browse(root: Path, target: Target) -> list[dict]:
    """browse.json's answer: Mesos's FileInfo of each entry of a sandbox directory (a file: of itself)."""
    users, groups = _names()

    def info(p: Path, st: os.stat_result) -> dict:
        return {"path": str(p), "nlink": st.st_nlink, "size": st.st_size, "mtime": int(st.st_mtime),
                "mode": mode_string(st.st_mode), "uid": users.get(st.st_uid, str(st.st_uid)),
                "gid": groups.get(st.st_gid, str(st.st_gid))}

    fd = open_checked(root, target)
    try:
        check_open(root, fd, target)  # the directory listed is the one checked
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            return [info(target.path, st)]
        out = []
        with os.scandir(fd) as it:
            for entry in it:
                if len(out) >= MAX_ENTRIES:
                    break
                try:
                    out.append(info(target.path / entry.name, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue
    except OSError:
        raise FilesError(404, "No such file or directory") from None
    finally:
        os.close(fd)
    return sorted(out, key=lambda d: d["path"])
