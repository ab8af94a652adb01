"""One HTTP or TCP probe, as a program: what the agent runs inside a task's network namespace (agent/probes.py,
`nsenter --net=/proc/PID/ns/net python -S agent/probe.py ...`) for a task on the BRIDGE or NONE network, where the
task's 127.0.0.1 is not the host's. Standard library only (started with -S, so it starts fast).

    probe.py http SCHEME HOST PORT PATH TIMEOUT   -> {"value": status code} or {"error": why}
    probe.py tcp HOST PORT TIMEOUT                -> {"value": true/false} or {"error": why}

One line of JSON on stdout; exit status 0 whenever that line was written.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys


def http_probe(scheme: str, host: str, port: int, path: str, timeout: float) -> dict:
    try:
        if scheme == "https":
            # As Mesos's `curl -k`: the task's certificate is not verified (it is the task's own endpoint).
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "drover-health-check", "Connection": "close"})
            return {"value": conn.getresponse().status}
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        return {"error": f"HTTP request to {host}:{port}{path} failed: {e or type(e).__name__}"[:1000]}


def tcp_probe(host: str, port: int, timeout: float) -> dict:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {"value": True}
    except socket.timeout:
        return {"error": f"TCP connection to {host}:{port} timed out"}
    except OSError:
        return {"value": False}


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "http":
            out = http_probe(argv[1], argv[2], int(argv[3]), argv[4], float(argv[5]))
        elif argv[0] == "tcp":
            out = tcp_probe(argv[1], int(argv[2]), float(argv[3]))
        else:
            raise ValueError(argv[0])
    except (IndexError, ValueError) as e:
        print(json.dumps({"error": f"bad probe arguments: {e}"}))
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
