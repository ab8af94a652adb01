"""Disk limits: the sandbox measurement (agent/disk.py, as `du -x`) on real directory trees, and the pure rules
(agent/disk_limits.py): a task's limit from its resources, and when usage is a limitation. The live behaviour (a
task over its `disk` ends TASK_FAILED, REASON_CONTAINER_LIMITATION_DISK) is in tests/test_services.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent import disk
from agent.disk_limits import MB, disk_limitation, format_bytes, sandbox_disk_limit
from eventstore.resources import Resource, Resources
from eventstore.vocab import Reason


def _write(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b"x" * size)
        f.flush()
        os.fsync(f.fileno())


def _blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def _tree_base(path: Path) -> int:
    """What `path` holds with nothing in it but its directories (each directory's own blocks)."""
    return sum(_blocks(Path(d)) for d, _, _ in os.walk(path))


def test_files_and_directories_count_their_allocated_blocks(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    _write(tmp_path / "a" / "one", 1 * MB)
    _write(tmp_path / "a" / "b" / "two", 2 * MB)
    u = disk.measure(tmp_path)
    assert u.complete and u.errors == 0 and u.entries == 5  # the root, a, b and two files
    assert u.bytes == _tree_base(tmp_path) + _blocks(tmp_path / "a" / "one") + _blocks(tmp_path / "a" / "b" / "two")
    assert u.bytes >= 3 * MB
    assert disk.usage(tmp_path) == u.bytes


def test_a_hard_linked_file_counts_once(tmp_path):
    _write(tmp_path / "big", 2 * MB)
    (tmp_path / "d").mkdir()
    os.link(tmp_path / "big", tmp_path / "d" / "again")
    os.link(tmp_path / "big", tmp_path / "third")
    assert disk.usage(tmp_path) == _tree_base(tmp_path) + _blocks(tmp_path / "big")


def test_a_symlink_counts_as_itself_never_what_it_points_to(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(outside / "big", 4 * MB)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "to-file").symlink_to(outside / "big")
    (sandbox / "to-dir").symlink_to(outside)
    (sandbox / "dangling").symlink_to(tmp_path / "nothing")
    expected = _blocks(sandbox) + sum(_blocks(sandbox / n) for n in ("to-file", "to-dir", "dangling"))
    assert disk.usage(sandbox) == expected < MB
    # a symlink given as the root is the link alone, too
    (tmp_path / "root-link").symlink_to(outside)
    assert disk.usage(tmp_path / "root-link") == _blocks(tmp_path / "root-link") < MB


def test_another_file_system_mounted_inside_is_not_counted(tmp_path):
    sandbox = tmp_path / "sandbox"
    (sandbox / "m").mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(sandbox / "m")], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        _write(sandbox / "m" / "big", 4 * MB)
        # neither the mount point's (the tmpfs root's) blocks nor what it holds, as du -x
        assert disk.usage(sandbox) == _blocks(sandbox)
    finally:
        subprocess.run(["umount", str(sandbox / "m")], check=True)


def test_a_sparse_file_counts_its_blocks_not_its_size(tmp_path):
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(100 * MB)
        f.write(b"x" * 4096)
    assert os.path.getsize(tmp_path / "sparse") == 100 * MB
    assert disk.usage(tmp_path) == _blocks(tmp_path) + _blocks(tmp_path / "sparse") < MB


def test_a_missing_path_holds_nothing_and_a_file_is_its_own_blocks(tmp_path):
    assert disk.measure(tmp_path / "nope") == disk.Usage(0, 0, True)
    _write(tmp_path / "f", 10_000)
    assert disk.usage(tmp_path / "f") == _blocks(tmp_path / "f")


def _scandir_with(monkeypatch, hook) -> None:
    """os.scandir as the walk sees it, except that `hook(directory, entry)` runs just before the walk gets each
    entry (as a task changing its sandbox while it is measured)."""
    real = os.scandir

    class It:
        def __init__(self, fd):
            self.it, self.dir = real(fd), os.readlink(f"/proc/self/fd/{fd}")

        def __iter__(self):
            return self

        def __next__(self):
            e = next(self.it)
            hook(Path(self.dir), e)
            return e

        def close(self):
            self.it.close()

    monkeypatch.setattr(os, "scandir", It)


def test_entries_vanishing_during_the_walk_are_skipped(tmp_path, monkeypatch):
    _write(tmp_path / "stays", 1 * MB)
    _write(tmp_path / "goes", 1 * MB)
    (tmp_path / "dir-goes").mkdir()
    _write(tmp_path / "dir-goes" / "inner", 1 * MB)
    (tmp_path / "dir-goes-late").mkdir()
    kept = _blocks(tmp_path) + _blocks(tmp_path / "stays")

    def vanish(d: Path, e: os.DirEntry) -> None:
        if e.name == "dir-goes-late":
            e.stat(follow_symlinks=False)  # seen as a directory: then gone before the walk opens it
        if e.name in ("goes", "dir-goes", "dir-goes-late"):
            if e.is_dir(follow_symlinks=False):
                for name in os.listdir(d / e.name):  # (shutil.rmtree would use the patched scandir)
                    os.unlink(d / e.name / name)
                os.rmdir(d / e.name)
            else:
                os.unlink(d / e.name)

    _scandir_with(monkeypatch, vanish)
    u = disk.measure(tmp_path)
    assert u.complete and u.errors == 0
    assert u.bytes == kept


def test_a_directory_swapped_for_a_symlink_is_not_followed(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(outside / "big", 2 * MB)
    sandbox = tmp_path / "sandbox"
    (sandbox / "d").mkdir(parents=True)

    def swap(d: Path, e: os.DirEntry) -> None:
        if e.name == "d":
            e.stat(follow_symlinks=False)  # seen as a directory...
            (d / "d").rmdir()  # ...then swapped for a link before it is opened
            (d / "d").symlink_to(outside)

    _scandir_with(monkeypatch, swap)
    assert disk.usage(sandbox) < MB


def test_the_walk_is_bounded_and_says_so(tmp_path):
    for i in range(10):
        _write(tmp_path / f"f{i}", 4096)
    u = disk.measure(tmp_path, max_entries=4)
    assert not u.complete and u.entries == 4
    assert 0 < u.bytes < disk.usage(tmp_path)  # a lower bound
    deep = tmp_path / "deep"
    p = deep
    for i in range(6):
        p = p / f"l{i}"
    p.mkdir(parents=True)
    _write(p / "bottom", 1 * MB)
    u = disk.measure(deep, max_depth=3)
    assert not u.complete and u.bytes < MB
    assert disk.measure(deep).complete and disk.usage(deep) >= MB


def test_no_file_descriptor_is_left_open(tmp_path):
    p = tmp_path
    for i in range(20):
        p = p / f"l{i}"
        p.mkdir()
        _write(p / "f", 100)
    before = len(os.listdir("/proc/self/fd"))
    for kwargs in ({}, {"max_entries": 7}, {"max_depth": 5}):
        disk.measure(tmp_path, **kwargs)
    assert len(os.listdir("/proc/self/fd")) == before


# ---- the pure rules ------------------------------------------------------------------------------------------------

def test_the_sandbox_limit_is_the_tasks_disk_in_every_role():
    assert sandbox_disk_limit(Resources.parse("cpus:1;mem:32;disk:10").to_list()) == 10 * MB
    assert sandbox_disk_limit([Resource("disk", "SCALAR", scalar=10.0),
                               Resource("disk", "SCALAR", scalar=2.5, role="web")]) == int(12.5 * MB)
    assert sandbox_disk_limit(Resources.parse("cpus:1;mem:32").to_list()) is None  # no disk: no limit
    assert sandbox_disk_limit([Resource("disk", "SCALAR", scalar=0.0)]) is None  # Mesos drops an empty resource
    assert sandbox_disk_limit([]) is None


def test_a_limitation_is_strictly_more_than_the_limit():
    assert disk_limitation(10 * MB, 10 * MB) is None
    assert disk_limitation(10 * MB, None) is None
    assert disk_limitation(20 * MB, 10 * MB) == "Disk usage (20MB) exceeds quota (10MB)"
    # just over never reads as the limit itself; a fractional limit is rounded down
    assert disk_limitation(10 * MB + 4096, 10 * MB) == "Disk usage (10.1MB) exceeds quota (10MB)"
    assert disk_limitation(11 * MB, int(10.55 * MB)) == "Disk usage (11MB) exceeds quota (10.5MB)"
    assert format_bytes(0) == "0MB" and format_bytes(1) == "0.1MB"


def test_a_disk_limitation_decides_the_tasks_end():
    from agent.rules import exit_outcome

    class St:
        status, exit_code, oom_suspected = "exited", 137, False

    out = exit_outcome(St(), killed=True, disk_limitation="Disk usage (20MB) exceeds quota (10MB)")
    assert out == ("TASK_FAILED", "SOURCE_AGENT", Reason.CONTAINER_LIMITATION_DISK,
                   "Disk usage (20MB) exceeds quota (10MB)")
    assert Reason.CONTAINER_LIMITATION_DISK == "REASON_CONTAINER_LIMITATION_DISK"
    assert exit_outcome(St(), killed=True).state == "TASK_KILLED"


@pytest.mark.parametrize("argv, enforced, interval", [
    ([], False, 15.0),
    (["--enforce-container-disk-quota", "--container-disk-watch-interval", "1.5"], True, 1.5),
    (["--enforce-container-disk-quota", "--no-enforce-container-disk-quota"], False, 15.0),
])
def test_the_agent_flags(argv, enforced, interval, monkeypatch, tmp_path):
    from drover import cli

    seen = {}

    async def fake_run(cfg, stop=None):
        seen["cfg"] = cfg

    monkeypatch.setattr("agent.agent.run_agent", fake_run)
    args = cli.build_parser().parse_args(["agent", "--master", "127.0.0.1:1", "--http", "127.0.0.1:2",
                                          "--work-dir", str(tmp_path), *argv])
    assert cli._agent(args) == 0
    cfg = seen["cfg"]
    assert (cfg.enforce_container_disk_quota, cfg.container_disk_watch_interval) == (enforced, interval)


def test_drover_local_enforces_disk_quotas():
    from drover.local import LocalCluster

    c = LocalCluster(data_dir=Path("/nonexistent"))
    c.layout = {"masters": [{"http": "127.0.0.1:1"}], "podman_socket": "/x"}
    argv = c.agent_argv({"http": "127.0.0.1:2", "work_dir": "/w", "id": "a1"})
    assert "--enforce-container-disk-quota" in argv and "--container-disk-watch-interval" not in argv
    c.container_disk_watch_interval = 1.0
    argv = c.agent_argv({"http": "127.0.0.1:2", "work_dir": "/w", "id": "a1"})
    assert argv[argv.index("--container-disk-watch-interval") + 1] == "1"
