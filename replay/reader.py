"""Rebuild master state from a replica's event store, with the same fold the master runs.

Everything here reads a store without changing it: `open_store` opens the SQLite file read-only
(a live replica's store included), and errors carry the log index they are about:

- `StoreError`      the file is missing, unreadable or not an event store (no index);
- `MissingIndex`    a gap in the log ("index N is missing");
- `PayloadError`    a row whose payload does not decode (unknown type included);
- `FoldError`       `master.state.apply` raised while folding an event.

Reading goes through one cursor a chunk of rows at a time, decoding is one msgspec call per row
and collection is paused while folding, so a replay costs little beyond the fold itself
(docs/replay.md, "Speed").
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import msgspec

from eventstore import events as ev
from eventstore.store import STORE_FILE, EventStore
from master.state import State, apply, decode_snapshot, state_hash

CHUNK = 4096  # rows per SELECT

# The master's own decoder: value rules and `event_problem` included, so replay reads exactly what a replica folds.
_decode = ev.decode_event
_Envelope = ev.Envelope


class ReplayError(Exception):
    """A problem found in a store; `index` is the log index it is about (None: the whole file)."""

    index: int | None = None

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class StoreError(ReplayError):
    pass


class MissingIndex(ReplayError):
    pass


class PayloadError(ReplayError):
    pass


class FoldError(ReplayError):
    pass


# ---- opening a store read-only ---------------------------------------------------------------------


class ReadOnlyStore(EventStore):
    """An `EventStore` on a read-only SQLite connection: nothing a tool does can change the store.

    With a `-wal` file next to it (a live or freshly stopped replica) the database is opened with
    `mode=ro`, which reads the WAL too. Without one, it is opened `immutable`, so SQLite does not
    even create the `-wal`/`-shm` side files."""

    def __init__(self, path: str | Path):  # noqa: D107 - deliberately not calling EventStore.__init__
        self.path = resolve_store_path(path)
        wal = self.path.with_name(self.path.name + "-wal")
        mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
        try:
            self.db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?{mode}", uri=True,
                                      check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open: {e}") from None
        with store_errors(self):
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "events" not in tables:
                hint = "" if wal.exists() else (" (copying a live replica's store? copy its events.sqlite-wal "
                                                "along with it, or use sqlite3's .backup)")
                raise StoreError(f"{self.path} is not a valid event store: it has no events table{hint}")
            cols = [r[1] for r in self.db.execute("PRAGMA table_info(events)")]
            if cols[:5] != ["idx", "term", "ts", "type", "payload"]:
                raise StoreError(f"{self.path} is not a valid event store: unexpected events columns {cols}")
            self.has_snapshots = "snapshots" in tables
            self.has_meta = "meta" in tables

    def write_snapshot(self, idx: int, digest: str, data: bytes) -> None:  # pragma: no cover - guard
        raise StoreError(f"{self.path} is opened read-only")

    append = write_snapshot  # type: ignore[assignment]

    # Wrapped readers: a damaged file becomes a StoreError naming it, never a traceback.
    def last_index(self) -> int:
        with store_errors(self):
            return self.db.execute("SELECT COALESCE(MAX(idx), 0) FROM events").fetchone()[0]

    def first_index(self) -> int:
        with store_errors(self):
            return self.db.execute("SELECT COALESCE(MIN(idx), 0) FROM events").fetchone()[0]

    def count(self) -> int:
        with store_errors(self):
            return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def snapshots(self) -> list[tuple[int, str]]:
        if not self.has_snapshots:
            return []
        with store_errors(self):
            return list(self.db.execute("SELECT idx, hash FROM snapshots ORDER BY idx"))

    def snapshot_at_or_before(self, idx: int) -> tuple[int, str, bytes] | None:
        if not self.has_snapshots:
            return None
        with store_errors(self):
            return super().snapshot_at_or_before(idx)

    def snapshot(self, idx: int) -> tuple[int, str, bytes] | None:
        if not self.has_snapshots:
            return None
        with store_errors(self):
            row = self.db.execute("SELECT idx, hash, data FROM snapshots WHERE idx = ?", (idx,)).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def meta(self) -> dict[str, str]:
        if not self.has_meta:
            return {}
        with store_errors(self):
            return dict(self.db.execute("SELECT key, value FROM meta"))

    def index_at_time(self, ts: float) -> int | None:
        """The last event whose leader time is <= ts (None when every event is later)."""
        with store_errors(self):
            return self.db.execute("SELECT MAX(idx) FROM events WHERE ts <= ?", (ts,)).fetchone()[0]

    def row(self, idx: int) -> tuple | None:
        with store_errors(self):
            return self.db.execute("SELECT idx, term, ts, type, payload FROM events WHERE idx = ?", (idx,)).fetchone()

    def quick_check(self) -> str | None:
        """SQLite's own structural check of the file: None when it is fine, else what is wrong."""
        with store_errors(self):
            rows = [r[0] for r in self.db.execute("PRAGMA quick_check(5)")]
        return None if rows == ["ok"] else "; ".join(rows)


def resolve_store_path(path: str | Path) -> Path:
    """A replica's data dir (holding events.sqlite) or the SQLite file itself; StoreError if neither."""
    p = Path(path)
    if p.is_dir():
        f = p / STORE_FILE
        if not f.exists():
            raise StoreError(f"no event store in {p} (expected {f.name}: is it a master replica's data dir?)")
        return f
    if not p.exists():
        raise StoreError(f"no event store at {p}: no such file or directory")
    if not p.is_file():
        raise StoreError(f"{p} is not a file")
    return p


def open_store(path: str | Path) -> ReadOnlyStore:
    return ReadOnlyStore(path)


@contextlib.contextmanager
def store_errors(store: EventStore) -> Iterator[None]:
    """Turn SQLite's errors on a damaged file into one StoreError naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{store.path} is not a valid event store: {e}") from None


# ---- reading rows and envelopes --------------------------------------------------------------------


def iter_rows(store: EventStore, start: int = 1, stop: int | None = None,
              chunk: int = CHUNK) -> Iterator[tuple[int, int, float, str, bytes | str]]:
    """The rows with start <= idx <= stop, in index order, fetched a chunk at a time from one
    cursor (one read transaction: a live replica's later writes are not seen half-way).
    No gap check (see `iter_envelopes`)."""
    q = "SELECT idx, term, ts, type, payload FROM events WHERE idx >= ?"
    args: tuple = (start,)
    if stop is not None:
        q += " AND idx <= ?"
        args = (start, stop)
    try:
        cur = store.db.execute(q + " ORDER BY idx", args)
        fetch = cur.fetchmany
        while True:
            rows = fetch(chunk)
            if not rows:
                return
            yield from rows
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{store.path} is not a valid event store: {e}") from None


def decode_payload(idx: int, payload: bytes | str) -> ev.Event:
    try:
        return _decode(payload)
    except ev.UnknownEvent as e:
        raise PayloadError(f"index {idx}: payload does not decode: unknown event type ({e})", idx) from None
    except ev.InvalidEvent as e:
        raise PayloadError(f"index {idx}: payload breaks a value rule: {e}", idx) from None
    except msgspec.ValidationError as e:
        msg = str(e)
        if "$.type" in msg and "Invalid value" in msg:
            raise PayloadError(f"index {idx}: payload does not decode: unknown event type ({msg})", idx) from None
        raise PayloadError(f"index {idx}: payload does not decode: {msg}", idx) from None
    except msgspec.DecodeError as e:
        raise PayloadError(f"index {idx}: payload does not decode: {e}", idx) from None
    except TypeError as e:  # not bytes/str (e.g. a NULL or a number written by hand)
        raise PayloadError(f"index {idx}: payload does not decode: {e}", idx) from None


def iter_envelopes(store: EventStore, start: int = 1, stop: int | None = None,
                   chunk: int = CHUNK, check_type: bool = False) -> Iterator[ev.Envelope]:
    """Envelopes start..stop (to the end when None), gap-free: a missing index raises MissingIndex,
    including indexes missing at the end (before `stop`). `check_type` also checks the `type`
    column against the payload's type."""
    expected = start
    dec = _decode
    env = _Envelope
    for idx, term, ts, typ, payload in iter_rows(store, start, stop, chunk):
        if idx != expected:
            raise MissingIndex(f"index {expected} is missing from {store.path} (the next stored index is {idx})",
                               expected)
        try:
            event = dec(payload)
        except (msgspec.DecodeError, TypeError, ev.InvalidEvent, ev.UnknownEvent):
            decode_payload(idx, payload)  # raises PayloadError with the reason
            raise  # pragma: no cover
        if check_type and typ != event.__struct_config__.tag:
            raise PayloadError(f"index {idx}: the type column says {typ} but the payload is a "
                               f"{event.__struct_config__.tag} event", idx)
        yield env(idx, term, ts, event)
        expected += 1
    if stop is not None and expected <= stop:
        raise MissingIndex(f"index {expected} is missing from {store.path} (the store ends at {expected - 1})",
                           expected)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The fold allocates many long-lived objects and almost never cycles: collecting during a
    replay only re-scans the growing state. Collection resumes (and catches up) afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fold_range(state: State, store: EventStore, stop: int | None, chunk: int = CHUNK) -> State:
    """Fold events state.index+1 .. stop (to the end when None) into `state`.

    The hot loop of every replay: one cursor read a chunk at a time, one msgspec call per payload,
    the fold, and nothing else (what `iter_envelopes` + `apply` do, inlined)."""
    start = expected = state.index + 1
    q = "SELECT idx, term, ts, payload FROM events WHERE idx >= ?"
    args: tuple = (start,)
    if stop is not None:
        q += " AND idx <= ?"
        args = (start, stop)
    dec = _decode
    env_t = _Envelope
    with _no_gc():
        try:
            fetch = store.db.execute(q + " ORDER BY idx", args).fetchmany
            rows = fetch(chunk)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{store.path} is not a valid event store: {e}") from None
        while rows:
            for idx, term, ts, payload in rows:
                if idx != expected:
                    raise MissingIndex(f"index {expected} is missing from {store.path} (the next stored index "
                                       f"is {idx})", expected)
                try:
                    event = dec(payload)
                except (msgspec.DecodeError, TypeError, ev.InvalidEvent, ev.UnknownEvent):
                    decode_payload(idx, payload)  # raises PayloadError with the reason
                    raise  # pragma: no cover
                env = env_t(idx, term, ts, event)
                try:
                    apply(state, env)
                except Exception as e:
                    raise FoldError(f"index {idx}: folding {ev.event_type(event)} failed: "
                                    f"{type(e).__name__}: {e}", idx) from e
                expected += 1
            try:
                rows = fetch(chunk)
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{store.path} is not a valid event store: {e}") from None
    if stop is not None and expected <= stop:
        raise MissingIndex(f"index {expected} is missing from {store.path} (the store ends at {expected - 1})",
                           expected)
    return state


# ---- state at an index --------------------------------------------------------------------------------


def load_snapshot(store: EventStore, upto: int, check: bool = False) -> State | None:
    """The state of the nearest snapshot at or before `upto`, or None. A snapshot that does not
    decode (or, with `check`, whose hash is not the recorded one) is skipped for an earlier one;
    `verify` is what reports it."""
    limit = upto
    while True:
        snap = store.snapshot_at_or_before(limit)
        if snap is None:
            return None
        idx, digest, data = snap
        try:
            state = decode_snapshot(data)
            ok = state.index == idx and (not check or state_hash(state) == digest)
        except Exception:  # a damaged snapshot: fall back to an earlier one (verify reports it)
            ok = False
        if ok:
            return state
        limit = idx - 1


def state_at(store: EventStore, upto: int | None = None, use_snapshots: bool = True,
             check_snapshot: bool = False) -> State:
    """The state after events 1..upto (all when None), starting from the nearest snapshot at or
    before `upto` when there is one (with `check_snapshot`, only one whose hash checks out)."""
    last = store.last_index()
    upto = last if upto is None else upto
    if upto > last:
        raise ValueError(f"index {upto} is beyond the last event in {store.path} ({last})")
    if upto < 0:
        raise ValueError(f"index {upto} is negative")
    state = None
    if use_snapshots and upto > 0:
        state = load_snapshot(store, upto, check=check_snapshot)
    if state is None:
        state = State()
    return fold_range(state, store, upto)


def replay_store(path: str | Path, upto: int | None = None, use_snapshots: bool = False) -> State:
    """Fold events 1..upto of the store at `path` (a data dir or the SQLite file); from 0 by default."""
    store = open_store(path)
    try:
        return state_at(store, upto, use_snapshots)
    finally:
        store.close()
