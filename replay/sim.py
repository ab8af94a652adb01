"""`drover sim SCENARIO.json`: the real allocator, without a server, over a scenario
(format: docs/allocator-scenarios.md). Prints each checkpoint's offers as JSON and
exits non-zero, with a readable diff, when a checkpoint does not hold.

Time is a fake clock that only `tick` moves. Timers fire in (deadline, arming
order), as libprocess timers do: the periodic batch allocation is re-armed right
after each run; a decline filter's expiry timer is armed when the filter is set.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import msgspec

from eventstore.resources import UNRESERVED, Resource, Resources
from master.allocator.config import DEFAULT_REFUSE_SECONDS, MAX_REFUSE_SECONDS, AllocatorConfig
from master.allocator.hierarchical import HierarchicalAllocator

ResourceSpec = dict[str, Union[float, str]]


class ScenarioError(Exception):
    """A malformed scenario; the message names the field."""


# ---- the scenario schema (unknown ops or wrongly typed fields fail with the field's path) -------------


class Config(msgspec.Struct, forbid_unknown_fields=True):
    allocation_interval_s: float = 1.0
    min_allocatable_resources: list[dict[str, float]] = msgspec.field(
        default_factory=lambda: [{"cpus": 0.01}, {"mem": 32.0}])
    fair_sharing_excluded_resource_names: list[str] = msgspec.field(default_factory=list)
    role_sorter: str = "drf"
    framework_sorter: str = "drf"


class Used(msgspec.Struct, forbid_unknown_fields=True):
    framework: str
    role: str
    resources: ResourceSpec


class Step(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    note: str | None = None


class AddAgent(Step, tag="add_agent"):
    agent: str = ""
    resources: ResourceSpec = msgspec.field(default_factory=dict)
    used: list[Used] = msgspec.field(default_factory=list)


class RemoveAgent(Step, tag="remove_agent"):
    agent: str = ""


class AddFramework(Step, tag="add_framework"):
    framework: str = ""
    roles: list[str] = msgspec.field(default_factory=list)
    suppressed_roles: list[str] = msgspec.field(default_factory=list)


class Recover(Step, tag="recover"):
    framework: str = ""
    agent: str = ""
    role: str = ""
    resources: ResourceSpec = msgspec.field(default_factory=dict)
    refuse_seconds: float | None = None


class RecoverAllOffered(Step, tag="recover_all_offered"):
    pass


class Suppress(Step, tag="suppress"):
    framework: str = ""
    roles: list[str] = msgspec.field(default_factory=list)


class Revive(Step, tag="revive"):
    framework: str = ""
    roles: list[str] = msgspec.field(default_factory=list)


class SetQuota(Step, tag="set_quota"):
    role: str = ""
    guarantees: dict[str, float] = msgspec.field(default_factory=dict)
    limits: dict[str, float] = msgspec.field(default_factory=dict)


class UpdateWeights(Step, tag="update_weights"):
    weights: dict[str, float] = msgspec.field(default_factory=dict)


class Tick(Step, tag="tick"):
    to_time: float = 0.0


class ExpectedOffer(msgspec.Struct, forbid_unknown_fields=True):
    framework: str
    role: str
    agent: str
    resources: ResourceSpec


class ExpectedAggregate(msgspec.Struct, forbid_unknown_fields=True):
    framework: str
    role: str
    agent_count: int
    resources_total: ResourceSpec


class ExpectOffers(Step, tag="expect_offers"):
    mode: str = "exact"
    offers: list[ExpectedOffer] | None = None
    aggregate: list[ExpectedAggregate] | None = None


AnyStep = Union[AddAgent, RemoveAgent, AddFramework, Recover, RecoverAllOffered, Suppress, Revive, SetQuota,
                UpdateWeights, Tick, ExpectOffers]


class Case(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    steps: list[AnyStep]
    config: Config = msgspec.field(default_factory=Config)
    description: str = ""
    source_test: str | None = None


class CaseFile(msgspec.Struct):
    allocator_cases: list[Case]
    schema_version: str = "1.0"


def load_cases(path: Path) -> list[Case]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ScenarioError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise ScenarioError(f"{path}: not valid JSON: {e}") from None
    try:
        if isinstance(doc, dict) and "allocator_cases" in doc:
            cases = msgspec.convert(doc, CaseFile).allocator_cases
        else:
            cases = [msgspec.convert(doc, Case)]
    except msgspec.ValidationError as e:
        raise ScenarioError(f"{path}: {e}") from None
    for c in cases:
        try:
            _check_case(c)
        except ScenarioError as e:
            raise ScenarioError(f"{path}: {e}") from None
    return cases


def _check_case(c: Case) -> None:
    try:
        AllocatorConfig(allocation_interval=c.config.allocation_interval_s,
                        min_allocatable=tuple(tuple(sorted(s.items())) for s in c.config.min_allocatable_resources),
                        role_sorter=c.config.role_sorter, framework_sorter=c.config.framework_sorter)
    except ValueError as e:
        msg = str(e)
        for field, name in (("allocation_interval", "allocation_interval_s"),
                            ("min_allocatable_resources:", "min_allocatable_resources:")):
            if msg.startswith(field):
                msg = name + msg[len(field):]
        raise ScenarioError(f"case {c.id}: config.{msg}") from None
    for i, step in enumerate(c.steps):
        where = f"case {c.id}: steps[{i}] ({type(step).__struct_config__.tag})"
        if isinstance(step, ExpectOffers):
            if step.mode not in ("exact", "aggregate"):
                raise ScenarioError(f"{where}: mode must be 'exact' or 'aggregate', got {step.mode!r}")
            if step.mode == "exact" and step.offers is None:
                raise ScenarioError(f"{where}: mode 'exact' needs 'offers'")
            if step.mode == "aggregate" and step.aggregate is None:
                raise ScenarioError(f"{where}: mode 'aggregate' needs 'aggregate'")
        for fname in ("agent", "framework", "role"):
            if fname in step.__struct_fields__ and not getattr(step, fname):
                raise ScenarioError(f"{where}: '{fname}' is required")
        for fname in ("resources",):
            if fname in step.__struct_fields__:
                try:
                    parse_spec(getattr(step, fname))
                except ValueError as e:
                    raise ScenarioError(f"{where}: resources: {e}") from None


# ---- resources in scenario notation -----------------------------------------------------------------

_KEY = re.compile(r"([A-Za-z_][\w.-]*)(?:\(([^)]+)\))?(\[revocable\])?")


def parse_spec(spec: ResourceSpec) -> Resources:
    out = []
    for key, value in spec.items():
        m = _KEY.fullmatch(key)
        if not m:
            raise ValueError(f"bad resource key {key!r}: expected name, name(role) or name[revocable]")
        name, role, revocable = m.group(1), m.group(2) or UNRESERVED, m.group(3)
        if revocable:
            raise ValueError(f"{key}: revocable resources are not modelled by Drover's allocator yet")
        if isinstance(value, str):
            out.extend(Resources.parse(f"{name}({role}):{value}" if role != UNRESERVED else f"{name}:{value}"))
        else:
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{key}: must be a finite non-negative number, got {value!r}")
            if value > 0:
                out.append(Resource(name, "SCALAR", scalar=round(float(value), 3), role=role))
    return Resources(out)


def spec_of(res: Resources) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for r in res:
        key = r.name if r.role == UNRESERVED else f"{r.name}({r.role})"
        if r.type == "SCALAR":
            out[key] = r.scalar
        elif r.type == "RANGES":
            out[key] = "[" + ",".join(f"{b}-{e}" for b, e in r.ranges) + "]"
        else:
            out[key] = "{" + ",".join(r.items) + "}"
    return out


def _same_spec(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, str) or isinstance(w, str):
            if str(v).replace(" ", "") != str(w).replace(" ", ""):
                return False
        elif abs(float(v) - float(w)) > 1e-6:
            return False
    return True


# ---- running a case --------------------------------------------------------------------------------------


@dataclass
class CheckpointResult:
    index: int
    ok: bool
    offers: list[dict]
    expected: object
    diff: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class CaseResult:
    case_id: str
    checkpoints: list[CheckpointResult]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checkpoints)


class Simulation:
    def __init__(self, case: Case):
        cfg = case.config
        self.interval = cfg.allocation_interval_s
        self.alloc = HierarchicalAllocator(AllocatorConfig(
            allocation_interval=self.interval,
            min_allocatable=tuple(tuple(sorted(s.items())) for s in cfg.min_allocatable_resources),
            fair_sharing_excluded=tuple(cfg.fair_sharing_excluded_resource_names),
            role_sorter=cfg.role_sorter, framework_sorter=cfg.framework_sorter))
        self.now = 0.0
        self.runs = 0
        self.pending: list[dict] = []
        self._timers: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self._arm(self.interval, "batch", None)

    def _arm(self, deadline: float, kind: str, payload: object) -> None:
        heapq.heappush(self._timers, (deadline, self._seq, kind, payload))
        self._seq += 1

    def _allocate(self, agents: list[str] | None) -> None:
        decision = self.alloc.decide(None, agents, seed=self.runs)
        self.runs += 1
        for o in decision.offers:
            self.alloc.allocate(o.framework_id, o.role, o.agent_id, o.resources)
            self.pending.append({"framework": o.framework_id, "role": o.role, "agent": o.agent_id,
                                 "resources": spec_of(o.resources)})

    def step(self, s: Step) -> None:
        a = self.alloc
        if isinstance(s, AddAgent):
            a.add_agent(s.agent, parse_spec(s.resources),
                        [(u.framework, u.role, parse_spec(u.resources)) for u in s.used])
            self._allocate([s.agent])
        elif isinstance(s, RemoveAgent):
            a.remove_agent(s.agent)
        elif isinstance(s, AddFramework):
            a.add_framework(s.framework, s.roles, s.suppressed_roles)
            self._allocate(None)
        elif isinstance(s, Recover):
            refuse = s.refuse_seconds
            if refuse is not None:
                if refuse < 0:
                    refuse = DEFAULT_REFUSE_SECONDS
                refuse = 0.0 if refuse == 0 else max(min(refuse, MAX_REFUSE_SECONDS), self.interval)
            a.recover(s.framework, s.role, s.agent, parse_spec(s.resources), refuse, self.now)
            if refuse:
                flt = a.filters[(s.framework, s.role, s.agent)][-1]
                self._arm(self.now + refuse, "filter", ((s.framework, s.role, s.agent), flt))
        elif isinstance(s, RecoverAllOffered):
            for agent in list(a.agents.values()):
                for (fid, role), res in list(agent.allocated.items()):
                    a.recover(fid, role, agent.agent_id, res)
        elif isinstance(s, Suppress):
            a.suppress(s.framework, s.roles)
        elif isinstance(s, Revive):
            a.revive(s.framework, s.roles)
            self._allocate(None)
        elif isinstance(s, SetQuota):
            a.set_quota(s.role, s.guarantees, s.limits)
        elif isinstance(s, UpdateWeights):
            a.update_weights(s.weights)
        elif isinstance(s, Tick):
            while self._timers and self._timers[0][0] <= s.to_time + 1e-9:
                deadline, _, kind, payload = heapq.heappop(self._timers)
                self.now = deadline
                if kind == "batch":
                    self._allocate(None)
                    self._arm(self.now + self.interval, "batch", None)
                else:
                    key, flt = payload
                    a.remove_filter(key, flt)
            self.now = max(self.now, s.to_time)


def _check(step: ExpectOffers, offers: list[dict]) -> list[str]:
    if step.mode == "exact":
        expected = [{"framework": o.framework, "role": o.role, "agent": o.agent, "resources": dict(o.resources)}
                    for o in step.offers]
        left = list(offers)
        missing = []
        for e in expected:
            match = next((o for o in left if o["framework"] == e["framework"] and o["role"] == e["role"]
                          and o["agent"] == e["agent"] and _same_spec(o["resources"], e["resources"])), None)
            if match is None:
                missing.append(e)
            else:
                left.remove(match)
        return [f"  expected, not offered: {json.dumps(m)}" for m in missing] + \
               [f"  offered, not expected: {json.dumps(o)}" for o in left]
    agg: dict[tuple[str, str], dict] = {}
    for o in offers:
        g = agg.setdefault((o["framework"], o["role"]), {"agent_count": 0, "res": Resources()})
        g["agent_count"] += 1
        g["res"] = g["res"] + parse_spec(o["resources"])
    diff = []
    seen = set()
    for e in step.aggregate:
        key = (e.framework, e.role)
        seen.add(key)
        got = agg.get(key)
        want = {"agent_count": e.agent_count, "resources_total": dict(e.resources_total)}
        have = None if got is None else {"agent_count": got["agent_count"], "resources_total": spec_of(got["res"])}
        if have is None or have["agent_count"] != want["agent_count"] or \
                not _same_spec(have["resources_total"], want["resources_total"]):
            diff.append(f"  {e.framework}/{e.role}: expected {json.dumps(want)}, got {json.dumps(have)}")
    for key in sorted(set(agg) - seen):
        g = agg[key]
        diff.append(f"  {key[0]}/{key[1]}: not expected, got agent_count={g['agent_count']} "
                    f"resources_total={json.dumps(spec_of(g['res']))}")
    return diff


def run_case(case: Case) -> CaseResult:
    sim = Simulation(case)
    results = []
    for i, step in enumerate(case.steps):
        if isinstance(step, ExpectOffers):
            offers, sim.pending = sim.pending, []
            diff = _check(step, offers)
            expected = step.offers if step.mode == "exact" else step.aggregate
            results.append(CheckpointResult(i, not diff, offers, msgspec.to_builtins(expected), diff, step.note))
        else:
            try:
                sim.step(step)
            except (KeyError, ValueError) as e:
                raise ScenarioError(f"case {case.id}: steps[{i}] ({type(step).__struct_config__.tag}): "
                                    f"{e.__class__.__name__}: {e}") from None
    return CaseResult(case.id, results)
