"""Invariants of a folded state that every committed log must keep, whatever happened: checked by the property
test after every commit, and by `drover simulate` (issue 15) at every step of a simulated cluster.

`capacity_problems`: no agent has more held than it has. What its outstanding offers and the tasks that hold
resources on it (a task group's executor once) hold must fit in its resources, so nothing is offered twice
(two outstanding offers of the same cpus) nor beyond capacity. Shared persistent volumes are left out: one is held
by many at once by design (docs/persistent-volumes.md).
"""

from __future__ import annotations

from eventstore.resources import Resources
from master.state import State, holdings


def held_by_agent(state: State) -> dict[str, Resources]:
    """Per agent: what its outstanding offers and resource-holding tasks hold (shared volumes excluded)."""
    held: dict[str, Resources] = {}

    def add(agent_id: str, res: Resources) -> None:
        held[agent_id] = held[agent_id] + res if agent_id in held else res

    for oid in sorted(state.offers):
        o = state.offers[oid]
        add(o.agent_id, Resources(o.resources).non_shared())
    for fid in sorted(state.tasks):
        tasks = state.tasks[fid]
        for task, res in holdings(tasks[tid] for tid in sorted(tasks)):
            add(task.spec.agent_id, Resources(res).non_shared())
    return held


def capacity_problems(state: State) -> list[str]:
    """Each agent that holds more than it has, as a sentence (empty: the invariant holds). Agents the state no
    longer holds as registered (unreachable, removed) are not judged: nothing is offered on them."""
    out = []
    for agent_id, res in sorted(held_by_agent(state).items()):
        agent = state.agents.get(agent_id)
        if agent is None:
            continue
        total = Resources(agent.resources).non_shared()
        if not total.contains(res):
            out.append(f"index {state.index}: agent {agent_id} holds {res.format()} in offers and tasks, more than "
                       f"its {total.format()} (beyond: {(res - total).format() or '?'})")
    return out
