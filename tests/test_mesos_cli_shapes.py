"""The Mesos command-line clients against a `drover local`-style cluster (issue 14): the current CLI's `mesos agent
list`, `mesos framework list -a` and `mesos task list -a` (Mesos's src/python/cli_new), and the old CLI's `mesos
state`, `mesos frameworks -i` and `mesos ps` (mesosphere's mesos-cli, PyPI `mesos.cli`).

Neither client can be a test dependency: the current one is not published (it lives in the Mesos source tree only),
and `mesos.cli` 0.1.5 installs from PyPI but is Python 2 code (its first import fails on Python 3 with `NameError:
name 'cfg_name' is not defined`; then `import urlparse`, `itertools.ifilter`, a tuple-parameter lambda, protobuf
2.6.1). (Run by hand outside the repository, the current CLI from a Mesos checkout, and the old one with those
Python 2 spots shimmed, both print the tables the functions below build, against `drover local`.)
So each command is written out below as the reads it makes: the same requests (paths and query parameters), the
same fields taken from the answers, with the types its code relies on, and its table's rows built as it builds
them. Every field a command reads is checked present with that type on a real cluster: an active framework with a
running task, a disconnected (inactive, still registered) framework, and a torn-down framework with a finished
task. Where Drover differs from Mesos in a way a command can see, the test says so."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import aiohttp
import pytest

from tests.cluster import Cluster, running_cluster
from tests.v1client import Scheduler

SLEEP = "sleep 600"


def get(base: str, path: str, query: dict[str, str] | None = None) -> Any:
    """A GET as both CLIs make it (urllib3 / requests: redirects followed), its body read as JSON."""
    url = f"http://{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200, url
        return json.loads(r.read())


def need(obj: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    """The value at `path` ("a.b", "a[-1].b", numbers as list indices) of `obj`, asserted present and of `kind`."""
    cur = obj
    for part in re.findall(r"[^.\[\]]+|\[-?\d+\]", path):
        if part.startswith("["):
            assert isinstance(cur, list) and cur, f"{path}: {part} of {cur!r}"
            cur = cur[int(part[1:-1])]
        else:
            assert isinstance(cur, dict) and part in cur, f"{path}: no {part!r} in {cur!r}"
            cur = cur[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # (a JSON true is not a number, though Python's bool is an int)
    assert isinstance(cur, kinds) and (bool in kinds or not isinstance(cur, bool)), f"{path}: {cur!r} is not {kinds}"
    return cur


NUMBER = (int, float)


# ---- the current Mesos CLI (src/python/cli_new/lib/cli) ------------------------------------------------------
# Its requests are made by lib/cli/http.py (urllib3 GET of `<master>/<endpoint>`, the query urlencoded) and its
# readers are in lib/cli/mesos.py: get_agents (`slaves`, key "slaves"), get_frameworks (`master/frameworks/`, key
# "frameworks") and get_tasks (`tasks` with order=asc and limit=-1, key "tasks"); a missing key is an error.


def agent_list(master: str) -> list[list[str]]:
    """`mesos agent list` (plugins/agent/main.py): a table of each agent's id, hostname and `active` (as str);
    other commands find an agent's address in its `pid`, after the '@' (mesos.py, get_agent_address)."""
    agents = need(get(master, "/slaves"), "slaves", list)
    rows = []
    for i in range(len(agents)):
        rows.append([need(agents, f"[{i}].id", str), need(agents, f"[{i}].hostname", str),
                     str(need(agents, f"[{i}].active", bool))])
        assert need(agents, f"[{i}].pid", str).split("@")[1].count(":") == 1
    return rows


def framework_list(master: str, all_: bool) -> list[list[str]]:
    """`mesos framework list [-a]` (plugins/framework/main.py): the `frameworks` of `master/frameworks/` (a trailing
    slash, which libprocess drops), those not `active` only with -a; a table of id, active, hostname and name.
    (`completed_frameworks` is not read: torn-down frameworks are not listed, with -a neither, as with Mesos.)"""
    fws = need(get(master, "/master/frameworks/"), "frameworks", list)
    rows = []
    for i in range(len(fws)):
        if not all_ and not need(fws, f"[{i}].active", bool):
            continue
        rows.append([need(fws, f"[{i}].id", str), "True" if need(fws, f"[{i}].active", bool) else "False",
                     need(fws, f"[{i}].hostname", str), need(fws, f"[{i}].name", str)])
    return rows


def task_list(master: str, all_: bool) -> list[list[str]]:
    """`mesos task list [-a]` (plugins/task/main.py): every task of `/tasks?order=asc&limit=-1`; its state is its
    last status's (UNKNOWN without one), only TASK_RUNNING ones without -a; a table of id, state, framework id and
    executor id. (`task inspect`/`exec` also read statuses[0].container_status.container_id.value.)"""
    tasks = need(get(master, "/tasks", {"order": "asc", "limit": "-1"}), "tasks", list)
    rows = []
    for i in range(len(tasks)):
        state = "UNKNOWN"
        if need(tasks, f"[{i}].statuses", list):
            state = need(tasks, f"[{i}].statuses[-1].state", str)
        if not all_ and state != "TASK_RUNNING":
            continue
        rows.append([need(tasks, f"[{i}].id", str), state, need(tasks, f"[{i}].framework_id", str),
                     need(tasks, f"[{i}].executor_id", str)])
    return rows


# ---- the old CLI (mesosphere/mesos-cli 0.1.5, package mesos/cli) ----------------------------------------------
# master.py reads `/master/state.json` (requests, redirects followed) for everything; an agent (slave.py) is asked
# at `http://<hostname>:<the port of its pid>` for `/slave(1)/state.json` and `/monitor/statistics.json`.


def mesos_state(master: str, agent_filter: str | None = None) -> Any:
    """`mesos state [AGENT]` (cmds/state.py): the master's state as is, or the state of each agent whose id
    contains AGENT (slave.py: the address from `hostname` and `pid`)."""
    state = get(master, "/master/state.json")
    if agent_filter is None:
        return state
    return [get(agent_address(a), "/slave(1)/state.json")
            for a in need(state, "slaves", list) if agent_filter in need(a, "id", str)]


def agent_address(agent: dict) -> str:
    return f"{need(agent, 'hostname', str)}:{need(agent, 'pid', str).split(':')[-1]}"


def framework_rows(state: dict, inactive: bool) -> list[dict]:
    """master.py's frameworks(): `frameworks`, and with -i (not active_only) `completed_frameworks` too."""
    fws = list(need(state, "frameworks", list))
    if inactive:
        fws += need(state, "completed_frameworks", list)
    return fws


def mesos_frameworks(master: str, inactive: bool) -> list[list[Any]]:
    """`mesos frameworks [-i]` (cmds/frameworks.py, framework.py): id, name, hostname, active, the number of
    `tasks`, and `resources` cpus, mem and disk."""
    rows = []
    for fw in framework_rows(get(master, "/master/state.json"), inactive):
        rows.append([need(fw, "id", str), need(fw, "name", str), need(fw, "hostname", str), need(fw, "active", bool),
                     len(need(fw, "tasks", list)), need(fw, "resources.cpus", NUMBER),
                     need(fw, "resources.mem", NUMBER), need(fw, "resources.disk", NUMBER)])
    return rows


def mesos_ps(master: str, inactive: bool) -> list[list[Any]]:
    """`mesos ps [-i]` (cmds/ps.py, task.py, slave.py): the `tasks` of each framework (with -i `completed_tasks`
    too, and completed frameworks'); for each, its agent (the one `slaves` entry whose id contains the task's
    `slave_id`), the executor on that agent whose tasks, completed_tasks or queued_tasks have the task's id (across
    the agent's frameworks and completed_frameworks, executors and completed_executors), that executor's
    statistics (by `executor_id`), and its framework's `user`. Row: cpu time, state's initial, rss, cpu limit,
    %mem (rss over the task's resources.mem), the command in the executor's name, user, id."""
    state = get(master, "/master/state.json")
    fws = framework_rows(state, inactive)
    users = {need(fw, "id", str): need(fw, "user", str) for fw in framework_rows(state, True)}
    rows = []
    for fw in fws:
        tasks = list(need(fw, "tasks", list)) + (need(fw, "completed_tasks", list) if inactive else [])
        for t in tasks:
            agents = [a for a in need(state, "slaves", list) if need(t, "slave_id", str) in need(a, "id", str)]
            assert len(agents) == 1, f"{t['id']}: its agent is one of {state['slaves']}"
            agent_state = get(agent_address(agents[0]), "/slave(1)/state.json")
            executor = None
            for afw in need(agent_state, "frameworks", list) + need(agent_state, "completed_frameworks", list):
                for ex in need(afw, "executors", list) + need(afw, "completed_executors", list):
                    ids = [need(x, "id", str) for key in ("completed_tasks", "tasks", "queued_tasks")
                           for x in need(ex, key, list)]
                    if need(t, "id", str) in ids:
                        executor = ex
            stats: dict = {}
            command = "none"
            if executor is not None:
                need(executor, "directory", str)  # `mesos ls`/`cat` read sandboxes there
                for s in get(agent_address(agents[0]), "/monitor/statistics.json"):
                    if need(s, "executor_id", str) == need(executor, "id", str):
                        stats = need(s, "statistics", dict)
                        break
                m = re.search(r"\(Command: (.+)\)", need(executor, "name", str))
                command = m.group(1) if m else "none"
            for key in ("cpus_user_time_secs", "cpus_system_time_secs", "cpus_limit", "mem_limit_bytes",
                        "mem_rss_bytes"):
                if stats:
                    need(stats, key, NUMBER)
            secs = stats.get("cpus_user_time_secs", 0) + stats.get("cpus_system_time_secs", 0)
            max_mem = need(t, "resources.mem", NUMBER) * 1024 * 1024
            rss = stats.get("mem_rss_bytes", 0)
            rows.append([str(datetime.timedelta(seconds=secs)).rsplit(".", 1)[0],
                         need(t, "state", str).split("_")[-1][0], rss, stats.get("cpus_limit", 0),
                         f"{rss / max_mem * 100:.2f}" if max_mem > 0 else "0", command,
                         users[need(t, "framework_id", str)], need(t, "id", str)])
    return rows


# ---- the cluster ------------------------------------------------------------------------------------------------


def execute(c: Cluster, name: str, command: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drover.cli", "execute", "--master", c.leader_endpoint(),
                             "--name", name, "--command", command, "--timeout", "900"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


async def leave_inactive(master: str) -> str:
    """A framework that subscribes (with a failover timeout) and goes away: registered, not active."""
    async with aiohttp.ClientSession() as http:
        s = await Scheduler(http, master, name="gone-quiet", failover_timeout=3600.0).subscribe()
        await s.close()
        assert s.framework_id is not None
        return s.framework_id


def wait_for(what, timeout: float = 90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if got := what():
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("mesoscli") / "cluster") as c:
        master = c.leader_endpoint()
        done = execute(c, "finished", "echo done")
        out, _ = done.communicate(timeout=120)
        assert done.returncode == 0, out  # ran to its end, then tore the framework down
        sleeper = execute(c, "sleeper", SLEEP)
        try:
            quiet = asyncio.run(leave_inactive(master))

            def ready() -> bool:
                """the sleeper's task running, the quiet framework inactive"""
                fws = get(master, "/frameworks")["frameworks"]
                running = [t for fw in fws for t in fw["tasks"] if t["state"] == "TASK_RUNNING"]
                return bool(running) and any(fw["id"] == quiet and not fw["active"] for fw in fws)

            wait_for(ready)
            yield c, master, quiet
        finally:
            sleeper.kill()
            sleeper.wait()


def test_agent_list(env):
    c, master, _ = env
    rows = agent_list(master)
    assert sorted(r[1:] for r in rows) == [["127.0.0.1", "True"]] * len(c.layout["agents"])
    ids = {a["id"] for a in get(master, "/master/state")["slaves"]}
    assert {r[0] for r in rows} == ids


def test_framework_list_all(env):
    _, master, quiet = env
    running = framework_list(master, all_=False)
    every = framework_list(master, all_=True)
    names = {r[3]: r for r in every}
    assert set(names) == {"sleeper", "gone-quiet"}  # the torn-down "finished" is not in `frameworks`
    assert names["sleeper"][1] == "True" and names["gone-quiet"] == [quiet, "False", "", "gone-quiet"]
    assert [r[3] for r in running] == ["sleeper"]


def test_task_list_all(env):
    _, master, _ = env
    every = {r[0]: r for r in task_list(master, all_=True)}
    assert every["finished-0"][1] == "TASK_FINISHED" and every["sleeper-0"][1] == "TASK_RUNNING"
    assert [r[0] for r in task_list(master, all_=False)] == ["sleeper-0"]
    fws = {fw["name"]: fw["id"] for fw in get(master, "/master/state")["frameworks"]}
    assert every["sleeper-0"][2] == fws["sleeper"] and every["sleeper-0"][3] == ""  # a command task: no executor
    # get_tasks asks for every task, oldest first: more than /tasks' default 100 would be cut without the -1
    assert list(every) == ["finished-0", "sleeper-0"]


def test_mesos_state(env):
    c, master, _ = env
    state = mesos_state(master)
    for key, kind in [("slaves", list), ("frameworks", list), ("completed_frameworks", list), ("id", str),
                      ("pid", str), ("hostname", str), ("version", str), ("leader", str)]:
        need(state, key, kind)
    agent_id = state["slaves"][0]["id"]
    (agent,) = mesos_state(master, agent_id)
    assert need(agent, "id", str) == agent_id
    need(agent, "frameworks", list)
    need(agent, "completed_frameworks", list)


def test_mesos_frameworks_inactive(env):
    _, master, quiet = env
    every = {r[1]: r for r in mesos_frameworks(master, inactive=True)}
    assert set(every) == {"sleeper", "gone-quiet", "finished"}
    sleeper = every["sleeper"]
    assert sleeper[3] is True and sleeper[4] == 1 and sleeper[5] == pytest.approx(0.1) and sleeper[6] == 32.0
    assert every["finished"][3] is False and every["finished"][4] == 0  # its task is among its completed_tasks
    assert every["gone-quiet"][0] == quiet and every["gone-quiet"][3] is False
    assert {r[1] for r in mesos_frameworks(master, inactive=False)} == {"sleeper", "gone-quiet"}


def test_mesos_ps(env):
    _, master, _ = env
    (row,) = mesos_ps(master, inactive=False)
    time_, state, rss, cpu, mem, command, user, tid = row
    assert (state, command, user, tid) == ("R", f"sh -c '{SLEEP}'", "root", "sleeper-0")
    assert cpu == pytest.approx(0.1) and re.fullmatch(r"\d+:\d\d:\d\d", time_)
    assert rss > 0 and 0 < float(mem) < 100  # the statistics of its executor were found
    every = {r[-1]: r for r in mesos_ps(master, inactive=True)}
    assert set(every) == {"sleeper-0", "finished-0"}
    # a finished task: its executor is found among the agent's completed ones; no statistics any more
    assert every["finished-0"][1] == "F" and every["finished-0"][5] == "sh -c 'echo done'"
    assert every["finished-0"][2] == 0
