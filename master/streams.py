"""Long-lived RecordIO event streams.

`RecordStream` (framework subscriptions, agent links): one writer task per
stream drains a queue, so producers never block on a slow client and each
record goes out as one HTTP chunk (naive clients rely on it). A stream ends
when the client goes away, when it is replaced (framework failover) or when
this replica stops leading.

`LiveStream` (streams of committed events: GET /api/v1/events, operator
SUBSCRIBE): written directly by the coroutine that produces the records.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from master import codec

_CLOSE = object()


class RecordStream:
    """A framework's subscription or an agent's link. Its queue is bounded (`max_queue` records): a client that
    falls that far behind is dropped as if it had gone away (its handler records the disconnection, and the
    peer re-subscribes and is re-sent what is pending), so a slow or stalled reader cannot grow the leader's
    memory without bound."""

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

    def send(self, obj: dict) -> None:
        if self.closed.is_set() or self.overflowed:
            return
        if self.queue.qsize() >= self.max_queue:
            # Too slow: drop what is queued and end the stream; close_reason stays None, so the handler treats it
            # as a client that went away.
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_CLOSE)
            return
        self.queue.put_nowait(obj)

    def close(self, reason: str, final: dict | None = None) -> None:
        """Close from our side, optionally after one last record (e.g. an ERROR event)."""
        if self.close_reason is None and not self.overflowed:
            self.close_reason = reason
        if final is not None:
            self.queue.put_nowait(final)
        self.queue.put_nowait(_CLOSE)

    def _client_gone(self) -> bool:
        t = self.request.transport
        return t is None or t.is_closing()

    async def run(self) -> None:
        """Write records until closed; returns when the stream is over."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat
        try:
            while True:
                timeout = min(max(0.0, next_beat - loop.time()), 0.5)
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    if self._client_gone():
                        return
                    if loop.time() >= next_beat:
                        item = codec.ev_heartbeat()
                    else:
                        continue
                if item is _CLOSE:
                    return
                await self.response.write(codec.recordio(item))
                if item.get("type") == "HEARTBEAT":
                    next_beat = loop.time() + self.heartbeat
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
        finally:
            self.closed.set()


class StreamOver(Exception):
    """A LiveStream cannot go on: its client went away, or `idle_check` gave a reason to stop."""


class LiveStream:
    """A RecordIO stream written by the one coroutine that produces it (no queue of its own).

    Used by the streams of committed events (GET /api/v1/events, operator SUBSCRIBE): each write is
    awaited, so a slow client only slows its own coroutine, and the only buffer is the bounded listener
    queue the coroutine reads from (MasterServer.event_listeners), which the applier drops when full.
    `next_batch` waits on that queue, writing a HEARTBEAT whenever `heartbeat` seconds pass without a
    record, and notices a client that went away within half a second.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse, heartbeat: float):
        self.request = request
        self.response = response
        self.heartbeat = heartbeat
        self._next_beat = 0.0

    async def send(self, obj: object) -> None:
        await self.send_bytes(codec.recordio(obj))

    async def send_bytes(self, record: bytes) -> None:
        """One already framed record, as one HTTP chunk."""
        try:
            await self.response.write(record)
        except (ConnectionError, RuntimeError) as e:
            raise StreamOver(f"client went away: {e}") from None
        self._next_beat = asyncio.get_running_loop().time() + self.heartbeat

    def client_gone(self) -> bool:
        t = self.request.transport
        return t is None or t.is_closing()

    async def next_batch(self, queue: asyncio.Queue, idle_check=None):
        """The next item of `queue`, with heartbeats while waiting. `idle_check()` (optional) is called
        every half second while idle; if it returns a reason the wait ends with StreamOver(reason)."""
        loop = asyncio.get_running_loop()
        while True:
            timeout = min(max(0.0, self._next_beat - loop.time()), 0.5)
            try:
                return await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                pass
            if self.client_gone():
                raise StreamOver("client went away")
            if idle_check is not None and (why := idle_check()):
                raise StreamOver(why)
            if loop.time() >= self._next_beat:
                await self.send(codec.ev_heartbeat())
