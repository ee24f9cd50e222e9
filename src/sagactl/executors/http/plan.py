"""`plan` for HTTP steps: every request rendered without sending, and shown as its request
line, then its headers (credentials masked), body, expectations, timeout and retries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sagactl.definition.scope import foreach_items, run_context
from sagactl.definition.templating import Namespace, Renderer, is_template, references, strings_in
from sagactl.executors.http.prepare import PreparedRequest, prepare
from sagactl.model import Expect, Item, Phase, Request, RetryPolicy, Saga, Step, format_duration
from sagactl.redact import MASK, SENSITIVE_HEADERS

__all__ = ["PLANNED_ITEMS", "PlannedStep", "describe", "plan"]

PLANNED_ITEMS = 3
"""Items of a foreach step whose requests `plan` shows; the others are alike."""

PlannedStep = list[tuple[Phase | str, list[str]]]
"""What `plan` shows of a step: each call as (its phase, how its executor describes it), and
for a foreach step, a line heading each item's calls (a string, with no description)."""


def describe(request: PreparedRequest) -> list[str]:
    lines = [f"{request.method} {request.url}"]
    for name, value in request.headers.items():
        lines.append(f"{name}: {MASK if name.lower() in SENSITIVE_HEADERS else value}")
    body = _body_text(request)
    if body is not None:
        lines.append(body)
    lines.append(f"expect {_expect_text(request.expect)}")
    lines.append(f"timeout {format_duration(request.timeout)}, {_retry_text(request.retry)}")
    if request.follow_redirects:
        lines.append("follows redirects (at most 10; no credentials to another origin)")
    return lines


def _retry_text(retry: RetryPolicy) -> str:
    if retry.attempts == 1:
        return "no retry"
    text = f"{retry.attempts} attempts, backoff {format_duration(retry.backoff)}"
    if retry.factor != 1:
        text += f" x{retry.factor:g}"
    text += f" up to {format_duration(retry.max_backoff)}"
    return text + (", jitter" if retry.jitter else "")


def _expect_text(expect: Expect) -> str:
    parts = ["status " + ", ".join(str(s) for s in expect.status)]
    parts.extend(expect.that)
    return "; ".join(parts)


def _body_text(request: PreparedRequest) -> str | None:
    if request.body_kind is None:
        return None
    if isinstance(request.body, str):
        return f"{request.body_kind.value} {request.body}"
    return f"{request.body_kind.value} {json.dumps(request.body, ensure_ascii=False)}"


def plan(
    saga: Saga, inputs: Mapping[str, Any], env: Mapping[str, str], renderer: Renderer
) -> list[PlannedStep]:
    """Every request each step may send, in dependency order, rendered without sending and
    described as `plan` shows them (`format_plan`).

    What is known only once running stands as a placeholder: `<run.id>`,
    `<steps.S.outputs.X>`, and for the items of a foreach step whose list is known only then,
    `<item.NAME>`; secrets stand as `***`. A call of another kind is named only. Of a foreach
    step whose list is known, the calls of its first items (`PLANNED_ITEMS`).
    """
    context = run_context(
        saga,
        run_id="<run.id>",
        inputs=inputs,
        env=env,
        secrets=dict.fromkeys(saga.secrets, MASK),
        renderer=renderer,
    )
    steps = {
        s.id: {"outputs": {name: f"<steps.{s.id}.outputs.{name}>" for name in s.outputs}}
        for s in saga.steps
    }
    planned: list[PlannedStep] = []
    for step in saga.ordered_steps():
        if not step.repeated:
            planned.append(_calls(saga, step, context, steps, renderer))
            continue
        shown: PlannedStep = []
        if _reads_steps(step.foreach):
            # Its list is known once the steps it reads have run: its items as placeholders.
            placeholders = {step.item_name: f"<item.{step.item_name}>", "index": "<item.index>"}
            shown.append((f"each item ({step.item_name}): known once running", []))
            with_item = {**context, "item": Namespace("item", placeholders)}
            shown += _calls(saga, step, with_item, steps, renderer)
        else:
            items = foreach_items(saga, step, context, steps, renderer)
            for i, value in enumerate(items[:PLANNED_ITEMS]):
                item = Item(i, value, step.item_name)
                shown_value = json.dumps(value, ensure_ascii=False)
                if len(shown_value) > 60:
                    shown_value = shown_value[:59] + "…"
                shown.append((f"item {i} ({step.item_name} = {shown_value})", []))
                shown += _calls(saga, step, context, steps, renderer, item)
            if len(items) > PLANNED_ITEMS:
                more = len(items) - PLANNED_ITEMS
                shown.append((f"and {more} more item{'s' if more != 1 else ''}, alike", []))
            if not items:
                shown.append(("no items: nothing is sent", []))
        planned.append(shown)
    return planned


def _reads_steps(value: Any) -> bool:
    return any(
        ref.root == "steps"
        for text in strings_in(value)
        if is_template(text)
        for ref in references(text)
    )


def _calls(
    saga: Saga,
    step: Step,
    context: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    renderer: Renderer,
    item: Item | None = None,
) -> PlannedStep:
    """Each call of `step` (for one of its items), described."""
    shown: PlannedStep = []
    for phase in Phase:
        call = step.request(phase)
        if isinstance(call, Request):
            prepared = prepare(saga, step, phase, context, steps, renderer, check=False, item=item)
            lines = describe(prepared)
            if phase is Phase.VERIFY:
                # Its answer is judged by what it settles, whatever its status.
                settles = [
                    f"{k} if {v}"
                    for k, v in (("applied", step.applied), ("absent", step.absent))
                    if v
                ]
                lines = [
                    f"settles: {'; '.join(settles)}" if line.startswith("expect ") else line
                    for line in lines
                ]
            if call.poll is not None:
                poll = call.poll
                lines.append(
                    f"polled every {format_duration(poll.every)} until {poll.until}"
                    + (f", failing if {poll.fail_if}" if poll.fail_if else "")
                    + f" (at most {format_duration(poll.timeout)})"
                )
            shown.append((phase, lines))
        elif call is not None:
            shown.append((phase, [f"({call.kind} step: shown as it runs)"]))
    return shown
