"""Task groups (LAUNCH_GROUP) as Podman pods, on a real cluster (master replicas, agents, Podman; no mocks), through
the v1 scheduler API: the tasks of a group share the pod's network namespace (localhost) and the executor's sandbox,
are reported one by one, a failed task gets the rest of its group killed, the group survives an agent kill -9 and
restart, and the pod goes once every task of the group is over and acknowledged. docs/services.md, "Task groups".
The pure parts (validation, the fold, the effects): tests/test_task_groups.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent.images import podman_env
from tests.cluster import Cluster, running_cluster
from tests.netutil import fetch
from tests.test_services import _port_in, _task, _update
from tests.test_services import _until as _until_all
from tests.v1client import WAIT, Scheduler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("groups") / "cluster") as c:
        yield c


FRAMEWORK_NAME = "groups"


def _executor(eid: str, port: int | None = None) -> dict:
    res: list[dict] = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                       {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                       {"name": "disk", "type": "SCALAR", "scalar": {"value": 16}}]
    ex: dict[str, Any] = {"type": "DEFAULT", "executor_id": {"value": eid}, "name": f"group {eid}", "resources": res}
    if port is not None:  # the pod on the bridge network, its port 8080 published on the offered host port
        res.append({"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}})
        ex["container"] = {"type": "MESOS", "network_infos": [
            {"port_mappings": [{"host_port": port, "container_port": 8080, "protocol": "tcp"}]}]}
    return ex


async def _launch_group(s: Scheduler, offer: dict, executor: dict, *tasks: dict) -> None:
    r = await s.call("ACCEPT", {"offer_ids": [offer["id"]], "operations": [
        {"type": "LAUNCH_GROUP", "launch_group": {"executor": executor, "task_group": {"tasks": list(tasks)}}}],
        "filters": {"refuse_seconds": 0.5}})
    assert r.status == 202, r


def _agent_name(cluster: Cluster, offer: dict) -> str:
    return next(a["id"] for a in cluster.layout["agents"] if cluster.agent_id(a["id"]) == offer["agent_id"]["value"])


def _work_dir(cluster: Cluster, offer: dict) -> Path:
    name = _agent_name(cluster, offer)
    return Path(next(a["work_dir"] for a in cluster.layout["agents"] if a["id"] == name))


def _pods(executor_id: str) -> list[dict]:
    out = subprocess.run(["podman", "pod", "ps", "--filter", f"label=drover.executor={executor_id}", "--format",
                          "json"], env=podman_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "[]")


async def _until_true(what, why: str, timeout: float = WAIT) -> None:
    for _ in range(int(timeout / 0.2)):
        if await asyncio.to_thread(what):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {why}")


async def _until(s: Scheduler, tid: str, state: str) -> list[str]:
    """The states the task goes through up to `state`, a state repeated in a row once: updates are at least once
    (the agent resends one the framework has not acknowledged yet, here while the test reads another task's)."""
    seen = await _until_all(s, tid, state)
    return [st for i, st in enumerate(seen) if i == 0 or seen[i - 1] != st]


def _eid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


_WEB = "echo hello-from-web > index.html && exec httpd -f -p 8080 -h ."
# Only the pod's shared network namespace makes 127.0.0.1:8080 the web task's: on the bridge network each container
# of its own would have a loopback of its own.
_CLIENT = ("for i in $(seq 1 200); do wget -q -O got http://127.0.0.1:8080/index.html && break; sleep 0.1; done; "
           "grep -q hello-from-web got")


async def test_a_group_shares_localhost_in_its_pod_and_the_pod_goes_after_the_acks(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    eid = _eid("web")
    await _launch_group(s, offer, _executor(eid, port), _task("web", offer, _WEB), _task("client", offer, _CLIENT))
    assert await _until(s, "web", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    # the client reached the web task on the pod's localhost and finished; a finished task leaves the others running
    assert await _until(s, "client", "TASK_FINISHED") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    # the pod's port is published on the offered host port
    status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
    assert (status, body.strip()) == (200, "hello-from-web")
    # the master shows the tasks with their executor; the agent its default executor with its task
    state = await asyncio.to_thread(cluster.state)
    [web] = [t for f in state["frameworks"] if f["id"] == s.framework_id for t in f["tasks"]]
    assert web["id"] == "web" and web["executor_id"] == eid and web["state"] == "TASK_RUNNING"
    agent_state = await asyncio.to_thread(cluster.agent_state, _agent_name(cluster, offer))
    [fw] = [f for f in agent_state["frameworks"] if f["id"] == s.framework_id]
    [ex] = [e for e in fw["executors"] if e["id"] == eid]
    assert ex["type"] == "DEFAULT" and [t["id"] for t in ex["tasks"]] == ["web"]
    assert [p["Name"] for p in _pods(eid)] == [ex["container"]]

    assert (await s.call("KILL", {"task_id": {"value": "web"}})).status == 202
    assert (await _until(s, "web", "TASK_KILLED"))[-1] == "TASK_KILLED"
    # every terminal update acknowledged (_until does): the pod and its containers go
    await _until_true(lambda: _pods(eid) == [], "the group's pod to be removed")


async def test_a_failed_task_gets_the_rest_of_its_group_killed(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    eid = _eid("fail")
    await _launch_group(s, offer, _executor(eid), _task("steady", offer, "sleep 300"),
                        _task("doomed", offer, "sleep 1; exit 3"))
    assert await _until(s, "steady", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    seen = []
    while not seen or seen[-1]["state"] != "TASK_FAILED":
        seen.append(await _update(s, "doomed"))
    assert "status 3" in seen[-1]["message"]
    # as Mesos's default executor: the others of the group are killed
    assert await _until(s, "steady", "TASK_KILLED") == ["TASK_KILLED"]
    await _until_true(lambda: _pods(eid) == [], "the group's pod to be removed")


async def test_a_health_check_kill_ends_the_whole_group_unhealthy(cluster, subscribe):
    # A task of the group fails its COMMAND health check (its `ok` file goes): its agent kills it, and the rest of
    # the group with it; as Mesos's default executor, every terminal status of the group then says healthy: false.
    s = await subscribe()
    offer = (await s.offers())[0]
    hc = {"type": "COMMAND", "command": {"value": "test -f ok"}, "delay_seconds": 0, "interval_seconds": 1,
          "timeout_seconds": 5, "grace_period_seconds": 0, "consecutive_failures": 2}
    await _launch_group(s, offer, _executor(_eid("unhealthy")), _task("mate", offer, "sleep 300"),
                        _task("checked", offer, "touch ok; sleep 4; rm ok; sleep 300", health_check=hc))
    checked = []
    while not checked or checked[-1]["state"] != "TASK_KILLED":
        checked.append(await _update(s, "checked"))
    assert [st.get("healthy") for st in checked if st["state"] == "TASK_RUNNING" and "healthy" in st][:1] == [True]
    assert checked[-1]["healthy"] is False and "health check failed 2 consecutive times" in checked[-1]["message"]
    mate = []
    while not mate or mate[-1]["state"] != "TASK_KILLED":
        mate.append(await _update(s, "mate"))
    assert mate[-1]["healthy"] is False


async def test_a_kill_of_one_task_kills_its_group_and_shutdown_kills_a_group(cluster, subscribe):
    s = await subscribe()
    offers = await s.offers()
    eid = _eid("kill")
    await _launch_group(s, offers[0], _executor(eid), _task("k1", offers[0], "sleep 300"),
                        _task("k2", offers[0], "sleep 300"))
    for tid in ("k1", "k2"):
        assert await _until(s, tid, "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    assert (await s.call("KILL", {"task_id": {"value": "k1"}})).status == 202
    # as Mesos's default executor: the killed task ends TASK_KILLED, which kills the rest of its group
    assert (await _until(s, "k1", "TASK_KILLED"))[-1] == "TASK_KILLED"
    assert (await _until(s, "k2", "TASK_KILLED"))[-1] == "TASK_KILLED"
    await _until_true(lambda: _pods(eid) == [], "the group's pod to be removed")

    offer = (await s.offers())[0]
    eid2 = _eid("shut")
    await _launch_group(s, offer, _executor(eid2), _task("s1", offer, "sleep 300"), _task("s2", offer, "sleep 300"))
    for tid in ("s1", "s2"):
        assert await _until(s, tid, "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    r = await s.call("SHUTDOWN", {"executor_id": {"value": eid2}, "agent_id": offer["agent_id"]})
    assert r.status == 202, r
    for tid in ("s1", "s2"):
        assert (await _until(s, tid, "TASK_KILLED"))[-1] == "TASK_KILLED"
    await _until_true(lambda: _pods(eid2) == [], "the group's pod to be removed")


async def test_the_tasks_of_a_group_share_the_executor_sandbox(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    eid = _eid("share")
    writer = "echo shared-data > $MESOS_EXECUTOR_SANDBOX/note && echo mine > $MESOS_SANDBOX/own"
    reader = ("for i in $(seq 1 200); do [ -f $MESOS_EXECUTOR_SANDBOX/note ] && break; sleep 0.1; done; "
              "grep -q shared-data $MESOS_EXECUTOR_SANDBOX/note && [ ! -f $MESOS_SANDBOX/own ]")
    await _launch_group(s, offer, _executor(eid), _task("writer", offer, writer), _task("reader", offer, reader))
    assert (await _until(s, "writer", "TASK_FINISHED"))[-1] == "TASK_FINISHED"
    assert (await _until(s, "reader", "TASK_FINISHED"))[-1] == "TASK_FINISHED"
    work = _work_dir(cluster, offer)
    # the layout: each task its own sandbox, the group the executor's
    assert (work / "executors" / s.framework_id / eid / "note").read_text().strip() == "shared-data"
    assert (work / "sandboxes" / s.framework_id / "writer" / "own").read_text().strip() == "mine"
    await _until_true(lambda: _pods(eid) == [], "the group's pod to be removed")


async def test_a_custom_executor_group_is_refused_with_task_error(subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    ex = dict(_executor(_eid("custom")), type="CUSTOM", command={"value": "./my-executor"})
    await _launch_group(s, offer, ex, _task("c1", offer, "true"), _task("c2", offer, "true"))
    for tid in ("c1", "c2"):
        st = await _update(s, tid)
        assert (st["state"], st["reason"], st["source"]) == ("TASK_ERROR", "REASON_TASK_GROUP_INVALID",
                                                             "SOURCE_MASTER")
        assert "Custom executors" in st["message"]


async def test_a_group_survives_an_agent_kill9_and_restart(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    eid = _eid("survive")
    name = _agent_name(cluster, offer)
    work = _work_dir(cluster, offer)
    trigger = "while [ ! -f $MESOS_EXECUTOR_SANDBOX/go ]; do sleep 0.1; done; exit 5"
    await _launch_group(s, offer, _executor(eid), _task("long", offer, "sleep 300"), _task("trigger", offer, trigger))
    for tid in ("long", "trigger"):
        assert await _until(s, tid, "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    assert len(_pods(eid)) == 1

    cluster.kill(name)  # kill -9: the pod and its containers do not depend on the agent process
    (work / "executors" / s.framework_id / eid / "go").write_text("now\n")  # the trigger fails while it is down
    # a pod of a group this agent no longer holds (as if it died between forgetting a group and removing its pod)
    orphan = _eid("orphan")
    made = subprocess.run(["podman", "pod", "create", "--name", f"drover-pod-{orphan}",
                           "--label", f"drover.agent={offer['agent_id']['value']}", "--label",
                           f"drover.framework={s.framework_id}", "--label", f"drover.executor={orphan}",
                           "--label", "drover.launch=gone"], env=podman_env(), capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    cluster.start_agent(name)

    seen = []
    while not seen or seen[-1]["state"] != "TASK_FAILED":
        seen.append(await _update(s, "trigger"))
    assert "status 5" in seen[-1]["message"], seen
    # the recovered agent watched the group: the failure kills the rest of it
    assert (await _until(s, "long", "TASK_KILLED"))[-1] == "TASK_KILLED"
    await _until_true(lambda: _pods(eid) == [], "the group's pod to be removed")
    await _until_true(lambda: _pods(orphan) == [], "the orphaned pod to be swept")  # the sweep at agent start


# ---- the agent alone, on the real podman service (no master): what it checks, and re-sent groups ----------------

def _group_msg(fid: str, eid: str, cmds: dict[str, str], agent_id: str) -> dict:
    ex = {"executor_id": eid, "task_ids": list(cmds), "resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": 0.1}, {"name": "mem", "type": "SCALAR", "scalar": 32.0}]}
    tasks = [{"task_id": tid, "name": tid, "agent_id": agent_id, "command": {"value": cmd}, "executor": ex,
              "resources": [{"name": "cpus", "type": "SCALAR", "scalar": 0.2},
                            {"name": "mem", "type": "SCALAR", "scalar": 32.0}]} for tid, cmd in cmds.items()]
    return {"type": "LAUNCH_GROUP", "launch_group": {"framework_id": fid, "framework_info": {"name": "fw",
                                                                                           "user": "root"},
                                                     "tasks": tasks}}


async def test_the_agent_runs_a_group_once_and_ignores_it_sent_again(tmp_path, podman_socket):
    from tests.test_agent_safety import agent_without_master, wait_for_state
    async with agent_without_master(tmp_path, podman_socket) as a:
        msg = _group_msg("F", "e1", {"g1": "sleep 300", "g2": "sleep 300"}, a.cp.agent_id)
        await a._on_message("m", msg)
        for tid in ("g1", "g2"):
            assert await wait_for_state(a, "F", tid, "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
        launch_ids = {a.tasks[("F", t)].launch_id for t in ("g1", "g2")}
        assert len(launch_ids) == 1
        await a._on_message("m", msg)  # a new leader re-sends the group
        await asyncio.sleep(0.5)
        assert {a.tasks[("F", t)].launch_id for t in ("g1", "g2")} == launch_ids
        assert [s.state for s in a.tasks[("F", "g1")].unacked] == ["TASK_STARTING", "TASK_RUNNING"]
        pods = await a.containerizer.list_pods({"drover.agent": a.cp.agent_id})
        assert [(p.name, p.running_tasks) for p in pods] == [(a._pod_name(a.tasks[("F", "g1")]), 2)]
        await a._kill("F", "g2", 0)  # one killed: the group goes
        for tid in ("g1", "g2"):
            assert (await wait_for_state(a, "F", tid, "TASK_KILLED"))[-1] == "TASK_KILLED"
        await a.containerizer.remove_pod(pods[0].name)


async def test_the_agent_refuses_a_group_it_cannot_run_whatever_the_master_says(tmp_path, podman_socket):
    from tests.test_agent_safety import agent_without_master
    async with agent_without_master(tmp_path, podman_socket) as a:
        msg = _group_msg("F", "e1", {"b1": "true", "b2": "true"}, a.cp.agent_id)
        msg["launch_group"]["tasks"][1]["executor"] = dict(msg["launch_group"]["tasks"][1]["executor"],
                                                           executor_id="e2")
        await a._on_message("m", msg)
        for tid in ("b1", "b2"):
            [st] = a.tasks[("F", tid)].unacked
            assert (st.state, st.reason) == ("TASK_ERROR", "REASON_TASK_GROUP_INVALID")
            assert "must carry the group's executor" in st.message
        # a task of a group never comes alone
        single = {"type": "LAUNCH", "launch": {"framework_id": "F", "framework_info": {},
                                               "task": _group_msg("F", "e3", {"s1": "true"},
                                                                  a.cp.agent_id)["launch_group"]["tasks"][0]}}
        await a._on_message("m", single)
        [st] = a.tasks[("F", "s1")].unacked
        assert st.state == "TASK_ERROR" and "comes in a LAUNCH_GROUP" in st.message
        await asyncio.sleep(0.3)
        assert await a.containerizer.list_pods({"drover.agent": a.cp.agent_id}) == []
        assert not (tmp_path / "work" / "executors").exists()


async def _nothing_left(a, why: str) -> None:
    """No pod and no container of the agent is left (what a kill or a failed launch removes goes in the background)."""
    for _ in range(300):
        if await a.containerizer.list_pods({"drover.agent": a.cp.agent_id}) == [] \
                and await a.containerizer.list({"drover.agent": a.cp.agent_id}) == []:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {why}")


async def test_a_kill_stops_a_groups_fetch_and_none_of_it_starts(tmp_path, podman_socket):
    from tests.test_agent_safety import agent_without_master, wait_for_state
    from tests.test_fetcher import SlowServer
    async with agent_without_master(tmp_path, podman_socket) as a, SlowServer({}) as server:
        msg = _group_msg("F", "e1", {"f1": "sleep 300", "f2": "sleep 300"}, a.cp.agent_id)
        msg["launch_group"]["tasks"][1]["command"]["uris"] = [{"value": f"{server.base}/slow.tgz"}]
        await a._on_message("m", msg)
        await asyncio.wait_for(server.waiting.wait(), 30)
        # the KILL of the other task of the group: the fetch stops (the server never answers before it is over)
        await a._on_message("m", {"type": "KILL", "kill": {"framework_id": "F", "task_id": "f1"}})
        for tid in ("f1", "f2"):
            assert await wait_for_state(a, "F", tid, "TASK_KILLED") == ["TASK_STARTING", "TASK_KILLED"]
            assert a.tasks[("F", tid)].unacked[-1].reason == "REASON_TASK_KILLED_DURING_LAUNCH"
        server.release.set()
        await _nothing_left(a, "no pod or container of the killed group")


async def test_a_kill_while_a_group_starts_kills_all_of_it_never_fails_it(tmp_path, podman_socket):
    """A KILL of one task while the group's containers are being started (the kill removes a container not started
    yet): every task of the group ends TASK_KILLED, none TASK_FAILED, nothing of it left running."""
    from tests.test_agent_safety import agent_without_master, wait_for_state
    async with agent_without_master(tmp_path, podman_socket) as a:
        tids = ["s1", "s2", "s3"]
        await a._on_message("m", _group_msg("F", "e1", dict.fromkeys(tids, "sleep 300"), a.cp.agent_id))
        last = a.tasks[("F", "s3")]
        while last.container_id is None and not last.terminal_sent:  # created, the starts begin
            await asyncio.sleep(0.005)
        await a._kill("F", "s3", 0)
        for tid in tids:
            got = await wait_for_state(a, "F", tid, "TASK_KILLED")
            assert "TASK_FAILED" not in got and got[-1] == "TASK_KILLED", (tid, got)
        tasks = await a.containerizer.list({"drover.agent": a.cp.agent_id, "drover.framework": "F"})
        assert [c.name for c in tasks if c.labels.get("drover.task") in tids and c.status == "running"] == []


async def test_a_group_whose_launch_fails_after_its_pod_exists_leaves_nothing(tmp_path, podman_socket):
    """The second task's container cannot be created (its user is not in its image) once the pod exists and the
    first task's container was created: every task ends TASK_FAILED, and the pod goes with its containers (removed
    with retries, _remove_group_pod; podman kills a started one)."""
    from tests.test_agent_safety import agent_without_master, wait_for_state
    async with agent_without_master(tmp_path, podman_socket) as a:
        msg = _group_msg("F", "e1", {"up": "sleep 300", "bad": "x"}, a.cp.agent_id)
        msg["launch_group"]["tasks"][1]["command"]["user"] = "nosuchuser"  # not in its image: found when created
        await a._on_message("m", msg)
        for tid in ("up", "bad"):
            assert await wait_for_state(a, "F", tid, "TASK_FAILED") == ["TASK_STARTING", "TASK_FAILED"]
            assert a.tasks[("F", tid)].unacked[-1].reason == "REASON_CONTAINER_LAUNCH_FAILED"
        await _nothing_left(a, "the failed group's pod and containers to go")


async def test_a_reused_executor_id_starts_with_an_empty_executor_sandbox(tmp_path, podman_socket):
    """An executor sandbox left by an earlier group of the same executor id (the agent forgot it) is set aside and
    removed before the new group starts, without following a link planted in it."""
    from tests.test_agent_safety import agent_without_master, wait_for_state
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    async with agent_without_master(tmp_path, podman_socket) as a:
        stale = tmp_path / "work" / "executors" / "F" / "e1"
        (stale / "dir").mkdir(parents=True)
        (stale / "dir" / "old").write_text("stale")
        (stale / "old").write_text("stale")
        (stale / "link").symlink_to(outside)
        check = "[ -z \"$(ls -A $MESOS_EXECUTOR_SANDBOX)\" ] && touch $MESOS_EXECUTOR_SANDBOX/new"
        await a._on_message("m", _group_msg("F", "e1", {"r1": check}, a.cp.agent_id))
        got = await wait_for_state(a, "F", "r1", "TASK_FINISHED")
        assert got == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"], (got, a.tasks[("F", "r1")].unacked)
        assert sorted(p.name for p in stale.iterdir()) == ["new"]
        assert (outside / "precious").read_text() == "keep"
        await _until_true(lambda: sorted(p.name for p in stale.parent.iterdir()) == ["e1"],
                          "the stale sandbox set aside to be removed")
