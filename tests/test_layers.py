"""The pure core imports no IO: the fold, the allocator, the deciders, effects and the event vocabulary.

Checked on the source (AST), transitively through the project's own modules, so an IO import cannot sneak
in through a helper either. What counts as IO: the network, disk, processes, threads, clocks, randomness
and logging. The list of pure modules is the layering docs/design.md describes ("The decide layer").
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PURE_ROOTS = [
    "eventstore.values", "eventstore.vocab", "eventstore.events", "eventstore.resources",
    "master.state", "master.allocation", "master.effects", "master.limits", "master.allocator", "master.decide",
    "master.views", "drover.security.acls", "drover.security.credentials", "agent.checks",
    "agent.disk_limits", "master.why", "master.pipeline",
    "master.core",
]
IO_MODULES = {
    "asyncio", "aiohttp", "aiosqlite", "sqlite3", "pysyncobj", "podman", "socket", "subprocess", "os", "time",
    "random", "uuid", "threading", "structlog", "logging", "urllib", "http", "requests", "secrets", "shutil",
    "datetime", "pathlib", "signal", "select", "selectors", "multiprocessing", "concurrent", "io", "tempfile",
}
PROJECT = {"eventstore", "master", "agent", "replay", "drover", "bench"}


def module_files(name: str) -> list[Path]:
    base = REPO / Path(*name.split("."))
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    return [base.with_suffix(".py")]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def resolve(name: str) -> list[Path]:
    """The project files an imported name refers to (a module, a package's __init__, or nothing)."""
    base = REPO / Path(*name.split("."))
    if base.with_suffix(".py").exists():
        return [base.with_suffix(".py")]
    if (base / "__init__.py").exists():
        return [base / "__init__.py"]
    return []


def test_pure_modules_import_no_io() -> None:
    seen: dict[Path, str] = {}
    todo = [(f, root) for root in PURE_ROOTS for f in module_files(root)]
    problems = []
    while todo:
        path, via = todo.pop()
        if path in seen:
            continue
        seen[path] = via
        for name in sorted(imports_of(path)):
            top = name.split(".")[0]
            if top in IO_MODULES:
                problems.append(f"{path.relative_to(REPO)} imports {name} (reached from {via})")
            elif top in PROJECT:
                for f in resolve(name):
                    todo.append((f, f"{via} -> {path.relative_to(REPO)}"))
    assert seen, "no pure module found"
    assert not problems, "\n".join(problems)
