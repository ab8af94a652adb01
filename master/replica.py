"""A master replica's engine: the log, the store, the fold, and (when leading) decisions and effects.

Every replica runs the applier: committed batches come off the Raft log, are
written to SQLite, folded into `state`, and, on the leader only, turned into
effects (messages to frameworks and agents). Decisions are taken by the leader
under `deciding()`: read the state, choose events, commit them, and wait until
they are folded, so the next decision sees them. Wall-clock time and new IDs
are read here, at the edge, and written into the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from eventstore import events as ev
from eventstore.raftlog import ProposalFailed, RaftLog, RaftTuning
from eventstore.store import STORE_FILE, AsyncEventStore
from master import effects as fx
from master.allocation import decide_offers
from master.allocator import AllocatorConfig
from master.decide import DecideConfig
from master.decide.timers import TimersReply, decide_disconnect, decide_timers
from master.limits import Limits
from master.state import State, apply, decode_snapshot, encode_snapshot, state_hash

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

    @property
    def agent_unreachable_after(self) -> float:
        return self.agent_ping_timeout * self.max_agent_ping_timeouts

    def decide_config(self) -> DecideConfig:
        """The part of this configuration the pure deciders see."""
        return DecideConfig(allocation_interval=self.allocator.allocation_interval,
                            framework_failover_grace=self.framework_failover_grace,
                            agent_unreachable_after=self.agent_unreachable_after,
                            agent_reregister_timeout=self.agent_reregister_timeout, limits=self.limits)


class NotLeader(Exception):
    pass


class MasterServer:
    def __init__(self, config: MasterConfig):
        self.config = config
        self.state = State()
        self.store = AsyncEventStore(config.data_dir / STORE_FILE, durable=config.raft_tuning.fsync_journal)
        self.raft = RaftLog(config.raft, [p.raft for p in config.peers], config.data_dir / "raft", config.raft_tuning)
        self.http_of_raft = {p.raft: p.http for p in config.peers}
        self.http_of_raft[config.raft] = config.http
        self._queue: asyncio.Queue = asyncio.Queue()
        self._applied = asyncio.Condition()
        self._decide_lock = asyncio.Lock()
        self.serving = False  # leader, and our LeaderElected is folded
        self.serving_term = 0
        self._serving_over: asyncio.Event | None = None  # set when this serving period ends
        self.framework_streams: dict = {}  # framework_id -> RecordStream
        self.agent_links: dict = {}  # agent_id -> RecordStream
        # Leader's memory, not history: when each agent was last heard from (any agent call: SUBSCRIBE, PING,
        # UPDATE) or its link broke. An agent absent here counts from this leader's election.
        self.agent_seen: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []
        self._leader_tasks: list[asyncio.Task] = []
        self._alloc_wakeup = asyncio.Event()
        self._last_snapshot = 0
        self._pending_triggers: list[str] = []
        self.on_serving_change = None  # callback(serving: bool), set by the HTTP layer
        # Live readers of the committed history (GET /api/v1/events, operator SUBSCRIBE): each bounded queue
        # gets every batch this replica folds, as a list of Envelopes. See _notify_listeners.
        self.event_listeners: set[asyncio.Queue] = set()
        self.started_at = time.time()
        self.elected_at: float | None = None
        self.failed: str | None = None  # why this replica stopped applying (its /health then answers 503)

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        # Rebuild state from our own history first (from the latest snapshot whose hash checks out);
        # the Raft journal then only adds what is newer.
        snap = await self.store.latest_snapshot()
        if snap is not None:
            idx, digest, data = snap
            restored = decode_snapshot(data)
            if restored.index == idx and state_hash(restored) == digest:
                self.state = restored
            else:
                log.warning("ignoring a snapshot whose hash does not match", index=idx)
        start = self.state.index + 1
        while True:
            envs = await self.store.read(start, 5000)
            if not envs:
                break
            for env in envs:
                apply(self.state, env)
            start = envs[-1].index + 1
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

    async def _apply_batch(self, first: int, batch: ev.Batch) -> None:
        if first > self.state.index + 1:
            await self._fill_gap(first)
        envs = [ev.Envelope(index=first + i, term=batch.term, ts=batch.ts, event=e) for i, e in enumerate(batch.events)]
        skip = sum(1 for e in envs if e.index <= self.state.index)
        envs = envs[skip:]
        if not envs:
            return
        # The bytes stored are the bytes folded: the Raft entry's own event payloads (one codec, no re-encoding).
        await self.store.append(envs, batch.payloads[skip:] if batch.payloads else None)
        for env in envs:
            planned = fx.plan(self.state, env) if self.serving else []
            apply(self.state, env)
            self._execute(planned)
            self._after_fold(env)
        self._notify_listeners(envs)  # right after the fold, no await in between: see _notify_listeners
        if self.state.index >= self._last_snapshot + self.config.snapshot_every:
            # Replay to any index starts from the nearest snapshot instead of from 0.
            await self.store.write_snapshot(self.state.index, state_hash(self.state), encode_snapshot(self.state))
            self._last_snapshot = self.state.index
        async with self._applied:
            self._applied.notify_all()

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
        for tail_first, data in self.raft.tail():
            batch = ev.decode_batch(data)
            if tail_first + len(batch.events) - 1 > self.state.index and tail_first < first:
                await self._apply_batch(tail_first, batch)
        if first > self.state.index + 1:
            raise RuntimeError(f"event store is missing indexes {self.state.index + 1}..{first - 1}")

    def _after_fold(self, env: ev.Envelope) -> None:
        e = env.event
        if not self.serving:
            return
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
                    self._applied.wait_for(lambda: self.state.index >= index or self.failed is not None), timeout)
        except asyncio.TimeoutError:
            raise NotLeader(f"index {index} was not applied here within {timeout} s") from None
        if self.state.index < index:
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
        # Never behind the log: a new leader whose clock lags must not make time run backwards.
        return max(time.time(), self.state.ts)

    @contextlib.asynccontextmanager
    async def deciding(self):
        async with self._decide_lock:
            if not self.serving:
                raise NotLeader()
            yield

    async def commit(self, events: list, ts: float | None = None, _barrier_term: int | None = None) -> int:
        """Commit events decided by this leader and wait until they are folded here. Call inside deciding().

        `ts` is the time the decision was taken at (it is recorded so replay can re-take it). The batch carries
        the term this replica serves in, so the log refuses it once a newer leader was elected (raftlog._Log)."""
        if not events:
            return self.state.index
        if _barrier_term is None and not self.serving:
            raise NotLeader()
        term = self.serving_term if _barrier_term is None else _barrier_term
        batch = ev.Batch(term=term, ts=self.now() if ts is None else ts, events=events, proposal=uuid.uuid4().hex)
        try:
            if _barrier_term is None and self._serving_over is not None:
                first = await self._propose_while_serving(batch, self._serving_over)
            else:
                first = await self.raft.propose(batch)
        except ProposalFailed as e:
            log.warning("proposal failed", error=str(e))
            raise NotLeader(str(e)) from None
        await self.wait_applied(first + len(events) - 1)
        return first

    async def _propose_while_serving(self, batch: ev.Batch, over: asyncio.Event) -> int:
        """Propose, but give up as soon as this replica stops leading: a leader cut off from its quorum steps down
        after leaderFallbackTimeout (~1 s), and its clients then get their 503 at once rather than after the
        proposal timeout, and go find the new leader. As after a timeout, the outcome is unknown: a quorum may
        already hold the entry, and then the new leader commits it ahead of its own LEADER_ELECTED; anything
        proposed later than that is fenced (raftlog._Log)."""
        prop = asyncio.ensure_future(self.raft.propose(batch))
        stop = asyncio.ensure_future(over.wait())
        try:
            done, _ = await asyncio.wait({prop, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if prop in done:
            return prop.result()
        prop.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it any more
        raise ProposalFailed("stopped leading while the proposal was pending")

    def agent_heard(self, agent_id: str) -> None:
        """A sign of life from an agent (it called us); chatter, so kept in memory only."""
        self.agent_seen[agent_id] = self.now()

    async def record_disconnect(self, *, framework_id: str | None = None, agent_id: str | None = None) -> None:
        """A framework's stream or an agent's link broke: rescind what was offered through it and record it
        (master.decide.timers.decide_disconnect)."""
        try:
            async with self.deciding():
                decision = decide_disconnect(self.state, framework_id=framework_id, agent_id=agent_id)
                if not decision.events:
                    return  # unknown, or already disconnected
                if agent_id is not None:
                    self.agent_heard(agent_id)  # a disconnected agent gets the whole ping timeout to come back
                await self.commit(decision.events)
                log.info("peer disconnected", framework_id=framework_id, agent_id=agent_id)
        except NotLeader:
            pass

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
            await self.commit([ev.LeaderElected(leader_id=self.config.raft, http=self.config.http, term=term,
                                                config=self.config.allocator.to_record())], _barrier_term=term)
            if self.state.cluster_id is None:
                await self.commit([ev.ClusterCreated(cluster_id=str(uuid.uuid4()))], _barrier_term=term)
            # Streams of an earlier serving period are over, even one registered in a race with the step-down.
            for stream in list(self.framework_streams.values()) + list(self.agent_links.values()):
                stream.close("leader changed")
            self.framework_streams.clear()
            self.agent_links.clear()
            self.serving, self.serving_term = True, term
            self._serving_over = asyncio.Event()
            self.agent_seen.clear()
            self.elected_at = time.time()
        log.info("serving as leader", replica=self.config.id, term=term, index=self.state.index)
        self._leader_tasks = [asyncio.create_task(self._ticker(), name="ticker")]
        if self.on_serving_change:
            await self.on_serving_change(True)

    async def _step_down(self, why: str) -> None:
        if not self.serving:
            return
        self.serving = False
        if self._serving_over is not None:
            self._serving_over.set()
        log.info("stopped serving", replica=self.config.id, why=why)
        for t in self._leader_tasks:
            t.cancel()
        self._leader_tasks = []
        for s in list(self.framework_streams.values()) + list(self.agent_links.values()):
            s.close("leader stepped down")
        self.framework_streams.clear()
        self.agent_links.clear()
        if self.on_serving_change:
            await self.on_serving_change(False)

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
        async with self.deciding():
            now = self.now()
            decision = decide_timers(self.state, now, self.config.decide_config(), self.agent_seen)
            reply = decision.reply
            assert isinstance(reply, TimersReply)
            for why in reply.skipped:
                log.error("a timer's event would be refused by the commit gate; left out", why=why)
            if decision.events:
                await self.commit(decision.events, ts=now)
            for agent_id in reply.unreachable:
                log.warning("agent unreachable", agent_id=agent_id,
                            silent_for=round(now - self._agent_last_seen(agent_id), 3))
                # Drop its link: if it is alive after all, it sees the stream end and re-registers.
                self.agent_seen.pop(agent_id, None)
                link = self.agent_links.pop(agent_id, None)
                if link is not None:
                    link.close("unreachable")
            now = self.now()
            offers = decide_offers(self.state, now, trigger, agents)
            if offers is not None:
                try:
                    await self.commit([offers], ts=now)
                except ev.InvalidEvent as e:
                    # A bug, never an input: the deciders keep every value in bounds. Say so loudly; the run is
                    # dropped (nothing committed) and the next one is taken afresh.
                    log.error("the allocator decided an event the commit gate refuses", error=str(e))

    def _agent_last_seen(self, agent_id: str) -> float:
        return max(self.agent_seen.get(agent_id, 0.0), self.state.elected_at or 0.0)
