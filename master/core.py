"""The master replica's sans-IO core (issue 15: docs/plans/simulation-cores.md), being moved out of
master/replica.py step by step so that the real replica and `drover simulate` run the same code.

`ReplicaCore` owns what a replica knows between IO calls; it reads no clock (wall time comes in as an argument),
does no IO and imports no asyncio. Moved so far (step M1): the folded state and the committed index, the serving
period (term, epoch), the leader's memory of when each agent was last heard from, and the generations of framework
and agent links. `MasterServer` (master/replica.py) keeps its attributes as properties over its `rc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from master.state import State


@dataclass(eq=False)
class ReplicaCore:
    state: State = field(default_factory=State)
    # The last committed event folded (and stored) here; on a serving leader `state` runs ahead of it by what is
    # staged or in flight.
    committed_index: int = 0
    serving: bool = False  # leader, and our LeaderElected is folded
    serving_term: int = 0
    serving_epoch: int = 0  # the log index of our LeaderElected while serving (fencing: raftlog._Log)
    # Leader's memory, not history: when each agent was last heard from (any agent call: SUBSCRIBE, PING, UPDATE)
    # or its link broke. An agent absent here counts from this leader's election.
    agent_seen: dict[str, float] = field(default_factory=dict)
    # How many subscriptions of each peer ("framework"|"agent", id) were staged: a stream whose client goes away
    # records a disconnection only if no newer subscription of its peer was staged meanwhile (that one's link is
    # registered only once it is committed, and must not be recorded as disconnected by the old stream's end).
    link_generation: dict[tuple[str, str], int] = field(default_factory=dict)

    def now(self, wall: float) -> float:
        """The time a decision is taken at: the wall clock, never behind the log (a new leader whose clock lags
        must not make time run backwards)."""
        return max(wall, self.state.ts)

    def new_link(self, kind: str, peer_id: str) -> int:
        """A subscription of a peer was staged: its generation (see link_generation)."""
        gen = self.link_generation.get((kind, peer_id), 0) + 1
        self.link_generation[(kind, peer_id)] = gen
        return gen

    def latest_link(self, kind: str, peer_id: str, gen: int) -> bool:
        return self.link_generation.get((kind, peer_id)) == gen

    def agent_heard(self, agent_id: str, wall: float) -> None:
        """A sign of life from an agent (it called us); chatter, so kept in memory only."""
        self.agent_seen[agent_id] = self.now(wall)

    def agent_last_seen(self, agent_id: str) -> float:
        return max(self.agent_seen.get(agent_id, 0.0), self.state.elected_at or 0.0)
