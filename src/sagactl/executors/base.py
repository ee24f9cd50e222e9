"""What the engine asks of an executor, whatever kind of step it runs (SPEC §3.1).

An executor prepares a request from a step, a phase and the names its templates see; it makes
one attempt of it and says what the attempt came to: success, retryable or failure, whether it
may have reached the service without an answer being read (in doubt), whether it took effect.
It never raises for anything the network, the service or the request can do.

The engine owns everything around an attempt: the retry loop, the deadline, journaling (what
`shown` returns, masked), events, and reading outputs from the answer (through `check`). A new
kind of step is a model of its calls (`sagactl.model.Call`) and an executor; nothing in the
engine, the journal or the renderers changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sagactl.definition.templating import Renderer
from sagactl.model import Item, Phase, RetryPolicy, Saga, Step
from sagactl.redact import Redactor

__all__ = [
    "AttemptContext",
    "AttemptResult",
    "Check",
    "Executor",
    "Outcome",
    "Prepared",
    "ResponseView",
    "Shown",
]


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    FAILURE = "failure"
    PENDING = "pending"
    """Answered as expected, but a poll's `until` is not true yet: sent again (engine only)."""


@dataclass(slots=True)
class ResponseView:
    """The answer as templates see it (`response.status`, `.json`…) and the journal keeps it.
    `status` is the kind's own code of the answer (an HTTP status), `headers` its metadata."""

    status: int
    headers: dict[str, str]
    text: str
    elapsed_ms: float

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except (ValueError, RecursionError):  # not JSON, or nested past what can be read
            return None

    def context(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": self.headers,
            "json": self.json,
            "text": self.text,
            "elapsed_ms": self.elapsed_ms,
        }


@dataclass(slots=True)
class AttemptResult:
    """What one attempt came to (never changed once built; not frozen, which would cost more
    to build than the rest of classifying an attempt)."""

    outcome: Outcome
    duration_ms: float
    response: ResponseView | None = None
    error_class: str | None = None
    error_message: str | None = None
    in_doubt: bool = False
    """The request may have reached the service, and no answer was read: its effect is
    unknown. Later attempts prove nothing about this one."""
    applied: bool = False
    """The service answered that it accepted the request: the request took effect."""
    outputs: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    """Seconds the service asked to wait before the next attempt, if it said."""

    @property
    def status(self) -> int | None:
        return self.response.status if self.response else None


Check = Callable[[ResponseView], tuple[dict[str, Any], str | None]]
"""Evaluates `expect.that` and `outputs` on an accepted answer: (outputs, error or None)."""


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """Who makes this attempt: the run, its trace, the attempt's number (counting earlier
    processes' attempts) and span, and the clock that times it."""

    run_id: str
    trace_id: str
    number: int
    span_id: str
    clock: Callable[[], float]
    sent: int | None = None
    """For a verify (SPEC §2.6): how many attempts of the action it asks about were sent, so
    that a service answering "absent" can refuse those if they arrive later."""


@dataclass(frozen=True, slots=True)
class Shown:
    """An attempt's request as the journal keeps it and events show it, before masking: the
    operation (an HTTP method), its target (a URL), its metadata (headers) and its body."""

    operation: str
    target: str
    headers: Mapping[str, str]
    body: str | None


class Prepared(Protocol):
    """A request ready to send: every template rendered and checked."""

    @property
    def step(self) -> str:
        """What the call is for: the step's id, or for an item of a foreach step its key
        (`lines[2]`)."""
        ...

    @property
    def phase(self) -> Phase: ...

    @property
    def retry(self) -> RetryPolicy: ...

    @property
    def idempotency_key(self) -> str: ...


class Executor(Protocol):
    """Runs the calls of one kind of step."""

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
    ) -> Prepared:
        """`step`'s call for `phase`, rendered with the run's `context` and `steps`, the
        outputs known so far (`{"reserve": {"outputs": {...}}}`), and for a foreach step the
        `item` it is for (its `step` and idempotency key then name the item: `lines[2]`,
        `definition.scope.step_scope`). Raises `RenderError` for a template that cannot be
        rendered or a request that could not be sent; tells `secrets` of the values that
        become secrets (a credential header's)."""
        ...

    def shown(self, prepared: Prepared, attempt: AttemptContext) -> Shown:
        """What this attempt sends, as it is to be journaled (the engine masks it)."""
        ...

    def attempt(self, prepared: Prepared, attempt: AttemptContext, check: Check) -> AttemptResult:
        """Send it once and classify what came back; `check` judges an accepted answer.
        Raises only `Interrupted` (a signal)."""
        ...
