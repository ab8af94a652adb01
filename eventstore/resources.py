"""Resources: the vocabulary shared by events, the fold, the allocator and the agent.

A `Resource` is one named quantity owned by a role ("*" = unreserved): a scalar
(cpus, mem, disk, gpus), a set of ranges (ports) or a set of items. A
`Resources` value is a canonical bag keyed by (name, role): adding and
subtracting keep it normalised, so two equal bags always encode to the same
bytes (which matters for state hashes and replay).

Scalars are rounded to 3 decimal places after every operation, as Mesos does
with its fixed-point arithmetic: the result never depends on summation order.
"""

from __future__ import annotations

import re
from math import floor as _floor
from typing import Annotated, Iterable, Iterator, Literal

import msgspec

from eventstore.values import MAX_NAME_LENGTH, MAX_RANGES, MAX_SET_ITEMS, RangeValue, Role, Scalar

UNRESERVED = "*"

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]


class Resource(msgspec.Struct, frozen=True, omit_defaults=True):
    """One resource record. Its field types carry the value rules (checked whenever it is decoded, so in every
    committed event); `resources_problem` checks the rules across records."""

    name: _Name
    type: Literal["SCALAR", "RANGES", "SET"]
    scalar: Scalar = 0.0
    ranges: Annotated[tuple[tuple[RangeValue, RangeValue], ...], msgspec.Meta(max_length=MAX_RANGES)] = ()
    items: Annotated[tuple[Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)], ...],
                     msgspec.Meta(max_length=MAX_SET_ITEMS)] = ()
    role: Role = UNRESERVED


def round3(v: float) -> float:
    """Round to 3 decimal places (Mesos's fixed-point resolution). floor(x*1000 + 0.5) gives the same
    values as round(x, 3) on resource quantities at a fifth of the cost, and this runs on every
    resource operation of the fold; being one function, every replica rounds identically."""
    return _floor(v * 1000.0 + 0.5) / 1000.0


_round = round3


def _norm_ranges(rs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for b, e in sorted((int(b), int(e)) for b, e in rs):
        if b > e:
            continue
        if out and b <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([b, e])
    return tuple((b, e) for b, e in out)


def _sub_ranges(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in a:
        pieces = [(lo, hi)]
        for blo, bhi in b:
            nxt = []
            for plo, phi in pieces:
                if bhi < plo or blo > phi:
                    nxt.append((plo, phi))
                    continue
                if plo < blo:
                    nxt.append((plo, blo - 1))
                if bhi < phi:
                    nxt.append((bhi + 1, phi))
            pieces = nxt
        out.extend(pieces)
    return _norm_ranges(out)


def _ranges_contain(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    return not _sub_ranges(b, a)


def _ranges_count(a: tuple[tuple[int, int], ...]) -> int:
    return sum(e - b + 1 for b, e in a)


class Resources:
    """An immutable, canonical bag of resources."""

    __slots__ = ("_items", "_q")

    def __init__(self, items: Iterable[Resource] = ()):
        bag: dict[tuple[str, str], Resource] = {}
        for r in items:
            key = (r.name, r.role)
            prev = bag.get(key)
            r = _canon(r)
            bag[key] = r if prev is None else _add_one(prev, r)
        self._items = {k: v for k, v in sorted(bag.items()) if not _is_empty(v)}
        self._q: dict[str, float] | None = None

    @classmethod
    def _make(cls, items: dict[tuple[str, str], Resource]) -> "Resources":
        """From a dict already in canonical form (sorted keys, canonical non-empty records): the hot
        path of arithmetic, which would otherwise re-canonicalise what is canonical already."""
        obj = object.__new__(cls)
        obj._items = items
        obj._q = None
        return obj

    # -- construction -----------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "Resources":
        """Parse the agent flag form: ``cpus:4;mem:4096;ports:[31000-32000];cpus(web):2``.

        Raises ValueError naming the bad entry."""
        items = []
        for part in filter(None, (p.strip() for p in text.replace("\n", ";").split(";"))):
            m = re.fullmatch(r"([A-Za-z_][\w.-]*)(?:\(([^)]*)\))?\s*:\s*(.+)", part)
            if not m:
                raise ValueError(f"bad resource {part!r}: expected name:value or name(role):value")
            name, role, value = m.group(1), m.group(2) or UNRESERVED, m.group(3).strip()
            if value.startswith("["):
                if not value.endswith("]"):
                    raise ValueError(f"bad ranges in {part!r}: expected [a-b,c-d]")
                rs = []
                for chunk in filter(None, (c.strip() for c in value[1:-1].split(","))):
                    lo, _, hi = chunk.partition("-")
                    try:
                        b, e = int(lo), int(hi or lo)
                    except ValueError:
                        raise ValueError(f"bad range {chunk!r} in {part!r}") from None
                    if b > e:
                        raise ValueError(f"bad range {chunk!r} in {part!r}: begin is after end")
                    rs.append((b, e))
                items.append(Resource(name, "RANGES", ranges=_norm_ranges(rs), role=role))
            elif value.startswith("{"):
                if not value.endswith("}"):
                    raise ValueError(f"bad set in {part!r}: expected {{a,b}}")
                its = tuple(sorted({i.strip() for i in value[1:-1].split(",") if i.strip()}))
                items.append(Resource(name, "SET", items=its, role=role))
            else:
                try:
                    v = float(value)
                except ValueError:
                    raise ValueError(f"bad scalar {value!r} for {name}") from None
                if v < 0 or v != v or v == float("inf"):
                    raise ValueError(f"resource {name} must be a finite non-negative number, got {value}")
                items.append(Resource(name, "SCALAR", scalar=_round(v), role=role))
        problem = resources_problem(items)
        if problem is not None:
            raise ValueError(problem)
        return cls(items)

    @classmethod
    def scalars(cls, role: str = UNRESERVED, **q: float) -> "Resources":
        return cls(Resource(n, "SCALAR", scalar=_round(v), role=role) for n, v in q.items())

    # -- access -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Resource]:
        return iter(self._items.values())

    def to_list(self) -> list[Resource]:
        return list(self._items.values())

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resources) and self._items == other._items

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"Resources({self.format()!r})"

    def format(self) -> str:
        parts = []
        for r in self._items.values():
            key = r.name if r.role == UNRESERVED else f"{r.name}({r.role})"
            if r.type == "SCALAR":
                parts.append(f"{key}:" + (f"{r.scalar:.3f}".rstrip("0").rstrip(".") or "0"))  # exact, unlike :g
            elif r.type == "RANGES":
                parts.append(f"{key}:[" + ",".join(f"{b}-{e}" for b, e in r.ranges) + "]")
            else:
                parts.append(f"{key}:{{" + ",".join(r.items) + "}")
        return ";".join(parts)

    def scalar(self, name: str) -> float:
        """Total of a scalar over all roles."""
        return _round(sum(r.scalar for r in self._items.values() if r.name == name and r.type == "SCALAR"))

    def quantities(self) -> dict[str, float]:
        """Scalar totals by name (reserved and unreserved summed), sorted by name (a fresh dict)."""
        return dict(self.quantities_view())

    def quantities_view(self) -> dict[str, float]:
        """`quantities()` without the copy, for hot paths that only read it. Never mutate it."""
        if self._q is None:
            q: dict[str, float] = {}
            for r in self._items.values():
                if r.type == "SCALAR":
                    q[r.name] = _round(q.get(r.name, 0.0) + r.scalar)
            self._q = dict(sorted(q.items()))
        return self._q

    def ranges(self, name: str) -> tuple[tuple[int, int], ...]:
        return _norm_ranges(rg for r in self._items.values() if r.name == name for rg in r.ranges)

    def as_unreserved(self) -> "Resources":
        """The same resources with every reservation dropped (what a reservation was made from)."""
        return Resources(msgspec.structs.replace(r, role=UNRESERVED) for r in self._items.values())

    def unreserved(self) -> "Resources":
        return Resources._make({k: r for k, r in self._items.items() if r.role == UNRESERVED})

    def allocatable_to(self, role: str) -> "Resources":
        """Unreserved plus what is reserved for `role` or one of its ancestors."""
        def ok(r: Resource) -> bool:
            return r.role == UNRESERVED or r.role == role or role.startswith(r.role + "/")
        kept = {k: r for k, r in self._items.items() if ok(r)}
        return self if len(kept) == len(self._items) else Resources._make(kept)

    # -- arithmetic ---------------------------------------------------------------------
    def __add__(self, other: "Resources") -> "Resources":
        if not other._items:
            return self
        if not self._items:
            return other
        out = dict(self._items)
        fresh = False
        for key, r in other._items.items():
            prev = out.get(key)
            if prev is None:
                out[key] = r
                fresh = True
            else:
                out[key] = _add_one(prev, r)
        return Resources._make(dict(sorted(out.items())) if fresh else out)

    def __sub__(self, other: "Resources") -> "Resources":
        if not other._items:
            return self
        out = dict(self._items)
        for key, r in other._items.items():
            mine = out.get(key)
            if mine is None:
                continue
            left = _sub_one(mine, r)
            if _is_empty(left):
                del out[key]
            else:
                out[key] = left
        return Resources._make(out)

    def contains(self, other: "Resources") -> bool:
        for key, r in other._items.items():
            mine = self._items.get(key)
            if mine is None or mine.type != r.type:
                return False
            if r.type == "SCALAR" and _round(mine.scalar - r.scalar) < 0:
                return False
            if r.type == "RANGES" and not _ranges_contain(mine.ranges, r.ranges):
                return False
            if r.type == "SET" and not set(r.items) <= set(mine.items):
                return False
        return True


def _canon(r: Resource) -> Resource:
    """The normal form of one record: scalars rounded, ranges merged and sorted, items sorted and unique."""
    if r.type == "SCALAR":
        v = _round(r.scalar)
        return r if v == r.scalar and type(r.scalar) is float else Resource(r.name, r.type, scalar=v, role=r.role)
    if r.type == "RANGES":
        rs = _norm_ranges(r.ranges)
        return r if rs == r.ranges else Resource(r.name, r.type, ranges=rs, role=r.role)
    its = tuple(sorted(set(r.items)))
    return r if its == r.items else Resource(r.name, r.type, items=its, role=r.role)


def _is_empty(r: Resource) -> bool:
    if r.type == "SCALAR":
        return r.scalar <= 0
    if r.type == "RANGES":
        return not r.ranges
    return not r.items


def _add_one(a: Resource, b: Resource) -> Resource:
    if a.type != b.type:
        # Never in a committed event (resources_problem is part of the commit gate); the fold must not raise,
        # so a record of another type is ignored, as subtraction ignores it.
        return a
    if a.type == "SCALAR":
        return Resource(a.name, a.type, scalar=_round(a.scalar + b.scalar), role=a.role)
    if a.type == "RANGES":
        return Resource(a.name, a.type, ranges=_norm_ranges(a.ranges + b.ranges), role=a.role)
    return Resource(a.name, a.type, items=tuple(sorted(set(a.items) | set(b.items))), role=a.role)


def _sub_one(a: Resource, b: Resource) -> Resource:
    if a.type != b.type:
        return a
    if a.type == "SCALAR":
        return Resource(a.name, a.type, scalar=max(0.0, _round(a.scalar - b.scalar)), role=a.role)
    if a.type == "RANGES":
        return Resource(a.name, a.type, ranges=_sub_ranges(a.ranges, b.ranges), role=a.role)
    return Resource(a.name, a.type, items=tuple(sorted(set(a.items) - set(b.items))), role=a.role)


def resources_problem(items: Iterable[Resource]) -> str | None:
    """Why a list of resource records cannot form a `Resources` bag (or be folded), or None if it can.

    The rules the fold relies on: every name has one type across the list (a resource sent both as SCALAR and
    RANGES would make every later sum raise), scalars are finite and within MAX_SCALAR, ranges are well-formed
    (begin <= end, within bounds, at most MAX_RANGES pieces), sets are bounded, names and roles valid."""
    from eventstore.values import MAX_RANGE_VALUE, MAX_SCALAR, role_problem

    types: dict[str, str] = {}
    items = list(items)
    for r in items:
        if not isinstance(r.name, str) or not r.name or len(r.name) > MAX_NAME_LENGTH:
            return f"Invalid resource name {str(r.name)[:64]!r}"
        if r.type not in ("SCALAR", "RANGES", "SET"):
            return f"Resource {r.name}: unknown type {r.type!r}"
        if types.setdefault(r.name, r.type) != r.type:
            return f"Resource {r.name} is given as both {types[r.name]} and {r.type}"
        if (why := role_problem(r.role)) is not None:
            return f"Resource {r.name}: {why}"
        if r.type == "SCALAR":
            v = r.scalar
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v <= MAX_SCALAR):
                return f"Resource {r.name}: scalar must be a finite number in [0, {MAX_SCALAR:g}], got {v!r}"
        elif r.type == "RANGES":
            if len(r.ranges) > MAX_RANGES:
                return f"Resource {r.name}: more than {MAX_RANGES} ranges"
            for rg in r.ranges:
                if len(rg) != 2:
                    return f"Resource {r.name}: a range must be [begin, end]"
                b, e = rg
                if (isinstance(b, bool) or isinstance(e, bool) or not isinstance(b, int) or not isinstance(e, int)
                        or not (0 <= b <= e <= MAX_RANGE_VALUE)):
                    return f"Resource {r.name}: invalid range [{b}-{e}] (0 <= begin <= end <= {MAX_RANGE_VALUE})"
        else:
            if len(r.items) > MAX_SET_ITEMS:
                return f"Resource {r.name}: more than {MAX_SET_ITEMS} set items"
            if any(not isinstance(i, str) or len(i) > MAX_NAME_LENGTH for i in r.items):
                return f"Resource {r.name}: invalid set item"
    # The fold adds records of one name and role up: the sums must keep the bounds too (two records of 1e12 cpus
    # are an agent of 2e12, which no offer of it could then carry).
    for r in Resources(items):
        if r.type == "SCALAR" and r.scalar > MAX_SCALAR:
            return f"Resource {r.name}: the records add up to {r.scalar:g}, more than {MAX_SCALAR:g}"
        if r.type == "RANGES" and len(r.ranges) > MAX_RANGES:
            return f"Resource {r.name}: the records add up to more than {MAX_RANGES} ranges"
        if r.type == "SET" and len(r.items) > MAX_SET_ITEMS:
            return f"Resource {r.name}: the records add up to more than {MAX_SET_ITEMS} set items"
    return None


def ranges_count(rs: tuple[tuple[int, int], ...]) -> int:
    return _ranges_count(rs)


def host_ports_problem(resources: Iterable[Resource], mapped: Iterable[tuple[int, str]]) -> str | None:
    """Why a task may not forward these (host port, protocol) pairs, or None: each host port must be one of the
    task's own `ports` resources (what it was offered and accepted), and a host port is forwarded once per
    protocol. Checked by the leader's decider and again by the agent."""
    ranges = Resources(resources).ranges("ports")
    seen: set[tuple[int, str]] = set()
    for port, protocol in mapped:
        if not any(b <= port <= e for b, e in ranges):
            return f"Task maps host port {port}, which is not in its 'ports' resources"
        if (port, protocol) in seen:
            return f"Task maps host port {port}/{protocol} more than once"
        seen.add((port, protocol))
    return None
