"""Tasks as services, on a real cluster (master replicas, agents, Podman; no mocks), through the v1 scheduler API:
networking and ports (a task serves on its offered host port, or behind a bridge port mapping; a mapping of a port
it was not offered is a TASK_ERROR), the kill policy (SIGTERM, the grace period, then SIGKILL; TASK_KILLING only
for frameworks with TASK_KILLING_STATE) and disk limits (a task writing more than its `disk` ends TASK_FAILED,
REASON_CONTAINER_LIMITATION_DISK; one within it runs on). docs/services.md."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.cluster import Cluster, running_cluster
from tests.netutil import fetch, free_port
from tests.v1client import Scheduler
from tests.v1client import acked_update as _update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IMAGE = "localhost/drover-busybox:latest"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("services") / "cluster") as c:
        yield c


FRAMEWORK_NAME = "services"


def _offered_ports(offer: dict) -> list[tuple[int, int]]:
    return [(r["begin"], r["end"]) for res in offer["resources"] if res["name"] == "ports"
            for r in res["ranges"]["range"]]


def _port_in(offer: dict) -> int:
    """A port of the offer that nothing on this host listens on now (both agents offer the same range here)."""
    ranges = _offered_ports(offer)
    for _ in range(50):
        p = free_port(ranges[0][0], ranges[0][1])
        if any(b <= p <= e for b, e in ranges):
            return p
    raise AssertionError(f"no free port in {ranges}")


def _task(tid: str, offer: dict, cmd: str, ports: list[int] = (), **extra: Any) -> dict:
    res = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
           {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}]
    if ports:
        res.append({"name": "ports", "type": "RANGES",
                    "ranges": {"range": [{"begin": p, "end": p} for p in ports]}})
    return {"name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"], "resources": res,
            "command": {"value": cmd}, **extra}


async def _launch(s: Scheduler, offer: dict, *tasks: dict) -> None:
    r = await s.call("ACCEPT", {"offer_ids": [offer["id"]],
                                "operations": [{"type": "LAUNCH", "launch": {"task_infos": list(tasks)}}],
                                "filters": {"refuse_seconds": 0.5}})
    assert r.status == 202, r


async def _until(s: Scheduler, tid: str, state: str) -> list[str]:
    """Every state the task goes through up to `state` (which it must reach)."""
    seen: list[str] = []
    while not seen or seen[-1] != state:
        st = await _update(s, tid)
        seen.append(st["state"])
        assert not (st["state"] != state and st["state"] in ("TASK_FAILED", "TASK_ERROR", "TASK_LOST",
                                                            "TASK_FINISHED", "TASK_KILLED")), (seen, st)
    return seen


def _sandbox(cluster: Cluster, offer: dict, framework_id: str, tid: str) -> Path:
    aid = offer["agent_id"]["value"]
    a = next(a for a in cluster.layout["agents"] if cluster.agent_id(a["id"]) == aid)
    return Path(a["work_dir"]) / "sandboxes" / framework_id / tid


async def _wait_file(path: Path) -> None:
    for _ in range(300):
        if path.exists():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


# ---- networking and ports ------------------------------------------------------------------------------------------

_SERVE = "echo {text} > index.html && exec httpd -f -p {port} -h ."


async def test_a_task_serves_on_its_offered_port_on_the_hosts_network(subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    # $PORT (= $PORT0, the task's first port) is the agent's Marathon-style variable
    await _launch(s, offer, _task("web", offer, _SERVE.format(text="host-network", port="$PORT"), [port]))
    assert await _until(s, "web", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
    assert (status, body.strip()) == (200, "host-network")
    assert (await s.call("KILL", {"task_id": {"value": "web"}})).status == 202
    assert (await _until(s, "web", "TASK_KILLED"))[-1] == "TASK_KILLED"


@pytest.mark.parametrize("how", ["docker", "network_infos"])
async def test_a_bridge_task_is_reached_through_its_offered_host_port(cluster, subscribe, how):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    mapping = [{"host_port": port, "container_port": 80, "protocol": "tcp"}]
    if how == "docker":
        container = {"type": "DOCKER", "docker": {"image": IMAGE, "network": "BRIDGE", "port_mappings": mapping}}
    else:
        container = {"type": "MESOS", "network_infos": [{"port_mappings": mapping}]}
    # port 80 in its own network namespace: no NET_BIND_SERVICE needed
    await _launch(s, offer, _task("web", offer, _SERVE.format(text=f"bridge-{how}", port=80), [port],
                                  container=container))
    assert await _until(s, "web", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
    assert (status, body.strip()) == (200, f"bridge-{how}")
    # the state shows the task's network as Mesos renders a ContainerInfo
    state = await asyncio.to_thread(cluster.state)
    [task] = [t for f in state["frameworks"] if f["id"] == s.framework_id for t in f["tasks"]]
    shown = task["container"]["docker"]["port_mappings"] if how == "docker" else \
        task["container"]["network_infos"][0]["port_mappings"]
    assert shown == mapping
    assert (await s.call("KILL", {"task_id": {"value": "web"}})).status == 202
    assert (await _until(s, "web", "TASK_KILLED"))[-1] == "TASK_KILLED"


async def test_a_task_mapping_a_port_it_was_not_offered_gets_task_error(subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    container = {"type": "DOCKER", "docker": {"image": IMAGE, "network": "BRIDGE", "port_mappings": [
        {"host_port": port, "container_port": 80}, {"host_port": 8, "container_port": 81}]}}
    await _launch(s, offer, _task("sneaky", offer, "sleep 100", [port], container=container))
    st = await _update(s, "sneaky")
    assert (st["state"], st["reason"], st["source"]) == ("TASK_ERROR", "REASON_TASK_INVALID", "SOURCE_MASTER")
    assert "Task maps host port 8, which is not in its 'ports' resources" in st["message"]


# ---- the kill policy -----------------------------------------------------------------------------------------------

# Traps SIGTERM (writes a marker) and keeps running: only the SIGKILL after the grace period ends it.
_STUBBORN = ("trap 'echo TERM > got-sigterm' TERM; echo up > started; "
             "while true; do [ -f got-sigterm ] && echo alive > alive-after-sigterm; sleep 0.1; done")


@pytest.mark.parametrize("caps, states", [
    ([{"type": "TASK_KILLING_STATE"}], ["TASK_KILLING", "TASK_KILLED"]),
    ([], ["TASK_KILLED"]),  # never TASK_KILLING
])
async def test_a_kill_sends_sigterm_then_sigkill_after_the_grace_period(cluster, subscribe, caps, states):
    s = await subscribe(capabilities=caps)
    offer = (await s.offers())[0]
    # the task's own kill policy (1 s), which the KILL below overrides (2 s)
    await _launch(s, offer, _task("stubborn", offer, _STUBBORN,
                                  kill_policy={"grace_period": {"nanoseconds": 1_000_000_000}}))
    assert await _until(s, "stubborn", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    sandbox = _sandbox(cluster, offer, s.framework_id, "stubborn")
    await _wait_file(sandbox / "started")  # the trap is set
    r = await s.call("KILL", {"task_id": {"value": "stubborn"}, "agent_id": offer["agent_id"],
                              "kill_policy": {"grace_period": {"nanoseconds": 2_000_000_000}}})
    assert r.status == 202, r
    assert await _until(s, "stubborn", "TASK_KILLED") == states
    # SIGTERM came first, the task lived on after it, and something it cannot trap (SIGKILL) ended it
    assert (sandbox / "got-sigterm").read_text().strip() == "TERM"
    assert (sandbox / "alive-after-sigterm").exists()


async def test_a_task_that_obeys_sigterm_is_killed_by_it(cluster, subscribe):
    s = await subscribe(capabilities=[{"type": "TASK_KILLING_STATE"}])
    offer = (await s.offers())[0]
    polite = "trap 'echo TERM > got-sigterm; exit 0' TERM; echo up > started; while true; do sleep 0.1; done"
    await _launch(s, offer, _task("polite", offer, polite,
                                  kill_policy={"grace_period": {"nanoseconds": 30_000_000_000}}))
    assert await _until(s, "polite", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    sandbox = _sandbox(cluster, offer, s.framework_id, "polite")
    await _wait_file(sandbox / "started")
    assert (await s.call("KILL", {"task_id": {"value": "polite"}})).status == 202
    st = await _update(s, "polite")
    assert st["state"] == "TASK_KILLING" and st["source"] == "SOURCE_EXECUTOR"
    st = await _update(s, "polite")
    assert st["state"] == "TASK_KILLED"
    assert (sandbox / "got-sigterm").read_text().strip() == "TERM"


async def test_a_later_kill_with_a_shorter_grace_period_brings_the_sigkill_forward(cluster, subscribe):
    s = await subscribe(capabilities=[{"type": "TASK_KILLING_STATE"}])
    offer = (await s.offers())[0]
    await _launch(s, offer, _task("stubborn", offer, _STUBBORN))
    assert await _until(s, "stubborn", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    sandbox = _sandbox(cluster, offer, s.framework_id, "stubborn")
    await _wait_file(sandbox / "started")
    hour = {"grace_period": {"nanoseconds": 3600 * 10**9}}  # the agent bounds it to 600 s
    assert (await s.call("KILL", {"task_id": {"value": "stubborn"}, "kill_policy": hour})).status == 202
    assert (await _update(s, "stubborn"))["state"] == "TASK_KILLING"
    await _wait_file(sandbox / "alive-after-sigterm")  # it trapped SIGTERM and lives on
    now = {"grace_period": {"nanoseconds": 0}}
    assert (await s.call("KILL", {"task_id": {"value": "stubborn"}, "kill_policy": now})).status == 202
    assert await _until(s, "stubborn", "TASK_KILLED") == ["TASK_KILLED"]  # no second TASK_KILLING


# ---- disk limits (docs/services.md, "Disk limits"; this cluster enforces them, measuring every second) -------------

def _with_disk(task: dict, mb: float) -> dict:
    task["resources"].append({"name": "disk", "type": "SCALAR", "scalar": {"value": mb}})
    return task


def _disk_statistics(cluster: Cluster, offer: dict, framework_id: str, tid: str) -> dict | None:
    aid = offer["agent_id"]["value"]
    a = next(a for a in cluster.layout["agents"] if cluster.agent_id(a["id"]) == aid)
    for c in cluster.get(a["http"], "/monitor/statistics.json"):
        if (c["framework_id"], c["executor_id"]) == (framework_id, tid) and "disk_used_bytes" in c["statistics"]:
            return c["statistics"]
    return None


async def test_a_task_writing_more_than_its_disk_fails_with_a_disk_limitation(cluster, subscribe):
    s = await subscribe(capabilities=[{"type": "TASK_KILLING_STATE"}])
    offer = (await s.offers())[0]
    await _launch(s, offer, _with_disk(_task("hog", offer, "dd if=/dev/zero of=big bs=1M count=20; sleep 600",
                                             kill_policy={"grace_period": {"nanoseconds": 1_000_000_000}}), 10))
    assert await _until(s, "hog", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    st = await _update(s, "hog")  # no TASK_KILLING: a limitation, not a kill
    assert (st["state"], st["source"], st["reason"]) == ("TASK_FAILED", "SOURCE_AGENT",
                                                         "REASON_CONTAINER_LIMITATION_DISK"), st
    m = re.fullmatch(r"Disk usage \((\d+(?:\.\d)?)MB\) exceeds quota \(10MB\)", st["message"])
    assert m and 10 < float(m.group(1)) <= 21, st["message"]  # caught while dd wrote, or after
    state = await asyncio.to_thread(cluster.state)
    [task] = [t for f in state["frameworks"] + state.get("completed_frameworks", []) if f["id"] == s.framework_id
              for t in f.get("tasks", []) + f.get("completed_tasks", []) if t["id"] == "hog"]
    assert task["state"] == "TASK_FAILED"


async def test_a_task_within_its_disk_keeps_running_and_its_usage_is_reported(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    await _launch(s, offer, _with_disk(_task("modest", offer, "dd if=/dev/zero of=data bs=1M count=5 && "
                                                                "touch written; sleep 600"), 10))
    assert await _until(s, "modest", "TASK_RUNNING") == ["TASK_STARTING", "TASK_RUNNING"]
    await _wait_file(_sandbox(cluster, offer, s.framework_id, "modest") / "written")
    stats = None
    for _ in range(600):  # measured after the file was written (the sandbox then holds 5 MB and more)
        stats = await asyncio.to_thread(_disk_statistics, cluster, offer, s.framework_id, "modest")
        if stats is not None and stats["disk_used_bytes"] >= 5 * 2**20:
            break
        await asyncio.sleep(0.1)
    assert stats is not None and 5 * 2**20 <= stats["disk_used_bytes"] < 10 * 2**20, stats
    assert stats["disk_limit_bytes"] == 10 * 2**20
    await asyncio.sleep(3)  # a few more measurements (one a second here): still within its disk
    assert (await s.call("KILL", {"task_id": {"value": "modest"}})).status == 202
    assert await _until(s, "modest", "TASK_KILLED") == ["TASK_KILLED"]  # its first update since RUNNING
