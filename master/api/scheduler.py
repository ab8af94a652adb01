"""`POST /api/v1/scheduler`: the Mesos v1 scheduler API on the leader.

Checks run in Mesos's order (mesos-v1-api.md 1.6). Each call validates against
the folded state, decides the events it causes, and commits them; what the
framework sees afterwards (offers, updates) flows from those events as effects.
Stale calls (unknown offer, unknown ack) are accepted with 202 and change
nothing: pymesos calls from inside its callbacks and any non-2xx kills it.
"""

from __future__ import annotations

import contextvars
import uuid

import msgspec
import structlog
from aiohttp import web

from eventstore import events as ev
from eventstore.resources import Resources
from master import codec
from master import effects as fx
from master.allocator import effective_refuse_seconds
from master.server import MasterServer, NotLeader
from master.streams import RecordStream

log = structlog.get_logger("drover.api.scheduler")

JSON = "application/json"
# The log indices a call's commits got, returned as `Drover-Log-Index: FIRST-LAST` on its 202 (an extension
# Mesos clients ignore): a client can then check that what it was told is committed survives failovers
# (`drover chaos` records these, Jepsen-style, and looks each one up in the final log).
LOG_INDEX_HEADER = "Drover-Log-Index"
_committed: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("committed", default=None)


def _text(status: int, message: str, **headers) -> web.Response:
    return web.Response(status=status, text=message, headers=headers)


class SchedulerAPI:
    def __init__(self, core: MasterServer):
        self.core = core

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctype = request.headers.get("Content-Type")
        if ctype is None:
            return _text(400, "Expecting 'Content-Type' to be present")
        body = await request.read()
        if ctype not in (JSON, "application/x-protobuf"):
            return _text(415, f"Expecting 'Content-Type' of {JSON} or application/x-protobuf")
        if ctype != JSON:
            return _text(415, "Drover accepts only application/json on the scheduler API")
        try:
            call = codec.parse_call(body)
            ctype_call = call["type"]
            if ctype_call == "SUBSCRIBE":
                return await self._subscribe(request, call)
            # Mesos converts and validates the whole call before it looks at the framework: a malformed
            # call is a 400 even from an unknown or disconnected framework.
            codec.validate_call(call)
        except codec.CallError as e:
            return _text(400, str(e))
        sub = call.get(ctype_call.lower())
        try:
            framework_id = codec._id(call.get("framework_id"), "framework_id")
            state = self.core.state
            fw = state.frameworks.get(framework_id)
            if fw is None:
                return _text(400, "Framework cannot be found")
            if not fw.connected or framework_id not in self.core.framework_streams:
                return _text(403, "Framework is not subscribed")
            stream = self.core.framework_streams[framework_id]
            sid = request.headers.get("Mesos-Stream-Id")
            if sid is None:
                return _text(400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
            if sid != stream.stream_id:
                return _text(400, f"The stream ID '{sid}' included in this request didn't match the stream ID "
                                  f"currently associated with framework ID {framework_id}")
            if ctype_call == "UNKNOWN":
                return _text(501, "Call type UNKNOWN is not implemented")
            handler = getattr(self, "_" + ctype_call.lower(), None)
            if handler is None:
                return web.Response(status=202)  # accepted and ignored (MESSAGE, REQUEST, inverse offers, ...)
            token = _committed.set([])
            try:
                response = await handler(framework_id, codec._obj(sub, ctype_call.lower()), stream)
                indices = _committed.get()
                if indices and response.status == 202:
                    response.headers[LOG_INDEX_HEADER] = f"{min(indices)}-{max(indices)}"
                return response
            finally:
                _committed.reset(token)
        except codec.CallError as e:
            return _text(400, str(e))
        except NotLeader:
            return _text(503, "This master is no longer the leader; retry")

    async def _commit(self, events: list) -> int:
        first = await self.core.commit(events)
        indices = _committed.get()
        if indices is not None and events:
            indices += [first, first + len(events) - 1]
        return first

    # ---- SUBSCRIBE ----------------------------------------------------------------------------
    async def _subscribe(self, request: web.Request, call: dict) -> web.StreamResponse:
        core = self.core
        try:
            if call.get("subscribe") is None:
                raise codec.CallError(f"{codec.VALIDATE}Expecting 'subscribe' to be present")
            try:
                sub = codec._obj(call.get("subscribe"), "subscribe")
                if sub.get("framework_info") is None:
                    raise codec.CallError("Missing required fields: subscribe.framework_info")
                top_id = codec._id(call.get("framework_id"), "framework_id", required=False)
                refusal = None
                try:
                    info, info_id = codec.parse_framework_info(sub.get("framework_info"), "subscribe.framework_info")
                except codec.FrameworkRefused as e:  # well-formed (structure is checked first), but refused
                    refusal, info = str(e), None
                    raw_id = codec._obj(sub.get("framework_info"), "framework_info").get("id")
                    info_id = codec._id(raw_id, "subscribe.framework_info.id", required=False)
                roles = codec._list(sub.get("suppressed_roles"), "subscribe.suppressed_roles")
                suppressed = [codec._str(r, f"subscribe.suppressed_roles[{i}]", True) for i, r in enumerate(roles)]
            except codec.CallError as e:
                raise codec.conversion_error(e) from None
            if top_id != info_id:
                raise codec.CallError(f"{codec.VALIDATE}'framework_id' differs from 'subscribe.framework_info.id'")
        except codec.CallError as e:
            return _text(400, str(e))
        accept = request.headers.get("Accept", "*/*")
        if not any(a.strip().split(";")[0] in (JSON, "*/*", "application/*") for a in accept.split(",")):
            return _text(406, f"Expecting 'Accept' to allow {JSON}")
        if "Mesos-Stream-Id" in request.headers:
            return _text(400, "Subscribe calls should not include the 'Mesos-Stream-Id' header")

        stream_id = str(uuid.uuid4())
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON, "Mesos-Stream-Id": stream_id})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = RecordStream(request, response, core.config.heartbeat_interval, "framework")
        stream.stream_id = stream_id

        def refuse(message: str) -> RecordStream:
            stream.close("refused", codec.ev_error(message))
            return stream

        framework_id = top_id
        try:
            async with core.deciding():
                state = core.state
                if refusal is not None:
                    refuse(refusal)
                elif framework_id is not None and framework_id in state.removed_frameworks:
                    refuse("Framework has been removed")
                elif info is not None and suppressed and not set(suppressed) <= set(info.roles):
                    refuse("Suppressed roles must be a subset of the framework's roles")
                else:
                    existing = state.frameworks.get(framework_id) if framework_id else None
                    if existing is not None and existing.info.principal != info.principal:
                        refuse("Changing framework's principal is not allowed")
                    else:
                        if existing is not None:
                            # Mesos silently keeps these immutable fields on re-subscription.
                            info.user, info.checkpoint = existing.info.user, existing.info.checkpoint
                        if framework_id is None:
                            framework_id = f"{state.cluster_id}-{state.next_framework:04d}"
                        await core.commit([ev.FrameworkSubscribed(
                            framework_id=framework_id, info=info, suppressed_roles=sorted(set(suppressed)),
                            resubscribe=existing is not None)])
                        if not core.serving:
                            # Leadership was lost while committing: the step-down already closed the
                            # streams, so this one must not be registered (nobody would ever feed it).
                            raise NotLeader()
                        old = core.framework_streams.get(framework_id)
                        core.framework_streams[framework_id] = stream
                        if old is not None:
                            old.close("failed over", codec.ev_error("Framework failed over"))
                        stream.send(codec.ev_subscribed(framework_id, core.config.heartbeat_interval,
                                                        codec.master_info(core.state.cluster_id or "", core.config.http,
                                                                          core.config.version)))
                        stream.send(codec.ev_heartbeat())
                        for upd in fx.resync_framework(core.state, framework_id):
                            stream.send(upd)
                        log.info("framework subscribed", framework_id=framework_id, name=info.name,
                                 resubscribe=existing is not None)
        except NotLeader:
            refuse("Master is no longer the leader; retry")
        await stream.run()
        if stream.close_reason is None and core.framework_streams.get(framework_id) is stream:
            # The client went away (not replaced, not refused): the framework is disconnected.
            del core.framework_streams[framework_id]
            await core.record_disconnect(framework_id=framework_id)
        return response

    # ---- calls ---------------------------------------------------------------------------------
    def _offers_of(self, framework_id: str, ids: list[str]) -> tuple[list, list[str]]:
        """Split offer ids into this framework's live offers and the invalid ones."""
        valid, invalid, seen = [], [], set()
        for oid in ids:
            o = self.core.state.offers.get(oid)
            if o is None or o.framework_id != framework_id or oid in seen:
                invalid.append(oid)
            else:
                valid.append(o)
            seen.add(oid)
        return valid, invalid

    def _offer_ids(self, sub: dict, key: str) -> list[str]:
        return [codec._id(o, f"{key}.offer_ids[]") for o in codec._list(sub.get("offer_ids"), f"{key}.offer_ids")]

    async def _decline(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        ids = self._offer_ids(sub, "decline")
        refuse = codec.parse_refuse_seconds(sub.get("filters"))
        async with self.core.deciding():
            valid, _ = self._offers_of(framework_id, ids)
            if valid:
                secs = effective_refuse_seconds(refuse, self.core.config.allocator.allocation_interval)
                await self._commit([ev.OffersDeclined(
                    framework_id=framework_id, offer_ids=[o.offer_id for o in valid], refuse_seconds=secs)])
        return web.Response(status=202)

    async def _accept(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        ids = self._offer_ids(sub, "accept")
        refuse = codec.parse_refuse_seconds(sub.get("filters"))
        ops = codec._list(sub.get("operations"), "accept.operations")
        task_infos: list[tuple[str, dict]] = []
        steps: list[tuple[str, str, object]] = []  # (LAUNCH | RESERVE | UNRESERVE, where, payload), in order
        for i, op in enumerate(ops):  # structure already checked by codec.validate_call
            op = codec._obj(op, f"accept.operations[{i}]")
            kind = op.get("type")
            if kind == "LAUNCH":
                launch = codec._obj(op.get("launch"), f"accept.operations[{i}].launch")
                for j, ti in enumerate(codec._list(launch.get("task_infos"), "launch.task_infos")):
                    where = f"accept.operations[{i}].launch.task_infos[{j}]"
                    task_infos.append((where, ti))
                    steps.append(("LAUNCH", where, ti))
            elif kind in ("RESERVE", "UNRESERVE"):
                where = f"accept.operations[{i}].{kind.lower()}.resources"
                body = codec._obj(op.get(kind.lower()), f"accept.operations[{i}].{kind.lower()}")
                try:
                    steps.append((kind, where, codec.parse_resources(body.get("resources"), where)))
                except codec.TaskInvalid as e:
                    steps.append((kind, where, e))
            # Other operations (CREATE, DESTROY, LAUNCH_GROUP, ...) come with later issues: ignored for now.
        core = self.core
        async with core.deciding():
            state = core.state
            fw = state.frameworks[framework_id]
            valid, invalid = self._offers_of(framework_id, ids)
            rejected: list[ev.Rejection] = []
            tasks: list[ev.TaskSpec] = []
            lost_state = "TASK_DROPPED" if "PARTITION_AWARE" in fw.info.capabilities else "TASK_LOST"
            problem = None
            if not ids:
                problem = "No offers specified"
            elif invalid:
                problem = f"Offer(s) {', '.join(invalid)} are no longer valid (unknown, rescinded, already used or not yours)"
            elif len({o.agent_id for o in valid}) > 1:
                problem = "Offers must all be on the same agent"
            elif len({o.role for o in valid}) > 1:
                problem = "Offers must all be allocated to the same role"
            if problem is not None:
                for _, ti in task_infos:
                    tid = ti["task_id"]["value"]
                    rejected.append(ev.Rejection(task_id=tid, state=lost_state, reason="REASON_INVALID_OFFERS",
                                                 message=f"Task launched with invalid offers: {problem}"))
                # The valid offers go back to the allocator, as Mesos does.
                events: list = []
                if valid:
                    events.append(ev.OffersDeclined(framework_id=framework_id, offer_ids=[o.offer_id for o in valid],
                                                    refuse_seconds=0.0))
                if events:
                    await self._commit(events)
                core._execute([fx.ToFramework(framework_id, fx.update_event(
                    state, framework_id, r.task_id, None,
                    ev.TaskStatus(state=r.state, source="SOURCE_MASTER", timestamp=core.now(), reason=r.reason,
                                  message=r.message))) for r in rejected])
                return web.Response(status=202)
            agent_id, role = valid[0].agent_id, valid[0].role
            remaining = Resources(r for o in valid for r in o.resources)
            reserved, unreserved = Resources(), Resources()
            seen: set[str] = set()
            for kind, where, payload in steps:
                if kind != "LAUNCH":
                    problem = payload if isinstance(payload, Exception) else self._reservation_problem(
                        kind, payload, role, remaining, Resources(state.agents[agent_id].dynamic) + reserved)
                    if problem:
                        # Mesos drops an invalid operation (it would answer OPERATION_ERROR had it an id).
                        log.info("offer operation dropped", framework_id=framework_id, operation=kind,
                                 why=str(problem))
                        continue
                    if kind == "RESERVE":
                        remaining = remaining - payload.as_unreserved() + payload
                        reserved = reserved + payload
                    else:
                        remaining = remaining - payload + payload.as_unreserved()
                        unreserved = unreserved + payload
                    continue
                ti = payload
                tid = ti["task_id"]["value"]
                try:
                    spec = codec.parse_task_info(ti, where)
                    if spec.agent_id != agent_id:
                        raise codec.TaskInvalid(f"Task uses agent {spec.agent_id} but the offers are for agent {agent_id}")
                    if spec.task_id in seen or state.task(framework_id, spec.task_id) is not None:
                        raise codec.TaskInvalid(f"Task has duplicate ID: {spec.task_id}")
                    need = Resources(spec.resources)
                    if not remaining.contains(need):
                        raise codec.TaskInvalid(
                            f"Task uses more resources {need.format()} than available {remaining.format()}")
                except codec.TaskInvalid as e:
                    rejected.append(ev.Rejection(task_id=tid, state="TASK_ERROR", reason="REASON_TASK_INVALID",
                                                 message=str(e)))
                    continue
                seen.add(spec.task_id)
                remaining = remaining - need
                tasks.append(msgspec.structs.replace(spec, role=valid[0].role))
            secs = effective_refuse_seconds(refuse, core.config.allocator.allocation_interval)
            await self._commit([ev.OffersAccepted(framework_id=framework_id, offer_ids=[o.offer_id for o in valid],
                                                 tasks=tasks, refuse_seconds=secs, rejected=rejected,
                                                 reserved=reserved.to_list(), unreserved=unreserved.to_list())])
        return web.Response(status=202)

    @staticmethod
    def _reservation_problem(kind: str, res: Resources, role: str, remaining: Resources,
                             dynamic: Resources) -> str | None:
        if not res:
            return f"{kind} names no resources"
        if any(r.role == "*" for r in res):
            return f"{kind} resources must name a reservation role"
        if kind == "RESERVE":
            if any(r.role != role for r in res):
                return f"RESERVE must reserve for the offer's allocation role {role!r}"
            if not remaining.contains(res.as_unreserved()):
                return f"RESERVE of {res.format()}: not available unreserved in the offers ({remaining.format()})"
            return None
        if not dynamic.contains(res):
            return f"UNRESERVE of {res.format()}: not a dynamic reservation on this agent"
        if not remaining.contains(res):
            return f"UNRESERVE of {res.format()}: not in the offers ({remaining.format()})"
        return None

    async def _acknowledge(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        codec._id(sub.get("agent_id"), "acknowledge.agent_id")
        task_id = codec._id(sub.get("task_id"), "acknowledge.task_id")
        raw = sub.get("uuid")
        codec.decode_uuid(raw)
        async with self.core.deciding():
            task = self.core.state.task(framework_id, task_id)
            if task is not None and task.pending is not None and task.pending.uuid == raw:
                await self._commit([ev.StatusAcknowledged(framework_id=framework_id, task_id=task_id, uuid=raw)])
        return web.Response(status=202)

    async def _kill(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        task_id = codec._id(sub.get("task_id"), "kill.task_id")
        agent_id = codec._id(sub.get("agent_id"), "kill.agent_id", required=False)
        grace = None
        if sub.get("kill_policy") is not None:
            gp = codec._obj(codec._obj(sub["kill_policy"], "kill_policy").get("grace_period"), "grace_period")
            if gp.get("nanoseconds") is not None:
                grace = codec._num(gp["nanoseconds"], "kill.kill_policy.grace_period.nanoseconds") / 1e9
        async with self.core.deciding():
            task = self.core.state.task(framework_id, task_id)
            if task is None:
                self._reconcile_one(framework_id, task_id, agent_id, stream)
            elif agent_id is not None and agent_id != task.agent_id:
                pass  # Mesos ignores a kill naming the wrong agent
            elif not task.terminal:
                await self._commit([ev.TaskKillRequested(framework_id=framework_id, task_id=task_id,
                                                             grace_seconds=grace)])
        return web.Response(status=202)

    def _reconcile_one(self, framework_id: str, task_id: str, agent_id: str | None, stream: RecordStream) -> None:
        state = self.core.state
        fw = state.frameworks[framework_id]
        task = state.task(framework_id, task_id)
        now = self.core.now()
        if task is not None:
            stream.send(fx.update_event(state, framework_id, task_id, task.agent_id, _latest(state, task, now)))
            return
        if agent_id is not None and agent_id in state.unreachable_agents:
            # A task we do not know on an unreachable agent: it may be there; as Mesos, TASK_UNREACHABLE
            # (TASK_LOST for frameworks that are not partition-aware, by codec.state_for).
            st = ev.TaskStatus(state="TASK_UNREACHABLE", source="SOURCE_MASTER", timestamp=now,
                               reason="REASON_RECONCILIATION", message="Reconciliation: Task is unreachable",
                               unreachable_time=state.unreachable_agents[agent_id].unreachable_at)
            stream.send(codec.ev_update(codec.status_out(framework_id, task_id, agent_id, st, fw.info.capabilities)))
            return
        if agent_id is not None and agent_id in state.agents:
            agent = state.agents[agent_id]
            if not agent.connected:
                return  # the agent may still re-register with this task: say nothing yet, as Mesos does
            st_name, msg = "TASK_GONE", "Reconciliation: Task is unknown to the agent"
        elif agent_id is not None:
            st_name, msg = "TASK_UNKNOWN", "Reconciliation: Task is unknown"
        else:
            st_name, msg = "TASK_UNKNOWN", "Reconciliation: Task is unknown"
        st = ev.TaskStatus(state=st_name, source="SOURCE_MASTER", timestamp=now, reason="REASON_RECONCILIATION",
                           message=msg)
        stream.send(codec.ev_update(codec.status_out(framework_id, task_id, agent_id, st, fw.info.capabilities)))

    async def _reconcile(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        entries = codec._list(sub.get("tasks"), "reconcile.tasks")
        state = self.core.state
        if not entries:
            now = self.core.now()
            for task in state.tasks.get(framework_id, {}).values():
                stream.send(fx.update_event(state, framework_id, task.task_id, task.agent_id, _latest(state, task, now)))
            return web.Response(status=202)
        for i, t in enumerate(entries):
            t = codec._obj(t, f"reconcile.tasks[{i}]")
            self._reconcile_one(framework_id, codec._id(t.get("task_id"), f"reconcile.tasks[{i}].task_id"),
                                codec._id(t.get("agent_id"), f"reconcile.tasks[{i}].agent_id", required=False), stream)
        return web.Response(status=202)

    def _roles(self, framework_id: str, sub: dict, key: str) -> list[str] | None:
        roles = [codec._str(r, f"{key}.roles[]", True) for r in codec._list(sub.get("roles"), f"{key}.roles")]
        fw_roles = self.core.state.frameworks[framework_id].info.roles
        if not roles:
            return list(fw_roles)
        if not set(roles) <= set(fw_roles):
            return None  # Mesos drops the whole call silently (still 202)
        return sorted(set(roles))

    async def _revive(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        async with self.core.deciding():
            roles = self._roles(framework_id, sub, "revive")
            if roles is not None:
                await self._commit([ev.RolesRevived(framework_id=framework_id, roles=roles)])
        return web.Response(status=202)

    async def _suppress(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        async with self.core.deciding():
            roles = self._roles(framework_id, sub, "suppress")
            if roles is not None:
                await self._commit([ev.RolesSuppressed(framework_id=framework_id, roles=roles)])
        return web.Response(status=202)

    async def _teardown(self, framework_id: str, sub: dict, stream: RecordStream) -> web.Response:
        async with self.core.deciding():
            offer_ids = [o.offer_id for o in self.core.state.offers.values() if o.framework_id == framework_id]
            events: list = []
            if offer_ids:
                events.append(ev.OffersRescinded(offer_ids=offer_ids, reason="framework_removed"))
            events.append(ev.FrameworkRemoved(framework_id=framework_id, reason="teardown"))
            await self._commit(events)
            s = self.core.framework_streams.pop(framework_id, None)
            if s is not None:
                s.close("teardown")
        return web.Response(status=202)


def _latest(state, task, now: float) -> ev.TaskStatus:
    """A reconciliation answer for a task the master knows: its latest state; for a TASK_UNREACHABLE task
    with its unreachable_time (the framework sees TASK_LOST unless it is PARTITION_AWARE)."""
    unreachable_time = None
    if task.state == "TASK_UNREACHABLE":
        agent = state.unreachable_agents.get(task.agent_id)
        unreachable_time = agent.unreachable_at if agent is not None else next(
            (s.unreachable_time for s in reversed(task.statuses) if s.unreachable_time is not None), None)
    return ev.TaskStatus(state=task.state, source="SOURCE_MASTER", timestamp=now, reason="REASON_RECONCILIATION",
                         message="Reconciliation: Latest task state", unreachable_time=unreachable_time)
