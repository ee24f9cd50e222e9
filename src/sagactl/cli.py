"""The command line: each command parses its arguments, makes one library call, and turns
`SagactlError`s into a message on stderr and the exit code of SPEC §5.1.

Heavy modules are imported inside the commands that need them, so `sagactl --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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


JournalOption = Annotated[
    Path | None,
    typer.Option("--journal", metavar="PATH", envvar="SAGACTL_JOURNAL", show_envvar=False,
                 help="The journal file (default: $SAGACTL_JOURNAL, else "
                      "$XDG_STATE_HOME/sagactl/journal.db)."),
]


class DurabilityChoice(StrEnum):
    FULL = "full"
    NORMAL = "normal"


DurabilityOption = Annotated[
    DurabilityChoice,
    typer.Option("--durability", help="full: fsync every journal commit (survives power loss); "
                                      "normal: faster, survives a killed process."),
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, help="Steps in flight at most.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")]

# Exit codes of SPEC §5.1, for `run` and `resume`; `compensate` maps compensated to 0.
_EXIT = {"succeeded": 0, "compensated": 1, "stuck": 3}


def _journal_flag(journal: Path | None) -> str:
    return f" --journal {journal}" if journal and not os.environ.get("SAGACTL_JOURNAL") else ""


@contextmanager
def _signals() -> Iterator[Any]:
    """SIGINT and SIGTERM ask the engine to stop; a second one exits at once. Either way the
    journal stays consistent: every attempt was recorded before it was sent."""
    import signal

    from sagactl.stopping import StopSignal

    stop = StopSignal()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            sys.stderr.write("interrupted again: exiting now\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        stop.request(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _drive(journal: Path | None, durability: DurabilityChoice, quiet: bool,
           call: Callable[..., tuple[str, Any]], compensating: bool = False) -> None:
    from sagactl.errors import Interrupted
    from sagactl.journal import Durability
    from sagactl.render import PlainRenderer, next_commands
    from sagactl.runs import open_journal

    renderer = PlainRenderer(journal_flag=_journal_flag(journal), quiet=quiet)
    with _reported(), _signals() as stop, \
            open_journal(journal, Durability(durability.value)) as store:
        try:
            _, status = call(store, renderer, stop)
        except Interrupted as exc:
            typer.echo(f"run {exc.run_id} interrupted; it can be carried on or undone:\n"
                       f"{next_commands(exc.run_id, _journal_flag(journal))}", err=True)
            sys.stdout.flush()
            # Worker threads may still wait on a slow response: do not wait for them.
            os._exit(exc.exit_code)
    code = _EXIT[status.value]
    if compensating and status.value == "compensated":
        code = 0
    raise typer.Exit(code)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="The saga file.", show_default=False)],
    input_values: InputOption = None,
    inputs_file: InputsFileOption = None,
    journal: JournalOption = None,
    durability: DurabilityOption = DurabilityChoice.FULL,
    concurrency: ConcurrencyOption = 8,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Use this run id instead of "
                                                                "a new one.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Validate the saga, then run it: print the run id, one line per event, then a summary.
    Exit 0 succeeded, 1 failed and compensated, 2 bad input (nothing sent), 3 stuck."""
    with _reported():
        from sagactl.inputs import read_inputs_file, resolve_inputs
        from sagactl.loader import load
        from sagactl.runs import start_run

        saga = load(file)
        from_file = read_inputs_file(inputs_file) if inputs_file else None
        inputs = resolve_inputs(saga, input_values or [], from_file)
    _drive(journal, durability, quiet, lambda store, renderer, stop: start_run(
        saga, inputs, store, os.environ, on_event=renderer, concurrency=concurrency,
        run_id=run_id, stop=stop))


RunArgument = Annotated[str, typer.Argument(metavar="RUN", show_default=False,
                                            help="Run id, or a unique prefix of 4 or more "
                                                 "characters.")]


@app.command()
def resume(
    run_id: RunArgument,
    journal: JournalOption = None,
    durability: DurabilityOption = DurabilityChoice.FULL,
    concurrency: ConcurrencyOption = 8,
    quiet: QuietOption = False,
) -> None:
    """Carry a run on from where it stopped (forward, confirm or compensation), with the saga
    text stored in the journal. Secrets are read from the environment again."""
    from sagactl.runs import resume_run

    _drive(journal, durability, quiet, lambda store, renderer, stop: resume_run(
        store, run_id, os.environ, on_event=renderer, concurrency=concurrency, stop=stop))


@app.command()
def compensate(
    run_id: RunArgument,
    journal: JournalOption = None,
    durability: DurabilityOption = DurabilityChoice.FULL,
    concurrency: ConcurrencyOption = 8,
    yes: Annotated[bool, typer.Option("--yes", help="Also undo a run that succeeded (when no "
                                                    "pivot step ran).")] = False,
    quiet: QuietOption = False,
) -> None:
    """Roll a run back: compensate every step whose action may have taken effect, each after
    the steps that depend on it. Exit 0 when fully compensated, 3 when stuck."""
    from sagactl.runs import compensate_run

    _drive(journal, durability, quiet, lambda store, renderer, stop: compensate_run(
        store, run_id, os.environ, on_event=renderer, concurrency=concurrency, yes=yes,
        stop=stop), compensating=True)


class StatusChoice(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    COMPENSATED = "compensated"
    STUCK = "stuck"
    INTERRUPTED = "interrupted"


@app.command("list")
def list_command(
    status: Annotated[StatusChoice | None, typer.Option("--status", help="Only runs in this "
                                                                         "state.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only runs of this saga.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    journal: JournalOption = None,
) -> None:
    """List runs, newest first: id, saga, status (a run whose process is gone shows as
    interrupted), start time."""
    with _reported():
        from sagactl.render import format_list
        from sagactl.runs import list_runs, open_journal

        with open_journal(journal) as store:
            typer.echo(format_list(list_runs(store, status=status.value if status else None,
                                             name=name, limit=limit)))


@app.command()
def show(
    run_id: RunArgument,
    journal: JournalOption = None,
) -> None:
    """Show one run: its saga, every step's state and outputs, and every attempt with its
    status, duration and error, on a time line from the run's start."""
    with _reported():
        from sagactl.render import format_show
        from sagactl.runs import open_journal, shown_status, step_order

        with open_journal(journal) as store:
            record = store.find_run(run_id)
            order = step_order(record)
            typer.echo(format_show(record, shown_status(record), store.steps(record.id),
                                   store.attempts(record.id), order))


class ServiceName(StrEnum):
    INVENTORY = "inventory"
    PRICING = "pricing"
    SEARCH = "search"




@app.command()
def demo(
    journal: Annotated[Path | None, typer.Option(
        "--journal", metavar="PATH", help="Journal to use (default: a new one in a temporary "
                                          "directory, kept so that the runs can be shown).")]
    = None,
    serve: Annotated[bool, typer.Option("--serve", help="Keep the services up and print how "
                                                        "to run sagas against them.")] = False,
    fail: Annotated[list[ServiceName] | None, typer.Option(
        "--fail", metavar="SERVICE", help="This service rejects every action (repeatable).")]
    = None,
    flaky: Annotated[list[ServiceName] | None, typer.Option(
        "--flaky", metavar="SERVICE", help="This service answers 503 twice, then works.")]
    = None,
    slow: Annotated[list[ServiceName] | None, typer.Option(
        "--slow", metavar="SERVICE", help="This service answers once after the 5s attempt "
                                          "timeout, having done the work.")] = None,
) -> None:
    """Start demo services (inventory, pricing, search) on 127.0.0.1 and run the bundled
    add-product saga against them: once succeeding, once with search rejecting the product."""
    import tempfile

    from sagactl.demo import DemoFaults, demo_services, run_demo, serve_instructions
    from sagactl.render import PlainRenderer

    faults = DemoFaults(fail=[s.value for s in fail or []], flaky=[s.value for s in flaky or []],
                        slow=[s.value for s in slow or []])
    if serve:
        with demo_services(faults) as started, _signals() as stop:
            typer.echo(serve_instructions(started, str(journal) if journal else None))
            stop.wait()
        raise typer.Exit(0)
    path = journal or Path(tempfile.mkdtemp(prefix="sagactl-demo-")) / "journal.db"
    with _reported(), _signals() as stop:
        from sagactl.runs import open_journal

        with open_journal(path) as store:
            code = run_demo(store, faults, sys.stdout, PlainRenderer(
                journal_flag=f" --journal {path}"), stop=stop)
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the `sagactl` console script."""
    app(prog_name="sagactl")
