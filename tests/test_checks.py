"""The health check and check rules (agent/checks.py), as Mesos's checker library has them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent import checks
from agent.checks import HealthState, Result
from eventstore import events as ev

HTTP = ev.HealthCheckSpec(type="HTTP", port=8080, grace_period_seconds=10.0, consecutive_failures=3)
CMD = ev.HealthCheckSpec(type="COMMAND", command=ev.CheckCommand(value="true"), grace_period_seconds=0.0,
                         consecutive_failures=2)
OK, DOWN = Result(200), Result(None, "connection refused")


def run(spec: ev.HealthCheckSpec, results: list[tuple[float, Result]]) -> list[tuple[bool | None, bool]]:
    state, out = HealthState(), []
    for elapsed, r in results:
        step = checks.health_step(spec, state, r, elapsed)
        state = step.state
        out.append((step.healthy, step.kill))
    return out


def test_interpretation_is_mesoss():
    assert checks.failure_of(HTTP, Result(200)) is None and checks.failure_of(HTTP, Result(399)) is None
    assert "404" in checks.failure_of(HTTP, Result(404)) and "199" in checks.failure_of(HTTP, Result(199))
    assert checks.failure_of(CMD, Result(0)) is None and "status 1" in checks.failure_of(CMD, Result(1))
    tcp = ev.HealthCheckSpec(type="TCP", port=1)
    assert checks.failure_of(tcp, Result(True)) is None and checks.failure_of(tcp, Result(False))
    assert checks.failure_of(HTTP, DOWN) == "connection refused"
    assert checks.failure_of(HTTP, Result(True))  # a result of another kind is no success


def test_failures_in_the_grace_period_are_ignored_until_the_first_success():
    assert run(HTTP, [(1, DOWN), (5, DOWN), (10, DOWN)]) == [(None, False)] * 3
    # past the grace period they count: two updates, the third failure kills
    assert run(HTTP, [(11, DOWN), (12, DOWN), (13, DOWN)]) == [(False, False), (False, False), (False, True)]


def test_after_the_first_success_the_grace_period_no_longer_applies():
    assert run(HTTP, [(1, OK), (2, DOWN), (3, DOWN), (4, DOWN)]) == [
        (True, False), (False, False), (False, False), (False, True)]


def test_healthy_is_sent_on_the_first_success_and_the_first_after_failures_only():
    assert run(CMD, [(0, Result(0)), (1, Result(0)), (2, Result(1)), (3, Result(0)), (4, Result(0))]) == [
        (True, False), (None, False), (False, False), (True, False), (None, False)]


def test_a_success_resets_the_consecutive_failures():
    assert run(CMD, [(0, Result(1)), (1, Result(0)), (2, Result(1)), (3, Result(1))]) == [
        (False, False), (True, False), (False, False), (False, True)]


def test_zero_consecutive_failures_kills_at_the_first_counted_failure_as_mesos():
    spec = ev.HealthCheckSpec(type="TCP", port=1, consecutive_failures=0, grace_period_seconds=0)
    assert run(spec, [(0, Result(False))]) == [(False, True)]


def test_transient_results_change_nothing():
    step = checks.health_step(CMD, HealthState(failures=1), Result(None, "podman down", transient=True), 100)
    assert step == (HealthState(failures=1), None, False, None)


def test_kill_message_names_the_count_and_the_last_failure():
    m = checks.kill_message(HTTP, HealthState(initializing=False, failures=3), "Unexpected HTTP response code: 500")
    assert "failed 3 consecutive times" in m and "500" in m


CHECK = ev.CheckSpec(type="HTTP", port=80)


def test_checks_send_on_change_only_starting_from_the_empty_status():
    assert checks.check_step(CHECK, None, Result(None, "refused")) is None  # empty == the initial empty one
    first = checks.check_step(CHECK, None, Result(200))
    assert first == ev.CheckStatus(type="HTTP", status_code=200)
    assert checks.check_step(CHECK, first, Result(200)) is None
    assert checks.check_step(CHECK, first, Result(503)) == ev.CheckStatus(type="HTTP", status_code=503)
    assert checks.check_step(CHECK, first, Result(None, "timed out")) == ev.CheckStatus(type="HTTP")
    assert checks.check_step(CHECK, first, Result(None, "x", transient=True)) is None


def test_check_status_of_each_type():
    cmd = ev.CheckSpec(type="COMMAND", command=ev.CheckCommand(value="x"))
    assert checks.check_status_of(cmd, Result(3)) == ev.CheckStatus(type="COMMAND", exit_code=3)
    assert checks.check_status_of(ev.CheckSpec(type="TCP", port=1), Result(False)) == ev.CheckStatus(
        type="TCP", succeeded=False)
    assert checks.check_status_of(cmd, Result(2**40)) == ev.CheckStatus(type="COMMAND")  # out of range: empty


def test_timeouts_and_delays():
    # Mesos's "no timeout" (0) is Drover's longest probe (a slot of the agent is never held for good)
    assert checks.timeout_of(ev.CheckSpec(type="TCP", port=1, timeout_seconds=0)) == checks.MAX_PROBE_SECONDS
    assert checks.timeout_of(ev.CheckSpec(type="TCP", port=1)) == 20.0
    assert checks.first_delay(ev.CheckSpec(type="TCP", port=1)) == 15.0
    assert checks.next_delay(ev.CheckSpec(type="TCP", port=1)) == 10.0


results = st.one_of(st.integers(-5, 700).map(Result), st.just(DOWN), st.booleans().map(Result),
                    st.just(Result(None, "t", transient=True)))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.floats(0, 5), st.lists(st.tuples(st.floats(0, 10), results), max_size=30))
def test_health_machine_invariants(limit, grace, seq):
    """Kill exactly when the counted failures reach the limit; `healthy: true` only after a failure or at first;
    every counted failure is reported; nothing is counted while initializing within the grace period."""
    spec = ev.HealthCheckSpec(type="HTTP", port=1, consecutive_failures=limit, grace_period_seconds=grace)
    state = HealthState()
    for elapsed, r in sorted(seq, key=lambda x: x[0]):
        step = checks.health_step(spec, state, r, elapsed)
        if r.transient:
            assert step.state == state and step.healthy is None and not step.kill
        elif checks.failure_of(spec, r) is None:
            assert step.state == HealthState(initializing=False, failures=0)
            assert (step.healthy is True) == (state.initializing or state.failures > 0) and not step.kill
        elif state.initializing and grace > 0 and elapsed <= grace:
            assert step.state == state and step.healthy is None and not step.kill
        else:
            assert step.state.failures == state.failures + 1 and step.healthy is False
            assert step.kill == (step.state.failures >= limit)
        state = step.state


def test_a_framework_cannot_make_probes_unbounded_or_back_to_back():
    assert checks.next_delay(ev.CheckSpec(type="TCP", port=1, interval_seconds=0.0)) == checks.MIN_INTERVAL_SECONDS
    assert checks.next_delay(ev.CheckSpec(type="TCP", port=1, interval_seconds=7.5)) == 7.5
    for timeout, bound in ((0.0, checks.MAX_PROBE_SECONDS), (1e9, checks.MAX_PROBE_SECONDS), (2.0, 2.0)):
        assert checks.timeout_of(ev.CheckSpec(type="TCP", port=1, timeout_seconds=timeout)) == bound
