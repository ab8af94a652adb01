"""replay/invariants.py: the capacity invariant catches what it must (hand-made logs no leader would write) and
passes what the real allocator decides (also checked after every commit of tests/test_decide_property.py)."""

from __future__ import annotations

from eventstore import events as ev
from eventstore.resources import Resources
from master import allocation
from master.allocator.config import AllocatorConfig
from master.state import State, apply
from replay.invariants import capacity_problems, held_by_agent

CID = "c"


def fold(*events) -> State:
    s = State()
    for i, e in enumerate([ev.LeaderElected(leader_id="m", http="m:1", term=1, config=AllocatorConfig().to_record()),
                           ev.ClusterCreated(cluster_id=CID),
                           ev.AgentRegistered(agent_id="c-S0", hostname="h", http="h:1",
                                              resources=Resources.parse("cpus:2;mem:1024").to_list()),
                           ev.FrameworkSubscribed(framework_id="c-0000", info=ev.FrameworkInfo(name="a", user="u")),
                           ev.FrameworkSubscribed(framework_id="c-0001", info=ev.FrameworkInfo(name="b", user="u")),
                           *events], start=1):
        apply(s, ev.Envelope(index=i, term=1, ts=100.0 + i, event=e))
    return s


def offer(n: int, fid: str, res: str) -> ev.OfferRecord:
    return ev.OfferRecord(offer_id=f"c-O{n}", framework_id=fid, agent_id="c-S0", role="*",
                          resources=Resources.parse(res).to_list())


def test_what_the_allocator_offers_fits():
    s = fold()
    made = allocation.decide_offers(s, 200.0, "periodic")
    assert made is not None
    apply(s, ev.Envelope(index=s.index + 1, term=1, ts=200.0, event=made))
    assert capacity_problems(s) == []
    assert held_by_agent(s)["c-S0"].quantities() == {"cpus": 2.0, "mem": 1024.0}


def test_the_same_cpus_offered_twice():
    s = fold(ev.OffersMade(offers=[offer(0, "c-0000", "cpus:2;mem:512"), offer(1, "c-0001", "cpus:1;mem:512")],
                           trigger="periodic"))
    [problem] = capacity_problems(s)
    assert "agent c-S0 has offers of cpus:3;mem:1024, more than its tasks (none) leave" in problem


def test_a_task_and_an_offer_of_the_same_resources():
    spec = ev.TaskSpec(task_id="t", name="t", agent_id="c-S0", resources=Resources.parse("cpus:2;mem:100").to_list(),
                       command=ev.CommandSpec(value="x"))
    s = fold(ev.OffersMade(offers=[offer(0, "c-0000", "cpus:2;mem:1024")], trigger="periodic"),
             ev.OffersAccepted(framework_id="c-0000", offer_ids=["c-O0"], tasks=[spec], refuse_seconds=0.0))
    assert capacity_problems(s) == []  # the accept returned the rest; the task holds what it uses
    s2 = fold(ev.OffersMade(offers=[offer(0, "c-0000", "cpus:2;mem:1024")], trigger="periodic"),
              ev.OffersAccepted(framework_id="c-0000", offer_ids=["c-O0"], tasks=[spec], refuse_seconds=0.0),
              ev.OffersMade(offers=[offer(1, "c-0001", "cpus:1;mem:512")], trigger="periodic"))
    assert len(capacity_problems(s2)) == 1


def test_an_agent_back_with_fewer_cpus_than_its_tasks_hold_is_offered_only_the_rest():
    """Found by the property test: an agent re-registered with fewer cpus than its running tasks hold. That is
    allowed; the allocator offers none of its cpus until they end, and the memory left, as Mesos does."""
    spec = ev.TaskSpec(task_id="t", name="t", agent_id="c-S0", resources=Resources.parse("cpus:2;mem:100").to_list(),
                       command=ev.CommandSpec(value="x"))
    shrunk = ev.AgentReregistered(agent_id="c-S0", hostname="h", http="h:1",
                                  resources=Resources.parse("cpus:1;mem:1024").to_list())
    s = fold(ev.OffersMade(offers=[offer(0, "c-0000", "cpus:2;mem:1024")], trigger="periodic"),
             ev.OffersAccepted(framework_id="c-0000", offer_ids=["c-O0"], tasks=[spec], refuse_seconds=0.0), shrunk)
    assert capacity_problems(s) == []
    made = allocation.decide_offers(s, 300.0, "periodic")
    assert made is not None and [Resources(o.resources).format() for o in made.offers] == ["mem:924"]
    apply(s, ev.Envelope(index=s.index + 1, term=1, ts=300.0, event=made))
    assert capacity_problems(s) == []
    s2 = fold(ev.OffersMade(offers=[offer(0, "c-0000", "cpus:2;mem:1024")], trigger="periodic"),
              ev.OffersAccepted(framework_id="c-0000", offer_ids=["c-O0"], tasks=[spec], refuse_seconds=0.0), shrunk,
              ev.OffersMade(offers=[offer(1, "c-0001", "cpus:0.5;mem:512")], trigger="periodic"))
    [problem] = capacity_problems(s2)
    assert "more than its tasks (cpus:2;mem:100) leave" in problem
