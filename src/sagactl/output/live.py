"""The live view on a terminal (rich): a header, a row per step and phase, then a summary that
says what happened and what to do next.

Used only when standard output is a terminal; pipes and files get the plain lines of
`lines.PlainLines`. rich is imported here and nowhere else on the way to a run.

The table is laid out here, not by rich's table, so that it degrades by priority as the terminal
narrows and its columns keep their widths for the whole run: the state symbol and the step
never go; the step id is truncated first, then the detail column goes, then the time, then the
phase is abbreviated, then the attempt and the status go. When the rows outnumber the
terminal's lines, finished rows fold into a count, so that running, failed and in-doubt rows
stay in view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

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
from sagactl.output.lines import cause_of, outcome_line, run_verb, where_to_look
from sagactl.output.run_views import next_commands
from sagactl.records import split_item_key

__all__ = ["Layout", "LiveView", "layout"]

_SYMBOLS = {
    "pending": ("·", "dim"),
    "running": ("→", "cyan"),
    "waiting": ("↻", "yellow"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "in_doubt": ("?", "magenta"),
}
_OUTCOME = {"succeeded": "green", "cleaned": "green", "compensated": "yellow", "stuck": "red"}
_SHORT_PHASE = {"action": "act", "compensate": "comp", "confirm": "conf", "verify": "ver"}
_ATTEMPT, _STATUS, _TIME = 5, 6, 6
"""Widths of the attempt (`10/10`), status (a code, or `-`: no answer) and time columns."""
_PHASE, _PHASE_SHORT = len("compensate"), len("phase")
_STEP_FLOOR = 12
"""The step id is truncated to this many characters before any other column gives way."""
_STEP_MIN = 6
_DETAIL_MIN = 16


@dataclass(frozen=True)
class Layout:
    """The columns of the table at one width: how wide each is; 0 leaves a column out."""

    step: int
    phase: int
    attempt: int
    status: int
    time: int
    detail: int

    @property
    def width(self) -> int:
        cells = (self.step, self.phase, self.attempt, self.status, self.time, self.detail)
        return 1 + sum(1 + cell for cell in cells if cell)


def layout(width: int, step: int) -> Layout:
    """The columns for a terminal `width` wide and step ids at most `step` long."""
    floor, least = min(step, _STEP_FLOOR), min(step, _STEP_MIN)
    # Each stage gives up one more thing, in the order of the module's docstring.
    stages = [
        Layout(floor, _PHASE, _ATTEMPT, _STATUS, _TIME, _DETAIL_MIN),
        Layout(floor, _PHASE, _ATTEMPT, _STATUS, _TIME, 0),
        Layout(floor, _PHASE, _ATTEMPT, _STATUS, 0, 0),
        Layout(floor, _PHASE_SHORT, _ATTEMPT, _STATUS, 0, 0),
        Layout(floor, _PHASE_SHORT, 0, _STATUS, 0, 0),
        Layout(floor, _PHASE_SHORT, 0, 0, 0, 0),
        Layout(least, _PHASE_SHORT, 0, 0, 0, 0),
        Layout(least, 0, 0, 0, 0, 0),
    ]
    stage = next((s for s in stages if s.width <= width), stages[-1])
    room = max(0, width - stage.width)
    # What is left goes to the step id (back to its full length), then to the detail.
    grown = min(step, stage.step + room)
    room -= grown - stage.step
    detail = stage.detail + room if stage.detail else 0
    return Layout(grown, stage.phase, stage.attempt, stage.status, stage.time, detail)


def _fit(text: str, width: int, *, right: bool = False) -> str:
    """`text` on one line of exactly `width` cells: its whitespace (line breaks too) made
    single spaces, cut with `…` when longer, padded when shorter."""
    text = " ".join(text.split())
    if cell_len(text) > width:
        text = set_cell_size(text, max(0, width - 1)) + "…"
    pad = " " * (width - cell_len(text))
    return pad + text if right else text + pad


def _elapsed(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 100:
        return f"{seconds:.1f}s"
    if seconds < 1000:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 100 else f"{minutes // 60}h"


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
    polls: int = 0
    """Answers of a poll that said not done yet."""
    poll_wait: bool = False
    """The wait is a poll's `every`, not a retry's backoff."""
    parent: str | None = None
    """For an item of a foreach step, the step (its row's comes first)."""
    index: int = 0
    items: int | None = None
    """For a foreach step, how many items its phase runs."""
    items_done: int = 0

    @property
    def finished_well(self) -> bool:
        return self.state == "succeeded"


class LiveView:
    """Renders events as a live table; `console` and `clock` are injectable for tests."""

    def __init__(
        self, console: Console | None = None, *, journal_flag: str = "", clock: Any = time.monotonic
    ) -> None:
        self.console = console or Console()
        self.journal_flag = journal_flag
        self.clock = clock
        self.rows: dict[tuple[str, str], _Row] = {}
        self.header = Text()
        self.header_parts: tuple[Text, Text, Text] = (Text(), Text(), Text())
        self.live: Live | None = None
        self.failures: dict[tuple[str, str], StepFinished] = {}
        self.step_width = 4
        self.cleanup = False
        self.undone = 0
        self.finished: str | None = None
        """The run whose summary was printed last: a cleanup of it is part of this command."""
        self.just_run = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.start(event)
            return
        if isinstance(event, RunFinished):
            self.close()
            self.print_summary(event)
            self.finished = event.run_id
            return
        self.update(event)
        if self.live is not None:
            self.live.refresh()

    def start(self, event: RunStarted) -> None:
        self.just_run = event.run_id == self.finished
        self.rows.clear()
        self.failures = {}
        self.cleanup, self.undone = event.cleanup, 0
        # The header's parts, for a narrow terminal to put on lines of their own.
        self.header_parts = (
            Text.assemble((f"{run_verb(event)} ", "dim"), (event.saga, "bold")),
            Text.assemble(("run ", "dim"), event.run_id),
            Text.assemble(("journal ", "dim"), event.journal),
        )
        self.header = Text("  ").join(self.header_parts)
        self.step_width = max([4, *(len(step) for step in event.steps)])
        if not (event.compensating or event.cleanup):
            # Every step has a row from the start; compensations add theirs as they start.
            for step in event.steps:
                self.rows[(step, "action")] = _Row(step, "action")
        # transient: the live area is replaced by the final table, no garbage left behind
        self.live = Live(
            self,
            console=self.console,
            refresh_per_second=8,
            transient=True,
            vertical_overflow="crop",
        )
        self.live.start()

    def close(self) -> None:
        """Stop the live area and leave the table as it stands, ending on its own line: what
        is printed next (a summary, an interruption's message) starts a line."""
        if self.live is None:
            return
        live, self.live = self.live, None
        live.stop()  # paints once more: nothing (see __rich__), then erases the area
        for line in self.heading(journal=True):
            self.console.print(line, soft_wrap=True)
        self.console.print(self.table())

    def update(self, event: Event) -> None:
        now = self.clock()
        if isinstance(event, AttemptStarted):
            row = self._row(event.step, event.phase)
            row.state, row.attempt, row.attempts = "running", event.attempt, event.attempts
            row.retry_at = None
            row.started = row.started or now
        elif isinstance(event, AttemptFinished):
            row = self._row(event.step, event.phase)
            row.status = str(event.status) if event.status is not None else "-"
            row.error = event.error
        elif isinstance(event, RetryScheduled):
            row = self._row(event.step, event.phase)
            row.state, row.retry_at = "waiting", now + event.wait_s
            row.polls, row.poll_wait = event.poll or row.polls, bool(event.poll)
        elif isinstance(event, StepFinished):
            row = self._row(event.step, event.phase)
            row.state, row.finished, row.error = event.state, now, event.error
            row.retry_at = None
            if event.state != "succeeded":
                self.failures[(event.step, event.phase)] = event
            elif row.parent is not None:
                self._row(row.parent, row.phase).items_done += 1
            elif event.phase == "compensate":
                self.undone += 1  # a step undone, whatever its number of items
        elif isinstance(event, ItemsStarted):
            row = self._row(event.step, event.phase)
            row.state, row.started = "running", row.started or now
            row.items, row.items_done = event.count, 0
        elif isinstance(event, PhaseStarted):
            pass  # compensations and confirms get rows as their requests start

    def _row(self, step: str, phase: str) -> _Row:
        row = self.rows.get((step, phase))
        if row is None:
            row = self.rows[(step, phase)] = _Row(step, phase)
            parent, index = split_item_key(step)
            if index is not None:
                row.parent, row.index = parent, index
            self.step_width = max(self.step_width, len(step))
        return row

    def _ordered(self) -> list[_Row]:
        """The rows in the order they started, each item's under its step's, by index."""
        items: dict[tuple[str, str], list[_Row]] = {}
        for row in self.rows.values():
            if row.parent is not None:
                items.setdefault((row.parent, row.phase), []).append(row)
        ordered = []
        for key, row in self.rows.items():
            if row.parent is None:
                ordered.append(row)
                ordered += sorted(items.pop(key, ()), key=lambda item: item.index)
        return ordered + [row for rows in items.values() for row in rows]

    # --- drawing -------------------------------------------------------------------------------

    def table(self, *, spare: int | None = None) -> Text:
        """The column titles and a line per row, laid out for the console's width; with
        `spare`, in the console's height but that many lines (its rows folded to fit)."""
        columns = layout(self.console.width, self.step_width)
        now = self.clock()
        lines = [self._titles(columns)]
        rows = self._ordered()
        room = max(1, self.console.height - spare) if spare is not None else len(rows)
        if len(rows) > room:
            lines += self._folded(rows, room, columns, now)
        else:
            lines += [self._line(row, columns, now) for row in rows]
        return Text("\n").join(lines)

    def _folded(self, rows: list[_Row], room: int, columns: Layout, now: float) -> list[Text]:
        """`room` lines for more rows than that: the rows that succeeded counted on one line,
        then those running, waiting or not succeeded, then those pending, in the run's order,
        and a count of those that still do not fit."""
        done = [r for r in rows if r.state == "succeeded"]
        rest = [r for r in rows if r.state != "succeeded"]
        urgent = [r for r in rest if r.state != "pending"]
        if room < 3:  # no room to count anything: the rows that matter most
            first = urgent or rest or done
            return [self._line(r, columns, now) for r in first[:room]]
        slots = room - (1 if done else 0)
        if len(rest) > slots:
            slots -= 1  # for the line counting the rows left out
            pending = [r for r in rest if r.state == "pending"]
            chosen = {id(r) for r in (urgent + pending)[: max(0, slots)]}
        else:
            chosen = {id(r) for r in rest}
        width = columns.width
        lines = []
        if done:
            count = _fit(f"{len(done)} succeeded", width - 2).rstrip()
            lines.append(Text.assemble(("✓", "green"), f" {count}"))
        lines += [self._line(r, columns, now) for r in rest if id(r) in chosen]
        if len(chosen) < len(rest):
            more = _fit(f"{len(rest) - len(chosen)} more", width - 2).rstrip()
            lines.append(Text(f"· {more}", style="dim"))
        return lines

    def _titles(self, columns: Layout) -> Text:
        cells = [" ", "step".ljust(columns.step)]
        if columns.phase:
            cells.append("phase".ljust(columns.phase))
        if columns.attempt:
            cells.append("tries".rjust(columns.attempt))
        if columns.status:
            cells.append("status".rjust(columns.status))
        if columns.time:
            cells.append("time".rjust(columns.time))
        return Text(" ".join(cells).rstrip(), style="dim")

    def _line(self, row: _Row, columns: Layout, now: float) -> Text:
        symbol, style = _SYMBOLS.get(row.state, ("·", "dim"))
        pending = row.state == "pending"
        line = Text(symbol, style=style)
        line.append(" " + _fit(row.step, columns.step))
        if columns.phase:
            phase = row.phase if columns.phase >= _PHASE else _SHORT_PHASE.get(row.phase, row.phase)
            line.append(" " + _fit(phase, columns.phase))
        if columns.attempt:
            # A poll has no most attempts: each answer that says "not yet" allows another.
            tries = (
                str(row.attempt)
                if row.polls
                else f"{row.attempt}/{row.attempts}"
                if row.attempts
                else ""
            )
            line.append(" " + _fit(tries, columns.attempt, right=True))
        if columns.status:
            line.append(" " + _fit(row.status, columns.status, right=True))
        if columns.time:
            elapsed = (row.finished or now) - row.started if row.started else None
            shown = _elapsed(elapsed) if elapsed is not None else ""
            line.append(" " + _fit(shown, columns.time, right=True))
        if columns.detail:
            note = ""
            if row.retry_at is not None and row.poll_wait:
                note = f"not done yet (poll {row.polls})"
            elif row.retry_at is not None:
                note = f"retry in {max(0.0, row.retry_at - now):.1f}s"
            elif row.state in ("failed", "in_doubt") and row.error:
                note = row.error
            elif row.items is not None:
                note = f"{row.items_done}/{row.items} item{'s' if row.items != 1 else ''}"
            if note:
                line.append(" " + _fit(note, columns.detail).rstrip(), style="dim")
        if pending:
            line.stylize("dim")
        return line

    def heading(self, *, journal: bool = False) -> list[Text]:
        """The header: on one line when it fits; else the run id on a line of its own, and
        the journal on its own line (with `journal`: the live area leaves it out)."""
        width = self.console.width
        if self.header.cell_len <= width:
            return [self.header]
        saga, run, where = (part.copy() for part in self.header_parts)
        first = Text("  ").join([saga, run])
        # A terminal too short for two lines of header keeps the first: rows come first.
        parts = [first] if first.cell_len <= width or self.console.height < 6 else [saga, run]
        for part in parts:
            part.no_wrap, part.overflow = True, "ellipsis"
        return [*parts, where] if journal else parts

    def __rich__(self) -> Group:
        if self.live is None:
            return Group()
        heading = self.heading()
        return Group(*heading, self.table(spare=len(heading) + 2))

    def summary(self, event: RunFinished) -> list[Text]:
        """What happened and what to do next, laid out for the console's width. Lines wrap
        between words only, and a word longer than the line stays whole (the terminal folds
        it): a path or a URL is never cut. A command that does not fit beside its hint goes
        on a line of its own, so that it can be copied whole."""
        width = self.console.width
        style = _OUTCOME.get(event.status, "white")
        head = Text.assemble(
            (event.status, f"bold {style}"),
            f" in {event.duration_s:.2f}s  run {event.run_id}",
        )
        meaning = outcome_line(event, self.cleanup, self.undone, just_run=self.just_run)
        if meaning:
            head.append(f" ({meaning})")
        lines = [head]
        if event.error and event.status != "succeeded":
            lines.append(Text(f"cause: {event.error}"))
            lines += [
                Text(f"  {line}", style="dim")
                for line in where_to_look(cause_of(event, self.failures))
            ]
        commands: list[Text] = []
        if event.status == "stuck":
            hints = next_commands(
                event.run_id,
                self.journal_flag,
                event.next,
                cleanup=self.cleanup,
                operator=event.operator,
            )
            for line in hints.splitlines():
                hint, _, command = line.partition(" sagactl ")
                if len(line) <= width:
                    commands.append(Text(line))
                else:
                    commands += [Text(hint.rstrip()), Text(f"    sagactl {command}")]
        return [piece for text in lines for piece in self._wrapped(text, width)] + commands

    def _wrapped(self, text: Text, width: int) -> list[Text]:
        """`text` wrapped between words to `width`, its continuation lines indented two
        more than its first; a word longer than a line is left whole."""
        indent = len(text.plain) - len(text.plain.lstrip(" "))
        body = text[indent:]
        body.overflow = "ignore"
        pieces = list(body.wrap(self.console, max(8, width - indent)))
        if len(pieces) > 1:
            pieces = list(body.wrap(self.console, max(8, width - indent - 2)))
        out = []
        for i, piece in enumerate(pieces):
            piece.rstrip()
            line = Text(" " * (indent if i == 0 else indent + 2), style=text.style)
            line.append_text(piece)
            out.append(line)
        return out

    def print_summary(self, event: RunFinished) -> None:
        for line in self.summary(event):
            self.console.print(line, soft_wrap=True)
