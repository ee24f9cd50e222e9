"""The code stays ruff-clean and ruff-formatted, mypy-clean, and keeps its import contracts
(pyproject.toml's [tool.importlinter]): checked with every test run, so CI enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_ruff() -> None:
    result = _run("ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", "src", "tests", "bench")
    assert result.returncode == 0, "run: ruff format src tests bench\n" + result.stdout


def test_mypy() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_tests_share_their_harness_through_helpers_not_each_other() -> None:
    """A test module imported by another runs its tests twice and ties the two together:
    what tests share lives in helpers.py, fault_model.py, sagas.py or conftest.py."""
    importing = [
        f"{path.name}: {line.strip()}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line in path.read_text().splitlines()
        if line.startswith(("from test_", "import test_"))
    ]
    assert importing == []
