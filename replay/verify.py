"""`verify`: replay a store from index 0 and check everything that was recorded against what the
code recomputes. It stops at the FIRST finding, which names the index (or the file) and says what
differed. Checks, in log order:

1. the file: SQLite's `quick_check`, the tables, the catalogue version in `meta`;
2. every index from 1 to the last is present, its payload decodes (an unknown type is a failure),
   its `type` column matches the payload, `ts` and `term` never go backwards;
3. every `OFFERS_MADE` is re-decided (`master.allocation.redecide`) from the state just before it
   and must encode to exactly the recorded event;
4. folding never raises;
5. at every recorded snapshot: the recorded hash equals the replayed state's hash, and the
   snapshot's data decodes to a state with that same hash (and that index).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from eventstore import events as ev
from master.allocation import redecide
from master.state import State, apply, decode_snapshot, state_hash
from replay.diff import diff_states
from replay.reader import ReadOnlyStore, ReplayError, _no_gc, iter_envelopes
from replay.state_view import Ids, fmt_res, fmt_time


@dataclass
class Finding:
    index: int | None  # None: about the whole file
    check: str  # store | catalogue | gap | payload | type | order | decision | fold | snapshot
    message: str
    recorded: object = None
    recomputed: object = None
    differences: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    path: str
    events: int = 0  # events replayed (and checked) before stopping
    last_index: int = 0
    snapshots: int = 0  # snapshots checked
    decisions: int = 0  # OFFERS_MADE re-decided
    seconds: float = 0.0
    finding: Finding | None = None

    @property
    def ok(self) -> bool:
        return self.finding is None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        out = {"ok": self.ok, "store": self.path, "events_checked": self.events, "last_index": self.last_index,
               "snapshots_checked": self.snapshots, "decisions_rerun": self.decisions,
               "seconds": round(self.seconds, 3), "events_per_second": round(self.rate)}
        if self.finding is not None:
            f = self.finding
            out["failure"] = {"index": f.index, "check": f.check, "message": f.message, "recorded": f.recorded,
                              "recomputed": f.recomputed, "differences": f.differences}
        return out


# ---- comparing two JSON values, compactly ------------------------------------------------------------


def json_differences(a, b, path: str = "$", limit: int = 12) -> list[str]:
    """Paths where two JSON-like values differ, e.g. `$.offers[0].resources[1].scalar: 2.0 != 1.5`."""
    out: list[str] = []

    def short(x) -> str:
        s = msgspec.json.encode(x).decode()
        return s if len(s) <= 80 else s[:77] + "..."

    def walk(x, y, p: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                if k not in y:
                    out.append(f"{p}.{k}: {short(x[k])} != (absent)")
                elif k not in x:
                    out.append(f"{p}.{k}: (absent) != {short(y[k])}")
                else:
                    walk(x[k], y[k], f"{p}.{k}")
                if len(out) >= limit:
                    return
        elif isinstance(x, list) and isinstance(y, list):
            for i, (u, v) in enumerate(zip(x, y, strict=False)):  # extra items are reported apart
                walk(u, v, f"{p}[{i}]")
                if len(out) >= limit:
                    return
            if len(x) != len(y):
                out.append(f"{p}: {len(x)} items != {len(y)} items")
        elif x != y or type(x) is not type(y) and not (isinstance(x, (int, float)) and isinstance(y, (int, float))):
            out.append(f"{p}: {short(x)} != {short(y)}")

    walk(a, b, path)
    return out


def offers_compact(made: ev.OffersMade | None, ids: Ids) -> list[str]:
    if made is None:
        return ["(no offers)"]
    lines = [f"{ids(o.offer_id)} -> {ids(o.framework_id)} on {ids(o.agent_id)} role {o.role} {fmt_res(o.resources)}"
             for o in made.offers]
    return lines or ["(no offers)"]


# ---- verify -----------------------------------------------------------------------------------------------


def verify(store: ReadOnlyStore, quick_check: bool = True) -> VerifyResult:
    res = VerifyResult(path=str(store.path))
    t0 = time.perf_counter()
    try:
        res.finding = _verify(store, res, quick_check)
    except ReplayError as e:  # a gap, a payload that does not decode, a damaged file read half-way
        check = {"MissingIndex": "gap", "PayloadError": "payload", "StoreError": "store",
                 "FoldError": "fold"}.get(type(e).__name__, "store")
        if check == "payload" and "the type column says" in str(e):
            check = "type"
        res.finding = Finding(e.index, check, str(e))
    res.seconds = time.perf_counter() - t0
    return res


def _verify(store: ReadOnlyStore, res: VerifyResult, quick_check: bool) -> Finding | None:
    if quick_check:
        problem = store.quick_check()
        if problem is not None:
            return Finding(None, "store", f"{store.path} is not a valid event store: SQLite integrity check: {problem}")
    version = store.meta().get("catalogue_version")
    if version is not None and version != str(ev.CATALOGUE_VERSION):
        return Finding(None, "catalogue", f"{store.path} holds catalogue version {version}; this build reads "
                                          f"version {ev.CATALOGUE_VERSION}")
    last = res.last_index = store.last_index()
    snaps = dict(store.snapshots())
    state = State()
    prev_ts = float("-inf")
    prev_term = 0
    made_type = ev.OffersMade
    with _no_gc():
        for env in iter_envelopes(store, 1, last, check_type=True):
            i = env.index
            if env.ts < prev_ts:
                return Finding(i, "order", f"index {i}: ts goes backwards: {env.ts!r} ({fmt_time(env.ts)}) after "
                                           f"{prev_ts!r} ({fmt_time(prev_ts)})", prev_ts, env.ts)
            if env.term < prev_term:
                return Finding(i, "order", f"index {i}: term goes backwards: {env.term} after {prev_term}",
                               prev_term, env.term)
            prev_ts, prev_term = env.ts, env.term
            if type(env.event) is made_type:
                f = _check_decision(state, env)
                if f is not None:
                    return f
                res.decisions += 1
            try:
                apply(state, env)
            except Exception as e:
                return Finding(i, "fold", f"index {i}: folding {ev.event_type(env.event)} failed: "
                                          f"{type(e).__name__}: {e}")
            res.events += 1
            if i in snaps:
                f = _check_snapshot(store, state, i, snaps[i])
                if f is not None:
                    return f
                res.snapshots += 1
    beyond = sorted(i for i in snaps if i > last or i < 1)
    if beyond:
        i = beyond[0]
        return Finding(i, "snapshot", f"index {i}: a snapshot is recorded at index {i}, but the events run "
                                      f"1..{last}")
    return None


def _check_decision(state: State, env: ev.Envelope) -> Finding | None:
    i = env.index
    recorded = env.event
    try:
        again = redecide(state, env)
    except Exception as e:
        return Finding(i, "decision", f"index {i}: re-running the OFFERS_MADE decision failed: "
                                      f"{type(e).__name__}: {e}")
    rec_bytes = ev.encode_event(recorded)
    new_bytes = ev.encode_event(again) if again is not None else b"null"
    if rec_bytes == new_bytes:
        return None
    rec_json = msgspec.json.decode(rec_bytes)
    new_json = msgspec.json.decode(new_bytes)
    ids = Ids(state.cluster_id)
    diffs = json_differences(rec_json, new_json) if again is not None else ["the allocator makes no offers"]
    rec_offers = offers_compact(recorded, ids)
    new_offers = offers_compact(again, ids)
    what = "different offers" if rec_offers != new_offers else "the same offers but a different record"
    return Finding(i, "decision",
                   f"index {i}: re-running the OFFERS_MADE decision (trigger {recorded.trigger}, seed {recorded.seed}) "
                   f"gives {what}",
                   recorded=rec_offers, recomputed=new_offers, differences=diffs)


def _check_snapshot(store: ReadOnlyStore, state: State, i: int, recorded_hash: str) -> Finding | None:
    replayed = state_hash(state)
    if replayed != recorded_hash:
        return Finding(i, "snapshot", f"index {i}: the snapshot's recorded state hash differs from the replayed "
                                      f"state's", recorded=recorded_hash, recomputed=replayed)
    snap = store.snapshot(i)
    if snap is None:  # pragma: no cover - listed a moment ago
        return None
    try:
        decoded = decode_snapshot(snap[2])
        decoded_hash = state_hash(decoded)
    except Exception as e:
        return Finding(i, "snapshot", f"index {i}: the snapshot's data does not decode: {type(e).__name__}: {e}")
    if decoded.index != i:
        return Finding(i, "snapshot", f"index {i}: the snapshot's data is the state at index {decoded.index}",
                       recorded=i, recomputed=decoded.index)
    if decoded_hash != replayed:
        d = diff_states(state, decoded)
        sections = d["changed_sections"] or ["allocator bookkeeping"]
        return Finding(i, "snapshot", f"index {i}: the snapshot's data decodes to a different state than replay "
                                      f"(differs in: {', '.join(sections)})",
                       recorded=decoded_hash, recomputed=replayed)
    return None


def render(res: VerifyResult) -> str:
    if res.ok:
        return "\n".join([
            f"verify OK: {res.path}",
            f"  events checked     {res.events:,} (indexes 1..{res.last_index}: gap-free, every payload decodes, "
            f"type/ts/term consistent, folds without error)",
            f"  snapshots checked  {res.snapshots:,} (recorded hash = replayed hash = decoded snapshot's hash)"
            if res.snapshots else "  snapshots checked  0 (the store holds none)",
            f"  decisions re-run   {res.decisions:,} OFFERS_MADE, each identical to the record",
            f"  time               {res.seconds:.2f} s, {res.rate:,.0f} events/s",
        ])
    f = res.finding
    lines = [f"verify FAILED: {f.message}"]
    if f.recorded is not None or f.recomputed is not None:
        for label, v in (("recorded:  ", f.recorded), ("recomputed:", f.recomputed)):
            if isinstance(v, list):
                lines.append(f"  {label} " + (v[0] if v else "-"))
                lines += [f"  {' ' * len(label)} {x}" for x in v[1:]]
            else:
                lines.append(f"  {label} {v}")
    if f.differences:
        lines.append("  differences (recorded != recomputed):")
        lines += [f"    {d}" for d in f.differences]
    if res.events:
        lines.append(f"  checked before it: {res.events:,} events, {res.snapshots} snapshots, "
                     f"{res.decisions} decisions")
    return "\n".join(lines)
