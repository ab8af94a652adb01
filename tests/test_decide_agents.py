"""Unit tests for master.decide.agents (agent SUBSCRIBE and UPDATE as pure deciders), and the thin handler of
POST /api/drover/agent over a fake engine: a hostile body is a 4xx with a message, never a 500, and commits
nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eventstore import events as ev
from eventstore.resources import Resource
from eventstore.vocab import CHECK_REASONS
from master import effects as fx
from master.decide import DecideConfig
from master.decide.agents import (AgentSubscribe, AgentUpdate, decide_agent_subscribe, decide_agent_update,
                                  new_agent_id)
from master.decide.gate import events_problem
from master.limits import Limits
from master.pipeline import Staged
from master.state import clone
from tests.test_agent_loss import lost_agent_log, mark_unreachable
from tests.test_fold import AGENT_RES, Log, base, res, status, task

CFG = DecideConfig()
U1 = base64.b64encode(b"1" * 16).decode()
U2 = base64.b64encode(b"2" * 16).decode()


def sub(agent_id: str | None = None, **kw) -> AgentSubscribe:
    fields = dict(hostname="h1", http="10.0.0.1:5051", resources=res(AGENT_RES), agent_id=agent_id)
    fields.update(kw)
    return AgentSubscribe(**fields)


def decide_sub(log: Log, call: AgentSubscribe, config: DecideConfig = CFG):
    before = clone(log.state)
    d = decide_agent_subscribe(log.state, call, 500.0, config)
    assert log.state == before, "a decider never changes the state"
    if d.refusal is None:
        assert events_problem(d.events) is None  # what it decides, the commit gate takes
    else:
        assert d.events == [] and d.messages == []
    return d


# ---- SUBSCRIBE: ids ---------------------------------------------------------------------------------------------


def test_a_new_agent_gets_an_id_from_the_counter():
    log = base()
    d = decide_sub(log, sub())
    assert d.reply == "c1-S0"
    assert d.events == [ev.AgentRegistered(agent_id="c1-S0", hostname="h1", http="10.0.0.1:5051",
                                           resources=res(AGENT_RES))]
    for e in d.events:
        log(e)
    assert "c1-S0" in log.state.agents
    assert decide_sub(log, sub()).reply == "c1-S1"


def test_a_known_agent_reregisters_with_its_tasks():
    log = lost_agent_log()
    spec = log.state.task("F1", "t1").spec
    reports = [ev.TaskReport(framework_id="F1", task_id="t1", state="TASK_RUNNING", spec=spec)]
    d = decide_sub(log, sub("A1", http="h1:5051", tasks=reports))
    assert d.reply == "A1"
    assert d.events == [ev.AgentReregistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES),
                                             tasks=reports)]
    # Also when it was marked unreachable meanwhile.
    mark_unreachable(log)
    d = decide_sub(log, sub("A1", http="h1:5051", tasks=reports))
    assert isinstance(d.events[0], ev.AgentReregistered)
    for e in d.events:
        log(e)
    assert log.state.task("F1", "t1").state == "TASK_RUNNING"


def test_an_id_this_cluster_gave_out_reregisters_any_other_gets_a_new_one():
    log = base()
    log(ev.AgentRegistered(agent_id="A1", hostname="h", http="h:1", resources=res("cpus:1")))  # counter now 1
    assert isinstance(decide_sub(log, sub("c1-S0")).events[0], ev.AgentReregistered)
    for foreign in ("c1-S1", "c1-S99999999999999999999", "c1-S-1", "c1-S٣", "other-S0"):
        d = decide_sub(log, sub(foreign, tasks=[ev.TaskReport(framework_id="F1", task_id="t", state="TASK_RUNNING")]))
        assert d.reply == "c1-S1" and isinstance(d.events[0], ev.AgentRegistered), foreign


def test_a_new_id_never_collides_with_one_in_use():
    log = base()
    log(ev.AgentRegistered(agent_id="c1-S1", hostname="h", http="h:1", resources=res("cpus:1")))  # counter now 1
    assert new_agent_id(log.state) == "c1-S2"
    assert decide_sub(log, sub()).reply == "c1-S2"


def test_a_new_agent_beyond_the_limit_is_refused_a_known_one_is_not():
    log = lost_agent_log()  # A1 and A2
    two = DecideConfig(limits=Limits(max_agents=2))
    d = decide_sub(log, sub(), two)
    assert d.refusal.status == 403 and "max_agents" in d.refusal.message
    assert decide_sub(log, sub("A1", http="h1:5051"), two).refusal is None
    mark_unreachable(log)  # still counts: it may come back
    assert decide_sub(log, sub(), two).refusal.status == 403
    assert decide_sub(log, sub("A1", http="h1:5051"), two).refusal is None


# ---- SUBSCRIBE: validation --------------------------------------------------------------------------------------


def report(**kw) -> ev.TaskReport:
    fields = dict(framework_id="F1", task_id="t1", state="TASK_RUNNING")
    fields.update(kw)
    return ev.TaskReport(**fields)


def spec(**kw) -> ev.TaskSpec:
    return msgspec.structs.replace(task("t1"), **kw)


BAD_SUBSCRIPTIONS = [
    # The leader's applier died on these once committed (an offer's address is parsed for its port).
    (dict(http="10.0.0.1"), "host:port"),
    (dict(http="h:0"), "invalid port"),
    (dict(http="h:99999"), "invalid port"),
    (dict(http="h 1:5051"), "host:port"),
    (dict(http=""), "host:port"),
    (dict(hostname=""), "hostname"),
    (dict(hostname="a b"), "whitespace"),
    (dict(hostname="h\x00"), "control"),
    (dict(hostname="h" * 2000), "longer than"),
    # Every replica's fold raised on these, forever.
    (dict(resources=[Resource("cpus", "SCALAR", scalar=1.0), Resource("cpus", "RANGES", ranges=((1, 2),))]),
     "both SCALAR and RANGES"),
    (dict(resources=[Resource("cpus", "SCALAR", scalar=1e306)]), "scalar"),
    (dict(resources=[Resource("cpus", "SCALAR", scalar=float("nan"))]), "scalar"),
    (dict(resources=[Resource("cpus", "SCALAR", scalar=-1.0)]), "scalar"),
    (dict(resources=[Resource("ports", "RANGES", ranges=((5, 1),))]), "invalid range"),
    (dict(resources=[Resource("cpus", "SCALAR", scalar=1.0, role="a b")]), "Role"),
    (dict(resources=[Resource("cpus", "BOGUS")]), "unknown type"),
    (dict(attributes=[ev.Label("k", "v")] * 1001), "attributes"),
    (dict(attributes=[ev.Label("k" * 2000, "v")]), "attributes[0] key"),
    (dict(agent_id=".."), "'.' or '..'"),
    (dict(agent_id="a/b"), "'/'"),
    (dict(agent_id=""), "empty"),
    (dict(agent_id="x" * 300), "longer than"),
    (dict(agent_id="A1", tasks=[report(framework_id="..")]), "framework_id"),
    (dict(agent_id="A1", tasks=[report(task_id="a b")]), "task_id"),
    (dict(agent_id="A1", tasks=[report(state="TASK_BOGUS")]), "task state"),
    (dict(agent_id="A1", tasks=[report(state="TASK_UNREACHABLE")]), "task state"),
    (dict(agent_id="A1", tasks=[report(), report()]), "reported twice"),
    (dict(agent_id="A1", tasks=[report(spec=spec(task_id="t2"))]), "differs from the reported task id"),
    (dict(agent_id="A1", tasks=[report(spec=spec(agent_id="A2"))]), "not the id of the agent"),
    (dict(agent_id="A1", tasks=[report(spec=spec(resources=[Resource("cpus", "SCALAR", scalar=1e306)]))]), "scalar"),
    (dict(agent_id="A1", tasks=[report(spec=spec(resources=[Resource("ports", "SET", items=("a",))]))]),
     "RANGES on the agent"),
    (dict(agent_id="A1", tasks=[report(spec=spec(role="-x"))]), "Role"),
    (dict(agent_id="A1", tasks=[report(spec=spec(kill_grace_seconds=float("inf")))]), "kill_grace_seconds"),
    (dict(agent_id="A1", tasks=[report(spec=spec(labels=[ev.Label("k", "v")] * 1001))]), "labels"),
    (dict(agent_id="A1", tasks=[report(spec=spec(command=ev.CommandSpec(value="true", user="a b")))]),
     "command.user' 'a b' is invalid"),
]


@pytest.mark.parametrize("fields,message", BAD_SUBSCRIPTIONS, ids=[m for _, m in BAD_SUBSCRIPTIONS])
def test_an_invalid_subscription_is_refused_with_a_message(fields, message):
    log = lost_agent_log()
    d = decide_sub(log, sub(**fields))
    assert d.refusal is not None and d.refusal.status == 400, fields
    assert message in d.refusal.message, d.refusal.message


def test_reported_tasks_are_bounded():
    log = lost_agent_log()
    one = DecideConfig(limits=Limits(max_reported_tasks=1))
    assert decide_sub(log, sub("A1", tasks=[report()]), one).refusal is None
    d = decide_sub(log, sub("A1", tasks=[report(), report(task_id="t2")]), one)
    assert d.refusal.status == 400 and "max_reported_tasks" in d.refusal.message


def test_valid_edge_values_are_accepted():
    log = lost_agent_log()
    for fields in (dict(http="[::1]:5051"), dict(http="h:65535"), dict(hostname="h" * 1024), dict(resources=[]),
                   dict(agent_id="A1", tasks=[report(spec=spec(agent_id="A1"))]),
                   dict(agent_id="A1", tasks=[report(spec=spec(agent_id="A1", command=ev.CommandSpec(
                       value="true", user="nobody")))])):
        assert decide_sub(log, sub(**fields)).refusal is None, fields


# ---- UPDATE ------------------------------------------------------------------------------------------------------


def upd(fid: str = "F1", tid: str = "t1", **kw) -> AgentUpdate:
    fields = dict(state="TASK_FINISHED", source="SOURCE_EXECUTOR", timestamp=1.7e9, uuid=U2)
    fields.update(kw)
    return AgentUpdate(framework_id=fid, task_id=tid, status=ev.TaskStatus(**fields))


def decide_upd(log: Log, call: AgentUpdate, agent_id: str = "A1"):
    before = clone(log.state)
    d = decide_agent_update(log.state, agent_id, call, 500.0, CFG)
    assert log.state == before
    if d.refusal is None:
        assert events_problem(d.events) is None
    else:
        assert d.events == [] and d.messages == []
    return d


def test_a_new_update_is_recorded():
    log = lost_agent_log()
    call = upd()
    d = decide_upd(log, call)
    assert d.events == [ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=call.status)]
    assert d.messages == []


def test_a_retry_of_a_pending_update_is_delivered_again():
    log = lost_agent_log()
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_FINISHED", U2)))
    d = decide_upd(log, upd())
    assert d.events == []
    (m,) = d.messages
    assert isinstance(m, fx.ToFramework) and m.framework_id == "F1"
    assert m.event["update"]["status"]["uuid"] == U2 and m.event["update"]["status"]["state"] == "TASK_FINISHED"


def test_a_retry_of_an_acknowledged_update_is_acknowledged_back():
    log = lost_agent_log()
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_KILLING", U1)))
    log(ev.StatusAcknowledged(framework_id="F1", task_id="t1", uuid=U1))
    d = decide_upd(log, upd(state="TASK_KILLING", uuid=U1))
    assert d.events == [] and d.messages == [fx.ToAgent("A1", fx.ack_message("F1", "t1", U1))]


def test_an_update_for_a_task_not_tracked_on_this_agent_is_acknowledged_back():
    log = lost_agent_log()
    for call, agent in ((upd(tid="nope"), "A1"), (upd(fid="F9"), "A1"), (upd(), "A2")):
        d = decide_upd(log, call, agent)
        assert d.events == [] and d.messages == [fx.ToAgent(agent, fx.ack_message(call.framework_id, call.task_id,
                                                                                   U2))]
    assert decide_upd(log, upd(tid="nope", uuid=None)) .messages == []  # nothing to acknowledge


BAD_UPDATES = [
    (dict(agent_id=".."), "agent_id"),
    (dict(fid="a/b"), "framework_id"),
    (dict(tid=""), "task_id"),
    (dict(state="TASK_BOGUS"), "task state"),
    (dict(state="TASK_UNKNOWN"), "task state"),
    (dict(state="TASK_GONE_BY_OPERATOR"), "task state"),
    # An agent must not forge the master's updates.
    (dict(source="SOURCE_MASTER"), "SOURCE_AGENT or SOURCE_EXECUTOR"),
    (dict(timestamp=float("nan")), "timestamp"),
    (dict(timestamp=float("inf")), "timestamp"),
    (dict(timestamp=-1.0), "timestamp"),
    (dict(timestamp=1e300), "timestamp"),
    # The leader's applier died on this once committed (rendered as nanoseconds).
    (dict(unreachable_time=1e300), "unreachable_time"),
    (dict(unreachable_time=float("nan")), "unreachable_time"),
    (dict(uuid="not base64!"), "base64"),
    (dict(uuid=base64.b64encode(b"short").decode()), "16 bytes"),
    (dict(uuid="A" * 5000), "16 bytes"),
    (dict(message="m" * 70_000), "message"),
    (dict(reason="r" * 2000), "reason"),
    (dict(container_id="a b"), "container_id"),
    # A check status holds the result of its own type only, in that type's range (Mesos's validateCheckStatusInfo).
    (dict(check_status=ev.CheckStatus(type="HTTP", exit_code=0)), "must not hold 'exit_code'"),
    (dict(check_status=ev.CheckStatus(type="TCP", status_code=200, succeeded=True)), "must not hold 'status_code'"),
    (dict(check_status=ev.CheckStatus(type="COMMAND", exit_code=2**40)), "exit_code"),
    (dict(check_status=ev.CheckStatus(type="HTTP", status_code=10**6)), "status_code"),
    (dict(check_status=ev.CheckStatus(type="UNKNOWN")), "check_status"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("fields,message", BAD_UPDATES, ids=[m for _, m in BAD_UPDATES])
def test_an_invalid_update_is_refused_with_a_message(fields, message):
    log = lost_agent_log()
    fields = dict(fields)
    agent_id = fields.pop("agent_id", "A1")
    ids = {k: fields.pop(k) for k in ("fid", "tid") if k in fields}
    d = decide_upd(log, upd(**ids, **fields), agent_id)
    assert d.refusal is not None and d.refusal.status == 400, fields
    assert message in d.refusal.message, d.refusal.message


# ---- the handler, over a fake engine ------------------------------------------------------------------------------


class FakeCore:
    """What AgentAPI / OperatorAPI use of MasterServer: stage = fold at once, committed on the next turn of the
    loop (then the messages and follow-ups run, as MasterServer does once the commit is in)."""

    def __init__(self, log: Log, tmp: Path):
        from master.replica import MasterConfig
        self.log = log
        self.config = MasterConfig(id="m1", http="127.0.0.1:1", raft="127.0.0.1:2", peers=[], data_dir=tmp,
                                   heartbeat_interval=0.2)
        self.serving = True
        self.agent_links: dict = {}
        self.framework_streams: dict = {}
        self.agent_seen: dict = {}
        self.recorded: list = []
        self.sent: list = []
        self.disconnected: list = []
        self.event_listeners: set = set()
        self.started_at = 100.0
        self.elected_at: float | None = 150.0
        from master.metrics import MasterMetrics
        self.metrics = MasterMetrics()

    @property
    def state(self):
        return self.log.state

    def now(self) -> float:
        return 500.0

    def stage(self, events, *, ts=None, messages=(), then=None) -> Staged:
        from master.replica import NotLeader
        if not self.serving:
            raise NotLeader()
        for e in events:
            ev.encode_event(e)  # the commit gate, before anything changes
        first = self.log.state.index + 1
        for e in events:
            self.log(e, ts=500.0)
            self.recorded.append(e)
        loop = asyncio.get_running_loop()
        d = Staged(envs=[], payloads=[], effects=[], messages=list(messages), done=loop.create_future(),
                   then=[then] if then else [])

        def release() -> None:
            for m in d.messages:
                if isinstance(m, fx.ToAgent):
                    self.send_agent(m.agent_id, m.message)
                else:
                    self.send_framework(m.framework_id, m.event)
            for fn in d.then:
                fn()
            d.done.set_result(first if events else 0)

        loop.call_soon(release)
        return d

    async def committed(self, d: Staged) -> int:
        return await d.done

    async def commit(self, events, ts=None):
        return await self.committed(self.stage(events, ts=ts))

    def agent_heard(self, agent_id):
        self.agent_seen[agent_id] = 500.0

    def new_link(self, kind, peer_id):
        return 1

    def latest_link(self, kind, peer_id, gen):
        return True

    def send_agent(self, agent_id, message):
        self.sent.append((agent_id, message))

    def send_framework(self, framework_id, event):
        self.sent.append((framework_id, event))

    async def record_disconnect(self, **kw):
        self.disconnected.append(kw)


@contextlib.asynccontextmanager
async def client_for(core: FakeCore):
    from master.api.agent import AgentAPI
    from master.api.operator import OperatorAPI
    app = web.Application()
    app.router.add_post("/api/drover/agent", AgentAPI(core).handle)
    app.router.add_post("/api/v1", OperatorAPI(core).handle)
    async with TestClient(TestServer(app)) as client:
        yield client


JSON_CT = {"Content-Type": "application/json"}


async def test_the_agent_api_takes_json_only(tmp_path):
    """A POST without a content type, or a form, is what a web page can send across sites: refused."""
    core = FakeCore(base(), tmp_path)
    async with client_for(core) as client:
        raw = json.dumps({"type": "PING", "agent_id": "A1"}).encode()
        r = await client.post("/api/drover/agent", data=raw, skip_auto_headers=["Content-Type"])
        assert r.status == 400 and await r.text() == "Expecting 'Content-Type' to be present"
        r = await client.post("/api/drover/agent", data=raw, headers={"Content-Type": "text/plain"})
        assert r.status == 415
    assert core.recorded == []


def body(call: dict) -> bytes:
    return json.dumps(call).encode()


HOSTILE_AGENT_BODIES = [
    b"", b"not json", b"[]", b'{"type": 1}', b'{"type": "SUBSCRIBE"}', b'{"type": "UPDATE", "agent_id": "A1"}',
    b'{"type": "PING"}', b'{"type": "BOGUS"}', b'{"type": "PING", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    body({"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "10.0.0.1", "resources": []}}),
    body({"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "h:1", "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": 1}, {"name": "cpus", "type": "RANGES", "ranges": [[1, 2]]}]}}),
    body({"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "h:1", "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": 1e306}]}}),
    b'{"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "h:1", "resources": [{"name": "cpus", '
    b'"type": "SCALAR", "scalar": 1e999}]}}',
    body({"type": "SUBSCRIBE", "subscribe": {"hostname": "h", "http": "h:1", "resources": [], "agent_id": ".."}}),
    body({"type": "UPDATE", "agent_id": "A1", "update": {"framework_id": "F1", "task_id": "t1", "status": {
        "state": "TASK_RUNNING", "source": "SOURCE_MASTER", "timestamp": 1, "uuid": U2}}}),
    body({"type": "UPDATE", "agent_id": "A1", "update": {"framework_id": "F1", "task_id": "t1", "status": {
        "state": "TASK_RUNNING", "source": "SOURCE_AGENT", "timestamp": 1, "unreachable_time": 1e300}}}),
    body({"type": "UPDATE", "agent_id": "A1", "update": {"framework_id": "F1", "task_id": "t1", "status": {
        "state": "TASK_WHATEVER", "source": "SOURCE_AGENT", "timestamp": 1}}}),
    body({"type": "UPDATE", "agent_id": "A1", "update": {"framework_id": "F1", "task_id": "t1", "status": {
        "state": "TASK_RUNNING", "source": "SOURCE_AGENT", "timestamp": 1, "uuid": "xx"}}}),
]


@pytest.mark.parametrize("raw", HOSTILE_AGENT_BODIES, ids=range(len(HOSTILE_AGENT_BODIES)))
async def test_a_hostile_agent_call_is_a_4xx_and_commits_nothing(raw, tmp_path):
    core = FakeCore(lost_agent_log(), tmp_path)
    core.agent_links["A1"] = object()  # linked: UPDATE gets as far as the decider
    index = core.state.index
    async with client_for(core) as client:
        r = await client.post("/api/drover/agent", data=raw, headers=JSON_CT)
        text = await r.text()
    assert 400 <= r.status < 500, (r.status, text)
    assert text and core.recorded == [] and core.state.index == index


async def test_a_subscription_registers_and_streams_registered(tmp_path):
    core = FakeCore(base(), tmp_path)
    call = {"type": "SUBSCRIBE", "subscribe": {"hostname": "h1", "http": "10.0.0.1:5051",
                                               "resources": [{"name": "cpus", "type": "SCALAR", "scalar": 2.0}]}}
    async with client_for(core) as client:
        r = await client.post("/api/drover/agent", data=body(call), headers=JSON_CT)
        assert r.status == 200
        line = await r.content.readline()
        record = json.loads(await r.content.readexactly(int(line)))
        r.close()
    assert record["type"] == "REGISTERED" and record["registered"]["agent_id"] == "c1-S0"
    assert [type(e) for e in core.recorded] == [ev.AgentRegistered] and "c1-S0" in core.agent_seen


async def test_an_update_commits_or_answers_a_retry_with_a_message(tmp_path):
    core = FakeCore(lost_agent_log(), tmp_path)
    core.agent_links["A1"] = object()
    call = {"type": "UPDATE", "agent_id": "A1", "update": {"framework_id": "F1", "task_id": "t1", "status": {
        "state": "TASK_FINISHED", "source": "SOURCE_EXECUTOR", "timestamp": 1.7e9, "uuid": U2}}}
    async with client_for(core) as client:
        assert (await client.post("/api/drover/agent", data=body(call), headers=JSON_CT)).status == 202
        assert [type(e) for e in core.recorded] == [ev.StatusUpdated]
        # a retry: sent again
        assert (await client.post("/api/drover/agent", data=body(call), headers=JSON_CT)).status == 202
        assert len(core.recorded) == 1 and core.sent[-1][0] == "F1"
        call["agent_id"] = "A2"  # not linked here
        assert (await client.post("/api/drover/agent", data=body(call), headers=JSON_CT)).status == 403


async def test_a_subscription_the_state_refuses_gets_an_error_record_and_commits_nothing(tmp_path):
    core = FakeCore(lost_agent_log(), tmp_path)  # A1 and A2
    core.config.limits = Limits(max_agents=2)
    call = {"type": "SUBSCRIBE", "subscribe": {"hostname": "h3", "http": "10.0.0.3:5051", "resources": []}}
    async with client_for(core) as client:
        r = await client.post("/api/drover/agent", data=body(call), headers=JSON_CT)
        assert r.status == 200
        line = await r.content.readline()
        record = json.loads(await r.content.readexactly(int(line)))
    assert record["type"] == "ERROR" and "max_agents" in record["error"]["message"]
    assert core.recorded == [] and core.disconnected == []


# ---- property: whatever an agent sends, the decider answers, and what it accepts folds ----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

_text = hs.one_of(hs.sampled_from(["", ".", "..", "a/b", "A1", "F1", "t1", "c1-S0", "c1-S7", "h:1", "h", "a b",
                                   "TASK_RUNNING", "TASK_UNREACHABLE", "SOURCE_MASTER", "SOURCE_AGENT", U1]),
                  hs.text(max_size=12))
_num = hs.one_of(hs.floats(allow_nan=True, allow_infinity=True), hs.sampled_from([0.0, 1.0, 1e12, 1e306, -1.0]))


def mostly(valid: hs.SearchStrategy, hostile: hs.SearchStrategy = _text) -> hs.SearchStrategy:
    """Valid values most of the time, so that calls get past validation and their events are folded too."""
    return hs.integers(0, 9).flatmap(lambda i: valid if i < 8 else hostile)


_id = mostly(hs.sampled_from(["A1", "A2", "F1", "F2", "t1", "t2", "c1-S0", "c1-S9"]))
_state = mostly(hs.sampled_from(["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED", "TASK_KILLING"]))
_time = mostly(hs.floats(0, 2e9), _num)
_resource = hs.builds(
    Resource, name=mostly(hs.sampled_from(["cpus", "mem", "ports", "disk"])),
    type=mostly(hs.sampled_from(["SCALAR", "RANGES", "SET"])), scalar=mostly(hs.floats(0, 1e6), _num),
    ranges=hs.lists(hs.tuples(hs.integers(-5, 2**64), hs.integers(-5, 2**64)), max_size=3).map(tuple),
    items=hs.lists(_text, max_size=2).map(tuple), role=mostly(hs.sampled_from(["*", "r"])))
_report = hs.builds(ev.TaskReport, framework_id=_id, task_id=_id, state=_state,
                    spec=hs.one_of(hs.none(), hs.builds(lambda t, a, rs: spec(task_id=t, agent_id=a, resources=rs),
                                                        _id, _id, hs.lists(_resource, max_size=3))))
_subscribe = hs.builds(AgentSubscribe, hostname=mostly(hs.just("h1")),
                       http=mostly(hs.sampled_from(["h:1", "[::1]:9", "10.0.0.1:5051"])),
                       resources=hs.lists(_resource, max_size=4), agent_id=hs.one_of(hs.none(), _id),
                       attributes=hs.lists(hs.builds(ev.Label, _text, _text), max_size=2),
                       tasks=hs.lists(_report, max_size=3))
_status = hs.builds(ev.TaskStatus, state=_state, source=mostly(hs.sampled_from(["SOURCE_AGENT", "SOURCE_EXECUTOR"])),
                    timestamp=_time, uuid=hs.one_of(hs.none(), mostly(hs.sampled_from([U1, U2]))),
                    reason=hs.one_of(hs.none(), _text, hs.sampled_from(sorted(CHECK_REASONS))),
                    message=hs.one_of(hs.none(), _text),
                    container_id=hs.one_of(hs.none(), mostly(hs.just("c0ffee"))),
                    unreachable_time=hs.one_of(hs.none(), hs.none(), _time),
                    healthy=hs.one_of(hs.none(), hs.booleans()),
                    check_status=hs.one_of(hs.none(), hs.builds(
                        ev.CheckStatus, type=mostly(hs.sampled_from(["COMMAND", "HTTP", "TCP"])),
                        exit_code=hs.one_of(hs.none(), hs.integers(-2**40, 2**40)),
                        status_code=hs.one_of(hs.none(), hs.integers(-5, 2000)),
                        succeeded=hs.one_of(hs.none(), hs.booleans()))))
_update = hs.builds(AgentUpdate, framework_id=_id, task_id=_id, status=_status)
# An update from A1 for one of its tasks (F1/t1, F2/t2), or anything at all.
_agent_update = mostly(hs.builds(lambda ft, st: ("A1", AgentUpdate(framework_id=ft[0], task_id=ft[1], status=st)),
                                 hs.sampled_from([("F1", "t1"), ("F2", "t2")]), _status),
                       hs.tuples(_id, _update))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=hs.lists(hs.one_of(_subscribe, _agent_update), min_size=1, max_size=6))
def test_any_agent_call_is_decided_and_what_is_accepted_folds(calls):
    log = lost_agent_log()
    for call in calls:
        if isinstance(call, AgentSubscribe):
            d = decide_agent_subscribe(log.state, call, 500.0, CFG)
        else:
            d = decide_agent_update(log.state, call[0], call[1], 500.0, CFG)
        if d.refusal is not None:
            assert 400 <= d.refusal.status < 500 and d.refusal.message and not d.events
            continue
        for e in d.events:
            assert ev.decode_event(ev.encode_event(e)) == e
            log(e, ts=500.0)


def test_health_and_check_updates_are_recorded_and_a_run_of_them_keeps_the_latest():
    """As Mesos's master keeps one status per run of a state: a task checked for months holds a bounded list."""
    log = lost_agent_log()
    health = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
    for i, (healthy, reason) in enumerate([(True, health), (False, health), (False, "REASON_TASK_CHECK_STATUS_UPDATED"),
                                           (True, health)]):
        st = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=1.0 + i,
                           uuid=base64.b64encode(bytes([i]) * 16).decode(), reason=reason, healthy=healthy,
                           check_status=ev.CheckStatus(type="HTTP", status_code=200 + i))
        d = decide_upd(log, AgentUpdate(framework_id="F1", task_id="t1", status=st))
        assert d.events == [ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=st)]
        for e in d.events:
            log(e)
    t = log.state.task("F1", "t1")
    assert [(s.state, s.healthy) for s in t.statuses] == [("TASK_RUNNING", None), ("TASK_RUNNING", True)]
    assert t.statuses[-1].check_status == ev.CheckStatus(type="HTTP", status_code=203) and t.pending == t.statuses[-1]
    # the framework gets every one, with the health and check status in Mesos's JSON
    out = fx.update_event(log.state, "F1", "t1", "A1", t.statuses[-1])["update"]["status"]
    assert out["healthy"] is True and out["check_status"] == {"type": "HTTP", "http": {"status_code": 203}}


def test_operator_subscribers_get_a_task_updated_for_every_health_or_check_update():
    """As Mesos: a TASK_UPDATED on a new state, and on every (health) check update though the state stays."""
    from master import operator_json
    from tests.test_agent_loss import envelope

    log = lost_agent_log()
    shadow = clone(log.state)
    out = []
    for healthy, reason in ((True, "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"), (None, None)):
        st = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=2.0, reason=reason,
                           healthy=healthy)
        e = ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=st)
        out += operator_json.derive(shadow, envelope(log, e, 200.0), "1.11.0")
        log(e, ts=200.0)
    assert [o["type"] for o in out] == ["TASK_UPDATED"]  # the plain repeat of TASK_RUNNING sends none
    assert out[0]["task_updated"]["status"]["healthy"] is True
