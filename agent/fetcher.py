"""The fetcher: what a task's `command.uris` name is put into its sandbox before the task starts (Mesos's
CommandInfo.URI: value, executable, extract, cache, output_file; docs/services.md, "Fetching artifacts").

The agent runs as root and the sandbox is the task's, so nothing a framework names may make the agent read or write
a file outside that sandbox:
- URIs are http://, https:// (TLS verified, aiohttp), file:///PATH or /PATH (eventstore.values.uri_problem, checked
  again here). A local file is read only from a directory the operator named (--fetcher-allowed-dir), judged on the
  path of the file actually opened (symlinks resolved by the kernel), never inside the agent's work dir, and only a
  regular file.
- Every file is written through no symbolic link: each directory on the way is checked with lstat (a symlink is an
  error), a file is created anew (O_EXCL | O_NOFOLLOW) after removing whatever non-directory was in its place.
- Archives (.tar, .tar.gz/.tgz, .tar.bz2/.tbz2, .tar.xz/.txz, .zip) are extracted member by member under those
  rules: no absolute names, no `..`, symbolic links only to a relative target that stays inside the sandbox (and
  never written through), hard links only to a regular file extracted before (copied), no devices or FIFOs,
  permission bits only (no setuid/setgid), and bounded: MAX_BYTES written, MAX_MEMBERS members.
- Downloads are bounded by MAX_BYTES and FetcherConfig.timeout.
The fetched files are then the task's: the containerizer gives the whole sandbox to the task's user before the
container is created (symlinks changed themselves, never followed).

The cache (`cache: true`, Mesos's fetcher cache): WORK_DIR/fetch-cache, one file per URI (named by its SHA-256),
at most --fetcher-cache-size bytes, least recently used first out. It lives on disk, so it survives an agent
restart. A URI larger than the whole cache is fetched without it.

The first part of this module is pure (no IO): URI plans, archive member checks and the cache's eviction choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import posixpath
import stat
import tarfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, BinaryIO, Callable, Iterable, NamedTuple

import aiohttp

from eventstore.events import FetchURI
from eventstore.values import MAX_URIS, output_file_problem, uri_problem

MAX_BYTES = 4 * 1024**3  # per download, and per archive extracted
MAX_MEMBERS = 100_000  # per archive
DEFAULT_CACHE_SIZE = 2 * 1024**3  # Mesos's --fetcher_cache_size default (2 GB)
DEFAULT_TIMEOUT = 600.0  # seconds per URI, its extraction included
CANCEL_POLL = 0.2  # seconds between two looks at whether a fetch's task was killed
_CHUNK = 1 << 16

# suffix -> archive kind, longest suffixes first
ARCHIVE_SUFFIXES = ((".tar.gz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tgz", "tar"), (".tbz2", "tar"),
                    (".txz", "tar"), (".tar", "tar"), (".zip", "zip"))


class FetchError(Exception):
    """A URI could not be fetched; str(e) is meant for users (the TASK_FAILED message)."""


class Cancelled(Exception):
    """The fetch was stopped because its task was killed (Fetcher.fetch_all's `cancelled`)."""


# ---------------------------------------------------------------------------------------------------------- pure


class Plan(NamedTuple):
    uri: str
    local: bool  # a path on the agent (file:// or absolute), else http(s)
    source: str  # the URL, or the absolute local path
    dest: str  # relative path inside the sandbox
    archive: str | None  # "tar", "zip", or None: not extracted
    executable: bool
    cache: bool


def archive_kind(name: str) -> str | None:
    lower = name.lower()
    return next((kind for suffix, kind in ARCHIVE_SUFFIXES if lower.endswith(suffix)), None)


def _path_of(uri: str) -> str:
    """The path of a URI (no scheme, authority, query or fragment); a bare absolute path is its own path."""
    if uri.startswith("/"):
        return uri
    rest = uri.split("://", 1)[1]
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else ""


def plan(u: FetchURI) -> Plan:
    """What fetching `u` means; FetchError if it must not be fetched (checked again: the agent trusts no LAUNCH)."""
    if (why := uri_problem(u.value, f"URI '{u.value[:256]}'")) is not None:
        raise FetchError(why)
    if u.output_file is not None and (why := output_file_problem(u.output_file)) is not None:
        raise FetchError(f"URI '{u.value[:256]}': {why}")
    scheme = "" if u.value.startswith("/") else u.value.split("://", 1)[0].lower()
    local = scheme in ("", "file")
    path = _path_of(u.value)
    dest = u.output_file
    if dest is None:
        dest = posixpath.basename(path)
        if output_file_problem(dest) is not None:
            raise FetchError(f"URI '{u.value[:256]}' names no file ({dest[:64]!r}): set its output_file")
    source = path if local else u.value
    archive = archive_kind(dest) if u.extract and not u.executable else None  # Mesos: executables are not extracted
    return Plan(u.value, local, source, dest, archive, u.executable, u.cache)


def plans(uris: Iterable[FetchURI]) -> list[Plan]:
    out = [plan(u) for u in uris]
    if len(out) > MAX_URIS:
        raise FetchError(f"A task may fetch at most {MAX_URIS} URIs")
    return out


MAX_MEMBER_NAME = 4096  # characters of an archive member's name (PATH_MAX)
MAX_MEMBER_DEPTH = 64  # directories above an archive member


def member_parts(name: str) -> list[str]:
    """The components of an archive member's name, `.` and empty ones dropped; FetchError for an absolute name or
    one with a `..` (a member that would land outside the directory it is extracted into)."""
    if name.startswith("/"):
        raise FetchError(f"archive member '{name[:256]}' has an absolute name")
    if len(name) > MAX_MEMBER_NAME:
        raise FetchError(f"archive member '{name[:256]}...' has a name longer than {MAX_MEMBER_NAME} characters")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) > MAX_MEMBER_DEPTH:
        # Every directory on a member's way is checked (no links): a deep tree would cost minutes per member.
        raise FetchError(f"archive member '{name[:256]}' is more than {MAX_MEMBER_DEPTH} directories deep")
    if ".." in parts:
        raise FetchError(f"archive member '{name[:256]}' leads outside the sandbox ('..')")
    return parts


def symlink_problem(parts: list[str], target: str) -> str | None:
    """Why a symbolic link at `parts` (inside the extraction root) to `target` is refused, or None: its target
    must be relative and, read from the link's directory, stay inside the root."""
    if not target:
        return "an empty target"
    if target.startswith("/"):
        return f"an absolute target '{target[:256]}'"
    depth = len(parts) - 1  # directories above the link, inside the root
    for p in target.split("/"):
        if p == "..":
            depth -= 1
            if depth < 0:
                return f"a target outside the sandbox '{target[:256]}'"
        elif p not in ("", "."):
            depth += 1
    return None


def local_allowed(real_path: str, allowed_dirs: Iterable[str]) -> bool:
    """A file whose resolved path is `real_path` may be fetched: it lies strictly inside an allowed directory (also
    given resolved)."""
    return any(real_path.startswith(d.rstrip("/") + "/") for d in allowed_dirs)


def cache_key(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()


def to_evict(entries: Iterable[tuple[str, int, float]], capacity: int, incoming: int) -> list[str]:
    """The cache entries (key, size, last use) to remove, least recently used first, so that `incoming` more bytes
    fit in `capacity`."""
    ordered = sorted(entries, key=lambda e: (e[2], e[0]))
    total = sum(size for _, size, _ in ordered)
    out = []
    for key, size, _ in ordered:
        if total + incoming <= capacity:
            break
        out.append(key)
        total -= size
    return out


# ------------------------------------------------------------------------------------------------------------ IO


@dataclass
class FetcherConfig:
    cache_dir: Path
    cache_size: int = DEFAULT_CACHE_SIZE
    allowed_dirs: tuple[Path, ...] = ()
    # never fetched from, even inside an allowed directory: the agent's work dir (checkpoints, other sandboxes)
    denied_dirs: tuple[Path, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = MAX_BYTES
    max_members: int = MAX_MEMBERS


@dataclass
class Fetcher:
    config: FetcherConfig
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)  # cache key -> its download (one at a time)
    _swept: bool = False  # the cache's leftovers of an earlier agent process removed

    async def fetch_all(self, uris: Iterable[FetchURI], sandbox: Path,
                        cancelled: Callable[[], bool] = lambda: False) -> None:
        """Fetch every URI into `sandbox` in order; the first failure raises FetchError naming its URI. Each URI,
        its extraction included, has `timeout` seconds. `cancelled` (the task was killed) is asked between URIs and
        between the chunks of a download or an extraction: it stops the fetch with Cancelled."""
        todo = plans(uris)
        if not todo:
            return
        timeout = aiohttp.ClientTimeout(total=self.config.timeout, sock_connect=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for p in todo:
                if cancelled():
                    raise Cancelled()
                try:
                    await _until_stopped(self._fetch(session, p, sandbox, _Stop(cancelled, self.config.timeout)),
                                         cancelled, self.config.timeout)
                except FetchError as e:
                    raise FetchError(f"Failed to fetch '{p.uri[:512]}': {e}") from None
                except asyncio.TimeoutError:
                    raise FetchError(f"Failed to fetch '{p.uri[:512]}': not fetched within "
                                     f"{self.config.timeout:g} s") from None
                except aiohttp.ClientError as e:
                    raise FetchError(f"Failed to fetch '{p.uri[:512]}': {type(e).__name__}: {e}") from None
                except OSError as e:
                    raise FetchError(f"Failed to fetch '{p.uri[:512]}': {e.strerror or e}"
                                     + (f" ({e.filename})" if e.filename else "")) from None

    async def _fetch(self, session: aiohttp.ClientSession, p: Plan, sandbox: Path, stop: "_Stop") -> None:
        dest_dir = await asyncio.to_thread(_make_dirs, sandbox, p.dest.split("/")[:-1])
        name = p.dest.split("/")[-1]
        tmp = dest_dir / f".drover-fetch-{uuid.uuid4().hex}"
        try:
            if p.cache:
                await self._from_cache(session, p, tmp, stop)
            else:
                await self._obtain(session, p, tmp, self.config.max_bytes, stop)
            os.chmod(tmp, 0o755 if p.executable else 0o644)
            await asyncio.to_thread(_replace, tmp, dest_dir, name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if p.archive is not None:
            # In a thread, which wait_for cannot stop: the extraction asks `stop` between chunks and members.
            await asyncio.to_thread(extract, dest_dir / name, sandbox, p.archive, self.config.max_bytes,
                                    self.config.max_members, stop)

    async def _obtain(self, session: aiohttp.ClientSession, p: Plan, out: Path, limit: int, stop: "_Stop") -> None:
        """The URI's content into a new file `out` (created here, no link followed)."""
        if p.local:
            await asyncio.to_thread(self._copy_local, p.source, out, limit, stop)
            return
        async with session.get(p.source, allow_redirects=True, max_redirects=10) as r:
            if r.status != 200:
                raise FetchError(f"HTTP {r.status} {r.reason or ''}".strip())
            if r.content_length is not None and r.content_length > limit:
                raise FetchError(f"it is {r.content_length} bytes, more than the {limit} bytes allowed")
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                total = 0
                async for chunk in r.content.iter_chunked(_CHUNK):
                    stop.check()
                    total += len(chunk)
                    if total > limit:
                        raise FetchError(f"it is more than the {limit} bytes allowed")
                    f.write(chunk)

    def _copy_local(self, path: str, out: Path, limit: int, stop: "_Stop") -> None:
        with os.fdopen(self._open_local(path), "rb") as src:
            _write_new(out, src, limit, stop)

    def _open_local(self, path: str) -> int:
        """A read-only descriptor of the local file `path`, if it may be fetched; FetchError otherwise."""
        allowed = [os.path.realpath(d) for d in self.config.allowed_dirs]
        if not allowed:
            raise FetchError("local files are not fetched on this agent (its operator names the directories they "
                             "may come from with --fetcher-allowed-dir)")
        # O_PATH first: the file is looked at, not opened (opening a device can act on it), until it is known to
        # be a regular file inside an allowed directory; then that very file is opened through /proc.
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            raise FetchError("it is not inside a directory this agent fetches local files from "
                             "(--fetcher-allowed-dir), or does not exist") from None
        try:
            real = os.readlink(f"/proc/self/fd/{pfd}")  # the file looked at, every link resolved
            if not local_allowed(real, allowed) or local_allowed(
                    real, [os.path.realpath(d) for d in self.config.denied_dirs]):
                raise FetchError("it is not inside a directory this agent fetches local files from "
                                 "(--fetcher-allowed-dir), or does not exist")
            if not stat.S_ISREG(os.fstat(pfd).st_mode):
                raise FetchError("it is not a regular file")
            return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.close(pfd)

    async def _from_cache(self, session: aiohttp.ClientSession, p: Plan, out: Path, stop: "_Stop") -> None:
        key = cache_key(p.uri)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent launches of one URI: one download
            cache_dir = self.config.cache_dir
            await asyncio.to_thread(_private_dir, cache_dir)
            if not self._swept:
                self._swept = True
                await asyncio.to_thread(_sweep, cache_dir)
            entry = cache_dir / key
            if p.local and entry.is_file():
                # The cached copy is served only while the file itself may still be fetched (the operator may
                # have narrowed --fetcher-allowed-dir since, or the file may have been removed).
                os.close(await asyncio.to_thread(self._open_local, p.source))
            if not entry.is_file():
                tmp = cache_dir / f"{key}.tmp-{uuid.uuid4().hex}"
                try:
                    try:
                        await self._obtain(session, p, tmp, min(self.config.max_bytes, self.config.cache_size), stop)
                    except FetchError as e:
                        if "more than" not in str(e):
                            raise
                        # larger than the whole cache: fetched without it
                        await self._obtain(session, p, out, self.config.max_bytes, stop)
                        return
                    size = tmp.stat().st_size
                    await asyncio.to_thread(self._evict, size, key)
                    os.replace(tmp, entry)
                finally:
                    # a partial download (a failure, a kill, a timeout) never stays in the cache, which counts only
                    # whole entries (a leftover would hold disk until the agent restarts)
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
            os.utime(entry)  # its last use, for the LRU order
            with open(entry, "rb") as src:
                await asyncio.to_thread(_write_new, out, src, self.config.max_bytes, stop)

    def _evict(self, incoming: int, keep: str) -> None:
        entries = []
        for e in self.config.cache_dir.iterdir():
            if e.name != keep and len(e.name) == 64 and e.is_file():
                st = e.stat()
                entries.append((e.name, st.st_size, st.st_mtime))
        for key in to_evict(entries, self.config.cache_size, incoming):
            with contextlib.suppress(FileNotFoundError):
                (self.config.cache_dir / key).unlink()


def _sweep(cache_dir: Path) -> None:
    """Remove the partial downloads an agent that died in the middle of one left in the cache (one agent process
    uses a work dir, so none of them is still being written)."""
    for e in cache_dir.iterdir():
        if ".tmp-" in e.name:
            with contextlib.suppress(FileNotFoundError):
                e.unlink()


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


async def _until_stopped(coro: Awaitable[None], cancelled: Callable[[], bool], seconds: float) -> None:
    """Await `coro`, but no longer than `seconds` (asyncio.TimeoutError) and only while not `cancelled()` (asked
    every CANCEL_POLL seconds; Cancelled): a download waiting for a server's answer stops at once on a KILL."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(CANCEL_POLL, max(0.0, deadline - loop.time())))
            if done:
                return task.result()
            if cancelled():
                raise Cancelled()
            if loop.time() >= deadline:
                raise asyncio.TimeoutError()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Stop:
    """When a fetch must stop: its task was killed (Cancelled), or its URI's time is up (FetchError). Asked between
    chunks and archive members, also in the threads that copy and extract (which asyncio cannot interrupt)."""

    def __init__(self, cancelled: Callable[[], bool] = lambda: False, seconds: float = math.inf):
        self.cancelled = cancelled
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled()
        if time.monotonic() > self.deadline:
            raise FetchError(f"not fetched within {self.seconds:g} s")


def _write_new(out: Path, src: BinaryIO, limit: int, stop: _Stop | None = None) -> int:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    total = 0
    with os.fdopen(fd, "wb") as f:
        while chunk := src.read(_CHUNK):
            if stop is not None:
                stop.check()
            total += len(chunk)
            if total > limit:
                raise FetchError(f"it is more than the {limit} bytes allowed")
            f.write(chunk)
    return total


def _make_dirs(root: Path, parts: list[str]) -> Path:
    """root/parts..., each directory created if missing; FetchError if one is a symbolic link or not a directory
    (nothing is ever written through a link)."""
    d = root
    for part in parts:
        d = d / part
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            os.mkdir(d, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise FetchError(f"'{d.relative_to(root)}' in the sandbox is a symbolic link: nothing is written "
                             "through one")
        if not stat.S_ISDIR(st.st_mode):
            raise FetchError(f"'{d.relative_to(root)}' in the sandbox is not a directory")
    return d


def _clear(path: Path) -> None:
    """Make room for a new file or link at `path`: remove a file or link there (never what a link points to)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise FetchError(f"'{path.name}' is a directory in the sandbox")
    os.unlink(path)


def _replace(tmp: Path, dest_dir: Path, name: str) -> None:
    target = dest_dir / name
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise FetchError(f"'{name}' is a directory in the sandbox")
    os.replace(tmp, target)  # rename(2) replaces a link itself, never its target


def extract(archive: Path, root: Path, kind: str, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS,
            stop: _Stop | None = None) -> None:
    """Extract `archive` into `root` under the rules in the module docstring (`stop` asked between chunks)."""
    try:
        if kind == "zip":
            _extract_zip(archive, root, max_bytes, max_members, stop or _Stop())
        else:
            _extract_tar(archive, root, max_bytes, max_members, stop or _Stop())
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise FetchError(f"cannot extract '{archive.name}': {e}") from None
    except FetchError as e:
        raise FetchError(f"cannot extract '{archive.name}': {e}") from None


class _Budget:
    def __init__(self, max_bytes: int, max_members: int, stop: _Stop):
        self.bytes, self.members, self.stop = max_bytes, max_members, stop

    def member(self) -> None:
        self.stop.check()
        self.members -= 1
        if self.members < 0:
            raise FetchError("it has too many members")

    def copy(self, src: BinaryIO, out: Path, mode: int) -> None:
        _clear(out)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            while chunk := src.read(_CHUNK):
                self.stop.check()
                self.bytes -= len(chunk)
                if self.bytes < 0:
                    raise FetchError("it expands beyond the bytes allowed")
                f.write(chunk)
        os.chmod(out, mode & 0o777)  # permission bits only: no setuid, setgid or sticky bit


def _extract_tar(archive: Path, root: Path, max_bytes: int, max_members: int, stop: _Stop) -> None:
    budget = _Budget(max_bytes, max_members, stop)
    with tarfile.open(archive, "r:*") as tf:
        for m in tf:
            budget.member()
            parts = member_parts(m.name)
            if not parts:
                continue  # the archive's own top directory (".")
            parent = _make_dirs(root, parts[:-1])
            target = parent / parts[-1]
            if m.isdir():
                _make_dirs(root, parts)
            elif m.isreg():
                src = tf.extractfile(m)
                assert src is not None
                budget.copy(src, target, m.mode or 0o644)
            elif m.issym():
                if (why := symlink_problem(parts, m.linkname)) is not None:
                    raise FetchError(f"member '{m.name[:256]}' is a symbolic link to {why}")
                _clear(target)
                os.symlink(m.linkname, target)
            elif m.islnk():
                src_parts = member_parts(m.linkname)
                src_path = _make_dirs(root, src_parts[:-1]) / src_parts[-1] if src_parts else root
                st = os.lstat(src_path) if os.path.lexists(src_path) else None
                if st is None or not stat.S_ISREG(st.st_mode):
                    raise FetchError(f"member '{m.name[:256]}' is a hard link to '{m.linkname[:256]}', which is "
                                     "not a file extracted before")
                if src_path != target:
                    with open(src_path, "rb") as src:
                        budget.copy(src, target, st.st_mode)
            else:
                raise FetchError(f"member '{m.name[:256]}' is a device, FIFO or other special file")


def _extract_zip(archive: Path, root: Path, max_bytes: int, max_members: int, stop: _Stop) -> None:
    budget = _Budget(max_bytes, max_members, stop)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            budget.member()
            parts = member_parts(info.filename)
            if not parts:
                continue
            if info.is_dir():
                _make_dirs(root, parts)
                continue
            parent = _make_dirs(root, parts[:-1])
            mode = (info.external_attr >> 16) & 0o777 or 0o644
            with zf.open(info) as src:
                budget.copy(src, parent / parts[-1], mode)  # a zip "symlink" is written as the file it is

