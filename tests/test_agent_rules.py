"""The agent's own defences and task-lifecycle rules, without podman: the pure rules (agent/rules.py) and the Agent's
handling of LAUNCH/KILL/ACKNOWLEDGE against a fake containerizer. The same paths against real podman containers are
in tests/test_agent_safety.py."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from agent import rules
from agent.agent import Agent, AgentConfig
from agent.containerizer import ContainerSpec, ContainerState
from eventstore.resources import Resource, Resources

pytestmark = pytest.mark.timeout(30)

AGENT_ID = "c1-S0"


# ---- pure rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fid,tid,aid,own,what", [
    ("..", "t", AGENT_ID, AGENT_ID, "Framework ID '..'"),
    (".", "t", AGENT_ID, AGENT_ID, "Framework ID '.'"),
    ("f", "..", AGENT_ID, AGENT_ID, "Task ID '..'"),
    ("f", "a/b", AGENT_ID, AGENT_ID, "Task ID 'a/b'"),
    ("f/../..", "t", AGENT_ID, AGENT_ID, "Framework ID"),
    ("f", "a\\b", AGENT_ID, AGENT_ID, "Task ID"),
    ("", "t", AGENT_ID, AGENT_ID, "Framework ID must not be empty"),
    ("f", "x" * 256, AGENT_ID, AGENT_ID, "Task ID is longer than 255"),
    ("f", "a\nb", AGENT_ID, AGENT_ID, "whitespace or control"),
    ("f", None, AGENT_ID, AGENT_ID, "Task ID must be a string"),
    ("f", "t", "../S0", AGENT_ID, "The task's agent ID"),
    ("f", "t", AGENT_ID, None, "This agent's ID must be a string"),
])
def test_launch_problem_names_the_bad_id(fid, tid, aid, own, what):
    problem = rules.launch_problem(fid, tid, aid, own)
    assert problem is not None and what in problem


def test_launch_problem_accepts_ordinary_ids():
    assert rules.launch_problem("c1-0001", "task:1,a=b", AGENT_ID, AGENT_ID) is None
    assert rules.launch_problem("f", "é" * 255, AGENT_ID, AGENT_ID) is None  # 255 characters, 510 bytes


def test_paths_stay_inside_the_work_dir(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    assert rules.sandbox_path(work, "F", "t") == (work / "sandboxes" / "F" / "t").resolve()
    assert rules.sandbox_path(work, "F", "a:b") != rules.sandbox_path(work, "F", "a_b")  # no two tasks share one
    for parts in [("sandboxes", "..", "t"), ("sandboxes", "F", ".."), ("sandboxes", "a/b"), ("..",), (".",),
                  ("sandboxes", "/etc"), ("sandboxes", "")]:
        with pytest.raises(rules.UnsafePath):
            rules.inside(work, *parts)
    with pytest.raises(rules.UnsafePath):
        rules.inside(work)  # the work dir itself is nobody's own directory
    # a symlink inside the work dir that leads out of it
    outside = tmp_path / "outside"
    outside.mkdir()
    (work / "sandboxes").mkdir()
    (work / "sandboxes" / "F").symlink_to(outside)
    with pytest.raises(rules.UnsafePath, match="outside the agent's work dir"):
        rules.sandbox_path(work, "F", "t")
    # a relative work dir gives an absolute path (podman needs one for the bind mount)
    assert rules.inside(Path("."), "x").is_absolute()


@pytest.mark.parametrize("candidates,expected", [
    ((), 3.0),
    ((None,), 3.0),
    ((None, None), 3.0),
    ((5,), 5.0),
    ((None, 7.5), 7.5),
    ((0,), 0.0),
    ((None, 0.0), 0.0),  # a task's grace of 0 means 0, not the default
    ((2.0, 30.0), 2.0),  # the KILL's own grace wins over the task's
    ((-1.0, 30.0), 0.0),
    ((-math.inf,), 0.0),
    ((1e9,), rules.MAX_KILL_GRACE_SECONDS),
    ((math.inf,), rules.MAX_KILL_GRACE_SECONDS),
    ((math.nan, 4.0), 4.0),
    ((math.nan,), 3.0),
    (("10", True, None), 3.0),  # not numbers
])
def test_kill_grace_is_bounded(candidates, expected):
    assert rules.kill_grace(*candidates) == expected


def test_container_limits_have_defaults():
    assert rules.container_limits(None, None) == (0.1, 32.0)
    assert rules.container_limits(0.0, 0.0) == (0.1, 32.0)
    assert rules.container_limits(2.0, None) == (2.0, 32.0)
    assert rules.container_limits(None, 512.0) == (0.1, 512.0)
    assert rules.container_limits(0.5, 64.0) == (0.5, 64.0)
    assert rules.container_limits(-1.0, 3.0) == (-1.0, 3.0)  # present but invalid: left for validate() to refuse


def test_validate_refuses_unusable_limits_but_not_missing_ones(tmp_path):
    from agent.containerizer import ContainerLaunchError, PodmanContainerizer

    z = PodmanContainerizer(tmp_path / "none.sock", start_service=False)

    def spec(**kw) -> ContainerSpec:
        base = dict(name="drover-x", image=None, shell=True, value="true", arguments=[], env={}, cpus=None,
                    mem_mb=None, labels={}, sandbox_dir=tmp_path)
        return ContainerSpec(**{**base, **kw})

    z.validate(spec())
    for kw, match in [({"cpus": -1.0}, "invalid cpus"), ({"cpus": math.inf}, "invalid cpus"),
                      ({"mem_mb": 3.0}, "invalid mem"), ({"mem_mb": math.nan}, "invalid mem")]:
        with pytest.raises(ContainerLaunchError, match=match):
            z.validate(spec(**kw))


def test_reused_id_state_follows_mesos():
    assert rules.reused_id_state({}) == "TASK_LOST"
    assert rules.reused_id_state(None) == "TASK_LOST"
    assert rules.reused_id_state({"capabilities": ["PARTITION_AWARE"]}) == "TASK_DROPPED"
    assert rules.reused_id_state({"capabilities": [{"type": "PARTITION_AWARE"}]}) == "TASK_DROPPED"
    assert rules.reused_id_state({"capabilities": "PARTITION_AWARE"}) == "TASK_LOST"


def _st(status: str, exit_code: int | None, oom: bool = False) -> ContainerState:
    return ContainerState("c" * 64, "n", {}, status, exit_code, None, None, oom)


@pytest.mark.parametrize("st,killed,state,reason", [
    (_st("exited", 0), False, "TASK_FINISHED", None),
    (_st("exited", 3), False, "TASK_FAILED", None),
    (_st("exited", 137, oom=True), False, "TASK_FAILED", "REASON_CONTAINER_LIMITATION_MEMORY"),
    (_st("exited", 137), True, "TASK_KILLED", None),
    (_st("exited", 0), True, "TASK_KILLED", None),
    (_st("lost", None), False, "TASK_FAILED", "REASON_EXECUTOR_TERMINATED"),
    (_st("removed", None), False, "TASK_LOST", "REASON_EXECUTOR_TERMINATED"),
    (None, False, "TASK_LOST", "REASON_EXECUTOR_TERMINATED"),
])
def test_exit_outcome(st, killed, state, reason):
    out = rules.exit_outcome(st, killed)
    assert (out.state, out.reason) == (state, reason)
    assert out.message
    if state == "TASK_FAILED" and reason is None:
        assert "status 3" in out.message


# ---- the Agent against a fake containerizer ------------------------------------------------------------------------


class FakeContainerizer:
    """Records what the agent asks for; containers run until exit() or kill()."""

    def __init__(self):
        self.launched: list[ContainerSpec] = []
        self.kills: list[tuple[str, float]] = []
        self.stray_kills: list[dict] = []
        self.ends: dict[str, asyncio.Future] = {}
        self.fail_validate: Exception | None = None

    def validate(self, spec: ContainerSpec) -> None:
        if self.fail_validate is not None:
            raise self.fail_validate

    async def available(self) -> bool:
        return True

    async def prepare_image(self, image: str | None) -> None:
        return None  # every image is there

    async def launch(self, spec: ContainerSpec) -> str:
        self.launched.append(spec)
        cid = f"cid-{len(self.launched)}"
        self.ends[cid] = asyncio.get_running_loop().create_future()
        return cid

    def exit(self, cid: str, code: int) -> None:
        self.ends[cid].set_result(ContainerState(cid, "n", {}, "exited", code, None, None, False))

    async def wait(self, cid: str) -> ContainerState:
        return await asyncio.shield(self.ends[cid])

    async def kill(self, cid: str, grace: float) -> None:
        self.kills.append((cid, grace))
        if not self.ends[cid].done():
            self.exit(cid, 137)

    async def list(self, labels: dict) -> list:
        self.stray_kills.append(labels)
        return []


@pytest.fixture
async def agent(tmp_path):
    work = tmp_path / "work"
    cfg = AgentConfig(masters=["127.0.0.1:9"], http="127.0.0.1:0", work_dir=work,
                      resources=Resources.parse("cpus:4;mem:4096"), podman_socket=tmp_path / "none.sock",
                      start_podman_service=False)
    a = Agent(cfg)
    a.containerizer = FakeContainerizer()
    a.cp.agent_id = AGENT_ID
    work.mkdir(parents=True)
    yield a
    for t in list(a._bg) + list(a._watchers.values()) + list(a._stopping.values()):
        t.cancel()


def launch_msg(fid: str, tid: str, cmd: str = "true", agent_id: str = AGENT_ID, info: dict | None = None,
               **task) -> dict:
    return {"type": "LAUNCH", "launch": {
        "framework_id": fid, "framework_info": info or {"name": "fw", "user": "root"},
        "task": {"task_id": tid, "name": tid, "agent_id": agent_id, "command": {"value": cmd},
                 "resources": [{"name": "cpus", "type": "SCALAR", "scalar": 0.5},
                               {"name": "mem", "type": "SCALAR", "scalar": 64.0}], **task}}}


async def settle(a: Agent) -> None:
    for _ in range(50):
        if not a._bg:
            await asyncio.sleep(0)
            if not a._bg:
                return
        await asyncio.gather(*list(a._bg), return_exceptions=True)


def states(a: Agent, fid: str, tid: str) -> list[str]:
    rec = a.tasks.get((fid, tid))
    return [s.state for s in rec.unacked] if rec else []


def checkpointed(a: Agent) -> list[tuple[str, str]]:
    data = json.loads(a.cp_store.path.read_text()) if a.cp_store.path.exists() else {}
    return [(t["framework_id"], t["spec"]["task_id"]) for t in data.get("tasks", [])]


def everything_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


HOSTILE = [("..", "t1"), ("F", ".."), ("F", "a/b"), ("../..", "t1"), ("F", "../../escape"), ("", "t1"),
           ("F", "x" * 300), ("F", "tab\there")]


async def test_hostile_ids_are_refused_and_never_become_paths(agent, tmp_path):
    before = everything_under(tmp_path)
    for fid, tid in HOSTILE:
        await agent._on_message("m", launch_msg(fid, tid))
    await settle(agent)
    assert agent.containerizer.launched == []
    assert everything_under(tmp_path) - before <= {Path("work/meta"), Path("work/meta/agent.json")}
    for fid, tid in HOSTILE:
        rec = agent.tasks[(fid, tid)]
        assert rec.refused and rec.terminal_sent
        [st] = rec.unacked
        assert (st.state, st.reason, st.source) == ("TASK_ERROR", "REASON_TASK_INVALID", "SOURCE_AGENT")
        assert "ID" in st.message and ("invalid" in st.message or "empty" in st.message or "longer" in st.message)
    # never checkpointed, never reported on re-registration (the master would refuse the whole SUBSCRIBE)
    assert checkpointed(agent) == []
    assert json.loads(agent._subscribe_body())["subscribe"]["tasks"] == []
    # a re-sent launch is not refused twice; the acknowledgement forgets it
    await agent._on_message("m", launch_msg("..", "t1"))
    assert len(agent.tasks[("..", "t1")].unacked) == 1
    await agent._on_message("m", {"type": "ACKNOWLEDGE", "acknowledge": {
        "framework_id": "..", "task_id": "t1", "uuid": agent.tasks[("..", "t1")].unacked[0].uuid}})
    assert ("..", "t1") not in agent.tasks


async def test_invalid_agent_ids_are_refused(agent):
    await agent._on_message("m", launch_msg("F", "t1", agent_id="../S0"))
    assert states(agent, "F", "t1") == ["TASK_ERROR"]
    agent.cp.agent_id = "bad/agent"
    await agent._on_message("m", launch_msg("F", "t2"))
    assert states(agent, "F", "t2") == ["TASK_ERROR"]
    assert "This agent's ID" in agent.tasks[("F", "t2")].unacked[0].message
    await settle(agent)
    assert agent.containerizer.launched == []


async def test_malformed_messages_do_not_break_the_link(agent):
    for msg in [{"type": "LAUNCH"}, {"type": "LAUNCH", "launch": None}, {"type": "LAUNCH", "launch": {"task": []}},
                {"type": "LAUNCH", "launch": {"framework_id": "F", "task": {"task_id": 7}}},
                {"type": "KILL"}, {"type": "KILL", "kill": {"framework_id": ["x"], "task_id": {}}},
                {"type": "KILL", "kill": {"framework_id": "..", "task_id": "t"}},
                {"type": "ACKNOWLEDGE", "acknowledge": {"framework_id": [], "task_id": "t", "uuid": "u"}}]:
        await agent._on_message("m", msg)
    # a task with valid ids but a spec that does not decode: TASK_ERROR, not an exception
    await agent._on_message("m", launch_msg("F", "t1", command="not a command"))
    assert states(agent, "F", "t1") == ["TASK_ERROR"]
    assert "Invalid task" in agent.tasks[("F", "t1")].unacked[0].message
    await settle(agent)
    assert agent.containerizer.launched == [] and agent.containerizer.stray_kills == []


async def test_a_failed_sandbox_mkdir_fails_the_task(agent):
    sandboxes = agent.config.work_dir / "sandboxes"
    sandboxes.mkdir()
    (sandboxes / "F").write_text("a file where the framework's directory should be")
    await agent._on_message("m", launch_msg("F", "t1"))
    await agent._on_message("m", launch_msg("G", "é" * 200))  # a valid id of 400 bytes: too long for a file name
    await settle(agent)
    for fid, tid, why in [("F", "t1", "Not a directory"), ("G", "é" * 200, "File name too long")]:
        assert states(agent, fid, tid) == ["TASK_STARTING", "TASK_FAILED"]
        st = agent.tasks[(fid, tid)].unacked[-1]
        assert st.reason == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "Cannot create the task's sandbox" in st.message and why in st.message
    assert agent.containerizer.launched == []


async def test_a_sandbox_leading_out_of_the_work_dir_is_refused(agent, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (agent.config.work_dir / "sandboxes").mkdir()
    (agent.config.work_dir / "sandboxes" / "F").symlink_to(outside)
    await agent._on_message("m", launch_msg("F", "t1"))
    await settle(agent)
    assert states(agent, "F", "t1") == ["TASK_STARTING", "TASK_FAILED"]
    assert "outside the agent's work dir" in agent.tasks[("F", "t1")].unacked[-1].message
    assert list(outside.iterdir()) == [] and agent.containerizer.launched == []


async def test_an_unexpected_error_in_a_launch_ends_the_task(agent):
    agent.containerizer.fail_validate = ValueError("surprise")
    await agent._on_message("m", launch_msg("F", "t1"))
    await settle(agent)
    assert states(agent, "F", "t1") == ["TASK_STARTING", "TASK_FAILED"]
    st = agent.tasks[("F", "t1")].unacked[-1]
    assert st.reason == "REASON_CONTAINER_LAUNCH_FAILED" and "surprise" in st.message


async def test_a_relaunch_of_the_same_task_is_a_no_op(agent):
    msg = launch_msg("F", "t1", "sleep 100")
    await agent._on_message("m", msg)
    await settle(agent)
    assert states(agent, "F", "t1") == ["TASK_STARTING", "TASK_RUNNING"]
    await agent._on_message("m", json.loads(json.dumps(msg)))  # as a new leader re-sends it
    await settle(agent)
    assert states(agent, "F", "t1") == ["TASK_STARTING", "TASK_RUNNING"]
    assert len(agent.containerizer.launched) == 1


@pytest.mark.parametrize("info,refusal", [({}, "TASK_LOST"), ({"capabilities": ["PARTITION_AWARE"]}, "TASK_DROPPED")])
async def test_a_reused_task_id_is_refused_while_the_agent_holds_the_task(agent, info, refusal):
    await agent._on_message("m", launch_msg("F", "t1", "sleep 100", info=info))
    await settle(agent)
    # a different task under the same id, while the first one runs
    await agent._on_message("m", launch_msg("F", "t1", "echo other", info=info))
    await settle(agent)
    rec = agent.tasks[("F", "t1")]
    assert states(agent, "F", "t1") == ["TASK_STARTING", "TASK_RUNNING", refusal]
    st = rec.unacked[-1]
    assert st.reason == "REASON_TASK_INVALID" and "already in use" in st.message and "TASK_RUNNING" in st.message
    assert rec.state == "TASK_RUNNING" and not rec.terminal_sent  # the running task is left alone
    assert len(agent.containerizer.launched) == 1
    assert checkpointed(agent) == [("F", "t1")]  # the refusal is on the checkpointed stream
    # the running task still ends normally, on the same stream
    agent.containerizer.exit("cid-1", 0)
    await asyncio.sleep(0.05)
    assert states(agent, "F", "t1")[-1] == "TASK_FINISHED"
    # the same once it has ended but its final status is not acknowledged yet
    await agent._on_message("m", launch_msg("F", "t1", "echo third", info=info))
    assert states(agent, "F", "t1")[-1] == refusal
    assert "final status not acknowledged" in rec.unacked[-1].message
    # acknowledging everything forgets the task: the id is free again, and its next launch gets its own container
    for st in list(rec.unacked):
        agent._acknowledged("F", "t1", st.uuid)
    assert ("F", "t1") not in agent.tasks
    await agent._on_message("m", launch_msg("F", "t1", "echo fourth", info=info))
    await settle(agent)
    assert states(agent, "F", "t1") == ["TASK_STARTING", "TASK_RUNNING"]
    first, second = agent.containerizer.launched
    assert second.value == "echo fourth" and second.name != first.name
    assert second.sandbox_dir == first.sandbox_dir


async def test_kill_grace_periods_are_bounded(agent):
    for i, (kill_grace, spec_grace, expected) in enumerate([
            (1e9, None, rules.MAX_KILL_GRACE_SECONDS), (-5.0, None, 0.0), (None, 0.0, 0.0), (None, None, 3.0),
            (None, 1e6, rules.MAX_KILL_GRACE_SECONDS), (float("nan"), 2.0, 2.0)]):
        tid = f"t{i}"
        extra = {} if spec_grace is None else {"kill_grace_seconds": spec_grace}
        await agent._on_message("m", launch_msg("F", tid, "sleep 100", **extra))
        await settle(agent)
        await agent._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": tid,
                                                               "grace_seconds": kill_grace}})
        await asyncio.sleep(0.05)
        assert agent.containerizer.kills[-1] == (agent.tasks[("F", tid)].container_id, expected), (i, kill_grace)
        assert states(agent, "F", tid)[-1] == "TASK_KILLED"


async def test_resources_without_cpus_or_mem_leave_the_defaults_to_the_containerizer(agent):
    await agent._on_message("m", launch_msg("F", "t1", resources=[]))
    await settle(agent)
    [spec] = agent.containerizer.launched
    assert (spec.cpus, spec.mem_mb) == (None, None)
    assert rules.container_limits(spec.cpus, spec.mem_mb) == (rules.DEFAULT_CPUS, rules.DEFAULT_MEM_MB)
    assert spec.sandbox_dir == (agent.config.work_dir / "sandboxes" / "F" / "t1").resolve()


# ---- networking and the kill policy --------------------------------------------------------------------------------

_PORTS = {"name": "ports", "type": "RANGES", "ranges": [[31000, 31002], [31010, 31010]]}
_CPUS = {"name": "cpus", "type": "SCALAR", "scalar": 0.5}


def test_port_environment_is_marathons():
    res = [Resource("ports", "RANGES", ranges=((31010, 31010), (31000, 31002)))]
    assert rules.port_environment(res) == {"PORT0": "31000", "PORT1": "31001", "PORT2": "31002",
                                           "PORT3": "31010", "PORT": "31000", "PORTS": "31000,31001,31002,31010"}
    assert rules.port_environment([Resource("cpus", "SCALAR", scalar=1.0)]) == {}
    huge = rules.port_environment([Resource("ports", "RANGES", ranges=((1, 60000),))])
    assert len(rules.host_ports([Resource("ports", "RANGES", ranges=((1, 60000),))])) == rules.MAX_PORT_VARIABLES
    assert huge[f"PORT{rules.MAX_PORT_VARIABLES - 1}"] == str(rules.MAX_PORT_VARIABLES)
    assert f"PORT{rules.MAX_PORT_VARIABLES}" not in huge


async def test_a_task_runs_on_the_hosts_network_with_its_ports_in_its_environment(agent):
    await agent._on_message("m", launch_msg("F", "t1", resources=[_CPUS, _PORTS],
                                            command={"value": "x", "env": [["PORT1", "mine"]]}))
    await settle(agent)
    [spec] = agent.containerizer.launched
    assert (spec.network, spec.ports) == ("host", [])
    assert spec.env["PORT0"] == spec.env["PORT"] == "31000" and spec.env["PORTS"] == "31000,31001,31002,31010"
    assert spec.env["PORT1"] == "mine"  # the framework's own variable wins


async def test_a_bridge_task_gets_its_port_mappings_and_none_gets_no_network(agent):
    maps = [{"host_port": 31010, "container_port": 80}, {"host_port": 31000, "container_port": 53,
                                                          "protocol": "udp"}]
    await agent._on_message("m", launch_msg("F", "t1", resources=[_CPUS, _PORTS], network="BRIDGE",
                                            port_mappings=maps))
    await agent._on_message("m", launch_msg("F", "t2", network="NONE"))
    await settle(agent)
    bridge, none = agent.containerizer.launched
    assert (bridge.network, bridge.ports) == ("bridge", [(31010, 80, "tcp"), (31000, 53, "udp")])
    assert (none.network, none.ports) == ("none", [])
    assert states(agent, "F", "t1") == states(agent, "F", "t2") == ["TASK_STARTING", "TASK_RUNNING"]


@pytest.mark.parametrize("task, says", [
    (dict(network="BRIDGE", port_mappings=[{"host_port": 31005, "container_port": 80}]), "not in its 'ports'"),
    (dict(port_mappings=[{"host_port": 31000, "container_port": 80}]), "only supported for the BRIDGE network"),
    (dict(network="BRIDGE", port_mappings=[{"host_port": 31000, "container_port": 80}] * 2), "more than once"),
    (dict(network="MACVLAN"), "Invalid task"),
    (dict(network="BRIDGE", port_mappings=[{"host_port": 0, "container_port": 80}]), "Invalid task"),
])
async def test_the_agent_refuses_a_port_mapping_it_was_not_given_whatever_the_master_says(agent, task, says):
    await agent._on_message("m", launch_msg("F", "t1", resources=[_CPUS, _PORTS], **task))
    await settle(agent)
    assert agent.containerizer.launched == []
    [st] = agent.tasks[("F", "t1")].unacked
    assert (st.state, st.reason) == ("TASK_ERROR", "REASON_TASK_INVALID") and says in st.message


@pytest.mark.parametrize("caps, seen", [
    ([{"type": "TASK_KILLING_STATE"}], ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"]),
    (["TASK_KILLING_STATE", "PARTITION_AWARE"], ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"]),
    ([{"type": "PARTITION_AWARE"}], ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]),
    ([], ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]),
])
async def test_task_killing_goes_only_to_frameworks_with_the_capability(agent, caps, seen):
    info = {"name": "fw", "user": "root", "capabilities": caps}
    await agent._on_message("m", launch_msg("F", "t1", "sleep 100", info=info, kill_grace_seconds=7.0))
    await settle(agent)
    for _ in range(2):  # the master re-sends KILLs (re-registration): one TASK_KILLING, one stop
        await agent._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1"}})
    await asyncio.sleep(0.05)
    assert states(agent, "F", "t1") == seen
    assert agent.containerizer.kills == [("cid-1", 7.0)]  # the task's kill policy


async def test_a_kill_before_the_container_exists_is_killed_without_killing(agent):
    info = {"name": "fw", "user": "root", "capabilities": ["TASK_KILLING_STATE"]}
    await agent._on_message("m", launch_msg("F", "t1", "sleep 100", info=info))
    await agent._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1"}})
    await settle(agent)
    await asyncio.sleep(0.05)
    assert "TASK_KILLING" not in states(agent, "F", "t1") and states(agent, "F", "t1")[-1] == "TASK_KILLED"


async def test_a_kills_own_grace_period_is_checkpointed_and_outlives_a_restart(agent):
    await agent._on_message("m", launch_msg("F", "t1", "sleep 100", kill_grace_seconds=7.0))
    await settle(agent)
    await agent._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1",
                                                           "grace_seconds": 5.0}})
    await asyncio.sleep(0.05)
    assert agent.containerizer.kills == [("cid-1", 5.0)]  # the KILL's kill_policy overrides the task's
    # a re-sent KILL without one (the master re-sends the grace it recorded, but a NaN or none must not reset it)
    await agent._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1",
                                                           "grace_seconds": float("nan")}})
    assert agent._grace(agent.tasks[("F", "t1")]) == 5.0
    again = Agent(agent.config)  # an agent restart reads the checkpoint: a resumed kill keeps the KILL's grace
    rec = again.tasks[("F", "t1")]
    assert (rec.kill_requested, rec.kill_grace_seconds, again._grace(rec)) == (True, 5.0, 5.0)


class StoppingContainerizer(FakeContainerizer):
    """podman stop's shape: a kill with a grace period returns once the container has ended, and the container
    (a task that traps SIGTERM) only ends at a kill without one (SIGKILL)."""

    async def kill(self, cid: str, grace: float) -> None:
        self.kills.append((cid, grace))
        if grace == 0:
            if not self.ends[cid].done():
                self.exit(cid, 137)
            return
        await asyncio.shield(self.ends[cid])


async def test_a_later_kill_with_a_shorter_grace_brings_the_sigkill_forward(agent):
    agent.containerizer = StoppingContainerizer()
    await agent._on_message("m", launch_msg("F", "t1", "sleep 100"))
    await settle(agent)
    kill = {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1", "grace_seconds": 600.0}}
    await agent._on_message("m", kill)
    await asyncio.sleep(0.05)
    assert agent.containerizer.kills == [("cid-1", 600.0)] and states(agent, "F", "t1")[-1] == "TASK_RUNNING"
    await agent._on_message("m", kill)  # a re-sent KILL, same grace: nothing new
    await agent._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "t1",
                                                           "grace_seconds": 0.05}})
    for _ in range(100):
        if states(agent, "F", "t1")[-1] == "TASK_KILLED":
            break
        await asyncio.sleep(0.02)
    assert agent.containerizer.kills == [("cid-1", 600.0), ("cid-1", 0.0)]
    assert states(agent, "F", "t1")[-1] == "TASK_KILLED"


async def test_check_updates_queued_behind_the_one_in_flight_keep_only_the_latest(agent):
    # A framework slow to acknowledge: the queue holds the update in flight plus one check update, not one per probe.
    await agent._on_message("m", launch_msg("F", "t", "sleep 100"))
    await settle(agent)
    rec = agent.tasks[("F", "t")]
    assert states(agent, "F", "t") == ["TASK_STARTING", "TASK_RUNNING"]
    for healthy in (False, False, True, False):
        rec.healthy = healthy
        agent._check_update(rec, "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")
    assert [(s.state, s.healthy) for s in rec.unacked] == [
        ("TASK_STARTING", None), ("TASK_RUNNING", None), ("TASK_RUNNING", False)]
    agent._acknowledged("F", "t", rec.unacked[0].uuid)
    agent._acknowledged("F", "t", rec.unacked[0].uuid)  # RUNNING: the check update is now the head (in flight)
    rec.healthy = True
    agent._check_update(rec, "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")
    assert [(s.state, s.healthy) for s in rec.unacked] == [("TASK_RUNNING", False), ("TASK_RUNNING", True)]
    agent._status(rec, "TASK_KILLED")  # never replaced: only a check update replaces a check update
    assert [(s.state, s.healthy) for s in rec.unacked][-2:] == [("TASK_RUNNING", True), ("TASK_KILLED", None)]


# ---- disk limits (agent/disk_limits.py; live: tests/test_services.py) ----------------------------------------------

def _resources(disk: float | None) -> list[dict]:
    res = [{"name": "cpus", "type": "SCALAR", "scalar": 0.5}, {"name": "mem", "type": "SCALAR", "scalar": 64.0}]
    return res + ([{"name": "disk", "type": "SCALAR", "scalar": disk}] if disk is not None else [])


async def test_a_task_over_its_disk_is_killed_and_fails_with_the_limitation_after_a_restart_too(agent):
    agent.containerizer = StoppingContainerizer()  # the kill takes the grace period: a restart comes meanwhile
    for tid, disk in (("over", 1.0), ("within", 10.0), ("unlimited", None)):
        await agent._on_message("m", launch_msg("F", tid, "sleep 100", resources=_resources(disk),
                                                framework_info={"name": "fw", "user": "root",
                                                                "capabilities": ["TASK_KILLING_STATE"]}))
    await settle(agent)
    for tid in ("over", "within", "unlimited"):
        (agent.config.work_dir / "sandboxes" / "F" / tid / "data").write_bytes(b"x" * (2 * 2**20))
    await agent._check_disk()
    await asyncio.sleep(0.05)
    over = agent.tasks[("F", "over")]
    message = over.disk_limitation
    assert message is not None and message.startswith("Disk usage (2") and message.endswith("exceeds quota (1MB)")
    assert agent.containerizer.kills == [("cid-1", rules.DEFAULT_KILL_GRACE_SECONDS)]  # the kill policy's grace
    assert states(agent, "F", "over")[-1] == "TASK_RUNNING"  # no TASK_KILLING for a limitation
    # the last measurements (for the statistics): a task without disk is not measured
    assert set(agent.disk_usage) == {("F", "over"), ("F", "within")}
    used, limit = agent.disk_usage[("F", "within")]
    assert 2 * 2**20 <= used < limit == 10 * 2**20
    # checkpointed before the kill began: a restarted agent finishes it and still says why
    again = Agent(agent.config)
    again.containerizer = StoppingContainerizer()
    again.containerizer.ends = agent.containerizer.ends
    assert again.tasks[("F", "over")].disk_limitation == message
    await again._recover()
    await asyncio.sleep(0.05)
    assert again.containerizer.kills == [("cid-1", rules.DEFAULT_KILL_GRACE_SECONDS)]
    again.containerizer.exit("cid-1", 137)  # SIGKILL, at the end of the grace period
    await asyncio.sleep(0.05)
    st = again.tasks[("F", "over")].unacked[-1]
    assert (st.state, st.source, st.reason, st.message) == ("TASK_FAILED", "SOURCE_AGENT",
                                                            "REASON_CONTAINER_LIMITATION_DISK", message)
    for t in list(again._bg) + list(again._watchers.values()) + list(again._stopping.values()):
        t.cancel()


def test_command_executor_names_are_mesoss():
    """As Mesos's slave.cpp names a command executor; the old `mesos ps` shows the "(Command: X)" part."""
    from eventstore.events import CommandSpec

    name = rules.command_executor_name
    assert name("t1", CommandSpec(value="sleep 10")) == "Command Executor (Task: t1) (Command: sh -c 'sleep 10')"
    assert name("t1", CommandSpec(value="echo hello world")) == \
        "Command Executor (Task: t1) (Command: sh -c 'echo hello w...')"
    assert name("t1", CommandSpec()) == "Command Executor (Task: t1) (Command: NO COMMAND)"
    assert name("t1", CommandSpec(shell=False)) == "Command Executor (Task: t1) (Command: NO EXECUTABLE)"
    assert name("t1", CommandSpec(shell=False, value="ls", arguments=["ls", "-l"])) == \
        "Command Executor (Task: t1) (Command: [ls, ls, -l])"
    assert name("t1", CommandSpec(shell=False, value="/bin/ls", arguments=["ls", "-l", "/tmp"])) == \
        "Command Executor (Task: t1) (Command: [/bin/ls, ls,...])"
