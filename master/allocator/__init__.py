"""Allocation: who is offered what (pure code, no IO)."""

from master.allocator.first import (  # noqa: F401
    DEFAULT_REFUSE_SECONDS,
    MAX_REFUSE_SECONDS,
    AllocatorConfig,
    allocate,
    effective_refuse_seconds,
    expired_offers,
    is_allocatable,
)
