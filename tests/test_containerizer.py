"""PodmanContainerizer against a real podman service (fixture from tests/conftest_podman.py). No mocks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from podman import PodmanClient

from agent import images
from agent.containerizer import ContainerLaunchError, ContainerSpec, PodmanContainerizer
from tests.conftest_podman import TEST_LABELS
from tests.netutil import fetch, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cz(podman_socket):
    z = PodmanContainerizer(podman_socket, start_service=False)
    await z.start()
    try:
        yield z
    finally:
        await z.stop()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def mkspec(tmp_path: Path, run_id: str):
    n = iter(range(1000))

    def make(value: str | None = None, **kw) -> ContainerSpec:
        i = next(n)
        labels = {**TEST_LABELS, "drover.testrun": run_id, **kw.pop("labels", {})}
        defaults = dict(
            name=f"drover-test-{run_id}-{i}", image=None, shell=True, value=value, arguments=[], env={},
            cpus=None, mem_mb=None, labels=labels, sandbox_dir=tmp_path / f"sandbox-{i}",
        )
        defaults.update(kw)
        return ContainerSpec(**defaults)

    return make


def raw_inspect(sock: Path, cid: str) -> dict:
    with PodmanClient(base_url=f"unix://{sock}") as c:
        return c.containers.get(cid).attrs


async def run(cz: PodmanContainerizer, spec: ContainerSpec):
    cid = await cz.launch(spec)
    return cid, await asyncio.wait_for(cz.wait(cid), 30)


async def test_echo_stdout_lands_in_sandbox(cz, mkspec):
    spec = mkspec("echo hello; echo $MESOS_SANDBOX; pwd")
    cid, st = await run(cz, spec)
    assert st.status == "exited" and st.exit_code == 0 and not st.oom_suspected
    assert st.container_id == cid and st.name == spec.name
    assert st.started_at and st.finished_at
    assert (spec.sandbox_dir / "stdout").read_text() == "hello\n/mnt/mesos/sandbox\n/mnt/mesos/sandbox\n"


async def test_exit_code_and_stderr(cz, mkspec):
    spec = mkspec("echo oops >&2; exit 3")
    _, st = await run(cz, spec)
    assert st.exit_code == 3
    assert (spec.sandbox_dir / "stderr").read_text() == "oops\n"
    assert (spec.sandbox_dir / "stdout").read_text() == ""


async def test_non_shell_command_argv(cz, mkspec):
    # Mesos shell=false: value is the executable, arguments is argv including argv[0]
    spec = mkspec("/bin/sh", shell=False, arguments=["sh", "-c", 'echo "$0|$1"; exit 7', "zero", "one"])
    _, st = await run(cz, spec)
    assert st.exit_code == 7
    assert (spec.sandbox_dir / "stdout").read_text() == "zero|one\n"

    spec = mkspec("/no/such/binary", shell=False, arguments=["x"])
    _, st = await run(cz, spec)
    assert st.exit_code == 127
    assert "no/such/binary" in (spec.sandbox_dir / "stderr").read_text()


async def test_env_var_visible(cz, mkspec):
    spec = mkspec('echo "$FOO $BAR"', env={"FOO": "foo value", "BAR": "b=1"})
    _, st = await run(cz, spec)
    assert st.exit_code == 0
    assert (spec.sandbox_dir / "stdout").read_text() == "foo value b=1\n"


async def test_limits_visible_in_inspect(cz, mkspec, podman_socket):
    cid, st = await run(cz, mkspec("true", cpus=0.5, mem_mb=64))
    assert st.exit_code == 0
    hc = raw_inspect(podman_socket, cid)["HostConfig"]
    assert hc["Memory"] == 64 * 1024 * 1024
    assert hc["CpuQuota"] == 50_000 and hc["CpuPeriod"] == 100_000


async def test_a_spec_without_limits_gets_the_defaults(cz, mkspec, podman_socket):
    # no container runs unlimited: Mesos's command executor allowance (0.1 cpus, 32 MB) when the task names none
    cid, st = await run(cz, mkspec("cat /proc/self/cgroup >/dev/null", cpus=None, mem_mb=None))
    assert st.exit_code == 0
    hc = raw_inspect(podman_socket, cid)["HostConfig"]
    assert hc["CpuQuota"] == 10_000 and hc["CpuPeriod"] == 100_000
    assert hc["Memory"] == hc["MemorySwap"] == 32 * 1024 * 1024


async def test_missing_image_is_clear_error_and_creates_nothing(cz, mkspec, run_id):
    # not present, so pulled: a short name no registry resolves fails the pull (pulls: tests/test_images.py)
    spec = mkspec("true", image="foo:1")
    with pytest.raises(ContainerLaunchError, match=r"Failed to pull image 'foo:1': "):
        await cz.launch(spec)
    assert await cz.inspect(spec.name) is None
    assert await cz.list({"drover.testrun": run_id}) == []


async def test_bad_spec_rejected(cz, mkspec):
    with pytest.raises(ContainerLaunchError, match="shell=true requires"):
        await cz.launch(mkspec(None))
    with pytest.raises(ContainerLaunchError, match="network"):
        await cz.launch(mkspec("true", network="macvlan"))
    with pytest.raises(ContainerLaunchError, match="only supported for the bridge network"):
        await cz.launch(mkspec("true", network="host", ports=[(31000, 80, "tcp")]))
    with pytest.raises(ContainerLaunchError, match="invalid port mapping"):
        await cz.launch(mkspec("true", network="bridge", ports=[(31000, 0, "tcp")]))
    with pytest.raises(ContainerLaunchError, match="container name"):
        await cz.launch(mkspec("true", name="bad name/with slash"))


_SERVE = "echo served-by-$HOSTNAME > index.html && exec httpd -f -p {port} -h ."


async def test_a_host_network_task_serves_on_a_host_port(cz, mkspec):
    port = free_port()
    spec = mkspec(_SERVE.format(port=port), network="host", user="nobody")
    cid = await cz.launch(spec)
    try:
        status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
        assert status == 200 and body.startswith("served-by-")
    finally:
        await cz.kill(cid, 0)
        await cz.remove(cid)


@pytest.mark.parametrize("user", ["nobody", "root"])
async def test_a_bridge_task_is_reached_through_its_mapped_host_port(cz, mkspec, user):
    # port 80 of its own network namespace is the task's to bind, without NET_BIND_SERVICE and as any user
    port = free_port()
    spec = mkspec(_SERVE.format(port=80), network="bridge", ports=[(port, 80, "tcp")], user=user)
    cid = await cz.launch(spec)
    try:
        status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
        assert status == 200 and body.startswith("served-by-")
    finally:
        await cz.kill(cid, 0)
        await cz.remove(cid)


async def test_a_kill_without_grace_ends_a_stop_still_in_its_grace_period(cz, mkspec):
    # what the agent does when a later KILL's grace period ends sooner (the task traps SIGTERM and lives on)
    spec = mkspec("trap 'echo TERM > got-sigterm' TERM; echo up > started; while true; do sleep 0.1; done")
    cid = await cz.launch(spec)
    for _ in range(300):
        if (spec.sandbox_dir / "started").exists():
            break
        await asyncio.sleep(0.1)
    long_stop = asyncio.create_task(cz.kill(cid, 600))
    for _ in range(300):
        if (spec.sandbox_dir / "got-sigterm").exists():
            break
        await asyncio.sleep(0.1)
    assert (await cz.inspect(cid)).status in ("running", "stopping")  # it trapped SIGTERM: still there
    await cz.kill(cid, 0)
    st = await asyncio.wait_for(cz.wait(cid), 30)
    assert st.status == "exited" and st.exit_code == 137  # SIGKILL
    await asyncio.wait_for(long_stop, 30)  # the first stop returns too
    await cz.remove(cid)


async def test_kill_sleeping_task(cz, mkspec):
    spec = mkspec("sleep 100")
    cid = await cz.launch(spec)
    st = await cz.inspect(cid)
    assert st.status == "running" and st.exit_code is None
    waiter = asyncio.create_task(cz.wait(cid))
    await cz.kill(cid, grace_seconds=3)
    st = await asyncio.wait_for(waiter, 15)
    assert st.status == "exited"
    assert st.exit_code in (143, 137)  # SIGTERM via catatonit, or SIGKILL after the grace
    assert not st.oom_suspected  # we killed it
    await cz.kill(cid)  # already exited: no error
    await cz.remove(cid)
    await cz.kill(cid)  # gone: no error
    assert await cz.inspect(cid) is None
    assert (await cz.wait(cid)).status == "removed"


async def test_oom_suspected(cz, mkspec):
    # dd allocates a 64 MiB buffer: far above the 8 MiB limit -> kernel OOM kill (137), podman says OOMKilled=false
    _, st = await run(cz, mkspec("dd if=/dev/zero of=/dev/null bs=64M count=1", mem_mb=8))
    assert st.exit_code == 137
    assert st.oom_suspected


async def test_list_by_two_labels(cz, mkspec, run_id):
    a = await cz.launch(mkspec("true", labels={"drover.framework": "f1", "drover.task": "t1"}))
    await cz.launch(mkspec("true", labels={"drover.framework": "f1", "drover.task": "t2"}))
    await cz.launch(mkspec("true", labels={"drover.framework": "f2", "drover.task": "t1"}))
    got = await cz.list({"drover.testrun": run_id, "drover.framework": "f1", "drover.task": "t1"})
    assert [s.container_id for s in got] == [a]
    assert got[0].labels["drover.task"] == "t1"
    assert len(await cz.list({"drover.testrun": run_id, "drover.framework": "f1"})) == 2
    assert len(await cz.list({"drover.testrun": run_id})) == 3
    assert await cz.remove_all({"drover.testrun": run_id}) == 3
    assert await cz.list({"drover.testrun": run_id}) == []


async def test_idempotent_launch_same_name(cz, mkspec, run_id):
    spec = mkspec("echo once; sleep 100")
    cid1 = await cz.launch(spec)
    cid2 = await cz.launch(spec)
    assert cid1 == cid2
    assert len(await cz.list({"drover.testrun": run_id})) == 1
    # let it write before killing it (with the default 0.1 cpus a loaded host may take a while to get there)
    out = spec.sandbox_dir / "stdout"
    for _ in range(200):
        if out.exists() and out.read_text():
            break
        await asyncio.sleep(0.05)
    await cz.kill(cid1, grace_seconds=1)
    st = await asyncio.wait_for(cz.wait(cid1), 15)
    assert st.status == "exited"
    assert (spec.sandbox_dir / "stdout").read_text() == "once\n"  # ran only once
    # after exit the same name still maps to the old container (exit code readable after an agent restart)
    assert await cz.launch(spec) == cid1
    assert (await cz.inspect(cid1)).status == "exited"


async def test_concurrent_launches(cz, mkspec):
    specs = [mkspec(f"exit {i}") for i in range(6)]
    ids = await asyncio.gather(*(cz.launch(s) for s in specs))
    states = await asyncio.gather(*(asyncio.wait_for(cz.wait(i), 30) for i in ids))
    assert [s.exit_code for s in states] == list(range(6))


def test_rootfs_tar_is_deterministic(tmp_path):
    a = images.build_rootfs_tar(tmp_path / "a.tar").read_bytes()
    b = images.build_rootfs_tar(tmp_path / "b.tar").read_bytes()
    assert a == b


async def test_kill_never_started_container(cz, mkspec, podman_socket, run_id):
    # agent died between create and start, then the task is killed: must become terminal, not hang wait()
    spec = mkspec("sleep 100")
    with PodmanClient(base_url=f"unix://{podman_socket}") as c:
        cid = c.containers.create(images.DEFAULT_IMAGE, command=["true"], name=spec.name, labels=spec.labels).id
    await cz.kill(cid)
    st = await asyncio.wait_for(cz.wait(cid), 10)
    assert st.status == "removed" and st.exit_code is None


async def test_relaunch_finishes_interrupted_launch(cz, mkspec, podman_socket):
    # created but never started (agent crashed in between): launch() with the same name starts it
    spec = mkspec("unused")
    with PodmanClient(base_url=f"unix://{podman_socket}") as c:
        cid = c.containers.create(images.DEFAULT_IMAGE, command=["sh", "-c", "exit 4"], name=spec.name,
                                  labels=spec.labels).id
    assert await cz.launch(spec) == cid
    st = await asyncio.wait_for(cz.wait(cid), 10)
    assert st.exit_code == 4


def test_a_container_podman_lost_track_of_counts_as_ended(tmp_path):
    """Podman killed in the middle of a start can leave a container "created" in its database although runc ran
    it (it has a pid) and it has ended: waiting for an exit podman will never record would hang the task."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    z = PodmanContainerizer(tmp_path / "none.sock", start_service=False)

    def attrs(status: str, pid: int) -> dict:
        return {"Id": "c" * 64, "Name": "x", "State": {"Status": status, "Pid": pid, "ExitCode": 0}}

    lost = z._state_from_inspect(attrs("created", dead.pid))
    assert lost.status == "lost" and lost.exit_code is None  # podman's ExitCode 0 is not a real exit status
    assert z._state_from_inspect(attrs("created", 0)).status == "created"  # never started
    import os
    assert z._state_from_inspect(attrs("created", os.getpid())).status == "created"  # runc init still waiting
    assert z._state_from_inspect(attrs("running", dead.pid)).status == "running"  # podman will notice this one
