"""A checked saga file built into the model (`sagactl.model`): defaults merged into each
request, each call built by its kind, outputs sent as credentials made secret."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sagactl.definition import graph, templating
from sagactl.definition import kinds as kinds_
from sagactl.definition.checks import is_secret_output
from sagactl.definition.source import Positions
from sagactl.model import (
    COMPENSATION_RETRY,
    DEFAULT_MAX_RESPONSE,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    BodyKind,
    Call,
    Expect,
    Notify,
    Phase,
    Poll,
    Request,
    RetryPolicy,
    Saga,
    Step,
    parse_duration,
    parse_size,
)

__all__ = ["build"]


def _poll(raw: dict[str, Any]) -> Poll:
    return Poll(
        until=raw["until"],
        fail_if=raw.get("fail_if"),
        every=parse_duration(raw["every"]) if "every" in raw else 2.0,
        timeout=parse_duration(raw["timeout"]) if "timeout" in raw else 600.0,
    )


def _merge(layers: list[Any]) -> dict[str, Any]:
    """Request keys from the least to the most specific layer: headers and query merge key by
    key (header names case-insensitively), retry field by field, anything else is replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for key, value in layer.items():
            if key == "compensation":
                continue
            if key == "headers" and key in merged:
                lowered = {k.lower() for k in value}
                merged[key] = {k: v for k, v in merged[key].items() if k.lower() not in lowered}
                merged[key].update(value)
            elif key in ("query", "retry") and key in merged:
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _retry(raw: Mapping[str, Any] | None, base: RetryPolicy) -> RetryPolicy:
    raw = raw or {}
    return RetryPolicy(
        attempts=raw.get("attempts", base.attempts),
        backoff=parse_duration(raw["backoff"]) if "backoff" in raw else base.backoff,
        factor=float(raw.get("factor", base.factor)),
        max_backoff=parse_duration(raw["max_backoff"])
        if "max_backoff" in raw
        else base.max_backoff,
        jitter=raw.get("jitter", base.jitter),
        on=tuple(raw["on"]) if "on" in raw else base.on,
    )


def _not_retried(retry: RetryPolicy) -> list[int | str]:
    """Every status `retry` does not retry: a class (`"2xx"`) when none of it is, else each
    code of it."""
    statuses: list[int | str] = []
    for first in range(1, 6):
        codes = [c for c in range(first * 100, first * 100 + 100) if not retry.retries_status(c)]
        statuses += [f"{first}xx"] if len(codes) == 100 else codes
    return statuses


def _reads_body(templates: list[Any], *, bare: bool = False) -> bool:
    """Whether any of these templates (or bare expressions) reads the response body:
    `response.json`, `response.text`, or `response` itself or by a computed key."""
    from sagactl.definition.templating import expression_references, references, strings_in

    for text in strings_in(templates):
        for ref in expression_references(text) if bare else references(text):
            if ref.root == "response" and (
                not ref.path or ref.path[0] in ("json", "text") or ref.dynamic
            ):
                return True
    return False


def _request(
    raw: dict[str, Any], phase: Phase, line: int, outputs: Mapping[str, Any] | None = None
) -> Request:
    from sagactl.definition.templating import is_template, references, strings_in

    body_kind = next((BodyKind(k) for k in ("json", "form", "body") if k in raw), None)
    expect = raw.get("expect") or {}
    retry = _retry(
        raw.get("retry"),
        DEFAULT_RETRY if phase in (Phase.ACTION, Phase.VERIFY) else COMPENSATION_RETRY,
    )
    # A verify's answer is judged by its `applied` and `absent`, whatever its status (a 404
    # says "absent" as well as a 200 says "applied"): only the statuses retried are not.
    status = expect.get("status", _not_retried(retry) if phase is Phase.VERIFY else ["2xx"])
    that = list(expect.get("that", ()))
    verdicts = [raw.get(key) for key in ("applied", "absent")]
    return Request(
        phase=phase,
        method=raw["method"],
        url=raw["url"],
        base_url=raw.get("base_url"),
        query=raw.get("query", {}),
        headers=raw.get("headers", {}),
        auth=raw.get("auth"),
        body_kind=body_kind,
        body=raw[body_kind.value] if body_kind else None,
        timeout=parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_TIMEOUT,
        retry=retry,
        expect=Expect(
            status=tuple(status) if isinstance(status, list) else (status,), that=tuple(that)
        ),
        max_response=parse_size(raw["max_response"])
        if "max_response" in raw
        else DEFAULT_MAX_RESPONSE,
        follow_redirects=bool(raw.get("follow_redirects", False)),
        poll=_poll(raw["poll"]) if "poll" in raw else None,
        reads_body=_reads_body(that, bare=True)
        or _reads_body([outputs or {}])
        or _reads_body([v for v in verdicts if v], bare=True)
        or _reads_body(
            [(raw.get("poll") or {}).get(key) for key in ("until", "fail_if")], bare=True
        ),
        reads_steps=any(
            ref.root == "steps"
            for text in strings_in(
                [
                    raw["url"],
                    raw.get("base_url"),
                    raw.get("query"),
                    raw.get("headers"),
                    raw.get("auth"),
                    raw.get(body_kind.value) if body_kind else None,
                ]
            )
            if is_template(text)
            for ref in references(text)
        ),
        line=line,
    )


def _outputs(raw: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The outputs' templates, and the names of those declared secret."""
    templates = {
        name: value["value"] if is_secret_output(value) else value for name, value in raw.items()
    }
    return templates, frozenset(
        name for name, value in raw.items() if is_secret_output(value) and value["secret"]
    )


_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _credential_outputs(steps: list[Step]) -> dict[str, frozenset[str]]:
    """For each step, its outputs that some request sends in a credential header or `auth`."""
    from sagactl.definition.templating import is_template, references, strings_in

    found: dict[str, set[str]] = {}
    for step in steps:
        for request in (step.action, step.compensate, step.confirm):
            if not isinstance(request, Request):
                continue
            values = [v for k, v in request.headers.items() if k.lower() in _CREDENTIALS]
            values.append(request.auth)
            for text in strings_in(values):
                if not is_template(text):
                    continue
                for ref in references(text):
                    if ref.root == "steps" and len(ref.path) >= 3 and ref.path[1] == "outputs":
                        found.setdefault(ref.path[0], set()).add(ref.path[2])
    return {step: frozenset(names) for step, names in found.items()}


def build(
    data: dict[str, Any],
    positions: Positions,
    file: str,
    text: str,
    needs: dict[str, list[str]],
    closure: graph.Closure,
) -> Saga:
    defaults = data.get("defaults") or {}
    compensation = defaults.get("compensation") or {}
    steps = []
    for i, raw in enumerate(data["steps"]):

        def make(phase: Phase, raw_request: Any, index: int = i) -> Call | None:
            if raw_request is None:
                return None
            forward = phase in (Phase.ACTION, Phase.VERIFY)
            layers = [defaults] if forward else [defaults, compensation]
            line = positions.value(("steps", index, phase.value))[0]
            merged = _merge([*layers, raw_request])
            if phase is Phase.VERIFY:
                # A verify's answer is judged by its applied and absent: the statuses that
                # make an action's answer a success do not apply, only its own.
                merged.pop("expect", None)
                if "expect" in raw_request:
                    merged["expect"] = raw_request["expect"]
            kind = kinds_.registered().get(kinds_.kind_of(raw_request))
            if kind is not None:
                merged = {k: v for k, v in merged.items() if k not in ("applied", "absent")}
                return kind.build(merged, phase, line)
            # The action's outputs are read from its answer, or from its verify's.
            outputs = data["steps"][index].get("outputs") if forward else None
            return _request(merged, phase, line, outputs)

        action = make(Phase.ACTION, raw["action"])
        assert action is not None
        outputs, secret = _outputs(raw.get("outputs") or {})
        steps.append(
            Step(
                id=raw["id"],
                index=i,
                # Without `needs`: the steps above that no other step above depends on, which
                # imply every step above (listing them all would grow with the square).
                needs=tuple(needs[raw["id"]] if "needs" in raw else closure.reduced[raw["id"]]),
                action=action,
                compensate=make(Phase.COMPENSATE, raw.get("compensate")),
                confirm=make(Phase.CONFIRM, raw.get("confirm")),
                outputs=outputs,
                description=raw.get("description", ""),
                explicit_needs="needs" in raw,
                line=positions.value(("steps", i))[0],
                safe=bool(raw.get("safe", False)),
                secret_outputs=secret,
                foreach=raw.get("foreach"),
                item_name=raw.get("as", ""),
                verify=make(Phase.VERIFY, raw.get("verify")),
                applied=(raw.get("verify") or {}).get("applied"),
                absent=(raw.get("verify") or {}).get("absent"),
            )
        )
    # An output sent as a credential is a secret too, from the moment it is read: otherwise
    # a login's token would be journaled and shown before the request that sends it.
    credential = _credential_outputs(steps)
    steps = [
        dataclasses.replace(s, secret_outputs=s.secret_outputs | credential[s.id])
        if credential.get(s.id)
        else s
        for s in steps
    ]
    return Saga(
        name=data["name"],
        steps=tuple(steps),
        order=tuple(closure.order),
        ancestors=closure.ancestors,
        waits_on={k: tuple(v) for k, v in closure.reduced.items()},
        descendants=closure.descendants,
        path=file,
        source=text,
        version=data["version"],
        description=data.get("description", ""),
        inputs=data.get("inputs", {}),
        env=tuple(data.get("env", ())),
        secrets=tuple(data.get("secrets", ())),
        vars=tuple((data.get("vars") or {}).items()),
        timeout=parse_duration(data["timeout"]) if "timeout" in data else None,
        notify=_notify(data["notify"]) if "notify" in data else None,
        plans=_plans(data),
    )


def _plans(data: Mapping[str, Any]) -> dict[str, templating.Plan]:
    """The plan of every template in the file made only of text and plain lookups (all of
    them were parsed by the checks already)."""
    plans = {}
    for text in templating.strings_in(data):
        if text not in plans and templating.is_template(text):
            plan = templating.plan_of(text)
            if plan is not None:
                plans[text] = plan
    return plans


def _notify(raw: Mapping[str, Any]) -> Notify:
    default = Notify()
    return Notify(
        url=raw.get("url"),
        command=raw.get("command"),
        on=tuple(raw.get("on", default.on)),
        timeout=parse_duration(raw["timeout"]) if "timeout" in raw else default.timeout,
        retry=_retry(raw.get("retry"), default.retry),
    )
