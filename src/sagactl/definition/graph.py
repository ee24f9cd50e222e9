"""The step graph: dependency order, cycles, ancestors, and drawings in Mermaid and Graphviz.

Pure functions over `{step: [steps it needs]}`; nothing here knows the rest of the model.

A step without `needs` depends on every step above it (`implied`): for a long saga such steps
are not given as lists of every step above them, which would make the graph's edges, and every
pass over them, grow with the square of its steps. Sets of steps (ancestors, descendants) are
bit masks over the topological order (`Members`), turned into names only when read as sets.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator, Mapping, Sequence, Set
from itertools import compress
from typing import Any, NamedTuple

__all__ = [
    "Closure",
    "Edges",
    "Members",
    "Related",
    "ancestors",
    "closure",
    "find_cycle",
    "nearest",
    "reduce",
    "topological_order",
]

Edges = Mapping[str, Sequence[str]]


def find_cycle(
    needs: Edges, order: Sequence[str], implied: Collection[str] = ()
) -> list[str] | None:
    """A cycle as a path that returns to its start (`[a, b, a]`), or None. A node of
    `implied` needs every node above it in `order` (its entry in `needs` is not read)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    position = {node: i for i, node in enumerate(order)}
    finished = 0  # every node of `order` before this index is done: no cycle passes there

    def deps_of(node: str) -> Sequence[str]:
        nonlocal finished
        if node not in implied:
            return needs.get(node, ())
        while finished < len(order) and state.get(order[finished]) == 2:
            finished += 1
        return order[finished : position[node]]

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in deps_of(node):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep in position and dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in order:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(
    needs: Edges, order: Sequence[str], implied: Collection[str] = ()
) -> list[str]:
    """Every node after all it needs; among nodes free to go, the earlier in `order` first.
    A node of `implied` needs every node above it in `order`.

    The graph must be acyclic (see `find_cycle`).
    """
    position = {node: i for i, node in enumerate(order)}
    waiting = {node: 0 if node in implied else len(needs.get(node, ())) for node in order}
    users: dict[str, list[str]] = {node: [] for node in order}
    for node in order:
        if node not in implied:
            for dep in needs.get(node, ()):
                users[dep].append(node)
    ready = [position[node] for node, count in waiting.items() if not count and node not in implied]
    if order and order[0] in implied:
        ready.append(0)
    heapq.heapify(ready)
    done = [False] * len(order)
    prefix = 0  # every node of `order` before this index is done
    result: list[str] = []
    while ready:
        at = heapq.heappop(ready)
        node = order[at]
        result.append(node)
        done[at] = True
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, position[user])
        if at == prefix:
            while prefix < len(order) and done[prefix]:
                prefix += 1
            # An implied node is free to go once every node above it is done.
            if prefix < len(order) and order[prefix] in implied:
                heapq.heappush(ready, prefix)
    return result


class _Nodes:
    """A topological order and each node's position in it: the bits of `Members`' masks."""

    __slots__ = ("_position", "order")

    def __init__(self, order: Sequence[str]) -> None:
        self.order = tuple(order)
        self._position: dict[str, int] | None = None

    @property
    def position(self) -> dict[str, int]:
        if self._position is None:
            self._position = {node: i for i, node in enumerate(self.order)}
        return self._position


# bin() digits as bytes of 0 and 1, for itertools.compress.
_DIGITS = bytes.maketrans(b"01", b"\x00\x01")


class Members(Set[str]):
    """A set of nodes as a bit mask over a topological order: `in` tests one bit, and the
    names are made only when it is iterated. Equal to any set of the same names."""

    __slots__ = ("_mask", "_nodes")

    def __init__(self, mask: int, nodes: _Nodes) -> None:
        self._mask = mask
        self._nodes = nodes

    def __contains__(self, node: object) -> bool:
        at = self._nodes.position.get(node) if isinstance(node, str) else None
        return at is not None and bool(self._mask >> at & 1)

    def __iter__(self) -> Iterator[str]:
        return compress(self._nodes.order, bin(self._mask)[:1:-1].encode().translate(_DIGITS))

    def __len__(self) -> int:
        return self._mask.bit_count()

    def __repr__(self) -> str:
        return f"Members({sorted(self)!r})"

    __hash__ = Set._hash

    @classmethod
    def _from_iterable(cls, it: Any) -> frozenset[str]:  # type: ignore[override]
        # What the set operators (`|`, `&`, `-`) return: a plain frozenset.
        return frozenset(it)

    def including(self, node: str) -> Members:
        """These nodes and `node` (a node of the same graph)."""
        return Members(self._mask | 1 << self._nodes.position[node], self._nodes)


class Related(Mapping[str, Members]):
    """For each node, a set of others (its ancestors, or its descendants) as `Members`: a few
    bytes a node where sets of names would grow with the square of a long saga's steps."""

    __slots__ = ("_masks", "_nodes")

    def __init__(self, order: Sequence[str] | _Nodes, masks: Mapping[str, int]) -> None:
        self._nodes = order if isinstance(order, _Nodes) else _Nodes(order)
        self._masks = dict(masks)

    def __getitem__(self, node: str) -> Members:
        return Members(self._masks[node], self._nodes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Related({ {node: sorted(self[node]) for node in self}!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Related, (self._nodes.order, self._masks))


class Closure(NamedTuple):
    """What depends on what, all the way down, for an acyclic graph."""

    order: list[str]
    """The nodes in the topological order the closure was computed in."""
    ancestors: Related
    """For each node, every node it depends on, directly or not."""
    descendants: Related
    """For each node, every node that depends on it, directly or not."""
    reduced: dict[str, list[str]]
    """For each node, the needs that no other need of it implies (transitive reduction); for
    a node of `implied`, the nodes above it that no other node above it depends on."""


def closure(
    needs: Edges,
    topo: Sequence[str],
    order: Sequence[str] = (),
    implied: Collection[str] = (),
) -> Closure:
    """Ancestors, descendants and the transitive reduction together, on bit masks. A node of
    `implied` needs every node above it in `order` (the file order).

    Each explicit edge costs one lookup and a bit test; an implied node costs what is new
    above it since the previous one, so a saga of steps without `needs` is linear.
    """
    position = {node: i for i, node in enumerate(topo)}
    with_self: dict[str, int] = {}
    above: dict[str, int] = {}
    reduced: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {node: [] for node in topo}
    # The nodes of `order` before `filled`: all of their ancestors and themselves (`covered`),
    # the ancestors of any of them (`reach`), and those not known to be an ancestor of another
    # (`sinks`, filtered against `reach` when read).
    filled, covered, reach, sinks = 0, 0, 0, []
    file_index = {node: i for i, node in enumerate(order)} if implied else {}
    for node in topo:
        if node in implied:
            # Every node above comes before this one in `topo`: their masks are known.
            for before in order[filled : file_index[node]]:
                covered |= with_self[before]
                if not reach >> position[before] & 1:
                    sinks.append(before)
                reach |= above[before]
            filled = max(filled, file_index[node])
            sinks = [s for s in sinks if not reach >> position[s] & 1]
            mask = covered
            kept_in_order = list(sinks)
        else:
            deps = needs.get(node, ())
            mask, kept = 0, set()
            # Latest first: a need that an earlier-taken one already implies is left out.
            for at in sorted({position[dep] for dep in deps}, reverse=True):
                if mask >> at & 1:
                    continue
                dep = topo[at]
                mask |= with_self[dep]
                kept.add(dep)
            kept_in_order = [dep for dep in deps if dep in kept]
        above[node] = mask
        with_self[node] = mask | 1 << position[node]
        reduced[node] = kept_in_order
        for dep in kept_in_order:
            users[dep].append(node)
    below: dict[str, int] = {}
    for node in reversed(topo):
        mask = 0
        for user in users[node]:
            mask |= below[user] | 1 << position[user]
        below[node] = mask
    nodes = _Nodes(topo)
    return Closure(list(topo), Related(nodes, above), Related(nodes, below), reduced)


def nearest(start: str, edges: Edges, within: Collection[str]) -> set[str]:
    """The nodes of `within` reachable from `start` along `edges` with no other node of
    `within` on the way. Waiting on them waits, through them, on every node of `within`
    reachable from `start`: along reduced edges that is a few nodes each, where all of them
    would grow with the square of a long saga's steps."""
    found: set[str] = set()
    seen = {start}
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in within:
            found.add(node)
        else:
            todo.extend(edges.get(node, ()))
    return found


def ancestors(needs: Edges, topo: Sequence[str]) -> Related:
    """For each node, every node it depends on, directly or not."""
    return closure(needs, topo).ancestors


def reduce(needs: Edges, above: Mapping[str, Set[str]]) -> dict[str, list[str]]:
    """The transitive reduction: only the edges no longer path already implies.

    A step without `needs` depends on every step above it; drawing, or waiting on, all those
    edges would hide the shape of the saga and cost time.
    """
    # A node has more ancestors than any of its ancestors: in that order, every node comes
    # after all it needs.
    return closure(needs, sorted(needs, key=lambda node: len(above.get(node, ())))).reduced
