"""`sagactl ui` (SPEC §6): the pages of runs served over the journal by Starlette, read-only.

It binds 127.0.0.1 unless told otherwise; on any other host, and whenever one is given, a
token is required on every request (`?token=` once, then a cookie the page keeps). Every
answer carries a strict Content-Security-Policy: the pages load their style and script from
here and nothing else. Only GET is served: nothing here changes the journal."""

from __future__ import annotations

import datetime
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from markupsafe import escape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sagactl.errors import JournalError
from sagactl.journal.contract import Journal, shown_status
from sagactl.output.pages.views import STATUSES, RunData, list_page, run_page, static_text
from sagactl.records import RunRecord
from sagactl.redact import Redactor

__all__ = ["MIN_TOKEN", "PAGE", "create_app"]

PAGE = 50
"""Runs a page of the list shows."""
_COOKIE = "sagactl_token_{port}"
"""The token's cookie, one per port: a browser sends a host's cookies to all its ports, and
two dashboards on one host must neither overwrite nor receive each other's token."""
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_TOKEN = 16
"""The shortest token accepted: an empty or short one would open the dashboard to guessing."""
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


def _day(text: str, name: str, *, after: bool = False) -> float | None:
    """The local midnight starting the day `text` names; `after`: the one ending it (the next
    day's, so that a day of a change to or from summer time has its 23 or 25 hours)."""
    if not text:
        return None
    try:
        day = datetime.date.fromisoformat(text)
        if after:
            day += datetime.timedelta(days=1)
        return time.mktime(day.timetuple())
    except (ValueError, OverflowError):
        raise _BadRequest(f"{name}: expected a date as YYYY-MM-DD, got {text!r}") from None


class _BadRequest(Exception):
    pass


def create_app(
    journal: Journal,
    read_run: Callable[[RunRecord], RunData],
    *,
    token: str | None = None,
    redactor: Redactor | None = None,
    journal_flag: str = "",
) -> Starlette:
    """The dashboard over `journal`, whose runs `read_run` reads whole; with `token`, every
    request must give it, and without one, only requests for a loopback name are answered
    (so that a page of another site whose name resolves to 127.0.0.1 cannot read it)."""
    redactor = redactor if redactor is not None else Redactor()
    if token is not None and len(token) < MIN_TOKEN:
        raise ValueError(f"a token of at least {MIN_TOKEN} characters is needed")

    def runs(request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "") for k in ("status", "saga", "since", "until", "q")}
        if filters["status"] and filters["status"] not in STATUSES:
            raise _BadRequest(f"status: expected one of {', '.join(STATUSES)}")
        since = _day(filters["since"], "from")
        until = _day(filters["until"], "to", after=True)  # the whole of that day
        before: tuple[float, str] | None = None
        if q.get("before"):
            stamp, _, run_id = q["before"].partition(",")
            try:
                before = (float(stamp), run_id)
            except ValueError:
                raise _BadRequest("before: expected TIME,RUN") from None
        common = dict(
            name=filters["saga"] or None, since=since, until=until, search=filters["q"] or None
        )
        found = _page(journal, filters["status"], before, common)
        next_page = None
        if len(found) > PAGE:
            found = found[:PAGE]
            last = found[-1][0]
            kept = [(k, v) for k, v in filters.items() if v]
            next_page = urlencode([("before", f"{last.created_at!r},{last.id}"), *kept])
        counts = journal.count_runs(**common)  # type: ignore[arg-type]
        html = list_page(
            found,
            counts,
            filters,
            next_page=next_page,
            journal=journal.location,
            redactor=redactor,
        )
        return HTMLResponse(html)

    def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            record = journal.get_run(run_id)
        except JournalError as exc:
            return HTMLResponse(f"<h1>{escape(str(exc))}</h1>", status_code=404)
        data = read_run(record)
        return HTMLResponse(
            run_page(data, journal=journal.location, journal_flag=journal_flag, redactor=redactor)
        )

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("not found", status_code=404)
        return Response(static_text(name), media_type=_STATIC[name])

    def health(request: Request) -> Response:
        return JSONResponse({"journal": journal.location})

    def answering(endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def answer(request: Request) -> Response:
            try:
                return endpoint(request)
            except _BadRequest as exc:
                return PlainTextResponse(str(exc), status_code=400)

        return answer

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        cookie = _COOKIE.format(port=request.scope["server"][1])
        given = request.query_params.get("token") or request.cookies.get(cookie, "")
        if token is None and request.url.hostname not in _LOOPBACK_NAMES:
            response: Any = PlainTextResponse(
                "this dashboard answers on 127.0.0.1 and localhost only", status_code=421
            )
        elif token is not None and not hmac.compare_digest(given.encode(), token.encode()):
            response = PlainTextResponse(
                "a token is needed: open the address sagactl ui printed (with ?token=…)",
                status_code=401,
            )
        elif request.method not in ("GET", "HEAD"):
            response = PlainTextResponse("read-only: only GET", status_code=405)
        else:
            response = await call_next(request)
            if token is not None and request.query_params.get("token"):
                response.set_cookie(cookie, token, httponly=True, samesite="strict")
        for name, value in _HEADERS.items():
            response.headers[name] = value
        return response

    return Starlette(
        routes=[
            Route("/", answering(runs), methods=["GET"]),
            Route("/runs/{run_id}", answering(run), methods=["GET"]),
            Route("/static/{name}", static, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
    )


def _page(
    journal: Journal,
    status: str,
    before: tuple[float, str] | None,
    common: dict[str, Any],
) -> list[tuple[RunRecord, str]]:
    """One page of runs (and one more, to know whether there are others), of the status as
    users see it: an interrupted run is journaled running or compensating, so those are read
    until enough are found."""
    if status not in ("interrupted", "running", "compensating"):
        return [
            (r, shown_status(journal, r))
            for r in journal.list_runs(
                status=status or None, limit=PAGE + 1, before=before, **common
            )
        ]
    found: list[tuple[RunRecord, str]] = []
    live = ("running", "compensating") if status == "interrupted" else (status,)
    while len(found) <= PAGE:
        batch = journal.list_runs(status=live, limit=500, before=before, **common)
        found += [(r, s) for r in batch if (s := shown_status(journal, r)) == status]
        if len(batch) < 500:
            break
        before = (batch[-1].created_at, batch[-1].id)
    return found[: PAGE + 1]
