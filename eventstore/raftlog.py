"""The Raft-replicated event log (pysyncobj), bridged to asyncio.

Each Raft entry carries one `Batch` of events. The replicated state kept inside
pysyncobj is deliberately small: the last event index and a bounded tail of
recent batches. pysyncobj pickles that state whole on every log compaction, so
the full history lives in each replica's SQLite store instead (see store.py).

pysyncobj applies entries in its own tick thread. `_Log.append` only numbers the
events and hands the batch to the asyncio loop through `sink`; writing to SQLite
and folding happen there, in order, off the Raft thread (slow work in an applier
would delay heartbeats and cause spurious elections).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from eventstore import events as ev

TAIL_BATCHES = 2000
TAIL_BYTES = 8 * 1024 * 1024  # the tail is pickled into every compaction: bound it by size too


class ProposalFailed(Exception):
    pass


_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_") and isinstance(v, int)}


class _Log(SyncObjConsumer):
    def __init__(self) -> None:
        # Set before SyncObjConsumer.__init__: attributes that exist then are excluded from the dump.
        self.sink: Callable[[int, ev.Batch], None] | None = None
        super().__init__()
        self.last_index = 0
        self.tail: collections.deque = collections.deque()
        self.tail_bytes = 0

    @replicated
    def append(self, data: bytes) -> int:
        batch = ev.decode_batch(data)
        first = self.last_index + 1
        self.last_index += len(batch.events)
        self.tail.append((first, data))
        self.tail_bytes += len(data)
        while len(self.tail) > 1 and (len(self.tail) > TAIL_BATCHES or self.tail_bytes > TAIL_BYTES):
            self.tail_bytes -= len(self.tail.popleft()[1])
        if self.sink is not None:
            self.sink(first, batch)
        return first


@dataclass(frozen=True)
class RaftTuning:
    # Measured on these machines (platform-notes E): batching off gives ~1 ms commits instead of ~100 ms;
    # 0.3/0.8 s election timeouts survive GC pauses on 2 cores while failing over in well under a second.
    raft_min_timeout: float = 0.3
    raft_max_timeout: float = 0.8
    append_entries_period: float = 0.05
    connection_retry_time: float = 0.5
    leader_fallback_timeout: float = 1.0
    connection_timeout: float = 1.0


class RaftLog:
    def __init__(self, self_addr: str, peers: list[str], data_dir: Path, tuning: RaftTuning = RaftTuning()):
        self.self_addr = self_addr
        self._log = _Log()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self._conf = SyncObjConf(
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=str(data_dir / "raft.dump"),
            appendEntriesUseBatch=False,
            raftMinTimeout=tuning.raft_min_timeout,
            raftMaxTimeout=tuning.raft_max_timeout,
            appendEntriesPeriod=tuning.append_entries_period,
            connectionRetryTime=tuning.connection_retry_time,
            leaderFallbackTimeout=tuning.leader_fallback_timeout,
            connectionTimeout=tuning.connection_timeout,
            dynamicMembershipChange=False,
            # Alone, nothing wakes pysyncobj's tick thread when an entry is appended: it would commit only
            # on the next 50 ms tick. A single replica ticks often instead (measured: 50 ms -> ~1 ms).
            autoTickPeriod=0.05 if peers else 0.002,
        )
        self._peers = peers
        self._sync: SyncObj | None = None

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        """Start replicating; committed batches arrive on `queue` as (first_index, Batch), in order."""
        self._loop, self._queue = loop, queue

        def sink(first: int, batch: ev.Batch) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (first, batch))

        self._log.sink = sink
        self._sync = SyncObj(self.self_addr, self._peers, conf=self._conf, consumers=[self._log])

    def stop(self) -> None:
        if self._sync is not None:
            self._sync.destroy()
            self._sync = None

    # -- status (read from the loop thread; values are copied, never iterated live) ----------
    @property
    def is_leader(self) -> bool:
        return self._sync is not None and self._sync._isLeader()

    @property
    def leader(self) -> str | None:
        if self._sync is None:
            return None
        node = self._sync._getLeader()
        return None if node is None else node.address

    @property
    def term(self) -> int:
        return 0 if self._sync is None else self._sync.raftCurrentTerm

    @property
    def ready(self) -> bool:
        return self._sync is not None and self._sync.isReady()

    @property
    def last_index(self) -> int:
        return self._log.last_index

    def tail(self) -> list[tuple[int, bytes]]:
        return list(self._log.tail)

    def status(self) -> dict:
        return {} if self._sync is None else dict(self._sync.getStatus())

    # -- proposing ---------------------------------------------------------------------------
    async def propose(self, batch: ev.Batch, timeout: float = 5.0) -> int:
        """Replicate a batch; returns the index of its first event once committed and applied here."""
        assert self._loop is not None and self._sync is not None
        fut: asyncio.Future = self._loop.create_future()
        loop = self._loop

        def done(result, error) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if error == FAIL_REASON.SUCCESS:
                    fut.set_result(result)
                else:
                    fut.set_exception(ProposalFailed(f"raft append failed: {_FAIL_NAMES.get(error, error)}"))
            loop.call_soon_threadsafe(settle)

        self._log.append(ev.encode_batch(batch), callback=done)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise ProposalFailed(f"raft append not committed within {timeout}s") from None
