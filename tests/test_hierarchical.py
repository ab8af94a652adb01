"""HierarchicalAllocator: one or more tests per rule of allocator-semantics.md (2.1-2.7), and a
property test over random operation sequences."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventstore.resources import UNRESERVED, Resources
from master.allocator.config import AllocatorConfig, effective_refuse_seconds
from master.allocator.hierarchical import HierarchicalAllocator
from master.allocator.sorter import DRFSorter

R = Resources.parse


def new(**cfg) -> HierarchicalAllocator:
    return HierarchicalAllocator(AllocatorConfig(**cfg))


# ---- state digest: everything an allocation run must leave as it found it ------------------------------


def _sorter_digest(s: DRFSorter) -> tuple:
    order = list(s.sort())  # applies any lazy re-keying first, so the cached keys below are current
    nodes = []

    def walk(n):
        nodes.append((n.path, tuple(sorted(n.alloc.items())), n.count, n.active_leaves, n.is_client,
                      n.client_active, n.key, tuple(c.path for c in n.ordered)))
        for name in sorted(n.children):
            walk(n.children[name])
    walk(s.root)
    clients = sorted((c, tuple(sorted(s.allocation(c).items())), s.count(c), s.is_active(c)) for c in s.clients)
    return (order, tuple(nodes), tuple(clients), tuple(sorted(s.totals.items())),
            tuple(sorted(s.weights.items())), s.deferred, bool(s._pending))


def digest(a: HierarchicalAllocator) -> tuple:
    agents = tuple(
        (aid, ag.total.format(), ag.available.format(), ag.active,
         tuple(sorted((k, v.format()) for k, v in ag.allocated.items())))
        for aid, ag in sorted(a.agents.items()))
    frameworks = tuple((fid, tuple(fw.roles), tuple(sorted(fw.suppressed)), fw.active)
                       for fid, fw in sorted(a.frameworks.items()))
    filters = tuple(sorted((k, tuple((f.resources.format(), f.expires_at) for f in v))
                           for k, v in a.filters.items()))
    books = tuple(tuple(sorted(d.items())) for d in (a.totals, a.reserved_total, a.reserved_alloc_total, a.alloc_total))
    # (an empty per-role entry is the same quantity as a missing one)
    per_top = tuple(tuple(sorted((k, tuple(sorted(v.items()))) for k, v in d.items() if v))
                    for d in (a.reserved_by_top, a.unreserved_alloc_by_top))
    return (agents, frameworks, filters, books, per_top,
            tuple(sorted((r, tuple(sorted(f))) for r, f in a.role_frameworks.items())),
            _sorter_digest(a.role_sorter),
            tuple((r, _sorter_digest(s)) for r, s in sorted(a.fw_sorters.items())))


def offers_of(decision) -> dict:
    return {(o.framework_id, o.role, o.agent_id): o.resources.format() for o in decision.offers}


def run(a: HierarchicalAllocator, agents=None, now=None, seed=0) -> dict:
    """One allocation run whose offers are then applied (offered = allocated); checks decide() is pure."""
    before = digest(a)
    d = a.decide(now, agents, seed)
    assert digest(a) == before, "decide() changed the allocator's state"
    for o in d.offers:
        a.allocate(o.framework_id, o.role, o.agent_id, o.resources)
    return offers_of(d)


def recover_all(a: HierarchicalAllocator, refuse=None, now=0.0) -> None:
    for agent in list(a.agents.values()):
        for (fid, role), res in list(agent.allocated.items()):
            a.recover(fid, role, agent.agent_id, res, refuse, now)


# ---- 2.1 DRF between roles and within a role -----------------------------------------------------------


def test_each_new_agent_goes_to_the_role_with_the_lowest_share():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    assert run(a, ["ag1"]) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}  # tie: path r1 < r2
    a.add_agent("ag2", R("cpus:1;mem:512"))
    assert run(a, ["ag2"]) == {("f2", "r2", "ag2"): "cpus:1;mem:512"}
    a.add_agent("ag3", R("cpus:3;mem:2048"))
    assert run(a, ["ag3"]) == {("f2", "r2", "ag3"): "cpus:3;mem:2048"}  # r1 0.333 > r2 0.167
    a.add_agent("ag4", R("cpus:4;mem:4096"))
    assert run(a, ["ag4"]) == {("f1", "r1", "ag4"): "cpus:4;mem:4096"}  # r1 0.2 < r2 0.4


def test_fair_share_within_a_role_and_roles_do_not_gain_by_having_more_frameworks():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r1"])
    a.add_framework("f3", ["r2"])
    got = {}
    for i in range(1, 5):
        a.add_agent(f"ag{i}", R("cpus:1;mem:512"))
        got.update(run(a, [f"ag{i}"]))
    assert got == {
        ("f1", "r1", "ag1"): "cpus:1;mem:512",  # all ties: r1 < r2, f1 < f2
        ("f3", "r2", "ag2"): "cpus:1;mem:512",
        ("f2", "r1", "ag3"): "cpus:1;mem:512",  # r1/r2 tie on share and count; inside r1 f2 has 0
        ("f3", "r2", "ag4"): "cpus:1;mem:512",
    }


def test_the_first_framework_in_order_takes_the_whole_agent():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r1"])
    a.add_framework("f3", ["r2"])
    a.add_agent("ag1", R("cpus:4;mem:4096;disk:100;ports:[31000-31009]"))
    assert run(a) == {("f1", "r1", "ag1"): "cpus:4;disk:100;mem:4096;ports:[31000-31009]"}


def test_framework_order_within_a_role_follows_framework_shares():
    a = new()
    a.add_framework("f1", ["r"])
    a.add_framework("f2", ["r"])
    a.add_agent("ag1", R("cpus:3;mem:512"), [("f2", "r", R("cpus:2;mem:256"))])
    a.add_agent("ag2", R("cpus:3;mem:512"), [("f1", "r", R("cpus:1"))])
    a.add_agent("ag3", R("cpus:1;mem:128"))
    # totals cpus 7 mem 1152: f1 1/7, f2 2/7 -> f1 first on ag3
    assert run(a, ["ag3"]) == {("f1", "r", "ag3"): "cpus:1;mem:128"}


def test_weights_scale_role_shares():
    def distribute(weights):
        a = new()
        for i in range(1, 5):
            a.add_agent(f"ag{i}", R("cpus:1;mem:512"))
        a.add_framework("f1", ["r1"])
        a.add_framework("f2", ["r2"])
        a.update_weights(weights)
        got = {}
        for i in range(1, 5):
            got.update(run(a, [f"ag{i}"]))
        return sorted((k[1], k[2]) for k in got)
    assert distribute({}) == [("r1", "ag1"), ("r1", "ag3"), ("r2", "ag2"), ("r2", "ag4")]
    # r1 weight 3: ag3: r1 0.25/3 < r2 0.25; ag4: r1 0.5/3 < r2 0.25
    assert distribute({"r1": 3.0}) == [("r1", "ag1"), ("r1", "ag3"), ("r1", "ag4"), ("r2", "ag2")]


def test_weight_of_a_parent_role_applies_to_its_subroles():
    a = new()
    for i in range(1, 5):
        a.add_agent(f"ag{i}", R("cpus:1;mem:512"))
    a.add_framework("f1", ["a/x"])
    a.add_framework("f2", ["b"])
    a.update_weights({"a": 3.0})
    got = {}
    for i in range(1, 5):
        got.update(run(a, [f"ag{i}"]))
    assert sorted((k[1], k[2]) for k in got) == [("a/x", "ag1"), ("a/x", "ag3"), ("a/x", "ag4"), ("b", "ag2")]


def test_role_order_ties_are_broken_by_count_then_bytewise_path():
    a = new()
    a.add_framework("f1", ["role9"])
    a.add_framework("f2", ["role10"])
    a.add_framework("f3", ["Role"])
    a.add_agent("ag1", R("cpus:1;mem:512"))
    assert run(a, ["ag1"]) == {("f3", "Role", "ag1"): "cpus:1;mem:512"}  # 'R' < 'r'
    recover_all(a)
    # equal shares; count: Role 1, others 0 -> role10 < role9 byte-wise
    assert run(a, ["ag1"]) == {("f2", "role10", "ag1"): "cpus:1;mem:512"}


def test_count_breaks_share_ties_including_used_entries_on_agent_add():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r2"])
    # r1 gets its 1 cpu in two `used` entries, r2 in one: equal shares, counts 2 vs 1
    a.add_agent("ag0", R("cpus:2;mem:512"), [("f1", "r1", R("cpus:0.5")), ("f1", "r1", R("cpus:0.5")),
                                           ("f2", "r2", R("cpus:1"))])
    a.add_agent("ag1", R("cpus:1;mem:512"))
    offers = run(a, ["ag1"])
    assert offers == {("f2", "r2", "ag1"): "cpus:1;mem:512"}


def test_framework_ties_are_broken_by_bytewise_framework_id():
    a = new()
    for fid in ("fw-b", "fw-a", "fw-B"):
        a.add_framework(fid, ["r"])
    a.add_agent("ag1", R("cpus:1;mem:512"))
    assert run(a) == {("fw-B", "r", "ag1"): "cpus:1;mem:512"}


def test_subrole_and_parent_compete_inside_the_parent():
    a = new()
    a.add_framework("fa", ["a"])
    a.add_framework("fab", ["a/b"])
    a.add_framework("fc", ["c"])
    a.add_agent("ag1", R("cpus:1;mem:512"))
    assert run(a, ["ag1"]) == {("fa", "a", "ag1"): "cpus:1;mem:512"}  # a/. < a/b, node a < c
    a.add_agent("ag2", R("cpus:1;mem:512"))
    assert run(a, ["ag2"]) == {("fc", "c", "ag2"): "cpus:1;mem:512"}  # node a holds 1
    a.add_agent("ag3", R("cpus:1;mem:512"))
    assert run(a, ["ag3"]) == {("fab", "a/b", "ag3"): "cpus:1;mem:512"}  # a/. 1 > a/b 0


def test_role_stays_in_the_role_sorter_while_a_framework_is_tracked_under_it():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    run(a)
    a.suppress("f1")
    assert "r1" in a.role_sorter and a.role_sorter.is_active("r1")  # roles are never inactive
    a.update_framework("f1", ["r3"])
    assert "r1" in a.role_sorter  # still holds resources in r1
    assert a.role_sorter.allocation("r1") == {"cpus": 2.0, "mem": 1024.0}
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"))
    assert "r1" not in a.role_sorter and "r1" not in a.fw_sorters
    assert run(a) == {("f2", "r2", "ag1"): "cpus:2;mem:1024"}


def test_removing_a_framework_recovers_its_resources_and_forgets_its_roles():
    a = new()
    a.add_framework("f1", ["r1", "a/b"])
    a.add_framework("f2", ["r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    a.add_agent("ag2", R("cpus(a/b):1;mem(a/b):64"))
    run(a)
    recover_all(a, refuse=100.0)
    run(a, ["ag1"], now=1.0)
    a.remove_framework("f1")
    assert a.filters == {}
    assert sorted(a.role_sorter.clients) == ["r2"]
    assert all(not ag.allocated.get(("f1", r)) for ag in a.agents.values() for r in ("r1", "a/b"))
    assert a.agents["ag2"].available == R("cpus(a/b):1;mem(a/b):64")


# ---- 2.3 quota -------------------------------------------------------------------------------------------


def test_quota_guarantee_is_offered_first_in_stage_one():
    plain = new()
    quota = new()
    for a in (plain, quota):
        a.add_framework("fn", ["n"])
        a.add_framework("fq", ["q"])
        a.add_agent("ag1", R("cpus:4;mem:1024"))
    quota.set_quota("q", {"cpus": 2.0}, {"cpus": 2.0})
    assert run(plain) == {("fn", "n", "ag1"): "cpus:4;mem:1024"}  # n < q on the tie
    # stage 1: q gets its guarantee (cpus 2) plus the unlimited mem; stage 2: n gets the rest
    assert run(quota) == {("fq", "q", "ag1"): "cpus:2;mem:1024", ("fn", "n", "ag1"): "cpus:2"}


def test_guarantee_is_offered_even_when_headroom_is_short():
    a = new()
    a.set_quota("q1", {"cpus": 3.0}, {})
    a.set_quota("q2", {"cpus": 4.0}, {})  # no framework: still needs headroom
    a.add_framework("fq", ["q1"])
    a.add_framework("fn", ["n"])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    # required headroom 7 cpus > available 4: q1's guarantee (3) is offered regardless, its extra cpu
    # is not; the last cpu is held back from everyone for q2.
    assert run(a) == {("fq", "q1", "ag1"): "cpus:3;mem:1024"}
    assert a.agents["ag1"].available == R("cpus:1")


def test_headroom_is_held_back_for_a_role_without_frameworks():
    a = new()
    a.set_quota("q", {"cpus": 2.0}, {"cpus": 2.0})
    a.add_framework("fn", ["n"])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    assert run(a) == {("fn", "n", "ag1"): "cpus:2;mem:1024"}
    a.add_framework("fq", ["q"])
    assert run(a) == {("fq", "q", "ag1"): "cpus:2"}


def test_removing_the_quota_releases_the_headroom():
    a = new()
    a.set_quota("q", {"cpus": 2.0}, {"cpus": 2.0})
    a.add_framework("fn", ["n"])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    assert run(a) == {("fn", "n", "ag1"): "cpus:2;mem:1024"}
    a.set_quota("q", {}, {})
    assert run(a) == {("fn", "n", "ag1"): "cpus:2"}


def test_reservations_of_subroles_count_as_consumed_quota_even_when_idle():
    a = new()
    a.set_quota("q", {"cpus": 2.0}, {})
    a.add_framework("fn", ["n"])
    a.add_agent("ag1", R("cpus:4;mem:1024;cpus(q/sub):2"))
    # q's guarantee is covered by the (unallocated) q/sub reservation: nothing held back
    assert run(a) == {("fn", "n", "ag1"): "cpus:4;mem:1024"}


def test_headroom_counts_subrole_allocations_against_the_guarantee():
    a = new()
    a.set_quota("q", {"cpus": 2.0}, {})
    a.add_framework("fn", ["n"])
    a.add_framework("fs", ["q/sub"])
    a.add_agent("ag0", R("cpus:2;mem:64"), [("fs", "q/sub", R("cpus:2"))])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    offers = run(a, ["ag1"])
    # q/sub already consumes q's 2 cpus: no headroom is needed; n (share 0) takes ag1 whole
    assert offers == {("fn", "n", "ag1"): "cpus:4;mem:1024"}


def test_quota_limit_caps_unreserved_scalars_and_leaves_other_names_unlimited():
    a = new()
    a.set_quota("q", {}, {"cpus": 3.0})
    a.add_framework("fq", ["q"])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    assert run(a) == {("fq", "q", "ag1"): "cpus:3;mem:1024"}


def test_role_at_its_limit_gets_only_its_reservations_even_when_it_sorts_first():
    a = new()
    a.set_quota("q", {}, {"cpus": 2.0, "mem": 512.0})
    a.add_framework("fq", ["q"])
    a.add_agent("ag1", R("cpus:3;mem:1024"))
    assert run(a, ["ag1"]) == {("fq", "q", "ag1"): "cpus:2;mem:512"}
    a.add_agent("ag2", R("cpus:2;mem:512;cpus(q):1"))
    # consumed: 2 unreserved + 1 reserved > 2: no unreserved scalars, the reservation still comes
    assert run(a, ["ag2"]) == {("fq", "q", "ag2"): "cpus(q):1"}
    a.add_framework("fn", ["n"])
    assert run(a) == {("fn", "n", "ag1"): "cpus:1;mem:512", ("fn", "n", "ag2"): "cpus:2;mem:512"}


def test_stage_one_skips_a_role_the_agent_cannot_advance_towards_its_guarantee():
    a = new()
    a.set_quota("q", {"gpus": 1.0}, {})
    a.add_framework("fn", ["n"])
    a.add_framework("fq", ["q"])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    # no gpus here: q is not offered anything in stage 1; n sorts first in stage 2 and takes all
    assert run(a) == {("fn", "n", "ag1"): "cpus:4;mem:1024"}


def test_stage_one_offers_the_roles_reservations_with_the_guarantee():
    a = new()
    a.set_quota("q", {"cpus": 1.0}, {"cpus": 1.0, "mem": 0.0})
    a.add_framework("fn", ["n"])
    a.add_framework("fq", ["q"])
    a.add_agent("ag1", R("cpus:4;mem:1024;mem(q):64;ports:[1-3]"))
    # consumed cpus 0 < 1: guarantee cpus 1 + its reservation + non-scalars; mem is at its limit (0)
    assert run(a) == {("fq", "q", "ag1"): "cpus:1;mem(q):64;ports:[1-3]", ("fn", "n", "ag1"): "cpus:3;mem:1024"}


def test_quota_is_only_for_top_level_roles():
    a = new()
    with pytest.raises(ValueError):
        a.set_quota("a/b", {"cpus": 1.0}, {})


# ---- 2.4 reservations -----------------------------------------------------------------------------------


def test_reservation_of_a_parent_is_allocatable_to_its_subrole():
    a = new()
    a.add_framework("f", ["a/b"])
    a.add_agent("ag1", R("cpus(a):2;mem(a):512"))
    assert run(a) == {("f", "a/b", "ag1"): "cpus(a):2;mem(a):512"}


def test_reservation_of_a_subrole_is_not_allocatable_to_its_parent():
    a = new()
    a.add_framework("fa", ["a"])
    a.add_agent("ag1", R("cpus(a/b):2;mem(a/b):512;cpus:1;mem:64"))
    assert run(a) == {("fa", "a", "ag1"): "cpus:1;mem:64"}
    a.add_framework("fab", ["a/b"])
    assert run(a) == {("fab", "a/b", "ag1"): "cpus(a/b):2;mem(a/b):512"}


def test_reservation_of_a_role_without_frameworks_is_never_offered():
    a = new()
    a.add_framework("f", ["other"])
    a.add_agent("ag1", R("cpus(r):2;mem(r):512;cpus:1;mem:256;ports(r):[1-5]"))
    assert run(a) == {("f", "other", "ag1"): "cpus:1;mem:256"}
    assert run(a) == {}


def test_reserved_resources_count_in_shares():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r2"])
    a.add_agent("ag0", R("cpus:1;mem:64"))
    assert run(a, ["ag0"]) == {("f1", "r1", "ag0"): "cpus:1;mem:64"}
    a.add_agent("ag1", R("cpus(r2):3;mem(r2):512"))
    assert run(a, ["ag1"]) == {("f2", "r2", "ag1"): "cpus(r2):3;mem(r2):512"}
    a.add_agent("ag2", R("cpus:1;mem:512"))
    # totals cpus 5 mem 1088: r1 0.2, r2 0.6 (its reserved offer counts)
    assert run(a, ["ag2"]) == {("f1", "r1", "ag2"): "cpus:1;mem:512"}


def test_idle_reservations_count_in_the_totals():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_agent("ag1", R("cpus:2"))
    a.add_agent("ag2", R("cpus(x):6"))
    run(a)
    assert a.role_sorter.client_share("r1") == pytest.approx(0.25)


# ---- 2.5 filters, suppress, revive, deactivate ---------------------------------------------------------


def _one_agent(roles=("r1",), agent="cpus:2;mem:1024", **cfg):
    a = new(**cfg)
    a.add_framework("f1", list(roles))
    a.add_agent("ag1", R(agent))
    return a


def test_filter_blocks_while_it_contains_the_offer_and_expires_by_now():
    a = _one_agent()
    assert run(a, now=0.0) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=5.0, now=0.0)
    assert run(a, now=1.0) == {}
    assert run(a, now=4.999) == {}
    assert run(a, now=5.0) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}  # gone at decline + timeout


def test_decide_with_no_time_counts_every_present_filter():
    a = _one_agent()
    run(a)
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=5.0, now=0.0)
    assert run(a, now=None) == {}
    assert offers_of(a.decide(100.0)) != {}  # expired by time ...
    assert run(a, now=None) == {}  # ... but still present
    a.expire_filters(4.0)
    assert run(a, now=None) == {}
    a.expire_filters(5.0)
    assert a.filters == {}
    assert run(a, now=None) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}


def test_filter_is_bypassed_when_more_is_available():
    a = _one_agent()
    run(a)
    a.recover("f1", "r1", "ag1", R("cpus:1;mem:512"), refuse_seconds=10.0, now=0.0)
    assert run(a, now=1.0) == {}  # cpus:1;mem:512 is contained in the refused set
    a.recover("f1", "r1", "ag1", R("cpus:1;mem:512"), refuse_seconds=None, now=1.0)
    assert run(a, now=2.0) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}


def test_filter_is_per_framework_role_and_agent():
    a = new()
    a.add_framework("f1", ["r1", "r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    assert run(a) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=100.0)
    # the same framework in another role is not filtered
    assert run(a, now=1.0) == {("f1", "r2", "ag1"): "cpus:2;mem:1024"}
    a.recover("f1", "r2", "ag1", R("cpus:2;mem:1024"), refuse_seconds=None)
    a.add_framework("f2", ["r1"])
    a.suppress("f1", ["r2"])
    # another framework of the filtered role is not filtered
    assert run(a, now=1.0) == {("f2", "r1", "ag1"): "cpus:2;mem:1024"}
    # another agent is not filtered
    a.add_agent("ag2", R("cpus:1;mem:128"))
    a.suppress("f2")
    assert run(a, ["ag2"], now=1.0) == {("f1", "r1", "ag2"): "cpus:1;mem:128"}


def test_refuse_zero_or_none_installs_no_filter():
    a = _one_agent()
    run(a)
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=0.0)
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=None)
    assert a.filters == {}
    assert run(a) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}


def test_effective_refuse_seconds_rules():
    assert effective_refuse_seconds(-1.0, 1.0) == 5.0
    assert effective_refuse_seconds(0.0, 1.0) == 0.0
    assert effective_refuse_seconds(1.0, 60.0) == 60.0
    assert effective_refuse_seconds(400 * 86400.0, 1.0) == 365 * 86400.0
    assert effective_refuse_seconds(2.0, 1.0) == 2.0


def test_suppress_stops_offers_keeps_allocations_and_filters():
    a = new()
    a.add_framework("f1", ["r1", "r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    a.add_agent("ag2", R("cpus:1;mem:512"))
    run(a, ["ag1"])
    a.recover("f1", "r1", "ag1", R("cpus:1;mem:512"), refuse_seconds=100.0)
    a.suppress("f1", ["r1"])
    assert a.agents["ag1"].allocated == {("f1", "r1"): R("cpus:1;mem:512")}
    assert ("f1", "r1", "ag1") in a.filters
    assert run(a, ["ag2"]) == {("f1", "r2", "ag2"): "cpus:1;mem:512"}  # r2 is not suppressed
    a.suppress("f1")  # all roles
    assert run(a) == {}
    assert ("f1", "r1", "ag1") in a.filters


def test_revive_clears_only_the_filters_of_its_roles_and_unsuppresses_them():
    a = new()
    a.add_framework("f1", ["r1", "r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    a.add_agent("ag2", R("cpus(r2):2;mem(r2):1024"))
    offers = run(a)
    assert offers == {("f1", "r1", "ag1"): "cpus:2;mem:1024", ("f1", "r2", "ag2"): "cpus(r2):2;mem(r2):1024"}
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=100.0)
    a.recover("f1", "r2", "ag2", R("cpus(r2):2;mem(r2):1024"), refuse_seconds=100.0)
    a.suppress("f1")
    assert run(a) == {}
    a.revive("f1", ["r1"])
    assert set(a.filters) == {("f1", "r2", "ag2")}
    assert a.frameworks["f1"].suppressed == {"r2"}
    assert run(a, now=1.0) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}
    a.revive("f1", ["r2"])
    assert a.filters == {}
    assert run(a, now=1.0) == {("f1", "r2", "ag2"): "cpus(r2):2;mem(r2):1024"}


def test_revive_with_no_roles_means_all_roles():
    a = new()
    a.add_framework("f1", ["r1", "r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    run(a)
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=100.0)
    a.suppress("f1", ["r2"])
    a.revive("f1")
    assert a.filters == {} and a.frameworks["f1"].suppressed == set()


def test_deactivate_drops_all_filters_and_activate_keeps_suppressed_roles():
    a = new()
    a.add_framework("f1", ["r1", "r2"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    a.add_agent("ag2", R("cpus(r2):1;mem(r2):64"))
    run(a)
    a.recover("f1", "r1", "ag1", R("cpus:2;mem:1024"), refuse_seconds=100.0)
    a.recover("f1", "r2", "ag2", R("cpus(r2):1;mem(r2):64"), refuse_seconds=100.0)
    a.suppress("f1", ["r2"])
    a.deactivate_framework("f1")
    assert a.filters == {}
    assert run(a) == {}
    a.activate_framework("f1")
    assert run(a, now=1.0) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}  # r2 still suppressed


def test_removing_an_agent_drops_its_filters_only():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    a.add_agent("ag2", R("cpus:1;mem:512"))
    run(a)
    recover_all(a, refuse=100.0)
    assert set(a.filters) == {("f1", "r1", "ag1"), ("f1", "r1", "ag2")}
    a.remove_agent("ag1")
    assert set(a.filters) == {("f1", "r1", "ag2")}
    a.add_agent("ag1", R("cpus:2;mem:1024"))
    assert run(a, now=1.0) == {("f1", "r1", "ag1"): "cpus:2;mem:1024"}


def test_removing_an_agent_takes_its_resources_out_of_totals_and_shares():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_framework("f2", ["r2"])
    a.add_agent("ag1", R("cpus:4;mem:1024"))
    a.add_agent("ag2", R("cpus:1;mem:64"))
    run(a)
    a.remove_agent("ag1")
    assert a.totals == {"cpus": 1.0, "mem": 64.0}
    assert a.role_sorter.allocation("r1") == {} or a.role_sorter.allocation("r2") == {}


# ---- 2.7 minimum allocatable resources -----------------------------------------------------------------


def test_default_minimum_is_cpus_001_or_mem_32():
    for agent, offered in (("cpus:0.009;mem:31", False), ("cpus:0.01", True), ("mem:32", True),
                           ("disk:1000", False), ("cpus:0.005;mem:16;disk:1;ports:[1-2]", False)):
        a = _one_agent(agent=agent)
        assert bool(run(a)) is offered, agent


def test_minimum_is_checked_on_reserved_and_unreserved_summed():
    a = _one_agent(agent="cpus:0.005;cpus(r1):0.005")
    assert run(a) == {("f1", "r1", "ag1"): "cpus:0.005;cpus(r1):0.005"}


def test_configured_minimum_sets():
    cfg = dict(min_allocatable=((("cpus", 1.0), ("mem", 100.0)),))
    assert run(_one_agent(agent="cpus:1;mem:99", **cfg)) == {}
    assert run(_one_agent(agent="cpus:0.5;mem:1000", **cfg)) == {}
    assert run(_one_agent(agent="cpus:1;mem:100", **cfg)) == {("f1", "r1", "ag1"): "cpus:1;mem:100"}


def test_empty_configured_minimum_allows_anything_but_nothing_empty():
    a = _one_agent(agent="cpus:0.001", min_allocatable=())
    assert run(a) == {("f1", "r1", "ag1"): "cpus:0.001"}
    assert run(a) == {}


def test_framework_override_per_role():
    a = new()
    a.add_framework("f1", ["r1", "r2"], min_allocatable={"r1": [{"mem": 1000.0}]})
    a.add_agent("ag1", R("cpus:2;mem:512"))
    # r1 sorts first but its override is not met; the same framework in r2 uses the default
    assert run(a) == {("f1", "r2", "ag1"): "cpus:2;mem:512"}
    a2 = new()
    a2.add_framework("f1", ["r1"], min_allocatable={"r1": [{"mem": 1000.0}]})
    a2.add_framework("f2", ["r1"])
    a2.add_agent("ag1", R("cpus:2;mem:512"))
    assert run(a2) == {("f2", "r1", "ag1"): "cpus:2;mem:512"}


def test_framework_override_empty_list_means_anything():
    a = new()
    a.add_framework("f1", ["r1"], min_allocatable={"r1": []})
    a.add_framework("f2", ["r2"])
    a.add_agent("ag1", R("disk:5"))
    assert run(a) == {("f1", "r1", "ag1"): "disk:5"}


def test_update_framework_changes_roles_and_override():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_agent("ag1", R("cpus:1;mem:64"))
    a.update_framework("f1", ["r2"], min_allocatable={"r2": [{"cpus": 2.0}]})
    assert run(a) == {}
    a.update_framework("f1", ["r2"])
    assert run(a) == {("f1", "r2", "ag1"): "cpus:1;mem:64"}
    assert "r1" not in a.role_sorter


# ---- decide(): pure, seeded, deterministic --------------------------------------------------------------


def _busy_allocator() -> HierarchicalAllocator:
    a = new()
    a.set_quota("q", {"cpus": 3.0}, {"cpus": 5.0})
    a.set_quota("z", {"mem": 100.0}, {})
    a.update_weights({"a": 2.0, "a/.": 0.5})
    a.add_framework("f1", ["a", "a/b"])
    a.add_framework("f2", ["a/b", "q"], min_allocatable={"q": []})
    a.add_framework("f3", ["q"])
    a.add_framework("f4", ["n"], suppressed=["n"])
    a.add_agent("ag1", R("cpus:4;mem:1024;ports:[31000-31009];cpus(a):1"), [("f1", "a", R("cpus:1"))])
    a.add_agent("ag2", R("cpus:2;mem:512;cpus(a/b):2;mem(q):64"))
    a.add_agent("ag3", R("cpus:8;mem:4096;disk:100"))
    a.recover("f1", "a", "ag1", R("cpus:1"), refuse_seconds=3.0, now=0.0)
    return a


def test_decide_leaves_the_state_unchanged():
    a = _busy_allocator()
    before = digest(a)
    for seed in range(5):
        d = a.decide(1.0, None, seed)
        assert d.offers
        assert digest(a) == before
    a.decide(None, ["ag2", "nope"], 7)
    assert digest(a) == before


def test_same_seed_same_decision():
    d1 = _busy_allocator().decide(1.0, None, 42)
    d2 = _busy_allocator().decide(1.0, None, 42)
    a = _busy_allocator()
    d3 = a.decide(1.0, None, 42)
    d4 = a.decide(1.0, None, 42)
    assert offers_of(d1) == offers_of(d2) == offers_of(d3) == offers_of(d4)
    assert [(t.agent_id, t.stage, t.order) for t in d1.traces] == [(t.agent_id, t.stage, t.order) for t in d2.traces]


def test_agents_are_shuffled_by_the_seed_not_by_the_order_given():
    def fresh():
        a = new()
        a.add_framework("f1", ["r1"])
        a.add_framework("f2", ["r2"])
        a.add_agent("ag1", R("cpus:1;mem:512"))
        a.add_agent("ag2", R("cpus:2;mem:1024"))
        a.add_agent("ag3", R("cpus:3;mem:2048"))
        return a
    outcomes = set()
    for seed in range(30):
        a = fresh()
        d = a.decide(None, None, seed)
        again = fresh().decide(None, ["ag3", "ag1", "ag2"], seed)
        assert offers_of(d) == offers_of(again)
        assert [t.agent_id for t in d.traces] == [t.agent_id for t in again.traces]
        outcomes.add(tuple(sorted(offers_of(d).items())))
    # the first agent visited goes to r1 (path tie): which one that is depends on the seed
    assert len(outcomes) > 1


def test_stage_two_reshuffles_the_agents():
    a = new()
    a.set_quota("q", {"cpus": 100.0}, {"mem": 0.0})  # never satisfied; mem never offered to q
    a.add_framework("fq", ["q"])
    a.add_framework("fn", ["n"])
    for i in range(6):
        a.add_agent(f"ag{i}", R("cpus:1;mem:64"))
    differs = False
    for seed in range(10):
        d = a.decide(None, None, seed)
        stage1 = [t.agent_id for t in d.traces if t.stage == 1]
        stage2 = [t.agent_id for t in d.traces if t.stage == 2]
        assert sorted(stage1) == sorted(stage2) == [f"ag{i}" for i in range(6)]
        differs |= stage1 != stage2
    assert differs


def test_role_order_is_computed_once_per_agent():
    a = new()
    for r in ("r1", "r2", "r3"):
        a.add_framework(f"f{r}", [r])
    a.add_agent("ag1", R("cpus:1;mem:512;cpus(r2):1;cpus(r3):1"))
    # r1 takes the unreserved part and its share jumps; r2 and r3 still get their reservations
    assert run(a) == {("fr1", "r1", "ag1"): "cpus:1;mem:512", ("fr2", "r2", "ag1"): "cpus(r2):1",
                      ("fr3", "r3", "ag1"): "cpus(r3):1"}


def test_decision_over_some_agents_only():
    a = new()
    a.add_framework("f1", ["r1"])
    a.add_agent("ag1", R("cpus:1;mem:512"))
    a.add_agent("ag2", R("cpus:1;mem:512"))
    assert run(a, ["ag2"]) == {("f1", "r1", "ag2"): "cpus:1;mem:512"}
    a.activate_agent("ag1", False)
    assert run(a) == {}
    a.activate_agent("ag1", True)
    assert run(a) == {("f1", "r1", "ag1"): "cpus:1;mem:512"}


# ---- shared persistent volumes (Mesos: always available, offered once per run, SHARED_RESOURCES only) --------

from eventstore.resources import DiskVolume, Persistence, Resource  # noqa: E402

SV = Resources([Resource("disk", "SCALAR", scalar=100.0, role="db", persistence=Persistence("pv1"),
                         volume=DiskVolume("data"), shared=True)])


def _shared_agent(*frameworks: tuple[str, bool, dict | None]) -> HierarchicalAllocator:
    a = new()
    for fid, shared_ok, min_alloc in frameworks:
        a.add_framework(fid, ["db"], shared_ok=shared_ok, min_allocatable=min_alloc)
    a.add_agent("ag1", R("cpus:4;mem:1024;disk(db):200") + SV)
    return a


def test_a_shared_volume_stays_available_and_counts_once_per_holder_whatever_its_copies():
    a = _shared_agent(("f1", True, None), ("f2", True, None))
    ag = a.agents["ag1"]
    assert ag.has_shared
    a.allocate("f1", "db", "ag1", SV)
    a.allocate("f1", "db", "ag1", SV)  # a second holder: one more copy
    a.allocate("f2", "db", "ag1", SV)
    assert ag.available == ag.total  # shared: available whatever is allocated
    assert [r.copies for r in ag.allocated[("f1", "db")]] == [2]
    assert a.fw_sorters["db"].allocation("f1") == {"disk": 100.0} == a.fw_sorters["db"].allocation("f2")
    assert a.role_sorter.allocation("db") == {"disk": 100.0}  # the role holds it once on the agent
    assert a.alloc_total == {"disk": 100.0} == a.reserved_alloc_total  # and the agent once
    a.recover("f1", "db", "ag1", SV)
    assert a.fw_sorters["db"].allocation("f1") == {"disk": 100.0}  # a copy left
    a.recover("f1", "db", "ag1", SV)
    assert a.fw_sorters["db"].allocation("f1") == {} and a.alloc_total == {"disk": 100.0}  # f2 still holds it
    a.remove_agent("ag1")
    assert a.alloc_total == {} and a.reserved_alloc_total == {} and a.role_sorter.allocation("db") == {}


def test_a_run_offers_a_shared_volume_once_per_agent_and_the_next_run_again():
    # f2 takes an offer of disk alone: without the once-per-run rule it would get the volume again
    a = _shared_agent(("f1", True, None), ("f2", True, {"db": [{"disk": 1.0}]}))
    assert run(a) == {("f1", "db", "ag1"): "cpus:4;disk(db):200;disk(db)[pv1:data]<SHARED x1>:100;mem:1024"}
    assert run(a) == {("f2", "db", "ag1"): "disk(db)[pv1:data]<SHARED x1>:100"}
    assert run(a) == {("f2", "db", "ag1"): "disk(db)[pv1:data]<SHARED x1>:100"}  # each run, one more copy


def test_a_shared_volume_is_offered_once_across_both_stages():
    a = _shared_agent(("f1", True, None), ("f2", True, {"db": [{"disk": 1.0}]}))
    a.set_quota("db", {"cpus": 1.0}, {"cpus": 1.0})  # stage 1 gives f1 one cpu and the volume
    d = a.decide(None, None, 0)
    assert sum(1 for o in d.offers for r in o.resources if r.shared) == 1


def test_frameworks_without_shared_resources_never_get_shared_volumes():
    a = _shared_agent(("plain", False, {"db": [{"disk": 1.0}]}))
    assert run(a) == {("plain", "db", "ag1"): "cpus:4;disk(db):200;mem:1024"}
    assert run(a) == {}  # the volume alone is left: not for it
    a.update_framework("plain", ["db"], min_allocatable={"db": [{"disk": 1.0}]}, shared_ok=True)
    assert run(a) == {("plain", "db", "ag1"): "disk(db)[pv1:data]<SHARED x1>:100"}


def test_decide_with_shared_volumes_leaves_the_state_unchanged_and_snapshots_keep_shared_ok():
    a = _shared_agent(("f1", True, None), ("f2", False, None))
    a.allocate("f1", "db", "ag1", SV + R("cpus:1"))
    before = digest(a)
    for seed in range(3):
        assert a.decide(None, None, seed).offers
        assert digest(a) == before
    rec = a.to_record()
    b = HierarchicalAllocator.from_record(rec)
    assert digest(b) == before and [b.frameworks[f].shared_ok for f in ("f1", "f2")] == [True, False]
    for fw in rec["frameworks"]:
        del fw[6:]  # a record written before shared volumes: no one may have shared resources
    assert not any(fw.shared_ok for fw in HierarchicalAllocator.from_record(rec).frameworks.values())


def test_reserved_records_of_one_name_are_counted_together():
    """A role may hold its reservation and its ancestor's (or reserved disk and a volume): the allocation totals
    sum them (they were counted as the last one alone)."""
    a = new()
    a.add_framework("f", ["a/b"])
    a.add_agent("ag", R("cpus:1;cpus(a):1;cpus(a/b):2"))
    a.allocate("f", "a/b", "ag", R("cpus(a):1;cpus(a/b):2"))
    assert a.reserved_alloc_total == {"cpus": 3.0}


# ---- property test ---------------------------------------------------------------------------------------

ROLES = ["a", "a/b", "a/b/c", "b", "c/d"]
TOPS = ["a", "b", "c"]
AGENTS = [f"ag{i}" for i in range(5)]
FWS = [f"f{i}" for i in range(4)]

roles_st = st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True)
quantity = st.sampled_from([0, 0.5, 1, 2, 3, 4, 8])
mem_q = st.sampled_from([0, 16, 64, 256, 512, 1024])

add_agent_st = st.tuples(st.just("add_agent"), st.sampled_from(AGENTS), quantity, mem_q, st.booleans(),
                         st.none() | st.sampled_from(ROLES), quantity, mem_q, st.booleans())
add_framework_st = st.tuples(st.just("add_framework"), st.sampled_from(FWS), roles_st,
                             st.lists(st.sampled_from(ROLES), max_size=2))
decide_st = st.tuples(st.just("decide"), st.integers(0, 2**16),
                      st.none() | st.lists(st.sampled_from(AGENTS), max_size=3), st.booleans())
recover_st = st.tuples(st.just("recover"), st.integers(0, 50), st.sampled_from(["all", "unreserved", "ports"]),
                       st.none() | st.sampled_from([-1.0, 0.0, 0.5, 2.0, 10.0]))

op_st = st.one_of(
    add_agent_st,
    add_framework_st,
    decide_st,
    decide_st,
    recover_st,
    recover_st,
    st.tuples(st.just("suppress"), st.sampled_from(FWS), st.lists(st.sampled_from(ROLES), max_size=2)),
    st.tuples(st.just("revive"), st.sampled_from(FWS), st.lists(st.sampled_from(ROLES), max_size=2)),
    st.tuples(st.just("set_quota"), st.sampled_from(TOPS),
              st.dictionaries(st.sampled_from(["cpus", "mem"]), st.sampled_from([1.0, 2.0, 5.0, 100.0])),
              st.dictionaries(st.sampled_from(["cpus", "mem"]), st.sampled_from([0.0, 2.0, 6.0, 600.0]))),
    st.tuples(st.just("update_weights"), st.sampled_from(ROLES + ["a/."]), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
    st.tuples(st.just("remove_agent"), st.sampled_from(AGENTS)),
    st.tuples(st.just("deactivate"), st.sampled_from(FWS), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, 3.0])),
    st.tuples(st.just("remove_framework"), st.sampled_from(FWS)),
    st.tuples(st.just("update_framework"), st.sampled_from(FWS), roles_st,
              st.lists(st.sampled_from(ROLES), max_size=2)),
    st.tuples(st.just("agent_active"), st.sampled_from(AGENTS), st.booleans()),
)
# a cluster first (agents and frameworks), then anything, with allocation runs in between
sequence_st = st.tuples(st.lists(add_agent_st, min_size=1, max_size=5),
                        st.lists(add_framework_st, min_size=1, max_size=4),
                        st.lists(st.tuples(op_st, decide_st), min_size=1, max_size=20)).map(
    lambda t: [*t[0], *t[1], *(op for pair in t[2] for op in pair)])


def _allocatable_to(resource_role: str, role: str) -> bool:
    return resource_role == UNRESERVED or resource_role == role or role.startswith(resource_role + "/")


def _consumed(a: HierarchicalAllocator, top: str) -> dict[str, float]:
    """Consumed quota recomputed from the agents: reservations of top and its subroles (allocated
    or not) + unreserved scalars allocated to top and its subroles."""
    out: dict[str, float] = {}

    def mine(role):
        return role == top or role.startswith(top + "/")
    for ag in a.agents.values():
        for r in ag.total:
            if r.type == "SCALAR" and r.role != UNRESERVED and mine(r.role):
                out[r.name] = out.get(r.name, 0.0) + r.scalar
        for (_fid, role), res in ag.allocated.items():
            if mine(role):
                for r in res:
                    if r.type == "SCALAR" and r.role == UNRESERVED:
                        out[r.name] = out.get(r.name, 0.0) + r.scalar
    return out


def _headroom(a: HierarchicalAllocator) -> tuple[dict, dict]:
    """(available, required) headroom recomputed from the agents."""
    avail: dict[str, float] = {}
    for ag in a.agents.values():
        for r in ag.available:
            if r.type == "SCALAR" and r.role == UNRESERVED:
                avail[r.name] = avail.get(r.name, 0.0) + r.scalar
    required: dict[str, float] = {}
    for role, q in a.quotas.items():
        c = _consumed(a, role)
        for n, g in q.guarantees.items():
            required[n] = required.get(n, 0.0) + max(0.0, g - c.get(n, 0.0))
    return avail, required


def _check_agents(a: HierarchicalAllocator) -> None:
    for ag in a.agents.values():
        allocated = Resources()
        for res in ag.allocated.values():
            allocated = allocated + res
        assert ag.total.contains(allocated), (ag.agent_id, ag.total, allocated)
        assert allocated + ag.available == ag.total, (ag.agent_id, ag.total, allocated, ag.available)
        # per (name, role): the parts add up exactly (ranges disjoint, scalars sum to the total)
        for t in ag.total:
            parts = [r for res in (ag.available, *ag.allocated.values()) for r in res
                     if r.name == t.name and r.role == t.role]
            if t.type == "RANGES":
                assert sum(e - b + 1 for p in parts for b, e in p.ranges) == sum(e - b + 1 for b, e in t.ranges)
            else:
                assert sum(p.scalar for p in parts) == pytest.approx(t.scalar, abs=1e-6)


def _check_decision(a: HierarchicalAllocator, d, now, candidates) -> None:
    per_agent: dict[str, Resources] = {}
    unres_to_top: dict[tuple[str, str], float] = {}
    for o in d.offers:
        fw = a.frameworks[o.framework_id]
        assert o.role in fw.roles and fw.active and o.role not in fw.suppressed, o
        assert o.agent_id in candidates and a.agents[o.agent_id].active
        assert o.resources, o
        for r in o.resources:
            assert _allocatable_to(r.role, o.role), (o.role, r)
        for f in a.filters.get((o.framework_id, o.role, o.agent_id), ()):
            if now is None or f.expires_at > now:
                assert not f.resources.contains(o.resources), (o, f)
        per_agent[o.agent_id] = per_agent.get(o.agent_id, Resources()) + o.resources
        for r in o.resources:
            if r.type == "SCALAR" and r.role == UNRESERVED:
                key = (o.role, r.name)
                unres_to_top[key] = unres_to_top.get(key, 0.0) + r.scalar
    for aid, res in per_agent.items():
        assert a.agents[aid].available.contains(res), (aid, a.agents[aid].available, res)
    # quota limits: a top-level role is never offered unreserved scalars beyond limit - consumed
    for role, q in a.quotas.items():
        c = _consumed(a, role)
        for n, lim in q.limits.items():
            assert unres_to_top.get((role, n), 0.0) <= max(0.0, lim - c.get(n, 0.0)) + 1e-6, (role, n)


def execute(ops, check: bool) -> list:
    a = new()
    now = 0.0
    decisions = []
    for op in ops:
        kind = op[0]
        if kind == "add_agent":
            _, aid, cpus, mem, ports, rrole, rcpus, rmem, rports = op
            if aid in a.agents:
                continue
            parts = []
            if cpus:
                parts.append(f"cpus:{cpus}")
            if mem:
                parts.append(f"mem:{mem}")
            if ports:
                parts.append("ports:[31000-31009]")
            if rrole:
                if rcpus:
                    parts.append(f"cpus({rrole}):{rcpus}")
                if rmem:
                    parts.append(f"mem({rrole}):{rmem}")
                if rports:
                    parts.append(f"ports({rrole}):[32000-32004]")
            a.add_agent(aid, R(";".join(parts)))
        elif kind == "add_framework":
            _, fid, roles, suppressed = op
            if fid in a.frameworks:
                continue
            a.add_framework(fid, roles, [r for r in suppressed if r in roles])
        elif kind == "decide":
            _, seed, agents, timed = op
            t = now if timed else None
            before = digest(a) if check else None
            d = a.decide(t, agents, seed)
            if check:
                assert digest(a) == before, "decide() changed the allocator's state"
                candidates = set(a.agents) if agents is None else set(agents) & set(a.agents)
                _check_decision(a, d, t, candidates)
                assert offers_of(a.decide(t, agents, seed, explain=False)) == offers_of(d)
                avail, required = _headroom(a)
                held = all(avail.get(n, 0.0) >= v - 1e-6 for n, v in required.items())
            decisions.append((seed, sorted((k, v) for k, v in offers_of(d).items())))
            for o in d.offers:
                a.allocate(o.framework_id, o.role, o.agent_id, o.resources)
            if check and held:
                # offers never eat into the headroom that unsatisfied guarantees need
                avail, required = _headroom(a)
                for n, v in required.items():
                    assert avail.get(n, 0.0) >= v - 1e-6, ("headroom", n, avail, required)
        elif kind == "recover":
            _, idx, what, refuse = op
            held = sorted(((ag.agent_id, k, v) for ag in a.agents.values() for k, v in ag.allocated.items()),
                          key=lambda x: (x[0], x[1]))
            if not held:
                continue
            aid, (fid, role), res = held[idx % len(held)]
            if what == "unreserved":
                res = Resources(r for r in res if r.role == UNRESERVED and r.type == "SCALAR")
            elif what == "ports":
                res = Resources(r for r in res if r.type == "RANGES")
            if not res:
                continue
            eff = None if refuse is None else effective_refuse_seconds(refuse, a.config.allocation_interval)
            a.recover(fid, role, aid, res, eff, now)
        elif kind == "suppress":
            _, fid, roles = op
            if fid in a.frameworks:
                a.suppress(fid, [r for r in roles if r in a.frameworks[fid].roles])
        elif kind == "revive":
            _, fid, roles = op
            if fid in a.frameworks:
                a.revive(fid, [r for r in roles if r in a.frameworks[fid].roles])
        elif kind == "set_quota":
            _, role, guarantees, limits = op
            if any(g > limits.get(n, float("inf")) for n, g in guarantees.items()):
                continue  # Mesos rejects guarantees above limits before they reach the allocator
            a.set_quota(role, guarantees, limits)
        elif kind == "update_weights":
            _, role, w = op
            a.update_weights({role: w})
        elif kind == "remove_agent":
            if op[1] in a.agents:
                a.remove_agent(op[1])
        elif kind == "deactivate":
            _, fid, deactivate = op
            if fid in a.frameworks:
                (a.deactivate_framework if deactivate else a.activate_framework)(fid)
        elif kind == "remove_framework":
            if op[1] in a.frameworks:
                a.remove_framework(op[1])
        elif kind == "update_framework":
            _, fid, roles, suppressed = op
            if fid in a.frameworks:
                a.update_framework(fid, roles, [r for r in suppressed if r in roles])
        elif kind == "agent_active":
            if op[1] in a.agents:
                a.activate_agent(op[1], op[2])
        elif kind == "tick":
            now += op[1]
            a.expire_filters(now)
            if check:
                # after expiry, counting every present filter is the same as counting by time
                assert offers_of(a.decide(None, None, 3)) == offers_of(a.decide(now, None, 3))
        if check:
            _check_agents(a)
    return decisions


# Found by this test in a CI run: f1 leaves role a/b while an offer of ports alone (no scalar, so not in the
# sorters) is held under it; recovering it looked for a/b's sorter client.
PORTS_ONLY_AFTER_LEAVING_THE_ROLE = [
    ('add_agent', 'ag0', 0, 0, False, None, 0, 0, False), ('add_agent', 'ag1', 0.5, 0, False, None, 0, 0, False),
    ('add_agent', 'ag2', 0, 64, True, None, 0, 0, False), ('add_framework', 'f0', ['a'], []),
    ('add_framework', 'f1', ['a', 'a/b'], []), ('decide', 1, None, False), ('recover', 1, 'unreserved', None),
    ('decide', 0, [], False), ('add_framework', 'f0', ['a'], []), ('decide', 0, [], False),
    ('update_framework', 'f1', ['a'], []), ('decide', 0, None, False), ('decide', 0, None, False), ('tick', 0.5),
    ('decide', 0, None, False), ('recover', 8, 'all', None), ('decide', 0, None, False)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_st)
@example(PORTS_ONLY_AFTER_LEAVING_THE_ROLE)
def test_random_operation_sequences_keep_the_invariants(ops):
    first = execute(ops, check=True)
    assert execute(ops, check=False) == first


def test_seeded_shuffle_is_fixed_by_the_seed():
    from master.allocator.shuffle import SeededShuffle
    a, b = list(range(20)), list(range(20))
    SeededShuffle(7).shuffle(a)
    SeededShuffle(7).shuffle(b)
    assert a == b and sorted(a) == list(range(20)) and a != list(range(20))
    # Pinned: a recorded decision must re-derive the same agent order on any Python.
    c = list(range(6))
    SeededShuffle(42).shuffle(c)
    assert c == PINNED_42


PINNED_42 = [4, 3, 0, 2, 5, 1]
