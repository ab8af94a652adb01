"""`drover audit`: the queries (replay/audit.py), their CLI and their HTTP endpoints.

Exact expectations come from small hand-made stores; the integration test audits the stores of a
real local cluster that ran an unmodified pymesos framework.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drover import cli
from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master.api.audit import add_audit_routes
from replay import audit
from replay.audit import Filters, iso
from replay.reader import replay_store

C = "c0ffee"
A, B = f"{C}-0000", f"{C}-0001"
S0, S1 = f"{C}-S0", f"{C}-S1"
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
REPO = Path(__file__).resolve().parent.parent


def O(n: int) -> str:
    return f"{C}-O{n}"


def res(text: str) -> list:
    return Resources.parse(text).to_list()


def offer(n: int, fid: str, role: str, agent: str, text: str) -> ev.OfferRecord:
    return ev.OfferRecord(offer_id=O(n), framework_id=fid, agent_id=agent, role=role, resources=res(text))


def status(fid: str, tid: str, agent: str, state: str, uuid: str | None, ts: float, message: str | None = None):
    return ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=agent,
                            status=ev.TaskStatus(state=state, source="SOURCE_EXECUTOR", timestamp=ts - 0.05,
                                                 uuid=uuid, message=message))


def task(tid: str, agent: str, role: str, text: str) -> ev.TaskSpec:
    return ev.TaskSpec(task_id=tid, name=tid, agent_id=agent, resources=res(text),
                       command=ev.CommandSpec(value="sleep 1"), role=role)


class Log:
    def __init__(self) -> None:
        self.envs: list[ev.Envelope] = []
        self.term = 1

    def add(self, dt: float, *events) -> int:
        """Append events at T0 + dt; returns the index of the first."""
        first = len(self.envs) + 1
        for e in events:
            self.envs.append(ev.Envelope(index=len(self.envs) + 1, term=self.term, ts=T0 + dt, event=e))
        return first

    def write(self, path: Path) -> Path:
        store = EventStore(path, create=True)
        store.append(self.envs)
        store.close()
        return path


def scenario(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Two frameworks (A in role web, B in role batch), two agents; every way an offer can end."""
    log, ix = Log(), {}
    log.add(0, ev.LeaderElected(leader_id="r1", http="h1:5050", term=1), ev.ClusterCreated(cluster_id=C))
    log.add(1, ev.AgentRegistered(agent_id=S0, hostname="a0", http="x:1", resources=res("cpus:2;mem:1024")),
            ev.AgentRegistered(agent_id=S1, hostname="a1", http="x:2", resources=res("cpus:2;mem:1024")))
    log.add(10, ev.FrameworkSubscribed(framework_id=A, info=ev.FrameworkInfo(name="alpha", user="u", roles=["web"])),
            ev.FrameworkSubscribed(framework_id=B, info=ev.FrameworkInfo(name="beta", user="u", roles=["batch"])))
    ix["first"] = log.add(10.5, ev.OffersMade(
        offers=[offer(0, A, "web", S0, "cpus:2;mem:1024"), offer(1, B, "batch", S1, "cpus:2;mem:1024")],
        trigger="framework_added", seed=7,
        decisions=[
            ev.AgentDecision(agent_id=S0, order=[ev.Candidate(A, "web", 0.0, 0, 0.0),
                                                 ev.Candidate(B, "batch", 0.0, 0, 0.0)]),
            ev.AgentDecision(agent_id=S1, order=[ev.Candidate(A, "web", 0.5, 1, 0.5),
                                                 ev.Candidate(B, "batch", 0.0, 0, 0.0)],
                             skipped=[[A, "declined (filter active)"]]),
        ]))
    ix["accept"] = log.add(12.5, ev.OffersAccepted(
        framework_id=A, offer_ids=[O(0)], tasks=[task("a1", S0, "web", "cpus:1;mem:256")], refuse_seconds=5.0,
        rejected=[ev.Rejection(task_id="a-bad", state="TASK_ERROR", reason="REASON_TASK_INVALID",
                               message="Task uses more resources")]))
    ix["decline"] = log.add(13, ev.OffersDeclined(framework_id=B, offer_ids=[O(1)], refuse_seconds=30.0))
    log.add(13, status(A, "a1", S0, "TASK_STARTING", "u1", T0 + 13))
    log.add(13.2, ev.StatusAcknowledged(framework_id=A, task_id="a1", uuid="u1"))
    log.add(14, status(A, "a1", S0, "TASK_RUNNING", "u2", T0 + 14))
    log.add(14.1, ev.StatusAcknowledged(framework_id=A, task_id="a1", uuid="u2"))
    log.add(15, ev.RolesSuppressed(framework_id=A, roles=["web"]))
    log.add(19, ev.RolesRevived(framework_id=A, roles=["web"]))
    ix["periodic"] = log.add(20, ev.OffersMade(
        offers=[offer(2, A, "web", S0, "cpus:1;mem:768")], trigger="periodic", seed=12, candidates=[S0],
        decisions=[ev.AgentDecision(agent_id=S0, order=[ev.Candidate(A, "web", 0.25, 2, 0.25)])]))
    ix["rescind"] = log.add(25, ev.OffersRescinded(offer_ids=[O(2)], reason="offer_timeout"))
    ix["o3"] = log.add(26, ev.OffersMade(
        offers=[offer(3, B, "batch", S1, "cpus:2;mem:1024")], trigger="periodic", seed=14,
        decisions=[ev.AgentDecision(agent_id=S1, order=[ev.Candidate(B, "batch", 0.0, 1, 0.0)])]))
    log.add(26.5, ev.OffersAccepted(framework_id=B, offer_ids=[O(3)],
                                    tasks=[task("b1", S1, "batch", "cpus:0.5;mem:128")],
                                    refuse_seconds=5.0))
    log.add(27, ev.TaskKillRequested(framework_id=A, task_id="a1", grace_seconds=3.0),
            status(B, "b1", S1, "TASK_RUNNING", "u9", T0 + 27))
    log.add(28, status(A, "a1", S0, "TASK_KILLED", "u3", T0 + 28, message="killed by the framework"))
    ix["o4"] = log.add(29, ev.OffersMade(offers=[offer(4, A, "web", S1, "cpus:1.5;mem:896")], trigger="periodic",
                                         seed=17))  # recorded without an explanation
    log.term = 2
    ix["elected"] = log.add(30, ev.LeaderElected(leader_id="r2", http="h2:5050", term=2))
    log.add(31, ev.FrameworkSubscribed(framework_id=A, info=ev.FrameworkInfo(name="alpha", user="u", roles=["web"]),
                                       resubscribe=True))
    log.add(31.5, ev.StatusAcknowledged(framework_id=A, task_id="a1", uuid="u3"))
    log.add(31.6, status(A, "a1", S0, "TASK_KILLED", "u4", T0 + 31.6))  # after completion: the fold ignores it
    ix["o5"] = log.add(32, ev.OffersMade(offers=[offer(5, A, "web", S1, "cpus:1.5;mem:896")],
                                         trigger="framework_added", seed=21,
                              decisions=[ev.AgentDecision(agent_id=S1, order=[ev.Candidate(A, "web", 0.0, 0, 0.0)])]))
    ix["resub"] = log.add(33, ev.FrameworkSubscribed(
        framework_id=A, info=ev.FrameworkInfo(name="alpha", user="u", roles=["web"]), resubscribe=True))
    ix["o6"] = log.add(34, ev.OffersMade(
        offers=[offer(6, A, "web", S0, "cpus:2;mem:1024")], trigger="framework_added", seed=23,
        decisions=[ev.AgentDecision(agent_id=S0, order=[ev.Candidate(A, "web", 0.0, 0, 0.0)])]))
    ix["removed"] = log.add(40, ev.FrameworkRemoved(framework_id=B, reason="failover_timeout"))
    return log.write(tmp_path / "events.sqlite"), ix


@pytest.fixture
def built(tmp_path) -> tuple[Path, dict[str, int]]:
    return scenario(tmp_path)


@pytest.fixture
def store_path(built) -> Path:
    return built[0]


@pytest.fixture
def ix(built) -> dict[str, int]:
    return built[1]


def q(path: Path, kind: str, **filters) -> list[dict]:
    store = EventStore(path)
    try:
        return audit.query(store, kind, Filters.parse(**filters))
    finally:
        store.close()


def by(records: list[dict], key: str) -> dict[str, dict]:
    return {r[key]: r for r in records}


# ---- offers -------------------------------------------------------------------------------------


def test_the_hand_made_store_folds(store_path):
    """The scenario is a log the real fold accepts; what it leaves outstanding is what the audit says."""
    state = replay_store(store_path)
    outstanding = {o["offer_id"] for o in q(store_path, "offers") if o["outcome"] == "outstanding"}
    assert set(state.offers) == outstanding == {O(6)}
    audited = {(t["framework_id"], t["task_id"]): t["state"]
               for t in q(store_path, "tasks") if t["origin"] != "rejected"}
    folded = {(t.framework_id, t.task_id): t.state for t in state.completed_tasks + state.all_tasks()}
    assert audited == folded


def test_offer_outcomes(store_path, ix):
    offers = by(q(store_path, "offers"), "offer_id")
    assert list(offers) == [O(n) for n in range(7)]
    o0 = offers[O(0)]
    assert o0 == {
        "offer_id": O(0), "framework_id": A, "role": "web", "agent_id": S0, "resources": "cpus:2;mem:1024",
        "made_at": iso(T0 + 10.5), "index": ix["first"], "outcome": "accepted", "answered_at": iso(T0 + 12.5),
        "answered_index": ix["accept"], "latency": 2.0, "tasks": ["a1"], "refuse_seconds": 5.0,
        "trigger": "framework_added", "stage": 2, "share": 0.0, "allocations": 0, "role_share": 0.0,
        "runner_up": B, "runner_up_share": 0.0}
    assert o0["made_at"] == "2027-01-15T08:00:10.500Z"
    o1 = offers[O(1)]
    assert (o1["outcome"], o1["refuse_seconds"], o1["latency"], o1["tasks"]) == ("declined", 30.0, 2.5, [])
    assert (o1["share"], o1["runner_up"]) == (0.0, None)  # B was last in S1's order; A was skipped before it
    o2 = offers[O(2)]
    assert (o2["outcome"], o2["latency"], o2["answered_index"]) == ("rescinded:offer_timeout", 5.0, ix["rescind"])
    assert (o2["share"], o2["allocations"], o2["trigger"]) == (0.25, 2, "periodic")
    assert offers[O(3)]["outcome"] == "accepted" and offers[O(3)]["tasks"] == ["b1"]
    o4 = offers[O(4)]
    assert (o4["outcome"], o4["answered_at"], o4["latency"]) == ("dropped:leader_change", iso(T0 + 30), 1.0)
    assert o4["share"] is None and o4["runner_up"] is None  # no explanation recorded for that run
    assert (offers[O(5)]["outcome"], offers[O(5)]["answered_index"]) == ("dropped:framework_resubscribed", ix["resub"])
    o6 = offers[O(6)]
    assert (o6["outcome"], o6["answered_at"], o6["latency"]) == ("outstanding", None, None)


def test_offer_dropped_when_an_agent_comes_back_with_other_resources(tmp_path):
    log = Log()
    log.add(0, ev.LeaderElected(leader_id="r1", http="h1:5050", term=1), ev.ClusterCreated(cluster_id=C))
    log.add(1, ev.AgentRegistered(agent_id=S0, hostname="a0", http="x:1", resources=res("cpus:2;mem:1024")))
    log.add(2, ev.FrameworkSubscribed(framework_id=A, info=ev.FrameworkInfo(name="alpha", user="u")))
    log.add(3, ev.OffersMade(offers=[offer(0, A, "*", S0, "cpus:2;mem:1024")], trigger="framework_added"))
    log.add(4, ev.AgentReregistered(agent_id=S0, hostname="a0", http="x:1", resources=res("cpus:2;mem:1024")))
    log.add(5, ev.OffersMade(offers=[offer(1, A, "*", S0, "cpus:2;mem:1024")], trigger="agent_added"))
    log.add(6, ev.AgentReregistered(agent_id=S0, hostname="a0", http="x:1", resources=res("cpus:4;mem:1024")))
    log.add(7, ev.LeaderElected(leader_id="r2", http="h2:5050", term=2))
    path = log.write(tmp_path / "s.sqlite")
    fw = q(path, "frameworks")[0]
    assert (fw["status"], [x["event"] for x in fw["timeline"]]) == ("disconnected", ["subscribed", "disconnected"])
    offers = by(q(path, "offers"), "offer_id")
    # Re-registering with the same resources left O0 standing; other resources drop both.
    for o in offers.values():
        assert (o["outcome"], o["answered_at"]) == ("dropped:agent_resources_changed", iso(T0 + 6))
    assert replay_store(path).offers == {}


# ---- tasks --------------------------------------------------------------------------------------


def test_task_history_with_acks(store_path, ix):
    tasks = by(q(store_path, "tasks"), "task_id")
    a1 = tasks["a1"]
    assert {k: a1[k] for k in ("framework_id", "agent_id", "role", "resources", "origin", "offer_ids", "launched_at",
                               "launched_index", "state", "ended_at", "kill_requested_at")} == {
        "framework_id": A, "agent_id": S0, "role": "web", "resources": "cpus:1;mem:256", "origin": "accept",
        "offer_ids": [O(0)], "launched_at": iso(T0 + 12.5), "launched_index": ix["accept"], "state": "TASK_KILLED",
        "ended_at": iso(T0 + 28), "kill_requested_at": iso(T0 + 27)}
    hist = [(s["state"], s["source"], s["time"], s["uuid"], s["acknowledged_at"]) for s in a1["statuses"]]
    assert hist == [
        ("TASK_STARTING", "SOURCE_EXECUTOR", iso(T0 + 13), "u1", iso(T0 + 13.2)),
        ("TASK_RUNNING", "SOURCE_EXECUTOR", iso(T0 + 14), "u2", iso(T0 + 14.1)),
        ("TASK_KILLED", "SOURCE_EXECUTOR", iso(T0 + 28), "u3", iso(T0 + 31.5)),  # acked after the failover
    ]  # the update after completion (u4) is not part of it: the fold ignores it too
    assert a1["statuses"][2]["message"] == "killed by the framework"
    assert a1["statuses"][0]["agent_time"] == iso(T0 + 13 - 0.05)
    b1 = tasks["b1"]
    assert [(s["state"], s["source"], s["reason"], s["uuid"], s["acknowledged_at"]) for s in b1["statuses"]] == [
        ("TASK_RUNNING", "SOURCE_EXECUTOR", None, "u9", None),
        ("TASK_KILLED", "SOURCE_MASTER", "REASON_FRAMEWORK_REMOVED", None, None)]
    assert (b1["state"], b1["ended_at"]) == ("TASK_KILLED", iso(T0 + 40))
    assert b1["statuses"][1]["message"] == "Framework removed (failover_timeout)"
    bad = tasks["a-bad"]
    assert (bad["origin"], bad["state"], bad["launched_at"], bad["agent_id"]) == ("rejected", "TASK_ERROR", None, S0)
    assert bad["statuses"][0]["reason"] == "REASON_TASK_INVALID"


# ---- allocations --------------------------------------------------------------------------------


def test_allocation_explanations(store_path, ix):
    allocs = q(store_path, "allocations")
    assert [a["index"] for a in allocs] == [ix["first"], ix["periodic"], ix["o3"], ix["o4"], ix["o5"], ix["o6"]]
    first = allocs[0]
    assert {k: first[k] for k in ("time", "trigger", "seed", "candidates", "offer_count")} == {
        "time": iso(T0 + 10.5), "trigger": "framework_added", "seed": 7, "candidates": "all", "offer_count": 2}
    s0, s1 = first["agents"]
    assert s0["agent_id"] == S0 and s0["stage"] == 2
    assert s0["offers"] == [{"offer_id": O(0), "framework_id": A, "role": "web", "resources": "cpus:2;mem:1024"}]
    assert [(c["framework_id"], c["role"], c["share"], c["allocations"], c["outcome"], c["offer_id"])
            for c in s0["candidates"]] == [(A, "web", 0.0, 0, "offered", O(0)),
                                           (B, "batch", 0.0, 0, "next in line", None)]
    assert [(c["framework_id"], c["share"], c["allocations"], c["role_share"], c["outcome"])
            for c in s1["candidates"]] == [(A, 0.5, 1, 0.5, "skipped: declined (filter active)"),
                                           (B, 0.0, 0, 0.0, "offered")]
    assert s1["skipped"] == [{"framework_id": A, "reason": "declined (filter active)"}]
    assert allocs[1]["candidates"] == [S0] and allocs[1]["trigger"] == "periodic"
    unexplained = allocs[3]  # an OFFERS_MADE without decisions still says who got what
    assert unexplained["agents"] == [{"agent_id": S1, "stage": None, "candidates": [], "skipped": [],
                                      "offers": [{"offer_id": O(4), "framework_id": A, "role": "web",
                                                  "resources": "cpus:1.5;mem:896"}]}]


def test_allocation_with_two_roles_of_one_framework(tmp_path):
    """A framework skipped in one role and offered in another: each entry gets its own fate."""
    log = Log()
    log.add(0, ev.ClusterCreated(cluster_id=C))
    # The audit runs the fold, so the log must be one the fold takes: the agents and frameworks first.
    log.add(0, *[ev.AgentRegistered(agent_id=a, hostname=a, http="x:1", resources=res("cpus:1")) for a in (S0, S1)],
            *[ev.FrameworkSubscribed(framework_id=f, info=ev.FrameworkInfo(name=f, user="u", roles=["r1", "r2"]))
              for f in (A, B)])
    log.add(1, ev.OffersMade(
        offers=[offer(0, A, "r2", S0, "cpus:1"), offer(1, A, "r2", S1, "cpus:1")], trigger="periodic",
        decisions=[ev.AgentDecision(agent_id=S0, order=[ev.Candidate(A, "r1", 0.1, 1, 0.1),
                                                        ev.Candidate(A, "r2", 0.2, 1, 0.2),
                                                        ev.Candidate(B, "r2", 0.3, 2, 0.2)],
                                    skipped=[[A, "below min_allocatable_resources"]]),
                   ev.AgentDecision(agent_id=S1, order=[ev.Candidate(A, "r2", 0.2, 1, 0.2),
                                                        ev.Candidate(A, "r1", 0.1, 1, 0.3),
                                                        ev.Candidate(B, "r1", 0.4, 2, 0.3)],
                                    skipped=[[A, "below min_allocatable_resources"]])]))
    path = log.write(tmp_path / "s.sqlite")
    s0, s1 = q(path, "allocations")[0]["agents"]
    assert [c["outcome"] for c in s0["candidates"]] == ["skipped: below min_allocatable_resources", "offered",
                                                        "next in line"]
    assert [c["outcome"] for c in s1["candidates"]] == ["offered", "skipped: below min_allocatable_resources",
                                                        "next in line"]
    o0, o1 = q(path, "offers")
    assert (o0["share"], o0["allocations"], o0["runner_up"], o0["runner_up_share"]) == (0.2, 1, B, 0.3)
    assert (o1["share"], o1["runner_up"], o1["runner_up_share"]) == (0.2, A, 0.1)


# ---- filters ------------------------------------------------------------------------------------


def ids(records: list[dict], key: str = "offer_id") -> list[str]:
    return [r[key] for r in records]


def test_filters_on_offers(store_path):
    assert ids(q(store_path, "offers", framework=B)) == [O(1), O(3)]
    assert ids(q(store_path, "offers", framework="0001")) == [O(1), O(3)]  # without the cluster prefix
    assert ids(q(store_path, "offers", role="web")) == [O(0), O(2), O(4), O(5), O(6)]
    assert ids(q(store_path, "offers", agent="S1")) == [O(1), O(3), O(4), O(5)]
    assert ids(q(store_path, "offers", agent=S1, role="web")) == [O(4), O(5)]
    # Offers live at some point in [T0+25.5, T0+30.5]: O2 ended at 25, O5 was made at 32.
    assert ids(q(store_path, "offers", since=str(T0 + 25.5), until=str(T0 + 30.5))) == [O(3), O(4)]
    assert ids(q(store_path, "offers", since=iso(T0 + 25.5), until=iso(T0 + 30.5))) == [O(3), O(4)]
    assert ids(q(store_path, "offers", since="2027-01-15T08:00:33")) == [O(5), O(6)]  # no zone: UTC; O5 ended at 33
    assert ids(q(store_path, "offers", since="2027-01-15T09:00:33.5+01:00")) == [O(6)]
    assert ids(q(store_path, "offers", until=str(T0 + 10))) == []
    assert q(store_path, "offers", framework="nobody") == []


def test_filters_on_tasks_allocations_frameworks(store_path, ix):
    assert ids(q(store_path, "tasks", framework=A), "task_id") == ["a1", "a-bad"]
    assert ids(q(store_path, "tasks", role="batch"), "task_id") == ["b1"]
    assert ids(q(store_path, "tasks", agent=S0), "task_id") == ["a1", "a-bad"]
    assert ids(q(store_path, "tasks", since=str(T0 + 29)), "task_id") == ["b1"]  # a1 ended at 28
    assert ids(q(store_path, "tasks", until=str(T0 + 20)), "task_id") == ["a1", "a-bad"]

    allocs = q(store_path, "allocations", framework=B)
    assert [a["index"] for a in allocs] == [ix["first"], ix["o3"]]
    assert [ag["agent_id"] for ag in allocs[0]["agents"]] == [S0, S1]  # B was a candidate on both agents
    allocs = q(store_path, "allocations", agent="S0")
    assert [a["index"] for a in allocs] == [ix["first"], ix["periodic"], ix["o6"]]
    assert [ag["agent_id"] for ag in allocs[0]["agents"]] == [S0]
    assert [a["index"] for a in q(store_path, "allocations", role="batch")] == [ix["first"], ix["o3"]]
    assert [a["index"] for a in q(store_path, "allocations", since=str(T0 + 20), until=str(T0 + 26))] == \
        [ix["periodic"], ix["o3"]]

    fws = by(q(store_path, "frameworks"), "framework_id")
    a, b = fws[A], fws[B]
    assert {k: a[k] for k in a if k.startswith(("offers_", "tasks_"))} == {
        "offers_received": 5, "offers_accepted": 1, "offers_declined": 0, "offers_rescinded": 1,
        "offers_dropped": 2, "offers_outstanding": 1, "tasks_launched": 1, "tasks_finished": 0, "tasks_failed": 0,
        "tasks_killed": 1, "tasks_lost_or_error": 0, "tasks_active": 0, "tasks_rejected": 1}
    assert [(x["event"], x["time"]) for x in a["timeline"]] == [
        ("subscribed", iso(T0 + 10)), ("suppressed", iso(T0 + 15)), ("revived", iso(T0 + 19)),
        ("disconnected", iso(T0 + 30)), ("resubscribed", iso(T0 + 31)), ("resubscribed", iso(T0 + 33))]
    assert a["timeline"][3]["detail"].startswith("leader change")
    assert (a["status"], a["roles"], a["name"], a["removed_at"]) == ("connected", ["web"], "alpha", None)
    assert (b["status"], b["removed_at"], b["removal_reason"]) == ("removed", iso(T0 + 40), "failover_timeout")
    assert [x["event"] for x in b["timeline"]] == ["subscribed", "disconnected", "removed"]
    assert (b["offers_received"], b["offers_accepted"], b["offers_declined"], b["tasks_killed"]) == (2, 1, 1, 1)

    assert ids(q(store_path, "frameworks", role="batch"), "framework_id") == [B]
    only_s0 = by(q(store_path, "frameworks", agent=S0), "framework_id")
    assert list(only_s0) == [A] and only_s0[A]["offers_received"] == 3  # O0, O2, O6
    late = by(q(store_path, "frameworks", since=str(T0 + 32)), "framework_id")
    assert late[A]["offers_received"] == 2 and [x["event"] for x in late[A]["timeline"]] == ["resubscribed"]
    assert [x["event"] for x in late[B]["timeline"]] == ["removed"]  # B lived until T0+40


def test_bad_filters():
    with pytest.raises(audit.AuditError) as e:
        Filters.parse(since="yesterday")
    assert e.value.param == "since"
    with pytest.raises(audit.AuditError) as e:
        Filters.parse(since="20", until="10")
    assert e.value.param == "until"
    with pytest.raises(audit.AuditError):
        Filters.parse(until="nan")
    assert Filters.parse(since="1800000000").since == T0
    assert Filters.parse(since="2027-01-15").since == T0 - 8 * 3600


# ---- formats ------------------------------------------------------------------------------------


def test_formats(store_path):
    for kind in audit.QUERIES:
        records = q(store_path, kind)
        assert json.loads(audit.render(kind, records, "json", C)) == records
    offers = q(store_path, "offers")
    rows = list(csv.DictReader(io.StringIO(audit.render("offers", offers, "csv", C))))
    assert len(rows) == len(offers)
    assert rows[0]["offer_id"] == O(0) and rows[0]["latency"] == "2.0" and rows[0]["tasks"] == "a1"
    assert rows[6]["answered_at"] == "" and rows[6]["outcome"] == "outstanding"
    # CSV: tasks get a row per status update; allocations a row per candidate.
    tasks = list(csv.DictReader(io.StringIO(audit.render("tasks", q(store_path, "tasks"), "csv", C))))
    a1 = [r for r in tasks if r["task_id"] == "a1"]
    assert [(r["status_state"], r["status_acknowledged_at"]) for r in a1] == [
        ("TASK_STARTING", iso(T0 + 13.2)), ("TASK_RUNNING", iso(T0 + 14.1)), ("TASK_KILLED", iso(T0 + 31.5))]
    assert a1[0]["history"] == "STARTING+ack > RUNNING+ack > KILLED+ack"
    allocs = list(csv.DictReader(io.StringIO(audit.render("allocations", q(store_path, "allocations"), "csv", C))))
    assert [(r["agent_id"], r["framework_id"], r["outcome"]) for r in allocs[:4]] == [
        (S0, A, "offered"), (S0, B, "next in line"), (S1, A, "skipped: declined (filter active)"), (S1, B, "offered")]
    fws = list(csv.DictReader(io.StringIO(audit.render("frameworks", q(store_path, "frameworks"), "csv", C))))
    assert fws[1]["timeline"].startswith(f"subscribed@{iso(T0 + 10)} (roles batch); disconnected@")
    # Table: aligned columns, ids without the cluster prefix.
    table = audit.render("offers", offers, "table", C).splitlines()
    assert table[0].startswith(f"# cluster {C}")
    header, first = table[1], table[2]
    assert header.split()[:5] == ["OFFER", "FRAMEWORK", "ROLE", "AGENT", "RESOURCES"]
    assert first.split()[:5] == ["O0", "0000", "web", "S0", "cpus:2;mem:1024"]
    for col in ("OUTCOME", "LATENCY_S", "RUNNER_UP"):
        start = header.index(col)
        assert all(line[start - 2:start] == "  " and line[start] != " " for line in table[2:]), col
    assert "rescinded:offer_timeout" in table[4] and "dropped:leader_change" in table[6]
    tt = audit.render("tasks", q(store_path, "tasks"), "table", C)
    assert " RUNNING(unacked) > KILLED\n" in tt  # b1: the master's kill needs no ack
    with pytest.raises(audit.AuditError):
        audit.render("offers", offers, "xml", C)


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli(store_path, capsys):
    assert cli.main(["audit", "offers", "--store", str(store_path), "--framework", "0001", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["offer_id"] for o in out] == [O(1), O(3)]
    assert cli.main(["audit", "tasks", "--store", str(store_path.parent), "--since", iso(T0 + 29)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].split()[:2] == ["0001", "b1"]
    assert cli.main(["audit", "frameworks", "--store", str(store_path), "--format", "csv", "--role", "web"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["framework_id"] for r in rows] == [A]


@pytest.mark.parametrize("args, message", [
    (["offers", "--store", "/nonexistent/store"], "--store: no event store at /nonexistent/store"),
    (["offers", "--store", "STORE", "--since", "last tuesday"], "--since: expected an ISO 8601 time"),
    (["offers", "--store", "STORE", "--until", "2027-13-01"], "--until: expected an ISO 8601 time"),
    (["offers", "--store", "STORE", "--format", "xml"], "--format: unknown format 'xml'"),
    (["bids", "--store", "STORE"], "unknown query 'bids'"),
    (["offers"], "--store PATH is required"),
    ([], "name a query"),
    (["offers", "--store", "NOTASTORE"], "is not a valid event store: file is not a database"),
])
def test_cli_usage_errors(store_path, capsys, args, message):
    junk = store_path.parent / "junk.txt"
    junk.write_text("not sqlite at all " * 100)
    args = [str(store_path) if a == "STORE" else str(junk) if a == "NOTASTORE" else a for a in args]
    assert cli.main(["audit", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("drover audit: error: ") and message in lines[0], captured.err


def test_cli_as_a_process(store_path):
    bad = subprocess.run([sys.executable, "-m", "drover.cli", "audit", "offers", "--store", str(store_path),
                          "--since", "soon"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "drover.cli", "audit", "allocations", "--store", str(store_path),
                         "--agent", "S1"], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "skipped: declined (filter active)" in ok.stdout


# ---- HTTP ---------------------------------------------------------------------------------------


async def _client(path: Path) -> TestClient:
    app = web.Application()
    add_audit_routes(app, path)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_http(store_path):
    client = await _client(store_path.parent)  # a data dir works, as does the file
    try:
        r = await client.get("/api/drover/audit/offers", params={"framework": B})
        assert r.status == 200 and r.content_type == "application/json"
        assert [o["offer_id"] for o in await r.json()] == [O(1), O(3)]
        r = await client.get("/api/drover/audit/tasks", params={"format": "csv", "agent": "S1"})
        assert r.status == 200 and r.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert [(x["task_id"], x["status_state"]) for x in rows] == [("b1", "TASK_RUNNING"), ("b1", "TASK_KILLED")]
        r = await client.get("/api/drover/audit/allocations", params={"since": iso(T0 + 33), "role": "web"})
        allocs = await r.json()
        assert [a["trigger"] for a in allocs] == ["framework_added"] and allocs[0]["agents"][0]["agent_id"] == S0
        r = await client.get("/api/drover/audit/frameworks", params={"until": str(T0 + 5)})
        assert await r.json() == []
        r = await client.get("/api/drover/audit/frameworks", params={"format": "table"})
        assert r.status == 200 and "alpha" in await r.text()

        r = await client.get("/api/drover/audit/offers", params={"since": "tomorrow-ish"})
        assert r.status == 400 and "'since'" in await r.text()
        r = await client.get("/api/drover/audit/offers", params={"since": "20", "until": "10"})
        assert r.status == 400 and "'until'" in await r.text()
        r = await client.get("/api/drover/audit/offers", params={"format": "xml"})
        assert r.status == 400 and "'format'" in await r.text()
        r = await client.get("/api/drover/audit/offers", params={"framework_id": A})
        assert r.status == 400 and "'framework_id'" in await r.text()
        r = await client.get("/api/drover/audit/offers?role=web&role=batch")
        assert r.status == 400 and "'role'" in await r.text()
        r = await client.get("/api/drover/audit/bids")
        assert r.status == 404
    finally:
        await client.close()


async def test_http_without_a_store(tmp_path):
    client = await _client(tmp_path / "nothing-here")
    try:
        r = await client.get("/api/drover/audit/offers")
        assert r.status == 503 and "no event store" in await r.text()
    finally:
        await client.close()


# ---- a real run ---------------------------------------------------------------------------------


@pytest.mark.integration
async def test_audit_of_a_real_run(tmp_path):
    import asyncio

    from tests.cluster import running_cluster, run_framework

    with running_cluster(tmp_path / "cluster") as cluster:
        out = await asyncio.to_thread(run_framework, "pymesos_echo.py", "--master", cluster.leader_endpoint(),
                                      "--tasks", "3")
        cluster.wait_converged()
        stores = {m["id"]: Path(m["data_dir"]) for m in cluster.layout["masters"]}
    fid = out["framework_id"]
    results = {mid: {k: audit.run_query(p, k)[0] for k in audit.QUERIES} for mid, p in stores.items()}
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), "every replica's store gives the same audit"

    tasks = [t for t in first["tasks"] if t["framework_id"] == fid]
    assert sorted(t["task_id"] for t in tasks) == sorted(out["final"])
    for t in tasks:
        assert t["state"] == "TASK_FINISHED" and t["origin"] == "accept" and t["resources"] == "cpus:0.1;mem:32"
        assert [s["state"] for s in t["statuses"]] == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
        assert all(s["uuid"] and s["acknowledged_at"] >= s["time"] for s in t["statuses"])
        assert t["ended_at"] == t["statuses"][-1]["time"]
    offers = [o for o in first["offers"] if o["framework_id"] == fid]
    accepted = [o for o in offers if o["outcome"] == "accepted"]
    assert sorted(t for o in accepted for t in o["tasks"]) == sorted(out["final"])
    for o in offers:
        assert o["outcome"] in ("accepted", "declined") or o["outcome"].startswith(("rescinded:", "dropped:"))
        assert o["latency"] is not None and o["latency"] >= 0 and o["share"] is not None  # every run was explained
    assert all(o["refuse_seconds"] == 30.0 for o in offers if o["outcome"] == "declined")
    by_offer = {o["offer_id"]: o for o in offers}
    for a in first["allocations"]:
        for ag in a["agents"]:
            for c in ag["candidates"]:
                if c["outcome"] == "offered" and c["framework_id"] == fid:
                    assert by_offer[c["offer_id"]]["index"] == a["index"]
    fw = by(first["frameworks"], "framework_id")[fid]
    assert (fw["name"], fw["offers_received"], fw["offers_accepted"], fw["tasks_launched"], fw["tasks_finished"]) == \
        ("pymesos-echo", len(offers), len(accepted), 3, 3)
    assert fw["timeline"][0]["event"] == "subscribed"

    # The same store over HTTP, from a follower's copy (any replica answers from its own store).
    client = await _client(stores["m2"])
    try:
        r = await client.get("/api/drover/audit/tasks", params={"framework": fid})
        assert await r.json() == tasks
        r = await client.get("/api/drover/audit/offers", params={"framework": fid, "format": "csv"})
        assert len(list(csv.DictReader(io.StringIO(await r.text())))) == len(offers)
    finally:
        await client.close()
    # And from the command line.
    cmd = subprocess.run([sys.executable, "-m", "drover.cli", "audit", "frameworks", "--store", str(stores["m3"]),
                          "--framework", fid], capture_output=True, text=True, cwd=REPO)
    assert cmd.returncode == 0 and "pymesos-echo" in cmd.stdout, cmd.stderr


# ---- a store that cannot be audited --------------------------------------------------------------


def _undecodable_store(tmp_path: Path) -> Path:
    log = Log()
    log.add(0, ev.ClusterCreated(cluster_id=C), ev.LeaderElected(leader_id="r1", http="h1:5050", term=1))
    path = log.write(tmp_path / "s.sqlite")
    store = EventStore(path)
    store.db.execute("INSERT INTO events(idx, term, ts, type, payload) VALUES (3, 1, ?, 'OFFERS_MADE', ?)",
                     (T0 + 1, b'{"type": "OFFERS_MADE", "offers": 7}'))
    store.db.commit()
    store.close()
    return path


def test_a_store_that_cannot_be_audited(tmp_path, capsys, monkeypatch):
    """A payload that does not decode, or a fold that fails (the audit runs the master's fold, which is total:
    forced here), is one line naming the index, as in replay."""
    assert cli.main(["audit", "offers", "--store", str(_undecodable_store(tmp_path))]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--store: index 3: payload does not decode" in err[0], err

    def failing(state, env):
        raise RuntimeError("applier broke")

    monkeypatch.setattr(audit, "apply", failing)
    assert cli.main(["audit", "tasks", "--store", str(scenario(tmp_path)[0])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--store: index 1: folding LEADER_ELECTED failed: RuntimeError: applier broke" in err[0]


async def test_http_of_a_store_that_cannot_be_audited(tmp_path):
    client = await _client(_undecodable_store(tmp_path))
    try:
        r = await client.get("/api/drover/audit/tasks")
        assert r.status == 503 and "cannot be audited: index 3: payload does not decode" in await r.text()
    finally:
        await client.close()
