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
