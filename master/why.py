"""Why a framework got (or did not get) offers in one allocation run: a diagnosis for people.

Pure: a function of the folded state just before a run and the run itself (its offers and the
allocator's per-agent trace, `master.allocation.explanation`). `replay/why.py` walks the log and
calls it for recorded runs, and for a hypothetical run at the end of the window ("what the next run
would do"). The checks are the allocator's own, in its order (hierarchical.py `decide`): the
framework is registered, active, has an unsuppressed role; per candidate agent, free resources,
decline filters, the role's quota limit, the headroom kept for other roles' guarantees, the
framework's minimum offer size; what is left was taken by someone ranked before it.
"""

from __future__ import annotations

from typing import Sequence

import msgspec

from eventstore import events as ev
from eventstore.resources import Resources
from master.allocation import allocator_of
from master.allocator.hierarchical import Framework as AllocFramework, HierarchicalAllocator, q_sub_limits
from master.allocator.quantities import Q, q_add, q_sub, reserved_or_nonscalar, shrink, unreserved_scalars
from master.state import State

# The vocabulary of reasons, in the order the allocator checks them.
OFFERED = "offered"
NOT_REGISTERED = "not_registered"
REMOVED = "removed"
INACTIVE = "inactive"
SUPPRESSED = "suppressed"
NO_AGENTS = "no_agents"
NO_FREE_RESOURCES = "no_free_resources"
FILTERED = "filtered"
QUOTA_LIMIT = "quota_limit"
QUOTA_HEADROOM = "quota_headroom"
TOO_SMALL = "too_small"
OUTRANKED = "outranked"
REASONS = (OFFERED, NOT_REGISTERED, REMOVED, INACTIVE, SUPPRESSED, NO_AGENTS, NO_FREE_RESOURCES, FILTERED,
           QUOTA_LIMIT, QUOTA_HEADROOM, TOO_SMALL, OUTRANKED)

# What would change each reason (the diagnosis fills in the specifics).
REMEDIES = {
    NOT_REGISTERED: "the framework must SUBSCRIBE",
    REMOVED: "a torn-down framework gets nothing again: subscribe anew (a new framework id)",
    INACTIVE: "the scheduler must re-SUBSCRIBE with its framework id (before its failover timeout ends)",
    SUPPRESSED: "the scheduler sends REVIVE for the role (or subscribes without suppressed_roles)",
    NO_AGENTS: "start or reconnect agents",
    NO_FREE_RESOURCES: "resources come back when the holders' tasks end, their offers are declined or "
                       "rescinded (offer timeout), or agents are added",
    FILTERED: "the decline filters expire (at the time shown), or the scheduler sends REVIVE, which clears them; "
              "declining with a shorter refuse_seconds keeps filters short",
    QUOTA_LIMIT: "raise the role's quota limit (UPDATE_QUOTA), or end some of the role's tasks",
    QUOTA_HEADROOM: "the headroom goes to the roles with unsatisfied guarantees first: lower their guarantees, add "
                    "agents, or give this role a guarantee",
    TOO_SMALL: "ask for less in min_allocatable_resources (or the cluster default), or free a larger piece of "
               "one agent",
    OUTRANKED: "DRF offers to the lowest (weighted) share first: this framework is offered first once its share is "
               "the lowest; a higher weight for its role (UPDATE_WEIGHTS) or a quota guarantee changes the order",
}


class Holder(msgspec.Struct, omit_defaults=True):
    """Who holds an agent's resources (in tasks or outstanding offers): one framework in one role."""

    framework_id: str
    role: str
    resources: str
    offers: list[str] = msgspec.field(default_factory=list)  # its outstanding offers on the agent(s)


class Rival(msgspec.Struct, omit_defaults=True):
    """A framework the allocator served before this one on an agent, with the shares that ranked it first."""

    framework_id: str
    role: str
    share: float | None = None  # its DRF share in its role when the run looked at it
    role_share: float | None = None  # its role's (weighted) share
    agents: list[str] = msgspec.field(default_factory=list)


class Finding(msgspec.Struct, omit_defaults=True):
    """One reason, with the agents (or roles) it applies to and its particulars."""

    reason: str
    detail: str
    agents: list[str] = msgspec.field(default_factory=list)
    roles: list[str] = msgspec.field(default_factory=list)
    until: float | None = None  # filters: when the last one expires
    holders: list[Holder] = msgspec.field(default_factory=list)
    rivals: list[Rival] = msgspec.field(default_factory=list)
    share: float | None = None  # this framework's DRF share in its role (outranked)
    role_share: float | None = None
    offers: list[str] = msgspec.field(default_factory=list)  # offered: the offer ids
    free: dict[str, float] = msgspec.field(default_factory=dict)  # what the agents concerned had free, summed


class RunDiagnosis(msgspec.Struct, omit_defaults=True):
    """What one allocation run did for one framework, and why."""

    framework_id: str
    index: int  # the run's log index (a hypothetical run: the index it would follow)
    time: float
    trigger: str
    hypothetical: bool
    findings: list[Finding]

    def reasons(self) -> list[str]:
        return [f.reason for f in self.findings]

    @property
    def offered(self) -> bool:
        return any(f.reason == OFFERED for f in self.findings)


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") or "0"


def fmt_q(q: Q) -> str:
    return ";".join(f"{k}:{_fmt(v)}" for k, v in sorted(q.items())) or "nothing"


def _fmt_share(s: float | None) -> str:
    return "-" if s is None else f"{s:.3f}"


def _share(a: HierarchicalAllocator, fid: str, role: str) -> tuple[float | None, float | None]:
    s = a.fw_sorters.get(role)
    fw_share = round(s.client_share(fid), 9) if s is not None and fid in s.clients else None
    role_share = round(a.role_sorter.client_share(role), 9) if role in a.role_sorter.clients else None
    return fw_share, role_share


def _holders(state: State, a: HierarchicalAllocator, agent_ids: Sequence[str], limit: int = 5) -> list[Holder]:
    """The largest holders (by cpus, then mem) of these agents' allocated resources."""
    total: dict[tuple[str, str], Resources] = {}
    for aid in agent_ids:
        for key, res in sorted(a.agents[aid].allocated.items()):
            total[key] = total[key] + res if key in total else res
    offers: dict[tuple[str, str], list[str]] = {}
    wanted = set(agent_ids)
    for o in state.offers.values():
        if o.agent_id in wanted:
            offers.setdefault((o.framework_id, o.role), []).append(o.offer_id)

    def size(item: tuple[tuple[str, str], Resources]) -> tuple[float, float, str, str]:
        q = item[1].quantities()
        return (-q.get("cpus", 0.0), -q.get("mem", 0.0), item[0][0], item[0][1])

    return [Holder(fid, role, res.format(), sorted(offers.get((fid, role), [])))
            for (fid, role), res in sorted(total.items(), key=size)[:limit]]


def _required(a: HierarchicalAllocator) -> Q:
    """What the roles with unsatisfied quota guarantees still need (the allocator's `required`)."""
    required: Q = {}
    for role in sorted(a.quotas):
        consumed = q_add(a.reserved_by_top.get(role, {}), a.unreserved_alloc_by_top.get(role, {}))
        required = q_add(required, q_sub(a.quotas[role].guarantees, consumed))
    return required


def _headroom(a: HierarchicalAllocator) -> Q:
    return q_sub(q_sub(a.totals, a.alloc_total), q_sub(a.reserved_total, a.reserved_alloc_total))


def _at_limit(a: HierarchicalAllocator, role: str, free: Q) -> Q:
    """The limited names of the role's quota with nothing left under the limit, among those on offer. The quota is
    looked up by the role's own name, as `decide` does (a sub-role is not held to its top-level role's limit
    there)."""
    quota = a.quotas.get(role)
    if quota is None or not quota.limits:
        return {}
    consumed = q_add(a.reserved_by_top.get(role, {}), a.unreserved_alloc_by_top.get(role, {}))
    return {k: v for k, v in quota.limits.items() if k in free and consumed.get(k, 0.0) >= v}


def _filter_until(a: HierarchicalAllocator, fid: str, role: str, aid: str, res: Resources, now: float) -> float:
    return max(f.expires_at for f in a.filters.get((fid, role, aid), ())
               if f.expires_at > now and f.resources.contains(res))


def _min_text(fw: AllocFramework, a: HierarchicalAllocator, role: str) -> str:
    alts = fw.min_allocatable.get(role)
    if alts is None:
        alts = a._default_min
    return " or ".join(fmt_q(alt) for alt in alts) if alts else "anything"


def diagnose(state: State, framework_id: str, offers: Sequence[ev.OfferRecord],
             decisions: Sequence[ev.AgentDecision], candidates: Sequence[str] | None, *, index: int, time: float,
             trigger: str, hypothetical: bool = False, role: str | None = None) -> RunDiagnosis:
    """Why the run (its `offers`, the allocator's `decisions` trace, over `candidates` or every agent) gave the
    framework what it gave. `state` is the state just before the run; `role` narrows to one of its roles."""

    def done(*findings: Finding) -> RunDiagnosis:
        return RunDiagnosis(framework_id, index, time, trigger, hypothetical, list(findings))

    fw = state.frameworks.get(framework_id)
    if fw is None:
        removed_at = state.removed_frameworks.get(framework_id)
        if removed_at is not None:
            return done(Finding(REMOVED, "the framework had been torn down"))
        return done(Finding(NOT_REGISTERED, "the framework was not registered"))
    roles = [r for r in fw.info.roles if role is None or r == role]
    mine = [o for o in offers if o.framework_id == framework_id and o.role in roles]
    if mine:
        by_agent = sorted({o.agent_id for o in mine})
        return done(Finding(OFFERED, f"{len(mine)} offer(s) on {len(by_agent)} agent(s)", agents=by_agent,
                            roles=sorted({o.role for o in mine}), offers=[o.offer_id for o in mine]))
    if not fw.active:
        return done(Finding(INACTIVE, "the framework was disconnected (inactive): the allocator skips it"))
    live_roles = [r for r in roles if r not in fw.suppressed_roles]
    if not live_roles:
        return done(Finding(SUPPRESSED, f"the framework had suppressed offers for {', '.join(roles) or 'its roles'}",
                            roles=roles))
    a = allocator_of(state)
    afw = a.frameworks.get(framework_id)
    pool = sorted(a.agents) if candidates is None else sorted(c for c in candidates if c in a.agents)
    active = [aid for aid in pool if a.agents[aid].active]
    if afw is None or not active:
        what = "no connected agent" if candidates is None else "none of the agents this run considered was connected"
        return done(Finding(NO_AGENTS, what))

    taken: dict[str, list[ev.OfferRecord]] = {}
    for o in offers:
        taken.setdefault(o.agent_id, []).append(o)
    seen: dict[tuple[str, str], ev.Candidate] = {}  # (framework, role) -> how the run last saw it
    for d in decisions:
        for c in d.order:
            seen[(c.framework_id, c.role)] = c

    # Per reason: the agents and roles it applies to, and particulars.
    agents_by: dict[str, set[str]] = {}
    roles_by: dict[str, set[str]] = {}
    until = 0.0
    at_limit: dict[str, Q] = {}
    wants: dict[str, str] = {}
    largest_free: dict[str, tuple[float, str, str]] = {}  # role -> (cpus, agent, resources) of the largest
    rivals: dict[tuple[str, str], set[str]] = {}
    required = _required(a)
    spare = q_sub(_headroom(a), required) if required else None

    free_by: dict[str, Q] = {}  # per reason: what those agents had free (the framework's needs are its own)

    def note(reason: str, aid: str, r: str, free: Resources | None = None) -> None:
        agents_by.setdefault(reason, set()).add(aid)
        roles_by.setdefault(reason, set()).add(r)
        if free is not None and aid not in seen_free.setdefault(reason, set()):
            seen_free[reason].add(aid)
            free_by[reason] = q_add(free_by.get(reason, {}), free.quantities())

    seen_free: dict[str, set[str]] = {}

    consumed_by: dict[str, Q] = {r: q_add(a.reserved_by_top.get(r, {}), a.unreserved_alloc_by_top.get(r, {}))
                                 for r in a.quotas}
    for aid in active:
        agent = a.agents[aid]
        for r in live_roles:
            # What stage 2 of `decide` would put in an offer to (framework, r) on this agent, step by step.
            free = agent.available.allocatable_to(r)
            if not free:
                note(NO_FREE_RESOURCES, aid, r)
                continue
            if not a._allocatable(free, r, afw):
                note(TOO_SMALL, aid, r, free)
                wants[r] = _min_text(afw, a, r)
                cpus = free.quantities().get("cpus", 0.0)
                if r not in largest_free or cpus > largest_free[r][0]:
                    largest_free[r] = (cpus, aid, free.format())
                continue
            if agent.has_shared and not afw.shared_ok:
                free = free.non_shared()
            quota = a.quotas.get(r)
            limits = quota.limits if quota is not None else {}
            to_offer, cut_by = free, None
            if agent.has_reservations or limits or required:
                extra = unreserved_scalars(free)
                if limits:
                    limited = shrink(extra, q_sub_limits(limits, consumed_by.get(r, {})), limits=True)
                    if limited != extra:
                        cut_by, extra = QUOTA_LIMIT, limited
                if required and extra:
                    held = shrink(extra, spare or {}, limits=False)
                    if held != extra:
                        cut_by, extra = cut_by or QUOTA_HEADROOM, held
                to_offer = reserved_or_nonscalar(free) + extra
            if cut_by is not None and not a._allocatable(to_offer, r, afw):
                note(cut_by, aid, r)
                if cut_by == QUOTA_LIMIT:
                    at_limit[r] = _at_limit(a, r, unreserved_scalars(free).quantities()) or dict(limits)
                continue
            if a._filtered(framework_id, r, aid, to_offer, time):
                note(FILTERED, aid, r, free)
                until = max(until, _filter_until(a, framework_id, r, aid, to_offer, time))
                continue
            note(OUTRANKED, aid, r, free)
            for o in taken.get(aid, []):
                if o.framework_id != framework_id:
                    rivals.setdefault((o.framework_id, o.role), set()).add(aid)

    findings: list[Finding] = []

    def agents_of(reason: str) -> list[str]:
        return sorted(agents_by.get(reason, ()))

    def roles_of(reason: str) -> list[str]:
        return sorted(roles_by.get(reason, ()))

    def free_text(reason: str) -> str:
        """What the agents had free, and the cluster's resources none of them had any of (often the answer)."""
        free = free_by.get(reason, {})
        none = sorted(k for k, v in a.totals.items() if v > 0 and k not in free and k != "ports")
        return fmt_q(free) + (f"; none of {', '.join(none)}" if none else "")

    n = len(active)
    if NO_FREE_RESOURCES in agents_by:
        ids = agents_of(NO_FREE_RESOURCES)
        holders = _holders(state, a, ids)
        own = [h for h in holders if h.framework_id == framework_id and h.offers]
        text = f"{len(ids)} of {n} agent(s) had nothing free for it"
        if holders:
            text += "; held by " + ", ".join(f"{h.framework_id} ({h.role}: {h.resources}"
                                             f"{', in offers' if h.offers else ''})" for h in holders[:3])
        if own:
            text += "; this framework holds unanswered offers there itself"
        findings.append(Finding(NO_FREE_RESOURCES, text, agents=ids, roles=roles_of(NO_FREE_RESOURCES),
                                holders=holders))
    if FILTERED in agents_by:
        ids = agents_of(FILTERED)
        text = f"its decline filters covered what {len(ids)} agent(s) had free ({free_text(FILTERED)})"
        # When the agents had none of a resource the cluster has (often what the framework waits for), a REVIVE
        # only brings back offers without it: name who holds it, as no_free_resources does.
        missing = [k for k, v in a.totals.items() if v > 0 and k not in free_by.get(FILTERED, {}) and k != "ports"]
        holders = _holders(state, a, ids) if missing else []
        if holders:
            text += f"; the {', '.join(sorted(missing))} are held by " + ", ".join(
                f"{h.framework_id} ({h.role}: {h.resources}{', in offers' if h.offers else ''})" for h in holders[:3])
        findings.append(Finding(FILTERED, text, agents=ids, roles=roles_of(FILTERED), until=until,
                                holders=holders, free=free_by.get(FILTERED, {})))
    if QUOTA_LIMIT in agents_by:
        text = "; ".join(f"role {r} at its quota limit for {fmt_q(q)}" for r, q in sorted(at_limit.items()))
        findings.append(Finding(QUOTA_LIMIT, text, agents=agents_of(QUOTA_LIMIT), roles=roles_of(QUOTA_LIMIT)))
    if QUOTA_HEADROOM in agents_by:
        text = f"the free resources were held back for roles with unsatisfied quota guarantees (they need " \
               f"{fmt_q(required)})"
        findings.append(Finding(QUOTA_HEADROOM, text, agents=agents_of(QUOTA_HEADROOM),
                                roles=roles_of(QUOTA_HEADROOM)))
    if TOO_SMALL in agents_by:
        parts = []
        for r in roles_of(TOO_SMALL):
            _, aid, res = largest_free[r]
            parts.append(f"role {r} asks for at least {wants[r]}; the most any agent had free was {res} ({aid})")
        findings.append(Finding(TOO_SMALL, "; ".join(parts), agents=agents_of(TOO_SMALL), roles=roles_of(TOO_SMALL),
                                free=free_by.get(TOO_SMALL, {})))
    if OUTRANKED in agents_by:
        ids = agents_of(OUTRANKED)
        r0 = roles_of(OUTRANKED)[0]
        share, role_share = _share(a, framework_id, r0)  # before the run (the trace has it after others' offers)
        rv = []
        for (fid, r), where in sorted(rivals.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            them = seen.get((fid, r))
            s, rs = (them.share, them.role_share) if them is not None else _share(a, fid, r)
            rv.append(Rival(fid, r, s, rs, sorted(where)))
        text = f"on {len(ids)} agent(s) with free resources ({free_text(OUTRANKED)}), others were served first"
        if rv:
            text += ": " + ", ".join(f"{x.framework_id} ({x.role}, share {_fmt_share(x.share)}, role share "
                                     f"{_fmt_share(x.role_share)})" for x in rv[:3])
        text += f"; this framework's share before the run: {_fmt_share(share)} in role {r0} (role share " \
                f"{_fmt_share(role_share)})"
        if not rv:
            text += "; the run ended before its turn"
        findings.append(Finding(OUTRANKED, text, agents=ids, roles=roles_of(OUTRANKED), rivals=rv, share=share,
                                role_share=role_share, free=free_by.get(OUTRANKED, {})))
    return done(*findings)


def remedy(finding: Finding, until: str | None = None) -> str:
    """What would change one finding, in a sentence (`until`: the filters' expiry, formatted by the caller)."""
    text = REMEDIES.get(finding.reason, "")
    if finding.reason == FILTERED and until is not None:
        text = f"the decline filters expire at {until}; a REVIVE clears them now"
        if finding.holders:
            text += " (but the offers would still lack what the holders hold: " + REMEDIES[NO_FREE_RESOURCES] + ")"
    elif finding.reason == OUTRANKED and finding.rivals:
        r = finding.rivals[0]
        if finding.share is not None and r.share is not None and r.role in finding.roles:
            text = (f"in role {r.role}, {r.framework_id} (share {_fmt_share(r.share)}) ranks before this framework "
                    f"(share {_fmt_share(finding.share)}) while its share is the lower; " + text)
    return text
