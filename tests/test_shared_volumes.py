"""Shared persistent volumes in the pure core (issue 13 step 7, Mesos semantics): a shared volume stays offerable
while offers and tasks hold it, is offered at most once per agent per allocation run, never to a framework without
SHARED_RESOURCES, and several tasks of one ACCEPT may use one offered copy (the fold allocates the others). At every
step the fold's allocator agrees with one rebuilt from the state, and a snapshot restores the same state."""

from __future__ import annotations

import msgspec

from eventstore import events as ev
from eventstore.resources import Resources, key_of
from master import allocation
from master.state import decode_snapshot, encode_snapshot, state_hash
from tests.test_reservations import bookkeeping
from tests.test_volumes import Log, create, destroy, disk, dropped, launch, refusal, reserve, the_accept, volume

SHARED = ("SHARED_RESOURCES",)
PV1 = "disk(db)[pv1:data]<SHARED x1>:100"


def books(a) -> tuple:
    """Everything the allocator keeps that a rebuild from the state must give again (allocation counts aside: a
    rebuild restarts them): `bookkeeping`, the allocation totals, each holder's allocation (records by key, with
    their copies) and the sorters' allocations (shared volumes counted once per holder)."""
    held = sorted((aid, fid, role, tuple((key_of(r), r.scalar, r.copies) for r in res))
                  for aid, ag in a.agents.items() for (fid, role), res in ag.allocated.items())
    sorters = [("", c, sorted(a.role_sorter.allocation(c).items())) for c in sorted(a.role_sorter.clients)]
    sorters += [(role, c, sorted(s.allocation(c).items())) for role, s in sorted(a.fw_sorters.items())
                for c in sorted(s.clients)]
    flags = sorted((fid, fw.shared_ok) for fid, fw in a.frameworks.items())
    return bookkeeping(a), sorted(a.alloc_total.items()), held, sorters, flags


def check(log: Log) -> None:
    """The fold invariant and the snapshot round trip, after a step."""
    live = allocation.allocator_of(log.state)
    assert books(live) == books(allocation.rebuild(log.state))
    again = decode_snapshot(encode_snapshot(log.state))
    assert state_hash(again) == state_hash(log.state)
    assert books(allocation.allocator_of(again)) == books(live)


def finish(log: Log, fid: str, tid: str) -> None:
    log(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id="A1", status=ev.TaskStatus(
        state="TASK_FINISHED", source="SOURCE_AGENT", timestamp=log.ts)))
    check(log)


def shared_volume(*others: tuple[str, str, tuple[str, ...]]) -> Log:
    """An agent whose db reservation holds shared volume pv1, made by framework DB (role db, SHARED_RESOURCES);
    `others`: more frameworks (id, role, capabilities) subscribed after."""
    log = Log()
    log.subscribe("DB", "db", caps=SHARED)
    d = log.accept("DB", log.offers()["DB"], reserve(disk(300)), create(volume("pv1", shared=True)))
    assert [op.kind for op in the_accept(d).operations] == ["RESERVE", "CREATE"]
    for fid, role, caps in others:
        log.subscribe(fid, role, caps=caps)
    check(log)
    return log


def holds(log: Log, fid: str, role: str = "db") -> int:
    """Copies of pv1 held by (framework, role) in the allocator."""
    res = allocation.allocator_of(log.state).agents["A1"].allocated.get((fid, role), Resources())
    return sum(r.copies for r in res if r.shared)


def fmt(o: ev.OfferRecord) -> str:
    return Resources(o.resources).format()


def test_two_tasks_of_one_accept_use_one_offered_copy_and_each_gives_its_own_back():
    log = shared_volume()
    offer = log.offers()["DB"]
    assert PV1 in fmt(offer)
    check(log)
    d = log.accept("DB", offer, launch("t1", volume("pv1", shared=True)),
                   launch("t2", volume("pv1", path="ro", mode="RO", shared=True)))
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["t1", "t2"] and not e.rejected
    # each task carries one copy; the offer held one, the fold allocated the second
    assert all([r.copies for r in t.resources if r.shared] == [1] for t in e.tasks)
    assert holds(log, "DB") == 2
    a = allocation.allocator_of(log.state)
    assert PV1 in a.agents["A1"].available.format()  # still available: it is shared
    assert a.fw_sorters["db"].allocation("DB")["disk"] == 100.0  # counted once, not per copy
    check(log)
    finish(log, "DB", "t1")
    assert holds(log, "DB") == 1 and a.fw_sorters["db"].allocation("DB")["disk"] == 100.0
    finish(log, "DB", "t2")
    assert holds(log, "DB") == 0 and "disk" not in a.fw_sorters["db"].allocation("DB")


def test_while_tasks_run_the_volume_is_offered_again_and_a_third_task_uses_it():
    log = shared_volume()
    log.accept("DB", log.offers()["DB"], launch("t1", volume("pv1", shared=True)),
               launch("t2", volume("pv1", shared=True)))
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    offer = log.offers()["DB"]
    assert PV1 in fmt(offer)  # in use by two tasks, and offered again
    check(log)
    assert holds(log, "DB") == 3  # two tasks and the offer
    d = log.accept("DB", offer, launch("t3", volume("pv1", shared=True)))
    assert [t.task_id for t in the_accept(d).tasks] == ["t3"]
    assert holds(log, "DB") == 3
    check(log)
    for tid in ("t2", "t1", "t3"):
        finish(log, "DB", tid)
    assert holds(log, "DB") == 0


def test_a_task_group_and_tasks_of_one_accept_share_the_offered_copy():
    log = shared_volume()
    group = {"type": "LAUNCH_GROUP", "launch_group": {
        "executor": {"executor_id": {"value": "E1"}, "type": "DEFAULT", "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 10}}]},
        "task_group": {"tasks": [
            {"name": n, "task_id": {"value": n}, "agent_id": {"value": "A1"},
             "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                           volume("pv1", path=f"v{n}", shared=True)],
             "command": {"value": "true"}} for n in ("g1", "g2")]}}}
    d = log.accept("DB", log.offers()["DB"], launch("t1", volume("pv1", shared=True)), group)
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["t1", "g1", "g2"] and not e.rejected
    assert holds(log, "DB") == 3
    check(log)
    for tid in ("g1", "t1", "g2"):
        finish(log, "DB", tid)
    assert holds(log, "DB") == 0


def test_a_framework_without_shared_resources_in_the_role_never_sees_it():
    log = shared_volume(("PLAIN", "db", ()))
    for _ in range(4):
        offers = log.offers()
        check(log)
        assert all(r.persistence is None for r in offers.get("PLAIN", ev.OfferRecord(
            offer_id="-", framework_id="PLAIN", agent_id="A1", role="db", resources=[])).resources)
        # decline everything: the next run offers again, in another order
        for fid, o in sorted(offers.items()):
            log(ev.OffersDeclined(framework_id=fid, offer_ids=[o.offer_id], refuse_seconds=0.0))
        log(ev.RolesSuppressed(framework_id="DB", roles=["db"]))  # the other framework alone next time
    assert "PLAIN" in offers and PV1 not in fmt(offers["PLAIN"])


def test_one_run_offers_the_volume_once_the_next_run_again():
    # DB2 takes any disk, so an offer of the volume alone would be allocatable to it
    log = shared_volume()
    log(ev.FrameworkSubscribed(framework_id="DB2", info=ev.FrameworkInfo(
        name="DB2", user="u", roles=["db"], capabilities=list(SHARED), min_allocatable={"db": [{"disk": 1.0}]})))
    first = log.offers()
    # DB2 comes first (DB has had offers: the DRF tie-break); DB is left with the volume alone, offered already
    assert list(first) == ["DB2"] and PV1 in fmt(first["DB2"])
    check(log)
    # As in Mesos, a shared volume is offered in every run, though offered already: the volume alone, which only
    # DB2 takes (DB needs cpus or mem), and which it then holds twice (one copy per offer)
    for _ in range(2):
        again = log.offers()
        assert [(fid, fmt(o)) for fid, o in again.items()] == [("DB2", PV1)]
        check(log)
    assert holds(log, "DB2") == 3
    a = allocation.allocator_of(log.state)
    assert a.fw_sorters["db"].allocation("DB2")["disk"] == 1000.0  # 700 + 200 + the volume's 100 once


def test_destroy_is_refused_while_tasks_use_it_and_rescinds_every_other_offer_of_it():
    log = shared_volume()
    log.accept("DB", log.offers()["DB"], launch("t1", volume("pv1", shared=True)),
               launch("t2", volume("pv1", shared=True)))
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    assert refusal(log, "DB", destroy(volume("pv1", shared=True))) == \
        "Persistent volumes in use"
    finish(log, "DB", "t1")
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    assert refusal(log, "DB", destroy(volume("pv1", shared=True))) == \
        "Persistent volumes in use"
    finish(log, "DB", "t2")
    # All users gone. Three offers hold the volume: DB's (everything), then the volume alone to DB2 and to DB
    # (both take any disk, so the volume alone is allocatable to them)
    for fid in ("DB", "DB2"):
        log(ev.FrameworkSubscribed(framework_id=fid, info=ev.FrameworkInfo(
            name=fid, user="u", roles=["db"], capabilities=list(SHARED), min_allocatable={"db": [{"disk": 1.0}]})))
    log(ev.RolesSuppressed(framework_id="DB2", roles=["db"]))
    o1 = log.offers()["DB"]
    log(ev.RolesRevived(framework_id="DB2", roles=[]))
    log(ev.RolesSuppressed(framework_id="DB", roles=["db"]))
    o2 = log.offers()["DB2"]
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    log(ev.RolesSuppressed(framework_id="DB2", roles=["db"]))
    o3 = log.offers()["DB"]
    assert PV1 in fmt(o1) and fmt(o2) == fmt(o3) == PV1
    assert holds(log, "DB") == 2 and holds(log, "DB2") == 1
    check(log)
    d = log.accept("DB", o1, destroy(volume("pv1", shared=True)))
    assert not dropped(d) and [op.kind for op in the_accept(d).operations] == ["DESTROY"]
    (rescind,) = [e for e in d.events if isinstance(e, ev.OffersRescinded)]
    # DB2's offer, and DB's own other offer (Mesos rescinds every offer of the agent holding it)
    assert rescind.reason == "volume_destroyed" and rescind.offer_ids == sorted([o2.offer_id, o3.offer_id])
    assert not log.state.offers
    agent = log.state.agents["A1"]
    assert Resources(agent.dynamic).format() == "disk(db):300" and "pv1" not in agent.total().format()
    assert "pv1" not in allocation.allocator_of(log.state).agents["A1"].available.format()
    check(log)


def test_snapshots_from_before_shared_ok_load_it_from_the_frameworks_capabilities():
    log = shared_volume(("PLAIN", "db", ()))
    log.offers()
    snap = msgspec.msgpack.decode(encode_snapshot(log.state))
    frameworks = snap["allocator"]["frameworks"]
    assert sorted((f[0], f[6]) for f in frameworks) == [("DB", True), ("PLAIN", False)]
    for f in frameworks:
        del f[6:]  # as written before shared volumes
    old = decode_snapshot(msgspec.msgpack.encode(snap))
    assert state_hash(old) == state_hash(log.state)
    assert books(allocation.allocator_of(old)) == books(allocation.allocator_of(log.state))


def test_a_volume_mounted_elsewhere_by_a_task_comes_back_to_the_offers_as_itself():
    """Found while here: a non-shared volume a task mounted read-only at its own path came back to `available`
    (and the next offers) with the task's path and mode; the agent's total has the volume's own."""
    log = Log()
    log.subscribe("DB", "db")
    log.accept("DB", log.offers()["DB"], reserve(disk(100)), create(volume("pv1")))
    log.accept("DB", log.offers()["DB"], launch("ro", volume("pv1", path="snapshot", mode="RO")))
    finish(log, "DB", "ro")
    available = allocation.allocator_of(log.state).agents["A1"].available.format()
    assert "disk(db)[pv1:data]:100" in available and "snapshot" not in available
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    assert "disk(db)[pv1:data]:100" in fmt(log.offers()["DB"])


def test_an_operator_destroy_rescinds_every_offer_holding_the_shared_volume():
    from tests.test_volumes import operator

    log = shared_volume(("DB2", "db", SHARED))
    offers = log.offers()
    (holder,) = [o for o in offers.values() if PV1 in fmt(o)]
    d = log.accept(holder.framework_id, holder, launch("t1", volume("pv1", shared=True)))
    assert [t.task_id for t in the_accept(d).tasks] == ["t1"]
    r = operator(log, "DESTROY_VOLUMES", volume("pv1", shared=True)).refusal
    assert r is not None and r.status == 400 and r.message.endswith("Persistent volumes in use")
    finish(log, holder.framework_id, "t1")
    for fid in ("DB", "DB2"):
        log(ev.RolesRevived(framework_id=fid, roles=[]))
    offers = log.offers()
    held = sorted(o.offer_id for o in offers.values() if PV1 in fmt(o))
    assert held
    d = operator(log, "DESTROY_VOLUMES", volume("pv1", shared=True))
    assert d.reply == 202
    rescind = d.events[0]
    assert isinstance(rescind, ev.OffersRescinded) and set(held) <= set(rescind.offer_ids)
    assert all("pv1" not in fmt(o) for o in log.state.offers.values())
    assert "pv1" not in log.state.agents["A1"].total().format()
    check(log)


def test_task_group_rules_for_volumes():
    log = shared_volume()
    log.accept("DB", log.offers()["DB"], create(volume("pv2", path="other")))

    def group(executor_extra: list, *task_volumes: dict) -> dict:
        return {"type": "LAUNCH_GROUP", "launch_group": {
            "executor": {"executor_id": {"value": "E"}, "type": "DEFAULT", "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 10}}, *executor_extra]},
            "task_group": {"tasks": [
                {"name": f"g{i}", "task_id": {"value": f"g{i}"}, "agent_id": {"value": "A1"},
                 "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}, v],
                 "command": {"value": "true"}} for i, v in enumerate(task_volumes)]}}}

    log(ev.RolesRevived(framework_id="DB", roles=[]))
    d = log.accept("DB", log.offers()["DB"], group([], volume("pv2", path="a"), volume("pv2", path="b")))
    assert {r.message for r in the_accept(d).rejected} == {
        "Task group and executor use duplicate persistence ID: Persistence ID 'pv2' is not unique"}
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    d = log.accept("DB", log.offers()["DB"], group([volume("pv1", path="x", shared=True)], volume("pv2")))
    (why,) = {r.message for r in the_accept(d).rejected}
    assert why.endswith("should not contain any shared resources")
    check(log)


def test_create_then_two_tasks_in_one_accept():
    log = Log()
    log.subscribe("DB", "db", caps=SHARED)
    d = log.accept("DB", log.offers()["DB"], reserve(disk(100)), create(volume("pv1", shared=True)),
                   launch("t1", volume("pv1", shared=True)), launch("t2", volume("pv1", shared=True)))
    e = the_accept(d)
    assert [op.kind for op in e.operations] == ["RESERVE", "CREATE"] and [t.task_id for t in e.tasks] == ["t1", "t2"]
    assert holds(log, "DB") == 2
    check(log)
    # a DESTROY while they run is dropped, and a task after it in the same ACCEPT still gets the volume
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    d = log.accept("DB", log.offers()["DB"], destroy(volume("pv1", shared=True)),
                   launch("t3", volume("pv1", shared=True)))
    e = the_accept(d)
    assert not e.operations and [t.task_id for t in e.tasks] == ["t3"] and holds(log, "DB") == 3
    check(log)
    for tid in ("t1", "t2", "t3"):
        finish(log, "DB", tid)
    # once they are done: DESTROY, and a task after it in the same ACCEPT no longer finds the volume
    log(ev.RolesRevived(framework_id="DB", roles=[]))
    d = log.accept("DB", log.offers()["DB"], destroy(volume("pv1", shared=True)),
                   launch("t4", volume("pv1", shared=True)))
    e = the_accept(d)
    assert [op.kind for op in e.operations] == ["DESTROY"] and [r.task_id for r in e.rejected] == ["t4"]
    check(log)


def test_a_destroy_after_a_launch_on_the_volume_in_the_same_accept_is_refused():
    """Two offers each holding a copy of a shared volume: LAUNCH a task on it, then DESTROY it, in one ACCEPT. The
    fold applies operations before tasks, so the DESTROY must be refused (Mesos: the launched task uses it)."""
    from master import codec
    from master.decide import scheduler as sd
    from tests.test_volumes import CFG, destroy, launch, the_accept

    log = shared_volume()
    first = log.offers()["DB"]
    log.accept("DB", first, launch("t0"))
    a = log.offers()["DB"]
    finish(log, "DB", "t0")
    b = log.offers()["DB"]
    c = codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": "DB"}, "accept": {
        "offer_ids": [{"value": a.offer_id}, {"value": b.offer_id}], "filters": {"refuse_seconds": 0},
        "operations": [launch("t1", volume("pv1", shared=True)),
                       destroy(volume("pv1", shared=True))]}})
    d = sd.decide(log.state, c, log.ts, CFG)
    e = the_accept(d)
    assert [t.task_id for t in e.tasks] == ["t1"] and e.operations == []  # the DESTROY was dropped
