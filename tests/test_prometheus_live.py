"""A real Prometheus against a real cluster: deploy/prometheus/alerts.yml and a scrape config pass `promtool check`,
the rules their unit tests (`promtool test rules deploy/prometheus/alerts_test.yml`),
every master's and agent's /metrics passes `promtool check metrics` (Prometheus's own lint of names, types and
help texts), and a Prometheus (Debian's package, installed by scripts/setup.sh) started on a free loopback port
scrapes 3 replicas and 2 agents every second, evaluates the alert rules, and answers queries with the cluster's
known numbers.

The Debian package's systemd service is never used: the test starts its own `prometheus` with its own storage in
a temp dir, and stops it at the end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from drover.local import free_port
from tests.cluster import REPO, Cluster, running_cluster

pytestmark = pytest.mark.integration

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
SAMPLE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
TIMEOUT = 90.0  # generous: polled, never a measured duration


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/setup.sh (apt package prometheus)")
    return path


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True, timeout=60)


def scrape_config(c: Cluster, rules: Path = ALERTS) -> str:
    """A Prometheus config for cluster `c` (as deploy/prometheus/prometheus.yml, with its addresses), every second.
    JSON is YAML."""
    return json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "drover-master", "static_configs": [{"targets": [m["http"] for m in c.layout["masters"]]}]},
            {"job_name": "drover-agent", "static_configs": [{"targets": [a["http"] for a in c.layout["agents"]]}]},
        ]}, indent=2)


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def poll(what: str, probe, timeout: float = TIMEOUT):
    """probe() until it returns a true value (exceptions count as not yet); the last value or error in the
    failure."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as e:  # noqa: BLE001 (not up yet)
            value, last = None, e
        else:
            last = value
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s; last: {last!r}")


# ---- static checks ----------------------------------------------------------------------------------------------


def test_alert_rules_and_scrape_configs_pass_promtool(tmp_path: Path) -> None:
    r = promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert b"SUCCESS" in r.stdout
    # deploy/prometheus/alerts_test.yml: the rules on made-up series (which fire, which do not)
    r = promtool("test", "rules", str(ALERTS_TEST))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    r = promtool("check", "config", str(SAMPLE_CONFIG))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    fake = Cluster(data_dir=tmp_path / "unused")
    fake.plan()
    (tmp_path / "prometheus.yml").write_text(scrape_config(fake))
    r = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


# ---- a live cluster ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Cluster]:
    """A 3-replica, 2-agent cluster in which one task failed (so the counters of transitions, the histograms of
    launches and commits have samples)."""
    tool("prometheus"), tool("promtool")  # fail before starting a cluster
    with running_cluster(tmp_path_factory.mktemp("prom") / "cluster") as c:
        failed = subprocess.run([sys.executable, "-m", "drover.cli", "execute", "--master", c.leader_endpoint(),
                                 "--command", "exit 3"], capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1 and "TASK_FAILED" in failed.stdout, failed.stdout + failed.stderr
        c.wait_converged()
        yield c


def test_metrics_pass_promtool_check_metrics(live: Cluster) -> None:
    served: set[str] = set()
    for addr in [m["http"] for m in live.layout["masters"]] + [a["http"] for a in live.layout["agents"]]:
        text = get(f"http://{addr}/metrics")
        assert b"drover_" in text
        r = promtool("check", "metrics", stdin=text)
        # promtool prints its findings (errors and lint warnings alike) and exits non-zero on any
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
            f"{addr}: {r.stdout.decode()}{r.stderr.decode()}"
        served |= set(re.findall(r"^(drover_\w+?)(?:\{| )", text.decode(), re.M))
    # the alert rules use only series the cluster serves
    used = set(re.findall(r"\bdrover_\w+", ALERTS.read_text()))
    assert used and used <= served, sorted(used - served)


def start_prometheus(config: Path, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """`prometheus` on a free loopback port, its storage and log in tmp_path, once it answers /-/ready (or has
    exited: a port taken meanwhile)."""
    port = free_port()
    with open(tmp_path / "prometheus.log", "ab") as logf:
        proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    poll("prometheus ready", lambda: proc.poll() is not None or get(f"{url}/-/ready") != b"")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus(live: Cluster, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping `live` every second with the alert rules loaded: its base URL. Stopped at the end."""
    (tmp_path / "prometheus.yml").write_text(scrape_config(live))
    procs = []
    try:
        for _ in range(5):  # a port taken between the probe and prometheus's bind: try another
            proc, url = start_prometheus(tmp_path / "prometheus.yml", tmp_path)
            procs.append(proc)
            if proc.poll() is None:
                break
        assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        for proc in procs:
            stop(proc)


def api(url: str, path: str, **params: str) -> dict:
    q = f"?{urllib.parse.urlencode(params)}" if params else ""
    body = json.loads(get(f"{url}/api/v1/{path}{q}"))
    assert body["status"] == "success", body
    return body["data"]


def query(url: str, expr: str) -> list[tuple[dict, float]]:
    data = api(url, "query", query=expr)
    assert data["resultType"] == "vector", data
    return [(r["metric"], float(r["value"][1])) for r in data["result"]]


def test_prometheus_scrapes_the_cluster_and_evaluates_the_rules(live: Cluster, prometheus: str) -> None:
    masters = {m["http"] for m in live.layout["masters"]}
    agents = {a["http"] for a in live.layout["agents"]}

    def all_up() -> dict[str, set[str]] | None:
        active = api(prometheus, "targets", state="active")["activeTargets"]
        up = {}
        for t in active:
            if t["health"] == "up":
                up.setdefault(t["labels"]["job"], set()).add(t["labels"]["instance"])
        return up if up == {"drover-master": masters, "drover-agent": agents} else None

    poll("every target up", all_up)

    def scraped(expr: str, want: int):
        def probe():
            res = query(prometheus, expr)
            return res if len(res) == want else None
        return poll(f"{expr} ({want} series)", probe)

    # exactly one replica is the elected leader; every replica counts 2 connected agents
    assert [v for _, v in scraped("sum(drover_master_elected)", 1)] == [1.0]
    assert sorted(v for _, v in scraped('drover_master_agents{state="connected"}', 3)) == [2.0, 2.0, 2.0]
    assert [v for _, v in scraped('sum(drover_agent_registered)', 1)] == [2.0]
    assert [v for _, v in scraped("sum(up)", 1)] == [5.0]
    # the failed task's real transition, counted once by every replica (the leader when staged, followers when
    # they apply the log); no TASK_RUNNING -> TASK_RUNNING repeats in this counter
    failed = scraped('drover_master_task_state_transitions_total{to_state="TASK_FAILED"}', 3)
    assert {m["instance"] for m, _ in failed} == masters
    assert all(m["from_state"] == "TASK_RUNNING" and v == 1.0 for m, v in failed), failed
    every = query(prometheus, "drover_master_task_state_transitions_total")
    assert every and all(m["from_state"] != m["to_state"] for m, _ in every), every

    def rules_ok():
        groups = api(prometheus, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = poll("every rule evaluated, health ok", rules_ok)
    assert len(rules) == sum(1 for line in ALERTS.read_text().splitlines() if line.strip().startswith("- alert:"))
    assert all(not r.get("lastError") for r in rules), [r for r in rules if r.get("lastError")]
    for r in rules:  # as loaded: an alert each, with a severity and both annotations
        assert r["type"] == "alerting" and r["name"].startswith("Drover"), r
        assert r["labels"].get("severity") in ("critical", "warning", "info"), r
        assert r["annotations"].get("summary") and r["annotations"].get("description"), r
    # a healthy cluster: nothing that fires at once (rules with `for:` take minutes) fires
    firing = [a for a in api(prometheus, "alerts")["alerts"] if a["state"] == "firing"]
    assert firing == [], firing
