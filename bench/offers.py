"""Benchmark: what one allocation run costs the leader, end to end, over the folded master state.

Unlike `bench.allocator` (the allocator alone), this goes through `master.allocation.decide_offers`
(what the leader calls), the commit gate's `encode_event` and the fold of the recorded `OFFERS_MADE`,
on a state built by folding real events. Rows, per cluster size (agents x frameworks, 2 frameworks
per role):

  * full: one periodic run with every agent free (each agent gets one offer);
  * filtered: the same after ROUNDS rounds of offers all declined with long, different filters
    (refuse 600 s + a few seconds per round), so that every agent holds ROUNDS filters and a run
    walks past them;
  * first filters expired: those offers declined too (for an hour), then a run when the first
    round's filters have expired: the fold drops them, the run offers to their frameworks again.

Times are CPU seconds of this process (the machine may be shared). Columns: run s (decide_offers,
as the leader calls it), explained s (the same run with the per-agent explanation, as the leader
recorded it before), bytes (the event as committed, JSON; with the explanation), gate s
(encode_event: encode + decode back), fold s (folding the event).

    .venv/bin/python -m bench.offers [--quick] [--sizes 1000x10,5000x10,10000x10] [--rounds 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import time

from eventstore import events as ev
from eventstore.resources import Resources
from master.allocation import decide_offers
from master.allocator.config import AllocatorConfig
from master.state import State, apply

AGENT = "cpus:16;mem:65536;disk:200000;ports:[31000-32000]"
CID = "bench"


class Log:
    def __init__(self) -> None:
        self.state = State()
        self.ts = 1000.0

    def __call__(self, event: ev.Event, ts: float | None = None) -> float:
        if ts is not None:
            self.ts = ts
        env = ev.Envelope(index=self.state.index + 1, term=1, ts=self.ts, event=event)
        t0 = time.process_time()
        apply(self.state, env)
        return time.process_time() - t0


def build(agents: int, frameworks: int) -> Log:
    log = Log()
    log(ev.LeaderElected(leader_id="m", http="m:5050", term=1, config=AllocatorConfig().to_record()))
    log(ev.ClusterCreated(cluster_id=CID))
    res = Resources.parse(AGENT).to_list()
    for i in range(agents):
        log(ev.AgentRegistered(agent_id=f"{CID}-S{i}", hostname=f"a{i}", http=f"a{i}:5051", resources=res))
    roles = max(1, frameworks // 2)
    for f in range(frameworks):
        info = ev.FrameworkInfo(name=f"fw{f}", user="u", roles=[f"role-{f % roles}"])
        log(ev.FrameworkSubscribed(framework_id=f"{CID}-{f:04d}", info=info))
    return log


def timed(fn, repeat: int = 1):
    """The result and the best CPU time of `repeat` calls (CPU time, and the best: the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return out, best


def measure(log: Log, now: float, repeat: int) -> dict:
    s = log.state
    made, run = timed(lambda: decide_offers(s, now, "periodic", None, explain=False), repeat)
    explained, run_x = timed(lambda: decide_offers(s, now, "periodic", None, explain=True), repeat)
    row = {"offers": 0, "run": run, "run_x": run_x, "bytes": 0, "bytes_x": 0, "gate": 0.0, "fold": 0.0}
    if made is None:
        return row
    assert explained is not None and explained.offers == made.offers
    data, gate = timed(lambda: ev.encode_event(made), repeat)
    row.update(offers=len(made.offers), bytes=len(data), bytes_x=len(ev.encode_event(explained)), gate=gate)
    gc.collect()
    row["fold"] = log(made, ts=now)
    return row


def decline_all(log: Log, refuse: float) -> None:
    by_fw: dict[str, list[str]] = {}
    for o in log.state.offers.values():
        by_fw.setdefault(o.framework_id, []).append(o.offer_id)
    for fid, oids in sorted(by_fw.items()):
        log(ev.OffersDeclined(framework_id=fid, offer_ids=oids, refuse_seconds=refuse))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small clusters only (a smoke run)")
    p.add_argument("--sizes", default=None, help="AGENTSxFRAMEWORKS,... (default 1000x10,5000x10,10000x10)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of declines before the filtered run")
    p.add_argument("--repeat", type=int, default=3, help="runs timed per row (the best is shown)")
    args = p.parse_args()
    sizes_text = args.sizes or ("200x10" if args.quick else "1000x10,5000x10,10000x10")
    rows = []
    for size in sizes_text.split(","):
        agents, frameworks = (int(x) for x in size.split("x"))
        log = build(agents, frameworks)
        now = log.ts + 1.0
        rows.append((agents, frameworks, "full", measure(log, now, args.repeat)))
        for r in range(args.rounds):
            decline_all(log, 600.0 + 5.0 * r)
            now += 1.0
            if r < args.rounds - 1:
                made = decide_offers(log.state, now, "periodic", None)
                if made is not None:
                    log(made, ts=now)
        rows.append((agents, frameworks, f"filtered x{args.rounds}", measure(log, now + 1.0, args.repeat)))
        decline_all(log, 3600.0)
        rows.append((agents, frameworks, "first filters expired", measure(log, now + 602.5, args.repeat)))
    head = (f"{'agents':>7} {'fws':>4} {'case':<22} {'offers':>6} {'run s':>7} {'explained s':>11} "
            f"{'bytes':>10} {'bytes explained':>15} {'gate s':>7} {'fold s':>7}")
    print(f"\nOne periodic allocation run through decide_offers (best of {args.repeat}; fold: one)\n")
    print(head)
    print("-" * len(head))
    for agents, frameworks, case, r in rows:
        print(f"{agents:>7} {frameworks:>4} {case:<22} {r['offers']:>6} {r['run']:>7.3f} {r['run_x']:>11.3f} "
              f"{r['bytes']:>10,} {r['bytes_x']:>15,} {r['gate']:>7.3f} {r['fold']:>7.3f}")


if __name__ == "__main__":
    main()
