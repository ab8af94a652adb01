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
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pysyncobj.encryptor
import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.journal import FileJournal, MetaStorer
from pysyncobj.pickle import dumps as _pso_dumps
from pysyncobj.syncobj import _RAFT_STATE

from eventstore import events as ev

APPEND_ENTRIES_BYTES = 16 * 1024 * 1024
OUT_OF_PLACE = -(2**62)  # _Log.append's answer to an entry that would not land at its `first` index
TAIL_BATCHES = 2000
TAIL_BYTES = 8 * 1024 * 1024  # the tail is pickled into every compaction: bound it by size too


class ProposalFailed(Exception):
    pass


_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_") and isinstance(v, int)}


class _Log(SyncObjConsumer):
    def __init__(self) -> None:
        # Set before SyncObjConsumer.__init__: attributes that exist then are excluded from the dump.
        self.sink: Callable[[int, ev.Batch | Exception], None] | None = None
        super().__init__()
        self.last_index = 0
        self.tail: collections.deque = collections.deque()
        self.tail_bytes = 0
        self.fence_term = 0  # the term of the newest LEADER_ELECTED in the log
        self.fence_epoch = 0  # the log index of the newest LEADER_ELECTED

    @replicated
    def append(self, data: bytes) -> int:
        """Number and hand on a batch; returns the index of its first event, -fence_term if it is fenced, or 0
        if it does not decode. This runs on every replica in log order, so a refusal is the same everywhere."""
        try:
            batch = ev.decode_batch(data)
        except ev.InvalidEvent:
            # Never proposed by a leader of this build (its events passed the commit gate), so only a broken peer
            # sends it: every replica of this build refuses it alike, keeping it out of every store and fold.
            # Raising would stop this thread and with it the replica.
            return 0
        except ev.UnknownEvent as err:
            # An event type of a newer build (a rolling upgrade): the others may fold it, so skipping it would
            # number the log differently here. Fail-stop instead: count its events, and the applier stops with
            # the reason on /health (docs/design.md, "Known limits").
            first = self.last_index + 1
            self.last_index += ev.batch_length(data)
            if self.sink is not None:
                self.sink(first, err)
            return first
        # Fencing. A replica that lost leadership but has not noticed yet (paused, partitioned) may still decide
        # and propose, and pysyncobj forwards a follower's proposal to the current leader, so it would commit.
        # `batch.term` is the serving term its decider was elected in: once a newer leader's LEADER_ELECTED is
        # in the log, older terms' batches are refused here, identically on every replica (this runs in log
        # order), so no store ever holds a decision taken on a deposed leader's stale state.
        # The term alone does not fence a leader that stepped down and was elected again in the same term (a failed
        # proposal ends its serving period; pipeline.py): its batches also carry their serving period's `epoch`, the
        # index of its LEADER_ELECTED, and those of an earlier period are refused too.
        if batch.term < self.fence_term or 0 < batch.epoch < self.fence_epoch:
            return -self.fence_term
        # A leader decides each entry on the state that the entries before it make (master/pipeline.py): one that
        # would not land right after them (an earlier one was lost or refused, a stalled deposed leader's queue was
        # forwarded to its successor) is refused, identically everywhere, rather than committed on a state that
        # never was.
        if batch.first and batch.first != self.last_index + 1:
            return OUT_OF_PLACE
        for i, e in enumerate(batch.events):
            if isinstance(e, ev.LeaderElected):
                self.fence_term = max(self.fence_term, e.term)
                self.fence_epoch = self.last_index + 1 + i
        first = self.last_index + 1
        self.last_index += len(batch.events)
        self.tail.append((first, data))
        self.tail_bytes += len(data)
        while len(self.tail) > 1 and (len(self.tail) > TAIL_BATCHES or self.tail_bytes > TAIL_BYTES):
            self.tail_bytes -= len(self.tail.popleft()[1])
        if self.sink is not None:
            self.sink(first, batch)
        return first


# -- durable journal (issue 5) ------------------------------------------------------------------
# pysyncobj's FileJournal writes entries into an mmap and never flushes it: an entry survives kill -9 (the page
# cache has it) but not power loss. Raft's safety argument assumes a node has the entry on stable storage before it
# acknowledges it (a follower's append reply, the leader counting itself towards the majority) and that
# currentTerm/votedFor are stable before a vote is granted. pysyncobj calls journal.add() synchronously in its tick
# thread *before* it replies to the leader / before the leader's own entry can count, and setCurrentTerm() before
# it sends a vote, so flushing inside those calls gives exactly that ordering.


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DurableMetaStorer(MetaStorer):
    """pysyncobj's MetaStorer (currentTerm, votedFor, commit index) with fsync of the temp file before the rename
    and of the directory after it, so the stored term/vote survive power loss (stock: no fsync at all)."""

    def storeMeta(self, meta):
        path = self.getPath()
        with open(path + ".tmp", "wb") as f:
            f.write(_pso_dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        _fsync_dir(path)


class DurableFileJournal(FileJournal):
    """FileJournal that makes every mutation durable before returning: msync (mmap.flush, MS_SYNC) after each
    add / truncation, and an fsync'd term/vote file. Compaction (deleteEntriesTo) rewrites the journal with many
    add()s; those are flushed once at the end, after making the new dump file durable first."""

    def __init__(self, journalFile: str, dumpFile: str | None = None):
        self._dump_file = dumpFile
        self._defer_flush = False
        super().__init__(journalFile)
        # Name-mangled in pysyncobj 0.3.17; fail loudly (not silently non-durable) if a new version renames it.
        assert isinstance(self._FileJournal__metaStorer, MetaStorer), "pysyncobj FileJournal layout changed"
        assert isinstance(self._FileJournal__meta, dict) and isinstance(self._FileJournal__metaSaved, bool)
        self._FileJournal__metaStorer = _DurableMetaStorer(journalFile + ".meta")
        self.flush()
        _fsync_dir(journalFile)  # the journal file may just have been created

    def add(self, command, idx, term):
        super().add(command, idx, term)
        if not self._defer_flush:
            self.flush()

    def clear(self):
        # Called when a snapshot (dump) replaces the log: the dump must be on disk before the entries go.
        self._sync_dump()
        super().clear()
        if not self._defer_flush:
            self.flush()

    def deleteEntriesFrom(self, entryFrom):
        super().deleteEntriesFrom(entryFrom)
        self.flush()

    def onOneSecondTimer(self):
        # pysyncobj stores the meta file once a second when only the commit index changed; with the durable storer
        # that is two fsyncs (file + directory) per second in the tick thread, measured at up to 0.3 s each on a
        # loaded host: long enough to delay heartbeats into a spurious election. Raft's commitIndex is volatile
        # state (a restarted node relearns it from the leader), so it is stored only together with a term/vote
        # change (setCurrentTerm, durable) and on a clean shutdown. A non-fsync'd rewrite is no option: it could
        # leave a torn meta file after power loss, and lose the durable term and vote with it.
        pass

    def _destroy(self):
        if not self._FileJournal__metaSaved:
            self._FileJournal__metaStorer.storeMeta(self._FileJournal__meta)
            self._FileJournal__metaSaved = True
        super()._destroy()

    def deleteEntriesTo(self, entryTo):
        self._sync_dump()
        self._defer_flush = True
        try:
            super().deleteEntriesTo(entryTo)
        finally:
            self._defer_flush = False
        self.flush()

    def _sync_dump(self) -> None:
        # pysyncobj writes the dump to a temp file and renames it, without fsync; do it before dropping entries.
        if self._dump_file and os.path.exists(self._dump_file):
            fd = os.open(self._dump_file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self._dump_file)


# Journal file path -> factory, for the journals that must be durable.
_DURABLE_JOURNALS: dict[str, Callable[[str], FileJournal]] = {}
_install_lock = threading.Lock()
_original_create_journal = None


def _install_journal_hook() -> None:
    """Make pysyncobj build a DurableFileJournal for the journal files registered in _DURABLE_JOURNALS.

    pysyncobj 0.3.17 has no way to pass a journal object or factory: SyncObj.__init__ calls the module-level
    `createJournal(conf.journalFile)` and reads the journal at once. The alternatives are worse: swapping
    `_SyncObj__raftLog` after construction races with the tick thread (already started, already journaling the
    initial NO_OP), and patching createJournal only around our constructor is a process-global change that leaks to
    any SyncObj built concurrently in another thread (tests and the bench build several per process) and can be
    undone out of order. So the hook is installed once, for good, and dispatches on the journal path: only
    journals RaftLog registered become durable, every other SyncObj still gets pysyncobj's own journal.
    """
    global _original_create_journal
    with _install_lock:
        if _original_create_journal is not None:
            return
        original = pysyncobj.syncobj.createJournal  # AttributeError here = pysyncobj changed: don't run non-durable

        def create_journal(journalFile=None):
            factory = _DURABLE_JOURNALS.get(journalFile) if journalFile is not None else None
            return factory(journalFile) if factory is not None else original(journalFile)

        pysyncobj.syncobj.createJournal = create_journal
        _original_create_journal = original


# -- a steadier Raft on a loaded host ------------------------------------------------------------
# Measured (3 replicas, 2 loaded cores): spurious elections came from disk stalls of 0.3-0.9 s inside the Raft tick
# threads (journal msync per entry; until now also a fsync'd meta file every second), often on all replicas at
# once. mmap.flush holds the GIL, so the whole process stops. pysyncobj has no PreVote: one candidate at a higher
# term makes the healthy leader step down. The term changes, so Drover ends the serving period and closes every
# framework stream, even when the same replica wins again. Most of these elections (5 of 5 in one natural-load run)
# were started by a *follower* that had been stalled itself, because of a pysyncobj quirk fixed below:
#  - Timers are checked at the start of a tick, before the sockets are read. A node that was stalled (follower:
#    election deadline; leader: leaderFallbackTimeout) acts on the timeout although the heartbeats or replies that
#    would have reset it are already waiting in its socket buffers.
# and a second quirk doubled failover time:
#  - A TCP link counts as dead once nothing was *read* on it for connectionTimeout, checked lazily when it is next
#    used. Followers never talk to each other, so after a leader kill -9 the first RequestVote to the other
#    follower found that link "timed out": dropped, message lost, and every failover took two election rounds.


class _SteadySyncObj(SyncObj):
    """pysyncobj's SyncObj, with two changes in the tick thread (see above):

    - before a tick that would act on an expired election deadline (follower, candidate) or on missing follower
      replies (leader fallback), the sockets are read first (a zero-timeout poll), so messages that arrived while
      this thread was stalled count;
    - a node that is not the leader sends a tiny keepalive to the other connected replicas every connectionTimeout/4,
      so idle follower-to-follower links stay alive for the next election. pysyncobj ignores message types it does
      not know, so replicas without this change simply drop it.
    """

    _KEEPALIVE = {"type": "drover_keepalive"}

    def __init__(self, *args, **kwargs):
        # Set before SyncObj.__init__ (which starts the tick thread); attributes existing at the end of it are not
        # part of pysyncobj's dump.
        self._steady_ticked = False
        self._steady_next_keepalive = 0.0
        # Set by the Raft process (raftproc.py) while its master is silent: tick no more, like a stalled node.
        self.parent_stalled = False
        # How late the tick thread runs (GIL starvation, disk stalls): the gaps between the starts of its ticks,
        # beyond the longest wait a tick asks for (autoTickPeriod). Read by RaftLog.tick_lag.
        self.tick_last = 0.0
        self.tick_lag_max = 0.0  # the longest gap so far
        self.tick_lag_over = 0  # gaps longer than half the minimum election timeout: spurious elections start here
        super().__init__(*args, **kwargs)
        # Name-mangled internals of pysyncobj 0.3.17; fail loudly if a new version renames them.
        for name in ("raftState", "raftElectionDeadline", "transport", "needLoadDumpFile", "lastResponseTime",
                     "otherNodes", "connectedNodes", "raftLeader"):
            assert hasattr(self, "_SyncObj__" + name), f"pysyncobj SyncObj layout changed: no {name}"

    def _onTick(self, timeToWait=0.0):
        if self.parent_stalled:
            time.sleep(timeToWait or 0.05)
            return
        now = time.monotonic()
        if self.tick_last:
            gap = now - self.tick_last - self.conf.autoTickPeriod
            if gap > self.tick_lag_max:
                self.tick_lag_max = gap
            if gap > self.conf.raftMinTimeout / 2:
                self.tick_lag_over += 1
        self.tick_last = now
        if self._steady_ticked:  # after the first tick: the transport is up and a dump, if any, is loaded
            if self._timer_due():
                self._poller.poll(0)
            self._keepalive()
        super()._onTick(timeToWait)
        self._steady_ticked = True

    def _timer_due(self) -> bool:
        if not self._SyncObj__transport.ready or self._SyncObj__needLoadDumpFile:
            return False
        now = time.monotonic()
        if self._SyncObj__raftState != _RAFT_STATE.LEADER:
            return self._SyncObj__raftElectionDeadline < now
        heard = now - self.conf.leaderFallbackTimeout
        others = self._SyncObj__otherNodes
        alive = 1 + sum(1 for n in others if self._SyncObj__lastResponseTime.get(n, 0.0) > heard)
        return alive <= (len(others) + 1) / 2

    def _keepalive(self) -> None:
        now = time.monotonic()
        if now < self._steady_next_keepalive:
            return
        self._steady_next_keepalive = now + self.conf.connectionTimeout / 4
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            return  # its heartbeats and the replies to them keep its links alive
        leader = self._SyncObj__raftLeader
        for node in list(self._SyncObj__connectedNodes):
            if node != leader:
                self._SyncObj__transport.send(node, self._KEEPALIVE)


# -- peer authentication (issue 9) ---------------------------------------------------------------
# pysyncobj unpickles every frame it reads from the Raft port (tcp_connection.py, TcpConnection.__processParseMessage:
# `pickle.loads(zlib.decompress(data))`). Without a password that is code execution, as the master's user, for anyone
# who can reach the port: as the first frame of a connection (the peer's address), as a utility command ('status',
# 'add', 'remove', ...: transport.py `_onIncomingMessageReceived`, before any check of who is talking) or as any
# later message.
#
# With `SyncObjConf(password=...)` (pysyncobj 0.3.17, read line by line; pinned in pyproject.toml) every frame in
# both directions is a Fernet token (AES-128-CBC + HMAC-SHA256, key = PBKDF2 of the password, encryptor.py), and
# nothing unauthenticated is unpickled:
#  - SyncObj.__init__ builds the encryptor (syncobj.py:123-126) before it builds the transport (syncobj.py:210);
#    TCPTransport sets it on each accepted connection in `_onNewIncomingConnection` (transport.py:324-327), which
#    TcpServer calls synchronously on accept (tcp_server.py:65-73), before the poller can deliver the first read; on
#    each outgoing connection when it is created (transport.py:529).
#  - __processParseMessage (tcp_connection.py:277-300) runs `encryptor.extract_timestamp(data)` and
#    `encryptor.decrypt(data)` (lines 286, 290) before `pickle.loads` (line 291); both check the HMAC first and
#    raise InvalidToken on a bad one (cryptography's documented behaviour; pinned by tests/test_raft_auth.py). Any
#    exception there is caught by a bare `except:` that disconnects (lines 295-298): the frame is never unpickled,
#    the read buffer is emptied and the connection dropped.
#  - The handshake (transport.py:342-346, 453-456: each side sends a random per-connection key) and the utility
#    commands come through the same path, so they need the secret as well. A recorded frame replayed on a new
#    connection is authentic data a replica produced (harmless to unpickle) and fails the per-connection key check
#    (tcp_connection.py:292-294) after the first frame, which is taken as the key and is harmless.
# So no patch is needed: the cluster secret is pysyncobj's password. Drover adds: the secret comes from a file (never a
# flag value, a log line or an environment variable), `drover master` refuses to start without one unless
# --raft-insecure says otherwise, `drover local` generates one per cluster, and RaftLog.start checks that encryption
# is in effect (fails loudly should a pysyncobj upgrade change that). Left as is: a frame's 4-byte length is read
# before authentication, so an unauthenticated client can make a replica buffer up to 2 GiB (memory, not code); and a
# holder of the secret is trusted completely (it could make replicas unpickle anything): guard the file like a key.

SECRET_MIN_BYTES = 16


def read_secret_file(path: Path | str) -> bytes:
    """The cluster's Raft secret: the file's bytes without surrounding whitespace. Refused (ValueError, whose message
    never contains the secret) when unreadable, shorter than SECRET_MIN_BYTES, or accessible to group or others."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise ValueError(f"{path} is accessible to group or others (mode {st.st_mode & 0o777:o}); "
                             f"chmod 600 it")
        with os.fdopen(os.dup(fd), "rb") as f:
            secret = f.read().strip()
    finally:
        os.close(fd)
    if len(secret) < SECRET_MIN_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; a Raft secret needs at least {SECRET_MIN_BYTES}")
    return secret


def ensure_secret_file(path: Path | str) -> Path:
    """Create `path` with a new random secret (32 random bytes, hex; mode 0600 from the start) unless it exists."""
    import secrets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


@dataclass(frozen=True)
class RaftTuning:
    # Measured on these machines (platform-notes E): batching off gives ~1 ms commits instead of ~100 ms.
    # Election timeouts: the smallest must outlast the longest tick-thread stall of a healthy leader (measured up
    # to ~0.9 s on a loaded 2-core host, typically <0.4 s, see above) plus one heartbeat period. After a leader
    # kill -9 the first of the two followers times out after min..max, a new leader serves ~0.1 s later (measured
    # 0.84-1.53 s, median 1.08 s; 0.78-1.53 s with the former 0.3-0.8 s, which needed two election rounds).
    raft_min_timeout: float = 0.8
    raft_max_timeout: float = 1.6
    append_entries_period: float = 0.05
    connection_retry_time: float = 0.5
    # A leader that heard from no majority for this long steps down: a partitioned leader keeps serving (stale
    # reads) at most this long (docs/chaos.md relies on ~1 s). A leader stalled longer than raft_min_timeout is
    # likely replaced anyway, so a larger value would not buy stall tolerance.
    leader_fallback_timeout: float = 1.0
    # pysyncobj requires connection_timeout >= raft_max_timeout. A link is dropped after this long without a read
    # (checked before reading, so a tick thread stalled this long drops its links); a replica killed -9 closes its
    # sockets at once, so this bounds only hung or partitioned peers.
    connection_timeout: float = 3.0
    # Durability (docs/design.md "Durability"): flush the Raft journal (msync) on every append and term/vote
    # change before acknowledging, and run SQLite with synchronous=FULL. Measured (bench/README.md, --fsync): +1.0
    # to +1.5 ms p50 per master commit, sequential commits/s about halved. Rule: on by default if it adds at most
    # 2 ms p50 to a master commit (decisions, not raw log throughput, are what the master pays for).
    fsync_journal: bool = True
    # The cluster's shared secret (read_secret_file): pysyncobj's `password`, see "peer authentication" above. None:
    # no authentication, anyone reaching the Raft port runs code as this process (`drover master` refuses that unless
    # --raft-insecure). Kept out of repr so that logging a config never prints it.
    secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # pysyncobj checks these with bare asserts inside SyncObj(); fail here, early and with a reason.
        if not self.raft_min_timeout > 3 * self.append_entries_period:
            raise ValueError("raft_min_timeout must be more than 3 x append_entries_period")
        if not self.raft_max_timeout > self.raft_min_timeout:
            raise ValueError("raft_max_timeout must be more than raft_min_timeout")
        if not self.leader_fallback_timeout > self.append_entries_period:
            raise ValueError("leader_fallback_timeout must be more than append_entries_period")
        if not self.connection_timeout >= self.raft_max_timeout:
            raise ValueError("connection_timeout must be at least raft_max_timeout (pysyncobj requires it)")
        if self.secret is not None and len(self.secret) < SECRET_MIN_BYTES:
            raise ValueError(f"secret must be at least {SECRET_MIN_BYTES} bytes")


def settle_proposal(fut: asyncio.Future, result: int, error: int, term: int) -> None:
    """A proposal's outcome, from pysyncobj's callback (result: _Log.append's return value)."""
    if fut.done():
        return
    if error == FAIL_REASON.SUCCESS and result == OUT_OF_PLACE:
        fut.set_exception(ProposalFailed("refused: an entry decided before it was not committed before it"))
    elif error == FAIL_REASON.SUCCESS and result == 0:
        fut.set_exception(ProposalFailed("refused: the batch does not decode on the replicas"))
    elif error == FAIL_REASON.SUCCESS and result < 0:
        fut.set_exception(ProposalFailed(f"refused: decided in serving term {term}, but the leader of term "
                                         f"{-result} was elected since"))
    elif error == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(ProposalFailed(f"raft append failed: {_FAIL_NAMES.get(error, error)}"))


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
            # pysyncobj 0.3.17 sends an entry of at least this size in chunks and labels the last one by the command's
            # length while cutting chunks from its longer pickle (syncobj.py:1282): a middle chunk can be marked as the
            # last, and the follower's tick fails on the truncated pickle (seen at 2,500+ agents, bench.scale). Group
            # commit makes entries of up to a few MiB common (one allocation run at 10,000 agents is 3.4 MB), so no
            # entry below this is chunked.
            appendEntriesBatchSizeBytes=APPEND_ENTRIES_BYTES,
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
            password=tuning.secret,  # authenticates (and encrypts) every Raft frame: "peer authentication" above
            # Listen where --raft says, as --http does: without bindAddress pysyncobj binds 0.0.0.0 (transport.py,
            # _createServer), so `--raft 127.0.0.1:P` (drover local) or `--raft 10.0.0.11:5150` was open on every
            # interface, past a firewall rule written for the address given.
            bindAddress=self_addr,
        )
        if tuning.secret is not None and not pysyncobj.encryptor.HAS_CRYPTO:
            raise ImportError("a Raft secret needs the 'cryptography' package (a dependency of drover)")
        self._peers = peers
        self._sync: SyncObj | None = None
        self.fsync_journal = tuning.fsync_journal

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        """Start replicating; committed batches arrive on `queue` as (first_index, Batch), in order."""
        self._loop, self._queue = loop, queue

        def sink(first: int, batch: ev.Batch | Exception) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (first, batch))

        self.start_with_sink(sink)

    def start_with_sink(self, sink: Callable[[int, ev.Batch | Exception], None]) -> None:
        """Start replicating; `sink(first_index, batch)` is called from the Raft thread, in log order."""
        self._log.sink = sink
        if self.fsync_journal:
            _install_journal_hook()
            dump = self._conf.fullDumpFile
            # Looked up at start so tests can substitute a subclass of DurableFileJournal.
            _DURABLE_JOURNALS[self._conf.journalFile] = lambda path: DurableFileJournal(path, dump)
        else:
            _DURABLE_JOURNALS.pop(self._conf.journalFile, None)
        self._sync = _SteadySyncObj(self.self_addr, self._peers, conf=self._conf, consumers=[self._log])
        if self._conf.password is not None and getattr(self._sync, "encryptor", None) is None:
            self.stop()  # pysyncobj changed: do not run unauthenticated while the operator asked for a secret
            raise RuntimeError("pysyncobj did not enable encryption for the Raft secret")

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

    def tick_lag(self) -> dict:
        """How late the Raft tick thread ran since it started: the longest gap (s) and how many gaps exceeded half
        the minimum election timeout."""
        sync = self._sync
        if not isinstance(sync, _SteadySyncObj):
            return {"max_s": 0.0, "over_half_election_timeout": 0}
        return {"max_s": round(max(0.0, sync.tick_lag_max), 4), "over_half_election_timeout": sync.tick_lag_over}

    def tail(self) -> list[tuple[int, bytes]]:
        return list(self._log.tail)

    async def tail_entries(self) -> list[tuple[int, bytes]]:
        """The bounded tail of recent entries (what MasterServer._fill_gap needs); async like RaftProcess's."""
        return self.tail()

    def status(self) -> dict:
        return {} if self._sync is None else dict(self._sync.getStatus())

    # -- proposing ---------------------------------------------------------------------------
    async def propose(self, batch: ev.Batch, timeout: float = 5.0) -> int:
        """Replicate a batch; returns the index of its first event once committed and applied here."""
        return await self.propose_entry(ev.encode_batch(batch), batch.term, timeout)

    def propose_entry(self, data: bytes, term: int, timeout: float = 5.0) -> asyncio.Future:
        """Replicate an encoded Raft entry (`ev.encode_entry`) without waiting: a future of the index of its first
        event once committed and applied here, or of ProposalFailed. Entries proposed one after another from the
        loop thread reach the log in that order (pysyncobj's command queue is FIFO), or fail."""
        assert self._loop is not None and self._sync is not None
        fut: asyncio.Future = self._loop.create_future()
        loop = self._loop

        def fail(why: str) -> None:
            if not fut.done():
                fut.set_exception(ProposalFailed(why))

        def done(result, error) -> None:
            loop.call_soon_threadsafe(settle_proposal, fut, result, error, term)

        timer = loop.call_later(timeout, fail, f"raft append not committed within {timeout}s")
        fut.add_done_callback(lambda _: timer.cancel())
        self._log.append(data, callback=done)
        return fut
