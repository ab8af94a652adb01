"""What a principal may see of the cluster (Mesos's view_frameworks / view_tasks ACLs), as pure functions.

A reader's view is judged once per request: a `Viewer` that sees everything (no ACLs, or ACLs that let it view
any framework and any task) gets the shared, cached renderings; any other gets them rendered from
`visible_state`, a copy of the state holding only the frameworks, tasks and offers it may see (agents, weights
and quota are shown to every authenticated reader, as Mesos does). A framework's visibility is judged by its
user, a task's by the user it runs as (`view_tasks`); a task of a framework the viewer may not see is never
shown, whatever its user.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import msgspec

from drover.security.acls import ACLs, authorized, authorized_for_all
from eventstore import events as ev
from master.decide.scheduler import task_user
from master.state import State, Task


@dataclass(frozen=True)
class Viewer:
    principal: str | None
    acls: ACLs

    @functools.cached_property
    def sees_all(self) -> bool:  # asked several times per request (cache key, views, events): judged once
        return authorized_for_all(self.acls, "view_frameworks", self.principal) and \
            authorized_for_all(self.acls, "view_tasks", self.principal)

    @property
    def key(self) -> str:
        """For caches: the renderings of a viewer that sees everything are shared by all such viewers."""
        return "" if self.sees_all else f"principal:{self.principal}"

    def sees_framework(self, info: ev.FrameworkInfo) -> bool:
        return authorized(self.acls, "view_frameworks", self.principal, info.user or None)

    def sees_task(self, task: Task, info: ev.FrameworkInfo | None) -> bool:
        if info is None or not self.sees_framework(info):
            return False
        return authorized(self.acls, "view_tasks", self.principal, task_user(task.spec, info) or None)


def visible_state(state: State, viewer: Viewer) -> State:
    """`state` itself for a viewer that sees everything; else a shallow copy with only what it may see (for
    rendering only: it carries no allocator and must never be folded into)."""
    if viewer.sees_all:
        return state
    infos = {fid: fw.info for fid, fw in state.frameworks.items() if viewer.sees_framework(fw.info)}
    # A torn-down framework's completed tasks are judged by its kept record (Mesos's completed frameworks).
    gone = {fid: fw.info for fid, fw in state.completed_frameworks.items()
            if fid not in infos and viewer.sees_framework(fw.info)}
    users: dict[str, bool] = {}  # a task's user -> may the viewer see it (judged once per user)

    def sees(t: Task) -> bool:
        info = infos.get(t.framework_id) or gone.get(t.framework_id)
        if info is None:
            return False
        user = task_user(t.spec, info)
        if user not in users:
            users[user] = authorized(viewer.acls, "view_tasks", viewer.principal, user or None)
        return users[user]

    tasks = {}
    for fid, by_id in state.tasks.items():
        if fid not in infos:
            continue
        kept = {tid: t for tid, t in by_id.items() if sees(t)}
        if kept:
            tasks[fid] = kept
    return msgspec.structs.replace(
        state,
        frameworks={fid: fw for fid, fw in state.frameworks.items() if fid in infos},
        completed_frameworks={fid: fw for fid, fw in state.completed_frameworks.items() if fid in gone},
        tasks=tasks,
        completed_tasks=[t for t in state.completed_tasks if sees(t)],
        offers={oid: o for oid, o in state.offers.items() if o.framework_id in infos},
        filters=[f for f in state.filters if f.framework_id in infos],
    )


def _framework_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """The framework (and task) an operator event (operator_json.derive) is about; (None, None): neither."""
    kind = event.get("type", "")
    body = event.get(kind.lower(), {})
    if kind == "TASK_ADDED":
        t = body["task"]
        return t["framework_id"]["value"], t["task_id"]["value"]
    if kind == "TASK_UPDATED":
        return body["framework_id"]["value"], body["status"]["task_id"]["value"]
    if kind in ("FRAMEWORK_ADDED", "FRAMEWORK_UPDATED"):
        return body["framework"]["framework_info"]["id"]["value"], None
    if kind == "FRAMEWORK_REMOVED":
        return body["framework_info"]["id"]["value"], None
    return None, None


def visible_event(state: State, viewer: Viewer, event: dict[str, Any], removed: ev.FrameworkInfo | None = None) -> bool:
    """May `viewer` see this operator event, derived at `state` (the state just after it)? `removed`: the info of a
    framework the event's batch removed (the state no longer holds it; its tasks' last updates are judged by it)."""
    if viewer.sees_all:
        return True
    fid, tid = _framework_of(event)
    if fid is None:
        return True
    if event["type"] == "FRAMEWORK_REMOVED":
        info = event["framework_removed"]["framework_info"]
        return authorized(viewer.acls, "view_frameworks", viewer.principal, info.get("user") or None)
    fw = state.frameworks.get(fid)
    info = fw.info if fw is not None else removed
    if info is None:
        return False
    if tid is None:
        return viewer.sees_framework(info)
    task = state.task(fid, tid) or next((t for t in reversed(state.completed_tasks)
                                         if t.framework_id == fid and t.task_id == tid), None)
    return task is not None and viewer.sees_task(task, info)
