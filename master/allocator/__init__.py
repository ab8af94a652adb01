"""Allocation: who is offered what (pure code, no IO)."""

from master.allocator.config import (
    DEFAULT_REFUSE_SECONDS,
    MAX_REFUSE_SECONDS,
    AllocatorConfig,
    effective_refuse_seconds,
    is_allocatable,
)

__all__ = [
    "DEFAULT_REFUSE_SECONDS", "MAX_REFUSE_SECONDS", "AllocatorConfig", "effective_refuse_seconds", "is_allocatable",
]
