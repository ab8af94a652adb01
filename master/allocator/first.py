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

from dataclasses import dataclass

from eventstore import events as ev
from eventstore.resources import Resources
from master.state import State

DEFAULT_REFUSE_SECONDS = 5.0
MAX_REFUSE_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class AllocatorConfig:
    allocation_interval: float = 1.0
    offer_timeout: float | None = None
    # An offer must hold at least one of these quantity sets (Mesos --min_allocatable_resources).
    min_allocatable: tuple[tuple[tuple[str, float], ...], ...] = ((("cpus", 0.01),), (("mem", 32.0),))
    fair_sharing_excluded: tuple[str, ...] = ()

    def to_record(self) -> dict[str, object]:
        return {
            "allocation_interval": self.allocation_interval,
            "offer_timeout": self.offer_timeout,
            "min_allocatable": [dict(s) for s in self.min_allocatable],
            "fair_sharing_excluded": list(self.fair_sharing_excluded),
        }

    @classmethod
    def from_record(cls, rec: dict) -> "AllocatorConfig":
        return cls(
            allocation_interval=float(rec.get("allocation_interval", 1.0)),
            offer_timeout=rec.get("offer_timeout"),
            min_allocatable=tuple(tuple(sorted(s.items())) for s in rec.get("min_allocatable", [{"cpus": 0.01}, {"mem": 32.0}])),
            fair_sharing_excluded=tuple(rec.get("fair_sharing_excluded", ())),
        )

    @staticmethod
    def parse_min_allocatable(text: str) -> tuple[tuple[tuple[str, float], ...], ...]:
        """`cpus:0.01|mem:32` -> ((("cpus", 0.01),), (("mem", 32.0),)); raises ValueError naming the bad part."""
        sets = []
        for alt in text.split("|"):
            q = []
            for part in filter(None, alt.split(";")):
                name, _, val = part.partition(":")
                try:
                    q.append((name.strip(), float(val)))
                except ValueError:
                    raise ValueError(f"--min-allocatable-resources: bad quantity {part!r}") from None
            sets.append(tuple(sorted(q)))
        return tuple(sets)


def effective_refuse_seconds(refuse: float | None, interval: float) -> float:
    """Mesos's filter rules: absent or negative = 5 s, capped at 365 days, 0 = no filter,
    and never shorter than one allocation interval."""
    if refuse is None or refuse < 0 or refuse != refuse:  # absent, negative or NaN: the default
        refuse = DEFAULT_REFUSE_SECONDS
    if refuse == 0:
        return 0.0
    return max(min(refuse, MAX_REFUSE_SECONDS), interval)


def is_allocatable(res: Resources, config: AllocatorConfig) -> bool:
    if not res:  # never an empty offer, whatever the (possibly empty) quantity sets say
        return False
    if not config.min_allocatable:
        return True
    q = res.quantities()
    return any(all(q.get(n, 0.0) >= v for n, v in alt) for alt in config.min_allocatable)


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
