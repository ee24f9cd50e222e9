"""How runs look: one plain line per event, and the summary with what to do next. All terminal
output of a run goes through a `PlainLines` (the `list` and `show` views: `history`)."""

from __future__ import annotations

import sys
import time
from typing import IO

from sagactl.events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    ItemsStarted,
    PhaseStarted,
    RetryScheduled,
    RunFinished,
    RunStarted,
    StepFinished,
)
from sagactl.output.run_views import iso_time, json_line, next_commands

__all__ = [
    "JsonLines",
    "PlainLines",
    "cause_of",
    "event_name",
    "items_text",
    "outcome_line",
    "run_verb",
    "where_to_look",
]


_VERDICTS = {
    "applied": "applied: its action took effect",
    "absent": "absent: its action never took effect",
}


def items_text(event: ItemsStarted) -> str:
    """How many items of a foreach step a phase runs: `5 items`, `2 of 5 items`."""
    of = f" of {event.total}" if event.count != event.total else ""
    return f"{event.count}{of} item{'s' if (event.total if of else event.count) != 1 else ''}"


def _clock(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def where_to_look(failure: StepFinished | None) -> list[str]:
    """Where a failure happened, as a compiler says it: file and line, the request, the start
    of the answer."""
    if failure is None:
        return []
    lines = [f"--> {failure.where} ({failure.step} {failure.phase})"]
    if failure.request:
        lines.append(failure.request)
    if failure.response:
        lines.append(f"response: {' '.join(failure.response.split())}")
    return lines


def cause_of(
    event: RunFinished, failures: dict[tuple[str, str], StepFinished]
) -> StepFinished | None:
    """The failure the run's cause names: its location, request and response, all of that
    one step's, also when several failed at once."""
    if event.step is None or event.phase is None:
        return None
    return failures.get((event.step, event.phase))


def run_verb(event: RunStarted) -> str:
    """What the command is doing to the run, as its header says."""
    if event.cleanup:
        return "cleaning up"
    if event.compensating:
        return "compensating"
    return "resuming" if event.resumed else "running"


def outcome_line(
    event: RunFinished, cleanup: bool = False, undone: int = 0, *, just_run: bool = True
) -> str:
    """What the run's end means, after `run ID STATUS in Ns`: a cleanup's end is a success.
    `undone`: how many compensations this command ran; `just_run`: whether the run it
    cleans up ran in this command (else it may have been cleaned up before)."""
    if event.status == "cleaned":
        if not undone and not just_run:
            return "it was cleaned up already: nothing more to undo"
        if not undone:
            return "succeeded; --cleanup had nothing to undo"
        return f"succeeded, then --cleanup undid {undone} step{'s' if undone != 1 else ''}"
    if event.status == "stuck" and cleanup:
        return "succeeded, but its cleanup did not finish"
    return ""


class PlainLines:
    """One grep-able line per event on `out`; the run id alone on the first line; with
    `verbose`, each request and response curl-style (`>` sent, `<` received)."""

    def __init__(
        self,
        out: IO[str] | None = None,
        *,
        journal_flag: str = "",
        quiet: bool = False,
        verbose: bool = False,
    ) -> None:
        self.out = out or sys.stdout
        self.journal_flag = journal_flag
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.failures: dict[tuple[str, str], StepFinished] = {}
        self.cleanup = False
        self.undone = 0
        """Compensations that succeeded in this command's drive of the run."""
        self.just_run = False
        """The run being driven is the one this command just ran (a cleanup of it)."""
        self.finished: str | None = None
        """The run whose summary was printed last: a cleanup of it goes on its output."""

    def close(self) -> None:
        """Nothing to end: each line was written whole."""

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepFinished) and event.state != "succeeded":
            self.failures[(event.step, event.phase)] = event
        elif isinstance(event, StepFinished) and event.phase == "compensate" and event.item is None:
            self.undone += 1  # a step undone, whatever its number of items
        if isinstance(event, RunStarted):
            self.failures = {}
            self.undone = 0
            self.cleanup = event.cleanup
            self.just_run = event.run_id == self.finished
            if event.cleanup and event.run_id == self.finished:
                # The cleanup of the run just shown: its output goes on, without a new header.
                if not self.quiet:
                    self.line(f"{_clock()} -- cleanup: undo every step")
                return
            self.line(event.run_id)
            if not self.quiet:
                self.line(
                    f"{_clock()} {run_verb(event)} saga {event.saga} (journal {event.journal})"
                )
        elif self.quiet and not isinstance(event, RunFinished):
            return
        elif isinstance(event, PhaseStarted):
            if event.phase != "forward" and not self.cleanup:
                self.line(f"{_clock()} -- {event.phase}")
        elif isinstance(event, ItemsStarted):
            self.line(f"{_clock()} {event.step} {event.phase}: {items_text(event)}")
        elif isinstance(event, AttemptStarted):
            if self.verbose:
                self.exchange(">", f"{event.method} {event.url}", event.headers, event.body)
        elif isinstance(event, AttemptFinished):
            if self.verbose and event.status is not None:
                self.exchange(
                    "<", str(event.status), event.response_headers or {}, event.response_body
                )
            elif self.verbose:
                self.line(f"* no response: {event.error}")
            result = str(event.status) if event.status is not None else "no response"
            if event.outcome != "success" and event.error:
                result = f"{event.outcome}: {event.error}"
            self.line(
                f"{_clock()} {event.step} {event.phase} attempt {event.attempt} "
                f"{result} ({event.duration_ms:.0f}ms)"
            )
        elif isinstance(event, RetryScheduled):
            if self.verbose and event.poll:
                self.line(
                    f"* not done yet (poll {event.poll}): attempt {event.attempt} "
                    f"in {event.wait_s:.3f}s"
                )
            elif self.verbose:
                self.line(f"* attempt {event.attempt} in {event.wait_s:.3f}s")
        elif isinstance(event, StepFinished):
            if event.verdict is not None:
                self.line(f"{_clock()} {event.step} verify: {_VERDICTS[event.verdict]}")
            if event.state != "succeeded":
                self.line(
                    f"{_clock()} {event.step} {event.phase} {event.state}"
                    + (f": {event.error}" if event.error else "")
                )
        elif isinstance(event, RunFinished):
            self.summary(event)

    def exchange(self, mark: str, first: str, headers: dict[str, str], body: str | None) -> None:
        lines = [f"{mark} {first}", *(f"{mark} {k}: {v}" for k, v in headers.items())]
        if body:
            lines += [f"{mark}", *(f"{mark} {part}" for part in body.splitlines())]
        self.out.write("\n".join(lines) + "\n")

    def summary(self, event: RunFinished) -> None:
        self.finished = event.run_id
        text = f"run {event.run_id} {event.status} in {event.duration_s:.2f}s"
        meaning = outcome_line(event, self.cleanup, self.undone, just_run=self.just_run)
        if meaning:
            text += f" ({meaning})"
        failure = cause_of(event, self.failures)
        if event.error and event.status != "succeeded":
            text += f"\n  cause: {event.error}"
            text += "".join(f"\n    {line}" for line in where_to_look(failure))
        if event.status == "stuck":
            text += "\n" + next_commands(
                event.run_id,
                self.journal_flag,
                event.next,
                cleanup=self.cleanup,
                operator=event.operator,
            )
        self.line(text)


def event_name(event: Event) -> str:
    """An event's name in JSON lines: `RunStarted` is `run_started`."""
    name = type(event).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class JsonLines:
    """JSON Lines on `out`: one object per event (docs/events.md), versioned by `"v": 1`."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def close(self) -> None:
        """Nothing to end: each line was written whole."""

    def write(self, record: dict[str, object]) -> None:
        self.out.write(json_line(record) + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        import dataclasses

        self.write(
            {
                "v": 1,
                "event": event_name(event),
                "time": iso_time(time.time()),
                **dataclasses.asdict(event),
            }
        )
