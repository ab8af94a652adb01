"""The DRF and strict-priority sorters (allocator-semantics.md 2.1)."""

import pytest

from master.allocator.sorter import DRFSorter, PrioritySorter, make_sorter


def order(s: DRFSorter) -> list[str]:
    return list(s.sort())


def alloc(s: DRFSorter, client: str, times: int = 1, **q: float) -> None:
    """`times` separate allocated() calls of `q` each (every call counts once)."""
    for _ in range(times):
        s.allocated(client, dict(q))


def sorter(*clients: str, totals=None, weights=None, excluded=(), cls=DRFSorter) -> DRFSorter:
    s = cls(weights, excluded)
    s.set_totals(totals or {"cpus": 100.0, "mem": 1000.0})
    for c in clients:
        s.add(c)
    return s


# ---- plain DRF order ------------------------------------------------------------------------------------


def test_share_is_the_dominant_fraction_over_names():
    s = sorter("a", "b", "c", totals={"cpus": 10.0, "mem": 100.0})
    alloc(s, "a", cpus=3)  # 0.3
    alloc(s, "b", mem=20)  # 0.2
    alloc(s, "c", cpus=1, mem=5)  # max(0.1, 0.05)
    assert order(s) == ["c", "b", "a"]
    assert s.client_share("a") == pytest.approx(0.3)
    assert s.client_share("c") == pytest.approx(0.1)


def test_share_is_divided_by_the_weight():
    s = sorter("a", "b", totals={"cpus": 10.0}, weights={"a": 2.0})
    alloc(s, "a", cpus=3)  # 0.3 / 2 = 0.15
    alloc(s, "b", cpus=2)  # 0.2
    assert order(s) == ["a", "b"]
    assert s.client_share("a") == pytest.approx(0.15)


def test_equal_shares_are_ordered_by_allocation_count():
    s = sorter("a", "b")
    alloc(s, "a", times=2, cpus=5)  # 10 cpus in two allocations
    alloc(s, "b", cpus=10)  # 10 cpus in one
    assert order(s) == ["b", "a"]
    assert (s.count("a"), s.count("b")) == (2, 1)


def test_count_is_never_decremented_by_unallocation_or_deactivation():
    s = sorter("a", "b")
    alloc(s, "a", times=3, cpus=1)
    s.unallocated("a", {"cpus": 3.0})
    s.deactivate("a")
    s.activate("a")
    assert s.count("a") == 3
    assert s.allocation("a") == {}
    alloc(s, "b", cpus=0.001)  # share 1e-5 > 0 but tiny: a (0, count 3) still wins on share
    assert order(s) == ["a", "b"]
    s.unallocated("b", {"cpus": 0.001})
    assert order(s) == ["b", "a"]  # both 0: b has count 1 < 3


def test_equal_shares_and_counts_are_ordered_by_path_bytewise():
    s = sorter("role9", "role10", "b", "B", "a-x", "a.x")
    # '-' (0x2d) < '.' (0x2e) < digits < uppercase < lowercase
    assert order(s) == ["B", "a-x", "a.x", "b", "role10", "role9"]


def test_share_ignores_names_without_total_and_non_positive_totals():
    s = sorter("a", "b", totals={"cpus": 10.0, "gpus": 0.0})
    alloc(s, "a", cpus=1, disk=500)  # disk has no total: ignored
    alloc(s, "b", cpus=2)
    assert s.client_share("a") == pytest.approx(0.1)
    assert order(s) == ["a", "b"]


def test_fair_sharing_excluded_names_do_not_count_in_shares():
    plain = sorter("a", "b", totals={"cpus": 10.0, "gpus": 1.0})
    excl = sorter("a", "b", totals={"cpus": 10.0, "gpus": 1.0}, excluded=("gpus",))
    for s in (plain, excl):
        alloc(s, "a", cpus=1, gpus=1)
        alloc(s, "b", cpus=2)
    assert order(plain) == ["b", "a"]  # a's dominant share is gpus: 1.0
    assert order(excl) == ["a", "b"]  # gpus ignored: a 0.1 < b 0.2
    assert excl.client_share("a") == pytest.approx(0.1)


def test_a_change_of_totals_resorts():
    s = sorter("a", "b", totals={"cpus": 10.0, "mem": 200.0})
    alloc(s, "a", cpus=5)  # 0.5
    alloc(s, "b", mem=50)  # 0.25
    assert order(s) == ["b", "a"]
    s.set_totals({"cpus": 20.0, "mem": 100.0})  # a 0.25, b 0.5
    assert order(s) == ["a", "b"]
    assert s.client_share("b") == pytest.approx(0.5)


def test_ieee754_tie_is_ordered_like_mesos_doubles():
    # (15/100)/3 = 0.049999999999999996 < (10/100)/2 = 0.05 in doubles although both are 1/20.
    # Counts and paths both favour "a", so only the double arithmetic puts "b" first.
    s = sorter("a", "b", totals={"cpus": 100.0}, weights={"a": 2.0, "b": 3.0})
    alloc(s, "a", cpus=10)
    alloc(s, "b", times=3, cpus=5)
    assert (15 / 100) / 3 < (10 / 100) / 2
    assert order(s) == ["b", "a"]


# ---- hierarchy ------------------------------------------------------------------------------------------


def test_sort_is_a_preorder_walk_over_subtree_sums():
    s = sorter("a/x", "a/y", "b", "c")
    alloc(s, "a/x", cpus=10)  # node a: 0.1
    alloc(s, "b", cpus=5)  # 0.05
    alloc(s, "c", cpus=20)  # 0.2
    # a/y (share 0) is below b (0.05), but it competes inside `a`, which sorts after b.
    assert order(s) == ["b", "a/y", "a/x", "c"]


def test_internal_node_count_is_the_subtree_sum():
    s = sorter("a/x", "a/y", "b")
    alloc(s, "a/x", cpus=2)
    alloc(s, "a/y", cpus=3)  # node a: 5 cpus in 2 allocations
    alloc(s, "b", cpus=5)  # 5 cpus in 1
    assert order(s)[0] == "b"
    s2 = sorter("a/x", "a/y", "b")
    alloc(s2, "a/x", cpus=2)
    alloc(s2, "a/y", cpus=3)
    alloc(s2, "b", cpus=1)
    alloc(s2, "b", cpus=1)
    alloc(s2, "b", cpus=3)  # 5 cpus in 3 allocations > node a's 2
    assert order(s2) == ["a/x", "a/y", "b"]


def test_deep_hierarchy_preorder():
    s = sorter("a/b/c", "a/b/d", "a/e", "f")
    alloc(s, "a/b/c", cpus=4)
    alloc(s, "a/e", cpus=1)
    alloc(s, "f", cpus=3)
    # root: f 0.03 < a 0.05; inside a: e 0.01 < b 0.04; inside b: d 0 < c 0.04
    assert order(s) == ["f", "a/e", "a/b/d", "a/b/c"]


def test_virtual_leaf_competes_with_subroles_and_wins_path_ties():
    s = sorter("a", "a/b")
    assert order(s) == ["a", "a/b"]  # `a/.` < `a/b` byte-wise
    alloc(s, "a", cpus=10)
    assert order(s) == ["a/b", "a"]
    alloc(s, "a/b", cpus=20)
    assert order(s) == ["a", "a/b"]


def test_virtual_leaf_sorts_before_subroles_even_when_added_after_them():
    s = sorter("a/b", "a/A")
    s.add("a")
    # '.' (0x2e) is below uppercase letters too
    assert order(s) == ["a", "a/A", "a/b"]


def test_client_that_gets_a_subrole_keeps_its_allocation_and_count():
    s = sorter("a", "c")
    alloc(s, "a", times=2, cpus=5)
    s.add("a/b")
    assert s.allocation("a") == {"cpus": 10.0}
    assert s.count("a") == 2
    alloc(s, "a/b", cpus=1)
    alloc(s, "c", cpus=10.5)  # c 0.105 < node a 0.11 (a/. 10 + a/b 1)
    assert order(s) == ["c", "a/b", "a"]
    s.unallocated("c", {"cpus": 10.5})
    alloc(s, "c", cpus=11.5)
    assert order(s) == ["a/b", "a", "c"]


def test_removing_the_subrole_collapses_the_virtual_leaf_back():
    s = sorter("a", "a/b", "c")
    alloc(s, "a", cpus=3)
    alloc(s, "a/b", times=4, cpus=5)  # node a: 23 cpus, count 5
    alloc(s, "c", times=2, cpus=10)  # 0.1 < node a 0.23
    assert order(s) == ["c", "a", "a/b"]
    s.remove("a/b")
    assert "a/b" not in s
    assert order(s) == ["a", "c"]  # a alone: 0.03
    assert s.allocation("a") == {"cpus": 3.0}
    # Mesos's DRFSorter::remove takes the removed client's allocation off its ancestors but not its
    # allocation count: node `a` keeps 1 + 4, and so does the leaf it collapses back into.
    assert s.count("a") == 5
    # `a` is a plain leaf again: a new sibling `a/z` pushes it down once more with its own numbers.
    s.add("a/z")
    assert s.allocation("a") == {"cpus": 3.0}
    assert order(s) == ["a/z", "a", "c"]  # inside a: a/z (0) < a/. (0.03)


def test_removing_the_virtual_client_keeps_the_subroles():
    s = sorter("a", "a/b")
    alloc(s, "a", cpus=50)
    alloc(s, "a/b", cpus=1)
    s.add("c")
    alloc(s, "c", cpus=2)
    assert order(s) == ["c", "a/b", "a"]
    s.remove("a")
    assert "a" not in s
    assert order(s) == ["a/b", "c"]  # node a is just a/b now: 0.01 < 0.02


def test_removing_a_client_drops_its_allocation_from_the_ancestors():
    s = sorter("a/x", "a/y", "b")
    alloc(s, "a/x", cpus=50)
    alloc(s, "b", cpus=10)
    assert order(s) == ["b", "a/y", "a/x"]
    s.remove("a/x")
    assert order(s) == ["a/y", "b"]


def test_weight_of_a_subtree_applies_to_the_internal_node():
    s = sorter("a/x", "b", weights={"a": 2.0})
    alloc(s, "a/x", cpus=30)  # node a: 0.3 / 2 = 0.15
    alloc(s, "b", cpus=20)
    assert order(s) == ["a/x", "b"]
    # A weight on the leaf a/x only matters among a's children, not against b.
    s2 = sorter("a/x", "b", weights={"a/x": 2.0})
    alloc(s2, "a/x", cpus=30)
    alloc(s2, "b", cpus=20)
    assert order(s2) == ["b", "a/x"]


def test_virtual_leaf_uses_the_weight_of_a_dot():
    def build(weights):
        s = sorter("a", "a/b", weights=weights)
        alloc(s, "a", cpus=30)  # a/.: 0.3
        alloc(s, "a/b", cpus=20)  # a/b: 0.2
        return order(s)
    assert build({}) == ["a/b", "a"]
    assert build({"a": 10.0}) == ["a/b", "a"]  # weight `a` is the subtree's, not `a/.`'s
    assert build({"a/.": 2.0}) == ["a", "a/b"]  # 0.15 < 0.2


def test_update_weights_resorts():
    s = sorter("a", "b")
    alloc(s, "a", cpus=30)
    alloc(s, "b", cpus=20)
    assert order(s) == ["b", "a"]
    s.set_weights({"a": 2.0})
    assert order(s) == ["a", "b"]
    s.set_weights({})
    assert order(s) == ["b", "a"]


# ---- activity -------------------------------------------------------------------------------------------


def test_inactive_clients_are_skipped_but_keep_allocation_and_count():
    s = sorter("a", "b", "c")
    alloc(s, "a", times=2, cpus=1)
    alloc(s, "b", cpus=5)
    s.deactivate("a")
    assert order(s) == ["c", "b"]
    assert not s.is_active("a")
    assert s.allocation("a") == {"cpus": 2.0}
    assert s.count("a") == 2
    alloc(s, "a", cpus=1)  # allocation to an inactive client still counts
    s.activate("a")
    assert order(s) == ["c", "a", "b"]
    assert s.count("a") == 3


def test_inactive_subrole_still_counts_in_its_parent():
    s = sorter("a/x", "a/y", "b")
    alloc(s, "a/x", cpus=30)
    alloc(s, "b", cpus=10)
    s.deactivate("a/x")
    assert order(s) == ["b", "a/y"]  # node a still has 0.3
    s.deactivate("a/y")
    assert order(s) == ["b"]
    s.activate("a/y")
    assert order(s) == ["b", "a/y"]


def test_client_added_inactive_is_not_sorted_until_activated():
    s = DRFSorter()
    s.set_totals({"cpus": 10.0})
    s.add("a", active=False)
    assert order(s) == []
    s.activate("a")
    assert order(s) == ["a"]


# ---- deferred re-keying ---------------------------------------------------------------------------------


def test_deferred_allocations_do_not_reorder_until_flush():
    s = sorter("a", "b", "c")
    s.deferred = True
    before = order(s)
    assert before == ["a", "b", "c"]
    alloc(s, "a", cpus=50)
    alloc(s, "b", cpus=10)
    assert order(s) == before
    s.flush()
    assert order(s) == ["c", "b", "a"]
    s.deferred = False
    assert order(s) == ["c", "b", "a"]


def test_iterating_a_sort_while_allocating_in_deferred_mode_sees_the_initial_order():
    s = sorter("a", "b", "c")
    s.deferred = True
    seen = []
    for c in s.sort():
        seen.append(c)
        alloc(s, c, cpus=10 * (len(seen)))
    assert seen == ["a", "b", "c"]
    s.flush()
    assert order(s) == ["a", "b", "c"]  # a 0.1 < b 0.2 < c 0.3


def test_leaving_deferred_mode_applies_the_pending_keys_at_the_next_sort():
    s = sorter("a/x", "a/y", "b")
    s.deferred = True
    alloc(s, "a/x", cpus=40)
    assert order(s) == ["a/x", "a/y", "b"]
    s.deferred = False
    assert order(s) == ["b", "a/y", "a/x"]


def test_uncount_takes_back_one_count_along_the_path():
    s = sorter("a/x", "b")
    alloc(s, "a/x", cpus=5)
    alloc(s, "b", cpus=5)
    # a tentative allocation, undone
    s.allocated("a/x", {"cpus": 3.0})
    s.unallocated("a/x", {"cpus": 3.0})
    s.uncount("a/x")
    assert s.count("a/x") == 1
    assert s.allocation("a/x") == {"cpus": 5.0}
    assert order(s) == ["a/x", "b"]  # equal share and count: path a < b
    s.allocated("a/x", {"cpus": 0.0})  # a real (empty) allocation counts
    assert order(s) == ["b", "a/x"]


# ---- strict priority ------------------------------------------------------------------------------------


def test_priority_sorter_puts_higher_weight_strictly_first():
    s = sorter("lo", "hi", "lo2", weights={"hi": 2.0}, cls=PrioritySorter)
    alloc(s, "hi", cpus=90)
    alloc(s, "lo", cpus=10)
    assert order(s) == ["hi", "lo2", "lo"]  # hi despite 0.9; DRF among the weight-1 level
    alloc(s, "lo2", cpus=20)
    assert order(s) == ["hi", "lo", "lo2"]


def test_priority_sorter_does_not_divide_shares_by_weight():
    s = sorter("a", "b", weights={"a": 3.0, "b": 3.0}, cls=PrioritySorter)
    alloc(s, "a", cpus=30)
    alloc(s, "b", cpus=20)
    assert order(s) == ["b", "a"]


def test_priority_sorter_ties_use_count_then_path():
    s = sorter("b", "a", "c", weights={"c": 5.0}, cls=PrioritySorter)
    assert order(s) == ["c", "a", "b"]
    alloc(s, "a", cpus=0)
    assert order(s) == ["c", "b", "a"]


def test_priority_sorter_for_frameworks_uses_explicit_priorities():
    s = make_sorter("priority", for_frameworks=True)
    s.set_totals({"cpus": 10.0})
    for c in ("f1", "f2", "f3"):
        s.add(c)
    s.set_priority("f3", 1.0)
    alloc(s, "f3", cpus=9)
    alloc(s, "f1", cpus=2)
    assert order(s) == ["f3", "f2", "f1"]


def test_make_sorter_rejects_unknown_kinds():
    assert type(make_sorter("drf")) is DRFSorter
    assert type(make_sorter("priority")) is PrioritySorter
    with pytest.raises(ValueError, match="nope"):
        make_sorter("nope")


def test_tentative_allocations_roll_back_to_exactly_what_was_there():
    s = sorter("a/x", "a/y", "b", "c")
    alloc(s, "a/x", cpus=5)
    alloc(s, "b", 2, mem=30.5)
    before, order_before = s.to_record(), order(s)
    s.deferred = True
    s.begin_tentative()
    s.tentatively_allocated("a/y", {"cpus": 7.0, "mem": 0.001})
    s.tentatively_allocated("c", {"cpus": 1.0})
    s.tentatively_allocated("a/y", {"cpus": 3.0})
    s.flush()
    assert s.count("a/y") == 2 and s.allocation("a/y") == {"cpus": 10.0, "mem": 0.001}
    assert order(s)[-1] == "a/y"  # the run sees its own offers
    s.rollback()
    s.deferred = False
    assert s.to_record() == before
    assert order(s) == order_before
    s.allocated("c", {"cpus": 1.0})  # and goes on as if nothing happened
    assert s.count("c") == 1
