"""Invariants of a folded state that every committed log must keep, whatever happened: checked by the property
test after every commit, and by `drover simulate` (issue 15) at every step of a simulated cluster.

`capacity_problems`: nothing is offered twice (two outstanding offers of the same cpus) nor beyond an agent's
capacity: its outstanding offers fit in what the tasks that hold resources on it (a task group's executor once)
leave of its resources, resource by resource. Tasks alone may hold more of a resource than an agent has, by design:
an agent re-registered with fewer resources while its tasks ran is overcommitted in that resource (nothing of it is
offered until they end; what it has left of the others is, as in Mesos). Shared persistent volumes are left out:
one is held by many at once by design (docs/persistent-volumes.md).
"""

from __future__ import annotations

from eventstore.resources import Resources
from master.state import State, holdings


def _held(state: State) -> tuple[dict[str, Resources], dict[str, Resources]]:
    """Per agent: what its outstanding offers hold, and what its resource-holding tasks hold (shared volumes
    excluded)."""
    offered: dict[str, Resources] = {}
    tasks_held: dict[str, Resources] = {}

    def add(into: dict[str, Resources], agent_id: str, res: Resources) -> None:
        into[agent_id] = into[agent_id] + res if agent_id in into else res

    for oid in sorted(state.offers):
        o = state.offers[oid]
        add(offered, o.agent_id, Resources(o.resources).non_shared())
    for fid in sorted(state.tasks):
        tasks = state.tasks[fid]
        for task, res in holdings(tasks[tid] for tid in sorted(tasks)):
            add(tasks_held, task.spec.agent_id, Resources(res).non_shared())
    return offered, tasks_held


def held_by_agent(state: State) -> dict[str, Resources]:
    """Per agent: what its outstanding offers and resource-holding tasks hold together (shared volumes excluded)."""
    offered, tasks_held = _held(state)
    out = dict(tasks_held)
    for aid, res in offered.items():
        out[aid] = out[aid] + res if aid in out else res
    return out


def capacity_problems(state: State) -> list[str]:
    """Each agent with an offer beyond what its tasks leave of it, as a sentence (empty: the invariant holds).
    Agents the state no longer holds as registered (unreachable, removed) are not judged: nothing is offered on
    them."""
    out = []
    offered, tasks_held = _held(state)
    for agent_id, offers in sorted(offered.items()):
        agent = state.agents.get(agent_id)
        if agent is None:
            continue
        total = Resources(agent.resources).non_shared()
        used = tasks_held.get(agent_id, Resources())
        left = total - used  # what the tasks leave, resource by resource (nothing of an overcommitted one)
        if not left.contains(offers):
            out.append(f"index {state.index}: agent {agent_id} has offers of {offers.format()}, more than its tasks "
                       f"({used.format() or 'none'}) leave of its {total.format()} ({left.format() or 'nothing'})")
    return out
