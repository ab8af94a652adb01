"""Virtual time: one queue of timed actions, run in (time, order of scheduling) order.

Everything a simulation does happens in an action taken off this queue, so two runs that schedule the same actions
run them in the same order: ties at one instant go by the order they were scheduled in, never by an object's id or
a hash. Time only moves when the next action is taken, so idle stretches cost nothing (no sleeping, no polling)."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable

Action = Callable[[], None]


@dataclass(order=True)
class _Entry:
    at: float
    seq: int
    action: Action = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Timer:
    """A handle on a scheduled action, to cancel it (a cancelled action is skipped when its time comes)."""

    __slots__ = ("_entry",)

    def __init__(self, entry: _Entry):
        self._entry = entry

    @property
    def at(self) -> float:
        return self._entry.at

    def cancel(self) -> None:
        self._entry.cancelled = True


class Clock:
    """The simulation's time and its queue of actions."""

    def __init__(self, start: float = 0.0):
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite time, not {start}")
        self.now = start
        self._queue: list[_Entry] = []
        self._seq = 0
        self.steps = 0  # actions run, for reports and benchmarks

    def at(self, when: float, action: Action) -> Timer:
        """Run `action` at virtual time `when` (not before now: an action may not change the past)."""
        if not math.isfinite(when):
            raise ValueError(f"cannot schedule at {when}")
        entry = _Entry(max(when, self.now), self._seq, action)
        self._seq += 1
        heapq.heappush(self._queue, entry)
        return Timer(entry)

    def after(self, delay: float, action: Action) -> Timer:
        if not delay >= 0:
            raise ValueError(f"a delay must be >= 0, not {delay}")
        return self.at(self.now + delay, action)

    def pending(self) -> int:
        return sum(1 for e in self._queue if not e.cancelled)

    def next_time(self) -> float | None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0].at if self._queue else None

    def run_until(self, end: float, max_steps: int | None = None) -> bool:
        """Take actions in order until the next is after `end` (then time is `end`), the queue is empty, or
        `max_steps` actions ran. Whether it reached `end`."""
        ran = 0
        while True:
            nxt = self.next_time()
            if nxt is None or nxt > end:
                self.now = max(self.now, end)
                return True
            if max_steps is not None and ran >= max_steps:
                return False
            entry = heapq.heappop(self._queue)
            self.now = entry.at
            ran += 1
            self.steps += 1
            entry.action()
