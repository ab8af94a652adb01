"""The benchmarks still run (a short --quick pass each); their figures are not judged here."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("module", ["bench.raftlog", "bench.launch_latency", "bench.allocator", "bench.replay",
                                    "bench.tls"])
def test_benchmark_quick_run(module):
    r = subprocess.run([sys.executable, "-m", module, "--quick"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "median" in r.stdout or "events/s" in r.stdout or "calls/s" in r.stdout  # printed its table
