"""Health checks and checks on a real cluster (master replicas, agents, Podman; no mocks), through the v1 scheduler
API: HTTP, TCP and COMMAND health checks (healthy updates; a failing one gets its task killed), an HTTP health check
of a bridge-network task (probed in its network namespace), a general check reporting its results' changes, and a
health-checked task that goes on being checked after its agent is killed with -9 and restarted. docs/services.md,
"Health checks and checks"."""

from __future__ import annotations

import asyncio
from typing import Callable, Iterator

import pytest

from tests.cluster import Cluster, running_cluster
from tests.netutil import fetch
from tests.test_services import IMAGE, _launch, _port_in, _sandbox, _task, _wait_file
from tests.v1client import Scheduler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HEALTH = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
CHECK = "REASON_TASK_CHECK_STATUS_UPDATED"
QUICK = {"delay_seconds": 0.0, "interval_seconds": 1.0, "timeout_seconds": 5.0}
ONE_SECOND = {"grace_period": {"nanoseconds": 1_000_000_000}}
TERMINAL = ("TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_FINISHED", "TASK_KILLED", "TASK_DROPPED")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("health") / "cluster") as c:
        yield c


FRAMEWORK_NAME = "health"


class Updates:
    """A task's updates as its framework sees them: each acknowledged once (retries of one uuid are dropped)."""

    def __init__(self, s: Scheduler, tid: str):
        self.s, self.tid, self.seen, self._uuids = s, tid, [], set()

    async def next(self) -> dict:
        while True:
            st = await self.s.update(self.tid)
            if "uuid" in st:
                r = await self.s.call("ACKNOWLEDGE", {"agent_id": st["agent_id"], "task_id": st["task_id"],
                                                      "uuid": st["uuid"]})
                assert r.status == 202, r
                if st["uuid"] in self._uuids:
                    continue
                self._uuids.add(st["uuid"])
            self.seen.append(st)
            return st

    async def until(self, done: Callable[[dict], bool], terminal_ok: bool = False) -> dict:
        while True:
            st = await self.next()
            if done(st):
                return st
            assert terminal_ok or st["state"] not in TERMINAL, (st, self.states())

    def states(self) -> list[tuple]:
        return [(st["state"], st.get("healthy"), st.get("reason")) for st in self.seen]


def _healthy(value: bool) -> Callable[[dict], bool]:
    return lambda st: st["state"] == "TASK_RUNNING" and st.get("healthy") is value


async def test_an_http_health_check_reports_a_web_service_healthy(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    hc = {"type": "HTTP", "http": {"port": port, "path": "/index.html"}, "grace_period_seconds": 30.0, **QUICK}
    await _launch(s, offer, _task("web", offer, f"echo up > index.html && exec httpd -f -p {port} -h .", [port],
                                  health_check=hc))
    u = Updates(s, "web")
    healthy = await u.until(_healthy(True))
    assert healthy["reason"] == HEALTH and healthy["source"] == "SOURCE_EXECUTOR"
    assert "container_status" in healthy  # the last status's fields are kept
    assert [st["state"] for st in u.seen] == ["TASK_STARTING", "TASK_RUNNING", "TASK_RUNNING"]
    assert "healthy" not in u.seen[1]  # TASK_RUNNING itself comes before any result
    status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
    assert (status, body.strip()) == (200, "up")
    # The master shows the health check and the health, as Mesos renders them.
    state = await asyncio.to_thread(cluster.state)
    [task] = [t for f in state["frameworks"] if f["id"] == s.framework_id for t in f["tasks"]]
    assert task["health_check"]["http"] == {"port": port, "path": "/index.html", "scheme": "http",
                                            "protocol": "IPv4"}
    assert task["health_check"]["consecutive_failures"] == 3 and task["statuses"][-1]["healthy"] is True
    assert (await s.call("KILL", {"task_id": {"value": "web"}})).status == 202
    killed = await u.until(lambda st: st["state"] == "TASK_KILLED", terminal_ok=True)
    assert "healthy" not in killed and killed.get("reason") != HEALTH  # killed by its framework, not its health


async def test_a_failing_command_health_check_gets_its_task_killed(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    hc = {"type": "COMMAND", "command": {"value": "test -f ok"}, "consecutive_failures": 2,
          "grace_period_seconds": 30.0, **QUICK}
    # healthy while `ok` exists; the task removes it once its health was reported (the file `reported`)
    cmd = "touch ok; while [ ! -f reported ]; do sleep 0.2; done; rm ok; sleep 300"
    await _launch(s, offer, _task("sick", offer, cmd, health_check=hc, kill_policy=ONE_SECOND))
    u = Updates(s, "sick")
    await u.until(_healthy(True))
    (_sandbox(cluster, offer, s.framework_id, "sick") / "reported").touch()
    killed = await u.until(lambda st: st["state"] == "TASK_KILLED", terminal_ok=True)
    assert u.states()[2:] == [("TASK_RUNNING", True, HEALTH), ("TASK_RUNNING", False, HEALTH),
                              ("TASK_RUNNING", False, HEALTH), ("TASK_KILLED", False, HEALTH)]
    assert killed["source"] == "SOURCE_EXECUTOR"
    assert "COMMAND health check failed 2 consecutive times" in killed["message"]
    assert "Command exited with status 1" in killed["message"]


async def test_a_tcp_health_check_and_an_http_check_reporting_its_changes(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    hc = {"type": "TCP", "tcp": {"port": port}, **QUICK}
    check = {"type": "HTTP", "http": {"port": port, "path": "/index.html"}, **QUICK}
    cmd = (f"echo up > index.html; httpd -p {port} -h .; while [ ! -f reported ]; do sleep 0.2; done; "
           "rm index.html; sleep 300")
    await _launch(s, offer, _task("both", offer, cmd, [port], health_check=hc, check=check))
    u = Updates(s, "both")
    running = await u.until(lambda st: st["state"] == "TASK_RUNNING")
    # every status of a checked task carries a check status, empty before its first result (as Mesos's)
    assert running["check_status"] == {"type": "HTTP", "http": {}}
    await u.until(lambda st: st.get("check_status", {}).get("http", {}).get("status_code") == 200)
    if not any(st.get("healthy") for st in u.seen):
        await u.until(_healthy(True))
    (_sandbox(cluster, offer, s.framework_id, "both") / "reported").touch()
    changed = await u.until(lambda st: st.get("reason") == CHECK
                            and st["check_status"]["http"].get("status_code") == 404)
    assert changed["state"] == "TASK_RUNNING" and changed["healthy"] is True  # the health goes along
    reasons = [st.get("reason") for st in u.seen[2:]]
    assert sorted(reasons) == [CHECK, CHECK, HEALTH], u.states()  # one healthy, two changes: no repeats
    assert (await s.call("KILL", {"task_id": {"value": "both"}})).status == 202
    killed = await u.until(lambda st: st["state"] == "TASK_KILLED", terminal_ok=True)
    assert killed["check_status"] == {"type": "HTTP", "http": {}}


async def test_a_bridge_tasks_http_health_check_is_probed_in_its_network_namespace(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    port = _port_in(offer)
    container = {"type": "DOCKER", "docker": {"image": IMAGE, "network": "BRIDGE", "port_mappings": [
        {"host_port": port, "container_port": 80, "protocol": "tcp"}]}}
    # port 80 of the task's own namespace: 127.0.0.1:80 exists only there
    hc = {"type": "HTTP", "http": {"port": 80, "path": "/index.html"}, "grace_period_seconds": 30.0, **QUICK}
    await _launch(s, offer, _task("bridged", offer, "echo up > index.html && exec httpd -f -p 80 -h .", [port],
                                  container=container, health_check=hc))
    u = Updates(s, "bridged")
    await u.until(_healthy(True))
    status, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/index.html")
    assert (status, body.strip()) == (200, "up")
    assert (await s.call("KILL", {"task_id": {"value": "bridged"}})).status == 202
    await u.until(lambda st: st["state"] == "TASK_KILLED", terminal_ok=True)


async def test_a_health_checked_task_is_still_checked_after_its_agent_is_killed_and_restarted(cluster, subscribe):
    s = await subscribe()
    offer = (await s.offers())[0]
    hc = {"type": "COMMAND", "command": {"value": "test -f ok"}, "consecutive_failures": 2,
          "grace_period_seconds": 30.0, **QUICK}
    await _launch(s, offer, _task("kept", offer, "touch ok; sleep 300", health_check=hc, kill_policy=ONE_SECOND))
    u = Updates(s, "kept")
    await u.until(_healthy(True))
    sandbox = _sandbox(cluster, offer, s.framework_id, "kept")
    await _wait_file(sandbox / "ok")
    name = next(a["id"] for a in cluster.layout["agents"] if cluster.agent_id(a["id"]) == offer["agent_id"]["value"])
    cluster.kill(name)  # kill -9; the task's container lives on
    cluster.start_agent(name)
    for _ in range(300):  # re-registered with its old id
        st = await asyncio.to_thread(cluster.agent_state, name)
        if st and st.get("master") and st["id"] == offer["agent_id"]["value"]:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the agent did not re-register")
    # The recovered checker remembers the task is healthy (no second `healthy: true`) and still checks it.
    await asyncio.sleep(2)
    (sandbox / "ok").unlink()
    killed = await u.until(lambda st: st["state"] == "TASK_KILLED", terminal_ok=True)
    assert u.states()[2:] == [("TASK_RUNNING", True, HEALTH), ("TASK_RUNNING", False, HEALTH),
                              ("TASK_RUNNING", False, HEALTH), ("TASK_KILLED", False, HEALTH)]
    assert "failed 2 consecutive times" in killed["message"]
