"""Unit tests of the trust boundary's pure parts: credentials and HTTP Basic, Mesos's ACL semantics, the
deciders' authorization (frameworks bound to their principal, agents to theirs, run_tasks, reservations, quota,
weights, teardown, agent registration) and the filtered views. The same paths on real processes:
tests/test_security_cluster.py."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest

from drover.security import acls as A
from drover.security import files
from drover.security.credentials import AuthFailure, Credential, CredentialsError, authenticate, parse
from eventstore import events as ev
from master import codec
from master.decide import DecideConfig
from master.decide import operator as od
from master.decide import scheduler as sd
from master.decide.agents import AgentSubscribe, agent_principal_problem, decide_agent_subscribe
from master.views import Viewer, visible_event, visible_state
from tests.test_decide_scheduler import cluster, res, running

CREDS = parse(b'{"credentials": [{"principal": "web", "secret": "s3cret"}, {"principal": "ops", "secret": "x"}]}')


def basic(principal: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{principal}:{secret}".encode()).decode()


# ---- credentials and HTTP Basic ------------------------------------------------------------------------------


def test_good_credentials_authenticate_as_their_principal():
    assert authenticate(CREDS, basic("web", "s3cret")) == "web"
    assert authenticate(CREDS, Credential("ops", "x").basic_header()) == "ops"
    # A secret may contain ':' (only the first one separates the principal).
    c = parse(b'{"credentials": [{"principal": "p", "secret": "a:b"}]}')
    assert authenticate(c, basic("p", "a:b")) == "p"


@pytest.mark.parametrize("header", [
    None, "", "Basic", "Bearer abc", "basic " + base64.b64encode(b"web:s3cret").decode(),
    "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), basic("web", "wrong"), basic("nobody", "s3cret"),
    basic("web", ""), "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic " + "A" * 100_000,
])
def test_anything_else_is_refused_with_a_reason_that_never_echoes_the_header(header):
    r = authenticate(CREDS, header)
    assert isinstance(r, AuthFailure)
    assert "s3cret" not in r.reason and (header is None or header[6:] not in r.reason or not header[6:])


@pytest.mark.parametrize("body, message", [
    (b"nonsense", "not valid JSON"),
    (b'{"credentials": []}', "at least one principal"),
    (b'{"credentials": [{"principal": "a"}]}', "expected"),
    (b'{"credentials": [{"principal": "a:b", "secret": "x"}]}', "must not contain ':'"),
    (b'{"credentials": [{"principal": "", "secret": "x"}]}', "must not be empty"),
    (b'{"credentials": [{"principal": "a", "secret": ""}]}', "a secret must not be empty"),
    (b'{"credentials": [{"principal": "a", "secret": "x"}, {"principal": "a", "secret": "y"}]}', "listed twice"),
    (b'{"credentials": [{"principal": "a", "secret": "x", "extra": 1}]}', "expected"),
])
def test_a_bad_credentials_file_is_refused_clearly(body, message):
    with pytest.raises(CredentialsError, match=message):
        parse(body)


def test_secrets_never_appear_in_a_repr():
    assert "s3cret" not in repr(CREDS) and "s3cret" not in repr(CREDS.entries[0])


def test_credential_files_must_be_private(tmp_path):
    path = files.write_credentials(tmp_path / "c.json", list(CREDS.entries))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert files.load_credentials(path).principals == ["web", "ops"]
    assert files.load_credential(path).principal == "web"  # a client takes the first entry
    one = tmp_path / "one.json"
    one.write_text('{"principal": "agent-1", "secret": "zzz"}')
    one.chmod(0o600)
    assert files.load_credential(one) == Credential("agent-1", "zzz")
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        files.load_credentials(path)


# ---- ACL semantics (Mesos's local authorizer) -----------------------------------------------------------------


def acls(**rules) -> A.ACLs:
    import json

    permissive = rules.pop("permissive", True)
    return A.parse(json.dumps({"permissive": permissive, **rules}))


def rule(principals, objects, key="roles") -> dict:
    ent = lambda v: {"type": v} if v in ("ANY", "NONE") else {"values": list(v)}  # noqa: E731
    return {"principals": ent(principals), key: ent(objects)}


def test_no_rule_matching_means_permissive():
    assert A.authorized(A.OPEN, "register_frameworks", "anyone", "r")
    closed = acls(permissive=False)
    assert not A.authorized(closed, "register_frameworks", "anyone", "r")
    assert not A.authorized(closed, "register_frameworks", None, "r")


def test_the_first_matching_rule_decides():
    a = acls(register_frameworks=[rule(["web"], ["web"]), rule("ANY", "NONE")])
    assert A.authorized(a, "register_frameworks", "web", "web")
    assert not A.authorized(a, "register_frameworks", "web", "ops")  # rule 1 does not match; rule 2 denies
    assert not A.authorized(a, "register_frameworks", "ops", "web")
    assert not A.authorized(a, "register_frameworks", None, "web")


def test_an_unauthenticated_subject_only_matches_any_or_none():
    a = acls(permissive=False, run_tasks=[rule(["web"], "ANY", "users")])
    assert A.authorized(a, "run_tasks", "web", "root")
    assert not A.authorized(a, "run_tasks", None, "root")  # no match: not permissive
    b = acls(permissive=False, run_tasks=[rule("ANY", ["nobody"], "users")])
    assert A.authorized(b, "run_tasks", None, "nobody")
    assert not A.authorized(b, "run_tasks", None, "root")


def test_an_object_of_any_is_allowed_only_by_an_any_rule():
    # "May this principal view every framework?" (the raw log, the audit).
    a = acls(view_frameworks=[rule(["ops"], "ANY", "users"), rule(["web"], ["web"], "users")])
    assert A.authorized(a, "view_frameworks", "ops", None)
    assert A.authorized(a, "view_frameworks", "web", None)  # no rule matches ANY for web: permissive
    b = acls(permissive=False, view_frameworks=[rule(["web"], ["web"], "users")])
    assert not A.authorized(b, "view_frameworks", "web", None)
    assert A.authorized(b, "view_frameworks", "web", "web")


def test_role_values_with_a_wildcard_match_descendants_only():
    a = acls(permissive=False, register_frameworks=[rule(["eng"], ["eng/%"])])
    assert A.authorized(a, "register_frameworks", "eng", "eng/dev")
    assert A.authorized(a, "register_frameworks", "eng", "eng/dev/x")
    assert not A.authorized(a, "register_frameworks", "eng", "eng")
    assert not A.authorized(a, "register_frameworks", "eng", "engineering")


@pytest.mark.parametrize("text, message", [
    ('{"run_taskz": []}', "unknown ACL 'run_taskz'"),
    ('{"run_tasks": [{"principals": {"type": "ANY"}}]}', "exactly the keys 'principals' and 'users'"),
    ('{"run_tasks": [{"principals": {"type": "ALL"}, "users": {"type": "ANY"}}]}', "principals"),
    ('{"run_tasks": [{"principals": {}, "users": {"type": "ANY"}}]}', "expected"),
    ('{"run_tasks": [{"principals": {"type": "ANY", "values": ["a"]}, "users": {"type": "ANY"}}]}', "no values"),
    ('{"permissive": "no"}', "'permissive' must be true or false"),
    ('[1]', "a JSON object"),
])
def test_bad_acls_are_refused_clearly(text, message):
    with pytest.raises(A.ACLError, match=message):
        A.parse(text)


# ---- deciders ------------------------------------------------------------------------------------------------

AUTH = DecideConfig(authenticate=True)


def subscribe(who: str | None, fid: str | None = None, **info) -> sd.Subscribe:
    fi = {"user": "u", "name": "fw", **info}
    raw: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": fi}}
    if fid is not None:
        fi["id"] = raw["framework_id"] = {"value": fid}
    return dataclasses.replace(codec.parse_subscribe(raw), principal=who)


def test_an_authenticated_framework_gets_its_principal_and_keeps_it():
    log = cluster()
    d = sd.decide_subscribe(log.state, subscribe("web"), 1.0, AUTH)
    assert d.refusal is None and d.events[0].info.principal == "web"
    d = sd.decide_subscribe(log.state, subscribe("web", principal="ops"), 1.0, AUTH)
    assert d.refusal is not None and d.refusal.status == 400
    assert "Authenticated principal 'web' does not match principal 'ops'" in d.refusal.message


def test_a_framework_cannot_be_taken_over_by_another_principal():
    log = cluster()
    log(ev.FrameworkSubscribed(framework_id="F9", info=ev.FrameworkInfo(name="fw", user="u", principal="web")))
    d = sd.decide_subscribe(log.state, subscribe("ops", fid="F9"), 1.0, AUTH)
    assert d.refusal is not None and d.refusal.message == "Changing framework's principal is not allowed."
    ok = sd.decide_subscribe(log.state, subscribe("web", fid="F9"), 1.0, AUTH)
    assert ok.refusal is None and ok.reply.resubscribe
    assert sd.principal_problem("web", "ops") is not None and sd.principal_problem("web", "web") is None


def test_register_frameworks_must_allow_every_role():
    cfg = dataclasses.replace(AUTH, acls=acls(register_frameworks=[rule(["web"], ["web"]), rule("ANY", "NONE")]))
    log = cluster()
    assert sd.decide_subscribe(log.state, subscribe("web", roles=["web"], capabilities=[{"type": "MULTI_ROLE"}]),
                               1.0, cfg).refusal is None
    d = sd.decide_subscribe(log.state, subscribe("web", roles=["web", "ops"],
                                                 capabilities=[{"type": "MULTI_ROLE"}]), 1.0, cfg)
    assert d.refusal.status == 403 and "Not authorized to register framework fw with roles { web, ops }" \
        in d.refusal.message


def accept(tasks: list[dict]) -> sd.Accept:
    return codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": "F1"}, "accept": {
        "offer_ids": [{"value": "O1"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}]}})


def task_info(tid: str, user: str | None = None) -> dict:
    cmd = {"value": "true"}
    if user is not None:
        cmd["user"] = user
    return {"name": tid, "task_id": {"value": tid}, "agent_id": {"value": "A1"}, "command": cmd,
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]}


def test_run_tasks_judges_the_user_each_task_runs_as():
    # F1's user is "u" (tests.test_decide_scheduler.fw_info); its principal is None (registered without one).
    log = cluster()
    call = accept([task_info("t1"), task_info("t2")])
    only = lambda user: dataclasses.replace(AUTH, acls=acls(  # noqa: E731
        run_tasks=[rule("ANY", [user], "users"), rule("ANY", "NONE", "users")]))
    (accepted,) = sd.decide_accept(log.state, call, 1.0, only("u")).events
    assert [t.task_id for t in accepted.tasks] == ["t1", "t2"] and accepted.rejected == []
    (accepted,) = sd.decide_accept(log.state, call, 1.0, only("root")).events
    assert accepted.tasks == []
    assert [(r.task_id, r.reason, r.message) for r in accepted.rejected] == [
        (tid, "REASON_TASK_UNAUTHORIZED", "Not authorized to launch as user 'u'") for tid in ("t1", "t2")]


def test_reservations_need_the_reserve_acl_for_their_role():
    cfg = dataclasses.replace(AUTH, acls=acls(reserve_resources=[rule("ANY", "NONE")]))
    log = cluster(roles=("web",))
    call = codec.parse_scheduler_call({"type": "ACCEPT", "framework_id": {"value": "F1"}, "accept": {
        "offer_ids": [{"value": "O1"}], "operations": [{"type": "RESERVE", "reserve": {"resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1},
             "reservations": [{"type": "DYNAMIC", "role": "web"}]}]}}]}})
    assert sd.decide_accept(log.state, call, 1.0, cfg).events[0].operations == []
    assert sd.decide_accept(log.state, call, 1.0, AUTH).events[0].operations != []


def test_quota_weights_and_teardown_follow_their_acls():
    log = cluster()
    cfg = dataclasses.replace(AUTH, acls=acls(
        update_weights=[rule(["ops"], "ANY"), rule("ANY", "NONE")],
        update_quotas=[rule(["ops"], ["web"]), rule("ANY", "NONE")],
        teardown_frameworks=[rule(["ops"], "ANY", "framework_principals"),
                             rule("ANY", "NONE", "framework_principals")]))
    w = od.UpdateWeights([od.WeightInfo("web", 2.0)])
    assert od.decide_update_weights(log.state, dataclasses.replace(w, principal="web"), 1.0, cfg).refusal.status == 403
    assert od.decide_update_weights(log.state, dataclasses.replace(w, principal="ops"), 1.0, cfg).refusal is None
    q = od.UpdateQuota([od.QuotaConfig("web", {"cpus": 1.0}, {"cpus": 2.0})], principal="ops")
    assert od.decide_update_quota(log.state, q, 1.0, cfg).refusal is None
    q2 = od.UpdateQuota([od.QuotaConfig("ops", {"cpus": 1.0}, {"cpus": 2.0})], principal="ops")
    assert "Not authorized to update the quota of role 'ops'" in od.decide_update_quota(log.state, q2, 1.0,
                                                                                          cfg).refusal.message
    t = od.decide_teardown_framework(log.state, od.TeardownFramework("F1", "web"), 1.0, cfg)
    assert t.refusal.status == 403
    t = od.decide_teardown_framework(log.state, od.TeardownFramework("F1", "ops"), 1.0, cfg)
    assert [type(e).__name__ for e in t.events] == ["OffersRescinded", "FrameworkRemoved"]
    assert od.decide_teardown_framework(log.state, od.TeardownFramework("nope", "ops"), 1.0, cfg).refusal.status \
        == 400


def agent_sub(agent_id: str | None = None) -> AgentSubscribe:
    return AgentSubscribe(hostname="h9", http="10.0.0.9:5051", resources=res("cpus:1;mem:64"), agent_id=agent_id)


def test_an_agent_is_bound_to_the_principal_it_registered_as():
    log = cluster()
    d = decide_agent_subscribe(log.state, agent_sub(), 1.0, AUTH, principal="agent-9")
    (event,) = d.events
    assert event.principal == "agent-9"
    log(event)
    aid = d.reply
    assert log.state.agents[aid].principal == "agent-9"
    assert agent_principal_problem(log.state, aid, "agent-9", AUTH) is None
    assert "registered by another principal" in agent_principal_problem(log.state, aid, "agent-8", AUTH)
    assert agent_principal_problem(log.state, aid, "agent-8", DecideConfig()) is None  # authentication off
    d = decide_agent_subscribe(log.state, agent_sub(aid), 1.0, AUTH, principal="agent-8")
    assert d.refusal.status == 403
    # An agent recorded before authentication was on has no principal: the first agent principal claims it.
    assert agent_principal_problem(log.state, "A1", "agent-1", AUTH) is None


def test_register_agents_acl():
    log = cluster()
    cfg = dataclasses.replace(AUTH, acls=acls(register_agents=[rule(["agent-9"], "ANY", "agents"),
                                                               rule("ANY", "NONE", "agents")]))
    assert decide_agent_subscribe(log.state, agent_sub(), 1.0, cfg, principal="agent-9").refusal is None
    d = decide_agent_subscribe(log.state, agent_sub(), 1.0, cfg, principal="web")
    assert d.refusal.status == 403 and "Not authorized to register an agent" in d.refusal.message


# ---- views ---------------------------------------------------------------------------------------------------


def two_frameworks():
    log = cluster()
    running(log, "t1")
    log(ev.FrameworkSubscribed(framework_id="F2", info=ev.FrameworkInfo(name="other", user="other")))
    return log


def test_a_viewer_sees_only_the_frameworks_and_tasks_its_acls_allow():
    log = two_frameworks()
    view_acls = acls(view_frameworks=[rule(["web"], ["other"], "users"), rule(["web"], "NONE", "users")],
                     view_tasks=[rule(["web"], ["other"], "users"), rule(["web"], "NONE", "users")])
    web, ops = Viewer("web", view_acls), Viewer("ops", view_acls)
    assert ops.sees_all and visible_state(log.state, ops) is log.state
    assert not web.sees_all and web.key == "principal:web"
    seen = visible_state(log.state, web)
    assert list(seen.frameworks) == ["F2"] and seen.tasks == {} and seen.offers == {}
    assert list(log.state.frameworks) == ["F1", "F2"] and "F1" in log.state.tasks  # the state is untouched
    from master import operator_json

    out = operator_json.get_state(seen, "1.11.0")
    assert "F1" not in str(out) and "t1" not in str(out)
    task_event = operator_json.task_updated(log.state.task("F1", "t1"), log.state.task("F1", "t1").statuses[-1])
    assert not visible_event(log.state, web, task_event) and visible_event(log.state, ops, task_event)
    fw_event = {"type": "FRAMEWORK_ADDED", "framework_added": {"framework": operator_json.framework(
        log.state, log.state.frameworks["F2"])}}
    assert visible_event(log.state, web, fw_event)


def test_run_tasks_judges_a_tasks_own_user_before_its_frameworks():
    log = cluster()  # F1's user is "u"
    cfg = dataclasses.replace(AUTH, acls=acls(run_tasks=[rule("ANY", ["u", "nobody"], "users"),
                                                         rule("ANY", "NONE", "users")]))
    call = accept([task_info("as-nobody", user="nobody"), task_info("as-root", user="root"), task_info("as-u")])
    (accepted,) = sd.decide_accept(log.state, call, 1.0, cfg).events
    assert [t.task_id for t in accepted.tasks] == ["as-nobody", "as-u"]
    assert [(r.task_id, r.reason, r.message) for r in accepted.rejected] == [
        ("as-root", "REASON_TASK_UNAUTHORIZED", "Not authorized to launch as user 'root'")]


@pytest.mark.parametrize("header", ["Basic \u00e9", "Basic \udcff", "Basic " + "\u0661" * 8])
def test_a_non_ascii_authorization_header_is_a_401_not_an_error(header):
    assert isinstance(authenticate(CREDS, header), AuthFailure)


def test_a_task_naming_no_user_is_judged_as_root():
    import msgspec

    log = cluster()
    fw = log.state.frameworks["F1"]
    fw.info = msgspec.structs.replace(fw.info, user="")  # a framework that names no user at all
    cfg = dataclasses.replace(AUTH, acls=acls(run_tasks=[rule("ANY", ["root"], "users"), rule("ANY", "NONE", "users")]))
    (accepted,) = sd.decide_accept(log.state, accept([task_info("t1")]), 1.0, cfg).events
    assert [t.task_id for t in accepted.tasks] == ["t1"]
    cfg = dataclasses.replace(AUTH, acls=acls(run_tasks=[rule("ANY", ["nobody"], "users"),
                                                         rule("ANY", "NONE", "users")]))
    (accepted,) = sd.decide_accept(log.state, accept([task_info("t1")]), 1.0, cfg).events
    assert [r.message for r in accepted.rejected] == ["Not authorized to launch as user 'root'"]
    with pytest.raises(codec.CallError, match="not a numeric uid"):
        accept([task_info("t0", user="0")])


def test_a_deny_rule_naming_users_keeps_a_principal_from_seeing_everything():
    # Mesos's way of hiding one user's frameworks from everyone, with permissive on.
    hide = acls(view_frameworks=[rule("NONE", ["secret"], "users")], view_tasks=[rule("NONE", ["secret"], "users")])
    assert A.authorized(hide, "view_frameworks", "web", None)  # "any framework" is not "every framework"
    assert not A.authorized_for_all(hide, "view_frameworks", "web")
    assert not Viewer("web", hide).sees_all
    assert Viewer("web", A.OPEN).sees_all
    some = acls(view_frameworks=[rule(["web"], ["a", "b"], "users"), rule(["web"], "ANY", "users")])
    assert A.authorized_for_all(some, "view_frameworks", "web")
    assert not A.authorized_for_all(acls(permissive=False, view_frameworks=[rule(["web"], ["a"], "users")]),
                                    "view_frameworks", "web")
    log = two_frameworks()
    log.state.frameworks["F2"].info.user = "secret"
    seen = visible_state(log.state, Viewer("web", hide))
    assert list(seen.frameworks) == ["F1"]


def test_mesos_keys_for_unreserve_are_accepted_and_judged_for_any_reserver():
    a = acls(unreserve_resources=[rule(["web"], ["ops"], "reserver_principals"), rule(["web"], "NONE",
                                                                                      "reserver_principals")])
    assert not A.authorized(a, "unreserve_resources", "web", "web")  # the named rule cannot match: NONE decides
    b = acls(unreserve_resources=[rule(["web"], ["web"], "roles"), rule("ANY", "NONE", "roles")])
    assert A.authorized(b, "unreserve_resources", "web", "web")
    assert not A.authorized(b, "unreserve_resources", "web", "ops")
    A.parse('{"destroy_volumes": [{"principals": {"type": "ANY"}, "creator_principals": {"type": "ANY"}}]}')


def test_an_agent_recorded_without_a_principal_is_claimed_only_by_a_registering_principal():
    log = cluster()  # A1 was registered without a principal
    cfg = dataclasses.replace(AUTH, acls=acls(register_agents=[rule(["agent-1"], "ANY", "agents"),
                                                               rule("ANY", "NONE", "agents")]))
    assert agent_principal_problem(log.state, "A1", "agent-1", cfg) is None
    assert "Not authorized to act as agent A1" in agent_principal_problem(log.state, "A1", "web", cfg)


def test_a_framework_recorded_without_a_principal_cannot_be_called_as():
    assert "registered without a principal" in sd.call_principal_problem("F1", None, "web")
    assert sd.call_principal_problem("F1", "web", "web") is None


def test_a_removed_frameworks_last_task_updates_are_shown_to_whoever_may_see_it():
    from master import operator_json
    from master.state import clone

    log = two_frameworks()  # F1 (user u) runs t1
    view_acls = acls(view_frameworks=[rule(["web"], ["u"], "users"), rule(["web"], "NONE", "users")],
                     view_tasks=[rule(["web"], ["u"], "users"), rule(["web"], "NONE", "users")])
    web, ops = Viewer("web", view_acls), Viewer("ops", acls(view_frameworks=[rule(["ops"], "NONE", "users")]))
    shadow = clone(log.state)
    gone = shadow.frameworks["F1"].info
    env = ev.Envelope(index=shadow.index + 1, term=1, ts=200.0,
                      event=ev.FrameworkRemoved(framework_id="F1", reason="teardown"))
    events = operator_json.derive(shadow, env, "1.11.0")
    assert [e["type"] for e in events] == ["TASK_UPDATED", "FRAMEWORK_REMOVED"]
    assert [visible_event(shadow, web, e, gone) for e in events] == [True, True]
    assert [visible_event(shadow, ops, e, gone) for e in events] == [False, False]


def test_drover_local_secure_acls_deny_agents_every_action_but_registering(tmp_path):
    """`drover local --secure`: an agent's credential registers agents and does nothing else, whatever the
    action (the list comes from the ACL vocabulary: it once missed create_volumes and destroy_volumes)."""
    from drover.local import LocalCluster
    from drover.security.acls import ACTIONS, authorized, authorized_for_all
    from drover.security.acls import parse as parse_acls

    c = LocalCluster(data_dir=tmp_path, secure=True)
    c.plan()
    c._write_security()
    rules = parse_acls((tmp_path / "acls.json").read_text())
    agent = c._agent_principal(c.layout["agents"][0]["id"])
    assert authorized_for_all(rules, "register_agents", agent)
    for action in sorted(set(ACTIONS) - {"register_agents"}):
        assert not authorized(rules, action, agent, "db"), action
    assert authorized(rules, "destroy_volumes", c.CLIENT_PRINCIPAL, "db")
