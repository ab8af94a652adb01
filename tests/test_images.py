"""Images a task names but its agent does not have are pulled from their registry: a real registry (Debian's
docker-registry on loopback, tests/conftest_registry.py), a real podman service, no mocks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from agent import rules
from agent.containerizer import ContainerLaunchError, ContainerSpec, PodmanContainerizer
from tests.conftest_podman import TEST_LABELS
from tests.conftest_registry import Registry, push_image
from tests.v1client import Scheduler

pytestmark = pytest.mark.timeout(120)


def test_image_registry_is_read_as_podman_reads_it():
    assert rules.image_registry("127.0.0.1:5000/test/busybox:1") == "127.0.0.1:5000"
    assert rules.image_registry("registry.example.com/a/b@sha256:00") == "registry.example.com"
    assert rules.image_registry("localhost/drover-busybox:latest") == "localhost"
    assert rules.image_registry("busybox") is None
    assert rules.image_registry("library/busybox:1") is None  # a short name: registries.conf decides


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


async def _containerizer(sock: Path, **kw) -> PodmanContainerizer:
    z = PodmanContainerizer(sock, start_service=False, **kw)
    await z.start()
    return z


def _spec(tmp_path: Path, run_id: str, i: int, image: str, value: str = "echo pulled") -> ContainerSpec:
    return ContainerSpec(name=f"drover-test-{run_id}-{i}", image=image, shell=True, value=value, arguments=[],
                         env={}, cpus=None, mem_mb=None, labels={**TEST_LABELS, "drover.testrun": run_id},
                         sandbox_dir=tmp_path / f"sandbox-{i}")


async def test_an_absent_image_is_pulled_once_for_concurrent_launches(podman_socket, registry: Registry, tmp_path,
                                                                      run_id):
    name = f"test/pulled-{run_id}:1"
    ref = push_image(registry.address, name)
    z = await _containerizer(podman_socket, insecure_registries={registry.address})
    try:
        specs = [_spec(tmp_path, run_id, i, ref) for i in range(3)]
        cids = await asyncio.gather(*(z.launch(s) for s in specs))
        for cid, s in zip(cids, specs, strict=True):
            st = await asyncio.wait_for(z.wait(cid), 30)
            assert st.exit_code == 0
            assert (s.sandbox_dir / "stdout").read_text() == "pulled\n"
        # one pull for three launches: the registry served the manifest once
        assert registry.requests(f"GET /v2/test/pulled-{run_id}/manifests/1 ") == 1
    finally:
        await z.remove_all({"drover.testrun": run_id})
        await z.stop()
        _rmi(ref)


async def test_tls_is_verified_unless_the_registry_is_named_insecure(podman_socket, registry: Registry, tmp_path,
                                                                    run_id):
    ref = push_image(registry.address, f"test/tls-{run_id}:1")
    z = await _containerizer(podman_socket)  # no --registry-insecure: a plain-HTTP registry is refused
    try:
        with pytest.raises(ContainerLaunchError, match=rf"Failed to pull image '{ref}': .*HTTP"):
            await z.launch(_spec(tmp_path, run_id, 0, ref))
        assert await z.list({"drover.testrun": run_id}) == []
    finally:
        await z.stop()


async def test_a_failed_pull_says_what_failed_and_creates_nothing(podman_socket, registry: Registry, tmp_path,
                                                                 run_id):
    z = await _containerizer(podman_socket, insecure_registries={registry.address})
    ref = f"{registry.address}/test/never-pushed-{run_id}:nope"
    try:
        with pytest.raises(ContainerLaunchError, match=rf"Failed to pull image '{ref}': .*manifest unknown"):
            await z.launch(_spec(tmp_path, run_id, 0, ref))
        assert await z.list({"drover.testrun": run_id}) == []
    finally:
        await z.stop()


def _rmi(ref: str) -> None:
    import subprocess

    from agent import images

    subprocess.run(["podman", "rmi", ref], env=images.podman_env(), capture_output=True)


# ---- through a cluster --------------------------------------------------------------------------------------------


def _task(tid: str, agent_id: str, image: str, cmd: str) -> dict:
    return {"name": tid, "task_id": {"value": tid}, "agent_id": {"value": agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
            "command": {"value": cmd},
            "container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": image}}}}}


async def final_status(sched: Scheduler, tid: str) -> tuple[list[str], dict]:
    """Every state of the task up to its terminal one (each acknowledged), and the terminal status."""
    seen = []
    while True:
        st = await sched.update(tid)
        seen.append(st["state"])
        if "uuid" in st:
            await sched.call("ACKNOWLEDGE", {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]})
        if st["state"] not in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"):
            return seen, st


async def test_a_task_runs_an_image_pulled_from_a_registry(tmp_path, registry: Registry, run_id):
    from tests.cluster import running_cluster

    ref = push_image(registry.address, f"test/busybox-{run_id}:1")
    try:
        with running_cluster(tmp_path / "cluster", agent_args=["--registry-insecure", registry.address]) as c:
            async with aiohttp.ClientSession() as http:
                sched = await Scheduler(http, c.leader_endpoint()).subscribe()
                try:
                    offer = (await sched.offers())[0]
                    agent_id = offer["agent_id"]["value"]
                    ok, bad = f"pulled-{run_id}", f"nope-{run_id}"
                    missing = f"{registry.address}/test/busybox-{run_id}:nope"
                    r = await sched.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
                        {"type": "LAUNCH", "launch": {"task_infos": [
                            _task(ok, agent_id, ref, "echo from-the-registry; test -f /bin/busybox"),
                            _task(bad, agent_id, missing, "true")]}}]})
                    assert r.status == 202, r
                    seen, st = await final_status(sched, ok)
                    assert st["state"] == "TASK_FINISHED", st
                    seen, st = await final_status(sched, bad)
                    assert st["state"] == "TASK_FAILED", st
                    assert st["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
                    assert st["source"] == "SOURCE_AGENT"
                    assert f"Failed to pull image '{missing}'" in st["message"], st
                    assert "manifest unknown" in st["message"], st
                finally:
                    await sched.close()
            stdout = list((tmp_path / "cluster").rglob(f"sandboxes/*/{ok}/stdout"))
            assert [p.read_text() for p in stdout] == ["from-the-registry\n"]
    finally:
        _rmi(ref)


class HoldingProxy:
    """A TCP proxy on loopback to `upstream` that holds every connection until `release` is set."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.release, self.waiting = asyncio.Event(), asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.address = ""

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.waiting.set()
        await self.release.wait()
        host, port = self.upstream.rsplit(":", 1)
        ur, uw = await asyncio.open_connection(host, int(port))
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))

    async def __aenter__(self) -> "HoldingProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_task_killed_while_its_image_is_pulled_never_gets_a_container(tmp_path, podman_socket,
                                                                             registry: Registry, run_id):
    from agent.agent import Agent, AgentConfig
    from eventstore.resources import Resources
    from tests.test_agent_rules import launch_msg
    from tests.test_agent_safety import wait_for_state

    push_image(registry.address, f"test/slow-{run_id}:1")
    async with HoldingProxy(registry.address) as proxy:
        ref = f"{proxy.address}/test/slow-{run_id}:1"
        a = Agent(AgentConfig(masters=["127.0.0.1:9"], http="127.0.0.1:0", work_dir=tmp_path / "work",
                              resources=Resources.parse("cpus:4;mem:4096"), podman_socket=podman_socket,
                              start_podman_service=False, insecure_registries=[proxy.address]))
        a.cp.agent_id = f"test-{run_id}"
        (tmp_path / "work").mkdir()
        await a.containerizer.start()
        try:
            await a._on_message("m", launch_msg("F", "k", "true", agent_id=a.cp.agent_id, image=ref))
            await asyncio.wait_for(proxy.waiting.wait(), 30)  # the pull is under way
            await a._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "k"}})
            proxy.release.set()
            got = await wait_for_state(a, "F", "k", "TASK_KILLED", timeout=60)
            assert got == ["TASK_STARTING", "TASK_KILLED"], got
            assert a.tasks[("F", "k")].unacked[-1].reason == "REASON_TASK_KILLED_DURING_LAUNCH"
            assert await a.containerizer.list({"drover.agent": a.cp.agent_id}) == []
        finally:
            pending = list(a._bg) + list(a._watchers.values()) + list(a._stopping.values())
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await a.containerizer.remove_all({"drover.agent": a.cp.agent_id})
            await a.containerizer.stop()
            _rmi(ref)


async def test_pulls_held_by_a_registry_leave_the_podman_pool_free(tmp_path, podman_socket, registry: Registry,
                                                                    run_id):
    # More held pulls (of distinct images, and many launches of each) than the pool has threads: podman calls that
    # kills and waits need still get through, and each image is still pulled once.
    from agent.containerizer import MAX_CONCURRENT_PULLS

    refs = [push_image(registry.address, f"test/held{i}-{run_id}:1") for i in range(MAX_CONCURRENT_PULLS + 2)]
    async with HoldingProxy(registry.address) as proxy:
        held = [r.replace(registry.address, proxy.address, 1) for r in refs]
        z = await _containerizer(podman_socket, insecure_registries={proxy.address})
        try:
            pulls = [asyncio.create_task(z.prepare_image(ref)) for ref in held for _ in range(4)]
            await asyncio.wait_for(proxy.waiting.wait(), 30)
            for _ in range(20):  # as many podman calls as the pool has threads, and more
                assert await asyncio.wait_for(z.list({"drover.testrun": run_id}), 30) == []
            assert not any(p.done() for p in pulls)
            proxy.release.set()
            await asyncio.wait_for(asyncio.gather(*pulls), 120)
            for name in (f"test/held{i}-{run_id}" for i in range(len(refs))):
                assert registry.requests(f"GET /v2/{name}/manifests/1 ") == 1
        finally:
            await z.stop()
            for ref in held:
                _rmi(ref)
            for ref in refs:
                _rmi(ref)
