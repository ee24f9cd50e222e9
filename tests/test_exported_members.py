"""Each module's `__all__` is exactly its public names, and the package's surface is what its
docs promise: a name is public by being listed, not by accident."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import sagactl
from helpers import ROOT

SOURCE = ROOT / "src" / "sagactl"
MODULES = sorted(
    p
    for p in SOURCE.rglob("*.py")
    if (p.name != "__init__.py" or p.parent == SOURCE)
    # The command line's public names are its commands, reached through `app`.
    and p.relative_to(SOURCE).as_posix() not in ("__main__.py", "cli.py")
)


def public_names(path: Path) -> set[str]:
    """The names a module defines at its top level that do not start with `_`."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(SOURCE).as_posix())
def test_all_lists_exactly_the_public_names(path: Path) -> None:
    relative = path.relative_to(SOURCE).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"]
    module = importlib.import_module(".".join(["sagactl", *parts]))
    listed = set(getattr(module, "__all__", ()))
    assert listed <= set(dir(module)), f"listed, not defined: {sorted(listed - set(dir(module)))}"
    defined = public_names(path) - {"annotations"}
    if path == SOURCE / "__init__.py":
        defined = set(sagactl._EXPORTS) | {"__version__"}  # imported on first use
    assert sorted(listed) == sorted(defined)


def test_the_package_offers_what_it_lists() -> None:
    assert sagactl.__all__ == ["__version__", *sorted(sagactl._EXPORTS)]
    for name in sagactl.__all__:
        assert getattr(sagactl, name) is not None
    assert sorted(dir(sagactl)) == sorted(sagactl.__all__)
