"""The invariants a chaos run must keep, checked from the final logs, the workload's history and podman.

1. tasks: every task the workload launched reached exactly one terminal state, or is still running and
   known to the master and its agent; no task was launched twice (in the log, or as containers).
2. acknowledged: every call the leader answered 202 with `Drover-Log-Index: A-B` finds its event at
   those indices of the final log (Jepsen-style: the ack is the promise), and every replica's log is
   identical, row for row.
3. replay: `drover replay verify` passes on every replica's store.
4. recovery: after every fault the cluster became whole again (a leader serving, every agent and the
   framework connected, replicas converged); the timings go into the report.
5. service: the long-running service task became healthy, every healthy report was confirmed by an HTTP
   request to it, and no service task was killed by its health check (no fault here stops its web server).
6. stateful: the stateful writers' persistent volume was created and written; no finished write went missing
   from it (each writer checks its predecessors', and the harness reads the volume at the end); it lives on one
   agent, every writer ran there, no two writers held it at once, it was offered only to role `chaos`; every
   agent's checkpointed volumes (meta/resources.json) are the final log's.
Plus liveness: the workload drained (every task it launched ended) before its deadline.
"""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from agent.volumes import volume_components
from drover.chaos.workload import LOST_WRITE_EXIT, NO_VOLUME_EXIT, ROLE, VOLUME_PATH
from eventstore import events as ev
from eventstore.resources import Resource, Resources
from master.state import TERMINAL_STATES, State, Task, apply
from replay.reader import iter_envelopes, iter_rows, open_store

# Terminal for the framework but not a fact about the task: a reconciliation answer for a task the master
# does not know (e.g. a launch whose ACCEPT never committed).
NOT_A_TASK_STATE = {"TASK_UNKNOWN"}


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    violations: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "summary": self.summary, "violations": self.violations[:50],
                "violation_count": len(self.violations)}


@dataclass
class LogFacts:
    """What the final log says: every envelope, the OFFERS_ACCEPTED indices of each of the chaos framework's
    tasks, and each task as the fold leaves it (its `statuses` are every status the log gave it, including
    those folded from agent re-registrations and unreachability, not only STATUS_UPDATED)."""

    envelopes: list[ev.Envelope]
    accepted: dict[str, list[int]] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    state: State | None = None
    ended: dict[str, int] = field(default_factory=dict)  # task id -> the index at which the fold made it terminal

    @classmethod
    def read(cls, store_dir: Path, framework_ids: set[str]) -> "LogFacts":
        store = open_store(store_dir)
        try:
            envs = list(iter_envelopes(store))
        finally:
            store.close()
        facts = cls(envelopes=envs)
        state = State()
        live: dict[str, Task] = {}
        for env in envs:
            state = apply(state, env)
            e = env.event
            if isinstance(e, ev.OffersAccepted) and e.framework_id in framework_ids:
                for t in e.tasks:
                    facts.accepted.setdefault(t.task_id, []).append(env.index)
                    # The fold mutates this Task in place from here on, also once it is completed.
                    task = facts.tasks.setdefault(t.task_id, state.task(e.framework_id, t.task_id))
                    if task is not None and t.task_id not in facts.ended:
                        live[t.task_id] = task
            for tid in [tid for tid, task in live.items() if task.terminal]:
                facts.ended[tid] = env.index
                del live[tid]
        facts.state = state
        return facts

    def at(self, first: int, last: int) -> list[ev.Event]:
        return [env.event for env in self.envelopes[first - 1:last] if first <= env.index <= last]


def store_digest(store_dir: Path) -> tuple[int, str]:
    """(last index, sha256 over every row) of a replica's store."""
    store = open_store(store_dir)
    try:
        h, last = hashlib.sha256(), 0
        for idx, term, ts, typ, payload in iter_rows(store):
            h.update(json.dumps([idx, term, repr(ts), typ]).encode())
            h.update(payload if isinstance(payload, bytes) else str(payload).encode())
            last = idx
        return last, h.hexdigest()
    finally:
        store.close()


def check_tasks(facts: LogFacts, history: list[dict], agents: dict[str, dict | None],
                containers: dict[str, int], starts: dict[str, int], blind: list[str] = ()) -> Check:
    """`containers`/`starts`: per task id, its containers and podman `start` events (two starts = it ran twice;
    creates would over-count: a start interrupted by a podman restart removes its container and creates anew).
    `blind`: why podman could not be asked, which leaves the double-launch check blind (a violation)."""
    v: list[str] = [f"could not check for double launches: {why}" for why in blind]
    invoked = [t for r in history if r["type"] == "invoke" and r.get("op") == "launch" for t in r["task_ids"]]
    updates: dict[str, list[dict]] = {}
    for r in history:
        if r["type"] == "event" and r.get("event") == "UPDATE":
            updates.setdefault(r["task_id"], []).append(r)
    dup_invokes = sorted(t for t, n in collections.Counter(invoked).items() if n > 1)
    if dup_invokes:
        v.append(f"the workload itself launched these ids twice (a workload bug): {dup_invokes[:5]}")
    agent_tasks = {t["task_id"]: t["state"] for s in agents.values() if s for t in s.get("tasks", [])}
    ended = running = never = 0
    for tid in sorted(set(invoked) | set(facts.accepted)):
        where = facts.accepted.get(tid, [])
        seen = updates.get(tid, [])
        if len(where) > 1:
            v.append(f"{tid}: launched twice in the log (OFFERS_ACCEPTED at {where})")
        if containers.get(tid, 0) > 1 or starts.get(tid, 0) > 1:
            v.append(f"{tid}: launched twice on agents ({containers.get(tid, 0)} containers, "
                     f"{starts.get(tid, 0)} podman start events)")
        task = facts.tasks.get(tid)
        if task is None:
            # Never committed (its ACCEPT timed out or was refused): it must not have run anywhere.
            never += 1
            ran = {r["state"] for r in seen} & {"TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED"}
            if ran or containers.get(tid, 0) or starts.get(tid, 0):
                v.append(f"{tid}: ran ({sorted(ran)}, {containers.get(tid, 0)} containers) but is not in the log")
            continue
        states = [st.state for st in task.statuses]
        at = next((i for i, st in enumerate(task.statuses) if st.state in TERMINAL_STATES), None)
        if at is None:
            if task.terminal:
                v.append(f"{tid}: the fold has it {task.state} without a terminal status")
            elif agent_tasks.get(tid) is None or agent_tasks[tid] in TERMINAL_STATES:
                v.append(f"{tid}: no terminal state in the log, the master has it {task.state} but its agent "
                         f"reports {agent_tasks.get(tid)}")
            else:
                running += 1
            continue
        ended += 1
        final = task.statuses[at]
        if any(s != final.state for s in states[at + 1:]):
            v.append(f"{tid}: more than one terminal state in the log: {states[at:]}")
        for r in seen:
            if r["state"] not in TERMINAL_STATES | NOT_A_TASK_STATE or r["state"] == final.state:
                continue
            if r.get("reason") == "REASON_RECONCILIATION" and (r.get("timestamp") or 0) >= final.timestamp:
                # As Mesos: the master forgets a task once its terminal update is acknowledged, and then
                # answers an explicit reconciliation with TASK_GONE (TASK_UNKNOWN without the agent).
                continue
            v.append(f"{tid}: the framework was told {r['state']} ({r.get('source')}, {r.get('reason')}) "
                     f"but the log says {final.state}")
    n = len(set(invoked) | set(facts.accepted))
    # podman's event file rotates at its size limit (deploy/containers.conf raises it): say if it did.
    events_note = "" if sum(starts.values()) >= sum(containers.values()) else \
        f"; only {sum(starts.values())} podman start events for {sum(containers.values())} containers (a start " \
        f"cut short by a podman restart may log none; or the event file rotated)"
    return Check("tasks", not v, f"{n} tasks: {ended} ended with one terminal state, {running} still running "
                                 f"and known, {never} never committed{events_note}", v)


def _matches(op: str, rec: dict, events: list[ev.Event], framework_ids: set[str]) -> bool:
    for e in events:
        if op == "launch" and isinstance(e, ev.OffersAccepted) and e.framework_id in framework_ids:
            ids = {t.task_id for t in e.tasks} | {r.task_id for r in e.rejected}
            if set(rec["task_ids"]) <= ids:
                return True
        elif op == "decline" and isinstance(e, ev.OffersDeclined) and rec["offer_id"] in e.offer_ids:
            return True
        elif op == "ack" and isinstance(e, ev.StatusAcknowledged) \
                and (e.task_id, e.uuid) == (rec["task_id"], rec["uuid"]):
            return True
        elif op == "kill" and isinstance(e, ev.TaskKillRequested) and e.task_id == rec["task_id"]:
            return True
    return False  # an op without a matcher here never counts as found


def check_acknowledged(facts: LogFacts, history: list[dict], framework_ids: set[str],
                       digests: dict[str, tuple[int, str]]) -> Check:
    v: list[str] = []
    acked = [r for r in history if r["type"] == "ok" and r.get("index")]
    if not acked:
        v.append("no call was acknowledged with a log index (Drover-Log-Index): nothing to check")
    last = facts.envelopes[-1].index if facts.envelopes else 0
    for r in acked:
        first, end = r["index"]
        if end > last:
            v.append(f"{r['op']} acknowledged at {first}-{end}, beyond the final log's end ({last})")
        elif not _matches(r["op"], r, facts.at(first, end), framework_ids):
            found = [e.__struct_config__.tag for e in facts.at(first, end)]
            v.append(f"{r['op']} {_what(r)} acknowledged at {first}-{end}, but the final log has {found} there")
    subscribed = {e.framework_id for env in facts.envelopes if isinstance(e := env.event, ev.FrameworkSubscribed)}
    for r in history:
        if r["type"] == "ok" and r.get("op") == "subscribe" and r.get("framework_id") not in subscribed:
            v.append(f"SUBSCRIBED as {r.get('framework_id')} but no FRAMEWORK_SUBSCRIBED for it in the final log")
    distinct = {d for d in digests.values()}
    if len(distinct) != 1:
        v.append("replica logs differ: " + ", ".join(f"{k}: {n} events, sha256 {h[:12]}"
                                                      for k, (n, h) in sorted(digests.items())))
    n, h = next(iter(distinct)) if len(distinct) == 1 else (last, "")
    return Check("acknowledged", not v, f"{len(acked)} acknowledged calls found in the final log; "
                                        f"{len(digests)} replica logs " +
                 (f"identical ({n} events, sha256 {h[:12]})" if len(distinct) == 1 else "differ"), v)


def _what(r: dict) -> str:
    for key in ("task_ids", "task_id", "offer_id"):
        if key in r:
            return f"{key}={r[key]}"
    return ""


def check_replay(stores: dict[str, Path]) -> Check:
    v: list[str] = []
    for rid, path in sorted(stores.items()):
        proc = subprocess.run([sys.executable, "-m", "drover.cli", "replay", "verify", "--store", str(path), "--json"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            v.append(f"{rid}: drover replay verify exited {proc.returncode}: "
                     f"{(proc.stdout.strip() or proc.stderr.strip())[-400:]}")
    return Check("replay", not v, f"drover replay verify on {len(stores)} replicas: "
                                  f"{len(stores) - len(v)} passed", v)


def check_recovery(faults: list) -> Check:
    v = [f"{f.kind} of {f.target}: the cluster did not become whole again ({'; '.join(f.notes)})"
         for f in faults if f.recovered is False]
    return Check("recovery", not v, f"{len(faults)} faults, {sum(1 for f in faults if f.recovered)} recovered", v)


def check_liveness(history: list[dict]) -> Check:
    # The newest instance speaks for the workload (older ones were killed or failed over).
    newest = max((r["inst"] for r in history), default=None)
    ends = [r for r in history if r["type"] == "end" and r["inst"] == newest]
    last = ends[-1] if ends else None
    v = []
    if last is None:
        v.append("the workload never finished")
    elif last.get("outcome") != "drained":
        v.append(f"the workload ended with {last.get('outcome')!r}; open tasks: {last.get('open_tasks', [])[:10]}")
    return Check("liveness", not v, "the workload drained: every task it launched ended" if not v else
                 "the workload did not drain", v)


def check_service(history: list[dict]) -> Check:
    """The workload's service tasks (drover/chaos/workload.py): launched, healthy at least once, every healthy report
    confirmed by the workload's own HTTP probe (one abandoned because the task was ending does not count), and
    none ended by a failing health check (a terminal update with `healthy: false`)."""
    v: list[str] = []
    services = [r["service"] for r in history if r["type"] == "invoke" and r.get("op") == "launch"
                and r.get("service")]
    healthy = {r["task_id"] for r in history if r["type"] == "event" and r.get("event") == "UPDATE"
               and r["task_id"] in services and r.get("healthy") is True}
    probes = collections.Counter((r["task_id"], r["outcome"]) for r in history if r["type"] == "probe")
    if not services:
        v.append("no service task was launched (no offer with ports?)")
    elif not healthy:
        v.append(f"no service task was ever reported healthy ({len(services)} launched)")
    for r in history:
        if r["type"] == "probe" and r["outcome"] == "failed":
            v.append(f"{r['task_id']}: reported healthy, but {r.get('attempts')} HTTP requests to it failed "
                     f"(last: {r.get('error')})")
        elif (r["type"] == "event" and r.get("event") == "UPDATE" and r["task_id"] in services
              and r["state"] in TERMINAL_STATES and r.get("healthy") is False):
            v.append(f"{r['task_id']}: killed by its health check ({r['state']}: {r.get('message')})")
    ok_probes = sum(n for (_, outcome), n in probes.items() if outcome == "ok")
    return Check("service", not v, f"{len(set(services))} service tasks, {len(healthy)} reported healthy, "
                                   f"{ok_probes} healthy reports confirmed over HTTP", v)


def _has_volume(resources, role: str, volume_id: str) -> bool:
    return any(r.persistence is not None and r.persistence.id == volume_id and r.role == role for r in resources)


def checkpointed_volumes(work_dir: Path) -> tuple[set[tuple[str, str]] | None, str]:
    """(role, persistence id) of the volumes an agent checkpointed (its meta/resources.json), or None and why."""
    path = Path(work_dir) / "meta" / "resources.json"
    if not path.exists():
        return set(), ""
    try:
        return set(Resources(msgspec.json.decode(path.read_bytes(), type=list[Resource])).persistence_ids()), ""
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
        return None, f"{path}: {e}"


def check_stateful(history: list[dict], facts: LogFacts, agent_work_dirs: dict[str, Path],
                   role: str = ROLE) -> Check:
    """The workload's stateful writers (drover/chaos/workload.py) and their persistent volume.

    From the history: the volume was made and at least one write finished; no writer found a finished write
    missing from the volume (exit 7) or the volume not mounted (exit 8). From the final log: the volume was created
    on one agent, exists there (and nowhere else) at the end, every writer ran there, no two writers were live at
    once (a non-shared volume is never held twice: from its OFFERS_ACCEPTED to the status that made it terminal),
    and it was only ever offered to `role`. From the agents' work dirs: the volumes each agent checkpointed
    (meta/resources.json) are the log's (the agent's `dynamic`); the volume's `log` holds every finished write
    in order. `agent_work_dirs`: agent id -> work dir."""
    v: list[str] = []
    launches = [r for r in history if r["type"] == "invoke" and r.get("op") == "launch" and r.get("stateful")]
    seqs = {r["stateful"]: r["seq"] for r in launches}
    expects = {r["stateful"]: r.get("expect") for r in launches}
    vids = sorted({r["volume"] for r in launches})
    finals: dict[str, str] = {}
    finished: list[int] = []
    for r in history:
        if r["type"] != "event" or r.get("event") != "UPDATE" or r["task_id"] not in seqs:
            continue
        tid, state = r["task_id"], r["state"]
        if state in TERMINAL_STATES:
            finals.setdefault(tid, state)
        if state == "TASK_FINISHED" and seqs[tid] not in finished:
            finished.append(seqs[tid])
        msg = r.get("message") or ""
        if state == "TASK_FAILED" and msg == f"Command exited with status {LOST_WRITE_EXIT}":
            v.append(f"{tid}: writes lost: the volume's log lacked some of the finished writes {expects.get(tid)} "
                     f"({state}: {msg})")
        elif state == "TASK_FAILED" and msg == f"Command exited with status {NO_VOLUME_EXIT}":
            v.append(f"{tid}: the volume was not mounted at {VOLUME_PATH} ({state}: {msg})")
    if not launches:
        v.append("no stateful task was launched")
    elif len(vids) > 1:
        v.append(f"the workload used more than one volume id: {vids}")
    vid = vids[0] if vids else None

    # The log: where the volume was created, who it was offered to, which tasks held it and when.
    offer_agents: dict[str, str] = {}
    created: list[tuple[int, str | None]] = []
    holders: list[tuple[int, str, str]] = []  # (OFFERS_ACCEPTED index, task id, agent id)
    offered = 0
    for env in facts.envelopes:
        e = env.event
        if isinstance(e, ev.OffersMade):
            for o in e.offers:
                offer_agents[o.offer_id] = o.agent_id
                if vid is not None and _has_volume(o.resources, role, vid):
                    offered += 1
                if vid is not None and o.role != role and any(
                        r.persistence is not None and r.persistence.id == vid for r in o.resources):
                    v.append(f"offer {o.offer_id} at {env.index} held the volume {vid} but went to role "
                             f"{o.role!r} (framework {o.framework_id})")
        elif isinstance(e, ev.OffersAccepted) and vid is not None:
            if any(op.kind == "CREATE" and _has_volume(op.resources, role, vid) for op in e.operations):
                created.append((env.index, next((offer_agents[o] for o in e.offer_ids if o in offer_agents),
                                                next((t.agent_id for t in e.tasks), None))))
            holders += [(env.index, t.task_id, t.agent_id) for t in e.tasks
                        if _has_volume(t.resources, role, vid)]
        elif isinstance(e, ev.AgentOperationsApplied) and vid is not None:
            if any(op.kind == "CREATE" and _has_volume(op.resources, role, vid) for op in e.operations):
                created.append((env.index, e.agent_id))
    state = facts.state or State()
    agents = {**state.unreachable_agents, **state.agents}
    where = sorted(aid for aid, a in agents.items() if vid is not None and _has_volume(a.dynamic, role, vid))
    if launches and not created:
        v.append(f"the volume {vid} was never created in the log")
    elif launches and not finished:
        v.append(f"no write finished ({len(launches)} writers launched, ended "
                 f"{dict(collections.Counter(finals.values()))})")
    if len(created) > 1:
        v.append(f"the volume {vid} was created more than once: at {[i for i, _ in created]} on "
                 f"{[a for _, a in created]}")
    home = created[0][1] if created else None
    if created and where != [home]:
        v.append(f"the volume {vid} was created on {home} but the final state has it on {where or 'no agent'}")
    for index, tid, aid in holders:
        if home is not None and aid != home:
            v.append(f"{tid} (OFFERS_ACCEPTED at {index}) used the volume on {aid}, not on {home} where it lives")
    spans = sorted((index, facts.ended.get(tid), tid) for index, tid, _ in holders)
    for i, (start, end, tid) in enumerate(spans):
        for start2, _, tid2 in spans[i + 1:]:
            if end is None or start2 < end:
                v.append(f"{tid} and {tid2} held the volume at once: {tid2} accepted at {start2} while {tid} was "
                         f"live (accepted at {start}, " + (f"terminal at {end})" if end else "never terminal)"))

    # The agents' own view.
    checked = 0
    for aid, a in sorted(agents.items()):
        wd = agent_work_dirs.get(aid)
        if wd is None:
            v.append(f"agent {aid}: no work dir known to compare its checkpointed volumes with")
            continue
        mine, why = checkpointed_volumes(Path(wd))
        if mine is None:
            v.append(f"agent {aid}: cannot read its checkpointed resources: {why}")
            continue
        logged = set(Resources(a.dynamic).persistence_ids())
        checked += 1
        if mine != logged:
            v.append(f"agent {aid}: the log has volumes {sorted(logged)}, its meta/resources.json "
                     f"{sorted(mine)}")
    content = ""
    if home is not None and home in agent_work_dirs and vid is not None:
        path = Path(agent_work_dirs[home]).joinpath(*volume_components(role, vid), "log")
        try:
            lines = path.read_text().split()
        except OSError as e:
            content = f"; its log not read ({e.strerror})"
        else:
            content = f"; its log holds {len(lines)} writes"
            it = iter(lines)
            if not all(str(n) in it for n in finished):  # a subsequence, in order
                v.append(f"the volume's log {lines[-50:]} lacks some of the finished writes {finished}, or has "
                         f"them out of order")
    outcomes = ", ".join(f"{n} {s}" for s, n in sorted(collections.Counter(finals.values()).items()))
    return Check("stateful", not v, f"{len(launches)} writers ({outcomes or 'none ended'}), {len(finished)} writes "
                                    f"finished; volume {vid} on {home}, offered {offered} times; {checked} agents "
                                    f"agree with the log{content}", v)
