"""Run, resume and compensate sagas, and look runs up: the library calls behind the commands.

Each call opens what it needs (the journal, one HTTP client), drives an `Engine`, and returns the
run's status; the command line only maps that to an exit code.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagactl.errors import UsageError
from sagactl.journal import Journal, shown_status
from sagactl.records import RunRecord, RunStatus, StepRecord, StepState
from sagactl.redact import Redactor

if TYPE_CHECKING:  # `list` and `show` import this module, and need neither
    from sagactl.engine.machine import Engine
    from sagactl.engine.operator import Operation
    from sagactl.events import Event
    from sagactl.model import Notify, Saga

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{3,63}$")

__all__ = [
    "check_run_id",
    "compensate_run",
    "is_url",
    "list_runs",
    "list_stuck",
    "load_all",
    "not_cleaned",
    "notify_run",
    "operate_run",
    "operator",
    "resume_run",
    "start_run",
    "step_order",
]


def _client(concurrency: int) -> Any:
    from sagactl.executors.http.transport import client

    return client(concurrency)


def _own_client(shared: Any, concurrency: int) -> Any:
    """`shared` when given (left open: its owner closes it), else a client of the run's own."""
    return contextlib.nullcontext(shared) if shared is not None else _client(concurrency)


def _ready(
    saga: Saga,
    run_id: str,
    inputs: Mapping[str, Any],
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    redactor: Redactor,
) -> dict[str, Any]:
    """What a run needs before anything is journaled or sent (SPEC §3.2 item 0): `vars`
    rendered, every request that can be prepared prepared and checked, every unset env name
    that is read without a default refused. Raises RenderError or DefinitionErrors (exit 2)."""
    from sagactl.definition.scope import run_context
    from sagactl.definition.templating import Renderer, adopt
    from sagactl.executors.http.prepare import preflight

    redactor.add(list(secrets.values()), derived=False)
    adopt(saga.plans)
    renderer = Renderer(on_secret=redactor.add)
    context = run_context(
        saga, run_id=run_id, inputs=inputs, env=env, secrets=secrets, renderer=renderer
    )
    return {
        "renderer": renderer,
        "context": context,
        "redactor": redactor,
        "prepared": preflight(saga, context, renderer, secrets=redactor),
    }


def _engine(
    saga: Saga,
    run: RunRecord,
    journal: Journal,
    client: Any,
    secrets: Mapping[str, str],
    on_event: Callable[[Event], None],
    concurrency: int,
    stop: threading.Event | None,
    ready: Mapping[str, Any],
    lease_ttl: float = 30.0,
) -> Engine:
    from sagactl.engine.machine import Engine
    from sagactl.executors.http.executor import HttpExecutor  # only the commands that send
    from sagactl.executors.registry import executors

    return Engine(
        saga,
        run,
        journal=journal,
        executors={"http": HttpExecutor(client), **executors()},
        secrets=secrets,
        on_event=on_event,
        concurrency=concurrency,
        stop=stop,
        lease_ttl=lease_ttl,
        **ready,
    )


def start_run(
    saga: Saga,
    inputs: Mapping[str, Any],
    journal: Journal,
    environ: Mapping[str, str],
    *,
    on_event: Callable[[Event], None],
    concurrency: int = 8,
    run_id: str | None = None,
    stop: threading.Event | None = None,
    redactor: Redactor | None = None,
    client: Any = None,
) -> tuple[str, RunStatus]:
    """Journal a new run of `saga`, then drive it. `redactor` is the one the caller's sinks
    mask with: it learns the run's secrets. `client`: an HTTP client shared with other runs
    (`run_each`), else one of the run's own."""
    if run_id is not None:
        check_run_id(run_id)
    from sagactl.engine.runs import create_run, env_values, read_secrets
    from sagactl.ids import new_run_id

    redactor = redactor if redactor is not None else Redactor()
    # Everything that can be checked is, before anything is written or sent.
    secrets = read_secrets(saga, environ)
    redactor.add(list(secrets.values()), derived=False)
    for name, value in inputs.items():
        if redactor.value(value) != value:
            raise UsageError(
                f"input '{name}' holds a secret's value: inputs are journaled "
                "and shown, so pass it as a secret (secrets: in the saga, read "
                "as secrets.NAME)"
            )
    run_id = run_id or new_run_id()
    ready = _ready(saga, run_id, inputs, env_values(saga, environ), secrets, redactor)
    run = create_run(journal, saga, inputs, environ, run_id=run_id, redactor=redactor)
    with _own_client(client, concurrency) as client:
        engine = _engine(saga, run, journal, client, secrets, on_event, concurrency, stop, ready)
        return run.id, engine.start()


@functools.lru_cache(maxsize=32)
def _journaled_saga(text: str, path: str) -> Saga:
    """A journaled saga text, loaded once per process: a worker or a batch resumes many runs
    of one saga, and a loaded saga is immutable."""
    from sagactl.definition.loader import load_text

    return load_text(text, path)


def _stored(
    journal: Journal, prefix: str, environ: Mapping[str, str], redactor: Redactor | None
) -> tuple[RunRecord, Saga, dict[str, str], dict[str, Any]]:
    from sagactl.engine.runs import WITHHELD, read_secrets

    run = journal.find_run(prefix)
    # The journaled text, never the file on disk: the run goes on as it began.
    saga = _journaled_saga(run.saga_text, run.saga_path)
    secrets = read_secrets(saga, environ)
    env = dict(run.env)
    # An env value that held a secret was not journaled: it is read from the environment
    # again, like the secrets.
    missing = [name for name, value in env.items() if value == WITHHELD and name not in environ]
    if missing:
        raise UsageError(
            f"env {', '.join(missing)} held a secret, so the journal did not keep "
            f"{'them' if len(missing) > 1 else 'it'}: set "
            f"{'them' if len(missing) > 1 else 'it'} in the environment"
        )
    env.update({name: environ[name] for name, value in env.items() if value == WITHHELD})
    return (
        run,
        saga,
        secrets,
        _ready(
            saga, run.id, run.inputs, env, secrets, redactor if redactor is not None else Redactor()
        ),
    )


def resume_run(
    journal: Journal,
    prefix: str,
    environ: Mapping[str, str],
    *,
    on_event: Callable[[Event], None],
    concurrency: int = 8,
    stop: threading.Event | None = None,
    redactor: Redactor | None = None,
    client: Any = None,
    lease_ttl: float = 30.0,
) -> tuple[str, RunStatus]:
    """Carry a run on from where its journal says it stopped. `lease_ttl`: how long its lease
    lasts unrenewed, after which another process may take it over (a worker's `--lease`)."""
    run, saga, secrets, ready = _stored(journal, prefix, environ, redactor)
    with _own_client(client, concurrency) as client:
        engine = _engine(
            saga, run, journal, client, secrets, on_event, concurrency, stop, ready, lease_ttl
        )
        return run.id, engine.resume()


def compensate_run(
    journal: Journal,
    prefix: str,
    environ: Mapping[str, str],
    *,
    on_event: Callable[[Event], None],
    concurrency: int = 8,
    yes: bool = False,
    cleanup: bool = False,
    stop: threading.Event | None = None,
    redactor: Redactor | None = None,
    client: Any = None,
) -> tuple[str, RunStatus]:
    """Roll a run back; with `cleanup`, a run that succeeded is undone as a smoke test's end
    and ends `cleaned`."""
    run, saga, secrets, ready = _stored(journal, prefix, environ, redactor)
    with _own_client(client, concurrency) as client:
        engine = _engine(saga, run, journal, client, secrets, on_event, concurrency, stop, ready)
        return run.id, engine.compensate(allow_succeeded=yes or cleanup, cleanup=cleanup)


def operator() -> str:
    """Who is acting, as operator actions journal it: the login name."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid {os.getuid()}"


def operate_run(
    journal: Journal,
    prefix: str,
    step: str,
    *,
    reason: str,
    verdict: str | None = None,
) -> tuple[RunRecord, Operation]:
    """An operator action (SPEC §7) on a run that is stuck or whose owner is gone: `skip`
    the pending request of `step`, or, with `verdict` (`applied`, `absent`), `mark` its action
    in doubt. The run's lease is taken for it, so a live run is refused (JournalError, exit
    4), and the action and the state it gives are journaled together. UsageError (exit 2)
    when it does not apply, saying why."""
    from sagactl.definition.loader import load_text
    from sagactl.engine.operator import mark, skip
    from sagactl.records import Owner

    if not reason.strip():
        raise UsageError("--reason is empty: say why, it is journaled with the action")
    found = journal.find_run(prefix)
    saga = load_text(found.saga_text, found.saga_path)
    owner = Owner.this_process()
    journal.take_lease(found.id, owner, 30.0)
    try:
        # Read again under the lease: another command may have carried it on meanwhile.
        run = journal.get_run(found.id)
        # Attempts of a process that died are in doubt: settled first, as a resume would.
        journal.settle_interrupted(run.id)
        steps = journal.steps(run.id)
        operation = (
            skip(saga, run, steps, step)
            if verdict is None
            else mark(saga, run, steps, step, verdict)
        )
        journal.operate(
            run.id,
            operation.step_id,
            operation.phase.value,
            action=operation.action,
            state=operation.state,
            applied=operation.applied,
            settled=operation.settled,
            pivot_passed=operation.pivot,
            user=operator(),
            host=owner.host,
            reason=reason,
        )
    finally:
        journal.release_lease(found.id, owner)
    return journal.get_run(run.id), operation


_LIVE = ("running", "compensating")


def list_runs(
    journal: Journal,
    *,
    status: str | None = None,
    name: str | None = None,
    limit: int = 20,
    page: int = 1000,
) -> Sequence[tuple[RunRecord, str]]:
    """Runs newest first, with the status users see; `status` filters on that status. A
    run shown `interrupted` is journaled `running` or `compensating` with its owner gone, so
    those are read a page at a time until `limit` match, however many runs there are."""
    if status not in (*_LIVE, "interrupted"):
        return [
            (r, shown_status(journal, r))
            for r in journal.list_runs(status=status, name=name, limit=limit)
        ]
    found: list[tuple[RunRecord, str]] = []
    before: tuple[float, str] | None = None
    while len(found) < limit:
        runs = journal.list_runs(
            status=_LIVE if status == "interrupted" else status,
            name=name,
            limit=page,
            before=before,
        )
        found += [(r, shown) for r in runs if (shown := shown_status(journal, r)) == status]
        if len(runs) < page:
            break
        before = (runs[-1].created_at, runs[-1].id)
    return found[:limit]


def notify_run(
    journal: Journal,
    run_id: str,
    *,
    exit_code: int,
    environ: Mapping[str, str],
    redactor: Redactor,
    target: str | None = None,
    on: Sequence[str] | None = None,
    sleep: Callable[[float], None] | None = None,
    since: float | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """Tell of a run's end (SPEC §6) whoever asked — the saga's `notify`, and `target` (a
    URL, or a command) — when its status is one they asked for (`on`; by default stuck and
    compensated): its JSON summary POSTed, retried as the policy says, or given on a
    command's standard input; masked by `redactor`. Each outcome is journaled. Never raises
    for what the notification meets: returns a line for each one not delivered, for the
    user; the run's outcome and exit code stay as they are. With `since`, only a run that
    changed since then (one this command ended, not one it found ended) is told of. With
    `stop` set (a signal), no POST is sent again."""
    import time

    from sagactl.model import Notify
    from sagactl.output.run_views import json_line, summary_record

    run = journal.get_run(run_id)
    if since is not None and run.updated_at < since:
        return []
    wanted: list[Notify] = []
    saga: Saga | None = None
    if "notify" in run.saga_text:
        # Loaded (from the cache of checked sagas, as a rule) only when it may say so; a
        # text this sagactl no longer accepts tells nobody, but the run's end stays as it is.
        from sagactl.errors import DefinitionErrors

        with contextlib.suppress(DefinitionErrors):
            saga = _journaled_saga(run.saga_text, run.saga_path)
        if saga is not None and saga.notify is not None:
            wanted.append(saga.notify)
    if target:
        url = target if is_url(target) else None
        wanted.append(Notify(url=url, command=None if url else target, on=tuple(on or Notify().on)))
    wanted = [notify for notify in wanted if run.status.value in notify.on]
    if not wanted:
        return []
    steps, attempts = journal.steps(run_id), journal.attempts(run_id)
    summary = summary_record(run, steps, attempts, step_order(run), exit_code)
    body = (redactor.text(json_line(summary)) + "\n").encode()
    problems = []
    for notify in wanted:
        try:
            where, delivered, detail = _notify_one(
                notify, saga, run, body, environ, redactor, sleep or time.sleep, stop
            )
        except Exception as exc:  # a notification never fails the run
            where, delivered, detail = (
                notify.url or notify.command or "",
                False,
                f"{type(exc).__name__}: {exc}",
            )
        where, detail = redactor.text(_without_password(where)), redactor.text(detail)
        journal.record_notification(run_id, target=where, delivered=delivered, detail=detail)
        if not delivered:
            problems.append(
                f"notify {where}: not delivered ({detail}); the run is {run.status.value} "
                "all the same"
            )
    return problems


def _notify_one(
    notify: Notify,
    saga: Saga | None,
    run: RunRecord,
    body: bytes,
    environ: Mapping[str, str],
    redactor: Redactor,
    sleep: Callable[[float], None],
    stop: threading.Event | None = None,
) -> tuple[str, bool, str]:
    """(where, delivered, what came of it) of one notification."""
    import subprocess

    if notify.command is not None:
        done = subprocess.run(
            notify.command,
            shell=True,
            input=body,
            capture_output=True,
            timeout=notify.timeout,
            env={**environ, "SAGACTL_RUN_ID": run.id, "SAGACTL_STATUS": run.status.value},
            check=False,
        )
        said = " ".join(done.stderr.decode(errors="replace").split())[:200]
        detail = f"exit code {done.returncode}" + (f": {said}" if said and done.returncode else "")
        return notify.command, done.returncode == 0, detail
    url = notify.url or ""
    if saga is not None and saga.notify is notify and "{" in url:
        url = _rendered_url(saga, run, url, environ, redactor)
    from sagactl.engine.retry import next_wait
    from sagactl.executors.http.notify import client, post_once

    with client() as http:
        number = 0
        while True:
            number += 1
            posted = post_once(http, url, body, timeout=notify.timeout, retry=notify.retry)
            wait = (
                next_wait(notify.retry, number, posted.retry_after, now=0.0, deadline=None)
                if posted.retryable
                else None
            )
            if posted.delivered or wait is None or (stop is not None and stop.is_set()):
                tries = f" after {number} attempts" if number > 1 else ""
                cut = ", then interrupted" if stop is not None and stop.is_set() else ""
                return url, posted.delivered, f"{posted.detail}{tries}{cut}"
            sleep(wait)


def is_url(target: str) -> bool:
    """Whether a --notify target is a URL (http or https, in any case), not a command."""
    return target.lower().startswith(("http://", "https://"))


def _without_password(target: str) -> str:
    """A URL as shown and journaled: the password of its user info as ***."""
    from urllib.parse import urlsplit

    if not is_url(target):
        return target
    parts = urlsplit(target)
    if parts.password is None:
        return target
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _rendered_url(
    saga: Saga, run: RunRecord, url: str, environ: Mapping[str, str], redactor: Redactor
) -> str:
    """The saga's notify URL, rendered as the run's templates are (a secret in it masked
    wherever it is shown)."""
    from sagactl.definition.scope import run_context
    from sagactl.definition.templating import Renderer
    from sagactl.engine.runs import WITHHELD, read_secrets

    secrets = read_secrets(saga, environ)
    redactor.add(list(secrets.values()), derived=False)
    env = {k: environ.get(k, "") if v == WITHHELD else v for k, v in run.env.items()}
    renderer = Renderer(on_secret=redactor.add)
    context = run_context(
        saga, run_id=run.id, inputs=run.inputs, env=env, secrets=secrets, renderer=renderer
    )
    return str(renderer.render(url, context))


def list_stuck(
    journal: Journal, *, name: str | None = None, limit: int = 20, page: int = 1000
) -> list[tuple[RunRecord, str]]:
    """The runs that wait on someone — stuck, or interrupted (their process is gone) — the
    one waiting longest first (since its last change), however many runs there are."""
    found: list[tuple[RunRecord, str]] = []
    before: tuple[float, str] | None = None
    while True:
        runs = journal.list_runs(status=("stuck", *_LIVE), name=name, limit=page, before=before)
        found += [
            (r, shown)
            for r in runs
            if (shown := shown_status(journal, r)) in ("stuck", "interrupted")
        ]
        if len(runs) < page:
            break
        before = (runs[-1].created_at, runs[-1].id)
    found.sort(key=lambda pair: (pair[0].updated_at, pair[0].id))
    return found[:limit]


def step_order(run: RunRecord) -> list[str]:
    """The run's step ids in file order: journaled with the run, or for runs journaled before
    they were, read from its journaled saga text without checking it again (that needs the
    schema and templates: `show` must start fast)."""
    if run.step_ids is not None:
        return list(run.step_ids)
    from sagactl.definition.source import parse_data

    data = parse_data(run.saga_text)
    return [s["id"] for s in data.get("steps", []) if isinstance(s, dict) and "id" in s]


def check_run_id(run_id: str) -> None:
    """Raise UsageError unless `run_id` can name a run (`--run-id`)."""
    if not _RUN_ID.match(run_id):
        raise UsageError(
            f"--run-id '{run_id}': use 4 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def not_cleaned(
    run: RunRecord, steps: Mapping[tuple[str, str], StepRecord], order: Sequence[str]
) -> list[str]:
    """The steps a compensation of `run` has left to undo: their action may have taken
    effect, they have a compensate request, and it has not succeeded; for a foreach step, each
    such item (`lines[2]`). Read from the journaled saga text, as `step_order` reads it."""
    from sagactl.definition.source import parse_data
    from sagactl.output.run_views import item_keys

    data = parse_data(run.saga_text)
    undoable = {
        s["id"]
        for s in data.get("steps", [])
        if isinstance(s, dict) and s.get("compensate") is not None
    }
    return [
        key
        for sid in order
        if sid in undoable
        for key in item_keys(sid, steps) or [sid]
        if (action := steps.get((key, "action"))) is not None
        and action.applied
        and getattr(steps.get((key, "compensate")), "state", None) is not StepState.SUCCEEDED
    ]


def load_all(files: Sequence[str | Path], *, cleanup: bool = False) -> list[Saga]:
    """Every saga file, checked before any is run: all their problems at once."""
    from sagactl.definition.loader import load
    from sagactl.errors import DefinitionError, DefinitionErrors
    from sagactl.model import StepKind

    sagas: list[Saga] = []
    problems: list[DefinitionError] = []
    for file in files:
        try:
            sagas.append(load(file))
        except DefinitionErrors as exc:
            problems.extend(exc.errors)
    if problems:
        # File by file, in the order given; each file's already sorted by position.
        raise DefinitionErrors(problems, by_position=False)
    if cleanup:
        for saga in sagas:
            pivots = [s.id for s in saga.steps if s.kind is StepKind.PIVOT]
            if pivots:
                raise UsageError(
                    f"{saga.path}: --cleanup cannot undo pivot step"
                    f"{'s' if len(pivots) > 1 else ''} {', '.join(pivots)}: "
                    "give them a compensate request, or run without --cleanup"
                )
    return sagas
