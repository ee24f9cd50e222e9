"""Send one prepared request under its retry policy, and classify each attempt (SPEC §3.1).

Attempts are tried through tenacity; what happens around each attempt (journaling it before it
is sent and after its result) is the caller's, through hooks. Nothing here writes the journal or
prints.
"""

from __future__ import annotations

import codecs
import email.utils
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import httpx

from sagactl.model import RetryPolicy
from sagactl.prepare import PreparedRequest

if TYPE_CHECKING:
    import tenacity

__all__ = ["AttemptResult", "Outcome", "ResponseView", "send"]


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    FAILURE = "failure"


@dataclass(frozen=True)
class ResponseView:
    """The response as templates see it (`response.status`, `.json`…)."""

    status: int
    headers: dict[str, str]
    text: str
    elapsed_ms: float

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def context(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "json": self.json,
                "text": self.text, "elapsed_ms": self.elapsed_ms}


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to."""

    outcome: Outcome
    number: int
    duration_ms: float
    response: ResponseView | None = None
    error_class: str | None = None
    error_message: str | None = None
    in_doubt: bool = False
    """For an error without a response: the request may have reached the service."""
    applied: bool = False
    """The service answered with an accepted status: the request took effect."""
    outputs: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None

    @property
    def status(self) -> int | None:
        return self.response.status if self.response else None


Check = Callable[[ResponseView], tuple[dict[str, Any], str | None]]
"""Evaluates `expect.that` and `outputs` on an accepted response: (outputs, error or None)."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)


def _text(content: bytes, headers: Mapping[str, str]) -> str:
    """The body as text, in the charset its Content-Type names, else UTF-8; undecodable bytes
    replaced. What `httpx.Response.text` does, without its costly Content-Type parsing."""
    if not content:
        return ""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    found = _CHARSET.search(content_type)
    try:
        charset = codecs.lookup(found.group(1)).name if found else "utf-8"
    except LookupError:
        charset = "utf-8"  # an unknown charset: read it as UTF-8, as httpx does
    return content.decode(charset, errors="replace")


# Errors raised before any byte of the request left: the service cannot have seen it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
             httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)


def attempt_once(client: httpx.Client, request: PreparedRequest, headers: Mapping[str, str],
                 number: int, check: Check, clock: Callable[[], float] = time.monotonic,
                 ) -> AttemptResult:
    """Send the request once and classify what came back."""
    base = {"Content-Type": request.content_type} if request.content_type else {}
    content = request.body_text.encode() if request.body_text is not None else None
    started = clock()
    try:
        response = client.request(
            request.method, request.url, headers={**base, **request.headers, **headers},
            content=content, timeout=request.timeout)
    except httpx.TransportError as exc:
        duration = (clock() - started) * 1000
        return AttemptResult(Outcome.RETRYABLE, number, duration,
                             error_class=type(exc).__name__, error_message=str(exc) or repr(exc),
                             in_doubt=not isinstance(exc, _NOT_SENT))
    duration = (clock() - started) * 1000
    # The raw header list decodes far faster than httpx.Headers' item by item view.
    received = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers.raw}
    view = ResponseView(response.status_code, received, _text(response.content, received),
                        duration)
    retry = request.retry
    if retry.retries_status(view.status) and not request.expect.status_ok(view.status):
        return AttemptResult(Outcome.RETRYABLE, number, duration, view,
                             error_class="HTTPStatus",
                             error_message=f"status {view.status}, retried",
                             retry_after=_retry_after(response.headers.get("Retry-After")))
    if not request.expect.status_ok(view.status):
        expected = ", ".join(str(s) for s in request.expect.status)
        return AttemptResult(Outcome.FAILURE, number, duration, view, error_class="HTTPStatus",
                             error_message=f"status {view.status}, expected {expected}")
    outputs, problem = check(view)
    if problem is not None:
        return AttemptResult(Outcome.FAILURE, number, duration, view, error_class="Expectation",
                             error_message=problem, applied=True)
    return AttemptResult(Outcome.SUCCESS, number, duration, view, applied=True, outputs=outputs)


class _Stopped(Exception):
    """Raised instead of sending a retry once a stop was asked for."""


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    """Exponential backoff with full jitter, raised to `Retry-After`, capped at max_backoff."""
    import tenacity

    base = dict(multiplier=policy.backoff, exp_base=policy.factor, max=policy.max_backoff)
    backoff = tenacity.wait_random_exponential(**base) if policy.jitter \
        else tenacity.wait_exponential(**base)

    def wait(retry_state: tenacity.RetryCallState) -> float:
        seconds = backoff(retry_state)
        outcome = retry_state.outcome
        result = outcome.result() if outcome is not None and not outcome.failed else None
        if isinstance(result, AttemptResult) and result.retry_after is not None:
            seconds = max(seconds, result.retry_after)
        return min(seconds, policy.max_backoff)

    return wait


def send(
    client: httpx.Client,
    request: PreparedRequest,
    headers_for: Callable[[int], Mapping[str, str]],
    check: Check,
    *,
    before: Callable[[int], None] | None = None,
    after: Callable[[int, AttemptResult], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_wait: Callable[[int, float], None] | None = None,
) -> AttemptResult:
    """Try `request` until it succeeds, fails for good, or its retries are used up; return the
    last attempt's result.

    `headers_for(n)` gives the headers of attempt n; `before(n)` runs just before it is sent and
    `after(n, result)` as soon as its result is known (this is where the caller journals);
    `on_wait(n, seconds)` when attempt n is due after a backoff.
    No retry starts once `should_stop()` is true, nor when its wait would end past `deadline`
    (on `clock`).
    """
    policy = request.retry
    numbers = itertools.count(1)
    results: list[AttemptResult] = []
    replay: list[AttemptResult] = []

    def one_attempt() -> AttemptResult:
        if replay:
            return replay.pop()
        number = next(numbers)
        if results and should_stop():
            # A signal arrived during the backoff: send nothing more.
            raise _Stopped
        if before is not None:
            before(number)
        result = attempt_once(client, request, headers_for(number), number, check, clock)
        results.append(result)
        if after is not None:
            after(number, result)
        return result

    def stop(state: tenacity.RetryCallState) -> bool:
        return (state.attempt_number >= policy.attempts or should_stop()
                or (deadline is not None and clock() + state.upcoming_sleep > deadline))

    # Most requests succeed at once: try the first attempt directly, and hand it to tenacity
    # (which then waits and retries) only when it is retryable. This saves tenacity's
    # per-call bookkeeping on every request.
    first = one_attempt()
    if first.outcome is not Outcome.RETRYABLE or policy.attempts == 1:
        return first
    replay.append(first)
    import tenacity  # only now: most runs never retry, and importing it costs milliseconds

    retrying = tenacity.Retrying(
        sleep=sleep,
        stop=stop,
        wait=_wait(policy),
        retry=tenacity.retry_if_result(lambda r: r.outcome is Outcome.RETRYABLE),
        # Out of retries: hand back the last result rather than raising.
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        before_sleep=(lambda state: on_wait(state.attempt_number + 1, state.upcoming_sleep))
        if on_wait else None,
    )
    try:
        result: AttemptResult = retrying(one_attempt)
    except _Stopped:
        return results[-1]
    return result
