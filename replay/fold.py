"""Rebuild master state from a replica's event store, with the same fold the master runs."""

from __future__ import annotations

from pathlib import Path

from eventstore.store import EventStore
from master.state import State, apply, decode_snapshot


def state_at(store: EventStore, upto: int | None = None, use_snapshots: bool = True) -> State:
    """The state after events 1..upto (all when None), starting from the nearest snapshot at or
    before `upto` when there is one."""
    last = store.last_index()
    upto = last if upto is None else upto
    if upto > last:
        raise ValueError(f"index {upto} is beyond the last event in {store.path} ({last})")
    state = State()
    if use_snapshots:
        snap = store.snapshot_at_or_before(upto)
        if snap is not None:
            state = decode_snapshot(snap[2])
    for env in store.iter_envelopes(state.index + 1, upto):
        apply(state, env)
    return state


def replay_store(path: str | Path, upto: int | None = None, use_snapshots: bool = False) -> State:
    """Fold events 1..upto of the store at `path` (a data dir or the SQLite file); from 0 by default."""
    store = EventStore(path)
    try:
        return state_at(store, upto, use_snapshots)
    finally:
        store.close()
