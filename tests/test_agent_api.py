"""The agent's HTTP API on real processes: a `--secure` cluster (one master, one agent with `--acls`, Podman) and
a long-running task; `drover task log/exec`, the files endpoints, statistics, GET_STATE/GET_CONTAINERS, and the
refusals (outside the sandbox, ACLs). Principals: `drover` (sees and may do everything), `mallory` (authenticated,
but the agent's ACLs deny it every sandbox and session), `eve` (may see no framework, task or flag)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from drover.security import files
from drover.security.credentials import Credential
from tests.cluster import MASTER_ARGS, Cluster

NONE = {"type": "NONE"}
LOOP = "i=0; while true; do echo out$i; echo err$i >&2; i=$((i+1)); sleep 0.3; done"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("agentapi") / "cluster"
    data.mkdir(parents=True)
    acls = data / "agent-acls.json"
    deny = [{"principals": {"values": ["mallory"]}, "users": NONE}]
    fd = os.open(acls, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_sandboxes": deny, "launch_nested_container_sessions": deny,
                   "view_frameworks": [{"principals": {"values": ["eve"]}, "users": NONE}],
                   "view_tasks": [{"principals": {"values": ["eve"]}, "users": NONE}],
                   "view_flags": [{"principals": {"values": ["eve"]}, "flags": NONE}]}, f)
    c = Cluster(data_dir=data, masters=1, agents=1, master_args=list(MASTER_ARGS), secure=True,
                extra_principals=("mallory", "eve"), agent_args=["--acls", str(acls)])
    c.start()
    fw = None
    try:
        c.wait_leader()
        c.wait_agents()
        cred = c.data_dir / "credentials.json"
        fw = subprocess.Popen([sys.executable, "-m", "drover.cli", "execute", "--master", c.layout["leader"],
                               "--command", LOOP, "--user", "nobody", "--timeout", "600", "--credentials", str(cred)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tid = wait_task(c)
        yield c, tid
    finally:
        if fw is not None:
            fw.kill()
            fw.wait()
        c.stop()


def creds(c: Cluster) -> dict[str, Credential]:
    return {e.principal: e for e in files.load_credentials(c.data_dir / "credentials.json").entries}


def http(addr: str, path: str, who: Credential | None, body: dict | None = None,
         timeout: float = 30.0) -> tuple[int, bytes]:
    h = {"Authorization": who.basic_header()} if who else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://{addr}{path}", data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_task(c: Cluster, timeout: float = 60.0) -> str:
    good = creds(c)["drover"]
    agent = c.layout["agents"][0]["http"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        st, body = http(agent, "/state", good)
        if st == 200:
            running = [t for t in json.loads(body)["tasks"] if t["state"] == "TASK_RUNNING"]
            if running:
                return running[0]["task_id"]
        time.sleep(0.3)
    raise AssertionError("the task did not start")


def drover(c: Cluster, *args: str, principal: str = "drover", timeout: float = 60.0) -> subprocess.CompletedProcess:
    who = creds(c)[principal]
    sub, rest = args[0], args[1:]  # the flags before TASK: after `--` everything is the command's
    return subprocess.run([sys.executable, "-m", "drover.cli", "task", sub, "--master", c.layout["leader"],
                           "--principal", who.principal, "--secret", who.secret, *rest],
                          capture_output=True, text=True, timeout=timeout)


def executor(c: Cluster, tid: str) -> dict:
    st, body = http(c.layout["agents"][0]["http"], "/state", creds(c)["drover"])
    assert st == 200
    state = json.loads(body)
    return next(ex for fw in state["frameworks"] for ex in fw["executors"] if ex["id"] == tid)


def test_state_is_mesos_shaped(env):
    c, tid = env
    agent = c.layout["agents"][0]["http"]
    for path in ("/state", "/state.json", "/slave(1)/state", "/slave(1)/state.json"):
        st, body = http(agent, path, creds(c)["drover"])
        assert st == 200
        state = json.loads(body)
        assert state["id"] == c.agent_id("a1") and state["pid"] == f"slave(1)@{agent}"
        assert state["hostname"] == "127.0.0.1" and state["master"]
        assert state["resources"]["cpus"] == 2.0 and state["resources"]["ports"] == "[31000-32000]"
        fw = state["frameworks"][0]
        assert fw["user"] == "nobody"
        ex = next(ex for ex in fw["executors"] if ex["id"] == tid)
        assert ex["directory"].endswith(f"/sandboxes/{fw['id']}/{tid}") and ex["container"]
        assert ex["tasks"][0]["id"] == tid and ex["tasks"][0]["state"] == "TASK_RUNNING"
        assert "flags" in state
    st, body = http(agent, "/api/v1", creds(c)["drover"], {"type": "GET_STATE"})
    assert st == 200
    got = json.loads(body)["get_state"]
    assert [t["task_id"]["value"] for t in got["get_tasks"]["launched_tasks"]] == [tid]
    assert got["get_frameworks"]["frameworks"][0]["framework_info"]["user"] == "nobody"


def test_files_read_browse_download(env):
    c, tid = env
    agent, good = c.layout["agents"][0]["http"], creds(c)["drover"]
    box = executor(c, tid)["directory"]
    q = urllib.parse.quote
    st, body = http(agent, f"/files/browse.json?path={q(box)}", good)
    assert st == 200 and {"stdout", "stderr"} <= {e["path"].rsplit("/", 1)[1] for e in json.loads(body)}
    # The task prints as it runs: it may not have yet when this test starts (TASK_RUNNING comes first)
    deadline = time.time() + 30
    while True:
        st, body = http(agent, f"/files/read.json?path={q(box + '/stdout')}&offset=-1", good)
        size = json.loads(body)["offset"] if st == 200 else 0
        if size > 0 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert st == 200 and size > 0
    st, body = http(agent, f"/files/read.json?path={q(box + '/stdout')}&offset=0&length=4", good)
    assert (st, json.loads(body)["data"], json.loads(body)["offset"]) == (200, "out0", 0)
    st, body = http(agent, f"/files/download?path={q(box + '/stderr')}", good)
    assert st == 200 and body.startswith(b"err0\n")
    # hostile requests: 4xx, never 500
    for path, want in ((f"/files/read.json?path={q(box + '/../../../meta/agent.json')}", 404),
                       ("/files/read.json?path=/etc/passwd", 404), ("/files/download?path=/etc/shadow", 404),
                       (f"/files/browse.json?path={q(box + '/../..')}", 404),
                       (f"/files/read.json?path={q(box + '/nope')}&offset=0", 404),
                       (f"/files/read.json?path={q(box + '/stdout')}&offset=x", 400),
                       (f"/files/read.json?path={q(box + '/stdout')}&offset=-5", 400),
                       (f"/files/read.json?path={q(box)}&offset=0", 400),
                       ("/files/read.json", 400), ("/files/read.json?path=stdout", 400)):
        assert http(agent, path, good)[0] == want, path


def test_task_log_and_follow(env):
    c, tid = env
    deadline = time.time() + 60
    while True:  # the task writes a line every 0.3 s from when it runs: wait for its second
        r = drover(c, "log", tid)
        assert r.returncode == 0, r.stderr
        if r.stdout.count("\n") >= 2 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert r.stdout.startswith("out0\nout1\n")
    r = drover(c, "log", tid, "--stream", "stderr")
    assert r.returncode == 0 and r.stdout.startswith("err0\n")
    who = creds(c)["drover"]
    before = drover(c, "log", tid).stdout.count("\n")
    p = subprocess.Popen([sys.executable, "-m", "drover.cli", "task", "log", tid, "--follow", "--master",
                          c.layout["leader"], "--principal", who.principal, "--secret", who.secret],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while len(lines) < before + 5:  # lines written after it started: it follows
            line = p.stdout.readline()
            assert line, p.stderr.read()
            lines.append(line)
        assert lines[:3] == ["out0\n", "out1\n", "out2\n"]
        assert lines[-1] == f"out{len(lines) - 1}\n"
    finally:
        p.kill()
        p.wait()


def test_task_exec_runs_as_the_tasks_user_and_returns_its_status(env):
    c, tid = env
    r = drover(c, "exec", tid, "--", "id", "-u")
    assert (r.returncode, r.stdout) == (0, "65534\n"), r.stderr
    r = drover(c, "exec", tid, "--", "sh", "-c", "cat stdout | head -1; echo oops >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out0\n", "oops\n")
    r = drover(c, "exec", tid, "--", "/no/such/command")
    assert r.returncode != 0


def test_statistics_of_a_running_task(env):
    c, tid = env
    agent, good = c.layout["agents"][0]["http"], creds(c)["drover"]
    st, body = http(agent, "/monitor/statistics.json", good)
    assert st == 200
    entry = next(e for e in json.loads(body) if e["executor_id"] == tid)
    s = entry["statistics"]
    assert s["cpus_limit"] == pytest.approx(0.1) and s["mem_limit_bytes"] == 32 * 1024 * 1024
    assert s["mem_rss_bytes"] > 0 and s["cpus_user_time_secs"] + s["cpus_system_time_secs"] > 0
    assert s["timestamp"] > 0
    st, body = http(agent, "/api/v1", good, {"type": "GET_CONTAINERS"})
    assert st == 200
    cont = json.loads(body)["get_containers"]["containers"]
    assert cont[0]["executor_id"]["value"] == tid and "resource_statistics" in cont[0]


def test_refusals(env):
    c, tid = env
    agent = c.layout["agents"][0]["http"]
    mallory = creds(c)["mallory"]
    box = executor(c, tid)["directory"]
    q = urllib.parse.quote
    assert http(agent, f"/files/read.json?path={q(box + '/stdout')}&offset=0", None)[0] == 401
    assert http(agent, f"/files/read.json?path={q(box + '/stdout')}&offset=0", mallory)[0] == 403
    assert http(agent, f"/files/browse.json?path={q(box)}", mallory)[0] == 403
    assert http(agent, f"/files/download?path={q(box + '/stdout')}", mallory)[0] == 403
    session = {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
        "container_id": {"parent": {"value": executor(c, tid)["container"]}, "value": "s1"},
        "command": {"shell": True, "value": "id"}}}
    assert http(agent, "/api/v1", mallory, session)[0] == 403
    r = drover(c, "log", tid, principal="mallory")
    assert r.returncode == 2 and "403" in r.stderr, r.stderr
    r = drover(c, "exec", tid, "--", "id", principal="mallory")
    assert r.returncode == 2 and "403" in r.stderr, r.stderr
    # hostile calls: 4xx
    good = creds(c)["drover"]
    for body in ({"type": "LAUNCH_NESTED_CONTAINER_SESSION"}, {"type": "NOPE"}, {"x": 1},
                 {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
                     "container_id": {"parent": {"value": "nope"}, "value": "s2"},
                     "command": {"value": "id"}}},
                 {"type": "WAIT_NESTED_CONTAINER", "wait_nested_container": {
                     "container_id": {"parent": {"value": executor(c, tid)["container"]}, "value": "never"}}}):
        assert 400 <= http(agent, "/api/v1", good, body)[0] < 500, body


def test_state_views_follow_view_acls(env):
    c, tid = env
    agent, eve = c.layout["agents"][0]["http"], creds(c)["eve"]
    st, body = http(agent, "/state", eve)
    state = json.loads(body)
    assert st == 200 and state["id"] == c.agent_id("a1")
    assert state["frameworks"] == state["completed_frameworks"] == state["tasks"] == []
    assert "flags" not in state
    st, body = http(agent, "/api/v1", eve, {"type": "GET_STATE"})
    assert st == 200 and json.loads(body)["get_state"] == {"get_tasks": {}, "get_executors": {}, "get_frameworks": {}}
    st, body = http(agent, "/api/v1", eve, {"type": "GET_CONTAINERS"})
    assert (st, json.loads(body)["get_containers"]) == (200, {})
    assert json.loads(http(agent, "/monitor/statistics.json", eve)[1]) == []
    session = {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
        "container_id": {"parent": {"value": executor(c, tid)["container"]}, "value": "s3"},
        "command": {"shell": True, "value": "id"}}}
    assert http(agent, "/api/v1", eve, session)[0] == 404  # a container it may not see is not there


def test_task_log_and_exec_over_tls(tmp_path):
    """`drover task` verifies the master and the agent against --tls-ca (every port HTTPS)."""
    c = Cluster(data_dir=tmp_path / "cluster", masters=1, agents=1, master_args=list(MASTER_ARGS), tls=True)
    c.start()
    fw = None
    try:
        c.wait_leader()
        c.wait_agents()
        ca = c.layout["tls_ca"]
        fw = subprocess.Popen([sys.executable, "-m", "drover.cli", "execute", "--master", c.layout["leader"],
                               "--command", "echo hello; sleep 600", "--timeout", "600", "--tls-ca", ca],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        tid = None
        while tid is None and time.time() < deadline:
            running = [t for t in c.agent_state("a1")["tasks"] if t["state"] == "TASK_RUNNING"]
            tid = running[0]["task_id"] if running else None
            time.sleep(0.3)
        assert tid is not None

        def task(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "drover.cli", "task", *args], capture_output=True,
                                  text=True, timeout=60)

        r = task("log", tid, "--master", c.layout["leader"], "--tls-ca", ca)
        assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
        r = task("exec", "--master", c.layout["leader"], "--tls-ca", ca, tid, "--", "cat", "stdout")
        assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
        r = task("log", tid, "--master", c.layout["leader"])  # plain HTTP to an HTTPS port
        assert r.returncode == 2 and "Traceback" not in r.stderr
    finally:
        if fw is not None:
            fw.kill()
            fw.wait()
        c.stop()


def test_hostile_requests_get_4xx(env):
    c, tid = env
    agent, good = c.layout["agents"][0]["http"], creds(c)["drover"]
    box = executor(c, tid)["directory"]
    q = urllib.parse.quote

    def post(data: bytes, ctype: str | None) -> int:
        h = {"Authorization": good.basic_header()}
        if ctype is not None:
            h["Content-Type"] = ctype
        req = urllib.request.Request(f"http://{agent}/api/v1", data=data, headers=h, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post(b'{"type": "GET_STATE"}', "text/plain") == 415
    assert post(b"not json", "application/json") == 400
    assert post(b"[" * 100_000 + b"]" * 100_000, "application/json") in (400, 413)
    assert post(b" " * 300_000, "application/json") == 413
    assert post(b'{"type": 5}', "application/json") == 400
    for path in (f"/files/read.json?path={q(box + '/stdout')}&offset={'9' * 40}",
                 f"/files/read.json?path={q(box + '/stdout')}&offset=0&length=-7",
                 f"/files/read.json?path={q(box)}%00x&offset=0",
                 f"/files/read.json?path=/{'a' * 5000}",
                 f"/files/browse.json?path={q(box + '/stdout/..')}x"):
        assert 400 <= http(agent, path, good)[0] < 500, path
    st, body = http(agent, f"/files/read.json?path={q(box + '/stdout')}&offset=0&length={10 ** 18}", good)
    assert st == 200 and len(json.loads(body)["data"]) <= 64 * 1024  # bounded, whatever was asked


def test_a_session_whose_client_goes_away_is_killed(env):
    c, tid = env
    agent, good = c.layout["agents"][0]["http"], creds(c)["drover"]
    parent = executor(c, tid)["container"]
    marker = "sleep 4321"
    call = {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
        "container_id": {"parent": {"value": parent}, "value": "abandoned"},
        "command": {"shell": True, "value": f"echo started; exec {marker}"}}}
    req = urllib.request.Request(f"http://{agent}/api/v1", data=json.dumps(call).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": good.basic_header()})
    r = urllib.request.urlopen(req, timeout=30)
    assert b"DATA" in r.read(40)  # it runs
    assert marker in drover(c, "exec", tid, "--", "ps").stdout
    r.close()  # the client goes away
    deadline = time.time() + 30
    while marker in drover(c, "exec", tid, "--", "ps").stdout:
        assert time.time() < deadline, "the abandoned session still runs"
    st, body = http(agent, "/api/v1", good, {"type": "WAIT_NESTED_CONTAINER", "wait_nested_container": {
        "container_id": {"parent": {"value": parent}, "value": "abandoned"}}})
    assert (st, json.loads(body)["wait_nested_container"]["exit_status"]) == (200, (128 + 9) << 8)  # SIGKILL


def test_task_cli_errors_are_one_line(env):
    c, tid = env
    for args, says in ((("log", "no-such-task"), "no task 'no-such-task'"),
                       (("log", tid, "--framework", "other"), "no task"),
                       (("exec", tid), "expected the command to run after --"),
                       (("exec", tid, "--"), "expected the command to run after --")):
        r = drover(c, *args)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = drover(c, "log", tid, "--framework", executor_framework(c, tid))
    assert r.returncode == 0 and r.stdout.startswith("out0\n")


def executor_framework(c: Cluster, tid: str) -> str:
    st, body = http(c.layout["agents"][0]["http"], "/state", creds(c)["drover"])
    return next(fw["id"] for fw in json.loads(body)["frameworks"] for ex in fw["executors"] if ex["id"] == tid)


AGENT_HOSTILE = [None, True, -1, 0, 2**70, 1e308, 1.5, "", ".", "..", "../..", "/", "/etc/passwd", "a\x00b",
                 "\x1b[31m", "x" * 5000, [], {}, [None], {"value": ".."}, {"value": ""}, {"value": 12},
                 {"value": "x" * 300}, {"parent": {"value": ".."}, "value": "s"}]


def _fuzz_calls(container: str) -> list[dict]:
    cid = {"parent": {"value": container}, "value": "fuzz"}
    return [{"type": "GET_STATE"}, {"type": "GET_CONTAINERS"},
            {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
                "container_id": cid, "command": {"shell": False, "value": "true", "arguments": ["true"]}}},
            {"type": "WAIT_NESTED_CONTAINER", "wait_nested_container": {"container_id": cid}},
            {"type": "ATTACH_CONTAINER_OUTPUT", "attach_container_output": {"container_id": cid}}]


def _replace(obj, path: list, value):
    import copy

    obj = copy.deepcopy(obj)
    if not path:
        return value
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return obj


def _places(obj, prefix=()) -> list[tuple]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + (k,))
            out += _places(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(prefix + (i,))
            out += _places(v, prefix + (i,))
    return out


def test_fuzzed_api_calls_and_file_queries_never_get_a_server_error(env):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    c, tid = env
    agent, good = c.layout["agents"][0]["http"], creds(c)["drover"]
    ex = executor(c, tid)
    calls = _fuzz_calls(ex["container"])
    box = ex["directory"]

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.data())
    def one(data):
        call = data.draw(st.sampled_from(calls))
        place = data.draw(st.sampled_from(_places(call)))
        body = _replace(call, list(place), data.draw(st.sampled_from(AGENT_HOSTILE)))
        st_code, _ = http(agent, "/api/v1", good, body)
        assert st_code < 500 or st_code == 501, (body, st_code)  # 501: ATTACH_CONTAINER_*, as the master's
        endpoint = data.draw(st.sampled_from(["read.json", "browse.json", "download"]))
        path = data.draw(st.sampled_from([box, box + "/stdout", box + "/../..", "/", *AGENT_HOSTILE[11:16]]))
        offset = data.draw(st.sampled_from(["", "-1", "0", "-2", "x", "1e3", "99999999999999999999", "7"]))
        query = urllib.parse.urlencode({"path": path, "offset": offset, "length": offset})
        st_code, _ = http(agent, f"/files/{endpoint}?{query}", good)
        assert st_code < 500, (endpoint, query, st_code)

    one()


def test_one_principal_cannot_take_every_session_slot(env):
    from agent.http_api import MAX_SESSIONS_PER_PRINCIPAL

    c, tid = env
    agent, good = c.layout["agents"][0]["http"], creds(c)["drover"]
    parent = executor(c, tid)["container"]

    def launch(name: str):
        call = {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
            "container_id": {"parent": {"value": parent}, "value": name},
            "command": {"shell": True, "value": "echo started; exec sleep 600"}}}
        req = urllib.request.Request(f"http://{agent}/api/v1", data=json.dumps(call).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": good.basic_header()})
        return urllib.request.urlopen(req, timeout=30)

    held = [launch(f"held-{i}") for i in range(MAX_SESSIONS_PER_PRINCIPAL)]
    try:
        for r in held:
            assert b"DATA" in r.read(40)
        with pytest.raises(urllib.error.HTTPError) as refused:
            launch("one-too-many")
        assert refused.value.code == 503
        assert f"for principal 'drover' (at most {MAX_SESSIONS_PER_PRINCIPAL})" in refused.value.read().decode()
    finally:
        for r in held:
            r.close()
    deadline = time.time() + 30
    while True:  # the slots come back once the abandoned sessions are over
        try:
            r = launch("after")
            break
        except urllib.error.HTTPError as e:
            assert e.code == 503 and time.time() < deadline, e
            time.sleep(0.5)
    assert b"DATA" in r.read(40)
    r.close()
