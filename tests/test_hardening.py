"""Hardened task containers (issue 11, item 6): a task runs as the user it (or its framework) names, which must exist
in its image; no-new-privileges, a minimal capability set (none for a non-root task), a pids limit; only the task's
own sandbox is mounted, and it is the task user's. Pure rules first, then real podman containers (fixture from
tests/conftest_podman.py), then the Agent driven with LAUNCH records as in tests/test_agent_safety.py. No mocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import uuid
from pathlib import Path

import pytest
from podman import PodmanClient

from agent import images, rules
from agent.agent import Agent, AgentConfig
from agent.containerizer import PROBE_LABEL, SANDBOX_MOUNT, ContainerLaunchError, ContainerSpec, PodmanContainerizer
from eventstore.resources import Resources
from eventstore.values import user_problem
from tests.conftest_podman import TEST_LABELS
from tests.test_agent_rules import launch_msg
from tests.test_agent_safety import agent_without_master, wait_for_state

pytestmark = pytest.mark.timeout(120)

IMAGE = images.DEFAULT_IMAGE  # its /etc/passwd: root (0:0) and nobody (65534:65534)
PASSWD = "root:x:0:0:root:/root:/bin/sh\n# a comment\n+nis\nbad:x:y:0::/:\napp:x:1000:1001::/home/app:/bin/sh\n" \
         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalias:x:1000:5::/:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\nnogroup:x:65534:\n"
# Linux capability numbers of the set a root task keeps (include/uapi/linux/capability.h).
CAP_NUMBERS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3}
ROOT_CAPS = sum(1 << CAP_NUMBERS[c] for c in rules.ROOT_TASK_CAPABILITIES)


# ---- pure rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["root", "nobody", "_svc", "a.b-c_d", "x" * 32])
def test_valid_users(user):
    assert user_problem(user) is None


@pytest.mark.parametrize("user", ["", "x" * 33, "1abc", "-x", ".x", "a b", "a:b", "a/b", "../etc", "é", "4294967295",
                                  "99999999999", "root\n", "\u0661\u0662", None, 5,
                                  "0", "65534"])  # numeric uids: the run_tasks ACL judges names (root, not 0)
def test_invalid_users(user):
    assert user_problem(user, "U") is not None


def test_the_task_user_is_its_command_user_else_its_framework_user():
    assert rules.task_user("nobody", {"user": "root"}) == "nobody"
    assert rules.task_user(None, {"user": "root"}) == "root"
    assert rules.task_user("", {"user": "nobody"}) == "nobody"
    with pytest.raises(rules.UserProblem, match="not a numeric uid"):  # judged by name: "0" is not "root"
        rules.task_user("", {"user": "0"})
    for info in ({"user": ""}, {}, None, "junk"):  # no user named: the image's default user
        assert rules.task_user(None, info) is None
    with pytest.raises(rules.UserProblem, match=r"The framework's user \(FrameworkInfo.user\) 'a b' is invalid"):
        rules.task_user(None, {"user": "a b"})
    with pytest.raises(rules.UserProblem, match="FrameworkInfo.user"):
        rules.task_user(None, {"user": 0})
    with pytest.raises(rules.UserProblem, match="The task's command.user '../x' is invalid"):
        rules.task_user("../x", {"user": "root"})


def test_passwd_and_group_parsing_skips_what_is_not_an_entry():
    assert rules.parse_passwd(PASSWD) == [rules.Passwd("root", 0, 0), rules.Passwd("app", 1000, 1001),
                                          rules.Passwd("nobody", 65534, 65534), rules.Passwd("alias", 1000, 5)]
    assert rules.parse_group(GROUP + "staff:x:51:\n#c:x:1:\n") == {"root": 0, "staff": 50, "nogroup": 65534}


def test_a_named_user_must_exist_in_the_image():
    assert rules.resolve_user("app", PASSWD, GROUP, "img") == (1000, 1001)
    assert rules.resolve_user("alias", PASSWD, GROUP, "img") == (1000, 5)
    assert rules.resolve_user("root", PASSWD, GROUP, "img") == (0, 0)
    # A name an image maps to uid 0 is not root: the master's run_tasks ACL judged the name.
    with pytest.raises(rules.UserProblem, match="User 'toor' has uid 0 in image 'img'; only a task that names"):
        rules.resolve_user("toor", PASSWD + "toor:x:0:0::/root:/bin/sh\n", GROUP, "img")
    with pytest.raises(rules.UserProblem, match=r"User 'ghost' does not exist in image 'img' \(no entry in its "):
        rules.resolve_user("ghost", PASSWD, GROUP, "img")
    for uid in ("4242", "0", "1000"):  # by name only: "0" must not get past a run_tasks rule denying "root"
        with pytest.raises(rules.UserProblem, match=f"User '{uid}' is a uid"):
            rules.resolve_user(uid, PASSWD, GROUP, "img")
    with pytest.raises(rules.UserProblem, match="it has no /etc/passwd"):
        rules.resolve_user("root", None, None, "img")


def test_the_images_own_user_may_be_user_group_or_a_bare_uid():
    assert rules.resolve_user("", None, None, "img", image_default=True) == (0, 0)
    assert rules.resolve_user("app", PASSWD, GROUP, "img", image_default=True) == (1000, 1001)
    assert rules.resolve_user("app:staff", PASSWD, GROUP, "img", image_default=True) == (1000, 50)
    assert rules.resolve_user("app:7", PASSWD, GROUP, "img", image_default=True) == (1000, 7)
    assert rules.resolve_user("4242", PASSWD, GROUP, "img", image_default=True) == (4242, 0)  # as podman runs it
    assert rules.resolve_user("4242:4242", None, None, "img", image_default=True) == (4242, 4242)
    with pytest.raises(rules.UserProblem, match="Group 'wheel' of the image's USER 'app:wheel' does not exist"):
        rules.resolve_user("app:wheel", PASSWD, GROUP, "img", image_default=True)
    with pytest.raises(rules.UserProblem, match="User 'ghost' does not exist"):
        rules.resolve_user("ghost", PASSWD, GROUP, "img", image_default=True)


def test_only_a_root_task_gets_capabilities():
    assert rules.task_capabilities(0) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    assert rules.task_capabilities(65534) == rules.task_capabilities(1) == []


# ---- the containerizer, real podman ------------------------------------------------------------------------------


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

    def make(value: str, **kw) -> ContainerSpec:
        i = next(n)
        defaults = dict(name=f"drover-test-{run_id}-{i}", image=None, shell=True, value=value, arguments=[], env={},
                        cpus=None, mem_mb=None, labels={**TEST_LABELS, "drover.testrun": run_id},
                        sandbox_dir=tmp_path / f"sandbox-{i}")
        defaults.update(kw)
        return ContainerSpec(**defaults)

    return make


@pytest.fixture(scope="module")
def nobody_image(podman_socket, tmp_path_factory):
    """The busybox image with USER nobody: a task naming no user runs as the image's user."""
    name = f"localhost/drover-busybox-nobody:test-{uuid.uuid4().hex[:8]}"
    tar = images.build_rootfs_tar(tmp_path_factory.mktemp("image") / "rootfs.tar")
    with PodmanClient(base_url=f"unix://{podman_socket}", timeout=120) as c:
        with open(tar, "rb") as f:
            r = c.api.post("/images/import", data=f, headers={"Content-Type": "application/x-tar"}, timeout=120,
                           params={"reference": name, "changes": [*images.IMAGE_CHANGES, "USER nobody"]})
        r.raise_for_status()
        assert c.images.get(name).attrs["Config"]["User"] == "nobody"
        try:
            yield name
        finally:
            with contextlib.suppress(Exception):
                c.images.remove(name, force=True)


def inspect(sock: Path, cid: str) -> dict:
    with PodmanClient(base_url=f"unix://{sock}") as c:
        return c.containers.get(cid).attrs


async def run(cz: PodmanContainerizer, spec: ContainerSpec):
    cid = await cz.launch(spec)
    return cid, await asyncio.wait_for(cz.wait(cid), 30)


STATUS = "id -u; id -g; grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb):' /proc/self/status"


def status_of(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    out = {"uid": lines[0], "gid": lines[1]}
    out.update(line.split(":\t", 1) for line in lines[2:7])
    return out


async def test_a_task_runs_as_the_user_it_names_without_privileges_and_owns_its_sandbox(cz, mkspec, podman_socket):
    spec = mkspec(f"{STATUS}; echo hi > $MESOS_SANDBOX/made-by-task; mkdir $MESOS_SANDBOX/d", user="nobody")
    cid, st = await run(cz, spec)
    assert st.exit_code == 0, (spec.sandbox_dir / "stderr").read_text()
    s = status_of((spec.sandbox_dir / "stdout").read_text())
    assert (s["uid"], s["gid"]) == ("65534", "65534")
    assert s["NoNewPrivs"] == "1"
    # a non-root task has no capability at all, not even in its bounding or ambient set
    assert {int(s[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")} == {0}
    for p in (spec.sandbox_dir, spec.sandbox_dir / "made-by-task", spec.sandbox_dir / "stdout",
              spec.sandbox_dir / "d"):
        assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534), p
    attrs = inspect(podman_socket, cid)
    assert attrs["Config"]["User"] == "65534:65534"
    hc = attrs["HostConfig"]
    assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["CapAdd"] == []
    assert hc["PidsLimit"] == rules.DEFAULT_TASK_PIDS_LIMIT
    # the only host directory the task sees is its own sandbox
    binds = [m for m in attrs["Mounts"] if m["Type"] == "bind"]
    assert [(m["Source"], m["Destination"]) for m in binds] == [(str(spec.sandbox_dir), SANDBOX_MOUNT)]


@pytest.mark.parametrize("user", [None, "root"])
async def test_a_root_task_keeps_only_the_minimal_capabilities(cz, mkspec, podman_socket, user):
    spec = mkspec(f"{STATUS}; chown nobody $MESOS_SANDBOX/stdout && echo chowned", user=user)
    cid, st = await run(cz, spec)
    assert st.exit_code == 0, (spec.sandbox_dir / "stderr").read_text()
    out = (spec.sandbox_dir / "stdout").read_text()
    s = status_of(out)
    assert (s["uid"], s["gid"], s["NoNewPrivs"]) == ("0", "0", "1")
    assert int(s["CapEff"], 16) == int(s["CapPrm"], 16) == int(s["CapBnd"], 16) == ROOT_CAPS == 0b1011
    assert int(s["CapAmb"], 16) == 0
    assert out.endswith("chowned\n")  # CHOWN: root keeps its power over its own files
    # podman's inspect names what was dropped from its default set
    dropped = set(inspect(podman_socket, cid)["HostConfig"]["CapDrop"])
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_MKNOD"} <= dropped
    assert not dropped & {f"CAP_{c}" for c in rules.ROOT_TASK_CAPABILITIES}


async def test_a_root_task_cannot_use_what_was_dropped(cz, mkspec):
    # no SETUID: it cannot become another user (say another task's); no NET_RAW, no MKNOD
    spec = mkspec("su nobody -s /bin/sh -c 'id -u' 2>&1; echo su=$?; mknod $MESOS_SANDBOX/n c 1 3 2>&1; "
                  "echo mknod=$?")
    _, st = await run(cz, spec)
    out = (spec.sandbox_dir / "stdout").read_text()
    assert "su=0" not in out and "65534" not in out and "mknod=1" in out, out


@pytest.mark.parametrize("user", ["0", "65534"])
async def test_a_numeric_uid_is_refused_and_creates_nothing(cz, mkspec, run_id, user):
    spec = mkspec("true", user=user)
    with pytest.raises(ContainerLaunchError, match="not a numeric uid"):
        await cz.launch(spec)
    assert await cz.inspect(spec.name) is None


@pytest.mark.parametrize("user", ["ghost"])
async def test_a_user_missing_from_the_image_is_a_clear_error_and_creates_nothing(cz, mkspec, run_id, user):
    spec = mkspec("true", user=user)
    with pytest.raises(ContainerLaunchError) as e:
        await cz.launch(spec)
    assert str(e.value).startswith(f"User '{user}' does not exist in image '{IMAGE}' (no entry in its /etc/passwd)")
    assert await cz.inspect(spec.name) is None
    assert await cz.list({"drover.testrun": run_id}) == []  # nor a probe container left behind


async def test_an_invalid_user_or_pids_limit_is_refused_before_podman(cz, mkspec):
    for kw, says in (({"user": "a b"}, "The task's user 'a b' is invalid"),
                     ({"user": "x:y"}, "is invalid"),
                     ({"pids_limit": 3}, "invalid pids limit 3"),
                     ({"pids_limit": rules.MAX_TASK_PIDS_LIMIT + 1}, "invalid pids limit"),
                     ({"pids_limit": True}, "invalid pids limit")):
        with pytest.raises(ContainerLaunchError, match=says):
            cz.validate(mkspec("true", **kw))


async def test_a_task_naming_no_user_runs_as_its_images_user(cz, mkspec, nobody_image, run_id):
    spec = mkspec("id -u; touch $MESOS_SANDBOX/x && echo wrote", image=nobody_image)
    _, st = await run(cz, spec)
    assert st.exit_code == 0, (spec.sandbox_dir / "stderr").read_text()
    assert (spec.sandbox_dir / "stdout").read_text() == "65534\nwrote\n"
    assert spec.sandbox_dir.stat().st_uid == 65534
    # naming a user overrides it
    spec = mkspec("id -u", image=nobody_image, user="root")
    _, st = await run(cz, spec)
    assert (spec.sandbox_dir / "stdout").read_text() == "0\n"
    assert [c.labels.get(PROBE_LABEL) for c in await cz.list({"drover.testrun": run_id})] == [None, None]


async def test_a_sandbox_reused_by_another_user_is_given_to_it(cz, mkspec, tmp_path):
    # a task id launched again (after its first launch was forgotten) shares the sandbox and appends to its files
    shared = tmp_path / "shared"
    _, st = await run(cz, mkspec("mkdir -p $MESOS_SANDBOX/sub && echo root > $MESOS_SANDBOX/sub/f; "
                                 "ln -s /etc/passwd $MESOS_SANDBOX/link; echo first", sandbox_dir=shared))
    assert st.exit_code == 0
    _, st = await run(cz, mkspec("echo again >> $MESOS_SANDBOX/sub/f; echo second", user="nobody",
                                 sandbox_dir=shared))
    assert st.exit_code == 0, (shared / "stderr").read_text()
    assert (shared / "stdout").read_text() == "first\nsecond\n"
    assert (shared / "sub" / "f").read_text() == "root\nagain\n"
    assert all(p.lstat().st_uid == 65534 for p in [shared, *shared.rglob("*")])
    assert Path("/etc/passwd").stat().st_uid == 0  # the symlink was changed, not what it points to


async def test_a_fork_bomb_meets_the_pids_limit(cz, mkspec, podman_socket):
    # catatonit and the shell count too: 30 more processes and the next fork fails
    spec = mkspec("n=0; while [ $n -lt 1000 ]; do sleep 60 & n=$((n+1)); echo $n; done", user="nobody",
                  pids_limit=32)
    cid, st = await run(cz, spec)
    assert st.exit_code != 0
    assert "can't fork" in (spec.sandbox_dir / "stderr").read_text()
    spawned = int((spec.sandbox_dir / "stdout").read_text().split()[-1])
    assert 20 <= spawned <= 30, spawned
    assert inspect(podman_socket, cid)["HostConfig"]["PidsLimit"] == 32


# ---- the agent, real podman --------------------------------------------------------------------------------------


@pytest.fixture
async def live_agent(tmp_path, podman_socket):
    async with agent_without_master(tmp_path, podman_socket, task_pids_limit=64) as a:
        yield a


def stdout_of(a: Agent, fid: str, tid: str) -> str:
    return (rules.sandbox_path(a.config.work_dir, fid, tid) / "stdout").read_text()


async def test_the_agent_runs_a_task_as_its_command_user_else_its_frameworks(live_agent, podman_socket):
    a = live_agent
    await a._on_message("m", launch_msg("F", "cmd-user", "id -u", command={"value": "id -u", "user": "nobody"}))
    await a._on_message("m", launch_msg("F", "fw-user", "id -u", info={"name": "fw", "user": "nobody"}))
    await a._on_message("m", launch_msg("F", "overrides", "id -u", info={"name": "fw", "user": "nobody"},
                                        command={"value": "id -u", "user": "root"}))
    await a._on_message("m", launch_msg("F", "image-user", "id -u", info={"name": "fw", "user": ""}))
    for tid, uid in (("cmd-user", "65534"), ("fw-user", "65534"), ("overrides", "0"), ("image-user", "0")):
        assert await wait_for_state(a, "F", tid, "TASK_FINISHED") == ["TASK_STARTING", "TASK_RUNNING",
                                                                      "TASK_FINISHED"], tid
        assert stdout_of(a, "F", tid) == f"{uid}\n", tid
    hc = inspect(podman_socket, a.tasks[("F", "cmd-user")].container_id)["HostConfig"]
    assert hc["PidsLimit"] == 64 and hc["SecurityOpt"] == ["no-new-privileges"]  # the agent's --task-pids-limit
    sandboxes = a.config.work_dir / "sandboxes"
    assert stat.S_IMODE((sandboxes / "F").stat().st_mode) == 0o700 and (sandboxes / "F").stat().st_uid == 0
    assert (sandboxes / "F" / "cmd-user").stat().st_uid == 65534


@pytest.mark.parametrize("info, command, says", [
    ({"name": "fw", "user": "ghost"}, None,
     f"User 'ghost' does not exist in image '{IMAGE}' (no entry in its /etc/passwd)"),
    ({"name": "fw", "user": "root"}, {"value": "true", "user": "ghost"}, "User 'ghost' does not exist"),
    ({"name": "fw", "user": "tester@EXAMPLE.COM"}, None,
     "The framework's user (FrameworkInfo.user) 'tester@EXAMPLE.COM' is invalid"),
], ids=["framework-user-missing", "command-user-missing", "framework-user-invalid"])
async def test_a_task_whose_user_cannot_run_fails_with_a_message(live_agent, info, command, says):
    a = live_agent
    extra = {"command": command} if command else {}
    await a._on_message("m", launch_msg("F", "t", "true", info=info, **extra))
    assert await wait_for_state(a, "F", "t", "TASK_FAILED") == ["TASK_STARTING", "TASK_FAILED"]
    st = a.tasks[("F", "t")].unacked[-1]
    assert (st.reason, st.source) == ("REASON_CONTAINER_LAUNCH_FAILED", "SOURCE_AGENT")
    assert says in st.message, st.message
    assert await a.containerizer.list({"drover.agent": a.cp.agent_id}) == []


async def test_the_work_dir_is_the_agents_alone(tmp_path, podman_socket):
    work = tmp_path / "work"
    (work / "sandboxes").mkdir(parents=True, mode=0o755)  # as an earlier version left it
    (work / "sandboxes").chmod(0o755)
    cfg = AgentConfig(masters=["127.0.0.1:9"], http="127.0.0.1:0", work_dir=work,
                      resources=Resources.parse("cpus:1;mem:128"), podman_socket=podman_socket,
                      start_podman_service=False)
    stop = asyncio.Event()
    a = Agent(cfg)
    running = asyncio.create_task(a.run(stop))
    try:
        for _ in range(200):
            if (work / "meta").exists():
                break
            await asyncio.sleep(0.05)
        for d in (work, work / "meta", work / "sandboxes"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == 0, d
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


def test_a_checkpoint_is_written_owner_only(tmp_path):
    from agent.checkpoint import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "meta" / "agent.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "meta" / "agent.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "meta").stat().st_mode) == 0o700
