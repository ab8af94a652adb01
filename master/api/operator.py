"""`POST /api/v1`: the Mesos v1 operator API (the calls this version implements).

Reads answer from the folded state (shapes in master/operator_json.py). Writes (weights, quota, teardown,
reservations and volumes) are parsed here (shape and types, bounded in size) and decided by the pure deciders
of master/decide/operator.py (every value rule); their events are folded before the answer (200; 202 for the
agent operations, as Mesos) goes out, like every other decision. SUBSCRIBE streams SUBSCRIBED (with the
GET_STATE view), heartbeats and the events derived from each committed event (docs/event-stream.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import structlog
from aiohttp import web

from eventstore import events as ev
from eventstore.resources import Resources
from master import codec, operator_json
from master import metrics as master_metrics
from master.decide import Decision
from master.decide.operator import (MAX_QUOTA_NAMES, AgentOperation, QuotaConfig, TeardownFramework, UpdateQuota,
                                    UpdateWeights, WeightInfo, decide_agent_operation, decide_teardown_framework,
                                    decide_update_quota, decide_update_weights)
from master.limits import Limits
from master.readcache import ReadCache
from master.replica import MasterServer, NotLeader
from master.state import clone
from master.views import Viewer, visible_event, visible_state
from drover.security.acls import authorized
from drover.security.http import principal_of
from master.streams import LiveStream, StreamOver

log = structlog.get_logger("drover.api.operator")

JSON = "application/json"
MAX_SUBSCRIBERS = 1000  # --max_operator_event_stream_subscribers: beyond it the oldest stream is closed
LISTENER_QUEUE = 1024  # folded batches a subscriber may lag behind before the applier drops it


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


def _ok(call_type: str, body: dict) -> web.Response:
    return web.json_response({"type": call_type, call_type.lower(): body})


def _quantities(d: object, where: str) -> dict[str, float]:
    """`{"cpus": {"value": 1.0}, ...}` -> {"cpus": 1.0}: the shape only (the decider judges the values)."""
    items = codec._obj(d, where)
    if len(items) > MAX_QUOTA_NAMES:
        raise codec.CallError(f"'{where}' names {len(items)} resources, more than the limit of {MAX_QUOTA_NAMES}")
    return {name: codec._num(codec._obj(v, f"{where}.{name}").get("value"), f"{where}.{name}.value")
            for name, v in items.items()}


def _entries(body: dict, key: str, where: str, limits: Limits) -> list:
    """A call's list of entries, bounded before any of it is read (max_roles_per_call)."""
    items = codec._list(body.get(key), where)
    if len(items) > limits.max_roles_per_call:
        raise codec.CallError(f"'{where}' has {len(items)} entries, more than the limit of "
                              f"{limits.max_roles_per_call} (max_roles_per_call)")
    return items


def parse_update_weights(body: dict, limits: Limits) -> UpdateWeights:
    infos = []
    for i, w in enumerate(_entries(body, "weight_infos", "update_weights.weight_infos", limits)):
        w = codec._obj(w, f"update_weights.weight_infos[{i}]")
        role = codec._str(w.get("role"), f"update_weights.weight_infos[{i}].role", True)
        infos.append(WeightInfo(role=role or "", weight=codec._num(w.get("weight"),
                                                                   f"update_weights.weight_infos[{i}].weight")))
    return UpdateWeights(weight_infos=infos)


def parse_update_quota(body: dict, limits: Limits) -> UpdateQuota:
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise codec.CallError("'update_quota.force' must be a boolean")
    configs = []
    for i, c in enumerate(_entries(body, "quota_configs", "update_quota.quota_configs", limits)):
        w = f"update_quota.quota_configs[{i}]"
        c = codec._obj(c, w)
        role = codec._str(c.get("role"), f"{w}.role", True)
        configs.append(QuotaConfig(role=role or "", guarantees=_quantities(c.get("guarantees"), f"{w}.guarantees"),
                                   limits=_quantities(c.get("limits"), f"{w}.limits")))
    return UpdateQuota(quota_configs=configs, force=force)


def _quantities_out(q: dict[str, float]) -> dict:
    return {name: {"value": float(v)} for name, v in sorted(q.items())}


class OperatorAPI:
    def __init__(self, core: MasterServer, reads: ReadCache | None = None):
        self.core = core
        self.reads = reads if reads is not None else ReadCache()  # GET_STATE and its parts (master/readcache.py)
        self._subscribers: list[asyncio.Queue] = []  # listener queues of the SUBSCRIBE streams, oldest first
        self._streams: set[LiveStream] = set()  # the SUBSCRIBE streams

    def serving_changed(self, serving: bool) -> None:
        """This replica started or stopped leading: the SUBSCRIBE streams look at once (they end on a step-down)."""
        for stream in list(self._streams):
            stream.wake()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctype = request.headers.get("Content-Type")
        if ctype is None:
            return _text(400, "Expecting 'Content-Type' to be present")
        if ctype != JSON:
            return _text(415, f"Expecting 'Content-Type' of {JSON}")
        try:
            call = json.loads(await request.read())
            if not isinstance(call, dict) or not isinstance(call.get("type"), str):
                raise codec.CallError("Expecting a JSON object with a 'type'")
        except RecursionError:
            return _text(400, "Failed to parse body into JSON: nested too deeply")
        except (ValueError, UnicodeDecodeError) as e:
            return _text(400, f"Failed to parse body into JSON: {e}")
        except codec.CallError as e:
            return _text(400, str(e))
        t = call["type"]
        who = Viewer(principal_of(request), self.core.config.acls)
        if t == "SUBSCRIBE":
            return await self._subscribe(request, who)
        handler = self._calls.get(t)
        if handler is None:
            return _text(501 if t == "UNKNOWN" else 400, f"Operator call {t[:64]!r} is not supported")
        try:
            return await handler(t, codec._obj(call.get(t.lower()), t.lower()), who)
        except codec.CallError as e:
            return _text(400, str(e))
        except NotLeader:
            return _text(503, "This master is no longer the leader; retry")

    @property
    def _calls(self) -> dict:
        """Call type -> handler: only these names (never an attribute looked up from the request)."""
        return {"GET_STATE": self._get_state, "GET_TASKS": self._get_tasks, "GET_EXECUTORS": self._get_executors,
                "GET_FRAMEWORKS": self._get_frameworks, "GET_AGENTS": self._get_agents,
                "GET_HEALTH": self._get_health, "GET_VERSION": self._get_version, "GET_FLAGS": self._get_flags,
                "GET_WEIGHTS": self._get_weights, "UPDATE_WEIGHTS": self._update_weights,
                "GET_QUOTA": self._get_quota, "UPDATE_QUOTA": self._update_quota, "GET_ROLES": self._get_roles,
                "TEARDOWN": self._teardown, "RESERVE_RESOURCES": self._agent_operation,
                "UNRESERVE_RESOURCES": self._agent_operation, "CREATE_VOLUMES": self._agent_operation,
                "DESTROY_VOLUMES": self._agent_operation, "GET_MASTER": self._get_master,
                "GET_METRICS": self._get_metrics, "GET_LOGGING_LEVEL": self._get_logging_level,
                "SET_LOGGING_LEVEL": self._set_logging_level, "GET_MAINTENANCE_STATUS": self._get_maintenance_status,
                "GET_MAINTENANCE_SCHEDULE": self._get_maintenance_schedule}

    async def _commit(self, decide, call) -> web.Response:
        """Decide and stage (one synchronous step), answer 200 once committed (or the refusal)."""
        if not self.core.serving:
            raise NotLeader()
        decision: Decision = decide(self.core.state, call, self.core.now(), self.core.config.decide_config())
        if decision.refusal is not None:
            return _text(decision.refusal.status, decision.refusal.message)
        await self.core.commit(decision.events)
        return web.Response(status=decision.reply if isinstance(decision.reply, int) else 200)

    # ---- the cluster's state, as GET_STATE and its parts ---------------------------------------------
    # Megabytes of JSON at scale: built at most once per state version and served from self.reads
    # (master/readcache.py), the same bytes `_ok` would give; Drover-State-Index names the version.
    def _cached(self, t: str, build, who: Viewer) -> web.Response:
        body, index = self.reads.get(t + who.key, self.core.state, lambda: json.dumps(
            {"type": t, t.lower(): build(visible_state(self.core.state, who))}).encode())
        return web.Response(body=body, content_type=JSON, charset="utf-8",
                            headers={"Drover-State-Index": str(index)})

    async def _get_state(self, t: str, body: dict, who: Viewer) -> web.Response:
        return self._cached(t, lambda s: operator_json.get_state(s, self.core.config.version), who)

    async def _get_tasks(self, t: str, body: dict, who: Viewer) -> web.Response:
        return self._cached(t, operator_json.get_tasks, who)

    async def _get_executors(self, t: str, body: dict, who: Viewer) -> web.Response:
        return _ok(t, operator_json.get_executors(visible_state(self.core.state, who)))

    async def _get_frameworks(self, t: str, body: dict, who: Viewer) -> web.Response:
        return self._cached(t, operator_json.get_frameworks, who)

    async def _get_agents(self, t: str, body: dict, who: Viewer) -> web.Response:
        return self._cached(t, lambda s: operator_json.get_agents(s, self.core.config.version), who)

    # ---- SUBSCRIBE: the event stream ------------------------------------------------------------------
    async def _subscribe(self, request: web.Request, who: Viewer) -> web.StreamResponse:
        accept = request.headers.get("Accept", "*/*")
        if not any(a.strip().split(";")[0] in (JSON, "*/*", "application/*") for a in accept.split(",")):
            return _text(406, f"Expecting 'Accept' to allow {JSON}")
        core = self.core
        if not core.serving:
            return _text(503, "This master is no longer the leader; retry")
        version, heartbeat = core.config.version, core.config.heartbeat_interval
        # In one synchronous step: the state SUBSCRIBED shows, and a listener that gets every batch folded
        # after it. The stream folds those into its own copy (`shadow`) to derive each event at its index.
        shadow = clone(core.state)
        listener: asyncio.Queue = asyncio.Queue(LISTENER_QUEUE)
        core.event_listeners.add(listener)
        self._subscribers.append(listener)
        while len(self._subscribers) > MAX_SUBSCRIBERS:
            core.drop_listener(self._subscribers.pop(0))
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})  # no Mesos-Stream-Id
        response.enable_chunked_encoding()

        def stepped_down() -> str | None:
            return None if core.serving else "this master stopped leading"

        # Nothing polls `stepped_down`: it is asked after every batch, at every heartbeat, and when
        # `serving_changed` wakes the idle streams (master/http.py calls it on every change of leadership).
        stream: LiveStream | None = None
        why = "client went away"
        try:
            await response.prepare(request)
            stream = LiveStream(request, response, heartbeat)
            self._streams.add(stream)
            await stream.send(operator_json.subscribed(visible_state(shadow, who), version, heartbeat))
            await stream.send(codec.ev_heartbeat())
            while True:
                batch = await stream.next_batch(listener, stepped_down)
                if batch is None:
                    why = "dropped: too slow, or more than the maximum number of subscribers"
                    break
                for env in batch:
                    if env.index > shadow.index:
                        gone = shadow.frameworks.get(env.event.framework_id) \
                            if isinstance(env.event, ev.FrameworkRemoved) else None
                        for event in operator_json.derive(shadow, env, version):
                            if event["type"] == "AGENT_ADDED" and not who.sees_all:
                                # Its totals sum every framework's tasks and offers: only the visible ones.
                                aid = event["agent_added"]["agent"]["agent_info"]["id"]["value"]
                                event = {"type": "AGENT_ADDED", "agent_added": {"agent": operator_json.agent(
                                    visible_state(shadow, who), shadow.agents[aid], version)}}
                            if visible_event(shadow, who, event, gone.info if gone is not None else None):
                                await stream.send(event)
                if (why := stepped_down()) is not None:
                    break
        except StreamOver as e:
            why = str(e)
        except (ConnectionError, RuntimeError) as e:
            why = f"client went away: {e}"
        finally:
            if stream is not None:
                self._streams.discard(stream)
            core.event_listeners.discard(listener)
            if listener in self._subscribers:
                self._subscribers.remove(listener)
        log.info("operator event stream ended", why=why, index=shadow.index, peer=request.remote)
        if response.prepared and not (request.transport is None or request.transport.is_closing()):
            try:
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
        return response

    async def _get_health(self, t: str, body: dict, who: Viewer) -> web.Response:
        return _ok(t, {"healthy": True})

    async def _get_version(self, t: str, body: dict, who: Viewer) -> web.Response:
        return _ok(t, {"version_info": {"version": self.core.config.version, "build_date": "", "build_time": 0.0,
                                        "build_user": ""}})

    async def _get_flags(self, t: str, body: dict, who: Viewer) -> web.Response:
        if not authorized(self.core.config.acls, "view_flags", who.principal, None):
            return _text(403, "403 Forbidden: this principal may not view the master's flags")
        cfg = self.core.config
        flags = {"allocation_interval": f"{cfg.allocator.allocation_interval}secs",
                 "offer_timeout": "" if cfg.allocator.offer_timeout is None else f"{cfg.allocator.offer_timeout}secs",
                 "min_allocatable_resources": "|".join(";".join(f"{n}:{v:g}" for n, v in alt)
                                                       for alt in cfg.allocator.min_allocatable),
                 "role_sorter": cfg.allocator.role_sorter, "framework_sorter": cfg.allocator.framework_sorter,
                 "fair_sharing_excluded_resource_names": ",".join(cfg.allocator.fair_sharing_excluded)}
        return _ok(t, {"flags": [{"name": k, "value": v} for k, v in sorted(flags.items())]})

    async def _get_master(self, t: str, body: dict, who: Viewer) -> web.Response:
        """This (leading) replica's MasterInfo and times; no ACL, as Mesos (authentication only)."""
        core = self.core
        out: dict = {"master_info": codec.master_info(core.state.cluster_id or "", core.config.http,
                                                      core.config.version),
                     "start_time": float(core.started_at)}
        if core.elected_at is not None:
            out["elected_time"] = float(core.elected_at)
        return _ok(t, out)

    async def _get_metrics(self, t: str, body: dict, who: Viewer) -> web.Response:
        """The `/metrics/snapshot` values (master/metrics.py), as Mesos's GetMetrics; no ACL, as Mesos. The optional
        `timeout` is accepted and unused: the snapshot is computed at once."""
        snap = master_metrics.snapshot(self.core, self.core.metrics)
        return _ok(t, {"metrics": [{"name": k, "value": v} for k, v in snap.items()]})

    async def _get_logging_level(self, t: str, body: dict, who: Viewer) -> web.Response:
        # Mesos answers glog's verbosity (FLAGS_v). Drover has no verbose-logging levels (its level is set at
        # start by --log-level / DROVER_LOG_LEVEL), so the verbosity is 0, glog's default.
        return _ok(t, {"level": 0})

    async def _set_logging_level(self, t: str, body: dict, who: Viewer) -> web.Response:
        return _text(501, "SET_LOGGING_LEVEL is not supported: Drover's log level is fixed when the master starts "
                          "(--log-level or DROVER_LOG_LEVEL) and cannot be changed at run time")

    async def _get_maintenance_status(self, t: str, body: dict, who: Viewer) -> web.Response:
        # No maintenance in this version: no machine is draining or down (Mesos's empty ClusterStatus).
        return _ok(t, {"status": {"draining_machines": [], "down_machines": []}})

    async def _get_maintenance_schedule(self, t: str, body: dict, who: Viewer) -> web.Response:
        # No maintenance in this version: the schedule has no windows.
        return _ok(t, {"schedule": {"windows": []}})

    async def _get_weights(self, t: str, body: dict, who: Viewer) -> web.Response:
        return _ok(t, {"weight_infos": [{"role": r, "weight": float(w)}
                                        for r, w in sorted(self.core.state.weights.items())
                                        if authorized(self.core.config.acls, "view_roles", who.principal, r)]})

    async def _update_weights(self, t: str, body: dict, who: Viewer) -> web.Response:
        call = parse_update_weights(body, self.core.config.limits)
        return await self._commit(decide_update_weights, dataclasses.replace(call, principal=who.principal))

    async def _get_quota(self, t: str, body: dict, who: Viewer) -> web.Response:
        configs = [{"role": r, "guarantees": _quantities_out(q.guarantees), "limits": _quantities_out(q.limits)}
                   for r, q in sorted(self.core.state.quotas.items())
                   if authorized(self.core.config.acls, "view_roles", who.principal, r)]
        return _ok(t, {"status": {"configs": configs}})

    async def _update_quota(self, t: str, body: dict, who: Viewer) -> web.Response:
        call = parse_update_quota(body, self.core.config.limits)
        return await self._commit(decide_update_quota, dataclasses.replace(call, principal=who.principal))

    async def _teardown(self, t: str, body: dict, who: Viewer) -> web.Response:
        fid = codec._obj(body.get("framework_id"), "teardown.framework_id").get("value")
        if not isinstance(fid, str):
            raise codec.CallError("Expecting 'teardown.framework_id.value' to be a string")
        response = await self._commit(decide_teardown_framework, TeardownFramework(fid, who.principal))
        if response.status == 200:
            stream = self.core.framework_streams.pop(fid, None)
            if stream is not None:
                stream.close("teardown", codec.ev_error("Framework was torn down by the operator"))
        return response

    async def _agent_operation(self, t: str, body: dict, who: Viewer) -> web.Response:
        return await self._commit(decide_agent_operation, dataclasses.replace(parse_agent_operation(t, body),
                                                                              principal=who.principal))

    async def _get_roles(self, t: str, body: dict, who: Viewer) -> web.Response:
        state = visible_state(self.core.state, who)
        names = set(state.weights) | set(state.quotas)
        for fw in state.frameworks.values():
            names |= set(fw.info.roles)
        roles = []
        for name in sorted(names):
            if not authorized(self.core.config.acls, "view_roles", who.principal, name):
                continue
            fws = sorted(f.framework_id for f in state.frameworks.values() if name in f.info.roles)
            held = Resources(r for o in state.offers.values() if o.role == name for r in o.resources) + Resources(
                r for task in state.all_tasks() if not task.terminal and task.spec.role == name
                for r in task.spec.resources)
            roles.append({"name": name, "weight": float(state.weights.get(name, 1.0)),
                          "frameworks": [{"value": f} for f in fws], "resources": codec.resources_out(held)})
        return _ok(t, {"roles": roles})


def parse_agent_operation(t: str, body: dict) -> AgentOperation:
    """RESERVE_RESOURCES {agent_id, source, resources}, UNRESERVE_RESOURCES {agent_id, resources}, CREATE_VOLUMES /
    DESTROY_VOLUMES {agent_id, volumes} (Mesos master.proto): structure here (CallError: 400), the resources'
    value rules kept as `problem` for the decider, which answers them with Mesos's "Invalid ... operation" text."""
    where = t.lower()
    agent_id = codec._obj(codec._required(body.get("agent_id"), f"{where}.agent_id"), f"{where}.agent_id").get("value")
    if not isinstance(agent_id, str):
        raise codec.CallError(f"Expecting '{where}.agent_id.value' to be a string")
    field = "volumes" if t in ("CREATE_VOLUMES", "DESTROY_VOLUMES") else "resources"
    if t == "RESERVE_RESOURCES" and codec._list(body.get("source"), f"{where}.source"):
        raise codec.CallError("Reservation updates ('source') are not supported by Drover")
    try:
        res = codec.parse_resources(body.get(field), f"{where}.{field}")
    except codec.TaskInvalid as e:
        return AgentOperation(t, agent_id, None, str(e))
    why = codec.reserve_problem(body.get(field)) if t == "RESERVE_RESOURCES" else None
    return AgentOperation(t, agent_id, None if why else res, why)
