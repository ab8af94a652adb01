"""Fault schedules: what goes wrong, where, when and for how long; drawn from a seed, and written as one line.

A schedule is a list of `Fault`s. Its text form is what `drover simulate --faults` takes and what a shrunk failing
run prints as its reproducer:

    leader-crash@12.5+3,isolate:a2@30+20,msg-loss:*@40+10*0.3

each fault `KIND[:TARGET]@START+DURATION[*LEVEL]`: seconds of simulated time, a level in (0, 1] for the kinds that
take one (a probability, or a slowdown). `format_schedule(parse_schedule(s)) == s` for every schedule
`format_schedule` writes."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

# kind -> (what its target names, whether it takes a level). Targets: "leader" kinds hit whoever leads at START;
# "replica"/"agent"/"node" name one (m1, a2); "link" names a node or "*" (every link).
KINDS: dict[str, tuple[str, bool]] = {
    "leader-crash": ("none", False),      # the leading replica stops; it restarts from its store at the end
    "replica-crash": ("replica", False),
    "agent-crash": ("agent", False),      # the agent process stops; its containers keep running
    "isolate": ("node", False),           # a network partition around one replica or agent
    "msg-loss": ("link", True),           # messages to and from the target dropped with probability LEVEL
    "msg-delay": ("link", True),          # latency multiplied by 1 + 100*LEVEL
    "msg-reorder": ("link", True),        # deliveries shuffled within a window, with probability LEVEL
    "disk-stall": ("node", False),        # the store's (or an agent's checkpoint) fsyncs wait until the end
    "podman-stall": ("agent", False),     # podman calls wait until the end
    "podman-crash": ("agent", False),     # running containers die (exit status lost)
}
MAX_TIME = 1e7  # seconds of simulated time (115 days): far beyond any run
MAX_FAULTS = 10_000
_TARGET = re.compile(r"^(?:\*|[ma][0-9]{1,6})$")
_FAULT = re.compile(r"^([a-z-]+)(?::([^@]+))?@([0-9.e+-]+?)\+([0-9.e+-]+?)(?:\*([0-9.e+-]+))?$")


class ScheduleError(ValueError):
    """A schedule that cannot be taken; the message names the fault."""


@dataclass(frozen=True, order=True)
class Fault:
    start: float
    kind: str
    target: str | None = None
    duration: float = 0.0
    level: float | None = None

    def __post_init__(self) -> None:
        problem = fault_problem(self)
        if problem is not None:
            raise ScheduleError(problem)

    def end(self) -> float:
        return self.start + self.duration

    def text(self) -> str:
        out = self.kind + (f":{self.target}" if self.target is not None else "")
        out += f"@{_num(self.start)}+{_num(self.duration)}"
        return out + (f"*{_num(self.level)}" if self.level is not None else "")


def _num(v: float) -> str:
    """Shortest text that reads back as the same float."""
    return repr(float(v)).removesuffix(".0")


def fault_problem(f: Fault) -> str | None:
    spec = KINDS.get(f.kind)
    if spec is None:
        return f"unknown fault kind {f.kind!r} (expected one of {', '.join(KINDS)})"
    target_kind, has_level = spec
    for name, v in (("start", f.start), ("duration", f.duration)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= MAX_TIME:
            return f"{f.kind}: {name} must be a number of seconds from 0 to {MAX_TIME:g}, not {v!r}"
    if target_kind == "none":
        if f.target is not None:
            return f"{f.kind} takes no target (it hits the replica leading at its start)"
    else:
        if f.target is None or not _TARGET.match(f.target):
            return f"{f.kind} needs a target: {_target_help(target_kind)}, not {f.target!r}"
        if f.target == "*" and target_kind != "link":
            return f"{f.kind} needs one {target_kind}, not '*'"
        if target_kind == "replica" and not f.target.startswith("m") or \
                target_kind == "agent" and not f.target.startswith("a"):
            return f"{f.kind} needs {_target_help(target_kind)}, not {f.target!r}"
    if has_level:
        if f.level is None or not math.isfinite(f.level) or not 0 < f.level <= 1:
            return f"{f.kind} needs a level in (0, 1] (*LEVEL), not {f.level!r}"
    elif f.level is not None:
        return f"{f.kind} takes no level"
    return None


def _target_help(target_kind: str) -> str:
    return {"replica": "a replica (m1, m2, ...)", "agent": "an agent (a1, a2, ...)",
            "node": "a replica or an agent (m1, a2, ...)", "link": "a replica or an agent, or * for every link"
            }[target_kind]


def format_schedule(faults: list[Fault]) -> str:
    return ",".join(f.text() for f in sorted(faults))


def parse_schedule(text: str) -> list[Fault]:
    """The faults of a schedule's text form (empty text: no faults), sorted by start."""
    text = text.strip()
    if not text:
        return []
    parts = text.split(",")
    if len(parts) > MAX_FAULTS:
        raise ScheduleError(f"at most {MAX_FAULTS} faults, not {len(parts)}")
    out = []
    for part in parts:
        m = _FAULT.match(part.strip())
        if m is None:
            raise ScheduleError(f"{part.strip()[:80]!r} is not KIND[:TARGET]@START+DURATION[*LEVEL]")
        kind, target, start, duration, level = m.groups()
        try:
            nums = [float(start), float(duration)] + ([float(level)] if level is not None else [])
        except ValueError:
            raise ScheduleError(f"{part.strip()[:80]!r}: START, DURATION and LEVEL are numbers") from None
        out.append(Fault(nums[0], kind, target, nums[1], nums[2] if level is not None else None))
    return sorted(out)


def draw_schedule(rng: random.Random, duration: float, kinds: list[str], replicas: int, agents: int,
                  rate: float = 1 / 30) -> list[Fault]:
    """Faults of these kinds over [0, duration), about one per `1/rate` seconds, each healed before the end's last
    quarter (so liveness can be judged after the last one)."""
    for k in kinds:
        if k not in KINDS:
            raise ScheduleError(f"unknown fault kind {k!r} (expected one of {', '.join(KINDS)})")
    if not kinds or duration <= 0:
        return []
    horizon = duration * 0.75
    out: list[Fault] = []
    t = rng.expovariate(rate)
    while t < horizon and len(out) < MAX_FAULTS:
        kind = rng.choice(sorted(kinds))
        target_kind, has_level = KINDS[kind]
        length = min(rng.uniform(1.0, 30.0), horizon - t)
        target = None
        if (target_kind == "replica" or (target_kind == "node" and rng.random() < 0.5)) and replicas:
            target = f"m{rng.randrange(1, replicas + 1)}"
        elif target_kind in ("agent", "node", "link") and agents:
            target = "*" if target_kind == "link" and rng.random() < 0.3 else f"a{rng.randrange(1, agents + 1)}"
        if target_kind != "none" and target is None:
            t += rng.expovariate(rate)
            continue
        level = round(rng.uniform(0.05, 1.0), 3) if has_level else None
        out.append(Fault(round(t, 3), kind, target, round(length, 3), level))
        t += rng.expovariate(rate)
    return out
