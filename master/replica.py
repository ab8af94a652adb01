"""A master replica's engine: the log, the store, the fold, and (when leading) decisions and effects.

Every replica runs the applier: committed batches come off the Raft log, are
written to SQLite and folded into `state`. The leader takes decisions through
its pipeline (master/pipeline.py): a decision is staged synchronously (folded
into `state` at once, so the next decision sees it), committed in a group with
others (one Raft entry, one fsync), and only then answered and turned into
effects (messages to frameworks and agents). Wall-clock time and new IDs are
read here, at the edge, and written into the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import structlog

from drover.security.acls import ACLs, OPEN
from drover.security.credentials import Credentials
from eventstore import events as ev
from eventstore.raftlog import ProposalFailed, RaftLog, RaftTuning
from eventstore.raftproc import RaftProcess
from eventstore.store import STORE_FILE, AsyncEventStore
from master import effects as fx
from master.allocation import decide_offers
from master.core import ReplicaCore
from master.allocator import AllocatorConfig
from master.decide import DecideConfig
from master.decide.timers import TimersReply, decide_disconnect, decide_timers
from master.limits import Limits
from master.metrics import MasterMetrics
from master.pipeline import Group, Staged, take_group
from master.state import State, apply, decode_snapshot, encode_snapshot, state_hash, transition

log = structlog.get_logger("drover.master")


@dataclass
class Peer:
    raft: str
    http: str


@dataclass
class MasterConfig:
    id: str
    http: str  # host:port this replica serves HTTP on
    raft: str  # host:port this replica speaks Raft on
    peers: list[Peer]  # the other replicas
    data_dir: Path
    leader_address: str | None = None  # an address only the current leader listens on (a floating endpoint)
    heartbeat_interval: float = 15.0
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    # A framework whose stream was lost because the leader changed gets at least this long to re-subscribe.
    framework_failover_grace: float = 60.0
    raft_tuning: RaftTuning = field(default_factory=RaftTuning)
    version: str = "1.11.0"  # the Mesos API level we speak; clients parse it as digits and dots
    snapshot_every: int = 10_000  # events between state snapshots (with their hash) in the store
    # Agent health (Mesos's --agent_ping_timeout / --max_agent_ping_timeouts): agents PING the leader every
    # `agent_ping_timeout`; one silent (or disconnected) for timeout x max is marked unreachable.
    agent_ping_timeout: float = 15.0
    max_agent_ping_timeouts: int = 5
    # Mesos's --agent_reregister_timeout: after a leader change, an agent not heard from since the election gets
    # this long to re-register (all agents reconnect at once after a failover) before it is marked unreachable.
    agent_reregister_timeout: float = 600.0
    limits: Limits = field(default_factory=Limits)
    # Raft entries the leader has in flight at once (master/pipeline.py); decisions staged meanwhile are grouped.
    pipeline_depth: int = 2
    raft_process: bool = True  # pysyncobj in a child process (eventstore/raftproc.py); False: a thread of this one
    # The trust boundary (docs/security.md): who may call (None: nobody is authenticated, the cluster is open)
    # and what each principal may do (Mesos-format ACLs; OPEN allows everything).
    credentials: Credentials | None = field(default=None, repr=False)
    acls: ACLs = OPEN
    # HTTPS on every HTTP site of the replica (its own address and the leader address): the certificate chain and
    # its key, PEM files (docs/tls.md). None: plain HTTP. Every replica of a cluster serves the same scheme.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def agent_unreachable_after(self) -> float:
        return self.agent_ping_timeout * self.max_agent_ping_timeouts

    def decide_config(self) -> DecideConfig:
        """The part of this configuration the pure deciders see."""
        return DecideConfig(allocation_interval=self.allocator.allocation_interval,
                            framework_failover_grace=self.framework_failover_grace,
                            agent_unreachable_after=self.agent_unreachable_after,
                            agent_reregister_timeout=self.agent_reregister_timeout, limits=self.limits,
                            acls=self.acls, authenticate=self.credentials is not None)


class NotLeader(Exception):
    pass


def _fail_with(follower: asyncio.Future, f: asyncio.Future) -> None:
    """An empty decision chained to `f` fails with it (then it is never released)."""
    if not follower.done() and not f.cancelled() and f.exception() is not None:
        follower.set_exception(f.exception())


def _retrieved(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()


def _in_core(name: str) -> property:
    """A MasterServer attribute kept in its ReplicaCore (master/core.py), read and written through."""
    return property(lambda self: getattr(self.rc, name), lambda self, value: setattr(self.rc, name, value),
                    doc=f"ReplicaCore.{name}")


class MasterServer:
    state = _in_core("state")
    committed_index = _in_core("committed_index")
    serving = _in_core("serving")
    serving_term = _in_core("serving_term")
    serving_epoch = _in_core("serving_epoch")
    agent_seen = _in_core("agent_seen")
    link_generation = _in_core("link_generation")

    def __init__(self, config: MasterConfig):
        self.config = config
        self.rc = ReplicaCore()  # the sans-IO core (master/core.py); the attributes below delegate to it
        self.store = AsyncEventStore(config.data_dir / STORE_FILE, durable=config.raft_tuning.fsync_journal)
        # pysyncobj in a process of its own by default (eventstore/raftproc.py: the master's GIL starved its ticks).
        self.raft: RaftLog | RaftProcess
        if config.raft_process:
            self.raft = RaftProcess(config.raft, [p.raft for p in config.peers], config.data_dir / "raft",
                                    config.raft_tuning)
        else:
            self.raft = RaftLog(config.raft, [p.raft for p in config.peers], config.data_dir / "raft",
                                config.raft_tuning)
        self.http_of_raft = {p.raft: p.http for p in config.peers}
        self.http_of_raft[config.raft] = config.http
        self._queue: asyncio.Queue = asyncio.Queue()
        self._applied = asyncio.Condition()
        self._decide_lock = asyncio.Lock()  # leadership transitions only; decisions need no lock (pipeline.py)
        # The pipeline. On the leader `state` runs ahead of the log by what is staged or in flight; everywhere
        # `committed_index` is the last committed event folded here (and stored): both in `rc`.
        self._staged: deque[Staged] = deque()
        self._inflight: deque[Group] = deque()
        self._inflight_ids: set[str] = set()  # their proposal ids: the Raft process skips decoding these
        if isinstance(self.raft, RaftProcess):
            self.raft.own_proposals = self._inflight_ids
        self._staged_ready = asyncio.Event()
        self._inflight_space = asyncio.Event()
        self._rebuild_needed = False  # `state` holds events that may never be committed: rebuild it from the store
        self._state_suspect = False  # ... or a fold failed half way: rebuild even at the committed index
        # Counters for benchmarks and /drover/status: groups (Raft entries) committed, decisions and events in them.
        self.pipeline_counts = {"entries": 0, "decisions": 0, "events": 0}
        self.framework_streams: dict = {}  # framework_id -> RecordStream
        self.agent_links: dict = {}  # agent_id -> RecordStream
        self._tasks: list[asyncio.Task] = []
        self._leader_tasks: list[asyncio.Task] = []
        self._alloc_wakeup = asyncio.Event()
        self._last_snapshot = 0
        self._pending_triggers: list[tuple[str, str | None]] = []
        self.on_serving_change = None  # callback(serving: bool), set by the HTTP layer
        # Live readers of the committed history (GET /api/v1/events, operator SUBSCRIBE): each bounded queue
        # gets every batch this replica folds, as a list of Envelopes. See _notify_listeners.
        self.event_listeners: set[asyncio.Queue] = set()
        self.started_at = time.time()
        self.elected_at: float | None = None
        self.failed: str | None = None  # why this replica stopped applying (its /health then answers 503)
        # Counted at this class's IO edges (committed batches, the commit path, allocation runs) and read from it
        # at scrape time (master/metrics.py); the fold and the deciders know nothing of them.
        self.metrics = MasterMetrics()
        self.metrics.bind(self)

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        # Rebuild state from our own history first; the Raft journal then only adds what is newer.
        self.state = await self._state_from_store()
        self.committed_index = self.state.index
        self._last_snapshot = await self.store.last_snapshot_index()
        log.info("state recovered from store", index=self.state.index, replica=self.config.id)
        try:
            self.raft.start(asyncio.get_running_loop(), self._queue)
        except BaseException:
            # Close the store, or its (non-daemon) SQLite thread keeps the process alive after the error:
            # a replica that can never join the Raft cluster would hang instead of exiting.
            await self.store.close()
            raise
        self._tasks.append(asyncio.create_task(self._applier(), name="applier"))
        self._tasks.append(asyncio.create_task(self._leadership_watch(), name="leadership"))

    async def _state_from_store(self) -> State:
        """The state the store's committed events make: from the latest snapshot whose hash checks out, then the
        events after it."""
        state = State()
        snap = await self.store.latest_snapshot()
        if snap is not None:
            idx, digest, data = snap
            restored = decode_snapshot(data)
            if restored.index == idx and state_hash(restored) == digest:
                state = restored
            else:
                log.warning("ignoring a snapshot whose hash does not match", index=idx)
        start = state.index + 1
        while True:
            envs = await self.store.read(start, 5000)
            if not envs:
                break
            for env in envs:
                apply(state, env)
            start = envs[-1].index + 1
        return state

    async def stop(self) -> None:
        await self._step_down("shutdown")
        for q in list(self.event_listeners):  # end the live event streams, or they hold up the HTTP shutdown
            self.drop_listener(q)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.raft.stop()
        await self.store.close()

    # ---- applying committed batches -------------------------------------------------------------
    async def _applier(self) -> None:
        while True:
            first, batch = await self._queue.get()
            try:
                if self._rebuild_needed and not self.serving:
                    await self._rebuild_state()
                if batch is None:  # only a wake-up (a step-down asks for the rebuild above)
                    continue
                if isinstance(batch, Exception):  # an entry this build cannot decode (raftlog._Log.append)
                    raise batch
                await self._apply_batch(first, batch)
            except Exception as e:
                # Never for a committed event (the commit gate and a total fold see to that); if it happens anyway,
                # this replica's state is no longer the log's: it must not serve or lead on it. It leaves the Raft
                # cluster (the others elect a leader without it) and /health says why, until an operator acts.
                self.failed = f"applying the batch at index {first} failed: {type(e).__name__}: {e}"
                log.exception("applying a committed batch failed; this replica stops applying and leaves Raft",
                              first=first)
                async with self._applied:
                    self._applied.notify_all()  # callers waiting for their commit get a 503 now
                await self._step_down("applier failed")
                self.raft.stop()
                return

    async def _apply_batch(self, first: int, batch: ev.Batch | ev.UndecodedEntry) -> None:
        if self._inflight and batch.proposal == self._inflight[0].proposal:
            await self._apply_own(first, batch.event_count, self._inflight[0])
            return
        if isinstance(batch, ev.UndecodedEntry):  # ours, but no longer in flight (a step-down meanwhile)
            batch = batch.decode()
        if self.serving or self.state.index != self.committed_index:
            # While serving, only our own entries can come (fencing); otherwise, or if our state holds staged events
            # the log will not bring back, what is staged or in flight will not be committed as decided. Stop
            # serving; the state is rebuilt from the store first (a no-op if nothing was staged).
            await self._step_down(f"the log holds an entry at index {first} this leader did not propose")
            await self._rebuild_state()
        if first > self.state.index + 1:
            await self._fill_gap(first)
        envs = batch.envelopes(first)
        skip = sum(1 for e in envs if e.index <= self.state.index)
        envs = envs[skip:]
        if not envs:
            return
        # The bytes stored are the bytes folded: the Raft entry's own event payloads (one codec, no re-encoding).
        await self.store.append(envs, batch.payloads[skip:] if batch.payloads else None)
        transitions = []
        for env in envs:
            if (t := transition(self.state, env.event)) is not None:  # the task's state before the fold
                transitions.append(t)
            apply(self.state, env)
        self.committed_index = self.state.index
        self._notify_listeners(envs)  # right after the fold, no await in between: see _notify_listeners
        self.metrics.observe_committed(envs, transitions)
        await self._after_commit()

    async def _apply_own(self, first: int, count: int, group: Group) -> None:
        """A group this leader proposed is committed: its events are already folded (staged); store them, then
        let its decisions out, in log order. It stays in `_inflight` until stored, so a failure meanwhile fails its
        callers too (_fail_pipeline)."""
        if first != group.first or count != group.last - group.first + 1:
            # Cannot happen while we serve (our entries reach the log in order, or the pipeline breaks); if it
            # does, the state is not the log's.
            raise RuntimeError(f"own entry committed at {first} (+{count}), staged at {group.first}")
        await self.store.append(group.envs, group.payloads)
        if self._inflight and self._inflight[0] is group:
            self._inflight.popleft()
            self._inflight_ids.discard(group.proposal)
            self._inflight_space.set()
        self.committed_index = group.last
        self._notify_listeners(group.envs)
        self.metrics.observe_committed(group.envs, group.transitions)
        if group.proposed_at:
            self.metrics.commit_seconds.observe(time.monotonic() - group.proposed_at)
        counts = self.pipeline_counts
        counts["entries"] += 1
        counts["decisions"] += len(group.decisions)
        counts["events"] += count
        for d in group.decisions:
            self._release(d)
        await self._after_commit()

    def _release(self, d: Staged) -> None:
        """A staged decision is committed: its effects, its messages and callbacks (only while serving: a
        stepped-down leader's streams are closed), then its waiter."""
        if self.serving:
            self._execute(d.effects)
            self._execute(d.messages)
            for fn in d.then:
                try:
                    fn()
                except Exception:
                    log.exception("a decision's follow-up failed", first=d.first)
        if not d.done.done():
            d.done.set_result(d.first)

    async def _after_commit(self) -> None:
        # Replay to any index starts from the nearest snapshot instead of from 0. Only of a state that is exactly
        # the log's (on a busy leader, staged events run ahead: its snapshot waits for a quiet moment).
        if self.committed_index >= self._last_snapshot + self.config.snapshot_every \
                and self.state.index == self.committed_index and not self._state_suspect:
            await self.store.write_snapshot(self.state.index, state_hash(self.state), encode_snapshot(self.state))
            self._last_snapshot = self.state.index
        async with self._applied:
            self._applied.notify_all()

    async def _rebuild_state(self) -> None:
        """Drop what was staged but not committed: the state again from the store (committed events only)."""
        self._rebuild_needed = False
        if self.state.index == self.committed_index and not self._state_suspect:
            return
        self._state_suspect = False
        log.info("rebuilding the state from the store", staged_to=self.state.index, committed=self.committed_index)
        self.state = await self._state_from_store()
        self.committed_index = self.state.index

    def _notify_listeners(self, envs: list[ev.Envelope]) -> None:
        """Hand a folded batch to every live event listener, never blocking the applier.

        Called with no await between the fold and this call, so a listener registered together with a
        look at `state` (in one synchronous step) gets exactly the batches after `state.index`. A listener
        whose queue is full is too slow: it is dropped, its queue emptied and ended with `None` (its
        stream then closes; an /api/v1/events client resumes with ?from=<last index + 1>)."""
        for q in list(self.event_listeners):
            try:
                q.put_nowait(envs)
            except asyncio.QueueFull:
                self.drop_listener(q)

    def drop_listener(self, q: asyncio.Queue) -> None:
        """Stop feeding an event listener; its reader gets `None` next, and ends its stream."""
        self.event_listeners.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)

    async def _fill_gap(self, first: int) -> None:
        # Batches folded into pysyncobj's dump before they reached SQLite come back from its bounded tail.
        for tail_first, data in await self.raft.tail_entries():
            batch = ev.decode_batch(data)
            if tail_first + len(batch.events) - 1 > self.state.index and tail_first < first:
                await self._apply_batch(tail_first, batch)
        if first > self.state.index + 1:
            raise RuntimeError(f"event store is missing indexes {self.state.index + 1}..{first - 1}")

    def _after_fold(self, env: ev.Envelope) -> None:
        e = env.event
        if isinstance(e, ev.FrameworkSubscribed):
            self.request_allocation("framework_added")
        elif isinstance(e, (ev.AgentRegistered, ev.AgentReregistered)):
            self.request_allocation("agent_added", e.agent_id)
        elif isinstance(e, ev.RolesRevived):
            self.request_allocation("revive")

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Until `index` is folded here. NotLeader (a 503 to callers: outcome unknown) if it is not within
        `timeout`, or if this replica's applier failed meanwhile."""
        try:
            async with self._applied:
                await asyncio.wait_for(
                    self._applied.wait_for(lambda: self.committed_index >= index or self.failed is not None), timeout)
        except asyncio.TimeoutError:
            raise NotLeader(f"index {index} was not applied here within {timeout} s") from None
        if self.committed_index < index:
            raise NotLeader(f"this replica stopped applying the log: {self.failed}")

    # ---- effects ----------------------------------------------------------------------------------
    def _execute(self, effects: list[fx.Effect]) -> None:
        for e in effects:
            if isinstance(e, fx.ToFramework):
                self.send_framework(e.framework_id, e.event)
            else:
                self.send_agent(e.agent_id, e.message)

    def send_framework(self, framework_id: str, event: dict) -> None:
        stream = self.framework_streams.get(framework_id)
        if stream is not None:
            stream.send(event)

    def send_agent(self, agent_id: str, message: dict) -> None:
        link = self.agent_links.get(agent_id)
        if link is not None:
            link.send(message)

    # ---- deciding ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self.rc.now(time.time())

    def stage(self, events: list[ev.Event], *, ts: float | None = None, messages: Iterable[fx.Effect] = (),
              then: Callable[[], None] | None = None) -> Staged:
        """Record a decision taken on `state` just now (no await since): its events are folded into `state` at
        once and committed in a group with others; `messages` (the decider's) and `then` run once they are
        committed, in log order, after the events' effects (more may be appended to the returned `then` before
        the caller's next await). Await `committed()` for the first index.

        NotLeader if this replica is not serving; InvalidEvent (nothing changed) if the commit gate refuses one."""
        if not self.serving or self.failed is not None:
            raise NotLeader()
        payloads = [ev.encode_event(e) for e in events]  # the commit gate, before anything changes
        ts = self.now() if ts is None else max(ts, self.state.ts)  # a decision's time never runs backwards
        d = Staged(envs=[], payloads=payloads, effects=[], messages=list(messages),
                   done=asyncio.get_running_loop().create_future(), then=[then] if then is not None else [])
        d.done.add_done_callback(_retrieved)  # a failure nobody awaits (e.g. a timer's) is not an error to log
        try:
            for e in events:
                env = ev.Envelope(index=self.state.index + 1, term=self.serving_term, ts=ts, event=e)
                d.effects += fx.plan(self.state, env)
                if (t := transition(self.state, e)) is not None:  # the task's state before the fold (a metric)
                    d.transitions.append(t)
                apply(self.state, env)
                d.envs.append(env)
                self._after_fold(env)
        except Exception as err:
            # Never for an event the gate admits (the fold is total: tests/test_fold_total.py). The state may be
            # half changed and nothing of this decision is committed: stop serving and rebuild from the store.
            log.exception("folding a staged decision failed; rebuilding the state from the store")
            self._rebuild_needed = self._state_suspect = True
            if self._stop_serving(f"folding a staged decision failed: {type(err).__name__}: {err}") \
                    and self.on_serving_change:
                asyncio.ensure_future(self.on_serving_change(False))
            raise NotLeader(f"this decision could not be folded: {type(err).__name__}") from None
        if d.envs:
            self._staged.append(d)
            self._staged_ready.set()
            return d
        # Nothing to commit: let it out after what was decided before it, or now.
        last = self._staged[-1] if self._staged else self._inflight[-1].decisions[-1] if self._inflight else None
        if last is None:
            # On the next turn of the loop, so a caller can still add `then` callbacks (see below).
            asyncio.get_running_loop().call_soon(self._release, d)
        else:
            last.then.append(partial(self._release, d))
            last.done.add_done_callback(partial(_fail_with, d.done))
        return d

    async def committed(self, d: Staged) -> int:
        """The index of the decision's first event once it is committed (0 if it had none). NotLeader if it may
        not be (the outcome is then unknown: a 503 to callers)."""
        return await asyncio.shield(d.done)

    async def commit(self, events: list, ts: float | None = None) -> int:
        """Stage events and wait until they are committed: the index of the first."""
        return await self.committed(self.stage(events, ts=ts))

    async def _committer(self) -> None:
        """The leader's group commit: whatever is staged while earlier entries are in flight goes out as one."""
        while True:
            if not self._staged:
                self._staged_ready.clear()
                await self._staged_ready.wait()
                continue
            if len(self._inflight) >= self.config.pipeline_depth:
                self._inflight_space.clear()
                await self._inflight_space.wait()
                continue
            group = Group(proposal=uuid.uuid4().hex, decisions=take_group(self._staged), proposed_at=time.monotonic())
            self._inflight.append(group)
            self._inflight_ids.add(group.proposal)
            proposed = self.raft.propose_entry(group.entry(self.serving_term, self.serving_epoch), self.serving_term)
            proposed.add_done_callback(partial(self._proposed, group))

    def _proposed(self, group: Group, fut: asyncio.Future) -> None:
        error = fut.exception()
        if error is not None and self.serving and any(g is group for g in self._inflight):
            # Later entries were decided on this one's events: the pipeline is broken. Stop serving at once, before
            # anything else is proposed (the state is rebuilt from the store); callers get a 503, the outcome unknown
            # (the entry may still commit; later ones then only at their own index: raftlog._Log).
            log.warning("proposal failed", error=str(error), first=group.first, events=group.last - group.first + 1)
            if self._stop_serving(f"proposal failed: {error}") and self.on_serving_change:
                asyncio.ensure_future(self.on_serving_change(False))

    def _fail_pipeline(self, why: str) -> None:
        """Every decision not yet committed gets NotLeader; `state` is rebuilt from the store by the applier."""
        pending = [d for g in self._inflight for d in g.decisions] + list(self._staged)
        self._inflight.clear()
        self._inflight_ids.clear()
        self._staged.clear()
        self._inflight_space.set()
        for d in pending:
            if not d.done.done():
                d.done.set_exception(NotLeader(why))
        if self.state.index != self.committed_index or self._state_suspect:
            self._rebuild_needed = True
            self._queue.put_nowait((0, None))

    async def _commit_barrier(self, events: list, term: int) -> int:
        """Commit outside the pipeline, before serving: propose and wait until the applier folded it."""
        batch = ev.Batch(term=term, ts=self.now(), events=events, proposal=uuid.uuid4().hex)
        try:
            first = await self.raft.propose(batch)
        except ProposalFailed as e:
            log.warning("proposal failed", error=str(e))
            raise NotLeader(str(e)) from None
        await self.wait_applied(first + len(events) - 1)
        return first

    def new_link(self, kind: str, peer_id: str) -> int:
        return self.rc.new_link(kind, peer_id)

    def latest_link(self, kind: str, peer_id: str, gen: int) -> bool:
        return self.rc.latest_link(kind, peer_id, gen)

    def agent_heard(self, agent_id: str) -> None:
        self.rc.agent_heard(agent_id, time.time())

    async def record_disconnect(self, *, framework_id: str | None = None, agent_id: str | None = None) -> None:
        """A framework's stream or an agent's link broke: rescind what was offered through it and record it
        (master.decide.timers.decide_disconnect)."""
        if not self.serving:
            return
        decision = decide_disconnect(self.state, framework_id=framework_id, agent_id=agent_id)
        if not decision.events:
            return  # unknown, or already disconnected
        if agent_id is not None:
            self.agent_heard(agent_id)  # a disconnected agent gets the whole ping timeout to come back
        try:
            await self.commit(decision.events)
        except NotLeader:
            return
        log.info("peer disconnected", framework_id=framework_id, agent_id=agent_id)

    # ---- leadership --------------------------------------------------------------------------------
    def leader_http(self) -> str | None:
        if self.serving:
            return self.config.http
        leader = self.raft.leader
        if leader is None or leader == self.config.raft:
            return None
        return self.http_of_raft.get(leader)

    async def _leadership_watch(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            try:
                is_leader, term = self.raft.is_leader, self.raft.term
                if is_leader and not self.serving:
                    await self._become_leader(term)
                elif self.serving and (not is_leader or term != self.serving_term):
                    await self._step_down("lost leadership")
            except NotLeader:
                continue
            except Exception:
                log.exception("leadership transition failed")

    async def _become_leader(self, term: int) -> None:
        async with self._decide_lock:
            # The barrier: once our LeaderElected is folded, every earlier entry is folded too.
            epoch = await self._commit_barrier([ev.LeaderElected(
                leader_id=self.config.raft, http=self.config.http, term=term,
                config=self.config.allocator.to_record())], term)
            if self.state.cluster_id is None:
                await self._commit_barrier([ev.ClusterCreated(cluster_id=str(uuid.uuid4()))], term)
            # Streams of an earlier serving period are over, even one registered in a race with the step-down.
            for stream in list(self.framework_streams.values()) + list(self.agent_links.values()):
                stream.close("leader changed")
            self.framework_streams.clear()
            self.agent_links.clear()
            self.serving, self.serving_term, self.serving_epoch = True, term, epoch
            self.agent_seen.clear()
            self.elected_at = time.time()
        log.info("serving as leader", replica=self.config.id, term=term, index=self.state.index)
        self._leader_tasks = [asyncio.create_task(self._ticker(), name="ticker"),
                              asyncio.create_task(self._committer(), name="committer")]
        if self.on_serving_change:
            await self.on_serving_change(True)

    async def _step_down(self, why: str) -> None:
        if self._stop_serving(why) and self.on_serving_change:
            await self.on_serving_change(False)

    def _stop_serving(self, why: str) -> bool:
        """End this serving period now (the HTTP layer is told by _step_down); False if it was not serving."""
        if not self.serving:
            return False
        self.serving = False
        self._fail_pipeline(f"stopped leading: {why}")
        # Allocation triggers belong to this serving period (a next one starts with a fresh periodic run).
        self._pending_triggers.clear()
        self._alloc_wakeup.clear()
        log.info("stopped serving", replica=self.config.id, why=why)
        for t in self._leader_tasks:
            t.cancel()
        self._leader_tasks = []
        for s in list(self.framework_streams.values()) + list(self.agent_links.values()):
            s.close("leader stepped down")
        self.framework_streams.clear()
        self.agent_links.clear()
        return True

    # ---- the leader's clock: timeouts and allocation ------------------------------------------------
    def request_allocation(self, trigger: str, agent_id: str | None = None) -> None:
        """An event-triggered run: over one agent (it was added) or over all (framework added, revive)."""
        self._pending_triggers.append((trigger, agent_id))
        self._alloc_wakeup.set()

    async def _ticker(self) -> None:
        interval = self.config.allocator.allocation_interval
        loop = asyncio.get_running_loop()
        next_periodic = loop.time() + interval
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._alloc_wakeup.wait(), max(0.0, next_periodic - loop.time()))
            self._alloc_wakeup.clear()
            agents: list[str] | None = None
            if loop.time() >= next_periodic:
                trigger = "periodic"
                next_periodic = loop.time() + interval
            else:
                # Triggers that arrived together are merged into one run, as Mesos does.
                pending = self._pending_triggers or [("event", None)]
                trigger = pending[0][0]
                if all(a is not None for _, a in pending):
                    agents = sorted({a for _, a in pending})
            self._pending_triggers.clear()
            try:
                await self.run_timers_and_allocate(trigger, agents)
            except NotLeader:
                return
            except Exception:
                log.exception("allocation run failed")

    async def run_timers_and_allocate(self, trigger: str, agents: list[str] | None = None) -> None:
        """One tick: the timers' decision (master.decide.timers.decide_timers, given this leader's memory of when
        each agent was last heard from), then an allocation run on the state those events made."""
        if not self.serving:
            raise NotLeader()
        now = self.now()
        decision = decide_timers(self.state, now, self.config.decide_config(), self.agent_seen)
        reply = decision.reply
        assert isinstance(reply, TimersReply)
        for why in reply.skipped:
            log.error("a timer's event would be refused by the commit gate; left out", why=why)
        staged = []
        if decision.events:
            try:
                staged.append(self.stage(decision.events, ts=now))
            except ev.InvalidEvent:
                # A bug, never an input (decide_timers checks the gate's rules across fields, not every value
                # rule). Stage what the gate takes and leave out the rest, loudly; the allocation run still happens
                # (otherwise the same events come back every tick and no offer is made until the leader changes).
                good = []
                for event in decision.events:
                    try:
                        ev.encode_event(event)
                        good.append(event)
                    except ev.InvalidEvent as e:
                        log.error("a timer's event is refused by the commit gate; left out",
                                  event_type=ev.event_type(event), error=str(e))
                if good:
                    staged.append(self.stage(good, ts=now))
        for agent_id in reply.unreachable:
            log.warning("agent unreachable", agent_id=agent_id,
                        silent_for=round(now - self._agent_last_seen(agent_id), 3))
            self.agent_seen.pop(agent_id, None)

            def unlink(agent_id: str = agent_id) -> None:
                # Drop its link: if it is alive after all, it sees the stream end and re-registers. Once its
                # AGENT_UNREACHABLE is committed, as every effect of a decision (nothing leaves the leader earlier).
                link = self.agent_links.pop(agent_id, None)
                if link is not None:
                    link.close("unreachable")

            if staged:
                staged[0].then.append(unlink)
            else:
                unlink()
        # The allocation run sees the timers' events (staged): no wait for their commit.
        now = self.now()
        started = time.perf_counter()
        offers = decide_offers(self.state, now, trigger, agents)
        self.metrics.allocation_seconds.observe(time.perf_counter() - started)
        if offers is not None:
            try:
                staged.append(self.stage([offers], ts=now))
            except ev.InvalidEvent as e:
                # A bug, never an input: the deciders keep every value in bounds. Say so loudly; the run is
                # dropped (nothing staged) and the next one is taken afresh.
                log.error("the allocator decided an event the commit gate refuses", error=str(e))
        # Wait for the commit: runs do not pile up faster than the log takes them (triggers meanwhile merge).
        for d in staged:
            await self.committed(d)

    def _agent_last_seen(self, agent_id: str) -> float:
        return self.rc.agent_last_seen(agent_id)
