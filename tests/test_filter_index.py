"""The allocator's decline filters: looked up by (framework, role, agent), expired from a heap by time
(`expire_filters` looks only at what expires), and always leaving exactly what a scan of every filter
would leave, in the same order."""

from __future__ import annotations

import random

import pytest

from eventstore.resources import Resources
from master.allocator.hierarchical import Filter, HierarchicalAllocator

R = Resources.parse


def allocator(agents=("ag1", "ag2", "ag3"), frameworks=(("f1", ["r1", "r2"]), ("f2", ["r1"]))):
    a = HierarchicalAllocator()
    for aid in agents:
        a.add_agent(aid, R("cpus:4;mem:1024"))
    for fid, roles in frameworks:
        a.add_framework(fid, roles)
    return a


def snapshot(a: HierarchicalAllocator) -> list:
    """The filters, keys and each key's filters in order, by value."""
    return [(k, [(f.resources.format(), f.expires_at) for f in v]) for k, v in a.filters.items()]


def test_several_filters_per_key_expire_one_by_one_keeping_their_order():
    a = allocator()
    key = ("f1", "r1", "ag1")
    for exp, text in ((5.0, "cpus:1"), (10.0, "cpus:2"), (7.0, "cpus:3"), (5.0, "cpus:4")):
        a.add_filter(*key, Filter(R(text), exp))
    a.add_filter("f2", "r1", "ag1", Filter(R("cpus:1"), 6.0))
    a.expire_filters(4.999)
    assert [f.expires_at for f in a.filters[key]] == [5.0, 10.0, 7.0, 5.0]
    a.expire_filters(5.0)  # both at 5.0 go (expires_at <= now)
    assert [(f.resources.format(), f.expires_at) for f in a.filters[key]] == [("cpus:2", 10.0), ("cpus:3", 7.0)]
    a.expire_filters(6.5)
    assert list(a.filters) == [key]
    a.expire_filters(9.0)
    assert [f.expires_at for f in a.filters[key]] == [10.0]
    a.expire_filters(10.0)
    assert a.filters == {} and a._expiries == []


def test_a_filter_counts_only_for_its_own_framework_role_and_agent():
    a = allocator()
    a.add_filter("f1", "r1", "ag1", Filter(R("cpus:4;mem:1024"), 100.0))
    assert a._filtered("f1", "r1", "ag1", R("cpus:1"), 50.0)
    assert not a._filtered("f1", "r1", "ag1", R("cpus:1"), 100.0)  # expired by time, before the fold drops it
    assert not a._filtered("f1", "r2", "ag1", R("cpus:1"), 50.0)
    assert not a._filtered("f2", "r1", "ag1", R("cpus:1"), 50.0)
    assert not a._filtered("f1", "r1", "ag2", R("cpus:1"), 50.0)
    assert not a._filtered("f1", "r1", "ag1", R("cpus:5"), 50.0)  # more than was declined


def test_expiry_looks_only_at_what_expires():
    a = allocator()
    for i in range(2000):
        a.add_filter("f1", "r1", f"ag{i}", Filter(R("cpus:1"), 1000.0 + i))

    class Untouchable(dict):
        def __iter__(self):
            raise AssertionError("expire_filters scanned every filter")

        def items(self):
            raise AssertionError("expire_filters scanned every filter")

        def values(self):
            raise AssertionError("expire_filters scanned every filter")

    a.filters = Untouchable(a.filters)
    a.expire_filters(999.0)
    a.expire_filters(1002.0)
    assert len(a.filters) == 1997 and ("f1", "r1", "ag3") in a.filters


def test_filters_dropped_otherwise_are_skipped_and_the_heap_stays_bounded():
    a = allocator()
    for rnd in range(50):
        for aid in ("ag1", "ag2", "ag3"):
            a.add_filter("f1", "r1", aid, Filter(R("cpus:1"), 1000.0 + rnd))
        a.revive("f1", ["r1"])  # drops them; their heap entries wait for their time
        assert len(a._expiries) <= 2 * a._live_filters + 65
    a.add_filter("f2", "r1", "ag1", Filter(R("cpus:1"), 500.0))
    a.expire_filters(2000.0)
    assert a.filters == {} and a._live_filters == 0


def reference_expire(filters: dict, now: float) -> None:
    """What expiry always meant: every filter with expires_at <= now goes, the rest keep their order."""
    for key in list(filters):
        kept = [f for f in filters[key] if f.expires_at > now]
        if kept:
            filters[key] = kept
        else:
            del filters[key]


@pytest.mark.parametrize("seed", range(8))
def test_random_operations_match_a_scan_of_every_filter_and_are_deterministic(seed):
    rng = random.Random(seed)
    agents = [f"ag{i}" for i in range(6)]
    fws = (("f1", ["r1", "r2"]), ("f2", ["r1"]), ("f3", ["r2"]))
    a, b = allocator(agents, fws), allocator(agents, fws)  # fed the same operations
    ref: dict = {}
    now = 0.0
    for _ in range(400):
        op = rng.random()
        fid, roles = rng.choice(fws)
        role, aid = rng.choice(roles), rng.choice(agents)
        if op < 0.5:
            exp = now + rng.choice([0.5, 1.0, 5.0, 30.0, 600.0])
            res = R(f"cpus:{rng.choice([1, 2, 3])}")
            for x in (a, b):
                x.add_filter(fid, role, aid, Filter(res, exp))
            ref.setdefault((fid, role, aid), []).append(Filter(res, exp))
        elif op < 0.75:
            now += rng.choice([0.0, 0.5, 1.0, 3.0, 10.0])
            for x in (a, b):
                x.expire_filters(now)
            reference_expire(ref, now)
        elif op < 0.85:
            for x in (a, b):
                x.revive(fid, [role])
            for k in [k for k in ref if k[0] == fid and k[1] == role]:
                del ref[k]
        elif op < 0.9 and ref:
            key = rng.choice(sorted(ref))
            i = rng.randrange(len(ref[key]))
            for x in (a, b):
                assert x.remove_filter(key, x.filters[key][i])
            del ref[key][i]
            if not ref[key]:
                del ref[key]
        elif op < 0.95:
            for x in (a, b):
                x.deactivate_framework(fid)
                x.activate_framework(fid)
            for k in [k for k in ref if k[0] == fid]:
                del ref[k]
        else:
            for x in (a, b):
                x.clear_filters()
            ref.clear()
        want = [(k, [(f.resources.format(), f.expires_at) for f in v]) for k, v in ref.items()]
        assert snapshot(a) == want
        assert snapshot(b) == want
        for key, lst in a.filters.items():
            for probe in ("cpus:1", "cpus:2", "cpus:3"):
                expect = any(f.expires_at > now and f.resources.contains(R(probe)) for f in lst)
                assert a._filtered(*key, R(probe), now) == expect
    # A snapshot round trip carries the filters and their expiry on.
    c = HierarchicalAllocator.from_record(a.to_record())
    assert snapshot(c) == snapshot(a)
    for x in (a, c):
        x.expire_filters(now + 60.0)
    assert snapshot(c) == snapshot(a)


@pytest.mark.parametrize("seed", range(4))
def test_the_fold_drops_exactly_the_expired_filters_at_each_offers_made(seed):
    """The state's filter list (part of its hash) after an OFFERS_MADE at ts: the filters before it with
    expires_at > ts, in their order, whether or not the fold had to look at them."""
    from eventstore import events as ev
    from master.state import State, apply
    from tests.test_explanation import compact, history

    state = State()
    with_filters = 0
    for env in compact(history(seed, steps=400)):
        before = list(state.filters)
        apply(state, env)
        if isinstance(env.event, ev.OffersMade):
            assert state.filters == [f for f in before if f.expires_at > env.ts]
            with_filters += bool(before)
    assert with_filters
