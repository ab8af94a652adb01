"""Issue 5, durability: with RaftTuning.fsync_journal (`drover master --raft-fsync`) every Raft journal mutation is
flushed to disk before pysyncobj acknowledges it, and the term/vote file is fsync'd (docs/design.md, Durability)."""

from __future__ import annotations

import asyncio
import time

import pysyncobj.syncobj
import pytest
from pysyncobj.journal import FileJournal

from eventstore import events as ev
from eventstore import raftlog
from eventstore.raftlog import DurableFileJournal, RaftLog, RaftTuning
from tests.cluster import run_framework, running_cluster


class CountingJournal(DurableFileJournal):
    """Records the order of journal mutations and flushes."""

    instances: list["CountingJournal"] = []

    def __init__(self, *a, **kw):
        self.ops: list[str] = []
        super().__init__(*a, **kw)
        CountingJournal.instances.append(self)

    def add(self, command, idx, term):
        self.ops.append("add")
        super().add(command, idx, term)

    def setCurrentTerm(self, term, votedForNodeId):
        self.ops.append("term")
        super().setCurrentTerm(term, votedForNodeId)

    def flush(self):
        self.ops.append("flush")
        super().flush()


def _event(i: int) -> ev.Event:
    return ev.StatusUpdated(framework_id="fw", task_id=f"t{i}", agent_id="a",
                            status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=float(i)))


async def _single_node(tmp_path, fsync: bool, proposals: int) -> tuple[object, list]:
    log = RaftLog(f"127.0.0.1:{_free_port()}", [], tmp_path / "raft", RaftTuning(fsync_journal=fsync))
    queue: asyncio.Queue = asyncio.Queue()
    log.start(asyncio.get_running_loop(), queue)
    try:
        deadline = time.time() + 10
        while not (log.ready and log.is_leader):
            assert time.time() < deadline, "single node never became leader"
            await asyncio.sleep(0.01)
        firsts = [await log.propose(ev.Batch(term=log.term, ts=0.0, events=[_event(i)])) for i in range(proposals)]
        return log._sync._SyncObj__raftLog, firsts
    finally:
        log.stop()


def _free_port() -> int:
    from drover.local import free_port

    return free_port()


def test_journal_flushes_after_every_add_and_term_change(tmp_path, monkeypatch):
    CountingJournal.instances.clear()
    monkeypatch.setattr(raftlog, "DurableFileJournal", CountingJournal)
    journal, firsts = asyncio.run(_single_node(tmp_path, fsync=True, proposals=5))
    assert firsts == [1, 2, 3, 4, 5]
    assert [journal] == CountingJournal.instances
    ops = journal.ops
    assert ops.count("add") >= 6  # the initial NO_OP, the leader's NO_OP, 5 proposals
    assert "term" in ops  # the single node elected itself: term and vote stored
    for i, op in enumerate(ops):
        if op == "add":  # nothing (in particular no acknowledgement) happens before the entry is flushed
            assert ops[i + 1] == "flush", ops
    assert isinstance(journal._FileJournal__metaStorer, raftlog._DurableMetaStorer)


def test_option_off_keeps_pysyncobjs_journal(tmp_path):
    journal, firsts = asyncio.run(_single_node(tmp_path, fsync=False, proposals=2))
    assert firsts == [1, 2]
    assert type(journal) is FileJournal


def test_only_registered_journals_become_durable(tmp_path):
    raftlog._install_journal_hook()
    raftlog._DURABLE_JOURNALS[str(tmp_path / "mine")] = DurableFileJournal
    try:
        assert type(pysyncobj.syncobj.createJournal(str(tmp_path / "other"))) is FileJournal
        assert type(pysyncobj.syncobj.createJournal(str(tmp_path / "mine"))) is DurableFileJournal
        assert type(pysyncobj.syncobj.createJournal(None)) is not FileJournal  # memory journal, untouched
    finally:
        raftlog._DURABLE_JOURNALS.pop(str(tmp_path / "mine"))


def test_compaction_rewrite_flushes_once_and_is_readable(tmp_path):
    path = str(tmp_path / "j")
    j = CountingJournal(path, str(tmp_path / "dump"))
    for i in range(1, 11):
        j.add(b"x%d" % i, i, 1)
    j.ops.clear()
    j.deleteEntriesTo(4)
    assert j.ops.count("flush") == 1 and j.ops[-1] == "flush"
    j._destroy()
    again = FileJournal(path)
    assert [e[1] for e in (again[i] for i in range(len(again)))] == list(range(5, 11))
    again._destroy()


@pytest.mark.integration
def test_three_replicas_with_fsync_run_a_pymesos_task(tmp_path):
    with running_cluster(tmp_path / "cluster", ["--raft-fsync"]) as c:
        assert all("--raft-fsync" in p.args for p in c.procs.values() if isinstance(p.args, list)
                   and "master" in p.args)
        out = run_framework("pymesos_echo.py", "--master", c.leader_endpoint(), "--tasks", "1")
        assert set(out["final"].values()) == {"TASK_FINISHED"}
        assert list(out["history"].values()) == [["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]]
        c.wait_converged()
