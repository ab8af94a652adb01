"""The leader's decision pipeline: decisions staged at once, committed in groups.

    handler ─ decide(state, call) ─ stage ──► state (speculative fold) ──► next decision sees it
                                      │
                                      ▼
                  staged: [d1 d2 d3 …]   ── committer: one Raft entry per group (≤ MAX_GROUP_*) ──► pysyncobj
                                                 ≤ max_inflight entries in flight, in order
                                                                                            │ committed
                                                                                            ▼
                  applier: entry == inflight[0]? store it (one SQLite transaction), then per decision,
                           in log order: its effects, its messages, its `then` callbacks, its waiter

A decision is a synchronous step on the event loop (decide + stage, no await in between), so decisions are atomic
without a lock, and the log order is the decision order. Staging folds the events into the leader's state at once
(the next decision sees them) and plans their effects; nothing leaves the leader (messages, replies, links) until
the entry holding them is committed. If a proposal fails, or the log does not bring back what was proposed, the
leader stops serving and rebuilds its state from its store (committed events only): see MasterServer.

This module holds the values and the grouping rule; MasterServer does the IO.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from eventstore import events as ev
from master import effects as fx

# One Raft entry holds at most this much: pysyncobj sends it in one message and keeps it in its journal.
MAX_GROUP_EVENTS = 2000
MAX_GROUP_BYTES = 1024 * 1024


@dataclass(eq=False)
class Staged:
    """One decision: its events (already folded into the leader's state), waiting for their commit."""

    envs: list[ev.Envelope]
    payloads: list[bytes]
    effects: list[fx.Effect]  # planned from the state before each event; run once committed
    messages: list[fx.Effect]  # the decider's own messages; sent after the effects
    # The shell's completion handle (MasterServer: an asyncio.Future resolved with the index of the first event, or
    # NotLeader); this module never reads it, so the values here stay free of IO (a simulator supplies its own).
    done: Any
    then: list[Callable[[], None]] = field(default_factory=list)  # run once committed, after the messages
    # Task state transitions its events make (master.state.transition, read before each fold), counted once
    # committed.
    transitions: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.envs[0].index if self.envs else 0

    @property
    def last(self) -> int:
        return self.envs[-1].index if self.envs else 0

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.payloads)


@dataclass(eq=False)
class Group:
    """Decisions proposed together as one Raft entry."""

    proposal: str
    decisions: list[Staged]
    proposed_at: float = 0.0  # time.monotonic() when proposed (the commit latency metric), 0 if not timed

    @property
    def first(self) -> int:
        return self.decisions[0].first

    @property
    def last(self) -> int:
        return self.decisions[-1].last

    @property
    def envs(self) -> list[ev.Envelope]:
        return [e for d in self.decisions for e in d.envs]

    @property
    def payloads(self) -> list[bytes]:
        return [p for d in self.decisions for p in d.payloads]

    @property
    def transitions(self) -> list[tuple[str, str, str]]:
        return [t for d in self.decisions for t in d.transitions]

    def entry(self, term: int, epoch: int) -> bytes:
        parts = [(d.envs[0].ts, len(d.envs)) for d in self.decisions]
        return ev.encode_entry(term, parts[0][0], self.proposal, self.payloads, parts, epoch, first=self.first)


def take_group(staged: deque[Staged], max_events: int = MAX_GROUP_EVENTS,
               max_bytes: int = MAX_GROUP_BYTES) -> list[Staged]:
    """The next decisions to propose together, oldest first: at least one, then as many as fit."""
    out = [staged.popleft()]
    events, size = len(out[0].envs), out[0].size
    while staged:
        nxt = staged[0]
        if events + len(nxt.envs) > max_events or size + nxt.size > max_bytes:
            break
        out.append(staged.popleft())
        events += len(nxt.envs)
        size += nxt.size
    return out
