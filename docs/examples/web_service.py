"""A web service on Drover with an unmodified pymesos scheduler: the worked example of docs/services.md.

It keeps N web servers (busybox httpd in the default image) running, each on a port of its offer (the host's
network, Mesos's default), health-checked over HTTP by its agent, and launched again when one ends. It prints each
server's URL once the agent reports it healthy.

    .venv/bin/python docs/examples/web_service.py --master 127.0.0.1:5050 --instances 2

Ctrl-C (or SIGTERM) tears the framework down: its tasks are killed. tests/test_health_example.py runs it.
"""

import argparse
import signal
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE"}
CPUS, MEM = 0.1, 32

# The task writes its page into its sandbox (its working directory) and serves it on $PORT (the agent sets PORT0..n
# and PORT from the task's ports resources, as Marathon does).
COMMAND = ("mkdir -p www && echo \"<h1>$MESOS_TASK_ID</h1> serving on port $PORT\" > www/index.html "
           "&& exec httpd -f -v -p $PORT -h www")


def scalar(offer, name):
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name and r["type"] == "SCALAR")


def ports(offer):
    return [p for r in offer["resources"] if r["name"] == "ports"
            for rng in r["ranges"]["range"] for p in range(rng["begin"], rng["end"] + 1)]


class WebService(Scheduler):
    def __init__(self, instances):
        self.wanted = instances
        self.next_id = 0
        self.tasks = {}  # task id -> {"url", "state", "healthy"}
        self.used_ports = set()  # one host: our agents share a port range
        self.lock = threading.Lock()

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                launch = []
                cpus, mem = scalar(offer, "cpus"), scalar(offer, "mem")
                free = [p for p in ports(offer) if p not in self.used_ports]
                while self.open_tasks() + len(launch) < self.wanted and cpus >= CPUS and mem >= MEM and free:
                    port = free.pop(0)
                    tid = f"web-{self.next_id}"
                    self.next_id += 1
                    self.used_ports.add(port)
                    self.tasks[tid] = {"url": f"http://{offer['hostname']}:{port}/", "state": "TASK_STAGING",
                                       "healthy": None, "port": port}
                    launch.append({
                        "name": "web", "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                        "resources": [
                            {"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
                            {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}},
                            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}],
                        "command": {"value": COMMAND},
                        # Mesos's HealthCheck: the agent GETs http://127.0.0.1:PORT/ in the task's network namespace
                        # every 2 s; 3 failures in a row (after the grace period) and the task is killed.
                        "health_check": {"type": "HTTP", "http": {"port": port, "path": "/"},
                                         "delay_seconds": 0, "interval_seconds": 2, "timeout_seconds": 2,
                                         "grace_period_seconds": 10, "consecutive_failures": 3},
                        # SIGTERM, then SIGKILL 5 s later when the task is killed
                        "kill_policy": {"grace_period": {"nanoseconds": 5_000_000_000}},
                    })
                    cpus, mem = cpus - CPUS, mem - MEM
                if launch:
                    driver.launchTasks(offer["id"], launch, {"refuse_seconds": 5})
                else:
                    driver.declineOffer(offer["id"], {"refuse_seconds": 30})

    def open_tasks(self):
        return sum(1 for t in self.tasks.values() if t["state"] not in TERMINAL)

    def statusUpdate(self, driver, update):
        tid, state = update["task_id"]["value"], update["state"]
        with self.lock:
            task = self.tasks.get(tid)
            if task is None:
                return
            task["state"] = state
            if "healthy" in update:
                task["healthy"] = update["healthy"]
            if state == "TASK_RUNNING" and update.get("healthy") is True:
                print(f"{tid} is healthy: open {task['url']}", flush=True)
            elif state == "TASK_RUNNING" and update.get("healthy") is False:
                print(f"{tid} failed its health check", flush=True)
            elif state in TERMINAL:
                print(f"{tid} ended {state}: {update.get('message', '')}; launching another", flush=True)
                self.used_ports.discard(task["port"])
                driver.reviveOffers()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", default="127.0.0.1:5050")
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--principal", help="with --secret: authenticate (drover local --secure)")
    p.add_argument("--secret")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sched = WebService(args.instances)
    framework = {"user": "root", "name": "web-service", "failover_timeout": 0.0,
                 "capabilities": [{"type": "TASK_KILLING_STATE"}]}
    driver = MesosSchedulerDriver(sched, framework, args.master, use_addict=False, principal=args.principal,
                                  secret=args.secret)
    driver.start()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        print("tearing down", flush=True)
        driver.stop()  # not failover: a framework that leaves is torn down, and its tasks with it
        driver.join()


if __name__ == "__main__":
    sys.exit(main())
