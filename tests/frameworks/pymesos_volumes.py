"""An unmodified pymesos scheduler using a persistent volume, run as its own process by the integration tests.

Phases (one per run; the test injects failures between runs):
  --phase write    RESERVE disk for the role, CREATE volume ID, LAUNCH a task writing DATA into it (one ACCEPT)
  --phase read     wait for an offer holding volume ID; LAUNCH a task that checks the file holds DATA
  --phase destroy  wait for an offer holding volume ID; DESTROY it; in the next offer its disk is reserved disk
                   again: UNRESERVE it; then wait for an offer with no reserved disk
Prints one JSON object with what it saw, then exits 0; exits 1 on timeout.
"""

import argparse
import json
import sys
import threading
import uuid

from pymesos import MesosSchedulerDriver, Scheduler

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE"}


def scalar(offer, name, role=None):
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name and r["type"] == "SCALAR"
               and "disk" not in r and (role is None or r.get("role", "*") == role))


def volumes(offer):
    return [r for r in offer["resources"] if r.get("disk", {}).get("persistence")]


class Volumes(Scheduler):
    def __init__(self, args):
        self.args = args
        self.role = args.role
        self.size = args.size
        self.task_id = f"{args.phase}-{uuid.uuid4().hex[:6]}"
        self.launched = False
        self.destroyed = None  # the agent the volume was destroyed on
        self.result = {"phase": args.phase, "task_id": self.task_id, "states": [], "offered_volumes": []}
        self.done = threading.Event()
        self.lock = threading.Lock()

    def reserved_disk(self):
        return {"name": "disk", "type": "SCALAR", "scalar": {"value": self.size},
                "reservations": [{"type": "DYNAMIC", "role": self.role, "principal": "pymesos"}]}

    def volume(self, mode="RW"):
        d = self.reserved_disk()
        d["disk"] = {"persistence": {"id": self.args.volume}, "volume": {"container_path": "data", "mode": mode}}
        return d

    def task(self, offer, command):
        return {"name": self.task_id, "task_id": {"value": self.task_id}, "agent_id": offer["agent_id"],
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                              {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}, self.volume()],
                "command": {"value": command}}

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                vols = volumes(offer)
                self.result["offered_volumes"].append([v["disk"]["persistence"]["id"] for v in vols])
                mine = [v for v in vols if v["disk"]["persistence"]["id"] == self.args.volume]
                phase, ops = self.args.phase, None
                if phase == "write" and not self.launched and scalar(offer, "disk") >= self.size:
                    ops = [{"type": "RESERVE", "reserve": {"resources": [self.reserved_disk()]}},
                           {"type": "CREATE", "create": {"volumes": [self.volume()]}},
                           {"type": "LAUNCH", "launch": {"task_infos": [self.task(
                               offer, f"echo -n '{self.args.data}' > data/file && sync")]}}]
                elif phase == "read" and not self.launched and mine:
                    ops = [{"type": "LAUNCH", "launch": {"task_infos": [self.task(
                        offer, f"test \"$(cat data/file)\" = '{self.args.data}'")]}}]
                elif phase == "destroy" and not self.destroyed and mine:
                    ops = [{"type": "DESTROY", "destroy": {"volumes": [mine[0]]}}]
                    self.destroyed = offer["agent_id"]["value"]
                elif phase == "destroy" and offer["agent_id"]["value"] != self.destroyed:
                    pass  # another agent's offer: it never held the volume
                elif phase == "destroy" and self.destroyed and not mine and "after_destroy" not in self.result:
                    # the volume's disk is back in the reservation: release it too
                    self.result["after_destroy"] = {"volumes": [v["disk"]["persistence"]["id"] for v in vols],
                                                    "reserved_disk": scalar(offer, "disk", self.role)}
                    if self.result["after_destroy"]["reserved_disk"] >= self.size:
                        ops = [{"type": "UNRESERVE", "unreserve": {"resources": [self.reserved_disk()]}}]
                elif phase == "destroy" and "after_destroy" in self.result and scalar(offer, "disk", self.role) == 0:
                    self.result["after_unreserve"] = {"reserved_disk": 0}
                    self.done.set()
                if ops is not None:
                    self.launched = self.launched or any(op["type"] == "LAUNCH" for op in ops)
                    driver.acceptOffers([offer["id"]], ops, {"refuse_seconds": 0})
                else:
                    driver.declineOffer(offer["id"], {"refuse_seconds": 0.5})

    def statusUpdate(self, driver, update):
        with self.lock:
            if update["task_id"]["value"] != self.task_id:
                return
            self.result["states"].append(update["state"])
            if update["state"] in TERMINAL:
                self.result["final"] = update["state"]
                self.result["message"] = update.get("message")
                self.done.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--phase", choices=["write", "read", "destroy"], required=True)
    p.add_argument("--volume", required=True)
    p.add_argument("--data", default="hello")
    p.add_argument("--role", default="db")
    p.add_argument("--size", type=float, default=64)
    p.add_argument("--timeout", type=float, default=90)
    args = p.parse_args()
    sched = Volumes(args)
    fw = {"user": "root", "name": f"pymesos-volumes-{args.phase}", "roles": [args.role],
          "capabilities": [{"type": "MULTI_ROLE"}], "failover_timeout": 0}
    driver = MesosSchedulerDriver(sched, fw, args.master, use_addict=False)
    driver.start()
    ok = sched.done.wait(args.timeout)
    driver.stop()
    driver.join()
    print(json.dumps({"ok": ok, **sched.result}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
