"""The agent's clean-up (agent/gc.py): the pure rules, the file sweep on a real directory tree, and on a real
cluster: a finished task's container goes once its final status is acknowledged, its sandbox after --gc-delay,
an orphaned exited container of the agent is swept, and a task's log is rotated beyond --task-log-max-size."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.gc import GarbageCollector, GCConfig, Sandbox, _rotate, expired, max_age, remove_tree, set_aside
from agent.images import podman_env
from tests.cluster import running_cluster

# ---- the pure rules ----------------------------------------------------------------------------------------------


def test_the_age_limit_shrinks_as_the_disk_fills():
    week = 7 * 24 * 3600.0
    assert max_age(week, 0.1, 0.0) == pytest.approx(0.9 * week)
    assert max_age(week, 0.1, 0.5) == pytest.approx(0.4 * week)
    assert max_age(week, 0.1, 0.9) == 0.0 and max_age(week, 0.1, 0.95) == 0.0  # full: at once
    assert max_age(100.0, 0.0, 0.0) == 100.0


def test_only_sandboxes_of_tasks_not_held_and_old_enough_expire_oldest_first():
    boxes = [Sandbox("F", "young", 5.0), Sandbox("F", "old", 50.0), Sandbox("F", "held", 99.0),
             Sandbox("G", "older", 80.0)]
    assert [s.task_id for s in expired(boxes, {("F", "held")}, 10.0)] == ["older", "old"]
    assert expired(boxes, set(), 1000.0) == []


# ---- the sweep on a real tree -----------------------------------------------------------------------------------


class FixedDisk(GarbageCollector):
    used = 0.0

    def used_fraction(self) -> float:  # the file system's fill is an input here
        return self.used


def make_box(root: Path, fid: str, tid: str, age: float, content: bytes = b"log\n") -> Path:
    box = root / "sandboxes" / fid / tid
    box.mkdir(parents=True)
    (box / "stdout").write_bytes(content)
    t = time.time() - age
    os.utime(box, (t, t))
    return box


def gc_for(root: Path, held: set, **cfg) -> FixedDisk:
    async def no_orphans() -> int:
        return 0

    return FixedDisk(root, GCConfig(**cfg), lambda: held, no_orphans)


def test_old_sandboxes_go_young_and_held_ones_stay(tmp_path):
    make_box(tmp_path, "F", "old", 500)
    make_box(tmp_path, "F", "young", 10)
    make_box(tmp_path, "F", "held", 5000)
    make_box(tmp_path, "G", "old", 500)
    gc = gc_for(tmp_path, {("F", "held")}, gc_delay=100.0, headroom=0.0)
    assert asyncio.run(gc.sweep()) == {"sandboxes": 2, "rotated_logs": 0, "containers": 0}
    assert sorted(p.name for p in (tmp_path / "sandboxes" / "F").iterdir()) == ["held", "young"]
    assert not (tmp_path / "sandboxes" / "G").exists()  # an emptied framework dir goes too
    gc.used = 0.95  # the disk fills up: sandboxes go at once, whatever their age
    assert asyncio.run(gc.sweep())["sandboxes"] == 1
    assert [p.name for p in (tmp_path / "sandboxes" / "F").iterdir()] == ["held"]


def test_a_symlink_in_a_sandbox_is_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    box = make_box(tmp_path / "work", "F", "t", 500)
    (box / "link").symlink_to(outside)
    os.symlink(outside, tmp_path / "work" / "sandboxes" / "F" / "planted")  # a link in place of a sandbox
    t = time.time() - 500
    os.utime(box, (t, t))
    gc = gc_for(tmp_path / "work", set(), gc_delay=100.0, headroom=0.0)
    asyncio.run(gc.sweep())
    assert (outside / "precious").read_text() == "keep"
    assert not box.exists()


def test_a_held_tasks_log_is_rotated_beyond_the_limit(tmp_path):
    box = make_box(tmp_path, "F", "t", 0, b"x" * 10_000)
    (box / "stderr").write_bytes(b"small")
    gc = gc_for(tmp_path, {("F", "t")}, task_log_max_bytes=4096)
    assert asyncio.run(gc.sweep())["rotated_logs"] == 1
    # at most the limit is kept aside (the end of the log), the rest is cut
    assert (box / "stdout.1").read_bytes() == b"x" * 4096 and (box / "stdout").read_bytes() == b""
    assert (box / "stderr").read_bytes() == b"small" and not (box / "stderr.1").exists()
    # the writer appends (O_APPEND, as the task's shell does): it goes on at the new end, no hole
    with open(box / "stdout", "ab") as f:
        f.write(b"more")
    assert (box / "stdout").read_bytes() == b"more"
    assert _rotate(box / "missing", 1) == 0


def test_an_executor_sandbox_that_cannot_be_looked_at_fails_alone_not_the_sweep(tmp_path):
    """An entry of the executors' tree whose lstat fails (as one removed while the sweep runs) is skipped: the other
    executor sandboxes are still collected, and the pass's orphan removal still runs. No mock: a name that makes
    the entry's path longer than PATH_MAX (ENAMETOOLONG for lstat, while listing its directory works)."""
    work = tmp_path
    while len(str(work)) < 3700:  # a deep work dir: its own path stays below PATH_MAX (4096)
        work = work / ("d" * 200)
    fw = work / "executors" / "F"
    fw.mkdir(parents=True)
    dfd = os.open(fw, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir("e" * 250, dir_fd=dfd)  # fw / that name: beyond PATH_MAX
    finally:
        os.close(dfd)
    with pytest.raises(OSError):
        os.lstat(fw / ("e" * 250))
    old = fw / "old"
    old.mkdir()
    t = time.time() - 500
    os.utime(old, (t, t))
    swept_orphans = []

    async def orphans() -> int:
        swept_orphans.append(1)
        return 0

    gc = FixedDisk(work, GCConfig(gc_delay=100.0, headroom=0.0), lambda: set(), orphans)
    assert asyncio.run(gc.sweep())["sandboxes"] == 1
    assert not old.exists() and swept_orphans == [1]


def test_a_stale_directory_set_aside_is_removed_without_following_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    stale = tmp_path / "executors" / "F" / "E"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "file").write_text("old")
    (stale / "link").symlink_to(outside)
    (stale / "sub" / "filelink").symlink_to(outside / "precious")
    aside = set_aside(stale)
    assert aside is not None and aside.parent == stale.parent and aside.name.startswith(".stale-")
    assert not stale.exists()
    stale.mkdir()  # the new group's, at once
    remove_tree(aside)
    assert not aside.exists() and (outside / "precious").read_text() == "keep"
    assert set_aside(tmp_path / "executors" / "F" / "none") is None


# ---- on a real cluster ------------------------------------------------------------------------------------------


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, env={**os.environ, **podman_env()},
                          timeout=60).stdout


def wait_until(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_finished_tasks_leave_no_container_and_their_sandboxes_go_after_the_delay(tmp_path):
    with running_cluster(tmp_path / "cluster", agent_args=["--gc-delay", "4", "--disk-watch-interval", "1",
                                                           "--gc-disk-headroom", "0"]) as c:
        aids = [c.agent_id(a["id"]) for a in c.layout["agents"]]
        r = subprocess.run([sys.executable, "-m", "drover.cli", "execute", "--master", c.layout["leader"],
                            "--command", "echo done", "--instances", "2", "--name", "gc"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        work_dirs = [Path(a["work_dir"]) for a in c.layout["agents"]]

        def task_containers() -> list[str]:
            return [cid for aid in aids for cid in podman("ps", "-aq", "--filter", f"label=drover.agent={aid}").split()]

        wait_until(lambda: task_containers() == [], what="the finished tasks' containers to be removed")
        # the sandboxes were there (the tasks wrote to them) and go once older than the delay
        wait_until(lambda: not any(any((w / "sandboxes").glob("*/*")) for w in work_dirs), what="sandboxes to go")

        # An exited container of the agent that belongs to no task it holds (an agent killed between
        # forgetting a task and removing its container) is swept.
        podman("run", "--runtime", "runc", "--label", f"drover.agent={aids[0]}", "--label", "drover.framework=x",
               "--label", "drover.task=y", "--name", f"orphan-{aids[0][-8:]}", "localhost/drover-busybox:latest",
               "true")
        wait_until(lambda: task_containers() == [], what="the orphaned container to be swept")


def test_a_task_cannot_stop_the_sweep_or_make_rotation_fill_the_disk(tmp_path):
    """Everything in a sandbox is the task's: a directory where the rotated copy goes, a sparse file of 8 TB, a
    link in place of its log, a FIFO. Each is handled or skipped; the sweep goes on (and deletes what it must)."""
    box = make_box(tmp_path, "F", "t", 0, b"y" * 10_000)
    (box / "stdout.1").mkdir()  # the rotated copy cannot go there: the log is still cut
    with open(box / "stderr", "wb") as f:
        f.truncate(8 * 1024**4)  # 8 TB apparent, no blocks: nothing to rotate, nothing copied
    other = make_box(tmp_path, "F", "u", 0)
    (other / "stdout").unlink()
    (other / "stdout").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_bytes(b"z" * 10_000)
    os.mkfifo(other / "stderr")
    make_box(tmp_path, "F", "old", 500)
    gc = gc_for(tmp_path, {("F", "t"), ("F", "u")}, task_log_max_bytes=4096, gc_delay=100.0, headroom=0.0)
    result = asyncio.run(gc.sweep())
    assert result["rotated_logs"] == 1 and result["sandboxes"] == 1
    assert (box / "stdout").read_bytes() == b"" and (box / "stdout.1").is_dir()
    assert (box / "stderr").stat().st_size == 8 * 1024**4 and not (box / "stderr.1").exists()
    assert (tmp_path / "outside").read_bytes() == b"z" * 10_000  # never followed
    assert [p.name for p in box.iterdir() if p.name.endswith(".tmp")] == []
