"""Persistent volumes in the pure core: framework CREATE / DESTROY in ACCEPT (decider, fold, allocator), Mesos's
validation messages, and volumes offered back only to their role."""

from __future__ import annotations

import dataclasses

import pytest

from drover.security.acls import parse as parse_acls
from eventstore import events as ev
from eventstore.resources import Resources
from master import allocation, codec
from master.decide import DecideConfig
from master.decide import scheduler as sd
from master.state import State, apply, state_hash
from tests.test_reservations import bookkeeping

CFG = DecideConfig(allocation_interval=1.0)
FLAGS = "cpus:4;mem:1024;disk:1000"


class Log:
    def __init__(self) -> None:
        self.state = State()
        self.ts = 100.0
        self(ev.ClusterCreated(cluster_id="c"))
        self(ev.LeaderElected(leader_id="m", http="m:1", term=1))
        self(ev.AgentRegistered(agent_id="A1", hostname="a", http="a:1", resources=Resources.parse(FLAGS).to_list()))

    def __call__(self, event: ev.Event) -> None:
        self.ts += 1.0
        apply(self.state, ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event))

    def subscribe(self, fid: str, role: str, caps: tuple[str, ...] = (), principal: str | None = None) -> None:
        self(ev.FrameworkSubscribed(framework_id=fid, info=ev.FrameworkInfo(
            name=fid, user="u", roles=[role], capabilities=list(caps), principal=principal)))

    def offers(self) -> dict[str, ev.OfferRecord]:
        """One allocation run, folded: framework id -> its offer."""
        made = allocation.decide_offers(self.state, self.ts, "t")
        self(made)
        return {o.framework_id: o for o in made.offers}

    def accept(self, fid: str, offer: ev.OfferRecord, *ops: dict, config: DecideConfig = CFG) -> sd.Decision:
        c = codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": fid}, "accept": {
            "offer_ids": [{"value": offer.offer_id}], "operations": list(ops), "filters": {"refuse_seconds": 0}}})
        before = state_hash(self.state)
        d = sd.decide(self.state, c, self.ts, config)
        assert state_hash(self.state) == before and sd.decide(self.state, c, self.ts, config) == d
        for e in d.events:
            ev.encode_event(e)
            self(e)
        return d


def disk(size: float, role: str = "db") -> dict:
    return {"name": "disk", "type": "SCALAR", "scalar": {"value": size},
            "reservations": [{"type": "DYNAMIC", "role": role}]}


def volume(pid: str, size: float = 100, role: str = "db", path: str = "data", mode: str = "RW",
           principal: str | None = None, shared: bool = False) -> dict:
    d = disk(size, role)
    d["disk"] = {"persistence": {"id": pid}, "volume": {"container_path": path, "mode": mode}}
    if principal is not None:
        d["disk"]["persistence"]["principal"] = principal
    if shared:
        d["shared"] = {}
    return d


def reserve(*res: dict) -> dict:
    return {"type": "RESERVE", "reserve": {"resources": list(res)}}


def unreserve(*res: dict) -> dict:
    return {"type": "UNRESERVE", "unreserve": {"resources": list(res)}}


def create(*vols: dict, op_id: str | None = None) -> dict:
    d: dict = {"type": "CREATE", "create": {"volumes": list(vols)}}
    if op_id:
        d["id"] = {"value": op_id}
    return d


def destroy(*vols: dict, op_id: str | None = None) -> dict:
    d: dict = {"type": "DESTROY", "destroy": {"volumes": list(vols)}}
    if op_id:
        d["id"] = {"value": op_id}
    return d


def launch(tid: str, *res: dict) -> dict:
    return {"type": "LAUNCH", "launch": {"task_infos": [{
        "name": tid, "task_id": {"value": tid}, "agent_id": {"value": "A1"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}, *res],
        "command": {"value": "true"}}]}}


def the_accept(d: sd.Decision) -> ev.OffersAccepted:
    (e,) = [e for e in d.events if isinstance(e, ev.OffersAccepted)]
    return e


def dropped(d: sd.Decision) -> list[str]:
    """The OPERATION_ERROR messages of a decision (operations with an id)."""
    return [m.event["update_operation_status"]["status"]["message"] for m in d.messages
            if m.event.get("type") == "UPDATE_OPERATION_STATUS"]


def consistent(log: Log) -> None:
    assert bookkeeping(allocation.allocator_of(log.state)) == bookkeeping(allocation.rebuild(log.state))


def test_reserve_create_and_launch_in_one_accept_then_the_volume_comes_back_only_to_its_role():
    log = Log()
    log.subscribe("DB", "db")
    log.subscribe("WEB", "web")
    offer = log.offers()["DB"]
    d = log.accept("DB", offer, reserve(disk(100)), create(volume("pv1")), launch("t1", volume("pv1")))
    e = the_accept(d)
    assert [op.kind for op in e.operations] == ["RESERVE", "CREATE"] and [t.task_id for t in e.tasks] == ["t1"]
    agent = log.state.agents["A1"]
    assert Resources(agent.dynamic).format() == "disk(db)[pv1:data]:100"
    assert agent.total().format() == "cpus:4;disk:900;disk(db)[pv1:data]:100;mem:1024"
    consistent(log)
    # While the task runs, nobody is offered the volume.
    assert all("pv1" not in Resources(o.resources).format() for o in log.offers().values())
    log(ev.StatusUpdated(framework_id="DB", task_id="t1", agent_id="A1", status=ev.TaskStatus(
        state="TASK_FINISHED", source="SOURCE_AGENT", timestamp=log.ts)))
    consistent(log)
    # Declined offers came back: only the db framework gets the volume, with the same persistence id.
    for fid in ("DB", "WEB"):
        log(ev.RolesRevived(framework_id=fid, roles=[]))
    offers = log.offers()
    assert "disk(db)[pv1:data]:100" in Resources(offers["DB"].resources).format()
    assert all(r.persistence is None for r in offers.get("WEB", ev.OfferRecord(
        offer_id="-", framework_id="WEB", agent_id="A1", role="web", resources=[])).resources)


def test_a_task_may_mount_the_volume_read_only_at_its_own_path_and_destroy_then_unreserve_in_order():
    log = Log()
    log.subscribe("DB", "db")
    log.accept("DB", log.offers()["DB"], reserve(disk(100)), create(volume("pv1")))
    d = log.accept("DB", log.offers()["DB"], launch("ro", volume("pv1", path="snapshot", mode="RO")))
    (t,) = the_accept(d).tasks
    assert [(r.volume.container_path, r.volume.mode) for r in t.resources if r.volume] == [("snapshot", "RO")]
    log(ev.StatusUpdated(framework_id="DB", task_id="ro", agent_id="A1", status=ev.TaskStatus(
        state="TASK_FINISHED", source="SOURCE_AGENT", timestamp=log.ts)))
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    d = log.accept("DB", log.offers()["DB"], destroy(volume("pv1")), unreserve(disk(100)))
    assert [op.kind for op in the_accept(d).operations] == ["DESTROY", "UNRESERVE"]
    assert log.state.agents["A1"].dynamic == []
    assert log.state.agents["A1"].total() == Resources.parse(FLAGS)
    consistent(log)


@pytest.mark.parametrize("ops, message", [
    ([create(volume("pv1"), op_id="x")], "RESOURCE_PROVIDER"),  # an id asks for feedback Drover agents never give
])
def test_an_operation_with_an_id_is_dropped_with_operation_error(ops, message):
    log = Log()
    log.subscribe("DB", "db")
    d = log.accept("DB", log.offers()["DB"], reserve(disk(100)), *ops)
    assert [op.kind for op in the_accept(d).operations] == ["RESERVE"]
    assert any(message in m for m in dropped(d))


def refusal(log: Log, fid: str, *ops: dict, config: DecideConfig = CFG) -> str:
    """Run `ops` as a last operation list; the last one must be dropped; return why (from the decider)."""
    offer = log.offers()[fid]
    c = codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": fid}, "accept": {
        "offer_ids": [{"value": offer.offer_id}], "operations": list(ops), "filters": {"refuse_seconds": 0}}})
    state = log.state
    remaining = Resources(offer.resources)
    checkpointed = Resources(state.agents["A1"].dynamic)
    fw = state.frameworks[fid]
    actor = sd.vol.Actor(fw.info.principal, offer.role, "SHARED_RESOURCES" in fw.info.capabilities)
    why = None
    for op in c.operations:
        assert isinstance(op, sd.ResourceOp)
        assert op.problem is None, op.problem
        why = sd._resource_op_problem(state, op.kind, op.resources, actor, "A1", remaining, checkpointed, config)
        if why is None:
            consumed, converted = sd.conversion(op.kind, op.resources)
            remaining = remaining - consumed + converted
            checkpointed = checkpointed - consumed.reserved() + converted.reserved()
    assert why is not None
    # and the decider itself drops it: the operation does not reach the event
    d = sd.decide(state, c, log.ts, config)
    assert len(the_accept(d).operations) == len(ops) - 1
    for e in d.events:
        log(e)
    return why


def with_volume(shared: bool = False, caps: tuple[str, ...] = ()) -> Log:
    log = Log()
    log.subscribe("DB", "db", caps=caps)
    log.accept("DB", log.offers()["DB"], reserve(disk(300)), create(volume("pv1", shared=shared)))
    return log


def test_create_refusals_carry_mesos_messages():
    log = with_volume()
    assert refusal(log, "DB", create(volume("pv1"))) == "Persistence ID 'pv1' is not unique"
    d = log.accept("DB", log.offers()["DB"], create(volume("pv2"), volume("pv2", 50), op_id="x"))
    assert not the_accept(d).operations and "Persistence ID 'pv2' is not unique" in dropped(d)[0]
    assert refusal(log, "DB", create(volume("pv2", mode="RO"))) == \
        "Not a persistent volume: Read-only persistent volume not supported"
    assert "no SHARED_RESOURCES capability" in refusal(log, "DB", create(volume("pv2", shared=True)))
    # Only dynamically reserved disk (here only 200 of it is left) becomes a volume
    assert "is not reserved dynamically" in refusal(log, "DB", create(volume("pv2", 250)))
    assert refusal(log, "DB", create(disk(10))) == \
        "Not a persistent volume: Resource disk(db):10 does not have DiskInfo"
    # A volume is not reserved or unreserved directly
    assert "cannot be unreserved directly" in refusal(log, "DB", unreserve(volume("pv1")))


def test_create_principal_rules():
    log = Log()
    log.subscribe("DB", "db", principal="alice")
    log.accept("DB", log.offers()["DB"], reserve(disk(300)))
    assert "with no principal set in 'disk.persistence'" in refusal(log, "DB", create(volume("pv1")))
    assert "which does not match a volume in the operation with principal 'bob'" in refusal(
        log, "DB", create(volume("pv1", principal="bob")))
    d = log.accept("DB", log.offers()["DB"], create(volume("pv1", principal="alice")))
    assert [op.kind for op in the_accept(d).operations] == ["CREATE"]


def test_destroy_refusals():
    log = with_volume()
    assert refusal(log, "DB", destroy(volume("nope"))).startswith("Persistent volumes not found: disk(db)[nope:data]")
    assert refusal(log, "DB", destroy(volume("pv1", 50))).startswith("Persistent volumes not found")
    # the volume is used by a task, so it is not in the next offer: DESTROY is refused as not offered
    log.accept("DB", log.offers()["DB"], launch("t1", volume("pv1")))
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    assert refusal(log, "DB", destroy(volume("pv1"))) == "Persistent volumes in use"


def test_a_task_cannot_mount_two_volumes_at_one_path():
    with pytest.raises(codec.TaskInvalid, match="more than one persistent volume at container_path 'data'"):
        codec.parse_resources([volume("pv1"), volume("pv2")], "task.resources")


def test_a_task_cannot_use_a_volume_twice_or_one_it_was_not_offered():
    log = with_volume()
    d = log.accept("DB", log.offers()["DB"], launch("dup", volume("pv1"), volume("pv1", path="again")))
    (rej,) = the_accept(d).rejected
    assert rej.message == "Task uses duplicate persistence ID: pv1"
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    d = log.accept("DB", log.offers()["DB"], launch("other", volume("pv9")))
    (rej,) = the_accept(d).rejected
    assert rej.message.startswith("Task uses more resources")


def test_create_and_destroy_follow_their_acls():
    acls = parse_acls('{"create_volumes": [{"principals": {"values": ["alice"]}, "roles": {"type": "NONE"}}],'
                      ' "destroy_volumes": [{"principals": {"type": "ANY"}, "creator_principals": {"values": ["bob"]}},'
                      '                     {"principals": {"type": "ANY"}, "creator_principals": {"type": "NONE"}}]}')
    cfg = dataclasses.replace(CFG, acls=acls)
    log = Log()
    log.subscribe("DB", "db", principal="alice")
    log.accept("DB", log.offers()["DB"], reserve(disk(300)))
    assert refusal(log, "DB", create(volume("pv1", principal="alice")), config=cfg) == \
        "Not authorized to create resources for role 'db'"
    log.accept("DB", log.offers()["DB"], create(volume("pv1", principal="alice")))
    assert "Not authorized to destroy persistent volume 'pv1'" in refusal(
        log, "DB", destroy(volume("pv1", principal="alice")), config=cfg)


def test_the_commit_gate_refuses_operations_of_the_wrong_shape():
    vol = codec.parse_resources([volume("pv1")], "v").to_list()
    plain = Resources.parse("disk(db):10").to_list()
    for kind, res in (("CREATE", plain), ("DESTROY", plain), ("RESERVE", vol), ("UNRESERVE", vol),
                      ("RESERVE", Resources.parse("disk:10").to_list())):
        with pytest.raises(ev.InvalidEvent):
            ev.encode_event(ev.OffersAccepted(framework_id="F", offer_ids=["o"], tasks=[], refuse_seconds=0.0,
                                              operations=[ev.ResourceOperation(kind, res)]))
    with pytest.raises(ev.InvalidEvent):
        ev.encode_event(ev.AgentOperationsApplied(agent_id="A1", call="CREATE_VOLUMES", operations=[
            ev.ResourceOperation("DESTROY", vol)]))


# ---- operator calls ---------------------------------------------------------------------------------------------

from master.api.operator import parse_agent_operation  # noqa: E402
from master.decide.operator import decide_agent_operation  # noqa: E402


def operator(log: Log, t: str, *res: dict, agent: str = "A1", principal: str | None = "ops",
             config: DecideConfig = CFG) -> sd.Decision:
    field = "volumes" if t in ("CREATE_VOLUMES", "DESTROY_VOLUMES") else "resources"
    c = dataclasses.replace(parse_agent_operation(t, {"agent_id": {"value": agent}, field: list(res)}),
                            principal=principal)
    before = state_hash(log.state)
    d = decide_agent_operation(log.state, c, log.ts, config)
    assert state_hash(log.state) == before and decide_agent_operation(log.state, c, log.ts, config) == d
    for e in d.events:
        ev.encode_event(e)
        log(e)
    return d


def test_operator_reserve_create_destroy_unreserve():
    log = Log()
    d = operator(log, "RESERVE_RESOURCES", disk(200))
    assert d.reply == 202 and [type(e).__name__ for e in d.events] == ["AgentOperationsApplied"]
    d = operator(log, "CREATE_VOLUMES", volume("pv1", principal="ops"))
    (e,) = d.events
    assert (e.call, e.principal, e.operations[0].kind) == ("CREATE_VOLUMES", "ops", "CREATE")
    agent = log.state.agents["A1"]
    assert Resources(agent.dynamic).format() == "disk(db):100;disk(db)[pv1:data]:100"
    consistent(log)
    # the volume is offered to its role with the rest of the reservation
    log.subscribe("DB", "db")
    assert "disk(db)[pv1:data]:100" in Resources(log.offers()["DB"].resources).format()
    # DESTROY while offered: the offer is rescinded first, then the volume goes
    d = operator(log, "DESTROY_VOLUMES", volume("pv1", principal="ops"))
    assert [type(e).__name__ for e in d.events] == ["OffersRescinded", "AgentOperationsApplied"]
    assert d.events[0].reason == "operator_operation"
    d = operator(log, "UNRESERVE_RESOURCES", disk(200))
    assert d.reply == 202 and log.state.agents["A1"].dynamic == []
    assert log.state.agents["A1"].total() == Resources.parse(FLAGS)
    consistent(log)


def test_operator_refusals():
    log = Log()
    r = operator(log, "RESERVE_RESOURCES", disk(10), agent="nope").refusal
    assert r is not None and (r.status, r.message) == (400, "No agent found with specified ID")
    r = operator(log, "RESERVE_RESOURCES", disk(5000)).refusal
    assert r is not None and r.status == 409 and "do not contain disk:5000" in r.message
    r = operator(log, "CREATE_VOLUMES", volume("pv1", principal="ops")).refusal
    assert r is not None and r.status == 400 and r.message.startswith("Invalid CREATE operation on agent A1: ")
    operator(log, "RESERVE_RESOURCES", disk(200))
    operator(log, "CREATE_VOLUMES", volume("pv1", principal="ops"))
    for t, res, text in (
            ("CREATE_VOLUMES", volume("pv1", principal="ops"), "Persistence ID 'pv1' is not unique"),
            ("CREATE_VOLUMES", volume("pv2"), "with no principal set in 'disk.persistence'"),
            ("CREATE_VOLUMES", volume("pv2", mode="RO", principal="ops"), "Read-only persistent volume not supported"),
            ("DESTROY_VOLUMES", volume("pv9"), "Persistent volumes not found"),
            ("UNRESERVE_RESOURCES", volume("pv1"), "cannot be unreserved directly"),
            ("UNRESERVE_RESOURCES", disk(150), "is not dynamically reserved"),
            ("CREATE_VOLUMES", dict(volume("pv3"), shared={}, disk={"volume": {"container_path": "x", "mode": "RW"}}),
             "Non-persistent volume not supported")):
        r = operator(log, t, res).refusal
        assert r is not None and r.status == 400 and text in r.message, (t, r)
    # in use by a task: 400, as Mesos's validation
    log.subscribe("DB", "db")
    log.accept("DB", log.offers()["DB"], launch("t1", volume("pv1")))
    r = operator(log, "DESTROY_VOLUMES", volume("pv1", principal="ops")).refusal
    assert r is not None and (r.status, r.message) == (400, "Invalid DESTROY operation on agent A1: Persistent volumes "
                                                            "in use")


def test_reserve_makes_dynamic_reservations_for_one_role_only():
    log = Log()
    static = dict(disk(10), reservations=[{"type": "STATIC", "role": "db"}])
    r = operator(log, "RESERVE_RESOURCES", static).refusal
    assert r is not None and r.status == 400 and "RESERVE makes DYNAMIC reservations, not STATIC" in r.message
    refined = dict(disk(10), reservations=[{"type": "DYNAMIC", "role": "db"}, {"type": "DYNAMIC", "role": "db/x"}])
    r = operator(log, "RESERVE_RESOURCES", refined).refusal
    assert r is not None and r.status == 400 and "Reservation refinement" in r.message
    log.subscribe("DB", "db")
    d = log.accept("DB", log.offers()["DB"], dict(reserve(static), id={"value": "r1"}))
    assert not the_accept(d).operations and "not STATIC" in dropped(d)[0]


def test_operator_calls_follow_their_acls():
    acls = parse_acls('{"reserve_resources": [{"principals": {"values": ["ops"]}, "roles": {"values": ["db"]}},'
                      '                       {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}}]}')
    cfg = dataclasses.replace(CFG, acls=acls)
    log = Log()
    r = operator(log, "RESERVE_RESOURCES", disk(10), principal="eve", config=cfg).refusal
    assert r is not None and (r.status, r.message) == (403, "Not authorized to reserve resources for role 'db'")
    assert operator(log, "RESERVE_RESOURCES", disk(10), principal="ops", config=cfg).reply == 202


def test_agent_operations_fold_only_what_is_unallocated():
    """The fold skips an operation whose resources are not free (never committed by the decider)."""
    log = Log()
    log.subscribe("DB", "*")
    log.offers()  # everything is offered
    before = state_hash(log.state)
    log(ev.AgentOperationsApplied(agent_id="A1", call="RESERVE_RESOURCES", operations=[
        ev.ResourceOperation("RESERVE", Resources.parse("disk(db):10").to_list())]))
    assert log.state.agents["A1"].dynamic == [] and state_hash(log.state) != before  # only the index moved
    consistent(log)


# ---- agents re-registering --------------------------------------------------------------------------------------

from master.decide.agents import AgentSubscribe, decide_agent_subscribe  # noqa: E402


def test_an_adopted_task_on_a_volume_takes_it_out_of_offers():
    """A re-registering agent reports a task the log never saw, on a volume an offer holds: the offer is rescinded
    in the same decision, else the volume would go to another task while this one writes to it."""
    log = Log()
    log.subscribe("DB", "db")
    operator(log, "RESERVE_RESOURCES", disk(400))
    operator(log, "CREATE_VOLUMES", volume("pv2", 50, principal="ops"))
    offer = log.offers()["DB"]
    spec = ev.TaskSpec(task_id="ghost", name="g", agent_id="A1", role="db", command=ev.CommandSpec(value="true"),
                       resources=list(codec.parse_resources([volume("pv2", 50)], "r")))
    sub = AgentSubscribe(hostname="a", http="a:1", resources=Resources.parse(FLAGS).to_list(), agent_id="A1",
                         tasks=[ev.TaskReport(framework_id="DB", task_id="ghost", state="TASK_RUNNING", spec=spec)])
    d = decide_agent_subscribe(log.state, sub, log.ts, CFG)
    assert [type(e).__name__ for e in d.events] == ["OffersRescinded", "AgentReregistered"]
    assert d.events[0].offer_ids == [offer.offer_id]
    for e in d.events:
        log(e)
    consistent(log)
    assert all("pv2" not in Resources(o.resources).format() for o in log.offers().values())


def test_a_known_agent_whose_resources_no_longer_hold_its_volumes_is_refused():
    log = Log()
    operator(log, "RESERVE_RESOURCES", disk(800))
    operator(log, "CREATE_VOLUMES", volume("pv1", 100, principal="ops"))
    small = AgentSubscribe(hostname="a", http="a:1", resources=Resources.parse("cpus:4;mem:1024;disk:500").to_list(),
                           agent_id="A1")
    d = decide_agent_subscribe(log.state, small, log.ts, CFG)
    assert d.refusal is not None and d.refusal.status == 400
    assert "no longer hold the reservations and persistent volumes" in d.refusal.message
