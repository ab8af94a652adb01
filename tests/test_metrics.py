"""Metrics (master/metrics.py, agent/metrics.py, docs/operating.md): the Prometheus exposition parsed back with
prometheus_client's own parser, the Mesos /metrics/snapshot names, and a real single-node master replica's
/metrics (served on every replica, authenticated like /master/state)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from types import SimpleNamespace
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from drover.local import free_port
from drover.security.credentials import parse as parse_credentials
from eventstore import events as ev
from eventstore.raftlog import RaftTuning
from master.http import build_app
from master.metrics import MasterMetrics, snapshot
from master.replica import MasterConfig, MasterServer
from tests.test_fold import offer, status, task, with_fw_and_agent


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fake_core(state, tmp_path: Path, *, serving: bool = True):
    """What the scrape-time collector reads of a MasterServer."""
    return SimpleNamespace(state=state, serving=serving, committed_index=state.index, started_at=1000.0,
                           event_listeners={1, 2}, store=SimpleNamespace(path=tmp_path / "none.sqlite"))


def folded_cluster():
    """A log: one agent (4 cpus, 4096 MB), one framework, offers made, declined, accepted (two tasks), one task
    running and one finished."""
    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="periodic"))
    log(ev.OffersDeclined(framework_id="F1", offer_ids=["O1"], refuse_seconds=0.0))
    log(ev.OffersMade(offers=[offer("O2")], trigger="periodic"))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O2"], tasks=[task("t1"), task("t2")], refuse_seconds=0.0))
    log(ev.StatusUpdated(framework_id="F1", task_id="t1", agent_id="A1", status=status("TASK_RUNNING")))
    log(ev.StatusUpdated(framework_id="F1", task_id="t2", agent_id="A1", status=status("TASK_FINISHED")))
    return log


def test_committed_events_are_counted_and_state_gauges_read_at_scrape(tmp_path: Path) -> None:
    log = folded_cluster()
    m = MasterMetrics()
    m.bind(fake_core(log.state, tmp_path))  # type: ignore[arg-type]
    m.observe_committed(log.envelopes)
    s = samples(m.exposition().decode())
    assert s[("drover_master_elected", ())] == 1
    assert s[("drover_master_applied_index", ())] == log.state.index
    assert s[("drover_master_leader_changes_total", ())] == 1
    assert s[("drover_master_offers_made_total", ())] == 2
    assert s[("drover_master_offers_declined_total", ())] == 1
    assert s[("drover_master_offers_accepted_total", ())] == 1
    assert s[("drover_master_offers_rescinded_total", ())] == 0
    assert s[("drover_master_task_status_updates_total", (("reason", ""), ("state", "TASK_RUNNING")))] == 1
    assert s[("drover_master_agents", (("state", "connected"),))] == 1
    assert s[("drover_master_agents", (("state", "unreachable"),))] == 0
    assert s[("drover_master_frameworks", (("state", "active"),))] == 1
    assert s[("drover_master_tasks", (("state", "TASK_RUNNING"),))] == 1
    assert s[("drover_master_tasks", (("state", "TASK_STAGING"),))] == 0
    # t2 finished with no uuid: completed, no longer tracked
    assert ("drover_master_tasks", (("state", "TASK_FINISHED"),)) not in s
    assert s[("drover_master_cpus", (("kind", "total"),))] == 4
    assert s[("drover_master_cpus", (("kind", "used"),))] == 1
    assert s[("drover_master_memory_bytes", (("kind", "total"),))] == 4096 * 1024 * 1024
    assert s[("drover_master_memory_bytes", (("kind", "used"),))] == 128 * 1024 * 1024
    assert s[("drover_master_event_stream_listeners", ())] == 2
    assert s[("drover_master_store_size_bytes", ())] == 0
    assert s[("drover_master_allocation_run_duration_seconds_count", ())] == 0
    # Prometheus naming: counters end in _total, units are base units, no id appears as a label value
    for fam in text_string_to_metric_families(m.exposition().decode()):
        assert fam.name.startswith("drover_master_")
        for smp in fam.samples:
            assert not any(v in ("A1", "F1", "t1", "O1") for v in smp.labels.values()), smp


def test_task_state_transitions_count_only_changes_of_state(tmp_path: Path) -> None:
    """drover_master_task_state_transitions_total counts a status update only when it changes the task's state (read
    before the fold, as the replica does), by from_state, to_state and reason; repeats (health updates of a running
    task), updates of unknown tasks and updates after a terminal state are not transitions."""
    from eventstore.vocab import Reason
    from master.metrics import transition
    from master.state import apply

    log = with_fw_and_agent()
    log(ev.OffersMade(offers=[offer("O1")], trigger="periodic"))
    log(ev.OffersAccepted(framework_id="F1", offer_ids=["O1"], tasks=[task("t1"), task("t2")], refuse_seconds=0.0))
    first = len(log.envelopes)
    healthy = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=0.0,
                            reason=Reason.TASK_HEALTH_CHECK_STATUS_UPDATED, healthy=True)
    failed = ev.TaskStatus(state="TASK_FAILED", source="SOURCE_AGENT", timestamp=0.0,
                           reason=Reason.COMMAND_EXECUTOR_FAILED)
    for tid, st in (("t1", status("TASK_STARTING")), ("t1", status("TASK_RUNNING")), ("t1", healthy),
                    ("t1", healthy), ("t1", failed), ("t1", status("TASK_LOST")), ("nope", status("TASK_RUNNING")),
                    ("t2", status("TASK_RUNNING"))):
        log(ev.StatusUpdated(framework_id="F1", task_id=tid, agent_id="A1", status=st))
    # What the replica does: read each event's transition on the state just before its fold.
    from master.state import State
    state, found = State(), []
    for env in log.envelopes:
        if env.index > first and (t := transition(state, env.event)) is not None:
            found.append(t)
        apply(state, env)
    assert found == [("TASK_STAGING", "TASK_STARTING", ""), ("TASK_STARTING", "TASK_RUNNING", ""),
                     ("TASK_RUNNING", "TASK_FAILED", Reason.COMMAND_EXECUTOR_FAILED),
                     ("TASK_STAGING", "TASK_RUNNING", "")]
    m = MasterMetrics()
    m.observe_committed(log.envelopes[first:], found)
    s = samples(m.exposition().decode())
    trans = {k[1]: v for k, v in s.items() if k[0] == "drover_master_task_state_transitions_total"}
    assert trans == {
        (("from_state", "TASK_STAGING"), ("reason", ""), ("to_state", "TASK_STARTING")): 1,
        (("from_state", "TASK_STARTING"), ("reason", ""), ("to_state", "TASK_RUNNING")): 1,
        (("from_state", "TASK_RUNNING"), ("reason", Reason.COMMAND_EXECUTOR_FAILED), ("to_state", "TASK_FAILED")): 1,
        (("from_state", "TASK_STAGING"), ("reason", ""), ("to_state", "TASK_RUNNING")): 1}
    # while every committed update is still counted by the state it carries
    assert s[("drover_master_task_status_updates_total",
              (("reason", Reason.TASK_HEALTH_CHECK_STATUS_UPDATED), ("state", "TASK_RUNNING")))] == 2


def test_two_replicas_in_one_process_have_their_own_registries(tmp_path: Path) -> None:
    a, b = MasterMetrics(), MasterMetrics()
    a.offers_made.inc(3)
    assert samples(a.exposition().decode())[("drover_master_offers_made_total", ())] == 3
    assert samples(b.exposition().decode())[("drover_master_offers_made_total", ())] == 0


def test_mesos_snapshot_names(tmp_path: Path) -> None:
    log = folded_cluster()
    m = MasterMetrics()
    core = fake_core(log.state, tmp_path, serving=False)
    m.observe_committed(log.envelopes)
    snap = snapshot(core, m)  # type: ignore[arg-type]
    assert snap["master/elected"] == 0
    assert snap["master/uptime_secs"] > 0
    assert snap["master/tasks_running"] == 1
    assert snap["master/tasks_staging"] == 0
    assert snap["master/tasks_finished"] == 1
    assert snap["master/tasks_failed"] == 0
    assert snap["master/slaves_active"] == snap["master/slaves_connected"] == 1
    assert snap["master/frameworks_active"] == snap["master/frameworks_connected"] == 1
    assert snap["master/cpus_total"] == 4 and snap["master/cpus_used"] == 1
    assert snap["master/mem_total"] == 4096 and snap["master/mem_used"] == 128  # MB, as Mesos
    assert snap["master/disk_total"] == 8192 and snap["master/disk_used"] == 0
    assert snap["master/cpus_percent"] == 0.25
    assert all(isinstance(v, float) for v in snap.values())


# ---- a real replica ----------------------------------------------------------------------------------------------


async def _replica(tmp_path: Path, credentials=None) -> tuple[MasterServer, TestServer]:
    cfg = MasterConfig(id="m1", http="127.0.0.1:1", raft=f"127.0.0.1:{free_port()}", peers=[],
                       data_dir=tmp_path / "m1", heartbeat_interval=5.0, raft_process=False,
                       raft_tuning=RaftTuning(fsync_journal=False), credentials=credentials)
    core = MasterServer(cfg)
    server = TestServer(build_app(core), host="127.0.0.1", port=free_port())
    await server.start_server()
    core.config.http = f"127.0.0.1:{server.port}"
    await core.start()
    for _ in range(200):
        if core.serving:
            break
        await asyncio.sleep(0.05)
    assert core.serving, "a single replica elects itself"
    return core, server


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[tuple[MasterServer, TestServer]]:
    core, server = await _replica(tmp_path)
    yield core, server
    await core.stop()
    await server.close()


async def test_replica_serves_metrics(replica) -> None:
    core, server = replica
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/master/state")) as r:
            assert r.status == 200
        async with http.get(server.make_url("/no/such/path/abc123")) as r:
            assert r.status == 404
        async with http.get(server.make_url("/metrics")) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            s = samples(await r.text())
        async with http.get(server.make_url("/metrics/snapshot")) as r:
            snap = await r.json()
    assert s[("drover_master_elected", ())] == 1
    assert s[("drover_master_leader_changes_total", ())] == 1
    assert s[("drover_master_applied_index", ())] == core.committed_index >= 2
    assert s[("drover_master_store_size_bytes", ())] > 0
    assert s[("drover_master_http_requests_total",
              (("code", "200"), ("method", "GET"), ("route", "/master/state")))] == 1
    assert s[("drover_master_http_requests_total",
              (("code", "404"), ("method", "GET"), ("route", "unmatched")))] == 1
    assert not any("abc123" in str(k) for k in s)
    assert s[("drover_master_raft_commit_duration_seconds_count", ())] >= 0
    assert snap["master/elected"] == 1 and snap["master/slaves_active"] == 0


async def test_metrics_need_credentials_on_a_secure_master(tmp_path: Path) -> None:
    creds = parse_credentials(b'{"credentials": [{"principal": "ops", "secret": "s3cret"}]}')
    core, server = await _replica(tmp_path, creds)
    try:
        good = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/metrics/snapshot", "/master/metrics/snapshot"):
                async with http.get(server.make_url(path)) as r:
                    assert r.status == 401, path
                    assert r.headers["WWW-Authenticate"] == 'Basic realm="mesos-master-readonly"'
                async with http.get(server.make_url(path), headers=good) as r:
                    assert r.status == 200, path
            async with http.get(server.make_url("/metrics"), headers=good) as r:
                s = samples(await r.text())
        assert s[("drover_master_http_requests_total",
                  (("code", "401"), ("method", "GET"), ("route", "/metrics")))] == 1
    finally:
        await core.stop()
        await server.close()


# ---- agents ------------------------------------------------------------------------------------------------------


def test_agent_exposition_and_snapshot() -> None:
    from agent import metrics as agent_metrics

    from eventstore import events as ev
    from eventstore.resources import Resources

    group_executor = ev.ExecutorSpec(executor_id="e1", resources=Resources.parse("cpus:0.1;mem:32").to_list(),
                                     task_ids=["t1", "t2"])

    def rec(state: str, container_id: str | None, refused: bool = False, executor=None) -> SimpleNamespace:
        spec = SimpleNamespace(resources=Resources.parse("cpus:0.5;mem:128").to_list(), executor=executor)
        return SimpleNamespace(state=state, container_id=container_id, refused=refused, spec=spec, framework_id="F1")

    registered = asyncio.Event()
    registered.set()
    agent = SimpleNamespace(registered=registered, config=SimpleNamespace(
        resources=Resources.parse("cpus:4;mem:1024;disk:2048")), tasks={
        ("F1", "t1"): rec("TASK_RUNNING", "c1", executor=group_executor),
        ("F1", "t2"): rec("TASK_RUNNING", "c2", executor=group_executor),
        ("F1", "t3"): rec("TASK_STAGING", None), ("F1", "t4"): rec("TASK_FINISHED", "c4"),
        ("F1", "t5"): rec("TASK_FAILED", None, refused=True)})
    m = agent_metrics.AgentMetrics()
    m.bind(agent)  # type: ignore[arg-type]
    m.launch_seconds.observe(0.4)
    m.health_checks.labels("healthy").inc()
    m.podman_error("kill")
    s = samples(m.exposition().decode())
    assert s[("drover_agent_registered", ())] == 1
    assert s[("drover_agent_containers_running", ())] == 2
    assert s[("drover_agent_tasks", (("state", "TASK_RUNNING"),))] == 2
    assert s[("drover_agent_tasks", (("state", "TASK_STARTING"),))] == 0
    assert s[("drover_agent_tasks", (("state", "TASK_FINISHED"),))] == 1
    assert s[("drover_agent_task_launch_duration_seconds_count", ())] == 1
    assert s[("drover_agent_task_launch_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[("drover_agent_health_checks_total", (("outcome", "healthy"),))] == 1
    assert s[("drover_agent_health_checks_total", (("outcome", "unhealthy"),))] == 0
    assert s[("drover_agent_podman_errors_total", (("operation", "kill"),))] == 1
    assert s[("drover_agent_podman_errors_total", (("operation", "launch"),))] == 0
    snap = agent_metrics.snapshot(agent, m)  # type: ignore[arg-type]
    assert snap["slave/registered"] == 1 and snap["slave/tasks_running"] == 2 and snap["slave/tasks_staging"] == 1
    assert snap["slave/uptime_secs"] >= 0
    # Three tasks not ended (t1, t2, t3) of 0.5 cpus and 128 MB, and t1/t2's group executor once.
    assert snap["slave/cpus_total"] == 4 and snap["slave/cpus_used"] == pytest.approx(1.6)
    assert snap["slave/cpus_percent"] == pytest.approx(0.4)
    assert snap["slave/mem_used"] == 416 and snap["slave/disk_total"] == 2048 and snap["slave/disk_percent"] == 0
    assert snap["slave/gpus_total"] == 0 and snap["slave/gpus_percent"] == 0
