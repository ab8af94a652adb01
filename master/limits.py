"""Bounds on the work one request, one connection or one peer can cause (configurable, with clear errors).

Every request's work is bounded: a call naming more offers, tasks, operations or reconciliation entries
than these is refused with a 400 saying which limit it broke; streams have bounded queues (a reader that
falls this far behind is dropped, and reconnects); the numbers of frameworks, agents, concurrent streams and
event readers are capped. Defaults are far above what real clients use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_offers_per_call: int = 1000  # offer ids in one ACCEPT / DECLINE
    max_tasks_per_call: int = 1000  # task infos in one ACCEPT (over all its LAUNCH operations)
    max_operations_per_call: int = 1000  # operations in one ACCEPT
    max_reconcile_tasks: int = 10_000  # entries in one RECONCILE
    max_roles_per_call: int = 1000  # roles in REVIVE / SUPPRESS / a FrameworkInfo
    max_labels: int = 1000  # labels / environment variables / arguments on one task or framework
    max_frameworks: int = 10_000  # registered (not removed) frameworks
    max_agents: int = 100_000  # registered agents, reachable or not
    max_reported_tasks: int = 100_000  # tasks one agent may report when it (re-)registers
    stream_queue: int = 100_000  # messages queued for one framework stream / agent link before it is dropped
    max_event_readers: int = 256  # concurrent GET /api/v1/events readers and operator SUBSCRIBE streams, each
    max_body_bytes: int = 4 * 1024 * 1024  # one HTTP request body
    max_json_depth: int = 64  # nesting of a JSON request body

    def __post_init__(self) -> None:
        for name, v in vars(self).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"limit {name} must be a positive integer, got {v!r}")
