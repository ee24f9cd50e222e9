"""One POST of a run's summary to whoever asked to be told of its end (SPEC §6): the attempt
only; `sagactl.api.notify_run` retries it and journals what came of it."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from sagactl.executors.http.prepare import USER_AGENT
from sagactl.model import RetryPolicy

__all__ = ["Posted", "client", "post_once"]


@dataclass(frozen=True)
class Posted:
    """What one POST came to."""

    delivered: bool
    retryable: bool
    detail: str
    """`status 200`, `status 503`, `connect error: …`."""
    retry_after: float | None = None


def post_once(
    client: httpx.Client, url: str, body: bytes, *, timeout: float, retry: RetryPolicy
) -> Posted:
    """POST `body` (JSON) to `url`: delivered on a 2xx; retryable on a connect error, a
    timeout, or a status `retry` retries."""
    try:
        response = client.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return Posted(False, True, f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return Posted(True, False, f"status {status}")
    after = response.headers.get("Retry-After", "")
    return Posted(
        False,
        retry.retries_status(status),
        f"status {status}",
        float(after) if after.isdigit() else None,
    )


def client() -> httpx.Client:
    """A client that follows no redirect and keeps no cookie."""
    return httpx.Client(follow_redirects=False)
