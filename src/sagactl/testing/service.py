"""A small resource service on 127.0.0.1 that honours `Idempotency-Key`, with fault injection:
what the demo runs sagas against, and what the tests check sagactl's promises with.

    PUT    /any/path   store the JSON body there          201 new, 200 replaced
    POST   /any/path   create a child /any/path/ID        201
    DELETE /any/path   remove it                          200, or 404 when absent
    GET    /any/path   read it                            200, or 404

A request whose `Idempotency-Key` was seen before gets the first response again and changes
nothing: that is how a service makes retries and resumes safe. An action that arrives after the
compensation of its step (`<run>.<step>.action` after `<run>.<step>.compensate`: a request that
was delayed past its timeout, then overtaken) is refused with 409 and changes nothing, so that a
late request cannot bring back what was undone. A verify (`<run>.<step>.verify`, SPEC §2.6)
that finds nothing is answered 404, and the action's attempts sent until then (its
`Saga-Attempts-Sent`) are refused with 409 if they arrive later, while a later attempt (sent
again by a resume) goes through. Every effect is recorded in `applied`, every request in
`received`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Fault", "Received", "Service"]


@dataclass
class Fault:
    """Misbehaviour for requests matching `method` and a path starting with `path` (and ending
    with `suffix`).

    kinds: `status` (answer `status` without applying, after `delay`), `applied_status`
    (apply, then answer `status` and `body` instead of the usual answer), `delay_before` (wait
    `delay`, then apply), `delay_after` (apply, then wait `delay` before answering),
    `drop_after` (apply, then close the connection without answering), `drop_before` (close
    without applying),
    `trickle` (apply, send the head and the body but its last 4 bytes, then those one every
    `delay` seconds), `hold` (wait until `release` is set, at most a minute, then apply: a
    request kept in flight for as long as a test looks at it), `ok`
    (behave normally: a place in a sequence of faults).
    `times` is how many matching requests misbehave (None: all). With `step` and `phase`, only
    requests whose `Saga-Step` and `Saga-Phase` headers say so match.
    """

    method: str
    path: str
    kind: str = "status"
    status: int = 503
    delay: float = 0.0
    times: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = field(default_factory=lambda: {"error": "injected"})
    """The answer's JSON body, for `status` faults."""
    suffix: str = ""
    step: str | None = None
    phase: str | None = None
    release: threading.Event = field(default_factory=threading.Event)
    """What a `hold` fault waits for."""

    def matches(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> bool:
        headers = headers or {}
        return (
            self.method in ("*", method)
            and path.startswith(self.path)
            and path.endswith(self.suffix)
            and (self.times is None or self.times > 0)
            and (self.step is None or headers.get("Saga-Step") == self.step)
            and (self.phase is None or headers.get("Saga-Phase") == self.phase)
        )


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    fault: str | None = None
    """The kind of fault this request met, if any."""


def _number(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


class Service:
    """Runs in a thread; use as a context manager. `url` is its base URL."""

    def __init__(self, extra: dict[str, dict[str, Any]] | None = None) -> None:
        self.resources: dict[str, Any] = {}
        self.applied: list[tuple[str, str, str]] = []
        """(idempotency key, method, path) of every effect, in order."""
        self.received: list[Received] = []
        self.faults: list[Fault] = []
        self.extra = extra or {}
        """Path prefix -> fields added to responses under it (e.g. {"reserved": true})."""
        self._replies: dict[str, tuple[int, bytes]] = {}
        self._undone: set[str] = set()
        """`<run>.<step>` of every compensation processed: the barrier against late actions."""
        self.refused_late: list[str] = []
        """Idempotency keys of actions refused because their compensation came first, or
        because a verify was answered that they never arrived."""
        self.busy = 0
        """Requests being handled now (a delayed one, say): none once all have landed."""
        self.most_busy = 0
        """The most requests ever handled at once."""
        self.by_hand: set[str] = set()
        """Steps (or items, `lines[2]`) a test applied by hand, as an operator would before
        `sagactl skip`: their effect is in `resources` without a request ever received."""
        self._fences: dict[str, int] = {}
        """`<run>.<step>` -> the attempts of its action sent before a verify was answered
        "absent" (its `Saga-Attempts-Sent`): those attempts are refused if they arrive."""
        self._lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll interval: shutting down waits for one, and tests start many services.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Service:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if (method is None or r.method == method) and (path is None or r.path.startswith(path))
        ]

    # --- request handling ---------------------------------------------------------------------

    def _fault(self, method: str, path: str, headers: Mapping[str, str]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, headers):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _extra(self, path: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for prefix, values in self.extra.items():
            if path.startswith(prefix):
                fields.update(values)
        return fields

    def _apply(
        self, method: str, path: str, body: Any, key: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = headers or {}
        with self._lock:
            if key and key in self._replies:
                status, payload = self._replies[key]
                return status, json.loads(payload)
            if key.endswith(".compensate"):
                self._undone.add(key.removesuffix(".compensate"))
            elif key.endswith(".action") and key.removesuffix(".action") in self._undone:
                self.refused_late.append(key)
                return 409, {"error": "this step was compensated before this action arrived"}
            elif key.endswith(".action") and _number(headers.get("Saga-Attempt")) <= (
                self._fences.get(key.removesuffix(".action"), 0)
            ):
                self.refused_late.append(key)
                return 409, {"error": "a verify was told this action never arrived"}
            if method == "GET":
                if path in self.resources:
                    return 200, self.resources[path]
                if key.endswith(".verify"):
                    # Told "absent": the attempts sent so far must not land later.
                    base = key.removesuffix(".verify")
                    sent = _number(headers.get("Saga-Attempts-Sent"))
                    self._fences[base] = max(self._fences.get(base, 0), sent)
                return 404, {"error": "not found"}
            if method == "PUT":
                previous = self.resources.get(path)
                self.resources[path] = body
                status, reply = (
                    (200 if previous is not None else 201),
                    {
                        "id": path.rsplit("/", 1)[-1],
                        "path": path,
                        "previous": previous.get("version") if isinstance(previous, dict) else None,
                        **(body if isinstance(body, dict) else {}),
                        **self._extra(path),
                    },
                )
            elif method == "POST":
                self._counter += 1
                child = f"{path.rstrip('/')}/{self._counter}"
                self.resources[child] = body
                status, reply = (
                    201,
                    {
                        "id": str(self._counter),
                        "path": child,
                        **(body if isinstance(body, dict) else {}),
                        **self._extra(path),
                    },
                )
            elif method == "DELETE":
                removed = [p for p in self.resources if p == path or p.startswith(path + "/")]
                if not removed:
                    return 404, {"error": "not found"}
                for p in removed:
                    del self.resources[p]
                status, reply = 200, {"deleted": path}
            else:
                return 405, {"error": "method not allowed"}
            self.applied.append((key, method, path))
            if key:
                self._replies[key] = (status, json.dumps(reply).encode())
            return status, reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                path = self.path.split("?", 1)[0]
                headers = dict(self.headers.items())
                key = self.headers.get("Idempotency-Key", "")
                fault = service._fault(self.command, path, headers)
                if fault and fault.kind == "ok":
                    fault = None
                with service._lock:
                    service.received.append(
                        Received(
                            self.command,
                            self.path,
                            headers,
                            body,
                            time.monotonic(),
                            fault.kind if fault else None,
                        )
                    )
                if fault and fault.kind == "status":
                    time.sleep(fault.delay)
                    self._reply(fault.status, fault.body, fault.headers)
                    return
                if fault and fault.kind == "drop_before":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault and fault.kind == "delay_before":
                    time.sleep(fault.delay)
                if fault and fault.kind == "hold":
                    fault.release.wait(60)
                status, reply = service._apply(self.command, path, body, key, headers)
                if fault and fault.kind == "applied_status":
                    self._reply(fault.status, fault.body, fault.headers)
                    return
                if fault and fault.kind == "drop_after":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault and fault.kind == "delay_after":
                    time.sleep(fault.delay)
                if fault and fault.kind == "trickle":
                    self._trickle(status, reply, fault.delay)
                    return
                self._reply(status, reply)

            def _trickle(self, status: int, payload: Any, delay: float) -> None:
                data = json.dumps(payload).encode()
                head = (
                    f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                    "\r\n"
                )
                try:
                    self.wfile.write(head.encode() + data[:-4])
                    for i in range(len(data) - 4, len(data)):
                        time.sleep(delay)
                        self.wfile.write(data[i : i + 1])
                except OSError:
                    self.close_connection = True

            def _reply(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                # One write for head and body: no Nagle delay on keep-alive connections.
                head = [
                    f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                    "Content-Type: application/json",
                    f"Content-Length: {len(data)}",
                    *(f"{k}: {v}" for k, v in (headers or {}).items()),
                ]
                try:
                    self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                except OSError:
                    self.close_connection = True

            def _counted(self) -> None:
                with service._lock:
                    service.busy += 1
                    service.most_busy = max(service.most_busy, service.busy)
                try:
                    self._handle()
                finally:
                    with service._lock:
                        service.busy -= 1

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _counted

        return Handler
