"""The agent's HTTP API, Mesos-shaped (docs/services.md, "Logs, files and exec"; docs/security.md):

* `/state`, `/state.json`, `/slave(1)/state`, `/slave(1)/state.json`: Mesos's agent state (frameworks -> executors
  -> tasks, each executor's sandbox `directory`), plus Drover's own `master` and `tasks` (kept for its tools);
* `/files/browse.json`, `/files/read.json`, `/files/download` (also under `/files/`... `/slave(1)`-less, as Mesos):
  confined to task sandboxes (agent/sandbox_files.py);
* `/monitor/statistics.json`: each running task's ResourceStatistics, from podman's stats;
* `POST /api/v1`: GET_STATE, GET_CONTAINERS, LAUNCH_NESTED_CONTAINER_SESSION (a command in a task's container,
  its output streamed as RecordIO ProcessIO records, backed by podman exec) and WAIT_NESTED_CONTAINER.

Authorization (`--acls`): the state views follow view_frameworks / view_tasks (as the master's), reading a task's
sandbox needs `access_sandboxes` and a session in its container `launch_nested_container_sessions`, both judged
by the user the task runs as (a task naming none is judged as `root`, as run_tasks judges it).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from agent import podman_api, rules, sandbox_files
from agent.checkpoint import TaskRecord
from master.codec import check_status_out
from drover.security import http as security
from drover.security.acls import ACLs, authorized, authorized_for_all
from eventstore.resources import Resources
from eventstore.values import is_valid_id
from eventstore.vocab import TERMINAL_STATES

if TYPE_CHECKING:
    from agent.agent import Agent

log = structlog.get_logger("drover.agent.api")

VERSION = "1.11.0"  # the Mesos API version Drover speaks
MAX_BODY = 256 * 1024  # bytes of one /api/v1 call
MAX_SESSIONS = 16  # nested container sessions running at once
MAX_SESSIONS_PER_PRINCIPAL = 4  # of them, one principal's (anonymous callers are one): nobody takes every slot
MAX_EXITS = 1024  # exit statuses of finished sessions remembered (for WAIT_NESTED_CONTAINER)
MAX_ARGS = 1024
MAX_COMMAND = 64 * 1024  # bytes of a session's command and arguments
DOWNLOAD_CHUNK = 64 * 1024
SESSION_CHECK = 1.0  # seconds between looks at a session's client connection


def _problem(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


class AgentAPI:
    def __init__(self, agent: "Agent"):
        self.agent = agent
        self.started = time.time()
        self.sessions: dict[str, asyncio.Future[int]] = {}  # session container id -> its wait status
        self.exits: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.running = 0
        self.running_by: collections.Counter[str | None] = collections.Counter()  # running sessions per principal

    # ---- plumbing ------------------------------------------------------------------------------------------
    @property
    def acls(self) -> ACLs:
        return self.agent.config.acls

    @property
    def root(self) -> Path:
        return Path(os.path.realpath(self.agent.config.work_dir / "sandboxes"))

    def add_routes(self, app: web.Application) -> None:
        for path in ("/state", "/state.json", "/slave(1)/state", "/slave(1)/state.json"):
            app.router.add_get(path, self.state)
        for prefix in ("/files", "/slave(1)/files"):
            app.router.add_get(f"{prefix}/browse.json", self.browse)
            app.router.add_get(f"{prefix}/browse", self.browse)
            app.router.add_get(f"{prefix}/read.json", self.read)
            app.router.add_get(f"{prefix}/read", self.read)
            app.router.add_get(f"{prefix}/download", self.download)
            app.router.add_get(f"{prefix}/download.json", self.download)
        for path in ("/monitor/statistics", "/monitor/statistics.json", "/slave(1)/monitor/statistics",
                     "/slave(1)/monitor/statistics.json"):
            app.router.add_get(path, self.statistics)
        app.router.add_post("/api/v1", self.api)
        app.router.add_post("/slave(1)/api/v1", self.api)

    def records(self) -> list[TaskRecord]:
        """Every task the agent holds or recently forgot (those are completed), never refused launches."""
        held = [r for r in self.agent.tasks.values() if not r.refused]
        keys = {(r.framework_id, r.spec.task_id) for r in held}
        gone = []
        for r in reversed(self.agent.completed):  # the latest of a reused task id only: its sandbox is the one
            if (r.framework_id, r.spec.task_id) not in keys:
                keys.add((r.framework_id, r.spec.task_id))
                gone.append(r)
        return held + gone

    @staticmethod
    def user_of(rec: TaskRecord) -> str | None:
        try:
            return rules.task_user(rec.spec.command.user, rec.framework_info)
        except rules.UserProblem:
            return None

    def sees_framework(self, principal: str | None, rec: TaskRecord) -> bool:
        user = rec.framework_info.get("user") if isinstance(rec.framework_info, dict) else None
        return authorized(self.acls, "view_frameworks", principal, user or None)

    def sees_task(self, principal: str | None, rec: TaskRecord) -> bool:
        return self.sees_framework(principal, rec) and \
            authorized(self.acls, "view_tasks", principal, self.user_of(rec))

    def may(self, action: str, principal: str | None, rec: TaskRecord | None) -> bool:
        """access_sandboxes / launch_nested_container_sessions on a task, judged by its user (none: root); a
        sandbox the agent no longer knows the task of needs the action on every user."""
        actions = session_actions(self.acls) if action == SESSION else (action,)
        if rec is None:
            return all(authorized_for_all(self.acls, a, principal) for a in actions)
        return all(authorized(self.acls, a, principal, self.user_of(rec) or "root") for a in actions)

    def sandbox(self, rec: TaskRecord) -> str:
        return str(self.root / rec.framework_id / rec.spec.task_id)

    def record(self, framework_id: str, task_id: str) -> TaskRecord | None:
        return next((r for r in self.records() if r.framework_id == framework_id and r.spec.task_id == task_id),
                    None)

    # ---- state ---------------------------------------------------------------------------------------------
    @staticmethod
    def resources_model(res: Resources) -> dict[str, Any]:
        """Mesos's `model(Resources)`: scalars as numbers, ranges as "[a-b, c-d]"."""
        out: dict[str, Any] = {"cpus": 0.0, "mem": 0.0, "disk": 0.0, "gpus": 0.0}
        for r in res:
            if r.ranges:
                out[r.name] = "[" + ", ".join(f"{a}-{b}" for a, b in res.ranges(r.name)) + "]"
            else:
                out[r.name] = res.scalar(r.name)
        return out

    def checkpointed_model(self) -> dict[str, list[dict]]:
        from master.codec import resources_out

        res = self.agent.checkpointed
        return {role: resources_out([r for r in res if r.role == role], ("RESERVATION_REFINEMENT",), dynamic=res)
                for role in sorted({r.role for r in res})}

    def task_model(self, rec: TaskRecord) -> dict:
        st = rec.state
        d: dict[str, Any] = {
            "id": rec.spec.task_id, "name": rec.spec.name, "framework_id": rec.framework_id, "executor_id": "",
            "slave_id": self.agent.cp.agent_id or "", "state": st, "role": rec.spec.role,
            "resources": self.resources_model(Resources(rec.spec.resources)),
            # the updates not acknowledged yet (the agent keeps no others)
            "statuses": [{"state": s.state, "timestamp": s.timestamp,
                          **({"container_status": {"container_id": {"value": rec.container_id}}}
                             if rec.container_id else {}),
                          **({"healthy": s.healthy} if s.healthy is not None else {}),
                          **({"check_status": check_status_out(s.check_status)} if s.check_status else {})}
                         for s in rec.unacked],
        }
        if rec.spec.labels:
            d["labels"] = [{"key": lb.key, "value": lb.value} for lb in rec.spec.labels]
        if (user := self.user_of(rec)) is not None:
            d["user"] = user
        return d

    def executor_model(self, rec: TaskRecord, task: dict | None) -> dict:
        done = rec.state in TERMINAL_STATES
        tid = rec.spec.task_id
        return {"id": tid, "name": rules.command_executor_name(tid, rec.spec.command), "source": tid,
                "type": "COMMAND", "container": rec.container_id or "", "directory": self.sandbox(rec),
                "role": rec.spec.role, "resources": self.resources_model(Resources(rec.spec.resources)),
                "tasks": [task] if task is not None and not done else [], "queued_tasks": [],
                "completed_tasks": [task] if task is not None and done else []}

    def group_executor_model(self, rec: TaskRecord) -> dict:
        """A task group's executor, as Mesos shows its default executor: its tasks are added by the caller."""
        ex = rec.spec.executor
        assert ex is not None
        return {"id": ex.executor_id, "name": ex.name or "", "source": "", "type": "DEFAULT",
                "container": self.agent._pod_name(rec),
                "directory": str(self.agent.config.work_dir / "executors" / rec.framework_id / ex.executor_id),
                "role": rec.spec.role, "resources": self.resources_model(Resources(ex.resources)),
                "tasks": [], "queued_tasks": [], "completed_tasks": []}

    @staticmethod
    def framework_model(fid: str, info: dict) -> dict:
        return {"id": fid, "name": info.get("name", ""), "user": info.get("user", ""),
                "checkpoint": bool(info.get("checkpoint", False)), "hostname": "", "role": "*",
                "failover_timeout": 0, "capabilities": [c.get("type") for c in info.get("capabilities") or []
                                                        if isinstance(c, dict)],
                "executors": [], "completed_executors": []}

    def state_json(self, principal: str | None) -> dict:
        cfg = self.agent.config
        frameworks: dict[str, dict] = {}
        active: set[str] = set()
        legacy = []
        held_ids = {id(r) for r in self.agent.tasks.values()}
        groups: dict[tuple[str, str, str | None], dict] = {}
        for rec in self.records():
            if not self.sees_framework(principal, rec):
                continue
            info = rec.framework_info if isinstance(rec.framework_info, dict) else {}
            fw = frameworks.setdefault(rec.framework_id, self.framework_model(rec.framework_id, info))
            task = self.task_model(rec) if self.sees_task(principal, rec) else None
            done = rec.state in TERMINAL_STATES
            if task is not None and rec.spec.executor is not None:
                # A task group's tasks under their (default) executor, placed once all of them are seen.
                task["executor_id"] = rec.spec.executor.executor_id
                gkey = (rec.framework_id, rec.spec.executor.executor_id, rec.launch_id)
                if gkey not in groups:
                    groups[gkey] = self.group_executor_model(rec)
                groups[gkey]["completed_tasks" if done else "tasks"].append(task)
            elif task is not None:  # an executor (its sandbox, its container) is shown with its task only
                fw["completed_executors" if done else "executors"].append(self.executor_model(rec, task))
            if id(rec) in held_ids:
                active.add(rec.framework_id)
                if task is not None:
                    legacy.append({"framework_id": rec.framework_id, "task_id": rec.spec.task_id,
                                   "state": rec.state, "container_id": rec.container_id,
                                   "unacknowledged": len(rec.unacked)})
        for (fid, _, _), model in groups.items():  # an executor is live while any task of its group is
            frameworks[fid]["executors" if model["tasks"] else "completed_executors"].append(model)
        master = self.agent.master
        # the flags' resources with what the master checkpointed here (dynamic reservations, volumes) applied
        dyn = self.agent.checkpointed
        total = cfg.resources - dyn.as_unreserved() + dyn if dyn and cfg.resources.contains(dyn.as_unreserved()) \
            else cfg.resources
        d: dict[str, Any] = {
            "version": VERSION, "start_time": self.started, "id": self.agent.cp.agent_id or "",
            "pid": f"slave(1)@{cfg.http}", "hostname": cfg.hostname,
            "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
            "resources": self.resources_model(total),
            "unreserved_resources": self.resources_model(total.unreserved()),
            "reserved_resources": {role: self.resources_model(Resources(r for r in total if r.role == role))
                                   for role in sorted({r.role for r in total} - {"*"})},
            "attributes": {lb.key: lb.value for lb in cfg.attributes},
            # What the master checkpointed here (dynamic reservations and persistent volumes), by role, in the v1
            # form (Mesos's agent shows its checkpointed resources the same way)
            "reserved_resources_full": self.checkpointed_model(),
            "master_hostname": master.rpartition(":")[0] if master else "",
            "frameworks": [fw for fid, fw in frameworks.items() if fid in active],
            "completed_frameworks": [fw for fid, fw in frameworks.items() if fid not in active],
            # Drover's own: the leader this agent is linked to (HOST:PORT), and its tasks in brief
            "master": master, "tasks": legacy,
        }
        if authorized_for_all(self.acls, "view_flags", principal):
            d["flags"] = {"master": ",".join(cfg.masters), "http": cfg.http, "work_dir": str(cfg.work_dir),
                          "hostname": cfg.hostname, "resources": cfg.resources.format(),
                          "authenticate_http_readonly": str(cfg.credentials is not None).lower(),
                          "task_pids_limit": str(cfg.task_pids_limit),
                          # Mesos's names (and its duration format for the interval)
                          "enforce_container_disk_quota": str(cfg.enforce_container_disk_quota).lower(),
                          "container_disk_watch_interval": f"{cfg.container_disk_watch_interval:g}secs"}
        return d

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state_json(security.principal_of(request)))

    # ---- files ---------------------------------------------------------------------------------------------
    def _target(self, request: web.Request) -> sandbox_files.Target:
        target = sandbox_files.resolve(self.root, request.query.get("path"))
        rec = self.record(target.framework_id, target.task_id)
        if not self.may("access_sandboxes", security.principal_of(request), rec):
            raise sandbox_files.FilesError(403, "403 Forbidden.")
        return target

    async def browse(self, request: web.Request) -> web.Response:
        try:
            target = self._target(request)
            return web.json_response(await asyncio.to_thread(sandbox_files.browse, self.root, target))
        except sandbox_files.FilesError as e:
            return _problem(e.status, e.message)

    async def read(self, request: web.Request) -> web.Response:
        try:
            offset = sandbox_files.parse_int(request.query.get("offset"), "offset", -1)
            length = sandbox_files.parse_int(request.query.get("length"), "length", -1)
            target = self._target(request)
            return web.json_response(await asyncio.to_thread(sandbox_files.read, self.root, target, offset, length))
        except sandbox_files.FilesError as e:
            return _problem(e.status, e.message)

    async def download(self, request: web.Request) -> web.StreamResponse:
        try:
            target = self._target(request)
            fd, st = await asyncio.to_thread(sandbox_files.open_file, self.root, target)
        except sandbox_files.FilesError as e:
            return _problem(e.status, e.message)
        try:
            resp = web.StreamResponse(headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(st.st_size),
                "Content-Disposition": content_disposition(target.path.name)})
            await resp.prepare(request)
            sent = 0
            while sent < st.st_size:  # the size it had when opened: a growing log does not keep us here
                chunk = await asyncio.to_thread(os.pread, fd, min(DOWNLOAD_CHUNK, st.st_size - sent), sent)
                if not chunk:
                    break
                await resp.write(chunk)
                sent += len(chunk)
            return resp
        finally:
            os.close(fd)

    # ---- statistics ----------------------------------------------------------------------------------------
    async def container_stats(self, recs: list[TaskRecord]) -> dict[str, dict]:
        running = [r for r in recs if r.container_id and r.state not in TERMINAL_STATES]
        sock = self.agent.containerizer.socket_path
        ids = [r.container_id for r in running if r.container_id]
        try:
            raw = await podman_api.stats(sock, ids)
        except Exception as e:
            # One container that just exited fails podman's whole answer: ask for each alone (the service
            # restarting: no statistics now).
            log.debug("podman stats failed", error=str(e))
            raw = {}
            for got in await asyncio.gather(*(podman_api.stats(sock, [cid]) for cid in ids), return_exceptions=True):
                if isinstance(got, dict):
                    raw.update(got)
        now = time.time()
        out = {}
        for r in running:
            s = raw.get(r.container_id or "")
            if s is None:
                continue
            cpus, mem_mb = rules.container_limits(Resources(r.spec.resources).scalar("cpus") or None,
                                                  Resources(r.spec.resources).scalar("mem") or None)
            total, system = int(s.get("CPUNano") or 0), int(s.get("CPUSystemNano") or 0)
            out[r.container_id or ""] = {
                "timestamp": now, "cpus_user_time_secs": max(0, total - system) / 1e9,
                "cpus_system_time_secs": system / 1e9, "cpus_limit": cpus,
                "mem_rss_bytes": int(s.get("MemUsage") or 0), "mem_total_bytes": int(s.get("MemUsage") or 0),
                "mem_limit_bytes": int(mem_mb * 1024 * 1024), "processes": int(s.get("PIDs") or 0),
                "net_rx_bytes": int(s.get("NetInput") or 0), "net_tx_bytes": int(s.get("NetOutput") or 0)}
            # The sandbox's last measurement (docs/services.md, "Disk limits"): only with the quota enforced, and
            # only for a task that has a `disk` resource.
            if (disk := self.agent.disk_usage.get((r.framework_id, r.spec.task_id))) is not None:
                out[r.container_id or ""].update(disk_used_bytes=disk[0], disk_limit_bytes=disk[1])
        return out

    async def statistics(self, request: web.Request) -> web.Response:
        principal = security.principal_of(request)
        recs = [r for r in self.agent.tasks.values() if not r.refused and self.sees_task(principal, r)]
        stats = await self.container_stats(recs)
        out = []
        for r in recs:
            if (s := stats.get(r.container_id or "")) is not None:
                out.append({"framework_id": r.framework_id, "executor_id": r.spec.task_id,
                            "executor_name": rules.command_executor_name(r.spec.task_id, r.spec.command),
                            "source": r.spec.task_id,
                            "container_id": r.container_id, "statistics": s})
        return web.json_response(out)

    # ---- the v1 agent API ----------------------------------------------------------------------------------
    async def api(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            status = 400 if "Content-Type" not in request.headers else 415
            return _problem(status, "Expecting 'Content-Type' of application/json")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _problem(413, f"Request body larger than {MAX_BODY} bytes")
        try:
            body = await request.content.readexactly(request.content_length) \
                if request.content_length is not None else await _read_bounded(request, MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return _problem(413, f"Request body larger than {MAX_BODY} bytes")
            call = json.loads(body)
        except (ValueError, RecursionError, asyncio.IncompleteReadError):
            return _problem(400, "Failed to parse body into JSON")
        if not isinstance(call, dict) or not isinstance(call.get("type"), str):
            return _problem(400, "Expecting 'type' to be present")
        kind = call["type"]
        principal = security.principal_of(request)
        if kind == "GET_STATE":
            return web.json_response({"type": "GET_STATE", "get_state": self.get_state(principal)})
        if kind == "GET_CONTAINERS":
            return web.json_response({"type": "GET_CONTAINERS",
                                      "get_containers": await self.get_containers(principal)})
        if kind == "LAUNCH_NESTED_CONTAINER_SESSION":
            return await self.launch_session(request, principal, call.get("launch_nested_container_session"))
        if kind == "WAIT_NESTED_CONTAINER":
            return await self.wait_nested(principal, call.get("wait_nested_container"))
        if kind in ("ATTACH_CONTAINER_INPUT", "ATTACH_CONTAINER_OUTPUT"):
            return _problem(501, f"{kind} is not implemented by Drover's agent: a session's output comes on the "
                                 f"LAUNCH_NESTED_CONTAINER_SESSION response, and sessions take no input")
        return _problem(400, f"Unsupported call type {kind[:64]!r}")

    def v1_task(self, rec: TaskRecord) -> dict:
        from master.operator_json import resources as v1_resources

        d: dict[str, Any] = {"name": rec.spec.name, "task_id": {"value": rec.spec.task_id},
                             "framework_id": {"value": rec.framework_id},
                             "agent_id": {"value": self.agent.cp.agent_id or ""}, "state": rec.state,
                             "resources": v1_resources(rec.spec.resources),
                             "statuses": [{"task_id": {"value": rec.spec.task_id}, "state": s.state,
                                           "source": s.source, "timestamp": s.timestamp} for s in rec.unacked]}
        if rec.spec.executor is not None:
            d["executor_id"] = {"value": rec.spec.executor.executor_id}
        if (user := self.user_of(rec)) is not None:
            d["user"] = user
        return d

    def get_state(self, principal: str | None) -> dict:
        launched, terminated, completed = [], [], []
        executors, completed_executors = [], []
        frameworks: dict[str, dict] = {}
        active: set[str] = set()
        held_ids = {id(r) for r in self.agent.tasks.values()}
        for rec in self.records():
            if not self.sees_framework(principal, rec):
                continue
            info = rec.framework_info if isinstance(rec.framework_info, dict) else {}
            fi = {"id": {"value": rec.framework_id}, "user": info.get("user", ""), "name": info.get("name", "")}
            frameworks.setdefault(rec.framework_id, {"framework_info": fi})
            held = id(rec) in held_ids
            if held:
                active.add(rec.framework_id)
            ex = {"executor_info": {"executor_id": {"value": rec.spec.task_id},
                                    "framework_id": {"value": rec.framework_id}, "source": rec.spec.task_id,
                                    "name": rules.command_executor_name(rec.spec.task_id, rec.spec.command)}}
            group = rec.spec.executor
            if group is not None:  # a task group's default executor, listed once (live while a task of it is)
                ex = {"executor_info": {"executor_id": {"value": group.executor_id}, "type": "DEFAULT",
                                        "framework_id": {"value": rec.framework_id}, "name": group.name or ""}}
            done = rec.state in TERMINAL_STATES
            if self.sees_task(principal, rec):
                if group is None or ex not in executors + completed_executors:
                    (completed_executors if done else executors).append(ex)
                elif not done and ex in completed_executors:
                    completed_executors.remove(ex)
                    executors.append(ex)
                (launched if not done else terminated if held else completed).append(self.v1_task(rec))
        tasks: dict[str, list] = {"launched_tasks": launched, "terminated_tasks": terminated,
                                  "completed_tasks": completed}
        return {"get_tasks": {k: v for k, v in tasks.items() if v},
                "get_executors": {k: v for k, v in (("executors", executors),
                                                    ("completed_executors", completed_executors)) if v},
                "get_frameworks": {k: v for k, v in (
                    ("frameworks", [f for fid, f in frameworks.items() if fid in active]),
                    ("completed_frameworks", [f for fid, f in frameworks.items() if fid not in active])) if v}}

    async def get_containers(self, principal: str | None) -> dict:
        recs = [r for r in self.agent.tasks.values()
                if not r.refused and r.container_id and r.state not in TERMINAL_STATES and self.sees_task(principal, r)]
        stats = await self.container_stats(recs)
        out = []
        for r in recs:
            c: dict[str, Any] = {"framework_id": {"value": r.framework_id}, "executor_id": {"value": r.spec.task_id},
                                 "executor_name": rules.command_executor_name(r.spec.task_id, r.spec.command),
                                 "container_id": {"value": r.container_id}}
            if (s := stats.get(r.container_id or "")) is not None:
                c["resource_statistics"] = s
            out.append(c)
        return {"containers": out} if out else {}

    def _session_ids(self, body: object) -> tuple[str, str] | web.Response:
        cid = body.get("container_id") if isinstance(body, dict) else None
        parent = cid.get("parent") if isinstance(cid, dict) else None
        value = cid.get("value") if isinstance(cid, dict) else None
        pvalue = parent.get("value") if isinstance(parent, dict) else None
        if not isinstance(pvalue, str) or not is_valid_id(value):
            return _problem(400, "Expecting 'container_id' with a 'value' (a valid id) and the task's container "
                                 "as its 'parent'")
        return pvalue, str(value)

    def _task_of_container(self, container_id: str) -> TaskRecord | None:
        return next((r for r in self.agent.tasks.values()
                     if r.container_id and container_id and r.container_id == container_id and not r.refused), None)

    async def launch_session(self, request: web.Request, principal: str | None, body: object) -> web.StreamResponse:
        ids = self._session_ids(body)
        if isinstance(ids, web.Response):
            return ids
        parent, session = ids
        assert isinstance(body, dict)
        argv = command_argv(body.get("command"))
        if isinstance(argv, str):
            return _problem(400, argv)
        rec = self._task_of_container(parent)
        if rec is None or not self.sees_task(principal, rec):
            return _problem(404, f"Container {parent[:80]} not found")
        if not self.may(SESSION, principal, rec):
            return security.forbidden()
        if rec.state in TERMINAL_STATES:
            return _problem(409, f"The task of container {parent[:80]} is not running")
        if session in self.sessions or session in self.exits:
            return _problem(409, f"Container {session} already exists")
        if self.running >= MAX_SESSIONS:
            return _problem(503, f"Too many sessions at once (at most {MAX_SESSIONS})")
        if self.running_by[principal] >= MAX_SESSIONS_PER_PRINCIPAL:
            who = f"principal '{principal}'" if principal else "anonymous callers"
            return _problem(503, f"Too many sessions at once for {who} (at most {MAX_SESSIONS_PER_PRINCIPAL})")
        sock = self.agent.containerizer.socket_path
        # Counted and named from here: the bound and the id's uniqueness hold while podman is asked, too.
        self.running += 1
        self.running_by[principal] += 1
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.sessions[session] = done
        try:
            exec_id = await podman_api.exec_create(sock, parent, argv)
        except Exception as e:
            self.running -= 1
            self._release(principal)
            self.sessions.pop(session, None)
            done.cancel()
            log.info("nested container session not created", task=rec.spec.task_id[:64], error=str(e)[:200])
            return _problem(409, f"Cannot run a command in the task's container: {str(e)[:200]}")
        log.info("nested container session", task=rec.spec.task_id[:64], principal=principal, session=session)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/recordio",
                                                       "Message-Content-Type": "application/json"})
        async def pump() -> None:
            async for kind, data in podman_api.exec_output(sock, exec_id):
                stream = "STDOUT" if kind == podman_api.STDOUT else "STDERR"
                record = json.dumps({"type": "DATA", "data": {"type": stream,
                                                               "data": base64.b64encode(data).decode()}}).encode()
                await resp.write(b"%d\n%s" % (len(record), record))

        finished = False
        pumping: asyncio.Task | None = None
        try:
            await resp.prepare(request)
            pumping = asyncio.create_task(pump())
            # A client that goes away while the command is silent is only seen on its connection: look at it.
            while not pumping.done():
                await asyncio.wait({pumping}, timeout=SESSION_CHECK)
                if not pumping.done() and (request.transport is None or request.transport.is_closing()):
                    pumping.cancel()
                    break
            await pumping
            finished = True
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-write
        except asyncio.CancelledError:
            if pumping is not None and not pumping.done():
                pumping.cancel()
            if not (pumping is not None and pumping.cancelled()):
                raise
        finally:
            self.running -= 1
            self._release(principal)
            if not finished:  # the client went away (or podman's stream broke): the command ends with it
                try:
                    await podman_api.exec_kill(sock, exec_id)
                except Exception as e:
                    log.warning("could not end an abandoned session", session=session, error=str(e)[:200])
            code = None
            for _ in range(50):  # podman records the exit a moment after the stream ends
                try:
                    code = await podman_api.exec_exit_code(sock, exec_id)
                except Exception:
                    code = None
                    break
                if code is not None:
                    break
                await asyncio.sleep(0.1)
            status = (code if code is not None else 255) << 8  # a wait status, as Mesos's exit_status
            self.sessions.pop(session, None)
            self.exits[session] = status
            while len(self.exits) > MAX_EXITS:
                self.exits.popitem(last=False)
            if not done.done():
                done.set_result(status)
        return resp

    def _release(self, principal: str | None) -> None:
        self.running_by[principal] -= 1
        if self.running_by[principal] <= 0:
            del self.running_by[principal]

    async def wait_nested(self, principal: str | None, body: object) -> web.Response:
        ids = self._session_ids(body)
        if isinstance(ids, web.Response):
            return ids
        parent, session = ids
        rec = self._task_of_container(parent) or next(
            (r for r in self.records() if r.container_id == parent), None)
        if rec is None or not self.sees_task(principal, rec):
            return _problem(404, f"Container {parent[:80]} not found")
        if not self.may(SESSION, principal, rec):
            return security.forbidden()
        if session in self.exits:
            status = self.exits[session]
        elif session in self.sessions:
            fut = self.sessions[session]
            try:
                status = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if fut.cancelled():  # it never started
                    return _problem(404, f"Container {session} not found")
                raise
        else:
            return _problem(404, f"Container {session} not found")
        return web.json_response({"type": "WAIT_NESTED_CONTAINER", "wait_nested_container": {"exit_status": status}})


SESSION = "launch_nested_container_sessions"
# Mesos's names for what a session needs: it runs as its task's user, under its task's container.
MESOS_SESSION_ACTIONS = ("launch_nested_container_sessions_as_user",
                         "launch_nested_container_sessions_under_parent_with_user")


def session_actions(acls: ACLs) -> tuple[str, ...]:
    """The actions a session is judged by: each of Drover's and Mesos's names the ACLs have rules for (all must
    allow), else Drover's (then `permissive` decides)."""
    named = tuple(a for a in (SESSION, *MESOS_SESSION_ACTIONS) if acls.rules_for(a))
    return named or (SESSION,)


def command_argv(command: object) -> list[str] | str:
    """The argv of a session's CommandInfo ({"shell": true, "value": "..."} runs `sh -c value`; shell false runs
    `value` with `arguments`, whose first is argv[0]), or what is wrong with it."""
    if not isinstance(command, dict):
        return "Expecting 'command'"
    shell = command.get("shell", True)
    value = command.get("value")
    args = command.get("arguments", [])
    if not isinstance(shell, bool) or not isinstance(value, str) or not value or "\x00" in value:
        return "Expecting 'command.value' (a non-empty string) and 'command.shell' true or false"
    if not isinstance(args, list) or len(args) > MAX_ARGS or \
            not all(isinstance(a, str) and "\x00" not in a for a in args):
        return f"Expecting 'command.arguments' to be at most {MAX_ARGS} strings"
    if len(value.encode()) + sum(len(a.encode()) for a in args) > MAX_COMMAND:
        return f"The command is longer than {MAX_COMMAND} bytes"
    if shell:
        return ["/bin/sh", "-c", value]
    return [value, *args[1:]]


def content_disposition(name: str) -> str:
    """`attachment` with the file's name: an ASCII stand-in (no quotes, controls or non-ASCII: a task names its
    files, and a newline in a header is refused by aiohttp, a 500) and the exact name as RFC 5987 `filename*`."""
    from urllib.parse import quote

    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name) or "file"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The body of a chunked request, read to its end or to `limit` bytes."""
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)
