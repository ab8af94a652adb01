"""The trust boundary on real processes: a `drover local --secure` cluster (3 master replicas, 2 agents, Podman),
attacked as the issue lists it. Principals: `drover` (frameworks and operators, sees everything), one per agent,
and `mallory`, whose ACLs let it see and run only what belongs to user `nobody` and tear down only its own
frameworks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from drover.security import files
from drover.security.credentials import Credential
from tests.cluster import REPO, Cluster, run_framework, running_cluster, start_framework

NONE = {"type": "NONE"}


def only(principal: str, values: list[str], key: str) -> list[dict]:
    return [{"principals": {"values": [principal]}, key: {"values": values}},
            {"principals": {"values": [principal]}, key: NONE}]


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("secure") / "cluster", secure=True, extra_principals=("mallory",),
                         acl_rules={"view_frameworks": only("mallory", ["nobody"], "users"),
                                    "view_tasks": only("mallory", ["nobody"], "users"),
                                    "run_tasks": only("mallory", ["nobody"], "users"),
                                    "teardown_frameworks": only("mallory", ["mallory"], "framework_principals"),
                                    "update_weights": only("mallory", [], "roles")[1:]}) as c:
        yield c


def creds(c: Cluster) -> dict[str, Credential]:
    return {e.principal: e for e in files.load_credentials(c.data_dir / "credentials.json").entries}


def http(addr: str, path: str, body: dict | bytes | None = None, who: Credential | None = None,
         auth: str | None = None, ctype: str = "application/json", timeout: float = 5.0,
         headers: dict | None = None, stream: bool = False) -> tuple[int, dict, str]:
    """(status, headers, the body's first 64 KiB, or a stream's first RecordIO record)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    h = dict(headers or {})
    if data is not None:
        h["Content-Type"] = ctype
    if who is not None:
        h["Authorization"] = who.basic_header()
    elif auth is not None:
        h["Authorization"] = auth
    req = urllib.request.Request(f"http://{addr}{path}", data=data, headers=h, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if stream:
                size = r.readline()  # RecordIO: "<length>\n<json>"
                return r.status, dict(r.headers), r.read(int(size)).decode()
            return r.status, dict(r.headers), r.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def leader(c: Cluster) -> str:
    return c.master_http(c.wait_leader())


def frameworks(c: Cluster, who: Credential) -> dict[str, dict]:
    st, _, body = http(leader(c), "/api/v1", {"type": "GET_FRAMEWORKS"}, who)
    assert st == 200, body
    return {f["framework_info"]["id"]["value"]: f for f in json.loads(body)["get_frameworks"].get("frameworks", [])}


def agent_ids(c: Cluster) -> list[str]:
    return [c.agent_id(a["id"]) for a in c.layout["agents"]]


def test_every_port_refuses_calls_without_valid_credentials(secure):
    c = secure
    good = creds(c)["drover"]
    lead, follower = leader(c), c.master_http(c.follower())
    a1 = agent_ids(c)[0]
    before = frameworks(c, good)
    calls = [
        ("/api/v1/scheduler", {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "x"}}}),
        ("/api/v1", {"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "x", "weight": 5}]}}),
        ("/api/v1", {"type": "GET_STATE"}),
        ("/api/drover/agent", {"type": "SUBSCRIBE", "subscribe": {"hostname": "evil", "http": "10.9.9.9:5051",
                                                                  "resources": []}}),
        ("/api/drover/agent", {"type": "PING", "agent_id": a1}),
        ("/master/state", None), ("/state.json", None), ("/api/v1/events?follow=false", None),
        ("/api/drover/audit/tasks", None), ("/drover/status", None), ("/slaves", None), ("/master/frameworks", None),
        ("/tasks.json?limit=5", None), ("/master/roles.json", None), ("/state-summary", None),
        ("/api/drover/why/role?role=*", None), ("/", None), ("/ui/app.js", None),
        ("/api/drover/history/range", None), ("/api/drover/history/state?index=1", None),
    ]
    bad = [None, good.principal and Credential("drover", "not-the-secret").basic_header(),
           Credential("nobody-at-all", "x").basic_header(), "Basic %%%", "Bearer token"]
    for addr in (lead, follower, c.layout["leader"]):
        for path, body in calls:
            for auth in bad:
                st, headers, text = http(addr, path, body, auth=auth)
                assert st == 401, (addr, path, auth, st, text)
                assert text == "401 Unauthorized." and headers["WWW-Authenticate"].startswith('Basic realm="')
    for a in c.layout["agents"]:
        assert http(a["http"], "/state")[0] == 401
        assert http(a["http"], "/state", who=good)[0] == 200
        assert http(a["http"], "/health")[0] == 200
    for path in ("/health", "/version", "/master/health"):
        assert http(lead, path)[0] == 200
    # Nothing was written: no framework, no weight, no agent.
    assert frameworks(c, good) == before
    st, _, body = http(lead, "/api/v1", {"type": "GET_WEIGHTS"}, good)
    assert json.loads(body)["get_weights"].get("weight_infos", []) == []
    st, _, body = http(lead, "/api/v1", {"type": "GET_AGENTS"}, good)
    assert len(json.loads(body)["get_agents"]["agents"]) == 2


def test_browsers_cannot_post_across_sites_or_run_jsonp_code(secure):
    c = secure
    good = creds(c)["drover"]
    lead = leader(c)
    for path in ("/api/v1/scheduler", "/api/v1", "/api/drover/agent"):
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            st, _, text = http(lead, path, b'{"type": "GET_STATE"}', good, ctype=ctype)
            assert st == 415, (path, ctype, st, text)
    # A browser sends cached Basic credentials with a cross-site <script>: no JSONP on an authenticating master.
    for cb in ("alert(document.cookie)", "cb"):
        st, _, text = http(lead, f"/master/state?jsonp={cb}", who=good)
        assert st == 400 and "not served by a master with --credentials" in text
    # Nor a POST without a content type (a page's fetch of a Blob sends none) to the agent link.
    st, _, text = http(lead, "/api/drover/agent", b'{"type": "PING", "agent_id": "x"}', good, ctype="")
    assert st == 400, text


def test_pymesos_with_principal_and_secret_launches_tasks_and_without_is_refused(secure, tmp_path):
    c = secure
    good = creds(c)["drover"]
    out = run_framework("pymesos_echo.py", "--master", c.layout["leader"], "--tasks", "2",
                        "--principal", good.principal, "--secret", good.secret)
    assert out["ok"] and set(out["final"].values()) == {"TASK_FINISHED"}, out
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "frameworks" / "pymesos_echo.py"),
                           "--master", c.layout["leader"], "--tasks", "1", "--timeout", "8"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Failed with HTTP 401" in proc.stderr and '"ok": true' not in proc.stdout


def scrape(addr: str, path: str, who: Credential | None) -> tuple[int, dict]:
    """GET /metrics (Prometheus text, as {(name, sorted labels): value}) or /metrics/snapshot (JSON)."""
    from prometheus_client.parser import text_string_to_metric_families

    st, _, text = http(addr, path, who=who)
    if st != 200:
        return st, {}
    if path.endswith("snapshot"):
        return st, json.loads(text)
    return st, {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
                for fam in text_string_to_metric_families(text) for smp in fam.samples}


def test_metrics_need_credentials_and_agree_with_the_cluster(secure):
    c = secure
    good = creds(c)["drover"]
    out = run_framework("pymesos_echo.py", "--master", c.layout["leader"], "--tasks", "1",
                        "--principal", good.principal, "--secret", good.secret)
    assert out["ok"], out
    c.wait_converged()
    masters = [m["http"] for m in c.layout["masters"]]
    agents = [a["http"] for a in c.layout["agents"]]
    for addr in masters + agents:
        for path in ("/metrics", "/metrics/snapshot"):
            assert scrape(addr, path, None)[0] == 401, (addr, path)
            assert scrape(addr, path, Credential("drover", "wrong"))[0] == 401, (addr, path)
    scraped = {addr: scrape(addr, "/metrics", good)[1] for addr in masters}
    assert sorted(s[("drover_master_elected", ())] for s in scraped.values()) == [0, 0, 1]
    lead = next(a for a, s in scraped.items() if s[("drover_master_elected", ())] == 1)
    assert lead == leader(c)
    for s in scraped.values():  # every replica folds the same log
        assert s[("drover_master_agents", (("state", "connected"),))] == 2
        assert s[("drover_master_applied_index", ())] > 0
    s = scraped[lead]
    assert sum(v for (name, labels), v in s.items() if name == "drover_master_task_status_updates_total"
               and ("state", "TASK_FINISHED") in labels) >= 1
    assert s[("drover_master_offers_made_total", ())] >= 1 and s[("drover_master_offers_accepted_total", ())] >= 1
    assert s[("drover_master_raft_commit_duration_seconds_count", ())] >= 1
    assert s[("drover_master_allocation_run_duration_seconds_count", ())] >= 1
    assert s[("drover_master_cpus", (("kind", "total"),))] > 0
    assert s[("drover_master_http_requests_total", (("code", "401"), ("method", "GET"), ("route", "/metrics")))] >= 2
    snap = scrape(lead, "/metrics/snapshot", good)[1]
    assert snap["master/elected"] == 1 and snap["master/slaves_active"] == snap["master/slaves_connected"] == 2
    assert snap["master/tasks_finished"] >= 1 and snap["master/cpus_total"] > 0
    per_agent = [scrape(a, "/metrics", good)[1] for a in agents]
    assert all(s[("drover_agent_registered", ())] == 1 for s in per_agent)
    assert sum(s[("drover_agent_task_launch_duration_seconds_count", ())] for s in per_agent) >= 1
    assert all(scrape(a, "/metrics/snapshot", good)[1]["slave/registered"] == 1 for a in agents)


def _stream_error(text: str) -> str | None:
    try:
        rec = json.loads(text)
    except ValueError:
        return None
    return rec.get("error", {}).get("message") if rec.get("type") == "ERROR" else None


def test_a_framework_cannot_be_seen_taken_over_or_torn_down_by_another_principal(secure, tmp_path):
    c = secure
    cs = creds(c)
    good, mallory = cs["drover"], cs["mallory"]
    lead = leader(c)
    ready = tmp_path / "ready"
    proc = start_framework("pymesos_echo.py", "--master", c.layout["leader"], "--tasks", "1", "--command",
                           "sleep 300", "--ready-file", str(ready), "--principal", good.principal,
                           "--secret", good.secret, log_path=tmp_path / "fw.log")
    try:
        deadline = time.time() + 90
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert ready.exists(), (tmp_path / "fw.log").read_text()
        (fid,) = [f for f, info in frameworks(c, good).items() if info["connected"]
                  and info["framework_info"]["name"] == "pymesos-echo"]
        assert frameworks(c, good)[fid]["framework_info"]["principal"] == "drover"  # from its authentication

        # Takeover: re-subscribing with its id as another principal.
        takeover = {"type": "SUBSCRIBE", "framework_id": {"value": fid}, "subscribe": {"framework_info": {
            "user": "root", "name": "pymesos-echo", "id": {"value": fid}, "failover_timeout": 60}}}
        st, _, text = http(lead, "/api/v1/scheduler", takeover, mallory, stream=True)
        assert st == 200 and _stream_error(text) == "Changing framework's principal is not allowed.", text
        takeover["subscribe"]["framework_info"]["principal"] = "drover"
        st, _, text = http(lead, "/api/v1/scheduler", takeover, mallory)
        assert st == 400 and "Authenticated principal 'mallory' does not match principal 'drover'" in text
        # Calls as the framework (a kill of its task) from another principal.
        kill = {"type": "KILL", "framework_id": {"value": fid}, "kill": {"task_id": {"value": "x"}}}
        st, _, text = http(lead, "/api/v1/scheduler", kill, mallory, headers={"Mesos-Stream-Id": "whatever"})
        assert st == 400 and "does not match principal 'drover'" in text
        # The operator's teardown: mallory may tear down only its own frameworks.
        teardown = {"type": "TEARDOWN", "teardown": {"framework_id": {"value": fid}}}
        st, _, text = http(lead, "/api/v1", teardown, mallory)
        assert st == 403, text
        weights = {"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "web", "weight": 9}]}}
        st, _, text = http(lead, "/api/v1", weights, mallory)
        assert st == 403 and "Not authorized to update the weight of role 'web'" in text
        st, _, text = http(lead, "/api/v1", {"type": "GET_WEIGHTS"}, good)
        assert json.loads(text)["get_weights"].get("weight_infos", []) == []
        for agent_cred in ("agent-a1", "agent-a2"):  # an agent's principal is for the agent link only
            st, _, text = http(lead, "/api/v1", weights, cs[agent_cred])
            assert st == 403, text

        # What mallory sees: nothing of a framework whose user is root.
        assert fid not in frameworks(c, mallory)
        for call in ("GET_STATE", "GET_TASKS", "GET_FRAMEWORKS"):
            st, _, text = http(lead, "/api/v1", {"type": call}, mallory)
            assert st == 200 and fid not in text, call
            st, _, text = http(lead, "/api/v1", {"type": call}, good)
            assert st == 200 and fid in text, call
        st, _, text = http(lead, "/master/state", who=mallory)
        assert st == 200 and fid not in text and json.loads(text)["frameworks"] == []
        assert fid in http(lead, "/master/state", who=good)[2]
        for path in ("/frameworks", "/master/tasks", "/state-summary.json", f"/tasks?framework_id={fid}"):
            st, _, text = http(lead, path, who=mallory)  # Mesos's read endpoints, filtered as /master/state is
            assert st == 200 and fid not in text, path
            st, _, text = http(lead, path, who=good)
            assert st == 200 and fid in text, path
        st, _, text = http(lead, "/slaves", who=mallory)  # agents are shown to every authenticated reader
        assert st == 200 and len(json.loads(text)["slaves"]) == 2
        assert http(lead, "/tasks?limit=many", who=good)[:3:2] == (400, "'limit' must be an integer from 0 to "
                                                                       "2147483647, not 'many'")
        assert http(lead, "/api/v1/events?follow=false", who=mallory)[0] == 403
        assert http(lead, "/api/drover/audit/tasks", who=mallory)[0] == 403
        assert http(lead, "/api/drover/audit/tasks", who=good)[0] == 200
        assert http(lead, f"/api/drover/why/framework?framework_id={fid}", who=mallory)[0] == 403
        st, _, text = http(lead, f"/api/drover/why/framework?framework_id={fid}", who=good)
        assert st == 200 and json.loads(text)["framework_id"] == fid
        assert http(lead, "/api/drover/history/state?index=1", who=mallory)[0] == 403  # the UI's time travel
        assert http(lead, "/api/drover/history/state?index=1", who=good)[0] == 200
        assert http(lead, "/", who=mallory)[0] == 200  # the UI's page itself: any authenticated reader

        # The owner is untouched: still connected, its task still running.
        fw = frameworks(c, good)[fid]
        assert fw["connected"] and proc.poll() is None
        st, _, text = http(lead, "/api/v1", {"type": "GET_TASKS"}, good)
        tasks = [t for t in json.loads(text)["get_tasks"].get("tasks", []) if t["framework_id"]["value"] == fid]
        assert [t["state"] for t in tasks] == ["TASK_RUNNING"]
        # ... and its own principal's operator may tear it down.
        proc.kill()
        proc.wait()
        st, _, text = http(lead, "/api/v1", teardown, good)
        assert st == 200, text
        # Torn down: a completed framework with its (killed) task, shown only to whoever may see it.
        st, _, text = http(lead, f"/frameworks?framework_id={fid}", who=good)
        (done,) = json.loads(text)["completed_frameworks"]
        assert done["id"] == fid and not done["active"] and [t["state"] for t in done["completed_tasks"]] == \
            ["TASK_KILLED"]
        assert fid in [f["id"] for f in json.loads(http(lead, "/master/state", who=good)[2])["completed_frameworks"]]
        assert json.loads(http(lead, "/frameworks", who=mallory)[2])["completed_frameworks"] == []
        assert fid not in frameworks(c, good)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_agents_cannot_be_impersonated(secure):
    c = secure
    cs = creds(c)
    a1, a2 = agent_ids(c)
    other = cs["agent-a2"]  # a real agent's credential, used for the other agent
    lead = leader(c)
    st, _, text = http(lead, "/api/drover/agent", {"type": "PING", "agent_id": a1}, other)
    assert st == 403 and "registered by another principal" in text
    upd = {"type": "UPDATE", "agent_id": a1, "update": {"framework_id": "f", "task_id": "t", "status": {
        "state": "TASK_FINISHED", "source": "SOURCE_EXECUTOR", "timestamp": 1.0}}}
    st, _, text = http(lead, "/api/drover/agent", upd, other)
    assert st == 403 and "registered by another principal" in text
    resub = {"type": "SUBSCRIBE", "subscribe": {"agent_id": a1, "hostname": "evil", "http": "10.9.9.9:5051",
                                                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": 64}]}}
    st, _, text = http(lead, "/api/drover/agent", resub, other, stream=True)
    assert st == 200 and "registered by another principal" in text
    fake = {"type": "SUBSCRIBE", "subscribe": {"hostname": "evil", "http": "10.9.9.9:5051",
                                               "resources": [{"name": "cpus", "type": "SCALAR", "scalar": 64}]}}
    for who in (cs["drover"], cs["mallory"]):
        st, _, text = http(lead, "/api/drover/agent", fake, who, stream=True)
        assert st == 200 and "Not authorized to register an agent" in text, text
    st, _, text = http(lead, "/api/v1", {"type": "GET_AGENTS"}, cs["drover"])
    agents = json.loads(text)["get_agents"]["agents"]
    assert sorted(a["agent_info"]["id"]["value"] for a in agents) == sorted([a1, a2])
    assert all(a["agent_info"]["hostname"] != "evil" for a in agents)
    assert all(a["active"] for a in agents)


def test_a_task_as_a_user_its_principal_may_not_use_is_refused(secure, tmp_path):
    c = secure
    mallory = tmp_path / "mallory.json"
    files.write_credentials(mallory, [creds(c)["mallory"]])
    drover = [sys.executable, "-m", "drover.cli", "execute", "--master", c.layout["leader"], "--credentials",
              str(mallory), "--command", "id -u", "--timeout", "60"]
    refused = subprocess.run(drover + ["--user", "root"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "TASK_ERROR" in refused.stdout and "Not authorized to launch as user 'root'" in refused.stdout
    allowed = subprocess.run(drover + ["--user", "nobody"], capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    unauthenticated = subprocess.run(drover[:6] + drover[8:], capture_output=True, text=True, timeout=120)
    assert unauthenticated.returncode == 2 and "401" in unauthenticated.stderr


def test_replica_files_are_readable_by_their_owner_only(secure):
    c = secure
    loose = []
    for m in c.layout["masters"]:
        for root, _dirs, names in os.walk(m["data_dir"]):
            for name in names:
                p = Path(root) / name
                if p.stat().st_mode & 0o077:
                    loose.append(f"{p} {p.stat().st_mode & 0o777:o}")
    assert loose == []
    for name in ("credentials.json", "acls.json", "raft.secret", "a1.credential.json"):
        assert (c.data_dir / name).stat().st_mode & 0o777 == 0o600


def test_secure_and_tls_together_end_to_end(tmp_path):
    """`drover local --secure --tls`: every port HTTPS and authenticated; a client with both runs tasks, a client
    with one of the two is refused."""
    with running_cluster(tmp_path / "cluster", secure=True, tls=True) as c:
        base = [sys.executable, "-m", "drover.cli", "execute", "--master", c.layout["leader"], "--command", "true",
                "--instances", "2", "--timeout", "60"]
        creds_ = ["--credentials", c.layout["credentials"]]
        ca = ["--tls-ca", c.layout["tls_ca"]]
        ok = subprocess.run(base + creds_ + ca, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.count("TASK_FINISHED") == 2
        no_auth = subprocess.run(base + ca, capture_output=True, text=True, timeout=120)
        assert no_auth.returncode == 2 and "401" in no_auth.stderr
        no_tls = subprocess.run(base + creds_, capture_output=True, text=True, timeout=120)
        assert no_tls.returncode == 2, no_tls.stdout + no_tls.stderr


def test_an_agent_with_a_wrong_secret_is_refused_and_says_so_once(secure, tmp_path):
    c = secure
    wrong = tmp_path / "wrong.json"
    files.write_credentials(wrong, [Credential("agent-a1", "not-its-secret")])
    from drover.local import free_port

    log = tmp_path / "agent.log"
    proc = subprocess.Popen([sys.executable, "-m", "drover.cli", "agent", "--master", c.layout["leader"],
                             "--http", f"127.0.0.1:{free_port()}", "--work-dir", str(tmp_path / "work"),
                             "--podman-socket", c.layout["podman_socket"], "--credential", str(wrong)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and "the master refused this agent" not in log.read_text():
            time.sleep(0.2)
        time.sleep(3)  # it keeps retrying meanwhile (every 0.5 s)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert text.count("the master refused this agent") == 1, text[-3000:]
    assert "Authentication failed" in text and "not-its-secret" not in text
    st, _, body = http(leader(c), "/api/v1", {"type": "GET_AGENTS"}, creds(c)["drover"])
    assert len(json.loads(body)["get_agents"]["agents"]) == 2
