"""The chaos report as a readable table (the JSON form is `ChaosRun.verdict`'s dict, written as is)."""

from __future__ import annotations


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def render(report: dict) -> str:
    lines = [f"drover chaos: scenario {report['scenario']}, seed {report['seed']}, {report['duration']:g} s, "
             f"faults as {report['fault_mode']}" + (", HTTPS on every port" if report.get("tls") else "")]
    w = report["workload"]
    lines.append(f"workload: {w['tasks_launched']} tasks by {w['instances']} instance(s), "
                 f"{w['acknowledged_calls']} acknowledged calls, {w['indeterminate_calls']} indeterminate; "
                 f"last states {w['last_states']}")
    lines.append("")
    lines.append(f"{'#':>3}  {'fault':<18} {'target':<12} {'mode':<8} {'at s':>7} {'held s':>7} {'whole':>6}  timings")
    for i, f in enumerate(report["faults"], 1):
        held = (f["healed_at"] - f["at"]) if f["healed_at"] is not None and f["at"] is not None else None
        timings = ", ".join(f"{k} {v:.2f}" for k, v in f["timings"].items())
        whole = {True: "yes", False: "NO", None: "-"}[f["recovered"]]
        lines.append(f"{i:>3}  {f['kind']:<18} {f['target']:<12} {f['mode']:<8} {_fmt(f['at']):>7} {_fmt(held):>7} "
                     f"{whole:>6}  {timings}")
        for note in f["notes"]:
            lines.append(f"{'':>5}{note}")
    if not report["faults"]:
        lines.append("  (no faults injected)")
    if report["recovery"]:
        lines.append("")
        lines.append(f"{'recovery timing':<28} {'n':>3} {'median s':>9} {'max s':>7}")
        for k, s in report["recovery"].items():
            lines.append(f"{k:<28} {s['n']:>3} {s['median']:>9.2f} {s['max']:>7.2f}")
    lines.append("")
    for c in report["checks"]:
        lines.append(f"{'PASS' if c['ok'] else 'FAIL'}  {c['name']:<13} {c['summary']}")
        for v in c["violations"]:
            lines.append(f"        - {v}")
        if c["violation_count"] > len(c["violations"]):
            lines.append(f"        ... {c['violation_count'] - len(c['violations'])} more")
    for tid, views in (report.get("open_task_containers") or {}).items():
        lines.append(f"open task {tid}: podman says {views}")
    lines.append("")
    lines.append("verdict: " + ("PASS" if report["ok"] else "FAIL (see above)"))
    return "\n".join(lines)
