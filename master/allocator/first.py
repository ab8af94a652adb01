"""The first allocator: DRF across frameworks, whole-agent offers, decline filters.

Pure: `allocate(state, now, config, ...)` reads the folded state and returns the
`OffersMade` event the leader should record (or None). The same state, time and
config always give the same offers, which is what `replay verify` re-checks.

Order (as Mesos's DRF sorter): dominant share ascending, then how many times the
framework has been offered to, then framework id. Agents are visited in id
order; the first framework in order takes everything it may take on an agent,
then the order is recomputed for the next agent.
"""

from __future__ import annotations

from eventstore import events as ev
from master.allocator.config import AllocatorConfig, is_allocatable
from eventstore.resources import Resources
from master.state import State

def _share(alloc: dict[str, float], totals: dict[str, float], excluded: tuple[str, ...]) -> float:
    share = 0.0
    for name in sorted(totals):
        total = totals[name]
        if total > 0 and name not in excluded:
            share = max(share, alloc.get(name, 0.0) / total)
    return share


def allocate(state: State, now: float, config: AllocatorConfig, trigger: str,
             agent_ids: list[str] | None = None) -> ev.OffersMade | None:
    if state.cluster_id is None:
        return None
    totals: dict[str, float] = {}
    for agent in state.agents.values():
        for name, qty in agent.total().quantities().items():
            totals[name] = totals.get(name, 0.0) + qty

    # Clients: (framework, role) pairs that may receive offers now.
    clients: list[tuple[str, str]] = []
    for fw in sorted(state.frameworks.values(), key=lambda f: f.framework_id):
        if fw.active and fw.connected:
            clients.extend((fw.framework_id, role) for role in fw.info.roles if role not in fw.suppressed_roles)
    if not clients:
        return None

    alloc: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for fid in {c[0] for c in clients}:
        res = state.used_by_framework(fid) + state.offered_to_framework(fid)
        alloc[fid] = res.quantities()
        counts[fid] = state.frameworks[fid].allocations

    candidates = sorted(
        a.agent_id for a in state.agents.values()
        if a.connected and (agent_ids is None or a.agent_id in agent_ids)
    )
    offers: list[ev.OfferRecord] = []
    decisions: list[ev.AgentDecision] = []
    next_offer = state.next_offer
    active_filters = [f for f in state.filters if f.expires_at > now]

    for agent_id in candidates:
        available = state.available_on_agent(agent_id)
        if not is_allocatable(available, config):
            continue
        order = sorted(
            clients,
            key=lambda c: (_share(alloc[c[0]], totals, config.fair_sharing_excluded), counts[c[0]], c[0], c[1]),
        )
        decision = ev.AgentDecision(
            agent_id=agent_id,
            order=[ev.Candidate(fid, role, round(_share(alloc[fid], totals, config.fair_sharing_excluded), 9),
                                counts[fid]) for fid, role in order],
        )
        for fid, role in order:
            res = available.allocatable_to(role)
            if not is_allocatable(res, config):
                decision.skipped.append([fid, "below min_allocatable_resources"])
                continue
            if any(f.framework_id == fid and f.role == role and f.agent_id == agent_id
                   and Resources(f.resources).contains(res) for f in active_filters):
                decision.skipped.append([fid, "declined (filter active)"])
                continue
            offers.append(ev.OfferRecord(
                offer_id=f"{state.cluster_id}-O{next_offer}", framework_id=fid, agent_id=agent_id, role=role,
                resources=res.to_list(),
            ))
            next_offer += 1
            counts[fid] += 1
            q = alloc[fid]
            for name, qty in res.quantities().items():
                q[name] = q.get(name, 0.0) + qty
            available = available - res
            if not is_allocatable(available, config):
                break
        decisions.append(decision)

    if not offers:
        return None
    return ev.OffersMade(offers=offers, trigger=trigger, decisions=decisions)


def expired_offers(state: State, now: float, config: AllocatorConfig) -> list[str]:
    if config.offer_timeout is None:
        return []
    return [o.offer_id for o in state.offers.values() if o.made_at + config.offer_timeout <= now]
