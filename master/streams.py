"""Long-lived RecordIO event streams (framework subscriptions, agent links).

One writer task per stream drains a queue, so producers never block on a slow
client and each record goes out as one HTTP chunk (naive clients rely on it).
A stream ends when the client goes away, when it is replaced (framework
failover) or when this replica stops leading.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from master import codec

_CLOSE = object()


class RecordStream:
    def __init__(self, request: web.Request, response: web.StreamResponse, heartbeat: float, name: str):
        self.request = request
        self.response = response
        self.heartbeat = heartbeat
        self.name = name
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None  # None: the client went away

    def send(self, obj: dict) -> None:
        if not self.closed.is_set():
            self.queue.put_nowait(obj)

    def close(self, reason: str, final: dict | None = None) -> None:
        """Close from our side, optionally after one last record (e.g. an ERROR event)."""
        if self.close_reason is None:
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
