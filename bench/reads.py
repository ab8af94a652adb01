"""Benchmark: what the read endpoints cost on the event loop at scale (issue 10).

Builds a State through the real fold (N agents, frameworks, running tasks, outstanding offers, completed tasks),
then times, single-threaded and without HTTP:
  * /master/state: `state_json.render` + `json.dumps`;
  * operator GET_STATE: `operator_json.get_state` + `json.dumps`;
  * /drover/status: `state_hash`;
and the same reads through `master.readcache` (a first read at an index builds; later reads at that index are
served from the cache). Not a test: nothing asserts on times.

    .venv/bin/python -m bench.reads [--agents 10000] [--tasks-per-agent 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from eventstore import events as ev
from eventstore.resources import Resources
from master import operator_json, state_json
from master.readcache import ReadCache
from master.state import State, apply, state_hash

AGENT = Resources.parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]")
TASK = Resources.parse("cpus:0.5;mem:512")
FLAGS = {"allocation_interval": "1.0secs", "offer_timeout": "", "heartbeat_interval": "15.0secs"}


def build(agents: int, frameworks: int, tasks_per_agent: int, offers: int, completed: int,
          distinct: bool = False) -> State:
    """`distinct`: every agent and task has resources of its own (the builders' memo of rendered resources then
    never hits: the worst case); otherwise all agents have one shape and all tasks another."""
    state = State()
    ts = 1_700_000_000.0

    def agent_res(i: int) -> list:
        return Resources.parse(f"cpus:{16 + i / 1000:.3f};mem:65536;disk:100000;ports:[31000-32000]").to_list() \
            if distinct else AGENT.to_list()

    def task_res(k: int) -> list:
        return Resources.parse(f"cpus:{0.1 + (k % 997) / 1000:.3f};mem:{128 + k}").to_list() if distinct \
            else TASK.to_list()

    def emit(event) -> None:
        apply(state, ev.Envelope(index=state.index + 1, term=1, ts=ts, event=event))

    emit(ev.ClusterCreated(cluster_id="bench"))
    emit(ev.LeaderElected(leader_id="m1", http="m1:5050", term=1))
    for i in range(agents):
        emit(ev.AgentRegistered(agent_id=f"bench-S{i}", hostname=f"a{i}", http=f"10.0.{i // 250}.{i % 250}:5051",
                                resources=agent_res(i)))
    for f in range(frameworks):
        emit(ev.FrameworkSubscribed(framework_id=f"bench-{f:04d}",
                                    info=ev.FrameworkInfo(name=f"fw{f}", user="u", roles=[f"role{f % 3}"])))
    k = 0

    def offer(aid: str, fid: str, role: str, res: list) -> str:
        oid = f"bench-O{state.next_offer}"
        emit(ev.OffersMade(offers=[ev.OfferRecord(offer_id=oid, framework_id=fid, agent_id=aid, role=role,
                                                  resources=res)],
                           trigger="periodic", seed=state.index, candidates=[aid]))
        return oid

    for _ in range(tasks_per_agent):
        for i in range(agents):
            fid, role = f"bench-{k % frameworks:04d}", f"role{(k % frameworks) % 3}"
            aid = f"bench-S{i}"
            oid = offer(aid, fid, role, task_res(k))
            tid = f"t{k}"
            spec = ev.TaskSpec(task_id=tid, name=tid, agent_id=aid, resources=task_res(k),
                               command=ev.CommandSpec(value="sleep 1000"), role=role)
            emit(ev.OffersAccepted(framework_id=fid, offer_ids=[oid], tasks=[spec], refuse_seconds=0.0))
            emit(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=aid, status=ev.TaskStatus(
                state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=ts, uuid=f"u{k}")))
            k += 1
    for j in range(completed):  # tasks that ran and finished: the completed_tasks ring
        fid, role, aid = f"bench-{j % frameworks:04d}", f"role{(j % frameworks) % 3}", f"bench-S{j % agents}"
        oid = offer(aid, fid, role, task_res(j))
        tid = f"done{j}"
        emit(ev.OffersAccepted(framework_id=fid, offer_ids=[oid], tasks=[ev.TaskSpec(
            task_id=tid, name=tid, agent_id=aid, resources=task_res(j), command=ev.CommandSpec(value="true"),
            role=role)], refuse_seconds=0.0))
        emit(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=aid, status=ev.TaskStatus(
            state="TASK_FINISHED", source="SOURCE_EXECUTOR", timestamp=ts, uuid=f"d{j}")))
        emit(ev.StatusAcknowledged(framework_id=fid, task_id=tid, uuid=f"d{j}"))
    for j in range(offers):
        offer(f"bench-S{j % agents}", f"bench-{j % frameworks:04d}", f"role{(j % frameworks) % 3}", task_res(j))
    return state


def render_state(state: State) -> bytes:
    return json.dumps(state_json.render(state, master_id="m1", http="m1:5050", leader_http="m1:5050",
                                        version="1.11.0", start_time=0.0, elected_time=0.0, flags=FLAGS)).encode()


def render_get_state(state: State) -> bytes:
    return json.dumps({"type": "GET_STATE", "get_state": operator_json.get_state(state, "1.11.0")}).encode()


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=10_000)
    p.add_argument("--frameworks", type=int, default=20)
    p.add_argument("--tasks-per-agent", type=int, default=2)
    p.add_argument("--offers", type=int, default=2_000)
    p.add_argument("--completed", type=int, default=1_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--distinct", action="store_true", help="every agent and task with resources of its own")
    a = p.parse_args()
    t0 = time.perf_counter()
    state = build(a.agents, a.frameworks, a.tasks_per_agent, a.offers, a.completed, a.distinct)
    print(f"state: {len(state.agents)} agents, {len(state.frameworks)} frameworks, "
          f"{sum(len(t) for t in state.tasks.values())} tasks, {len(state.offers)} offers, "
          f"{len(state.completed_tasks)} completed tasks, index {state.index} "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    rows = [("/master/state (render + dumps)", lambda: render_state(state)),
            ("GET_STATE (get_state + dumps)", lambda: render_get_state(state)),
            ("/drover/status (state_hash)", lambda: state_hash(state).encode())]
    cache = ReadCache()
    for key, (name, fn) in zip(("state", "get_state", "hash"), list(rows), strict=True):
        cache.get(key, state, fn)  # the first read at this index builds
        rows.append((f"{name.split(' (')[0]}, cached", lambda key=key, fn=fn: cache.get(key, state, fn)[0]))
    print(f"{'read':<36} {'median ms':>10} {'bytes':>10}")
    for name, fn in rows:
        sec, out = timed(fn, a.repeat)
        print(f"{name:<36} {sec * 1000:>10.1f} {len(out):>10,}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
