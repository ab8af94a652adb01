"""`drover why`: scenarios whose answers are known, built through the real fold and allocator, read back
from an event store as `drover why` and `GET /api/drover/why/...` read a replica's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master import allocation
from master import why as diag
from master.allocator.config import AllocatorConfig
from master.api.why import add_why_routes
from master.state import State, apply
from replay import why

CID = "c"


class Log:
    """A history written through the fold and the allocator, as a leader writes it."""

    def __init__(self) -> None:
        self.state = State()
        self.envs: list[ev.Envelope] = []
        self.ts = 1000.0
        self.tasks = 0
        self.emit(ev.LeaderElected(leader_id="m", http="m:1", term=1, config=AllocatorConfig().to_record()))
        self.emit(ev.ClusterCreated(cluster_id=CID))

    def emit(self, event, dt: float = 1.0) -> ev.Envelope:
        self.ts += dt
        env = ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event)
        apply(self.state, env)
        self.envs.append(env)
        return env

    def agent(self, n: int, res: str) -> str:
        aid = f"{CID}-S{n}"
        self.emit(ev.AgentRegistered(agent_id=aid, hostname=f"h{n}", http="h:1",
                                     resources=Resources.parse(res).to_list()))
        return aid

    def framework(self, n: int, roles=("*",), **info) -> str:
        fid = f"{CID}-{n:04d}"
        self.emit(ev.FrameworkSubscribed(framework_id=fid, info=ev.FrameworkInfo(name=f"fw{n}", user="u",
                                                                                 roles=list(roles), **info)))
        return fid

    def run(self) -> list[ev.OfferRecord]:
        """One allocation run (recorded compactly, as the leader does); its offers."""
        made = allocation.decide_offers(self.state, self.ts + 1, "periodic")
        if made is None:
            self.ts += 1
            return []
        self.emit(made)
        return made.offers

    def offer_of(self, fid: str) -> ev.OfferRecord:
        return next(o for o in self.state.offers.values() if o.framework_id == fid)

    def launch(self, fid: str, res: str, task_id: str | None = None) -> str:
        o = self.offer_of(fid)
        self.tasks += 1
        tid = task_id or f"t{self.tasks}"
        spec = ev.TaskSpec(task_id=tid, name=tid, agent_id=o.agent_id, role=o.role,
                           resources=Resources.parse(res).to_list(), command=ev.CommandSpec(value="sleep 1000"))
        self.emit(ev.OffersAccepted(framework_id=fid, offer_ids=[o.offer_id], tasks=[spec], refuse_seconds=0.0))
        self.emit(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=o.agent_id,
                                   status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR",
                                                        timestamp=self.ts)))
        return tid

    def decline(self, fid: str, refuse: float) -> None:
        offers = [o.offer_id for o in self.state.offers.values() if o.framework_id == fid]
        self.emit(ev.OffersDeclined(framework_id=fid, offer_ids=offers, refuse_seconds=refuse))

    def store(self, tmp_path: Path) -> EventStore:
        s = EventStore(tmp_path / "events.sqlite", create=True)
        s.append(self.envs)
        return s


def reasons(answer: dict, when: str) -> list[str]:
    return [r["reason"] for r in answer["reasons"] if r["when"] == when]


def test_a_framework_starved_because_another_holds_everything(tmp_path):
    log = Log()
    agent = log.agent(0, "cpus:4;mem:4096")
    a = log.framework(1)
    log.run()
    log.launch(a, "cpus:4;mem:4096")
    b = log.framework(2)
    for _ in range(5):
        assert log.run() == []  # nothing free: no run is recorded
    answer = why.why_framework(log.store(tmp_path), b)
    assert answer["offers_received"] == 0
    assert reasons(answer, "next run") == [diag.NO_FREE_RESOURCES]
    nxt = answer["reasons"][0]
    assert nxt["agents"] == [agent]
    assert [h["framework_id"] for h in nxt["holders"]] == [a]
    assert "cpus:4" in nxt["holders"][0]["resources"]
    assert "got 0 offer(s)" in answer["answer"] and a in answer["answer"]
    assert any("tasks end" in c for c in answer["changes"])
    text = why.render(answer)
    assert "no_free_resources" in text and "What would change it" in text


def test_a_framework_outranked_by_a_lower_share(tmp_path):
    log = Log()
    log.agent(0, "cpus:2;mem:2048")
    b = log.framework(2)
    log.run()
    log.launch(b, "cpus:2;mem:2048")  # b: share 0.5 of the cluster once the second agent is there
    s1 = log.agent(1, "cpus:2;mem:2048")
    a = log.framework(1)
    since = log.ts
    for _ in range(4):  # a (share 0) is served first every run, and declines without a filter
        offers = log.run()
        assert [o.framework_id for o in offers] == [a]
        log.decline(a, 0.0)
    answer = why.why_framework(log.store(tmp_path), b, since=since)
    assert answer["offers_received"] == 0 and answer["allocation_runs"] == 4 and answer["runs_analysed"] == 4
    window = [r for r in answer["reasons"] if r["when"] == "window"]
    # Its own task fills agent 0; agent 1 went to a, ranked first with the lower share, in every run.
    assert sorted((r["reason"], r["count"]) for r in window) == [(diag.NO_FREE_RESOURCES, 4), (diag.OUTRANKED, 4)]
    outranked = next(r for r in window if r["reason"] == diag.OUTRANKED)
    assert outranked["agents"] == [s1]
    assert outranked["rivals"][0]["framework_id"] == a and outranked["rivals"][0]["share"] == 0.0
    assert outranked["share"] == pytest.approx(0.5)
    assert reasons(answer, "next run") == [diag.NO_FREE_RESOURCES, diag.OUTRANKED]
    assert any("share" in c for c in answer["changes"])


def test_declines_filter_a_framework_until_they_expire(tmp_path):
    log = Log()
    s0 = log.agent(0, "cpus:2;mem:2048")
    b = log.framework(2)
    assert [o.framework_id for o in log.run()] == [b]
    log.decline(b, 3600.0)
    a = log.framework(1)
    for _ in range(3):
        assert [o.framework_id for o in log.run()] == [a]
        log.decline(a, 0.0)
    answer = why.why_framework(log.store(tmp_path), b)
    assert answer["offers_received"] == 1 and answer["allocation_runs"] == 4
    window = {r["reason"]: r for r in answer["reasons"] if r["when"] == "window"}
    assert window[diag.OFFERED]["count"] == 1 and window[diag.FILTERED]["count"] == 3
    nxt = [r for r in answer["reasons"] if r["when"] == "next run"]
    assert [r["reason"] for r in nxt] == [diag.FILTERED] and nxt[0]["agents"] == [s0]
    assert nxt[0]["until"] is not None
    assert any("REVIVE" in c for c in answer["changes"])
    # Asked as of an index before the decline, the answer is the history up to there: it was offered.
    early = why.why_framework(log.store(tmp_path), b, at=log.envs[5].index)
    assert early["offers_received"] == 1 and diag.FILTERED not in reasons(early, "window")


def test_a_suppressed_framework(tmp_path):
    log = Log()
    log.agent(0, "cpus:2;mem:2048")
    b = log.framework(2)
    log.emit(ev.RolesSuppressed(framework_id=b, roles=["*"]))
    assert log.run() == []
    answer = why.why_framework(log.store(tmp_path), b)
    assert reasons(answer, "next run") == [diag.SUPPRESSED]
    assert any("REVIVE" in c for c in answer["changes"])


def test_quota_limit_and_minimum_size(tmp_path):
    log = Log()
    log.agent(0, "cpus:4;mem:4096")
    log.emit(ev.QuotaUpdated(role="q", limits={"cpus": 1.0, "mem": 1024.0}))
    b = log.framework(2, roles=("q",))
    log.run()
    log.launch(b, "cpus:1;mem:1024")
    log.decline(b, 0.0)
    small = log.framework(3, min_allocatable={"*": [{"cpus": 8.0}]})
    assert log.run() == []
    store = log.store(tmp_path)
    assert reasons(why.why_framework(store, b), "next run") == [diag.QUOTA_LIMIT]
    answer = why.why_framework(store, small)
    assert reasons(answer, "next run") == [diag.TOO_SMALL]
    assert "cpus:8" in answer["reasons"][0]["detail"]


def test_why_a_task_ran_on_its_agent(tmp_path):
    log = Log()
    log.agent(0, "cpus:2;mem:2048")
    a = log.framework(1)
    b = log.framework(2)
    log.run()  # one agent, two frameworks at share 0: the sorter's tie-break decides
    winner = next(iter(log.state.offers.values())).framework_id
    loser = b if winner == a else a
    tid = log.launch(winner, "cpus:1;mem:512", task_id="web")
    answer = why.why_task(log.store(tmp_path), winner, tid)
    assert answer["agent_id"] == f"{CID}-S0"
    steps = [s["step"] for s in answer["timeline"]]
    assert steps == ["OFFERED", "ACCEPTED", "TASK_RUNNING"]
    assert [s["index"] for s in answer["timeline"]] == sorted(s["index"] for s in answer["timeline"])
    cands = answer["candidates"]
    assert cands[0]["framework_id"] == winner and cands[0]["outcome"] == "offered"
    assert cands[1]["framework_id"] == loser
    assert loser in answer["answer"]  # next in line
    assert "Candidates on the agent" in why.render(answer)
    # Short ids (without the cluster prefix) are accepted, as in the audit.
    assert why.why_task(log.store(tmp_path), winner.removeprefix(CID + "-"), tid)["task_id"] == tid
    with pytest.raises(why.WhyError) as e:
        why.why_task(log.store(tmp_path), winner, "nope")
    assert e.value.status == 404


def test_why_a_role(tmp_path):
    log = Log()
    log.agent(0, "cpus:4;mem:4096")
    a = log.framework(1, roles=("web",))
    log.run()
    log.launch(a, "cpus:4;mem:4096")
    b = log.framework(2, roles=("web",))
    answer = why.why_role(log.store(tmp_path), "web")
    assert {f["framework_id"] for f in answer["frameworks"]} == {a, b}
    assert b in answer["answer"]
    with pytest.raises(why.WhyError):
        why.why_role(log.store(tmp_path), "nobody")


def test_bad_questions(tmp_path):
    log = Log()
    log.agent(0, "cpus:1;mem:128")
    fid = log.framework(1)
    store = log.store(tmp_path)
    with pytest.raises(why.WhyError) as e:
        why.why_framework(store, "c-9999")
    assert e.value.status == 404
    with pytest.raises(why.WhyError) as e:
        why.why_framework(store, fid, at=10_000)
    assert e.value.param == "index"
    with pytest.raises(why.WhyError) as e:
        why.why_framework(store, fid, since="2026-01-02", until="2026-01-01")
    assert e.value.param == "until"
    with pytest.raises(why.WhyError) as e:
        why.why_framework(store, fid, role="other")
    assert e.value.param == "role"


def test_quota_limit_on_an_agent_with_disk(tmp_path):
    """Real agents have disk, which a limit on cpus and mem leaves out: the allocator shrinks the offer to the
    disk alone, below the minimum, and skips the framework. That is the quota limit, not being outranked."""
    log = Log()
    log.agent(0, "cpus:4;mem:4096;disk:8192")
    log.emit(ev.QuotaUpdated(role="q", limits={"cpus": 1.0, "mem": 1024.0}))
    b = log.framework(2, roles=("q",))
    log.run()
    log.launch(b, "cpus:1;mem:1024")
    log.decline(b, 0.0)
    assert log.run() == []
    answer = why.why_framework(log.store(tmp_path), b)
    assert reasons(answer, "next run") == [diag.QUOTA_LIMIT]
    assert "role q at its quota limit" in answer["reasons"][0]["detail"]


def test_headroom_applies_to_a_role_whose_own_guarantee_is_satisfied(tmp_path):
    """Stage 2 keeps the headroom other roles' unsatisfied guarantees need from every role, one with a satisfied
    guarantee of its own included."""
    log = Log()
    log.agent(0, "cpus:4;mem:4096")
    log.emit(ev.QuotaUpdated(role="g", guarantees={"cpus": 3.0, "mem": 3072.0}))  # no framework in g
    log.emit(ev.QuotaUpdated(role="a", guarantees={"cpus": 1.0, "mem": 1024.0}))
    fa = log.framework(1, roles=("a",))
    assert [o.framework_id for o in log.run()] == [fa]
    log.launch(fa, "cpus:1;mem:1024")
    assert log.run() == []
    answer = why.why_framework(log.store(tmp_path), fa)
    assert reasons(answer, "next run") == [diag.QUOTA_HEADROOM]


def test_filter_on_a_limit_shrunk_offer(tmp_path):
    """Under a limit the allocator checks the decline filter against the shrunk offer, not all that is free."""
    log = Log()
    log.agent(0, "cpus:4;mem:4096")
    log.emit(ev.QuotaUpdated(role="q", limits={"cpus": 1.0, "mem": 1024.0}))
    b = log.framework(2, roles=("q",))
    assert [o.framework_id for o in log.run()] == [b]
    log.decline(b, 3600.0)
    assert log.run() == []
    answer = why.why_framework(log.store(tmp_path), b)
    assert reasons(answer, "next run") == [diag.FILTERED]


def test_filtered_but_what_it_waits_for_is_held_by_another(tmp_path):
    """The leftovers of an agent (no cpus) are offered and declined with a filter: the filter is the next run's
    reason, but a REVIVE alone would only bring back offers without cpus: who holds them is said too."""
    log = Log()
    log.agent(0, "cpus:2;mem:2048")
    hog = log.framework(1)
    log.run()
    log.launch(hog, "cpus:2;mem:1024")
    b = log.framework(2)
    assert [o.framework_id for o in log.run()] == [b]  # mem:1024 and no cpus
    log.decline(b, 60.0)
    answer = why.why_framework(log.store(tmp_path), b)
    nxt = [r for r in answer["reasons"] if r["when"] == "next run"]
    assert [r["reason"] for r in nxt] == [diag.FILTERED]
    assert "none of cpus" in nxt[0]["detail"] and hog in nxt[0]["detail"]
    assert [h["framework_id"] for h in nxt[0]["holders"]] == [hog]
    assert any("REVIVE" in c and "holders" in c for c in answer["changes"])


def test_a_rejected_duplicate_launch_keeps_the_running_task(tmp_path):
    log = Log()
    log.agent(0, "cpus:4;mem:4096")
    log.agent(1, "cpus:4;mem:4096")
    a = log.framework(1)
    log.run()
    log.launch(a, "cpus:1;mem:128", task_id="web")
    o = log.offer_of(a)
    log.emit(ev.OffersAccepted(framework_id=a, offer_ids=[o.offer_id], tasks=[], refuse_seconds=0.0,
                               rejected=[ev.Rejection(task_id="web", state="TASK_ERROR", reason="REASON_TASK_INVALID",
                                                      message="task id web is in use")]))
    answer = why.why_task(log.store(tmp_path), a, "web")
    assert [s["step"] for s in answer["timeline"]] == ["OFFERED", "ACCEPTED", "TASK_RUNNING", "REJECTED"]
    assert "rejected it" not in answer["answer"]


# ---- the CLI and HTTP ------------------------------------------------------------------------------


def starved(tmp_path: Path) -> tuple[Path, str, str]:
    """A store where framework b is starved by a's task; returns its path, a and b."""
    log = Log()
    log.agent(0, "cpus:4;mem:4096")
    a = log.framework(1)
    log.run()
    log.launch(a, "cpus:4;mem:4096", task_id="big")
    b = log.framework(2)
    log.store(tmp_path).close()
    return tmp_path, a, b


def test_cli(tmp_path):
    path, a, b = starved(tmp_path)

    def drover(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "drover.cli", "why", *args], capture_output=True, text=True,
                              timeout=60)

    out = drover("framework", b.removeprefix(CID + "-"), "--store", str(path))
    assert out.returncode == 0, out.stderr
    assert "no_free_resources" in out.stdout and "What would change it" in out.stdout
    out = drover("task", a, "big", "--store", str(path), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["agent_id"] == f"{CID}-S0"
    bad = drover("framework", b, "--store", str(path), "--index", "999")
    assert bad.returncode == 2 and "--index" in bad.stderr and "Traceback" not in bad.stderr
    bad = drover("framework", b)
    assert bad.returncode == 2 and "--store" in bad.stderr
    bad = drover("role", "*", "--store", str(path), "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    bad = drover("framework", b, "--store", str(path), "--since", "0001-01-01T00:00:00+01:00")  # year 0 in UTC
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr


async def test_http(tmp_path):
    path, a, b = starved(tmp_path)
    app = web.Application()
    add_why_routes(app, path)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        r = await client.get("/api/drover/why/framework", params={"framework_id": b})
        assert r.status == 200 and r.content_type == "application/json"
        body = await r.json()
        assert set(body) >= {"question", "index", "answer", "reasons", "changes"}
        assert body["reasons"][0]["reason"] == diag.NO_FREE_RESOURCES
        r = await client.get("/api/drover/why/task", params={"framework_id": a, "task_id": "big", "format": "table"})
        assert r.status == 200 and "Timeline" in await r.text()
        r = await client.get("/api/drover/why/role", params={"role": "*", "index": "3"})
        assert r.status == 404  # no framework had subscribed by index 3
        for params, status, name in [({"framework_id": b, "index": "x"}, 400, "index"),
                                     ({"framework_id": b, "index": "99999"}, 400, "index"),
                                     ({"framework_id": b, "since": "soon"}, 400, "since"),
                                     ({"framework_id": b, "until": "9999-12-31T23:59:59-01:00"}, 400, "until"),
                                     ({"framework_id": b, "since": "2999-01-01"}, 400, "since"),
                                     ({"framework_id": b, "limit": "1"}, 400, "limit"),
                                     ({}, 400, "framework_id"),
                                     ({"framework_id": "nope"}, 404, "framework_id")]:
            r = await client.get("/api/drover/why/framework", params=params)
            assert r.status == status, (params, await r.text())
            assert name in await r.text()
        r = await client.get("/api/drover/why/task", params={"framework_id": a, "task_id": "gone"})
        assert r.status == 404
        r = await client.get("/api/drover/why/agent")
        assert r.status == 404
    finally:
        await client.close()
    app = web.Application()
    add_why_routes(app, path, lambda request: False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        r = await client.get("/api/drover/why/framework", params={"framework_id": b})
        assert r.status == 403
    finally:
        await client.close()
