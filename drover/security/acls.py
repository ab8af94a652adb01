"""Authorization: Mesos's JSON ACLs (a subset), and the pure function that applies them.

    {"permissive": false,
     "register_frameworks": [{"principals": {"values": ["web"]}, "roles": {"values": ["web", "web/%"]}}],
     "run_tasks": [{"principals": {"type": "ANY"}, "users": {"values": ["nobody"]}},
                   {"principals": {"type": "ANY"}, "users": {"type": "NONE"}}]}

Each action holds a list of rules; a rule has a subject entity (`principals`) and an object entity (its key
depends on the action). An entity is `{"values": [...]}`, `{"type": "ANY"}` or `{"type": "NONE"}`. As in
Mesos's local authorizer (src/authorizer/local/authorizer.cpp): the FIRST rule whose subject and object both
*match* the request decides; it allows the request if its subject and object both *allow* it; a request no
rule matches is allowed iff `permissive` (true by default). A request without a principal (authentication
off) is the subject ANY, which only rules with `{"type": "ANY"}` or `NONE` subjects match. A role value `r/%`
matches every role below `r` (not `r` itself).

Pure: no IO, no clock; ACLs are validated once, when loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

# action -> the key of its object entity, as in Mesos's acls.proto (then any key Drover also accepts).
ACTIONS: dict[str, tuple[str, ...]] = {
    "register_frameworks": ("roles",),
    "run_tasks": ("users",),
    "teardown_frameworks": ("framework_principals",),
    "reserve_resources": ("roles",),
    # Mesos judges these by the principal that made the reservation or volume. A volume records its creator
    # (`disk.persistence.principal`): DESTROY passes it. A reservation's principal is not recorded, so a rule with
    # `reserver_principals` is judged for "any reserver" (only its ANY/NONE entities decide), and Drover's own
    # `roles` key judges the reservation's role.
    "unreserve_resources": ("reserver_principals", "roles"),
    "create_volumes": ("roles",),
    "destroy_volumes": ("creator_principals", "roles"),
    "update_quotas": ("roles",),
    "update_weights": ("roles",),
    "view_frameworks": ("users",),
    "view_tasks": ("users",),
    "view_executors": ("users",),
    "view_roles": ("roles",),
    "view_flags": ("flags",),
    "register_agents": ("agents",),
    # judged by an agent (agent/http_api.py), by the user the task runs as. A session runs as its task's user, so
    # Drover's launch_nested_container_sessions and Mesos's two session actions judge the same user.
    "access_sandboxes": ("users",),
    "launch_nested_container_sessions": ("users",),
    "launch_nested_container_sessions_as_user": ("users",),
    "launch_nested_container_sessions_under_parent_with_user": ("users",),
}
MAX_RULES = 10_000
MAX_VALUES = 10_000


class ACLError(ValueError):
    pass


class _Entity(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["SOME", "ANY", "NONE"] | None = None
    values: list[str] | None = None


ANY = "ANY"
NONE = "NONE"
SOME = "SOME"


@dataclass(frozen=True)
class Entity:
    kind: str  # SOME | ANY | NONE
    values: tuple[str, ...] = ()

    @staticmethod
    def of(e: _Entity, where: str) -> "Entity":
        kind = e.type or (SOME if e.values is not None else None)
        if kind is None:
            raise ACLError(f"{where}: expected {{\"values\": [...]}} or {{\"type\": \"ANY\" | \"NONE\"}}")
        if kind != SOME and e.values:
            raise ACLError(f"{where}: type {kind} takes no values")
        values = tuple(e.values or ())
        if len(values) > MAX_VALUES:
            raise ACLError(f"{where}: at most {MAX_VALUES} values")
        if any(not isinstance(v, str) or not v or len(v) > 1024 for v in values):
            raise ACLError(f"{where}: values must be non-empty strings of at most 1024 characters")
        return Entity(kind, values)


@dataclass(frozen=True)
class Rule:
    principals: Entity
    objects: Entity
    key: str = ""  # the object key the rule was written with


@dataclass(frozen=True)
class ACLs:
    permissive: bool = True
    rules: tuple[tuple[str, tuple[Rule, ...]], ...] = ()  # (action, its rules in order), actions sorted

    def rules_for(self, action: str) -> tuple[Rule, ...]:
        for name, rules in self.rules:
            if name == action:
                return rules
        return ()


OPEN = ACLs()  # no ACLs: everything is allowed (Mesos's default)


def _value_matches(acl_value: str, value: str, hierarchical: bool) -> bool:
    if acl_value == value:
        return True
    return hierarchical and acl_value.endswith("/%") and value.startswith(acl_value[:-1])


def _matches(request: str | None, acl: Entity, hierarchical: bool = False) -> bool:
    """Does the rule apply to this request entity? (None = ANY: no principal, or "any object".)"""
    if acl.kind in (ANY, NONE):
        return True
    if request is None:
        return False
    return any(_value_matches(v, request, hierarchical) for v in acl.values)


def _allows(request: str | None, acl: Entity, hierarchical: bool = False) -> bool:
    if acl.kind == ANY:
        return True
    if acl.kind == NONE or request is None:
        return False
    return any(_value_matches(v, request, hierarchical) for v in acl.values)


def authorized(acls: ACLs, action: str, principal: str | None, obj: str | None,
               by: dict[str, str | None] | None = None) -> bool:
    """May `principal` (None: unauthenticated) do `action` on `obj` (None: on anything, e.g. "view every
    framework")? `obj` is the object of the action's last key; `by` gives objects of other keys (e.g.
    `creator_principals`). The first rule that matches decides; none matches: `acls.permissive`."""
    assert action in ACTIONS, action
    for rule in acls.rules_for(action):
        hierarchical = rule.key == "roles"
        if by is not None and rule.key in by:
            o = by[rule.key]
        else:
            o = obj if rule.key == ACTIONS[action][-1] else None  # judged by what Drover does not record: any
        if _matches(principal, rule.principals) and _matches(o, rule.objects, hierarchical):
            return _allows(principal, rule.principals) and _allows(o, rule.objects, hierarchical)
    return acls.permissive


def authorized_for_all(acls: ACLs, action: str, principal: str | None) -> bool:
    """Is `principal` allowed `action` on every object there is? (`authorized(..., None)` is not that question: a
    rule naming objects never matches "any object", so `{"principals": {"type": "NONE"}, "users": {"values":
    ["secret"]}}` would not stop it.) Walks the rules as `authorized` would for each object: a rule the principal
    matches decides for the objects it names (a denial for one of them is an answer: no), for every object left if
    its object entity is ANY or NONE; objects no rule names fall to `permissive`."""
    assert action in ACTIONS, action
    for rule in acls.rules_for(action):
        if not _matches(principal, rule.principals):
            continue
        subject_ok = _allows(principal, rule.principals)
        if rule.objects.kind == SOME:
            if not subject_ok:
                return False  # the objects it names are denied
            continue  # those are allowed; the others go on
        return subject_ok and rule.objects.kind == ANY
    return acls.permissive


def parse(data: bytes | str, where: str = "acls") -> ACLs:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise ACLError(f"{where}: not valid JSON") from None
    if not isinstance(raw, dict):
        raise ACLError(f"{where}: expected a JSON object")
    permissive = raw.get("permissive", True)
    if not isinstance(permissive, bool):
        raise ACLError(f"{where}: 'permissive' must be true or false")
    rules = []
    for action in sorted(raw):
        if action == "permissive":
            continue
        if action not in ACTIONS:
            raise ACLError(f"{where}: unknown ACL {action!r} (Drover knows {', '.join(sorted(ACTIONS))})")
        keys = ACTIONS[action]
        items = raw[action]
        if not isinstance(items, list) or len(items) > MAX_RULES:
            raise ACLError(f"{where}: '{action}' must be a list of at most {MAX_RULES} rules")
        parsed = []
        for i, item in enumerate(items):
            at = f"{where}: {action}[{i}]"
            key = next((k for k in keys if isinstance(item, dict) and set(item) == {"principals", k}), None)
            if key is None:
                raise ACLError(f"{at}: expected exactly the keys 'principals' and "
                               f"{' or '.join(repr(k) for k in keys)}")
            ents = []
            for part in ("principals", key):
                try:
                    ents.append(Entity.of(msgspec.convert(item[part], _Entity), f"{at}.{part}"))
                except msgspec.ValidationError as e:
                    raise ACLError(f"{at}.{part}: {e}") from None
            parsed.append(Rule(ents[0], ents[1], key))
        rules.append((action, tuple(parsed)))
    return ACLs(permissive=permissive, rules=tuple(rules))
