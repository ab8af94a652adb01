"""The hierarchical allocator: Mesos's two-stage allocation over incremental bookkeeping.

State changes come through the mutators (`add_agent`, `allocate`, `recover`, ...),
called by the master's fold and by the simulator alike. `decide()` computes one
allocation run (allocator-semantics.md 2.2) and returns the offers *without*
changing anything: its tentative allocations are undone before it returns; the
caller records the offers as an event, and folding that event applies them
through `allocate()`. Same state, same time, same seed: same offers.

Agents are visited in an order shuffled by a seeded PRNG (Mesos shuffles at
random); the seed is part of the recorded decision, so replay re-derives it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence

import msgspec

from eventstore.resources import UNRESERVED, Resource, Resources, key_of, round3
from master.allocator.config import AllocatorConfig
from master.allocator.quantities import Q, q_add, q_iadd, q_sub, reserved_or_nonscalar, shrink, unreserved_scalars
from master.allocator.shuffle import SeededShuffle
from master.allocator.sorter import DRFSorter, make_sorter


def top_level(role: str) -> str:
    return role.split("/", 1)[0]


def ancestors(role: str) -> list[str]:
    parts = role.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


@dataclass
class Filter:
    resources: Resources
    expires_at: float


FilterKey = tuple[str, str, str]  # (framework, role, agent)


@dataclass
class Agent:
    agent_id: str
    total: Resources
    available: Resources
    allocated: dict[tuple[str, str], Resources] = field(default_factory=dict)  # (framework, role) -> resources
    active: bool = True
    has_reservations: bool = False
    has_volumes: bool = False  # `total` holds persistent volumes
    # `total` holds shared volumes: they stay in `available` whatever is allocated (Mesos hierarchical.hpp
    # `updateAvailable`: available = (total.nonShared() - allocated.nonShared()) + total.shared()); an allocation
    # holds one copy of one per holder (offer or task).
    has_shared: bool = False
    # More is allocated than the agent has (it re-registered with fewer resources while tasks held them):
    # `available` is then recomputed as total - allocated instead of kept by subtracting and adding, which
    # clips at zero and would not come back to the same value (nor to what a snapshot restores).
    overcommitted: bool = False

    def exact_available(self) -> Resources:
        used = Resources()
        for r in self.allocated.values():
            used = used + r
        if not (self.has_shared or used.has_shared()):
            self.overcommitted = not self.total.contains(used)
            return self.total - used
        total, used = self.total.non_shared(), used.non_shared()
        self.overcommitted = not total.contains(used)
        return total - used + self.total.shared()

    def set_flags(self) -> None:
        total = self.total
        self.has_reservations = any(r.role != UNRESERVED for r in total)
        self.has_volumes = self.has_reservations and total.has_volumes()
        self.has_shared = self.has_volumes and total.has_shared()


@dataclass
class Framework:
    framework_id: str
    roles: list[str]
    suppressed: set[str] = field(default_factory=set)
    active: bool = True
    priority: float = 0.0
    # role -> alternative quantity sets (FrameworkInfo.offer_filters.min_allocatable_resources); [] = anything
    min_allocatable: dict[str, list[Q]] = field(default_factory=dict)
    shared_ok: bool = False  # SHARED_RESOURCES capability: without it, shared volumes are never offered


@dataclass
class Quota:
    guarantees: Q = field(default_factory=dict)
    limits: Q = field(default_factory=dict)  # absent name = unlimited


@dataclass
class OfferDecision:
    framework_id: str
    role: str
    agent_id: str
    resources: Resources


@dataclass
class AgentTrace:
    """Why the offers on one agent went where they went: the order and shares seen, and the skips."""
    agent_id: str
    stage: Literal[1, 2]
    order: list[tuple[str, str, float, int, float]] = field(default_factory=list)  # see _explain
    skipped: list[tuple[str, str]] = field(default_factory=list)  # framework, reason


@dataclass
class Decision:
    offers: list[OfferDecision]
    traces: list[AgentTrace]
    seed: int


class HierarchicalAllocator:
    def __init__(self, config: AllocatorConfig | None = None):
        self.config = config or AllocatorConfig()
        self.agents: dict[str, Agent] = {}
        self.frameworks: dict[str, Framework] = {}
        self.weights: dict[str, float] = {}
        self.quotas: dict[str, Quota] = {}
        excluded = tuple(self.config.fair_sharing_excluded)
        self.role_sorter: DRFSorter = make_sorter(self.config.role_sorter, {}, excluded)
        self.fw_sorters: dict[str, DRFSorter] = {}
        self.role_frameworks: dict[str, set[str]] = {}  # role -> frameworks tracked under it
        # Decline filters by (framework, role, agent): a decision looks up the one key it is about. Each filter is
        # also in a heap by expiry, so expiring costs what expires; entries of filters dropped otherwise (revive,
        # removals) stay in the heap until their time and are skipped then (the heap is rebuilt when mostly such).
        self.filters: dict[FilterKey, list[Filter]] = {}
        self._expiries: list[tuple[float, int, FilterKey, Filter]] = []  # (expires_at, seq, key, filter)
        self._filter_seq = 0
        self._live_filters = 0
        self.totals: Q = {}
        # Quota bookkeeping, kept per top-level role (only top-level roles may have quota, as in Mesos).
        self.reserved_by_top: dict[str, Q] = {}  # reservations of the role and its subroles, allocated or not
        self.reserved_total: Q = {}
        self.unreserved_alloc_by_top: dict[str, Q] = {}  # offered or allocated unreserved scalars
        self.reserved_alloc_total: Q = {}
        self.alloc_total: Q = {}
        self._default_min: list[Q] = [dict(a) for a in self.config.min_allocatable]

    # ---- snapshots ------------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this allocator is (for state snapshots)."""
        def res(r: Resources) -> list[Any]:
            out: list[Any] = msgspec.to_builtins(r.to_list())
            return out
        return {
            "config": self.config.to_record(),
            "agents": [[a.agent_id, res(a.total), a.active,
                        [[fid, role, res(r)] for (fid, role), r in a.allocated.items()]]
                       for a in self.agents.values()],
            "frameworks": [[f.framework_id, f.roles, sorted(f.suppressed), f.active, f.priority, f.min_allocatable,
                            f.shared_ok]
                           for f in self.frameworks.values()],
            "weights": dict(self.weights),
            "quotas": {r: [q.guarantees, q.limits] for r, q in self.quotas.items()},
            "filters": [[k[0], k[1], k[2], [[res(f.resources), f.expires_at] for f in v]]
                        for k, v in self.filters.items()],
            "role_sorter": self.role_sorter.to_record(),
            "fw_sorters": {role: s.to_record() for role, s in self.fw_sorters.items()},
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "HierarchicalAllocator":
        def res(items: list[Any]) -> Resources:
            return Resources(msgspec.convert(items, list[Resource]))
        a = cls(AllocatorConfig.from_record(rec["config"]))
        a.update_weights(rec["weights"])
        for role, (g, lim) in rec["quotas"].items():
            a.set_quota(role, g, lim)
        for aid, total, active, _ in rec["agents"]:
            a.add_agent(aid, res(total))
            a.activate_agent(aid, active)
        for fid, roles, suppressed, active, priority, min_alloc, *rest in rec["frameworks"]:
            # shared_ok was added with shared volumes: a record written before has none (see decode_snapshot)
            a.add_framework(fid, roles, suppressed, active, min_alloc, priority, shared_ok=bool(rest and rest[0]))
        for aid, _, _, allocated in rec["agents"]:
            for fid, role, r in allocated:
                a.allocate(fid, role, aid, res(r))
        for fid, role, aid, flts in rec["filters"]:
            for r, exp in flts:
                a.add_filter(fid, role, aid, Filter(res(r), exp))
        # The bookkeeping above is exact except the sorters' allocation counts: take the recorded trees.
        a.role_sorter.load_record(rec["role_sorter"])
        for role, nodes in rec["fw_sorters"].items():
            a.fw_sorters[role].load_record(nodes)
        return a

    # ---- agents ---------------------------------------------------------------------------------------
    def add_agent(self, agent_id: str, total: Resources, used: Iterable[tuple[str, str, Resources]] = ()) -> None:
        if agent_id in self.agents:
            raise ValueError(f"agent {agent_id} is already known")
        agent = Agent(agent_id, total, total)
        agent.set_flags()
        self.agents[agent_id] = agent
        q_iadd(self.totals, total.quantities())
        self._set_totals()
        for r in total:
            if r.role != UNRESERVED and r.type == "SCALAR":
                q_iadd(self.reserved_by_top.setdefault(top_level(r.role), {}), {r.name: r.scalar})
                q_iadd(self.reserved_total, {r.name: r.scalar})
        for fid, role, res in used:
            self.allocate(fid, role, agent_id, res)

    def remove_agent(self, agent_id: str) -> None:
        agent = self.agents.pop(agent_id)
        for (fid, role), res in list(agent.allocated.items()):
            if res.has_shared():
                before = _holders(agent, fid, role, res)
                agent.allocated.pop((fid, role))
                self._untrack(fid, role, res, _counted(agent, fid, role, res, before))
            else:
                agent.allocated.pop((fid, role))
                self._untrack(fid, role, res)
        q_iadd(self.totals, agent.total.quantities(), -1.0)
        self._set_totals()
        for r in agent.total:
            if r.role != UNRESERVED and r.type == "SCALAR":
                q_iadd(self.reserved_by_top.setdefault(top_level(r.role), {}), {r.name: r.scalar}, -1.0)
                q_iadd(self.reserved_total, {r.name: r.scalar}, -1.0)
        self._drop_filters(lambda k: k[2] == agent_id)

    def convert(self, agent_id: str, framework_id: str, role: str, consumed: Resources,
                converted: Resources) -> None:
        """An offer operation (RESERVE, UNRESERVE) turned `consumed`, held by (framework, role) on the
        agent, into `converted`: the same quantities by name, so shares do not move; only what is
        reserved for whom changes."""
        agent = self.agents[agent_id]
        key = (framework_id, role)
        agent.total = agent.total - consumed + converted
        agent.allocated[key] = agent.allocated[key] - consumed + converted
        if consumed.has_shared() or converted.has_shared():
            # A shared volume is available while allocated: CREATE makes it so, DESTROY ends it. The holder has
            # the one copy there is (DESTROY is refused while tasks use it, and the other offers holding it are
            # rescinded first), so the sorters' counts (one per holder, see `_counted`) do not move either.
            agent.available = agent.available - consumed.shared() + converted.shared()
        for res, sign in ((consumed, -1.0), (converted, 1.0)):
            for r in res:
                if r.type != "SCALAR":
                    continue
                q = {r.name: r.scalar}
                if r.role == UNRESERVED:
                    q_iadd(self.unreserved_alloc_by_top.setdefault(top_level(role), {}), q, sign)
                else:
                    q_iadd(self.reserved_by_top.setdefault(top_level(r.role), {}), q, sign)
                    q_iadd(self.reserved_total, q, sign)
                    q_iadd(self.reserved_alloc_total, q, sign)
        agent.set_flags()

    def convert_unallocated(self, agent_id: str, consumed: Resources, converted: Resources) -> None:
        """An operator's operation turned unallocated `consumed` on the agent into `converted` (same quantities):
        only the agent's total, what is free, and the reservation totals change."""
        agent = self.agents[agent_id]
        agent.total = agent.total - consumed + converted
        agent.available = agent.available - consumed + converted
        for res, sign in ((consumed, -1.0), (converted, 1.0)):
            for r in res:
                if r.type == "SCALAR" and r.role != UNRESERVED:
                    q = {r.name: r.scalar}
                    q_iadd(self.reserved_by_top.setdefault(top_level(r.role), {}), q, sign)
                    q_iadd(self.reserved_total, q, sign)
        agent.set_flags()

    def activate_agent(self, agent_id: str, active: bool = True) -> None:
        self.agents[agent_id].active = active

    def _set_totals(self) -> None:
        self.role_sorter.set_totals(self.totals)
        for s in self.fw_sorters.values():
            s.set_totals(self.totals)

    # ---- frameworks -----------------------------------------------------------------------------------
    def add_framework(self, framework_id: str, roles: list[str], suppressed: Iterable[str] = (), active: bool = True,
                      min_allocatable: dict[str, list[Q]] | None = None, priority: float = 0.0,
                      shared_ok: bool = False) -> None:
        if framework_id in self.frameworks:
            raise ValueError(f"framework {framework_id} is already known")
        fw = Framework(framework_id, list(roles), set(suppressed), active, priority, dict(min_allocatable or {}),
                       shared_ok)
        self.frameworks[framework_id] = fw
        for role in fw.roles:
            self._track(framework_id, role)
        self._refresh_activity(fw)

    def update_framework(self, framework_id: str, roles: list[str], suppressed: Iterable[str] = (),
                         min_allocatable: dict[str, list[Q]] | None = None, shared_ok: bool | None = None) -> None:
        fw = self.frameworks[framework_id]
        old = set(fw.roles)
        fw.roles, fw.suppressed = list(roles), set(suppressed)
        fw.min_allocatable = dict(min_allocatable or {})
        if shared_ok is not None:
            fw.shared_ok = shared_ok
        for role in fw.roles:
            if role not in old:
                self._track(framework_id, role)
        for role in sorted(old - set(fw.roles)):
            self._maybe_untrack(framework_id, role)
        self._refresh_activity(fw)

    def remove_framework(self, framework_id: str) -> None:
        fw = self.frameworks.pop(framework_id)
        for agent in self.agents.values():
            for (fid, role), res in list(agent.allocated.items()):
                if fid == framework_id:
                    self._recover_tracked(agent, fid, role, res)
        for role in list(self.role_frameworks):
            if framework_id in self.role_frameworks[role]:
                self._untrack_framework(framework_id, role)
        self._drop_filters(lambda k: k[0] == framework_id)
        del fw

    def activate_framework(self, framework_id: str) -> None:
        fw = self.frameworks[framework_id]
        fw.active = True
        self._refresh_activity(fw)

    def deactivate_framework(self, framework_id: str) -> None:
        fw = self.frameworks[framework_id]
        fw.active = False
        self._refresh_activity(fw)
        self._drop_filters(lambda k: k[0] == framework_id)

    def suppress(self, framework_id: str, roles: Sequence[str] = ()) -> None:
        fw = self.frameworks[framework_id]
        fw.suppressed |= set(roles or fw.roles)
        self._refresh_activity(fw)

    def revive(self, framework_id: str, roles: Sequence[str] = ()) -> None:
        fw = self.frameworks[framework_id]
        revived = set(roles or fw.roles)
        fw.suppressed -= revived
        self._drop_filters(lambda k: k[0] == framework_id and k[1] in revived)
        self._refresh_activity(fw)

    def _refresh_activity(self, fw: Framework) -> None:
        for role in sorted(self.role_frameworks):
            sorter = self.fw_sorters.get(role)
            if sorter is None or fw.framework_id not in sorter:
                continue
            if fw.active and role in fw.roles and role not in fw.suppressed:
                sorter.activate(fw.framework_id)
            else:
                sorter.deactivate(fw.framework_id)

    def _track(self, framework_id: str, role: str) -> None:
        """Track a framework under a role (subscribed to it, or holding resources in it)."""
        fws = self.role_frameworks.setdefault(role, set())
        if not fws:
            self.role_sorter.add(role)
            sorter = make_sorter(self.config.framework_sorter, {}, tuple(self.config.fair_sharing_excluded),
                                 for_frameworks=True)
            sorter.set_totals(self.totals)
            self.fw_sorters[role] = sorter
        if framework_id not in fws:
            fws.add(framework_id)
            sorter = self.fw_sorters[role]
            sorter.add(framework_id, active=False)
            fw = self.frameworks.get(framework_id)
            if fw is not None and fw.priority and hasattr(sorter, "set_priority"):
                sorter.set_priority(framework_id, fw.priority)

    def _maybe_untrack(self, framework_id: str, role: str) -> None:
        sorter = self.fw_sorters.get(role)
        if sorter is None or framework_id not in sorter:
            return
        fw = self.frameworks.get(framework_id)
        if (fw is not None and role in fw.roles) or sorter.allocation(framework_id):
            return
        self._untrack_framework(framework_id, role)

    def _untrack_framework(self, framework_id: str, role: str) -> None:
        fws = self.role_frameworks[role]
        fws.discard(framework_id)
        self.fw_sorters[role].remove(framework_id)
        if not fws:
            del self.role_frameworks[role]
            del self.fw_sorters[role]
            self.role_sorter.remove(role)

    # ---- weights and quota ----------------------------------------------------------------------------
    def update_weights(self, weights: dict[str, float]) -> None:
        self.weights.update(weights)
        self.role_sorter.set_weights(self.weights)

    def set_quota(self, role: str, guarantees: Q, limits: Q) -> None:
        if "/" in role:
            raise ValueError(f"quota can only be set on top-level roles, not {role!r}")
        for name, g in guarantees.items():
            if name in limits and g > limits[name]:
                raise ValueError(f"quota of {role!r}: the guarantee of {name} ({g:g}) exceeds its limit "
                                 f"({limits[name]:g})")
        if not guarantees and not limits:
            self.quotas.pop(role, None)
        else:
            self.quotas[role] = Quota(dict(guarantees), dict(limits))

    # ---- allocations -------------------------------------------------------------------------------------
    def allocate(self, framework_id: str, role: str, agent_id: str, res: Resources, count: bool = True) -> None:
        """Track resources offered (or in use) on an agent by (framework, role). `count`: one more allocation
        for the sorters' tie-break (not for the extra copies of shared volumes an ACCEPT's tasks take: Mesos
        adds those by a conversion, `updateAllocation`, which counts none)."""
        agent = self.agents[agent_id]
        key = (framework_id, role)
        before = _holders(agent, framework_id, role, res) if res.has_shared() else None
        prev = agent.allocated.get(key)
        agent.allocated[key] = res if prev is None else prev + res
        _take(agent, res)
        self._track(framework_id, role)
        if before is None:
            self._count_alloc(framework_id, role, res, +1.0)
            self.role_sorter.allocated(role, res.quantities_view(), count)
            self.fw_sorters[role].allocated(framework_id, res.quantities_view(), count)
            return
        by_fw, by_role, on_agent = _counted(agent, framework_id, role, res, before)
        self._count_alloc(framework_id, role, on_agent, +1.0)
        self.role_sorter.allocated(role, by_role.quantities_view(), count)
        self.fw_sorters[role].allocated(framework_id, by_fw.quantities_view(), count)

    def recover(self, framework_id: str, role: str, agent_id: str, res: Resources,
                refuse_seconds: float | None = None, now: float = 0.0) -> None:
        """Resources come back (declined, rescinded, task ended). A positive `refuse_seconds` (already
        effective: defaults and the allocation-interval floor applied) installs a decline filter."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        held = agent.allocated.get((framework_id, role))
        if held is None:
            return
        if held is not res and held != res and not held.contains(res):  # never recover more than is held
            res = Resources(r for r in res if held.contains(Resources([r])))
        self._recover_tracked(agent, framework_id, role, res)
        if refuse_seconds and refuse_seconds > 0 and framework_id in self.frameworks:
            self.add_filter(framework_id, role, agent_id, Filter(res, now + refuse_seconds))

    def _recover_tracked(self, agent: Agent, framework_id: str, role: str, res: Resources) -> None:
        key = (framework_id, role)
        held = agent.allocated[key]
        before = _holders(agent, framework_id, role, res) if res.has_shared() else None
        # Fast paths for the common case at scale, a declined offer of a whole idle agent: all that is held comes
        # back, to an agent with nothing available (no range arithmetic; Resources values are never mutated).
        left = None if held is res or held == res else held - res
        if left:
            agent.allocated[key] = left
        else:
            del agent.allocated[key]
        if agent.overcommitted:
            agent.available = agent.exact_available()
        else:
            back = res if before is None and not agent.has_volumes else _as_available(agent, res)
            agent.available = back if not agent.available else agent.available + back
        if before is None:
            self._untrack(framework_id, role, res)
        else:
            self._untrack(framework_id, role, res, _counted(agent, framework_id, role, res, before))

    def _untrack(self, framework_id: str, role: str, res: Resources,
                 counted: tuple[Resources, Resources, Resources] | None = None) -> None:
        """`res` is no longer held by (framework, role); `counted`: what that changes at the framework's, the role's
        and the agent's level when `res` holds shared volumes (`_counted`), else `res` at each."""
        # An allocation with no scalar (ports alone) does not keep its role tracked (`_maybe_untrack` asks the
        # sorters): after the framework left the role there is then no sorter client to take nothing back from.
        tracked = role in self.fw_sorters and framework_id in self.fw_sorters[role]
        if counted is None:
            self._count_alloc(framework_id, role, res, -1.0)
            q = res.quantities_view()
            if tracked:
                self.role_sorter.unallocated(role, q)
                self.fw_sorters[role].unallocated(framework_id, q)
        else:
            by_fw, by_role, on_agent = counted
            self._count_alloc(framework_id, role, on_agent, -1.0)
            if tracked:
                self.role_sorter.unallocated(role, by_role.quantities_view())
                self.fw_sorters[role].unallocated(framework_id, by_fw.quantities_view())
        self._maybe_untrack(framework_id, role)

    def _count_alloc(self, framework_id: str, role: str, res: Resources, sign: float) -> None:
        q = res.quantities_view()
        q_iadd(self.alloc_total, q, sign)
        unres: Q
        resv: Q | None
        if all(r.role == UNRESERVED for r in res):
            unres, resv = q, None
        else:
            # summed per name: one allocation may hold several reserved records of a name (a role's and its
            # ancestor's reservations, reserved disk and the volumes made of it)
            unres, resv = {}, {}
            for r in res:
                if r.type == "SCALAR":
                    q_iadd(unres if r.role == UNRESERVED else resv, {r.name: r.scalar})
        if unres:
            q_iadd(self.unreserved_alloc_by_top.setdefault(top_level(role), {}), unres, sign)
        if resv:
            q_iadd(self.reserved_alloc_total, resv, sign)

    # ---- filters --------------------------------------------------------------------------------------
    def _drop_filters(self, pred: Callable[[FilterKey], bool]) -> None:
        for key in [k for k in self.filters if pred(k)]:
            self._live_filters -= len(self.filters.pop(key))

    def add_filter(self, framework_id: str, role: str, agent_id: str, flt: Filter) -> None:
        key = (framework_id, role, agent_id)
        self.filters.setdefault(key, []).append(flt)
        self._live_filters += 1
        heap = self._expiries
        if len(heap) > 64 and len(heap) > 2 * self._live_filters:
            self._rebuild_expiries()
        heapq.heappush(heap, (flt.expires_at, self._filter_seq, key, flt))
        self._filter_seq += 1

    def remove_filter(self, key: FilterKey, flt: Filter) -> bool:
        """Drop one filter (this very object) if it is still there; whether it was."""
        lst = self.filters.get(key)
        if lst is None:
            return False
        for i, f in enumerate(lst):
            if f is flt:
                del lst[i]
                if not lst:
                    del self.filters[key]
                self._live_filters -= 1
                return True
        return False

    def clear_filters(self) -> None:
        self.filters.clear()
        self._expiries.clear()
        self._live_filters = 0

    def _rebuild_expiries(self) -> None:
        """The heap again from the filters there are (in the dict's order: deterministic)."""
        heap = []
        for key, lst in self.filters.items():
            for f in lst:
                heap.append((f.expires_at, self._filter_seq, key, f))
                self._filter_seq += 1
        heapq.heapify(heap)
        self._expiries = heap
        self._live_filters = len(heap)

    def expire_filters(self, now: float) -> None:
        """Drop every filter with `expires_at <= now`: those at the top of the heap, nothing else is looked at.
        What is left does not depend on the heap's order: each key keeps its other filters in their order."""
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, _, key, flt = heapq.heappop(heap)
            self.remove_filter(key, flt)

    def _filtered(self, framework_id: str, role: str, agent_id: str, res: Resources, now: float | None) -> bool:
        for f in self.filters.get((framework_id, role, agent_id), ()):
            if (now is None or f.expires_at > now) and f.resources.contains(res):
                return True
        return False

    def _refusal(self, fid: str, role: str, agent_id: str, fw: Framework, res: Resources,
                 now: float | None, allocatable: bool = False) -> str | None:
        """Why `res` may not be offered to (framework, role) on this agent now; None if it may.
        `allocatable`: `res` is known to be above the minimum already."""
        if not allocatable and not self._allocatable(res, role, fw):
            return "below min_allocatable_resources"
        if self._filtered(fid, role, agent_id, res, now):
            return "declined (filter active)"
        return None

    # ---- min allocatable ------------------------------------------------------------------------------
    def _allocatable(self, res: Resources, role: str, fw: Framework) -> bool:
        if not res:
            return False
        alts = fw.min_allocatable.get(role)
        if alts is None:
            alts = self._default_min
        if not alts:
            return True
        q = res.quantities_view()
        for alt in alts:  # any alternative whose every quantity is there (loops: this runs per agent and framework)
            for n, v in alt.items():
                if not q.get(n, 0.0) >= v:
                    break
            else:
                return True
        return False

    # ---- deciding ---------------------------------------------------------------------------------------
    def decide(self, now: float | None, agent_ids: list[str] | None = None, seed: int = 0,
               explain: bool = True) -> Decision:
        """One allocation run over `agent_ids` (all agents when None). Filters count while
        `expires_at > now`; with `now=None` every present filter counts (the simulator expires them)."""
        candidates = sorted(a for a in (self.agents if agent_ids is None else agent_ids)
                            if a in self.agents and self.agents[a].active)
        rng = SeededShuffle(seed)
        rng.shuffle(candidates)
        offers: dict[tuple[str, str, str], Resources] = {}
        traces: list[AgentTrace] = []
        # The run's offers are allocated tentatively, as far as the run itself reads (the agents' resources and
        # the sorters; the quota totals are read once, before): each agent and sorter node is saved as it was
        # before its first change and restored at the end, exactly.
        saved: dict[str, tuple[Resources, dict[tuple[str, str], Resources], bool]] = {}
        extra: Resources | None  # the unreserved scalars an offer gets beyond the rest; None: the agent's all
        sorters = [self.role_sorter, *self.fw_sorters.values()]
        for s in sorters:
            s.flush()  # bring keys up to date with what the fold changed since the last sort
            s.deferred = True
            s.begin_tentative()
        role_sorter, fw_sorters = self.role_sorter, self.fw_sorters

        # Shared volumes offered in this run, per agent: each is offered at most once per run (Mesos
        # hierarchical.cpp `offeredSharedResources`), though it stays available while offered or in use.
        offered_shared: dict[str, Resources] = {}

        def offer(fid: str, role: str, agent_id: str, res: Resources) -> None:
            # What `allocate` does to the agent and the sorters (the framework is tracked in the role already:
            # it came out of the role's sorter).
            agent = self.agents[agent_id]
            if agent_id not in saved:
                saved[agent_id] = (agent.available, agent.allocated, agent.overcommitted)
                agent.allocated = dict(agent.allocated)
            pair = (fid, role)
            shared = res.shared() if agent.has_shared else None
            before = _holders(agent, fid, role, res) if shared is not None and shared else None
            prev = agent.allocated.get(pair)
            agent.allocated[pair] = res if prev is None else prev + res
            _take(agent, res)
            if before is None:
                q_fw = q_role = res.quantities_view()
            else:
                by_fw, by_role, _ = _counted(agent, fid, role, res, before)
                q_fw, q_role = by_fw.quantities_view(), by_role.quantities_view()
                assert shared is not None
                offered_shared[agent_id] = offered_shared.get(agent_id, _NOTHING) + shared
            role_sorter.tentatively_allocated(role, q_role)
            fw_sorters[role].tentatively_allocated(fid, q_fw)
            key = (fid, role, agent_id)
            offers[key] = res if key not in offers else offers[key] + res

        try:
            consumed: dict[str, Q] = {}
            for role in sorted(self.quotas):
                consumed[role] = q_add(self.reserved_by_top.get(role, {}), self.unreserved_alloc_by_top.get(role, {}))
            required: Q = {}
            for role in sorted(self.quotas):
                required = q_add(required, q_sub(self.quotas[role].guarantees, consumed[role]))
            available_headroom = q_sub(q_sub(self.totals, self.alloc_total),
                                       q_sub(self.reserved_total, self.reserved_alloc_total))

            # Stage 1: roles with unsatisfied quota guarantees.
            if any(q.guarantees for q in self.quotas.values()):
                for agent_id in candidates:
                    agent = self.agents[agent_id]
                    trace = AgentTrace(agent_id, 1)
                    for role in self.role_sorter.sort():
                        quota = self.quotas.get(role)
                        if quota is None or not quota.guarantees or not self.role_frameworks.get(role):
                            continue
                        if not agent.available:
                            break
                        unsatisfied = q_sub(quota.guarantees, consumed.get(role, {}))
                        if not unsatisfied:
                            continue
                        for fid in self.fw_sorters[role].sort():
                            if not unsatisfied:
                                break
                            if explain:  # recorded before the exhaustion check: the audit shows who was next
                                trace.order.append(self._explain(fid, role))
                            available = agent.available.allocatable_to(role)
                            if agent.has_shared:
                                available = _not_offered(available, offered_shared.get(agent_id))
                            if not available:
                                break
                            fw = self.frameworks[fid]
                            if not self._allocatable(available, role, fw):
                                trace.skipped.append((fid, "below min_allocatable_resources"))
                                continue
                            if agent.has_shared and not fw.shared_ok:
                                available = available.non_shared()
                            quota_res = unreserved_scalars(available)
                            guarantee_part = shrink(quota_res, unsatisfied, limits=False)
                            if not guarantee_part:
                                continue
                            to_offer = guarantee_part + reserved_or_nonscalar(available, role)
                            extra = quota_res - guarantee_part
                            if quota.limits:
                                room = q_sub_limits(q_sub_limits(quota.limits, consumed.get(role, {})),
                                                    guarantee_part.quantities())
                                extra = shrink(extra, room, limits=True)
                            if required and extra:
                                extra = shrink(extra, q_sub(available_headroom, required), limits=False)
                            to_offer = to_offer + extra
                            why = self._refusal(fid, role, agent_id, fw, to_offer, now)
                            if why:
                                trace.skipped.append((fid, why))
                                continue
                            offer(fid, role, agent_id, to_offer)
                            increase = (guarantee_part + extra).quantities()
                            unsatisfied = q_sub(unsatisfied, increase)
                            consumed[role] = q_add(consumed.get(role, {}), increase)
                            required = q_sub(required, guarantee_part.quantities())
                            available_headroom = q_sub(available_headroom, increase)
                    for s in sorters:
                        s.flush()
                    if explain and (trace.order or trace.skipped):
                        traces.append(trace)
                rng.shuffle(candidates)

            # Stage 2: everything, within limits and keeping the headroom the guarantees need.
            for agent_id in candidates:
                agent = self.agents[agent_id]
                if not agent.available:
                    continue
                trace = AgentTrace(agent_id, 2)
                for role in self.role_sorter.sort():
                    if not agent.available:
                        break
                    quota = self.quotas.get(role)
                    limits = quota.limits if quota is not None else {}
                    for fid in self.fw_sorters[role].sort():
                        if explain:  # recorded before the exhaustion check: the audit shows who was next
                            trace.order.append(self._explain(fid, role))
                        available = agent.available.allocatable_to(role) if agent.has_reservations \
                            else agent.available
                        if agent.has_shared:
                            available = _not_offered(available, offered_shared.get(agent_id))
                        if not available:
                            break
                        fw = self.frameworks[fid]
                        if not self._allocatable(available, role, fw):
                            trace.skipped.append((fid, "below min_allocatable_resources"))
                            continue
                        if agent.has_shared and not fw.shared_ok:
                            available = available.non_shared()  # Mesos `stripIncapableResources`
                        if agent.has_reservations or limits or required:
                            to_offer = reserved_or_nonscalar(available)
                            extra = unreserved_scalars(available)
                            if limits:
                                extra = shrink(extra, q_sub_limits(limits, consumed.get(role, {})), limits=True)
                            if required and extra:
                                extra = shrink(extra, q_sub(available_headroom, required), limits=False)
                            to_offer = to_offer + extra
                        else:
                            to_offer, extra = available, None
                        why = self._refusal(fid, role, agent_id, fw, to_offer, now, to_offer is available)
                        if why:
                            trace.skipped.append((fid, why))
                            continue
                        offer(fid, role, agent_id, to_offer)
                        if quota is not None or required:
                            increase = (extra if extra is not None else unreserved_scalars(to_offer)).quantities()
                            if quota is not None:
                                consumed[role] = q_add(consumed.get(role, {}), increase)
                            available_headroom = q_sub(available_headroom, increase)
                for s in sorters:
                    s.flush()
                if explain and (trace.order or trace.skipped):
                    traces.append(trace)
        finally:
            for agent_id, (available, allocated, overcommitted) in saved.items():
                agent = self.agents[agent_id]
                agent.available, agent.allocated, agent.overcommitted = available, allocated, overcommitted
            for s in sorters:
                s.rollback()
                s.deferred = False
                s.flush()
        result = [OfferDecision(fid, role, aid, res) for (fid, role, aid), res in offers.items()]
        return Decision(result, traces, seed)

    def _explain(self, fid: str, role: str) -> tuple[str, str, float, int, float]:
        """(framework, role, its DRF share within the role, its allocation count, the role's share)."""
        s = self.fw_sorters[role]
        return (fid, role, round(s.client_share(fid), 9), s.count(fid), round(self.role_sorter.client_share(role), 9))


_NOTHING = Resources()


def _take(agent: Agent, res: Resources) -> None:
    """`res` (already in `agent.allocated`) leaves the agent's available resources (its shared volumes stay)."""
    available = agent.available
    if agent.has_shared:
        res = res.non_shared()
    if agent.overcommitted:
        agent.available = agent.exact_available()
    elif res == available:  # the whole of it (an offer of all an agent has; exactly `available - res`)
        agent.available = _NOTHING
    elif available.contains(res):
        agent.available = available - res
    else:
        agent.available = agent.exact_available()


def _as_available(agent: Agent, res: Resources) -> Resources:
    """What of `res`, coming back, goes into `available`: not its shared volumes (always there), and its other
    volumes as the agent's total has them (a task may mount a volume at its own path or read-only; the offers
    show the volume itself, as Mesos's available = total - allocated does)."""
    if not res.has_volumes():
        return res
    out = []
    for r in res:
        if r.shared:
            continue
        if r.persistence is not None:
            r = next((t for t in agent.total.volumes() if key_of(t) == key_of(r)), r)
        out.append(r)
    return Resources(out)


def _not_offered(available: Resources, offered: Resources | None) -> Resources:
    """`available` without the shared volumes already offered in this run."""
    if not offered:
        return available
    keys = {key_of(r) for r in offered}
    return Resources(r for r in available if not (r.shared and key_of(r) in keys))


# Holders of shared volumes, and what they count for.
#
# Mesos's sorters count a shared volume's quantity in a client's allocation once per agent, whatever the copies held
# (sorter.hpp `Allocation::add/subtract`: a shared resource adds its quantity only when the client's allocation on
# that agent does not hold it yet, and subtracts it when the last copy goes). Drover does the same at each level it
# keeps: a framework in a role (the framework sorters), a role (the role sorter) and the agent as a whole (the quota
# and headroom totals, `_count_alloc`: a volume held by three tasks uses its disk once). One deviation: Drover's role
# sorter adds a role's counts up to its ancestors, so a shared volume held under two sub-roles of its reservation
# role counts twice in the parent (Mesos keeps each node's allocation per agent and counts it once there).

def _holders(agent: Agent, fid: str, role: str, res: Resources) -> list[tuple[int, int, int]]:
    """For each shared volume in `res`, in its order: the copies held on the agent by (framework, role), by
    the role, and by anyone."""
    keys = [key_of(r) for r in res if r.shared]
    out = []
    for k in keys:
        mine = in_role = anyone = 0
        for (f, ro), held in agent.allocated.items():
            rec = held.get(k)
            if rec is None:
                continue
            anyone += rec.copies
            if ro == role:
                in_role += rec.copies
                if f == fid:
                    mine += rec.copies
        out.append((mine, in_role, anyone))
    return out


def _counted(agent: Agent, fid: str, role: str, res: Resources,
             before: list[tuple[int, int, int]]) -> tuple[Resources, Resources, Resources]:
    """What `res` (holding shared volumes), just added to or taken from (framework, role)'s allocation on the agent,
    changes in the counts of the framework, of the role and of the agent: its other resources, and each shared
    volume only where its first copy came or its last went (`before`: `_holders` before the change)."""
    after = _holders(agent, fid, role, res)
    plain = res.non_shared()
    shared = [r for r in res if r.shared]
    levels = []
    for i in range(3):
        flipped = [r for r, b, a in zip(shared, before, after, strict=True) if (b[i] == 0) != (a[i] == 0)]
        levels.append(plain + Resources(flipped) if flipped else plain)
    return levels[0], levels[1], levels[2]


def q_sub_limits(limits: Q, consumed: Q) -> Q:
    """limits - consumed, per limited name, floored at zero (zeros kept: a name at its limit gets nothing)."""
    return {k: max(0.0, round3(v - consumed.get(k, 0.0))) for k, v in limits.items()}
