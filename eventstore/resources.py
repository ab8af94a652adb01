"""Resources: the vocabulary shared by events, the fold, the allocator and the agent.

A `Resource` is one named quantity owned by a role ("*" = unreserved): a scalar
(cpus, mem, disk, gpus), a set of ranges (ports) or a set of items. A
`Resources` value is a canonical bag keyed by (name, role): adding and
subtracting keep it normalised, so two equal bags always encode to the same
bytes (which matters for state hashes and replay).

A persistent volume is a `disk` record with `persistence` (its id) and `volume`
(where a task sees it), carved from disk reserved for a role. It is keyed by
(name, role, persistence id, shared) and is atomic, as in Mesos: it never merges
with other disk and subtracts only as a whole. A shared volume counts `copies`
(how many holders it has), as Mesos's shared resources do. Records without
persistence keep the 2-tuple key and their encoding, so logs written before
volumes existed fold to the same bytes.

Scalars are rounded to 3 decimal places after every operation, as Mesos does
with its fixed-point arithmetic: the result never depends on summation order.
"""

from __future__ import annotations

import re
from math import floor as _floor
from typing import Annotated, Iterable, Iterator, Literal

import msgspec

from eventstore.values import (MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_RANGES, MAX_SET_ITEMS, Id, Name, RangeValue, Role,
                               Scalar)

UNRESERVED = "*"
MAX_COPIES = 1_000_000  # holders of one shared volume (tasks using it at once): far beyond any agent's task count

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]

# (name, role) for ordinary records; (name, role, persistence id, shared) for volumes
Key = tuple[str, ...] | tuple[str, str, str, bool]


class Persistence(msgspec.Struct, frozen=True, omit_defaults=True):
    """Mesos `DiskInfo.Persistence`: the volume's id (unique per role on an agent) and who created it."""

    id: Id
    principal: Name | None = None


class DiskVolume(msgspec.Struct, frozen=True, omit_defaults=True):
    """Mesos `DiskInfo.volume` for a persistent volume: where a task sees it, relative to its sandbox (one path
    component, checked by `resources_problem`), and whether it may write."""

    container_path: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    mode: Literal["RW", "RO"] = "RW"


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
    persistence: Persistence | None = None
    volume: DiskVolume | None = None
    shared: bool = False
    copies: Annotated[int, msgspec.Meta(ge=0, le=MAX_COPIES)] = 1  # shared volumes only: holders counted


def key_of(r: Resource) -> Key:
    """The bag key of a record. Mesos compares volumes by persistence id only (`DiskInfo ==` ignores `volume` and
    the principal), so a task may mount a volume at its own path or read-only and still match the offer."""
    if r.persistence is None:
        return (r.name, r.role)
    return (r.name, r.role, r.persistence.id, r.shared)


def is_volume(r: Resource) -> bool:
    return r.persistence is not None


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

    __slots__ = ("_items", "_q", "_v")

    def __init__(self, items: Iterable[Resource] = ()):
        bag: dict[Key, Resource] = {}
        volumes = False
        for r in items:
            if r.persistence is None:
                key: Key = (r.name, r.role)
            else:
                key, volumes = key_of(r), True
            prev = bag.get(key)
            r = _canon(r)
            bag[key] = r if prev is None else _add_one(prev, r)
        self._items = {k: v for k, v in sorted(bag.items()) if not _is_empty(v)}
        self._q: dict[str, float] | None = None
        # False: certainly no volume (so no shared one); True: maybe, look. Known for free when built from records,
        # so the allocator's hot paths can ask `has_shared()` of an offer's resources without a scan.
        self._v = volumes

    @classmethod
    def _make(cls, items: dict[Key, Resource], volumes: bool = True) -> "Resources":
        """From a dict already in canonical form (sorted keys, canonical non-empty records): the hot
        path of arithmetic, which would otherwise re-canonicalise what is canonical already. `volumes`: False
        when it is known to hold none."""
        obj = object.__new__(cls)
        obj._items = items
        obj._q = None
        obj._v = volumes
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

    def get(self, key: Key) -> Resource | None:
        """The record of one bag key (`key_of`), if any."""
        return self._items.get(key)

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
            if r.persistence is not None:
                key += f"[{r.persistence.id}:{r.volume.container_path if r.volume else ''}"
                key += (":RO]" if r.volume is not None and r.volume.mode == "RO" else "]")
                key += f"<SHARED x{r.copies}>" if r.shared else ""
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
        """`quantities()` without the copy, for hot paths that only read it. Never mutate it. A shared volume
        counts once whatever its copies (Mesos's sorters count one copy)."""
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
        """The same resources with every reservation (and volume) dropped: what a reservation was made from."""
        return Resources(_plain(r, UNRESERVED) for r in self._items.values())

    def stripped(self) -> "Resources":
        """Volumes turned back into the reserved disk they were created from (Mesos's CREATE conversion, reversed)."""
        if not self.has_volumes():
            return self
        return Resources(_plain(r, r.role) for r in self._items.values())

    def has_volumes(self) -> bool:
        return self._v and any(len(k) > 2 for k in self._items)

    def volumes(self) -> "Resources":
        return Resources._make({k: r for k, r in self._items.items() if len(k) > 2})

    def non_volumes(self) -> "Resources":
        return self if not self.has_volumes() else Resources._make(
            {k: r for k, r in self._items.items() if len(k) == 2}, False)

    def has_shared(self) -> bool:
        """Does the bag hold a shared volume? (Free for a bag built from records without volumes.)"""
        return self._v and any(r.shared for r in self._items.values())

    def shared(self) -> "Resources":
        return Resources._make({k: r for k, r in self._items.items() if r.shared})

    def non_shared(self) -> "Resources":
        if not self.has_shared():
            return self
        return Resources._make({k: r for k, r in self._items.items() if not r.shared})

    def persistence_ids(self) -> list[tuple[str, str]]:
        """(role, persistence id) of every volume, in bag order."""
        return [(r.role, r.persistence.id) for r in self._items.values() if r.persistence is not None]

    def reserved(self) -> "Resources":
        return Resources._make({k: r for k, r in self._items.items() if r.role != UNRESERVED}, self._v)

    def unreserved(self) -> "Resources":
        return Resources._make({k: r for k, r in self._items.items() if r.role == UNRESERVED}, False)

    def allocatable_to(self, role: str) -> "Resources":
        """Unreserved plus what is reserved for `role` or one of its ancestors."""
        def ok(r: Resource) -> bool:
            return r.role == UNRESERVED or r.role == role or role.startswith(r.role + "/")
        kept = {k: r for k, r in self._items.items() if ok(r)}
        return self if len(kept) == len(self._items) else Resources._make(kept, self._v)

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
        return Resources._make(dict(sorted(out.items())) if fresh else out, self._v or other._v)

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
        return Resources._make(out, self._v)

    def contains(self, other: "Resources") -> bool:
        for key, r in other._items.items():
            mine = self._items.get(key)
            if mine is None or mine.type != r.type:
                return False
            if len(key) > 2:
                # a volume is matched whole (Mesos: no partial volumes); a shared one by its copies too
                if mine.scalar != r.scalar or (r.shared and mine.copies < r.copies):
                    return False
                continue
            if r.type == "SCALAR" and _round(mine.scalar - r.scalar) < 0:
                return False
            if r.type == "RANGES" and not _ranges_contain(mine.ranges, r.ranges):
                return False
            if r.type == "SET" and not set(r.items) <= set(mine.items):
                return False
        return True


def conversion(kind: str, res: Resources) -> tuple[Resources, Resources]:
    """What an operation consumes and what it yields in its place (Mesos `getResourceConversions`): the same
    quantities, owned or shaped differently, so allocations and shares do not move."""
    if kind == "RESERVE":
        return res.as_unreserved(), res
    if kind == "UNRESERVE":
        return res, res.as_unreserved()
    if kind == "CREATE":
        return res.stripped(), res
    return res, res.stripped()  # DESTROY


def _canon(r: Resource) -> Resource:
    """The normal form of one record: scalars rounded, ranges merged and sorted, items sorted and unique."""
    if r.type == "SCALAR":
        v = _round(r.scalar)
        if v == r.scalar and type(r.scalar) is float:
            return r
        return _scalar_like(r, v)
    if r.type == "RANGES":
        rs = _norm_ranges(r.ranges)
        return r if rs == r.ranges else Resource(r.name, r.type, ranges=rs, role=r.role)
    its = tuple(sorted(set(r.items)))
    return r if its == r.items else Resource(r.name, r.type, items=its, role=r.role)


def _scalar_like(r: Resource, v: float) -> Resource:
    if r.persistence is None:
        return Resource(r.name, r.type, scalar=v, role=r.role)
    return msgspec.structs.replace(r, scalar=v)


def _plain(r: Resource, role: str) -> Resource:
    """`r` without persistence, volume or sharing, owned by `role`."""
    if r.persistence is None and not r.shared and r.volume is None and r.role == role:
        return r
    return Resource(r.name, r.type, scalar=r.scalar, ranges=r.ranges, items=r.items, role=role)


def _is_empty(r: Resource) -> bool:
    if r.type == "SCALAR":
        return r.scalar <= 0 or r.copies <= 0
    if r.type == "RANGES":
        return not r.ranges
    return not r.items


def _add_one(a: Resource, b: Resource) -> Resource:
    if a.type != b.type:
        # Never in a committed event (resources_problem is part of the commit gate); the fold must not raise,
        # so a record of another type is ignored, as subtraction ignores it.
        return a
    if a.persistence is not None:
        # Volumes are atomic: a second non-shared record with the same persistence id is never committed (the
        # deciders refuse duplicate ids), so keep the first; a shared one gains the other's holders.
        return msgspec.structs.replace(a, copies=min(MAX_COPIES, a.copies + b.copies)) if a.shared else a
    if a.type == "SCALAR":
        return Resource(a.name, a.type, scalar=_round(a.scalar + b.scalar), role=a.role)
    if a.type == "RANGES":
        return Resource(a.name, a.type, ranges=_norm_ranges(a.ranges + b.ranges), role=a.role)
    return Resource(a.name, a.type, items=tuple(sorted(set(a.items) | set(b.items))), role=a.role)


def _sub_one(a: Resource, b: Resource) -> Resource:
    if a.type != b.type:
        return a
    if a.persistence is not None:
        # Mesos `subtractable`: a volume leaves only whole (equal size); a shared one loses holders
        if a.scalar != b.scalar:
            return a
        if a.shared and a.copies > b.copies:
            return msgspec.structs.replace(a, copies=a.copies - b.copies)
        return msgspec.structs.replace(a, scalar=0.0)
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
        if (why := volume_problem(r)) is not None:
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


def volume_problem(r: Resource) -> str | None:
    """The value rules of persistence, volume and sharing (Mesos `validateDiskInfo`, plus Drover's bounds)."""
    from eventstore.values import id_problem

    if r.persistence is None:
        if r.volume is not None:
            return "Non-persistent volume not supported"
        if r.shared:
            return "Only persistent volumes can be shared"
        return None if r.copies == 1 else "copies is for shared persistent volumes only"
    if r.name != "disk" or r.type != "SCALAR":
        return "Only 'disk' scalar resources can be persistent volumes"
    if r.role == UNRESERVED:
        return "Persistent volumes cannot be created from unreserved resources"
    if (why := id_problem(r.persistence.id, "persistence ID")) is not None:
        return f"Invalid persistence ID for persistent volume: {why}"
    if r.volume is None:
        return "Expecting 'volume' to be set for persistent volume"
    if (why := container_path_problem(r.volume.container_path)) is not None:
        return why
    if not r.shared and r.copies != 1:
        return "copies is for shared persistent volumes only"
    if not (1 <= r.copies <= MAX_COPIES):
        return f"a shared volume's copies must be in [1, {MAX_COPIES}]"
    if r.scalar <= 0:
        return "A persistent volume must have a positive size"
    return None


RESERVED_SANDBOX_NAMES = ("stdout", "stderr")  # the task's own output files live there


def container_path_problem(path: object) -> str | None:
    """Why a persistent volume cannot be mounted at `path` in the sandbox, or None. Mesos silently skips a
    volume whose container_path holds a '/'; Drover refuses it instead, so a task never runs without its data."""
    from eventstore.values import id_problem

    if id_problem(path, "container_path") is not None or not isinstance(path, str):
        return (f"Persistent volume container_path {str(path)[:64]!r} must be one relative path component: no '/', "
                "whitespace or control characters, and not '.' or '..'")
    if path in RESERVED_SANDBOX_NAMES:
        return f"Persistent volume container_path {path!r} is reserved for the task's output"
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
