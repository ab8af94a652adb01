"""The scenario simulator (`replay.sim`, `drover sim`): the shared samples and the repository's scenario
files pass; the CLI's exit status and messages for failing and malformed scenarios."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from replay.sim import ScenarioError, load_cases, run_case

ROOT = Path(__file__).resolve().parent.parent
# The shared samples live beside the checkout (../shared, as CI lays it out), or where sessions mount them.
SAMPLES = next((p for p in (ROOT.parent / "shared" / "allocator-samples", Path("/work/shared/allocator-samples"))
                if p.is_dir()), ROOT.parent / "shared" / "allocator-samples")
SCENARIOS = Path(__file__).resolve().parent / "allocator_scenarios"


def _scenario_files() -> list[Path]:
    files = sorted(SAMPLES.glob("*.json")) if SAMPLES.is_dir() else []
    if SCENARIOS.is_dir():
        files += sorted(SCENARIOS.glob("**/*.json"))
    return files


def _failures(path: Path) -> list[str]:
    out = []
    for case in load_cases(path):
        res = run_case(case)
        for cp in res.checkpoints:
            if not cp.ok:
                out.append(f"{res.case_id} steps[{cp.index}]" + (f" ({cp.note})" if cp.note else "") + ":\n"
                           + "\n".join(cp.diff))
    return out


def test_there_are_scenarios_to_run():
    assert any(p.parent == SAMPLES for p in _scenario_files()), "the shared samples are missing"


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scenario_passes(path):
    assert load_cases(path), f"{path} holds no case"
    failures = _failures(path)
    assert not failures, "\n".join(failures)


def test_scenarios_collected_at_run_time_pass():
    # Scenario files may be added after this module was imported: glob again and run them all.
    bad = {p.name: f for p in _scenario_files() if (f := _failures(p))}
    assert not bad, json.dumps(bad, indent=1)


# ---- the CLI ----------------------------------------------------------------------------------------------


def drover_sim(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drover.cli", "sim", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def _case(steps, config=None, **extra) -> dict:
    case = {"id": "T1", "source_test": "none", "source_file": "none", "rules": [], "description": "test",
            "config": {"allocation_interval_s": 1.0, "min_allocatable_resources": [{"cpus": 0.01}, {"mem": 32}],
                       "fair_sharing_excluded_resource_names": [], "role_sorter": "drf",
                       "framework_sorter": "drf", **(config or {})},
            "steps": steps}
    case.update(extra)
    return case


GOOD_STEPS = [
    {"op": "add_framework", "framework": "f1", "roles": ["r1"]},
    {"op": "add_agent", "agent": "a1", "resources": {"cpus": 2, "mem": 1024, "ports": "[31000-31001]"}},
    {"op": "expect_offers", "mode": "exact",
     "offers": [{"framework": "f1", "role": "r1", "agent": "a1",
                 "resources": {"cpus": 2, "mem": 1024, "ports": "[31000-31001]"}}]},
    {"op": "recover", "framework": "f1", "agent": "a1", "role": "r1",
     "resources": {"cpus": 2, "mem": 1024, "ports": "[31000-31001]"}, "refuse_seconds": 5},
    {"op": "tick", "to_time": 4},
    {"op": "expect_offers", "mode": "exact", "offers": []},
    {"op": "tick", "to_time": 5},
    {"op": "expect_offers", "mode": "aggregate",
     "aggregate": [{"framework": "f1", "role": "r1", "agent_count": 1,
                    "resources_total": {"cpus": 2, "mem": 1024, "ports": "[31000-31001]"}}]},
]


def write(tmp_path: Path, doc, name="case.json") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_cli_exits_0_on_a_passing_file(tmp_path):
    p = write(tmp_path, {"schema_version": "1.0", "allocator_cases": [_case(GOOD_STEPS)]})
    r = drover_sim(p)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 0 failed" in r.stdout


def test_cli_accepts_a_single_case_object_and_several_files(tmp_path):
    single = write(tmp_path, _case(GOOD_STEPS), "single.json")
    listed = write(tmp_path, {"allocator_cases": [_case(GOOD_STEPS), dict(_case(GOOD_STEPS), id="T2")]}, "list.json")
    r = drover_sim(single, listed, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout


def test_cli_runs_the_shared_samples():
    samples = sorted(SAMPLES.glob("*.json"))
    r = drover_sim(*samples)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(samples)} passed, 0 failed" in r.stdout


def test_cli_exits_1_with_a_readable_diff_when_an_expectation_is_wrong(tmp_path):
    steps = json.loads(json.dumps(GOOD_STEPS))
    steps[2]["offers"][0]["resources"]["cpus"] = 3  # wrong: the agent has 2
    steps[2]["note"] = "whole agent"
    p = write(tmp_path, {"allocator_cases": [_case(steps)]})
    r = drover_sim(p)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "FAIL T1" in out
    assert "steps[2]" in out and "whole agent" in out
    assert "expected, not offered" in out and '"cpus": 3' in out
    assert "offered, not expected" in out and '"cpus": 2' in out
    assert "0 passed, 1 failed" in out
    assert "Traceback" not in r.stderr


def test_cli_diff_for_a_wrong_aggregate(tmp_path):
    steps = json.loads(json.dumps(GOOD_STEPS))
    steps[-1]["aggregate"][0]["agent_count"] = 2
    p = write(tmp_path, _case(steps))
    r = drover_sim(p)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "f1/r1: expected" in r.stdout and '"agent_count": 2' in r.stdout


def test_cli_diff_when_nothing_was_expected_but_something_was_offered(tmp_path):
    steps = json.loads(json.dumps(GOOD_STEPS))
    steps[2]["offers"] = []
    p = write(tmp_path, _case(steps))
    r = drover_sim(p)
    assert r.returncode == 1
    assert "offered, not expected" in r.stdout and '"agent": "a1"' in r.stdout


def _bad(steps=None, config=None):
    return {"allocator_cases": [_case(steps if steps is not None else GOOD_STEPS, config)]}


def _with_step(i, **changes):
    steps = json.loads(json.dumps(GOOD_STEPS))
    steps[i].update(changes)
    return _bad(steps)


MALFORMED = {
    "bad_json": ('{"allocator_cases": [', "JSON"),
    "unknown_op": (_bad([{"op": "explode", "agent": "a1"}]), "op"),
    "refuse_seconds_string": (_with_step(3, refuse_seconds="5"), "refuse_seconds"),
    "refuse_seconds_list": (_with_step(3, refuse_seconds=[5]), "refuse_seconds"),
    "bad_resource_key": (_with_step(1, resources={"cpus(r1": 2}), "cpus(r1"),
    "bad_resource_value": (_with_step(1, resources={"cpus": -1}), "cpus"),
    "role_sorter_nope": (_bad(config={"role_sorter": "nope"}), "role_sorter"),
    "framework_sorter_nope": (_bad(config={"framework_sorter": "nope"}), "framework_sorter"),
    "allocation_interval_zero": (_bad(config={"allocation_interval_s": 0}), "allocation_interval_s"),
    "allocation_interval_string": (_bad(config={"allocation_interval_s": "1s"}), "allocation_interval_s"),
    "min_allocatable_negative": (_bad(config={"min_allocatable_resources": [{"cpus": -1}]}),
                                 "min_allocatable_resources"),
    "used_bad_resource_key": (_with_step(1, used=[{"framework": "f1", "role": "r1", "resources": {"cpus[x]": 1}}]),
                              "cpus[x]"),
    "tick_to_time_string": (_with_step(4, to_time="soon"), "to_time"),
    "unknown_config_field": (_bad(config={"allocation_intervall_s": 1}), "allocation_intervall_s"),
    "expect_mode": (_with_step(2, mode="fuzzy"), "mode"),
    "missing_agent": (_with_step(1, agent=""), "agent"),
    "roles_not_a_list": (_with_step(0, roles="r1"), "roles"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_cli_exits_2_with_one_line_naming_the_field(tmp_path, name):
    doc, field = MALFORMED[name]
    p = write(tmp_path, doc)
    r = drover_sim(p)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("drover sim: error:"), lines[0]
    assert field in lines[0], lines[0]


def test_load_cases_names_the_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="nope.json"):
        load_cases(tmp_path / "nope.json")


# ---- the simulator's clock and triggers (allocator-semantics.md 2.5, 2.6) -------------------------------


def _run(tmp_path, steps, **config) -> list:
    """Runs one case; returns the offers seen at each checkpoint (expectations are all `[]`, unchecked)."""
    p = write(tmp_path, _case(steps, config))
    (case,) = load_cases(p)
    return [cp.offers for cp in run_case(case).checkpoints]


CHECK = {"op": "expect_offers", "mode": "exact", "offers": []}
WHOLE = {"cpus": 2, "mem": 1024}


def _names(offers) -> list:
    return sorted((o["framework"], o["role"], o["agent"]) for o in offers)


def _start(framework="f1", role="r1"):
    return [{"op": "add_framework", "framework": framework, "roles": [role]},
            {"op": "add_agent", "agent": "a1", "resources": WHOLE}, CHECK]


def _decline(refuse, framework="f1", role="r1"):
    return {"op": "recover", "framework": framework, "agent": "a1", "role": role, "resources": WHOLE,
            "refuse_seconds": refuse}


def test_recover_quota_weights_and_agent_removal_do_not_allocate(tmp_path):
    steps = [*_start(),
             _decline(None), CHECK,
             {"op": "set_quota", "role": "r1", "guarantees": {"cpus": 1}, "limits": {}}, CHECK,
             {"op": "update_weights", "weights": {"r1": 2}}, CHECK,
             {"op": "add_agent", "agent": "a2", "resources": {"cpus": 1, "mem": 64}}, CHECK,
             {"op": "remove_agent", "agent": "a2"}, CHECK,
             {"op": "tick", "to_time": 1}, CHECK]
    got = _run(tmp_path, steps)
    assert _names(got[0]) == [("f1", "r1", "a1")]
    assert got[1:4] == [[], [], []]
    assert _names(got[4]) == [("f1", "r1", "a2")]  # add_agent: that agent only
    assert got[5] == []
    assert _names(got[6]) == [("f1", "r1", "a1")]  # the periodic batch


def test_add_framework_and_revive_allocate_over_all_agents(tmp_path):
    steps = [{"op": "add_agent", "agent": "a1", "resources": WHOLE},
             {"op": "add_agent", "agent": "a2", "resources": WHOLE}, CHECK,
             {"op": "add_framework", "framework": "f1", "roles": ["r1"]}, CHECK,
             {"op": "recover_all_offered"},
             {"op": "suppress", "framework": "f1", "roles": []}, CHECK,
             {"op": "tick", "to_time": 1}, CHECK,
             {"op": "revive", "framework": "f1", "roles": []}, CHECK]
    got = _run(tmp_path, steps)
    assert got[0] == []
    assert _names(got[1]) == [("f1", "r1", "a1"), ("f1", "r1", "a2")]
    assert got[2] == [] and got[3] == []
    assert _names(got[4]) == [("f1", "r1", "a1"), ("f1", "r1", "a2")]


def test_a_filter_outlives_the_first_batch_even_with_a_short_refuse(tmp_path):
    # interval 60 s, refuse 1 s: the timeout becomes 60 s; at t=60 the batch timer (armed at startup)
    # fires before the filter's (armed at the decline)
    steps = [*_start(), _decline(1), {"op": "tick", "to_time": 60}, CHECK, {"op": "tick", "to_time": 120}, CHECK]
    got = _run(tmp_path, steps, allocation_interval_s=60)
    assert got[1] == []
    assert _names(got[2]) == [("f1", "r1", "a1")]


def test_a_filter_expiring_with_a_later_armed_batch_is_gone_for_that_batch(tmp_path):
    steps = [*_start(), _decline(2), {"op": "tick", "to_time": 1}, CHECK, {"op": "tick", "to_time": 2}, CHECK]
    got = _run(tmp_path, steps)
    assert got[1] == []
    assert _names(got[2]) == [("f1", "r1", "a1")]


def test_negative_refuse_means_the_default_5s_and_zero_means_no_filter(tmp_path):
    steps = [*_start(), _decline(-1), {"op": "tick", "to_time": 4}, CHECK, {"op": "tick", "to_time": 5}, CHECK,
             _decline(0), {"op": "tick", "to_time": 6}, CHECK]
    got = _run(tmp_path, steps)
    assert got[1] == []
    assert _names(got[2]) == [("f1", "r1", "a1")]
    assert _names(got[3]) == [("f1", "r1", "a1")]


def test_refuse_above_365_days_is_capped(tmp_path):
    year = 365 * 24 * 3600
    steps = [*_start(), _decline(10 * year), {"op": "tick", "to_time": year - 1}, CHECK,
             {"op": "tick", "to_time": year}, CHECK]
    got = _run(tmp_path, steps, allocation_interval_s=year / 4)
    assert got[1] == []
    assert _names(got[2]) == [("f1", "r1", "a1")]


def test_revive_clears_the_filters_of_its_roles_only(tmp_path):
    steps = [{"op": "add_framework", "framework": "f1", "roles": ["r1", "r2"]},
             {"op": "add_agent", "agent": "a1", "resources": WHOLE},
             {"op": "add_agent", "agent": "a2", "resources": {"cpus(r2)": 1, "mem(r2)": 64}}, CHECK,
             _decline(100, role="r1"),
             {"op": "recover", "framework": "f1", "agent": "a2", "role": "r2",
              "resources": {"cpus(r2)": 1, "mem(r2)": 64}, "refuse_seconds": 100},
             {"op": "revive", "framework": "f1", "roles": ["r1"]}, CHECK,
             {"op": "tick", "to_time": 5}, CHECK]
    got = _run(tmp_path, steps)
    assert _names(got[1]) == [("f1", "r1", "a1")]
    assert got[2] == []
