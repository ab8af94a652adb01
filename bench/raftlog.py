"""Benchmark: committed events/s through Drover's 3-replica Raft log, against raw pysyncobj appends.

    .venv/bin/python -m bench.raftlog            # full run, about a minute
    .venv/bin/python -m bench.raftlog --quick    # smoke run, ~15 s
    .venv/bin/python -m bench.raftlog --fsync    # Drover twice: journal fsync off and on (RaftTuning.fsync_journal)

Two 3-replica clusters run side by side on loopback, each replica its own process (this module's `_replica`
entry point):

* **drover**: each replica runs a real `master.replica.MasterServer` -- the object `drover master` runs: our `RaftLog`
  (pysyncobj), the applier task that writes every committed batch to the replica's `AsyncEventStore` (SQLite) and
  folds it, and the leadership machinery (LeaderElected barrier, allocator ticker). The only thing the benchmark adds
  is a tiny control endpoint. (Real `drover master` processes via `LocalCluster` cannot be driven: there is no
  endpoint that proposes arbitrary events, and the scheduler API adds HTTP + validation per commit, which is not what
  is measured here.) On the leader, each proposal goes exactly the way `MasterServer.commit` does it: `stage(events)`
  (folded at once, master/pipeline.py) -> the committer proposes the Raft entry (timestamp "committed": Raft majority
  reached, entry applied to pysyncobj's consumer here) -> `await committed(staged)` (timestamp "applied": written
  to SQLite on the leader).
* **raw**: a `SyncObjConsumer` whose `@replicated append(data: bytes)` only counts, with the very same `SyncObjConf`
  (taken from a `RaftLog` built with the default `RaftTuning`: journal file, appendEntriesUseBatch=False, timeouts),
  fed the same bytes: one Raft entry holding the msgpack-encoded `Batch` of N events. Proposals are `append(data,
  sync=True)` from a plain thread.

Proposals are sequential (one outstanding at a time) on the leader: one decision per Raft entry, the master's worst
case (concurrent decisions are grouped into one entry; bench.scale measures that). events/s = events / wall time of
the measured loop. Measurements alternate between the two clusters in rounds so that drift on the machine hits both
alike. Events are `StatusUpdated` records (~300 bytes of JSON each) for a task nobody knows, so the fold is a cheap
no-op and the cost measured is the log + store path.

With `--fsync` a third cluster runs: the drover row is split into "fsync off" (pysyncobj's mmap journal, never
flushed; SQLite synchronous=NORMAL) and "fsync on" (journal msync'd before every acknowledgement, term/vote file
fsync'd, SQLite synchronous=FULL), measured in the same alternating rounds. Without it, the drover row uses the
default `RaftTuning`.

The total number of Raft entries per cluster stays below pysyncobj's `logCompactionMinEntries` (5000), so log
compaction (a forked whole-state pickle) does not happen during the run and is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from bench import (eprint, exit_when_orphaned, fmt, machine_line, median, percentile, run_main,
                   sigterm_as_keyboard_interrupt, table)

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 10, 100, 1000)
# Proposals per batch size, summed over all rounds (plus a few warm-up proposals per round).
FULL_COUNTS = {1: 2000, 10: 1000, 100: 600, 1000: 200}
QUICK_COUNTS = {1: 40, 10: 20, 100: 10, 1000: 4}
FULL_ROUNDS, QUICK_ROUNDS = 4, 2
WARMUP = 3
# pysyncobj logs this (CRITICAL) on a follower that receives entries it already has and has applied; counted per run.
TRUNCATION_MSG = "truncating already-applied log entries"


# ----------------------------------------------------------------------------------------------- the events
def make_events(n: int) -> list:
    from eventstore import events as ev

    now = time.time()
    return [ev.StatusUpdated(
        framework_id="bench-framework-0000", task_id=f"bench-task-{i:06d}", agent_id="bench-agent-S0",
        status=ev.TaskStatus(state="TASK_RUNNING", source="SOURCE_EXECUTOR", timestamp=now + i * 1e-6,
                             uuid=base64.b64encode(uuid.uuid4().bytes).decode(),
                             message="benchmark event", container_id=uuid.uuid4().hex + uuid.uuid4().hex))
        for i in range(n)]


# ----------------------------------------------------------------------------------------------- replica side
async def _serve_control(port: int, routes) -> object:
    from aiohttp import web

    app = web.Application(client_max_size=1 << 20)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, reuse_address=True).start()
    return runner


async def _drover_replica(args) -> None:
    from aiohttp import web

    from master.replica import MasterConfig, MasterServer, Peer

    from eventstore.raftlog import RaftTuning

    peers = [Peer(raft=p.split("=")[0], http=p.split("=")[1]) for p in args.peer]
    tuning = RaftTuning() if args.fsync == "default" else RaftTuning(fsync_journal=args.fsync == "on")
    cfg = MasterConfig(id=args.id, http=f"{HOST}:{args.control}", raft=args.raft, peers=peers,
                       data_dir=Path(args.data_dir), raft_tuning=tuning)
    core = MasterServer(cfg)
    await core.start()

    async def status(request):
        return web.json_response({"leader": core.serving, "raft_leader": core.raft.is_leader,
                                  "ready": core.raft.ready, "term": core.raft.term,
                                  "applied_index": core.state.index, "raft_index": core.raft.last_index})

    async def run(request):
        body = await request.json()
        n, count, warmup = int(body["batch"]), int(body["count"]), int(body.get("warmup", 0))
        events = make_events(n)
        committed, applied = [], []
        perf = time.perf_counter
        raft_done: list[float] = []  # when the last proposal's Raft commit reached the loop
        propose_entry = core.raft.propose_entry

        def timed(data: bytes, term: int, timeout: float = 5.0):
            fut = propose_entry(data, term, timeout)
            fut.add_done_callback(lambda _: raft_done.append(perf()))
            return fut

        core.raft.propose_entry = timed
        try:
            start = perf()
            for i in range(warmup + count):
                if i == warmup:
                    start = perf()
                # exactly MasterServer.commit (stage, then wait), with the Raft commit timed on the way
                t0 = perf()
                await core.committed(core.stage(events))
                t2 = perf()
                t1 = raft_done[-1] if raft_done else t2
                if i >= warmup:
                    committed.append(t1 - t0)
                    applied.append(t2 - t0)
            wall = perf() - start
        except Exception as e:  # NotLeader, ProposalFailed, timeouts: the driver retries on the new leader
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=409)
        return web.json_response({"wall": wall, "committed": committed, "applied": applied,
                                  "term": core.raft.term})

    runner = await _serve_control(args.control, [("GET", "/status", status), ("POST", "/run", run)])
    await _wait_for_stop()
    await runner.cleanup()
    await core.stop()


def _raw_replica_objects(args):
    from pysyncobj import SyncObj, SyncObjConsumer, replicated

    from eventstore.raftlog import RaftLog

    class RawLog(SyncObjConsumer):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.nbytes = 0

        @replicated
        def append(self, data: bytes) -> int:
            self.count += 1
            self.nbytes += len(data)
            return self.count

    peers = [p.split("=")[0] for p in args.peer]
    # The very SyncObjConf RaftLog would use (default RaftTuning, journal + dump files in this replica's dir).
    conf = RaftLog(args.raft, peers, Path(args.data_dir) / "raft")._conf
    log = RawLog()
    sync = SyncObj(args.raft, peers, conf=conf, consumers=[log])
    return sync, log


async def _raw_replica(args) -> None:
    from aiohttp import web

    from eventstore import events as ev

    sync, log = _raw_replica_objects(args)

    async def status(request):
        return web.json_response({"leader": sync._isLeader(), "raft_leader": sync._isLeader(),
                                  "ready": sync.isReady(), "term": sync.raftCurrentTerm, "applied_index": log.count})

    def run_sync(n: int, count: int, warmup: int) -> dict:
        data = ev.encode_batch(ev.Batch(term=sync.raftCurrentTerm, ts=time.time(), events=make_events(n),
                                        proposal=uuid.uuid4().hex))
        lat = []
        perf = time.perf_counter
        start = perf()
        for i in range(warmup + count):
            if i == warmup:
                start = perf()
            t0 = perf()
            log.append(data, sync=True, timeout=5.0)
            if i >= warmup:
                lat.append(perf() - t0)
        return {"wall": perf() - start, "committed": lat, "applied": [], "term": sync.raftCurrentTerm,
                "entry_bytes": len(data)}

    async def run(request):
        body = await request.json()
        try:
            res = await asyncio.to_thread(run_sync, int(body["batch"]), int(body["count"]), int(body.get("warmup", 0)))
        except Exception as e:
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=409)
        return web.json_response(res)

    runner = await _serve_control(args.control, [("GET", "/status", status), ("POST", "/run", run)])
    await _wait_for_stop()
    await runner.cleanup()
    sync.destroy()


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def replica_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench.raftlog _replica")
    ap.add_argument("--kind", choices=("drover", "raw"), required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--raft", required=True)
    ap.add_argument("--peer", action="append", default=[], metavar="RAFT=CONTROL")
    ap.add_argument("--control", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--fsync", choices=("default", "on", "off"), default="default")
    args = ap.parse_args(argv)
    exit_when_orphaned(args.parent)
    from drover import logs

    logs.configure("warning", component=f"bench-{args.kind}-{args.id}")
    asyncio.run(_drover_replica(args) if args.kind == "drover" else _raw_replica(args))
    return 0


# ----------------------------------------------------------------------------------------------- driver side
def _free_port() -> int:
    from drover.local import free_port

    return free_port()


def _http(url: str, body: dict | None = None, timeout: float = 2.0) -> tuple[int, dict | None]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.load(e)
        except Exception:
            return e.code, None
    except OSError:
        return 0, None


class BenchCluster:
    def __init__(self, kind: str, root: Path, size: int = 3, fsync: str = "default", name: str | None = None):
        self.kind = kind
        self.name = name or kind
        self.fsync = fsync
        self.root = root / self.name
        self.root.mkdir(parents=True)
        prefix = kind[0] + ("" if fsync == "default" else fsync[1])  # d1 / dn1 (on) / df1 (off) / r1
        self.nodes = [{"id": f"{prefix}{i + 1}", "raft": f"{HOST}:{_free_port()}", "control": _free_port()}
                      for i in range(size)]
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for n in self.nodes:
            argv = [sys.executable, "-m", "bench.raftlog", "_replica", "--kind", self.kind, "--id", n["id"],
                    "--raft", n["raft"], "--control", str(n["control"]), "--data-dir", str(self.root / n["id"]),
                    "--parent", str(os.getpid()), "--fsync", self.fsync]
            for o in self.nodes:
                if o is not n:
                    argv += ["--peer", f"{o['raft']}={HOST}:{o['control']}"]
            logf = open(self.root / f"{n['id']}.log", "ab")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            self.procs[n["id"]] = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                                   stdin=subprocess.DEVNULL, start_new_session=True)
            logf.close()

    def statuses(self) -> dict[str, dict | None]:
        return {n["id"]: _http(f"http://{HOST}:{n['control']}/status")[1] for n in self.nodes}

    def leader(self, timeout: float = 60.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for n in self.nodes:
                p = self.procs[n["id"]]
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} replica {n['id']} exited with {p.returncode}:\n{self.log(n['id'])}")
                code, st = _http(f"http://{HOST}:{n['control']}/status")
                if code == 200 and st and st["leader"] and st["ready"]:
                    return n
            time.sleep(0.1)
        raise TimeoutError(f"no {self.name} replica became leader within {timeout}s; logs in {self.root}")

    def log(self, nid: str) -> str:
        return (self.root / f"{nid}.log").read_text(errors="replace")[-3000:]

    def run(self, batch: int, count: int, warmup: int) -> dict:
        errors = []
        for _ in range(4):
            lead = self.leader()
            code, res = _http(f"http://{HOST}:{lead['control']}/run",
                              {"batch": batch, "count": count, "warmup": warmup}, timeout=600)
            if code == 200 and res is not None:
                res["retries"] = len(errors)
                res["errors"] = errors
                return res
            errors.append((res or {}).get("error", f"HTTP {code}"))
            eprint(f"  {self.name}: run on {lead['id']} failed ({errors[-1]}); retrying on the current leader")
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: batch {batch} failed 4 times: {errors}")

    def wait_converged(self, timeout: float = 30.0) -> float:
        """Seconds until every replica has applied the same index (followers catching up after the run)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            sts = self.statuses()
            idx = {st["applied_index"] for st in sts.values() if st}
            if len(idx) == 1 and all(sts.values()):
                return time.time() - t0
            time.sleep(0.05)
        return float("nan")

    def rss_mib(self) -> list[float]:
        out = []
        for p in self.procs.values():
            try:
                kb = next(int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS:"))
                out.append(kb / 1024)
            except (OSError, StopIteration):
                pass
        return out

    def count_log(self, needle: str) -> int:
        return sum((self.root / f"{n['id']}.log").read_text(errors="replace").count(needle) for n in self.nodes)

    def store_digests(self) -> dict[str, tuple[int, int, str]]:
        """(rows, max index, sha256 over (idx, term, ts, payload) in index order) of each replica's SQLite store."""
        import hashlib
        import sqlite3

        out = {}
        for n in self.nodes:
            db = sqlite3.connect(self.root / n["id"] / "events.sqlite")
            try:
                h = hashlib.sha256()
                rows = 0
                for idx, term, ts, payload in db.execute("SELECT idx, term, ts, payload FROM events ORDER BY idx"):
                    h.update(f"{idx}:{term}:{ts!r}:".encode())
                    h.update(payload)
                    rows += 1
                top = db.execute("SELECT COALESCE(MAX(idx), 0) FROM events").fetchone()[0]
                out[n["id"]] = (rows, top, h.hexdigest()[:16])
            finally:
                db.close()
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _split(total: int, rounds: int) -> list[int]:
    base = [total // rounds] * rounds
    for i in range(total - sum(base)):
        base[i] += 1
    return [c for c in base if c > 0]


def events_per_s(batch: int, r: dict) -> float:
    """Events per second of one run: `batch` events per committed entry, over the loop's wall time."""
    return batch * len(r["committed"]) / r["wall"]


def run_bench(batches: list[int], counts: dict[int, int], rounds: int, keep: bool, fsync: bool = False) -> int:
    root = Path(tempfile.mkdtemp(prefix="drover-bench-raftlog-"))
    clusters: dict[str, BenchCluster] = {}
    results: dict[tuple[int, str], dict] = {}
    t_start = time.time()
    # name -> row label; the drover clusters are every name but "raw"
    labels = {"raw": "raw pysyncobj append"}
    if fsync:
        labels["drover"] = "Drover, fsync off"
        labels["drover-fsync"] = "Drover, fsync on"
    else:
        labels["drover"] = "Drover RaftLog+SQLite"
    drovers = [k for k in labels if k != "raw"]
    try:
        clusters["raw"] = BenchCluster("raw", root)
        if fsync:
            clusters["drover"] = BenchCluster("drover", root, fsync="off")
            clusters["drover-fsync"] = BenchCluster("drover", root, fsync="on", name="drover-fsync")
        else:
            clusters["drover"] = BenchCluster("drover", root)
        for c in clusters.values():
            c.start()
        for c in clusters.values():
            lead = c.leader()
            eprint(f"{c.name}: leader {lead['id']} ready after {time.time() - t_start:.1f}s")
        terms0 = {k: c.statuses() for k, c in clusters.items()}
        names = list(clusters)
        for batch in batches:
            for r, count in enumerate(_split(counts[batch], rounds)):
                order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first each round
                for kind in order:
                    res = clusters[kind].run(batch, count, WARMUP)
                    acc = results.setdefault((batch, kind), {"wall": 0.0, "committed": [], "applied": [],
                                                              "retries": 0, "errors": []})
                    acc["wall"] += res["wall"]
                    acc["committed"] += res["committed"]
                    acc["applied"] += res["applied"]
                    acc["retries"] += res["retries"]
                    acc["errors"] += res["errors"]
                    acc["entry_bytes"] = res.get("entry_bytes", acc.get("entry_bytes"))
            eprint(f"batch {batch}: done ({time.time() - t_start:.0f}s)")
        catch_up = {k: clusters[k].wait_converged() for k in drovers}
        terms1 = {k: c.statuses() for k, c in clusters.items()}
        truncations = {k: c.count_log(TRUNCATION_MSG) for k, c in clusters.items()}
        rss = {k: c.rss_mib() for k, c in clusters.items()}
    finally:
        for c in clusters.values():
            c.stop()
        digests = {}
        for k in drovers:
            with contextlib.suppress(Exception):  # (rows, last index, digest) per replica, compared below
                digests[k] = clusters[k].store_digests()
        if keep:
            eprint(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    # ---- report
    from eventstore.raftlog import RaftTuning

    t = RaftTuning()
    print()
    print("Raft log: committed events/s, 3 replicas on loopback, sequential proposals on the leader")
    print(machine_line())
    print(f"SyncObjConf (all rows): appendEntriesUseBatch=False, raftMinTimeout={t.raft_min_timeout}, "
          f"raftMaxTimeout={t.raft_max_timeout}, appendEntriesPeriod={t.append_entries_period}, journal file on")
    print("journal fsync: raw never; "
          + ("'fsync off' = pysyncobj's unflushed mmap journal + SQLite synchronous=NORMAL, "
             "'fsync on' = msync per entry + SQLite synchronous=FULL" if fsync else
             f"Drover default (fsync_journal={t.fsync_journal})"))
    headers = ["batch", "system", "proposals", "events/s", "commit p50 ms", "commit p95 ms",
               "+SQLite p50 ms", "+SQLite p95 ms", "events/s vs raw"]
    rows = []
    for batch in batches:
        raw = results[(batch, "raw")]
        raw_eps = batch * len(raw["committed"]) / raw["wall"]
        for kind, label in labels.items():
            r = results[(batch, kind)]
            eps = batch * len(r["committed"]) / r["wall"]
            ms = lambda xs, p: fmt(percentile(xs, p) * 1000, 2) if xs else "-"  # noqa: E731
            rows.append([str(batch), label, str(len(r["committed"])), fmt(eps, 0),
                         fmt(median(r["committed"]) * 1000, 2), ms(r["committed"], 95),
                         fmt(median(r["applied"]) * 1000, 2) if r["applied"] else "-", ms(r["applied"], 95),
                         "1.00" if kind == "raw" else f"{eps / raw_eps:.2f}"])
    print(table(headers, rows))
    if fsync:
        for batch in batches:
            off, on = results[(batch, "drover")], results[(batch, "drover-fsync")]
            speed_up = events_per_s(batch, on) / events_per_s(batch, off)
            print(f"fsync on vs off, batch {batch}: events/s x{speed_up:.2f}, commit p50 "
                  f"{(median(on['committed']) - median(off['committed'])) * 1000:+.2f} ms, +SQLite p50 "
                  f"{(median(on['applied']) - median(off['applied'])) * 1000:+.2f} ms")
    print("commit = propose() until the entry is committed by a majority and applied to pysyncobj's consumer on the\n"
          "leader; +SQLite = until MasterServer's applier has written it to the leader's SQLite store and folded it\n"
          "(what MasterServer.commit waits for). events/s counts the whole sequential loop (Drover: to +SQLite).")
    retries = {k: sum(results[(b, k)]["retries"] for b in batches) for k in clusters}
    terms = {k: (sorted({s["term"] for s in terms0[k].values() if s}),
                 sorted({s["term"] for s in terms1[k].values() if s}))
             for k in clusters}
    print("Raft terms before/after: " + ", ".join(f"{k} {terms[k][0]}->{terms[k][1]}" for k in clusters)
          + f"; retried runs: {retries}")
    print("Drover followers caught up (same applied index on all 3) after the last commit: "
          + ", ".join(f"{k} {fmt(catch_up[k], 2)} s" for k in drovers))
    print(f"pysyncobj CRITICAL '{TRUNCATION_MSG}' lines in replica logs: "
          + ", ".join(f"{k} {truncations[k]}" for k in clusters))
    for k, dg in digests.items():
        same = len({d for d in dg.values()}) == 1
        rows_, top, _ = next(iter(dg.values()))
        print(f"{k} SQLite stores after the run: {'identical on all 3 replicas' if same else 'DIFFER: ' + str(dg)}"
              f" ({rows_:,} events, last index {top:,})")
    print("replica RSS after the run (MiB): " + "; ".join(
        f"{k} {', '.join(f'{x:.0f}' for x in v)}" for k, v in rss.items()))
    sizes = ", ".join(f"{b}: {results[(b, 'raw')].get('entry_bytes', 0):,} B" for b in batches)
    print(f"Raft entry size per batch ({sizes})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_replica":
        return replica_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.raftlog", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (a few proposals per batch size)")
    ap.add_argument("--batches", default=",".join(map(str, BATCH_SIZES)), help="comma-separated batch sizes")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of proposals")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (replica logs, SQLite stores)")
    ap.add_argument("--fsync", action="store_true",
                    help="also compare Drover with the journal fsync option off vs on (a third cluster, same rounds)")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    base = QUICK_COUNTS if args.quick else FULL_COUNTS
    counts = {b: max(1, int(base.get(b, max(4, 3000 // max(b, 1))) * args.scale)) for b in batches}
    sigterm_as_keyboard_interrupt()
    return run_bench(batches, counts, QUICK_ROUNDS if args.quick else FULL_ROUNDS, args.keep, args.fsync)


if __name__ == "__main__":
    run_main(main)
