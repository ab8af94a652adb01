"""`POST /api/v1/scheduler`: the Mesos v1 scheduler API on the leader.

A thin handler over the pure deciders of master.decide.scheduler:

    parse (master.codec: 400 for a malformed call, in Mesos's order)
      -> the framework and its stream (IO facts: 400 unknown framework, 403 not subscribed, 400 stream id)
      -> decide(state, call, now, config)                              (under core.deciding(), one at a time)
      -> refusal: 4xx | events: commit (202 + Drover-Log-Index) | messages: sent once the events are folded

SUBSCRIBE opens the event stream first, as Mesos does: a refusal is an ERROR event on it. Stale calls (unknown
offer, unknown ack) are accepted with 202 and change nothing: pymesos calls from inside its callbacks and any
non-2xx kills it.
"""

from __future__ import annotations

import uuid

import structlog
from aiohttp import web

from eventstore import events as ev
from master import codec
from master import effects as fx
from master.decide import Decision
from master.decide import scheduler as sd
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
        async with core.deciding():
            d = sd.decide(core.state, call, core.now(), core.config.decide_config())
            if d.refusal is not None:
                return _text(d.refusal.status, d.refusal.message)
            indices = await self._commit(d, type(call).__name__)
            if indices is None:
                return _text(400, "The call was refused: it would record an invalid event (see the master's log)")
            self._send(d.messages)
            if isinstance(call, sd.Teardown):
                s = core.framework_streams.pop(call.framework_id, None)
                if s is not None:
                    s.close("teardown")
        response = web.Response(status=d.reply if isinstance(d.reply, int) else 202)
        if indices:
            response.headers[LOG_INDEX_HEADER] = f"{indices[0]}-{indices[1]}"
        return response

    async def _commit(self, d: Decision, what: str) -> tuple[int, int] | tuple[()] | None:
        """Commit a decision's events and wait until they are folded: their first and last log index, () if
        there were none, None if the commit gate refused them (nothing was proposed)."""
        if not d.events:
            return ()
        try:
            first = await self.core.commit(d.events)
        except _INVALID_EVENT as e:
            log.error("a decider produced an event the commit gate refuses", call=what, error=str(e))
            return None
        return first, first + len(d.events) - 1

    def _send(self, messages: list[fx.Effect]) -> None:
        for m in messages:
            if isinstance(m, fx.ToFramework):
                self.core.send_framework(m.framework_id, m.event)
            else:
                self.core.send_agent(m.agent_id, m.message)

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

        stream_id = str(uuid.uuid4())
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON, "Mesos-Stream-Id": stream_id})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = RecordStream(request, response, core.config.heartbeat_interval, "framework",
                              max_queue=core.config.limits.stream_queue)
        stream.stream_id = stream_id

        def refuse(message: str) -> None:
            stream.close("refused", codec.ev_error(message))

        framework_id = None
        try:
            async with core.deciding():
                d = sd.decide_subscribe(core.state, call, core.now(), core.config.decide_config())
                if d.refusal is not None:
                    refuse(d.refusal.message)
                elif await self._commit(d, "Subscribe") is None:
                    refuse("The subscription was refused: it would record an invalid event (see the master's log)")
                else:
                    if not core.serving:
                        # Leadership was lost while committing: the step-down already closed the
                        # streams, so this one must not be registered (nobody would ever feed it).
                        raise NotLeader()
                    subscribed: sd.Subscribed = d.reply
                    framework_id = subscribed.framework_id
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
                    log.info("framework subscribed", framework_id=framework_id, name=call.info.name,
                             resubscribe=subscribed.resubscribe)
        except NotLeader:
            refuse("Master is no longer the leader; retry")
        await stream.run()
        if framework_id is not None and stream.close_reason is None \
                and core.framework_streams.get(framework_id) is stream:
            # The client went away (not replaced, not refused): the framework is disconnected.
            del core.framework_streams[framework_id]
            await core.record_disconnect(framework_id=framework_id)
        return response
