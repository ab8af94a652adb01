"""One seed, many independent random streams: each simulated component draws from its own, named, so adding a
component (or a draw in one) does not change what the others draw, and a run is reproduced by its seed alone."""

from __future__ import annotations

import hashlib
import random

MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"a seed is an integer from 0 to {MAX_SEED}, not {seed!r}")
    return seed


def stream(seed: int, name: str) -> random.Random:
    """The random stream of component `name` in the run with this seed (Mersenne Twister, seeded from a SHA-256 of
    both: the same on every platform and Python version that keeps `random.Random`'s seeding of an int)."""
    check_seed(seed)
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


class Streams:
    """The streams of one run, created on first use and kept (a component asks for its stream by name)."""

    def __init__(self, seed: int):
        self.seed = check_seed(seed)
        self._streams: dict[str, random.Random] = {}

    def __call__(self, name: str) -> random.Random:
        r = self._streams.get(name)
        if r is None:
            r = self._streams[name] = stream(self.seed, name)
        return r
