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
from master.server import MasterServer, NotLeader
from master.streams import RecordStream

log = structlog.get_logger("drover.api.agent")


class AgentSubscribe(msgspec.Struct):
    hostname: str
    http: str
    resources: list[ev.Resource]
    agent_id: str | None = None
    attributes: list[ev.Label] = msgspec.field(default_factory=list)
    tasks: list[ev.TaskReport] = msgspec.field(default_factory=list)


class AgentUpdate(msgspec.Struct):
    framework_id: str
    task_id: str
    status: ev.TaskStatus


class AgentCall(msgspec.Struct):
    type: str
    agent_id: str | None = None
    subscribe: AgentSubscribe | None = None
    update: AgentUpdate | None = None


_decoder = msgspec.json.Decoder(AgentCall)


class AgentAPI:
    def __init__(self, core: MasterServer):
        self.core = core

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            call = _decoder.decode(await request.read())
        except msgspec.DecodeError as e:
            return web.Response(status=400, text=f"Malformed agent call: {e}")
        if call.type == "SUBSCRIBE" and call.subscribe is not None:
            return await self._subscribe(request, call.subscribe)
        if call.type == "UPDATE" and call.update is not None and call.agent_id:
            return await self._update(call.agent_id, call.update)
        if call.type == "PING" and call.agent_id:
            return self._ping(call.agent_id)
        return web.Response(status=400, text=f"Unknown or incomplete agent call {call.type!r}")

    async def _subscribe(self, request: web.Request, sub: AgentSubscribe) -> web.StreamResponse:
        core = self.core
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = RecordStream(request, response, core.config.heartbeat_interval, "agent")
        agent_id = sub.agent_id
        try:
            async with core.deciding():
                state = core.state
                if agent_id is not None and (agent_id in state.agents or agent_id.startswith(f"{state.cluster_id}-S")):
                    await core.commit([ev.AgentReregistered(
                        agent_id=agent_id, hostname=sub.hostname, http=sub.http, resources=sub.resources,
                        attributes=sub.attributes, tasks=sub.tasks)])
                else:
                    # An agent from another cluster (or a fresh one) gets a new identity.
                    agent_id = f"{state.cluster_id}-S{state.next_agent}"
                    await core.commit([ev.AgentRegistered(agent_id=agent_id, hostname=sub.hostname, http=sub.http,
                                                          resources=sub.resources, attributes=sub.attributes)])
                if not core.serving:
                    raise NotLeader()  # stepped down while committing: don't register a link nobody feeds
                old = core.agent_links.get(agent_id)
                core.agent_links[agent_id] = stream
                if old is not None:
                    old.close("replaced")
                stream.send({"type": "REGISTERED", "registered": {
                    "agent_id": agent_id, "cluster_id": core.state.cluster_id,
                    "heartbeat_interval_seconds": core.config.heartbeat_interval,
                    "ping_interval_seconds": core.config.agent_ping_timeout}})
                core.agent_heard(agent_id)
                for msg in fx.resync_agent(core.state, agent_id, sub.tasks if sub.agent_id == agent_id else []):
                    stream.send(msg)
                log.info("agent registered", agent_id=agent_id, hostname=sub.hostname,
                         resources=Resources(sub.resources).format(), tasks=len(sub.tasks))
        except NotLeader:
            stream.close("not leader", {"type": "ERROR", "error": {"message": "not the leader"}})
        await stream.run()
        if stream.close_reason is None and core.agent_links.get(agent_id) is stream:
            del core.agent_links[agent_id]
            await core.record_disconnect(agent_id=agent_id)
        return response

    def _ping(self, agent_id: str) -> web.Response:
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
        try:
            async with core.deciding():
                state = core.state
                if agent_id not in core.agent_links:
                    return web.Response(status=403, text="Agent is not subscribed to this master")
                core.agent_heard(agent_id)
                task = state.task(upd.framework_id, upd.task_id)
                uuid = upd.status.uuid
                if task is None or task.agent_id != agent_id:
                    # Already completed, or its framework is gone: nobody will ever ack it, so we do.
                    if uuid:
                        core.send_agent(agent_id, fx.ack_message(upd.framework_id, upd.task_id, uuid))
                    return web.Response(status=202)
                if uuid and any(s.uuid == uuid for s in task.statuses):
                    if task.pending is not None and task.pending.uuid == uuid:
                        # A retry of an update the framework has not acked yet: deliver it again.
                        core.send_framework(upd.framework_id, fx.update_event(
                            state, upd.framework_id, upd.task_id, agent_id, task.pending))
                    else:
                        core.send_agent(agent_id, fx.ack_message(upd.framework_id, upd.task_id, uuid))
                    return web.Response(status=202)
                await core.commit([ev.StatusUpdated(framework_id=upd.framework_id, task_id=upd.task_id,
                                                    agent_id=agent_id, status=upd.status)])
        except NotLeader:
            return web.Response(status=503, text="This master is no longer the leader")
        return web.Response(status=202)
