"""Allocator configuration (master flags), validated with errors that name the field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from eventstore.resources import Resources

SORTERS = ("drf", "priority")

DEFAULT_REFUSE_SECONDS = 5.0
MAX_REFUSE_SECONDS = 365 * 24 * 3600.0


@dataclass(frozen=True)
class AllocatorConfig:
    allocation_interval: float = 1.0
    offer_timeout: float | None = None
    # An offer must hold at least one of these quantity sets (Mesos --min_allocatable_resources).
    min_allocatable: tuple[tuple[tuple[str, float], ...], ...] = ((("cpus", 0.01),), (("mem", 32.0),))
    fair_sharing_excluded: tuple[str, ...] = ()
    role_sorter: str = "drf"  # "drf" | "priority"
    framework_sorter: str = "drf"

    def __post_init__(self) -> None:
        if not (self.allocation_interval > 0 and math.isfinite(self.allocation_interval)):
            raise ValueError(
                f"allocation_interval must be a positive number of seconds, got {self.allocation_interval!r}")
        if self.offer_timeout is not None and not (self.offer_timeout > 0 and math.isfinite(self.offer_timeout)):
            raise ValueError(f"offer_timeout must be a positive number of seconds, got {self.offer_timeout!r}")
        for field_name in ("role_sorter", "framework_sorter"):
            if getattr(self, field_name) not in SORTERS:
                raise ValueError(f"{field_name} must be one of {', '.join(SORTERS)}, got {getattr(self, field_name)!r}")
        for alt in self.min_allocatable:
            for name, v in alt:
                if not (v >= 0 and math.isfinite(v)):
                    raise ValueError(f"min_allocatable_resources: {name} must be a non-negative number, got {v!r}")

    def to_record(self) -> dict[str, object]:
        return {
            "allocation_interval": self.allocation_interval,
            "offer_timeout": self.offer_timeout,
            "min_allocatable": [dict(s) for s in self.min_allocatable],
            "fair_sharing_excluded": list(self.fair_sharing_excluded),
            "role_sorter": self.role_sorter,
            "framework_sorter": self.framework_sorter,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "AllocatorConfig":
        return cls(
            allocation_interval=float(rec.get("allocation_interval", 1.0)),
            offer_timeout=rec.get("offer_timeout"),
            min_allocatable=tuple(tuple(sorted(s.items()))
                                  for s in rec.get("min_allocatable", [{"cpus": 0.01}, {"mem": 32.0}])),
            fair_sharing_excluded=tuple(rec.get("fair_sharing_excluded", ())),
            role_sorter=rec.get("role_sorter", "drf"),
            framework_sorter=rec.get("framework_sorter", "drf"),
        )

    @staticmethod
    def parse_min_allocatable(text: str) -> tuple[tuple[tuple[str, float], ...], ...]:
        """`cpus:0.01|mem:32` -> ((("cpus", 0.01),), (("mem", 32.0),)); raises ValueError naming the bad part."""
        sets = []
        for alt in text.split("|"):
            q = []
            for part in filter(None, alt.split(";")):
                name, _, val = part.partition(":")
                try:
                    q.append((name.strip(), float(val)))
                except ValueError:
                    raise ValueError(f"--min-allocatable-resources: bad quantity {part!r}") from None
            sets.append(tuple(sorted(q)))
        return tuple(sets)


def effective_refuse_seconds(refuse: float | None, interval: float) -> float:
    """Mesos's filter rules: absent or negative = 5 s, capped at 365 days, 0 = no filter,
    and never shorter than one allocation interval."""
    if refuse is None or refuse < 0 or refuse != refuse:  # absent, negative or NaN: the default
        refuse = DEFAULT_REFUSE_SECONDS
    if refuse == 0:
        return 0.0
    return max(min(refuse, MAX_REFUSE_SECONDS), interval)


def is_allocatable(res: Resources, config: AllocatorConfig) -> bool:
    if not res:  # never an empty offer, whatever the (possibly empty) quantity sets say
        return False
    if not config.min_allocatable:
        return True
    q = res.quantities()
    return any(all(q.get(n, 0.0) >= v for n, v in alt) for alt in config.min_allocatable)


