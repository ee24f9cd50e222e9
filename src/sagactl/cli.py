"""The command line: each command parses its arguments, makes one library call, and turns
`SagactlError`s into a message on stderr and the exit code of SPEC §5.1.

Heavy modules are imported inside the commands that need them, so `sagactl --help` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from sagactl import __version__
from sagactl.errors import SagactlError, UsageError

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


_redactor: Any = None
"""The one redactor of this command (sagactl.redact): standard output and error go through
it, and the runs the command drives teach it every secret they meet."""


def redactor() -> Any:
    global _redactor
    if _redactor is None:
        from sagactl.redact import Redactor

        _redactor = Redactor()
    return _redactor


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run sagas of HTTP steps from YAML files: every step done, or every step undone."""
    global _redactor
    from sagactl.redact import Redactor

    # Whatever a command prints — events, summaries, errors, a library's message — is
    # masked on its way out: a secret cannot reach the terminal by a path nobody thought of.
    _redactor = Redactor()
    sys.stdout = _redactor.stream(sys.stdout)
    sys.stderr = _redactor.stream(sys.stderr)


InputOption = Annotated[
    list[str] | None,
    typer.Option(
        "-i",
        "--input",
        metavar="KEY=VALUE",
        help="An input value, coerced to its declared type (repeatable).",
    ),
]
InputsFileOption = Annotated[
    Path | None,
    typer.Option("--inputs", metavar="FILE", help="Inputs from a JSON or YAML file; -i wins."),
]

EnvFileOption = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        metavar="FILE",
        help="Env and secret values in dotenv syntax; the environment wins over the file.",
    ),
]


def _known_secrets(saga: Any, environ: Any) -> None:
    """Teach the redactor the saga's secrets found in the environment, and warn about those
    so short that masking them would garble every message."""
    from sagactl.redact import MIN_DERIVED

    values = {name: environ[name] for name in saga.secrets if environ.get(name)}
    redactor().add(list(values.values()), derived=False)
    for name, value in values.items():
        if len(value) < MIN_DERIVED:
            typer.echo(
                f"warning: {saga.path}: secret {name} is {len(value)} character"
                f"{'s' if len(value) != 1 else ''} long: it is masked as *** wherever "
                "those characters appear, which garbles messages; use a longer "
                "secret",
                err=True,
            )


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Saga files to check.", show_default=False)],
) -> None:
    """Check saga files against the schema and their references; list steps, kinds, env and
    secrets. Every problem of every file is reported; nothing is sent."""
    from sagactl.definition.loader import load
    from sagactl.errors import DefinitionErrors
    from sagactl.output.saga_views import format_validation

    failed = False
    for file in files:
        try:
            saga = load(file)
            _known_secrets(saga, os.environ)
            typer.echo(format_validation(saga))
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
    env_file: EnvFileOption = None,
) -> None:
    """Render every request the saga may send (action, compensate, confirm) in dependency
    order, without sending anything. Secrets show as ***, values known only when running as
    <placeholders>."""
    with _reported():
        from sagactl.definition.envfile import with_env_file
        from sagactl.definition.inputs import read_inputs_file, resolve_inputs
        from sagactl.definition.loader import load
        from sagactl.definition.templating import Renderer
        from sagactl.executors.http.plan import plan as plan_requests
        from sagactl.output.saga_views import format_plan

        environ = with_env_file(os.environ, env_file)
        saga = load(file)
        # Secrets render as ***; an env value may still hold one (a URL with a password).
        _known_secrets(saga, environ)
        from_file = read_inputs_file(inputs_file) if inputs_file else None
        inputs = resolve_inputs(saga, input_values or [], from_file)
        requests = plan_requests(saga, inputs, environ, Renderer())
        typer.echo(format_plan(saga, inputs, requests))


class GraphFormat(StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="The saga file.", show_default=False)],
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="Mermaid or Graphviz dot.")
    ] = GraphFormat.MERMAID,
) -> None:
    """Draw the step graph: steps and their needs, confirms, and the order compensations
    undo them in."""
    with _reported():
        from sagactl.definition.loader import load
        from sagactl.output.saga_views import draw_dot, draw_mermaid

        saga = load(file)
        typer.echo(draw_mermaid(saga) if format is GraphFormat.MERMAID else draw_dot(saga))


@app.command()
def schema() -> None:
    """Print the JSON Schema of saga files (draft 2020-12), for editors and other tools."""
    from sagactl.definition.schema import schema_text

    sys.stdout.write(schema_text())


JournalOption = Annotated[
    str | None,
    typer.Option(
        "--journal",
        metavar="PATH",
        envvar="SAGACTL_JOURNAL",
        show_envvar=False,
        help="The journal file, or sqlite:///PATH (default: $SAGACTL_JOURNAL, else "
        "$XDG_STATE_HOME/sagactl/journal.db).",
    ),
]


class DurabilityChoice(StrEnum):
    FULL = "full"
    NORMAL = "normal"


DurabilityOption = Annotated[
    DurabilityChoice,
    typer.Option(
        "--durability",
        help="full: fsync every journal commit (survives power loss); "
        "normal: faster, survives a killed process.",
    ),
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, help="Steps in flight at most.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Also print each request and response, curl-style, secrets masked."
    ),
]

# Exit codes of SPEC §5.1, for `run` and `resume`; `compensate` maps compensated to 0.
_EXIT = {"succeeded": 0, "compensated": 1, "cleaned": 0, "stuck": 3}


def _journal_flag(journal: str | None) -> str:
    """What the suggested commands add so that they find the same journal, quoted for the
    shell: a path with a space pastes as it is."""
    import shlex

    if not journal or os.environ.get("SAGACTL_JOURNAL"):
        return ""
    from sagactl.journal.leases import shown_target

    # A URL's password is never shown: PGPASSWORD or ~/.pgpass gives it.
    return f" --journal {shlex.quote(shown_target(journal))}"


@contextmanager
def _signals() -> Iterator[Any]:
    """SIGINT and SIGTERM ask the engine to stop; a second one exits at once. Either way the
    journal stays consistent: every attempt was recorded before it was sent."""
    import signal

    from sagactl.engine.stopping import StopSignal

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


class OutputChoice(StrEnum):
    TEXT = "text"
    JSON = "json"


OutputOption = Annotated[
    OutputChoice,
    typer.Option(
        "--output",
        "-o",
        help="text: one line per event; json: one JSON object per line, events "
        "then a summary per run (docs/events.md).",
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE.html",
        help="Write the runs as one self-contained HTML page, even when a run fails or is "
        "interrupted.",
    ),
]
NotifyOption = Annotated[
    str | None,
    typer.Option(
        "--notify",
        metavar="URL|COMMAND",
        help="When a run ends stuck or compensated, POST its JSON summary to URL (retried), "
        "or run COMMAND with it on standard input; besides the saga's notify.",
    ),
]
NotifyOnOption = Annotated[
    str | None,
    typer.Option(
        "--notify-on",
        metavar="STATUSES",
        help="The outcomes --notify tells of, comma-separated (default: stuck,compensated; "
        "also succeeded, cleaned).",
    ),
]
JunitOption = Annotated[
    Path | None,
    typer.Option(
        "--junit",
        metavar="FILE",
        help="Write a JUnit XML report, even when a run fails or is interrupted.",
    ),
]

Call = Callable[[Any, Any, Any], tuple[str, Any]]


def _screen(journal_flag: str, *, quiet: bool = False, verbose: bool = False) -> Any:
    """The live view on a terminal; plain lines when piped, quiet, verbose or TERM=dumb."""
    if sys.stdout.isatty() and not (quiet or verbose) and os.environ.get("TERM") != "dumb":
        from sagactl.output.live import LiveView

        return LiveView(journal_flag=journal_flag)
    from sagactl.output.lines import PlainLines

    return PlainLines(journal_flag=journal_flag, quiet=quiet, verbose=verbose)


def _run_data(store: Any, run: Any) -> Any:
    """What a report page shows of a run, read from the journal."""
    from sagactl.api import step_order
    from sagactl.journal import shown_status
    from sagactl.output.pages.views import RunData

    return RunData(
        run,
        shown_status(store, run),
        store.steps(run.id),
        store.attempts(run.id),
        step_order(run),
        store.operator_actions(run.id),
        store.notifications(run.id),
    )


def _write_report(path: Path, pages: list[Any], flag: str) -> None:
    """The runs in one self-contained HTML file, masked."""
    from sagactl.output.pages.views import report_page

    try:
        path.write_text(report_page(pages, journal_flag=flag, redactor=redactor()), "utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report: {exc.strerror}") from None


def _check_notify(target: str | None, on: str | None) -> None:
    """Raise UsageError for --notify and --notify-on that cannot work, before any run."""
    from sagactl.api import is_url
    from sagactl.errors import UsageError

    if on is not None and not target:
        raise UsageError("--notify-on says when --notify tells: give --notify URL|COMMAND too")
    if on is not None:
        unknown = {s.strip() for s in on.split(",")} - {
            "stuck",
            "compensated",
            "succeeded",
            "cleaned",
        }
        if unknown:
            shown = ",".join(sorted(unknown)) or '""'
            raise UsageError(
                f"--notify-on {shown}: expected stuck, compensated, succeeded or cleaned, "
                "comma-separated"
            )
    if target and "://" in target.split()[0] and not is_url(target):
        raise UsageError(
            f"--notify {target.split('://')[0]}://…: only http and https URLs are posted to "
            "(anything else is run as a shell command)"
        )


def _drive(
    journal: str | None,
    durability: DurabilityChoice,
    quiet: bool,
    calls: list[Call],
    *,
    verbose: bool = False,
    output: OutputChoice = OutputChoice.TEXT,
    junit: Path | None = None,
    cleanup: Callable[..., tuple[str, Any]] | None = None,
    compensating: bool = False,
    notify: tuple[str | None, str | None, Mapping[str, str]] | None = None,
    html: Path | None = None,
    existing: bool = False,
) -> None:
    """Drive each call's run in turn; report, and exit with the worst code (3 > 1 > 0).
    `existing`: the runs are in the journal already (resume, compensate), so a journal that
    is not there is a mistyped path, refused before a new empty one is made."""
    from sagactl.api import not_cleaned, step_order
    from sagactl.errors import Interrupted, JournalError, LeaseLost, UsageError
    from sagactl.journal import Durability, open_journal
    from sagactl.output.lines import JsonLines
    from sagactl.output.run_views import next_commands, summary_record

    if junit:
        from sagactl.output.junit import RunReport, write_junit
    flag = _journal_flag(journal)
    if notify is not None:
        with _reported():
            _check_notify(*notify[:2])
    renderer = (
        JsonLines() if output is OutputChoice.JSON else _screen(flag, quiet=quiet, verbose=verbose)
    )
    reports: list[RunReport] = []
    worst = 0

    def tell(store: Any, run_id: str, code: int, stop: Any, started: float) -> None:
        """Notify of the run's end (SPEC §6): a problem is said, never a failure."""
        from sagactl.api import notify_run

        assert notify is not None
        target, on, environ = notify
        for problem in notify_run(
            store,
            run_id,
            exit_code=code,
            environ=environ,
            redactor=redactor(),
            target=target,
            on=[s.strip() for s in on.split(",")] if on else None,
            sleep=stop.wait,
            stop=stop,
            since=started,
        ):
            typer.echo(problem, err=True)

    pages: list[Any] = []

    def report(store: Any, run_id: str, code: int) -> None:
        if not junit and not html and output is not OutputChoice.JSON:
            return
        run = store.get_run(run_id)
        steps, attempts, order = store.steps(run_id), store.attempts(run_id), step_order(run)
        if html:
            pages.append(_run_data(store, run))
        if junit:
            left = not_cleaned(run, steps, order) if run.cleanup else []
            actions = store.operator_actions(run_id)
            reports.append(RunReport(run, steps, attempts, order, left, actions))
        if output is OutputChoice.JSON:
            renderer.write(summary_record(run, steps, attempts, order, code))

    with (
        _reported(),
        _signals() as stop,
        open_journal(journal, Durability(durability.value), existing=existing) as store,
    ):
        try:
            for call in calls:
                started = time.time()
                run_id, status = call(store, renderer, stop)
                code = _EXIT[status.value]
                if compensating and status.value == "compensated":
                    code = 0
                if cleanup is not None and status.value == "succeeded":
                    # Undo everything, confirmed steps included: a smoke test leaves nothing.
                    _, undone = cleanup(store, run_id, renderer, stop)
                    code = _EXIT[undone.value]
                report(store, run_id, code)
                if notify is not None:
                    tell(store, run_id, code, stop, started)
                worst = max(worst, code)
        except Interrupted as exc:
            # The live view leaves its table, and the message starts on a line of its own.
            renderer.close()
            commands: tuple[str, ...] = ()
            cleaning = False
            if exc.run_id:
                report(store, exc.run_id, exc.exit_code)
                with contextlib.suppress(JournalError):
                    interrupted = store.get_run(exc.run_id)
                    commands, cleaning = interrupted.next_commands(), interrupted.cleanup
            if junit:
                write_junit(junit, reports, redactor())
            if html:
                _write_report(html, pages, flag)
            typer.echo(
                f"run {exc.run_id} interrupted; the journal keeps what was done:\n"
                f"{next_commands(exc.run_id, flag, commands, cleanup=cleaning)}",
                err=True,
            )
            sys.stdout.flush()
            # Worker threads may still wait on a slow response: do not wait for them.
            os._exit(exc.exit_code)
        except UsageError:
            renderer.close()  # a refusal found once the run's output started ends it
            raise
        except JournalError as exc:
            renderer.close()
            if exc.run_id is None or isinstance(exc, LeaseLost):
                raise
            raise JournalError(
                f"{exc}\nrun {exc.run_id} stopped: nothing more was sent, and "
                "the journal keeps what was done. Once the journal can be "
                f"written again (is the disk full?):\n"
                f"{next_commands(exc.run_id, flag)}"
            ) from None
        finally:
            if junit and reports:
                write_junit(junit, reports, redactor())
            if html:
                _write_report(html, pages, flag)
    raise typer.Exit(worst)


@app.command()
def run(
    files: Annotated[
        list[Path], typer.Argument(help="Saga files, each run in turn.", show_default=False)
    ],
    input_values: InputOption = None,
    inputs_file: InputsFileOption = None,
    journal: JournalOption = None,
    durability: DurabilityOption = DurabilityChoice.FULL,
    concurrency: ConcurrencyOption = 8,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Use this run id instead of a new one; with several files, ID-<saga name>; "
            "with --each, ID-<line>, and running it again finishes the batch.",
        ),
    ] = None,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="After a run succeeds, compensate every step: a smoke test that leaves nothing.",
        ),
    ] = False,
    junit: JunitOption = None,
    output: OutputOption = OutputChoice.TEXT,
    env_file: EnvFileOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    notify: NotifyOption = None,
    notify_on: NotifyOnOption = None,
    report: ReportOption = None,
    each: Annotated[
        Path | None,
        typer.Option(
            "--each",
            metavar="FILE.jsonl",
            show_default=False,
            help="One run per line, each line a JSON object of inputs (over -i and --inputs), "
            "at most --concurrency runs at once in this process.",
        ),
    ] = None,
) -> None:
    """Validate the sagas, then run each in turn: print the run id, one line per event, then a
    summary. Exit 0 succeeded, 1 failed and compensated, 2 bad input (nothing sent), 3 stuck;
    with several files, the worst."""
    if each is not None:
        _run_each(
            files,
            each,
            run_id,
            input_values or [],
            inputs_file,
            journal=journal,
            durability=durability,
            concurrency=concurrency,
            cleanup=cleanup,
            output=output,
            env_file=env_file,
            quiet=quiet,
            verbose=verbose,
            refused={
                "--junit": junit is not None,
                "--report": report is not None,
                "--notify": notify is not None,
            },
        )
    with _reported():
        from sagactl.api import check_run_id, compensate_run, load_all, start_run
        from sagactl.definition.envfile import with_env_file
        from sagactl.definition.inputs import read_inputs_file, resolve_many

        environ = with_env_file(os.environ, env_file)
        sagas = load_all(files, cleanup=cleanup)
        for saga in sagas:
            _known_secrets(saga, environ)
        run_ids: list[str | None] = [run_id] * len(sagas)
        if run_id is not None:
            check_run_id(run_id)
            if len(sagas) > 1:
                # One run per file, each named after its saga, so that CI ties them to its
                # build; every id checked before the first run starts.
                named = [f"{run_id}-{saga.name}" for saga in sagas]
                twice = sorted({r for r in named if named.count(r) > 1})
                if twice:
                    raise _usage(
                        f"--run-id {run_id} with several files names each run {run_id}-<saga "
                        f"name>, and these would be given twice: {', '.join(twice)}"
                    )
                for rid in named:
                    check_run_id(rid)
                run_ids = list(named)
        from_file = read_inputs_file(inputs_file) if inputs_file else None
        inputs = resolve_many(sagas, input_values or [], from_file)
        if run_id is not None:
            _refuse_taken([r for r in run_ids if r is not None], journal)

    def starter(saga: Any, values: Any, run_id: str | None) -> Call:
        return lambda store, renderer, stop: start_run(
            saga,
            values,
            store,
            environ,
            on_event=renderer,
            concurrency=concurrency,
            run_id=run_id,
            stop=stop,
            redactor=redactor(),
        )

    _drive(
        journal,
        durability,
        quiet,
        [
            starter(saga, values, rid)
            for saga, values, rid in zip(sagas, inputs, run_ids, strict=True)
        ],
        verbose=verbose,
        output=output,
        junit=junit,
        notify=(notify, notify_on, environ),
        html=report,
        cleanup=(
            lambda store, rid, renderer, stop: compensate_run(
                store,
                rid,
                environ,
                on_event=renderer,
                concurrency=concurrency,
                cleanup=True,
                stop=stop,
                redactor=redactor(),
            )
        )
        if cleanup
        else None,
    )


def _run_each(
    files: list[Path],
    each: Path,
    batch: str | None,
    assignments: list[str],
    inputs_file: Path | None,
    *,
    journal: str | None,
    durability: DurabilityChoice,
    concurrency: int,
    cleanup: bool,
    output: OutputChoice,
    env_file: Path | None,
    quiet: bool,
    verbose: bool,
    refused: Mapping[str, bool],
) -> None:
    """`run FILE --each inputs.jsonl` (SPEC §8): a run per line, `concurrency` at once, each
    `<batch>-<line>`; exits with the worst line's code. Given again with the same --run-id,
    it finishes what a killed or interrupted batch left."""
    with _reported():
        from sagactl.api import check_run_id, load_all
        from sagactl.definition.envfile import with_env_file
        from sagactl.definition.inputs import each_line, read_inputs_file
        from sagactl.ids import new_run_id

        if len(files) != 1:
            raise _usage("--each runs one saga once per line: give one saga file")
        given = [flag for flag, on in refused.items() if on]
        if given:
            raise _usage(
                f"{' and '.join(given)} cannot be used with --each (--output json gives "
                "every run's events and result)"
            )
        if batch is not None:
            check_run_id(batch)
            check_run_id(f"{batch}-1000000")
        environ = with_env_file(os.environ, env_file)
        (saga,) = load_all(files, cleanup=cleanup)
        _known_secrets(saga, environ)
        file_values = read_inputs_file(inputs_file) if inputs_file else None
        lines = each_line(saga, each, assignments, file_values)
    again = batch is not None
    batch = batch or new_run_id()
    flag = _journal_flag(journal)
    from sagactl.output.batch import EachJson, EachLines, EachProgress, summary, worse

    view: Any
    if output is OutputChoice.JSON:
        view = EachJson()
        view.start(batch, str(each))
    else:
        # The batch first, alone on its line, as `run` prints the run id: it survives a kill.
        typer.echo(f"batch {batch}: one run per line of {each}, each <batch>-<line>")
        if sys.stdout.isatty() and not quiet and os.environ.get("TERM") != "dumb":
            view = EachProgress(_count_lines(each), verbose=verbose)
        else:
            view = EachLines(quiet=quiet, verbose=verbose)
    with _reported(), _signals() as stop:
        from sagactl.journal import Durability, open_journal
        from sagactl.many import run_each

        with open_journal(journal, Durability(durability.value)) as store:
            try:
                run_each(
                    saga,
                    lines,
                    store,
                    environ,
                    batch=batch,
                    again=again,
                    on_line=view,
                    on_event=view.event,
                    concurrency=concurrency,
                    stop=stop,
                    cleanup=cleanup,
                )
            finally:
                view.stop()
    code = view.tally.code
    if stop.is_set():
        code = worse(code, stop.exit_code)
    if isinstance(view, EachJson):
        view.finish(code)
    else:
        unfinished = stop.is_set() or view.tally.counts["interrupted"] > 0
        again_command = (
            f"sagactl run {files[0]} --each {each} --run-id {batch}{flag}" if unfinished else None
        )
        tally = summary(
            view.tally, str(each), journal_flag=flag, saga_name=saga.name, again=again_command
        )
        view.close(tally)
    raise typer.Exit(code)


def _count_lines(path: Path) -> int | None:
    """The lines with inputs, for the progress bar; None if unreadable."""
    try:
        with open(path, "rb") as handle:
            return sum(1 for raw in handle if raw.strip())
    except OSError:
        return None


def _refuse_taken(run_ids: list[str], journal: str | None) -> None:
    """Raise JournalError (exit 4) when a chosen run id is taken, before any run starts:
    with several files, a clash found at the second would come after the first had run."""
    from sagactl.errors import JournalError
    from sagactl.journal import open_journal

    with open_journal(journal) as store:
        for rid in run_ids:
            try:
                store.get_run(rid)
            except JournalError:
                continue
            raise JournalError(f"a run with id {rid} already exists: choose another --run-id")


def _usage(message: str) -> Exception:
    from sagactl.errors import UsageError

    return UsageError(message)


RunArgument = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        show_default=False,
        help="Run id, or a unique prefix of 4 or more characters.",
    ),
]


@app.command()
def resume(
    run_id: RunArgument,
    journal: JournalOption = None,
    durability: DurabilityOption = DurabilityChoice.FULL,
    concurrency: ConcurrencyOption = 8,
    junit: JunitOption = None,
    output: OutputOption = OutputChoice.TEXT,
    env_file: EnvFileOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    notify: NotifyOption = None,
    notify_on: NotifyOnOption = None,
    report: ReportOption = None,
) -> None:
    """Carry a run on from where it stopped (forward, confirm or compensation), with the saga
    text stored in the journal. Secrets are read from the environment again."""
    with _reported():
        from sagactl.api import resume_run
        from sagactl.definition.envfile import with_env_file

        environ = with_env_file(os.environ, env_file)
    _drive(
        journal,
        durability,
        quiet,
        [
            lambda store, renderer, stop: resume_run(
                store,
                run_id,
                environ,
                on_event=renderer,
                concurrency=concurrency,
                stop=stop,
                redactor=redactor(),
            )
        ],
        verbose=verbose,
        output=output,
        junit=junit,
        notify=(notify, notify_on, environ),
        html=report,
        existing=True,
    )


@app.command()
def compensate(
    run_id: RunArgument,
    journal: JournalOption = None,
    durability: DurabilityOption = DurabilityChoice.FULL,
    concurrency: ConcurrencyOption = 8,
    yes: Annotated[
        bool, typer.Option("--yes", help="Also undo a run that succeeded (when no pivot step ran).")
    ] = False,
    junit: JunitOption = None,
    output: OutputOption = OutputChoice.TEXT,
    env_file: EnvFileOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    notify: NotifyOption = None,
    notify_on: NotifyOnOption = None,
    report: ReportOption = None,
) -> None:
    """Roll a run back: compensate every step whose action may have taken effect, each after
    the steps that depend on it. Exit 0 when fully compensated, 3 when stuck."""
    with _reported():
        from sagactl.api import compensate_run
        from sagactl.definition.envfile import with_env_file

        environ = with_env_file(os.environ, env_file)
    _drive(
        journal,
        durability,
        quiet,
        [
            lambda store, renderer, stop: compensate_run(
                store,
                run_id,
                environ,
                on_event=renderer,
                concurrency=concurrency,
                yes=yes,
                stop=stop,
                redactor=redactor(),
            )
        ],
        verbose=verbose,
        output=output,
        junit=junit,
        compensating=True,
        notify=(notify, notify_on, environ),
        html=report,
        existing=True,
    )


EachOption = Annotated[
    Path | None,
    typer.Option(
        "--each",
        metavar="FILE.jsonl",
        show_default=False,
        help="One run per line, each line a JSON object of inputs (over -i and --inputs).",
    ),
]


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="The saga file.", show_default=False)],
    input_values: InputOption = None,
    inputs_file: InputsFileOption = None,
    each: EachOption = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="The run's id; with --each, ID-<line>, and submitting again queues only the "
            "lines not queued yet.",
        ),
    ] = None,
    journal: JournalOption = None,
    env_file: EnvFileOption = None,
    output: OutputOption = OutputChoice.TEXT,
    quiet: QuietOption = False,
) -> None:
    """Validate the saga and journal runs as queued, sending nothing: `sagactl worker`
    processes, on this machine or others sharing the journal, drive them. Exit 0 when every
    run was queued, 2 when a line was refused (the others are queued)."""
    with _reported():
        from sagactl.api import check_run_id, load_all
        from sagactl.definition.envfile import with_env_file
        from sagactl.definition.inputs import (
            EachLine,
            each_line,
            read_inputs_file,
            resolve_inputs,
        )
        from sagactl.journal import open_journal
        from sagactl.many import submit_runs
        from sagactl.output.batch import EachJson, EachLines

        environ = with_env_file(os.environ, env_file)
        (saga,) = load_all([file])
        _known_secrets(saga, environ)
        if run_id is not None:
            check_run_id(run_id)
            if each is not None:
                check_run_id(f"{run_id}-1000000")
        file_values = read_inputs_file(inputs_file) if inputs_file else None
        lines: Any
        if each is not None:
            lines = each_line(saga, each, input_values or [], file_values)
        else:
            lines = [EachLine(1, resolve_inputs(saga, input_values or [], file_values))]
        chosen = run_id
        run_id_of = (
            None
            if chosen is None
            else (lambda n: f"{chosen}-{n}")
            if each is not None
            else (lambda n: chosen)
        )
        view: Any = EachJson() if output is OutputChoice.JSON else EachLines(quiet=True)
        queued: list[str] = []
        before: list[Any] = []

        def told(outcome: Any) -> None:
            view(outcome)
            if outcome.earlier:
                before.append(outcome)
            elif outcome.run_id and len(queued) < 10:
                queued.append(outcome.run_id)
            if outcome.problem and output is not OutputChoice.JSON:
                typer.echo(f"refused: {outcome.problem} (nothing queued)", err=True)

        with open_journal(journal) as store:
            submit_runs(saga, lines, store, environ, run_id_of=run_id_of, on_line=told)
    tally = view.tally
    if isinstance(view, EachJson):
        view.finish(tally.code)
    elif each is None and before:
        run = before[0]
        typer.echo(run.run_id)
        typer.echo(f"submitted before, and {run.status.value} now: nothing queued")
    elif each is None and queued:
        typer.echo(queued[0])
        if not quiet:
            typer.echo(f"queued: a worker drives it (sagactl worker{_journal_flag(journal)})")
    elif not quiet:
        new = tally.done - tally.counts["earlier"] - tally.counts["refused"]
        shown = f"{new} run{'s' if new != 1 else ''} queued"
        if tally.counts["earlier"]:
            shown += f", {tally.counts['earlier']} submitted before and left as they are"
        if tally.counts["refused"]:
            shown += f", {tally.counts['refused']} lines refused"
        typer.echo(f"{shown} (sagactl worker{_journal_flag(journal)} drives them)")
    raise typer.Exit(2 if tally.counts["refused"] else 0)


@app.command()
def worker(
    journal: JournalOption = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Runs driven at once at most.")
    ] = 8,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=1.0,
            metavar="SECONDS",
            help="How long a run this worker drives stays its own unrenewed: a worker that "
            "dies loses its runs to the others this long after.",
        ),
    ] = 30.0,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle",
            help="Stop once nothing is left to claim and nothing is in flight (exit: the "
            "worst run's code); else run until SIGTERM or Ctrl-C.",
        ),
    ] = False,
    env_file: EnvFileOption = None,
    output: OutputOption = OutputChoice.TEXT,
    quiet: QuietOption = False,
) -> None:
    """Drive queued runs, and take over runs whose process died or whose lease lapsed, as
    `resume` would (the saga text of the journal, secrets from this environment). Any number
    of workers, on any number of machines sharing a PostgreSQL journal, each run driven by
    one at a time. SIGTERM or Ctrl-C: nothing more is claimed, the runs in flight journal what
    they sent and are released for another worker; exit 0."""
    import socket

    with _reported():
        from sagactl.definition.envfile import with_env_file
        from sagactl.journal import open_journal
        from sagactl.many import work
        from sagactl.output.batch import worse

        environ = with_env_file(os.environ, env_file)
    lock = threading.Lock()
    worst = 0
    counts: dict[str, int] = {}

    def ended(done: Any) -> None:
        nonlocal worst
        status = done.status.value if done.status is not None else done.error or "interrupted"
        if status == "refused":  # said on stderr; not started here
            with lock:
                worst = worse(worst, 2)
                counts["refused"] = counts.get("refused", 0) + 1
            return
        code = _EXIT.get(status, 0)
        with lock:
            worst = worse(worst, code)
            counts[status] = counts.get(status, 0) + 1
            if output is OutputChoice.JSON:
                from sagactl.output.run_views import json_line

                record = {
                    "v": 1,
                    "event": "run_ended",
                    "run_id": done.run_id,
                    "saga": done.saga,
                    "status": status,
                    "error": done.error,
                    "took_over": done.took_over,
                }
                typer.echo(json_line(record))
            elif not quiet:
                taken = " (taken over)" if done.took_over else ""
                why = f": {done.error}" if done.error and status != "interrupted" else ""
                typer.echo(f"run {done.run_id} ({done.saga}){taken} {status}{why}")

    def problem(text: str) -> None:
        typer.echo(f"worker: {text}", err=True)

    if not quiet and output is not OutputChoice.JSON:
        typer.echo(
            f"worker {socket.gethostname()}:{os.getpid()}: driving queued and interrupted runs "
            f"of {_shown_journal(journal)}, {concurrency} at once (SIGTERM or Ctrl-C stops)"
        )
    with _reported(), _signals() as stop:
        work(
            lambda: open_journal(journal),
            environ,
            on_run=ended,
            on_problem=problem,
            concurrency=concurrency,
            stop=stop,
            lease_ttl=lease,
            until_idle=until_idle,
        )
    if not quiet and output is not OutputChoice.JSON:
        shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no run"
        typer.echo(f"worker stopped: {shown}")
    raise typer.Exit(worst if until_idle and not stop.is_set() else 0)


def _shown_journal(journal: str | None) -> str:
    from sagactl.journal.leases import shown_target

    return shown_target(journal or os.environ.get("SAGACTL_JOURNAL") or "the default journal")


StepArgument = Annotated[
    str,
    typer.Argument(
        metavar="STEP",
        show_default=False,
        help="The step, or an item of a foreach step (lines[2]).",
    ),
]
ReasonOption = Annotated[
    str,
    typer.Option(
        "--reason",
        metavar="TEXT",
        show_default=False,
        help="Why: journaled with the action, with who did it, where and when.",
    ),
]


def _operate(journal: str | None, run_id: str, step: str, reason: str, verdict: str | None) -> None:
    with _reported():
        from sagactl.api import operate_run
        from sagactl.journal import open_journal
        from sagactl.output.run_views import next_commands

        with open_journal(journal, existing=True) as store:
            run, operation = operate_run(store, run_id, step, reason=reason, verdict=verdict)
        hints = next_commands(
            run.id, _journal_flag(journal), run.next_commands(), cleanup=run.cleanup
        )
        typer.echo(f"run {run.id}: {operation.describe()} (journaled, with the reason)\n{hints}")


@app.command()
def skip(
    run_id: RunArgument, step: StepArgument, reason: ReasonOption, journal: JournalOption = None
) -> None:
    """Treat a step's pending request as done without sending it, because it was done by hand:
    a compensation that keeps failing while the run compensates, a confirm while it confirms,
    an action going forward. For a run that is stuck or whose process is gone; then resume or
    compensate it."""
    _operate(journal, run_id, step, reason, None)


class Verdict(StrEnum):
    APPLIED = "applied"
    ABSENT = "absent"


@app.command()
def mark(
    run_id: RunArgument,
    step: StepArgument,
    verdict: Annotated[
        Verdict,
        typer.Argument(
            metavar="applied|absent",
            show_default=False,
            help="applied: its action took effect (checked in the service); absent: it never "
            "did, and can no longer.",
        ),
    ],
    reason: ReasonOption,
    journal: JournalOption = None,
) -> None:
    """Settle a step whose action is in doubt, having checked the service by hand: applied
    (the run goes on from it, without its outputs) or absent (it is sent again going forward,
    not compensated going back). For a run that is stuck or whose process is gone; then
    resume or compensate it."""
    _operate(journal, run_id, step, reason, verdict.value)


class StatusChoice(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    COMPENSATED = "compensated"
    CLEANED = "cleaned"
    STUCK = "stuck"
    INTERRUPTED = "interrupted"


@app.command("list")
def list_command(
    status: Annotated[
        StatusChoice | None, typer.Option("--status", help="Only runs in this state.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only runs of this saga.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    stuck: Annotated[
        bool,
        typer.Option(
            "--stuck",
            help="Only runs that wait on someone (stuck, or interrupted), the one waiting "
            "longest first, with how long each has waited.",
        ),
    ] = False,
    journal: JournalOption = None,
    output: OutputOption = OutputChoice.TEXT,
) -> None:
    """List runs, newest first: id, saga, status (a run whose process is gone shows as
    interrupted), start time."""
    with _reported():
        from sagactl.api import list_runs, list_stuck
        from sagactl.errors import UsageError
        from sagactl.journal import open_journal
        from sagactl.output.run_views import format_list, json_line, list_records

        if stuck and status is not None:
            raise UsageError("--stuck lists stuck and interrupted runs: give it, or --status")
        with open_journal(journal, existing=True) as store:
            runs = (
                list_stuck(store, name=name, limit=limit)
                if stuck
                else list_runs(
                    store, status=status.value if status else None, name=name, limit=limit
                )
            )
        if output is OutputChoice.JSON:
            for record in list_records(runs, waiting=stuck):
                typer.echo(json_line(record))
        else:
            typer.echo(format_list(runs, waiting=stuck))


@app.command()
def show(
    run_id: RunArgument,
    journal: JournalOption = None,
    output: OutputOption = OutputChoice.TEXT,
) -> None:
    """Show one run: its saga, every step's state and outputs, and every attempt with its
    status, duration and error, on a time line from the run's start."""
    with _reported():
        from sagactl.api import step_order
        from sagactl.journal import open_journal, shown_status
        from sagactl.output.run_views import format_show, json_line, show_record

        with open_journal(journal, existing=True) as store:
            record = store.find_run(run_id)
            order = step_order(record)
            steps, attempts = store.steps(record.id), store.attempts(record.id)
            actions = store.operator_actions(record.id)
            told = store.notifications(record.id)
        if output is OutputChoice.JSON:
            shown_record = show_record(
                record, shown_status(store, record), steps, attempts, order, actions, told
            )
            typer.echo(json_line(shown_record))
        else:
            shown = format_show(
                record,
                shown_status(store, record),
                steps,
                attempts,
                order,
                journal_flag=_journal_flag(journal),
                actions=actions,
                notifications=told,
            )
            typer.echo(shown)


@app.command()
def metrics(journal: JournalOption = None) -> None:
    """Print OpenMetrics text of the journal's runs (for a Prometheus textfile collector or a
    scrape): runs by saga and status, run and attempt durations, retries, steps in doubt,
    runs waiting on someone and how long the oldest has."""
    with _reported():
        from sagactl.journal import open_journal
        from sagactl.output.metrics import BOUNDS, format_metrics

        with open_journal(journal, existing=True) as store:  # a typo must not read as no runs
            stats = store.statistics(BOUNDS)
        typer.echo(format_metrics(stats), nl=False)


@app.command("report")
def report_command(
    run_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN...", show_default=False, help="Run ids, or unique prefixes of them."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("-o", "--output-file", metavar="FILE.html", help="Where to write the page."),
    ],
    journal: JournalOption = None,
) -> None:
    """Write runs as one self-contained HTML page (style inline, no script, nothing fetched
    from anywhere): status, cause, step graph, timeline of every attempt with its request and
    answer, operator actions, saga text. For CI artifacts."""
    with _reported():
        from sagactl.journal import open_journal

        with open_journal(journal, existing=True) as store:
            pages = [_run_data(store, store.find_run(run_id)) for run_id in run_ids]
        _write_report(out, pages, _journal_flag(journal))
        typer.echo(f"{out}: {len(pages)} run{'s' if len(pages) != 1 else ''}")


@app.command()
def ui(
    journal: JournalOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; any but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0: any free port.")] = 8787,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Required on every request (given once as ?token=); made up and printed when "
            "listening on anything but loopback.",
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the dashboard in a browser.")
    ] = False,
) -> None:
    """Serve a dashboard of the journal's runs in the browser: the runs, filtered and searched;
    each run's steps, graph, timeline of every attempt, requests and answers; following runs
    that another process drives. Read-only; no network needed; Ctrl-C stops it."""
    import secrets
    import socket

    with _reported():
        try:
            import uvicorn

            from sagactl.output.pages.server import MIN_TOKEN, create_app
        except ImportError:
            raise UsageError(
                "sagactl ui needs the web server it ships as an extra: "
                "pip install 'sagactl[ui]' (Starlette and uvicorn)"
            ) from None
        from sagactl.journal import open_journal

        if token is not None and len(token) < MIN_TOKEN:
            raise UsageError(
                f"--token: give at least {MIN_TOKEN} characters, or leave it out to have one "
                "made up and printed"
            )
        loopback = host in ("127.0.0.1", "localhost", "::1")
        if token is None and not loopback:
            token = secrets.token_urlsafe(24)
        with open_journal(journal, existing=True) as store:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
            # on connections of a socket that says it is TCP, and with it on every answer on a
            # kept-alive connection waits ≈ 40 ms for the browser's delayed acknowledgement.
            listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((host, port))
            except OSError as exc:
                listener.close()
                raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            listener.listen(64)
            bound = listener.getsockname()[1]
            shown_host = f"[{host}]" if ":" in host else host
            url = f"http://{shown_host}:{bound}/" + (f"?token={token}" if token else "")
            app_ = create_app(
                store,
                lambda run: _run_data(store, run),
                token=token,
                redactor=redactor(),
                journal_flag=_journal_flag(journal),
            )
            typer.echo(
                f"sagactl ui: {url}\n  journal {store.location} (read-only); Ctrl-C stops it"
            )
            if open_browser:
                import webbrowser

                webbrowser.open(url)
            server = uvicorn.Server(
                uvicorn.Config(app_, log_level="warning", access_log=False, lifespan="off")
            )
            # uvicorn stops on Ctrl-C (SIGINT) or SIGTERM, then raises the signal again.
            with contextlib.suppress(KeyboardInterrupt):
                server.run(sockets=[listener])


class ServiceName(StrEnum):
    INVENTORY = "inventory"
    PRICING = "pricing"
    SEARCH = "search"


@app.command()
def demo(
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            metavar="PATH",
            help="Journal to use (default: a new one in a temporary "
            "directory, kept so that the runs can be shown).",
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Keep the services up and print how to run sagas against them."
        ),
    ] = False,
    fail: Annotated[
        list[ServiceName] | None,
        typer.Option(
            "--fail", metavar="SERVICE", help="This service rejects every action (repeatable)."
        ),
    ] = None,
    flaky: Annotated[
        list[ServiceName] | None,
        typer.Option(
            "--flaky", metavar="SERVICE", help="This service answers 503 twice, then works."
        ),
    ] = None,
    slow: Annotated[
        list[ServiceName] | None,
        typer.Option(
            "--slow",
            metavar="SERVICE",
            help="This service answers once after the 5s attempt timeout, having done the work.",
        ),
    ] = None,
    stuck: Annotated[
        list[ServiceName] | None,
        typer.Option(
            "--stuck",
            metavar="SERVICE",
            help="This service refuses to undo anything (409): a run that fails goes stuck.",
        ),
    ] = None,
) -> None:
    """Start demo services (inventory, pricing, search) on 127.0.0.1 and run the bundled
    add-product saga against them: once succeeding, once with search rejecting the product."""
    import shlex
    import tempfile

    from sagactl.demo import DemoFaults, demo_services, run_demo, serve_instructions

    faults = DemoFaults(
        fail=[s.value for s in fail or []],
        flaky=[s.value for s in flaky or []],
        slow=[s.value for s in slow or []],
        stuck=[s.value for s in stuck or []],
    )
    if serve:
        with demo_services(faults) as started, _signals() as stop:
            typer.echo(serve_instructions(started, str(journal) if journal else None))
            stop.wait()
        raise typer.Exit(0)
    path = journal or Path(tempfile.mkdtemp(prefix="sagactl-demo-")) / "journal.db"
    with _reported(), _signals() as stop:
        from sagactl.journal import open_journal

        with open_journal(path) as store:
            # Its own journal, whatever SAGACTL_JOURNAL says: the hints always name it.
            flag = f" --journal {shlex.quote(str(path))}"
            code = run_demo(store, faults, sys.stdout, _screen(flag), stop=stop)
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the `sagactl` console script."""
    # `import httpx` imports httpx's own command-line client (click, rich and pygments: about
    # a third of a one-step run's start-up) whenever they are installed, as rich is with
    # sagactl. The process never calls it; a None in sys.modules makes that import fail, which
    # httpx takes as "not installed".
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    app(prog_name="sagactl")
