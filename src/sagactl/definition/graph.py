"""The step graph: dependency order, cycles, ancestors, and drawings in Mermaid and Graphviz.

Pure functions over `{step: [steps it needs]}`; nothing here knows the rest of the model.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from itertools import compress
from typing import NamedTuple

__all__ = ["Closure", "Edges", "ancestors", "closure", "find_cycle", "reduce", "topological_order"]

Edges = Mapping[str, Sequence[str]]


def find_cycle(needs: Edges, order: Sequence[str]) -> list[str] | None:
    """A cycle as a path that returns to its start (`[a, b, a]`), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in needs.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep in needs and dep not in state:
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


def topological_order(needs: Edges, order: Sequence[str]) -> list[str]:
    """Every node after all it needs; among nodes free to go, the earlier in `order` first.

    The graph must be acyclic (see `find_cycle`).
    """
    position = {node: i for i, node in enumerate(order)}
    waiting = {node: len(needs.get(node, ())) for node in order}
    users: dict[str, list[str]] = {node: [] for node in order}
    for node in order:
        for dep in needs.get(node, ()):
            users[dep].append(node)
    ready = [position[node] for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        node = order[heapq.heappop(ready)]
        result.append(node)
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, position[user])
    return result


class Closure(NamedTuple):
    """What depends on what, all the way down, for an acyclic graph."""

    order: list[str]
    """The nodes in the topological order the closure was computed in."""
    ancestors: dict[str, frozenset[str]]
    """For each node, every node it depends on, directly or not."""
    descendants: dict[str, frozenset[str]]
    """For each node, every node that depends on it, directly or not."""
    reduced: dict[str, list[str]]
    """For each node, the needs that no other need of it implies (transitive reduction)."""


# bin() digits as bytes of 0 and 1, for itertools.compress.
_DIGITS = bytes.maketrans(b"01", b"\x00\x01")


def _members(mask: int, topo: Sequence[str]) -> frozenset[str]:
    """The nodes whose bits (positions in `topo`) are set in `mask`."""
    return frozenset(compress(topo, bin(mask)[:1:-1].encode().translate(_DIGITS)))


def closure(needs: Edges, topo: Sequence[str]) -> Closure:
    """Ancestors, descendants and the transitive reduction together, on bit masks.

    A step without `needs` depends on every step above it, so a long saga has a number of
    edges that grows with the square of its steps: each edge costs here one string lookup,
    not a set operation on sets of that size.
    """
    position = {node: i for i, node in enumerate(topo)}
    with_self: dict[str, int] = {}
    above: dict[str, int] = {}
    reduced: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {node: [] for node in topo}
    for node in topo:
        deps = needs.get(node, ())
        mask, digits, kept = 0, "", set()
        # Latest first: a need that an earlier-taken one already implies is left out.
        for at in sorted({position[dep] for dep in deps}, reverse=True):
            if at < len(digits) and digits[at] == "1":
                continue
            dep = topo[at]
            mask |= with_self[dep]
            digits = bin(mask)[:1:-1]
            kept.add(dep)
        above[node] = mask
        with_self[node] = mask | 1 << position[node]
        reduced[node] = [dep for dep in deps if dep in kept]
        for dep in reduced[node]:
            users[dep].append(node)
    below: dict[str, int] = {}
    for node in reversed(topo):
        mask = 0
        for user in users[node]:
            mask |= below[user] | 1 << position[user]
        below[node] = mask
    return Closure(
        list(topo),
        {node: _members(above[node], topo) for node in topo},
        {node: _members(below[node], topo) for node in topo},
        reduced,
    )


def ancestors(needs: Edges, topo: Sequence[str]) -> dict[str, frozenset[str]]:
    """For each node, every node it depends on, directly or not."""
    return closure(needs, topo).ancestors


def reduce(needs: Edges, above: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """The transitive reduction: only the edges no longer path already implies.

    A step without `needs` depends on every step above it; drawing, or waiting on, all those
    edges would hide the shape of the saga and cost time.
    """
    # A node has more ancestors than any of its ancestors: in that order, every node comes
    # after all it needs.
    return closure(needs, sorted(needs, key=lambda node: len(above.get(node, ())))).reduced
