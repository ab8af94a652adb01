"""Allocation over the folded master state (master.allocation: the fold keeps the hierarchical
allocator in step; decide_offers turns a run into an OffersMade event), unit and property tests."""

import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import events as ev
from eventstore.resources import Resource, Resources
from master import allocation
from master.allocator import (
    DEFAULT_REFUSE_SECONDS,
    MAX_REFUSE_SECONDS,
    AllocatorConfig,
    effective_refuse_seconds,
    is_allocatable,
)
from master.state import State, apply, state_hash


def _configure(state: State, config: AllocatorConfig) -> None:
    # As a leader started with these flags would: its LeaderElected carries them into the state.
    if allocation.config_of(state) != config:
        state.config = config.to_record()
        allocation.reset(state)


def allocate(state: State, now: float, config: AllocatorConfig, trigger: str, agent_ids=None):
    _configure(state, config)
    # With the explanation these tests check (the leader records without it: tests/test_explanation.py).
    return allocation.decide_offers(state, now, trigger, agent_ids, explain=True)


def expired_offers(state: State, now: float, config: AllocatorConfig):
    _configure(state, config)
    return allocation.expired_offers(state, now)


def alloc_count(state, fid: str, role: str = "*") -> int:
    """How many times the allocator has allocated to (framework, role): the DRF tie-break."""
    from master.allocation import allocator_of
    return allocator_of(state).fw_sorters[role].count(fid)

CID = "c1"
CFG = AllocatorConfig()


def res(text: str) -> list[Resource]:
    return Resources.parse(text).to_list()


class Log:
    def __init__(self, ts: float = 100.0):
        self.state = State()
        self.ts = ts

    def __call__(self, event, ts: float | None = None):
        if ts is not None:
            self.ts = float(ts)
        apply(self.state, ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event))
        return self.state

    def agent(self, aid: str, text: str):
        return self(ev.AgentRegistered(agent_id=aid, hostname=aid, http=f"{aid}:5051", resources=res(text)))

    def framework(self, fid: str, roles=("*",), suppressed=()):
        info = ev.FrameworkInfo(name=fid, user="u", roles=list(roles))
        return self(ev.FrameworkSubscribed(framework_id=fid, info=info, suppressed_roles=list(suppressed)))

    def alloc(self, now: float | None = None, config: AllocatorConfig = CFG, **kw) -> ev.OffersMade | None:
        """Run the allocator at `now` (default: the log's clock) and fold its decision."""
        now = self.ts if now is None else float(now)
        made = allocate(self.state, now, config, "test", **kw)
        if made is not None:
            self(made, ts=now)
        return made

    def launch(self, offer_id: str, tid: str, text: str, refuse: float = 0.0):
        o = self.state.offers[offer_id]
        spec = ev.TaskSpec(task_id=tid, name=tid, agent_id=o.agent_id, resources=res(text),
                           command=ev.CommandSpec(value="true"))
        return self(ev.OffersAccepted(framework_id=o.framework_id, offer_ids=[offer_id], tasks=[spec],
                                      refuse_seconds=refuse))


def cluster() -> Log:
    log = Log()
    log(ev.ClusterCreated(cluster_id=CID))
    log(ev.LeaderElected(leader_id="m", http="m:5050", term=1))
    return log


def offers_of(made: ev.OffersMade | None) -> list[tuple[str, str, str, Resources]]:
    if made is None:
        return []
    return [(o.framework_id, o.agent_id, o.role, Resources(o.resources)) for o in made.offers]


# ---- basics -------------------------------------------------------------------------------------


def test_no_cluster_or_no_frameworks_means_no_offers():
    assert allocate(State(), 0.0, CFG, "t") is None
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    assert allocate(log.state, 100.0, CFG, "t") is None
    log.framework("F1")
    made = log.alloc()
    assert offers_of(made) == [("F1", "A1", "*", Resources.parse("cpus:4;mem:1024"))]
    assert made.trigger == "test"


def test_whole_agent_offers_and_offer_ids():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024;disk:100;ports:[31000-32000]")
    log.agent("A2", "cpus:2;mem:512")
    log.framework("F1")
    log.framework("F2")
    made = log.alloc()
    # One offer per agent, each holding everything available on it; ids follow the log's counter.
    assert [o.offer_id for o in made.offers] == [f"{CID}-O0", f"{CID}-O1"]
    by_agent = {aid: (fid, r) for fid, aid, _, r in offers_of(made)}
    assert by_agent["A1"][1] == Resources.parse("cpus:4;mem:1024;disk:100;ports:[31000-32000]")
    assert by_agent["A2"][1] == Resources.parse("cpus:2;mem:512")
    assert by_agent["A1"][0] != by_agent["A2"][0]  # the second agent goes to the framework with the lower share
    # Everything is offered: nothing more to give.
    assert log.alloc() is None
    # Leftovers after a launch are offered again (only the leftovers).
    oid = next(o.offer_id for o in made.offers if o.agent_id == "A1")
    log.launch(oid, "t1", "cpus:1;mem:100;ports:[31000-31009]")
    made2 = log.alloc()
    assert [o.offer_id for o in made2.offers] == [f"{CID}-O2"]
    assert Resources(made2.offers[0].resources) == Resources.parse(
        "cpus:3;mem:924;disk:100;ports:[31010-32000]")


def test_drf_lower_dominant_share_first():
    log = cluster()
    log.agent("A1", "cpus:10;mem:1000")
    log.agent("A2", "cpus:10;mem:1000")
    log.framework("F1")
    log.framework("F2")
    first = log.alloc(agent_ids=["A1"])
    assert offers_of(first)[0][0] == "F1"  # tie (0, 0): framework id
    log.launch(first.offers[0].offer_id, "t1", "cpus:2;mem:10")
    log(ev.OffersMade(offers=[ev.OfferRecord(offer_id="x", framework_id="F2", agent_id="A1", role="*",
                                             resources=res("mem:300"))], trigger="t"))
    log(ev.OffersAccepted(framework_id="F2", offer_ids=["x"], tasks=[ev.TaskSpec(
        task_id="t2", name="t2", agent_id="A1", resources=res("mem:300"), command=ev.CommandSpec(value="x"))],
        refuse_seconds=0.0))
    # F1: cpus 2/20 = 0.1 (mem 10/2000); F2: mem 300/2000 = 0.15 -> F1 (lower dominant share) first.
    assert alloc_count(log.state, "F1") == 1 and alloc_count(log.state, "F2") == 1
    made = log.alloc(agent_ids=["A2"])
    assert offers_of(made)[0][:2] == ("F1", "A2")
    [d] = made.decisions
    assert [c.framework_id for c in d.order] == ["F1", "F2"]
    assert d.order[0].share == pytest.approx(0.1) and d.order[1].share == pytest.approx(0.15)


def test_drf_order_recomputed_per_agent():
    log = cluster()
    for a in ("A1", "A2", "A3"):
        log.agent(a, "cpus:1;mem:100")
    log.framework("F1")
    log.framework("F2")
    made = log.alloc()
    # Agents are visited in a seeded shuffle. First agent -> F1 (tie by id), second -> F2 (F1 now has a
    # share), third -> F1 (tie again, count 1 vs 1, id): one whole agent each, F1 twice.
    got = [(fid, aid) for fid, aid, _, _ in offers_of(made)]
    assert sorted(aid for _, aid in got) == ["A1", "A2", "A3"]
    assert [fid for fid, _ in got] == ["F1", "F2", "F1"]
    assert alloc_count(log.state, "F1") == 2 and alloc_count(log.state, "F2") == 1


def test_tie_break_by_allocation_count_then_id():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.framework("F1")
    log.framework("F2")
    log.framework("F3")
    # Give F1 two allocations and F3 one, then take the offers back: all shares are 0 again.
    for oid, fid in (("a", "F1"), ("b", "F1"), ("c", "F3")):
        log(ev.OffersMade(offers=[ev.OfferRecord(offer_id=oid, framework_id=fid, agent_id="A1", role="*",
                                                 resources=res("cpus:1"))], trigger="t"))
    log(ev.OffersRescinded(offer_ids=["a", "b", "c"], reason="test"))
    made = log.alloc()
    assert offers_of(made)[0][0] == "F2"
    # The explanation lists the candidates in order up to the winner, and the one next in line.
    assert [(c.framework_id, c.share, c.allocations) for c in made.decisions[0].order] == [
        ("F2", 0.0, 0), ("F3", 0.0, 1)]


def test_fair_sharing_excluded_resources():
    log = cluster()
    log.agent("A1", "cpus:10;mem:1000;gpus:2")
    log.agent("A2", "cpus:10;mem:1000")
    log.framework("F1")
    log.framework("F2")
    log(ev.OffersMade(offers=[ev.OfferRecord(offer_id="g", framework_id="F1", agent_id="A1", role="*",
                                             resources=res("gpus:2"))], trigger="t"))
    log(ev.OffersMade(offers=[ev.OfferRecord(offer_id="c", framework_id="F2", agent_id="A1", role="*",
                                             resources=res("cpus:2"))], trigger="t"))
    # gpus count: F1 share 1.0 > F2 0.1 -> F2 first.
    assert offers_of(allocate(log.state, 100.0, CFG, "t", agent_ids=["A2"]))[0][0] == "F2"
    excl = AllocatorConfig(fair_sharing_excluded=("gpus",))
    # gpus excluded: F1 share 0 < F2 0.1 -> F1 first.
    assert offers_of(allocate(log.state, 100.0, excl, "t", agent_ids=["A2"]))[0][0] == "F1"


# ---- who may receive offers ---------------------------------------------------------------------


def test_suppressed_roles_not_offered():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024;cpus(b):2")
    log.framework("F1", roles=["a", "b"], suppressed=["a"])
    made = log.alloc()
    # Only role b is offered: unreserved and b's reservation, all in one offer for role b.
    assert offers_of(made) == [("F1", "A1", "b", Resources.parse("cpus:4;mem:1024;cpus(b):2"))]
    log(ev.OffersRescinded(offer_ids=[o.offer_id for o in made.offers], reason="t"))
    log(ev.RolesSuppressed(framework_id="F1", roles=["b"]))
    assert log.alloc() is None
    log(ev.RolesRevived(framework_id="F1", roles=["a"]))
    assert offers_of(log.alloc()) == [("F1", "A1", "a", Resources.parse("cpus:4;mem:1024"))]


def test_inactive_and_disconnected_frameworks_not_offered():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.framework("F1")
    log(ev.FrameworkDisconnected(framework_id="F1"))
    assert log.alloc() is None
    log.framework("F1")  # re-subscribes
    assert offers_of(log.alloc())[0][0] == "F1"
    log(ev.LeaderElected(leader_id="m2", http="m2:5050", term=2))  # everyone disconnected, offers dropped
    assert log.state.offers == {}
    assert log.alloc() is None
    log(ev.AgentReregistered(agent_id="A1", hostname="A1", http="A1:5051", resources=res("cpus:4;mem:1024")))
    assert log.alloc() is None  # the framework has not come back yet
    log.framework("F1")
    assert offers_of(log.alloc())[0][:2] == ("F1", "A1")


def test_disconnected_agents_not_offered_and_agent_ids_restrict():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.agent("A2", "cpus:4;mem:1024")
    log.agent("A3", "cpus:4;mem:1024")
    log.framework("F1")
    log(ev.AgentDisconnected(agent_id="A2"))
    assert [aid for _, aid, _, _ in offers_of(allocate(log.state, 100.0, CFG, "t"))] == ["A1", "A3"]
    assert [aid for _, aid, _, _ in offers_of(allocate(log.state, 100.0, CFG, "t", agent_ids=["A3", "A2"]))] == ["A3"]


def test_reservations_hierarchical():
    log = cluster()
    log.agent("A1", "cpus:1;mem:64;cpus(a):2;cpus(a/b):4")
    log.framework("Fa", roles=["a"])
    log.framework("Fab", roles=["a/b"])
    made = log.alloc()
    # Fa sorts first (tie, id "Fa" < "Fab"): it takes unreserved + a's reservation, not a/b's.
    assert offers_of(made) == [
        ("Fa", "A1", "a", Resources.parse("cpus:1;mem:64;cpus(a):2")),
        ("Fab", "A1", "a/b", Resources.parse("cpus(a/b):4")),
    ]


def test_reserved_resources_of_roles_without_frameworks_not_offered():
    log = cluster()
    log.agent("A1", "cpus:1;mem:64;cpus(web):8")
    log.framework("F1")
    made = log.alloc()
    assert offers_of(made) == [("F1", "A1", "*", Resources.parse("cpus:1;mem:64"))]


# ---- filters ------------------------------------------------------------------------------------


def declined_cluster(refuse: float = 5.0) -> Log:
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.framework("F1")
    made = log.alloc(now=100.0)
    log(ev.OffersDeclined(framework_id="F1", offer_ids=[made.offers[0].offer_id], refuse_seconds=refuse), ts=100.0)
    return log


def test_filter_blocks_until_expiry():
    log = declined_cluster(refuse=5.0)
    [f] = log.state.filters
    assert f.expires_at == 105.0
    assert allocate(log.state, 100.0, CFG, "t") is None
    assert allocate(log.state, 104.999, CFG, "t") is None
    made = allocate(log.state, 105.0, CFG, "t")
    assert offers_of(made) == [("F1", "A1", "*", Resources.parse("cpus:4;mem:1024"))]
    assert offers_of(allocate(log.state, 200.0, CFG, "t")) == offers_of(made)


def test_filter_skips_to_next_framework_and_explains():
    log = declined_cluster(refuse=5.0)
    log.framework("F2")
    # F2 has been offered to more often than F1 (2 vs 1), so F1 sorts first and is skipped.
    for oid in ("x", "y"):
        log(ev.OffersMade(offers=[ev.OfferRecord(offer_id=oid, framework_id="F2", agent_id="A1", role="*",
                                                 resources=res("cpus:1"))], trigger="t"))
    log(ev.OffersRescinded(offer_ids=["x", "y"], reason="t"))
    made = allocate(log.state, 101.0, CFG, "t")
    assert [c.framework_id for c in made.decisions[0].order] == ["F1", "F2"]
    assert offers_of(made) == [("F2", "A1", "*", Resources.parse("cpus:4;mem:1024"))]
    assert made.decisions[0].skipped == [["F1", "declined (filter active)"]]


def test_filter_does_not_block_more_resources():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.framework("F1")
    first = log.alloc(now=100.0)
    log.launch(first.offers[0].offer_id, "t1", "cpus:1;mem:24", refuse=0.0)
    second = log.alloc(now=100.0)
    assert Resources(second.offers[0].resources) == Resources.parse("cpus:3;mem:1000")
    log(ev.OffersDeclined(framework_id="F1", offer_ids=[second.offers[0].offer_id], refuse_seconds=60.0), ts=100.0)
    assert allocate(log.state, 101.0, CFG, "t") is None  # the same resources: filtered
    # The task ends: more is available than was declined, so the filter does not apply.
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1",
                         status=ev.TaskStatus(state="TASK_FINISHED", source="SOURCE_AGENT", timestamp=102.0)),
        ts=102.0)
    made = allocate(log.state, 102.0, CFG, "t")
    assert offers_of(made) == [("F1", "A1", "*", Resources.parse("cpus:4;mem:1024"))]


def test_filter_is_per_agent_and_per_role():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.framework("F1", roles=["a", "b"])
    made = log.alloc(now=100.0)
    assert offers_of(made) == [("F1", "A1", "a", Resources.parse("cpus:4;mem:1024"))]
    log(ev.OffersDeclined(framework_id="F1", offer_ids=[made.offers[0].offer_id], refuse_seconds=60.0), ts=100.0)
    # Role a is filtered on A1, role b is not.
    made = allocate(log.state, 101.0, CFG, "t")
    assert offers_of(made) == [("F1", "A1", "b", Resources.parse("cpus:4;mem:1024"))]
    log.agent("A2", "cpus:4;mem:1024")
    made = allocate(log.state, 101.0, CFG, "t", agent_ids=["A2"])
    # Nothing filters either role on A2. (The b offer above was not folded: role b has no allocation
    # count yet while role a has one, so b sorts first, as Mesos's role sorter would.)
    assert offers_of(made) == [("F1", "A2", "b", Resources.parse("cpus:4;mem:1024"))]


def test_accept_leftover_filter_blocks_remainder():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.framework("F1")
    made = log.alloc(now=100.0)
    log.launch(made.offers[0].offer_id, "t1", "cpus:1;mem:24", refuse=5.0)
    assert allocate(log.state, 104.0, CFG, "t") is None
    assert offers_of(allocate(log.state, 105.0, CFG, "t")) == [
        ("F1", "A1", "*", Resources.parse("cpus:3;mem:1000"))]


def test_revive_clears_filters():
    log = declined_cluster(refuse=60.0)
    assert allocate(log.state, 101.0, CFG, "t") is None
    log(ev.RolesRevived(framework_id="F1", roles=["*"]))
    assert allocate(log.state, 101.0, CFG, "t") is not None


def test_effective_refuse_seconds():
    assert DEFAULT_REFUSE_SECONDS == 5.0
    assert MAX_REFUSE_SECONDS == 365 * 24 * 3600
    assert effective_refuse_seconds(None, 1.0) == 5.0  # absent: the default
    assert effective_refuse_seconds(-1.0, 1.0) == 5.0  # negative: the default
    assert effective_refuse_seconds(-0.001, 1.0) == 5.0
    assert effective_refuse_seconds(0.0, 1.0) == 0.0  # zero: no filter
    assert effective_refuse_seconds(0, 10.0) == 0.0  # ...even with a long interval
    assert effective_refuse_seconds(10.0, 1.0) == 10.0
    assert effective_refuse_seconds(0.5, 1.0) == 1.0  # never shorter than the allocation interval
    assert effective_refuse_seconds(None, 60.0) == 60.0
    assert effective_refuse_seconds(1e12, 1.0) == MAX_REFUSE_SECONDS  # capped at 365 days
    assert effective_refuse_seconds(MAX_REFUSE_SECONDS + 1, 1.0) == MAX_REFUSE_SECONDS
    assert effective_refuse_seconds(math.inf, 1.0) == MAX_REFUSE_SECONDS
    assert effective_refuse_seconds(math.nan, 1.0) == 5.0  # invalid: the default, as Mesos


# ---- min allocatable -----------------------------------------------------------------------------


def test_min_allocatable_default():
    assert is_allocatable(Resources.parse("cpus:0.01"), CFG)
    assert is_allocatable(Resources.parse("mem:32"), CFG)
    assert not is_allocatable(Resources.parse("cpus:0.009;mem:31;disk:1000;ports:[1-100]"), CFG)
    assert not is_allocatable(Resources(), CFG)
    # Reserved and unreserved amounts are summed by name.
    assert is_allocatable(Resources.parse("mem:16;mem(a):16"), CFG)


def test_min_allocatable_config():
    both = AllocatorConfig(min_allocatable=AllocatorConfig.parse_min_allocatable("cpus:1;mem:64"))
    assert both.min_allocatable == ((("cpus", 1.0), ("mem", 64.0)),)
    assert not is_allocatable(Resources.parse("cpus:1;mem:63"), both)
    assert is_allocatable(Resources.parse("cpus:1;mem:64"), both)
    anything = AllocatorConfig(min_allocatable=())
    assert is_allocatable(Resources.parse("disk:1"), anything)
    assert not is_allocatable(Resources(), anything)
    with pytest.raises(ValueError) as exc:
        AllocatorConfig.parse_min_allocatable("cpus:x")
    assert "cpus:x" in str(exc.value)


def test_never_an_empty_offer():
    """Even when a quantity set is empty (\"anything goes\"), nothing is not something to offer."""
    empty_alt = AllocatorConfig(min_allocatable=((),))
    assert not is_allocatable(Resources(), empty_alt)
    assert is_allocatable(Resources.parse("disk:1"), empty_alt)
    log = cluster()
    log.agent("A1", "cpus:1;mem:64")
    log.framework("F1")
    log.framework("F2")
    made = log.alloc(config=empty_alt)
    assert offers_of(made) == [("F1", "A1", "*", Resources.parse("cpus:1;mem:64"))]
    assert allocate(log.state, 100.0, empty_alt, "t") is None


def test_min_allocatable_in_allocation():
    log = cluster()
    log.agent("A1", "cpus:0.005;mem:16;disk:1000")
    log.agent("A2", "cpus:4;mem:1024;mem(web):16")
    log.framework("F1")
    log.framework("Fweb", roles=["web"])
    made = log.alloc()
    # A1 is below the minimum for everyone; on A2, F1 takes the unreserved part and web's 16 MB is too little.
    assert offers_of(made) == [("F1", "A2", "*", Resources.parse("cpus:4;mem:1024"))]
    assert made.decisions[0].agent_id == "A2"
    anything = AllocatorConfig(min_allocatable=())
    made = allocate(log.state, 100.0, anything, "t")
    assert sorted((f, a, str(r)) for f, a, _, r in offers_of(made)) == sorted([
        ("Fweb", "A1", str(Resources.parse("cpus:0.005;mem:16;disk:1000"))),
        ("Fweb", "A2", str(Resources.parse("mem(web):16"))),
    ])


def test_config_record_round_trip():
    cfg = AllocatorConfig(allocation_interval=2.0, offer_timeout=30.0,
                          min_allocatable=((("cpus", 1.0), ("mem", 64.0)), (("gpus", 1.0),)),
                          fair_sharing_excluded=("gpus",))
    rec = msgspec.json.decode(msgspec.json.encode(cfg.to_record()))
    assert AllocatorConfig.from_record(rec) == cfg
    assert AllocatorConfig.from_record({}) == AllocatorConfig()


# ---- offer timeout ------------------------------------------------------------------------------


def test_expired_offers():
    log = cluster()
    log.agent("A1", "cpus:4;mem:1024")
    log.agent("A2", "cpus:4;mem:1024")
    log.framework("F1")
    log.alloc(now=100.0, agent_ids=["A1"])
    log.alloc(now=105.0, agent_ids=["A2"])
    o1, o2 = sorted(log.state.offers)
    assert expired_offers(log.state, 1e9, CFG) == []  # no timeout configured
    cfg = AllocatorConfig(offer_timeout=10.0)
    assert expired_offers(log.state, 109.99, cfg) == []
    assert expired_offers(log.state, 110.0, cfg) == [o1]
    assert sorted(expired_offers(log.state, 115.0, cfg)) == [o1, o2]


# ---- property: random histories ----------------------------------------------------------------

ROLES = ["*", "a", "a/b", "b"]

agent_op = st.tuples(st.just("agent"), st.integers(0, 8), st.sampled_from([0, 16, 64, 1024]), st.integers(0, 5),
                     st.sampled_from([None, "a", "a/b", "b"]))
framework_op = st.tuples(st.just("framework"), st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True),
                         st.booleans())
allocate_op = st.tuples(st.just("allocate"), st.integers(0, 3))
accept_op = st.tuples(st.just("accept"), st.integers(0, 50), st.integers(0, 4), st.integers(0, 3),
                      st.sampled_from([None, 0.0, 5.0]))
status_op = st.tuples(st.just("status"), st.integers(0, 50),
                      st.sampled_from(["TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED"]), st.booleans())
OPS = {
    "agent": agent_op,
    "framework": framework_op,
    "allocate": allocate_op,
    "decline": st.tuples(st.just("decline"), st.integers(0, 50), st.sampled_from([None, -1.0, 0.0, 0.5, 2.0, 10.0])),
    "accept": accept_op,
    "status": status_op,
    "ack": st.tuples(st.just("ack"), st.integers(0, 50)),
    "fw_disconnect": st.tuples(st.just("fw_disconnect"), st.integers(0, 50)),
    "fw_resubscribe": st.tuples(st.just("fw_resubscribe"), st.integers(0, 50)),
    "fw_remove": st.tuples(st.just("fw_remove"), st.integers(0, 50)),
    "suppress": st.tuples(st.just("suppress"), st.integers(0, 50), st.booleans()),
    "agent_disconnect": st.tuples(st.just("agent_disconnect"), st.integers(0, 50)),
    "agent_reregister": st.tuples(st.just("agent_reregister"), st.integers(0, 50)),
    "rescind": st.tuples(st.just("rescind"), st.integers(0, 50)),
    "failover": st.tuples(st.just("failover")),
    "tick": st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.0, 11.0])),
}
# How often each kind of operation is drawn (the common path weighs most).
WEIGHTS = {"allocate": 4, "accept": 5, "status": 4, "ack": 2, "decline": 2, "fw_resubscribe": 2, "agent_reregister": 2,
           "tick": 2}
op = st.sampled_from([k for k in OPS for _ in range(WEIGHTS.get(k, 1))]).flatmap(OPS.__getitem__)
# A cluster to start from (agents and frameworks), then a history of operations.
history = st.tuples(
    st.lists(agent_op, min_size=1, max_size=4),
    st.lists(framework_op, min_size=1, max_size=3),
    st.lists(op, min_size=15, max_size=60),
).map(lambda t: t[0] + t[1] + t[2])

PCFG = AllocatorConfig(allocation_interval=1.0, offer_timeout=10.0)


def pick(items: list, i: int):
    return items[i % len(items)] if items else None


class World:
    """Turns abstract operations into the events a leader would record, folding them into a state."""

    def __init__(self):
        self.state = State()
        self.ts = 1000.0
        self.agent_specs: dict[str, list[Resource]] = {}
        self.n_fw = 0
        self.n_task = 0
        self.allocations: list[bytes] = []
        self.emit(ev.ClusterCreated(cluster_id=CID))
        self.emit(ev.LeaderElected(leader_id="m", http="m:1", term=1, config=PCFG.to_record()))

    def emit(self, event) -> None:
        apply(self.state, ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event))

    def allocate(self, trigger: str = "periodic") -> None:
        made = allocate(self.state, self.ts, PCFG, trigger)
        self.allocations.append(msgspec.json.encode(made))
        if made is not None:
            check_against_filters(self.state, made, self.ts)
            self.emit(made)

    def step(self, o: tuple) -> None:
        s = self.state
        kind = o[0]
        fws = sorted(s.frameworks)
        if kind == "agent":
            _, cpus, mem, nports, role = o
            aid = f"{CID}-S{s.next_agent}"
            text = f"cpus:{cpus};mem:{mem};disk:100"
            if nports:
                lo = 31000 + 10 * s.next_agent
                text += f";ports:[{lo}-{lo + nports - 1},{lo + nports + 1}-{lo + nports + 2}]"
            if role:
                text += f";cpus({role}):1;mem({role}):64"
            self.agent_specs[aid] = res(text)
            self.emit(ev.AgentRegistered(agent_id=aid, hostname=aid, http=f"{aid}:5051", resources=res(text)))
            self.allocate("agent_added")
        elif kind == "framework":
            _, roles, suppress_first = o
            fid = f"{CID}-{self.n_fw:04d}"
            self.n_fw += 1
            self.emit(ev.FrameworkSubscribed(framework_id=fid, info=ev.FrameworkInfo(name=fid, user="u", roles=roles),
                                             suppressed_roles=roles[:1] if suppress_first else []))
            self.allocate("framework_added")
        elif kind == "allocate":
            self.ts += o[1] * 0.5
            expired = expired_offers(s, self.ts, PCFG)
            if expired:
                self.emit(ev.OffersRescinded(offer_ids=expired, reason="offer_timeout"))
            self.allocate()
        elif kind == "decline":
            offer = pick(sorted(s.offers), o[1])
            if offer is not None:
                fid = s.offers[offer].framework_id
                self.emit(ev.OffersDeclined(framework_id=fid, offer_ids=[offer],
                                            refuse_seconds=effective_refuse_seconds(o[2], PCFG.allocation_interval)))
        elif kind == "accept":
            _, i, ntasks, nports, refuse = o
            oid = pick(sorted(s.offers), i)
            if oid is None:
                return
            offer = s.offers[oid]
            left = Resources(offer.resources)
            specs = []
            for _ in range(ntasks):
                want = []
                for r in left:  # a slice of each scalar, a few ports
                    if r.type == "SCALAR" and r.name in ("cpus", "mem"):
                        q = round(r.scalar / 2, 3)
                        if q > 0:
                            want.append(Resource(r.name, "SCALAR", scalar=q, role=r.role))
                    elif r.type == "RANGES" and nports:
                        b = r.ranges[0][0]
                        want.append(Resource(r.name, "RANGES", ranges=((b, min(b + nports - 1, r.ranges[0][1])),),
                                             role=r.role))
                use = Resources(want)
                if not use:
                    break
                assert left.contains(use)
                left = left - use
                specs.append(ev.TaskSpec(task_id=f"t{self.n_task}", name="t", agent_id=offer.agent_id,
                                         resources=use.to_list(), command=ev.CommandSpec(value="true")))
                self.n_task += 1
            self.emit(ev.OffersAccepted(framework_id=offer.framework_id, offer_ids=[oid], tasks=specs,
                                        refuse_seconds=effective_refuse_seconds(refuse, PCFG.allocation_interval)))
        elif kind == "status":
            _, i, state, with_uuid = o
            # Any task the log still holds, terminal ones awaiting an ack included: agents may resend.
            tasks = sorted((t.framework_id, t.task_id) for t in s.all_tasks())
            picked = pick(tasks, i)
            if picked is not None:
                t = s.task(*picked)
                self.emit(ev.StatusUpdated(framework_id=picked[0], task_id=picked[1], agent_id=t.agent_id,
                                           status=ev.TaskStatus(state=state, source="SOURCE_AGENT", timestamp=self.ts,
                                                                uuid=f"u{s.index}" if with_uuid else None)))
                self.allocate()  # a periodic run may come right after: freed resources are offered again
        elif kind == "ack":
            pending = sorted((t.framework_id, t.task_id) for t in s.all_tasks() if t.pending is not None)
            picked = pick(pending, o[1])
            if picked is not None:
                self.emit(ev.StatusAcknowledged(framework_id=picked[0], task_id=picked[1],
                                                uuid=s.task(*picked).pending.uuid))
        elif kind == "fw_disconnect":
            fid = pick([f for f in fws if s.frameworks[f].connected], o[1])
            if fid is not None:
                self.emit(ev.FrameworkDisconnected(framework_id=fid))
        elif kind == "fw_resubscribe":
            fid = pick(fws, o[1])
            if fid is not None:
                fw = s.frameworks[fid]
                self.emit(ev.FrameworkSubscribed(framework_id=fid, info=fw.info, suppressed_roles=fw.suppressed_roles,
                                                 resubscribe=True))
                self.allocate("framework_added")
        elif kind == "fw_remove":
            fid = pick(fws, o[1])
            if fid is not None:
                self.emit(ev.FrameworkRemoved(framework_id=fid, reason="teardown"))
        elif kind == "suppress":
            fid = pick(fws, o[1])
            if fid is not None:
                roles = s.frameworks[fid].info.roles
                if o[2]:
                    self.emit(ev.RolesSuppressed(framework_id=fid, roles=roles))
                else:
                    self.emit(ev.RolesRevived(framework_id=fid, roles=roles))
                    self.allocate("revive")
        elif kind == "agent_disconnect":
            aid = pick(sorted(a for a in s.agents if s.agents[a].connected), o[1])
            if aid is not None:
                gone = sorted(x.offer_id for x in s.offers.values() if x.agent_id == aid)
                if gone:
                    self.emit(ev.OffersRescinded(offer_ids=gone, reason="agent_disconnected"))
                self.emit(ev.AgentDisconnected(agent_id=aid))
        elif kind == "agent_reregister":
            aid = pick(sorted(a for a in s.agents if not s.agents[a].connected), o[1])
            if aid is not None:
                reports = [ev.TaskReport(framework_id=t.framework_id, task_id=t.task_id, state=t.state)
                           for t in s.all_tasks() if t.agent_id == aid]
                self.emit(ev.AgentReregistered(agent_id=aid, hostname=aid, http=f"{aid}:5051",
                                               resources=self.agent_specs[aid], tasks=reports))
                self.allocate("agent_added")
        elif kind == "rescind":
            oid = pick(sorted(s.offers), o[1])
            if oid is not None:
                self.emit(ev.OffersRescinded(offer_ids=[oid], reason="test"))
        elif kind == "failover":
            self.emit(ev.LeaderElected(leader_id="m", http="m:1", term=2, config=PCFG.to_record()))
        elif kind == "tick":
            self.ts += o[1]
        else:  # pragma: no cover
            raise AssertionError(kind)


def check_against_filters(state: State, made: ev.OffersMade, now: float) -> None:
    """Offers go only to connected, active frameworks, for unsuppressed roles, on connected agents,
    and never through an active filter that holds everything offered."""
    for o in made.offers:
        offered = Resources(o.resources)
        fw = state.frameworks[o.framework_id]
        assert fw.connected and fw.active, f"offer {o.offer_id} to an inactive framework"
        assert o.role in fw.info.roles and o.role not in fw.suppressed_roles, f"offer {o.offer_id} for role {o.role}"
        assert state.agents[o.agent_id].connected, f"offer {o.offer_id} on a disconnected agent"
        assert is_allocatable(offered, PCFG)
        for f in state.filters:
            if (f.framework_id, f.role, f.agent_id) == (o.framework_id, o.role, o.agent_id) and f.expires_at > now:
                assert not Resources(f.resources).contains(offered), f"offer {o.offer_id} made through a filter"


def check_invariants(state: State) -> None:
    for aid, agent in state.agents.items():
        total = agent.total()
        holders: list[tuple[str, list[Resource]]] = []
        for o in state.offers.values():
            if o.agent_id == aid:
                offered = Resources(o.resources)
                assert offered, f"empty offer {o.offer_id}"
                assert total.contains(offered), f"offer {o.offer_id} exceeds agent {aid}"
                assert offered.allocatable_to(o.role) == offered, f"offer {o.offer_id} not allocatable to {o.role}"
                assert state.frameworks[o.framework_id].info.roles.count(o.role) == 1
                holders.append((o.offer_id, o.resources))
        for t in state.all_tasks():
            if t.agent_id == aid and not t.terminal:
                holders.append((t.task_id, t.spec.resources))
        scalars: dict[tuple[str, str], float] = {}
        ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for _, rs in holders:
            for r in rs:
                key = (r.name, r.role)
                if r.type == "SCALAR":
                    scalars[key] = scalars.get(key, 0.0) + r.scalar
                elif r.type == "RANGES":
                    ranges.setdefault(key, []).extend(r.ranges)
        cap = {(r.name, r.role): r for r in total}
        for key, q in scalars.items():
            assert key in cap, f"{key} handed out on {aid} which has none"
            assert round(q, 3) <= cap[key].scalar + 1e-9, f"{key} over-committed on {aid}: {q} > {cap[key].scalar}"
        for key, rs in ranges.items():
            rs = sorted(rs)
            for (b1, e1), (b2, e2) in zip(rs, rs[1:], strict=False):
                assert e1 < b2, f"{key} ranges handed out twice on {aid}: {(b1, e1)} and {(b2, e2)}"
            assert Resources([Resource(key[0], "RANGES", ranges=tuple(rs), role=key[1])]).allocatable_to(key[1])
            assert total.contains(Resources([Resource(key[0], "RANGES", ranges=tuple(rs), role=key[1])]))
    for o in state.offers.values():
        assert o.agent_id in state.agents
        fw = state.frameworks[o.framework_id]
        assert o.role in fw.info.roles


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history)
def test_random_histories_keep_invariants_and_are_deterministic(ops):
    a, b = World(), World()
    for o in ops:
        a.step(o)
        check_invariants(a.state)
        b.step(o)
        assert state_hash(a.state) == state_hash(b.state)
        assert a.allocations == b.allocations
        # And allocating again right now (without folding it) is a pure function of the state.
        x = allocate(a.state, a.ts, PCFG, "check")
        y = allocate(b.state, b.ts, PCFG, "check")
        assert msgspec.json.encode(x) == msgspec.json.encode(y)


class RecordingWorld(World):
    """A World that keeps every envelope it folds, as a replica's store would."""

    def __init__(self):
        self.log: list[ev.Envelope] = []
        self.hashes: list[str] = []  # state hash after each envelope
        super().__init__()

    def emit(self, event) -> None:
        env = ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event)
        apply(self.state, env)
        self.log.append(msgspec.msgpack.decode(msgspec.msgpack.encode(env), type=ev.Envelope))
        self.hashes.append(state_hash(self.state))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history, st.data())
def test_snapshot_restores_exactly_and_folds_on_identically(ops, data):
    from master.allocation import decide_offers
    from master.state import decode_snapshot, encode_snapshot

    live = RecordingWorld()
    for o in ops:
        live.step(o)
    # Replay the log from 0, taking a snapshot at a random index and carrying on from its decoded copy.
    cut = data.draw(st.integers(min_value=0, max_value=len(live.log)))
    replayed = State()
    for env in live.log[:cut]:
        apply(replayed, env)
    restored = decode_snapshot(encode_snapshot(replayed))
    assert state_hash(restored) == state_hash(replayed)
    for env in live.log[cut:]:
        apply(restored, env)
        assert state_hash(restored) == live.hashes[env.index - 1], f"diverged at index {env.index}"
    assert state_hash(restored) == state_hash(live.state)
    # Same state, same decision: allocation counts and filters came through the snapshot.
    x = decide_offers(restored, live.ts, "check")
    y = decide_offers(live.state, live.ts, "check")
    assert msgspec.json.encode(x) == msgspec.json.encode(y)
