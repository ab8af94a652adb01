"""Benchmarks (not tests): each prints a table and compares against a baseline measured in the same run.

    .venv/bin/python -m bench.raftlog [--quick]
    .venv/bin/python -m bench.launch_latency [--quick]

See bench/README.md. Nothing here asserts on wall-clock times; `--quick` is a smoke run.
This module only holds small helpers shared by the two benchmarks.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import statistics
import sys
import threading
import time


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt(x: float, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """Plain-text table; columns in `right` (default: all but the first two) are right-aligned."""
    right = set(range(2, len(headers))) if right is None else right
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def machine_line() -> str:
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}  {platform.node()}  {os.cpu_count()} CPUs  "
            f"load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}  Python {platform.python_version()}")


def sigterm_as_keyboard_interrupt() -> None:
    """So `finally:` cleanup also runs when the benchmark is stopped with SIGTERM (e.g. a test timeout)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def exit_when_orphaned(parent_pid: int, interval: float = 1.0) -> None:
    """For benchmark child processes: exit if the benchmark that started us is gone (e.g. kill -9)."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def run_main(main) -> None:
    """A benchmark's entry point: exit with main()'s status; Ctrl-C (after main's own cleanup) exits 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        eprint("interrupted (cleaned up)")
        sys.exit(130)
