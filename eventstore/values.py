"""The rules every value in an event obeys: ids, role names, numbers, sizes.

One definition, used three ways:
- the event types (eventstore.events) carry them as msgspec constraints, so an event that breaks one does
  not decode, and `events.encode_event` refuses to produce it (the commit gate);
- the wire codecs (master.codec, the agent protocol) check calls against them and answer with a clear 400;
- the agent uses `is_valid_id` before an id becomes a path component.

Ids follow Mesos's `common::validation::validateID` plus a length bound: an id is a single path component on
every agent (sandboxes, checkpoints), so it must be one: non-empty, at most MAX_ID_LENGTH characters, not `.` or
`..`, without `/`, `\\`, whitespace or control characters.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

import msgspec

MAX_ID_LENGTH = 255  # a file name component on every common filesystem
MAX_NAME_LENGTH = 1024  # names, hostnames, users, principals, label keys, reasons
MAX_TEXT_LENGTH = 64 * 1024  # messages, commands, label and env values, task data
MAX_ROLE_LENGTH = 1024
MAX_LIST = 100_000  # any list in an event (offers in one allocation run, tasks reported by an agent, ...)
MAX_RANGES = 1024  # range pieces in one resource
MAX_SET_ITEMS = 1024

# Numbers. Scalars as Mesos keeps them (fixed point, 3 decimals, int64): anything beyond ~9.2e15 cannot be
# represented, and rounding x*1000 overflows long before float does; 1e12 is far above any real machine.
MAX_SCALAR = 1e12
MAX_RANGE_VALUE = 2**63 - 1  # range bounds are unsigned 64-bit in Mesos; signed here so msgpack/SQLite keep them
# Durations (failover timeouts, grace periods, filters): at most 100 years (Mesos's Duration holds ~292).
MAX_SECONDS = 100 * 365 * 86400.0
# Timestamps: seconds since the epoch, up to the year ~5138.
MAX_TIMESTAMP = 1e11
MAX_WEIGHT = 1e9
# A role's share is divided by its weight: a weight this small keeps every share the allocator records finite and
# bounded (a weight of 1e-301 made each OFFERS_MADE's explanation overflow the event's bounds).
MIN_WEIGHT = 1e-6

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")

# msgspec's `pattern` uses re.search; \Z, not $ (which also matches before a final newline).
# Not `.`/`..`, no separators, no whitespace or control characters.
ID_PATTERN = r"^(?!\.\.?\Z)[^/\\\x00-\x20\x7f-\x9f\s]+\Z"
ROLE_PATTERN = r"^(\*|(?!-)[^/\x00-\x20\x7f\s]+(/(?!-)[^/\x00-\x20\x7f\s]+)*)\Z"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
Role = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ROLE_LENGTH, pattern=ROLE_PATTERN)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_SECONDS)]
Timestamp = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TIMESTAMP)]
Scalar = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_SCALAR)]
RangeValue = Annotated[int, msgspec.Meta(ge=0, le=MAX_RANGE_VALUE)]
Weight = Annotated[float, msgspec.Meta(ge=MIN_WEIGHT, le=MAX_WEIGHT)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
# host:port, as agents and masters advertise themselves (a bracketed IPv6 host is allowed).
Address = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH,
                                      pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\Z")]


def id_problem(value: object, what: str = "ID") -> str | None:
    """Why `value` is not a valid id, or None if it is one."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is longer than {MAX_ID_LENGTH} characters"
    if value in (".", ".."):
        return f"{what} {value!r} is invalid: it must not be '.' or '..'"
    if "/" in value or "\\" in value:
        return f"{what} {value!r} is invalid: it must not contain '/' or '\\'"
    if _CONTROL_OR_SPACE.search(value):
        return f"{what} {value[:64]!r} is invalid: it must not contain whitespace or control characters"
    return None


# The user a task runs as (CommandInfo.user, FrameworkInfo.user when a task runs as it): a POSIX user name (the
# portable subset useradd accepts), as in Mesos. Not a numeric uid: the master's run_tasks ACL judges names, and
# "0" must not get past a rule that denies "root". It is looked up in the image's /etc/passwd, so nothing else
# (no ':group', no spaces, no '/') may pass. MAX_UID bounds the uids an image's passwd may give.
USER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z"
MAX_UID = 2**32 - 2


def user_problem(value: object, what: str = "User") -> str | None:
    """Why `value` is not a user a task may run as, or None."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not re.match(USER_PATTERN, value):
        return (f"{what} {value[:64]!r} is invalid: it must be a POSIX user name ([A-Za-z_][A-Za-z0-9_.-], at "
                f"most 32 characters; not a numeric uid)")
    return None


def is_valid_id(value: object) -> bool:
    return id_problem(value) is None


def role_problem(role: object) -> str | None:
    """Mesos's role rules: '*' or '/'-separated components, none empty, '.', '..' or '*', none starting with '-',
    none holding whitespace, control characters or DEL; plus a length bound."""
    if not isinstance(role, str):
        return "Role name must be a string"
    if role == "*":
        return None
    if not role:
        return "Empty role name is invalid"
    if len(role) > MAX_ROLE_LENGTH:
        return f"Role name is longer than {MAX_ROLE_LENGTH} characters"
    for part in role.split("/"):
        if part in ("", ".", "..", "*") or part.startswith("-") or re.search(r"[\x00-\x20\x7f\s]", part):
            return (f"Role name {role[:64]!r} is invalid: components must be non-empty, not '.', '..' or '*', "
                    "not start with '-', and hold no whitespace, control characters or DEL")
    return None


def number_problem(v: float, what: str, lo: float = 0.0, hi: float = MAX_SECONDS, lo_open: bool = False) -> str | None:
    """Why `v` is not a finite number in [lo, hi] ((lo, hi] with lo_open), or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{what} must be a number"
    if not math.isfinite(v):
        return f"{what} must be a finite number, got {v}"
    if v < lo or (lo_open and v == lo) or v > hi:
        return f"{what} must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {v:g}"
    return None


# ---- fetcher URIs (CommandInfo.URI) -----------------------------------------------------------------------------
# What a task may ask its agent to fetch into its sandbox before it starts. Checked by the codec (a TASK_ERROR
# naming the URI) and again by the agent (agent/fetcher.py), which trusts no LAUNCH with its own host.
MAX_URIS = 100  # per task
MAX_URI_LENGTH = 4096
MAX_OUTPUT_FILE_LENGTH = 1024
_URI_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)")


def uri_problem(value: object, what: str = "URI") -> str | None:
    """Why `value` is not a URI Drover's fetcher takes, or None: http://, https:// (with a host and no user
    information: a password in a URI would be recorded in the log and shown in the state), file:///PATH or an
    absolute path on the agent (which the agent may still refuse: --fetcher-allowed-dir)."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_URI_LENGTH:
        return f"{what} is longer than {MAX_URI_LENGTH} characters"
    if _CONTROL_OR_SPACE.search(value):
        return f"{what} {value[:64]!r} is invalid: it must not contain whitespace or control characters"
    if value.startswith("/"):
        return None
    m = _URI_RE.match(value)
    if m is None:
        return (f"{what} {value[:128]!r} is not supported: it must be an http://, https:// or file:// URI, or an "
                "absolute path")
    scheme, authority = m.group("scheme").lower(), m.group("authority")
    if scheme == "file":
        if authority not in ("", "localhost") or not m.group("path").startswith("/"):
            return f"{what} {value[:128]!r} is invalid: a file URI must be file:///ABSOLUTE/PATH"
        return None
    if scheme not in ("http", "https"):
        return (f"{what} {value[:128]!r} is not supported: scheme '{scheme[:32]}' (Drover fetches http, https and "
                "file URIs)")
    if "@" in authority:
        return f"{what} {value[:128]!r} is refused: user information in a URI would be recorded in the log"
    if not authority or authority.startswith(":"):
        return f"{what} {value[:128]!r} is invalid: it has no host"
    return None


def output_file_problem(value: object, what: str = "URI output_file") -> str | None:
    """Why `value` is not a file name inside a sandbox, or None: a relative path whose components are not empty,
    '.' or '..', without a backslash, whitespace or control characters."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_OUTPUT_FILE_LENGTH:
        return f"{what} is longer than {MAX_OUTPUT_FILE_LENGTH} characters"
    if value.startswith("/"):
        return f"{what} {value[:64]!r} is invalid: it must be relative to the sandbox"
    if "\\" in value or _CONTROL_OR_SPACE.search(value):
        return f"{what} {value[:64]!r} is invalid: it must not contain '\\', whitespace or control characters"
    if any(part in ("", ".", "..") or len(part) > MAX_ID_LENGTH for part in value.split("/")):
        return (f"{what} {value[:64]!r} is invalid: its components must not be empty, '.' or '..', nor longer "
                f"than {MAX_ID_LENGTH} characters")
    return None
