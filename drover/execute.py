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

from drover.scheduler_session import SchedulerError, SchedulerSession, scalar
from drover.security.credentials import Credential
from eventstore.vocab import TERMINAL_STATES, TaskState

# A task that reconciles as TASK_UNKNOWN is over for a framework too: the master has no record of it.
TERMINAL = TERMINAL_STATES | {TaskState.UNKNOWN}


class ExecuteError(Exception):
    pass


async def execute(master: str, command: str, *, image: str | None = None, cpus: float = 0.1, mem: float = 32.0,
                  instances: int = 1, name: str = "drover-execute", timeout: float = 300.0,
                  out=sys.stdout, user: str = "root", credential: Credential | None = None,
                  ssl_context: ssl.SSLContext | None = None) -> int:
    finals: dict[str, str] = {}
    launched = 0
    told_waiting = False
    info = {"user": user, "name": name, "failover_timeout": 0.0, "capabilities": [{"type": "TASK_KILLING_STATE"}]}
    async with SchedulerSession(master, info, credential=credential, ssl_context=ssl_context) as s:
        try:
            await s.subscribe()
        except SchedulerError as e:
            raise ExecuteError(str(e)) from None

        async def run() -> None:
            nonlocal launched, told_waiting
            async for e in s.events():
                t = e["type"]
                if t == "SUBSCRIBED":
                    print(f"subscribed as framework {s.framework_id} on {s.target}", file=out)
                elif t == "OFFERS":
                    for offer in e["offers"]["offers"]:
                        tasks = []
                        c, m = scalar(offer, "cpus"), scalar(offer, "mem")
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
                            await s.call({"type": "ACCEPT", "accept": {
                                "offer_ids": [offer["id"]],
                                "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                                "filters": {"refuse_seconds": 1.0}}})
                        else:
                            if launched < instances and not told_waiting:
                                # Otherwise nothing is printed until --timeout: say what it waits for, once.
                                told_waiting = True
                                print(f"waiting for an offer of cpus:{cpus:g};mem:{mem:g} (declined one of cpus:{c:g};"
                                      f"mem:{m:g}); why: drover why framework {s.framework_id} --master {master}",
                                      file=out)
                            await s.call({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]],
                                                                          "filters": {"refuse_seconds": 60.0}}})
                elif t == "UPDATE":
                    st = e["update"]["status"]
                    tid, state = st["task_id"]["value"], st["state"]
                    msg = f" ({st['message']})" if st.get("message") else ""
                    print(f"task {tid}: {state}{msg}", file=out)
                    await s.acknowledge(st)
                    if state in TERMINAL:
                        finals[tid] = state
                        if len(finals) >= instances:
                            return

        try:
            await asyncio.wait_for(run(), timeout)
        except asyncio.TimeoutError:
            print(f"timed out after {timeout:g}s with {len(finals)}/{instances} tasks done", file=out)
            return 1
        except SchedulerError as e:
            raise ExecuteError(str(e)) from None
        finally:
            await s.teardown()
    ok = all(s == "TASK_FINISHED" for s in finals.values())
    return 0 if ok else 1
