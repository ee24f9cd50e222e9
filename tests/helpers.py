"""Helpers shared by the tests: the command line, in process and as a real process."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from sagactl.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAGAS = ROOT / "sagas"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run the command line in this process, as a user would type it."""
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def cli_process(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Result:
    """Run the command line as a real process (`python -m sagactl`)."""
    proc = subprocess.run([sys.executable, "-m", "sagactl", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60)
    return Result(proc.returncode, proc.stdout, proc.stderr)
