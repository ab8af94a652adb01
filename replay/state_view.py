"""A folded `State` for people (a text summary) and for programs (every field, as JSON-ready builtins)."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict

import msgspec

from eventstore.resources import Resources
from master.state import State, Task, state_hash

DEFAULT_LIMIT = 50  # lines per list in the text summary


# ---- small formatting helpers (shared with diff/verify/bisect and the audit) ---------------------------

# What must not reach a terminal as is: the C0 and C1 control characters and DEL (ANSI escape sequences start
# with ESC or CSI; CR and BS overwrite what was shown) and the bidirectional-text controls (they reorder it).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: str) -> str:
    """`text` for one cell or line of a table or console output: control characters (newlines too) shown as
    escapes (`\\x1b`, `\\n`, `\\u202e`) rather than written to the terminal. Every text printer uses it."""
    return _UNPRINTABLE.sub(_escape, text) if _UNPRINTABLE.search(text) else text


def printable_lines(text: str) -> str:
    """A multi-line text with each line made `printable` (the line breaks stay)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def fmt_time(ts: float | None) -> str:
    """Leader time as ISO 8601 UTC with milliseconds, e.g. 2026-11-25T10:46:27.610Z."""
    if ts is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return repr(ts)


def fmt_res(resources) -> str:
    r = resources if isinstance(resources, Resources) else Resources(resources or [])
    return r.format() or "-"


def fmt_num(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") or "0"


def fmt_quantities(q: dict[str, float]) -> str:
    return ";".join(f"{k}:{fmt_num(v)}" for k, v in sorted(q.items())) or "-"


class Ids:
    """Shortens IDs derived from the cluster id (`<cluster>-0001`, `<cluster>-S3`, `<cluster>-O7`) to
    their suffix for text output; JSON always carries the full IDs."""

    def __init__(self, cluster_id: str | None):
        self.prefix = f"{cluster_id}-" if cluster_id else None

    def __call__(self, id_: str | None) -> str:
        if id_ is None:
            return "-"
        if self.prefix and id_.startswith(self.prefix):
            return id_[len(self.prefix):]
        return id_

    def note(self) -> str | None:
        return f"(framework, agent and offer ids are shown without the cluster prefix {self.prefix!r})" \
            if self.prefix else None


def to_plain(obj):
    """JSON-ready builtins with *every* field of every struct (msgspec.to_builtins would omit fields
    equal to their default, e.g. `connected: true`); array-like structs stay arrays."""
    if isinstance(obj, msgspec.Struct):
        cfg = obj.__struct_config__
        if cfg.array_like:
            return msgspec.to_builtins(obj)
        out = {}
        if cfg.tag_field is not None:
            out[cfg.tag_field] = cfg.tag
        for name in obj.__struct_fields__:
            out[name] = to_plain(getattr(obj, name))
        return out
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return msgspec.to_builtins(obj)


def state_json(state: State) -> dict:
    """Every field of the State plus its state_hash."""
    out = {name: to_plain(getattr(state, name)) for name in State.__struct_fields__}
    out["state_hash"] = state_hash(state)
    return out


# ---- derived views ------------------------------------------------------------------------------------


def all_tasks_with_completed(state: State) -> dict[tuple[str, str], Task]:
    """(framework, task) -> Task over the live tasks and the bounded completed list (live wins)."""
    out: dict[tuple[str, str], Task] = {}
    for t in state.completed_tasks:
        out[(t.framework_id, t.task_id)] = t
    for fw_tasks in state.tasks.values():
        for t in fw_tasks.values():
            out[(t.framework_id, t.task_id)] = t
    return out


def usage_by_agent(state: State) -> tuple[dict[str, Resources], dict[str, Resources]]:
    """(used by non-terminal tasks, offered) per agent, in one pass each."""
    used: dict[str, list] = defaultdict(list)
    for fw_tasks in state.tasks.values():
        for t in fw_tasks.values():
            if not t.terminal:
                used[t.agent_id].extend(t.spec.resources)
    offered: dict[str, list] = defaultdict(list)
    for o in state.offers.values():
        offered[o.agent_id].extend(o.resources)
    return ({a: Resources(r) for a, r in used.items()}, {a: Resources(r) for a, r in offered.items()})


def allocation_by_role(state: State) -> dict[str, dict[str, float]]:
    """Per role: the scalar quantities offered plus used by non-terminal tasks (reserved included)."""
    acc: dict[str, dict[str, float]] = defaultdict(dict)

    def add(role: str, resources) -> None:
        q = acc[role]
        for r in resources:
            if r.type == "SCALAR":
                q[r.name] = round(q.get(r.name, 0.0) + r.scalar, 3)

    for fw_tasks in state.tasks.values():
        for t in fw_tasks.values():
            if not t.terminal:
                add(t.spec.role, t.spec.resources)
    for o in state.offers.values():
        add(o.role, o.resources)
    return {role: dict(sorted(q.items())) for role, q in sorted(acc.items()) if any(v > 0 for v in q.values())}


def task_state_counts(state: State) -> Counter:
    return Counter(t.state for t in all_tasks_with_completed(state).values())


# ---- the text summary ---------------------------------------------------------------------------------


def _limited(lines: list[str], limit: int | None) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return lines[:limit] + [f"  ... and {len(lines) - limit} more (--limit to see more)"]


def summary(state: State, *, source: str | None = None, last_index: int | None = None,
            limit: int | None = DEFAULT_LIMIT, digest: str | None = None) -> str:
    ids = Ids(state.cluster_id)
    out: list[str] = []
    where = f" of {last_index}" if last_index is not None else ""
    src = f" in {source}" if source else ""
    out.append(f"cluster     {state.cluster_id or '(not created yet)'}")
    out.append(f"index       {state.index}{where}{src}")
    out.append(f"leader time {fmt_time(state.ts) if state.index else '-'}  (ts {state.ts!r})")
    if state.leader_id:
        out.append(f"leader      {state.leader_id} (http {state.leader_http}), term {state.term}, "
                   f"elected {fmt_time(state.elected_at)}")
    else:
        out.append("leader      (none elected yet)")
    out.append(f"state hash  {digest or state_hash(state)}")
    if ids.note():
        out.append(ids.note())

    # Frameworks.
    live_tasks = {fid: list(ts.values()) for fid, ts in state.tasks.items()}
    completed = Counter(t.framework_id for t in state.completed_tasks)
    n_conn = sum(fw.connected for fw in state.frameworks.values())
    out.append("")
    out.append(f"frameworks: {len(state.frameworks)} ({n_conn} connected)"
               + (f"; {len(state.removed_frameworks)} removed" if state.removed_frameworks else ""))
    lines = []
    for fid, fw in state.frameworks.items():
        tasks = live_tasks.get(fid, [])
        running = sum(not t.terminal for t in tasks)
        flags = ["connected" if fw.connected else f"disconnected since {fmt_time(fw.disconnected_at)}",
                 "active" if fw.active else "inactive"]
        lines.append(f"  {ids(fid)}  {fw.info.name!r} user {fw.info.user}  roles {','.join(fw.info.roles)}  "
                     f"{' '.join(flags)}"
                     + (f"  suppressed {','.join(fw.suppressed_roles)}" if fw.suppressed_roles else "")
                     + f"  tasks: {running} active, {len(tasks) - running} terminal awaiting ack, "
                       f"{completed.get(fid, 0)} completed")
    out += _limited(lines, limit)

    # Agents.
    used, offered = usage_by_agent(state)
    n_conn = sum(a.connected for a in state.agents.values())
    out.append("")
    out.append(f"agents: {len(state.agents)} ({n_conn} connected)")
    lines = []
    for aid, a in state.agents.items():
        lines.append(f"  {ids(aid)}  {a.hostname}  {'connected' if a.connected else 'disconnected'}  "
                     f"total {fmt_res(a.resources)}  used {fmt_res(used.get(aid, Resources()))}  "
                     f"offered {fmt_res(offered.get(aid, Resources()))}")
    out += _limited(lines, limit)

    # Tasks.
    counts = task_state_counts(state)
    n_live = sum(len(t) for t in live_tasks.values())
    out.append("")
    out.append(f"tasks: {n_live} in the task table, {len(state.completed_tasks)} in the completed list"
               + ("; by state: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else ""))
    lines = []
    for fid, tasks in live_tasks.items():
        for t in tasks:
            extra = " (kill requested)" if t.kill_requested else ""
            extra += " (update awaiting ack)" if t.pending is not None else ""
            lines.append(f"  {t.task_id}  framework {ids(fid)}  agent {ids(t.agent_id)}  role {t.spec.role}  "
                         f"{t.state}  {fmt_res(t.spec.resources)}{extra}")
    out += _limited(lines, limit)

    # Offers.
    out.append("")
    out.append(f"outstanding offers: {len(state.offers)}")
    lines = [f"  {ids(o.offer_id)}  to {ids(o.framework_id)}  on {ids(o.agent_id)}  role {o.role}  "
             f"{fmt_res(o.resources)}  made {fmt_time(o.made_at)}" for o in state.offers.values()]
    out += _limited(lines, limit)

    # Allocation per role.
    alloc = allocation_by_role(state)
    if alloc:
        out.append("")
        out.append("allocated by role (offered + used by active tasks):")
        out += [f"  {role}  {fmt_quantities(q)}" for role, q in alloc.items()]

    # Filters.
    out.append("")
    out.append(f"filters: {len(state.filters)}")
    lines = [f"  {ids(f.framework_id)}  role {f.role}  agent {ids(f.agent_id)}  {fmt_res(f.resources)}  "
             f"until {fmt_time(f.expires_at)}" for f in state.filters]
    out += _limited(lines, limit)

    out.append("")
    out.append("weights: " + (", ".join(f"{r}={fmt_num(w)}" for r, w in sorted(state.weights.items())) or "none"))
    out.append(f"quotas: {len(state.quotas) or 'none'}")
    for role, q in sorted(state.quotas.items()):
        out.append(f"  {role}  guarantees {fmt_quantities(q.guarantees)}  limits {fmt_quantities(q.limits)}")
    return "\n".join(printable(line) for line in out)  # names and messages come from frameworks and agents
