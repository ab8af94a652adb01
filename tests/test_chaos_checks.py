"""The chaos invariants on made-up histories and logs: each check must catch what it is there to catch
(a checker that cannot fail proves nothing). The live runs are in test_chaos.py."""

from __future__ import annotations

import msgspec

from eventstore import events as ev
from eventstore.resources import DiskVolume, Persistence, Resource
from drover.chaos import checks
from drover.chaos.faults import Fault
from master.state import Agent, State, Task

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


# ---- stateful: the writers' persistent volume -------------------------------------------------------------------

VOL = "chaos-7-state"


def volume(role: str = "chaos") -> Resource:
    return Resource(name="disk", type="SCALAR", scalar=16.0, role=role, persistence=Persistence(id=VOL),
                    volume=DiskVolume(container_path="data"))


def writer_spec(tid: str, agent: str = "a-1") -> ev.TaskSpec:
    return ev.TaskSpec(task_id=tid, name=tid, agent_id=agent, resources=[volume()],
                       command=ev.CommandSpec(value="true"), role="chaos")


def offers_made(i: int, oid: str, agent: str = "a-1", role: str = "chaos", with_volume: bool = True):
    res = [volume(role if role != "*" else "chaos")] if with_volume else []
    return env(i, ev.OffersMade(offers=[ev.OfferRecord(offer_id=oid, framework_id=FID, agent_id=agent, role=role,
                                                       resources=res)], trigger="periodic"))


def writer_accepted(i: int, oid: str, tid: str, agent: str = "a-1", create: bool = False):
    ops = [ev.ResourceOperation(kind="CREATE", resources=[volume()])] if create else []
    return env(i, ev.OffersAccepted(framework_id=FID, offer_ids=[oid], tasks=[writer_spec(tid, agent)],
                                    refuse_seconds=0.0, operations=ops))


def writer(seq: int, expect: list[int], create: bool = False) -> list[dict]:
    tid = f"chaos-7-i1-state-{seq:03d}"
    return [{"type": "invoke", "op": "launch", "task_ids": [tid], "stateful": tid, "seq": seq, "expect": expect,
             "volume": VOL, "create": create, "agent_id": "a-1", "inst": 1, "t": 0.0}]


def ended(tid: str, state: str = "TASK_FINISHED", message: str = "Command exited with status 0") -> dict:
    return update(tid, state, message=message)


def agent_with(dynamic: list[Resource], aid: str = "a-1") -> Agent:
    return Agent(agent_id=aid, hostname="h", http="h:5051", resources=[], registered_at=0.0, dynamic=dynamic)


def stateful_world(tmp_path, lines: str = "0\n1\n", dynamic=None, file_ids=(VOL,)):
    """Two writers on a-1, one after the other; the fold and a-1's work dir agree; the volume's log holds both."""
    envs = [offers_made(1, "o1", with_volume=False), writer_accepted(2, "o1", "chaos-7-i1-state-000", create=True),
            offers_made(5, "o2"), writer_accepted(6, "o2", "chaos-7-i1-state-001")]
    facts = facts_with(envs, {})
    facts.ended = {"chaos-7-i1-state-000": 4, "chaos-7-i1-state-001": 8}
    facts.state = State(agents={"a-1": agent_with([volume()] if dynamic is None else dynamic),
                                "a-2": agent_with([], "a-2")})
    dirs = {"a-1": tmp_path / "a1", "a-2": tmp_path / "a2"}
    (dirs["a-1"] / "meta").mkdir(parents=True)
    (dirs["a-1"] / "meta" / "resources.json").write_bytes(
        msgspec.json.encode([msgspec.structs.replace(volume(), persistence=Persistence(id=i)) for i in file_ids]))
    vol_dir = dirs["a-1"] / "volumes" / "roles" / "chaos" / VOL
    vol_dir.mkdir(parents=True)
    (vol_dir / "log").write_text(lines)
    history = (writer(0, [], create=True) + [ended("chaos-7-i1-state-000")] + writer(1, [0])
               + [ended("chaos-7-i1-state-001")])
    return history, facts, dirs


def test_stateful_a_good_run_passes(tmp_path):
    history, facts, dirs = stateful_world(tmp_path)
    c = checks.check_stateful(history, facts, dirs)
    assert c.ok, c.violations
    assert c.summary == (f"2 writers (2 TASK_FINISHED), 2 writes finished; volume {VOL} on a-1, offered 1 times; "
                         "2 agents agree with the log; its log holds 2 writes")


def test_stateful_writes_of_writers_with_unknown_outcome_may_be_there_or_not(tmp_path):
    history, facts, dirs = stateful_world(tmp_path, lines="0\n5\n1\n")
    history += writer(5, [0]) + [ended("chaos-7-i1-state-005", "TASK_LOST", "agent gone")]
    assert checks.check_stateful(history, facts, dirs).ok


def test_stateful_catches_a_lost_write(tmp_path):
    history, facts, dirs = stateful_world(tmp_path, lines="1\n")
    history[-1] = ended("chaos-7-i1-state-001", "TASK_FAILED", "Command exited with status 7")
    history += writer(2, [0, 1])
    c = checks.check_stateful(history, facts, dirs)
    assert not c.ok
    assert c.violations[0].startswith("chaos-7-i1-state-001: writes lost: the volume's log lacked some of the "
                                      "finished writes [0]")
    # ... and the harness's own read of the volume at the end finds it missing too.
    assert "lacks some of the finished writes [0]" in c.violations[-1]


def test_stateful_catches_an_unmounted_volume(tmp_path):
    history, facts, dirs = stateful_world(tmp_path)
    history[-1] = ended("chaos-7-i1-state-001", "TASK_FAILED", "Command exited with status 8")
    c = checks.check_stateful(history, facts, dirs)
    assert any("the volume was not mounted at data" in v for v in c.violations)


def test_stateful_catches_two_live_writers(tmp_path):
    history, facts, dirs = stateful_world(tmp_path)
    facts.ended["chaos-7-i1-state-000"] = 7  # still live when 001 was accepted at 6
    c = checks.check_stateful(history, facts, dirs)
    assert c.violations == ["chaos-7-i1-state-000 and chaos-7-i1-state-001 held the volume at once: "
                            "chaos-7-i1-state-001 accepted at 6 while chaos-7-i1-state-000 was live "
                            "(accepted at 2, terminal at 7)"]
    del facts.ended["chaos-7-i1-state-000"]
    assert "never terminal" in checks.check_stateful(history, facts, dirs).violations[0]


def test_stateful_catches_the_volume_offered_to_another_role(tmp_path):
    history, facts, dirs = stateful_world(tmp_path)
    facts.envelopes.append(offers_made(9, "o3", role="*"))
    c = checks.check_stateful(history, facts, dirs)
    assert c.violations == [f"offer o3 at 9 held the volume {VOL} but went to role '*' (framework {FID})"]


def test_stateful_catches_a_writer_on_another_agent(tmp_path):
    history, facts, dirs = stateful_world(tmp_path)
    facts.envelopes.append(writer_accepted(10, "o9", "chaos-7-i1-state-002", agent="a-2"))
    c = checks.check_stateful(history, facts, dirs)
    assert c.violations == ["chaos-7-i1-state-002 (OFFERS_ACCEPTED at 10) used the volume on a-2, not on a-1 "
                            "where it lives"]


def test_stateful_catches_agent_and_log_disagreeing(tmp_path):
    history, facts, dirs = stateful_world(tmp_path, file_ids=())
    c = checks.check_stateful(history, facts, dirs)
    assert c.violations == [f"agent a-1: the log has volumes [('chaos', '{VOL}')], its meta/resources.json []"]
    # The other way round: the log lost the volume, the agent kept it.
    history, facts, dirs = stateful_world(tmp_path / "2", dynamic=[])
    c = checks.check_stateful(history, facts, dirs)
    assert f"the volume {VOL} was created on a-1 but the final state has it on no agent" in c.violations
    assert f"agent a-1: the log has volumes [], its meta/resources.json [('chaos', '{VOL}')]" in c.violations


def test_stateful_needs_a_volume_and_a_finished_write(tmp_path):
    assert checks.check_stateful([], facts_with([], {}), {}).violations == ["no stateful task was launched"]
    history, facts, dirs = stateful_world(tmp_path)
    never = facts_with([], {})
    never.state = facts.state
    assert f"the volume {VOL} was never created in the log" in checks.check_stateful(history, never, dirs).violations
    unfinished = writer(0, [], create=True) + [ended("chaos-7-i1-state-000", "TASK_KILLED", "")]
    c = checks.check_stateful(unfinished, facts, dirs)
    assert c.violations == ["no write finished (1 writers launched, ended {'TASK_KILLED': 1})"]
