"""Scalar quantity arithmetic for the allocator: {name: amount} dicts, rounded like Resources.

`ResourceQuantities` in Mesos: subtraction floors at zero and drops zeros. A
*limits* target differs from a *quantities* target only in what an absent name
means when shrinking: unlimited for limits, nothing for quantities.
"""

from __future__ import annotations

from eventstore.resources import UNRESERVED, Resource, Resources, round3

Q = dict[str, float]


def q_add(a: Q, b: Q) -> Q:
    out = dict(a)
    for k, v in b.items():
        out[k] = round3(out.get(k, 0.0) + v)
    return {k: v for k, v in out.items() if v > 0}


def q_sub(a: Q, b: Q) -> Q:
    out = {}
    for k, v in a.items():
        r = round3(v - b.get(k, 0.0))
        if r > 0:
            out[k] = r
    return out


def q_iadd(into: Q, b: Q, sign: float = 1.0) -> None:
    for k, v in b.items():
        r = round3(into.get(k, 0.0) + sign * v)
        if r > 0:
            into[k] = r
        else:
            into.pop(k, None)


def q_contains(a: Q, b: Q) -> bool:
    return all(a.get(k, 0.0) >= v - 1e-9 for k, v in b.items())


def scalar_q(res: Resources) -> Q:
    return res.quantities()


def unreserved_scalars(res: Resources) -> Resources:
    return Resources(r for r in res if r.type == "SCALAR" and r.role == UNRESERVED)


def reserved_or_nonscalar(res: Resources, role: str | None = None) -> Resources:
    """Reservations (for `role` only, when given), plus every non-scalar resource."""
    if role is None:
        return Resources(r for r in res if r.role != UNRESERVED or r.type != "SCALAR")
    return Resources(r for r in res if r.role == role or r.type != "SCALAR")


def shrink(res: Resources, target: Q, *, limits: bool) -> Resources:
    """Cut scalars down to `target` per name (Mesos shrinkResources). With `limits`, a name
    absent from the target is unlimited; otherwise it is dropped. Deterministic: the bag's order."""
    left = dict(target)
    out: list[Resource] = []
    for r in res:
        if r.type != "SCALAR":
            out.append(r)
            continue
        if r.name not in left:
            if limits:
                out.append(r)
            continue
        take = min(r.scalar, left[r.name])
        if take > 0:
            out.append(Resource(r.name, "SCALAR", scalar=round3(take), role=r.role))
            left[r.name] = round3(left[r.name] - take)
    return Resources(out)
