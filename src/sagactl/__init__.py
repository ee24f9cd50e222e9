"""sagactl: run sagas of HTTP steps from YAML files, journaled to SQLite.

The public surface is listed in `__all__`. Names are imported on first use, so that
`import sagactl` (and `sagactl --help`) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "sagactl.definition.loader",
    "load_text": "sagactl.definition.loader",
    "resolve_inputs": "sagactl.definition.inputs",
    "Saga": "sagactl.model",
    "Step": "sagactl.model",
    "Request": "sagactl.model",
    "RetryPolicy": "sagactl.model",
    "Expect": "sagactl.model",
    "StepKind": "sagactl.model",
    "Phase": "sagactl.model",
    "SagactlError": "sagactl.errors",
    "DefinitionError": "sagactl.errors",
    "DefinitionErrors": "sagactl.errors",
    "InputError": "sagactl.errors",
    "JournalError": "sagactl.errors",
    "RenderError": "sagactl.errors",
    "UsageError": "sagactl.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sagactl' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
