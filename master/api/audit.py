"""`GET /api/drover/audit/{offers,allocations,tasks,frameworks,reservations,volumes}`: the audit queries over HTTP.

Read-only and answered by every replica from its own event store (no redirect to the leader: a
follower's store holds the same committed events, possibly a few behind). Parameters: `framework`,
`role`, `agent`, `since`, `until` (ISO 8601 or epoch seconds), `volume` (a persistence id: `reservations`
and `volumes` only), `format` (`json`, the default, `csv`, or `table`). A bad or unknown parameter is a
400 naming it. Each query runs in a worker thread with
its own SQLite connection, so the replica's event loop (and its Raft apply path) is never blocked.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Callable

from aiohttp import web

from eventstore.events import UnknownEvent
from eventstore.store import StoreCorrupt
from replay import audit
from replay.reader import ReplayError

PREFIX = "/api/drover/audit"
PARAMS = ("framework", "role", "agent", "since", "until", "volume", "format")
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv", "table": "text/plain"}


def _bad(message: str) -> web.Response:
    return web.Response(status=400, text=message + "\n")


def add_audit_routes(app: web.Application, store_path: str | Path,
                     may_read: Callable[[web.Request], bool] = lambda request: True) -> None:
    """Serve the audit queries from the store at `store_path` (a data dir or its events.sqlite), to the requests
    `may_read` lets in (403 for the others)."""
    store_path = Path(store_path)

    async def handle(request: web.Request) -> web.Response:
        if not may_read(request):
            return web.Response(status=403, text="403 Forbidden: the audit shows every framework's history; this "
                                                 "principal may not view all frameworks and tasks\n")
        kind = request.match_info["query"]
        if kind not in audit.QUERIES:
            return web.Response(status=404, text=f"unknown audit query {kind!r} "
                                                 f"(expected one of {', '.join(audit.QUERIES)})\n")
        q = request.query
        for name in q:
            if name not in PARAMS:
                return _bad(f"unknown parameter {name!r} (expected {', '.join(PARAMS)})")
        for name in PARAMS:
            if len(q.getall(name, [])) > 1:
                return _bad(f"parameter {name!r} given more than once")
        fmt = q.get("format", "json")
        if fmt not in CONTENT_TYPES:
            return _bad(f"parameter 'format': unknown format {fmt!r} (expected json, csv or table)")
        try:
            filters = audit.Filters.parse(framework=q.get("framework"), role=q.get("role"), agent=q.get("agent"),
                                          since=q.get("since"), until=q.get("until"), volume=q.get("volume"))
            audit.check(kind, filters)
        except audit.AuditError as e:
            return _bad(f"parameter '{e.param}': {str(e).partition(': ')[2]}")
        try:
            records, cluster = await asyncio.to_thread(audit.run_query, store_path, kind, filters)
        except FileNotFoundError:
            return web.Response(status=503, text=f"this replica has no event store at {store_path}\n")
        except sqlite3.Error as e:
            return web.Response(status=503, text=f"this replica's event store cannot be read: {e}\n")
        except (StoreCorrupt, UnknownEvent, ReplayError) as e:  # a gap, an undecodable payload, a fold error
            # The replica cannot serve this query (its store is damaged): another replica may; never a 500.
            return web.Response(status=503, text=f"this replica's event store cannot be audited: {e}\n")
        body = audit.render(kind, records, fmt, cluster)
        return web.Response(text=body, content_type=CONTENT_TYPES[fmt], charset="utf-8")

    app.router.add_get(PREFIX + "/{query}", handle)
