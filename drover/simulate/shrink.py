"""Shrinking a failing fault schedule to a minimal one (delta debugging), then its faults to their smallest form.

`shrink(faults, fails)` calls `fails(candidate)` (a whole deterministic re-run with the same seed) and returns a
schedule that still fails from which no single fault can be removed and no fault shortened or moved earlier by the
steps tried, within `max_runs` re-runs. Zeller's ddmin: try halves, then complements, at finer and finer
granularity."""

from __future__ import annotations

import dataclasses
from typing import Callable

from drover.simulate.schedule import Fault

Check = Callable[[list[Fault]], bool]


class Budget:
    def __init__(self, fails: Check, max_runs: int):
        self.fails, self.left, self.runs = fails, max_runs, 0
        self.cache: dict[tuple[Fault, ...], bool] = {}

    def __call__(self, faults: list[Fault]) -> bool:
        key = tuple(sorted(faults))
        if key in self.cache:
            return self.cache[key]
        if self.left <= 0:
            return False  # out of re-runs: treat as passing, so nothing more is removed
        self.left -= 1
        self.runs += 1
        result = self.cache[key] = self.fails(list(key))
        return result


def ddmin(faults: list[Fault], fails: Check) -> list[Fault]:
    """A 1-minimal failing subset of `faults` (which must fail): removing any one fault makes it pass."""
    current = sorted(faults)
    n = 2
    while len(current) >= 2:
        size = len(current) // n
        chunks = [current[i * size:(i + 1) * size] for i in range(n - 1)] + [current[(n - 1) * size:]]
        for chunk in chunks:  # a chunk alone still fails: keep only it
            if chunk and fails(chunk):
                current, n = chunk, 2
                break
        else:
            for i in range(len(chunks)):  # a chunk's complement still fails: drop the chunk
                rest = [f for j, c in enumerate(chunks) if j != i for f in c]
                if rest and fails(rest):
                    current, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(current):
                    break
                n = min(len(current), n * 2)
    return current


def simplify(faults: list[Fault], fails: Check) -> list[Fault]:
    """Each fault as short and as early as still fails: halve its duration, then its start, while it fails."""
    current = sorted(faults)
    for i in range(len(current)):
        for field in ("duration", "start"):
            while True:
                f = current[i]
                value = getattr(f, field)
                smaller = round(value / 2, 3) if value > 0.001 else 0.0
                if smaller == value:
                    break
                candidate = dataclasses.replace(f, **{field: smaller})
                trial = current[:i] + [candidate] + current[i + 1:]
                if not fails(trial):
                    break
                current = trial
    return sorted(current)


def shrink(faults: list[Fault], fails: Check, max_runs: int = 200) -> tuple[list[Fault], int]:
    """The shrunk schedule and how many re-runs it took. `faults` must fail."""
    budget = Budget(fails, max_runs)
    if budget([]):
        return [], budget.runs  # it fails without any fault: the reproducer is the seed alone
    smaller = ddmin(faults, budget)
    return simplify(smaller, budget), budget.runs
