"""Benchmark: what TLS and authentication cost per call on a master's HTTP port, against plain HTTP measured in the
same run (issue 11).

    .venv/bin/python -m bench.tls            # 5 rounds of 400 calls per row, about a minute
    .venv/bin/python -m bench.tls --quick    # 1 round of 30 calls per row, a few seconds

Four single-replica masters run side by side on loopback, each a real `drover master` process with its Raft
secret: plain HTTP (the baseline), HTTP with `--credentials` (every call carries HTTP Basic: `http+auth`), HTTPS
with a certificate from `drover.security.tls.generate_test_pki` (ECDSA P-256, TLS 1.3, the server context
`drover master --tls-cert/--tls-key` uses), and HTTPS with credentials (`https+auth`, what `drover local --secure
--tls` runs). The credential check alone (parse the header, look the principal up, compare the secret in
constant time) is timed first, for credentials files of 1 to 10,000 principals. A client in this process
(`http.client`, one call at a time, verifying the certificate with `client_context`) calls each endpoint:

* keep-alive: one connection for all the calls of a row;
* new connection: a new TCP connection (and, on HTTPS, a full TLS handshake: no session resumption) per call,
  as a client without connection reuse (curl in a loop, most scripts) pays.

Endpoints: `GET /health` (the smallest answer), `POST /api/v1` GET_HEALTH (an operator API call through the
leader's handler), `GET /master/state` (a JSON document of about 1 KB with an empty cluster). calls/s is 1 / the
mean wall time of a call, client included; server CPU is the master process's own user+system time (from
/proc/PID/stat, so 10 ms ticks: meaningful over a row, not per call) divided by the calls. Rows run in rounds; within a
round the two schemes alternate which goes first. Nothing asserts on times.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import eprint, fmt, machine_line, median, percentile, run_main, sigterm_as_keyboard_interrupt, table

HOST = "127.0.0.1"
ENDPOINTS = {
    "GET /health": ("GET", "/health", None),
    "POST /api/v1 GET_HEALTH": ("POST", "/api/v1", json.dumps({"type": "GET_HEALTH"}).encode()),
    "GET /master/state": ("GET", "/master/state", None),
}
MODES = ("keep-alive", "new connection")
SCHEMES = ("http", "http+auth", "https", "https+auth")


class Master:
    """One single-replica `drover master` process (plain or HTTPS)."""

    def __init__(self, root: Path, name: str, pki=None, credential=None):
        from drover.local import free_port
        from drover.security import files
        from drover.security.tls import client_context
        from eventstore.raftlog import ensure_secret_file

        self.name, self.port, self.pki = name, free_port(), pki
        self.auth = {"Authorization": credential.basic_header()} if credential is not None else {}
        self.ctx = client_context(pki.ca) if pki is not None else None
        argv = [sys.executable, "-m", "drover.cli", "master", "--id", name, "--http", f"{HOST}:{self.port}",
                "--raft", f"{HOST}:{free_port()}", "--data-dir", str(root / name),
                "--raft-secret-file", str(ensure_secret_file(root / "raft.secret"))]
        if pki is not None:
            argv += ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
        if credential is not None:
            argv += ["--credentials", str(files.write_credentials(root / f"{name}.credentials.json", [credential]))]
        self.log = open(root / f"{name}.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "DROVER_LOG_LEVEL": "warning"})

    def connect(self) -> http.client.HTTPConnection:
        if self.ctx is not None:
            return http.client.HTTPSConnection(HOST, self.port, context=self.ctx, timeout=10)
        return http.client.HTTPConnection(HOST, self.port, timeout=10)

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"master {self.name} exited with status {self.proc.returncode}")
            try:
                conn = self.connect()
                conn.request("GET", "/drover/status", headers=self.auth)
                if json.loads(conn.getresponse().read()).get("serving"):
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"master {self.name} did not start serving")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def one_call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, auth: dict) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers={**headers, **auth})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {r.status}")


def measure_row(master: Master, endpoint: str, mode: str, n: int) -> tuple[list[float], float]:
    """n calls; their wall times (s) and the server CPU seconds they took."""
    method, path, body = ENDPOINTS[endpoint]
    times = []
    conn = master.connect() if mode == "keep-alive" else None
    if conn is not None:
        one_call(conn, method, path, body, master.auth)  # the connection (and handshake) is not part of the row
    cpu0 = master.cpu_seconds()
    for _ in range(n):
        t = time.perf_counter()
        if conn is not None:
            one_call(conn, method, path, body, master.auth)
        else:
            c = master.connect()
            one_call(c, method, path, body, master.auth)
            c.close()
        times.append(time.perf_counter() - t)
    cpu = master.cpu_seconds() - cpu0
    if conn is not None:
        conn.close()
    return times, cpu


def report(res: dict, rounds: int, n: int, session: str) -> None:
    rows = []
    summary = []
    for endpoint in ENDPOINTS:
        for mode in MODES:
            base = None
            for scheme in SCHEMES:
                per_round, cpu = res[(endpoint, mode, scheme)]
                xs = [t for r in per_round for t in r]
                rate = median([len(r) / sum(r) for r in per_round])
                cpu_us = cpu / len(xs) * 1e6
                p50 = percentile(xs, 50)
                if scheme == "http":
                    base = (rate, p50, cpu_us)
                    vs = "1.00"
                    extra = "-"
                else:
                    vs = f"{rate / base[0]:.2f}"
                    extra = f"{(p50 - base[1]) * 1000:+.3f}"
                    summary.append(f"{endpoint}, {mode}: {scheme} adds {(p50 - base[1]) * 1000:.3f} ms per call "
                                   f"(p50) and {cpu_us - base[2]:,.0f} us of server CPU per call; calls/s x{vs}")
                rows.append([endpoint, mode, scheme, f"{len(xs):,}", fmt(rate, 0), fmt(p50 * 1000, 3),
                             fmt(percentile(xs, 95) * 1000, 3), fmt(cpu_us, 0), vs, extra])
    print()
    print("TLS and authentication cost per call on a master's HTTP port: one call at a time from one client, "
          "loopback")
    print(machine_line())
    print(f"{rounds} round(s) x {n} calls per row; HTTPS: {session}")
    print(table(["endpoint", "connection", "scheme", "calls", "calls/s", "p50 ms", "p95 ms", "server CPU us/call",
                 "calls/s vs http", "p50 vs http ms"], rows))
    print()
    for line in summary:
        print(line)


def check_alone(principals: int, calls: int = 100_000) -> float:
    """us per `authenticate` call against a credentials file of `principals` entries."""
    import base64

    from drover.security.credentials import Credential, Credentials, authenticate

    creds = Credentials(tuple(Credential(f"p{i}", f"secret-{i:08d}") for i in range(principals)))
    header = "Basic " + base64.b64encode(f"p{principals // 2}:secret-{principals // 2:08d}".encode()).decode()
    t = time.perf_counter()
    for _ in range(calls):
        authenticate(creds, header)
    return (time.perf_counter() - t) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (1 round of 30 calls per row)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5, --quick 1)")
    ap.add_argument("--calls", type=int, default=None, help="calls per row and round (default 400, --quick 30)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (master logs)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 5)
    n = args.calls or (30 if args.quick else 400)
    sigterm_as_keyboard_interrupt()

    from drover.security.tls import generate_test_pki

    from drover.security.credentials import Credential

    checks = [(n, check_alone(n, 2_000 if args.quick else 100_000)) for n in (1, 1_000, 10_000)]
    root = Path(tempfile.mkdtemp(prefix="drover-bench-tls-"))
    masters: dict[str, Master] = {}
    try:
        pki = generate_test_pki(root / "tls")
        cred = Credential("bench", "bench-secret-0123456789")
        masters = {"http": Master(root, "plain"), "http+auth": Master(root, "auth", credential=cred),
                   "https": Master(root, "tls", pki), "https+auth": Master(root, "tls-auth", pki, cred)}
        for m in masters.values():
            m.wait_serving()
        probe = masters["https"].connect()
        probe.connect()
        session = f"{probe.sock.version()} {probe.sock.cipher()[0]}, ECDSA P-256 certificate"  # type: ignore[union-attr]
        probe.close()
        eprint(f"masters up ({root}); {session}")
        res: dict = {}
        for rnd in range(rounds):
            for endpoint in ENDPOINTS:
                for mode in MODES:
                    order = SCHEMES if rnd % 2 == 0 else SCHEMES[::-1]  # which goes first alternates
                    for scheme in order:
                        times, cpu = measure_row(masters[scheme], endpoint, mode, n)
                        per_round, cpu_total = res.get((endpoint, mode, scheme), ([], 0.0))
                        res[(endpoint, mode, scheme)] = (per_round + [times], cpu_total + cpu)
            eprint(f"round {rnd + 1}/{rounds} done")
    finally:
        for m in masters.values():
            m.stop()
        if args.keep:
            eprint(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("credential check alone (drover.security.credentials.authenticate):")
    print(table(["principals", "us/call"], [[f"{k:,}", f"{us:.2f}"] for k, us in checks]))
    report(res, rounds, n, session)
    return 0


if __name__ == "__main__":
    run_main(main)
