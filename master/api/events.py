"""`GET /api/v1/events`: this replica's committed history as a RecordIO stream (docs/event-stream.md).

Served by every replica, never redirected: a follower streams its own copy of the log, which is
the leader's up to where it has caught up. Each record is one committed event,

    {"index": 7, "term": 2, "ts": 1718000000.5, "type": "STATUS_UPDATED", "event": {...}}

where `event` is exactly the payload the store holds (eventstore/events.py, docs/events.md). The
stored history from `from` comes first, read from SQLite page by page; then, with `follow=true`,
batches as this replica folds them (MasterServer.event_listeners), with HEARTBEAT records while idle.
Indexes are gap-free and each is sent once, so a client that reconnects with `from=<last index + 1>`
resumes exactly. A reader too slow for the live feed is dropped by the applier; its stream ends and
it resumes the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import web

from eventstore import events as ev
from drover.security.http import principal_of
from master.views import Viewer
from master.replica import MasterServer
from master.streams import LiveStream, StreamOver

log = structlog.get_logger("drover.api.events")

JSON = "application/json"
PAGE = 500  # events per store read
LISTENER_QUEUE = 1024  # folded batches a live reader may lag behind before the applier drops it
PARAMS = ("from", "type", "framework", "agent", "follow")

_enc = msgspec.json.Encoder()


class BadQuery(Exception):
    pass


class StoreHole(Exception):
    pass


@dataclass(frozen=True)
class Query:
    start: int = 1
    types: frozenset[str] | None = None
    frameworks: frozenset[str] | None = None
    agents: frozenset[str] | None = None
    follow: bool = True

    def matches(self, env: ev.Envelope) -> bool:
        if self.types is not None and ev.event_type(env.event) not in self.types:
            return False
        if self.frameworks is None and self.agents is None:
            return True
        frameworks, agents = mentions(env.event)
        if self.frameworks is not None and not (frameworks & self.frameworks):
            return False
        return self.agents is None or bool(agents & self.agents)


def _ids(raw: str, name: str) -> frozenset[str]:
    ids = frozenset(x.strip() for x in raw.split(",") if x.strip())
    if not ids:
        raise BadQuery(f"'{name}' must name at least one id")
    return ids


def parse_query(query) -> Query:
    """The query string of GET /api/v1/events; BadQuery (a 400) names what is wrong."""
    unknown = sorted(set(query) - set(PARAMS))
    if unknown:
        raise BadQuery(f"Unknown query parameter(s) {', '.join(map(repr, unknown))}; expecting {', '.join(PARAMS)}")
    for name in PARAMS:
        if len(query.getall(name, [])) > 1:
            raise BadQuery(f"'{name}' is given more than once")
    start = 1
    if "from" in query:
        raw = query["from"]
        # At most 18 digits: any log index fits, and neither int() nor SQLite is handed a number it refuses.
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < 1:
            raise BadQuery(f"'from' must be a positive integer of at most 18 digits (a log index, 1 = the "
                           f"beginning), got {raw[:40]!r}")
        start = int(raw)
    types = None
    if "type" in query:
        types = frozenset(t.strip() for t in query["type"].split(",") if t.strip())
        if not types:
            raise BadQuery("'type' must name at least one event type")
        bad = sorted(types - set(ev.EVENT_TYPES))
        if bad:
            raise BadQuery(f"Unknown event type(s) {', '.join(map(repr, bad))} in 'type'; known types: "
                           f"{', '.join(sorted(ev.EVENT_TYPES))}")
    frameworks = _ids(query["framework"], "framework") if "framework" in query else None
    agents = _ids(query["agent"], "agent") if "agent" in query else None
    follow = True
    if "follow" in query:
        raw = query["follow"].lower()
        if raw not in ("true", "false", "1", "0"):
            raise BadQuery(f"'follow' must be true or false, got {query['follow']!r}")
        follow = raw in ("true", "1")
    return Query(start=start, types=types, frameworks=frameworks, agents=agents, follow=follow)


def mentions(event: ev.Event) -> tuple[set[str], set[str]]:
    """The framework and agent ids an event mentions: every `framework_id` / `agent_id` field of its
    payload, at any depth (so those of its offers, tasks, task reports and, in older logs, allocation decisions)."""
    frameworks: set[str] = set()
    agents: set[str] = set()

    def walk(x: object) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "framework_id" and isinstance(v, str):
                    frameworks.add(v)
                elif k == "agent_id" and isinstance(v, str):
                    agents.add(v)
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(msgspec.to_builtins(event))
    return frameworks, agents


def record(env: ev.Envelope) -> bytes:
    """One RecordIO record; `event` is encoded exactly as the store's payload column holds it."""
    body = _enc.encode({"index": env.index, "term": env.term, "ts": env.ts, "type": ev.event_type(env.event),
                        "event": env.event})
    return str(len(body)).encode() + b"\n" + body


class EventsAPI:
    def __init__(self, core: MasterServer):
        self.core = core
        self.readers = 0  # streams open now (history or live)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not Viewer(principal_of(request), self.core.config.acls).sees_all:
            # The log holds every task's command and environment: only for readers who may see every framework.
            return web.Response(status=403, text="403 Forbidden: the event log shows every framework; this "
                                                 "principal may not view all frameworks and tasks")
        try:
            q = parse_query(request.query)
        except BadQuery as e:
            return web.Response(status=400, text=str(e))
        limit = self.core.config.limits.max_event_readers
        if self.readers >= limit:
            return web.Response(status=503, headers={"Retry-After": "1"},
                                text=f"Too many event stream readers on this replica (limit {limit}); retry later")
        self.readers += 1
        try:
            return await self._serve(request, q)
        finally:
            self.readers -= 1

    async def _serve(self, request: web.Request, q: Query) -> web.StreamResponse:
        core = self.core
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = LiveStream(request, response, core.config.heartbeat_interval)
        listener: asyncio.Queue | None = None
        try:
            # The stored history first, without a listener (a long catch-up must not fill its queue) ...
            nxt = await self._history(stream, q, q.start)
            if q.follow:
                # ... then listen, re-read what was stored meanwhile, and go on with the live batches.
                # A batch is stored before it is folded and handed to listeners, so between the two
                # every index is seen at least once; `nxt` makes it exactly once.
                listener = asyncio.Queue(LISTENER_QUEUE)
                core.event_listeners.add(listener)
                nxt = await self._history(stream, q, nxt)
                while True:
                    batch = await stream.next_batch(listener)
                    if batch is None:
                        log.info("event stream reader too slow: dropped", next_index=nxt, peer=request.remote)
                        break
                    for env in batch:
                        if env.index < nxt:
                            continue
                        if env.index > nxt:  # cannot happen (see above); the store has it if it does
                            nxt = await self._history(stream, q, nxt, stop=env.index - 1)
                        if q.matches(env):
                            await stream.send_bytes(record(env))
                        nxt = env.index + 1
        except StoreHole as e:
            log.error("event stream stopped at a hole in the store", error=str(e))
        except StreamOver:
            pass
        finally:
            if listener is not None:
                core.event_listeners.discard(listener)
        if not stream.client_gone():
            try:
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
        return response

    async def _history(self, stream: LiveStream, q: Query, nxt: int, stop: int | None = None) -> int:
        """Send stored events from index `nxt` (up to `stop`, or as far as the store goes); returns the next
        index to send."""
        while stop is None or nxt <= stop:
            limit = PAGE if stop is None else min(PAGE, stop - nxt + 1)
            envs = await self.core.store.read(nxt, limit)
            if not envs:
                break
            for env in envs:
                if env.index != nxt:
                    raise StoreHole(f"index {nxt} is missing (the next stored index is {env.index})")
                if q.matches(env):
                    await stream.send_bytes(record(env))
                nxt += 1
            if stop is None and len(envs) < limit:
                break
        return nxt
