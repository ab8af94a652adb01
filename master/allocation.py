"""The allocator as the master uses it: an incremental index derived from the folded state.

The fold (master/state.py) keeps a `HierarchicalAllocator` in step with every event
(agents, frameworks, offers, tasks, filters, weights, quota), so a decision does
not rebuild anything. `decide_offers` turns one allocation run into the
`OffersMade` event the leader records: IDs come from the state's counters, the
shuffle seed from the log index, the time from the leader's clock; so replay and
`verify` re-derive exactly the same offers. The leader records no explanation (at
thousands of agents it would be most of the event and of the run's time):
`explanation` re-derives it when asked, by re-running the decision.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec

from eventstore import events as ev
from eventstore.resources import Resources
from master.allocator.config import AllocatorConfig
from master.allocator.hierarchical import Filter, HierarchicalAllocator

if TYPE_CHECKING:
    from master.state import State

ALLOCATOR_KEY = "_allocator"


def config_of(state: "State") -> AllocatorConfig:
    return AllocatorConfig.from_record(state.config) if state.config else AllocatorConfig()


def allocator_of(state: "State") -> HierarchicalAllocator:
    a = state.__dict__.get(ALLOCATOR_KEY)
    if a is None:
        a = state.__dict__[ALLOCATOR_KEY] = rebuild(state)
    return a


def rebuild(state: "State") -> HierarchicalAllocator:
    """An allocator built from the state's fields alone (after a reconfiguration, or for a state
    decoded from bytes). Allocation counts restart from the current allocations."""
    a = HierarchicalAllocator(config_of(state))
    a.update_weights(dict(state.weights))
    for role, q in state.quotas.items():
        a.set_quota(role, dict(q.guarantees), dict(q.limits))
    for agent in state.agents.values():
        a.add_agent(agent.agent_id, Resources(agent.resources))
        a.activate_agent(agent.agent_id, agent.connected)
    for fw in state.frameworks.values():
        a.add_framework(fw.framework_id, list(fw.info.roles), list(fw.suppressed_roles), active=fw.active,
                        min_allocatable=dict(fw.info.min_allocatable), priority=fw.info.priority(),
                        shared_ok="SHARED_RESOURCES" in fw.info.capabilities)
    groups: set[tuple[str, str, str]] = set()
    for task in state.all_tasks():
        if not task.terminal and task.agent_id in a.agents:
            res = Resources(task.spec.resources)
            ex = task.spec.executor
            if ex is not None and (task.framework_id, task.agent_id, ex.executor_id) not in groups:
                groups.add((task.framework_id, task.agent_id, ex.executor_id))  # a task group's executor: once
                res = res + Resources(ex.resources)
            a.allocate(task.framework_id, task.spec.role, task.agent_id, res)
    for o in state.offers.values():
        if o.agent_id in a.agents:
            a.allocate(o.framework_id, o.role, o.agent_id, Resources(o.resources))
    for f in state.filters:
        a.add_filter(f.framework_id, f.role, f.agent_id, Filter(Resources(f.resources), f.expires_at))
    return a


def reset(state: "State") -> None:
    """Drop the derived allocator; the next use rebuilds it (after a configuration change)."""
    state.__dict__.pop(ALLOCATOR_KEY, None)


def decide_offers(state: "State", now: float, trigger: str, agent_ids: list[str] | None = None,
                  explain: bool = False, seed: int | None = None) -> ev.OffersMade | None:
    """One allocation run as the `OffersMade` event to record. The leader records it compactly
    (`explain` off): the per-agent explanation is derived on demand (`explanation`), from the log."""
    if state.cluster_id is None:
        return None
    a = allocator_of(state)
    if seed is None:
        seed = state.index  # derived from the log: replay re-derives the same shuffle
    d = a.decide(now, agent_ids, seed=seed, explain=explain)
    if not d.offers:
        return None
    offers = [ev.OfferRecord(offer_id=f"{state.cluster_id}-O{state.next_offer + i}", framework_id=o.framework_id,
                             agent_id=o.agent_id, role=o.role, resources=o.resources.to_list())
              for i, o in enumerate(d.offers)]
    decisions = [ev.AgentDecision(agent_id=t.agent_id, stage=t.stage,
                                  order=[ev.Candidate(*c) for c in t.order],
                                  skipped=[[fid, why] for fid, why in t.skipped])
                 for t in d.traces]
    return ev.OffersMade(offers=offers, trigger=trigger, decisions=decisions, seed=seed,
                         candidates=None if agent_ids is None else sorted(agent_ids))


def redecide(state: "State", env: ev.Envelope, explain: bool | None = None) -> ev.OffersMade | None:
    """Re-take a recorded allocation decision from the state just before it (for `verify`). By default
    as it was recorded: with the explanation when the event carries one (older leaders recorded it)."""
    e = env.event
    assert isinstance(e, ev.OffersMade)
    if explain is None:
        explain = bool(e.decisions)
    return decide_offers(state, env.ts, e.trigger, e.candidates, explain=explain, seed=e.seed)


def explanation(state: "State", env: ev.Envelope) -> list[ev.AgentDecision] | None:
    """Why a recorded `OffersMade`'s offers went where they went: per agent and stage, the candidates the
    allocator walked in order and the skips. `state` is the state just before the event (the fold up to
    `env.index - 1`). The event's own `decisions` when it carries them; otherwise the decision is re-run
    with the explanation on, which re-derives exactly what would have been recorded. None when the re-run
    does not give the recorded offers (a hand-made event, or a log written by another allocator): the
    offers cannot be explained."""
    e = env.event
    assert isinstance(e, ev.OffersMade)
    if e.decisions or not e.offers:
        return list(e.decisions)
    again = redecide(state, env, explain=True)
    if again is None or again.offers != e.offers:
        return None
    return again.decisions


def expired_offers(state: "State", now: float) -> list[str]:
    timeout = config_of(state).offer_timeout
    if timeout is None:
        return []
    return [o.offer_id for o in state.offers.values() if o.made_at + timeout <= now]


def digest(a: HierarchicalAllocator) -> str:
    """Everything a decision depends on, as bytes: equal digests, equal decisions."""
    parts = {
        "agents": [(aid, ag.active, ag.available.format(),
                    sorted((f"{k[0]}|{k[1]}", v.format()) for k, v in ag.allocated.items()))
                   for aid, ag in sorted(a.agents.items())],
        "frameworks": [(fid, fw.roles, sorted(fw.suppressed), fw.active) for fid, fw in sorted(a.frameworks.items())],
        "roles": [(c, a.role_sorter.count(c), sorted(a.role_sorter.allocation(c).items()))
                  for c in sorted(a.role_sorter.clients)],
        "fw_sorters": [(role, [(c, s.count(c), s.is_active(c)) for c in sorted(s.clients)])
                       for role, s in sorted(a.fw_sorters.items())],
        "filters": [(f"{k[0]}|{k[1]}|{k[2]}", [(f.resources.format(), f.expires_at) for f in v])
                    for k, v in sorted(a.filters.items())],
        "weights": sorted(a.weights.items()),
        "quotas": [(r, sorted(q.guarantees.items()), sorted(q.limits.items())) for r, q in sorted(a.quotas.items())],
    }
    return hashlib.sha256(msgspec.msgpack.encode(parts)).hexdigest()
