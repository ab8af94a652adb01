"""`POST /api/v1/scheduler`: the Mesos v1 scheduler API on the leader.

A thin handler over the pure deciders of master.decide.scheduler:

    parse (master.codec: 400 for a malformed call, in Mesos's order)
      -> the framework and its stream (IO facts: 400 unknown framework, 403 not subscribed, 400 stream id)
      -> decide(state, call, now, config) and stage it    (one synchronous step: no lock; log order = decision order)
      -> refusal: 4xx | events: 202 + Drover-Log-Index once committed | messages: sent once committed

SUBSCRIBE opens the event stream first, as Mesos does: a refusal is an ERROR event on it. Stale calls (unknown
offer, unknown ack) are accepted with 202 and change nothing: pymesos calls from inside its callbacks and any
non-2xx kills it.
"""

from __future__ import annotations

import dataclasses
import uuid

import structlog
from aiohttp import web

from eventstore import events as ev
from drover.security.http import principal_of
from master import codec
from master import effects as fx
from master.decide import Decision
from master.decide import scheduler as sd
from master.pipeline import Staged
from master.replica import MasterServer, NotLeader
from master.streams import RecordStream

log = structlog.get_logger("drover.api.scheduler")

JSON = "application/json"
# The log indices a call's commits got, returned as `Drover-Log-Index: FIRST-LAST` on its 202 (an extension
# Mesos clients ignore): a client can then check that what it was told is committed survives failovers
# (`drover chaos` records these, Jepsen-style, and looks each one up in the final log).
LOG_INDEX_HEADER = "Drover-Log-Index"
# The commit gate's refusal (eventstore.events.encode_event): a decider let through an event the fold would not
# take. Never expected; answered 400 rather than 500, and logged as the bug it is.
_INVALID_EVENT = getattr(ev, "InvalidEvent", ValueError)


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
            raw = codec.parse_call(body, self.core.config.limits.max_json_depth)
            if raw["type"] == "SUBSCRIBE":
                return await self._subscribe(request, raw)
            # Mesos converts and validates the whole call before it looks at the framework: a malformed
            # call is a 400 even from an unknown or disconnected framework.
            call = codec.parse_scheduler_call(raw)
        except codec.CallError as e:
            return _text(400, str(e))
        framework_id = call.framework_id
        fw = self.core.state.frameworks.get(framework_id)
        if fw is None:
            return _text(400, "Framework cannot be found")
        if self.core.config.credentials is not None and \
                (why := sd.call_principal_problem(framework_id, fw.info.principal, principal_of(request))) is not None:
            # Only the principal that registered a framework may call as it (Mesos's order: after the lookup).
            return _text(400, why)
        stream = self.core.framework_streams.get(framework_id)
        if not fw.connected or stream is None:
            return _text(403, "Framework is not subscribed")
        sid = request.headers.get("Mesos-Stream-Id")
        if sid is None:
            return _text(400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
        if sid != stream.stream_id:
            return _text(400, f"The stream ID '{codec.clip(sid)}' included in this request didn't match the stream "
                              f"ID currently associated with framework ID {framework_id}")
        if isinstance(call, sd.Unknown):
            return _text(501, "Call type UNKNOWN is not implemented")
        try:
            return await self._decide_and_commit(call)
        except NotLeader:
            return _text(503, "This master is no longer the leader; retry")

    async def _decide_and_commit(self, call: sd.SchedulerCall) -> web.Response:
        core = self.core
        if not core.serving:
            raise NotLeader()
        d = sd.decide(core.state, call, core.now(), core.config.decide_config())
        if d.refusal is not None:
            return _text(d.refusal.status, d.refusal.message)
        staged = self._stage(d, type(call).__name__)
        if staged is None:
            return _text(400, "The call was refused: it would record an invalid event (see the master's log)")
        if isinstance(call, sd.Teardown):
            def close_stream(framework_id: str = call.framework_id) -> None:
                s = core.framework_streams.pop(framework_id, None)
                if s is not None:
                    s.close("teardown")
            staged.then.append(close_stream)
        first = await core.committed(staged)
        response = web.Response(status=d.reply if isinstance(d.reply, int) else 202)
        if d.events:
            response.headers[LOG_INDEX_HEADER] = f"{first}-{first + len(d.events) - 1}"
        return response

    def _stage(self, d: Decision, what: str) -> Staged | None:
        """Stage a decision's events and messages (master/pipeline.py); None if the commit gate refused an event
        (nothing was staged)."""
        try:
            return self.core.stage(d.events, messages=d.messages)
        except _INVALID_EVENT as e:
            log.error("a decider produced an event the commit gate refuses", call=what, error=str(e))
            return None

    # ---- SUBSCRIBE ----------------------------------------------------------------------------
    async def _subscribe(self, request: web.Request, raw: dict) -> web.StreamResponse:
        core = self.core
        try:
            call = codec.parse_subscribe(raw)
        except codec.CallError as e:
            return _text(400, str(e))
        accept = request.headers.get("Accept", "*/*")
        if not any(a.strip().split(";")[0] in (JSON, "*/*", "application/*") for a in accept.split(",")):
            return _text(406, f"Expecting 'Accept' to allow {JSON}")
        if "Mesos-Stream-Id" in request.headers:
            return _text(400, "Subscribe calls should not include the 'Mesos-Stream-Id' header")
        if core.config.credentials is not None:
            principal = principal_of(request)
            if call.info is not None and (why := sd.principal_problem(call.info.principal, principal)) is not None:
                return _text(400, why)
            call = dataclasses.replace(call, principal=principal)

        stream_id = str(uuid.uuid4())
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON, "Mesos-Stream-Id": stream_id})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = RecordStream(request, response, core.config.heartbeat_interval, "framework",
                              max_queue=core.config.limits.stream_queue)
        stream.stream_id = stream_id

        def refuse(message: str) -> None:
            stream.close("refused", codec.ev_error(message))

        framework_id, gen = None, 0
        try:
            d = sd.decide_subscribe(core.state, call, core.now(), core.config.decide_config())
            staged = None if d.refusal is not None else self._stage(d, "Subscribe")
            if d.refusal is not None:
                refuse(d.refusal.message)
            elif staged is None:
                refuse("The subscription was refused: it would record an invalid event (see the master's log)")
            else:
                subscribed: sd.Subscribed = d.reply
                fid = subscribed.framework_id
                gen = core.new_link("framework", fid)
                # What the framework is owed, from the state its events made (staged just now); sent once they are
                # committed, right after SUBSCRIBED. Later decisions' events for it follow on the stream.
                resync = fx.resync_framework(core.state, fid)
                linked = []

                def link() -> None:
                    old = core.framework_streams.get(fid)
                    core.framework_streams[fid] = stream
                    if old is not None:
                        old.close("failed over", codec.ev_error("Framework failed over"))
                    stream.send(codec.ev_subscribed(fid, core.config.heartbeat_interval,
                                                    codec.master_info(core.state.cluster_id or "", core.config.http,
                                                                      core.config.version)))
                    stream.send(codec.ev_heartbeat())
                    for upd in resync:
                        stream.send(upd)
                    linked.append(True)

                staged.then.append(link)
                await core.committed(staged)
                if not linked:
                    # Leadership was lost while committing: the step-down already closed the streams, so this
                    # one must not be registered (nobody would ever feed it).
                    raise NotLeader()
                framework_id = fid
                log.info("framework subscribed", framework_id=framework_id, name=call.info.name,
                         resubscribe=subscribed.resubscribe)
        except NotLeader:
            refuse("Master is no longer the leader; retry")
        await stream.run()
        if framework_id is not None and stream.close_reason is None \
                and core.framework_streams.get(framework_id) is stream:
            # The client went away (not replaced, not refused): the framework is disconnected, unless a newer
            # subscription of it is being committed (its stream then takes over).
            del core.framework_streams[framework_id]
            if core.latest_link("framework", framework_id, gen):
                await core.record_disconnect(framework_id=framework_id)
        return response
