"""The Raft log in a process of its own: RaftLog's interface, with pysyncobj running in a child process.

Why: pysyncobj's tick thread (heartbeats, votes, journal) shares the GIL with the master's event loop. A loop busy
with long C calls that never release the GIL (msgspec encoding or decoding a multi-megabyte OFFERS_MADE, json.dumps
of /master/state, a state hash) starved it for 1.5-3.6 s at 5,000-10,000 agents (bench.scale, `raft_tick_lag` on
/drover/status), against a 0.8 s election timeout: spurious elections, each dropping every agent link. In its own
process the Raft thread competes for a core, never for the master's GIL.

    master process                                 Raft process (spawned; dies with its parent)
    ──────────────                                 ──────────────────────────────────────────
    propose_entry(data) ── writer thread ── pipe ──► main thread: _Log.append(data) ─► pysyncobj
    queue ◄── (first, Batch) ── reader thread ◄──── tick thread: sink(first, batch) (committed)
    futures ◄── (id, result) ─────────────────────── tick thread: the proposal's callback
    is_leader, term, ... ◄── status, every 20 ms or on change
    ping every 0.2 s ───────────────────────────────► silent for parent_timeout: stop ticking (see below)

The child validates and numbers every entry exactly as before (raftlog._Log, in log order); the parent decodes
the committed entry again (in its reader thread) to fold it. A master whose process is stopped (SIGSTOP) or whose
loop hangs for `parent_timeout` seconds must not keep the Raft leadership while it serves nothing: its child
stops ticking, like a stalled node, until the pings come back. The child exits when its parent does (the pipe's
end of file, and PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import multiprocessing
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from eventstore import events as ev
from eventstore.raftlog import ProposalFailed, RaftLog, RaftTuning, settle_proposal

STATUS_EVERY = 0.02  # seconds between status pushes when nothing changed... at most (on change: at once)
PING_EVERY = 0.2
PARENT_TIMEOUT = 5.0


class RaftProcess:
    """RaftLog's interface (what MasterServer uses), backed by a child process running RaftLog."""

    def __init__(self, self_addr: str, peers: list[str], data_dir: Path, tuning: RaftTuning,
                 parent_timeout: float = PARENT_TIMEOUT):
        self.self_addr = self_addr
        self._args = (self_addr, list(peers), str(data_dir), tuning, parent_timeout)
        self._status: dict[str, Any] = {"is_leader": False, "leader": None, "term": 0, "ready": False,
                                        "last_index": 0, "tick_lag": {"max_s": 0.0, "over_half_election_timeout": 0}}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._pending: dict[int, tuple[asyncio.Future, int]] = {}
        self._ids = itertools.count(1)
        self._outbox: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._proc: Any = None
        self._conn: Any = None
        self._stopping = False
        self._ping_handle: asyncio.TimerHandle | None = None
        # Proposal ids of the leader's groups in flight (MasterServer keeps it; read here from the reader thread).
        self.own_proposals: set[str] | frozenset[str] = frozenset()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        """Start the child; committed batches arrive on `queue` as (first_index, Batch), in order. Blocks until the
        child has started pysyncobj (and raises what it raised)."""
        self._loop, self._queue = loop, queue
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_child_main, args=(theirs, *self._args), daemon=True,
                                 name=f"drover-raft {self.self_addr}")
        self._proc.start()
        theirs.close()
        self._conn = mine
        if not mine.poll(60):
            self._kill()
            raise RuntimeError("the Raft process did not start within 60 s")
        msg = mine.recv()
        if msg[0] == "error":
            self._kill()
            raise RuntimeError(f"the Raft process failed to start: {msg[1]}")
        threading.Thread(target=self._read, name="raft-reader", daemon=True).start()
        threading.Thread(target=self._write, name="raft-writer", daemon=True).start()
        self._ping()

    def stop(self) -> None:
        if self._proc is None or self._stopping:
            return
        self._stopping = True
        if self._ping_handle is not None:
            self._ping_handle.cancel()
        self._outbox.put(("stop",))
        self._proc.join(10)
        if self._proc.is_alive():
            self._kill()
        self._outbox.put(None)  # ends the writer thread

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    def _ping(self) -> None:
        """From the event loop: the child keeps ticking only while these arrive (see the module's docstring)."""
        if self._stopping or self._loop is None:
            return
        self._outbox.put(("ping",))
        self._ping_handle = self._loop.call_later(PING_EVERY, self._ping)

    # -- the pipe ------------------------------------------------------------------------------------------
    def _write(self) -> None:
        # Sending blocks while the child reads a large entry: a thread of its own keeps the event loop free.
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            try:
                self._conn.send(msg)
            except (OSError, ValueError):
                return

    def _read(self) -> None:
        loop, queue = self._loop, self._queue
        assert loop is not None and queue is not None
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "batch":
                first, data = msg[1], msg[2]
                head = ev.peek_entry(data)
                batch: ev.Batch | ev.UndecodedEntry | Exception
                if head is not None and head.proposal in self.own_proposals:
                    # The leader's own group: its events are folded already (staged), so their JSON is not
                    # decoded again (megabytes per allocation run at scale); the applier decodes it should it
                    # no longer be in flight.
                    batch = head
                else:
                    try:
                        batch = ev.decode_batch(data)
                    except Exception as e:  # the child decoded it already: never expected
                        batch = e
                loop.call_soon_threadsafe(queue.put_nowait, (first, batch))
            elif kind == "unknown":
                loop.call_soon_threadsafe(queue.put_nowait, (msg[1], ev.UnknownEvent(msg[2])))
            elif kind == "done":
                loop.call_soon_threadsafe(self._settle, msg[1], msg[2], msg[3])
            elif kind == "status":
                self._status = msg[1]
            elif kind == "tail":
                loop.call_soon_threadsafe(self._settle_tail, msg[1], msg[2])
        self._status = {**self._status, "is_leader": False, "ready": False}
        if not self._stopping:
            # Without its Raft process this replica can neither commit nor follow: fail-stop (/health says why).
            loop.call_soon_threadsafe(queue.put_nowait, (0, RuntimeError("the Raft process exited")))

    def _settle(self, req: int, result: int, error: int) -> None:
        entry = self._pending.pop(req, None)
        if entry is not None:
            settle_proposal(entry[0], result, error, entry[1])

    def _settle_tail(self, req: int, tail: list) -> None:
        entry = self._pending.pop(req, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(tail)

    # -- RaftLog's interface -------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return bool(self._status["is_leader"])

    @property
    def leader(self) -> str | None:
        return self._status["leader"]

    @property
    def term(self) -> int:
        return int(self._status["term"])

    @property
    def ready(self) -> bool:
        return bool(self._status["ready"])

    @property
    def last_index(self) -> int:
        return int(self._status["last_index"])

    def tick_lag(self) -> dict:
        return dict(self._status["tick_lag"])

    def status(self) -> dict:
        return dict(self._status)

    async def tail_entries(self) -> list[tuple[int, bytes]]:
        assert self._loop is not None
        req = next(self._ids)
        fut = self._loop.create_future()
        self._pending[req] = (fut, 0)
        self._outbox.put(("tail", req))
        try:
            return await asyncio.wait_for(fut, 10)
        finally:
            self._pending.pop(req, None)

    async def propose(self, batch: ev.Batch, timeout: float = 5.0) -> int:
        return await self.propose_entry(ev.encode_batch(batch), batch.term, timeout)

    def propose_entry(self, data: bytes, term: int, timeout: float = 5.0) -> asyncio.Future:
        """As RaftLog.propose_entry: entries proposed one after another reach the log in that order, or fail."""
        assert self._loop is not None
        fut: asyncio.Future = self._loop.create_future()
        if self._stopping or self._proc is None or not self._proc.is_alive():
            fut.set_exception(ProposalFailed("the Raft process is not running"))
            return fut
        req = next(self._ids)
        self._pending[req] = (fut, term)

        def expire() -> None:
            if self._pending.pop(req, None) is not None and not fut.done():
                fut.set_exception(ProposalFailed(f"raft append not committed within {timeout}s"))

        timer = self._loop.call_later(timeout, expire)
        fut.add_done_callback(lambda _: timer.cancel())
        self._outbox.put(("propose", req, data))
        return fut


# ---- the child ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel kills this process when its parent dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main(conn: Any, self_addr: str, peers: list[str], data_dir: str, tuning: RaftTuning,
                parent_timeout: float) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    # One sender thread: the tick thread (committed entries, megabytes at scale) and this main thread (status) only
    # queue their messages, so neither ever blocks on a parent that is slow to read, and this thread keeps reading
    # the pipe (proposals, pings: a blocked reader here would stall the parent's writer and look like a silent
    # parent).
    outbox: queue_mod.SimpleQueue = queue_mod.SimpleQueue()

    def sender() -> None:
        while True:
            msg = outbox.get()
            try:
                conn.send(msg)
            except (OSError, ValueError):
                os._exit(0)  # the parent is gone

    send = outbox.put

    def sink(first: int, batch: ev.Batch | Exception) -> None:
        if isinstance(batch, Exception):
            send(("unknown", first, str(batch)))
        else:
            send(("batch", first, ev.encode_batch(batch)))  # payloads as they came: msgpack only

    raft = RaftLog(self_addr, peers, Path(data_dir), tuning)
    try:
        raft.start_with_sink(sink)  # entries replayed from the journal are queued meanwhile, after "started"
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("started",))
    threading.Thread(target=sender, name="raft-sender", daemon=True).start()

    def done(req: int, result: Any, error: Any) -> None:
        send(("done", req, result, error))

    last_heard = time.monotonic()
    last_status: tuple | None = None
    try:
        while True:
            try:
                ready = conn.poll(STATUS_EVERY)
            except (OSError, EOFError):
                break
            now = time.monotonic()
            if ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    break
                last_heard = now
                kind = msg[0]
                if kind == "propose":
                    req = msg[1]
                    raft._log.append(msg[2], callback=lambda r, e, req=req: done(req, r, e))
                elif kind == "tail":
                    send(("tail", msg[1], raft.tail()))
                elif kind == "stop":
                    break
            if os.getppid() != parent:
                break
            sync = raft._sync
            if sync is not None:
                sync.parent_stalled = now - last_heard > parent_timeout
            status = (raft.is_leader, raft.leader, raft.term, raft.ready, raft.last_index)
            if status != last_status or not ready:
                last_status = status
                send(("status", {"is_leader": status[0], "leader": status[1], "term": status[2],
                                 "ready": status[3], "last_index": status[4], "tick_lag": raft.tick_lag()}))
    finally:
        raft.stop()
