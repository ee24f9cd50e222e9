"""`plan` for HTTP steps: every request rendered without sending, and shown as its request
line, then its headers (credentials masked), body, expectations, timeout and retries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sagactl.definition.scope import run_context
from sagactl.definition.templating import Renderer
from sagactl.executors.http.prepare import PreparedRequest, prepare
from sagactl.model import Expect, Phase, Request, RetryPolicy, Saga, format_duration
from sagactl.redact import MASK, SENSITIVE_HEADERS

__all__ = ["describe", "plan"]


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
) -> list[list[tuple[Phase, list[str]]]]:
    """Every request each step may send, in dependency order, rendered without sending and
    described as `plan` shows them (`format_plan`).

    What is known only once running stands as a placeholder: `<run.id>`,
    `<steps.S.outputs.X>`; secrets stand as `***`. A call of another kind is named only.
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
    planned: list[list[tuple[Phase, list[str]]]] = []
    for step in saga.ordered_steps():
        planned.append([])
        for phase in Phase:
            call = step.request(phase)
            if isinstance(call, Request):
                prepared = prepare(saga, step, phase, context, steps, renderer, check=False)
                lines = describe(prepared)
                if call.poll is not None:
                    poll = call.poll
                    lines.append(
                        f"polled every {format_duration(poll.every)} until {poll.until}"
                        + (f", failing if {poll.fail_if}" if poll.fail_if else "")
                        + f" (at most {format_duration(poll.timeout)})"
                    )
                planned[-1].append((phase, lines))
            elif call is not None:
                planned[-1].append((phase, [f"({call.kind} step: shown as it runs)"]))
    return planned
