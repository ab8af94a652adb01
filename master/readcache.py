"""Answers of the big read endpoints, built at most once per state version.

`/master/state`, operator GET_STATE (and GET_TASKS, GET_FRAMEWORKS, GET_AGENTS) and `/drover/status`'s state hash are
functions of the folded state. Building one is synchronous work on the event loop (bench/reads.py: at 10,000 agents
about 1 s for /master/state, 3 s for GET_STATE's 20 MB, 0.6 s for the hash), so a reader must not pay it again
for a state that has not changed. A cached answer is keyed by the state object and its `index` (`apply` bumps it on
every folded event, committed or, on a leader that folds ahead of its commits, speculative) plus whatever else the
answer shows (`extra`: leader address, election time).

Concurrent readers: a build never awaits, so N requests at one index cost one build and N-1 lookups, whatever
their interleaving.

Staleness: an answer at the current key is exact. Under load the index moves on every decision, so a reader that
polls would pay a full build per poll; for the expensive builds only (those that took at least `slow` seconds) an
answer may be served while it is younger than `min(max_stale, ratio x its build time)`, which bounds both how
stale it can be (5 s by default) and the share of the loop one endpoint's rebuilds can take (1 / (1 + ratio),
20%, for builds up to max_stale / ratio). Small states (tests, a few hundred agents) always get the exact answer.
Callers that need the pair (index, answer) exact, such as `/drover/status`'s (applied_index, state_hash), pass
`exact=True`. The index an answer was built at is returned with it, for a response header.

If the state were ever rolled back in place to an earlier index and re-folded differently, the key would repeat
with another content: whoever does that must call `invalidate()`. Replacing `core.state` by another object (a
snapshot restore) needs nothing: the key holds the object itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from master.state import State

SLOW_BUILD = 0.05  # seconds: builds below this are never served stale
STALE_RATIO = 4.0  # a stale answer lives at most ratio x its build time ...
MAX_STALE = 5.0  # ... and never more than this many seconds


class _Entry:
    __slots__ = ("state", "index", "extra", "body", "built_at", "cost")

    def __init__(self, state: State, index: int, extra: Hashable, body: bytes, built_at: float, cost: float):
        self.state, self.index, self.extra = state, index, extra
        self.body, self.built_at, self.cost = body, built_at, cost


class ReadCache:
    def __init__(self, *, slow: float = SLOW_BUILD, ratio: float = STALE_RATIO, max_stale: float = MAX_STALE,
                 clock: Callable[[], float] = time.monotonic):
        self.slow, self.ratio, self.max_stale, self.clock = slow, ratio, max_stale, clock
        self._entries: dict[str, _Entry] = {}
        self.builds = 0  # how many times a `build` ran (tests, benchmarks)

    def get(self, name: str, state: State, build: Callable[[], bytes], *, extra: Hashable = None,
            exact: bool = False) -> tuple[bytes, int]:
        """The answer `name` for `state` (and `extra`), and the state index it was built at."""
        e = self._entries.get(name)
        now = self.clock()
        if e is not None and e.state is state and e.extra == extra:
            if e.index == state.index:
                return e.body, e.index
            if not exact and e.cost >= self.slow and now - e.built_at < min(self.max_stale, self.ratio * e.cost):
                return e.body, e.index
        index = state.index
        body = build()
        self.builds += 1
        self._entries[name] = _Entry(state, index, extra, body, now, self.clock() - now)
        return body, index

    def invalidate(self) -> None:
        self._entries.clear()
