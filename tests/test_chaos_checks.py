"""The chaos invariants on made-up histories and logs: each check must catch what it is there to catch
(a checker that cannot fail proves nothing). The live runs are in test_chaos.py."""

from __future__ import annotations

from eventstore import events as ev
from drover.chaos import checks
from drover.chaos.faults import Fault
from master.state import Task

FID = "fw-1"


def spec(tid: str) -> ev.TaskSpec:
    return ev.TaskSpec(task_id=tid, name=tid, agent_id="a-1", resources=[], command=ev.CommandSpec(value="true"))


def status(state: str, t: float, **kw) -> ev.TaskStatus:
    return ev.TaskStatus(state=state, source=kw.pop("source", "SOURCE_EXECUTOR"), timestamp=t, **kw)


def task(tid: str, *states: tuple[str, float]) -> Task:
    st = [status(s, t) for s, t in states]
    terminal = next((s.state for s in st if s.state in checks.TERMINAL_STATES), None)
    return Task(framework_id=FID, spec=spec(tid), launched_at=0.0, state=terminal or (st[-1].state if st else
                "TASK_STAGING"), statuses=st)


def env(i: int, event) -> ev.Envelope:
    return ev.Envelope(index=i, term=1, ts=float(i), event=event)


def accepted(i: int, *tids: str) -> ev.Envelope:
    return env(i, ev.OffersAccepted(framework_id=FID, offer_ids=[f"o{i}"], tasks=[spec(t) for t in tids],
                                    refuse_seconds=0.0))


def launch(*tids: str, index=None, typ="ok") -> list[dict]:
    return [{"type": "invoke", "op": "launch", "task_ids": list(tids), "inst": 1, "t": 0.0},
            {"type": typ, "op": "launch", "task_ids": list(tids), "index": index, "inst": 1, "t": 0.1}]


def update(tid: str, state: str, **kw) -> dict:
    return {"type": "event", "event": "UPDATE", "task_id": tid, "state": state, "inst": 1, "t": 1.0, **kw}


def facts_with(envs: list[ev.Envelope], tasks: dict[str, Task]) -> checks.LogFacts:
    f = checks.LogFacts(envelopes=envs, tasks=tasks)
    for e in envs:
        if isinstance(e.event, ev.OffersAccepted):
            for t in e.event.tasks:
                f.accepted.setdefault(t.task_id, []).append(e.index)
    return f


def test_tasks_pass_when_each_task_ends_once():
    f = facts_with([accepted(1, "t1")], {"t1": task("t1", ("TASK_RUNNING", 1), ("TASK_FINISHED", 2))})
    c = checks.check_tasks(f, launch("t1", index=[1, 1]) + [update("t1", "TASK_FINISHED")], {}, {"t1": 1}, {"t1": 1})
    assert c.ok, c.violations


def test_tasks_catch_two_terminal_states():
    f = facts_with([accepted(1, "t1")],
                   {"t1": task("t1", ("TASK_RUNNING", 1), ("TASK_LOST", 2), ("TASK_FINISHED", 3))})
    c = checks.check_tasks(f, launch("t1", index=[1, 1]), {}, {}, {})
    assert not c.ok and "more than one terminal state" in c.violations[0]


def test_tasks_catch_a_double_launch_in_the_log_and_on_agents():
    f = facts_with([accepted(1, "t1"), accepted(2, "t1")], {"t1": task("t1", ("TASK_FINISHED", 2))})
    c = checks.check_tasks(f, launch("t1", index=[1, 1]), {}, {"t1": 2}, {"t1": 2})
    assert any("launched twice in the log" in v for v in c.violations)
    assert any("launched twice on agents" in v for v in c.violations)


def test_tasks_catch_a_task_that_ran_without_being_in_the_log():
    c = checks.check_tasks(facts_with([], {}), launch("t1", typ="info") + [update("t1", "TASK_RUNNING")], {}, {}, {})
    assert not c.ok and "not in the log" in c.violations[0]


def test_tasks_a_never_committed_launch_is_fine():
    c = checks.check_tasks(facts_with([], {}), launch("t1", typ="info") + [update("t1", "TASK_UNKNOWN")], {}, {}, {})
    assert c.ok, c.violations


def test_tasks_a_live_task_must_be_known_to_its_agent():
    f = facts_with([accepted(1, "t1")], {"t1": task("t1", ("TASK_RUNNING", 1))})
    hist = launch("t1", index=[1, 1])
    assert checks.check_tasks(f, hist, {"a1": {"tasks": [{"task_id": "t1", "state": "TASK_RUNNING"}]}}, {}, {}).ok
    c = checks.check_tasks(f, hist, {"a1": {"tasks": []}}, {}, {})
    assert not c.ok and "its agent reports None" in c.violations[0]


def test_tasks_catch_the_framework_told_another_terminal_state():
    f = facts_with([accepted(1, "t1")], {"t1": task("t1", ("TASK_FINISHED", 5))})
    c = checks.check_tasks(f, launch("t1", index=[1, 1]) + [update("t1", "TASK_FAILED", source="SOURCE_AGENT")],
                           {}, {}, {})
    assert not c.ok and "told TASK_FAILED" in c.violations[0]


def test_tasks_reconciliation_gone_only_after_the_task_ended():
    f = facts_with([accepted(1, "t1")], {"t1": task("t1", ("TASK_FINISHED", 5))})
    later = update("t1", "TASK_GONE", reason="REASON_RECONCILIATION", timestamp=6.0)
    earlier = update("t1", "TASK_GONE", reason="REASON_RECONCILIATION", timestamp=4.0)
    assert checks.check_tasks(f, launch("t1", index=[1, 1]) + [later], {}, {}, {}).ok
    assert not checks.check_tasks(f, launch("t1", index=[1, 1]) + [earlier], {}, {}, {}).ok


def test_acknowledged_finds_each_ack_at_its_index():
    envs = [accepted(1, "t1"), env(2, ev.StatusAcknowledged(framework_id=FID, task_id="t1", uuid="u1"))]
    hist = launch("t1", index=[1, 1]) + [{"type": "ok", "op": "ack", "task_id": "t1", "uuid": "u1", "index": [2, 2],
                                         "inst": 1, "t": 2.0}]
    c = checks.check_acknowledged(facts_with(envs, {}), hist, {FID}, {"m1": (2, "h"), "m2": (2, "h")})
    assert c.ok, c.violations


def test_acknowledged_catches_a_lost_or_overwritten_event():
    envs = [accepted(1, "t1"), env(2, ev.TaskKillRequested(framework_id=FID, task_id="t9"))]
    hist = [{"type": "ok", "op": "ack", "task_id": "t1", "uuid": "u1", "index": [2, 2], "inst": 1, "t": 2.0},
            {"type": "ok", "op": "kill", "task_id": "t1", "index": [3, 3], "inst": 1, "t": 2.0}]
    c = checks.check_acknowledged(facts_with(envs, {}), hist, {FID}, {"m1": (2, "h")})
    assert len(c.violations) == 2
    assert "final log has ['TASK_KILL_REQUESTED']" in c.violations[0]
    assert "beyond the final log's end" in c.violations[1]


def test_acknowledged_catches_diverging_replicas():
    c = checks.check_acknowledged(facts_with([], {}), [], {FID}, {"m1": (5, "aaa"), "m2": (5, "bbb")})
    assert not c.ok and any("replica logs differ" in v for v in c.violations)


def test_acknowledged_with_nothing_acknowledged_is_not_a_pass():
    c = checks.check_acknowledged(facts_with([], {}), [], {FID}, {"m1": (5, "aaa"), "m2": (5, "aaa")})
    assert not c.ok and "nothing to check" in c.violations[0]


def test_tasks_blind_podman_is_a_violation():
    c = checks.check_tasks(facts_with([], {}), [], {}, {}, {}, ["podman ps exited 125: boom"])
    assert not c.ok and "could not check for double launches" in c.violations[0]


def test_recovery_and_liveness_verdicts():
    f = Fault("kill-leader", "m1", 0.0, recovered=False, notes=["after 60 s: serving replicas: []"])
    assert not checks.check_recovery([f]).ok
    assert checks.check_recovery([Fault("kill-leader", "m1", 0.0, recovered=True)]).ok
    assert not checks.check_liveness([]).ok
    ends = [{"type": "end", "inst": 1, "outcome": "failed over"}, {"type": "end", "inst": 2, "outcome": "drained"}]
    assert checks.check_liveness(ends).ok
    assert not checks.check_liveness(ends[:1] + [{"type": "end", "inst": 2, "outcome": "drain timed out"}]).ok


def _launch(tid: str) -> dict:
    return {"type": "invoke", "op": "launch", "task_ids": [tid], "service": tid, "port": 31000}


def _update(tid: str, state: str, healthy: bool | None = None, message: str | None = None) -> dict:
    return {"type": "event", "event": "UPDATE", "task_id": tid, "state": state, "healthy": healthy, "message": message}


def test_service_healthy_and_confirmed_over_http_passes():
    h = [_launch("svc-0"), _update("svc-0", "TASK_RUNNING"), _update("svc-0", "TASK_RUNNING", True),
         {"type": "probe", "task_id": "svc-0", "outcome": "ok", "attempts": 1},
         _update("svc-0", "TASK_KILLING"), _update("svc-0", "TASK_KILLED")]
    c = checks.check_service(h)
    assert c.ok, c.violations
    assert c.summary == "1 service tasks, 1 reported healthy, 1 healthy reports confirmed over HTTP"


def test_service_violations():
    assert checks.check_service([]).violations == ["no service task was launched (no offer with ports?)"]
    never = checks.check_service([_launch("svc-0"), _update("svc-0", "TASK_RUNNING")])
    assert never.violations == ["no service task was ever reported healthy (1 launched)"]
    unreachable = checks.check_service([
        _launch("svc-0"), _update("svc-0", "TASK_RUNNING", True),
        {"type": "probe", "task_id": "svc-0", "outcome": "failed", "attempts": 10, "error": "refused"}])
    assert unreachable.violations == ["svc-0: reported healthy, but 10 HTTP requests to it failed (last: refused)"]
    killed = checks.check_service([
        _launch("svc-0"), _update("svc-0", "TASK_RUNNING", True),
        {"type": "probe", "task_id": "svc-0", "outcome": "abandoned", "attempts": 0},
        _update("svc-0", "TASK_RUNNING", False), _update("svc-0", "TASK_KILLED", False, "health check failed")])
    assert killed.violations == ["svc-0: killed by its health check (TASK_KILLED: health check failed)"]
