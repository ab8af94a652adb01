"""Random histories with persistent volumes, made through the deciders (framework RESERVE / UNRESERVE / CREATE /
DESTROY and LAUNCH in ACCEPTs of one or two offers, operator calls, status updates, an agent unreachable and back
with its tasks): after every step the allocator's incremental books equal a rebuild from the state, a snapshot
restores the same state hash, no volume is available that its agent does not have, and no non-shared volume is held
by two live tasks. (First written for a second read of the volume change, which it helped find bugs in.)"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import events as ev
from eventstore.resources import Resources, key_of
from master import allocation, codec
from master.decide import scheduler as sd
from master.decide.agents import AgentSubscribe, decide_agent_subscribe
from master.decide.operator import AgentOperation, decide_agent_operation
from master.state import decode_snapshot, encode_snapshot, state_hash
from tests.test_shared_volumes import books
from tests.test_volumes import CFG, FLAGS, Log, create, destroy, disk, reserve, unreserve, volume

PIDS = ["pv1", "pv2"]
SHARED = {"pv1": True, "pv2": False}
SIZE = {"pv1": 100, "pv2": 50}
STEPS = ["alloc", "alloc", "accept", "accept", "accept", "accept", "accept", "status", "status", "unreach", "back",
         "oper"]
OPS = ["RESERVE", "UNRESERVE", "CREATE", "DESTROY", "LAUNCH", "LAUNCH"]
OPERATOR_CALLS = ["RESERVE_RESOURCES", "UNRESERVE_RESOURCES", "CREATE_VOLUMES", "DESTROY_VOLUMES"]


def vol(data: st.DataObject) -> dict:
    """Mostly a volume as it was created; sometimes shared when it is not (or not when it is), of another size,
    at another path or read-only: what a framework may get wrong or choose."""
    pid = data.draw(st.sampled_from(PIDS))
    shared = SHARED[pid] if data.draw(st.integers(0, 9)) else not SHARED[pid]
    size = SIZE[pid] if data.draw(st.integers(0, 9)) else 70
    return volume(pid, size=size, shared=shared, path=data.draw(st.sampled_from(["data", "data", "other"])),
                  mode=data.draw(st.sampled_from(["RW", "RW", "RO"])))


def launch_op(data: st.DataObject, tid: str) -> dict:
    res = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]
    if data.draw(st.integers(0, 4)) > 0:
        res.append(vol(data))
    if data.draw(st.booleans()):
        res.append(disk(data.draw(st.sampled_from([10, 100]))))
    return {"type": "LAUNCH", "launch": {"task_infos": [{
        "name": tid, "task_id": {"value": tid}, "agent_id": {"value": "A1"}, "resources": res,
        "command": {"value": "true"}}]}}


class History:
    """Two frameworks of role db with SHARED_RESOURCES; the operator reserved disk and made pv1 (shared) and pv2."""

    def __init__(self) -> None:
        self.log = Log()
        self.n = 0
        self.log.subscribe("DB", "db", caps=("SHARED_RESOURCES",))
        self.log.subscribe("DB2", "db", caps=("SHARED_RESOURCES",))
        for call, res in [("RESERVE_RESOURCES", [disk(400)]), ("CREATE_VOLUMES", [volume("pv1", 100, shared=True)]),
                          ("CREATE_VOLUMES", [volume("pv2", 50)])]:
            parsed = codec.parse_resources(res, "x.volumes" if "VOL" in call else "x.resources")
            d = decide_agent_operation(self.log.state, AgentOperation(call, "A1", parsed), 0, CFG)
            assert d.refusal is None, d
            self.commit(list(d.events))

    def commit(self, events: list) -> None:
        for e in events:
            self.log(ev.decode_event(ev.encode_event(e)))  # through the commit gate, as a replica folds it


def check(h: History) -> None:
    s = h.log.state
    live = allocation.allocator_of(s)
    assert books(live) == books(allocation.rebuild(s)), "the incremental books differ from a rebuild"
    assert state_hash(decode_snapshot(encode_snapshot(s))) == state_hash(s), "a snapshot restores another state"
    for ag in live.agents.values():
        for r in ag.available:
            if r.persistence is not None:
                assert ag.total.get(key_of(r)) is not None, ("a volume available that the agent does not have", r)
    held: dict = {}
    for t in s.all_tasks():
        if t.holds_resources:
            for r in t.spec.resources:
                if r.persistence is not None and not r.shared:
                    assert key_of(r) not in held, ("two live tasks on one volume", held[key_of(r)], t.task_id)
                    held[key_of(r)] = t.task_id


def step(h: History, data: st.DataObject) -> None:
    s = h.log.state
    kind = data.draw(st.sampled_from(STEPS))
    if kind == "alloc":
        made = allocation.decide_offers(s, h.log.ts, "t")
        if made:
            h.commit([made])
    elif kind == "accept":
        fid = data.draw(st.sampled_from(["DB", "DB2"]))
        offers = sorted(o.offer_id for o in s.offers.values() if o.framework_id == fid)
        if not offers:
            return
        chosen = data.draw(st.lists(st.sampled_from(offers), min_size=1, max_size=2, unique=True))
        ops = []
        for _ in range(data.draw(st.integers(1, 4))):
            k = data.draw(st.sampled_from(OPS))
            if k == "RESERVE":
                ops.append(reserve(disk(data.draw(st.sampled_from([100, 200])))))
            elif k == "UNRESERVE":
                ops.append(unreserve(disk(data.draw(st.sampled_from([50, 100])))))
            elif k == "CREATE":
                ops.append(create(vol(data)))
            elif k == "DESTROY":
                ops.append(destroy(vol(data)))
            else:
                h.n += 1
                ops.append(launch_op(data, f"t{h.n}"))
        c = codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": fid}, "accept": {
            "offer_ids": [{"value": o} for o in chosen], "operations": ops,
            "filters": {"refuse_seconds": data.draw(st.sampled_from([0, 5]))}}})
        d = sd.decide(s, c, h.log.ts, CFG)
        if d.refusal is None:
            h.commit(list(d.events))
    elif kind == "status":
        tasks = [t for t in s.all_tasks() if not t.terminal]
        if tasks:
            t = data.draw(st.sampled_from(tasks))
            state = data.draw(st.sampled_from(["TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED"]))
            h.commit([ev.StatusUpdated(framework_id=t.framework_id, task_id=t.task_id, agent_id=t.agent_id,
                                       status=ev.TaskStatus(state=state, source="SOURCE_AGENT", timestamp=h.log.ts))])
    elif kind == "unreach":
        if "A1" in s.agents:
            offers = [o.offer_id for o in s.offers.values() if o.agent_id == "A1"]
            h.commit(([ev.OffersRescinded(offer_ids=offers, reason="agent_unreachable")] if offers else [])
                     + [ev.AgentUnreachable(agent_id="A1", unreachable_time=h.log.ts)])
    elif kind == "back":
        reports = [ev.TaskReport(framework_id=t.framework_id, task_id=t.task_id, state="TASK_RUNNING", spec=t.spec)
                   for t in s.all_tasks() if t.agent_id == "A1" and data.draw(st.booleans())]
        sub = AgentSubscribe(hostname="a", http="a:1", resources=Resources.parse(FLAGS).to_list(), agent_id="A1",
                             tasks=reports)
        d = decide_agent_subscribe(s, sub, h.log.ts, CFG)
        if d.refusal is None:
            h.commit(list(d.events))
    else:
        call = data.draw(st.sampled_from(OPERATOR_CALLS))
        if call.endswith("VOLUMES"):
            res = codec.parse_resources([vol(data)], "x.volumes")
        else:
            res = codec.parse_resources([disk(data.draw(st.sampled_from([100, 50])))], "x.resources")
        d = decide_agent_operation(s, AgentOperation(call, "A1", res), h.log.ts, CFG)
        if d.refusal is None:
            h.commit(list(d.events))


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_random_volume_histories_keep_the_books(data: st.DataObject) -> None:
    h = History()
    for _ in range(data.draw(st.integers(5, 50))):
        step(h, data)
        check(h)
