"""How `plan` shows a prepared HTTP request: its request line, then its headers (credentials
masked), body, expectations, timeout and retries."""

from __future__ import annotations

import json

from sagactl.executors.http.prepare import PreparedRequest
from sagactl.model import Expect, RetryPolicy, format_duration
from sagactl.redact import MASK, SENSITIVE_HEADERS

__all__ = ["describe"]


def describe(request: PreparedRequest) -> list[str]:
    lines = [f"{request.method} {request.url}"]
    for name, value in request.headers.items():
        lines.append(f"{name}: {MASK if name.lower() in SENSITIVE_HEADERS else value}")
    body = _body_text(request)
    if body is not None:
        lines.append(body)
    lines.append(f"expect {_expect_text(request.expect)}")
    lines.append(f"timeout {format_duration(request.timeout)}, {_retry_text(request.retry)}")
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
