"""The step graph: dependency order, cycles, ancestors, and drawings in Mermaid and Graphviz.

Pure functions over `{step: [steps it needs]}`; nothing here knows the rest of the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["ancestors", "find_cycle", "reduce", "topological_order"]

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
                return [*path[path.index(dep):], dep]
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
    ready = sorted((n for n, count in waiting.items() if count == 0), key=position.__getitem__)
    result: list[str] = []
    while ready:
        node = ready.pop(0)
        result.append(node)
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
        ready.sort(key=position.__getitem__)
    return result


def _bits(needs: Edges, topo: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Each node's bit, and the bits of all its ancestors. Sets of nodes as integers keep
    this linear-ish where a step without `needs` depends on every step above it."""
    bit = {node: 1 << i for i, node in enumerate(topo)}
    above: dict[str, int] = {}
    for node in topo:
        mask = 0
        for dep in needs.get(node, ()):
            mask |= bit[dep] | above[dep]
        above[node] = mask
    return bit, above


def ancestors(needs: Edges, topo: Sequence[str]) -> dict[str, frozenset[str]]:
    """For each node, every node it depends on, directly or not."""
    bit, above = _bits(needs, topo)
    return {node: frozenset(n for n in topo if above[node] & bit[n]) for node in topo}


def reduce(needs: Edges, above: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """The transitive reduction: only the edges no longer path already implies.

    A step without `needs` depends on every step above it; drawing, or waiting on, all those
    edges would hide the shape of the saga and cost time.
    """
    order = list(needs)
    bit = {node: 1 << i for i, node in enumerate(order)}
    masks = {node: sum(bit[a] for a in above.get(node, ()) if a in bit) for node in order}
    result: dict[str, list[str]] = {}
    for node, deps in needs.items():
        implied = 0
        for dep in deps:
            implied |= masks[dep]
        result[node] = [d for d in deps if not implied & bit[d]]
    return result
