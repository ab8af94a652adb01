"""`GET /api/drover/why/{task,framework,role}`: `drover why` over HTTP (replay/why.py), for the UI's why panel.

    /api/drover/why/task?framework_id=F&task_id=T[&index=N]
    /api/drover/why/framework?framework_id=F[&since=T][&until=T][&role=R][&index=N]
    /api/drover/why/role?role=R[&since=T][&until=T][&index=N]

`index` asks as of that log index (time travel); `since`/`until` (ISO 8601 or epoch seconds) bound the window;
`format=table` answers the readable text instead of JSON. Answered by every replica from its own store, in a
worker thread with its own SQLite connection (as the audit); only for a reader who may see every framework
(the answer names other frameworks and their shares), else 403. A bad parameter is a 400 naming it, an unknown
framework or task a 404, a store that cannot be read a 503; never a 500.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from eventstore.events import UnknownEvent
from eventstore.store import StoreCorrupt
from replay import why
from replay.audit import AuditError
from replay.reader import ReplayError

PREFIX = "/api/drover/why"
PARAMS = {"task": ("framework_id", "task_id", "index", "format"),
          "framework": ("framework_id", "role", "since", "until", "index", "format"),
          "role": ("role", "since", "until", "index", "format")}
REQUIRED = {"task": ("framework_id", "task_id"), "framework": ("framework_id",), "role": ("role",)}
MAX_PARAM = 1024


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def parse(kind: str, query: Any) -> dict[str, Any] | str:
    """The question's parameters, or a 400's text naming the bad one."""
    allowed = PARAMS[kind]
    for name in query:
        if name not in allowed:
            return f"unknown parameter {name!r} (expected {', '.join(allowed)})"
        if len(query.getall(name)) > 1:
            return f"parameter {name!r} given more than once"
        if len(query[name]) > MAX_PARAM:
            return f"parameter {name!r}: longer than {MAX_PARAM} characters"
    for name in REQUIRED[kind]:
        if not query.get(name):
            return f"parameter {name!r} is required"
    out: dict[str, Any] = {k: query[k] for k in allowed if k in query and k not in ("index", "format")}
    if "index" in query:
        try:
            out["at"] = int(query["index"])
        except ValueError:
            return f"parameter 'index': expected a log index (an integer), got {query['index'][:64]!r}"
    fmt = query.get("format", "json")
    if fmt not in ("json", "table"):
        return f"parameter 'format': unknown format {fmt[:64]!r} (expected json or table)"
    out["format"] = fmt
    return out


def add_why_routes(app: web.Application, store_path: str | Path,
                   may_read: Callable[[web.Request], bool] = lambda request: True) -> None:
    store_path = Path(store_path)

    async def handle(request: web.Request) -> web.Response:
        if not may_read(request):
            return _text(403, "403 Forbidden: why names every framework's shares and history; this principal may "
                              "not view all frameworks and tasks")
        kind = request.match_info["kind"]
        if kind not in PARAMS:
            return _text(404, f"unknown question {kind!r} (expected one of {', '.join(PARAMS)})")
        params = parse(kind, request.query)
        if isinstance(params, str):
            return _text(400, params)
        fmt = params.pop("format")
        try:
            answer = await asyncio.to_thread(why.ask, store_path, kind, **params)
        except why.WhyError as e:
            return _text(e.status, f"parameter '{e.param}': {str(e).partition(': ')[2]}")
        except AuditError as e:  # a time that does not parse
            return _text(400, f"parameter '{e.param}': {str(e).partition(': ')[2]}")
        except FileNotFoundError:
            return _text(503, f"this replica has no event store at {store_path}")
        except sqlite3.Error as e:
            return _text(503, f"this replica's event store cannot be read: {e}")
        except (StoreCorrupt, UnknownEvent, ReplayError) as e:
            return _text(503, f"this replica's event store cannot be replayed: {e}")
        if fmt == "table":
            return web.Response(text=why.render(answer), content_type="text/plain", charset="utf-8")
        return web.Response(text=json.dumps(answer), content_type="application/json")

    app.router.add_get(PREFIX + "/{kind}", handle)
