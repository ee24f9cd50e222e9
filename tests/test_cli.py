"""The command line as a whole: help for every command, version, `python -m`, start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import sagactl
from helpers import ROOT, SAGAS, cli, cli_process
from sagactl.cli import app

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)  # type: ignore[union-attr]


def test_the_commands_of_this_release() -> None:
    assert {"validate", "plan", "graph", "schema"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_text(command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    assert click_command.help and len(click_command.help) > 30
    assert click_command.help.split()[0] in result.stdout
    for param in click_command.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"{command}: {param.name} has no help"


def test_root_help_lists_every_command() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_version() -> None:
    assert cli("--version").stdout == f"sagactl {sagactl.__version__}\n"


def test_unknown_command_and_option_are_usage_errors() -> None:
    assert cli("frobnicate").exit_code == 2
    assert cli("validate", "--nope", "x").exit_code == 2


def test_python_dash_m_runs_the_cli() -> None:
    result = cli_process("validate", "sagas/add-product.yaml")
    assert result.exit_code == 0, result.stderr
    assert "ok: saga add-product" in result.stdout


@pytest.mark.parametrize(("args", "unwanted"), [
    (["--help"], ("httpx", "rich", "tenacity", "sqlite3", "jinja2", "jsonschema", "yaml")),
    (["validate", str(SAGAS / "add-product.yaml")], ("httpx", "rich", "tenacity", "sqlite3")),
    (["list"], ("httpx", "rich", "tenacity", "jinja2", "jsonschema", "yaml", "sagactl.events",
                "sagactl.model", "sagactl.engine")),
    (["show", "NOSUCHRUN"], ("httpx", "rich", "tenacity", "jinja2", "jsonschema",
                             "sagactl.events", "sagactl.model", "sagactl.engine")),
])
def test_start_up_imports_only_what_the_command_needs(
        args: list[str], unwanted: tuple[str, ...], tmp_path: Path) -> None:
    """Commands that send nothing must not pay for httpx and the rest at start-up."""
    code = (
        "import sys\n"
        "from sagactl.cli import main\n"
        f"sys.argv = ['sagactl', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {unwanted!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60,
                          env={**os.environ, "SAGACTL_JOURNAL": str(tmp_path / "j.db")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_public_surface() -> None:
    for name in sagactl.__all__:
        assert getattr(sagactl, name) is not None
    assert sagactl.load is sagactl.loader.load  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = sagactl.nothing_here  # type: ignore[attr-defined]
