"""`drover why`: from the log alone, why a task ran on its agent, and why a framework or role got no offers.

    why_task(store, framework_id, task_id, at=None)
    why_framework(store, framework_id, since=None, until=None, at=None, role=None)
    why_role(store, role, since=None, until=None, at=None)

Each answers as of log index `at` (the end of the log by default), so any moment of history can be
asked about. A task: the allocation run that offered its agent to its framework (re-derived with the
allocator's explanation: candidates in order, their shares, the winner and the next in line), the
accept that launched it, and its timeline, each step with its log index. A framework: over a time
window, how many allocation runs offered it something; for the others, the diagnosis of
`master/why.py` per run (suppressed, filtered by declines, quota limit or headroom, nothing free, too
small for its minimum, outranked with its share vs the winner's), and what the next run would do at
the end of the window, with what would change it. The answers are JSON-ready dicts with `question`,
`index`, `answer`, `reasons`, `changes` (the UI's why panel and `GET /api/drover/why/...` serve them);
`render` makes the readable text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import msgspec

from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master import allocation
from master import why as diag
from master.state import State, apply
from replay.audit import _explain, cluster_id, iso, parse_time
from replay.reader import decode_payload, iter_envelopes, open_store, resolve_store_path, state_at
from replay.state_view import printable

# Allocation runs re-derived per question (the latest ones of the window): each is one allocator run with
# its explanation on, so a question's work stays bounded whatever the window.
MAX_RUNS = 60
KINDS = ("task", "framework", "role")


class WhyError(ValueError):
    """A question that cannot be answered as asked: `param` names the culprit, `status` the HTTP answer."""

    def __init__(self, param: str, message: str, status: int = 400):
        super().__init__(f"{param}: {message}")
        self.param, self.status = param, status


# ---- finding things in the log ------------------------------------------------------------------------


def _names(value: str, cluster: str | None) -> list[str]:
    """An id as given and with the cluster prefix (text output shortens ids to their suffix)."""
    out = [value]
    if cluster and not value.startswith(cluster + "-"):
        out.append(f"{cluster}-{value}")
    return out


def _upto(store: EventStore, at: int | None) -> int:
    last = store.last_index()
    if at is None:
        return last
    if at < 1 or at > last:
        raise WhyError("index", f"{at} is not in the log (1..{last})")
    return at


def _index_at_or_after(store: EventStore, ts: float, upto: int) -> int:
    row = store.db.execute("SELECT MIN(idx) FROM events WHERE ts >= ? AND idx <= ?", (ts, upto)).fetchone()
    return int(row[0]) if row and row[0] is not None else upto + 1


def _index_at_or_before(store: EventStore, ts: float, upto: int) -> int:
    row = store.db.execute("SELECT MAX(idx) FROM events WHERE ts <= ? AND idx <= ?", (ts, upto)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _tag(cls: type) -> str:
    return str(cls.__struct_config__.tag)  # type: ignore[attr-defined]


def _matching(store: EventStore, types: list[type], start: int, end: int, needle: str | None = None,
              newest_first: bool = False) -> Iterator[ev.Envelope]:
    """The events of these types in start..end that mention `needle` (an id, as a JSON string): selected by the
    store's `type` column and a substring test in SQLite, so only those are decoded (the rest of a long log is
    never read into Python)."""
    q = f"SELECT idx, term, ts, payload FROM events WHERE idx BETWEEN ? AND ? AND type IN " \
        f"({', '.join('?' * len(types))})"
    args: list[Any] = [start, end, *(_tag(t) for t in types)]
    if needle is not None:
        q += " AND instr(payload, ?) > 0"
        args.append(msgspec.json.encode(needle))
    q += " ORDER BY idx DESC" if newest_first else " ORDER BY idx"
    for idx, term, ts, payload in store.db.execute(q, args):
        yield ev.Envelope(index=idx, term=term, ts=ts, event=decode_payload(idx, payload))


def _fmt_time(ts: float | None) -> str:
    return iso(ts) or "-"


# ---- a task ------------------------------------------------------------------------------------------


def why_task(store: EventStore, framework_id: str, task_id: str, at: int | None = None) -> dict[str, Any]:
    upto = _upto(store, at)
    cluster = cluster_id(store)
    fids = set(_names(framework_id, cluster))
    launch: ev.Envelope | None = None
    adopted: ev.Envelope | None = None
    steps: list[dict[str, Any]] = []
    fid = framework_id
    kinds = [ev.OffersAccepted, ev.AgentReregistered, ev.StatusUpdated, ev.TaskKillRequested]
    for env in _matching(store, kinds, 1, upto, task_id):
        e = env.event
        if isinstance(e, ev.OffersAccepted) and e.framework_id in fids:
            if any(t.task_id == task_id for t in e.tasks) or (
                    launch is None and adopted is None and any(r.task_id == task_id for r in e.rejected)):
                launch, adopted, fid, steps = env, None, e.framework_id, []  # a reused task id: the latest launch
            elif launch is not None or adopted is not None:
                # A launch rejected while the task id was in use (or after it) does not replace the task's history.
                for r in e.rejected:
                    if r.task_id == task_id:
                        steps.append({"step": "REJECTED", "index": env.index, "time": iso(env.ts), "reason": r.reason,
                                      "message": r.message, "source": "SOURCE_MASTER"})
        elif isinstance(e, ev.AgentReregistered):
            for rep in e.tasks:
                if rep.framework_id in fids and rep.task_id == task_id and launch is None and adopted is None:
                    adopted, fid = env, rep.framework_id
        elif isinstance(e, ev.StatusUpdated) and e.framework_id in fids and e.task_id == task_id \
                and (launch is not None or adopted is not None):
            st = e.status
            steps.append({"step": st.state, "index": env.index, "time": iso(env.ts), "reason": st.reason,
                          "message": st.message, "source": st.source})
        elif isinstance(e, ev.TaskKillRequested) and e.framework_id in fids and e.task_id == task_id \
                and (launch is not None or adopted is not None):
            steps.append({"step": "KILL_REQUESTED", "index": env.index, "time": iso(env.ts), "reason": None,
                          "message": None, "source": "SOURCE_MASTER"})
    question = f"Why did task {task_id} of framework {framework_id} run where it ran?" if launch is None or \
        any(t.task_id == task_id for t in getattr(launch.event, "tasks", [])) else \
        f"What happened to task {task_id} of framework {framework_id}?"
    if launch is None and adopted is None:
        raise WhyError("task_id", f"no task {task_id!r} of framework {framework_id!r} in the log up to index {upto}",
                       status=404)
    if adopted is not None:
        assert isinstance(adopted.event, ev.AgentReregistered)
        agent = adopted.event.agent_id
        timeline = [{"step": "ADOPTED", "index": adopted.index, "time": iso(adopted.ts), "reason": None,
                     "message": f"agent {agent} reported it when it re-registered", "source": "SOURCE_AGENT"}, *steps]
        return {"question": question, "kind": "task", "index": upto, "framework_id": fid, "task_id": task_id,
                "agent_id": agent,
                "answer": f"Agent {agent} reported the task when it re-registered at index {adopted.index}: it "
                          f"was not launched through an offer in this log, so no allocation run placed it.",
                "reasons": [{"reason": "adopted", "detail": f"reported by agent {agent}", "count": None}],
                "changes": [], "timeline": timeline, "offer": None, "candidates": []}
    assert launch is not None and isinstance(launch.event, ev.OffersAccepted)
    acc = launch.event
    spec = next((t for t in acc.tasks if t.task_id == task_id), None)
    rejected = next((r for r in acc.rejected if r.task_id == task_id), None)
    run, offer_id = None, None
    for oid in acc.offer_ids:  # the run that made the (first) offer it was launched with
        run = next((m for m in _matching(store, [ev.OffersMade], 1, launch.index, oid, newest_first=True)
                    if any(o.offer_id == oid for o in m.event.offers)), None)  # type: ignore[attr-defined]
        if run is not None:
            offer_id = oid
            break
    record = None
    if run is not None:
        assert isinstance(run.event, ev.OffersMade)
        record = next(o for o in run.event.offers if o.offer_id == offer_id)
    agent = spec.agent_id if spec is not None else (record.agent_id if record is not None else None)
    timeline: list[dict[str, Any]] = []
    if run is not None and record is not None:
        timeline.append({"step": "OFFERED", "index": run.index, "time": iso(run.ts), "reason": None,
                         "message": f"offer {record.offer_id}: {Resources(record.resources).format()}",
                         "source": "SOURCE_MASTER"})
    timeline.append({"step": "ACCEPTED" if rejected is None else "REJECTED", "index": launch.index,
                     "time": iso(launch.ts), "reason": rejected.reason if rejected else None,
                     "message": rejected.message if rejected else
                     f"launched with offer(s) {', '.join(acc.offer_ids)}", "source": "SOURCE_MASTER"})
    timeline.extend(steps)
    out: dict[str, Any] = {"question": question, "kind": "task", "index": upto, "framework_id": fid,
                           "task_id": task_id, "agent_id": agent, "timeline": timeline, "candidates": [],
                           "offer": None, "changes": []}
    if run is None or record is None:
        out["answer"] = (f"The framework accepted offer(s) {', '.join(acc.offer_ids)} at index {launch.index}; the "
                         f"run that made them is not in the log (before a snapshot the log was compacted to?).")
        out["reasons"] = [{"reason": "accepted", "detail": out["answer"], "count": None}]
        return out
    before = state_at(store, run.index - 1)
    assert isinstance(run.event, ev.OffersMade)
    decisions = allocation.explanation(before, run)
    formatted = {o.offer_id: Resources(o.resources).format() for o in run.event.offers}
    agents, explained = _explain(run.event, decisions or [], formatted)
    here = next((a for a in agents if record.offer_id in {o["offer_id"] for o in a["offers"]}), None)
    cands = here["candidates"] if here is not None else []
    why = explained.get(record.offer_id, {})
    out["offer"] = {"offer_id": record.offer_id, "index": run.index, "time": iso(run.ts), "trigger": run.event.trigger,
                    "stage": why.get("stage"), "role": record.role, "resources": formatted[record.offer_id]}
    out["candidates"] = cands
    stage = {1: "stage 1 (quota guarantees)", 2: "stage 2 (fair share)"}.get(why.get("stage") or 0, "")
    pos = next((c for c in cands if c["offer_id"] == record.offer_id), None)
    nxt = [c for c in cands if c is not pos and c["outcome"] != "offered" and not c["outcome"].startswith("skipped")]
    answer = (f"Allocation run at index {run.index} ({run.event.trigger}) offered agent {record.agent_id} to framework "
              f"{record.framework_id} (role {record.role}) as offer {record.offer_id}")
    reasons: list[dict[str, Any]] = []
    if decisions is None:
        answer += "; the run cannot be re-derived from the log, so the order it saw is unknown"
    elif pos is not None:
        answer += (f": in {stage}, it was number {pos['position']} of {len(cands)} candidate(s) the allocator "
                   f"looked at on that agent, with DRF share {pos['share']:.3f} in its role "
                   f"(role share {pos['role_share']:.3f})")
        for c in cands:
            reasons.append({"reason": f"candidate {c['position']}", "count": None,
                            "detail": f"{c['framework_id']} (role {c['role']}, share {c['share']:.3f}, role share "
                                      f"{c['role_share']:.3f}): {c['outcome']}"})
        if nxt:
            n = nxt[0]
            answer += f"; next in line was {n['framework_id']} (share {n['share']:.3f})"
            if n["role"] == pos["role"]:
                order = (f"{n['framework_id']} (share {n['share']:.3f}) came after it in role {n['role']}: DRF serves "
                         f"the lowest share first (ties: fewer allocations, then the id)")
            else:
                order = (f"{n['framework_id']}'s role {n['role']} (role share {n['role_share']:.3f}) came after role "
                         f"{pos['role']} (role share {pos['role_share']:.3f}): roles are served lowest weighted share "
                         f"first; a higher weight for {n['role']} (UPDATE_WEIGHTS) moves it up")
            out["changes"].append(order)
    answer += (f". The framework chose to launch the task with it at index {launch.index} (frameworks pick among "
               f"their offers; the master picks whom to offer each agent to).")
    if rejected is not None:
        answer += f" The master rejected it: {rejected.reason}: {rejected.message}."
    out["changes"].append("to steer placement, the scheduler chooses which offers to use (e.g. by agent "
                          "attributes); reservations for its role keep an agent's resources for it")
    out["answer"] = answer
    out["reasons"] = reasons or [{"reason": "offered", "detail": answer, "count": None}]
    return out


# ---- a framework or a role over a window -----------------------------------------------------------------


def _runs(store: EventStore, start: int, end: int, fids: set[str], role: str | None
          ) -> tuple[list[int], int, dict[str, int]]:
    """The allocation runs in start..end (indexes), how many offers went to the frameworks (in `role`), and
    per framework the offers received."""
    runs = [int(r[0]) for r in store.db.execute("SELECT idx FROM events WHERE idx BETWEEN ? AND ? AND type = ? "
                                                  "ORDER BY idx", (start, end, _tag(ev.OffersMade)))]
    got: dict[str, int] = {}
    for fid in sorted(fids):
        for env in _matching(store, [ev.OffersMade], start, end, fid):
            assert isinstance(env.event, ev.OffersMade)
            n = sum(1 for o in env.event.offers if o.framework_id == fid and (role is None or o.role == role))
            if n:
                got[fid] = got.get(fid, 0) + n
    return runs, sum(got.values()), got


def _window(store: EventStore, since: str | float | None, until: str | float | None, upto: int
            ) -> tuple[int, int, float | None, float | None]:
    t0 = None if since in (None, "") else (since if isinstance(since, float) else parse_time(str(since), "since"))
    t1 = None if until in (None, "") else (until if isinstance(until, float) else parse_time(str(until), "until"))
    if t0 is not None and t1 is not None and t1 < t0:
        raise WhyError("until", f"{iso(t1)} is before since ({iso(t0)})")
    start = 1 if t0 is None else _index_at_or_after(store, t0, upto)
    if start > upto:
        last = store.db.execute("SELECT ts FROM events WHERE idx = ?", (upto,)).fetchone()
        raise WhyError("since", f"{iso(t0)} is after the last event asked about (index {upto}, "
                                f"{_fmt_time(last[0] if last else None)})")
    end = upto if t1 is None else _index_at_or_before(store, t1, upto)
    return start, end, t0, t1


def _diagnose_window(store: EventStore, fids: list[str], end: int, runs: list[int], now_time: float | None,
                     role: str | None
                     ) -> tuple[dict[str, list[diag.RunDiagnosis]], dict[str, diag.RunDiagnosis], State]:
    """Per framework: the diagnoses of the last MAX_RUNS of the window's allocation `runs`, and of a hypothetical
    run at its end (index `end`); and the state there."""
    chosen = runs[-MAX_RUNS:]
    first = chosen[0] if chosen else end + 1
    state = state_at(store, min(first, end + 1) - 1)
    per: dict[str, list[diag.RunDiagnosis]] = {f: [] for f in fids}
    wanted = set(chosen)
    if chosen:
        for env in iter_envelopes(store, first, end):
            e = env.event
            if env.index in wanted and isinstance(e, ev.OffersMade):
                decisions = allocation.explanation(state, env) or []
                for f in fids:
                    per[f].append(diag.diagnose(state, f, e.offers, decisions, e.candidates, index=env.index,
                                                time=env.ts, trigger=e.trigger, role=role))
            apply(state, env)
    now: dict[str, diag.RunDiagnosis] = {}
    ts = state.ts if now_time is None else max(now_time, state.ts)
    hypothetical = allocation.decide_offers(state, ts, "why", explain=True) if state.cluster_id else None
    offers = hypothetical.offers if hypothetical is not None else []
    decisions = hypothetical.decisions if hypothetical is not None else []
    for f in fids:
        now[f] = diag.diagnose(state, f, offers, decisions, None, index=state.index, time=ts, trigger="next run",
                               hypothetical=True, role=role)
    return per, now, state


def _finding_dict(f: diag.Finding, count: int | None, when: str) -> dict[str, Any]:
    d = msgspec.to_builtins(f)
    d.update({"count": count, "when": when})
    if f.until is not None:
        d["until"] = iso(f.until)
    return d


def _summarise(fid: str, diagnoses: list[diag.RunDiagnosis], now: diag.RunDiagnosis
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """The window's reasons (in how many analysed runs each applied; the latest detail) and the next run's,
    and what would change them."""
    counts: dict[str, int] = {}
    latest: dict[str, diag.Finding] = {}
    for d in diagnoses:
        for f in d.findings:
            counts[f.reason] = counts.get(f.reason, 0) + 1
            latest[f.reason] = f
    order = {r: i for i, r in enumerate(diag.REASONS)}
    window = [_finding_dict(latest[r], counts[r], "window")
              for r in sorted(counts, key=lambda r: (-counts[r], order.get(r, 99)))]
    nxt = [_finding_dict(f, None, "next run") for f in now.findings]
    changes: list[str] = []
    done: set[str] = set()
    for f in (*now.findings, *(latest[r] for r in sorted(counts, key=lambda r: -counts[r]))):
        if f.reason == diag.OFFERED or f.reason in done:
            continue  # one remedy per reason: the next run's when it has one
        if f.reason == diag.NOT_REGISTERED and not any(g.reason == diag.NOT_REGISTERED for g in now.findings):
            continue  # runs before it subscribed: it is registered now, so "must SUBSCRIBE" would mislead
        done.add(f.reason)
        text = diag.remedy(f, iso(f.until) if f.until else None)
        if text and text not in changes:
            changes.append(text)
    return nxt + window, changes


def _span(store: EventStore, start: int, end: int) -> str:
    """'indexes a-b (time to time)': the window as the log has it."""
    rows = dict(store.db.execute("SELECT idx, ts FROM events WHERE idx IN (?, ?)", (start, end)).fetchall())
    if start > end or start not in rows:
        return f"the empty window ending at index {end}"
    return f"indexes {start}-{end} ({_fmt_time(rows[start])} to {_fmt_time(rows.get(end))})"


def _framework_answer(fid: str, name: str, offers: int, runs: int, analysed: list[diag.RunDiagnosis],
                      now: diag.RunDiagnosis, window: str) -> str:
    text = f"Framework {fid}{f' ({name})' if name else ''} got {offers} offer(s) in {runs} allocation run(s) in " \
           f"{window}."
    missed = [d for d in analysed if not d.offered]
    if missed:
        counts: dict[str, int] = {}
        for d in missed:
            for r in d.reasons():
                counts[r] = counts.get(r, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        text += f" Of the last {len(analysed)} run(s), {len(missed)} gave it nothing: " + \
                ", ".join(f"{r.replace('_', ' ')} in {n}" for r, n in top) + "."
    if now.offered:
        text += f" At index {now.index} the next allocation run would offer it resources."
    else:
        text += f" At index {now.index} the next allocation run would offer it nothing: " + \
                "; ".join(f.detail for f in now.findings) + "."
    return text


def _framework_info(state: State, fid: str) -> tuple[str, list[str]]:
    fw = state.frameworks.get(fid) or state.completed_frameworks.get(fid)
    return (fw.info.name, list(fw.info.roles)) if fw is not None else ("", [])


def _subscriptions(store: EventStore, upto: int) -> dict[str, int]:
    """Every framework subscribed up to `upto`, with the index it first subscribed at."""
    first: dict[str, int] = {}
    for env in _matching(store, [ev.FrameworkSubscribed], 1, upto):
        assert isinstance(env.event, ev.FrameworkSubscribed)
        first.setdefault(env.event.framework_id, env.index)
    return first


def _role_frameworks(store: EventStore, role: str, upto: int) -> list[str]:
    """The frameworks subscribed to `role` (as of their latest subscription) and not removed, at `upto`."""
    roles: dict[str, list[str]] = {}
    for env in _matching(store, [ev.FrameworkSubscribed, ev.FrameworkRemoved], 1, upto):
        e = env.event
        if isinstance(e, ev.FrameworkSubscribed):
            roles[e.framework_id] = list(e.info.roles)
        elif isinstance(e, ev.FrameworkRemoved):
            roles.pop(e.framework_id, None)
    return sorted(f for f, rs in roles.items() if role in rs)


def _known_framework(store: EventStore, framework_id: str, upto: int) -> tuple[str, int]:
    """The framework's full id and the index it first subscribed at."""
    names = _names(framework_id, cluster_id(store))
    subscribed = _subscriptions(store, upto)
    for name in names:
        if name in subscribed:
            return name, subscribed[name]
    raise WhyError("framework_id", f"no framework {framework_id!r} subscribed in the log up to index {upto}",
                   status=404)


def why_framework(store: EventStore, framework_id: str, since: str | float | None = None,
                  until: str | float | None = None, at: int | None = None, role: str | None = None
                  ) -> dict[str, Any]:
    upto = _upto(store, at)
    fid, subscribed = _known_framework(store, framework_id, upto)
    start, end, t0, t1 = _window(store, since, until, upto)
    start = max(start, subscribed)  # the runs before it existed say nothing about it
    runs, offers, _ = _runs(store, start, end, {fid}, role) if start <= end else ([], 0, {})
    per, now, state = _diagnose_window(store, [fid], end, runs, t1, role)
    name, roles = _framework_info(state, fid)
    if role is not None and roles and role not in roles:
        raise WhyError("role", f"framework {fid} is not subscribed to role {role!r} (its roles: {', '.join(roles)})")
    reasons, changes = _summarise(fid, per[fid], now[fid])
    question = (f"Why did framework {fid} get no offers" if offers == 0 else
                f"Why did framework {fid} get only {offers} offer(s)") + (f" for role {role}" if role else "") + \
        (f" between {iso(t0)} and {iso(t1) or 'index ' + str(end)}?" if t0 else
         f" up to {iso(t1) or 'index ' + str(end)}?")
    return {"question": question, "kind": "framework", "index": end, "framework_id": fid, "name": name,
            "roles": roles, "role": role, "since": iso(t0), "until": iso(t1), "from_index": start, "to_index": end,
            "allocation_runs": len(runs), "runs_analysed": len(per[fid]), "offers_received": offers,
            "answer": _framework_answer(fid, name, offers, len(runs), per[fid], now[fid], _span(store, start, end)),
            "reasons": reasons, "changes": changes, "next_run": msgspec.to_builtins(now[fid]),
            "runs": [msgspec.to_builtins(d) for d in per[fid]]}


def why_role(store: EventStore, role: str, since: str | float | None = None, until: str | float | None = None,
             at: int | None = None) -> dict[str, Any]:
    upto = _upto(store, at)
    start, end, t0, t1 = _window(store, since, until, upto)
    fids = _role_frameworks(store, role, end)
    if not fids:
        raise WhyError("role", f"no registered framework is subscribed to role {role!r} at index {end}", status=404)
    subscribed = _subscriptions(store, end)
    start = max(start, min(subscribed.get(f, start) for f in fids))
    runs, offers, got = _runs(store, start, end, set(fids), role) if start <= end else ([], 0, {})
    per, now, state = _diagnose_window(store, fids, end, runs, t1, role)
    quota = state.quotas.get(role)
    weight = state.weights.get(role, 1.0)
    frameworks = []
    reasons: list[dict[str, Any]] = []
    changes: list[str] = []
    for f in fids:
        r, c = _summarise(f, per[f], now[f])
        for x in r:
            x["framework_id"] = f
        reasons.extend(r)
        # Several frameworks: say whose remedy each one is (two "filters expire at ..." lines are otherwise a puzzle).
        changes.extend(t for t in (f"{f}: {x}" if len(fids) > 1 else x for x in c) if t not in changes)
        frameworks.append({"framework_id": f, "offers_received": got.get(f, 0),
                           "next_run": msgspec.to_builtins(now[f])})
    starved = [f for f in fids if got.get(f, 0) == 0]
    answer = (f"Role {role} (weight {weight:g}{', quota ' + _quota_text(quota) if quota else ''}) got {offers} "
              f"offer(s) in {len(runs)} allocation run(s) in {_span(store, start, end)} for {len(fids)} "
              f"framework(s)")
    answer += f"; {len(starved)} got none: {', '.join(starved)}." if starved else "."
    nexts = [f"{f}: " + "; ".join(x.detail for x in now[f].findings) for f in fids if not now[f].offered]
    if nexts:
        answer += " Next run, nothing for " + " | ".join(nexts) + "."
    return {"question": f"Why did role {role} get the offers it got?", "kind": "role", "index": end, "role": role,
            "weight": weight, "quota": msgspec.to_builtins(quota) if quota else None, "since": iso(t0),
            "until": iso(t1), "from_index": start, "to_index": end, "allocation_runs": len(runs),
            "offers_received": offers, "frameworks": frameworks, "answer": answer, "reasons": reasons,
            "changes": changes}


def _quota_text(q: Any) -> str:
    parts = []
    if q.guarantees:
        parts.append("guarantees " + diag.fmt_q(dict(q.guarantees)))
    if q.limits:
        parts.append("limits " + diag.fmt_q(dict(q.limits)))
    return ", ".join(parts) or "none"


# ---- entry points and rendering ---------------------------------------------------------------------------


def ask(path: str | Path, kind: str, **params: Any) -> dict[str, Any]:
    """Open the store at `path` with its own connection, answer one question, close it."""
    store = open_store(resolve_store_path(path))  # read-only: a question never writes to a replica's store
    try:
        if kind == "task":
            answer = why_task(store, params["framework_id"], params["task_id"], params.get("at"))
        elif kind == "framework":
            answer = why_framework(store, params["framework_id"], params.get("since"), params.get("until"),
                                   params.get("at"), params.get("role"))
        elif kind == "role":
            answer = why_role(store, params["role"], params.get("since"), params.get("until"), params.get("at"))
        else:
            raise WhyError("kind", f"unknown question {kind!r} (expected one of {', '.join(KINDS)})")
        answer["cluster_id"] = cluster_id(store)
        return answer
    finally:
        store.close()


def _table(rows: Iterable[list[str]], headers: list[str]) -> list[str]:
    body = [[printable(str(c)) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return lines


def render(answer: dict[str, Any]) -> str:
    """The answer as readable text: the question, the answer, the reasons and the changes as tables. Ids are
    shown without the cluster prefix, as the audit shows them (the JSON has the full ids)."""
    cluster = answer.get("cluster_id")
    if not cluster:
        return _render(answer)
    prefix = f"{cluster}-"

    def short(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace(prefix, "")
        if isinstance(v, list):
            return [short(x) for x in v]
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        return v

    return _render(short(answer)) + f"\n(ids are shown without the cluster prefix {cluster!r})\n"


def _render(answer: dict[str, Any]) -> str:
    out = [printable(answer["question"]), "", *_wrap(answer["answer"]), ""]
    if answer.get("kind") == "task":
        if answer.get("candidates"):
            out.append("Candidates on the agent, in the order the allocator looked at them:")
            out += _table(([str(c["position"]), c["framework_id"], c["role"], f"{c['share']:.3f}",
                            f"{c['role_share']:.3f}", c["outcome"]] for c in answer["candidates"]),
                          ["POS", "FRAMEWORK", "ROLE", "SHARE", "ROLE_SHARE", "OUTCOME"])
            out.append("")
        out.append("Timeline:")
        out += _table(([str(s["index"]), s["time"] or "-", s["step"], s.get("reason") or "", s.get("message") or ""]
                       for s in answer["timeline"]), ["INDEX", "TIME", "STEP", "REASON", "MESSAGE"])
    else:
        out += _table(([r.get("when", ""), r.get("framework_id", answer.get("framework_id", "")), r["reason"],
                        "-" if r.get("count") is None else str(r["count"]), r["detail"]] for r in answer["reasons"]),
                      ["WHEN", "FRAMEWORK", "REASON", "RUNS", "DETAIL"])
    if answer.get("changes"):
        out += ["", "What would change it:"]
        out += [f"  - {printable(c)}" for c in answer["changes"]]
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int = 110) -> list[str]:
    words, lines, line = printable(text).split(" "), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return lines
