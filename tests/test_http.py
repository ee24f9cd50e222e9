"""One request under its retry policy: how each attempt is classified, how long the waits are,
what is and is not retried. httpx.MockTransport, an injected sleep: nothing is sent or waited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sagactl.http import AttemptResult, Outcome, ResponseView, send
from sagactl.model import Expect, Phase, RetryPolicy
from sagactl.prepare import PreparedRequest


def request(retry: RetryPolicy | None = None, expect: Expect | None = None) -> PreparedRequest:
    return PreparedRequest(
        step="a", phase=Phase.ACTION, method="POST", url="http://127.0.0.1:9/x",
        headers={"X-A": "1"}, body_kind=None, body=None, body_text=None, content_type=None,
        timeout=1.0,
        retry=retry or RetryPolicy(attempts=4, backoff=0.1, factor=2, max_backoff=1.0,
                                   jitter=False),
        expect=expect or Expect(), idempotency_key="run.a.action")


def ok(view: ResponseView) -> tuple[dict[str, Any], str | None]:
    return {}, None


def run(handler: Callable[[httpx.Request], httpx.Response], req: PreparedRequest | None = None,
        check: Any = ok) -> tuple[AttemptResult, list[float], list[AttemptResult]]:
    sleeps: list[float] = []
    seen: list[AttemptResult] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = send(client, req or request(), lambda n: {"Saga-Attempt": str(n)}, check,
                      after=lambda n, r: seen.append(r), sleep=sleeps.append)
    return result, sleeps, seen


def statuses(*codes: int, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    queue = list(codes)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(queue.pop(0) if len(queue) > 1 else queue[0], headers=headers,
                              json={"n": len(queue)})
    return handler


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc
    return handler


@pytest.mark.parametrize(("handler", "outcome", "in_doubt", "applied"), [
    (statuses(200), Outcome.SUCCESS, False, True),
    (statuses(201), Outcome.SUCCESS, False, True),
    (statuses(400), Outcome.FAILURE, False, False),
    (statuses(404), Outcome.FAILURE, False, False),
    (statuses(409), Outcome.FAILURE, False, False),
    (statuses(503), Outcome.RETRYABLE, False, False),
    (statuses(429), Outcome.RETRYABLE, False, False),
    (statuses(408), Outcome.RETRYABLE, False, False),
    (raising(httpx.ConnectError("refused")), Outcome.RETRYABLE, False, False),
    (raising(httpx.ConnectTimeout("slow connect")), Outcome.RETRYABLE, False, False),
    (raising(httpx.ReadTimeout("slow answer")), Outcome.RETRYABLE, True, False),
    (raising(httpx.RemoteProtocolError("reset")), Outcome.RETRYABLE, True, False),
    (raising(httpx.ReadError("reset")), Outcome.RETRYABLE, True, False),
    (raising(httpx.WriteError("broken pipe")), Outcome.RETRYABLE, True, False),
])
def test_classification(handler: Any, outcome: Outcome, in_doubt: bool, applied: bool) -> None:
    result, _, _ = run(handler, request(RetryPolicy(attempts=1)))
    assert (result.outcome, result.in_doubt, result.applied) == (outcome, in_doubt, applied)


def test_a_status_the_saga_expects_is_success_even_if_retryable_by_default() -> None:
    result, _, _ = run(statuses(503), request(RetryPolicy(attempts=3),
                                              Expect(status=(200, 503))))
    assert result.outcome is Outcome.SUCCESS


def test_unmet_expectation_is_a_failure_that_took_effect() -> None:
    result, sleeps, _ = run(statuses(200), check=lambda view: ({}, "expect.that[0] no"))
    assert (result.outcome, result.applied, result.error_message) == (
        Outcome.FAILURE, True, "expect.that[0] no")
    assert sleeps == []


def test_4xx_is_not_retried() -> None:
    result, sleeps, seen = run(statuses(422))
    assert result.outcome is Outcome.FAILURE
    assert result.error_message == "status 422, expected 2xx"
    assert sleeps == [] and len(seen) == 1


def test_backoff_sequence_grows_by_factor_and_is_capped() -> None:
    result, sleeps, seen = run(statuses(503), request(RetryPolicy(
        attempts=6, backoff=0.1, factor=3, max_backoff=1.0, jitter=False)))
    assert sleeps == pytest.approx([0.1, 0.3, 0.9, 1.0, 1.0])
    assert [r.number for r in seen] == [1, 2, 3, 4, 5, 6]
    assert result.outcome is Outcome.RETRYABLE and not result.in_doubt


def test_full_jitter_stays_between_zero_and_the_backoff() -> None:
    _, sleeps, _ = run(statuses(503), request(RetryPolicy(
        attempts=30, backoff=0.1, factor=2, max_backoff=0.4, jitter=True)))
    caps = [min(0.1 * 2 ** i, 0.4) for i in range(29)]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))
    assert len(set(sleeps)) > 1


def test_retry_after_is_honoured_up_to_max_backoff() -> None:
    _, sleeps, _ = run(statuses(429, 429, 200, headers={"Retry-After": "0.7"}),
                       request(RetryPolicy(attempts=4, backoff=0.1, max_backoff=1.0,
                                           jitter=False)))
    assert sleeps == pytest.approx([0.7, 0.7])
    _, capped, _ = run(statuses(503, 200, headers={"Retry-After": "120"}),
                       request(RetryPolicy(attempts=4, backoff=0.1, max_backoff=2.0,
                                           jitter=False)))
    assert capped == pytest.approx([2.0])


def test_retry_on_is_configurable() -> None:
    result, sleeps, _ = run(statuses(409, 201), request(RetryPolicy(
        attempts=3, backoff=0.05, jitter=False, on=(409,))))
    assert result.outcome is Outcome.SUCCESS and sleeps == [0.05]
    result, sleeps, _ = run(statuses(503), request(RetryPolicy(attempts=3, on=(409,))))
    assert result.outcome is Outcome.FAILURE and sleeps == []


def test_headers_carry_the_attempt_number_and_body_is_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(503 if len(seen) < 3 else 200)

    run(handler)
    assert [r.headers["Saga-Attempt"] for r in seen] == ["1", "2", "3"]
    assert all(r.headers["X-A"] == "1" for r in seen)


def test_no_retry_after_a_stop_or_past_the_deadline() -> None:
    calls: list[int] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = send(client, request(), lambda n: {}, ok, sleep=lambda s: None,
                      should_stop=lambda: True)
        assert result.number == 1 and len(calls) == 1
        now = [100.0]
        result = send(client, request(), lambda n: {}, ok, sleep=lambda s: None,
                      deadline=100.05, clock=lambda: now[0])
        assert result.number == 1  # the first wait (0.1s) would end past the deadline


@pytest.mark.parametrize(("content_type", "body", "text"), [
    ("application/json", "{\"name\": \"café\"}".encode(), "{\"name\": \"café\"}"),
    ("text/plain; charset=ISO-8859-1", "café".encode("latin-1"), "café"),
    ("text/plain;charset=\"utf-16\"", "café".encode("utf-16"), "café"),
    ("text/plain; charset=no-such-charset", "café".encode(), "café"),
    ("text/plain", b"caf\xe9", "caf\ufffd"),
    (None, b"", ""),
])
def test_the_body_is_read_in_the_charset_its_content_type_names(
        content_type: str | None, body: bytes, text: str) -> None:
    """As httpx's Response.text reads it: the charset parameter, else UTF-8 (also for an
    unknown charset), undecodable bytes replaced."""
    headers = {"Content-Type": content_type} if content_type else {}
    result, _, _ = run(lambda req: httpx.Response(200, headers=headers, content=body))
    assert result.response is not None and result.response.text == text
    assert httpx.Response(200, headers=headers, content=body).text == text
