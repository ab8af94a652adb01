"""Sorters: the order in which roles (or a role's frameworks) are offered resources.

`DRFSorter` follows Mesos's DRF sorter (allocator-semantics.md 2.1): clients are
paths in a tree (role `a/b` lives under `a`); siblings are ordered by dominant
share ÷ weight, then by allocation count, then by path; `sort()` is a pre-order
walk that yields active leaves. A client `a` that also has sub-roles is
represented by a virtual leaf `a/.`.

Bookkeeping is incremental so that an allocation cycle over tens of thousands of
agents stays cheap: every internal node keeps its children in a sorted list
keyed by the cached (share, count, path); an allocation re-keys only the nodes
on one path. A change of the cluster totals invalidates every share: the keys
are then recomputed lazily, at the next `sort()`.

While `deferred` is set, re-keying waits for `flush()`: Mesos computes the order
once per agent, and allocations made on that agent must not reorder it.

`PrioritySorter` puts clients with a higher priority (role weight for roles, a
framework's priority label for frameworks) strictly first and uses DRF within
one priority level.
"""

from __future__ import annotations

from typing import Any, Iterator

from sortedcontainers import SortedKeyList

from master.allocator.quantities import q_iadd

VIRTUAL = "."

# A node's place among its siblings: (share, count, path), or (-priority, share, count, path).
SortKey = tuple[float | str, ...]


class _Node:
    __slots__ = ("name", "path", "parent", "children", "ordered", "is_client", "client_active", "alloc", "count",
                 "active_leaves", "key")

    def __init__(self, name: str, path: str, parent: "_Node | None"):
        self.name, self.path, self.parent = name, path, parent
        self.children: dict[str, _Node] = {}
        self.ordered = SortedKeyList(key=_node_key)  # children with at least one active leaf
        self.is_client = False
        self.client_active = False
        self.alloc: dict[str, float] = {}
        self.count = 0
        self.active_leaves = 0
        self.key: SortKey = (0.0, 0, path)


def _node_key(n: _Node) -> SortKey:
    return n.key


class DRFSorter:
    def __init__(self, weights: dict[str, float] | None = None, excluded: tuple[str, ...] = ()):
        self.root = _Node("", "", None)
        self.clients: dict[str, _Node] = {}  # client path -> its leaf (the node itself, or its virtual child)
        self.totals: dict[str, float] = {}
        self.weights: dict[str, float] = dict(weights or {})
        self.excluded = frozenset(excluded)
        self.deferred = False
        self._pending: dict[_Node, None] = {}
        self._stale = False  # totals or weights changed: every key must be recomputed
        self._saved: dict[_Node, tuple[dict[str, float], int]] | None = None  # see begin_tentative

    # ---- shares and keys ---------------------------------------------------------------------------
    def share(self, alloc: dict[str, float]) -> float:
        s = 0.0
        for name, total in self.totals.items():
            if total > 0 and name not in self.excluded:
                a = alloc.get(name)
                if a:
                    v = a / total
                    if v > s:
                        s = v
        return s

    def weight_of(self, path: str) -> float:
        return self.weights.get(path, 1.0)

    def _key(self, n: _Node) -> SortKey:
        return (self.share(n.alloc) / self.weight_of(n.path), n.count, n.path)

    def client_share(self, client: str) -> float:
        n = self.clients[client]
        return self.share(n.alloc) / self.weight_of(n.path)

    def _rekey(self, n: _Node) -> None:
        # Always lazy: the fold changes allocations far more often than anyone sorts (replay never
        # sorts at all), so keys are brought up to date once, by the next sort() or flush().
        self._pending[n] = None

    def _rekey_now(self, n: _Node) -> None:
        parent = n.parent
        if parent is not None and n.active_leaves > 0:
            parent.ordered.remove(n)
            n.key = self._key(n)
            parent.ordered.add(n)
        else:
            n.key = self._key(n)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for n in pending:
            if n.parent is not None or n is self.root:
                self._rekey_now(n)

    def _refresh_all(self) -> None:
        def walk(n: _Node) -> None:
            for c in n.children.values():
                walk(c)
                c.key = self._key(c)
            n.ordered = SortedKeyList((c for c in n.children.values() if c.active_leaves > 0), key=_node_key)
        walk(self.root)
        self._pending.clear()
        self._stale = False

    # ---- cluster totals and weights ----------------------------------------------------------------
    def set_totals(self, totals: dict[str, float]) -> None:
        self.totals = dict(sorted(totals.items()))
        self._stale = True

    def set_weights(self, weights: dict[str, float]) -> None:
        self.weights = dict(weights)
        self._stale = True

    # ---- clients -----------------------------------------------------------------------------------
    def __contains__(self, client: str) -> bool:
        return client in self.clients

    def add(self, client: str, active: bool = True) -> None:
        if client in self.clients:
            return
        parts = client.split("/")
        node = self.root
        for i, part in enumerate(parts):
            child = node.children.get(part)
            if child is None:
                child = _Node(part, "/".join(parts[: i + 1]), node)
                child.key = self._key(child)
                node.children[part] = child
            elif child.is_client and i < len(parts) - 1 and not child.children:
                self._push_down(child)  # `a` gets a sub-role: it competes as the virtual leaf `a/.`
            node = child
        if node.children:
            leaf = _Node(VIRTUAL, node.path + "/" + VIRTUAL, node)
            leaf.key = self._key(leaf)
            node.children[VIRTUAL] = leaf
            node = leaf
        node.is_client = True
        self.clients[client] = node
        if active:
            self.activate(client)

    def _push_down(self, node: _Node) -> None:
        """Leaf client `a` becomes internal: its allocation, count and activity move to `a/.`."""
        leaf = _Node(VIRTUAL, node.path + "/" + VIRTUAL, node)
        leaf.is_client, leaf.client_active = True, node.client_active
        leaf.alloc, leaf.count = dict(node.alloc), node.count
        leaf.active_leaves = node.active_leaves
        leaf.key = self._key(leaf)
        node.is_client, node.client_active = False, False
        node.children[VIRTUAL] = leaf
        if leaf.active_leaves:
            node.ordered.add(leaf)
        self.clients[node.path] = leaf

    def remove(self, client: str) -> None:
        leaf = self.clients.pop(client, None)
        if leaf is None:
            return
        self.deactivate_node(leaf)
        # Its allocation leaves the tree with it; its count stays with its ancestors (as in Mesos).
        self._propagate(leaf, dict(leaf.alloc), -1.0, 0)
        leaf.is_client = False
        node = leaf
        while node is not self.root and not node.children and not node.is_client:
            parent = node.parent
            assert parent is not None  # only the root has no parent, and the loop stops there
            del parent.children[node.name]
            self._pending.pop(node, None)
            node = parent
        # `a` left with only its virtual leaf `a/.` is a plain leaf again.
        if node is not self.root and set(node.children) == {VIRTUAL}:
            v = node.children.pop(VIRTUAL)
            if v in node.ordered:
                node.ordered.remove(v)
            self._pending.pop(v, None)
            node.is_client, node.client_active = True, v.client_active
            self.clients[node.path] = node

    def activate(self, client: str) -> None:
        leaf = self.clients[client]
        if not leaf.client_active:
            leaf.client_active = True
            self._bump_active(leaf, +1)

    def deactivate(self, client: str) -> None:
        self.deactivate_node(self.clients[client])

    def deactivate_node(self, leaf: _Node) -> None:
        if leaf.client_active:
            leaf.client_active = False
            self._bump_active(leaf, -1)

    def is_active(self, client: str) -> bool:
        return self.clients[client].client_active

    def _bump_active(self, leaf: _Node, delta: int) -> None:
        if self._stale:
            self._refresh_all()
        node = leaf
        while (parent := node.parent) is not None:  # up to, without, the root: the one node without a parent
            before = node.active_leaves
            node.active_leaves += delta
            if before == 0 and node.active_leaves > 0:
                node.key = self._key(node)
                parent.ordered.add(node)
            elif before > 0 and node.active_leaves == 0:
                parent.ordered.remove(node)
            node = parent
        self.root.active_leaves += delta

    # ---- allocations -------------------------------------------------------------------------------
    def allocated(self, client: str, q: dict[str, float], count: bool = True) -> None:
        """Track an allocation to `client` (quantities by name); counts one more allocation (unless not `count`:
        more of what it holds, as Mesos's `update` of an allocation)."""
        self._propagate(self.clients[client], q, 1.0, 1 if count else 0)

    def uncount(self, client: str) -> None:
        """Take back one allocation count (undoing a tentative allocation)."""
        node = self.clients[client]
        while (parent := node.parent) is not None:  # up to, without, the root: the one node without a parent
            node.count -= 1
            self._rekey(node)
            node = parent

    def unallocated(self, client: str, q: dict[str, float]) -> None:
        self._propagate(self.clients[client], q, -1.0, 0)

    def _propagate(self, leaf: _Node, q: dict[str, float], sign: float, dcount: int) -> None:
        if self._stale:
            self._refresh_all()
        node = leaf
        while (parent := node.parent) is not None:  # up to, without, the root: the one node without a parent
            q_iadd(node.alloc, q, sign)
            node.count += dcount
            self._rekey(node)
            node = parent

    # ---- tentative allocations (one allocation run) -------------------------------------------------
    def begin_tentative(self) -> None:
        """From here, `tentatively_allocated` remembers each node's allocation and count as they were before
        its first change, and `rollback` puts them back: an allocation run's offers, undone in one step."""
        self._saved = {}

    def tentatively_allocated(self, client: str, q: dict[str, float]) -> None:
        """`allocated`, to be rolled back (between `begin_tentative` and `rollback`)."""
        if self._stale:
            self._refresh_all()
        saved = self._saved
        assert saved is not None, "begin_tentative first"
        pending = self._pending
        node = self.clients[client]
        while (parent := node.parent) is not None:  # up to, without, the root: the one node without a parent
            if node not in saved:
                saved[node] = (dict(node.alloc), node.count)
            q_iadd(node.alloc, q, 1.0)
            node.count += 1
            pending[node] = None
            node = parent

    def rollback(self) -> None:
        """Every node changed since `begin_tentative` back to exactly what it was (its key at the next flush)."""
        saved, self._saved = self._saved, None
        for node, (alloc, count) in (saved or {}).items():
            node.alloc, node.count = alloc, count
            self._pending[node] = None

    def allocation(self, client: str) -> dict[str, float]:
        return dict(self.clients[client].alloc)

    def count(self, client: str) -> int:
        return self.clients[client].count

    # ---- snapshots ---------------------------------------------------------------------------------
    def to_record(self) -> list[list[Any]]:
        """Every node, pre-order: [path, is_client, client_active, count, alloc]. Counts of internal
        nodes are not derivable (a removed client's count stays with its ancestors), so all are kept."""
        out: list[list[Any]] = []

        def walk(n: _Node) -> None:
            for name in sorted(n.children):
                c = n.children[name]
                out.append([c.path, c.is_client, c.client_active, c.count, sorted(c.alloc.items())])
                walk(c)
        walk(self.root)
        return out

    def load_record(self, nodes: list[list[Any]]) -> None:
        """Replace the tree with a recorded one (see to_record); totals and weights stay as set."""
        self.root = _Node("", "", None)
        self.clients = {}
        self._pending = {}
        by_path = {"": self.root}
        for path, is_client, active, count, alloc in nodes:
            parent_path, _, name = path.rpartition("/")
            parent = by_path[parent_path]
            n = _Node(name, path, parent)
            n.is_client, n.client_active, n.count, n.alloc = is_client, active, count, dict(alloc)
            parent.children[name] = n
            by_path[path] = n
            if is_client:
                self.clients[parent_path if name == VIRTUAL else path] = n

        def count_active(n: _Node) -> int:
            n.active_leaves = (1 if n.client_active else 0) + sum(count_active(c) for c in n.children.values())
            return n.active_leaves
        count_active(self.root)
        self._stale = True

    # ---- ordering ----------------------------------------------------------------------------------
    def sort(self) -> Iterator[str]:
        """Active clients in allocation order (lazily: callers usually stop early)."""
        if self._stale:
            self._refresh_all()
        if not self.deferred and self._pending:
            self.flush()
        return self._walk(self.root)

    def _walk(self, node: _Node) -> Iterator[str]:
        for child in node.ordered:
            if child.children:
                yield from self._walk(child)
            elif child.client_active:
                yield child.path if child.name != VIRTUAL else child.parent.path


class PrioritySorter(DRFSorter):
    """Strict priority: a client of a higher priority always comes first; DRF breaks ties."""

    def __init__(self, weights: dict[str, float] | None = None, excluded: tuple[str, ...] = (),
                 priorities: dict[str, float] | None = None, priority_from_weights: bool = True):
        self.priorities: dict[str, float] = dict(priorities or {})
        self.priority_from_weights = priority_from_weights
        super().__init__(weights, excluded)

    def _priority(self, path: str) -> float:
        if self.priority_from_weights:
            return self.weights.get(path, 1.0)
        return self.priorities.get(path, 0.0)

    def _key(self, n: _Node) -> SortKey:
        # Shares are not divided by weight here: the weight already decided the priority level.
        return (-self._priority(n.path), self.share(n.alloc), n.count, n.path)

    def set_priority(self, client: str, priority: float) -> None:
        self.priorities[client] = priority
        self._stale = True


def make_sorter(kind: str, weights: dict[str, float] | None = None, excluded: tuple[str, ...] = (),
                for_frameworks: bool = False) -> DRFSorter:
    if kind == "drf":
        return DRFSorter(weights, excluded)
    if kind == "priority":
        return PrioritySorter(weights, excluded, priority_from_weights=not for_frameworks)
    raise ValueError(f"unknown sorter {kind!r} (expected 'drf' or 'priority')")
