"""The audit observes the master's fold instead of copying it: what it reports about tasks, offers and
frameworks is what `master.state.apply` made of the same log.

A property test builds random but valid histories (each event chosen from what the folded state allows at
that point) and compares the audit's task histories, outstanding offers and framework states with the
fold's. The drift the audit once had (its own copy of the fold) is kept as an explicit case.
"""

from __future__ import annotations

import random

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import events as ev
from eventstore.resources import Resources
from master.state import TERMINAL_STATES, State, apply
from replay import audit
from replay.audit import iso

C = "c0ffee"
T0 = 1_800_000_000.0
AGENT_RES = "cpus:4;mem:1024"
TASK_RES = "cpus:1;mem:128"


def res(text: str) -> list:
    return Resources.parse(text).to_list()


class History:
    """A log built step by step, each event folded at once (so each next event is chosen from what the
    state allows, and a history the fold refuses fails here, not in the audit)."""

    def __init__(self) -> None:
        self.state = State()
        self.envs: list[ev.Envelope] = []
        self.ts = T0
        self.term = 1
        self.n = 0  # for fresh ids
        # Brute force, for the comparison: after every step, every task's statuses are looked at again.
        self.appended: dict[int, tuple[object, list[int]]] = {}  # id(Task) -> (Task, index that appended each)
        self.acked: dict[tuple[str, str, str], float] = {}  # (framework, task, uuid) -> when its ack was folded
        self.emit(ev.LeaderElected(leader_id="m1", http="127.0.0.1:5050", term=1), ev.ClusterCreated(cluster_id=C))

    def fresh(self) -> int:
        self.n += 1
        return self.n

    def emit(self, *events: ev.Event) -> None:
        self.ts += 1.0
        for e in events:
            e = msgspec.json.decode(msgspec.json.encode(e), type=ev.Event)  # as a store holds it
            env = ev.Envelope(index=len(self.envs) + 1, term=self.term, ts=self.ts, event=e)
            task = self.state.task(e.framework_id, e.task_id) if isinstance(e, ev.StatusAcknowledged) else None
            pending = task.pending if task is not None else None
            apply(self.state, env)
            self.envs.append(env)
            if pending is not None and task.pending is None:
                self.acked[(task.framework_id, task.task_id, pending.uuid)] = env.ts
            for t in self.state.completed_tasks + self.state.all_tasks():
                _, idx = self.appended.setdefault(id(t), (t, []))
                idx.extend([env.index] * (len(t.statuses) - len(idx)))


def fold_tasks(state: State) -> dict[tuple[str, str], tuple]:
    """(framework, task) -> (state, statuses), for every task the fold holds (live or completed)."""
    out = {}
    for t in state.completed_tasks + state.all_tasks():
        out[(t.framework_id, t.task_id)] = (t.state, [(s.state, s.source, s.reason, s.message, s.uuid,
                                                        iso(s.timestamp)) for s in t.statuses])
    return out


def audit_tasks(records: list[dict]) -> dict[tuple[str, str], tuple]:
    out = {}
    for r in records:
        if r["origin"] == "rejected":  # refused in the accept: never in the fold's state
            continue
        key = (r["framework_id"], r["task_id"])
        assert key not in out, f"two audit records for {key}"
        out[key] = (r["state"], [(s["state"], s["source"], s["reason"], s["message"], s["uuid"], s["agent_time"])
                                 for s in r["statuses"]])
    return out


# ---- the drift the shadow fold had ------------------------------------------------------------------------


def test_an_unreachable_agent_coming_back_with_a_finished_task():
    """The fold gives the task the state its agent reports (TASK_FINISHED, 'Agent reregistered'); the audit's
    own copy of the fold said TASK_GONE ('Task is gone from its agent'), a status nobody ever sent."""
    h = History()
    fid, aid = f"{C}-0000", f"{C}-S0"
    h.emit(ev.AgentRegistered(agent_id=aid, hostname="h", http="127.0.0.1:5051", resources=res(AGENT_RES)))
    h.emit(ev.FrameworkSubscribed(framework_id=fid, info=ev.FrameworkInfo(name="fw", user="u")))
    h.emit(ev.OffersMade(offers=[ev.OfferRecord(offer_id=f"{C}-O0", framework_id=fid, agent_id=aid, role="*",
                                                resources=res(AGENT_RES))], trigger="framework_added"))
    spec = ev.TaskSpec(task_id="t1", name="t1", agent_id=aid, resources=res(TASK_RES),
                       command=ev.CommandSpec(value="sleep 9"))
    h.emit(ev.OffersAccepted(framework_id=fid, offer_ids=[f"{C}-O0"], tasks=[spec], refuse_seconds=0.0))
    h.emit(ev.StatusUpdated(framework_id=fid, task_id="t1", agent_id=aid,
                            status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=h.ts)))
    h.emit(ev.AgentUnreachable(agent_id=aid, unreachable_time=h.ts))
    h.emit(ev.AgentReregistered(agent_id=aid, hostname="h", http="127.0.0.1:5051", resources=res(AGENT_RES),
                                tasks=[ev.TaskReport(framework_id=fid, task_id="t1", state="TASK_FINISHED")]))

    (task,) = audit.query_envelopes(h.envs, "tasks")
    assert task["state"] == "TASK_FINISHED"
    assert [(s["state"], s["source"], s["reason"], s["message"]) for s in task["statuses"]] == [
        ("TASK_RUNNING", "SOURCE_EXECUTOR", None, None),
        ("TASK_UNREACHABLE", "SOURCE_MASTER", "REASON_AGENT_REMOVED", "Agent h is unreachable"),
        ("TASK_FINISHED", "SOURCE_MASTER", "REASON_AGENT_REREGISTERED", "Agent reregistered"),
    ]
    assert task["ended_at"] == iso(h.ts) == task["statuses"][-1]["time"]
    assert [s["index"] for s in task["statuses"]] == [7, 8, 9]  # the steps that appended them
    assert audit_tasks([task]) == fold_tasks(h.state)


def test_every_event_type_has_an_observer():
    assert set(audit._OBSERVERS) == set(ev.Event.__args__)


# ---- random valid histories ---------------------------------------------------------------------------------

STEPS = (("agent",) * 2 + ("framework",) * 2 + ("resubscribe", "disconnect", "remove", "suppress", "revive")
         + ("offer",) * 6 + ("accept",) * 5 + ("decline", "rescind") + ("status",) * 6 + ("ack",) * 5 + ("kill",)
         + ("unreachable",) * 2 + ("reregister",) * 3 + ("agent_disconnected", "leader", "weights", "quota", "stray"))
ROLES = ("web", "batch")


def step(h: History, what: str, r: random.Random) -> None:  # noqa: C901 - one branch per kind of event
    s = h.state
    frameworks = list(s.frameworks.values())
    agents = list(s.agents.values())
    live = [t for t in s.all_tasks()]
    if what == "agent":
        n = h.fresh()
        h.emit(ev.AgentRegistered(agent_id=f"{C}-S{n}", hostname=f"h{n}", http="127.0.0.1:5051",
                                  resources=res(AGENT_RES)))
    elif what == "framework":
        roles = r.sample(ROLES, r.randint(1, 2))
        h.emit(ev.FrameworkSubscribed(framework_id=f"{C}-{h.fresh():04d}",
                                      info=ev.FrameworkInfo(name="fw", user="u", roles=roles)))
    elif what == "resubscribe" and frameworks:
        fw = r.choice(frameworks)
        roles = r.sample(ROLES, r.randint(1, 2)) if r.random() < 0.3 else list(fw.info.roles)
        suppressed = r.sample(roles, r.randint(0, 1))
        h.emit(ev.FrameworkSubscribed(framework_id=fw.framework_id,
                                      info=ev.FrameworkInfo(name="fw", user="u", roles=roles),
                                      suppressed_roles=suppressed, resubscribe=True))
    elif what == "disconnect" and frameworks:
        h.emit(ev.FrameworkDisconnected(framework_id=r.choice(frameworks).framework_id))
    elif what == "remove" and frameworks:
        h.emit(ev.FrameworkRemoved(framework_id=r.choice(frameworks).framework_id,
                                   reason=r.choice(["teardown", "failover_timeout"])))
    elif what in ("suppress", "revive") and frameworks:
        fw = r.choice(frameworks)
        roles = [r.choice(fw.info.roles)]
        h.emit(ev.RolesSuppressed(framework_id=fw.framework_id, roles=roles) if what == "suppress"
               else ev.RolesRevived(framework_id=fw.framework_id, roles=roles))
    elif what == "offer" and frameworks and agents:
        offers = []
        for agent in r.sample(agents, min(len(agents), r.randint(1, 2))):
            free = s.available_on_agent(agent.agent_id) - Resources(
                x for o in offers if o.agent_id == agent.agent_id for x in o.resources)
            if not free.contains(Resources.parse(TASK_RES)):
                continue
            fw = r.choice(frameworks)
            offers.append(ev.OfferRecord(offer_id=f"{C}-O{s.next_offer + len(offers)}", framework_id=fw.framework_id,
                                         agent_id=agent.agent_id, role=r.choice(fw.info.roles),
                                         resources=free.to_list()))
        if offers:
            h.emit(ev.OffersMade(offers=offers, trigger=r.choice(["periodic", "framework_added"]), seed=h.n))
    elif what == "accept" and s.offers:
        o = r.choice(list(s.offers.values()))
        offered = Resources(o.resources)
        tasks = []
        for _ in range(r.choice([0, 1, 1, 2, 2])):
            need = Resources.parse(TASK_RES)
            if not offered.contains(need):
                break
            offered = offered - need
            tid = f"t{h.fresh()}"
            tasks.append(ev.TaskSpec(task_id=tid, name=tid, agent_id=o.agent_id, resources=need.to_list(),
                                     command=ev.CommandSpec(value="true"), role=o.role))
        rejected = [ev.Rejection(task_id=f"bad{h.fresh()}", state="TASK_ERROR", reason="REASON_TASK_INVALID",
                                 message="no")] if r.random() < 0.2 else []
        offer_ids = [o.offer_id] + ([f"{C}-O99999"] if r.random() < 0.1 else [])
        if r.random() < 0.05:
            offer_ids = [f"{C}-O99999"]  # no outstanding offer: the fold ignores the whole accept
        h.emit(ev.OffersAccepted(framework_id=o.framework_id, offer_ids=offer_ids, tasks=tasks,
                                 refuse_seconds=r.choice([0.0, 5.0]), rejected=rejected))
    elif what == "decline" and s.offers:
        o = r.choice(list(s.offers.values()))
        h.emit(ev.OffersDeclined(framework_id=o.framework_id, offer_ids=[o.offer_id],
                                 refuse_seconds=r.choice([0.0, 5.0, 30.0])))
    elif what == "rescind" and s.offers:
        h.emit(ev.OffersRescinded(offer_ids=[r.choice(list(s.offers))], reason="offer_timeout"))
    elif what == "status" and (live or s.completed_tasks):
        t = r.choice(live) if live and r.random() < 0.9 else r.choice(s.completed_tasks or live)
        state = r.choice(["TASK_STARTING", "TASK_RUNNING", "TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED",
                          "TASK_KILLED", "TASK_LOST"])
        uuid = f"u{h.fresh()}" if r.random() < 0.7 else None
        h.emit(ev.StatusUpdated(framework_id=t.framework_id, task_id=t.task_id, agent_id=t.agent_id,
                                status=ev.TaskStatus(state=state, source=r.choice(["SOURCE_EXECUTOR", "SOURCE_AGENT"]),
                                                     timestamp=h.ts - 0.5, uuid=uuid,
                                                     message=r.choice([None, "m"]))))
    elif what == "ack" and live:
        pending = [t for t in live if t.pending is not None]
        t = r.choice(pending or live)
        uuid = t.pending.uuid if t.pending is not None and r.random() < 0.9 else "nope"
        h.emit(ev.StatusAcknowledged(framework_id=t.framework_id, task_id=t.task_id, uuid=uuid))
    elif what == "kill" and live:
        t = r.choice(live)
        h.emit(ev.TaskKillRequested(framework_id=t.framework_id, task_id=t.task_id,
                                    grace_seconds=r.choice([None, 3.0])))
    elif what == "unreachable" and agents:
        agent = r.choice(agents)
        theirs = [oid for oid, o in s.offers.items() if o.agent_id == agent.agent_id]
        events = [ev.OffersRescinded(offer_ids=theirs, reason="agent_unreachable")] if theirs and r.random() < 0.5 \
            else []
        h.emit(*events, ev.AgentUnreachable(agent_id=agent.agent_id, unreachable_time=h.ts))
    elif what == "reregister" and (s.unreachable_agents or agents):
        pool = list(s.unreachable_agents.values()) if s.unreachable_agents and r.random() < 0.8 else agents
        if not pool:
            return
        agent = r.choice(pool)
        reports = []
        for t in live:
            if t.agent_id == agent.agent_id and r.random() < 0.7:
                reports.append(ev.TaskReport(framework_id=t.framework_id, task_id=t.task_id,
                                             state=r.choice(["TASK_RUNNING", "TASK_RUNNING", "TASK_FINISHED",
                                                             "TASK_FAILED", "TASK_KILLED"])))
        if frameworks and r.random() < 0.3:  # a task this log never saw launched: adopted
            fw = r.choice(frameworks)
            tid = f"t{h.fresh()}"
            spec = ev.TaskSpec(task_id=tid, name=tid, agent_id=agent.agent_id, resources=res("cpus:0.5"),
                               command=ev.CommandSpec(value="true"), role=fw.info.roles[0])
            reports.append(ev.TaskReport(framework_id=fw.framework_id, task_id=tid,
                                         state=r.choice(["TASK_RUNNING", "TASK_FINISHED"]), spec=spec))
        resources = AGENT_RES if r.random() < 0.8 else "cpus:8;mem:2048"
        h.emit(ev.AgentReregistered(agent_id=agent.agent_id, hostname=agent.hostname, http=agent.http,
                                    resources=res(resources), tasks=reports))
    elif what == "agent_disconnected" and agents:
        h.emit(ev.AgentDisconnected(agent_id=r.choice(agents).agent_id))
    elif what == "leader":
        h.term += 1
        h.emit(ev.LeaderElected(leader_id=f"m{h.term}", http="127.0.0.1:5050", term=h.term))
    elif what == "weights":
        h.emit(ev.WeightsUpdated(weights={r.choice(ROLES): r.choice([1.0, 2.0])}))
    elif what == "quota":
        h.emit(ev.QuotaUpdated(role=r.choice(ROLES), guarantees=r.choice([{}, {"cpus": 1.0}])))
    elif what == "stray" and (live or s.completed_tasks):  # updates and acks for tasks the fold does not hold
        h.emit(ev.StatusUpdated(framework_id=f"{C}-9999", task_id="ghost", agent_id=f"{C}-S0",
                                status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR",
                                                     timestamp=h.ts, uuid="g")),
               ev.StatusAcknowledged(framework_id=f"{C}-9999", task_id="ghost", uuid="g"))


histories = st.lists(st.tuples(st.sampled_from(STEPS), st.integers(0, 2**32 - 1)), min_size=30, max_size=150)


def build(steps: list[tuple[str, int]]) -> History:
    h = History()
    for what in ("agent", "agent", "framework", "framework"):  # something to offer, and someone to offer it to
        step(h, what, random.Random(0))
    for what, seed in steps:
        step(h, what, random.Random(seed))
    return h


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_the_audit_reports_what_the_fold_did(steps):
    h = build(steps)
    s = h.state

    tasks = audit.query_envelopes(h.envs, "tasks")
    assert audit_tasks(tasks) == fold_tasks(s)
    for t in tasks:
        assert (t["ended_at"] is not None) == (t["state"] in TERMINAL_STATES)
        if t["origin"] != "rejected":
            assert all(x["time"] is not None and x["index"] is not None for x in t["statuses"])
            firsts = [x["time"] for x in t["statuses"] if x["state"] in TERMINAL_STATES]
            assert t["ended_at"] == (firsts[0] if t["ended_at"] is not None else None)
    # When each status was appended (index and leader time) and acknowledged, as seen by brute force.
    by_key = {(t["framework_id"], t["task_id"]): t for t in tasks if t["origin"] != "rejected"}
    time_of = {env.index: iso(env.ts) for env in h.envs}
    for task, appended in h.appended.values():
        rec = by_key[(task.framework_id, task.task_id)]
        assert [x["index"] for x in rec["statuses"]] == appended
        assert [x["time"] for x in rec["statuses"]] == [time_of[i] for i in appended]
        assert (rec["kill_requested_at"] is not None) == task.kill_requested
        assert [x["acknowledged_at"] for x in rec["statuses"]] == [
            iso(h.acked.get((task.framework_id, task.task_id, x["uuid"]))) for x in rec["statuses"]]

    offers = audit.query_envelopes(h.envs, "offers")
    assert {o["offer_id"] for o in offers if o["outcome"] == "outstanding"} == set(s.offers)
    assert len(offers) == s.next_offer  # every offer the log made, once
    for o in offers:
        assert (o["answered_at"] is None) == (o["outcome"] == "outstanding")

    fws = {f["framework_id"]: f for f in audit.query_envelopes(h.envs, "frameworks")}
    assert set(fws) == set(s.frameworks) | set(s.removed_frameworks)
    for fid, f in fws.items():
        fw = s.frameworks.get(fid)
        if fw is None:
            assert f["status"] == "removed" and f["removed_at"] == iso(s.removed_frameworks[fid])
        else:
            assert f["status"] == ("connected" if fw.connected else "disconnected")
            assert (f["roles"], f["suppressed_roles"]) == (list(fw.info.roles), list(fw.suppressed_roles))
        launched = [t for t in tasks if t["framework_id"] == fid and t["origin"] != "rejected"]
        assert f["tasks_launched"] == len(launched)
        assert f["offers_received"] == sum(o["framework_id"] == fid for o in offers)

    allocations = audit.query_envelopes(h.envs, "allocations")
    assert sum(a["offer_count"] for a in allocations) == s.next_offer
