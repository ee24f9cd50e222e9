"""Kinds of step other than HTTP, as the definition reads them: the JSON Schema of one call,
the keys that hold templates, and how the call is built (SPEC §2: `kind:` in a request; `http`
when it is absent).

HTTP is built in (the loader's own `request`); a new kind registers here, and its executor with
the engine (`sagactl.executors`). Nothing else in the definition changes for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sagactl.model import Call, Phase

__all__ = ["HTTP", "Kind", "generation", "kind_of", "register", "registered", "unregister"]

HTTP = "http"


@dataclass(frozen=True)
class Kind:
    """How the calls of one kind of step are read from a saga file."""

    name: str
    schema: Mapping[str, Any]
    """The JSON Schema of one call (an action, compensation or confirm), `kind` included."""
    build: Callable[[Mapping[str, Any], Phase, int], Call]
    """The call from its keys (the saga's defaults merged in: keep those it knows), its
    phase and its line in the file."""
    templates: tuple[str, ...] = ()
    """Keys whose values may hold templates: what they reference is checked like any
    request's."""


_KINDS: dict[str, Kind] = {}
_generation = 0


def register(kind: Kind) -> None:
    if kind.name == HTTP or kind.name in _KINDS:
        raise ValueError(f"a kind of step named '{kind.name}' is registered already")
    global _generation
    _KINDS[kind.name] = kind
    _generation += 1


def unregister(name: str) -> None:
    global _generation
    if _KINDS.pop(name, None) is not None:
        _generation += 1


def generation() -> int:
    """A number that changes whenever a kind is registered or unregistered: what was built
    from the kinds registered (the saga schema's validator) is stale once it changed."""
    return _generation


def registered() -> dict[str, Kind]:
    """The kinds registered besides HTTP, by name."""
    return dict(_KINDS)


def kind_of(raw: Any) -> str:
    """The kind a request's keys name."""
    kind = raw.get("kind", HTTP) if isinstance(raw, Mapping) else HTTP
    return kind if isinstance(kind, str) else HTTP
