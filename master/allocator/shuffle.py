"""A seeded shuffle whose output is fixed by this file alone.

Python's `random.shuffle` is deterministic for a seed, but its algorithm is an implementation detail
of CPython; a recorded allocation decision must re-derive identically on any Python, so the PRNG
(SplitMix64) and the Fisher-Yates shuffle are spelled out here.
"""

from __future__ import annotations

from typing import TypeVar

_MASK = (1 << 64) - 1

T = TypeVar("T")


class SeededShuffle:
    def __init__(self, seed: int):
        self.state = seed & _MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def shuffle(self, items: list[T]) -> None:
        # next_u64, inlined: a periodic run shuffles every agent, and this was most of a run with little to offer.
        state = self.state
        for i in range(len(items) - 1, 0, -1):
            state = (state + 0x9E3779B97F4A7C15) & _MASK
            z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            j = (z ^ (z >> 31)) % (i + 1)  # the modulo bias is irrelevant at these sizes
            items[i], items[j] = items[j], items[i]
        self.state = state
