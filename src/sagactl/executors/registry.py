"""The executors of the kinds registered besides HTTP, which the commands run with (HTTP's is
built in: it needs the run's HTTP client)."""

from __future__ import annotations

from collections.abc import Callable

from sagactl.executors.base import Executor

__all__ = ["executors", "register", "unregister"]

_FACTORIES: dict[str, Callable[[], Executor]] = {}


def register(kind: str, factory: Callable[[], Executor]) -> None:
    """Steps of `kind` run with the executor `factory()` makes, one for each run."""
    if kind == "http" or kind in _FACTORIES:
        raise ValueError(f"an executor for kind '{kind}' is registered already")
    _FACTORIES[kind] = factory


def unregister(kind: str) -> None:
    _FACTORIES.pop(kind, None)


def executors() -> dict[str, Executor]:
    """A fresh executor of each registered kind, by kind."""
    return {kind: factory() for kind, factory in _FACTORIES.items()}
