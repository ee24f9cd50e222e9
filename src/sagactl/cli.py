"""The command line: each command parses its arguments, makes one library call, and turns
`SagactlError`s into a message on stderr and the exit code of SPEC §5.1.

Heavy modules are imported inside the commands that need them, so `sagactl --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sagactl import __version__
from sagactl.errors import SagactlError

__all__ = ["app", "main"]

app = typer.Typer(
    name="sagactl",
    help="Run sagas of HTTP steps from YAML files: every step done, or every step undone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@contextmanager
def _reported() -> Iterator[None]:
    """Turns a SagactlError into its message on stderr and its exit code; no traceback."""
    try:
        yield
    except SagactlError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sagactl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run sagas of HTTP steps from YAML files: every step done, or every step undone."""


InputOption = Annotated[
    list[str] | None,
    typer.Option("-i", "--input", metavar="KEY=VALUE",
                 help="An input value, coerced to its declared type (repeatable)."),
]
InputsFileOption = Annotated[
    Path | None,
    typer.Option("--inputs", metavar="FILE", help="Inputs from a JSON or YAML file; -i wins."),
]


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Saga files to check.", show_default=False)],
) -> None:
    """Check saga files against the schema and their references; list steps, kinds, env and
    secrets. Every problem of every file is reported; nothing is sent."""
    from sagactl.errors import DefinitionErrors
    from sagactl.loader import load
    from sagactl.views import format_validation

    failed = False
    for file in files:
        try:
            typer.echo(format_validation(load(file)))
        except DefinitionErrors as exc:
            typer.echo(str(exc), err=True)
            failed = True
    if failed:
        raise typer.Exit(2)


@app.command()
def plan(
    file: Annotated[Path, typer.Argument(help="The saga file.", show_default=False)],
    input_values: InputOption = None,
    inputs_file: InputsFileOption = None,
) -> None:
    """Render every request the saga may send (action, compensate, confirm) in dependency
    order, without sending anything. Secrets show as ***, values known only when running as
    <placeholders>."""
    with _reported():
        from sagactl.inputs import read_inputs_file, resolve_inputs
        from sagactl.loader import load
        from sagactl.prepare import plan as plan_requests
        from sagactl.templating import Renderer
        from sagactl.views import format_plan

        saga = load(file)
        from_file = read_inputs_file(inputs_file) if inputs_file else None
        inputs = resolve_inputs(saga, input_values or [], from_file)
        requests = plan_requests(saga, inputs, os.environ, Renderer())
        typer.echo(format_plan(saga, inputs, requests))


class GraphFormat(StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="The saga file.", show_default=False)],
    format: Annotated[GraphFormat, typer.Option("--format", "-f",
                                                help="Mermaid or Graphviz dot.")] =
    GraphFormat.MERMAID,
) -> None:
    """Draw the step graph: steps and their needs, confirms, and the order compensations
    undo them in."""
    with _reported():
        from sagactl.loader import load
        from sagactl.views import draw_dot, draw_mermaid

        saga = load(file)
        typer.echo(draw_mermaid(saga) if format is GraphFormat.MERMAID else draw_dot(saga))


@app.command()
def schema() -> None:
    """Print the JSON Schema of saga files (draft 2020-12), for editors and other tools."""
    from sagactl.loader import schema_text

    sys.stdout.write(schema_text())


def main() -> None:
    """Entry point of the `sagactl` console script."""
    app(prog_name="sagactl")
