"""Deciders for the leader's clock and for broken links: timeouts are deadlines over the folded state.

    decide_timers(state, now, config, agent_seen) -> Decision
        offers past --offer-timeout are rescinded; frameworks disconnected longer than their failover timeout
        (at least the re-registration grace when the leader changed under them) are removed; agents silent for
        too long are marked unreachable (their offers rescinded first). reply: a `TimersReply`.
    decide_disconnect(state, framework_id=..., agent_id=...) -> Decision
        a framework's stream or an agent's link broke: its offers are rescinded, it is recorded disconnected.

`agent_seen` is the leader's memory (not history) of when it last heard from each agent, an explicit input.
The allocation run that follows the timers (master.allocation.decide_offers) is a decider of its own.
Pure: iteration is over the state's dicts, which the fold fills in log order (the same on every replica).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from eventstore import events as ev
from master.allocation import expired_offers
from master.decide import DecideConfig, Decision
from master.decide.gate import event_problem
from master.state import Agent, Framework, State

RESCIND_CHUNK = 10_000  # offer ids per OFFERS_RESCINDED (an event's lists are bounded)
MAX_TIMER_EVENTS = 10_000  # events one tick commits; what is left over is due again at the next tick


@dataclass(frozen=True)
class TimersReply:
    unreachable: list[str] = field(default_factory=list)  # agents marked unreachable by these events
    removed: list[str] = field(default_factory=list)  # frameworks removed (failover timeout)
    # Events a rule called for but the commit gate would refuse (state from an older build): left out, with why.
    skipped: list[str] = field(default_factory=list)


def rescind_events(offer_ids: list[str], reason: str) -> list[ev.Event]:
    return [ev.OffersRescinded(offer_ids=offer_ids[i:i + RESCIND_CHUNK], reason=reason)
            for i in range(0, len(offer_ids), RESCIND_CHUNK)]


def agent_deadline(state: State, agent_id: str, config: DecideConfig, agent_seen: Mapping[str, float]) -> float:
    """When an agent counts as unreachable: silent (no call, or a broken link) for agent_unreachable_after
    since it was last heard from or this leader was elected, whichever is later; one not heard from at all
    since the election gets agent_reregister_timeout (if longer), as every agent reconnects after a failover."""
    elected = state.elected_at or 0.0
    seen = agent_seen.get(agent_id)
    if seen is None:
        return elected + max(config.agent_unreachable_after, config.agent_reregister_timeout)
    return max(seen, elected) + config.agent_unreachable_after


def unreachable_agents(state: State, now: float, config: DecideConfig, agent_seen: Mapping[str, float]) -> list[str]:
    """The registered (reachable) agents past their deadline at `now`, in log order."""
    return [aid for aid in state.agents if now >= agent_deadline(state, aid, config, agent_seen)]


def decide_timers(state: State, now: float, config: DecideConfig, agent_seen: Mapping[str, float]) -> Decision:
    events: list[ev.Event] = []
    reply = TimersReply()

    def add(candidates: list[ev.Event]) -> bool:
        """Add these events together, unless one would be refused at the commit gate."""
        for e in candidates:
            if (why := event_problem(e)) is not None:
                reply.skipped.append(why)
                return False
        events.extend(candidates)
        return True

    expired = expired_offers(state, now)
    add(rescind_events(expired, "offer_timeout"))
    for fw in state.frameworks.values():
        if len(events) >= MAX_TIMER_EVENTS:
            break
        if fw.connected or fw.disconnected_at is None:
            continue
        timeout = fw.info.failover_timeout
        if fw.disconnected_by_failover:
            timeout = max(timeout, config.framework_failover_grace)
        if now >= fw.disconnected_at + timeout and add([ev.FrameworkRemoved(framework_id=fw.framework_id,
                                                                            reason="failover_timeout")]):
            reply.removed.append(fw.framework_id)
    lost = unreachable_agents(state, now, config, agent_seen)
    if lost:
        gone = set(expired)
        offers_of: dict[str, list[str]] = {aid: [] for aid in lost}
        for o in state.offers.values():
            if o.agent_id in offers_of and o.offer_id not in gone:
                offers_of[o.agent_id].append(o.offer_id)
        for aid in lost:
            if len(events) >= MAX_TIMER_EVENTS:
                break
            if add(rescind_events(offers_of[aid], "agent_unreachable")
                   + [ev.AgentUnreachable(agent_id=aid, unreachable_time=now)]):
                reply.unreachable.append(aid)
    return Decision(events=events, reply=reply)


def decide_disconnect(state: State, *, framework_id: str | None = None, agent_id: str | None = None) -> Decision:
    """A framework's stream or an agent's link broke (exactly one of the two ids). Nothing if it is unknown or
    already disconnected; else what was offered through it is rescinded, and it is recorded disconnected."""
    assert (framework_id is None) != (agent_id is None), "one peer at a time"
    event: ev.Event
    peer: Framework | Agent | None
    if framework_id is not None:
        peer = state.frameworks.get(framework_id)
        offer_ids = [o.offer_id for o in state.offers.values() if o.framework_id == framework_id]
        reason, event = "framework_disconnected", ev.FrameworkDisconnected(framework_id=framework_id)
    else:
        assert agent_id is not None
        peer = state.agents.get(agent_id)
        offer_ids = [o.offer_id for o in state.offers.values() if o.agent_id == agent_id]
        reason, event = "agent_disconnected", ev.AgentDisconnected(agent_id=agent_id)
    if peer is None or not peer.connected:
        return Decision()
    return Decision(events=rescind_events(offer_ids, reason) + [event])
