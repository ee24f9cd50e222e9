"""The HTTP executor: HTTP steps behind the engine's executor interface (`executors.base`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from sagactl.definition.templating import Renderer
from sagactl.executors.base import AttemptContext, AttemptResult, Check, Shown
from sagactl.executors.http.attempt import attempt
from sagactl.executors.http.prepare import PreparedRequest, prepare
from sagactl.model import Item, Phase, Saga, Step
from sagactl.redact import Redactor

__all__ = ["HttpExecutor", "saga_headers"]


def saga_headers(prepared: PreparedRequest, attempt: AttemptContext) -> dict[str, str]:
    """The headers every attempt carries (SPEC §3.3), after the request's own."""
    headers = {
        "Idempotency-Key": prepared.idempotency_key,
        "Saga-Id": attempt.run_id,
        "Saga-Step": prepared.step,
        "Saga-Phase": prepared.phase.value,
        "Saga-Attempt": str(attempt.number),
        "traceparent": f"00-{attempt.trace_id}-{attempt.span_id}-01",
    }
    if attempt.sent is not None:
        headers["Saga-Attempts-Sent"] = str(attempt.sent)
    return headers


class HttpExecutor:
    """Sends HTTP steps with one `httpx.Client`, shared by the threads of a run."""

    kind = "http"

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def prepare(
        self,
        saga: Saga,
        step: Step,
        phase: Phase,
        context: Mapping[str, Any],
        steps: Mapping[str, Mapping[str, Any]],
        renderer: Renderer,
        *,
        secrets: Redactor | None = None,
        item: Item | None = None,
    ) -> PreparedRequest:
        return prepare(saga, step, phase, context, steps, renderer, secrets=secrets, item=item)

    def shown(self, prepared: Any, attempt: AttemptContext) -> Shown:
        assert isinstance(prepared, PreparedRequest)
        return Shown(
            prepared.method,
            prepared.url,
            {**prepared.headers, **saga_headers(prepared, attempt)},
            prepared.body_text,
        )

    def attempt(self, prepared: Any, context: AttemptContext, check: Check) -> AttemptResult:
        assert isinstance(prepared, PreparedRequest)
        return attempt(self.client, prepared, saga_headers(prepared, context), check, context.clock)
