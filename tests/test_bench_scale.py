"""bench.scale still runs (its --quick pass: 50 emulated agents, short phases); its figures are not judged here."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_scale_benchmark_quick_run():
    r = subprocess.run([sys.executable, "-m", "bench.scale", "--quick"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for heading in ("Registration and idle", "Load (", "Reads and failover"):
        assert heading in r.stdout  # printed its tables
    assert "\n50 " in r.stdout  # a row for the 50 agents
