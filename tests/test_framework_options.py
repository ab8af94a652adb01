"""FrameworkInfo options that steer the allocator: offer_filters.min_allocatable_resources per role,
and the `priority` label used by `--framework-sorter priority`."""

import pytest

from eventstore import events as ev
from eventstore.resources import Resources
from master import allocation, codec
from master.allocator import AllocatorConfig
from master.state import State, apply


def info(**kw) -> dict:
    return {"user": "u", "name": "n", **kw}


def test_offer_filters_min_allocatable_parsed_per_role():
    fi, _ = codec.parse_framework_info(info(
        roles=["web", "db"], capabilities=[{"type": "MULTI_ROLE"}],
        offer_filters={"web": {"min_allocatable_resources": {"quantities": [
            {"quantities": {"cpus": {"value": 0.5}, "mem": {"value": 64}}}, {"quantities": {"gpus": {"value": 1}}}]}},
            "db": {"min_allocatable_resources": {}}}))
    assert fi.min_allocatable == {"db": [], "web": [{"cpus": 0.5, "mem": 64.0}, {"gpus": 1.0}]}


def test_offer_filters_for_a_role_not_subscribed_is_refused():
    with pytest.raises(codec.FrameworkRefused, match="role 'other'"):
        codec.parse_framework_info(info(role="web", offer_filters={"other": {"min_allocatable_resources": {}}}))


def test_offer_filters_malformed_is_a_call_error_naming_the_field():
    with pytest.raises(codec.CallError, match=r"offer_filters\.web\.min_allocatable_resources\.quantities\[0\]"):
        codec.parse_framework_info(info(role="web", offer_filters={"web": {"min_allocatable_resources": {
            "quantities": [{"quantities": {"cpus": {"value": "x"}}}]}}}))


class Log:
    def __init__(self, config: AllocatorConfig):
        self.state = State()
        self(ev.ClusterCreated(cluster_id="c"))
        self(ev.LeaderElected(leader_id="m", http="m:1", term=1, config=config.to_record()))

    def __call__(self, event):
        apply(self.state, ev.Envelope(index=self.state.index + 1, term=1, ts=100.0, event=event))


def subscribe(log: Log, fid: str, **kw) -> None:
    fi, _ = codec.parse_framework_info(info(name=fid, **kw))
    log(ev.FrameworkSubscribed(framework_id=fid, info=fi))


def test_framework_min_allocatable_applies_in_the_live_fold():
    log = Log(AllocatorConfig())
    log(ev.AgentRegistered(agent_id="A1", hostname="a", http="a:1",
                           resources=Resources.parse("cpus:1;mem:128").to_list()))
    subscribe(log, "F1", role="web", offer_filters={"web": {"min_allocatable_resources": {"quantities": [
        {"quantities": {"cpus": {"value": 2}}}]}}})
    assert allocation.decide_offers(log.state, 100.0, "t") is None  # 1 cpu is below what F1 accepts
    subscribe(log, "F2", role="web")
    made = allocation.decide_offers(log.state, 100.0, "t")
    assert [o.framework_id for o in made.offers] == ["F2"]


def test_priority_label_orders_frameworks_with_the_priority_sorter():
    log = Log(AllocatorConfig(framework_sorter="priority"))
    log(ev.AgentRegistered(agent_id="A1", hostname="a", http="a:1",
                           resources=Resources.parse("cpus:1;mem:128").to_list()))
    subscribe(log, "F1")
    subscribe(log, "F2", labels={"labels": [{"key": "priority", "value": "10"}]})
    made = allocation.decide_offers(log.state, 100.0, "t")
    assert [o.framework_id for o in made.offers] == ["F2"]  # DRF alone would pick F1 (tie, then id)
