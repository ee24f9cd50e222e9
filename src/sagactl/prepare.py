"""Turn a step's request into a concrete one: templates rendered, URL joined, query encoded.

Shared by `plan` (with placeholders for what is not known yet) and the engine (with real values).
No IO here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sagactl import __version__
from sagactl.errors import Location, RenderError
from sagactl.model import BodyKind, Expect, Phase, RetryPolicy, Saga, Step
from sagactl.templating import Namespace, Renderer, TemplateProblem

__all__ = ["PreparedRequest", "idempotency_key", "join_url", "plan", "prepare", "run_context"]


MAX_BODY = 16 * 1024 * 1024
"""The largest request body sent, in bytes."""


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready to send: every template rendered, the URL and headers checked."""

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
    target: Any = None
    """The URL parsed, as httpx sends it (None in `plan`, which sends nothing)."""


def idempotency_key(run_id: str, step_id: str, phase: Phase) -> str:
    """The same for every attempt and every resume of one request (SPEC §3.3)."""
    return f"{run_id}.{step_id}.{phase.value}"


USER_AGENT = f"sagactl/{__version__}"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_url(url: str, where: Location) -> Any:
    """`url` parsed as httpx will send it. Raises RenderError for a URL that cannot be sent:
    not http or https, no host, an invalid host or port, too long."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise RenderError(where, f"'{_shorten(url)}' is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise RenderError(where, f"'{_shorten(url)}': only http and https URLs can be sent")
    if not parsed.host:
        raise RenderError(where, f"'{_shorten(url)}' has no host")
    return parsed


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _header_value(name: str, value: str, where: Location) -> bytes:
    """A header value as bytes on the wire: Latin-1 text, without line breaks or control
    characters (HTTP's rule). Raises RenderError naming the header."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise RenderError(where, f"header {name}: {value[exc.start]!r} is not Latin-1 text, "
                                 "which is all a header can hold: put such values in the body, "
                                 "or escape them with the urlencode filter") from None
    if _CONTROL.search(value):
        raise RenderError(where, f"header {name}: holds a line break or control character")
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


def run_context(
    saga: Saga,
    *,
    run_id: str,
    inputs: Mapping[str, Any],
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    renderer: Renderer,
) -> dict[str, Any]:
    """The names every template of a run sees, with `vars` computed in order."""
    variables = Namespace("vars")
    context: dict[str, Any] = {
        "inputs": Namespace("inputs", inputs),
        "env": Namespace("env", {name: env[name] for name in saga.env if name in env}),
        "secrets": Namespace("secrets",
                             {name: secrets[name] for name in saga.secrets if name in secrets}),
        "run": {"id": run_id, "name": saga.name},
        "vars": variables,
    }
    for name, value in saga.vars:
        try:
            variables[name] = renderer.render(value, context)
        except TemplateProblem as exc:
            raise RenderError(Location(saga.path, path=f"vars.{name}"), str(exc)) from None
    return context


# One encoder for every body: json.dumps with options builds a new one per call. JSON has no
# NaN or infinity (RFC 8259): they are an error, not the `NaN` json.dumps would write.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def prepare(
    saga: Saga,
    step: Step,
    phase: Phase,
    context: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    renderer: Renderer,
    *,
    check: bool = True,
) -> PreparedRequest:
    """`step`'s request for `phase`, rendered with the run's context and `steps`, the
    namespace of the outputs known so far (`{"reserve": {"outputs": {...}}}`).

    Raises RenderError for a template that cannot be rendered and, with `check`, for a
    request that could not be sent (its URL, a header, a body too large)."""
    request = step.request(phase)
    if request is None:
        raise ValueError(f"step {step.id} has no {phase.value}")
    key = idempotency_key(context["run"]["id"], step.id, phase)
    scope = {
        **context,
        "step": {"id": step.id, "idempotency_key": key},
        "steps": steps,
    }

    def at(field: str) -> Location:  # built only for an error: most requests need none
        return Location(saga.path, request.line, 0, f"steps[{step.index}].{phase.value}.{field}")

    def render(value: Any, field: str) -> Any:
        try:
            return renderer.render(value, scope)
        except TemplateProblem as exc:
            raise RenderError(at(field), str(exc)) from None

    url = _text(render(request.url, "url"))
    base = render(request.base_url, "base_url") if request.base_url is not None else None
    url = join_url(_text(base) if base is not None else None, url)
    if "://" not in url:
        raise RenderError(at("url"), f"'{url}' is relative and no base_url is set")
    query = render(request.query, "query") if request.query else None
    if query:
        pairs = [(k, _text(v)) for k, vs in query.items()
                 for v in (vs if isinstance(vs, list) else [vs])]
        url += ("&" if "?" in url else "?") + urlencode(pairs)
    headers = {k: _text(v) for k, v in render(request.headers, "headers").items()} \
        if request.headers else {}
    body: Any = None
    body_text: str | None = None
    content_type: str | None = None
    if request.body_kind is BodyKind.JSON:
        body = render(request.body, "json")
        try:
            body_text = _JSON(body)
        except (TypeError, ValueError) as exc:
            raise RenderError(at("json"), f"cannot be sent as JSON: {exc}") from None
        content_type = "application/json"
    elif request.body_kind is BodyKind.FORM:
        body = {k: _text(v) for k, v in render(request.body, "form").items()}
        body_text, content_type = urlencode(body), "application/x-www-form-urlencoded"
    elif request.body_kind is BodyKind.TEXT:
        body = body_text = _text(render(request.body, "body"))
    target: Any = None
    header_bytes: tuple[tuple[bytes, bytes], ...] = ()
    body_bytes = body_text.encode() if body_text is not None else None
    if check:
        target = _check_url(url, at("url"))
        sent = {"User-Agent": USER_AGENT}
        if content_type:
            sent["Content-Type"] = content_type
        lowered = {k.lower() for k in headers}
        sent = {k: v for k, v in sent.items() if k.lower() not in lowered}
        header_bytes = tuple((k.encode("ascii"), _header_value(k, v, at(f"headers.{k}")))
                             for k, v in {**sent, **headers}.items())
        if body_bytes is not None and len(body_bytes) > MAX_BODY:
            raise RenderError(at(request.body_kind.value if request.body_kind else "body"),
                              f"the body is {len(body_bytes):,} bytes, more than the "
                              f"{MAX_BODY // 2**20} MiB a request may send")
    return PreparedRequest(
        step=step.id, phase=phase, method=request.method, url=url, headers=headers,
        body_kind=request.body_kind, body=body, body_text=body_text,
        content_type=content_type, timeout=request.timeout, retry=request.retry,
        expect=request.expect, idempotency_key=key, header_bytes=header_bytes,
        body_bytes=body_bytes, reads_body=request.reads_body,
        max_response=request.max_response, target=target,
    )


def plan(saga: Saga, inputs: Mapping[str, Any], env: Mapping[str, str],
         renderer: Renderer) -> list[list[PreparedRequest]]:
    """Every request each step may send, in dependency order, rendered without sending.

    What is known only once running stands as a placeholder: `<run.id>`,
    `<steps.S.outputs.X>`; secrets stand as `***`.
    """
    from sagactl.redact import MASK

    context = run_context(saga, run_id="<run.id>", inputs=inputs, env=env,
                          secrets=dict.fromkeys(saga.secrets, MASK), renderer=renderer)
    steps = {s.id: {"outputs": {name: f"<steps.{s.id}.outputs.{name}>" for name in s.outputs}}
             for s in saga.steps}
    return [
        [prepare(saga, step, phase, context, steps, renderer, check=False)
         for phase in Phase if step.request(phase) is not None]
        for step in saga.ordered_steps()
    ]
