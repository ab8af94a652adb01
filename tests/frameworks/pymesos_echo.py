"""An unmodified pymesos scheduler, run as its own process by the integration tests.

Modes:
  run N tasks of COMMAND and wait for all to end            (default)
  --kill-reconcile: two long tasks; kill one; reconcile explicitly and implicitly
  --ready-file F: write F once every task is RUNNING (the test then injects a failure)
Prints one JSON object with what it saw, then exits 0; exits 1 on timeout.
"""

import argparse
import json
import sys
import threading
import uuid
from pathlib import Path

from pymesos import MesosSchedulerDriver, Scheduler

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE"}


def scalar(offer, name):
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name and r["type"] == "SCALAR")


class Echo(Scheduler):
    def __init__(self, args):
        self.args = args
        self.to_launch = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(args.tasks)]
        self.expected = set(self.to_launch)
        self.history = {}  # task -> [states]
        self.final = {}
        self.reconciled = {}  # task -> (state, reason) from REASON_RECONCILIATION updates
        self.registered_count = 0
        self.reregistered_count = 0
        self.framework_id = None
        self.done = threading.Event()
        self.killed_sent = False
        self.reconcile_sent = False
        self.lock = threading.Lock()

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        self.registered_count += 1

    def reregistered(self, driver, master_info):
        self.reregistered_count += 1

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                tasks = []
                cpus, mem = scalar(offer, "cpus"), scalar(offer, "mem")
                while self.to_launch and cpus >= 0.1 and mem >= 32:
                    tid = self.to_launch.pop(0)
                    tasks.append({
                        "name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
                        "command": {"value": self.args.command},
                    })
                    cpus -= 0.1
                    mem -= 32
                if tasks:
                    driver.launchTasks(offer["id"], tasks, {"refuse_seconds": 1})
                else:
                    driver.declineOffer(offer["id"], {"refuse_seconds": 30})

    def statusUpdate(self, driver, update):
        tid, state = update["task_id"]["value"], update["state"]
        with self.lock:
            if update.get("reason") == "REASON_RECONCILIATION":
                self.reconciled[tid] = [state, update.get("reason")]
            else:
                self.history.setdefault(tid, []).append(state)
                if state in TERMINAL:
                    self.final[tid] = state
            running = [t for t in self.expected if self.history.get(t, [None])[-1] == "TASK_RUNNING"]
            if self.args.ready_file and len(running) == len(self.expected):
                Path(self.args.ready_file).write_text("running")
            if self.args.kill_reconcile:
                victim = sorted(self.expected)[0]
                if len(running) == len(self.expected) and not self.killed_sent:
                    self.killed_sent = True
                    driver.killTask({"value": victim})
                if self.final.get(victim) == "TASK_KILLED" and not self.reconcile_sent:
                    self.reconcile_sent = True
                    driver.reconcileTasks([{"task_id": {"value": t}} for t in sorted(self.expected)])
                    driver.reconcileTasks([])
                survivor = sorted(self.expected)[1]
                if self.reconcile_sent and survivor in self.reconciled and victim in self.reconciled:
                    if survivor not in self.final:
                        driver.killTask({"value": survivor})
            if set(self.final) >= self.expected:
                self.done.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--command", default="echo hello from $MESOS_TASK_ID")
    p.add_argument("--kill-reconcile", action="store_true")
    p.add_argument("--ready-file")
    p.add_argument("--timeout", type=float, default=90)
    p.add_argument("--principal", help="authenticate (HTTP Basic) as this principal, with --secret")
    p.add_argument("--secret")
    p.add_argument("--user", default="root")
    args = p.parse_args()
    if args.kill_reconcile:
        args.tasks, args.command = 2, "sleep 300"
    sched = Echo(args)
    fw = {"user": args.user, "name": "pymesos-echo", "failover_timeout": 60.0}
    driver = MesosSchedulerDriver(sched, fw, args.master, use_addict=False, principal=args.principal,
                                  secret=args.secret)
    driver.start()
    ok = sched.done.wait(args.timeout)
    driver.stop()
    driver.join()
    print(json.dumps({"ok": ok, "framework_id": sched.framework_id, "final": sched.final, "history": sched.history,
                      "reconciled": sched.reconciled, "registered": sched.registered_count,
                      "reregistered": sched.reregistered_count}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
