"""Dynamic reservations: RESERVE and UNRESERVE operations in ACCEPT (fold, allocator and live master)."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterator

import aiohttp
import pytest

from eventstore import events as ev
from eventstore.resources import Resources
from master import allocation
from master.state import State, apply, state_hash
from tests.cluster import Cluster, running_cluster
from tests.v1client import Scheduler


class Log:
    def __init__(self):
        self.state = State()
        self.ts = 100.0
        self(ev.ClusterCreated(cluster_id="c"))
        self(ev.LeaderElected(leader_id="m", http="m:1", term=1))

    def __call__(self, event):
        apply(self.state, ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event))


def bookkeeping(a) -> tuple:
    def clean(d: dict) -> dict:
        return {k: v for k, v in sorted(d.items()) if v}
    return (sorted((aid, ag.total.format(), ag.available.format()) for aid, ag in a.agents.items()),
            clean(a.reserved_by_top), a.reserved_total, a.reserved_alloc_total, clean(a.unreserved_alloc_by_top),
            a.totals)


def test_reserve_then_unreserve_in_the_fold():
    log = Log()
    log(ev.AgentRegistered(agent_id="A1", hostname="a", http="a:1",
                           resources=Resources.parse("cpus:4;mem:1024").to_list()))
    log(ev.FrameworkSubscribed(framework_id="F1", info=ev.FrameworkInfo(name="f", user="u", roles=["db"])))
    made = allocation.decide_offers(log.state, 100.0, "t")
    log(made)
    oid = made.offers[0].offer_id
    reserved = Resources.parse("cpus(db):1;mem(db):256")
    log(ev.OffersAccepted(framework_id="F1", offer_ids=[oid], tasks=[], refuse_seconds=0.0,
                          reserved=reserved.to_list()))
    agent = log.state.agents["A1"]
    assert agent.total() == Resources.parse("cpus:3;mem:768;cpus(db):1;mem(db):256")
    assert Resources(agent.dynamic) == reserved
    # Everything went back to the allocator, and its reservation bookkeeping matches one rebuilt from the
    # fields (allocation counts differ by design: a rebuild restarts them).
    a = allocation.allocator_of(log.state)
    assert a.agents["A1"].available == agent.total()
    assert bookkeeping(a) == bookkeeping(allocation.rebuild(log.state))
    # The reserved part is offered (to its role) with the rest.
    made = allocation.decide_offers(log.state, 101.0, "t")
    log(made)
    assert Resources(made.offers[0].resources) == agent.total()
    log(ev.OffersAccepted(framework_id="F1", offer_ids=[made.offers[0].offer_id], tasks=[], refuse_seconds=0.0,
                          unreserved=reserved.to_list()))
    assert log.state.agents["A1"].total() == Resources.parse("cpus:4;mem:1024")
    assert log.state.agents["A1"].dynamic == []


def test_get_agents_shows_dynamic_reservations_as_dynamic_and_flag_ones_as_static():
    from master import operator_json

    log = Log()
    log(ev.AgentRegistered(agent_id="A1", hostname="a", http="a:1",
                           resources=Resources.parse("cpus:4;mem:1024;disk(web):100").to_list()))
    log(ev.FrameworkSubscribed(framework_id="F1", info=ev.FrameworkInfo(name="f", user="u", roles=["db"])))
    made = allocation.decide_offers(log.state, 100.0, "t")
    log(made)
    log(ev.OffersAccepted(framework_id="F1", offer_ids=[made.offers[0].offer_id], tasks=[], refuse_seconds=0.0,
                          reserved=Resources.parse("cpus(db):1").to_list()))
    total = operator_json.agent(log.state, log.state.agents["A1"], "1.0")["total_resources"]
    kinds = {(r["name"], r.get("reservations", [{}])[0].get("type")) for r in total}
    assert kinds == {("cpus", None), ("mem", None), ("cpus", "DYNAMIC"), ("disk", "STATIC")}
    # AgentInfo.resources are the agent's flags: the dynamic reservation is not there
    info = operator_json.agent(log.state, log.state.agents["A1"], "1.0")["agent_info"]["resources"]
    assert {(r["name"], r["role"], r["scalar"]["value"]) for r in info} == {
        ("cpus", "*", 4.0), ("mem", "*", 1024.0), ("disk", "web", 100.0)}


def test_reregistering_agent_keeps_its_dynamic_reservations():
    log = Log()
    base = Resources.parse("cpus:4;mem:1024")
    log(ev.AgentRegistered(agent_id="A1", hostname="a", http="a:1", resources=base.to_list()))
    log(ev.FrameworkSubscribed(framework_id="F1", info=ev.FrameworkInfo(name="f", user="u", roles=["db"])))
    made = allocation.decide_offers(log.state, 100.0, "t")
    log(made)
    log(ev.OffersAccepted(framework_id="F1", offer_ids=[made.offers[0].offer_id], tasks=[], refuse_seconds=0.0,
                          reserved=Resources.parse("cpus(db):2").to_list()))
    before = state_hash(log.state)
    log(ev.AgentDisconnected(agent_id="A1"))
    # The agent reports only its flag's resources; the log re-applies the reservation.
    log(ev.AgentReregistered(agent_id="A1", hostname="a", http="a:1", resources=base.to_list()))
    assert log.state.agents["A1"].total() == Resources.parse("cpus:2;mem:1024;cpus(db):2")
    assert before != state_hash(log.state)  # connection state changed, resources did not


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("reservations") / "cluster") as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def reserved(role: str, cpus: float, mem: float) -> list[dict]:
    return [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}, "role": role,
             "reservation": {"principal": "p"}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}, "role": role,
             "reservation": {"principal": "p"}}]


@pytest.mark.integration
async def test_reserve_and_launch_on_the_reservation_live(cluster, http):
    sched = await Scheduler(http, cluster.leader_endpoint(), name="db", role="db").subscribe()
    try:
        offer = (await sched.offers())[0]
        agent_id = offer["agent_id"]
        task = {"name": "t", "task_id": {"value": "on-reserved"}, "agent_id": agent_id,
                "resources": reserved("db", 0.5, 64), "command": {"value": "sleep 300"}}
        r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
            {"type": "RESERVE", "reserve": {"resources": reserved("db", 1, 256)}},
            {"type": "LAUNCH", "launch": {"task_infos": [task]}}], "filters": {"refuse_seconds": 0}})
        assert r.status == 202, r.text
        while True:  # acknowledge each update: the agent sends the next one only then
            st = await sched.update("on-reserved")
            await sched.call("ACKNOWLEDGE", {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]})
            if st["state"] == "TASK_RUNNING":
                break
        state = cluster.state()
        slave = next(s for s in state["slaves"] if s["id"] == agent_id["value"])
        assert slave["reserved_resources"]["db"]["cpus"] == 1.0 and slave["reserved_resources"]["db"]["mem"] == 256.0
        # The unused half of the reservation comes back in an offer, marked as reserved for db.
        later = await sched.expect(lambda e: e.get("type") == "OFFERS" and any(
            o["agent_id"] == agent_id and any(res.get("role") == "db" for res in o["resources"])
            for o in e["offers"]["offers"]))
        back = next(o for o in later["offers"]["offers"] if o["agent_id"] == agent_id)
        db_cpus = sum(res["scalar"]["value"] for res in back["resources"]
                      if res["name"] == "cpus" and res.get("role") == "db")
        assert db_cpus == pytest.approx(0.5)
        # An UNRESERVE of more than the offer holds is dropped; one of what it holds goes through.
        r = await sched.call("ACCEPT", {"offer_ids": [back["id"]], "operations": [
            {"type": "UNRESERVE", "unreserve": {"resources": reserved("db", 0.5, 192)}}],
            "filters": {"refuse_seconds": 0}})
        assert r.status == 202
        await asyncio.sleep(0.5)
        state = cluster.state()
        slave = next(s for s in state["slaves"] if s["id"] == agent_id["value"])
        assert slave["reserved_resources"]["db"]["cpus"] == 0.5  # what the task still uses
        assert slave["reserved_resources"]["db"]["mem"] == 64.0
    finally:
        await sched.call("TEARDOWN")
        await sched.close()
