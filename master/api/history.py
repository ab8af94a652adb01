"""`GET /api/drover/history/...`: the cluster as it was at a log index, for the web UI's time travel (docs/ui.md).

Read-only and answered by every replica from its own event store, like the audit (master/api/audit.py): each
request runs in a worker thread with its own read-only SQLite connection (replay/reader.py), so the replica's
event loop is never blocked. Every endpoint needs a principal that may view all frameworks and tasks (403
otherwise): the history shows everything that ever ran.

- `range`: `{"first", "last", "first_ts", "last_ts"}`, the indexes (and leader times) this replica's store holds.
- `state?index=N`: the state after event N (1 <= N <= last) in `/master/state`'s shape (master/state_json.py), so a
  page renders the live and the past state with the same code. Folded from the nearest snapshot at or before N
  (`replay.reader.state_at`); the last few renderings are kept.
- `allocation?by=role|framework&resource=cpus&points=P&from=A&to=B`: a time series of what tasks held of one
  scalar resource, per role or framework, at at most `points` (<= 200) indexes evenly spread over [A, B] (1 and the
  last index by default), with the agents' total and what was on offer at each. One pass over the log from the
  nearest snapshot before A; answers are cached per (store's last index, parameters).
- `task?framework_id=F&task_id=T`: one task's timeline: the offer(s) it was launched from (the `OFFERS_MADE`
  index), the accept (the launch), and each status update, each with its log index and leader time; built on the
  audit's `tasks` query (replay/audit.py) and its record is included as `task`; cached per (the store's last index,
  task).

A bad, unknown or repeated parameter is a 400 naming it; an index the store does not hold is a 404.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.events import UnknownEvent
from eventstore.store import StoreCorrupt
from master import state_json
from master.state import State, holdings
from replay import audit
from replay.reader import ReplayError, fold_range, open_store, state_at

PREFIX = "/api/drover/history"
MAX_POINTS = 200
RESOURCES = ("cpus", "mem", "disk", "gpus")
STATE_CACHE = 32  # renderings of past states kept (a scrubber asks for neighbouring indexes)
SERIES_CACHE = 8
CACHE_BYTES = 64 << 20  # the renderings kept, in bytes (a state of 5,000 agents renders to ~10 MB)
MAX_WORKERS = 2  # history requests worked on at once (each folds the log: CPU and the GIL, off the event loop)
MAX_WAITING = 16  # more waiting than this: a 503 (a page, or a cross-site image with cached credentials, cannot
#                   queue unbounded folds)
PARAMS = {
    "range": (),
    "state": ("index",),
    "allocation": ("by", "resource", "points", "from", "to"),
    "task": ("framework_id", "task_id"),
}


class BadParam(Exception):
    """A 400 (or, with status 404, an index the store does not hold); the text names the parameter."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _index(q, name: str, default: int | None = None) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        if default is None:
            raise BadParam(f"parameter '{name}' is required: a log index (a positive integer)")
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15) or int(raw) < 1:
        raise BadParam(f"parameter '{name}': expected a log index (a positive integer), got {raw[:32]!r}")
    return int(raw)


def _in_store(name: str, idx: int, first: int, last: int) -> None:
    if last == 0:
        raise BadParam("this replica's store holds no events yet", 404)
    if not first <= idx <= last:
        raise BadParam(f"parameter '{name}': index {idx} is not in this replica's store ({first}..{last})", 404)


# ---- the work, in a worker thread -------------------------------------------------------------------------------


def _scalar(by_agent: dict[str, list], name: str) -> float:
    """The quantity of `name` in these resources (agent -> records). Summed through one Resources bag per agent: a
    shared volume held by several tasks (or offered twice) counts once, as /roles, an agent's used_resources and
    Mesos's sorters count it; volumes of different agents (whose persistence ids may be the same) are not merged."""
    return sum(float(Resources(res).quantities_view().get(name, 0.0)) for res in by_agent.values())


def sample(state: State, by: str, resource: str, names: dict[str, str]) -> dict[str, Any]:
    """What tasks held of `resource` per role (or framework) in `state`, with the agents' total and the offered."""
    held: dict[str, dict[str, list]] = {}
    for t, res in holdings(state.all_tasks()):
        held.setdefault(t.spec.role if by == "role" else t.framework_id, {}).setdefault(t.agent_id, []).extend(res)
    offered: dict[str, list] = {}
    for o in state.offers.values():
        offered.setdefault(o.agent_id, []).extend(o.resources)
    for fid, fw in (*state.completed_frameworks.items(), *state.frameworks.items()):
        names[fid] = fw.info.name
    amounts = {k: _scalar(v, resource) for k, v in sorted(held.items())}
    return {"index": state.index,
            "total": round(_scalar({aid: a.resources for aid, a in state.agents.items()}, resource), 6),
            "offered": round(_scalar(offered, resource), 6),
            "allocated": {k: round(v, 6) for k, v in amounts.items() if v > 0}}


def spread(lo: int, hi: int, points: int) -> list[int]:
    """At most `points` indexes from lo to hi (both included), evenly spread."""
    n = hi - lo + 1
    k = min(points, n)
    if k <= 1:
        return [hi]
    return sorted({lo + round(i * (n - 1) / (k - 1)) for i in range(k)})


def allocation_series(store, by: str, resource: str, points: int, lo: int, hi: int) -> dict[str, Any]:
    """One pass: the state at the first sample (from its nearest snapshot), then folded forward sample by sample."""
    idxs = spread(lo, hi, points)
    state = state_at(store, idxs[0])
    names: dict[str, str] = {}
    samples = []
    for i in idxs:
        fold_range(state, store, i)
        samples.append(sample(state, by, resource, names))
    ts = dict(store.db.execute(f"SELECT idx, ts FROM events WHERE idx IN ({','.join('?' * len(idxs))})", idxs))
    for s in samples:
        s["ts"] = ts.get(s["index"])
    keys = sorted({k for s in samples for k in s["allocated"]})
    return {"by": by, "resource": resource, "from": lo, "to": hi, "points": len(samples),
            "series": [{"key": k, "name": names.get(k, k) if by == "framework" else k} for k in keys],
            "samples": samples}


def _offers_made(store, offer_ids: list[str], before: int) -> list[dict[str, Any]]:
    """The OFFERS_MADE that made each of these offers (searched backwards from `before`)."""
    want, found = set(offer_ids), []
    cur = store.db.execute("SELECT idx, ts, payload FROM events WHERE type = 'OFFERS_MADE' AND idx < ? "
                           "ORDER BY idx DESC", (before,))
    for idx, ts, payload in cur:
        e = ev.decode_event(payload)
        for o in getattr(e, "offers", []):
            if o.offer_id in want:
                want.discard(o.offer_id)
                found.append({"offer_id": o.offer_id, "index": idx, "time": audit.iso(ts), "ts": ts,
                              "agent_id": o.agent_id, "role": o.role, "trigger": getattr(e, "trigger", None)})
        if not want:
            break
    return sorted(found, key=lambda o: o["index"])


_ENDED = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE",
          "TASK_GONE_BY_OPERATOR"}


def task_timeline(path: Path, framework_id: str, task_id: str) -> dict[str, Any] | None:
    records, _ = audit.run_query(path, "tasks", audit.Filters.parse(framework=framework_id))
    rec = next((r for r in records if r["task_id"] == task_id and r["framework_id"] == framework_id), None)
    if rec is None:
        return None
    store = open_store(path)
    try:
        offers = _offers_made(store, rec.get("offer_ids") or [], rec.get("launched_index") or 0) \
            if rec.get("offer_ids") else []
    finally:
        store.close()
    prefix = framework_id.rpartition("-")[0] + "-"  # the cluster id: ids are shown without it (O3, S1)

    def short(id_: str) -> str:
        return id_.removeprefix(prefix) if prefix != "-" else id_

    steps: list[dict[str, Any]] = []
    for o in offers:
        steps.append({"step": "offered", "index": o["index"], "time": o["time"],
                      "detail": f"offer {short(o['offer_id'])} on agent {short(o['agent_id'])} (role {o['role']})"})
    if rec.get("launched_index") is not None:
        what = {"accept": "accepted: launched", "adopted": "adopted from a re-registering agent",
                "rejected": "rejected in the accept"}.get(rec.get("origin") or "", rec.get("origin") or "")
        steps.append({"step": "rejected" if rec.get("origin") == "rejected" else "accepted",
                      "index": rec["launched_index"], "time": rec.get("launched_at"), "detail": what})
    for s in rec.get("statuses") or []:
        state = s.get("state") or ""
        step = "ended" if state in _ENDED else state.removeprefix("TASK_").lower()
        detail = " ".join(x for x in (state, s.get("reason") or "", s.get("message") or "") if x)
        steps.append({"step": step, "state": state, "index": s.get("index"), "time": s.get("time"),
                      "detail": detail})
    return {"framework_id": framework_id, "task_id": task_id, "steps": steps, "offers": offers, "task": rec}


def _snapshot_index(store, idx: int) -> int | None:
    """The index of the nearest snapshot at or before `idx` (None: none)."""
    if not getattr(store, "has_snapshots", True):
        return None
    return store.db.execute("SELECT MAX(idx) FROM snapshots WHERE idx <= ?", (idx,)).fetchone()[0]


class History:
    """The endpoints' state: small caches shared by the worker threads (each request opens its own connection)."""

    def __init__(self, store_path: str | Path):
        self.path = Path(store_path)
        self.lock = threading.Lock()
        self.states: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self.series: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self.timelines: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self.fold_lock = threading.Lock()  # one fold at a time over `folded`, which it changes in place
        self.folded: State | None = None

    @staticmethod
    def _remember(cache: collections.OrderedDict, key: tuple, value: bytes, size: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size or (len(cache) > 1 and sum(map(len, cache.values())) > CACHE_BYTES):
            cache.popitem(last=False)

    def _cached(self, cache: collections.OrderedDict, key: tuple) -> bytes | None:
        with self.lock:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
            return hit

    def range(self) -> bytes:
        store = open_store(self.path)
        try:
            first, last = store.first_index(), store.last_index()
            row = store.db.execute("SELECT MIN(ts), MAX(ts) FROM events").fetchone()
        finally:
            store.close()
        return json.dumps({"first": first, "last": last, "first_ts": row[0], "last_ts": row[1]}).encode()

    def state(self, index: int, render: Callable[[State], dict]) -> bytes:
        store = open_store(self.path)
        try:
            _in_store("index", index, store.first_index(), store.last_index())
            key = (index, getattr(render, "key", None))
            if (hit := self._cached(self.states, key)) is not None:
                return hit
            with self.fold_lock:
                # The last state folded, folded on to `index` when that is ahead of it and nearer than the nearest
                # snapshot (a live follower's pages, a scrubber moved forward); else from the nearest snapshot.
                cur = self.folded
                self.folded = None  # until folded and rendered: an exception part-way leaves no half-folded state
                snap = _snapshot_index(store, index)
                if cur is None or cur.index > index or (snap is not None and snap > cur.index):
                    cur = state_at(store, index)
                else:
                    fold_range(cur, store, index)
                out = render(cur)
                # /master/state's shape, and Mesos's /roles (weights, quota, allocations) for the UI's overview.
                out.setdefault("roles", state_json.roles(cur, lambda role: True)["roles"])
                self.folded = cur
            body = json.dumps(out).encode()
        finally:
            store.close()
        with self.lock:
            self._remember(self.states, key, body, STATE_CACHE)
        return body

    def allocation(self, by: str, resource: str, points: int, lo: int | None, hi: int | None) -> bytes:
        store = open_store(self.path)
        try:
            first, last = store.first_index(), store.last_index()
            lo = first if lo is None else lo
            hi = last if hi is None else hi
            _in_store("from", lo, first, last)
            _in_store("to", hi, first, last)
            if hi < lo:
                raise BadParam(f"parameter 'to': {hi} is before 'from' ({lo})")
            key = (last, by, resource, points, lo, hi)
            if (hit := self._cached(self.series, key)) is not None:
                return hit
            body = json.dumps({**allocation_series(store, by, resource, points, lo, hi), "last": last}).encode()
        finally:
            store.close()
        with self.lock:
            self._remember(self.series, key, body, SERIES_CACHE)
        return body

    def task(self, framework_id: str, task_id: str) -> bytes:
        store = open_store(self.path)
        try:
            last = store.last_index()
        finally:
            store.close()
        key = (last, framework_id, task_id)
        if (hit := self._cached(self.timelines, key)) is not None:
            return hit
        out = task_timeline(self.path, framework_id, task_id)
        if out is None:
            raise BadParam(f"no task {task_id!r} of framework {framework_id!r} in this replica's store", 404)
        body = json.dumps(out).encode()
        with self.lock:
            self._remember(self.timelines, key, body, SERIES_CACHE)
        return body


def add_history_routes(app: web.Application, store_path: str | Path,
                       may_read: Callable[[web.Request], bool] = lambda request: True,
                       render: Callable[[web.Request], Callable[[State], dict]] | None = None) -> History:
    """Serve the history endpoints from the store at `store_path` to the requests `may_read` lets in (403 for the
    others). `render(request)`, called on the event loop, gives the function (run in the worker thread) that turns a
    State into the `/master/state` JSON; an optional `key` attribute of it is part of the cache key."""
    history = History(store_path)
    from concurrent.futures import ThreadPoolExecutor

    # Its own few threads: never the loop's default executor (getaddrinfo, the audit, why), never more folds at once.
    pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="history")
    waiting = [0]

    async def shutdown(app: web.Application) -> None:
        pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown)

    def default_render(request: web.Request) -> Callable[[State], dict]:
        return lambda s: state_json.render(s, master_id="", http="", leader_http=None, version="", start_time=0.0,
                                           elected_time=None, flags={})

    make_render = render or default_render

    async def handle(request: web.Request) -> web.Response:
        if not may_read(request):
            return web.Response(status=403, text="403 Forbidden: the history shows every framework's tasks; this "
                                                 "principal may not view all frameworks and tasks\n")
        kind = request.match_info["what"]
        if kind not in PARAMS:
            return web.Response(status=404, text=f"unknown history query {kind!r} "
                                                 f"(expected one of {', '.join(PARAMS)})\n")
        q = request.query
        try:
            for name in q:
                if name not in PARAMS[kind]:
                    expected = ", ".join(PARAMS[kind]) or "none"
                    raise BadParam(f"unknown parameter {name[:64]!r} (expected {expected})")
                if len(q.getall(name)) > 1:
                    raise BadParam(f"parameter {name!r} given more than once")
            if kind == "range":
                work: Callable[[], bytes] = history.range
            elif kind == "state":
                index = _index(q, "index")
                fn = make_render(request)
                work = lambda: history.state(index, fn)  # noqa: E731
            elif kind == "allocation":
                by = q.get("by", "role")
                if by not in ("role", "framework"):
                    raise BadParam(f"parameter 'by': expected 'role' or 'framework', got {by[:32]!r}")
                resource = q.get("resource", "cpus")
                if resource not in RESOURCES:
                    raise BadParam(f"parameter 'resource': expected one of {', '.join(RESOURCES)}, "
                                   f"got {resource[:32]!r}")
                raw = q.get("points", str(MAX_POINTS))
                if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 2 <= int(raw) <= MAX_POINTS:
                    raise BadParam(f"parameter 'points': expected an integer from 2 to {MAX_POINTS}, got {raw[:32]!r}")
                points = int(raw)
                lo = _index(q, "from", 0) or None
                hi = _index(q, "to", 0) or None
                work = lambda: history.allocation(by, resource, points, lo, hi)  # noqa: E731
            else:
                fid, tid = q.get("framework_id", ""), q.get("task_id", "")
                for name, v in (("framework_id", fid), ("task_id", tid)):
                    if not v:
                        raise BadParam(f"parameter {name!r} is required")
                    if len(v) > 256:
                        raise BadParam(f"parameter {name!r} is longer than 256 characters")
                work = lambda: history.task(fid, tid)  # noqa: E731
            if waiting[0] >= MAX_WAITING:
                return web.Response(status=503, headers={"Retry-After": "1"},
                                    text="this replica is answering too many history requests; try again\n")
            waiting[0] += 1
            try:
                body = await asyncio.get_running_loop().run_in_executor(pool, work)
            finally:
                waiting[0] -= 1
        except BadParam as e:
            return web.Response(status=e.status, text=f"{e}\n")
        except FileNotFoundError:
            return web.Response(status=503, text=f"this replica has no event store at {store_path}\n")
        except sqlite3.Error as e:
            return web.Response(status=503, text=f"this replica's event store cannot be read: {e}\n")
        except (StoreCorrupt, UnknownEvent, ReplayError) as e:
            return web.Response(status=503, text=f"this replica's event store cannot be replayed: {e}\n")
        headers = {"Cache-Control": "no-store"}
        if kind == "state":
            headers["Drover-State-Index"] = str(index)
        return web.Response(body=body, content_type="application/json", charset="utf-8", headers=headers)

    app.router.add_get(PREFIX + "/{what}", handle, allow_head=False)
    return history
