"""What changed between two folded states: the state at A (one store) and at B (the same store or
another replica's), section by section. `diff_states` gives a JSON-ready dict; `render` the text."""

from __future__ import annotations

from master.state import State, Task, state_hash
from replay.state_view import (Ids, all_tasks_with_completed, allocation_by_role, fmt_num, fmt_quantities,
                               fmt_res, fmt_time, printable, to_plain, usage_by_agent)

SECTIONS = ("frameworks", "agents", "tasks", "offers", "allocations", "filters", "weights", "quotas", "other")
# State fields covered by a section of their own (the rest go to "other"; index and ts are the header).
_COVERED = {"index", "ts", "frameworks", "agents", "tasks", "completed_tasks", "offers", "filters", "weights", "quotas"}


def _fw_view(fw) -> dict:
    return {"name": fw.info.name, "user": fw.info.user, "roles": list(fw.info.roles), "connected": fw.connected,
            "active": fw.active, "suppressed_roles": list(fw.suppressed_roles),
            "capabilities": list(fw.info.capabilities), "failover_timeout": fw.info.failover_timeout}


def _agent_view(agent, used, offered) -> dict:
    return {"hostname": agent.hostname, "http": agent.http, "connected": agent.connected,
            "total": fmt_res(agent.resources), "used": fmt_res(used.get(agent.agent_id, [])),
            "offered": fmt_res(offered.get(agent.agent_id, [])),
            "attributes": [f"{l.key}:{l.value}" for l in agent.attributes]}


def _task_view(t: Task) -> dict:
    return {"state": t.state, "agent_id": t.agent_id, "role": t.spec.role, "resources": fmt_res(t.spec.resources),
            "updates": len(t.statuses), "awaiting_ack": t.pending is not None, "kill_requested": t.kill_requested}


def _changes(a: dict, b: dict) -> dict:
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _keyed(a: dict, b: dict, view) -> tuple[list, list, list]:
    """added (in b only), removed (in a only), changed (field -> [a, b]) for two dicts of records."""
    added = [{"id": k, **view(b[k])} for k in b if k not in a]
    removed = [{"id": k, **view(a[k])} for k in a if k not in b]
    changed = []
    for k in a:
        if k in b:
            ch = _changes(view(a[k]), view(b[k]))
            if ch:
                changed.append({"id": k, "changes": ch})
    return added, removed, changed


def diff_states(a: State, b: State) -> dict:
    ha, hb = state_hash(a), state_hash(b)
    out: dict = {
        "a": {"index": a.index, "ts": a.ts, "state_hash": ha},
        "b": {"index": b.index, "ts": b.ts, "state_hash": hb},
        "identical": ha == hb,
    }

    added, removed, changed = _keyed(a.frameworks, b.frameworks, _fw_view)
    for r in removed:
        if r["id"] in b.removed_frameworks:
            r["removed_at"] = b.removed_frameworks[r["id"]]
    # Subscribed after A and removed again by B: only the removal record shows it.
    came_and_went = [{"id": k, "removed_at": t} for k, t in b.removed_frameworks.items()
                     if k not in a.removed_frameworks and k not in a.frameworks]
    out["frameworks"] = {"added": added, "removed": removed, "changed": changed, "added_and_removed": came_and_went}

    ua, oa = usage_by_agent(a)
    ub, ob = usage_by_agent(b)
    added = [{"id": k, **_agent_view(v, ub, ob)} for k, v in b.agents.items() if k not in a.agents]
    removed = [{"id": k, **_agent_view(v, ua, oa)} for k, v in a.agents.items() if k not in b.agents]
    changed = []
    for k, v in a.agents.items():
        if k in b.agents:
            ch = _changes(_agent_view(v, ua, oa), _agent_view(b.agents[k], ub, ob))
            if ch:
                changed.append({"id": k, "changes": ch})
    out["agents"] = {"added": added, "removed": removed, "changed": changed}

    ta, tb = all_tasks_with_completed(a), all_tasks_with_completed(b)
    t_added = [{"framework_id": k[0], "task_id": k[1], **_task_view(tb[k])} for k in tb if k not in ta]
    t_removed = [{"framework_id": k[0], "task_id": k[1], **_task_view(ta[k])} for k in ta if k not in tb]
    t_changed = []
    for k, t in ta.items():
        if k in tb:
            ch = _changes(_task_view(t), _task_view(tb[k]))
            if not ch and to_plain(t) != to_plain(tb[k]):
                ch = {"details": ["(other fields)", "(differ)"]}
            if ch:
                t_changed.append({"framework_id": k[0], "task_id": k[1], "changes": ch})
    out["tasks"] = {"added": t_added, "removed": t_removed, "changed": t_changed}

    def offer_view(o) -> dict:
        return {"framework_id": o.framework_id, "agent_id": o.agent_id, "role": o.role,
                "resources": fmt_res(o.resources), "made_at": o.made_at}

    added, removed, changed = _keyed(a.offers, b.offers, offer_view)
    out["offers"] = {"added": added, "removed": removed, "changed": changed}

    ra, rb = allocation_by_role(a), allocation_by_role(b)
    out["allocations"] = {"changed": [{"role": r, "a": ra.get(r, {}), "b": rb.get(r, {})}
                                      for r in sorted(set(ra) | set(rb)) if ra.get(r, {}) != rb.get(r, {})]}

    def fkey(f) -> tuple:
        return (f.framework_id, f.role, f.agent_id, fmt_res(f.resources), f.expires_at)

    fa, fb = {fkey(f): f for f in a.filters}, {fkey(f): f for f in b.filters}

    def fview(k: tuple) -> dict:
        return {"framework_id": k[0], "role": k[1], "agent_id": k[2], "resources": k[3], "expires_at": k[4]}

    out["filters"] = {"added": [fview(k) for k in fb if k not in fa], "removed": [fview(k) for k in fa if k not in fb]}

    out["weights"] = {"changed": [{"role": r, "a": a.weights.get(r), "b": b.weights.get(r)}
                                  for r in sorted(set(a.weights) | set(b.weights))
                                  if a.weights.get(r) != b.weights.get(r)]}
    qa = {r: to_plain(q) for r, q in a.quotas.items()}
    qb = {r: to_plain(q) for r, q in b.quotas.items()}
    out["quotas"] = {"changed": [{"role": r, "a": qa.get(r), "b": qb.get(r)}
                                 for r in sorted(set(qa) | set(qb)) if qa.get(r) != qb.get(r)]}

    other = {}
    for name in State.__struct_fields__:
        if name in _COVERED:
            continue
        va, vb = to_plain(getattr(a, name)), to_plain(getattr(b, name))
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict) and name in ("removed_frameworks", "completed_frameworks"):
            other[name] = {"added": sorted(set(vb) - set(va)), "dropped": sorted(set(va) - set(vb))}
        else:
            other[name] = [va, vb]
    out["other"] = other
    out["changed_sections"] = [s for s in SECTIONS if any(out[s].values())]
    if not out["identical"] and not out["changed_sections"] and a.index == b.index and a.ts == b.ts:
        out["note"] = "every field is equal but the state hashes differ: the allocators' bookkeeping differs"
    return out


# ---- text ------------------------------------------------------------------------------------------------


def _v(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return fmt_num(x)
    if isinstance(x, list):
        return ",".join(str(i) for i in x) or "-"
    return str(x)


def _cap(rows: list, limit: int | None) -> tuple[list, int]:
    """The rows to print and how many are left out."""
    if limit is None or len(rows) <= limit:
        return rows, 0
    return rows[:limit], len(rows) - limit


def render(d: dict, *, label_a: str = "A", label_b: str = "B", cluster_id: str | None = None,
           limit: int | None = 50) -> str:
    """The diff as text; every list stops at `limit` lines (None: no limit)."""
    ids = Ids(cluster_id)
    full = d
    d = _capped(d, limit)
    a, b = d["a"], d["b"]
    out = [f"diff: {label_a} (index {a['index']}, {fmt_time(a['ts'])})  ->  {label_b} (index {b['index']}, "
           f"{fmt_time(b['ts'])})"]
    if ids.note():
        out.append(ids.note())
    if d["identical"]:
        out.append(f"no differences: both states have hash {a['state_hash']}")
        return "\n".join(printable(line) for line in out)
    out.append(f"state hash {a['state_hash'][:16]}...  ->  {b['state_hash'][:16]}...")

    def changes(ch: dict) -> str:
        return "  ".join(f"{k}: {_v(v[0])} -> {_v(v[1])}" for k, v in ch.items())

    fw, n = d["frameworks"], full["frameworks"]
    if any(fw.values()):
        out.append(f"frameworks: {len(n['added'])} added, {len(n['removed'])} removed, {len(n['changed'])} changed"
                   + (f", {len(n['added_and_removed'])} added and removed in between"
                      if n["added_and_removed"] else ""))
        for r in fw["added"]:
            out.append(f"  + {ids(r['id'])}  {r['name']!r}  roles {_v(r['roles'])}  "
                       f"{'connected' if r['connected'] else 'disconnected'}"
                       + (f"  suppressed {_v(r['suppressed_roles'])}" if r["suppressed_roles"] else ""))
        for r in fw["removed"]:
            when = f"  (removed at {fmt_time(r['removed_at'])})" if "removed_at" in r else ""
            out.append(f"  - {ids(r['id'])}  {r['name']!r}{when}")
        for r in fw["changed"]:
            out.append(f"  ~ {ids(r['id'])}  {changes(r['changes'])}")
        for r in fw["added_and_removed"]:
            out.append(f"  +- {ids(r['id'])}  subscribed after A, removed at {fmt_time(r['removed_at'])}")

    ag, n = d["agents"], full["agents"]
    if any(ag.values()):
        out.append(f"agents: {len(n['added'])} added, {len(n['removed'])} removed, {len(n['changed'])} changed")
        for r in ag["added"]:
            out.append(f"  + {ids(r['id'])}  {r['hostname']}  total {r['total']}")
        for r in ag["removed"]:
            out.append(f"  - {ids(r['id'])}  {r['hostname']}")
        for r in ag["changed"]:
            out.append(f"  ~ {ids(r['id'])}  {changes(r['changes'])}")

    tk, n = d["tasks"], full["tasks"]
    if any(tk.values()):
        n_state = sum("state" in r["changes"] for r in n["changed"])
        out.append(f"tasks: {len(n['added'])} added, {len(n['removed'])} removed, {n_state} changed state"
                   + (f", {len(n['changed']) - n_state} changed otherwise" if len(n["changed"]) > n_state else ""))
        for r in tk["added"]:
            out.append(f"  + {r['task_id']}  framework {ids(r['framework_id'])}  agent {ids(r['agent_id'])}  "
                       f"{r['state']}")
        for r in tk["removed"]:
            out.append(f"  - {r['task_id']}  framework {ids(r['framework_id'])}  (was {r['state']})")
        for r in tk["changed"]:
            ch = dict(r["changes"])
            st = ch.pop("state", None)
            head = f"{st[0]} -> {st[1]}" if st else ""
            rest = changes(ch)
            out.append(f"  ~ {r['task_id']}  framework {ids(r['framework_id'])}  {head}"
                       + (f"  ({rest})" if rest and head else rest))

    of, n = d["offers"], full["offers"]
    if any(of.values()):
        out.append(f"offers: {len(n['added'])} added, {len(n['removed'])} removed"
                   + (f", {len(n['changed'])} changed" if n["changed"] else ""))
        for r in of["added"]:
            out.append(f"  + {ids(r['id'])}  to {ids(r['framework_id'])}  on {ids(r['agent_id'])}  role {r['role']}  "
                       f"{r['resources']}")
        for r in of["removed"]:
            out.append(f"  - {ids(r['id'])}  to {ids(r['framework_id'])}  on {ids(r['agent_id'])}  role {r['role']}  "
                       f"{r['resources']}")
        for r in of["changed"]:
            out.append(f"  ~ {ids(r['id'])}  {changes(r['changes'])}")

    al = d["allocations"]["changed"]
    if al:
        out.append("allocations by role (offered + used by active tasks):")
        for r in al:
            out.append(f"  {r['role']}  {fmt_quantities(r['a'])}  ->  {fmt_quantities(r['b'])}")

    fl, n = d["filters"], full["filters"]
    if any(fl.values()):
        out.append(f"filters: {len(n['added'])} added, {len(n['removed'])} removed")
        for sign, rows in (("+", fl["added"]), ("-", fl["removed"])):
            for r in rows:
                out.append(f"  {sign} {ids(r['framework_id'])}  role {r['role']}  agent {ids(r['agent_id'])}  "
                           f"{r['resources']}  until {fmt_time(r['expires_at'])}")

    for name in ("weights", "quotas"):
        rows = d[name]["changed"]
        if rows:
            out.append(f"{name}:")
            for r in rows:
                if name == "weights":
                    out.append(f"  {r['role']}  {_v(r['a'])} -> {_v(r['b'])}")
                else:
                    def q(x):
                        return "none" if x is None else (f"guarantees {fmt_quantities(x['guarantees'])} "
                                                         f"limits {fmt_quantities(x['limits'])}")
                    out.append(f"  {r['role']}  {q(r['a'])}  ->  {q(r['b'])}")

    if d["other"]:
        out.append("other fields:")
        for k, v in d["other"].items():
            if isinstance(v, dict):
                nv = full["other"][k]
                out.append(f"  {k}: {len(nv['added'])} added, {len(nv['dropped'])} dropped: "
                           + " ".join([f"+{ids(x)}" for x in v["added"]] + [f"-{ids(x)}" for x in v["dropped"]]))
            elif k == "elected_at":
                out.append(f"  {k}: {fmt_time(v[0])} -> {fmt_time(v[1])}")
            else:
                out.append(f"  {k}: {_short(v[0])} -> {_short(v[1])}")
    unchanged = [s for s in SECTIONS if s not in d["changed_sections"]]
    if unchanged:
        out.append("unchanged: " + ", ".join(unchanged))
    if d.get("note"):
        out.append(d["note"])
    left = d.get("_left_out", 0)
    if left:
        out.append(f"({left} more lines left out: --limit to see more, --json for everything)")
    return "\n".join(printable(line) for line in out)  # names and messages come from frameworks and agents


def _capped(d: dict, limit: int | None) -> dict:
    """A copy of the diff with every list cut to `limit` entries; `_left_out` counts the rest."""
    if limit is None:
        return d
    out = dict(d)
    left = 0
    for section in ("frameworks", "agents", "tasks", "offers", "allocations", "filters", "weights", "quotas"):
        sec = {}
        for k, rows in d[section].items():
            sec[k], n = _cap(rows, limit)
            left += n
        out[section] = sec
    other = {}
    for k, v in d["other"].items():
        if isinstance(v, dict):
            v = dict(v)
            for kk in ("added", "dropped"):
                v[kk], n = _cap(v[kk], limit)
                left += n
        other[k] = v
    out["other"] = other
    out["_left_out"] = left
    return out


def _short(x, n: int = 120) -> str:
    s = _v(x) if not isinstance(x, (dict, list)) else str(x)
    return s if len(s) <= n else s[: n - 3] + "..."
