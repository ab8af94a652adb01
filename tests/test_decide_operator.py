"""Unit tests for master.decide.operator (UPDATE_WEIGHTS, UPDATE_QUOTA as pure deciders), and the operator handler's
writes over a fake engine: a hostile body is a 4xx with a message, never a 500, and commits nothing."""

from __future__ import annotations

import json

import pytest

from eventstore import events as ev
from master.allocation import decide_offers
from master.decide import DecideConfig
from master.decide.gate import events_problem
from master.decide.operator import (QuotaConfig, UpdateQuota, UpdateWeights, WeightInfo, cluster_capacity,
                                    decide_update_quota, decide_update_weights)
from master.limits import Limits
from master.state import clone
from tests.test_decide_agents import FakeCore, client_for
from tests.test_fold import Log, base, info, res

CFG = DecideConfig()


def two_agents() -> Log:
    log = base()
    log(ev.AgentRegistered(agent_id="A1", hostname="h1", http="h1:1", resources=res("cpus:4;mem:1024;ports:[1-9]")))
    log(ev.AgentRegistered(agent_id="A2", hostname="h2", http="h2:1", resources=res("cpus:2.5;mem(web):512")))
    return log


def decide(fn, log: Log, call, config: DecideConfig = CFG):
    before = clone(log.state)
    d = fn(log.state, call, 500.0, config)
    assert log.state == before, "a decider never changes the state"
    if d.refusal is None:
        assert events_problem(d.events) is None
    else:
        assert d.events == [] and d.messages == []
    return d


def weights(*pairs) -> UpdateWeights:
    return UpdateWeights(weight_infos=[WeightInfo(r, w) for r, w in pairs])


# ---- UPDATE_WEIGHTS ---------------------------------------------------------------------------------------------


def test_weights_are_recorded_sorted_the_last_of_a_role_counting():
    log = two_agents()
    d = decide(decide_update_weights, log, weights(("b", 2), ("a", 0.5), ("b", 3.0), ("x/y", 1e9)))
    assert d.events == [ev.WeightsUpdated(weights={"a": 0.5, "b": 3.0, "x/y": 1e9})]
    log(d.events[0])
    assert log.state.weights == {"a": 0.5, "b": 3.0, "x/y": 1e9}


BAD_WEIGHTS = [
    (weights(), "non-empty"),
    (weights(("a", 0)), "must be a positive number"),
    (weights(("a", -1)), "must be a positive number"),
    (weights(("a", float("nan"))), "must be a positive number"),
    (weights(("a", float("inf"))), "must be a positive number"),
    (weights(("a", 1e10)), "no larger than"),
    (weights(("a", 1e-301)), "no smaller than"),  # shares divided by it would overflow every OFFERS_MADE
    (weights(("*", 2)), "role '*'"),
    (weights(("a b", 2)), "is invalid"),
    (weights(("", 2)), "Empty role"),
    (weights(("a/../b", 2)), "is invalid"),
    (weights(("r" * 2000, 2)), "longer than"),
]


@pytest.mark.parametrize("call,message", BAD_WEIGHTS, ids=[m for _, m in BAD_WEIGHTS])
def test_invalid_weights_are_refused(call, message):
    d = decide(decide_update_weights, two_agents(), call)
    assert d.refusal.status == 400 and message in d.refusal.message, d.refusal.message


def test_weights_per_call_are_bounded():
    two = DecideConfig(limits=Limits(max_roles_per_call=2))
    assert decide(decide_update_weights, two_agents(), weights(("a", 1), ("b", 1)), two).refusal is None
    d = decide(decide_update_weights, two_agents(), weights(("a", 1), ("b", 1), ("c", 1)), two)
    assert d.refusal.status == 400 and "max_roles_per_call" in d.refusal.message


# ---- UPDATE_QUOTA ------------------------------------------------------------------------------------------------


def quota(*configs, force: bool = False) -> UpdateQuota:
    return UpdateQuota(quota_configs=[QuotaConfig(r, g, lim) for r, g, lim in configs], force=force)


def test_capacity_is_the_scalars_of_the_reachable_agents():
    log = two_agents()
    assert cluster_capacity(log.state) == {"cpus": 6.5, "mem": 1536.0}
    log(ev.AgentUnreachable(agent_id="A2", unreachable_time=200.0))
    assert cluster_capacity(log.state) == {"cpus": 4.0, "mem": 1024.0}


def test_quota_within_capacity_is_recorded_rounded():
    log = two_agents()
    d = decide(decide_update_quota, log, quota(("q", {"mem": 100.00049, "cpus": 1}, {"cpus": 2}),
                                                ("r", {"cpus": 5.5}, {})))
    assert d.events == [ev.QuotaUpdated(role="q", guarantees={"cpus": 1.0, "mem": 100.0}, limits={"cpus": 2.0}),
                        ev.QuotaUpdated(role="r", guarantees={"cpus": 5.5}, limits={})]
    for e in d.events:
        log(e)
    # Now 6.5 cpus are guaranteed: one more is beyond capacity, unless forced; replacing q's counts q once.
    d = decide(decide_update_quota, log, quota(("s", {"cpus": 0.001}, {})))
    assert d.refusal.status == 400 and "exceed the cluster's capacity" in d.refusal.message
    assert decide(decide_update_quota, log, quota(("s", {"cpus": 0.001}, {}), force=True)).refusal is None
    assert decide(decide_update_quota, log, quota(("q", {"cpus": 1}, {}))).refusal is None
    # Clearing a quota (nothing guaranteed, no limit) removes it.
    d = decide(decide_update_quota, log, quota(("q", {}, {})))
    log(d.events[0])
    assert "q" not in log.state.quotas


BAD_QUOTAS = [
    (quota(), "non-empty"),
    (quota(("q", {"cpus": 2}, {"cpus": 1})), "exceeds its limit"),
    (quota(("q/sub", {"cpus": 1}, {})), "top-level role"),
    (quota(("*", {"cpus": 1}, {})), "top-level role"),
    (quota(("a b", {"cpus": 1}, {})), "is invalid"),
    (quota(("q", {"cpus": 1000}, {})), "exceed the cluster's capacity"),
    (quota(("q", {"cpus": -1}, {})), "non-negative"),
    (quota(("q", {"cpus": float("nan")}, {}), force=True), "finite"),
    (quota(("q", {}, {"cpus": float("inf")}), force=True), "finite"),
    # Committed once, it made every allocation run raise (fixed-point rounding overflows).
    (quota(("q", {"cpus": 1e306}, {}), force=True), "no larger than"),
    (quota(("q", {"": 1}, {}), force=True), "invalid resource name"),
    (quota(("q", {"a b": 1}, {}), force=True), "invalid resource name"),
    (quota(("q", {"cpus": 1}, {}), ("q", {"cpus": 1}, {})), "more than once"),
]


@pytest.mark.parametrize("call,message", BAD_QUOTAS, ids=[m for _, m in BAD_QUOTAS])
def test_invalid_quota_is_refused(call, message):
    d = decide(decide_update_quota, two_agents(), call)
    assert d.refusal.status == 400 and message in d.refusal.message, d.refusal.message


def test_the_largest_forced_quota_keeps_allocation_working():
    log = two_agents()
    log(ev.FrameworkSubscribed(framework_id="F1", info=info(roles=["q"])))
    d = decide(decide_update_quota, log, quota(("q", {"cpus": 1e12}, {}), force=True))
    log(d.events[0])
    assert decide_offers(log.state, 600.0, "t") is not None


def test_quota_configs_per_call_are_bounded():
    two = DecideConfig(limits=Limits(max_roles_per_call=2))
    d = decide(decide_update_quota, two_agents(), quota(("a", {}, {}), ("b", {}, {}), ("c", {}, {})), two)
    assert d.refusal.status == 400 and "max_roles_per_call" in d.refusal.message


# ---- the handler's writes ------------------------------------------------------------------------------------------


def call(t: str, payload: object) -> bytes:
    return json.dumps({"type": t, t.lower(): payload}).encode()


HOSTILE_OPERATOR_BODIES = [
    b"", b"{", b"[]", b'{"type": 1}', b"[" * 100_000 + b"]" * 100_000,
    b'{"type": "UPDATE_WEIGHTS", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"type": "subscribe"}', b'{"type": "update_weights"}', b'{"type": "__init__"}', b'{"type": "_commit"}',
    call("UPDATE_WEIGHTS", None), call("UPDATE_WEIGHTS", []), call("UPDATE_WEIGHTS", {"weight_infos": {}}),
    call("UPDATE_WEIGHTS", {"weight_infos": [1]}), call("UPDATE_WEIGHTS", {"weight_infos": [{"weight": 2}]}),
    call("UPDATE_WEIGHTS", {"weight_infos": [{"role": "a", "weight": "Infinity"}]}),
    call("UPDATE_WEIGHTS", {"weight_infos": [{"role": "a", "weight": "NaN"}]}),
    call("UPDATE_WEIGHTS", {"weight_infos": [{"role": "a", "weight": True}]}),
    call("UPDATE_WEIGHTS", {"weight_infos": [{"role": ["a"], "weight": 1}]}),
    call("UPDATE_WEIGHTS", {"weight_infos": [{"role": f"r{i}", "weight": 1} for i in range(1001)]}),
    b'{"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": [{"role": "a", "weight": 1e999}]}}',
    call("UPDATE_QUOTA", {"quota_configs": [{"role": "q", "guarantees": {"cpus": {"value": 1e306}}}],
                          "force": True}),
    call("UPDATE_QUOTA", {"quota_configs": [{"role": "q", "guarantees": {"cpus": {"value": "-Infinity"}}}]}),
    call("UPDATE_QUOTA", {"quota_configs": [{"role": "q", "guarantees": {"cpus": 1}}]}),
    call("UPDATE_QUOTA", {"quota_configs": [{"role": "q", "guarantees": []}]}),
    call("UPDATE_QUOTA", {"quota_configs": [{"role": "q"}], "force": "yes"}),
    call("UPDATE_QUOTA", {"quota_configs": [{"role": "q", "guarantees": {f"r{i}": {"value": 1} for i in range(1001)}}],
                          "force": True}),
]


@pytest.mark.parametrize("raw", HOSTILE_OPERATOR_BODIES, ids=range(len(HOSTILE_OPERATOR_BODIES)))
async def test_a_hostile_operator_call_is_a_4xx_and_commits_nothing(raw, tmp_path):
    core = FakeCore(two_agents(), tmp_path)
    index = core.state.index
    async with client_for(core) as client:
        r = await client.post("/api/v1", data=raw, headers={"Content-Type": "application/json"})
        text = await r.text()
    assert 400 <= r.status < 500, (r.status, text)
    assert text and core.recorded == [] and core.state.index == index


async def test_operator_writes_commit_and_read_back(tmp_path):
    core = FakeCore(two_agents(), tmp_path)
    headers = {"Content-Type": "application/json"}
    async with client_for(core) as client:
        r = await client.post("/api/v1", headers=headers, data=call("UPDATE_WEIGHTS", {"weight_infos": [
            {"role": "a", "weight": "2.5"}]}))
        assert r.status == 200, await r.text()
        r = await client.post("/api/v1", headers=headers, data=call("UPDATE_QUOTA", {"quota_configs": [
            {"role": "q", "guarantees": {"cpus": {"value": 1}}, "limits": {"cpus": {"value": 2}}}]}))
        assert r.status == 200, await r.text()
        got = await (await client.post("/api/v1", headers=headers, data=b'{"type": "GET_QUOTA"}')).json()
        w = await (await client.post("/api/v1", headers=headers, data=b'{"type": "GET_WEIGHTS"}')).json()
    assert got["get_quota"]["status"]["configs"] == [{"role": "q", "guarantees": {"cpus": {"value": 1.0}},
                                                     "limits": {"cpus": {"value": 2.0}}}]
    assert w["get_weights"]["weight_infos"] == [{"role": "a", "weight": 2.5}]
    assert [type(e) for e in core.recorded] == [ev.WeightsUpdated, ev.QuotaUpdated]


# ---- property: whatever an operator sends, the decider answers, and what it accepts folds and allocates -----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

from tests.test_decide_agents import mostly  # noqa: E402

_role = mostly(hs.sampled_from(["a", "b", "q", "x/y"]), hs.text(max_size=6))
_num = mostly(hs.floats(0, 100), hs.one_of(hs.floats(allow_nan=True, allow_infinity=True),
                                           hs.sampled_from([0.0, -1.0, 1e9, 1e12, 1e13, 1e306])))
_q = hs.dictionaries(mostly(hs.sampled_from(["cpus", "mem", "gpus"]), hs.text(max_size=4)), _num, max_size=3)
_weights = hs.builds(UpdateWeights, hs.lists(hs.builds(WeightInfo, _role, _num), max_size=3))
_quota = hs.builds(UpdateQuota, hs.lists(hs.builds(QuotaConfig, _role, _q, _q), max_size=3), hs.booleans())


@settings(max_examples=200, deadline=None)
@given(calls=hs.lists(hs.one_of(_weights, _quota), min_size=1, max_size=5))
def test_any_operator_write_is_decided_and_what_is_accepted_folds(calls):
    log = two_agents()
    log(ev.FrameworkSubscribed(framework_id="F1", info=info(roles=["a", "q", "x/y"])))
    for call in calls:
        fn = decide_update_weights if isinstance(call, UpdateWeights) else decide_update_quota
        d = fn(log.state, call, 500.0, CFG)
        if d.refusal is not None:
            assert d.refusal.status == 400 and d.refusal.message and not d.events
            continue
        for e in d.events:
            assert ev.decode_event(ev.encode_event(e)) == e
            log(e, ts=500.0)
        decide_offers(log.state, 501.0, "t")  # the allocator takes whatever was accepted


# ---- the read calls of the operator API that answer from the replica, not the folded state -----------------------

async def test_get_master_metrics_logging_and_maintenance(tmp_path):
    core = FakeCore(two_agents(), tmp_path)
    headers = {"Content-Type": "application/json"}

    async def post(body: dict):
        r = await client.post("/api/v1", headers=headers, data=json.dumps(body).encode())
        return r.status, (await r.json() if r.status == 200 else await r.text())

    async with client_for(core) as client:
        st, got = await post({"type": "GET_MASTER"})
        assert st == 200 and got["type"] == "GET_MASTER"
        gm = got["get_master"]
        assert gm["start_time"] == 100.0 and gm["elected_time"] == 150.0
        assert gm["master_info"]["port"] == 1 and gm["master_info"]["hostname"] == "127.0.0.1"
        assert gm["master_info"]["version"] == core.config.version
        core.elected_at = None  # Mesos leaves elected_time out when it has none
        assert "elected_time" not in (await post({"type": "GET_MASTER"}))[1]["get_master"]

        st, got = await post({"type": "GET_METRICS", "get_metrics": {"timeout": {"nanoseconds": 5000000}}})
        assert st == 200 and got["type"] == "GET_METRICS"
        metrics = {m["name"]: m["value"] for m in got["get_metrics"]["metrics"]}
        assert metrics["master/cpus_total"] == 6.5 and metrics["master/slaves_active"] == 2.0
        assert metrics["master/elected"] == 1.0
        assert all(isinstance(m["value"], float) for m in got["get_metrics"]["metrics"])

        assert await post({"type": "GET_LOGGING_LEVEL"}) == (200, {"type": "GET_LOGGING_LEVEL",
                                                                  "get_logging_level": {"level": 0}})
        st, text = await post({"type": "SET_LOGGING_LEVEL", "set_logging_level": {
            "level": 1, "duration": {"nanoseconds": 60000000000}}})
        assert st == 501 and "not supported" in text

        st, got = await post({"type": "GET_MAINTENANCE_STATUS"})
        assert st == 200 and got["get_maintenance_status"] == {"status": {"draining_machines": [],
                                                                          "down_machines": []}}
        st, got = await post({"type": "GET_MAINTENANCE_SCHEDULE"})
        assert st == 200 and got["get_maintenance_schedule"] == {"schedule": {"windows": []}}

        st, text = await post({"type": "GET_METRICS", "get_metrics": "soon"})
        assert st == 400
    assert core.recorded == []
