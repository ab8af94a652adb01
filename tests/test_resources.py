"""Unit tests for eventstore.resources: the canonical resource bag."""

import msgspec
import pytest

from eventstore.resources import UNRESERVED, Resource, Resources, ranges_count

FLAG = "cpus:4;mem:4096;disk:8192;ports:[31000-32000];cpus(web):2"


def R(text: str) -> Resources:
    return Resources.parse(text)


def by_key(res: Resources) -> dict:
    return {(r.name, r.role): r for r in res}


# ---- parsing ------------------------------------------------------------------------------------


def test_parse_agent_flag_form():
    res = R(FLAG)
    items = by_key(res)
    assert set(items) == {("cpus", "*"), ("cpus", "web"), ("mem", "*"), ("disk", "*"), ("ports", "*")}
    assert items[("cpus", "*")] == Resource("cpus", "SCALAR", scalar=4.0)
    assert items[("cpus", "web")] == Resource("cpus", "SCALAR", scalar=2.0, role="web")
    assert items[("mem", "*")].scalar == 4096.0
    assert items[("disk", "*")].scalar == 8192.0
    assert items[("ports", "*")] == Resource("ports", "RANGES", ranges=((31000, 32000),))
    # Totals by name sum the roles; ports are not a quantity.
    assert res.quantities() == {"cpus": 6.0, "disk": 8192.0, "mem": 4096.0}
    assert res.scalar("cpus") == 6.0
    assert res.ranges("ports") == ((31000, 32000),)
    assert res.unreserved() == R("cpus:4;mem:4096;disk:8192;ports:[31000-32000]")


def test_parse_whitespace_newlines_sets_and_multiple_ranges():
    res = R(" cpus : 1.5 ;\nmem:64;; ports:[1-2, 5-5, 3-4];zones:{b, a, a}")
    assert res.scalar("cpus") == 1.5
    assert res.scalar("mem") == 64.0
    assert res.ranges("ports") == ((1, 5),)  # adjacent/overlapping pieces merge
    assert by_key(res)[("zones", "*")].items == ("a", "b")
    assert R("") == Resources()
    assert not R("")


def test_parse_format_round_trip():
    res = R(FLAG + ";zones:{a,b};ports(web):[1-3,7-9]")
    assert R(res.format()) == res
    assert R("cpus:4;mem:4096").format() == "cpus:4;mem:4096"


def test_format_is_exact_for_large_and_fractional_scalars():
    res = R("mem:1234567;disk:262144.5;cpus:0.125;gpus:1000000")
    assert res.format() == "cpus:0.125;disk:262144.5;gpus:1000000;mem:1234567"
    assert R(res.format()) == res


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("cpus:4;mem", "mem"),  # no value
        ("cpus:4;mem:lots", "lots"),  # not a number
        ("cpus:-1", "cpus"),  # negative
        ("cpus:nan", "cpus"),
        ("cpus:inf", "cpus"),
        ("ports:[31000-abc]", "31000-abc"),
        ("ports:[1-2", "ports:[1-2"),  # unterminated
        ("zones:{a,b", "zones:{a,b"),
        ("4cpus:1", "4cpus:1"),  # bad name
        ("cpus(web:1", "cpus(web:1"),
    ],
)
def test_parse_errors_name_the_entry(text, fragment):
    with pytest.raises(ValueError) as exc:
        R(text)
    assert fragment in str(exc.value)


def test_parse_reversed_range_is_an_error():
    with pytest.raises(ValueError) as exc:
        R("ports:[32000-31000]")
    assert "32000-31000" in str(exc.value)


def test_parse_conflicting_types_for_one_name():
    with pytest.raises(ValueError) as exc:
        R("ports:[1-2];ports:3")
    assert "ports" in str(exc.value)


def test_parse_scalar_rounds_to_three_decimals():
    assert R("cpus:0.12345").scalar("cpus") == 0.123
    assert R("cpus:0.0004") == Resources()  # rounds to zero: empty


# ---- scalars -----------------------------------------------------------------------------------


def test_scalar_add_subtract_contains():
    a = R("cpus:2;mem:1024")
    b = R("cpus:0.5;mem:256")
    assert a + b == R("cpus:2.5;mem:1280")
    assert a - b == R("cpus:1.5;mem:768")
    assert a.contains(b)
    assert not b.contains(a)
    assert a.contains(a)
    assert a.contains(Resources())
    assert not a.contains(R("gpus:1"))
    # Subtracting more than there is leaves nothing (never negative), and a missing name is ignored.
    assert a - R("cpus:5") == R("mem:1024")
    assert a - R("gpus:1") == a
    assert (a - a) == Resources()
    assert not (a - a)


def test_scalar_rounding_is_order_independent():
    tenth, fifth = R("cpus:0.1"), R("cpus:0.2")
    assert (tenth + fifth).scalar("cpus") == 0.3  # not 0.30000000000000004
    assert tenth + fifth == R("cpus:0.3")
    assert R("cpus:0.3") - fifth == tenth
    assert (R("cpus:0.3") - fifth - tenth) == Resources()
    total = Resources()
    for _ in range(10):
        total = total + tenth
    assert total == R("cpus:1")
    assert R("cpus:0.3").contains(tenth + fifth)
    assert (tenth + fifth).contains(R("cpus:0.3"))
    # Summation in any order gives the same bag and the same encoding.
    parts = [R("cpus:0.1"), R("cpus:0.2"), R("cpus:0.7"), R("cpus:0.001")]
    fwd = Resources()
    for p in parts:
        fwd = fwd + p
    bwd = Resources()
    for p in reversed(parts):
        bwd = bwd + p
    assert fwd == bwd
    assert msgspec.json.encode(fwd.to_list()) == msgspec.json.encode(bwd.to_list())
    assert fwd.scalar("cpus") == 1.001


def test_scalars_constructor_rounds():
    assert Resources.scalars(cpus=0.1 + 0.2, mem=32) == R("cpus:0.3;mem:32")
    assert Resources.scalars(role="web", cpus=1) == R("cpus(web):1")


def test_scalars_of_different_roles_are_separate():
    a = R("cpus:2;cpus(web):1")
    assert a - R("cpus:2") == R("cpus(web):1")
    assert not R("cpus:5").contains(R("cpus(web):1"))
    assert not R("cpus(web):5").contains(R("cpus:1"))
    assert a.scalar("cpus") == 3.0


# ---- ranges ------------------------------------------------------------------------------------


def test_ranges_merge_on_add():
    a = R("ports:[1-5]")
    assert (a + R("ports:[6-10]")).ranges("ports") == ((1, 10),)  # adjacent merges
    assert (a + R("ports:[3-8]")).ranges("ports") == ((1, 8),)  # overlap merges
    assert (a + R("ports:[8-10]")).ranges("ports") == ((1, 5), (8, 10))
    assert (R("ports:[20-30]") + R("ports:[1-2]")).ranges("ports") == ((1, 2), (20, 30))


def test_ranges_split_on_subtract():
    a = R("ports:[31000-32000]")
    left = a - R("ports:[31500-31500]")
    assert left.ranges("ports") == ((31000, 31499), (31501, 32000))
    assert ranges_count(left.ranges("ports")) == 1000
    assert (a - R("ports:[30000-31010]")).ranges("ports") == ((31011, 32000),)
    assert (a - R("ports:[31990-33000]")).ranges("ports") == ((31000, 31989),)
    assert (a - R("ports:[31000-31000,31002-31998,32000-32000]")).ranges("ports") == ((31001, 31001), (31999, 31999))
    assert (a - a) == Resources()
    assert a - R("ports:[1-10]") == a


def test_ranges_contains():
    a = R("ports:[1-10,20-30]")
    assert a.contains(R("ports:[1-10]"))
    assert a.contains(R("ports:[2-3,25-30]"))
    assert not a.contains(R("ports:[10-20]"))
    assert not a.contains(R("ports:[31-31]"))
    assert not a.contains(R("ports(web):[1-2]"))
    assert R("ports:[1-3,4-6]").contains(R("ports:[2-5]"))


def test_range_type_mismatch_is_not_contained():
    assert not R("ports:[1-10]").contains(Resources([Resource("ports", "SCALAR", scalar=1.0)]))


# ---- sets --------------------------------------------------------------------------------------


def test_sets():
    a = R("zones:{a,b}")
    assert a + R("zones:{b,c}") == R("zones:{a,b,c}")
    assert a - R("zones:{a}") == R("zones:{b}")
    assert a - R("zones:{a,b,z}") == Resources()
    assert a.contains(R("zones:{b}"))
    assert not a.contains(R("zones:{c}"))
    assert R("zones:{c,b,a}") == R("zones:{a,b,c}")


# ---- canonical form ----------------------------------------------------------------------------


def test_canonical_equality_independent_of_order():
    a = R("cpus:4;mem:4096;disk:8192;ports:[31000-32000];cpus(web):2")
    b = R("cpus(web):2;ports:[31000-32000];disk:8192;mem:4096;cpus:4")
    c = R("mem:4000;cpus:1;cpus(web):2;ports:[31500-32000];cpus:3;mem:96;disk:8192;ports:[31000-31499]")
    assert a == b == c
    assert hash(a) == hash(b) == hash(c)
    assert a.to_list() == b.to_list() == c.to_list()
    assert msgspec.msgpack.encode(a.to_list()) == msgspec.msgpack.encode(c.to_list())
    assert a.format() == c.format()
    assert R("cpus:1") != R("cpus(web):1")
    assert R("cpus:1") != "cpus:1"


def test_direct_construction_is_canonical():
    """A bag built from raw Resource records (e.g. decoded from the wire) is normalised too."""
    raw = Resources([
        Resource("ports", "RANGES", ranges=((5, 6), (1, 4))),
        Resource("zones", "SET", items=("b", "a", "a")),
        Resource("cpus", "SCALAR", scalar=0.1 + 0.2),
    ])
    assert raw == R("ports:[1-6];zones:{a,b};cpus:0.3")
    assert msgspec.json.encode(raw.to_list()) == msgspec.json.encode(R("ports:[1-6];zones:{a,b};cpus:0.3").to_list())


def test_empty_entries_dropped():
    assert Resources([Resource("cpus", "SCALAR", scalar=0.0), Resource("ports", "RANGES")]) == Resources()
    assert R("cpus:0;mem:1") == R("mem:1")


# ---- roles -------------------------------------------------------------------------------------


def test_allocatable_to_hierarchical_roles():
    res = R("cpus:1;cpus(a):2;cpus(a/b):4;cpus(a/bc):8;cpus(b):16;mem(a/b/c):32")
    assert res.allocatable_to("*") == R("cpus:1")
    assert res.allocatable_to("a") == R("cpus:1;cpus(a):2")  # a/b is not allocatable to a
    assert res.allocatable_to("a/b") == R("cpus:1;cpus(a):2;cpus(a/b):4")  # ancestor a is
    assert res.allocatable_to("a/b/c") == R("cpus:1;cpus(a):2;cpus(a/b):4;mem(a/b/c):32")
    assert res.allocatable_to("a/bc") == R("cpus:1;cpus(a):2;cpus(a/bc):8")  # not a/b: prefix is per component
    assert res.allocatable_to("ab") == R("cpus:1")
    assert res.allocatable_to("b") == R("cpus:1;cpus(b):16")
    assert res.allocatable_to("c") == R("cpus:1")


def test_unreserved_role_constant():
    assert UNRESERVED == "*"
    assert all(r.role == "*" for r in R("cpus:1;mem(x):2").unreserved())


def test_integer_scalar_encodes_like_float():
    """State hashes are over msgpack bytes: an int 4 and a float 4.0 must not encode differently."""
    a = Resources([Resource("cpus", "SCALAR", scalar=4)])
    assert msgspec.msgpack.encode(a.to_list()) == msgspec.msgpack.encode(R("cpus:4").to_list())


def test_records_of_one_name_must_keep_the_bounds_when_added_up():
    """The fold adds records of one name and role: two records of 1e12 cpus are an agent of 2e12, beyond what
    any event may carry (its first offer would then be refused at the commit gate, stalling allocation)."""
    from eventstore.resources import resources_problem

    big = Resource("cpus", "SCALAR", scalar=1e12)
    assert "add up to" in resources_problem([big, big])
    assert resources_problem([big, Resource("cpus", "SCALAR", scalar=1e12, role="db")]) is None
    items = tuple(f"i{n}" for n in range(1000))
    assert "add up to" in resources_problem([Resource("s", "SET", items=items),
                                             Resource("s", "SET", items=tuple(x + "x" for x in items))])


# ---- persistent volumes ---------------------------------------------------------------------------

from eventstore.resources import DiskVolume, Persistence, container_path_problem, key_of, resources_problem  # noqa: E402


def vol(pid: str, size: float = 100.0, role: str = "db", path: str = "data", mode: str = "RW",
        shared: bool = False, copies: int = 1, principal: str | None = None) -> Resource:
    return Resource("disk", "SCALAR", scalar=size, role=role, persistence=Persistence(pid, principal),
                    volume=DiskVolume(path, mode), shared=shared, copies=copies)  # type: ignore[arg-type]


def test_plain_records_keep_their_key_and_bytes():
    """Logs written before volumes existed must fold to the same bytes: no new field appears on a plain record."""
    r = Resource("disk", "SCALAR", scalar=10.0, role="db")
    assert key_of(r) == ("disk", "db")
    assert msgspec.json.encode(r) == b'{"name":"disk","type":"SCALAR","scalar":10.0,"role":"db"}'
    assert msgspec.json.encode(Resources([r, vol("pv1")]).to_list()[0]) == msgspec.json.encode(r)


def test_volume_never_merges_with_disk_and_sorts_after_it():
    bag = Resources([vol("pv1"), Resource("disk", "SCALAR", scalar=50.0, role="db"), vol("pv0", 10.0)])
    keys = [key_of(r) for r in bag]
    assert keys == [("disk", "db"), ("disk", "db", "pv0", False), ("disk", "db", "pv1", False)]
    assert bag.quantities() == {"disk": 160.0}
    assert bag.volumes() == Resources([vol("pv0", 10.0), vol("pv1")])
    assert bag.non_volumes() == Resources.scalars("db", disk=50)
    assert bag.stripped() == Resources.scalars("db", disk=160)
    assert bag.as_unreserved() == Resources.scalars(disk=160)
    assert bag.persistence_ids() == [("db", "pv0"), ("db", "pv1")]


def test_volume_is_atomic_in_subtraction_and_containment():
    bag = Resources([vol("pv1", 100.0)])
    assert bag.contains(Resources([vol("pv1", 100.0)]))
    assert not bag.contains(Resources([vol("pv1", 50.0)]))  # no partial volumes
    assert not bag.contains(Resources([vol("pv2", 100.0)]))
    assert not bag.contains(Resources.scalars("db", disk=1))  # a volume is not free disk
    assert bag - Resources([vol("pv1", 50.0)]) == bag
    assert not (bag - Resources([vol("pv1", 100.0)]))
    # a task may mount the volume elsewhere, read-only: Mesos compares persistence ids, not the volume
    ro = Resources([vol("pv1", 100.0, path="ro", mode="RO")])
    assert bag.contains(ro)
    assert not (bag - ro)
    # a second non-shared record with the same id is dropped, never added up
    assert Resources([vol("pv1"), vol("pv1")]) == bag


def test_shared_volume_counts_holders_and_quantity_once():
    one = Resources([vol("s1", shared=True)])
    two = one + one
    assert [r.copies for r in two] == [2]
    assert two.quantities() == {"disk": 100.0}
    assert two.contains(one) and not one.contains(two)
    assert two - one == one
    assert not (one - one)
    assert two.shared() == two and not two.non_shared()
    assert key_of(next(iter(one))) != key_of(vol("s1"))  # shared and non-shared ids never match each other


def test_volume_format():
    text = Resources([vol("pv1", path="data"), vol("s1", 5, path="logs", mode="RO", shared=True)]).format()
    assert text == "disk(db)[pv1:data]:100;disk(db)[s1:logs:RO]<SHARED x1>:5"


@pytest.mark.parametrize("record, message", [
    (vol("pv1", role="*"), "cannot be created from unreserved resources"),
    (msgspec.structs.replace(vol("pv1"), volume=None), "Expecting 'volume' to be set"),
    (Resource("disk", "SCALAR", scalar=1.0, role="db", volume=DiskVolume("x")), "Non-persistent volume"),
    (Resource("disk", "SCALAR", scalar=1.0, role="db", shared=True), "Only persistent volumes can be shared"),
    (msgspec.structs.replace(vol("pv1"), name="mem"), "Only 'disk'"),
    (vol("pv1", path="a/b"), "one relative path component"),
    (vol("pv1", path="stdout"), "reserved for the task's output"),
    (vol("pv1", copies=2), "copies is for shared"),
    (vol("pv1", size=0.0), "positive size"),
])
def test_volume_value_rules(record, message):
    problem = resources_problem([record])
    assert problem is not None and message in problem


def test_volume_value_rules_accept_a_good_volume_and_refuse_bad_ids_when_decoded():
    assert resources_problem([vol("pv1"), vol("s1", shared=True, copies=3)]) is None
    assert container_path_problem("..") is not None and container_path_problem("") is not None
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name":"disk","type":"SCALAR","scalar":1,"role":"db",'
                            b'"persistence":{"id":"a/b"},"volume":{"container_path":"x"}}', type=Resource)


def test_parse_refuses_volumes_at_the_command_line():
    with pytest.raises(ValueError):
        Resources.parse("disk(db)[pv1:data]:100")


def test_has_shared_is_exact_whatever_built_the_bag():
    plain = Resources.parse("cpus:1;disk(db):10")
    shared = Resources([vol("s1", shared=True)])
    assert not plain.has_shared() and not plain.has_volumes() and shared.has_shared()
    both = plain + shared
    assert both.has_shared() and not (both - shared).has_shared() and (both - plain).has_shared()
    assert not both.non_shared().has_shared() and both.shared() == shared
    assert not Resources([vol("pv1")]).has_shared() and Resources([vol("pv1")]).has_volumes()
    assert both.get(key_of(vol("s1", shared=True))) == next(iter(shared)) and both.get(("gpus", "*")) is None
