"""`drover task log` and `drover task exec`: a task's output, and a command in its container (like `nomad alloc
logs/exec`, `kubectl logs/exec`).

    drover task log TASK [--framework FID] [--stream stdout|stderr] [--follow] --master HOST:PORT
    drover task exec TASK [--framework FID] --master HOST:PORT -- CMD [ARG...]

The task and its agent are found through the master's operator API (GET_TASKS, GET_AGENTS on `POST /api/v1`,
following 307s to the leader); then the agent is asked directly: its `/state` for the task's sandbox and
container, `/files/read.json` for the log, `POST /api/v1` LAUNCH_NESTED_CONTAINER_SESSION + WAIT_NESTED_CONTAINER
for exec. `exec` exits with the command's exit status (128+N for a signal N). Errors: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import ssl
import sys
import uuid
from dataclasses import dataclass

import aiohttp

from drover.errors import UsageError
from drover.recordio import RecordIODecoder
from drover.security.credentials import Credential

READ_PAGE = 64 * 1024
FOLLOW_POLL = 0.5  # seconds between reads of a followed log
RUNNING = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from drover.cli import _addr, client_auth_flags

    t = sub.add_parser("task", help="a task's logs, or a command in its container")
    tsub = t.add_subparsers(dest="task_cmd", required=True)
    lg = tsub.add_parser("log", help="print a task's stdout (or stderr)")
    ex = tsub.add_parser("exec", help="run a command in a task's container, as the task's user")
    for p in (lg, ex):
        p.add_argument("task", metavar="TASK", help="the task id")
        p.add_argument("--framework", metavar="FID", default=None, help="the task's framework (when ids clash)")
        p.add_argument("--master", type=_addr, default="127.0.0.1:5050", help="a master (default 127.0.0.1:5050)")
        client_auth_flags(p, "talk to the master and the agent")
        p.set_defaults(run=run)
    lg.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    lg.add_argument("--follow", "-f", action="store_true",
                    help="keep printing new output until the task ends (or Ctrl-C)")
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    _EXEC_PARSER.append(ex)


# The `exec` subparser: options given after TASK land in its REMAINDER (`exec TASK --master M -- CMD`), and are parsed
# again with it (run()).
_EXEC_PARSER: list[argparse.ArgumentParser] = []


@dataclass
class Located:
    framework_id: str
    task_id: str
    agent: str  # HOST:PORT of its agent
    directory: str
    container: str
    state: str


class Client:
    def __init__(self, session: aiohttp.ClientSession, scheme: str):
        self.session = session
        self.scheme = scheme

    async def _check(self, resp: aiohttp.ClientResponse, what: str) -> None:
        if resp.status == 401:
            raise UsageError(f"{what}: not authenticated (401): pass --credentials FILE or --principal/--secret")
        if resp.status == 403:
            raise UsageError(f"{what}: not authorized (403)")
        if resp.status >= 300:
            raise UsageError(f"{what} answered {resp.status}: {(await resp.text())[:200]}")

    async def master_call(self, master: str, call: dict) -> dict:
        target = master
        for _ in range(10):
            async with self.session.post(f"{self.scheme}://{target}/api/v1", json=call, allow_redirects=False,
                                         headers={"Accept": "application/json"}) as resp:
                if resp.status == 307:
                    target = resp.headers.get("Location", "").lstrip("/").split("/", 1)[0] or target
                    continue
                if resp.status == 503:
                    await asyncio.sleep(0.5)
                    continue
                await self._check(resp, f"the master at {target}")
                return await resp.json(content_type=None)
        raise UsageError(f"no leading master found from {master}")

    async def agent_get(self, agent: str, path: str, params: dict | None = None, missing: dict | None = None) -> dict:
        """GET a JSON document from an agent; `missing` (if given) is the answer to a 404."""
        async with self.session.get(f"{self.scheme}://{agent}{path}", params=params) as resp:
            if resp.status == 404 and missing is not None:
                return missing
            await self._check(resp, f"the agent at {agent}")
            return await resp.json(content_type=None)


async def locate(c: Client, master: str, task_id: str, framework_id: str | None) -> Located:
    tasks = (await c.master_call(master, {"type": "GET_TASKS"})).get("get_tasks", {})
    found = [t for key in ("tasks", "completed_tasks") for t in tasks.get(key, [])
             if t["task_id"]["value"] == task_id and framework_id in (None, t["framework_id"]["value"])]
    fids = {t["framework_id"]["value"] for t in found}
    if not found:
        raise UsageError(f"no task {task_id!r}" + (f" in framework {framework_id}" if framework_id else "") +
                         " is known to the master (or you may not see it)")
    if len(fids) > 1:
        raise UsageError(f"several frameworks have a task {task_id!r}: pick one with --framework "
                         f"({', '.join(sorted(fids))})")
    task = found[0]
    agent_id = task["agent_id"]["value"]
    agents = (await c.master_call(master, {"type": "GET_AGENTS"})).get("get_agents", {}).get("agents", [])
    agent = next((a for a in agents if a["agent_info"]["id"]["value"] == agent_id), None)
    if agent is None:
        raise UsageError(f"the agent of task {task_id!r} ({agent_id}) is not known to the master any more")
    addr = agent["pid"].partition("@")[2] or f"{agent['agent_info']['hostname']}:{agent['agent_info']['port']}"
    fid = task["framework_id"]["value"]
    state = await c.agent_get(addr, "/state")
    for fw in state.get("frameworks", []) + state.get("completed_frameworks", []):
        if fw["id"] != fid:
            continue
        for ex in fw.get("executors", []) + fw.get("completed_executors", []):
            if ex["id"] == task_id:
                live = bool(ex.get("tasks"))
                return Located(fid, task_id, addr, ex["directory"], ex.get("container", ""),
                               "TASK_RUNNING" if live else task.get("state", ""))
    raise UsageError(f"the agent at {addr} no longer holds task {task_id!r} (nor its sandbox)")


async def still_running(c: Client, loc: Located) -> bool:
    state = await c.agent_get(loc.agent, "/state")
    return any(t["task_id"] == loc.task_id and t["framework_id"] == loc.framework_id and t["state"] in RUNNING
               for t in state.get("tasks", []))


async def log(c: Client, loc: Located, stream: str, follow: bool, out=None) -> int:
    out = out or sys.stdout.buffer
    path = f"{loc.directory}/{stream}"
    offset = 0
    idle = 0
    while True:
        # Followed, a file not there yet (a task that has just started) is an empty one.
        page = await c.agent_get(loc.agent, "/files/read.json",
                                 {"path": path, "offset": str(offset), "length": str(READ_PAGE)},
                                 missing={"data": ""} if follow else None)
        data = page.get("data", "")
        if follow and isinstance(page.get("offset"), int) and page["offset"] < offset:
            offset = 0  # the agent rotated the log (cut it, keeping a copy in stdout.1): start over
            continue
        if data:
            out.write(data.encode())
            out.flush()
            offset = int(page.get("next_offset", offset + len(data.encode())))
            continue
        if not follow:
            return 0
        idle += 1
        if idle % 4 == 0 and not await still_running(c, loc):
            # one last read: what it wrote before it ended
            page = await c.agent_get(loc.agent, "/files/read.json",
                                     {"path": path, "offset": str(offset), "length": str(READ_PAGE)},
                                     missing={"data": ""})
            if page.get("data"):
                continue
            return 0
        await asyncio.sleep(FOLLOW_POLL)


async def exec_(c: Client, loc: Located, argv: list[str]) -> int:
    session_id = str(uuid.uuid4())
    cid = {"parent": {"value": loc.container}, "value": session_id}
    call = {"type": "LAUNCH_NESTED_CONTAINER_SESSION", "launch_nested_container_session": {
        "container_id": cid, "command": {"shell": False, "value": argv[0], "arguments": argv}}}
    url = f"{c.scheme}://{loc.agent}/api/v1"
    async with c.session.post(url, json=call, headers={"Accept": "application/recordio",
                                                       "Message-Accept": "application/json"}) as resp:
        await c._check(resp, f"the agent at {loc.agent}")
        decoder = RecordIODecoder()
        async for chunk in resp.content.iter_any():
            for record in decoder.feed(chunk):
                data = record.get("data") or {}
                if record.get("type") == "DATA":
                    sink = sys.stdout.buffer if data.get("type") == "STDOUT" else sys.stderr.buffer
                    sink.write(base64.b64decode(data.get("data", "")))
                    sink.flush()
    async with c.session.post(url, json={"type": "WAIT_NESTED_CONTAINER",
                                         "wait_nested_container": {"container_id": cid}}) as resp:
        await c._check(resp, f"the agent at {loc.agent}")
        status = int((await resp.json(content_type=None))["wait_nested_container"].get("exit_status", 0))
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


async def main(args: argparse.Namespace, credential: Credential | None, ssl_context: ssl.SSLContext | None) -> int:
    headers = {"Authorization": credential.basic_header()} if credential is not None else {}
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    async with aiohttp.ClientSession(headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
        c = Client(session, "https" if ssl_context is not None else "http")
        loc = await locate(c, args.master, args.task, args.framework)
        if args.task_cmd == "log":
            return await log(c, loc, args.stream, args.follow)
        if loc.state not in RUNNING or not loc.container:
            raise UsageError(f"task {args.task!r} is not running ({loc.state or 'no container'})")
        return await exec_(c, loc, args.command)


def run(args: argparse.Namespace) -> int:
    from drover.cli import _client_tls, client_credential

    if args.task_cmd == "exec":
        if "--" in args.command:
            # `exec TASK [OPTIONS] -- CMD`: the options between TASK and `--` are the subcommand's own
            i = args.command.index("--")
            options, args.command = args.command[:i], args.command[i + 1:]
            if options and _EXEC_PARSER:
                again = _EXEC_PARSER[0].parse_args([*options, "--", args.task])
                for key, value in vars(again).items():
                    if key not in ("command", "task"):
                        setattr(args, key, value)
        elif args.command and args.command[0].startswith("-"):
            raise UsageError("expected the command to run after --, e.g. drover task exec TASK -- ls -l")
        if not args.command:
            raise UsageError("expected the command to run after --, e.g. drover task exec TASK -- ls -l")
    credential = client_credential(args)
    ssl_context = _client_tls(args)
    try:
        return asyncio.run(main(args, credential, ssl_context))
    except aiohttp.ClientSSLError as e:
        raise UsageError(f"TLS: {e}") from None
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise UsageError(f"cannot reach {args.master} or the task's agent: {e or type(e).__name__}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"unexpected answer: {e!r}") from None
