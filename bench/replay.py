"""Benchmark: rebuilding state from a replica's store, from index 0.

A synthetic workload is generated through the real fold (agents, frameworks, and a steady stream
of offer -> accept -> RUNNING -> ack -> FINISHED -> ack, with declines mixed in) and written to an
SQLite store like a replica's. Then, in the same run:
  * raw rows: reading every row (SELECT ... ORDER BY idx), nothing else;
  * raw + decode: the same rows decoded into typed events (msgspec);
  * replay: `replay.reader.state_at(store)` from 0 (decode + fold, the allocator kept in step),
and the final state hash of the replay is checked against the generating state.

    .venv/bin/python -m bench.replay [--events 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path

import msgspec

from eventstore import events as ev
from eventstore.resources import Resources
from eventstore.store import EventStore
from master.state import State, apply, state_hash
from replay.reader import state_at

AGENT = Resources.parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]")
TASK = Resources.parse("cpus:0.5;mem:512")


def generate(path: Path, n_events: int, agents: int = 50, frameworks: int = 10, batch: int = 5000) -> State:
    store = EventStore(path, create=True)
    state = State()
    pending: list[ev.Envelope] = []
    ts = 1_700_000_000.0

    def emit(event) -> None:
        env = ev.Envelope(index=state.index + 1, term=1, ts=ts, event=event)
        apply(state, env)
        pending.append(env)
        if len(pending) >= batch:
            store.append(pending)
            pending.clear()

    emit(ev.ClusterCreated(cluster_id="bench"))
    emit(ev.LeaderElected(leader_id="m1", http="m1:5050", term=1))
    for i in range(agents):
        emit(ev.AgentRegistered(agent_id=f"bench-S{i}", hostname=f"a{i}", http=f"a{i}:5051", resources=AGENT.to_list()))
    for f in range(frameworks):
        emit(ev.FrameworkSubscribed(framework_id=f"bench-{f:04d}",
                                    info=ev.FrameworkInfo(name=f"fw{f}", user="u", roles=[f"role{f % 3}"])))
    k = 0
    while state.index < n_events:
        ts += 0.01
        fid = f"bench-{k % frameworks:04d}"
        role = f"role{(k % frameworks) % 3}"
        aid = f"bench-S{k % agents}"
        oid = f"bench-O{state.next_offer}"
        offer = ev.OfferRecord(offer_id=oid, framework_id=fid, agent_id=aid, role=role, resources=TASK.to_list())
        emit(ev.OffersMade(offers=[offer], trigger="periodic", seed=state.index, candidates=[aid]))
        if k % 7 == 0:
            emit(ev.OffersDeclined(framework_id=fid, offer_ids=[oid], refuse_seconds=1.0))
        else:
            tid = f"t{k}"
            spec = ev.TaskSpec(task_id=tid, name=tid, agent_id=aid, resources=TASK.to_list(),
                               command=ev.CommandSpec(value="true"), role=role)
            emit(ev.OffersAccepted(framework_id=fid, offer_ids=[oid], tasks=[spec], refuse_seconds=0.0))
            for st in ("TASK_RUNNING", "TASK_FINISHED"):
                u = base64.b64encode(k.to_bytes(8, "big") + st.encode()[:8].ljust(8, b"_")).decode()
                emit(ev.StatusUpdated(framework_id=fid, task_id=tid, agent_id=aid,
                                      status=ev.TaskStatus(state=st, source="SOURCE_EXECUTOR", timestamp=ts, uuid=u)))
                emit(ev.StatusAcknowledged(framework_id=fid, task_id=tid, uuid=u))
        k += 1
    if pending:
        store.append(pending)
    store.close()
    return state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="20,000 events (a smoke run)")
    args = p.parse_args()
    n = 20_000 if args.quick else args.events
    with tempfile.TemporaryDirectory(prefix="drover-bench-replay-") as tmp:
        path = Path(tmp) / "events.sqlite"
        t0 = time.perf_counter()
        live = generate(path, n)
        gen_s = time.perf_counter() - t0
        store = EventStore(path)
        total = store.last_index()

        t0 = time.perf_counter()
        rows = sum(1 for _ in store.db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx"))
        raw_s = time.perf_counter() - t0

        dec = msgspec.json.Decoder(ev.Event)
        t0 = time.perf_counter()
        for row in store.db.execute("SELECT idx, term, ts, type, payload FROM events ORDER BY idx"):
            dec.decode(row[4])
        decode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        replayed = state_at(store, None, use_snapshots=False)
        replay_s = time.perf_counter() - t0
        store.close()
        same = state_hash(replayed) == state_hash(live)
        size = path.stat().st_size

    print(f"\nReplay from index 0: {total:,} events ({size / 2**20:.0f} MiB store), generated through the fold "
          f"in {gen_s:.1f} s\n")
    head = f"{'what':<40} {'seconds':>8} {'events/s':>12} {'vs raw rows':>12}"
    print(head)
    print("-" * len(head))
    for name, secs in (("raw rows (SQLite SELECT, baseline)", raw_s), ("raw rows + msgspec decode", decode_s),
                       ("replay: decode + fold (state_at)", replay_s)):
        print(f"{name:<40} {secs:>8.2f} {total / secs:>12,.0f} {raw_s / secs:>11.2f}x")
    print(f"\nrows read: {rows:,}; replayed state hash {'matches' if same else 'DIFFERS FROM'} the generating state")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
