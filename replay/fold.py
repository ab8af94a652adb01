"""Rebuild master state from a replica's event store, with the same fold the master runs."""

from __future__ import annotations

from pathlib import Path

from eventstore.store import EventStore
from master.state import State, apply


def replay_store(path: str | Path, upto: int | None = None) -> State:
    """Fold events 1..upto (all when None) of the store at `path` (a data dir or the SQLite file)."""
    store = EventStore(path)
    try:
        state = State()
        for env in store.iter_envelopes(1, upto):
            apply(state, env)
        return state
    finally:
        store.close()
