"""Audit queries over a replica's event store: who got which resources, when, and why.

Every query streams the store's events once, in index order, and keeps only what it needs: the
outstanding offers, the live tasks, each framework's timeline, each agent's resources (to see
when a re-registration changes them). Nothing is re-decided and the full master state is not
folded; the bookkeeping mirrors the fold (`master/state.py`) where it decides what an event
changes (e.g. an accept naming no outstanding offer changes nothing).

Queries (each returns a list of plain dicts, ready for JSON; times are the leader's, ISO 8601 UTC):
- `offers`: one record per offer: who, what, where, when it was made, how it ended (`accepted`,
  `declined`, `rescinded:<reason>`, `dropped:<why>` or `outstanding`), when, how fast, what it
  launched, and from the allocation decision why it went to that framework.
- `allocations`: one record per `OFFERS_MADE` decision, with per agent (and stage) the candidates
  in the order the allocator walked them, their shares, and what became of each.
- `tasks`: one record per task with its whole status history and acknowledgements.
- `frameworks`: one record per framework: its subscription timeline and offer/task counts.

Filters (`Filters`): framework, role, agent, since, until. A record is kept when it concerns the
framework/role/agent and its lifetime overlaps [since, until] (an offer: made .. ended; a task:
launched .. ended; a decision: its instant; a framework: first subscription .. removal). Ids may
be given without the cluster prefix (`0000`, `S1`, `O12`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master.state import TERMINAL_STATES, with_reservations

QUERIES = ("offers", "allocations", "tasks", "frameworks")
FORMATS = ("table", "json", "csv")

# Record fields holding a leader timestamp (seconds) while computing; rendered as ISO 8601.
TIME_KEYS = frozenset({"made_at", "answered_at", "time", "launched_at", "ended_at", "kill_requested_at",
                       "acknowledged_at", "agent_time", "subscribed_at", "removed_at"})


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
        if not math.isfinite(v):
            raise AuditError(param, f"expected an ISO 8601 time or epoch seconds, got {text!r}")
        return v
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise AuditError(param, f"expected an ISO 8601 time (2026-11-25T10:04:20Z) or epoch seconds, "
                                f"got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


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

    @classmethod
    def parse(cls, framework: str | None = None, role: str | None = None, agent: str | None = None,
              since: str | None = None, until: str | None = None) -> "Filters":
        f = cls(framework=framework or None, role=role or None, agent=agent or None,
                since=None if since in (None, "") else parse_time(since, "since"),
                until=None if until in (None, "") else parse_time(until, "until"))
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


# ---- the scan ---------------------------------------------------------------------------------


class _Scan:
    """One pass over the log, keeping the facts every query is built from (raw seconds for times)."""

    def __init__(self, kind: str = "allocations") -> None:
        # Only what the query needs: explanations for offers and allocations, decision records for allocations.
        self.explain = kind in ("offers", "allocations")
        self.keep_allocations = kind == "allocations"
        self.cluster_id: str | None = None
        self.last_ts: float | None = None
        self.offers: dict[str, dict] = {}  # every offer, in the order made
        self.live_offers: dict[str, dict] = {}
        self.allocations: list[dict] = []
        self.tasks: list[dict] = []  # every task record, in the order launched (or rejected)
        self.live_tasks: dict[tuple[str, str], dict] = {}  # what the fold keeps in State.tasks
        self.frameworks: dict[str, dict] = {}
        self.live_frameworks: set[str] = set()
        self.agents: dict[str, list[Resources]] = {}  # agent -> [total, dynamic reservations]

    def run(self, store: EventStore) -> "_Scan":
        for env in store.iter_envelopes():
            handler = _HANDLERS.get(type(env.event))
            if handler is not None:
                handler(self, env.event, env)
            self.last_ts = env.ts
        return self

    # -- offers
    def _end_offer(self, oid: str, outcome: str, env: ev.Envelope, refuse: float | None = None,
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

    def _drop_offers(self, pred: Callable[[dict], bool], why: str, env: ev.Envelope) -> None:
        for oid in [oid for oid, o in self.live_offers.items() if pred(o)]:
            self._end_offer(oid, f"dropped:{why}", env)

    # -- frameworks
    def _timeline(self, fid: str, env: ev.Envelope, event: str, detail: str = "") -> None:
        fw = self.frameworks.get(fid)
        if fw is not None:
            fw["timeline"].append({"time": env.ts, "index": env.index, "event": event, "detail": detail})

    # -- tasks
    def _complete(self, task: dict) -> None:
        self.live_tasks.pop((task["framework_id"], task["task_id"]), None)
        task["_pending"] = None

    def _new_task(self, fid: str, spec: ev.TaskSpec, env: ev.Envelope, origin: str, offer_ids: list[str],
                  state: str = "TASK_STAGING") -> dict:
        t = {"framework_id": fid, "task_id": spec.task_id, "name": spec.name, "agent_id": spec.agent_id,
             "role": spec.role, "resources": _res(spec.resources), "origin": origin, "offer_ids": offer_ids,
             "launched_at": env.ts, "launched_index": env.index, "state": state, "ended_at": None,
             "kill_requested_at": None, "statuses": [], "_start": env.ts, "_pending": None}
        self.tasks.append(t)
        self.live_tasks[(fid, spec.task_id)] = t
        return t


def _leader_elected(s: _Scan, e: ev.LeaderElected, env: ev.Envelope) -> None:
    s._drop_offers(lambda o: True, "leader_change", env)
    for fid in s.live_frameworks:
        fw = s.frameworks[fid]
        if fw["connected"]:
            fw["connected"], fw["status"] = False, "disconnected"
            s._timeline(fid, env, "disconnected", f"leader change (new leader {e.http}, term {e.term})")


def _cluster_created(s: _Scan, e: ev.ClusterCreated, env: ev.Envelope) -> None:
    if s.cluster_id is None:
        s.cluster_id = e.cluster_id


def _framework_subscribed(s: _Scan, e: ev.FrameworkSubscribed, env: ev.Envelope) -> None:
    fid, info = e.framework_id, e.info
    roles = list(info.roles)
    fw = s.frameworks.get(fid)
    if fid in s.live_frameworks:
        s._drop_offers(lambda o: o["framework_id"] == fid, "framework_resubscribed", env)
        detail = "" if roles == fw["roles"] else "roles " + ",".join(roles)
        s._timeline(fid, env, "resubscribed", detail)
    else:
        if fw is None:
            fw = s.frameworks[fid] = {"framework_id": fid, "name": info.name, "user": info.user,
                                      "principal": info.principal, "roles": roles, "subscribed_at": env.ts,
                                      "removed_at": None, "removal_reason": None, "status": "connected",
                                      "suppressed_roles": [], "timeline": [], "_roles_ever": set()}
        s.live_frameworks.add(fid)
        fw["removed_at"] = fw["removal_reason"] = None
        detail = "roles " + ",".join(roles)
        if e.suppressed_roles:
            detail += "; suppressed " + ",".join(sorted(e.suppressed_roles))
        s._timeline(fid, env, "subscribed", detail)
    fw.update(name=info.name, user=info.user, principal=info.principal, roles=roles,
              suppressed_roles=sorted(e.suppressed_roles), connected=True, status="connected")
    fw["_roles_ever"].update(roles)


def _framework_disconnected(s: _Scan, e: ev.FrameworkDisconnected, env: ev.Envelope) -> None:
    if e.framework_id not in s.live_frameworks:
        return
    s._drop_offers(lambda o: o["framework_id"] == e.framework_id, "framework_disconnected", env)
    fw = s.frameworks[e.framework_id]
    fw["connected"], fw["status"] = False, "disconnected"
    s._timeline(e.framework_id, env, "disconnected")


def _framework_removed(s: _Scan, e: ev.FrameworkRemoved, env: ev.Envelope) -> None:
    fid = e.framework_id
    if fid not in s.live_frameworks:
        return
    s._drop_offers(lambda o: o["framework_id"] == fid, "framework_removed", env)
    for key, task in list(s.live_tasks.items()):
        if key[0] != fid:
            continue
        if task["state"] not in TERMINAL_STATES:
            task["state"] = "TASK_KILLED"
            task["ended_at"] = env.ts
            task["statuses"].append({"state": "TASK_KILLED", "source": "SOURCE_MASTER",
                                     "reason": "REASON_FRAMEWORK_REMOVED",
                                     "message": f"Framework removed ({e.reason})", "time": env.ts,
                                     "index": env.index, "agent_time": env.ts, "uuid": None,
                                     "acknowledged_at": None})
        s._complete(task)
    s.live_frameworks.discard(fid)
    fw = s.frameworks[fid]
    fw.update(connected=False, status="removed", removed_at=env.ts, removal_reason=e.reason)
    s._timeline(fid, env, "removed", e.reason)


def _roles_suppressed(s: _Scan, e: ev.RolesSuppressed, env: ev.Envelope) -> None:
    if e.framework_id in s.live_frameworks:
        fw = s.frameworks[e.framework_id]
        fw["suppressed_roles"] = sorted(set(fw["suppressed_roles"]) | set(e.roles))
        s._timeline(e.framework_id, env, "suppressed", ",".join(e.roles))


def _roles_revived(s: _Scan, e: ev.RolesRevived, env: ev.Envelope) -> None:
    if e.framework_id in s.live_frameworks:
        fw = s.frameworks[e.framework_id]
        fw["suppressed_roles"] = sorted(set(fw["suppressed_roles"]) - set(e.roles))
        s._timeline(e.framework_id, env, "revived", ",".join(e.roles))


def _agent_registered(s: _Scan, e: ev.AgentRegistered, env: ev.Envelope) -> None:
    s.agents[e.agent_id] = [Resources(e.resources), Resources()]


def _master_status(t: dict, state: str, reason: str, message: str, env: ev.Envelope) -> None:
    t["state"] = state
    if state in TERMINAL_STATES:
        t["ended_at"] = env.ts
    t["statuses"].append({"state": state, "source": "SOURCE_MASTER", "reason": reason, "message": message,
                          "time": env.ts, "index": env.index, "agent_time": env.ts, "uuid": None,
                          "acknowledged_at": None})


def _agent_unreachable(s: _Scan, e: ev.AgentUnreachable, env: ev.Envelope) -> None:
    s._drop_offers(lambda o: o["agent_id"] == e.agent_id, "agent_unreachable", env)
    for t in list(s.live_tasks.values()):
        if t["agent_id"] == e.agent_id and t["state"] not in TERMINAL_STATES:
            _master_status(t, "TASK_UNREACHABLE", "REASON_AGENT_REMOVED", "Agent is unreachable", env)


def _agent_reregistered(s: _Scan, e: ev.AgentReregistered, env: ev.Envelope) -> None:
    # Back from unreachable (as the fold decides it): reported tasks run again, the others are gone.
    reported = {(r.framework_id, r.task_id): r for r in e.tasks}
    for key, t in list(s.live_tasks.items()):
        if t["agent_id"] == e.agent_id and t["state"] == "TASK_UNREACHABLE":
            r = reported.get(key)
            if r is not None and r.state not in TERMINAL_STATES:
                _master_status(t, r.state, "REASON_AGENT_REREGISTERED", "Agent re-registered", env)
            else:
                _master_status(t, "TASK_GONE", "REASON_AGENT_REREGISTERED", "Task is gone from its agent", env)
                if t["_pending"] is None:
                    s._complete(t)
    agent = s.agents.get(e.agent_id)
    if agent is None:
        agent = s.agents[e.agent_id] = [Resources(e.resources), Resources()]
    reported = with_reservations(Resources(e.resources), agent[1])
    if agent[0] != reported:
        s._drop_offers(lambda o: o["agent_id"] == e.agent_id, "agent_resources_changed", env)
    agent[0] = reported
    for report in e.tasks:
        if (report.framework_id, report.task_id) not in s.live_tasks and report.spec is not None \
                and report.framework_id in s.live_frameworks and report.state not in TERMINAL_STATES:
            s._new_task(report.framework_id, report.spec, env, "adopted", [], state=report.state)


def _offers_made(s: _Scan, e: ev.OffersMade, env: ev.Envelope) -> None:
    explained: dict[str, dict] = {}
    formatted = {o.offer_id: _res(o.resources) for o in e.offers}
    if s.explain:
        agents, explained = _explain(e, formatted)
    if s.keep_allocations:
        s.allocations.append({"index": env.index, "time": env.ts, "trigger": e.trigger, "seed": e.seed,
                              "candidates": "all" if e.candidates is None else list(e.candidates),
                              "offer_count": len(e.offers), "agents": agents})
    for o in e.offers:
        why = explained.get(o.offer_id, {})
        rec = {"offer_id": o.offer_id, "framework_id": o.framework_id, "role": o.role, "agent_id": o.agent_id,
               "resources": formatted[o.offer_id], "made_at": env.ts, "index": env.index, "outcome": "outstanding",
               "answered_at": None, "answered_index": None, "latency": None, "tasks": [], "refuse_seconds": None,
               "trigger": e.trigger, "stage": why.get("stage"), "share": why.get("share"),
               "allocations": why.get("allocations"), "role_share": why.get("role_share"),
               "runner_up": why.get("runner_up"), "runner_up_share": why.get("runner_up_share")}
        s.offers[o.offer_id] = s.live_offers[o.offer_id] = rec


def _offers_rescinded(s: _Scan, e: ev.OffersRescinded, env: ev.Envelope) -> None:
    for oid in e.offer_ids:
        s._end_offer(oid, f"rescinded:{e.reason}", env)


def _offers_declined(s: _Scan, e: ev.OffersDeclined, env: ev.Envelope) -> None:
    for oid in e.offer_ids:
        s._end_offer(oid, "declined", env, refuse=e.refuse_seconds)


def _offers_accepted(s: _Scan, e: ev.OffersAccepted, env: ev.Envelope) -> None:
    valid = [s.live_offers[oid] for oid in e.offer_ids if oid in s.live_offers]
    if not valid:  # the fold ignores such an accept entirely
        return
    agent_id = valid[0]["agent_id"]
    if (e.reserved or e.unreserved) and agent_id in s.agents:
        reserved, unreserved = Resources(e.reserved), Resources(e.unreserved)
        agent = s.agents[agent_id]
        agent[0] = agent[0] - (reserved.as_unreserved() + unreserved) + (reserved + unreserved.as_unreserved())
        agent[1] = agent[1] - unreserved + reserved
    offer_ids = [o["offer_id"] for o in valid]
    task_ids = [t.task_id for t in e.tasks]
    for oid in offer_ids:
        s._end_offer(oid, "accepted", env, refuse=e.refuse_seconds, tasks=task_ids)
    for spec in e.tasks:
        s._new_task(e.framework_id, spec, env, "accept", offer_ids)
    for r in e.rejected:
        s.tasks.append({"framework_id": e.framework_id, "task_id": r.task_id, "name": None, "agent_id": agent_id,
                        "role": valid[0]["role"], "resources": None, "origin": "rejected", "offer_ids": offer_ids,
                        "launched_at": None, "launched_index": None, "state": r.state, "ended_at": env.ts,
                        "kill_requested_at": None,
                        "statuses": [{"state": r.state, "source": "SOURCE_MASTER", "reason": r.reason,
                                      "message": r.message, "time": env.ts, "index": env.index,
                                      "agent_time": env.ts, "uuid": None, "acknowledged_at": None}],
                        "_start": env.ts, "_pending": None})


def _task_kill_requested(s: _Scan, e: ev.TaskKillRequested, env: ev.Envelope) -> None:
    t = s.live_tasks.get((e.framework_id, e.task_id))
    if t is not None and t["state"] not in TERMINAL_STATES and t["kill_requested_at"] is None:
        t["kill_requested_at"] = env.ts


def _status_updated(s: _Scan, e: ev.StatusUpdated, env: ev.Envelope) -> None:
    t = s.live_tasks.get((e.framework_id, e.task_id))
    if t is None:
        return
    st = e.status
    if t["state"] not in TERMINAL_STATES:
        t["state"] = st.state
        if st.state in TERMINAL_STATES:
            t["ended_at"] = env.ts
    t["statuses"].append({"state": st.state, "source": st.source, "reason": st.reason, "message": st.message,
                          "time": env.ts, "index": env.index, "agent_time": st.timestamp, "uuid": st.uuid,
                          "acknowledged_at": None})
    if st.uuid is not None:
        t["_pending"] = st.uuid
    if t["state"] in TERMINAL_STATES and t["_pending"] is None:
        s._complete(t)


def _status_acknowledged(s: _Scan, e: ev.StatusAcknowledged, env: ev.Envelope) -> None:
    t = s.live_tasks.get((e.framework_id, e.task_id))
    if t is None or t["_pending"] != e.uuid:
        return
    t["_pending"] = None
    for st in reversed(t["statuses"]):
        if st["uuid"] == e.uuid:
            st["acknowledged_at"] = env.ts
            break
    if t["state"] in TERMINAL_STATES:
        s._complete(t)


_HANDLERS = {
    ev.ClusterCreated: _cluster_created,
    ev.LeaderElected: _leader_elected,
    ev.FrameworkSubscribed: _framework_subscribed,
    ev.FrameworkDisconnected: _framework_disconnected,
    ev.FrameworkRemoved: _framework_removed,
    ev.RolesSuppressed: _roles_suppressed,
    ev.RolesRevived: _roles_revived,
    ev.AgentRegistered: _agent_registered,
    ev.AgentReregistered: _agent_reregistered,
    ev.AgentUnreachable: _agent_unreachable,
    ev.OffersMade: _offers_made,
    ev.OffersRescinded: _offers_rescinded,
    ev.OffersDeclined: _offers_declined,
    ev.OffersAccepted: _offers_accepted,
    ev.TaskKillRequested: _task_kill_requested,
    ev.StatusUpdated: _status_updated,
    ev.StatusAcknowledged: _status_acknowledged,
    # AGENT_DISCONNECTED (its offers are rescinded by their own event), WEIGHTS_UPDATED, QUOTA_UPDATED:
    # nothing an audit record shows changes.
}


def _explain(e: ev.OffersMade, formatted: dict[str, str]) -> tuple[list[dict], dict[str, dict]]:
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
    for d in e.decisions:
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
    # Offers no trace explains (a decision recorded without its explanation).
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
    def __init__(self, scan: _Scan, f: Filters):
        self.scan, self.f = scan, f
        self.fw_ok = _id_matcher(f.framework, scan.cluster_id)
        self.agent_ok = _id_matcher(f.agent, scan.cluster_id)

    def role_ok(self, role: str | None) -> bool:
        return self.f.role is None or role == self.f.role

    def offers(self) -> list[dict]:
        return [o for o in self.scan.offers.values()
                if self.fw_ok(o["framework_id"]) and self.role_ok(o["role"]) and self.agent_ok(o["agent_id"])
                and self.f.overlaps(o["made_at"], o["answered_at"])]

    def tasks(self) -> list[dict]:
        return [t for t in self.scan.tasks
                if self.fw_ok(t["framework_id"]) and self.role_ok(t["role"]) and self.agent_ok(t["agent_id"])
                and self.f.overlaps(t["_start"], t["ended_at"])]

    def allocations(self) -> list[dict]:
        out = []
        for a in self.scan.allocations:
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
        offers, tasks = self.offers(), self.tasks()
        by_fw_offers: dict[str, list[dict]] = {}
        by_fw_tasks: dict[str, list[dict]] = {}
        for o in offers:
            by_fw_offers.setdefault(o["framework_id"], []).append(o)
        for t in tasks:
            by_fw_tasks.setdefault(t["framework_id"], []).append(t)
        out = []
        for fid, fw in self.scan.frameworks.items():
            if not self.fw_ok(fid) or not self.f.overlaps(fw["subscribed_at"], fw["removed_at"]):
                continue
            if self.f.role is not None and self.f.role not in fw["_roles_ever"]:
                continue
            fo, ft = by_fw_offers.get(fid, []), by_fw_tasks.get(fid, [])
            if self.f.agent is not None and not (fo or ft):
                continue
            outcomes = [o["outcome"] for o in fo]
            launched = [t for t in ft if t["origin"] != "rejected"]
            finals = [t["state"] for t in launched]
            rec = {k: fw[k] for k in ("framework_id", "name", "user", "principal", "roles", "status",
                                      "subscribed_at", "removed_at", "removal_reason", "suppressed_roles")}
            rec.update(
                offers_received=len(fo), offers_accepted=outcomes.count("accepted"),
                offers_declined=outcomes.count("declined"),
                offers_rescinded=sum(o.startswith("rescinded:") for o in outcomes),
                offers_dropped=sum(o.startswith("dropped:") for o in outcomes),
                offers_outstanding=outcomes.count("outstanding"),
                tasks_launched=len(launched), tasks_finished=finals.count("TASK_FINISHED"),
                tasks_failed=finals.count("TASK_FAILED"), tasks_killed=finals.count("TASK_KILLED"),
                tasks_lost_or_error=sum(s in TERMINAL_STATES and s not in ("TASK_FINISHED", "TASK_FAILED",
                                                                               "TASK_KILLED") for s in finals),
                tasks_active=sum(s not in TERMINAL_STATES for s in finals),
                tasks_rejected=len(ft) - len(launched),
                timeline=[x for x in fw["timeline"] if self.f.at(x["time"])])
            out.append(rec)
        return out


def query(store: EventStore, kind: str, filters: Filters | None = None) -> list[dict]:
    """Run one audit query (`offers`, `allocations`, `tasks`, `frameworks`) over an open store."""
    if kind not in QUERIES:
        raise AuditError("query", f"unknown query {kind!r} (expected one of {', '.join(QUERIES)})")
    scan = _Scan(kind).run(store)
    return _present(getattr(_Query(scan, filters or Filters()), kind)())


def offers(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "offers", filters)


def allocations(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "allocations", filters)


def tasks(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "tasks", filters)


def frameworks(store: EventStore, filters: Filters | None = None) -> list[dict]:
    return query(store, "frameworks", filters)


def cluster_id(store: EventStore) -> str | None:
    for env in store.iter_envelopes(1, 10):
        if isinstance(env.event, ev.ClusterCreated):
            return env.event.cluster_id
    return None


def run_query(path: str | Path, kind: str, filters: Filters | None = None) -> tuple[list[dict], str | None]:
    """Open the store at `path` (a data dir or the SQLite file) with its own connection, run one query,
    close it. Returns the records and the cluster id. Raises FileNotFoundError for a missing store."""
    store = EventStore(path)
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
}

# The table leaves out some columns to stay readable (CSV and JSON have everything).
TABLE_OMITS: dict[str, set[str]] = {
    "offers": {"answered_index", "stage", "role_share", "runner_up_share"},
    "allocations": {"seed"},
    "tasks": {"launched_index"},
    "frameworks": {"user", "removal_reason"},
}

# CSV: tasks get one row per status update (the task's fields repeated), so nothing is lost.
TASK_STATUS_COLUMNS = ["status_position", "status_state", "status_source", "status_reason", "status_message",
                       "status_time", "status_index", "status_agent_time", "status_uuid",
                       "status_acknowledged_at"]


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
    return rows


def _columns(kind: str, for_csv: bool) -> list[tuple[str, str]]:
    if not for_csv:
        return [(c, h) for c, h in COLUMNS[kind] if c not in TABLE_OMITS[kind]]
    cols = list(COLUMNS[kind])
    if kind == "tasks":
        cols += [(c, c) for c in TASK_STATUS_COLUMNS]
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
    if table and prefix:
        s = s.replace(prefix, "")
    return s


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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([c for c, _ in cols])
        for r in rows:
            w.writerow([_cell(r.get(c), False, None) for c, _ in cols])
        return buf.getvalue()
    prefix = f"{cluster}-" if cluster else None
    table = [[h for _, h in cols]] + [[_cell(r.get(c), True, prefix) for c, _ in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = []
    if cluster:
        lines.append(f"# cluster {cluster} (ids shown without the '{prefix}' prefix); {len(records)} {kind}")
    else:
        lines.append(f"# {len(records)} {kind}")
    for line in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    return "\n".join(lines) + "\n"
