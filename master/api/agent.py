"""`POST /api/drover/agent`: the link between the leader and its agents.

Mesos agents speak libprocess messages; ours speak the scheduler API's shape:
a SUBSCRIBE call opens a RecordIO stream of commands (REGISTERED, LAUNCH, KILL,
ACKNOWLEDGE, HEARTBEAT) and status updates come back as UPDATE calls. A broken
stream means a disconnected agent. See docs/agent-protocol.md.

Health: the stream's HEARTBEATs go master -> agent, so they say nothing about the
agent. The agent PINGs the leader every `ping_interval_seconds` (from REGISTERED,
= --agent-ping-timeout); every agent call (SUBSCRIBE, PING, UPDATE) counts as a
sign of life. An agent silent for timeout x --max-agent-ping-timeouts is marked
unreachable by the leader's timers (MasterServer.run_timers_and_allocate).
"""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from eventstore import events as ev
from eventstore.resources import Resources
from master import effects as fx
from drover.security.http import principal_of
from master.decide.agents import (AgentCall, AgentSubscribe, AgentUpdate, agent_principal_problem,
                                  decide_agent_subscribe, decide_agent_update, subscribe_problem)
from master.replica import MasterServer, NotLeader
from master.streams import RecordStream

log = structlog.get_logger("drover.api.agent")

__all__ = ["AgentAPI", "AgentCall", "AgentSubscribe", "AgentUpdate"]

_decoder = msgspec.json.Decoder(AgentCall)


class AgentAPI:
    """Thin: parse (msgspec) -> decide (master.decide.agents) -> stage -> respond once committed."""

    def __init__(self, core: MasterServer):
        self.core = core

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # JSON only, and said so: a POST without a content type is one a web page can send across sites.
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not ctype:
            return web.Response(status=400, text="Expecting 'Content-Type' to be present")
        if ctype != "application/json":
            return web.Response(status=415, text="Expecting 'Content-Type' of application/json")
        try:
            call = _decoder.decode(await request.read())
        except msgspec.ValidationError as e:
            return web.Response(status=400, text=f"Invalid agent call: {e}")
        except msgspec.DecodeError as e:
            return web.Response(status=400, text=f"Malformed agent call: {e}")
        except RecursionError:
            return web.Response(status=400, text="Malformed agent call: JSON nested too deeply")
        if call.type == "SUBSCRIBE" and call.subscribe is not None:
            return await self._subscribe(request, call.subscribe)
        if call.type in ("UPDATE", "PING") and call.agent_id and (why := agent_principal_problem(
                self.core.state, call.agent_id, principal_of(request), self.core.config.decide_config())):
            return web.Response(status=403, text=why)
        if call.type == "UPDATE" and call.update is not None and call.agent_id:
            return await self._update(call.agent_id, call.update)
        if call.type == "PING" and call.agent_id:
            return self._ping(call.agent_id)
        return web.Response(status=400, text=f"Unknown or incomplete agent call {call.type[:64]!r}")

    async def _subscribe(self, request: web.Request, sub: AgentSubscribe) -> web.StreamResponse:
        core = self.core
        config = core.config.decide_config()
        # What is wrong whatever the state is answered before the stream opens (a 400 the agent logs); what the
        # state refuses (e.g. too many agents) comes as an ERROR record on the stream.
        if (why := subscribe_problem(sub, config)) is not None:
            log.warning("agent subscription refused", hostname=str(sub.hostname)[:64], why=why)
            return web.Response(status=400, text=f"Invalid agent subscription: {why}")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = RecordStream(request, response, core.config.heartbeat_interval, "agent",
                              max_queue=core.config.limits.stream_queue)
        agent_id, gen = None, 0
        try:
            decision = decide_agent_subscribe(core.state, sub, core.now(), config, principal_of(request))
            staged = None
            if decision.refusal is None:
                try:
                    staged = core.stage(decision.events, messages=decision.messages)
                except ev.InvalidEvent as e:
                    # A bug, never an input (the decider gates its events itself): refused on the stream, as the
                    # scheduler's handler refuses such a call, and nothing is staged.
                    log.error("a decider produced an event the commit gate refuses", call="agent SUBSCRIBE",
                              error=str(e))
            if decision.refusal is not None or staged is None:
                why = decision.refusal.message if decision.refusal is not None else \
                    "The subscription was refused: it would record an invalid event (see the master's log)"
                log.warning("agent subscription refused", hostname=sub.hostname, why=why)
                stream.close("refused", {"type": "ERROR", "error": {"message": why}})
            else:
                assert isinstance(decision.reply, str)
                agent_id = decision.reply
                gen = core.new_link("agent", agent_id)
                # A sign of life now, with the decision: the timers decide on the staged state at once, and must
                # not find this (re-)registered agent silent since the election while its commit is in flight.
                core.agent_heard(agent_id)
                # What the agent still has to do, from the state its events made (staged just now); sent with
                # REGISTERED once they are committed. Later decisions' messages for it follow through the link.
                resync = fx.resync_agent(core.state, agent_id, sub.tasks if sub.agent_id == agent_id else [])
                linked = []

                def link() -> None:
                    old = core.agent_links.get(agent_id)
                    core.agent_links[agent_id] = stream
                    if old is not None:
                        old.close("replaced")
                    stream.send({"type": "REGISTERED", "registered": {
                        "agent_id": agent_id, "cluster_id": core.state.cluster_id,
                        "heartbeat_interval_seconds": core.config.heartbeat_interval,
                        "ping_interval_seconds": core.config.agent_ping_timeout}})
                    core.agent_heard(agent_id)
                    for msg in resync:
                        stream.send(msg)
                    linked.append(True)

                staged.then.append(link)
                await core.committed(staged)
                if not linked:
                    raise NotLeader()  # stepped down while committing: don't keep a link nobody feeds
                log.info("agent registered", agent_id=agent_id, hostname=sub.hostname,
                         resources=Resources(sub.resources).format(), tasks=len(sub.tasks))
        except NotLeader:
            agent_id = None
            stream.close("not leader", {"type": "ERROR", "error": {"message": "not the leader"}})
        await stream.run()
        if agent_id is not None and stream.close_reason is None and core.agent_links.get(agent_id) is stream:
            del core.agent_links[agent_id]
            if core.latest_link("agent", agent_id, gen):  # not while a newer subscription of it is being committed
                await core.record_disconnect(agent_id=agent_id)
        return response

    def _ping(self, agent_id: str) -> web.Response:
        """Chatter, not history: the leader notes the sign of life (MasterServer.agent_seen); no event."""
        core = self.core
        if not core.serving:
            return web.Response(status=503, text="This master is not the leader")
        if agent_id not in core.agent_links:
            # Not linked to us (or marked unreachable): it must (re-)subscribe; its link loop will.
            return web.Response(status=403, text="Agent is not subscribed to this master")
        core.agent_heard(agent_id)
        return web.Response(status=202)

    async def _update(self, agent_id: str, upd: AgentUpdate) -> web.Response:
        core = self.core
        if not core.serving:
            return web.Response(status=503, text="This master is no longer the leader")
        if agent_id not in core.agent_links:
            return web.Response(status=403, text="Agent is not subscribed to this master")
        core.agent_heard(agent_id)
        decision = decide_agent_update(core.state, agent_id, upd, core.now(), core.config.decide_config())
        if decision.refusal is not None:
            log.warning("status update refused", agent_id=agent_id, why=decision.refusal.message)
            return web.Response(status=decision.refusal.status, text=decision.refusal.message)
        try:
            await core.committed(core.stage(decision.events, messages=decision.messages))
        except NotLeader:
            return web.Response(status=503, text="This master is no longer the leader")
        return web.Response(status=202)
