"""`bisect`: where do two stores (two replicas, or two runs) stop holding the same history?

Both stores are walked in index order side by side (a merge over the primary key, a chunk of rows
at a time: exact, and linear in the log). The answer is the first index where they differ:

- both hold the index, with a different term, ts, type or payload: **diverge** there;
- one store ends before the other: **diverge** at the first index only one of them holds;
- one store lacks an index the other holds *inside* its own range (a gap), while every event both
  hold is the same: reported as **missing**, with the first such index.

Snapshots recorded at the same index in both stores must carry the same hash (they are derived
from the events; a different hash there is worth a `verify`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from replay.reader import ReadOnlyStore, iter_rows
from replay.state_view import fmt_time
from replay.verify import json_differences

MAX_GAPS = 20


def _payload_bytes(p) -> bytes:
    if isinstance(p, str):
        return p.encode()
    if isinstance(p, (bytes, bytearray, memoryview)):
        return bytes(p)
    return repr(p).encode()


@dataclass
class BisectResult:
    path_a: str
    path_b: str
    last_a: int = 0
    last_b: int = 0
    compared: int = 0  # indexes both stores hold, compared equal before the answer
    index: int | None = None  # the first index where they differ (None: no divergence found)
    kind: str = "identical"  # identical | diverge | ends | missing | snapshots
    row_a: tuple | None = None
    row_b: tuple | None = None
    fields: list[str] = field(default_factory=list)  # which of term/ts/type/payload differ
    differences: list[str] = field(default_factory=list)  # payload paths that differ
    gaps: list[tuple[int, str]] = field(default_factory=list)  # (index, "a"|"b": the store lacking it)
    gap_count: int = 0
    snapshot_mismatches: list[tuple[int, str, str]] = field(default_factory=list)
    diverged_at: tuple[str, int] | None = None  # a divergence found after the first gap

    @property
    def identical(self) -> bool:
        return self.kind == "identical"

    def to_json(self) -> dict:
        def row(r):
            if r is None:
                return None
            try:
                payload = msgspec.json.decode(_payload_bytes(r[4]))
            except msgspec.DecodeError:
                payload = _payload_bytes(r[4]).decode(errors="replace")
            return {"index": r[0], "term": r[1], "ts": r[2], "type": r[3], "payload": payload}

        return {"identical": self.identical, "kind": self.kind, "index": self.index, "store_a": self.path_a,
                "store_b": self.path_b, "last_index_a": self.last_a, "last_index_b": self.last_b,
                "compared": self.compared, "a": row(self.row_a), "b": row(self.row_b), "fields": self.fields,
                "differences": self.differences,
                "missing": [{"index": i, "missing_from": w} for i, w in self.gaps], "missing_count": self.gap_count,
                "snapshot_mismatches": [{"index": i, "hash_a": x, "hash_b": y}
                                        for i, x, y in self.snapshot_mismatches]}


def bisect(a: ReadOnlyStore, b: ReadOnlyStore) -> BisectResult:
    res = BisectResult(str(a.path), str(b.path), a.last_index(), b.last_index())
    ia, ib = iter_rows(a), iter_rows(b)
    ra, rb = next(ia, None), next(ib, None)

    def gap(idx: int, missing_from: str) -> None:
        res.gap_count += 1
        if len(res.gaps) < MAX_GAPS:
            res.gaps.append((idx, missing_from))

    while ra is not None or rb is not None:
        if ra is not None and rb is not None and ra[0] == rb[0]:
            fields = [name for k, name in ((1, "term"), (2, "ts"), (3, "type")) if ra[k] != rb[k]]
            pa, pb = _payload_bytes(ra[4]), _payload_bytes(rb[4])
            if pa != pb:
                fields.append("payload")
            if fields:
                res.kind, res.index, res.row_a, res.row_b, res.fields = "diverge", ra[0], ra, rb, fields
                if "payload" in fields:
                    try:
                        res.differences = json_differences(msgspec.json.decode(pa), msgspec.json.decode(pb))
                    except msgspec.DecodeError:
                        res.differences = ["(a payload is not valid JSON)"]
                    if not res.differences:
                        res.differences = ["(same JSON value, encoded differently)"]
                break
            res.compared += 1
            ra, rb = next(ia, None), next(ib, None)
        elif rb is None or (ra is not None and ra[0] < rb[0]):
            if rb is None and ra[0] > res.last_b:  # b has ended
                res.kind, res.index, res.row_a = "ends", ra[0], ra
                break
            gap(ra[0], "b")
            ra = next(ia, None)
        else:
            if ra is None and rb[0] > res.last_a:
                res.kind, res.index, res.row_b = "ends", rb[0], rb
                break
            gap(rb[0], "a")
            rb = next(ib, None)

    if res.gaps and (res.index is None or res.gaps[0][0] < res.index):
        # A gap comes first: that is the first index where the stores differ. A divergence found
        # later is kept in `diverged_at`.
        if res.index is not None:
            res.diverged_at = (res.kind, res.index)
        res.kind, res.index = "missing", res.gaps[0][0]
        res.row_a, res.row_b = a.row(res.index), b.row(res.index)
        res.fields, res.differences = [], []
    sa, sb = dict(a.snapshots()), dict(b.snapshots())
    res.snapshot_mismatches = [(i, sa[i], sb[i]) for i in sorted(set(sa) & set(sb)) if sa[i] != sb[i]]
    if res.kind == "identical" and res.snapshot_mismatches:
        res.kind, res.index = "snapshots", res.snapshot_mismatches[0][0]
    return res


def _row_line(label: str, r: tuple | None, width: int = 300) -> str:
    if r is None:
        return f"  {label}: (no event at this index)"
    payload = _payload_bytes(r[4]).decode(errors="replace")
    if len(payload) > width:
        payload = payload[:width] + f"... ({len(payload)} bytes)"
    return f"  {label}: term {r[1]}  ts {r[2]!r} ({fmt_time(r[2])})  {r[3]}  {payload}"


def render(res: BisectResult) -> str:
    la, lb = f"A {res.path_a}", f"B {res.path_b}"
    out: list[str] = []
    if res.kind == "identical":
        out.append(f"identical: both stores hold the same {res.compared:,} events (indexes 1..{res.last_a}), "
                   f"with the same term, ts, type and payload at every index")
        return "\n".join(out)
    if res.kind == "diverge":
        out.append(f"the stores diverge at index {res.index} ({', '.join(res.fields)} differ; the "
                   f"{res.compared:,} events before it are the same)")
        out.append(_row_line(la, res.row_a))
        out.append(_row_line(lb, res.row_b))
        if res.differences:
            out.append("  payload differences (A != B):")
            out += [f"    {d}" for d in res.differences]
    elif res.kind == "ends":
        short, long_ = ("B", "A") if res.row_a is not None else ("A", "B")
        last_short = res.last_b if short == "B" else res.last_a
        last_long = res.last_a if short == "B" else res.last_b
        out.append(f"the stores diverge at index {res.index}: store {short} ends at index {last_short}, store "
                   f"{long_} goes on to {last_long} (the {res.compared:,} events both hold are the same)")
        out.append(_row_line(la, res.row_a))
        out.append(_row_line(lb, res.row_b))
    elif res.kind == "missing":
        idx, where = res.gaps[0]
        later = (f"and they also diverge at index {res.diverged_at[1]}" if res.diverged_at
                 else "every event both stores hold is the same")
        out.append(f"store {where.upper()} is missing index {res.index} (a gap: it holds later indexes); {later}")
        out.append(_row_line(la, res.row_a))
        out.append(_row_line(lb, res.row_b))
    elif res.kind == "snapshots":
        out.append(f"the events are identical ({res.compared:,}), but the snapshots at these indexes carry "
                   f"different state hashes (run `drover replay verify` on each):")
    if res.kind == "missing" and res.gap_count > 1:
        out.append(f"  ({res.gap_count} missing indexes in all; first: "
                   + ", ".join(f"{i} from {w.upper()}" for i, w in res.gaps[:5]) + ")")
    for i, x, y in res.snapshot_mismatches[:5]:
        out.append(f"  snapshot at index {i}: A {x[:16]}...  B {y[:16]}...")
    return "\n".join(out)
