"""The agent's task rules, pure (no podman, no network): which ids it accepts, where a task's files may go, what
limits a container gets, how long a kill may take, and what a container's end means as a task status.

The agent does not trust the master with any of this: ids are checked again here before one becomes a path
component, and every path built from ids must resolve inside the agent's work dir.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from eventstore.resources import Resource, Resources, host_ports_problem
from eventstore.values import MAX_UID, id_problem, user_problem
from eventstore.vocab import Reason, Source, TaskState

# Kill grace periods (KILL's `grace_seconds`, TaskSpec.kill_grace_seconds). Mesos has no upper bound; here a
# kill holds one podman `stop` call (and one of the containerizer's threads) for the whole grace period, so a
# framework must not be able to make that unbounded.
DEFAULT_KILL_GRACE_SECONDS = 3.0  # Mesos's default KillPolicy grace period for command tasks
MAX_KILL_GRACE_SECONDS = 600.0

# A container never runs without limits. A task that asks for no cpus (or no mem) gets Mesos's command executor
# allowance (src/slave/constants.hpp: DEFAULT_EXECUTOR_CPUS = 0.1, DEFAULT_EXECUTOR_MEM = 32 MB) instead.
DEFAULT_CPUS = 0.1
DEFAULT_MEM_MB = 32.0


# A task's processes (and threads) in its container: a fork bomb meets this, not the host's pid_max. The agent's
# --task-pids-limit; bounded so a typo cannot starve a task (catatonit, the shell and the task need a few) nor lift
# the limit past the kernel's own maximum pid count.
DEFAULT_TASK_PIDS_LIMIT = 4096
MIN_TASK_PIDS_LIMIT = 16
MAX_TASK_PIDS_LIMIT = 4_194_304  # PID_MAX_LIMIT on 64-bit Linux

# An image not present on the agent is pulled from its registry; a pull taking longer than this (the agent's
# --image-pull-timeout) fails the task.
DEFAULT_IMAGE_PULL_TIMEOUT = 300.0


def image_registry(image: str) -> str | None:
    """The registry (HOST[:PORT]) an image reference names, as podman reads it: the part before the first `/` if
    it has a `.` or a `:` or is `localhost`; None for a short name (podman's registries.conf resolves those)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


# Every container drops all capabilities. A task running as root (uid 0) gets back only root's power over files in
# its own container (its copy-on-write rootfs and its sandbox, the only file systems it sees): chown, bypassing
# read/write/search permission checks, and acting as a file's owner. Dropped, and why: SETUID/SETGID/SETPCAP (a task
# runs as the user it names, it does not switch inside), KILL (its processes all share its uid), NET_BIND_SERVICE
# and NET_RAW (with host networking, privileged host ports and raw sockets), MKNOD, SETFCAP, FSETID, SYS_CHROOT,
# AUDIT_WRITE (nothing a task needs). A task running as any other user gets none: podman would put capabilities
# added for it into its ambient set, so none are added.
ROOT_TASK_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER")


def task_capabilities(uid: int) -> list[str]:
    """The capabilities added back (after dropping all) for a task running as `uid`."""
    return list(ROOT_TASK_CAPABILITIES) if uid == 0 else []


class UnsafePath(ValueError):
    """A path built from ids would not be a directory of its own inside the agent's work dir."""


def command_executor_name(task_id: str, command: Any) -> str:
    """The name Mesos gives a task's command executor (slave.cpp, getExecutorInfo): the task and its command, cut
    to 12 characters and "..." when longer than 15 (tools parse it, e.g. the old `mesos ps` reads "(Command: X)").
    `command`: the task's CommandSpec (shell, value, arguments)."""
    value = getattr(command, "value", None)
    if getattr(command, "shell", True):
        if not value:
            what = "NO COMMAND"
        else:
            what = "sh -c '" + (value[:12] + "..." if len(value) > 15 else value) + "'"
    elif not value:
        what = "NO EXECUTABLE"
    else:
        args = value + ", " + ", ".join(getattr(command, "arguments", None) or [])
        what = "[" + (args[:12] + "..." if len(args) > 15 else args) + "]"
    return f"Command Executor (Task: {task_id}) (Command: {what})"


def launch_problem(framework_id: object, task_id: object, task_agent_id: object, own_agent_id: object) -> str | None:
    """Why the agent refuses a LAUNCH outright (TASK_ERROR, REASON_TASK_INVALID), or None."""
    return (id_problem(framework_id, "Framework ID") or id_problem(task_id, "Task ID")
            or id_problem(task_agent_id, "The task's agent ID") or id_problem(own_agent_id, "This agent's ID"))


def inside(root: Path, *components: str) -> Path:
    """`root/components...`, resolved, after checking that every component is one valid id-like path component
    and that the result (symlinks followed) is strictly inside `root`. Raises UnsafePath otherwise."""
    for c in components:
        if (problem := id_problem(c, "Path component")) is not None:
            raise UnsafePath(problem)
    base = Path(root).resolve()
    path = base.joinpath(*components).resolve()
    if path == base or not path.is_relative_to(base):
        raise UnsafePath(f"{base.joinpath(*components)} resolves to {path}, outside the agent's work dir {base}")
    return path


def sandbox_path(work_dir: Path, framework_id: str, task_id: str) -> Path:
    """The task's sandbox: WORK_DIR/sandboxes/FRAMEWORK_ID/TASK_ID (ids used as they are: no two tasks share one)."""
    return inside(work_dir, "sandboxes", framework_id, task_id)


def executor_sandbox_path(work_dir: Path, framework_id: str, executor_id: str) -> Path:
    """A task group's shared sandbox (its executor's): WORK_DIR/executors/FRAMEWORK_ID/EXECUTOR_ID, next to (never
    inside) its tasks' own sandboxes, so that no executor id can be mistaken for a task id."""
    return inside(work_dir, "executors", framework_id, executor_id)


# ---- task groups (LAUNCH_GROUP): one pod per executor ------------------------------------------------------------

# As Mesos's default executor (src/launcher/default_executor.cpp): when a task of a group ends in one of these
# states, every other live task of the group is killed (and reports TASK_KILLED). A task that finishes (exit 0)
# leaves the others running.
GROUP_KILL_STATES = frozenset({TaskState.FAILED, TaskState.KILLED})


def group_problem(specs: list[Any]) -> str | None:
    """Why the agent refuses a LAUNCH_GROUP (every task TASK_ERROR, REASON_TASK_GROUP_INVALID), or None. The leader
    checked it all; the agent checks again what it builds on: one executor for all, each task once and named by
    it, a valid executor id (a path component), the pod's network and ports, and tasks without a network of their
    own."""
    if not specs:
        return "A task group must have at least one task"
    ex = specs[0].executor
    if ex is None or any(s.executor != ex for s in specs):
        return "Every task of a task group must carry the group's executor"
    if (why := id_problem(ex.executor_id, "Executor ID")) is not None:
        return why
    ids = [s.task_id for s in specs]
    if len(set(ids)) != len(ids):
        return "A task group names a task twice"
    if any(tid not in ex.task_ids for tid in ids):
        return "A task of the group is not one of its executor's tasks"
    if any(s.network is not None or s.port_mappings for s in specs):
        return "A task of a task group joins its executor's network: it has no network of its own"
    resources = list(ex.resources) + [r for s in specs for r in s.resources]
    return ports_problem(resources, ex.network, ((m.host_port, m.protocol) for m in ex.port_mappings))


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def is_grace(v: Any) -> bool:
    """Whether a KILL's `grace_seconds` counts (a number, not NaN): kill_grace would take it."""
    return _number(v) is not None


def kill_grace(*candidates: Any) -> float:
    """The grace period of a kill: the first candidate that is a number (a KILL's own `grace_seconds`, then the
    task's `kill_grace_seconds`), else DEFAULT_KILL_GRACE_SECONDS; negative (-inf included) counts as 0, above
    MAX_KILL_GRACE_SECONDS (+inf included) as MAX_KILL_GRACE_SECONDS. NaN and non-numbers are skipped."""
    for c in candidates:
        v = _number(c)
        if v is not None:
            return min(max(v, 0.0), MAX_KILL_GRACE_SECONDS)
    return DEFAULT_KILL_GRACE_SECONDS


def container_limits(cpus: float | None, mem_mb: float | None) -> tuple[float, float]:
    """The cpus and mem (MB) a container gets: the task's own where it asked for a positive amount, else the
    defaults. Values that are present but unusable (negative, NaN, inf) are left for validation to refuse."""
    return (DEFAULT_CPUS if cpus is None or cpus == 0 else cpus,
            DEFAULT_MEM_MB if mem_mb is None or mem_mb == 0 else mem_mb)


def has_capability(framework_info: Any, name: str) -> bool:
    """Whether a LAUNCH's framework_info declares a capability (as a list of names or of {"type": name})."""
    caps = framework_info.get("capabilities") if isinstance(framework_info, dict) else None
    if not isinstance(caps, list):
        return False
    return any(c == name or (isinstance(c, dict) and c.get("type") == name) for c in caps)


def partition_aware(framework_info: Any) -> bool:
    return has_capability(framework_info, "PARTITION_AWARE")


def sends_killing(framework_info: Any) -> bool:
    """Mesos's command executor sends TASK_KILLING when a kill starts only to a framework with the
    TASK_KILLING_STATE capability (the others see TASK_RUNNING until the terminal update)."""
    return has_capability(framework_info, "TASK_KILLING_STATE")


# ---- networking ---------------------------------------------------------------------------------------------------

# TaskSpec.network -> podman's network mode. None (HOST) is the host's network: Mesos's default without CNI.
_NETWORK_MODES = {None: "host", "HOST": "host", "BRIDGE": "bridge", "NONE": "none"}
# PORT0..PORTn: at most this many (a task offered a whole range still gets a bounded environment).
MAX_PORT_VARIABLES = 1000


def ports_problem(resources: Iterable[Resource], network: object,
                  mappings: Iterable[tuple[int, str]]) -> str | None:
    """Checked again on the agent (the leader checks it too): a known network, mappings only on BRIDGE, and only
    host ports of the task's own `ports` resources."""
    maps = list(mappings)
    if network not in _NETWORK_MODES:
        return f"Unknown network {network!r}"
    if maps and network != "BRIDGE":
        return "Port mappings are only supported for the BRIDGE network"
    return host_ports_problem(resources, maps)


def network_mode(network: str | None) -> str:
    return _NETWORK_MODES[network]


def host_ports(resources: Iterable[Resource]) -> list[int]:
    """The task's host ports (its `ports` resources), in ascending order, at most MAX_PORT_VARIABLES."""
    out: list[int] = []
    for b, e in Resources(resources).ranges("ports"):
        for p in range(b, min(e, b + MAX_PORT_VARIABLES - len(out) - 1) + 1):
            out.append(p)
        if len(out) >= MAX_PORT_VARIABLES:
            break
    return out


def port_environment(resources: Iterable[Resource]) -> dict[str, str]:
    """Marathon's port variables (Mesos's command executor sets none): PORT0..PORTn the task's host ports in
    ascending order, PORT = PORT0, PORTS all of them comma-separated. A framework's own variable of the same name
    wins (the agent applies these first)."""
    ports = host_ports(resources)
    if not ports:
        return {}
    env = {f"PORT{i}": str(p) for i, p in enumerate(ports)}
    env["PORT"] = str(ports[0])
    env["PORTS"] = ",".join(str(p) for p in ports)
    return env


def reused_id_state(framework_info: Any) -> str:
    """Mesos's agent drops a command task whose TaskID is still in use on it (slave.cpp, Slave::run: "Cannot reuse
    an already existing executor for a command task", MESOS-9657): TASK_DROPPED for partition-aware frameworks,
    TASK_LOST for the others, with REASON_TASK_INVALID."""
    return TaskState.DROPPED if partition_aware(framework_info) else TaskState.LOST


class Outcome(NamedTuple):
    state: str
    source: str
    reason: str | None
    message: str


def exit_outcome(st: Any, killed: bool, disk_limitation: str | None = None) -> Outcome:
    """The terminal status of a task whose container ended. `st` is the containerizer's ContainerState from
    wait() (None or status "removed": the container is gone); `killed`: a kill was asked for or done by us;
    `disk_limitation`: the message of the disk limitation the agent killed it for (agent/disk_limits.py), which
    decides whatever else happened (as Mesos's agent reports a container limitation, not the executor's status)."""
    if disk_limitation is not None:
        return Outcome(TaskState.FAILED, Source.AGENT, Reason.CONTAINER_LIMITATION_DISK, disk_limitation)
    if killed:
        return Outcome(TaskState.KILLED, Source.EXECUTOR, None, "Command terminated by a kill request")
    if st is not None and st.status == "lost":
        return Outcome(TaskState.FAILED, Source.AGENT, Reason.EXECUTOR_TERMINATED,
                       "The task's process ended while the podman service was restarting, and podman lost its "
                       "exit status")
    if st is None or st.status == "removed" or st.exit_code is None:
        # Removed behind our back (podman rm, a store reset): no exit status to report.
        return Outcome(TaskState.LOST, Source.AGENT, Reason.EXECUTOR_TERMINATED, "The task's container disappeared")
    if st.exit_code == 0:
        return Outcome(TaskState.FINISHED, Source.EXECUTOR, None, "Command exited with status 0")
    if st.oom_suspected:
        return Outcome(TaskState.FAILED, Source.EXECUTOR, Reason.CONTAINER_LIMITATION_MEMORY,
                       "Command was killed (exit 137): memory limit probably reached")
    return Outcome(TaskState.FAILED, Source.EXECUTOR, None, f"Command exited with status {st.exit_code}")


# ---- the user a task runs as --------------------------------------------------------------------------------------


class UserProblem(ValueError):
    """The user a task would run as is not one it can run as; str(e) is the task's TASK_FAILED message."""


def task_user(command_user: object, framework_info: Any) -> str | None:
    """The user a task runs as, as Mesos picks it: its CommandInfo.user if set, else its framework's
    FrameworkInfo.user; None (neither names one, or an empty one) is the image's default user. Raises UserProblem
    if the user named is not a valid user name or uid (eventstore.values.user_problem): the master checks a task's
    own user, but a framework's user is any string to it, and the agent trusts neither."""
    if command_user is not None and command_user != "":
        if (why := user_problem(command_user, "The task's command.user")) is not None:
            raise UserProblem(why)
        return str(command_user)
    user = framework_info.get("user") if isinstance(framework_info, dict) else None
    if user is None or user == "":
        return None
    if (why := user_problem(user, "The framework's user (FrameworkInfo.user)")) is not None:
        raise UserProblem(f"{why}; the task runs as it, as it names no command.user")
    return str(user)


class Passwd(NamedTuple):
    name: str
    uid: int
    gid: int


def _id_number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) <= MAX_UID else None


def parse_passwd(text: str) -> list[Passwd]:
    """The entries of an /etc/passwd, in order (lookups take the first match, as getpwnam does). Lines that are not
    `name:password:uid:gid:...` with numeric ids (comments, NIS `+`/`-` entries, garbage) are skipped."""
    out = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) < 4 or not f[0] or f[0][0] in "#+-":
            continue
        uid, gid = _id_number(f[2]), _id_number(f[3])
        if uid is not None and gid is not None:
            out.append(Passwd(f[0], uid, gid))
    return out


def parse_group(text: str) -> dict[str, int]:
    """Group name -> gid of an /etc/group (the first entry of a name counts)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) < 3 or not f[0] or f[0][0] in "#+-":
            continue
        if (gid := _id_number(f[2])) is not None:
            out.setdefault(f[0], gid)
    return out


def resolve_user(user: str, passwd: str | None, group: str | None, image: str, *,
                 image_default: bool = False) -> tuple[int, int]:
    """(uid, gid) a task runs as, from the image's /etc/passwd and /etc/group (None: the image has no such file).

    `user` is a name or a uid (validated: what a task or its framework names) that must have an entry in the image's
    /etc/passwd, whose gid the task gets (Mesos runs a task as a user that exists; podman would otherwise run an
    unknown uid with gid 0, root's group). With `image_default` it is the image's own USER, which may also be
    `user:group` and may name a bare uid or gid the image has no entry for: podman runs those as they are (gid 0
    for a bare uid), and so does Drover; that is the image author's choice. "" is root. Raises UserProblem."""
    name, _, grp = user.partition(":") if image_default else (user, "", "")
    if name == "":
        return 0, 0
    entries = parse_passwd(passwd or "")
    number = _id_number(name)
    if number is not None and not image_default:
        raise UserProblem(f"User '{name}' is a uid: a task names a user by name (the run_tasks ACL judges names)")
    found = next((e for e in entries if (e.uid == number if number is not None else e.name == name)), None)
    if found is None and not (image_default and number is not None):
        where = "no entry in its /etc/passwd" if passwd is not None else "it has no /etc/passwd"
        raise UserProblem(f"User '{name}' does not exist in image '{image}' ({where}); a task runs as its "
                          f"command.user, else as its framework's user, which must be a user of its image")
    if found is not None:
        uid, gid = found.uid, found.gid
        if uid == 0 and name != "root" and not image_default:
            # The master's run_tasks ACL judged the name: an image must not turn an allowed name into root.
            raise UserProblem(f"User '{name}' has uid 0 in image '{image}'; only a task that names 'root' runs as "
                              f"uid 0 (the run_tasks ACL judges user names)")
    else:
        uid, gid = int(name), 0  # the image's own bare uid
    if grp:
        gid_number = _id_number(grp)
        gid = gid_number if gid_number is not None else parse_group(group or "").get(grp, -1)
        if gid < 0:
            raise UserProblem(f"Group '{grp}' of the image's USER '{user}' does not exist in image '{image}' "
                              f"(no entry in its /etc/group)")
    return uid, gid
