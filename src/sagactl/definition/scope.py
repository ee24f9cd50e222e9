"""The names a run's templates see (`inputs`, `env`, `secrets`, `run`, `vars`; for one
request, `step`, `steps` and `response`), and the idempotency key of each request (SPEC §3.3):
the same for every kind of step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagactl.definition.templating import Namespace, Renderer, Secrets, TemplateProblem
from sagactl.errors import Location, RenderError
from sagactl.model import Item, Phase, Saga, Step
from sagactl.records import item_key

__all__ = ["foreach_items", "idempotency_key", "run_context", "step_scope"]


def idempotency_key(run_id: str, step_id: str, phase: Phase) -> str:
    """The same for every attempt and every resume of one request (SPEC §3.3)."""
    return f"{run_id}.{step_id}.{phase.value}"


def step_scope(
    context: Mapping[str, Any],
    step_id: str,
    phase: Phase,
    steps: Mapping[str, Mapping[str, Any]],
    response: Mapping[str, Any] | None = None,
    item: Item | None = None,
) -> dict[str, Any]:
    """What the templates of one request of `step_id` see: the run's `context`, the step and
    its idempotency key, the outputs known so far (`steps`), once answered `response`, and
    for one item of a foreach step, `item` (its key then names the item: `lines[2]`)."""
    key = idempotency_key(
        context["run"]["id"], step_id if item is None else item_key(step_id, item.index), phase
    )
    scope = {**context, "step": {"id": step_id, "idempotency_key": key}, "steps": steps}
    if response is not None:
        scope["response"] = response
    if item is not None:
        scope["item"] = Namespace("item", item.namespace())
    return scope


_KINDS = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    dict: "a mapping",
    type(None): "null",
}


def foreach_items(
    saga: Saga,
    step: Step,
    context: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    renderer: Renderer,
) -> list[Any]:
    """The items of a foreach step (SPEC §2.5): its `foreach` rendered with the run's
    `context` and the outputs known so far. Raises RenderError, located at the step's
    `foreach`, when it cannot be rendered or is not a list."""
    where = Location(saga.path, step.line, 0, f"steps[{step.index}].foreach")
    try:
        items = renderer.render(step.foreach, {**context, "steps": steps})
    except TemplateProblem as exc:
        raise RenderError(where, str(exc)) from None
    if not isinstance(items, list | tuple):
        # Its kind only: the value may be a secret's, or a part of one.
        raise RenderError(where, f"expected a list, got {_KINDS.get(type(items), 'a value')}")
    return list(items)


def run_context(
    saga: Saga,
    *,
    run_id: str,
    inputs: Mapping[str, Any],
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    renderer: Renderer,
) -> dict[str, Any]:
    """The names every template of a run sees, with `vars` computed in order."""
    variables = Namespace("vars")
    context: dict[str, Any] = {
        "inputs": Namespace("inputs", inputs),
        "env": Namespace("env", {name: env[name] for name in saga.env if name in env}),
        "secrets": Secrets(
            "secrets", {name: secrets[name] for name in saga.secrets if name in secrets}
        ),
        "run": {"id": run_id, "name": saga.name},
        "vars": variables,
    }
    for name, value in saga.vars:
        try:
            variables[name] = renderer.render(value, context)
        except TemplateProblem as exc:
            raise RenderError(Location(saga.path, path=f"vars.{name}"), str(exc)) from None
    return context
