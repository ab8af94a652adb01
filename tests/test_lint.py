"""The habits of issue 9 item 12, run by the test command like any other test.

* ruff over every Python directory, with the rules of pyproject.toml's [tool.ruff];
* mypy, strict, over the pure core (the fold, the event vocabulary and codec, resources, limits, the allocator and
  the deciders): the file list and the flags are pyproject.toml's [tool.mypy], so `mypy` run by hand checks the same.

Both run from this interpreter's environment (`python -m ruff`, `python -m mypy`). A missing tool is a failure, not
a skip: a CI without them must not pass vacuously (they are in the `test` extra of pyproject.toml).
The third habit, pure modules importing no IO module, is tests/test_layers.py.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINTED = ["eventstore", "master", "agent", "replay", "drover", "bench", "tests"]
PURE_CORE = [
    "eventstore/values.py", "eventstore/vocab.py", "eventstore/events.py", "eventstore/resources.py",
    "master/state.py", "master/limits.py", "master/allocation.py", "master/allocator", "master/decide",
    "master/views.py", "drover/security/acls.py", "drover/security/credentials.py", "agent/checks.py",
    "agent/disk_limits.py", "master/why.py", "master/pipeline.py",
    "master/core.py",
]


def run_tool(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    assert importlib.util.find_spec(module) is not None, (
        f"{module} is not installed in {sys.prefix}: install the test extra (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_ruff() -> None:
    r = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", *LINTED)
    assert r.returncode == 0, f"ruff check found problems:\n{r.stdout}{r.stderr}"


def test_mypy_strict_on_the_pure_core() -> None:
    # The list lives in pyproject.toml (so a bare `mypy` checks it too); it must stay the pure core.
    configured = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    assert sorted(configured) == sorted(PURE_CORE), "pyproject.toml's [tool.mypy] files is not the pure core"
    # --strict again on the command line: the per-module flags in pyproject.toml cannot be loosened unnoticed.
    r = run_tool("mypy", "--strict")
    assert r.returncode == 0, f"mypy (strict on the pure core) found problems:\n{r.stdout}{r.stderr}"
