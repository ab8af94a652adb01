"""`drover chaos run|list`: fault injection against a local cluster, with a verdict (docs/chaos.md).

Exit status: 0 every invariant held; 1 a violation (the report says which); 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drover.errors import UsageError
from drover.replay_cli import _one_line_errors


def _seconds(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if v < 10:
        raise argparse.ArgumentTypeError(f"a run needs at least 10 s, got {value}")
    return v


def _port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        lo = hi = 0
    if not sep or not 1 <= lo <= hi <= 65535:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH within 1-65535, got {value!r}")
    return lo, hi


def add_commands(sub: argparse._SubParsersAction) -> None:
    from drover.chaos.faults import SCENARIOS

    p = sub.add_parser("chaos", help="inject faults into a local cluster under load and check nothing was lost",
                       description="Start a local cluster, run a workload through it, inject faults on a seeded "
                                   "schedule, then check the invariants (docs/chaos.md).")
    _one_line_errors(p, "drover chaos")
    cs = p.add_subparsers(dest="chaos_cmd", required=True, metavar="{run,list}")
    r = cs.add_parser("run", help="one chaos run; exits 1 if any invariant was violated")
    _one_line_errors(r, "drover chaos run")
    r.add_argument("--scenario", required=True, choices=sorted(SCENARIOS), metavar="NAME",
                   help="one of: " + ", ".join(sorted(SCENARIOS)))
    r.add_argument("--seed", type=int, default=1, help="names the fault schedule and the workload (default 1)")
    r.add_argument("--duration", type=_seconds, default=60.0, help="seconds of workload under faults (default 60)")
    r.add_argument("--report", type=Path, default=None,
                   help="write the JSON report here (default: DATA_DIR/report.json)")
    r.add_argument("--data-dir", type=Path, default=Path("var/chaos"), help="the run's cluster, logs and history "
                   "(emptied first; default var/chaos)")
    r.add_argument("--agents", type=int, default=2)
    r.add_argument("--task-ports", type=_port_range, default=(31000, 32000), metavar="LOW-HIGH",
                   help="the ports the agents offer (default 31000-32000). Tasks run on this host's network, so "
                        "runs at the same time on one host need ranges that do not overlap")
    net = r.add_mutually_exclusive_group()
    net.add_argument("--netns", dest="netns", action="store_true", default=None,
                     help="masters and agents in network namespaces, partitions drop packets (needs root; the "
                          "default when root)")
    net.add_argument("--no-netns", dest="netns", action="store_false",
                     help="process faults only: a partition is SIGSTOP/SIGCONT")
    r.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    r.add_argument("--secure", action="store_true",
                   help="run the cluster with authentication and ACLs on every port (drover local --secure)")
    r.add_argument("--tls", action="store_true",
                   help="HTTPS on every port of the cluster (a generated CA, as drover local --tls; docs/tls.md)")
    cs.add_parser("list", help="the scenarios and the faults each injects")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from drover.chaos.faults import SCENARIOS

    if args.chaos_cmd == "list":
        for name, kinds in sorted(SCENARIOS.items()):
            print(f"{name:<20} {', '.join(kinds)}")
        return 0
    from drover.chaos import netns
    from drover.chaos.report import render
    from drover.chaos.netns import NetnsError
    from drover.chaos.run import ChaosError, ChaosRun

    if args.netns and not netns.available():
        raise UsageError("--netns needs root and the ip and iptables commands")
    if args.agents < 1:
        raise UsageError(f"--agents must be at least 1, got {args.agents}")
    chaos = ChaosRun(scenario=args.scenario, seed=args.seed, duration=args.duration, data_dir=args.data_dir.resolve(),
                     use_netns=args.netns, agents=args.agents, secure=args.secure, tls=args.tls,
                     task_ports=args.task_ports,
                     out=sys.stderr if args.json else sys.stdout)
    try:
        report = chaos.execute()
    except (ChaosError, NetnsError) as e:
        raise UsageError(str(e)) from None
    path = args.report or (args.data_dir / "report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
        print(f"report: {path}")
    return 0 if report["ok"] else 1
