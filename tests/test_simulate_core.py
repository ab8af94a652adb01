"""The deterministic machinery of `drover simulate` (drover/simulate/): virtual time, random streams, fault
schedules and their text form, shrinking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from drover.simulate import rng
from drover.simulate.clock import Clock
from drover.simulate.schedule import KINDS, Fault, ScheduleError, draw_schedule, format_schedule, parse_schedule
from drover.simulate.shrink import ddmin, shrink


def test_clock_runs_actions_in_time_then_scheduling_order():
    c = Clock()
    seen = []
    c.at(2.0, lambda: seen.append("b"))
    c.at(1.0, lambda: seen.append("a"))
    c.at(2.0, lambda: seen.append("c"))  # same instant: after b, scheduled before it
    t = c.at(1.5, lambda: seen.append("cancelled"))
    t.cancel()

    def chain():
        seen.append(("d", c.now))
        c.after(0.0, lambda: seen.append(("e", c.now)))  # now: runs after everything already due now
        c.at(c.now - 10, lambda: seen.append(("f", c.now)))  # the past is now

    c.at(3.0, chain)
    assert c.run_until(2.5) and c.now == 2.5 and seen == ["a", "b", "c"]
    assert c.run_until(100) and c.now == 100
    assert seen[3:] == [("d", 3.0), ("e", 3.0), ("f", 3.0)]
    assert c.pending() == 0 and c.next_time() is None and c.steps == 6


def test_clock_step_budget_and_bad_times():
    c = Clock()
    for i in range(5):
        c.at(i, lambda: None)
    assert not c.run_until(10, max_steps=3) and c.now == 2
    assert c.run_until(10) and c.steps == 5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            c.at(bad, lambda: None)
    with pytest.raises(ValueError):
        c.after(-1, lambda: None)


def test_random_streams_are_per_component_and_reproducible():
    a, b = rng.Streams(7), rng.Streams(7)
    xs = [a("net").random() for _ in range(5)]
    b("podman").random()  # another component's draws do not move this one's
    assert [b("net").random() for _ in range(5)] == xs
    assert [rng.stream(8, "net").random() for _ in range(5)] != xs
    assert a("net") is a("net")
    for bad in (-1, 2**63, 1.5, True, "3"):
        with pytest.raises(ValueError):
            rng.Streams(bad)


faults = st.builds(
    lambda kind, start, duration, node, level: Fault(
        start, kind,
        None if KINDS[kind][0] == "none" else
        ("m" if KINDS[kind][0] == "replica" else "a" if KINDS[kind][0] in ("agent", "link") else node[0]) + node[1:],
        duration, level if KINDS[kind][1] else None),
    st.sampled_from(sorted(KINDS)), st.floats(0, 1e6), st.floats(0, 1e4),
    st.sampled_from(["m1", "a2", "m12", "a999"]), st.floats(0.001, 1.0))


@given(st.lists(faults, max_size=20))
@settings(max_examples=200, deadline=None)
def test_schedule_text_round_trips(schedule):
    text = format_schedule(schedule)
    assert parse_schedule(text) == sorted(schedule)
    assert format_schedule(parse_schedule(text)) == text


@pytest.mark.parametrize("text, why", [
    ("nap@1+2", "unknown fault kind"),
    ("agent-crash@1+2", "needs a target"),
    ("agent-crash:m1@1+2", "agent"),
    ("leader-crash:m1@1+2", "takes no target"),
    ("msg-loss:*@1+2", "needs a level"),
    ("msg-loss:*@1+2*1.5", "level"),
    ("isolate:*@1+2", "not '*'"),
    ("isolate:a1@-1+2", "start"),
    ("isolate:a1@1+nan", "not KIND"),
    ("isolate:a1@1+1e99", "duration"),
    ("isolate:a1", "not KIND"),
    ("agent-crash:a1@1+2*0.5", "takes no level"),
])
def test_bad_schedules_say_what_is_wrong(text, why):
    with pytest.raises(ScheduleError) as e:
        parse_schedule(text)
    assert why in str(e.value)


def test_drawn_schedules_are_reproducible_and_valid():
    kinds = sorted(KINDS)
    one = draw_schedule(rng.stream(3, "faults"), 600, kinds, replicas=3, agents=5)
    assert one == draw_schedule(rng.stream(3, "faults"), 600, kinds, replicas=3, agents=5)
    assert one and all(f.end() <= 600 * 0.75 + 1e-9 for f in one)
    assert parse_schedule(format_schedule(one)) == one
    assert draw_schedule(rng.stream(3, "faults"), 600, ["agent-crash"], replicas=3, agents=0) == []
    with pytest.raises(ScheduleError):
        draw_schedule(rng.stream(3, "faults"), 600, ["nap"], replicas=3, agents=5)


def test_ddmin_finds_the_two_faults_that_matter():
    schedule = [Fault(float(i), "agent-crash", f"a{i}", 5.0) for i in range(1, 31)]
    a, b = schedule[6], schedule[21]
    runs = []

    def fails(s):
        runs.append(len(s))
        return a in s and b in s

    assert ddmin(schedule, fails) == [a, b]
    assert len(runs) < 60


def test_shrink_shortens_and_moves_earlier_within_its_budget():
    schedule = [Fault(100.0, "isolate", "m1", 40.0), Fault(50.0, "agent-crash", "a1", 10.0)]

    def fails(s):  # the isolation matters, and only if it lasts 3 s or more
        return any(f.kind == "isolate" and f.duration >= 3 for f in s)

    smaller, runs = shrink(schedule, fails)
    assert [f.kind for f in smaller] == ["isolate"]
    assert 3 <= smaller[0].duration < 6 and smaller[0].start == 0.0
    assert runs <= 200
    assert shrink(schedule, lambda s: True) == ([], 1)  # fails with no fault at all: the seed alone
    few, used = shrink(schedule, fails, max_runs=2)
    assert used == 2 and fails(few)
