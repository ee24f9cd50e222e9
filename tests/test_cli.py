"""The command line as a whole: help for every command, version, `python -m`, start-up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer

import sagactl
from helpers import SAGAS, cli, cli_process, imported
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


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("ftp://127.0.0.1/j.db", "unknown journal kind 'ftp'"),
        ("sqlite://", "no path after sqlite://"),
    ],
)
def test_a_journal_target_that_is_not_a_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("list", "--journal", target)
    assert result.exit_code == 2 and says in result.stderr, result
    assert "pw" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing created, not even a directory


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:pw5ecret@127.0.0.1:1/sagas", "postgresql://me:***@127.0.0.1:1/sagas"),
        ("postgresql://127.0.0.1:1/sagas?password=pw5ecret", "?password=***"),
        # libpq quotes the part of the URL it cannot parse: the password, here
        ("postgresql://me:pw5e%zzcret@127.0.0.1:1/sagas", "postgresql://me:***@"),
    ],
)
def test_a_postgresql_journal_that_cannot_be_reached_is_exit_4_without_its_password(
    url: str, shown: str
) -> None:
    result = cli("list", "--journal", url)
    assert result.exit_code == 4, result
    assert shown in result.stderr and "cannot connect to the journal" in result.stderr
    assert "pw5e" not in result.stdout + result.stderr


def test_a_postgresql_journal_without_psycopg_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails, as uninstalled
    monkeypatch.delitem(sys.modules, "sagactl.journal.postgres", raising=False)
    result = cli("list", "--journal", "postgresql://127.0.0.1:1/sagas")
    assert result.exit_code == 2, result
    assert "a PostgreSQL journal needs psycopg: pip install 'sagactl[postgres]'" in result.stderr


def test_a_journal_given_as_an_sqlite_url_is_that_file(tmp_path: Path) -> None:
    from sagactl.journal import open_journal

    open_journal(tmp_path / "j.db").close()
    assert cli("list", "--journal", f"sqlite://{tmp_path}/j.db").exit_code == 0


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--stuck"],
        ["show", "01ABCDEF"],
        ["resume", "01ABCDEF"],
        ["compensate", "01ABCDEF"],
        ["skip", "01ABCDEF", "a", "--reason", "x"],
        ["mark", "01ABCDEF", "a", "applied", "--reason", "x"],
    ],
)
def test_commands_on_existing_runs_refuse_a_journal_that_is_not_there(
    tmp_path: Path, command: list[str]
) -> None:
    """A mistyped --journal must not read as "no runs" (and leave a new empty file behind)."""
    missing = tmp_path / "typo.db"
    result = cli(*command, "--journal", str(missing))
    assert result.exit_code == 4, result
    assert f"no journal at {missing}: nothing has run with it" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_runs_the_cli() -> None:
    result = cli_process("validate", "sagas/add-product.yaml")
    assert result.exit_code == 0, result.stderr
    assert "ok: saga add-product" in result.stdout


@pytest.mark.parametrize(
    ("args", "unwanted"),
    [
        (
            ["--help"],
            (
                "httpx",
                "rich",
                "tenacity",
                "sqlite3",
                "jinja2",
                "jsonschema",
                "yaml",
                "starlette",
                "psycopg",
            ),
        ),
        (["validate", str(SAGAS / "add-product.yaml")], ("httpx", "rich", "tenacity", "sqlite3")),
        (
            ["list"],
            (
                "httpx",
                "rich",
                "tenacity",
                "jinja2",
                "jsonschema",
                "yaml",
                "sagactl.events",
                "sagactl.model",
                "sagactl.engine",
                "starlette",
                "uvicorn",
                "psycopg",
            ),
        ),
        (
            ["show", "NOSUCHRUN"],
            (
                "httpx",
                "rich",
                "tenacity",
                "jinja2",
                "jsonschema",
                "sagactl.events",
                "sagactl.model",
                "sagactl.engine",
            ),
        ),
    ],
)
def test_start_up_imports_only_what_the_command_needs(
    args: list[str], unwanted: tuple[str, ...], tmp_path: Path
) -> None:
    """Commands that send nothing must not pay for httpx and the rest at start-up."""
    _, loaded = imported(args, unwanted, {"SAGACTL_JOURNAL": str(tmp_path / "j.db")})
    assert loaded == []


def test_a_run_whose_requests_succeed_at_once_imports_no_retry_or_report_library(
    tmp_path: Path, service: Any, write: Any
) -> None:
    """tenacity is needed only once a request must be retried, the XML library only for
    --junit: a plain run does not pay for either at start-up."""
    saga = write(
        "version: 1\nname: one\nenv: [BASE]\nsteps:\n  - id: a\n"
        '    action: {method: PUT, url: "{{ env.BASE }}/a/{{ run.id }}"}\n'
        '    compensate: {method: DELETE, url: "{{ env.BASE }}/a/{{ run.id }}"}\n'
    )
    code, loaded = imported(
        ["run", str(saga), "-q"],
        ("tenacity", "xml.etree.ElementTree"),
        {"SAGACTL_JOURNAL": str(tmp_path / "j.db"), "BASE": service.url},
    )
    assert (code, loaded) == ("0", [])
    assert len(service.requests("PUT", "/a/")) == 1


def test_public_surface() -> None:
    for name in sagactl.__all__:
        assert getattr(sagactl, name) is not None
    assert sagactl.load is sagactl.definition.loader.load  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = sagactl.nothing_here  # type: ignore[attr-defined]
