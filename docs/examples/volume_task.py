"""One task that uses a persistent volume, with an unmodified pymesos scheduler: the worked example of
docs/persistent-volumes.md.

The framework subscribes in ROLE, waits for an offer holding volume VOLUME and launches one task that mounts it at
sandbox/PATH (RW or RO). With --create it makes the volume itself when an offer does not hold it: RESERVE disk for
ROLE, CREATE the volume and LAUNCH the task in one ACCEPT. It prints the task's statuses and exits (0 when the task
ended, 1 on timeout).

    .venv/bin/python docs/examples/volume_task.py --master 127.0.0.1:5050 --volume pgdata \
        --command 'echo hello > data/greeting'
    .venv/bin/python docs/examples/volume_task.py --master 127.0.0.1:5050 --volume pgdata --path snap --mode RO \
        --command 'cat snap/greeting'
    .venv/bin/python docs/examples/volume_task.py --master 127.0.0.1:5050 --volume logs --size 64 --create \
        --command 'echo created > data/f'
"""

import argparse
import json
import sys
import threading
import uuid

from pymesos import MesosSchedulerDriver, Scheduler

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE"}


def volumes(offer):
    return [r for r in offer["resources"] if r.get("disk", {}).get("persistence")]


def unreserved_disk(offer):
    return sum(r["scalar"]["value"] for r in offer["resources"]
               if r["name"] == "disk" and "disk" not in r and r.get("role", "*") == "*")


class VolumeTask(Scheduler):
    def __init__(self, args):
        self.args = args
        self.task_id = f"{args.name}-{uuid.uuid4().hex[:4]}"
        self.launched = False
        self.done = threading.Event()
        self.statuses = []

    def reserved_disk(self):
        return {"name": "disk", "type": "SCALAR", "scalar": {"value": self.args.size},
                "reservations": [{"type": "DYNAMIC", "role": self.args.role}]}

    def volume(self, path, mode):
        v = self.reserved_disk()
        v["disk"] = {"persistence": {"id": self.args.volume}, "volume": {"container_path": path, "mode": mode}}
        return v

    def resourceOffers(self, driver, offers):
        for offer in offers:
            mine = [v for v in volumes(offer) if v["disk"]["persistence"]["id"] == self.args.volume]
            create = self.args.create and not mine and unreserved_disk(offer) >= self.args.size
            if self.launched or not (mine or create):
                driver.declineOffer(offer["id"], {"refuse_seconds": 1})
                continue
            task = {"name": self.task_id, "task_id": {"value": self.task_id}, "agent_id": offer["agent_id"],
                    "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                                  {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                                  self.volume(self.args.path, self.args.mode)],
                    "command": {"value": self.args.command}}
            ops = []
            if create:  # the volume as created is RW (a read-only CREATE is refused); the task may mount it RO
                ops += [{"type": "RESERVE", "reserve": {"resources": [self.reserved_disk()]}},
                        {"type": "CREATE", "create": {"volumes": [self.volume(self.args.path, "RW")]}}]
            ops.append({"type": "LAUNCH", "launch": {"task_infos": [task]}})
            self.launched = True
            driver.acceptOffers([offer["id"]], ops, {"refuse_seconds": 0})

    def statusUpdate(self, driver, update):
        if update["task_id"]["value"] != self.task_id:
            return
        self.statuses.append([update["state"], update.get("reason"), update.get("message")])
        if update["state"] in TERMINAL:
            self.done.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", default="127.0.0.1:5050")
    p.add_argument("--role", default="db")
    p.add_argument("--volume", required=True, help="the persistence id")
    p.add_argument("--path", default="data", help="container_path: one name, relative to the sandbox")
    p.add_argument("--mode", default="RW", choices=["RW", "RO"])
    p.add_argument("--size", type=float, default=512, help="the volume's size in MB (it must match the volume's)")
    p.add_argument("--create", action="store_true", help="RESERVE + CREATE the volume if no offer holds it")
    p.add_argument("--command", required=True)
    p.add_argument("--name", default="vol")
    p.add_argument("--timeout", type=float, default=90)
    args = p.parse_args()
    sched = VolumeTask(args)
    framework = {"user": "root", "name": "volume-task", "roles": [args.role],
                 "capabilities": [{"type": "MULTI_ROLE"}], "failover_timeout": 0}
    driver = MesosSchedulerDriver(sched, framework, args.master, use_addict=False)
    driver.start()
    ok = sched.done.wait(args.timeout)
    driver.stop()
    driver.join()
    print(json.dumps({"task_id": sched.task_id, "statuses": sched.statuses}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
