"""Many runs: `run FILE --each LINES.jsonl` in one process, `submit` to queue runs, and
`worker` processes, on any number of machines, driving what is queued (SPEC §8).

Every run here is a run like any other — journaled, keyed and driven by the engine as `run`
and `resume` drive one (`api`) — and many of them share one journal connection (their writes
share commits) and one pool of HTTP connections.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagactl.api import _client, compensate_run, resume_run, start_run
from sagactl.journal import Journal
from sagactl.records import RunRecord, RunStatus
from sagactl.redact import Redactor

if TYPE_CHECKING:
    from sagactl.definition.inputs import EachLine
    from sagactl.events import Event
    from sagactl.model import Saga

__all__ = ["LineOutcome", "WorkDone", "run_each", "submit_runs", "work"]


@dataclass(frozen=True, slots=True)
class LineOutcome:
    """What became of one line of an `--each` file."""

    line: int
    run_id: str | None
    """None when nothing of the line was journaled or sent: refused, or not started."""
    status: RunStatus | None
    """The run's final status; None when the line was refused, or its run was interrupted
    (then `interrupted` is the exit code of the signal)."""
    problem: str | None = None
    """Why the line was refused (its file and line first): nothing of it was sent."""
    error: str | None = None
    """The run's error, when it did not succeed (its step first)."""
    interrupted: int = 0
    refused_with: int = 2
    """The exit code of a refusal: 2 for a bad line, 4 for a run another process drives."""
    earlier: bool = False
    """The run had ended before this command (a batch run again): nothing was sent."""


def run_each(
    saga: Saga,
    lines: Iterable[EachLine],
    journal: Journal,
    environ: Mapping[str, str],
    *,
    batch: str,
    on_line: Callable[[LineOutcome], None],
    on_event: Callable[[int, str, Event], None] | None = None,
    concurrency: int = 8,
    stop: threading.Event | None = None,
    cleanup: bool = False,
    again: bool = False,
) -> None:
    """One run of `saga` per line (SPEC §8), in this process on one journal and one HTTP
    client, at most `concurrency` at once; steps of different runs interleave. Lines are read
    as runs start, so memory does not grow with the file. `on_line` is told of every line
    once it ended (from any thread), `on_event` of every event of every run, with the run's
    line and id.

    The run of line N is `<batch>-N`. With `again` (the batch may have run before, and been
    killed), a line whose run ended is not run again, one whose process died is resumed, and
    only the others start: running a batch again finishes it, each line applied once.

    On `stop`, no more runs start; those in flight journal what they sent and end
    interrupted. A JournalError stops every run from starting, and is raised once those in
    flight ended."""
    import queue

    from sagactl.errors import Interrupted, JournalError, SagactlError
    from sagactl.events import RunFinished

    stop = stop if stop is not None else threading.Event()
    halt = threading.Event()  # the journal failed: start nothing more
    work: queue.Queue[EachLine | None] = queue.Queue(maxsize=concurrency)
    failures: list[BaseException] = []
    lock = threading.Lock()

    def earlier(
        line: EachLine, inputs: Mapping[str, Any], run_id: str
    ) -> LineOutcome | RunRecord | None:
        """The line's run journaled by an earlier command: its outcome when there is nothing
        to do, the run when it is to be resumed; None when there is none."""
        try:
            run = journal.get_run(run_id)
        except JournalError:
            return None
        where = line.where or f"line {line.number}"
        if _canonical(run.inputs) != _canonical(inputs):
            problem = (
                f"{where}: run {run_id} was started with other inputs (did the file change?): "
                "give the batch another --run-id"
            )
            return LineOutcome(line.number, None, None, problem=problem)
        if run.status.final:
            return LineOutcome(line.number, run_id, run.status, error=run.error, earlier=True)
        if journal.driven(run):
            problem = f"{where}: run {run_id} is being driven by process {run.owner_pid}"
            return LineOutcome(line.number, None, None, problem=problem, refused_with=4)
        return run

    def drive(client: Any, line: EachLine) -> None:
        assert line.inputs is not None
        run_id = f"{batch}-{line.number}"
        error: list[str] = []
        # A redactor of the run's own: it learns what this run derives from its secrets, and
        # is dropped with it (one for the whole batch would grow with every line).
        redactor = Redactor()

        def seen(event: Event) -> None:
            if isinstance(event, RunFinished) and event.error:
                error[:] = [event.error]
            if on_event is not None:
                on_event(line.number, run_id, event)

        found = earlier(line, line.inputs, run_id) if again else None
        if isinstance(found, LineOutcome):
            on_line(found)
            return
        common: dict[str, Any] = {
            "on_event": seen,
            "concurrency": concurrency,
            "stop": stop,
            "redactor": redactor,
            "client": client,
        }
        try:
            if found is None:
                _, status = start_run(saga, line.inputs, journal, environ, run_id=run_id, **common)
            else:
                try:
                    _, status = resume_run(journal, run_id, environ, **common)
                except JournalError:
                    # Another process took the run since it was looked at: that line only.
                    if not journal.driven(journal.get_run(run_id)):
                        raise
                    problem = f"{line.where or f'line {line.number}'}: run {run_id} is being "
                    problem += "driven by another process"
                    on_line(LineOutcome(line.number, None, None, problem=problem, refused_with=4))
                    return
            if cleanup and status is RunStatus.SUCCEEDED:
                _, status = compensate_run(journal, run_id, environ, cleanup=True, **common)
        except Interrupted as exc:
            on_line(LineOutcome(line.number, run_id, None, interrupted=exc.exit_code))
            return
        except JournalError:
            halt.set()
            raise
        except SagactlError as exc:
            # Refused before its run was journaled (a secret in an input, a template that
            # cannot be rendered with these inputs): nothing was sent.
            if exc.exit_code == 2:
                problem = redactor.text(f"{line.where or f'line {line.number}'}: {exc}")
                on_line(LineOutcome(line.number, None, None, problem=problem))
                return
            raise
        on_line(LineOutcome(line.number, run_id, status, error=error[0] if error else None))

    def worker(client: Any) -> None:
        while (line := work.get()) is not None:
            if stop.is_set() or halt.is_set():
                continue  # not started: a run of the batch again starts it
            try:
                drive(client, line)
            except BaseException as exc:  # re-raised by the caller's thread
                with lock:
                    failures.append(exc)
                halt.set()

    with _client(concurrency * min(concurrency, 8)) as client:
        threads = [
            threading.Thread(target=worker, args=(client,), name=f"run-each-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            for line in lines:
                if stop.is_set() or halt.is_set():
                    break
                if line.inputs is None:
                    on_line(LineOutcome(line.number, None, None, problem=line.problem))
                    continue
                work.put(line)
        finally:
            for _ in threads:
                work.put(None)
            for thread in threads:
                thread.join()
    if failures:
        raise failures[0]


def _canonical(values: Mapping[str, Any]) -> str:
    import json

    return json.dumps(values, sort_keys=True, default=str)


def submit_runs(
    saga: Saga,
    lines: Iterable[EachLine],
    journal: Journal,
    environ: Mapping[str, str],
    *,
    run_id_of: Callable[[int], str] | None = None,
    on_line: Callable[[LineOutcome], None],
) -> None:
    """Journal one run of `saga` per line as `queued` (SPEC §8): validated, nothing sent, owned
    by no process until a worker claims it. With `run_id_of`, the run of line N is
    `run_id_of(N)`, and a line whose run is journaled already is left alone (a submit given
    again queues only what it had not); without, each run gets a new id. A bad line is told
    with its problem. Secrets are not needed here: the workers read them."""
    from sagactl.engine.runs import queue_run
    from sagactl.errors import JournalError
    from sagactl.ids import new_run_id

    redactor = Redactor()
    for name in saga.secrets:
        if name in environ:
            redactor.add([environ[name]], derived=False)
    for line in lines:
        if line.inputs is None:
            on_line(LineOutcome(line.number, None, None, problem=line.problem))
            continue
        where = line.where or f"line {line.number}"
        held = [n for n, v in line.inputs.items() if redactor.value(v) != v]
        if held:
            on_line(
                LineOutcome(
                    line.number,
                    None,
                    None,
                    problem=f"{where}: input '{held[0]}' holds a secret's value: inputs are "
                    "journaled and shown, so pass it as a secret",
                )
            )
            continue
        run_id = run_id_of(line.number) if run_id_of else new_run_id()
        if run_id_of:
            try:
                found = journal.get_run(run_id)
            except JournalError:
                found = None
            if found is not None:
                if _canonical(found.inputs) != _canonical(line.inputs):
                    problem = (
                        f"{where}: run {run_id} was submitted with other inputs (did the file "
                        "change?): give the batch another --run-id"
                    )
                    on_line(LineOutcome(line.number, None, None, problem=problem))
                else:
                    on_line(LineOutcome(line.number, run_id, found.status, earlier=True))
                continue
        queue_run(journal, saga, line.inputs, environ, run_id=run_id, redactor=redactor)
        on_line(LineOutcome(line.number, run_id, RunStatus.QUEUED))


@dataclass(frozen=True, slots=True)
class WorkDone:
    """A run a worker drove, and how it ended (None: interrupted, or refused to start)."""

    run_id: str
    saga: str
    status: RunStatus | None
    error: str | None = None
    took_over: bool = False
    """It was another process's, whose lease had expired (or which is gone)."""


def work(
    open_store: Callable[[], Journal],
    environ: Mapping[str, str],
    *,
    on_run: Callable[[WorkDone], None],
    on_problem: Callable[[str], None],
    concurrency: int = 8,
    stop: threading.Event | None = None,
    lease_ttl: float = 30.0,
    poll: float = 1.0,
    until_idle: bool = False,
) -> None:
    """Drive queued runs, and runs whose process is gone, until `stop` (SPEC §8): claim one
    whenever fewer than `concurrency` are driven here, drive it on a thread of its own as
    `resume` would (the saga text of the journal, secrets from `environ`), and tell `on_run`
    how it ended. Any number of workers, on any number of machines, share a journal: a run is
    claimed by one at a time (`Journal.claim_run`).

    On `stop`, nothing more is claimed; the runs in flight journal what they sent, end
    interrupted and release their leases, for another worker to take them at once. When the
    journal cannot be reached, nothing more is sent from this process (each run's next write
    fails, and it stops); the worker opens it again, with a growing wait, and claims anew —
    its own runs too, once their leases lapsed. With `until_idle`, it returns once nothing is
    left to claim and nothing is in flight."""
    from sagactl.errors import Interrupted, JournalError, SagactlError
    from sagactl.events import RunFinished
    from sagactl.records import Owner

    stop = stop if stop is not None else threading.Event()
    owner = Owner.this_process()
    slots = threading.BoundedSemaphore(concurrency)
    in_flight: set[threading.Thread] = set()
    refused: set[str] = set()  # runs this worker cannot start (a secret it lacks): left alone
    lock = threading.Lock()
    store: Journal | None = None
    wait = poll
    ended = threading.Event()
    """Set when a run driven here ends."""

    users: dict[int, int] = {}
    """How many runs in flight use each journal object opened, by id."""
    retired: dict[int, Journal] = {}
    """Journal objects given up on (their connection lost): closed once no run uses them."""

    def done_with(journal: Journal) -> None:
        with lock:
            users[id(journal)] -= 1
            left = retired.pop(id(journal), None) if not users[id(journal)] else None
        if left is not None:
            with contextlib.suppress(Exception):
                left.close()

    def drive(journal: Journal, client: Any, claimed: RunRecord) -> None:
        error: list[str] = []

        def seen(event: Event) -> None:
            if isinstance(event, RunFinished) and event.error:
                error[:] = [event.error]

        took_over = claimed.status is not RunStatus.QUEUED
        redactor = Redactor()
        try:
            _, status = resume_run(
                journal,
                claimed.id,
                environ,
                on_event=seen,
                concurrency=concurrency,
                stop=stop,
                redactor=redactor,
                client=client,
                lease_ttl=lease_ttl,
            )
            on_run(
                WorkDone(claimed.id, claimed.name, status, error[0] if error else None, took_over)
            )
        except Interrupted:
            on_run(WorkDone(claimed.id, claimed.name, None, "interrupted", took_over))
        except JournalError as exc:
            on_problem(redactor.text(f"run {claimed.id}: {exc}"))
        except SagactlError as exc:
            # Cannot start here — a secret missing from this worker's environment, a request
            # it cannot render, a saga it cannot load (an older sagactl): what fails may be
            # this worker's, so the run is left as it was, for a worker that can or for a
            # person, and said (with --until-idle, the worker's exit code is 2).
            with lock:
                refused.add(claimed.id)
            with contextlib.suppress(JournalError):
                if not took_over:  # nothing of it ran: it waits for a worker again
                    journal.set_run(claimed.id, status=RunStatus.QUEUED)
                journal.release_lease(claimed.id, owner)
            on_problem(redactor.text(f"run {claimed.id} ({claimed.name}) not started here: {exc}"))
            on_run(WorkDone(claimed.id, claimed.name, None, "refused", took_over))
        finally:
            with lock:
                in_flight.discard(threading.current_thread())
            done_with(journal)
            slots.release()
            ended.set()

    with _client(concurrency * min(concurrency, 8)) as client:
        try:
            while not stop.is_set():
                if store is None:
                    try:
                        store = open_store()
                        wait = poll
                    except JournalError as exc:
                        on_problem(f"{exc}; trying again in {wait:g}s")
                        stop.wait(wait)
                        wait = min(wait * 2, 30.0)
                        continue
                if not slots.acquire(timeout=poll):
                    continue
                try:
                    with lock:
                        skip = set(refused)
                    claimed = store.claim_run(owner, lease_ttl, skip=skip)
                except JournalError as exc:
                    slots.release()
                    on_problem(f"{exc}; opening the journal again")
                    # Runs in flight keep the one they have: closed once they end (if its
                    # connection is lost, their next write fails, and they send nothing more).
                    with lock:
                        if users.get(id(store)):
                            retired[id(store)] = store
                            store = None
                    if store is not None:
                        with contextlib.suppress(Exception):
                            store.close()
                    store = None
                    stop.wait(poll)
                    continue
                if claimed is None:
                    slots.release()
                    with lock:
                        idle = not in_flight
                    if until_idle and idle:
                        return
                    # Nothing to claim now: look again when a run here ends (its end may be
                    # what was awaited) or after `poll`, for runs submitted meanwhile.
                    ended.wait(poll)
                    ended.clear()
                    continue
                thread = threading.Thread(
                    target=drive, args=(store, client, claimed), name=f"run-{claimed.id}"
                )
                with lock:
                    in_flight.add(thread)
                    users[id(store)] = users.get(id(store), 0) + 1
                thread.start()
        finally:
            with lock:
                running = list(in_flight)
            for thread in running:
                thread.join()
            for journal in [store, *retired.values()]:
                if journal is not None:
                    with contextlib.suppress(Exception):
                        journal.close()
