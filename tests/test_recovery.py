"""Recovery on real processes and real containers: an agent killed with -9 and restarted, unacknowledged
status updates surviving that restart, framework failover (re-subscribe, second instance, failover_timeout
expiry) and the loss of the Podman service under a running agent.

Checked against ../shared/docs/mesos-v1-api.md sections 1.4 (one stream per framework; "Framework failed
over"), 2 (SUBSCRIBE failover_timeout, TEARDOWN: "Framework has been removed") and 7.2 (agent checkpointing
and recovery), and docs/agent-protocol.md. Waits are generous upper bounds; no duration is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from agent.images import podman_env
from tests.cluster import Cluster, running_cluster
from tests.v1client import API, JSON, WAIT, Scheduler

pytestmark = pytest.mark.integration


# ---- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Framework(Scheduler):
    """A v1 scheduler that can re-subscribe with a known framework id, and knows how to launch and ack."""

    def __init__(self, http: aiohttp.ClientSession, master: str, framework_id: str | None = None, **info: Any):
        super().__init__(http, master, **{"name": "recovery", **info})
        if framework_id is not None:
            self.info["id"] = {"value": framework_id}
        self.first: dict | None = None

    async def open(self) -> dict:
        """SUBSCRIBE and return the first event (SUBSCRIBED or ERROR) without insisting on SUBSCRIBED."""
        body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": self.info}}
        if "id" in self.info:
            body["framework_id"] = self.info["id"]
        self._response = await self.http.post(
            f"http://{self.master}{API}", json=body, headers={"Accept": JSON},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        assert self._response.status == 200, await self._response.text()
        self.stream_id = self._response.headers["Mesos-Stream-Id"]
        self._reader = asyncio.create_task(self._read())
        self.first = await self.expect(lambda e: e.get("type") in ("SUBSCRIBED", "ERROR"))
        if self.first["type"] == "SUBSCRIBED":
            self.framework_id = self.first["subscribed"]["framework_id"]["value"]
        return self.first

    async def subscribe(self) -> "Framework":
        first = await self.open()
        assert first["type"] == "SUBSCRIBED", first
        return self

    async def offer_on(self, agent_id: str) -> dict:
        event = await self.expect(lambda e: e.get("type") == "OFFERS" and any(
            o["agent_id"]["value"] == agent_id for o in e["offers"]["offers"]))
        return next(o for o in event["offers"]["offers"] if o["agent_id"]["value"] == agent_id)

    async def launch(self, agent_id: str, tasks: dict[str, str]) -> None:
        """Launch {task_id: shell command} on one agent (0.1 cpu, 32 MB each)."""
        offer = await self.offer_on(agent_id)
        infos = [{"name": tid, "task_id": {"value": tid}, "agent_id": {"value": agent_id},
                  "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
                  "command": {"value": cmd}} for tid, cmd in tasks.items()]
        r = await self.call("ACCEPT", {"offer_ids": [offer["id"]],
                                       "operations": [{"type": "LAUNCH", "launch": {"task_infos": infos}}],
                                       "filters": {"refuse_seconds": 0.0}})
        assert r.status == 202, r

    async def ack(self, status: dict) -> None:
        if "uuid" not in status:
            return  # master-generated: nothing to acknowledge
        r = await self.call("ACKNOWLEDGE", {"agent_id": status["agent_id"], "task_id": status["task_id"],
                                            "uuid": status["uuid"]})
        assert r.status == 202, r

    async def until(self, task_id: str, state: str, *, ack: bool = True, timeout: float = WAIT) -> dict:
        """Take this task's updates (acknowledging them) until one in `state`; an unexpected terminal state fails."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.update(task_id, timeout=max(0.1, deadline - time.monotonic()))
            if ack:
                await self.ack(st)
            if st["state"] == state:
                return st
            assert st["state"] in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"), (task_id, state, st)

    def drain(self) -> None:
        """Forget every event received so far."""
        self._kept.clear()
        while not self._queue.empty():
            if self._queue.get_nowait() is None:
                self._closed = True

    async def update(self, task_id: str, match: Callable[[dict], bool] = lambda s: True,
                     timeout: float = WAIT) -> dict:
        event = await self.expect(lambda e: e.get("type") == "UPDATE"
                                  and e["update"]["status"]["task_id"]["value"] == task_id
                                  and match(e["update"]["status"]), timeout=timeout)
        return event["update"]["status"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def wait_for(what: Callable[[], Any], timeout: float = WAIT, every: float = 0.2, why: str = "") -> Any:
    """Poll `what` (sync, run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(what)
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {why or what}: last {last!r}")


def containers(label: str, value: str) -> dict[str, dict]:
    """task id -> podman's view ({"State": "running"|"exited"|..., "ExitCode": n}) of containers so labelled."""
    out = subprocess.run(["podman", "ps", "-a", "--filter", f"label={label}={value}", "--format", "json"],
                         env=podman_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {c["Labels"]["drover.task"]: c for c in json.loads(out.stdout or "[]")}


def agent_id(cluster: Cluster, aid: str) -> str:
    return cluster.agent_state(aid)["id"]


def master_tasks(cluster: Cluster) -> dict[str, str]:
    return {t["id"]: t["state"] for f in cluster.state()["frameworks"] for t in f["tasks"]}


def framework(cluster: Cluster, fid: str) -> dict | None:
    return next((f for f in cluster.state()["frameworks"] if f["id"] == fid), None)


def registered_again(cluster: Cluster, aid: str, expected_id: str) -> bool:
    st = cluster.agent_state(aid)
    return bool(st and st.get("master") and st["id"] == expected_id)


# ---- 1. agent kill -9 and restart -----------------------------------------------------------------------------


async def test_agent_kill9_restart_recovers_its_tasks(cluster: Cluster, http):
    a1 = agent_id(cluster, "a1")
    fw = await Framework(http, cluster.leader_endpoint()).subscribe()
    long1, long2, short = unique("long"), unique("long"), unique("short")
    doomed, gone = unique("doomed"), unique("gone")
    await fw.launch(a1, {long1: "sleep 300", long2: "sleep 300", short: "sleep 3; exit 4",
                         doomed: "sleep 300", gone: "sleep 300"})
    for tid in (long1, long2, short, doomed, gone):
        await fw.until(tid, "TASK_RUNNING")

    cluster.kill("a1")  # kill -9
    # The containers do not depend on the agent process.
    running = containers("drover.agent", a1)
    assert {long1, long2, doomed, gone} <= {t for t, c in running.items() if c["State"] == "running"}, running
    # While the agent is down: the short task ends, a kill is requested, a container is removed behind its back.
    await wait_for(lambda: containers("drover.task", short).get(short, {}).get("State") == "exited",
                   why="the short task's container to exit")
    r = await fw.call("KILL", {"task_id": {"value": doomed}, "agent_id": {"value": a1}})
    assert r.status == 202, r
    rm = subprocess.run(["podman", "rm", "-f", "-t", "0", running[gone]["Id"]], env=podman_env(),
                        capture_output=True, text=True, timeout=60)
    assert rm.returncode == 0, rm.stderr
    # The master cannot know yet: it still shows every task running.
    tasks = master_tasks(cluster)
    assert all(tasks[t] == "TASK_RUNNING" for t in (long1, long2, short, gone)), tasks

    cluster.start_agent("a1")
    await wait_for(lambda: registered_again(cluster, "a1", a1), why="a1 to re-register with its old id")

    failed = await fw.until(short, "TASK_FAILED")
    assert "status 4" in failed.get("message", ""), failed
    assert failed["agent_id"]["value"] == a1 and failed["source"] == "SOURCE_EXECUTOR"
    killed = await fw.until(doomed, "TASK_KILLED")  # the kill sent while the agent was down is not lost
    assert killed["agent_id"]["value"] == a1
    lost = await fw.until(gone, "TASK_LOST")
    assert lost.get("reason") == "REASON_EXECUTOR_TERMINATED", lost

    state = cluster.state()
    assert [s["active"] for s in state["slaves"] if s["id"] == a1] == [True]
    tasks = master_tasks(cluster)
    assert tasks[long1] == tasks[long2] == "TASK_RUNNING", tasks
    # The agent reports its tasks; once the terminal updates were acknowledged it forgets those.
    await wait_for(lambda: {t["task_id"] for t in cluster.agent_state("a1")["tasks"]} == {long1, long2},
                   why="the agent to hold exactly the long tasks")
    log = cluster.log("a1")
    assert log.count("TASK_STARTING") == 5, "a recovered task must not be started again"

    for tid in (long1, long2):
        r = await fw.call("KILL", {"task_id": {"value": tid}, "agent_id": {"value": a1}})
        assert r.status == 202, r
    for tid in (long1, long2):
        await fw.until(tid, "TASK_KILLED")
    after = containers("drover.agent", a1)
    # ended, or already removed (a container goes once its task's final status is acknowledged: agent/gc.py)
    assert all(after.get(t, {"State": "removed"})["State"] != "running" for t in (long1, long2, doomed)), after
    await wait_for(lambda: cluster.agent_state("a1")["tasks"] == [], why="every update acknowledged")
    await fw.close()


# ---- 2. unacknowledged updates survive an agent restart ------------------------------------------------------


async def test_unacknowledged_update_is_redelivered_after_agent_restart(cluster: Cluster, http):
    a1 = agent_id(cluster, "a1")
    fw = await Framework(http, cluster.leader_endpoint()).subscribe()
    tid = unique("unacked")
    await fw.launch(a1, {tid: "sleep 4"})
    starting = await fw.update(tid)
    assert starting["state"] == "TASK_STARTING"
    await fw.ack(starting)
    running = await fw.update(tid)
    assert running["state"] == "TASK_RUNNING"  # not acknowledged

    cluster.kill("a1")
    # The task finishes while the agent is down: TASK_FINISHED waits behind the unacknowledged TASK_RUNNING.
    await wait_for(lambda: containers("drover.task", tid).get(tid, {}).get("State") == "exited",
                   why="the task's container to exit")
    cp = json.loads((Path(cluster.layout["agents"][0]["work_dir"]) / "meta" / "agent.json").read_text())
    [rec] = [t for t in cp["tasks"] if t["spec"]["task_id"] == tid]
    assert [s["uuid"] for s in rec["unacked"]] == [running["uuid"]]  # checkpointed before the kill
    fw.drain()  # forget the retries delivered before the kill
    cluster.start_agent("a1")
    await wait_for(lambda: registered_again(cluster, "a1", a1), why="a1 to re-register")

    again = await fw.update(tid)
    assert again["state"] == "TASK_RUNNING" and again["uuid"] == running["uuid"], again
    await fw.ack(again)
    finished = await fw.update(tid, lambda s: s["state"] != "TASK_RUNNING")
    assert finished["state"] == "TASK_FINISHED", finished
    assert finished["uuid"] != running["uuid"]
    await fw.ack(finished)
    await wait_for(lambda: cluster.agent_state("a1")["tasks"] == [], why="the agent to forget the task")
    await fw.close()


# ---- 3. framework failover -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failover_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """One cluster for the framework failover tests: they kill no process, and each launches, kills and
    acknowledges only its own framework's tasks (the agents' and podman's tests above and below get a new one)."""
    with running_cluster(tmp_path_factory.mktemp("failover") / "cluster") as c:
        yield c


async def test_framework_resubscribes_within_failover_timeout_and_keeps_its_tasks(failover_cluster: Cluster, http):
    cluster = failover_cluster
    a1 = agent_id(cluster, "a1")
    fw = await Framework(http, cluster.leader_endpoint(), failover_timeout=30.0).subscribe()
    tid = unique("kept")
    await fw.launch(a1, {tid: "sleep 300"})
    await fw.until(tid, "TASK_RUNNING")
    fid = fw.framework_id

    await fw.close()
    await wait_for(lambda: (framework(cluster, fid) or {}).get("connected") is False,
                   why="the master to see the framework disconnected")

    fw2 = await Framework(http, cluster.leader_endpoint(), framework_id=fid, failover_timeout=30.0).subscribe()
    assert fw2.framework_id == fid
    r = await fw2.call("RECONCILE", {"tasks": []})
    assert r.status == 202, r
    rec = await fw2.update(tid, lambda s: s.get("reason") == "REASON_RECONCILIATION")
    assert rec["state"] == "TASK_RUNNING", rec
    assert (framework(cluster, fid) or {}).get("connected") is True
    assert containers("drover.task", tid)[tid]["State"] == "running"

    r = await fw2.call("KILL", {"task_id": {"value": tid}})
    assert r.status == 202, r
    await fw2.until(tid, "TASK_KILLED")
    await fw2.close()


async def test_second_scheduler_instance_takes_over(failover_cluster: Cluster, http):
    cluster = failover_cluster
    a1 = agent_id(cluster, "a1")
    first = await Framework(http, cluster.leader_endpoint(), failover_timeout=30.0).subscribe()
    tid = unique("handed-over")
    await first.launch(a1, {tid: "sleep 300"})
    await first.until(tid, "TASK_RUNNING")
    fid = first.framework_id

    second = await Framework(http, cluster.leader_endpoint(), framework_id=fid, failover_timeout=30.0).subscribe()
    assert second.framework_id == fid
    error = await first.expect("ERROR")
    assert error["error"]["message"] == "Framework failed over"
    with pytest.raises(AssertionError, match="the stream closed"):
        await first.expect(lambda e: False, timeout=10)  # nothing more: the master closed the old stream
    # The old stream id is no longer valid; the new one is.
    r = await first.call("REVIVE")
    assert r.status == 400, r

    r = await second.call("KILL", {"task_id": {"value": tid}})
    assert r.status == 202, r
    killed = await second.until(tid, "TASK_KILLED")
    assert killed["agent_id"]["value"] == a1
    assert (framework(cluster, fid) or {}).get("connected") is True
    await first.close()
    await second.close()


async def test_framework_past_its_failover_timeout_is_torn_down(failover_cluster: Cluster, http):
    cluster = failover_cluster
    a1 = agent_id(cluster, "a1")
    fw = await Framework(http, cluster.leader_endpoint(), failover_timeout=1.0).subscribe()
    tid = unique("orphan")
    await fw.launch(a1, {tid: "sleep 300"})
    await fw.until(tid, "TASK_RUNNING")
    fid = fw.framework_id
    assert containers("drover.task", tid)[tid]["State"] == "running"

    await fw.close()
    await wait_for(lambda: framework(cluster, fid) is None, why="the framework to be removed")
    await wait_for(lambda: containers("drover.task", tid).get(tid, {"State": "removed"})["State"] != "running",
                   why="the removed framework's container to end (or be removed once its end is acknowledged)")
    await wait_for(lambda: cluster.agent_state("a1")["tasks"] == [], why="the agent to drop the task")

    again = Framework(http, cluster.leader_endpoint(), framework_id=fid, failover_timeout=1.0)
    first = await again.open()
    assert first["type"] == "ERROR", first
    assert first["error"]["message"] == "Framework has been removed"
    await again.close()


# ---- 4. the Podman service dies under a running agent ---------------------------------------------------------


async def test_agent_survives_podman_service_restart(cluster: Cluster, http):
    a1 = agent_id(cluster, "a1")
    fw = await Framework(http, cluster.leader_endpoint()).subscribe()
    long_, short, doomed = unique("long"), unique("short"), unique("doomed")
    await fw.launch(a1, {long_: "sleep 300", short: "sleep 2; exit 3", doomed: "sleep 300"})
    for tid in (long_, short, doomed):
        await fw.until(tid, "TASK_RUNNING")
    registrations = cluster.log("a1").count("registered with master")

    sock = Path(cluster.layout["podman_socket"])
    cluster.kill("podman")  # kill -9 of the service; conmon and the containers live on
    # While no service runs: a kill is requested, and the short task exits.
    r = await fw.call("KILL", {"task_id": {"value": doomed}})
    assert r.status == 202, r
    await asyncio.sleep(3)
    sock.unlink(missing_ok=True)
    cluster._spawn("podman", ["podman", "system", "service", "--time=0", f"unix://{sock}"])
    await asyncio.to_thread(cluster._wait_podman, sock)

    failed = await fw.until(short, "TASK_FAILED")
    assert "status 3" in failed.get("message", ""), failed
    await fw.until(doomed, "TASK_KILLED")

    r = await fw.call("KILL", {"task_id": {"value": long_}})
    assert r.status == 202, r
    await fw.until(long_, "TASK_KILLED")

    fresh = unique("fresh")
    await fw.launch(a1, {fresh: "sleep 300"})
    await fw.until(fresh, "TASK_RUNNING")
    assert containers("drover.task", fresh)[fresh]["State"] == "running"
    r = await fw.call("KILL", {"task_id": {"value": fresh}})
    assert r.status == 202, r
    await fw.until(fresh, "TASK_KILLED")
    # The podman outage was no reason to drop the link to the master.
    assert cluster.log("a1").count("registered with master") == registrations
    await fw.close()


async def test_a_launch_while_podman_is_down_waits_for_the_service(cluster: Cluster, http):
    """The service being down is not the task's fault: the agent retries the launch until it is back (up to
    AgentConfig.launch_retry_seconds) instead of failing the task."""
    a1 = agent_id(cluster, "a1")
    fw = await Framework(http, cluster.leader_endpoint()).subscribe()
    cluster.kill("podman")
    tid = unique("patient")
    await fw.launch(a1, {tid: "sleep 300"})
    await wait_for(lambda: "launch retried" in cluster.log("a1"), why="the agent to find the service down")
    await asyncio.to_thread(cluster.start_podman)
    await fw.until(tid, "TASK_RUNNING")  # fails on TASK_FAILED
    assert containers("drover.task", tid)[tid]["State"] == "running"
    r = await fw.call("KILL", {"task_id": {"value": tid}})
    assert r.status == 202, r
    await fw.until(tid, "TASK_KILLED")
    await fw.close()


async def test_containerizer_restarts_the_podman_service_it_started(tmp_path, podman_socket):
    """An agent that started its own podman service (nothing answered on its socket) starts a new one when that
    service dies; the running container is still waited for and can be killed; new launches work."""
    from agent.containerizer import ContainerSpec, PodmanContainerizer
    from tests.conftest_podman import TEST_LABELS

    run = uuid.uuid4().hex[:8]
    labels = {**TEST_LABELS, "drover.testrun": run}

    def spec(i: int, cmd: str) -> ContainerSpec:
        return ContainerSpec(name=f"drover-test-{run}-{i}", image=None, shell=True, value=cmd, arguments=[], env={},
                             cpus=None, mem_mb=None, labels=labels, sandbox_dir=tmp_path / f"sandbox-{i}")

    z = PodmanContainerizer(tmp_path / "own" / "podman.sock", start_service=True)
    await z.start()
    try:
        first = z._service
        assert first is not None and z._owns_service
        cid = await z.launch(spec(0, "sleep 300"))
        waiter = asyncio.create_task(z.wait(cid))
        first.kill()  # kill -9
        await asyncio.to_thread(first.wait)
        await wait_for(lambda: z._service is not None and z._service is not first and z._ping(),
                       why="a new podman service")
        await z.kill(cid, 1.0)
        st = await asyncio.wait_for(waiter, WAIT)
        assert st.status == "exited" and st.exit_code is not None, st
        cid2 = await z.launch(spec(1, "exit 7"))
        st2 = await asyncio.wait_for(z.wait(cid2), WAIT)
        assert st2.exit_code == 7, st2
    finally:
        with contextlib.suppress(Exception):
            await z.remove_all(labels)
        await z.stop()


# ---- the checkpoint file ----------------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_unreadable_file(tmp_path):
    from agent.checkpoint import AgentCheckpoint, CheckpointStore, TaskRecord
    from eventstore import events as ev

    store = CheckpointStore(tmp_path)
    assert store.load() == AgentCheckpoint()
    spec = ev.TaskSpec(task_id="t1", name="t1", agent_id="S0", resources=[],
                       command=ev.CommandSpec(value="sleep 1"))
    status = ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=1.0, uuid="AAAA")
    cp = AgentCheckpoint(agent_id="c-S0", cluster_id="c", tasks=[
        TaskRecord(framework_id="F", spec=spec, container_id="abc", state="TASK_RUNNING", kill_requested=True,
                   unacked=[status])])
    store.save(cp)
    assert store.load() == cp
    assert not list(store.path.parent.glob("*.tmp"))

    store.path.write_bytes(b'{"agent_id": "c-S0", "tasks": [{"framework_id"')  # torn by hand
    with pytest.raises(RuntimeError, match="unreadable"):
        store.load()
