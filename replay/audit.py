"""Audit queries over a replica's event store: who got which resources, when, and why.

Every query folds the store's events once, in index order, with the master's own fold
(`master.state.apply`), and observes each step: per event type, an observer notes what the fold
did (an offer left the state, a task got a status, a framework disconnected) together with what
only the log knows (the index and leader time of the step, acknowledgements, the allocator's
explanations). Nothing is decided here, so the audit cannot drift from the fold: a task's
statuses and state are the fold's own objects. The one thing re-run is an allocation decision whose
explanation was not recorded (the leader records offers compactly): for the `offers` and
`allocations` queries it is re-derived from the state just before it (`master.allocation.explanation`,
the allocator run with the recorded seed, candidates and time), exactly as it would have been recorded.

Queries (each returns a list of plain dicts, ready for JSON; times are the leader's, ISO 8601 UTC):
- `offers`: one record per offer: who, what, where, when it was made, how it ended (`accepted`,
  `declined`, `rescinded:<reason>`, `dropped:<why>` or `outstanding`), when, how fast, what it
  launched, and from the allocation decision why it went to that framework.
- `allocations`: one record per `OFFERS_MADE` decision, with per agent (and stage) the candidates
  in the order the allocator walked them, their shares, and what became of each.
- `tasks`: one record per task with its whole status history and acknowledgements.
- `frameworks`: one record per framework: its subscription timeline and offer/task counts.
- `reservations`: one record per RESERVE / UNRESERVE / CREATE / DESTROY the fold applied, framework-made
  (in an ACCEPT) or operator-made (`AGENT_OPERATIONS_APPLIED`), with who did it.
- `volumes`: one record per persistent volume incarnation (agent, role, persistence id; a DESTROY then a
  new CREATE of the same id is a new one): created and destroyed when and by whom, the tasks that used it.

Filters (`Filters`): framework, role, agent, since, until, and volume (a persistence id: `reservations`
and `volumes` only). A record is kept when it concerns the framework/role/agent and its lifetime overlaps
[since, until] (an offer: made .. ended; a task: launched .. ended; a decision or an operation: its instant;
a framework: first subscription .. removal; a volume: created .. destroyed). Ids may be given without the
cluster prefix (`0000`, `S1`, `O12`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import msgspec

from eventstore import events as ev
from eventstore.resources import Resource, Resources, conversion
from eventstore.store import EventStore, StoreCorrupt
from master.allocation import allocator_of, explanation
from master.state import TERMINAL_STATES, Framework, Offer, State, Task, apply, net_reservations, tasks_on_agent
from replay.reader import FoldError, StoreError, _no_gc, decode_payload, open_store, resolve_store_path
from replay.state_view import printable

QUERIES = ("offers", "allocations", "tasks", "frameworks", "reservations", "volumes")
VOLUME_QUERIES = ("reservations", "volumes")  # the queries that follow resource operations (and take --volume)
FORMATS = ("table", "json", "csv")

# Record fields holding a leader timestamp (seconds) while computing; rendered as ISO 8601.
TIME_KEYS = frozenset({"made_at", "answered_at", "time", "launched_at", "ended_at", "kill_requested_at",
                       "acknowledged_at", "agent_time", "subscribed_at", "removed_at", "created_at",
                       "destroyed_at"})


class AuditError(ValueError):
    """A bad query parameter; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


# ---- time -------------------------------------------------------------------------------------


def parse_time(text: str, param: str = "since") -> float:
    """ISO 8601 (no zone = UTC; a date alone = its midnight UTC) or seconds since the epoch."""
    s = str(text).strip()
    if not s:
        raise AuditError(param, "expected an ISO 8601 time or epoch seconds, got an empty value")
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        # Within what a datetime can show (years 1..9999): beyond, rendering a time would fail.
        if not math.isfinite(v) or not -62_135_596_800.0 <= v <= 253_402_300_799.0:
            raise AuditError(param, f"expected an ISO 8601 time or epoch seconds (years 1 to 9999), "
                                    f"got {printable(str(text))[:64]!r}")
        return v
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise AuditError(param, f"expected an ISO 8601 time (2026-11-25T10:04:20Z) or epoch seconds, "
                                f"got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    v = dt.timestamp()
    # An offset can carry a time out of years 1..9999 in UTC (0001-01-01T00:00+01:00): rendering it would fail.
    if not -62_135_596_800.0 <= v <= 253_402_300_799.0:
        raise AuditError(param, f"expected a time in years 1 to 9999 (UTC), got {printable(str(text))[:64]!r}")
    return v


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Filters:
    framework: str | None = None
    role: str | None = None
    agent: str | None = None
    since: float | None = None
    until: float | None = None
    volume: str | None = None  # a persistence id (`reservations` and `volumes` only)

    @classmethod
    def parse(cls, framework: str | None = None, role: str | None = None, agent: str | None = None,
              since: str | None = None, until: str | None = None, volume: str | None = None) -> "Filters":
        f = cls(framework=framework or None, role=role or None, agent=agent or None,
                since=None if since in (None, "") else parse_time(since, "since"),
                until=None if until in (None, "") else parse_time(until, "until"), volume=volume or None)
        if f.since is not None and f.until is not None and f.until < f.since:
            raise AuditError("until", f"{iso(f.until)} is before since ({iso(f.since)})")
        return f

    def overlaps(self, start: float, end: float | None) -> bool:
        if self.until is not None and start > self.until:
            return False
        if self.since is not None and end is not None and end < self.since:
            return False
        return True

    def at(self, ts: float) -> bool:
        return self.overlaps(ts, ts)


def _id_matcher(value: str | None, cluster_id: str | None) -> Callable[[str | None], bool]:
    if value is None:
        return lambda _id: True
    names = {value}
    if cluster_id and not value.startswith(cluster_id + "-"):
        names.add(f"{cluster_id}-{value}")
    return lambda _id: _id in names


def _res(resources) -> str:
    return Resources(resources).format()


# ---- the scan: the real fold, observed ----------------------------------------------------------
#
# The audit folds the log with `master.state.apply`, the fold every replica runs, and derives its records
# by watching each step. Per event type, an observer is a pair:
#   capture(state_before, event) -> before   the few facts the step may change (None: nothing needed);
#   observe(book, before, envelope, state_after)   notes, in the book, what the fold did.
# Every event type has one (checked below, as the fold checks its own table), and nothing is decided here:
# whether an offer ended, which statuses a task got, whether a framework disconnected is read off the
# fold's state. The book keeps references to the fold's own Task and Framework objects, so a task's
# statuses and state are the fold's; it adds only what the log knows and the state does not keep: the
# index and leader time of each step, acknowledgements, offer outcomes, the allocator's explanations.


class _TaskRecord:
    """One task: the fold's `Task` object (kept here after the fold lets it go), how it came to be, and
    per status the fold appended to it: [log index, leader time, acknowledged_at]."""

    __slots__ = ("task", "origin", "offer_ids", "launched_index", "kill_requested_at", "seen", "first_terminal")

    def __init__(self, task: Task, origin: str, offer_ids: list[str], launched_index: int) -> None:
        self.task = task
        self.origin = origin
        self.offer_ids = offer_ids
        self.launched_index = launched_index
        self.kill_requested_at: float | None = None
        self.seen: list[list] = []
        self.first_terminal: float | None = None  # when it got its first terminal status

    def sync(self, env: ev.Envelope) -> None:
        """The statuses the fold appended in this step happened at this index and time."""
        statuses, seen = self.task.statuses, self.seen
        if len(statuses) > len(seen):
            for st in statuses[len(seen):]:
                seen.append([env.index, env.ts, None])
                if self.first_terminal is None and st.state in TERMINAL_STATES:
                    self.first_terminal = env.ts

    def ended_at(self) -> float | None:
        """When the fold made it terminal: with its first terminal status (the fold changes a task's state
        only with a status of that state, and never changes a terminal one)."""
        return self.first_terminal if self.task.state in TERMINAL_STATES else None

    def record(self) -> dict:
        """The task record: its spec, state and statuses as the fold has them, with what the log adds."""
        t = self.task
        spec = t.spec
        return {"framework_id": t.framework_id, "task_id": spec.task_id, "name": spec.name,
                "agent_id": spec.agent_id, "role": spec.role, "resources": _res(spec.resources),
                "origin": self.origin, "offer_ids": self.offer_ids, "launched_at": t.launched_at,
                "launched_index": self.launched_index, "state": t.state, "ended_at": self.ended_at(),
                "kill_requested_at": self.kill_requested_at,
                "statuses": [{"state": st.state, "source": st.source, "reason": st.reason, "message": st.message,
                              "time": seen[1], "index": seen[0], "agent_time": st.timestamp, "uuid": st.uuid,
                              "acknowledged_at": seen[2]}
                             for st, seen in zip(t.statuses, self.seen, strict=True)]}


class _Book:
    """What the queries are built from, noted while the fold runs (raw seconds for times)."""

    def __init__(self, kind: str = "allocations") -> None:
        # Only what the query needs: explanations for offers and allocations, decision records for allocations.
        self.explain = kind in ("offers", "allocations")
        self.keep_allocations = kind == "allocations"
        self.cluster_id: str | None = None
        self.offers: dict[str, dict] = {}  # every offer, in the order made
        self.live_offers: dict[str, dict] = {}  # the fold's State.offers, as records
        self.allocations: list[dict] = []
        self.tasks: list[_TaskRecord | dict] = []  # in the order launched; a rejected task is a finished dict
        self.by_task: dict[int, _TaskRecord] = {}  # id() of the fold's Task -> its record (the record keeps it alive)
        self.frameworks: dict[str, dict] = {}
        # Resource operations and volumes: only for the queries that show them.
        self.track_ops = kind in VOLUME_QUERIES
        self.operations: list[dict] = []  # every applied operation, in log order
        self.volumes: list[dict] = []  # every volume incarnation, in the order created
        self.live_volumes: dict[tuple[str, str, str], dict] = {}  # (agent, role, persistence id) -> incarnation
        self.incarnations: dict[tuple[str, str, str], int] = {}  # how many each key has had

    # -- offers
    def end_offer(self, oid: str, outcome: str, env: ev.Envelope, refuse: float | None = None,
                  tasks: list[str] | None = None) -> None:
        o = self.live_offers.pop(oid, None)
        if o is None:
            return
        o["outcome"] = outcome
        o["answered_at"] = env.ts
        o["answered_index"] = env.index
        o["latency"] = round(env.ts - o["made_at"], 6)
        if refuse is not None:
            o["refuse_seconds"] = refuse
        if tasks is not None:
            o["tasks"] = tasks

    def end_gone_offers(self, state: State, env: ev.Envelope, outcome: str) -> None:
        """The offers the fold no longer holds ended with this step."""
        offers = state.offers
        for oid in [oid for oid in self.live_offers if oid not in offers]:
            self.end_offer(oid, outcome, env)

    # -- frameworks
    def timeline(self, fid: str, env: ev.Envelope, event: str, detail: str = "") -> None:
        fw = self.frameworks.get(fid)
        if fw is not None:
            fw["timeline"].append({"time": env.ts, "index": env.index, "event": event, "detail": detail})

    # -- tasks
    def track(self, task: Task, env: ev.Envelope, origin: str, offer_ids: list[str]) -> None:
        if id(task) in self.by_task:
            return
        rec = _TaskRecord(task, origin, offer_ids, env.index)
        rec.sync(env)
        self.by_task[id(task)] = rec
        self.tasks.append(rec)
        if self.track_ops:
            self.uses_volumes(rec)

    # -- resource operations and volumes
    def operation(self, plan: "_OpsPlan", kind: str, res: Resources, env: ev.Envelope) -> None:
        """One operation the fold applied (`plan` says where and by whom)."""
        self.operations.append({
            "index": env.index, "time": env.ts, "agent_id": plan.agent_id,
            "role": ",".join(sorted({r.role for r in res})), "kind": kind, "resources": res.format(),
            "actor": plan.actor, "actor_type": plan.actor_type, "framework_id": plan.framework_id,
            "principal": plan.principal, "via": plan.via, "_pids": {r.persistence.id for r in res if r.persistence}})
        if kind == "CREATE":
            for r in res:
                if r.persistence is not None:
                    self.volume_created(plan, r, env)
        elif kind == "DESTROY":
            for r in res:
                if r.persistence is not None:
                    self.volume_destroyed(plan, r, env)

    def _incarnation(self, agent_id: str, r: Resource) -> dict:
        assert r.persistence is not None
        key = (agent_id, r.role, r.persistence.id)
        n = self.incarnations[key] = self.incarnations.get(key, 0) + 1
        vol = {"agent_id": agent_id, "role": r.role, "persistence_id": r.persistence.id, "incarnation": n,
               "size": r.scalar, "container_path": r.volume.container_path if r.volume else None,
               "mode": r.volume.mode if r.volume else None, "shared": r.shared, "principal": r.persistence.principal,
               "created_at": None, "created_index": None, "created_by": None, "status": "live",
               "destroyed_at": None, "destroyed_index": None, "destroyed_by": None, "_uses": [], "_actors": set()}
        self.volumes.append(vol)
        self.live_volumes[key] = vol
        return vol

    def volume_created(self, plan: "_OpsPlan", r: Resource, env: ev.Envelope) -> None:
        vol = self._incarnation(plan.agent_id, r)
        vol.update(created_at=env.ts, created_index=env.index, created_by=plan.actor)
        if plan.framework_id is not None:
            vol["_actors"].add(plan.framework_id)

    def volume_destroyed(self, plan: "_OpsPlan", r: Resource, env: ev.Envelope) -> None:
        assert r.persistence is not None
        vol = self.live_volumes.pop((plan.agent_id, r.role, r.persistence.id), None)
        if vol is None:  # not created in this log (never so in a log a leader wrote from its start)
            vol = self._incarnation(plan.agent_id, r)
            del self.live_volumes[(plan.agent_id, r.role, r.persistence.id)]
        vol.update(status="destroyed", destroyed_at=env.ts, destroyed_index=env.index, destroyed_by=plan.actor)
        if plan.framework_id is not None:
            vol["_actors"].add(plan.framework_id)

    def uses_volumes(self, rec: _TaskRecord) -> None:
        """A task the fold holds now: the live volumes it mounts (its own, or its task group executor's)."""
        spec = rec.task.spec
        res = list(spec.resources) + (list(spec.executor.resources) if spec.executor is not None else [])
        for r in res:
            if r.persistence is None:
                continue
            vol = self.live_volumes.get((spec.agent_id, r.role, r.persistence.id))
            if vol is None:  # a volume this log never created (an adopted task's, say)
                vol = self._incarnation(spec.agent_id, r)
            if not any(u is rec for u, _ in vol["_uses"]):
                vol["_uses"].append((rec, r))

    def sync(self, task: Task | None, env: ev.Envelope) -> None:
        rec = self.by_task.get(id(task)) if task is not None else None
        if rec is not None:
            rec.sync(env)


def _scan(envelopes: Iterable[ev.Envelope], kind: str = "allocations") -> tuple[_Book, State]:
    """Fold `envelopes` from the empty state with the master's fold, noting what each step did."""
    state = State()
    book = _Book(kind)
    table = _OBSERVERS
    fold = apply
    made_type = ev.OffersMade
    explain = book.explain
    for env in envelopes:
        capture, observe = table[type(env.event)]
        if explain and type(env.event) is made_type:
            before = _explanation(state, env)  # from the state just before the decision
        else:
            before = capture(state, env.event) if capture is not None else None
        try:
            fold(state, env)
        except Exception as e:
            raise FoldError(f"index {env.index}: folding {ev.event_type(env.event)} failed: "
                            f"{type(e).__name__}: {e}", env.index) from e
        observe(book, before, env, state)
        if len(book.live_offers) != len(state.offers):  # an event type that ends offers unannounced
            book.end_gone_offers(state, env, "dropped:" + ev.event_type(env.event).lower())
    book.cluster_id = state.cluster_id
    return book, state


def _envelopes(store: EventStore, chunk: int = 4096) -> Iterator[ev.Envelope]:
    """The store's events in index order, a chunk of rows at a time from one cursor. A gap raises
    `StoreCorrupt`; a payload that does not decode, `replay.reader.PayloadError` (naming the index)."""
    decode = ev.decode_event  # the master's own decoder, value rules included
    envelope = ev.Envelope
    expected = 1
    fetch = store.db.execute("SELECT idx, term, ts, payload FROM events ORDER BY idx").fetchmany
    while rows := fetch(chunk):
        for idx, term, ts, payload in rows:
            if idx != expected:
                raise StoreCorrupt(f"index {expected} is missing from {store.path} (next stored index is {idx})")
            try:
                event = decode(payload)
            except (msgspec.DecodeError, TypeError, ev.InvalidEvent, ev.UnknownEvent):
                decode_payload(idx, payload)  # raises PayloadError with the reason
                raise  # pragma: no cover
            yield envelope(idx, term, ts, event)
            expected += 1


# -- the observers, in the fold's order ------------------------------------------------------------


def _cluster_created(b: _Book, _, env: ev.Envelope, s: State) -> None:
    pass  # the cluster id is the fold's (State.cluster_id)


def _connected_frameworks(s: State, e: ev.LeaderElected) -> list[str]:
    return [fid for fid, fw in s.frameworks.items() if fw.connected]


def _leader_elected(b: _Book, connected: list[str], env: ev.Envelope, s: State) -> None:
    b.end_gone_offers(s, env, "dropped:leader_change")
    e = env.event
    for fid in connected:
        fw = s.frameworks.get(fid)
        if fw is not None and not fw.connected:
            b.timeline(fid, env, "disconnected", f"leader change (new leader {e.http}, term {e.term})")


def _known_framework(s: State, e) -> Framework | None:
    return s.frameworks.get(e.framework_id)


def _framework_subscribed(b: _Book, old: Framework | None, env: ev.Envelope, s: State) -> None:
    e = env.event
    fid = e.framework_id
    fw = s.frameworks[fid]
    roles = list(fw.info.roles)
    rec = b.frameworks.get(fid)
    if old is not None:
        b.end_gone_offers(s, env, "dropped:framework_resubscribed")
        b.timeline(fid, env, "resubscribed", "" if roles == list(old.info.roles) else "roles " + ",".join(roles))
    else:
        if rec is None:
            rec = b.frameworks[fid] = {"framework_id": fid, "subscribed_at": fw.registered_at, "removed_at": None,
                                       "removal_reason": None, "timeline": [], "_roles_ever": set()}
        rec["removed_at"] = rec["removal_reason"] = None
        detail = "roles " + ",".join(roles)
        if fw.suppressed_roles:
            detail += "; suppressed " + ",".join(fw.suppressed_roles)
        b.timeline(fid, env, "subscribed", detail)
    rec["_fw"] = fw
    rec["_roles_ever"].update(roles)


def _framework_disconnected(b: _Book, _, env: ev.Envelope, s: State) -> None:
    fid = env.event.framework_id
    if fid in s.frameworks:
        b.end_gone_offers(s, env, "dropped:framework_disconnected")
        b.timeline(fid, env, "disconnected")


def _framework_tasks(s: State, e: ev.FrameworkRemoved) -> list[Task] | None:
    if e.framework_id not in s.frameworks:
        return None
    return list(s.tasks.get(e.framework_id, {}).values())


def _framework_removed(b: _Book, tasks: list[Task] | None, env: ev.Envelope, s: State) -> None:
    if tasks is None:  # not a framework the fold knew
        return
    e = env.event
    b.end_gone_offers(s, env, "dropped:framework_removed")
    for task in tasks:
        b.sync(task, env)  # the master's TASK_KILLED, for those still running
    rec = b.frameworks.get(e.framework_id)
    if rec is not None:
        rec.update(removed_at=s.removed_frameworks.get(e.framework_id, env.ts), removal_reason=e.reason)
        b.timeline(e.framework_id, env, "removed", e.reason)


def _roles_suppressed(b: _Book, _, env: ev.Envelope, s: State) -> None:
    e = env.event
    if e.framework_id in s.frameworks:
        b.timeline(e.framework_id, env, "suppressed", ",".join(e.roles))


def _roles_revived(b: _Book, _, env: ev.Envelope, s: State) -> None:
    e = env.event
    if e.framework_id in s.frameworks:
        b.timeline(e.framework_id, env, "revived", ",".join(e.roles))


def _nothing(b: _Book, _, env: ev.Envelope, s: State) -> None:
    """Nothing an audit record shows changes (agents' totals, weights, quotas; an agent's disconnection
    ends no offer by itself: they are rescinded by their own event)."""


def _tasks_of_reachable_agent(s: State, e: ev.AgentUnreachable) -> list[Task]:
    """The tasks that may get a status when their agent becomes unreachable."""
    return tasks_on_agent(s, e.agent_id) if e.agent_id in s.agents else []


def _tasks_of_unreachable_agent(s: State, e: ev.AgentReregistered) -> list[Task]:
    """The tasks that may get a status when their unreachable agent comes back."""
    return tasks_on_agent(s, e.agent_id) if e.agent_id in s.unreachable_agents else []


def _agent_unreachable(b: _Book, tasks: list[Task], env: ev.Envelope, s: State) -> None:
    b.end_gone_offers(s, env, "dropped:agent_unreachable")
    for task in tasks:
        b.sync(task, env)


def _agent_reregistered(b: _Book, tasks: list[Task], env: ev.Envelope, s: State) -> None:
    b.end_gone_offers(s, env, "dropped:agent_resources_changed")
    for task in tasks:
        b.sync(task, env)  # back from unreachable: the state it was reported in, or TASK_GONE
    for report in env.event.tasks:
        task = s.task(report.framework_id, report.task_id)
        if task is not None and id(task) not in b.by_task:  # adopted: a task the log never saw launched
            b.track(task, env, "adopted", [])


def _explanation(s: State, env: ev.Envelope) -> list[ev.AgentDecision]:
    """The decision's explanation: recorded, or re-derived by re-running it (`master.allocation.explanation`);
    none (the offers are shown unexplained) when the re-run does not give the recorded offers."""
    try:
        decisions = explanation(s, env)
    except Exception:  # a log no allocator run could have written: its offers stay unexplained, the audit goes on
        decisions = None
    return decisions or []


def _offers_made(b: _Book, decisions: list[ev.AgentDecision] | None, env: ev.Envelope, s: State) -> None:
    e = env.event
    explained: dict[str, dict] = {}
    agents: list[dict] = []
    formatted: dict[str, str] = {}
    if b.explain:
        formatted = {o.offer_id: _res(o.resources) for o in e.offers}
        agents, explained = _explain(e, decisions or [], formatted)
    if b.keep_allocations:
        b.allocations.append({"index": env.index, "time": env.ts, "trigger": e.trigger, "seed": e.seed,
                              "candidates": "all" if e.candidates is None else list(e.candidates),
                              "offer_count": len(e.offers), "agents": agents})
    offers = s.offers
    for rec in e.offers:
        o = offers.get(rec.offer_id)
        if o is None or rec.offer_id in b.live_offers:
            continue
        why = explained.get(o.offer_id, {})
        r = {"offer_id": o.offer_id, "framework_id": o.framework_id, "role": o.role, "agent_id": o.agent_id,
             "resources": formatted.get(o.offer_id, o.resources), "made_at": o.made_at, "index": env.index,
             "outcome": "outstanding",
             "answered_at": None, "answered_index": None, "latency": None, "tasks": [], "refuse_seconds": None,
             "trigger": e.trigger, "stage": why.get("stage"), "share": why.get("share"),
             "allocations": why.get("allocations"), "role_share": why.get("role_share"),
             "runner_up": why.get("runner_up"), "runner_up_share": why.get("runner_up_share")}
        b.offers[o.offer_id] = b.live_offers[o.offer_id] = r


def _offers_rescinded(b: _Book, _, env: ev.Envelope, s: State) -> None:
    e = env.event
    for oid in e.offer_ids:
        if oid not in s.offers:
            b.end_offer(oid, f"rescinded:{e.reason}", env)


def _offers_declined(b: _Book, _, env: ev.Envelope, s: State) -> None:
    e = env.event
    for oid in e.offer_ids:
        if oid not in s.offers:
            b.end_offer(oid, "declined", env, refuse=e.refuse_seconds)


class _OpsPlan:
    """The resource operations of one event, as the fold will apply them to what holds them: each
    (kind, resources, applied). Captured from the state before the step; `_operations` checks it against the
    state after (the agent's total and checkpointed resources must have moved exactly by the applied ones)."""

    __slots__ = ("agent_id", "actor", "actor_type", "framework_id", "principal", "via", "steps", "total", "dynamic")

    def __init__(self, agent_id: str, actor_type: str, framework_id: str | None, principal: str | None,
                 via: str, agent_before) -> None:
        self.agent_id = agent_id
        self.actor_type = actor_type
        self.framework_id = framework_id
        self.principal = principal
        self.via = via
        if actor_type == "framework":
            self.actor = f"framework {framework_id} " + (f"(principal {principal})" if principal is not None
                                                         else "(no principal)")
        else:
            self.actor = "operator " + (principal if principal is not None else "(unauthenticated)")
        self.steps: list[tuple[str, Resources, bool]] = []
        # What the agent's total and checkpointed resources become if the applied steps are what the fold applies.
        self.total: Resources | None = None if agent_before is None else agent_before.total()
        self.dynamic: Resources | None = None if agent_before is None else Resources(agent_before.dynamic)

    def walk(self, ops: Iterable[tuple[str, Resources]], holder: Resources | None) -> None:
        """The fold's rule: an operation applies when what holds the resources (the offers, or the agent's
        unallocated resources) holds what it consumes; what it yields is held in its place."""
        for kind, res in ops:
            consumed, converted = conversion(kind, res)
            applied = holder is not None and holder.contains(consumed)
            if applied:
                assert holder is not None and self.total is not None and self.dynamic is not None
                holder = holder - consumed + converted
                self.total = self.total - consumed + converted
                self.dynamic = self.dynamic - consumed.reserved() + converted.reserved()
            self.steps.append((kind, res, applied))

    def legacy(self, reserved: Resources, unreserved: Resources, holder: Resources | None) -> None:
        """An ACCEPT written before `operations`: the net change of its reserved/unreserved lists, all or nothing,
        shown as its RESERVE row and its UNRESERVE row (their order was not recorded)."""
        to_role, to_star = net_reservations(reserved, unreserved)
        consumed = to_role.as_unreserved() + to_star
        applied = bool(consumed) and holder is not None and holder.contains(consumed)
        if applied:
            assert self.total is not None and self.dynamic is not None
            converted = to_role + to_star.as_unreserved()
            self.total = self.total - consumed + converted
            self.dynamic = self.dynamic - consumed.reserved() + converted.reserved()
        self.steps += [(kind, res, applied) for kind, res in (("RESERVE", reserved), ("UNRESERVE", unreserved)) if res]


def _accept_capture(s: State, e: ev.OffersAccepted) -> tuple[list[Offer], _OpsPlan | None]:
    """The accept's offers the fold holds (it ignores the others, and the whole accept without any); and, when it
    carries resource operations, how the fold will apply them to the offers it uses."""
    used = [s.offers[oid] for oid in dict.fromkeys(e.offer_ids) if oid in s.offers]
    if not (e.operations or e.reserved or e.unreserved):
        return used, None
    # The offers the fold converts: the framework's own, on the first one's agent and role.
    mine = [o for o in used if o.framework_id == e.framework_id]
    agent = s.agents.get(mine[0].agent_id) if mine else None
    fw = s.frameworks.get(e.framework_id)
    plan = _OpsPlan(mine[0].agent_id if mine else "", "framework", e.framework_id,
                    fw.info.principal if fw is not None else None, "ACCEPT", agent)
    holder = None
    if agent is not None:
        role = mine[0].role
        holder = Resources(r for o in mine if o.agent_id == agent.agent_id and o.role == role for r in o.resources)
    if e.operations:
        plan.walk(((op.kind, Resources(op.resources)) for op in e.operations), holder)
    else:
        plan.via = "ACCEPT (reserved/unreserved)"
        plan.legacy(Resources(e.reserved), Resources(e.unreserved), holder)
    return used, plan


def _operator_capture(s: State, e: ev.AgentOperationsApplied) -> _OpsPlan:
    """How the fold will apply an operator's operations to the agent's unallocated resources."""
    agent = s.agents.get(e.agent_id)
    a = allocator_of(s) if agent is not None else None
    holder = a.agents[e.agent_id].available if a is not None and e.agent_id in a.agents else None
    plan = _OpsPlan(e.agent_id, "operator", None, e.principal, e.call, agent if holder is not None else None)
    plan.walk(((op.kind, Resources(op.resources)) for op in e.operations), holder)
    return plan


def _operations(b: _Book, plan: _OpsPlan | None, env: ev.Envelope, s: State) -> None:
    """The operations the fold applied, checked against what it did to the agent."""
    if plan is None or not b.track_ops:
        return
    if plan.total is not None:
        agent = s.agents.get(plan.agent_id)
        if agent is None or agent.total() != plan.total or Resources(agent.dynamic) != plan.dynamic:
            raise FoldError(f"index {env.index}: the audit's reading of the {ev.event_type(env.event)} operations "
                            f"on agent {plan.agent_id} does not match the fold's (expected total "
                            f"{plan.total.format()}, the fold has "
                            f"{agent.total().format() if agent is not None else 'no such agent'})", env.index)
    for kind, res, applied in plan.steps:
        if applied:
            b.operation(plan, kind, res, env)


def _agent_operations_applied(b: _Book, plan: _OpsPlan, env: ev.Envelope, s: State) -> None:
    _operations(b, plan, env, s)


def _offers_accepted(b: _Book, before: tuple[list[Offer], _OpsPlan | None], env: ev.Envelope, s: State) -> None:
    used, plan = before
    _operations(b, plan, env, s)  # before the tasks: they may use the volumes it created
    if not used:
        return
    e = env.event
    offer_ids = [o.offer_id for o in used]
    task_ids = [t.task_id for t in e.tasks]
    for oid in offer_ids:
        if oid not in s.offers:
            b.end_offer(oid, "accepted", env, refuse=e.refuse_seconds, tasks=task_ids)
    fw_tasks = s.tasks.get(e.framework_id, {})
    for spec in e.tasks:
        task = fw_tasks.get(spec.task_id)
        if task is not None:
            b.track(task, env, "accept", offer_ids)
    first = used[0]
    for r in e.rejected:  # not in the fold's state: the event is its only record
        b.tasks.append({"framework_id": e.framework_id, "task_id": r.task_id, "name": None,
                        "agent_id": first.agent_id, "role": first.role, "resources": None, "origin": "rejected",
                        "offer_ids": offer_ids, "launched_at": None, "launched_index": None, "state": r.state,
                        "ended_at": env.ts, "kill_requested_at": None,
                        "statuses": [{"state": r.state, "source": "SOURCE_MASTER", "reason": r.reason,
                                      "message": r.message, "time": env.ts, "index": env.index,
                                      "agent_time": env.ts, "uuid": None, "acknowledged_at": None}],
                        "_start": env.ts})


def _task(s: State, e: ev.StatusUpdated) -> Task | None:
    fw_tasks = s.tasks.get(e.framework_id)
    return None if fw_tasks is None else fw_tasks.get(e.task_id)


def _task_and_kill(s: State, e: ev.TaskKillRequested) -> tuple[Task, bool] | None:
    task = s.task(e.framework_id, e.task_id)
    return None if task is None else (task, task.kill_requested)


def _task_kill_requested(b: _Book, before: tuple[Task, bool] | None, env: ev.Envelope, s: State) -> None:
    if before is None:
        return
    task, was = before
    rec = b.by_task.get(id(task))
    if rec is not None and task.kill_requested and not was:
        rec.kill_requested_at = env.ts


def _status_updated(b: _Book, task: Task | None, env: ev.Envelope, s: State) -> None:
    if task is not None:
        rec = b.by_task.get(id(task))
        if rec is not None:
            rec.sync(env)


def _task_and_pending(s: State, e: ev.StatusAcknowledged) -> tuple[Task, ev.TaskStatus] | None:
    task = s.task(e.framework_id, e.task_id)
    return None if task is None or task.pending is None else (task, task.pending)


def _status_acknowledged(b: _Book, before: tuple[Task, ev.TaskStatus] | None, env: ev.Envelope, s: State) -> None:
    if before is None:
        return
    task, pending = before
    if task.pending is not None:  # not the update it was waiting for
        return
    rec = b.by_task.get(id(task))
    if rec is None:
        return
    for i in range(len(task.statuses) - 1, -1, -1):
        if task.statuses[i] is pending:
            rec.seen[i][2] = env.ts
            break


Capture = Callable[[State, Any], Any]
Observe = Callable[[_Book, Any, ev.Envelope, State], None]

_OBSERVERS: dict[type, tuple[Capture | None, Observe]] = {
    ev.ClusterCreated: (None, _cluster_created),
    ev.LeaderElected: (_connected_frameworks, _leader_elected),
    ev.FrameworkSubscribed: (_known_framework, _framework_subscribed),
    ev.FrameworkDisconnected: (None, _framework_disconnected),
    ev.FrameworkRemoved: (_framework_tasks, _framework_removed),
    ev.RolesSuppressed: (None, _roles_suppressed),
    ev.RolesRevived: (None, _roles_revived),
    ev.AgentRegistered: (None, _nothing),
    ev.AgentReregistered: (_tasks_of_unreachable_agent, _agent_reregistered),
    ev.AgentDisconnected: (None, _nothing),
    ev.AgentUnreachable: (_tasks_of_reachable_agent, _agent_unreachable),
    ev.OffersMade: (None, _offers_made),
    ev.OffersRescinded: (None, _offers_rescinded),
    ev.OffersDeclined: (None, _offers_declined),
    ev.OffersAccepted: (_accept_capture, _offers_accepted),
    ev.AgentOperationsApplied: (_operator_capture, _agent_operations_applied),
    ev.WeightsUpdated: (None, _nothing),
    ev.QuotaUpdated: (None, _nothing),
    ev.TaskKillRequested: (_task_and_kill, _task_kill_requested),
    ev.StatusUpdated: (_task, _status_updated),
    ev.StatusAcknowledged: (_task_and_pending, _status_acknowledged),
}

assert set(_OBSERVERS) == set(ev.Event.__args__), "every event type needs an audit observer"


def _explain(e: ev.OffersMade, decisions: list[ev.AgentDecision],
             formatted: dict[str, str]) -> tuple[list[dict], dict[str, dict]]:
    """The decision's per-agent explanation, with each candidate's fate; and per offer, why it went there.

    A trace's `order` lists every framework the allocator looked at, in order; `skipped` lists, in the
    same order, those it passed over and why. A candidate that holds one of the run's offers on that
    agent (same framework and role) got it; the last candidate that neither got nor was skipped is the
    one next in line when the agent ran out."""
    by_agent: dict[str, list[ev.OfferRecord]] = {}
    for o in e.offers:
        by_agent.setdefault(o.agent_id, []).append(o)
    agents: list[dict] = []
    explained: dict[str, dict] = {}
    for d in decisions:
        won = {(o.framework_id, o.role): o for o in by_agent.get(d.agent_id, [])}
        skipped = [(pair[0], pair[1] if len(pair) > 1 else "") for pair in d.skipped]
        p = 0
        cands: list[dict] = []
        for i, c in enumerate(d.order):
            offer = won.get((c.framework_id, c.role))
            is_skip = p < len(skipped) and skipped[p][0] == c.framework_id
            if is_skip and offer is not None and any(x.framework_id == c.framework_id for x in d.order[i + 1:]):
                is_skip = False  # the skip belongs to the same framework's later entry (another role)
            if is_skip:
                outcome = f"skipped: {skipped[p][1]}"
                p += 1
            elif offer is not None:
                outcome = "offered"
            elif i == len(d.order) - 1:
                outcome = "next in line"
            else:
                outcome = "passed"
            cands.append({"position": i + 1, "framework_id": c.framework_id, "role": c.role, "share": c.share,
                          "allocations": c.allocations, "role_share": c.role_share, "outcome": outcome,
                          "offer_id": offer.offer_id if outcome == "offered" else None,
                          "resources": formatted[offer.offer_id] if outcome == "offered" else None})
        offers = []
        for i, c in enumerate(cands):
            if c["outcome"] != "offered" or c["offer_id"] in explained:
                continue
            nxt = cands[i + 1] if i + 1 < len(cands) else None
            explained[c["offer_id"]] = {"stage": d.stage, "share": c["share"], "allocations": c["allocations"],
                                        "role_share": c["role_share"],
                                        "runner_up": nxt["framework_id"] if nxt else None,
                                        "runner_up_share": nxt["share"] if nxt else None}
            offers.append({"offer_id": c["offer_id"], "framework_id": c["framework_id"], "role": c["role"],
                           "resources": c["resources"]})
        agents.append({"agent_id": d.agent_id, "stage": d.stage, "offers": offers, "candidates": cands,
                       "skipped": [{"framework_id": f, "reason": why} for f, why in skipped]})
    # Offers no trace explains (a decision that cannot be re-derived, e.g. a hand-made event).
    for o in e.offers:
        if o.offer_id not in explained:
            entry = {"offer_id": o.offer_id, "framework_id": o.framework_id, "role": o.role,
                     "resources": formatted[o.offer_id]}
            agents.append({"agent_id": o.agent_id, "stage": None, "offers": [entry], "candidates": [],
                           "skipped": []})
    return agents, explained


# ---- the queries ------------------------------------------------------------------------------


def _present(obj):
    """Times to ISO 8601, internal keys (leading '_') dropped; a deep copy."""
    if isinstance(obj, list):
        return [_present(v) if isinstance(v, (dict, list)) else v for v in obj]
    out = {}
    for k, v in obj.items():
        if k[0] == "_":
            continue
        if k in TIME_KEYS:
            out[k] = iso(v) if isinstance(v, (int, float)) else v
        elif isinstance(v, (dict, list)):
            out[k] = _present(v)
        else:
            out[k] = v
    return out


class _Query:
    def __init__(self, book: _Book, f: Filters):
        self.book, self.f = book, f
        self.fw_ok = _id_matcher(f.framework, book.cluster_id)
        self.agent_ok = _id_matcher(f.agent, book.cluster_id)

    def role_ok(self, role: str | None) -> bool:
        return self.f.role is None or role == self.f.role

    def _offers(self) -> list[dict]:
        return [o for o in self.book.offers.values()
                if self.fw_ok(o["framework_id"]) and self.role_ok(o["role"]) and self.agent_ok(o["agent_id"])
                and self.f.overlaps(o["made_at"], o["answered_at"])]

    def offers(self) -> list[dict]:
        # Resources are formatted here when no explanation needed them formatted already.
        return [o if isinstance(o["resources"], str) else {**o, "resources": _res(o["resources"])}
                for o in self._offers()]

    def _task_ok(self, r: _TaskRecord | dict) -> bool:
        if isinstance(r, dict):  # rejected
            fid, role, agent, start, end = r["framework_id"], r["role"], r["agent_id"], r["_start"], r["ended_at"]
        else:
            t = r.task
            fid, role, agent, start, end = t.framework_id, t.spec.role, t.spec.agent_id, t.launched_at, r.ended_at()
        return self.fw_ok(fid) and self.role_ok(role) and self.agent_ok(agent) and self.f.overlaps(start, end)

    def _tasks(self) -> list[_TaskRecord | dict]:
        return [r for r in self.book.tasks if self._task_ok(r)]

    def tasks(self) -> list[dict]:
        return [r if isinstance(r, dict) else r.record() for r in self._tasks()]

    def allocations(self) -> list[dict]:
        out = []
        for a in self.book.allocations:
            if not self.f.at(a["time"]):
                continue
            agents = [ag for ag in a["agents"] if self._agent_entry_ok(ag)]
            if not agents and (a["agents"] or self.f.framework or self.f.role or self.f.agent):
                continue
            out.append({**a, "agents": agents})
        return out

    def _agent_entry_ok(self, ag: dict) -> bool:
        if not self.agent_ok(ag["agent_id"]):
            return False
        involved = ag["candidates"] + ag["offers"]
        if self.f.framework is not None and not (
                any(self.fw_ok(c["framework_id"]) for c in involved)
                or any(self.fw_ok(sk["framework_id"]) for sk in ag["skipped"])):
            return False
        if self.f.role is not None and not any(c["role"] == self.f.role for c in involved):
            return False
        return True

    def frameworks(self) -> list[dict]:
        by_fw_offers: dict[str, list[str]] = {}  # outcomes
        by_fw_tasks: dict[str, list[str | None]] = {}  # the state of each launched task; None: rejected
        for o in self._offers():
            by_fw_offers.setdefault(o["framework_id"], []).append(o["outcome"])
        for r in self._tasks():
            if isinstance(r, dict):
                by_fw_tasks.setdefault(r["framework_id"], []).append(None)
            else:
                by_fw_tasks.setdefault(r.task.framework_id, []).append(r.task.state)
        out = []
        for fid, fw in self.book.frameworks.items():
            if not self.fw_ok(fid) or not self.f.overlaps(fw["subscribed_at"], fw["removed_at"]):
                continue
            if self.f.role is not None and self.f.role not in fw["_roles_ever"]:
                continue
            outcomes, ft = by_fw_offers.get(fid, []), by_fw_tasks.get(fid, [])
            if self.f.agent is not None and not (outcomes or ft):
                continue
            finals = [s for s in ft if s is not None]
            folded: Framework = fw["_fw"]  # the fold's record (the last one, if it was removed)
            info = folded.info
            status = "removed" if fw["removed_at"] is not None else \
                "connected" if folded.connected else "disconnected"
            rec = {"framework_id": fid, "name": info.name, "user": info.user, "principal": info.principal,
                   "roles": list(info.roles), "status": status, "subscribed_at": fw["subscribed_at"],
                   "removed_at": fw["removed_at"], "removal_reason": fw["removal_reason"],
                   "suppressed_roles": list(folded.suppressed_roles)}
            rec.update(
                offers_received=len(outcomes), offers_accepted=outcomes.count("accepted"),
                offers_declined=outcomes.count("declined"),
                offers_rescinded=sum(o.startswith("rescinded:") for o in outcomes),
                offers_dropped=sum(o.startswith("dropped:") for o in outcomes),
                offers_outstanding=outcomes.count("outstanding"),
                tasks_launched=len(finals), tasks_finished=finals.count("TASK_FINISHED"),
                tasks_failed=finals.count("TASK_FAILED"), tasks_killed=finals.count("TASK_KILLED"),
                tasks_lost_or_error=sum(s in TERMINAL_STATES and s not in ("TASK_FINISHED", "TASK_FAILED",
                                                                               "TASK_KILLED") for s in finals),
                tasks_active=sum(s not in TERMINAL_STATES for s in finals),
                tasks_rejected=len(ft) - len(finals),
                timeline=[x for x in fw["timeline"] if self.f.at(x["time"])])
            out.append(rec)
        return out


    def reservations(self) -> list[dict]:
        vol = self.f.volume
        return [r for r in self.book.operations
                if self.agent_ok(r["agent_id"]) and self.f.at(r["time"])
                and (self.f.framework is None or (r["framework_id"] is not None and self.fw_ok(r["framework_id"])))
                and (self.f.role is None or self.f.role in r["role"].split(","))
                and (vol is None or vol in r["_pids"])]

    def volumes(self) -> list[dict]:
        out = []
        for v in self.book.volumes:
            if not (self.agent_ok(v["agent_id"]) and self.role_ok(v["role"])
                    and (self.f.volume is None or v["persistence_id"] == self.f.volume)
                    and self.f.overlaps(v["created_at"] if v["created_at"] is not None else -math.inf,
                                        v["destroyed_at"])):
                continue
            uses: list[tuple[_TaskRecord, Resource]] = v["_uses"]
            if self.f.framework is not None and not (
                    any(self.fw_ok(rec.task.framework_id) for rec, _ in uses)
                    or any(self.fw_ok(fid) for fid in v["_actors"])):
                continue
            tasks = []
            for rec, r in uses:
                t = rec.task
                tasks.append({"framework_id": t.framework_id, "task_id": t.spec.task_id,
                              "launched_at": t.launched_at, "launched_index": rec.launched_index,
                              "container_path": r.volume.container_path if r.volume else None,
                              "mode": r.volume.mode if r.volume else None,
                              "state": t.state, "ended_at": rec.ended_at()})
            out.append({**v, "tasks": tasks})
        return out


def check(kind: str, filters: Filters | None = None) -> None:
    """An unknown query, or a filter the query does not take, is an AuditError."""
    if kind not in QUERIES:
        raise AuditError("query", f"unknown query {kind!r} (expected one of {', '.join(QUERIES)})")
    if filters is not None and filters.volume is not None and kind not in VOLUME_QUERIES:
        raise AuditError("volume", f"only the {' and '.join(VOLUME_QUERIES)} queries take a volume filter")


def query_envelopes(envelopes: Iterable[ev.Envelope], kind: str, filters: Filters | None = None) -> list[dict]:
    """Run one audit query over envelopes 1..n, in index order (a store's, or any log's)."""
    check(kind, filters)
    with _no_gc():
        book, _state = _scan(envelopes, kind)
        return _present(getattr(_Query(book, filters or Filters()), kind)())


def query(store: EventStore, kind: str, filters: Filters | None = None) -> list[dict]:
    """Run one audit query (`QUERIES`) over an open store. A store the fold cannot fold raises
    `replay.reader.FoldError`, an undecodable payload `PayloadError`."""
    check(kind, filters)
    return query_envelopes(_envelopes(store), kind, filters)


def offers(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "offers", filters)


def allocations(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "allocations", filters)


def tasks(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "tasks", filters)


def frameworks(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "frameworks", filters)


def reservations(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "reservations", filters)


def volumes(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "volumes", filters)


def cluster_id(store: EventStore) -> str | None:
    for env in store.iter_envelopes(1, 10):
        if isinstance(env.event, ev.ClusterCreated):
            return env.event.cluster_id
    return None


def run_query(path: str | Path, kind: str, filters: Filters | None = None) -> tuple[list[dict], str | None]:
    """Open the store at `path` (a data dir or the SQLite file) with its own connection, run one query,
    close it. Returns the records and the cluster id. Raises FileNotFoundError for a missing store."""
    try:
        store = open_store(resolve_store_path(path))  # read-only: a query never writes to a replica's store
    except StoreError as e:
        if "no such file" in str(e) or "no event store in" in str(e):
            raise FileNotFoundError(str(e)) from None
        raise
    try:
        return query(store, kind, filters), cluster_id(store)
    finally:
        store.close()


# ---- rendering --------------------------------------------------------------------------------

# (column, header) per query; rows are the records flattened (see _rows).
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "offers": [("offer_id", "OFFER"), ("framework_id", "FRAMEWORK"), ("role", "ROLE"), ("agent_id", "AGENT"),
               ("resources", "RESOURCES"), ("made_at", "MADE"), ("index", "INDEX"), ("outcome", "OUTCOME"),
               ("answered_at", "ANSWERED"), ("answered_index", "ANS_INDEX"), ("latency", "LATENCY_S"),
               ("tasks", "TASKS"), ("refuse_seconds", "REFUSE_S"), ("trigger", "TRIGGER"), ("stage", "STAGE"),
               ("share", "SHARE"), ("allocations", "ALLOCS"), ("role_share", "ROLE_SHARE"),
               ("runner_up", "RUNNER_UP"), ("runner_up_share", "RUNNER_UP_SHARE")],
    "allocations": [("index", "INDEX"), ("time", "TIME"), ("trigger", "TRIGGER"), ("seed", "SEED"),
                    ("candidates", "AGENTS_CONSIDERED"), ("agent_id", "AGENT"), ("stage", "STAGE"),
                    ("position", "POS"), ("framework_id", "FRAMEWORK"), ("role", "ROLE"), ("share", "SHARE"),
                    ("allocations", "ALLOCS"), ("role_share", "ROLE_SHARE"), ("outcome", "OUTCOME"),
                    ("offer_id", "OFFER"), ("resources", "RESOURCES")],
    "tasks": [("framework_id", "FRAMEWORK"), ("task_id", "TASK"), ("agent_id", "AGENT"), ("role", "ROLE"),
              ("resources", "RESOURCES"), ("origin", "ORIGIN"), ("offer_ids", "OFFERS"),
              ("launched_at", "LAUNCHED"), ("launched_index", "INDEX"), ("state", "STATE"), ("ended_at", "ENDED"),
              ("kill_requested_at", "KILL_REQUESTED"), ("history", "HISTORY")],
    "frameworks": [("framework_id", "FRAMEWORK"), ("name", "NAME"), ("user", "USER"), ("roles", "ROLES"),
                   ("status", "STATUS"), ("subscribed_at", "SUBSCRIBED"), ("removed_at", "REMOVED"),
                   ("removal_reason", "REMOVAL_REASON"), ("suppressed_roles", "SUPPRESSED"),
                   ("offers_received", "OFFERS"), ("offers_accepted", "ACC"), ("offers_declined", "DEC"),
                   ("offers_rescinded", "RESC"), ("offers_dropped", "DROP"), ("offers_outstanding", "OUT"),
                   ("tasks_launched", "TASKS"), ("tasks_finished", "FIN"), ("tasks_failed", "FAIL"),
                   ("tasks_killed", "KILL"), ("tasks_lost_or_error", "LOST_ERR"), ("tasks_active", "ACTIVE"),
                   ("tasks_rejected", "REJ"), ("timeline", "TIMELINE")],
    "reservations": [("index", "INDEX"), ("time", "TIME"), ("agent_id", "AGENT"), ("role", "ROLE"), ("kind", "KIND"),
                     ("resources", "RESOURCES"), ("actor", "ACTOR"), ("via", "VIA"), ("actor_type", "ACTOR_TYPE"),
                     ("framework_id", "FRAMEWORK"), ("principal", "PRINCIPAL")],
    "volumes": [("agent_id", "AGENT"), ("role", "ROLE"), ("persistence_id", "VOLUME"), ("incarnation", "INC"),
                ("size", "SIZE"), ("container_path", "PATH"), ("mode", "MODE"), ("shared", "SHARED"),
                ("principal", "PRINCIPAL"), ("created_index", "CREATED_INDEX"), ("created_at", "CREATED"),
                ("created_by", "CREATED_BY"), ("status", "STATUS"), ("destroyed_index", "DESTROYED_INDEX"),
                ("destroyed_at", "DESTROYED"), ("destroyed_by", "DESTROYED_BY"), ("tasks", "TASKS")],
}

# The table leaves out some columns to stay readable (CSV and JSON have everything).
TABLE_OMITS: dict[str, set[str]] = {
    "offers": {"answered_index", "stage", "role_share", "runner_up_share"},
    "allocations": {"seed"},
    "tasks": {"launched_index"},
    "frameworks": {"user", "removal_reason"},
    "reservations": {"actor_type", "framework_id", "principal"},  # the actor says them
    "volumes": {"mode", "principal"},
}

# CSV: tasks get one row per status update (the task's fields repeated), so nothing is lost.
TASK_STATUS_COLUMNS = ["status_position", "status_state", "status_source", "status_reason", "status_message",
                       "status_time", "status_index", "status_agent_time", "status_uuid",
                       "status_acknowledged_at"]
# CSV: volumes get one row per task that used them (the volume's fields repeated).
VOLUME_TASK_COLUMNS = ["task_framework_id", "task_id", "task_launched_at", "task_launched_index",
                       "task_container_path", "task_mode", "task_state", "task_ended_at"]


def _history(statuses: list[dict]) -> str:
    parts = []
    for st in statuses:
        name = st["state"].removeprefix("TASK_")
        if st["uuid"] is not None:
            name += "+ack" if st["acknowledged_at"] else "(unacked)"
        parts.append(name)
    return " > ".join(parts)


def _timeline_text(timeline: list[dict]) -> str:
    return "; ".join(f"{x['event']}@{x['time']}" + (f" ({x['detail']})" if x["detail"] else "") for x in timeline)


def _rows(kind: str, records: list[dict], for_csv: bool) -> list[dict]:
    """Records flattened to one dict per row (scalars only)."""
    rows: list[dict] = []
    if kind == "offers":
        # The table counts the tasks an offer launched; CSV names them.
        rows = [{**r, "tasks": ",".join(r["tasks"]) if for_csv else len(r["tasks"])} for r in records]
    elif kind == "allocations":
        for a in records:
            base = {"index": a["index"], "time": a["time"], "trigger": a["trigger"], "seed": a["seed"],
                    "candidates": a["candidates"] if a["candidates"] == "all" else ",".join(a["candidates"])}
            if not a["agents"]:
                rows.append(base)
            for ag in a["agents"]:
                where = {**base, "agent_id": ag["agent_id"], "stage": ag["stage"]}
                for c in ag["candidates"]:
                    rows.append({**where, **c})
                if not ag["candidates"]:
                    for o in ag["offers"]:
                        rows.append({**where, **o, "outcome": "offered"})
    elif kind == "tasks":
        for t in records:
            base = {**t, "offer_ids": ",".join(t["offer_ids"]), "history": _history(t["statuses"])}
            if not for_csv:
                rows.append(base)
                continue
            if not t["statuses"]:
                rows.append(base)
            for i, st in enumerate(t["statuses"], 1):
                rows.append({**base, "status_position": i, **{f"status_{k}": v for k, v in st.items()}})
    elif kind == "frameworks":
        rows = [{**r, "roles": ",".join(r["roles"]), "suppressed_roles": ",".join(r["suppressed_roles"]),
                 "timeline": _timeline_text(r["timeline"])} for r in records]
    elif kind == "reservations":
        rows = list(records)
    elif kind == "volumes":
        for v in records:
            base = {**v, "tasks": _uses_text(v["tasks"])}
            if not for_csv or not v["tasks"]:
                rows.append(base)
                continue
            for t in v["tasks"]:
                rows.append({**base, "task_framework_id": t["framework_id"], "task_id": t["task_id"],
                             **{f"task_{k}": t[k] for k in ("launched_at", "launched_index", "container_path",
                                                            "mode", "state", "ended_at")}})
    return rows


def _uses_text(tasks: list[dict]) -> str:
    """`framework/task STATE` per task that used a volume, in launch order."""
    return ", ".join(f"{t['framework_id']}/{t['task_id']} {t['state'].removeprefix('TASK_')}" for t in tasks)


def _columns(kind: str, for_csv: bool) -> list[tuple[str, str]]:
    if not for_csv:
        return [(c, h) for c, h in COLUMNS[kind] if c not in TABLE_OMITS[kind]]
    cols = list(COLUMNS[kind])
    if kind == "tasks":
        cols += [(c, c) for c in TASK_STATUS_COLUMNS]
    elif kind == "volumes":
        cols += [(c, c) for c in VOLUME_TASK_COLUMNS]
    return cols


def _cell(v, table: bool, prefix: str | None) -> str:
    if v is None:
        return "-" if table else ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if table:
            return f"{v:.4f}".rstrip("0").rstrip(".") or "0"
        return repr(v)
    s = str(v)
    if table:
        if prefix:
            s = s.replace(prefix, "")
        return printable(s)  # names and messages come from frameworks and agents: no escape sequences
    return _csv_safe(s)


# A spreadsheet opening the CSV runs a cell that starts like a formula (OWASP, "CSV Injection"): such a cell gets
# a leading apostrophe, which shows it as text. A plain number (`-1.5`, a negative latency) stays a number.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _csv_safe(s: str) -> str:
    if s.startswith(_FORMULA_START) and not _NUMBER.fullmatch(s):
        return "'" + s
    return s


class _CsvLines(list):
    """A file for csv.writer, which writes a row at a time: each row ending in \n rather than \r\n."""

    def write(self, row: str) -> None:
        self.append(row[:-2] + "\n")


def render(kind: str, records: list[dict], fmt: str, cluster: str | None = None) -> str:
    """Records as `json` (a list of objects), `csv` (header + rows) or `table` (aligned columns; ids are
    shown without the cluster prefix, named on the first line)."""
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    if fmt not in FORMATS:
        raise AuditError("format", f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    for_csv = fmt == "csv"
    cols = _columns(kind, for_csv)
    rows = _rows(kind, records, for_csv)
    if for_csv:
        out = _CsvLines()
        w = csv.writer(out, lineterminator="\r\n")  # so that a CR in a cell gets it quoted too; rows end in \n
        w.writerow([c for c, _ in cols])
        for r in rows:
            w.writerow([_cell(r.get(c), False, None) for c, _ in cols])
        return "".join(out)
    prefix = f"{cluster}-" if cluster else None
    table = [[h for _, h in cols]] + [[_cell(r.get(c), True, prefix) for c, _ in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = []
    if cluster:
        lines.append(printable(f"# cluster {cluster} (ids shown without the '{prefix}' prefix); "
                               f"{len(records)} {kind}"))
    else:
        lines.append(f"# {len(records)} {kind}")
    for line in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"
