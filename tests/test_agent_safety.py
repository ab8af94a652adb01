"""The agent's own defences against a real podman service (fixture from tests/conftest_podman.py), no mocks: the
Agent is driven with the master's stream records (LAUNCH, KILL, ACKNOWLEDGE) as they arrive on its link, and runs
real containers. Hostile ids never become paths; a task without cpus/mem still runs limited; a sandbox that cannot
be made fails the task; a reused task id is refused while the agent holds the task."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import pytest
from podman import PodmanClient

from agent import rules
from agent.agent import Agent, AgentConfig
from eventstore.resources import Resources
from tests.test_agent_rules import launch_msg, states

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def agent_without_master(tmp_path: Path, podman_socket: Path, **config):
    """An Agent on the real podman service, fed messages by the test (no master); its containers go at the end."""
    work = tmp_path / "work"
    cfg = AgentConfig(masters=["127.0.0.1:9"], http="127.0.0.1:0", work_dir=work,
                      resources=Resources.parse("cpus:4;mem:4096"), podman_socket=podman_socket,
                      start_podman_service=False, **config)
    a = Agent(cfg)
    a.cp.agent_id = f"test-{uuid.uuid4().hex[:10]}"
    work.mkdir(parents=True)
    await a.containerizer.start()
    try:
        yield a
    finally:
        pending = list(a._bg) + list(a._watchers.values()) + list(a._stopping.values())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await a.containerizer.remove_all({"drover.agent": a.cp.agent_id})
        with contextlib.suppress(Exception):  # and its task groups' pods (their infra containers ran on otherwise)
            for pod in await a.containerizer.list_pods({"drover.agent": a.cp.agent_id}):
                await a.containerizer.remove_pod(pod.name)
        await a.containerizer.stop()


@pytest.fixture
async def live_agent(tmp_path, podman_socket):
    async with agent_without_master(tmp_path, podman_socket) as a:
        yield a


async def wait_for_state(a: Agent, fid: str, tid: str, state: str, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = states(a, fid, tid)
        if state in got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{fid}/{tid} never reached {state}: {states(a, fid, tid)}")


async def containers_of(a: Agent) -> list:
    return await a.containerizer.list({"drover.agent": a.cp.agent_id})


def host_config(sock: Path, cid: str) -> dict:
    with PodmanClient(base_url=f"unix://{sock}") as c:
        return c.containers.get(cid).attrs["HostConfig"]


async def test_hostile_ids_get_task_error_and_nothing_outside_the_work_dir(live_agent, tmp_path):
    a = live_agent
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    # the framework id that used to become `sandboxes/../<task>` and bind-mount the agent's own directories
    hostile = [("..", "meta"), ("..", "sandboxes"), ("F", ".."), ("F", "a/b"), ("F", "../../../../tmp"), (".", "t")]
    for fid, tid in hostile:
        await a._on_message("m", launch_msg(fid, tid, "echo pwned > /mnt/mesos/sandbox/x"))
    await asyncio.sleep(0.5)  # a launch that was (wrongly) accepted would be creating its container by now
    for fid, tid in hostile:
        assert states(a, fid, tid) == ["TASK_ERROR"], (fid, tid)
        st = a.tasks[(fid, tid)].unacked[0]
        assert st.reason == "REASON_TASK_INVALID" and "is invalid" in st.message
    after = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert after - before <= {Path("work/meta"), Path("work/meta/agent.json")}
    assert not (a.config.work_dir / "sandboxes").exists()
    assert await containers_of(a) == []


async def test_a_task_without_cpus_or_mem_runs_with_the_default_limits(live_agent, podman_socket):
    a = live_agent
    await a._on_message("m", launch_msg("F", "nolimits", "true", resources=[]))
    assert await wait_for_state(a, "F", "nolimits", "TASK_FINISHED") == [
        "TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    hc = host_config(podman_socket, a.tasks[("F", "nolimits")].container_id)
    assert hc["CpuPeriod"] == 100_000 and hc["CpuQuota"] == round(rules.DEFAULT_CPUS * 100_000) == 10_000
    assert hc["Memory"] == int(rules.DEFAULT_MEM_MB * 1024 * 1024) == 32 * 1024 * 1024
    assert hc["MemorySwap"] == hc["Memory"]
    # a task that names only one of them gets its own value for that one and the default for the other
    await a._on_message("m", launch_msg("F", "cpusonly", "true",
                                        resources=[{"name": "cpus", "type": "SCALAR", "scalar": 0.5}]))
    await wait_for_state(a, "F", "cpusonly", "TASK_FINISHED")
    hc = host_config(podman_socket, a.tasks[("F", "cpusonly")].container_id)
    assert hc["CpuQuota"] == 50_000 and hc["Memory"] == 32 * 1024 * 1024


async def test_a_sandbox_that_cannot_be_created_fails_the_task(live_agent):
    a = live_agent
    tid = "é" * 200  # a valid id (200 characters) but 400 bytes: longer than a file name may be
    await a._on_message("m", launch_msg("F", tid, "true"))
    assert await wait_for_state(a, "F", tid, "TASK_FAILED") == ["TASK_STARTING", "TASK_FAILED"]
    st = a.tasks[("F", tid)].unacked[-1]
    assert st.reason == "REASON_CONTAINER_LAUNCH_FAILED"
    assert "Cannot create the task's sandbox" in st.message and "File name too long" in st.message
    assert await containers_of(a) == []


async def test_reused_task_id(live_agent):
    a = live_agent
    first = launch_msg("F", "t1", "echo first; sleep 100")
    await a._on_message("m", first)
    await wait_for_state(a, "F", "t1", "TASK_RUNNING")
    # the master re-sends the same launch after a failover: nothing happens
    await a._on_message("m", launch_msg("F", "t1", "echo first; sleep 100"))
    # a different task under the same id while the first one runs: refused as Mesos does, the first runs on
    await a._on_message("m", launch_msg("F", "t1", "echo second"))
    await wait_for_state(a, "F", "t1", "TASK_LOST")
    rec = a.tasks[("F", "t1")]
    assert states(a, "F", "t1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_LOST"]
    assert rec.unacked[-1].reason == "REASON_TASK_INVALID" and "already in use" in rec.unacked[-1].message
    [c] = await containers_of(a)
    assert c.status == "running" and c.container_id == rec.container_id
    # let it write, then kill it (a grace far above the bound is clamped, not waited for), acknowledge
    # everything: forgotten
    out = rules.sandbox_path(a.config.work_dir, "F", "t1") / "stdout"
    for _ in range(200):
        if out.exists() and out.read_text():
            break
        await asyncio.sleep(0.05)
    await a._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1", "grace_seconds": 1e12}})
    await wait_for_state(a, "F", "t1", "TASK_KILLED")
    for st in list(rec.unacked):
        await a._on_message("m", {"type": "ACKNOWLEDGE",
                                  "acknowledge": {"framework_id": "F", "task_id": "t1", "uuid": st.uuid}})
    assert ("F", "t1") not in a.tasks
    # now the id is free: a new task under it really runs (not the old container's exit status again)
    await a._on_message("m", launch_msg("F", "t1", "echo third"))
    await wait_for_state(a, "F", "t1", "TASK_FINISHED")
    # the first run's container was removed once its final status was acknowledged (agent/gc.py); the new one ran
    for _ in range(200):
        ids = [c.container_id for c in await containers_of(a)]
        if rec.container_id not in ids:
            break
        await asyncio.sleep(0.05)
    assert ids == [a.tasks[("F", "t1")].container_id] and ids != [rec.container_id]
    assert out.read_text() == "first\nthird\n"


async def test_redirects_between_masters_are_bounded(tmp_path: Path) -> None:
    """Two masters with stale views naming each other (here: one server under two names) must not bounce an agent
    looking for the leader until the recursion limit: it gives up after a few 307s and tries again later."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.host)
        other = "localhost" if request.host.startswith("127.0.0.1") else "127.0.0.1"
        return web.Response(status=307, headers={"Location": f"//{other}:{request.url.port}/api/drover/agent"})

    app = web.Application()
    app.router.add_post("/api/drover/agent", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cfg = AgentConfig(masters=[f"127.0.0.1:{server.port}"], http="127.0.0.1:0", work_dir=tmp_path / "work",
                      resources=Resources.parse("cpus:1;mem:128"), podman_socket=tmp_path / "none.sock",
                      start_podman_service=False)
    a = Agent(cfg)
    a._session = aiohttp.ClientSession()
    try:
        with pytest.raises(RuntimeError, match="more than 3 redirects"):
            await a._link(f"127.0.0.1:{server.port}")
        assert len(hits) == 4
    finally:
        await a._session.close()
        await server.close()
