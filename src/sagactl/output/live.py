"""The live view on a terminal (rich): a header, a row per step and phase as it starts, then a
summary panel that says what happened and what to do next.

Used only when standard output is a terminal; pipes and files get the plain lines of
`render.PlainLines`. rich is imported here and nowhere else on the way to a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sagactl.events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    PhaseStarted,
    RetryScheduled,
    RunFinished,
    RunStarted,
    StepFinished,
)
from sagactl.output.lines import cause_of, next_commands, where_to_look

__all__ = ["LiveView"]

_SYMBOLS = {
    "pending": ("·", "dim"),
    "running": ("…", "cyan"),
    "waiting": ("↻", "yellow"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "in_doubt": ("?", "magenta"),
}
_OUTCOME = {"succeeded": "green", "compensated": "yellow", "stuck": "red"}


@dataclass
class _Row:
    step: str
    phase: str
    state: str = "pending"
    attempt: int = 0
    attempts: int = 0
    status: str = ""
    started: float = 0.0
    finished: float | None = None
    retry_at: float | None = None
    error: str | None = None


class LiveView:
    """Renders events as a live table; `console` is injectable for tests."""

    def __init__(
        self, console: Console | None = None, *, journal_flag: str = "", clock: Any = time.monotonic
    ) -> None:
        self.console = console or Console()
        self.journal_flag = journal_flag
        self.clock = clock
        self.rows: dict[tuple[str, str], _Row] = {}
        self.header = Text()
        self.live: Live | None = None
        self.failures: dict[tuple[str, str], StepFinished] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.rows.clear()
            self.failures = {}
            verb = (
                "compensating" if event.compensating else "resuming" if event.resumed else "running"
            )
            self.header = Text.assemble(
                (f"{verb} ", "dim"),
                (event.saga, "bold"),
                ("  run ", "dim"),
                event.run_id,
                ("  journal ", "dim"),
                event.journal,
            )
            # transient: the table is replaced by the summary panel, no garbage left behind
            self.live = Live(self, console=self.console, refresh_per_second=8, transient=True)
            self.live.start()
            return
        if isinstance(event, RunFinished):
            if self.live is not None:
                self.live.stop()
                self.live = None
            self.console.print(self.header)
            self.console.print(self.table())
            self.console.print(self.summary(event))
            return
        self.update(event)
        if self.live is not None:
            self.live.refresh()

    def update(self, event: Event) -> None:
        now = self.clock()
        if isinstance(event, AttemptStarted):
            row = self.rows.setdefault((event.step, event.phase), _Row(event.step, event.phase))
            row.state, row.attempt, row.attempts = "running", event.attempt, event.attempts
            row.retry_at = None
            row.started = row.started or now
        elif isinstance(event, AttemptFinished):
            row = self.rows.setdefault((event.step, event.phase), _Row(event.step, event.phase))
            row.status = str(event.status) if event.status is not None else "-"
            row.error = event.error
        elif isinstance(event, RetryScheduled):
            row = self.rows.setdefault((event.step, event.phase), _Row(event.step, event.phase))
            row.state, row.retry_at = "waiting", now + event.wait_s
        elif isinstance(event, StepFinished):
            row = self.rows.setdefault((event.step, event.phase), _Row(event.step, event.phase))
            row.state, row.finished, row.error = event.state, now, event.error
            row.retry_at = None
            if event.state != "succeeded":
                self.failures[(event.step, event.phase)] = event
        elif isinstance(event, PhaseStarted):
            pass  # rows appear as their phase's requests start

    def table(self) -> Table:
        table = Table(box=None, pad_edge=False, expand=False, show_edge=False)
        for name, justify in (
            ("", "left"),
            ("step", "left"),
            ("phase", "left"),
            ("attempt", "right"),
            ("status", "right"),
            ("time", "right"),
            ("", "left"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        now = self.clock()
        for row in self.rows.values():
            symbol, style = _SYMBOLS.get(row.state, ("·", "dim"))
            elapsed = (row.finished or now) - row.started if row.started else 0.0
            note = ""
            if row.retry_at is not None:
                note = f"retry in {max(0.0, row.retry_at - now):.1f}s"
            elif row.state in ("failed", "in_doubt") and row.error:
                note = row.error
            table.add_row(
                Text(symbol, style=style),
                row.step,
                row.phase,
                f"{row.attempt}/{row.attempts}" if row.attempts else "",
                row.status,
                f"{elapsed:.2f}s",
                Text(note, style="dim", overflow="ellipsis"),
            )
        return table

    def __rich__(self) -> Group:
        return Group(self.header, self.table())

    def summary(self, event: RunFinished) -> Panel:
        style = _OUTCOME.get(event.status, "white")
        lines = [
            Text.assemble(
                (f"{event.status}", f"bold {style}"),
                f" in {event.duration_s:.2f}s  run {event.run_id}",
            )
        ]
        if event.error and event.status != "succeeded":
            lines.append(Text(f"cause: {event.error}"))
            lines += [
                Text(f"  {line}", style="dim")
                for line in where_to_look(cause_of(event, self.failures))
            ]
        if event.status == "stuck":
            lines.append(Text(next_commands(event.run_id, self.journal_flag, event.next)))
        return Panel(Group(*lines), border_style=style, expand=False)
