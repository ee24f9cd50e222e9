"""One attempt of a request: how it is classified, what is read of the answer; and the wait
before a retry. httpx.MockTransport: nothing is sent or waited. The retry loop itself is the
engine's (tests/test_engine.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sagactl.engine.retry import wait_before
from sagactl.executors.base import AttemptResult, Outcome, ResponseView
from sagactl.executors.http.attempt import attempt
from sagactl.executors.http.prepare import PreparedRequest
from sagactl.model import Expect, Phase, RetryPolicy


def request(
    retry: RetryPolicy | None = None, expect: Expect | None = None, **fields: Any
) -> PreparedRequest:
    return PreparedRequest(
        step="a",
        phase=Phase.ACTION,
        method="POST",
        url="http://127.0.0.1:9/x",
        headers={"X-A": "1"},
        body_kind=None,
        body=None,
        body_text=None,
        content_type=None,
        timeout=1.0,
        retry=retry
        or RetryPolicy(attempts=4, backoff=0.1, factor=2, max_backoff=1.0, jitter=False),
        expect=expect or Expect(),
        idempotency_key="run.a.action",
        **{"header_bytes": ((b"X-A", b"1"),), **fields},
    )


def ok(view: ResponseView) -> tuple[dict[str, Any], str | None]:
    return {}, None


def run(
    handler: Callable[[httpx.Request], httpx.Response],
    req: PreparedRequest | None = None,
    check: Any = ok,
) -> AttemptResult:
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return attempt(client, req or request(), {"Saga-Attempt": "1"}, check)


def statuses(*codes: int, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    queue = list(codes)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            queue.pop(0) if len(queue) > 1 else queue[0], headers=headers, json={"n": len(queue)}
        )

    return handler


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "outcome", "in_doubt", "applied"),
    [
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
        (raising(httpx.WriteTimeout("slow reader")), Outcome.RETRYABLE, True, False),
        (raising(httpx.PoolTimeout("no connection free")), Outcome.RETRYABLE, False, False),
        (raising(httpx.UnsupportedProtocol("ftp")), Outcome.FAILURE, False, False),
        (raising(httpx.LocalProtocolError("bad header")), Outcome.FAILURE, False, False),
        (raising(httpx.DecodingError("bad gzip")), Outcome.RETRYABLE, True, False),
        (raising(RuntimeError("anything at all")), Outcome.RETRYABLE, True, False),
    ],
)
def test_classification(handler: Any, outcome: Outcome, in_doubt: bool, applied: bool) -> None:
    result = run(handler, request(RetryPolicy(attempts=1)))
    assert (result.outcome, result.in_doubt, result.applied) == (outcome, in_doubt, applied)
    assert (result.error_message is None) == (outcome is Outcome.SUCCESS)


def test_a_status_the_saga_expects_is_success_even_if_retryable_by_default() -> None:
    result = run(statuses(503), request(RetryPolicy(attempts=3), Expect(status=(200, 503))))
    assert result.outcome is Outcome.SUCCESS


def test_unmet_expectation_is_a_failure_that_took_effect() -> None:
    result = run(statuses(200), check=lambda view: ({}, "expect.that[0] no"))
    assert (result.outcome, result.applied, result.error_message) == (
        Outcome.FAILURE,
        True,
        "expect.that[0] no",
    )


def test_4xx_is_a_failure_that_did_not_take_effect() -> None:
    result = run(statuses(422))
    assert (result.outcome, result.applied, result.in_doubt) == (Outcome.FAILURE, False, False)
    assert result.error_message == "status 422, expected 2xx"


def test_retry_on_is_configurable() -> None:
    assert run(statuses(409), request(RetryPolicy(on=(409,)))).outcome is Outcome.RETRYABLE
    assert run(statuses(503), request(RetryPolicy(on=(409,)))).outcome is Outcome.FAILURE


def test_backoff_grows_by_factor_and_is_capped() -> None:
    policy = RetryPolicy(attempts=6, backoff=0.1, factor=3, max_backoff=1.0, jitter=False)
    assert [wait_before(policy, n) for n in range(1, 6)] == pytest.approx([0.1, 0.3, 0.9, 1.0, 1.0])


def test_full_jitter_stays_between_zero_and_the_backoff() -> None:
    policy = RetryPolicy(attempts=30, backoff=0.1, factor=2, max_backoff=0.4, jitter=True)
    waits = [wait_before(policy, n) for n in range(1, 30)]
    caps = [min(0.1 * 2**i, 0.4) for i in range(29)]
    assert all(0 <= w <= cap for w, cap in zip(waits, caps, strict=True))
    assert len(set(waits)) > 1


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("0.7", 0.7),
        ("120", 2.0),
        ("0", 0.1),
        ("-5", 0.1),
        ("nan", 0.1),
        ("inf", 2.0),
        ("1e400", 2.0),
        ("soon", 0.1),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.1),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 2.0),
        ("Mon, 99 Foo 0 99:99:99 XYZ", 0.1),
        ("", 0.1),
    ],
)
def test_retry_after_is_honoured_up_to_max_backoff(header: str, wait: float) -> None:
    result = run(statuses(429, headers={"Retry-After": header}))
    policy = RetryPolicy(backoff=0.1, max_backoff=2.0, jitter=False)
    assert wait_before(policy, 1, result.retry_after) == pytest.approx(wait)


def test_headers_and_body_are_sent_as_prepared() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200)

    run(handler, request(header_bytes=((b"X-A", b"caf\xe9"),), body_bytes=b"{}"))
    assert (b"X-A", b"caf\xe9") in seen[0].headers.raw
    assert seen[0].headers["Saga-Attempt"] == "1" and seen[0].content == b"{}"


def test_a_body_nothing_reads_is_read_and_dropped_past_what_the_journal_keeps() -> None:
    body = b"x" * (3 * 2**20)
    result = run(
        lambda req: httpx.Response(200, content=body), request(reads_body=False, max_response=1024)
    )
    assert result.outcome is Outcome.SUCCESS
    assert result.response is not None and len(result.response.text) == 64 * 1024


def test_a_body_past_max_response_fails_when_something_reads_it() -> None:
    body = b"x" * 5000
    result = run(
        lambda req: httpx.Response(200, content=body), request(reads_body=True, max_response=4096)
    )
    assert (result.outcome, result.applied, result.error_class) == (
        Outcome.FAILURE,
        True,
        "ResponseTooLarge",
    )
    assert "max_response (4KiB)" in (result.error_message or "")
    refused = run(
        lambda req: httpx.Response(503, content=body), request(reads_body=True, max_response=4096)
    )
    assert refused.outcome is Outcome.RETRYABLE  # a status not accepted: the body is not read


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("application/json", '{"name": "café"}'.encode(), '{"name": "café"}'),
        ("text/plain; charset=ISO-8859-1", "café".encode("latin-1"), "café"),
        ('text/plain;charset="utf-16"', "café".encode("utf-16"), "café"),
        ("text/plain; charset=no-such-charset", "café".encode(), "café"),
        ("text/plain", b"caf\xe9", "caf\ufffd"),
        (None, b"", ""),
    ],
)
def test_the_body_is_read_in_the_charset_its_content_type_names(
    content_type: str | None, body: bytes, text: str
) -> None:
    """As httpx's Response.text reads it: the charset parameter, else UTF-8 (also for an
    unknown charset), undecodable bytes replaced."""
    headers = {"Content-Type": content_type} if content_type else {}
    result = run(lambda req: httpx.Response(200, headers=headers, content=body))
    assert result.response is not None and result.response.text == text
    assert httpx.Response(200, headers=headers, content=body).text == text


def test_time_up_before_a_byte_of_the_request_left_is_not_in_doubt() -> None:
    """Connecting took the whole attempt: the request was never sent, as after a connect
    timeout."""
    import socket

    import httpcore

    from sagactl.executors.http.transport import _Stream, deadline

    here, there = socket.socketpair()
    stream = _Stream(_SocketStream(here))  # type: ignore[arg-type]
    with deadline(0.0), pytest.raises(httpcore.ConnectTimeout):
        stream.write(b"PUT / HTTP/1.1\r\n\r\n")
    with deadline(5.0):
        stream.write(b"PUT / HTTP/1.1\r\n")
    assert there.recv(100) == b"PUT / HTTP/1.1\r\n"
    here.close()
    there.close()


class _SocketStream:
    """The part of httpcore's stream that _Stream uses, over a plain socket."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else None
