"""Benchmark: one full allocation cycle of the hierarchical allocator on synthetic clusters.

Every agent is free and every framework active, so each cycle visits every agent
(the case Mesos's HierarchicalAllocator benchmarks time). Rows:
  * drover: `HierarchicalAllocator.decide()` over all agents (sorted order kept incrementally);
  * baseline (same run): the same DRF ordering re-sorted from scratch for every agent, as a
    straightforward implementation would (only where it finishes in reasonable time);
  * reference: Mesos 1.8's C++ allocator as reported for these sizes (not measured here).

    .venv/bin/python -m bench.allocator [--quick] [--sizes 1000x100,10000x1000,20000x2000]
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time

from eventstore.resources import Resources
from master.allocator.config import AllocatorConfig
from master.allocator.hierarchical import HierarchicalAllocator

MESOS_REFERENCE_S = {(10_000, 1_000): 1.1, (20_000, 2_000): 3.8}
AGENT = "cpus:16;mem:65536;disk:200000;ports:[31000-32000]"


def build(agents: int, frameworks: int) -> HierarchicalAllocator:
    a = HierarchicalAllocator(AllocatorConfig())
    roles = max(1, frameworks // 10)
    for f in range(frameworks):
        a.add_framework(f"fw-{f:05d}", [f"role-{f % roles:04d}"])
    total = Resources.parse(AGENT)
    for i in range(agents):
        a.add_agent(f"agent-{i:06d}", total)
    return a


def naive_cycle(a: HierarchicalAllocator) -> int:
    """Same DRF order, recomputed with a full sort of roles and frameworks for every agent."""
    totals = dict(a.totals)

    def share(q: dict) -> float:
        return max((q.get(n, 0.0) / t for n, t in totals.items() if t > 0), default=0.0)

    role_alloc = {r: dict(a.role_sorter.allocation(r)) for r in a.role_frameworks}
    fw_alloc = {(r, f): {} for r, fs in a.role_frameworks.items() for f in fs}
    offers = 0
    for agent_id in sorted(a.agents):
        avail = a.agents[agent_id].available.quantities()
        roles = sorted(role_alloc, key=lambda r: (share(role_alloc[r]), r))
        for role in roles:
            fws = sorted(a.role_frameworks[role], key=lambda f: (share(fw_alloc[(role, f)]), f))
            if fws:
                f = fws[0]
                for n, v in avail.items():
                    role_alloc[role][n] = role_alloc[role].get(n, 0.0) + v
                    fw_alloc[(role, f)][n] = fw_alloc[(role, f)].get(n, 0.0) + v
                offers += 1
                break
    return offers


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small clusters only (a smoke run)")
    p.add_argument("--sizes", default=None, help="AGENTSxFRAMEWORKS,... (default 1000x100,10000x1000,20000x2000)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-naive", action="store_true", help="do not time the naive baseline")
    args = p.parse_args()
    sizes_text = args.sizes or ("200x20,1000x100" if args.quick else "1000x100,10000x1000,20000x2000")
    sizes = [tuple(int(x) for x in s.split("x")) for s in sizes_text.split(",")]
    repeat = 1 if args.quick else args.repeat
    rows = []
    for agents, frameworks in sizes:
        t0 = time.perf_counter()
        a = build(agents, frameworks)
        setup = time.perf_counter() - t0
        offers = len(a.decide(0.0, None, seed=1, explain=False).offers)
        drover = timed(functools.partial(a.decide, 0.0, None, seed=1, explain=False), repeat)
        explained = timed(functools.partial(a.decide, 0.0, None, seed=1, explain=True), 1)
        naive = timed(functools.partial(naive_cycle, a), 1) if not args.skip_naive else None
        rows.append((agents, frameworks, offers, setup, statistics.median(drover), explained[0],
                     naive[0] if naive else None, MESOS_REFERENCE_S.get((agents, frameworks))))
    print(f"\nOne full allocation cycle (all agents free, all frameworks active; agent {AGENT}; "
          f"10 frameworks per role; median of {repeat})\n")
    head = (f"{'agents':>7} {'frameworks':>10} {'offers':>7} {'setup s':>8} {'drover s':>9} "
            f"{'+explain s':>10} {'naive re-sort s':>15} {'speed-up':>8} {'Mesos 1.8 C++ s':>15}")
    print(head)
    print("-" * len(head))
    for agents, frameworks, offers, setup, d, e, n, ref in rows:
        speed = f"{n / d:7.1f}x" if n else "       -"
        print(f"{agents:>7} {frameworks:>10} {offers:>7} {setup:>8.2f} {d:>9.3f} {e:>10.3f} "
              f"{(f'{n:.3f}' if n else '-'):>15} {speed:>8} {(f'{ref:.1f}' if ref else '-'):>15}")
    print("\ndrover = HierarchicalAllocator.decide() without the audit explanation (what the master runs); +explain = "
          "with it (what it ran before; now re-derived on demand).\nnaive = the same DRF order re-sorted from scratch "
          "per agent, measured in this run.")


if __name__ == "__main__":
    main()
