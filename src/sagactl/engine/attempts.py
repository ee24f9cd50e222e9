"""What the attempt loop says of a request: why it is in doubt, its error as journaled, and
values as a failed expectation shows them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sagactl.executors.base import ResponseView

__all__ = ["Doubt", "body_hint", "clip", "shown_value", "step_error"]


@dataclass(frozen=True)
class Doubt:
    """The first attempt that may have reached the service unanswered: its number (0 for an
    earlier process's) and what it met."""

    attempt: int
    error: str | None


def step_error(error: str | None, doubt: Doubt | None, last: int) -> str | None:
    """A failed request's error, and why it is in doubt when it is; `last` is the number of
    the attempt `error` is from."""
    if doubt is None:
        return error
    if doubt.attempt == 0:
        why = "an attempt of an earlier run of sagactl may have reached the service"
    elif doubt.attempt == last:
        return f"{error}; in doubt: it may have reached the service"
    elif doubt.error == error:
        return f"{error}; in doubt since attempt {doubt.attempt}: it may have reached the service"
    else:
        why = f"attempt {doubt.attempt} may have reached the service ({doubt.error})"
    return f"{error}; in doubt: {why}" if error else f"in doubt: {why}"


def body_hint(view: ResponseView, template: str) -> str:
    """Why a check or output that reads `response.json` failed, when the body is the reason:
    it is empty, or not JSON (its Content-Type said). Empty when the body is JSON."""
    if "response.json" not in template:
        return ""
    try:
        json.loads(view.text)
        return ""  # JSON, `null` too: the body is not the reason
    except (ValueError, RecursionError):
        pass
    what = "empty" if not view.text.strip() else "not JSON"
    kind = next((v for k, v in view.headers.items() if k.lower() == "content-type"), None)
    return f" (the body is {what}{f'; Content-Type: {kind}' if kind else ''})"


def clip(text: str | None, limit: int = 2048) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "…"


def shown_value(value: Any, mask: Callable[[str], str]) -> str:
    """A value with its type, as a failed expectation reports it: `false (bool)`. Masked
    before it is cut short: a secret across the cut would no longer be found."""
    kind = {
        bool: "bool",
        int: "int",
        float: "float",
        str: "str",
        list: "list",
        dict: "dict",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = mask(text)
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{text} ({kind})"
