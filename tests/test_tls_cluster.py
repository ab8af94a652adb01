"""A TLS cluster end to end, on real processes: `drover local --tls` (masters and agents serving HTTPS, agents
verifying the masters against the generated CA), `drover execute --tls-ca` through the leader endpoint and through
a follower's redirect, and what must not work: plain HTTP on the TLS ports, a client with another CA. Then a
leader failover over TLS (LocalCluster(tls=True)): the floating endpoint moves, agents follow, tasks still run."""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from drover.local import free_port_block
from drover.security.tls import client_context, generate_test_pki
from tests.cluster import MASTER_ARGS, Cluster

pytestmark = pytest.mark.integration


def drover(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drover.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def get_json(url: str, ctx: ssl.SSLContext | None) -> dict:
    with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
        return json.load(r)


def test_drover_local_tls_runs_the_demo_and_refuses_plain_http_and_other_cas(tmp_path):
    data = tmp_path / "local"
    proc = subprocess.Popen([sys.executable, "-m", "drover.cli", "local", "--tls", "--demo", "--data-dir", str(data),
                             "--base-port", str(free_port_block())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "demo finished" in line or not line:
                break
        out = "".join(lines)
        # The demo is drover execute with the cluster's CA: 4 tasks on agents that registered over TLS.
        assert "demo finished: all tasks finished" in out, out
        assert out.count("TASK_FINISHED") == 4, out
        # Then its service: a health-checked web server whose URL it prints, served from a task's container.
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "is healthy; open" in line or not line:
                break
        out = "".join(lines)
        url = re.search(r"demo service: task demo-web-0 is healthy; open (http://127\.0\.0\.1:\d+/)", out)
        assert url, out
        with urllib.request.urlopen(url.group(1), timeout=10) as r:
            assert "<h1>Hello from Drover</h1>" in r.read().decode()
        layout = json.loads((data / "local.json").read_text())
        ca = layout["tls_ca"]
        assert ca == str(data / "tls" / "ca.pem")
        assert f"clients verify it with the CA in {ca}" in out
        good = client_context(ca)
        masters = {m["id"]: m["http"] for m in layout["masters"]}
        statuses = {mid: get_json(f"https://{addr}/drover/status", good) for mid, addr in masters.items()}
        leader = next(mid for mid, st in statuses.items() if st["serving"])
        follower = next(mid for mid in masters if mid != leader)
        for a in layout["agents"]:
            assert get_json(f"https://{a['http']}/state", good)["master"] == masters[leader]

        # A follower redirects with a protocol-relative Location: the client stays on HTTPS.
        host, _, port = masters[follower].rpartition(":")
        conn = http.client.HTTPSConnection(host, int(port), context=good, timeout=5)
        conn.request("GET", "/master/state")
        r = conn.getresponse()
        assert (r.status, r.getheader("Location")) == (307, f"//{masters[leader]}/master/state")
        conn.close()
        state = get_json(f"https://{masters[follower]}/master/state", good)  # urllib follows it
        assert state["leader"] == f"master@{masters[leader]}" and len(state["slaves"]) == 2

        # drover execute through the follower: redirected to the leader, over HTTPS.
        run = drover("execute", "--master", masters[follower], "--tls-ca", ca, "--command", "echo hi",
                     "--instances", "2")
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.count("TASK_FINISHED") == 2
        assert f"on {masters[leader]}" in run.stdout

        # Plain HTTP on the TLS ports gets nothing (the handshake fails, the connection is closed).
        for addr in [layout["leader"], *masters.values(), *(a["http"] for a in layout["agents"])]:
            with pytest.raises(OSError):
                get_json(f"http://{addr}/health", None)
        plain = drover("execute", "--master", layout["leader"], "--command", "true")
        assert plain.returncode == 2 and "pass --tls-ca" in plain.stderr and "Traceback" not in plain.stderr

        # A client with another CA is refused, by every port.
        other = generate_test_pki(tmp_path / "other")
        for addr in [layout["leader"], masters[leader], layout["agents"][0]["http"]]:
            with pytest.raises(urllib.error.URLError) as e:
                get_json(f"https://{addr}/health", client_context(other.ca))
            assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
        wrong = drover("execute", "--master", layout["leader"], "--tls-ca", str(other.ca), "--command", "true")
        assert wrong.returncode == 2, wrong.stdout + wrong.stderr
        assert "does not verify against --tls-ca" in wrong.stderr and "unable to get local issuer certificate" \
            in wrong.stderr and "Traceback" not in wrong.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    assert proc.returncode == 0


def test_leader_failover_over_tls(tmp_path):
    c = Cluster(data_dir=tmp_path / "cluster", master_args=list(MASTER_ARGS), tls=True)
    c.start()
    try:
        old = c.wait_leader()
        c.wait_agents()
        c.kill(old)
        new = c.wait_leader()
        assert new != old
        new_http = c.master_http(new)
        deadline = time.time() + 60
        while time.time() < deadline:
            if all((c.agent_state(a["id"]) or {}).get("master") == new_http for a in c.layout["agents"]):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"agents did not re-register with {new}: "
                                 f"{[c.agent_state(a['id']) for a in c.layout['agents']]}")
        # The new leader serves the floating endpoint over HTTPS with the same certificate.
        st = c.get(c.leader_endpoint(), "/drover/status")
        assert st["id"] == new and st["serving"]
        run = drover("execute", "--master", c.leader_endpoint(), "--tls-ca", c.layout["tls_ca"], "--command",
                     "echo hi", "--instances", "2")
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.count("TASK_FINISHED") == 2
        assert "TLS connection to a master failed" not in c.log("a1") + c.log("a2")
    finally:
        c.stop()
