"""How `sagactl run FILE --each inputs.jsonl` looks (SPEC §8): a progress bar on a terminal,
plain lines otherwise, JSON lines with `--output json`; then the tally, and what to do about
the runs that did not succeed.

A run that succeeded says nothing (but with `--verbose`): with thousands of lines, what needs
reading is what went wrong. Every view is told of lines from several threads at once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from sagactl.output.run_views import iso_time, json_line

if TYPE_CHECKING:
    from sagactl.events import Event
    from sagactl.many import LineOutcome

__all__ = ["EachJson", "EachLines", "EachProgress", "Tally", "exit_code", "summary", "worse"]

_EXIT = {"succeeded": 0, "cleaned": 0, "compensated": 1, "stuck": 3, "queued": 0}
_SHOWN_AT_MOST = 10
"""Run ids listed by the tally for each kind of trouble; `sagactl list` shows every one."""


def exit_code(outcome: LineOutcome) -> int:
    """One line's exit code (SPEC §5.1): a refused line is 2 (nothing of it was sent)."""
    if outcome.interrupted:
        return outcome.interrupted
    if outcome.status is None:
        return outcome.refused_with
    return _EXIT[outcome.status.value]


def worse(a: int, b: int) -> int:
    """The worse of two exit codes: a signal, then stuck (3), refused (2), failed (1)."""
    return max(a, b, key=lambda code: (code >= 128, code))


@dataclass
class Tally:
    """What became of the lines so far, and the exit code of the whole."""

    counts: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    code: int = 0

    def add(self, outcome: LineOutcome) -> None:
        if outcome.interrupted:
            kind = "interrupted"
            self.interrupted.append(outcome.run_id or "")
        elif outcome.status is None:
            kind = "refused"
            if len(self.refused) < _SHOWN_AT_MOST:
                self.refused.append(outcome.line)
        else:
            kind = outcome.status.value
            if kind == "stuck" and len(self.stuck) < _SHOWN_AT_MOST:
                self.stuck.append(outcome.run_id or "")
        self.counts[kind] += 1
        if outcome.earlier:
            self.counts["earlier"] += 1
        self.code = worse(self.code, exit_code(outcome))

    def words(self) -> str:
        order = ("succeeded", "cleaned", "compensated", "stuck", "refused", "interrupted")
        shown = [f"{self.counts[k]} {k}" for k in order if self.counts[k]]
        if self.counts["earlier"]:
            shown.append(f"{self.counts['earlier']} of them had ended before")
        return ", ".join(shown) or "nothing run"

    @property
    def done(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != "earlier")


def _line_text(outcome: LineOutcome) -> str:
    if outcome.problem is not None:
        sent = " (nothing sent)" if outcome.refused_with == 2 else ""
        return f"refused: {outcome.problem}{sent}"
    if outcome.interrupted:
        return f"line {outcome.line}: run {outcome.run_id} interrupted"
    assert outcome.status is not None
    text = f"line {outcome.line}: run {outcome.run_id} {outcome.status.value}"
    return f"{text}: {outcome.error}" if outcome.error else text


def summary(
    tally: Tally,
    source: str,
    *,
    journal_flag: str,
    saga_name: str,
    again: str | None,
) -> str:
    """The last words: the tally, then what to do about what did not succeed."""
    lines = [f"{tally.done} line{'s' if tally.done != 1 else ''} of {source}: {tally.words()}"]
    if tally.counts["stuck"]:
        more = tally.counts["stuck"] - len(tally.stuck)
        lines.append(
            f"stuck runs need you (sagactl show RUN{journal_flag} says why); resume or "
            "compensate each:"
        )
        lines += [f"  sagactl resume {rid}{journal_flag}" for rid in tally.stuck]
        if more:
            lines.append(
                f"  … and {more} more: sagactl list --status stuck --name {saga_name}{journal_flag}"
            )
    if again is not None:
        lines.append(
            "not finished: the same command with the batch's id resumes the interrupted runs "
            "and starts the lines not started, leaving the ended ones alone:\n  " + again
        )
    if tally.counts["refused"]:
        shown = ", ".join(str(n) for n in tally.refused)
        more = tally.counts["refused"] - len(tally.refused)
        lines.append(
            f"refused lines (nothing of them was sent): {shown}"
            + (f" and {more} more" if more else "")
        )
    return "\n".join(lines)


class EachLines:
    """Plain lines: one per line that did not succeed (every line with `verbose`), a progress
    line at most every `every` seconds, then the summary."""

    def __init__(
        self,
        *,
        out: IO[str] | None = None,
        quiet: bool = False,
        verbose: bool = False,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out or sys.stdout
        self.total: int | None = None
        self.quiet = quiet
        self.verbose = verbose
        self.every = every
        self.clock = clock
        self.tally = Tally()
        self._lock = threading.Lock()
        self._shown_at = clock()

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def event(self, line: int, run_id: str, event: Event) -> None:
        """Events of single runs are not shown: only how each line ended."""

    def __call__(self, outcome: LineOutcome) -> None:
        with self._lock:
            self.tally.add(outcome)
            if self.quiet:
                return
            if self.verbose or outcome.status is None or exit_code(outcome):
                self._write(_line_text(outcome))
            if self.clock() - self._shown_at >= self.every:
                self._shown_at = self.clock()
                of = f"/{self.total}" if self.total is not None else ""
                self._write(f"{self.tally.done}{of} lines: {self.tally.words()}")

    def stop(self) -> None:
        """Nothing to end: each line was written whole."""

    def close(self, text: str) -> None:
        self._write(text)


class EachProgress(EachLines):
    """A progress bar on a terminal (rich), with the lines that did not succeed printed
    above it as they end."""

    def __init__(self, total: int | None, *, verbose: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        super().__init__(verbose=verbose)
        self.total = total
        self.console = Console(highlight=False)
        self.progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tally]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("runs", total=total, tally="")
        self.progress.start()

    def __call__(self, outcome: LineOutcome) -> None:
        with self._lock:
            self.tally.add(outcome)
            if self.verbose or outcome.status is None or exit_code(outcome):
                self.console.print(_line_text(outcome), markup=False)
            self.progress.update(self.task, completed=self.tally.done, tally=self.tally.words())

    def stop(self) -> None:
        self.progress.stop()

    def close(self, text: str) -> None:
        self.progress.stop()
        self.console.print(text, markup=False)


class EachJson:
    """JSON lines (docs/events.md): every event of every run with its `line` and `run_id`,
    `line_finished` as each line ends, and `each_finished` with the tally."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.tally = Tally()
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any]) -> None:
        text = json_line({"v": 1, "time": iso_time(time.time()), **record}) + "\n"
        with self._lock:
            self.out.write(text)
            self.out.flush()

    def event(self, line: int, run_id: str, event: Event) -> None:
        from sagactl.output.lines import event_name

        record: dict[str, Any] = {"event": event_name(event), "line": line, "run_id": run_id}
        self._write({**record, **asdict(event)})

    def __call__(self, outcome: LineOutcome) -> None:
        with self._lock:
            self.tally.add(outcome)
        self._write(
            {
                "event": "line_finished",
                "line": outcome.line,
                "run_id": outcome.run_id,
                "status": "refused"
                if outcome.problem is not None
                else "interrupted"
                if outcome.interrupted
                else outcome.status.value
                if outcome.status
                else None,
                "exit_code": exit_code(outcome),
                "error": outcome.problem or outcome.error,
                "earlier": outcome.earlier,
            }
        )

    def start(self, batch: str, source: str) -> None:
        self._write({"event": "each_started", "batch": batch, "file": source})

    def stop(self) -> None:
        """Nothing to end: each line was written whole."""

    def finish(self, exit_code: int) -> None:
        self._write(
            {
                "event": "each_finished",
                "lines": self.tally.done,
                "counts": dict(sorted(self.tally.counts.items())),
                "exit_code": exit_code,
            }
        )
