"""`drover execute`: run a command as N tasks through the scheduler API and exit with their outcome.

Like `mesos-execute`, it is an ordinary framework: it speaks the public Mesos v1
HTTP API (SUBSCRIBE, ACCEPT, ACKNOWLEDGE, TEARDOWN) and knows nothing of
Drover's internals. Exit status: 0 if every task finished, 1 if any did not,
2 on usage or connection errors. With an `ssl_context` (drover execute --tls-ca) it speaks HTTPS and follows
redirects to the leader on HTTPS too (docs/tls.md).
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import aiohttp

from drover.recordio import RecordIODecoder
from drover.security.credentials import Credential
from eventstore.vocab import TERMINAL_STATES, TaskState

# A task that reconciles as TASK_UNKNOWN is over for a framework too: the master has no record of it.
TERMINAL = TERMINAL_STATES | {TaskState.UNKNOWN}


class ExecuteError(Exception):
    pass


def _scalar(offer: dict, name: str) -> float:
    return sum(r.get("scalar", {}).get("value", 0.0) for r in offer.get("resources", [])
               if r.get("name") == name and r.get("type") == "SCALAR")


async def execute(master: str, command: str, *, image: str | None = None, cpus: float = 0.1, mem: float = 32.0,
                  instances: int = 1, name: str = "drover-execute", timeout: float = 300.0,
                  out=sys.stdout, user: str = "root", credential: Credential | None = None,
                  ssl_context: ssl.SSLContext | None = None) -> int:
    finals: dict[str, str] = {}
    launched = 0
    scheme = "https" if ssl_context is not None else "http"
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    # With a credential every call carries HTTP Basic; the master then sets FrameworkInfo.principal to it.
    headers = {"Authorization": credential.basic_header()} if credential is not None else {}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        target = master
        for _ in range(10):  # follow redirects to the leader
            body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {
                "user": user, "name": name, "failover_timeout": 0.0,
                "capabilities": [{"type": "TASK_KILLING_STATE"}]}}}
            resp = await session.post(f"{scheme}://{target}/api/v1/scheduler", json=body, allow_redirects=False,
                                      headers={"Accept": "application/json"})
            if resp.status == 307:
                target = resp.headers["Location"].lstrip("/").split("/", 1)[0]
                resp.release()
                continue
            if resp.status == 503:
                resp.release()
                await asyncio.sleep(0.5)
                continue
            break
        if resp.status == 401:
            raise ExecuteError(f"SUBSCRIBE to {target} failed: HTTP 401, not authenticated "
                               f"({resp.headers.get('Drover-Auth-Error', 'credentials required')}; see --credentials)")
        if resp.status != 200:
            raise ExecuteError(f"SUBSCRIBE to {target} failed: HTTP {resp.status} {await resp.text()}")
        stream_id = resp.headers["Mesos-Stream-Id"]
        fid = None

        async def call(payload: dict) -> None:
            payload["framework_id"] = {"value": fid}
            async with session.post(f"{scheme}://{target}/api/v1/scheduler", json=payload,
                                    headers={"Mesos-Stream-Id": stream_id}) as r:
                if r.status >= 300:
                    raise ExecuteError(f"{payload['type']} failed: HTTP {r.status} {await r.text()}")

        async def events():
            decoder = RecordIODecoder()
            async for chunk in resp.content.iter_any():
                for record in decoder.feed(chunk):
                    yield record

        async def run() -> None:
            nonlocal fid, launched
            async for e in events():
                t = e["type"]
                if t == "SUBSCRIBED":
                    fid = e["subscribed"]["framework_id"]["value"]
                    print(f"subscribed as framework {fid} on {target}", file=out)
                elif t == "ERROR":
                    raise ExecuteError(e["error"]["message"])
                elif t == "OFFERS":
                    for offer in e["offers"]["offers"]:
                        tasks = []
                        c, m = _scalar(offer, "cpus"), _scalar(offer, "mem")
                        while launched < instances and c >= cpus - 1e-9 and m >= mem - 1e-9:
                            tid = f"{name}-{launched}"
                            ti = {"name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                                  "resources": [
                                      {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                                      {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}}],
                                  "command": {"value": command, "shell": True}}
                            if image:
                                ti["container"] = {"type": "DOCKER", "docker": {"image": image}}
                            tasks.append(ti)
                            launched += 1
                            c, m = c - cpus, m - mem
                        if tasks:
                            await call({"type": "ACCEPT", "accept": {
                                "offer_ids": [offer["id"]],
                                "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                                "filters": {"refuse_seconds": 1.0}}})
                        else:
                            await call({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]],
                                                                        "filters": {"refuse_seconds": 60.0}}})
                elif t == "UPDATE":
                    st = e["update"]["status"]
                    tid, state = st["task_id"]["value"], st["state"]
                    msg = f" ({st['message']})" if st.get("message") else ""
                    print(f"task {tid}: {state}{msg}", file=out)
                    if "uuid" in st:
                        await call({"type": "ACKNOWLEDGE", "acknowledge": {
                            "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}})
                    if state in TERMINAL:
                        finals[tid] = state
                        if len(finals) >= instances:
                            return
            raise ExecuteError("the master closed the event stream")

        try:
            await asyncio.wait_for(run(), timeout)
        except asyncio.TimeoutError:
            print(f"timed out after {timeout:g}s with {len(finals)}/{instances} tasks done", file=out)
            return 1
        finally:
            if fid is not None:
                try:
                    await call({"type": "TEARDOWN"})
                except (ExecuteError, aiohttp.ClientError):
                    pass
            resp.close()
    ok = all(s == "TASK_FINISHED" for s in finals.values())
    return 0 if ok else 1
