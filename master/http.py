"""The master's HTTP surface (aiohttp) and the process that runs one replica.

Leader-only endpoints answer from followers with a 307 to the leader
(`Location: //host:port/path`, protocol-relative as Mesos does) or 503 when no
leader is known. `/drover/status` answers on every replica: it is how tests and
tools compare replicas (applied index, state hash). `GET /api/v1/events` too: it
streams the replica's own committed history (master/api/events.py).

With `MasterConfig.tls_cert/tls_key` every site (the replica's address and the
leader address) is HTTPS (docs/tls.md). The redirect keeps the scheme the client
used, and other replicas are named as bare host:port everywhere, so all the
replicas of a cluster serve the same scheme.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import ssl

import structlog
from aiohttp import web

from drover.http_metrics import request_counter
from drover.security import http as security
from drover.security.acls import authorized, authorized_for_all
from master import state_json
from master.api.agent import AgentAPI
from master.api.audit import add_audit_routes
from master.api.events import EventsAPI
from master.api.history import add_history_routes
from master.api.operator import OperatorAPI
from master.replica import MasterConfig, MasterServer
from master.api.scheduler import SchedulerAPI
from master.api.why import add_why_routes
from master import metrics as master_metrics
from master.readcache import ReadCache
from master.state import state_hash
from master.ui import add_ui_routes
from master.views import Viewer, visible_state
from drover.security.tls import server_context

log = structlog.get_logger("drover.http")

LEADER_ONLY_POST = {"/api/v1/scheduler", "/master/api/v1/scheduler", "/api/drover/agent", "/api/v1",
                    "/master/api/v1"}
STATE_PATHS = ("/state", "/master/state", "/state.json", "/master/state.json")
# Mesos's smaller read endpoints (master/state_json.py), each at these paths: libprocess drops a trailing '/'
# before it looks up a handler, and the Mesos CLI asks for `master/frameworks/` (src/python/cli_new/lib/cli/mesos.py).
MESOS_READS = ("slaves", "frameworks", "tasks", "roles", "state-summary")


def read_paths(name: str) -> tuple[str, ...]:
    return (f"/{name}", f"/{name}.json", f"/master/{name}", f"/master/{name}.json", f"/{name}/", f"/master/{name}/")


LEADER_ONLY_GET = {*STATE_PATHS, *(p for name in MESOS_READS for p in read_paths(name))}

# listen(2) backlog of the HTTP sites. After a failover every agent and framework reconnects to the new leader
# within a second or two; with aiohttp's default (128) the accept queue overflows at a few thousand agents and
# the kernel drops SYNs (each retried only after 1 s, 3 s, 7 s...). The kernel caps it at net.core.somaxconn
# (4096 by default since Linux 5.4, 128 before: raise it there too) and tcp_max_syn_backlog bounds half-open ones.
LISTEN_BACKLOG = 4096
# JSONP: a callback is a plain JavaScript identifier path (`cb`, `angular.callbacks._0`), never code a page could
# smuggle in. (The answer itself needs authentication, which a cross-site <script> cannot supply.)
_JSONP_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,7}")


class _BadQuery(Exception):
    """A read endpoint's query parameters it cannot serve: a 400 with this text."""


def _int_param(query, name: str, default: int, hi: int, *, negative: int | None = None) -> int | str:
    """A non-negative integer query parameter (at most `hi`), or the 400's text; with `negative`, a negative
    integer is read as that value."""
    raw = query.get(name)
    if raw is None:
        return default
    if negative is not None and raw[:1] == "-" and raw[1:].isascii() and raw[1:].isdigit() and len(raw) <= 12:
        return negative
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or int(raw) > hi:
        return f"'{name}' must be an integer from 0 to {hi}, not '{raw[:32]}'"
    return int(raw)


MAX_TASKS_OFFSET = 1_000_000_000


def tasks_answer(state, query) -> dict | str:
    """/tasks for these query parameters (others are ignored, as Mesos does), or the 400's text."""
    # Beyond MAX_TASK_LIMIT: served as it. A negative limit too: Mesos reads it into a size_t (-1 is "all of them",
    # which the Mesos CLI's `task list` asks for: src/python/cli_new/lib/cli/mesos.py, get_tasks).
    limit = _int_param(query, "limit", state_json.TASK_LIMIT, 2**31 - 1, negative=state_json.MAX_TASK_LIMIT)
    offset = _int_param(query, "offset", 0, MAX_TASKS_OFFSET)
    order = query.get("order", "desc")
    for v in (limit, offset):
        if isinstance(v, str):
            return v
    if order not in ("asc", "desc"):
        return f"'order' must be 'asc' or 'desc', not '{order[:32]}'"
    assert isinstance(limit, int) and isinstance(offset, int)
    return state_json.tasks(state, framework_id=query.get("framework_id"), task_id=query.get("task_id"),
                            limit=limit, offset=offset, order=order)


def viewer(core: MasterServer, request: web.Request) -> Viewer:
    return Viewer(security.principal_of(request), core.config.acls)


def on_serving_change(core: MasterServer, fn) -> None:
    """Add `fn(serving)` (sync or async) to what `core.on_serving_change` calls, after what it called before."""
    before = core.on_serving_change

    async def changed(serving: bool) -> None:
        if before is not None:
            await before(serving)
        if asyncio.iscoroutine(r := fn(serving)):
            await r

    core.on_serving_change = changed


def build_app(core: MasterServer) -> web.Application:
    reads = ReadCache()  # /master/state, GET_STATE and its parts, the state hash: master/readcache.py
    scheduler = SchedulerAPI(core)
    agents = AgentAPI(core)
    operator = OperatorAPI(core, reads)
    events = EventsAPI(core)
    on_serving_change(core, operator.serving_changed)

    @web.middleware
    async def leader_only(request: web.Request, handler):
        path = request.path
        if path in LEADER_ONLY_POST or path in LEADER_ONLY_GET:
            if not core.serving:
                leader = core.leader_http()
                if leader is None:
                    return web.Response(status=503, text="No leader elected")
                return web.Response(status=307, headers={"Location": f"//{leader}{request.path_qs}"})
            if path in LEADER_ONLY_POST and request.method != "POST":
                return web.Response(status=405, headers={"Allow": "POST"}, text="Expecting POST")
        return await handler(request)

    @web.middleware
    async def too_deep(request: web.Request, handler):
        # json.loads and msgspec raise RecursionError on deeply nested bodies ([[[[...), before any decision
        # is taken: a malformed request like any other, not a server error.
        try:
            return await handler(request)
        except RecursionError:
            return web.Response(status=400, text="Failed to parse body into JSON: nested too deeply")

    async def health(request: web.Request) -> web.Response:
        if core.failed is not None:
            return web.Response(status=503, text=f"unhealthy: this replica stopped applying the log: {core.failed}")
        return web.Response(status=200)

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": core.config.version, "build_date": "", "build_time": 0.0,
                                  "build_user": "", "drover_version": "0.1.0"})

    async def redirect(request: web.Request) -> web.Response:
        leader = core.leader_http()
        if leader is None:
            return web.Response(status=503, text="No leader elected")
        return web.Response(status=307, headers={"Location": f"//{leader}"})

    async def redirect_loop(request: web.Request) -> web.Response:
        return web.Response(status=404)

    def jsonp_problem(request: web.Request) -> web.Response | None:
        cb = request.query.get("jsonp") or None
        if cb is not None and core.config.credentials is not None:
            # A browser attaches cached Basic credentials to a cross-site <script>: any page would read the state.
            return web.Response(status=400, text="'jsonp' is not served by a master with --credentials")
        if cb is not None and not _JSONP_CALLBACK.fullmatch(cb):
            return web.Response(status=400, text="'jsonp' must be a JavaScript identifier (letters, digits, _ $ .)")
        return None

    def answer(request: web.Request, body: bytes, index: int) -> web.Response:
        headers = {"Drover-State-Index": str(index)}
        if cb := request.query.get("jsonp"):
            return web.Response(text=f"{cb}({body.decode()});", content_type="text/javascript", headers=headers)
        return web.Response(body=body, content_type="application/json", charset="utf-8", headers=headers)

    async def state(request: web.Request) -> web.Response:
        leader_http, elected_at = core.leader_http(), core.elected_at

        def build(state, who: Viewer) -> bytes:
            flags = {"allocation_interval": f"{core.config.allocator.allocation_interval}secs",
                     "offer_timeout": str(core.config.allocator.offer_timeout or ""),
                     "heartbeat_interval": f"{core.config.heartbeat_interval}secs"}
            if not authorized(core.config.acls, "view_flags", who.principal, None):
                flags = {}
            return json.dumps(state_json.render(
                state, master_id=core.config.id, http=core.config.http, leader_http=leader_http,
                version=core.config.version, start_time=core.started_at, elected_time=elected_at,
                flags=flags)).encode()

        if (problem := jsonp_problem(request)) is not None:
            return problem
        who = viewer(core, request)
        # The filtered view is built only when the cached answer is out of date (it walks every task).
        body, index = reads.get("/master/state" + who.key, core.state,
                                lambda: build(visible_state(core.state, who), who), extra=(leader_http, elected_at))
        return answer(request, body, index)

    def mesos_read(name: str, build, *, cacheable=lambda q: not q, key=lambda who: who.key):
        """A handler for one of Mesos's read endpoints: `build(state, who, query)` -> the answer (a dict) for the
        state as `who` may see it (master/views.py), or a 400's text for query parameters it cannot serve.
        Answers without parameters (`cacheable`) are built once per state version and viewer; the others,
        whose parameters are the client's to choose, are built for the request (each builder's work is
        bounded by the state's size)."""

        async def handle(request: web.Request) -> web.Response:
            if (problem := jsonp_problem(request)) is not None:
                return problem
            query = {k: v for k, v in request.query.items() if k != "jsonp"}
            who = viewer(core, request)

            def body() -> bytes:
                out = build(visible_state(core.state, who), who, query)
                if isinstance(out, str):
                    raise _BadQuery(out)
                return json.dumps(out).encode()

            try:
                if cacheable(query):
                    data, index = reads.get(f"/master/{name}{key(who)}", core.state, body)
                else:
                    data, index = body(), core.state.index
            except _BadQuery as e:
                return web.Response(status=400, text=str(e))
            return answer(request, data, index)

        return handle

    def may_view_role(who: Viewer):
        return lambda role: authorized(core.config.acls, "view_roles", who.principal, role)

    def roles_key(who: Viewer) -> str:
        sees_roles = authorized_for_all(core.config.acls, "view_roles", who.principal)
        return who.key if sees_roles else f"principal:{who.principal}"

    mesos_reads = {
        "slaves": mesos_read("slaves", lambda s, who, q: state_json.slaves(s, core.config.version,
                                                                          q.get("slave_id"))),
        "frameworks": mesos_read("frameworks", lambda s, who, q: state_json.frameworks(s, q.get("framework_id"))),
        "tasks": mesos_read("tasks", lambda s, who, q: tasks_answer(s, q), cacheable=lambda q: not q),
        "roles": mesos_read("roles", lambda s, who, q: state_json.roles(s, may_view_role(who)), key=roles_key,
                            cacheable=lambda q: True),
        "state-summary": mesos_read("state-summary", lambda s, who, q: state_json.state_summary(
            s, http=core.config.http, version=core.config.version), cacheable=lambda q: True),
    }

    async def status(request: web.Request) -> web.Response:
        # The hash is computed at most once per index (0.6 s at 10,000 agents), and always at the index shown:
        # tests and `drover chaos` compare (applied_index, state_hash) across replicas.
        digest, index = reads.get("state_hash", core.state, lambda: state_hash(core.state).encode(), exact=True)
        return web.json_response({
            "id": core.config.id, "http": core.config.http, "raft": core.config.raft,
            "serving": core.serving, "raft_leader": core.raft.is_leader, "leader_http": core.leader_http(),
            "term": core.raft.term, "applied_index": index, "state_hash": digest.decode(),
            "cluster_id": core.state.cluster_id, "failed": core.failed,
            # The decision pipeline (docs/design.md): on a busy leader applied_index (the state's, staged decisions
            # included) runs ahead of committed_index; Raft entries, decisions and events committed by this leader.
            "committed_index": core.committed_index, "pipeline": dict(core.pipeline_counts),
            "raft_tick_lag": core.raft.tick_lag(),
        })

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=core.metrics.exposition(), headers={"Content-Type": master_metrics.CONTENT_TYPE})

    async def metrics_snapshot(request: web.Request) -> web.Response:
        return web.json_response(master_metrics.snapshot(core, core.metrics))

    authenticate = security.middleware(core.config.credentials, security.master_realm)
    # Outermost: counts every answer, a 401 of the authentication or a 307 of a follower included.
    counted = request_counter(core.metrics.http_requests)
    app = web.Application(middlewares=[counted, authenticate, too_deep, leader_only],
                          client_max_size=core.config.limits.max_body_bytes)
    for p in ("/api/v1/scheduler", "/master/api/v1/scheduler"):
        app.router.add_route("*", p, scheduler.handle)
    app.router.add_route("*", "/api/drover/agent", agents.handle)
    for p in ("/api/v1", "/master/api/v1"):
        app.router.add_route("*", p, operator.handle)
    for p in ("/api/v1/events", "/master/api/v1/events"):  # any replica: not in LEADER_ONLY_*
        app.router.add_get(p, events.handle, allow_head=False)
    for p in ("/health", "/master/health"):
        app.router.add_get(p, health)
    app.router.add_get("/version", version)
    for p in ("/redirect", "/master/redirect"):
        app.router.add_get(p, redirect)
        app.router.add_get(p + "/{tail:.*}", redirect_loop)
    for p in STATE_PATHS:
        app.router.add_get(p, state)
    for name, handler in mesos_reads.items():
        for p in read_paths(name):
            app.router.add_get(p, handler)
    app.router.add_get("/drover/status", status)
    # Every replica answers (not leader-only); authenticated in the read-only realm, as Mesos's /metrics/snapshot
    # with --authenticate_http_readonly (drover/security/http.py: master_realm).
    app.router.add_get("/metrics", prometheus)
    for p in ("/metrics/snapshot", "/master/metrics/snapshot"):
        app.router.add_get(p, metrics_snapshot)
    # Read-only, from this replica's own store; the whole history, so only for readers who may see everything.
    add_audit_routes(app, core.store.path, lambda request: viewer(core, request).sees_all)
    add_why_routes(app, core.store.path, lambda request: viewer(core, request).sees_all)

    def past_state(request: web.Request):
        # Called on the event loop: what the rendering (in a worker thread) needs of the replica, read now. The
        # history needs a viewer of every framework and task, but flags and roles have ACLs of their own
        # (view_flags, view_roles): filtered as /master/state and /roles filter them.
        leader_http, elected_at = core.leader_http(), core.elected_at
        who = viewer(core, request)
        flags = {"allocation_interval": f"{core.config.allocator.allocation_interval}secs",
                 "offer_timeout": str(core.config.allocator.offer_timeout or ""),
                 "heartbeat_interval": f"{core.config.heartbeat_interval}secs"}
        if not authorized(core.config.acls, "view_flags", who.principal, None):
            flags = {}
        sees_role = may_view_role(who)

        def render(s):
            out = state_json.render(s, master_id=core.config.id, http=core.config.http, leader_http=leader_http,
                                    version=core.config.version, start_time=core.started_at,
                                    elected_time=elected_at, flags=flags)
            out["roles"] = state_json.roles(s, sees_role)["roles"]
            return out

        render.key = (leader_http, elected_at, bool(flags), roles_key(who))  # type: ignore[attr-defined]
        return render

    # The cluster at a past index (the UI's time travel), from this replica's own store, like the audit.
    add_history_routes(app, core.store.path, lambda request: viewer(core, request).sees_all, past_state)
    # The web UI at / (master/ui): static files; authenticated in the read-only realm like any unknown path.
    add_ui_routes(app)
    return app


class FloatingEndpoint:
    """An address only the serving leader listens on, so clients without leader detection
    (pymesos without ZooKeeper) find the new leader at the same place after a failover."""

    def __init__(self, runner: web.AppRunner, address: str, ssl_context: ssl.SSLContext | None = None):
        host, _, port = address.rpartition(":")
        self.runner, self.host, self.port = runner, host, int(port)
        self.ssl_context = ssl_context
        self.site: web.TCPSite | None = None
        self._task: asyncio.Task | None = None

    async def set_serving(self, serving: bool) -> None:
        if serving and self._task is None:
            self._task = asyncio.create_task(self._bind())
        elif not serving:
            if self._task is not None:
                self._task.cancel()
                self._task = None
            if self.site is not None:
                await self.site.stop()
                self.site = None

    async def _bind(self) -> None:
        # The old leader may still hold the port for a moment (stepping down): retry until it lets go.
        while self.site is None:
            site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True, backlog=LISTEN_BACKLOG,
                               ssl_context=self.ssl_context)
            try:
                await site.start()
                self.site = site
                log.info("listening on the leader endpoint", address=f"{self.host}:{self.port}")
            except OSError:
                await asyncio.sleep(0.2)


async def run_master(config: MasterConfig, stop: asyncio.Event | None = None) -> None:
    # Before anything starts: a certificate that cannot be used is a ValueError of one line (drover master checks
    # the files first and reports it as a usage error).
    tls = server_context(config.tls_cert, config.tls_key) \
        if config.tls_cert is not None or config.tls_key is not None else None
    core = MasterServer(config)
    app = build_app(core)
    runner = web.AppRunner(app, keepalive_timeout=24 * 3600.0, handle_signals=False)
    await runner.setup()
    host, _, port = config.http.rpartition(":")
    site = web.TCPSite(runner, host, int(port), reuse_address=True, backlog=LISTEN_BACKLOG, ssl_context=tls)
    await site.start()
    floating = FloatingEndpoint(runner, config.leader_address, tls) if config.leader_address else None
    if floating is not None:
        on_serving_change(core, floating.set_serving)
    await core.start()
    log.info("master replica up", id=config.id, http=config.http, raft=config.raft,
             peers=[p.raft for p in config.peers], scheme="https" if tls else "http")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("master replica stopping", id=config.id)
    await core.stop()
    if floating is not None:
        await floating.set_serving(False)
    await runner.cleanup()
