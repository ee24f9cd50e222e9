"""Turn a step's request into a concrete one: templates rendered, URL joined, query encoded.

Shared by `plan` (with placeholders for what is not known yet) and the engine (with real values).
No IO here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from sagactl import __version__
from sagactl.definition.scope import foreach_items, step_scope
from sagactl.definition.templating import (
    Renderer,
    TemplateProblem,
    is_template,
    references,
    strings_in,
)
from sagactl.errors import DefinitionError, DefinitionErrors, Location, RenderError
from sagactl.model import BodyKind, Expect, Item, Phase, Request, RetryPolicy, Saga, Step
from sagactl.records import item_key
from sagactl.redact import Redactor

__all__ = [
    "MAX_BODY",
    "MAX_URL",
    "USER_AGENT",
    "PreparedRequest",
    "join_url",
    "preflight",
    "prepare",
]


MAX_BODY = 16 * 1024 * 1024
"""The largest request body sent, in bytes."""


@dataclass(slots=True)
class PreparedRequest:
    """A request ready to send: every template rendered, the URL and headers checked.
    Never changed once built (not frozen only because building a frozen dataclass costs a
    good part of preparing a request)."""

    step: str
    phase: Phase
    method: str
    url: str
    headers: dict[str, str]
    """As written in the saga, rendered (the Content-Type of a body is in `header_bytes`)."""
    body_kind: BodyKind | None
    body: Any
    """The rendered body: a JSON value, a form's fields, or text."""
    body_text: str | None
    """The body as sent."""
    content_type: str | None
    timeout: float
    retry: RetryPolicy
    expect: Expect
    idempotency_key: str
    header_bytes: tuple[tuple[bytes, bytes], ...] = ()
    """Every header as sent but the attempt's own: User-Agent, Content-Type, the saga's."""
    body_bytes: bytes | None = None
    reads_body: bool = True
    max_response: int = 16 * 1024 * 1024
    follow_redirects: bool = False
    saga_headers: frozenset[str] = frozenset()
    """Names (lower case) of the headers the saga set, `auth` included: what a redirect to
    another origin does not carry."""


USER_AGENT = f"sagactl/{__version__}"
MAX_URL = 65536
"""The longest URL sent, as httpx allows."""
_HOST = re.compile(r"^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|[0-9A-Fa-f:.]+)$")
_NON_PRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# Most URLs a saga sends: http or https, a plain host name or IPv4 address, maybe a port,
# printable characters. Anything else takes the full check.
_PLAIN_URL = re.compile(
    r"^https?://[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*(?::(?P<port>[0-9]{1,5}))?"
    r"(?:[/?#][^\x00-\x1f\x7f]*)?$"
)


def _check_url(url: str, where: Callable[[], Location], mask: Callable[[str], str] = str) -> None:
    """Raises RenderError (at `where()`) for a URL that cannot be sent: not http or https,
    no host, an invalid host or port, a control character, too long. The checks httpx
    makes when it parses a URL to send it, made here without parsing it twice. The URL is
    quoted `mask`ed, then cut short: a secret across the cut would no longer be masked."""
    plain = _PLAIN_URL.match(url) if len(url) <= MAX_URL else None
    if plain is not None and (plain["port"] is None or 0 < int(plain["port"]) < 65536):
        return
    shown = _shorten(mask(url))

    def invalid(why: str) -> RenderError:
        return RenderError(where(), f"'{shown}' is not a valid URL: {why}")

    if len(url) > MAX_URL:
        raise invalid(f"longer than {MAX_URL:,} characters")
    if (bad := _NON_PRINTABLE.search(url)) is not None:
        raise invalid(f"it holds the control character {bad.group()!r}")
    try:
        parts = urlsplit(url)
        port_number = parts.port
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise RenderError(where(), f"'{shown}': only http and https URLs can be sent")
    host = parts.hostname
    if not host:
        raise RenderError(where(), f"'{shown}' has no host")
    if not _HOST.match(host):
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_host = ""
        if not _HOST.match(ascii_host):
            raise invalid(f"invalid host '{mask(host)}'")
    if port_number == 0:
        raise invalid("invalid port 0")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


_UA = (b"User-Agent", USER_AGENT.encode())
_JSON_TYPE = (b"Content-Type", b"application/json")


def _header_value(value: str, where: Callable[[], Location]) -> bytes:
    """A header value as bytes on the wire: Latin-1 text, without line breaks or control
    characters (HTTP's rule). Raises RenderError at `where()`."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise RenderError(
            where(),
            f"{value[exc.start]!r} is not Latin-1 text, which is all a "
            "header can hold: put such values in the body, or escape "
            "them with the urlencode filter",
        ) from None
    if _CONTROL.search(value):
        raise RenderError(
            where(), "the value holds a line break or control character, which a header cannot hold"
        )
    return raw


def _text(value: Any) -> str:
    """A scalar as it goes into a header, query or form field: booleans as JSON spells them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def join_url(base: str | None, url: str) -> str:
    """`url` if absolute, else `base` and `url` joined with exactly one slash.

    Unlike urljoin, the base's path is kept: `http://h/api` + `/items` is `http://h/api/items`.
    """
    if "://" in url or not base:
        return url
    return base.rstrip("/") + "/" + url.lstrip("/")


# One encoder for every body: json.dumps with options builds a new one per call. JSON has no
# NaN or infinity (RFC 8259): they are an error, not the `NaN` json.dumps would write.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


class _Parts:
    """Renders the parts of one request — URL, each header, body — in a scope; each part
    raises RenderError located at its field."""

    def __init__(
        self,
        saga: Saga,
        step: Step,
        phase: Phase,
        request: Request,
        scope: Mapping[str, Any],
        renderer: Renderer,
    ) -> None:
        self.saga, self.step, self.phase, self.request = saga, step, phase, request
        self.scope, self.renderer = scope, renderer

    def at(self, field: str) -> Location:  # built only for an error: most requests need none
        return Location(
            self.saga.path,
            self.request.line,
            0,
            f"steps[{self.step.index}].{self.phase.value}.{field}",
        )

    def render(self, value: Any, field: str) -> Any:
        try:
            return self.renderer.render(value, self.scope)
        except TemplateProblem as exc:
            raise RenderError(self.at(field), str(exc)) from None

    def url(self) -> str:
        request = self.request
        url = _text(self.render(request.url, "url"))
        base = self.render(request.base_url, "base_url") if request.base_url is not None else None
        url = join_url(_text(base) if base is not None else None, url)
        if "://" not in url:
            raise RenderError(self.at("url"), f"'{url}' is relative and no base_url is set")
        query = self.render(request.query, "query") if request.query else None
        if query:
            pairs = [
                (k, _text(v))
                for k, vs in query.items()
                for v in (vs if isinstance(vs, list) else [vs])
            ]
            url += ("&" if "?" in url else "?") + urlencode(pairs)
        return url

    def header(self, name: str) -> str:
        return _text(self.render(self.request.headers[name], f"headers.{name}"))

    def headers(self) -> dict[str, str]:
        """The saga's headers, rendered, with `auth` as the Authorization header."""
        request = self.request
        headers = {name: self.header(name) for name in request.headers}
        if request.auth is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = self.auth()
        return headers

    def auth(self) -> str:
        auth = self.request.auth or {}
        if "basic" in auth:
            user, password = (_text(v) for v in self.render(list(auth["basic"]), "auth.basic"))
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            return f"Basic {pair}"
        return f"Bearer {_text(self.render(auth['bearer'], 'auth.bearer'))}"

    def where(self, field: str) -> Callable[[], Location]:
        return lambda: self.at(field)

    def header_bytes(
        self, headers: Mapping[str, str], content_type: str | None
    ) -> tuple[tuple[bytes, bytes], ...]:
        """Every header as sent but the attempt's own: ours unless the saga sets them, then
        the saga's."""
        if not headers:  # the commonest case, without building anything
            if content_type is None:
                return (_UA,)
            if content_type == "application/json":
                return (_UA, _JSON_TYPE)
        ours = [_UA]
        if content_type:
            ours.append((b"Content-Type", content_type.encode("latin-1")))
        lowered = {k.lower().encode() for k in headers}
        return (
            *(pair for pair in ours if pair[0].lower() not in lowered),
            *(
                (k.encode("ascii"), _header_value(v, self.where(f"headers.{k}")))
                for k, v in headers.items()
            ),
        )

    def body(self) -> tuple[Any, str | None, str | None]:
        """(the body, its text as sent, its Content-Type)."""
        request = self.request
        if request.body_kind is BodyKind.JSON:
            body = self.render(request.body, "json")
            try:
                return body, _JSON(body), "application/json"
            except (TypeError, ValueError) as exc:
                raise RenderError(self.at("json"), f"cannot be sent as JSON: {exc}") from None
        if request.body_kind is BodyKind.FORM:
            form = {k: _text(v) for k, v in self.render(request.body, "form").items()}
            return form, urlencode(form), "application/x-www-form-urlencoded"
        if request.body_kind is BodyKind.TEXT:
            text = _text(self.render(request.body, "body"))
            return text, text, None
        return None, None, None

    def body_bytes(self, text: str | None) -> bytes | None:
        if text is None:
            return None
        try:
            raw = text.encode()
        except UnicodeEncodeError as exc:
            kind = self.request.body_kind
            raise RenderError(
                self.at(kind.value if kind else "body"),
                f"the body holds {text[exc.start]!r}, which is not text (a lone "
                "surrogate, from some JSON): it cannot be sent",
            ) from None
        if len(raw) > MAX_BODY:
            kind = self.request.body_kind
            raise RenderError(
                self.at(kind.value if kind else "body"),
                f"the body is {len(raw):,} bytes, more than the "
                f"{MAX_BODY // 2**20} MiB a request may send",
            )
        return raw


def prepare(
    saga: Saga,
    step: Step,
    phase: Phase,
    context: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    renderer: Renderer,
    *,
    check: bool = True,
    secrets: Redactor | None = None,
    item: Item | None = None,
) -> PreparedRequest:
    """`step`'s request for `phase`, rendered with the run's context and `steps`, the
    namespace of the outputs known so far (`{"reserve": {"outputs": {...}}}`), and for a
    foreach step, the `item` it is for.

    Raises RenderError for a template that cannot be rendered and, with `check`, for a
    request that could not be sent (its URL, a header, a body too large). With `secrets`,
    the values of its credential headers become secrets."""
    request = step.request(phase)
    if not isinstance(request, Request):
        raise ValueError(f"step {step.id} has no HTTP {phase.value}")
    scope = step_scope(context, step.id, phase, steps, item=item)
    parts = _Parts(saga, step, phase, request, scope, renderer)
    url = parts.url()
    headers = parts.headers() if request.headers or request.auth else {}
    if secrets is not None:
        for name, value in headers.items():
            secrets.credentials(name, value)
    body, body_text, content_type = parts.body()
    header_bytes: tuple[tuple[bytes, bytes], ...] = ()
    body_bytes = None
    if check:
        _check_url(url, parts.where("url"), secrets.text if secrets else str)
        header_bytes = parts.header_bytes(headers, content_type)
        body_bytes = parts.body_bytes(body_text)
    return PreparedRequest(
        step=step.id if item is None else item_key(step.id, item.index),
        phase=phase,
        method=request.method,
        url=url,
        headers=headers,
        body_kind=request.body_kind,
        body=body,
        body_text=body_text,
        content_type=content_type,
        timeout=request.timeout,
        retry=request.retry,
        expect=request.expect,
        idempotency_key=scope["step"]["idempotency_key"],
        header_bytes=header_bytes,
        body_bytes=body_bytes,
        reads_body=request.reads_body,
        max_response=request.max_response,
        follow_redirects=request.follow_redirects,
        saga_headers=frozenset(k.lower() for k in headers)
        if request.follow_redirects
        else frozenset(),
    )


def _reads(value: Any, root: str) -> bool:
    """Whether a template in `value` reads the name `root`."""
    return any(
        ref.root == root
        for text in strings_in(value)
        if is_template(text)
        for ref in references(text)
    )


def preflight(
    saga: Saga, context: Mapping[str, Any], renderer: Renderer, secrets: Redactor | None = None
) -> dict[tuple[str, Phase], PreparedRequest]:
    """Before anything is journaled or sent (SPEC §3.2 item 0): every request that depends
    only on inputs, env, vars, secrets and the run, prepared and checked; in every other
    request, each part that depends only on those, checked; and every read of a declared env
    name that is not set, refused unless it has a default.

    Returns the requests prepared, for the run to send as they are. Raises DefinitionErrors
    with every problem found."""
    problems: dict[str, DefinitionError] = {}

    def problem(exc: RenderError) -> None:
        problems.setdefault(str(exc), DefinitionError(exc.location, exc.message))

    ready: dict[tuple[str, Phase], PreparedRequest] = {}
    unset = {name for name in saga.env if name not in context["env"]}
    for step in saga.steps:
        if step.repeated:
            if _reads(step.foreach, "steps"):
                _unset_env(
                    Location(saga.path, step.line, 0, f"steps[{step.index}].foreach"),
                    step.foreach,
                    unset,
                    problems,
                )
            else:
                try:  # a list known before the run starts: it must be one
                    foreach_items(saga, step, context, {}, renderer)
                except RenderError as exc:
                    problem(exc)
        for phase, request in (
            (Phase.ACTION, step.action),
            (Phase.COMPENSATE, step.compensate),
            (Phase.CONFIRM, step.confirm),
            (Phase.VERIFY, step.verify),
        ):
            if not isinstance(request, Request):
                continue  # none, or of another kind: its executor checks it as it runs
            if not request.reads_steps and not step.repeated:
                try:
                    ready[(step.id, phase)] = prepare(
                        saga, step, phase, context, {}, renderer, secrets=secrets
                    )
                except RenderError as exc:
                    problem(exc)
                if unset and request.expect.that:
                    _unset_env(
                        Location(
                            saga.path,
                            request.line,
                            0,
                            f"steps[{step.index}].{phase.value}.expect.that",
                        ),
                        ["{{ " + e + " }}" for e in request.expect.that],
                        unset,
                        problems,
                    )
                continue
            parts = _Parts(
                saga, step, phase, request, step_scope(context, step.id, phase, {}), renderer
            )
            fields = {
                "url": [request.url, request.base_url, request.query],
                **{f"headers.{k}": v for k, v in request.headers.items()},
                **({"auth": request.auth} if request.auth is not None else {}),
                (request.body_kind.value if request.body_kind else "body"): request.body,
            }
            for field, value in fields.items():
                try:
                    if _reads(value, "steps") or _reads(value, "item"):
                        # Known only once the steps it reads have run, or for each item: only
                        # its env is checked.
                        _unset_env(parts.at(field), value, unset, problems)
                    elif field == "url":
                        _check_url(
                            parts.url(), parts.where("url"), secrets.text if secrets else str
                        )
                    elif field.startswith("headers."):
                        name = field.removeprefix("headers.")
                        _header_value(parts.header(name), parts.where(field))
                    elif field == "auth":
                        _header_value(parts.auth(), parts.where(field))
                    else:
                        parts.body_bytes(parts.body()[1])
                except RenderError as exc:
                    problem(exc)
            _unset_env(
                parts.at("expect.that"),
                ["{{ " + e + " }}" for e in request.expect.that],
                unset,
                problems,
            )
        if unset and step.outputs:
            _unset_env(
                Location(saga.path, step.line, 0, f"steps[{step.index}].outputs"),
                step.outputs,
                unset,
                problems,
            )
    if problems:
        raise DefinitionErrors(list(problems.values()))
    return ready


def _unset_env(
    where: Location, value: Any, unset: set[str], problems: dict[str, DefinitionError]
) -> None:
    """A problem for each env name in `unset` that a template of `value` reads without a
    default (`| default(…)`, `is defined`) anywhere in that template."""
    if not unset:
        return
    for text in strings_in(value):
        if not is_template(text):
            continue
        found = [
            ref
            for ref in references(text)
            if ref.root == "env" and ref.path and ref.path[0] in unset
        ]
        guarded = {ref.path[0] for ref in found if ref.guarded}
        for name in sorted({ref.path[0] for ref in found} - guarded):
            error = DefinitionError(
                where,
                f"env.{name} is not set: set {name} in the environment (or give it a default)",
            )
            problems.setdefault(str(error), error)
