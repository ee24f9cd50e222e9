"""One attempt of a prepared request, and what it came to (SPEC §3.1).

`attempt` sends the request once, reads the answer within the attempt's deadline and at most
`max_response` bytes of it, and classifies it: success, retryable or failure, and whether the
request may have reached the service without an answer being read (in doubt). It never raises
for anything the network, the service or the request can do. The retry loop, journaling and
events are the engine's.
"""

from __future__ import annotations

import codecs
import dataclasses
import email.utils
import math
import re
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from sagactl.errors import Interrupted
from sagactl.executors.base import AttemptResult, Check, Outcome, ResponseView
from sagactl.executors.http.prepare import PreparedRequest
from sagactl.executors.http.transport import deadline
from sagactl.model import format_size

__all__ = ["JOURNALED_BODY", "MAX_REDIRECTS", "Headers", "attempt"]

JOURNALED_BODY = 64 * 1024
"""Bytes of a body kept when nothing reads it: what the journal keeps of it."""


class Headers(dict[str, str]):
    """Response headers as received, read by name whatever its case, as HTTP means them:
    `response.headers.location` finds `Location`."""

    def __getitem__(self, name: str) -> str:
        try:
            return super().__getitem__(name)
        except KeyError:
            lowered = name.lower() if isinstance(name, str) else name
            for key, value in self.items():
                if key.lower() == lowered:
                    return value
            raise

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default


def _retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (a number or an HTTP date); None when it says
    nothing usable. The caller caps it."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) or seconds > 0 else None


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
        return content.decode(charset, errors="replace")
    except LookupError:
        # An unknown charset, or a codec that is not a text encoding (`charset=hex`): read it
        # as UTF-8, as httpx does.
        return content.decode("utf-8", errors="replace")


# Errors raised before any byte of the request left: the service cannot have seen it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# Errors that no retry can cure: the request cannot be sent as it is.
_UNSENDABLE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


def _error(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _redirect(
    client: httpx.Client, request: PreparedRequest, sent: httpx.Request, response: httpx.Response
) -> httpx.Request | None:
    """The request a redirect asks for (SPEC §2.1), or None when the answer names nowhere to
    go. 303, and 301 or 302 after a POST, become a GET without the body. On a redirect to
    another scheme, host or port, only sagactl's own headers go on: Authorization, Cookie and
    every header the saga set may hold a secret meant for the first origin."""
    location = response.headers.get("location")
    if not location:
        return None
    url = sent.url.join(location)
    method = sent.method
    if (response.status_code == 303 and method != "HEAD") or (
        response.status_code in (301, 302) and method == "POST"
    ):
        method = "GET"
    dropped = {"host"}
    if _origin(url) != _origin(sent.url):
        dropped |= _CREDENTIALS | request.saga_headers
    content = sent.content
    if method != sent.method:
        dropped |= _BODY_HEADERS
        content = b""
    headers = [(k, v) for k, v in sent.headers.raw if k.decode("latin-1").lower() not in dropped]
    return client.build_request(
        method, url, content=content or None, headers=headers, timeout=request.timeout
    )


def attempt(
    client: httpx.Client,
    request: PreparedRequest,
    headers: Mapping[str, str],
    check: Check,
    clock: Callable[[], float] = time.monotonic,
) -> AttemptResult:
    """Send the request once and classify what came back. `headers` are this attempt's own
    (`Saga-Attempt`, `traceparent`…), sent after the request's."""
    followed: list[int] = []
    result = _attempt(client, request, headers, check, clock, followed)
    if followed and request.method not in _SAFE and not result.applied:
        # A request that changes something was answered with a redirect (303 after a POST,
        # most often: the effect is done): whatever the redirect met, it may have taken effect.
        return dataclasses.replace(result, applied=True)
    return result


def _attempt(
    client: httpx.Client,
    request: PreparedRequest,
    headers: Mapping[str, str],
    check: Check,
    clock: Callable[[], float],
    followed: list[int],
) -> AttemptResult:
    """`attempt`, noting in `followed` each redirect it follows."""
    started = clock()

    def took() -> float:
        return (clock() - started) * 1000

    try:
        built = client.build_request(
            request.method,
            request.url,
            content=request.body_bytes,
            headers=[
                *request.header_bytes,
                *((k.encode(), v.encode()) for k, v in headers.items()),
            ],
            timeout=request.timeout,
        )
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, TypeError) as exc:
        return AttemptResult(
            Outcome.FAILURE,
            took(),
            error_class="InvalidRequest",
            error_message=f"the request cannot be sent: {_error(exc)}",
        )
    status: int | None = None
    hops = 0
    try:
        with deadline(request.timeout):
            response = client.send(built, stream=True)
            while request.follow_redirects and response.status_code in _REDIRECTS:
                following = _redirect(client, request, built, response)
                if following is None:
                    break
                if hops == MAX_REDIRECTS:
                    response.close()
                    return AttemptResult(
                        Outcome.FAILURE,
                        took(),
                        error_class="TooManyRedirects",
                        error_message=f"status {response.status_code}: more than "
                        f"{MAX_REDIRECTS} redirects (the last to {following.url})",
                        # (`attempt` marks it applied when the first request was not safe)
                    )
                response.close()
                built, hops = following, hops + 1
                followed.append(hops)
                response = client.send(built, stream=True)
            try:
                status = response.status_code
                return _answered(request, response, check, started, clock)
            finally:
                response.close()
    except Interrupted:
        raise
    except _UNSENDABLE as exc:
        return AttemptResult(
            Outcome.FAILURE,
            took(),
            error_class=type(exc).__name__,
            error_message=f"the request cannot be sent: {_error(exc)}",
        )
    except httpx.TimeoutException as exc:
        # A read or write that ran out of the attempt's time: the request may have arrived.
        sent = not isinstance(exc, _NOT_SENT)
        what = "no answer" if status is None else f"status {status}, but the body did not end"
        return AttemptResult(
            Outcome.RETRYABLE,
            took(),
            error_class=type(exc).__name__,
            error_message=f"{what} within the timeout ({request.timeout:g}s)"
            if sent
            else _error(exc),
            in_doubt=sent,
        )
    except httpx.TransportError as exc:
        return AttemptResult(
            Outcome.RETRYABLE,
            took(),
            error_class=type(exc).__name__,
            error_message=_error(exc),
            in_doubt=not isinstance(exc, _NOT_SENT),
        )
    except Exception as exc:  # never a traceback, whatever went wrong
        if status is not None:
            # The answer's head arrived: the status says whether the request took effect,
            # and a body that cannot be read is a failure, not a reason to send it again.
            accepted = request.expect.status_ok(status)
            retried = not accepted and request.retry.retries_status(status)
            return AttemptResult(
                Outcome.RETRYABLE if retried else Outcome.FAILURE,
                took(),
                error_class=type(exc).__name__,
                error_message=f"status {status}, but the answer cannot be read: {_error(exc)}",
                applied=accepted,
            )
        # Before the head: the request may have left.
        return AttemptResult(
            Outcome.RETRYABLE,
            took(),
            error_class=type(exc).__name__,
            error_message=f"unexpected error while sending: {_error(exc)}",
            in_doubt=True,
        )


def _answered(
    request: PreparedRequest,
    response: httpx.Response,
    check: Check,
    started: float,
    clock: Callable[[], float],
) -> AttemptResult:
    """Read and judge a response whose head has arrived."""
    status = response.status_code
    accepted = request.expect.status_ok(status)
    # Keep the whole body only when something reads it; otherwise what the journal keeps,
    # and the rest is read and dropped (the connection stays usable).
    wanted = accepted and request.reads_body
    keep = request.max_response if wanted else JOURNALED_BODY
    chunks: list[bytes] = []
    size = 0
    too_large = False
    # The raw header list decodes far faster than httpx.Headers' item by item view.
    received = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw)
    encoding = received.get("content-encoding")
    decoder = _decoder(encoding) if encoding else _IDENTITY
    undecodable: str | None = None
    # A response built whole (httpx.MockTransport) has no stream left to read.
    raws = (response.content,) if response.is_stream_consumed else response.iter_raw()
    for raw in raws:
        if size > keep:
            continue  # read to the end and dropped: the connection stays usable
        try:
            # Decoded no further than needed: a small compressed body can inflate to
            # gigabytes.
            chunk = decoder.feed(raw, keep + 1 - size)
        except (zlib.error, ValueError) as exc:
            undecodable, size = _error(exc), keep + 1
            continue
        chunks.append(chunk)
        size += len(chunk)
        if wanted and size > keep:
            too_large = True
            break  # nothing more is needed: closing drops the rest
    duration = (clock() - started) * 1000
    content = b"".join(chunks)
    text = _text(content[:keep], received)
    if undecodable is not None:
        text = f"(the body cannot be decoded: {undecodable})"
    view = ResponseView(status, received, text, duration)
    retry = request.retry
    if retry.retries_status(status) and not accepted:
        return AttemptResult(
            Outcome.RETRYABLE,
            duration,
            view,
            error_class="HTTPStatus",
            error_message=f"status {status}, retried",
            retry_after=_retry_after(received.get("retry-after")),
        )
    if not accepted:
        expected = ", ".join(str(s) for s in request.expect.status)
        return AttemptResult(
            Outcome.FAILURE,
            duration,
            view,
            error_class="HTTPStatus",
            error_message=f"status {status}, expected {expected}",
        )
    if too_large:
        return AttemptResult(
            Outcome.FAILURE,
            duration,
            view,
            error_class="ResponseTooLarge",
            error_message=f"status {status}, but the body is larger than "
            f"max_response ({format_size(keep)}), and outputs "
            "or expect.that read it",
            applied=True,
        )
    if undecodable is not None and wanted:
        return AttemptResult(
            Outcome.FAILURE,
            duration,
            view,
            error_class="DecodingError",
            error_message=f"status {status}, but the body cannot be decoded: {undecodable}",
            applied=True,
        )
    outputs, problem = check(view)
    if problem is not None:
        return AttemptResult(
            Outcome.FAILURE,
            duration,
            view,
            error_class="Expectation",
            error_message=problem,
            applied=True,
        )
    return AttemptResult(Outcome.SUCCESS, duration, view, applied=True, outputs=outputs)


class _Identity:
    def feed(self, data: bytes, room: int) -> bytes:
        return data[:room]


class _Inflate:
    """gzip or deflate, decoded incrementally: each call gives at most `room` bytes."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        # gzip has its own header; "deflate" is zlib-wrapped, or raw from some servers.
        self._inflater = zlib.decompressobj(
            16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        )
        self._started = False
        self._tail = b""

    def feed(self, data: bytes, room: int) -> bytes:
        if room <= 0:
            return b""
        data = self._tail + data
        try:
            out = self._inflater.decompress(data, room)
        except zlib.error:
            if self._started or self._encoding != "deflate":
                raise
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._inflater.decompress(data, room)
        self._started = True
        self._tail = self._inflater.unconsumed_tail
        return out


class _Unsupported:
    def __init__(self, encoding: str) -> None:
        self._encoding = encoding

    def feed(self, data: bytes, room: int) -> bytes:
        raise ValueError(f"it is encoded with {self._encoding}, which sagactl does not decode")


_IDENTITY = _Identity()


def _decoder(content_encoding: str) -> _Identity | _Inflate | _Unsupported:
    """The decoder of a body's Content-Encoding (gzip and deflate; the client asks for
    nothing else)."""
    encodings = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
    encodings = [e for e in encodings if e != "identity"]
    if not encodings:
        return _IDENTITY
    if len(encodings) == 1 and encodings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflate(encodings[0])
    return _Unsupported(", ".join(encodings))
