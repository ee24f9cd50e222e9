"""Text views of saga files: the `validate` summary, the `plan`, and the `graph` drawings.

Plain text, no terminal library: these commands must start fast and their output is meant to
be read, diffed and grepped as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sagactl.definition import graph
from sagactl.model import Phase, Saga, Step, StepKind

__all__ = ["draw_dot", "draw_mermaid", "format_plan", "format_validation"]


_NEEDS_COLUMN = 40


def _needs_written(saga: Saga, step: Step) -> Sequence[str]:
    """What a step needs, as the file says it: its `needs`, or, without one, every step
    above it (the model keeps only those of them that imply the rest)."""
    if step.explicit_needs:
        return step.needs
    return [above.id for above in saga.steps[: step.index]]


def _every_step_above(saga: Saga, step: Step) -> bool:
    return not step.explicit_needs or (
        len(step.needs) == step.index
        and set(step.needs) == {above.id for above in saga.steps[: step.index]}
    )


def format_validation(saga: Saga) -> str:
    """What `validate` says of a good file: its steps with kind and needs, its env and secrets."""
    plural = "s" if len(saga.steps) != 1 else ""
    lines = [f"{saga.path}: ok: saga {saga.name}, {len(saga.steps)} step{plural}"]
    width = max(len(s.id) for s in saga.steps)
    needs = {}
    for position, s in enumerate(saga.steps):
        if not s.needs:
            needs[s.id] = "needs nothing"
        elif _every_step_above(saga, s):
            # A step without `needs` waits on every step above it: a list that long says less.
            needs[s.id] = (
                f"needs the {position} steps above it"
                if position > 2
                else "needs " + ", ".join(_needs_written(saga, s))
            )
        else:
            needs[s.id] = "needs " + ", ".join(s.needs)
    # Aligned, but a long list of needs does not push every line out of the terminal.
    needs_width = min(_NEEDS_COLUMN, max(len(text) for text in needs.values()))
    for step in saga.ordered_steps():
        extra = [
            p.value for p in (Phase.COMPENSATE, Phase.CONFIRM, Phase.VERIFY) if step.request(p)
        ]
        if step.repeated:
            extra.insert(0, f"foreach {step.item_name}")
        extra_text = f"  [{', '.join(extra)}]" if extra else ""
        # Columns line up: the bracketed requests of every step start at one place.
        line = f"  {step.id.ljust(width)}  {step.kind.value.ljust(13)}  "
        lines.append((line + needs[step.id].ljust(needs_width) + extra_text).rstrip())
    lines.append(f"  env: {', '.join(saga.env) or '-'}")
    lines.append(f"  secrets: {', '.join(saga.secrets) or '-'}")
    return "\n".join(lines)


def format_plan(
    saga: Saga,
    inputs: Mapping[str, Any],
    calls: Sequence[Sequence[tuple[Phase | str, Sequence[str]]]],
) -> str:
    """The `plan`: for each step in dependency order, every call it may make, as its
    executor describes it (a first line, then details); a foreach step's under a line
    naming each item (a string instead of a phase)."""
    shown = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in inputs.items())
    lines = [
        f"plan of saga {saga.name} ({saga.path}), {len(saga.steps)} "
        f"step{'s' if len(saga.steps) != 1 else ''}",
        f"inputs: {shown or '-'}",
    ]
    for position, (step, step_calls) in enumerate(
        zip(saga.ordered_steps(), calls, strict=True), start=1
    ):
        needs = ", ".join(_needs_written(saga, step)) or "nothing"
        each = f"; foreach {_plain(step.foreach)} as {step.item_name}" if step.repeated else ""
        lines += ["", f"{position}. {step.id} ({step.kind.value}; needs {needs}{each})"]
        for phase, described in step_calls:
            if not isinstance(phase, Phase):  # a line heading an item's calls
                lines.append(f"   {phase}")
                continue
            first, *details = described
            lines.append(f"   {phase.value.ljust(10)}  {first}")
            lines.extend(f"{' ' * 15}{detail}" for detail in details)
            if phase is Phase.ACTION:
                for i, (name, value) in enumerate(step.outputs.items()):
                    label = "outputs" if i == 0 else ""
                    lines.append(f"   {label.ljust(10)}  {name} = {value}")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass
class _Drawing:
    """What the graph commands draw, whatever the notation."""

    nodes: list[tuple[str, str, bool]] = field(default_factory=list)
    """(id, label, rounded) of the action steps."""
    groups: list[tuple[str, str, list[tuple[str, str, bool]]]] = field(default_factory=list)
    """(id, title, nodes) of the confirm and compensation sections."""
    edges: list[tuple[str, str, bool]] = field(default_factory=list)
    """(from, to, dashed)."""


def _order_among(saga: Saga, subset: list[str]) -> list[tuple[str, str]]:
    """(earlier, later) pairs that order the steps of `subset` as the graph does, without
    implied edges: compensations run along them backwards, confirms forwards."""
    needs = {s: [a for a in subset if a in saga.ancestors[s]] for s in subset}
    reduced = graph.reduce(needs, saga.ancestors)
    return [(earlier, later) for later in subset for earlier in reduced[later]]


def _drawing(saga: Saga) -> _Drawing:
    drawing = _Drawing()
    drawing.nodes = [
        (s.id, f"{s.id} ({s.kind.value}{', for each item' if s.repeated else ''})", False)
        for s in saga.steps
    ]
    drawing.edges = [
        (dep, s.id, False) for s in saga.steps for dep in saga.waits_on.get(s.id, s.needs)
    ]
    confirming = [s.id for s in saga.steps if s.confirm is not None]
    if confirming:
        drawing.groups.append(
            (
                "confirms",
                "confirms, once every action succeeded",
                [(f"confirm_{s}", f"confirm {s}", True) for s in confirming],
            )
        )
        order = _order_among(saga, confirming)
        drawing.edges += [(f"confirm_{a}", f"confirm_{b}", False) for a, b in order]
        first = [s for s in confirming if all(b != s for _, b in order)]
        sinks = [s.id for s in saga.steps if not saga.dependents(s.id)]
        drawing.edges += [(sink, f"confirm_{s}", False) for sink in sinks for s in first]
    undoable = [s.id for s in saga.steps if s.kind is StepKind.COMPENSATABLE]
    if undoable:
        drawing.groups.append(
            (
                "compensation",
                "compensation, if the saga fails",
                [(f"undo_{s}", f"undo {s}", False) for s in undoable],
            )
        )
        drawing.edges += [
            (f"undo_{later}", f"undo_{earlier}", True)
            for earlier, later in _order_among(saga, undoable)
        ]
    return drawing


def draw_mermaid(saga: Saga) -> str:
    """A Mermaid flowchart: actions joined by `needs`, then confirms in the order they run,
    and compensations in the order they undo."""
    drawing = _drawing(saga)

    def node(node_id: str, label: str, rounded: bool) -> str:
        return f'{node_id}(["{label}"])' if rounded else f'{node_id}["{label}"]'

    lines = ["flowchart TD"]
    lines += [f"  {node(*n)}" for n in drawing.nodes]
    for group_id, title, nodes in drawing.groups:
        lines.append(f'  subgraph {group_id}["{title}"]')
        lines += [f"    {node(*n)}" for n in nodes]
        lines.append("  end")
    lines += [f"  {a} {'-.->' if dashed else '-->'} {b}" for a, b, dashed in drawing.edges]
    return "\n".join(lines)


def draw_dot(saga: Saga) -> str:
    """The same drawing for Graphviz."""
    drawing = _drawing(saga)

    def node(node_id: str, label: str, rounded: bool) -> str:
        return f'"{node_id}" [label="{label}"{", shape=ellipse" if rounded else ""}];'

    lines = [f'digraph "{saga.name}" {{', "  rankdir=TB;", "  node [shape=box];"]
    lines += [f"  {node(*n)}" for n in drawing.nodes]
    for group_id, title, nodes in drawing.groups:
        lines += [f"  subgraph cluster_{group_id} {{", f'    label="{title}"; style=dashed;']
        lines += [f"    {node(*n)}" for n in nodes]
        lines.append("  }")
    lines += [
        f'  "{a}" -> "{b}"{" [style=dashed]" if dashed else ""};' for a, b, dashed in drawing.edges
    ]
    lines.append("}")
    return "\n".join(lines)
