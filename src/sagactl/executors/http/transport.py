"""The HTTP client sagactl sends with: one connection pool for the threads of a run, and a
deadline per attempt that bounds everything the attempt does on the network (SPEC §3.1).

httpx's timeouts bound each socket operation, not the whole: a server that sends its answer one
byte at a time, each within the read timeout, keeps a request open for ever. So the transport
runs httpcore over a network backend whose reads, writes and connects each get only what is left
of the attempt's deadline, set by `deadline()` on the thread that sends. Past it, the operation
fails with httpcore's own timeout, which httpx reports as usual (ReadTimeout, WriteTimeout…).
"""

from __future__ import annotations

import http.cookiejar
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["DeadlineTransport", "client", "deadline"]

_local = threading.local()


class deadline:
    """Bound every network operation of this thread to `seconds` from now, in all.

    A class rather than a generator: it is entered once per attempt, and contextlib's
    machinery would cost more than what it guards."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        _local.at = time.monotonic() + self.seconds
        _local.sent = False  # not a byte of this attempt's request has left yet

    def __exit__(self, *exc: object) -> None:
        _local.at = None


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The timeout of one operation: what its own timeout allows, and no more than what is
    left of the attempt. Raises `error` once nothing is left."""
    at: float | None = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the attempt's timeout passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write stops at the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # httpcore's own write gives each `send` the whole timeout: a peer that reads slowly
        # would get it many times over. Each send here gets only what is left.
        sock: socket.socket | None = self._inner.get_extra_info("socket")
        if sock is None:
            self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))
            return
        view = memoryview(buffer)
        while view:
            # Time up before a byte of the request left (connecting took it all): the
            # service cannot have seen it, as after a connect timeout.
            error = (
                httpcore.WriteTimeout if getattr(_local, "sent", True) else httpcore.ConnectTimeout
            )
            try:
                sock.settimeout(_left(timeout, error))
                sent = sock.send(view)
            except TimeoutError as exc:
                raise error(exc) from exc
            except OSError as exc:
                raise httpcore.WriteError(exc) from exc
            if sent:
                _local.sent = True
            view = view[sent:]

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.start_tls(
                ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's socket backend, with the deadline applied to every stream it opens."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.connect_tcp(
                host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
            )
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.connect_unix_socket(
                path, _left(timeout, httpcore.ConnectTimeout), socket_options
            )
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport over the deadline backend."""

    def __init__(self, limits: httpx.Limits | None = None, verify: bool = False) -> None:
        limits = limits or httpx.Limits()
        # HTTPTransport's constructor takes no network backend; everything else it does is
        # through the pool it would build, so this builds that pool over ours instead.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )


class _LazyTLS(httpx.BaseTransport):
    """Builds the TLS transport on the first https request: loading the CA bundle costs
    tens of milliseconds that a saga of plain-http services never needs."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._transport: DeadlineTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._transport is None:
                self._transport = DeadlineTransport(self._limits, verify=True)
        return self._transport.handle_request(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def client(concurrency: int = 8) -> httpx.Client:
    """The client of one run (or of one process's runs): keep-alive connections for
    `concurrency` requests in flight."""
    limits = httpx.Limits(
        max_connections=max(concurrency, 1) * 2, max_keepalive_connections=max(concurrency, 1)
    )
    # Plain http needs no certificates: verify=False only skips loading the CA bundle there.
    # Bodies are decoded as they are read, and only as far as needed (see `attempt`): gzip and
    # deflate, which zlib decodes with a bound on what each call gives.
    return httpx.Client(
        transport=_LazyTLS(limits),
        mounts={"http://": DeadlineTransport(limits, verify=False)},
        headers={"Accept-Encoding": "gzip, deflate"},
        # No cookie jar: a cookie a service sets is not sent again, to it or to any other
        # (cookies ignore ports), nor shown unmasked. A saga sends the cookies it writes.
        cookies=http.cookiejar.CookieJar(policy=_RefuseCookies()),
    )


class _RefuseCookies(http.cookiejar.DefaultCookiePolicy):
    """Keeps no cookie a response sets."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False
