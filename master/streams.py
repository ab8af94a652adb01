"""Long-lived RecordIO event streams.

`RecordStream` (framework subscriptions, agent links): one writer task per
stream drains a queue, so producers never block on a slow client and each
record goes out as one HTTP chunk (naive clients rely on it). A stream ends
when the client goes away, when it is replaced (framework failover) or when
this replica stops leading.

`LiveStream` (streams of committed events: GET /api/v1/events, operator
SUBSCRIBE): written directly by the coroutine that produces the records.

An idle stream costs no CPU (issue 10: a leader holds thousands of agent links):
- its coroutine blocks on its queue, with no timeout;
- a client that goes away is heard from the transport (`watch_connection`: the
  connection's `connection_lost`), not by polling;
- heartbeats come from one timer per event loop for every stream
  (`HeartbeatWheel`), which wakes only when some stream's heartbeat is due.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref
from collections.abc import Callable
from typing import Protocol

import structlog
from aiohttp import web

from master import codec

log = structlog.get_logger("drover.streams")

_CLOSE = object()  # RecordStream: end after what is queued (ours: close(); or the client went away)
_WAKE = object()  # LiveStream: look again (heartbeat due, client gone, wake()); never returned to a caller

TICK = 0.1  # seconds: the heartbeat timer's resolution (a heartbeat may go out up to this much late)


# ---- hearing a client go away ---------------------------------------------------------------------------


class _Watcher(Protocol):
    def _connection_lost(self) -> None: ...


class _ConnectionWatch(asyncio.Protocol):
    """Stands between a connection's transport and aiohttp's protocol, forwarding every call, to tell the
    streams on that connection when it is lost.

    aiohttp tells a handler blocked on something other than the connection nothing when its client goes away
    (handler cancellation is off, and must stay off for the deciding handlers); before this, streams polled
    `transport.is_closing()` twice a second. `transport.set_protocol` is public asyncio API; the transport calls
    `connection_lost` on whatever protocol it holds, once, when the connection is gone (the client closed it or
    reset it, or we did). One watch per connection, kept for its lifetime (requests after a stream's, on a
    kept-alive connection, go through it unchanged)."""

    def __init__(self, inner: asyncio.Protocol):
        self.inner = inner
        self.watchers: weakref.WeakSet[_Watcher] = weakref.WeakSet()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            watchers = list(self.watchers)
            self.watchers.clear()
            for w in watchers:
                w._connection_lost()

    def __getattr__(self, name: str) -> object:
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def watch_connection(request: web.Request, watcher: _Watcher) -> bool:
    """Have `watcher._connection_lost()` called when `request`'s connection is lost. False if it already is
    (the watcher is not called then). If the connection cannot be watched (a buffered protocol: not aiohttp's
    today) this returns True and the stream finds out at its next write (at the latest, its next heartbeat)."""
    t = request.transport
    if t is None or t.is_closing():
        return False
    p = t.get_protocol()
    if not isinstance(p, _ConnectionWatch):
        if isinstance(p, asyncio.BufferedProtocol) or not isinstance(p, asyncio.Protocol):
            return True
        p = _ConnectionWatch(p)
        t.set_protocol(p)
    p.watchers.add(watcher)
    return True


def unwatch_connection(request: web.Request, watcher: _Watcher) -> None:
    t = request.transport
    p = t.get_protocol() if t is not None else None
    if isinstance(p, _ConnectionWatch):
        p.watchers.discard(watcher)


# ---- one timer for every stream's heartbeats -------------------------------------------------------------


class _Beating(Protocol):
    def _beat(self, now: float) -> None: ...


class HeartbeatWheel:
    """Wakes each stream when its heartbeat is due, with one timer for all of them.

    A stream asks to be called back at a time (`schedule`); callbacks are kept in slots of `tick` seconds (a
    hashed timer wheel with a heap of the non-empty slots), and one `loop.call_at` is armed for the earliest
    slot. So the loop wakes at most once per tick, only when some heartbeat is due, however many streams
    there are; a stream that writes meanwhile does not touch the wheel (it is rescheduled lazily, when its
    slot comes). A callback runs at the end of its slot: up to `tick` late, never early."""

    def __init__(self, tick: float = TICK):
        self.tick = tick
        self._slots: dict[int, list[_Beating]] = {}
        self._heap: list[int] = []  # the keys of _slots
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None
        self._firing = False
        self._fired_slot = -1
        self.wakeups = 0  # times the timer fired (tests)

    def schedule(self, stream: _Beating, when: float) -> None:
        slot = max(math.ceil(when / self.tick), self._fired_slot + 1)
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [stream]
            heapq.heappush(self._heap, slot)
            if not self._firing and (self._timer_slot is None or slot < self._timer_slot):
                self._arm(slot)
        else:
            bucket.append(stream)

    def pending(self) -> int:
        return sum(len(b) for b in self._slots.values())

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(slot * self.tick, self._fire)
        self._timer_slot = slot

    def _fire(self) -> None:
        self.wakeups += 1
        now = asyncio.get_running_loop().time()
        due = max(self._timer_slot or 0, math.floor(now / self.tick))  # a timer may run a hair early
        self._timer = self._timer_slot = None
        self._firing = True
        self._fired_slot = due
        try:
            while self._heap and self._heap[0] <= due:
                for stream in self._slots.pop(heapq.heappop(self._heap)):
                    try:
                        stream._beat(now)
                    except Exception:
                        log.exception("heartbeat failed", stream=type(stream).__name__)
        finally:
            self._firing = False
            if self._heap:
                self._arm(self._heap[0])


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeartbeatWheel] = weakref.WeakKeyDictionary()


def heartbeat_wheel() -> HeartbeatWheel:
    """The running loop's wheel."""
    loop = asyncio.get_running_loop()
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = HeartbeatWheel()
    return wheel


# ---- the streams -----------------------------------------------------------------------------------------


class RecordStream:
    """A framework's subscription or an agent's link. Its queue is bounded (`max_queue` records): a client that
    falls that far behind is dropped as if it had gone away (its handler records the disconnection, and the
    peer re-subscribes and is re-sent what is pending), so a slow or stalled reader cannot grow the leader's
    memory without bound.

    While `run` writes, a HEARTBEAT goes in the queue every `heartbeat` seconds (from the loop's
    HeartbeatWheel), whatever else is sent, as Mesos's master does."""

    def __init__(self, request: web.Request, response: web.StreamResponse, heartbeat: float, name: str,
                 max_queue: int = 100_000):
        self.request = request
        self.response = response
        self.heartbeat = heartbeat
        self.name = name
        self.max_queue = max_queue
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None  # None: the client went away (or was too slow: `overflowed`)
        self.overflowed = False
        self.client_gone = False  # its connection was lost
        self._ending = False  # _CLOSE is queued: no more heartbeats

    def send(self, obj: dict) -> None:
        if self.closed.is_set() or self.overflowed or self.client_gone:
            return
        if self.queue.qsize() >= self.max_queue:
            # Too slow: drop what is queued and end the stream; close_reason stays None, so the handler treats it
            # as a client that went away.
            self.overflowed = True
            self._end()
            return
        self.queue.put_nowait(obj)

    def close(self, reason: str, final: dict | None = None) -> None:
        """Close from our side, optionally after one last record (e.g. an ERROR event)."""
        if self.close_reason is None and not self.overflowed:
            self.close_reason = reason
        if final is not None:
            self.queue.put_nowait(final)
        self.queue.put_nowait(_CLOSE)
        self._ending = True

    def _end(self) -> None:
        """End now, dropping what is queued."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE)
        self._ending = True

    def _connection_lost(self) -> None:
        if not self.client_gone and not self.closed.is_set():
            self.client_gone = True
            self._end()

    def _beat(self, now: float) -> None:
        """From the heartbeat wheel."""
        if self._ending or self.closed.is_set() or self.client_gone:
            return  # over: leaves the wheel
        self.send(codec.ev_heartbeat())
        if not self._ending:
            heartbeat_wheel().schedule(self, now + self.heartbeat)

    async def run(self) -> None:
        """Write records until closed; returns when the stream is over."""
        try:
            if not watch_connection(self.request, self):
                self.client_gone = True
                return
            heartbeat_wheel().schedule(self, asyncio.get_running_loop().time() + self.heartbeat)
            while True:
                item = await self.queue.get()
                if item is _CLOSE or self.client_gone:
                    return
                await self.response.write(codec.recordio(item))
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
        finally:
            self._ending = True
            self.closed.set()
            unwatch_connection(self.request, self)


class StreamOver(Exception):
    """A LiveStream cannot go on: its client went away, or `idle_check` gave a reason to stop."""


class LiveStream:
    """A RecordIO stream written by the one coroutine that produces it (no queue of its own).

    Used by the streams of committed events (GET /api/v1/events, operator SUBSCRIBE): each write is
    awaited, so a slow client only slows its own coroutine, and the only buffer is the bounded listener
    queue the coroutine reads from (MasterServer.event_listeners), which the applier drops when full.
    `next_batch` waits on that queue, writing a HEARTBEAT whenever `heartbeat` seconds pass without a
    record, and ends (StreamOver) as soon as the client's connection is lost.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse, heartbeat: float):
        self.request = request
        self.response = response
        self.heartbeat = heartbeat
        self._next_beat = 0.0  # loop time: a heartbeat is due then if nothing is written before
        self._gone = False  # the connection was lost
        self._watched = False
        self._waiting: asyncio.Queue | None = None  # the queue next_batch is blocked on
        self._beat_due = False
        self._poke = False  # wake() was called
        self._scheduled = False  # in the heartbeat wheel

    async def send(self, obj: object) -> None:
        await self.send_bytes(codec.recordio(obj))

    async def send_bytes(self, record: bytes) -> None:
        """One already framed record, as one HTTP chunk."""
        try:
            await self.response.write(record)
        except (ConnectionError, RuntimeError) as e:
            raise StreamOver(f"client went away: {e}") from None
        self._next_beat = asyncio.get_running_loop().time() + self.heartbeat
        self._beat_due = False

    def client_gone(self) -> bool:
        t = self.request.transport
        return self._gone or t is None or t.is_closing()

    def wake(self) -> None:
        """Have a blocked `next_batch` look at its `idle_check` now (for the thing it checks to call)."""
        self._poke = True
        self._interrupt()

    def _interrupt(self) -> None:
        q, self._waiting = self._waiting, None
        if q is not None:
            try:
                q.put_nowait(_WAKE)
            except asyncio.QueueFull:
                pass  # it has items, so it is about to return anyway; the flags are read at the next call

    def _connection_lost(self) -> None:
        self._gone = True
        self._interrupt()

    def _beat(self, now: float) -> None:
        """From the heartbeat wheel."""
        self._scheduled = False
        if self._gone or self._waiting is None:
            return  # not idle in next_batch: the next wait schedules again
        if self._next_beat > now:
            self._schedule()  # written since: its heartbeat moved
            return
        self._beat_due = True
        self._interrupt()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            heartbeat_wheel().schedule(self, self._next_beat)

    async def next_batch(self, queue: asyncio.Queue, idle_check: Callable[[], str | None] | None = None):
        """The next item of `queue`, with heartbeats while waiting. `idle_check()` (optional) is asked while
        idle, when a heartbeat is due and whenever `wake()` is called; if it returns a reason the wait ends with
        StreamOver(reason)."""
        if not self._watched:
            self._watched = True
            if not watch_connection(self.request, self):
                self._gone = True
        loop = asyncio.get_running_loop()
        while True:
            while not queue.empty():
                item = queue.get_nowait()
                if item is not _WAKE:
                    return item
            if self.client_gone():
                raise StreamOver("client went away")
            due = self._beat_due or loop.time() >= self._next_beat
            if idle_check is not None and (due or self._poke):
                self._poke = False
                if why := idle_check():
                    raise StreamOver(why)
            if due:
                await self.send(codec.ev_heartbeat())
                continue
            self._waiting = queue
            self._schedule()
            try:
                item = await queue.get()
            finally:
                self._waiting = None
            if item is not _WAKE:
                return item
