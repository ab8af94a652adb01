"""Benchmark: what authentication costs per call (issue 11).

1. The check alone (`drover.security.credentials.authenticate`: parse the Basic header, look the principal up,
   compare the secret in constant time), for credentials files of 1, 1,000 and 10,000 (the limit) principals.
2. Over HTTP, on a one-replica master started as an operator would (`drover master`), once open and once with
   `--credentials` (and ACLs that hide one framework user from the caller, so reads are filtered): calls/s of
   `GET /drover/status` and operator `GET_STATE` over keep-alive connections, and of `GET /drover/status` on a
   new connection per call. The open master, measured in the same run, is the baseline.

Not a test: nothing asserts on times.

    .venv/bin/python -m bench.auth [--seconds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from drover.local import free_port
from drover.security import files
from drover.security.credentials import Credential, Credentials, authenticate


def check_alone(n: int, rounds: int = 200_000) -> float:
    creds = Credentials(tuple(Credential(f"p{i}", f"secret-{i:08d}") for i in range(n)))
    header = "Basic " + base64.b64encode(f"p{n // 2}:secret-{n // 2:08d}".encode()).decode()
    t = time.perf_counter()
    for _ in range(rounds):
        authenticate(creds, header)
    return (time.perf_counter() - t) / rounds * 1e6


def start_master(tmp: Path, secure: bool) -> tuple[subprocess.Popen, str]:
    http = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "drover.cli", "master", "--id", "m1", "--http", http, "--raft",
            f"127.0.0.1:{free_port()}", "--data-dir", str(tmp / ("secure" if secure else "open")), "--raft-insecure"]
    if secure:
        argv += ["--credentials", str(tmp / "credentials.json"), "--acls", str(tmp / "acls.json")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, http


async def wait_ready(http: str, headers: dict) -> None:
    async with aiohttp.ClientSession(headers=headers) as s:
        for _ in range(300):
            try:
                async with s.get(f"http://{http}/drover/status") as r:
                    if r.status == 200 and (await r.json())["serving"]:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"master {http} did not start")


async def rate(http: str, headers: dict, what: str, seconds: float, concurrency: int) -> float:
    """Calls/s over `concurrency` clients for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds
    keepalive = what != "status, new connection"

    async def one(s: aiohttp.ClientSession) -> None:
        if what == "GET_STATE":
            async with s.post(f"http://{http}/api/v1", json={"type": "GET_STATE"}) as r:
                assert r.status == 200, r.status
                await r.read()
        else:
            async with s.get(f"http://{http}/drover/status") as r:
                assert r.status == 200, r.status
                await r.read()

    async def client() -> None:
        nonlocal done
        if keepalive:
            async with aiohttp.ClientSession(headers=headers) as s:
                while time.perf_counter() < deadline:
                    await one(s)
                    done += 1
        else:
            while time.perf_counter() < deadline:
                async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(force_close=True)) \
                        as s:
                    await one(s)
                done += 1

    t = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.auth")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="open and authenticated alternate; the best round counts")
    args = p.parse_args()

    print("authentication alone (parse Basic, look up, compare):")
    print(f"  {'principals':>10}  {'us/call':>8}")
    for n in (1, 1_000, 10_000):
        print(f"  {n:>10,}  {check_alone(n):8.2f}")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cred = Credential("bench", "bench-secret-0123456789")
        files.write_credentials(tmp / "credentials.json", [cred])
        (tmp / "acls.json").write_text(json.dumps({"view_frameworks": [
            {"principals": {"values": ["bench"]}, "users": {"values": ["nobody"]}}]}))
        masters = {secure: start_master(tmp, secure) for secure in (False, True)}
        headers = {secure: {"Authorization": cred.basic_header()} if secure else {} for secure in (False, True)}
        best: dict[tuple[str, bool], float] = {}
        whats = {"status, keep-alive": "status", "GET_STATE, keep-alive": "GET_STATE",
                 "status, new connection": "status, new connection"}
        try:
            for secure, (_, http) in masters.items():
                asyncio.run(wait_ready(http, headers[secure]))
            # Alternating, best of rounds: other load on the machine hits both alike.
            for _ in range(args.rounds):
                for what, kind in whats.items():
                    for secure, (_, http) in masters.items():
                        r = asyncio.run(rate(http, headers[secure], kind, args.seconds, args.concurrency))
                        best[(what, secure)] = max(best.get((what, secure), 0.0), r)
        finally:
            for proc, _ in masters.values():
                proc.terminate()
                proc.wait()
        rows = [(w, s, r) for (w, s), r in best.items()]
    print(f"\nover HTTP, one replica, {args.concurrency} concurrent clients, {args.seconds:g} s each, best of "
          f"{args.rounds}:")
    print(f"  {'call':<24} {'open calls/s':>13} {'authenticated':>14} {'cost/call':>10}")
    by = {(w, s): r for w, s, r in rows}
    for what in dict.fromkeys(w for w, _, _ in rows):
        base, auth = by[(what, False)], by[(what, True)]
        print(f"  {what:<24} {base:13.0f} {auth:14.0f} {(1 / auth - 1 / base) * 1e6:8.0f}us")


if __name__ == "__main__":
    main()
