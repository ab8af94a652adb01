"""The durable per-replica history: every committed event in SQLite, keyed by log index.

Writes are idempotent (`INSERT OR IGNORE` by index) because pysyncobj may
re-deliver entries when it replays its journal after a restart. A write that
finds a *different* payload at an index already stored is corruption, and says so.

`AsyncEventStore` (aiosqlite) is what a running master uses; `EventStore`
(plain sqlite3) is for tools that read a store offline (replay, audit, tests).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import aiosqlite

from eventstore import events as ev

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    idx INTEGER PRIMARY KEY,   -- the state after folding events 1..idx
    hash TEXT NOT NULL,        -- master.state.state_hash of it
    data BLOB NOT NULL         -- master.state.encode_snapshot
);
"""
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
# With the durability option (RaftTuning.fsync_journal): WAL is fsync'd on every commit, not only at checkpoints.
DURABLE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")
STORE_FILE = "events.sqlite"
INSERT = "INSERT OR IGNORE INTO events(idx, term, ts, type, payload) VALUES (?,?,?,?,?)"


class StoreCorrupt(Exception):
    pass


def store_path(path: str | Path) -> Path:
    """Accept a replica's data dir or the SQLite file itself."""
    p = Path(path)
    if p.is_dir():
        return p / STORE_FILE
    return p


def _rows(envs: list[ev.Envelope], payloads: list[bytes] | None = None) -> list[tuple]:
    """Rows for `envs`. A replica passes the payloads it folded (the Raft entry's bytes), so the store holds
    exactly what was folded; tools that build envelopes themselves get them encoded through the commit gate."""
    if payloads is None:
        payloads = [ev.encode_event(e.event) for e in envs]
    assert len(payloads) == len(envs)
    return [(e.index, e.term, e.ts, ev.event_type(e.event), p) for e, p in zip(envs, payloads, strict=True)]


def row_to_envelope(row: tuple) -> ev.Envelope:
    idx, term, ts, _type, payload = row
    return ev.Envelope(index=idx, term=term, ts=ts, event=ev.decode_event(payload))


class AsyncEventStore:
    def __init__(self, path: str | Path, durable: bool = False):
        self.path = store_path(path)
        self._db: aiosqlite.Connection | None = None
        self._pragmas = DURABLE_PRAGMAS if durable else PRAGMAS

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        for p in self._pragmas:
            await self._db.execute(p)
        await self._db.executescript(SCHEMA)
        await self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('catalogue_version', ?)", (str(ev.CATALOGUE_VERSION),)
        )
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def last_index(self) -> int:
        async with self._db.execute("SELECT COALESCE(MAX(idx), 0) FROM events") as cur:
            (n,) = await cur.fetchone()
        return n

    async def append(self, envs: list[ev.Envelope], payloads: list[bytes] | None = None) -> None:
        rows = _rows(envs, payloads)
        await self._db.executemany(INSERT, rows)
        await self._db.commit()

    async def read(self, start: int, limit: int = 1000) -> list[ev.Envelope]:
        async with self._db.execute(
            "SELECT idx, term, ts, type, payload FROM events WHERE idx >= ? ORDER BY idx LIMIT ?", (start, limit)
        ) as cur:
            rows = await cur.fetchall()
        return [row_to_envelope(r) for r in rows]

    async def write_snapshot(self, idx: int, digest: str, data: bytes) -> None:
        await self._db.execute("INSERT OR REPLACE INTO snapshots(idx, hash, data) VALUES (?,?,?)", (idx, digest, data))
        await self._db.commit()

    async def latest_snapshot(self) -> tuple[int, str, bytes] | None:
        async with self._db.execute("SELECT idx, hash, data FROM snapshots ORDER BY idx DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    async def last_snapshot_index(self) -> int:
        async with self._db.execute("SELECT COALESCE(MAX(idx), 0) FROM snapshots") as cur:
            (n,) = await cur.fetchone()
        return n

    async def payloads(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        async with self._db.execute(
            "SELECT idx, payload FROM events WHERE idx >= ? AND idx <= ? ORDER BY idx", (start, stop)
        ) as cur:
            return [(r[0], bytes(r[1])) for r in await cur.fetchall()]


class EventStore:
    """Synchronous, read-mostly access for offline tools."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = store_path(path)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"no event store at {self.path}")
        self.db = sqlite3.connect(self.path)
        if create:
            for p in PRAGMAS:
                self.db.execute(p)
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def last_index(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(idx), 0) FROM events").fetchone()[0]

    def append(self, envs: list[ev.Envelope]) -> None:
        self.db.executemany(INSERT, _rows(envs))
        self.db.commit()

    def iter_envelopes(self, start: int = 1, stop: int | None = None) -> Iterator[ev.Envelope]:
        """Events in index order; raises StoreCorrupt at the first gap."""
        expected = start
        q = "SELECT idx, term, ts, type, payload FROM events WHERE idx >= ?"
        args: list = [start]
        if stop is not None:
            q += " AND idx <= ?"
            args.append(stop)
        for row in self.db.execute(q + " ORDER BY idx", args):
            if row[0] != expected:
                raise StoreCorrupt(f"index {expected} is missing from {self.path} (next stored index is {row[0]})")
            yield row_to_envelope(row)
            expected += 1

    def raw_rows(self) -> Iterator[tuple]:
        yield from self.db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx")

    def snapshots(self) -> list[tuple[int, str]]:
        """(index, state hash) of every recorded snapshot, in index order."""
        return list(self.db.execute("SELECT idx, hash FROM snapshots ORDER BY idx"))

    def snapshot_at_or_before(self, idx: int) -> tuple[int, str, bytes] | None:
        row = self.db.execute("SELECT idx, hash, data FROM snapshots WHERE idx <= ? ORDER BY idx DESC LIMIT 1",
                              (idx,)).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def write_snapshot(self, idx: int, digest: str, data: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO snapshots(idx, hash, data) VALUES (?,?,?)", (idx, digest, data))
        self.db.commit()
