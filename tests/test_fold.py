"""Unit tests for master.state: the pure fold `apply(state, envelope)`."""

import msgspec
import pytest

from eventstore import events as ev
from eventstore.resources import DiskVolume, Persistence, Resource, Resources
from master.state import State, apply, clone, state_hash


def alloc_count(state, fid: str, role: str = "*") -> int:
    """How many times the allocator has allocated to (framework, role): the DRF tie-break."""
    from master.allocation import allocator_of
    return allocator_of(state).fw_sorters[role].count(fid)

CID = "c1"
AGENT_RES = "cpus:4;mem:4096;disk:8192;ports:[31000-32000]"


def res(text: str) -> list:
    return Resources.parse(text).to_list()


def info(name: str = "fw", roles=("*",), caps=()) -> ev.FrameworkInfo:
    return ev.FrameworkInfo(name=name, user="u", roles=list(roles), capabilities=list(caps))


class Log:
    """Feeds events into a state with consecutive indexes and a controlled clock."""

    def __init__(self, state: State | None = None, ts: float = 100.0):
        self.state = state or State()
        self.ts = ts
        self.envelopes: list[ev.Envelope] = []

    def __call__(self, event, ts: float | None = None, term: int = 1) -> State:
        if ts is not None:
            self.ts = float(ts)
        env = ev.Envelope(index=self.state.index + 1, term=term, ts=self.ts, event=event)
        self.envelopes.append(env)
        return apply(self.state, env)


def base(ts: float = 100.0) -> Log:
    log = Log(ts=ts)
    log(ev.ClusterCreated(cluster_id=CID))
    log(ev.LeaderElected(leader_id="m1:1", http="m1:5050", term=1, config={"allocation_interval": 1.0}))
    return log


def with_fw_and_agent(ts: float = 100.0) -> Log:
    log = base(ts)
    log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES)))
    log(ev.FrameworkSubscribed(framework_id="F1", info=info()))
    return log


def offer(oid: str, fid: str = "F1", aid: str = "A1", role: str = "*", text: str = AGENT_RES) -> ev.OfferRecord:
    return ev.OfferRecord(offer_id=oid, framework_id=fid, agent_id=aid, role=role, resources=res(text))


def task(tid: str, text: str = "cpus:1;mem:128", aid: str = "A1") -> ev.TaskSpec:
    return ev.TaskSpec(task_id=tid, name=tid, agent_id=aid, resources=res(text),
                       command=ev.CommandSpec(value="sleep 100"))


def status(state: str, uuid: str | None = None, ts: float = 0.0) -> ev.TaskStatus:
    return ev.TaskStatus(state=state, source="SOURCE_AGENT", timestamp=ts, uuid=uuid)


# ---- indexes and envelopes ----------------------------------------------------------------------


def test_index_must_follow():
    s = State()
    with pytest.raises(ValueError):
        apply(s, ev.Envelope(index=2, term=1, ts=1.0, event=ev.ClusterCreated(cluster_id=CID)))
    with pytest.raises(ValueError):
        apply(s, ev.Envelope(index=0, term=1, ts=1.0, event=ev.ClusterCreated(cluster_id=CID)))
    apply(s, ev.Envelope(index=1, term=1, ts=1.0, event=ev.ClusterCreated(cluster_id=CID)))
    assert s.index == 1 and s.cluster_id == CID and s.ts == 1.0
    with pytest.raises(ValueError):  # replaying the same index again
        apply(s, ev.Envelope(index=1, term=1, ts=1.0, event=ev.ClusterCreated(cluster_id=CID)))
    assert s.index == 1


def test_ts_never_goes_backwards():
    log = base(ts=50.0)
    log(ev.AgentDisconnected(agent_id="nope"), ts=40.0)
    assert log.state.ts == 50.0
    log(ev.AgentDisconnected(agent_id="nope"), ts=60.0)
    assert log.state.ts == 60.0


def test_leader_elected_records_leader():
    log = base()
    s = log.state
    assert (s.term, s.leader_id, s.leader_http, s.elected_at) == (1, "m1:1", "m1:5050", 100.0)
    assert s.config == {"allocation_interval": 1.0}


# ---- frameworks -------------------------------------------------------------------------------------


def test_framework_subscribe():
    log = base()
    s = log(ev.FrameworkSubscribed(framework_id="F1", info=info(roles=["a", "b"]), suppressed_roles=["b"]), ts=101)
    fw = s.frameworks["F1"]
    assert fw.connected and fw.active
    assert fw.registered_at == 101.0
    assert fw.suppressed_roles == ["b"]
    assert fw.info.roles == ["a", "b"]
    assert s.tasks["F1"] == {}
    assert s.next_framework == 1


def test_framework_resubscribe_drops_offers_silently_and_reactivates():
    log = with_fw_and_agent()
    log(ev.FrameworkSubscribed(framework_id="F2", info=info("other")))
    log(ev.OffersMade(offers=[offer("O1", text="cpus:2"), offer("O2", fid="F2", text="cpus:2")], trigger="t"))
    log(ev.FrameworkDisconnected(framework_id="F1"), ts=110)
    s = log.state
    assert not s.frameworks["F1"].connected and not s.frameworks["F1"].active
    assert s.frameworks["F1"].disconnected_at == 110.0
    log(ev.OffersMade(offers=[offer("O3", text="cpus:2")], trigger="t"))
    s = log(ev.FrameworkSubscribed(framework_id="F1", info=info("renamed"), suppressed_roles=["*"], resubscribe=True),
            ts=120)
    fw = s.frameworks["F1"]
    assert fw.connected and fw.active
    assert fw.reregistered_at == 120.0 and fw.registered_at == 100.0
    assert fw.disconnected_at is None
    assert fw.info.name == "renamed"
    assert fw.suppressed_roles == ["*"]
    assert sorted(s.offers) == ["O2"]  # F1's offers vanished; F2's untouched
    assert s.next_framework == 2


def test_framework_disconnect_drops_offers_and_filters():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1", text="cpus:1"), offer("O2", text="mem:10")], trigger="t"))
    log(ev.OffersDeclined(framework_id="F1", offer_ids=["O1"], refuse_seconds=5.0))
    assert len(log.state.filters) == 1
    s = log(ev.FrameworkDisconnected(framework_id="F1"), ts=105)
    assert s.offers == {}
    assert s.filters == []
    assert s.frameworks["F1"].disconnected_at == 105.0
    log(ev.FrameworkDisconnected(framework_id="unknown"))  # ignored


def test_framework_removal_kills_tasks_and_remembers_id():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[task("t1"), task("t2")], refuse_seconds=5.0))
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_RUNNING", "u1")))
    log(ev.OffersMade(offers=[offer("O2", text="cpus:1")], trigger="t"))
    s = log(ev.FrameworkRemoved(framework_id="F1", reason="teardown"), ts=200)
    assert "F1" not in s.frameworks
    assert "F1" not in s.tasks
    assert s.removed_frameworks == {"F1": 200.0}
    assert s.offers == {} and s.filters == []
    done = {t.task_id: t for t in s.completed_tasks}
    assert sorted(done) == ["t1", "t2"]
    for t in done.values():
        assert t.state == "TASK_KILLED"
        assert t.pending is None
        last = t.statuses[-1]
        assert (last.state, last.source, last.reason, last.timestamp) == (
            "TASK_KILLED", "SOURCE_MASTER", "REASON_FRAMEWORK_REMOVED", 200.0)
    assert s.used_on_agent("A1") == Resources()
    assert s.available_on_agent("A1") == Resources.parse(AGENT_RES)
    log(ev.FrameworkRemoved(framework_id="F1", reason="teardown"))  # second removal ignored
    assert s.removed_frameworks == {"F1": 200.0}


def test_suppress_and_revive():
    log = base()
    log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES)))
    log(ev.FrameworkSubscribed(framework_id="F1", info=info(roles=["a", "b"])))
    log(ev.OffersMade(offers=[offer("O1", role="a", text="cpus:1"), offer("O2", role="b", text="cpus:1")],
                      trigger="t"))
    log(ev.OffersDeclined(framework_id="F1", offer_ids=["O1", "O2"], refuse_seconds=60.0))
    s = log(ev.RolesSuppressed(framework_id="F1", roles=["b", "a"]))
    assert s.frameworks["F1"].suppressed_roles == ["a", "b"]
    s = log(ev.RolesRevived(framework_id="F1", roles=["a"]))
    assert s.frameworks["F1"].suppressed_roles == ["b"]
    assert [f.role for f in s.filters] == ["b"]  # a's filters cleared, b's kept


# ---- agents -------------------------------------------------------------------------------------


def test_agent_register_reregister_disconnect():
    log = base()
    s = log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:5051", resources=res(AGENT_RES),
                               attributes=[ev.Label("rack", "r1")]), ts=101)
    a = s.agents["A1"]
    assert a.connected and a.registered_at == 101.0 and a.total() == Resources.parse(AGENT_RES)
    assert s.next_agent == 1
    s = log(ev.AgentDisconnected(agent_id="A1"))
    assert not s.agents["A1"].connected
    log(ev.FrameworkSubscribed(framework_id="F1", info=info()))
    t = task("t9")
    s = log(ev.AgentReregistered(agent_id="A1", hostname="h1b", http="h1:5052", resources=res("cpus:8;mem:64"),
                                 tasks=[ev.TaskReport(framework_id="F1", task_id="t9", state="TASK_RUNNING", spec=t),
                                        ev.TaskReport(framework_id="F9", task_id="x", state="TASK_RUNNING",
                                                      spec=task("x"))]),
            ts=130)
    a = s.agents["A1"]
    assert a.connected and a.reregistered_at == 130.0 and a.registered_at == 101.0
    assert (a.hostname, a.http, a.attributes) == ("h1b", "h1:5052", [])
    assert a.total() == Resources.parse("cpus:8;mem:64")
    # The unknown task of a known framework is adopted; an unknown framework's is not.
    assert s.task("F1", "t9").state == "TASK_RUNNING"
    assert "F9" not in s.tasks
    # A re-registration of an agent this log never saw adds it.
    s = log(ev.AgentReregistered(agent_id="A2", hostname="h2", http="h2:5051", resources=res("cpus:1")))
    assert s.agents["A2"].connected and s.agents["A2"].registered_at == 130.0


# ---- offers ------------------------------------------------------------------------------------


def test_offers_made_counts_allocations_and_ids():
    log = with_fw_and_agent()
    s = log(ev.OffersMade(offers=[offer("O1", text="cpus:1"), offer("O2", text="mem:10")], trigger="t"), ts=150)
    assert sorted(s.offers) == ["O1", "O2"]
    assert s.offers["O1"].made_at == 150.0
    assert alloc_count(s, "F1") == 2
    assert s.next_offer == 2
    assert s.offered_on_agent("A1") == Resources.parse("cpus:1;mem:10")
    assert s.offered_to_framework("F1") == Resources.parse("cpus:1;mem:10")
    assert s.available_on_agent("A1") == Resources.parse(AGENT_RES) - Resources.parse("cpus:1;mem:10")


def test_offers_declined_installs_filter():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    s = log(ev.OffersDeclined(framework_id="F1", offer_ids=["O1", "gone"], refuse_seconds=7.5), ts=300)
    assert s.offers == {}
    [f] = s.filters
    assert (f.framework_id, f.role, f.agent_id, f.expires_at) == ("F1", "*", "A1", 307.5)
    assert Resources(f.resources) == Resources.parse(AGENT_RES)


def test_offers_declined_zero_refuse_installs_no_filter():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    s = log(ev.OffersDeclined(framework_id="F1", offer_ids=["O1"], refuse_seconds=0.0))
    assert s.offers == {} and s.filters == []


def test_offers_made_drops_expired_filters():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    log(ev.OffersDeclined(framework_id="F1", offer_ids=["O1"], refuse_seconds=5.0), ts=100)
    s = log(ev.OffersMade(offers=[], trigger="t"), ts=104.9)
    assert len(s.filters) == 1
    s = log(ev.OffersMade(offers=[], trigger="t"), ts=105.0)
    assert s.filters == []


def test_offers_accepted_launches_tasks_and_filters_leftover():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    spec = task("t1", "cpus:1;mem:128;ports:[31000-31000]")
    s = log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[spec], refuse_seconds=5.0), ts=200)
    assert s.offers == {}
    t = s.task("F1", "t1")
    assert t.state == "TASK_STAGING" and t.launched_at == 200.0 and t.spec == spec
    assert not t.terminal
    [f] = s.filters
    assert f.expires_at == 205.0 and f.agent_id == "A1" and f.role == "*"
    assert Resources(f.resources) == Resources.parse("cpus:3;mem:3968;disk:8192;ports:[31001-32000]")
    assert s.used_on_agent("A1") == Resources.parse("cpus:1;mem:128;ports:[31000-31000]")
    assert s.used_by_framework("F1") == Resources.parse("cpus:1;mem:128;ports:[31000-31000]")
    assert s.available_on_agent("A1") == Resources.parse("cpus:3;mem:3968;disk:8192;ports:[31001-32000]")


def test_offers_accepted_everything_used_installs_no_filter():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1", text="cpus:1;mem:128")], trigger="t"))
    s = log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[task("t1")], refuse_seconds=5.0))
    assert s.filters == []


def test_offers_rescinded():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1", text="cpus:1"), offer("O2", text="cpus:1")], trigger="t"))
    s = log(ev.OffersRescinded(offer_ids=["O1", "unknown"], reason="offer_timeout"))
    assert sorted(s.offers) == ["O2"]
    assert s.filters == []


def test_kill_requested():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[task("t1")], refuse_seconds=0.0))
    s = log(ev.TaskKillRequested(framework_id="F1", task_id="t1", grace_seconds=3.0))
    t = s.task("F1", "t1")
    assert t.kill_requested and t.kill_grace_seconds == 3.0


# ---- status updates ----------------------------------------------------------------------------


def launched() -> Log:
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="t"))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[task("t1")], refuse_seconds=0.0))
    return log


def test_status_with_uuid_pending_until_ack_then_completed():
    log = launched()
    s = log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_RUNNING", "u1")))
    t = s.task("F1", "t1")
    assert t.state == "TASK_RUNNING" and t.pending.uuid == "u1"
    s = log(ev.StatusAcknowledged(framework_id="F1", task_id="t1", uuid="u1"))
    assert s.task("F1", "t1").pending is None
    s = log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_FINISHED", "u2")))
    t = s.task("F1", "t1")
    assert t.terminal and t.pending.uuid == "u2"
    assert s.used_on_agent("A1") == Resources()  # resources are free as soon as the task is terminal
    assert s.completed_tasks == []  # ...but it stays until the framework acknowledges
    s = log(ev.StatusAcknowledged(framework_id="F1", task_id="t1", uuid="wrong"))
    assert s.task("F1", "t1") is not None
    s = log(ev.StatusAcknowledged(framework_id="F1", task_id="t1", uuid="u2"))
    assert s.task("F1", "t1") is None
    [done] = s.completed_tasks
    assert done.task_id == "t1" and done.state == "TASK_FINISHED"
    assert [st.state for st in done.statuses] == ["TASK_RUNNING", "TASK_FINISHED"]


def test_terminal_status_without_uuid_completes_immediately():
    log = launched()
    s = log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_FAILED")))
    assert s.task("F1", "t1") is None
    assert [t.state for t in s.completed_tasks] == ["TASK_FAILED"]
    s = log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_RUNNING")))
    assert s.task("F1", "t1") is None  # updates for completed / unknown tasks are ignored
    assert len(s.completed_tasks) == 1


def test_update_after_terminal_does_not_resurrect_task():
    """Mesos: once a task is terminal its state never changes again (resource accounting relies on it)."""
    log = launched()
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_FINISHED", "u1")))
    s = log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_RUNNING", "u2")))
    t = s.task("F1", "t1")
    assert t.state == "TASK_FINISHED" and t.terminal
    assert s.used_on_agent("A1") == Resources()


# ---- leader change -----------------------------------------------------------------------------


def test_leader_elected_disconnects_everyone_and_drops_offers():
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1", text="cpus:1")], trigger="t"))
    s = log(ev.LeaderElected(leader_id="m2:1", http="m2:5050", term=2, config={"x": 1}), ts=500)
    fw = s.frameworks["F1"]
    assert not fw.connected and not fw.active
    assert fw.disconnected_at == 500.0 and fw.disconnected_by_failover
    assert not s.agents["A1"].connected
    assert s.offers == {}
    assert (s.term, s.leader_id, s.elected_at, s.config) == (2, "m2:1", 500.0, {"x": 1})
    # Re-subscribing clears the failover mark.
    s = log(ev.FrameworkSubscribed(framework_id="F1", info=info(), resubscribe=True))
    assert s.frameworks["F1"].connected and not s.frameworks["F1"].disconnected_by_failover


def test_leader_elected_keeps_earlier_disconnect_time():
    log = with_fw_and_agent()
    log(ev.FrameworkDisconnected(framework_id="F1"), ts=150)
    s = log(ev.LeaderElected(leader_id="m2:1", http="m2:5050", term=2), ts=500)
    assert s.frameworks["F1"].disconnected_at == 150.0
    assert not s.frameworks["F1"].disconnected_by_failover


# ---- encoding ----------------------------------------------------------------------------------


def one_of_each() -> list:
    spec = task("t1")
    st = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_AGENT", timestamp=1.5, uuid="dXVpZA==", reason="R",
                       message="m", container_id="c", unreachable_time=1.25)
    return [
        ev.ClusterCreated(cluster_id=CID),
        ev.LeaderElected(leader_id="m1", http="m1:5050", term=3, config={"allocation_interval": 1.0, "x": [1, "y"]}),
        ev.FrameworkSubscribed(framework_id="F1", info=ev.FrameworkInfo(
            name="n", user="u", roles=["a", "b/c"], multi_role=True, capabilities=["MULTI_ROLE"], failover_timeout=9.0,
            checkpoint=True, principal="p", hostname="h", webui_url="w", labels=[ev.Label("k", "v"), ev.Label("k2")]),
            suppressed_roles=["a"], resubscribe=True),
        ev.FrameworkDisconnected(framework_id="F1"),
        ev.FrameworkRemoved(framework_id="F1", reason="teardown"),
        ev.RolesSuppressed(framework_id="F1", roles=["a"]),
        ev.RolesRevived(framework_id="F1", roles=["a"]),
        ev.WeightsUpdated(weights={"a": 2.0, "b/c": 0.5}),
        ev.QuotaUpdated(role="a", guarantees={"cpus": 1.0}, limits={"cpus": 4.0, "mem": 512.0}),
        ev.AgentRegistered(agent_id="A1", hostname="h", http="h:1", resources=res(AGENT_RES + ";z:{a,b}"),
                           attributes=[ev.Label("rack", "1")]),
        ev.AgentReregistered(agent_id="A1", hostname="h", http="h:1", resources=res("cpus:1"),
                             tasks=[ev.TaskReport(framework_id="F1", task_id="t1", state="TASK_RUNNING", spec=spec),
                                    ev.TaskReport(framework_id="F1", task_id="t2", state="TASK_LOST")]),
        ev.AgentDisconnected(agent_id="A1"),
        ev.AgentUnreachable(agent_id="A1", unreachable_time=12.5),
        ev.OffersMade(offers=[offer("O1")], trigger="periodic", decisions=[ev.AgentDecision(
            agent_id="A1", order=[ev.Candidate("F1", "*", 0.25, 3)], skipped=[["F2", "why"]])]),
        ev.OffersRescinded(offer_ids=["O1"], reason="offer_timeout"),
        ev.OffersDeclined(framework_id="F1", offer_ids=["O1"], refuse_seconds=5.0),
        ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[ev.TaskSpec(
            task_id="t1", name="n", agent_id="A1", resources=res("cpus:1"),
            command=ev.CommandSpec(shell=False, value="/bin/x", arguments=["a"], env=[ev.Label("E", "1")], user="u"),
            image="alpine", labels=[ev.Label("l")], kill_grace_seconds=2.0, data="ZGF0YQ==")],
            refuse_seconds=1.0, rejected=[ev.Rejection(task_id="t2", state="TASK_ERROR", reason="R", message="m")],
            operations=[ev.ResourceOperation("RESERVE", res("disk(db):10"))]),
        ev.AgentOperationsApplied(agent_id="A1", call="CREATE_VOLUMES", principal="ops", operations=[
            ev.ResourceOperation("CREATE", [Resource("disk", "SCALAR", scalar=10.0, role="db",
                                                     persistence=Persistence("pv1", "ops"),
                                                     volume=DiskVolume("data", "RW"))])]),
        ev.TaskKillRequested(framework_id="F1", task_id="t1", grace_seconds=1.0),
        ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=st),
        ev.StatusAcknowledged(framework_id="F1", task_id="t1", uuid="dXVpZA=="),
    ]


def test_one_of_each_covers_the_catalogue():
    assert {ev.event_type(e) for e in one_of_each()} == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: ev.event_type(e))
def test_event_round_trip(event):
    data = ev.encode_event(event)
    back = ev.decode_event(data)
    assert type(back) is type(event)
    assert back == event
    assert ev.encode_event(back) == data
    assert ev.decode_event(data.decode()) == event
    # Inside a batch (a Raft entry) too, which carries exactly the bytes the store keeps.
    batch = ev.Batch(term=1, ts=1.0, events=[event], proposal="p")
    back_batch = ev.decode_batch(ev.encode_batch(batch))
    assert (back_batch.term, back_batch.ts, back_batch.events, back_batch.proposal) == (1, 1.0, [event], "p")
    assert back_batch.payloads == [data]


def test_unknown_event_type_fails_loudly():
    with pytest.raises(ev.UnknownEvent):
        ev.decode_event(b'{"type":"SOMETHING_NEW","x":1}')


def test_malformed_known_event_is_not_unknown():
    with pytest.raises(msgspec.ValidationError):
        ev.decode_event(b'{"type":"FRAMEWORK_DISCONNECTED"}')


# ---- hashes and clones -------------------------------------------------------------------------


def scenario() -> Log:
    log = launched()
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_RUNNING", "u1")))
    log(ev.OffersMade(offers=[offer("O2", text="cpus:3")], trigger="t"))
    log(ev.OffersDeclined(framework_id="F1", offer_ids=["O2"], refuse_seconds=5.0))
    log(ev.FrameworkSubscribed(framework_id="F2", info=info("two", roles=["a"])))
    return log


def test_state_hash_equal_for_same_events():
    a, b = scenario(), scenario()
    assert state_hash(a.state) == state_hash(b.state)
    # Replaying the recorded envelopes (through the wire encoding) into a fresh state agrees too.
    fresh = State()
    for env in a.envelopes:
        data = msgspec.json.encode(env)
        apply(fresh, msgspec.json.decode(data, type=ev.Envelope))
    assert state_hash(fresh) == state_hash(a.state)


def test_state_hash_differs_for_different_events():
    a, b = scenario(), scenario()
    b(ev.AgentDisconnected(agent_id="A1"))
    assert state_hash(a.state) != state_hash(b.state)


def test_clone_is_equal_and_independent():
    log = scenario()
    c = clone(log.state)
    assert state_hash(c) == state_hash(log.state)
    assert c == log.state
    log(ev.FrameworkDisconnected(framework_id="F2"))
    assert state_hash(c) != state_hash(log.state)
    assert c.frameworks["F2"].connected


def test_clone_of_empty_state():
    assert state_hash(clone(State())) == state_hash(State())
