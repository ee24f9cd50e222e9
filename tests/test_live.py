"""The live view, rendered on recording consoles forced to be terminals of given sizes: every
frame it would paint is checked, and what stays on the screen at the end."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import pytest
from rich.cells import cell_len
from rich.console import Console

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
from sagactl.output.live import Layout, LiveView, layout

RUN = "01M8FF6MKXGDRCYQFDY3WQT8RR"
JOURNAL = "/home/me/.local/state/sagactl/journal.db"
LONG = "reserve_stock_in_the_north_warehouse"
SYMBOLS = set("·→↻✓✗?")


def story() -> list[Event]:
    """A run with a retry, a failure, a compensation whose retries run out: a stuck end."""
    return [
        RunStarted(RUN, "add-product", JOURNAL, steps=(LONG, "price", "index")),
        PhaseStarted("forward"),
        AttemptStarted(LONG, "action", 1, 3, "PUT", "http://127.0.0.1:8081/r/1"),
        AttemptFinished(LONG, "action", 1, "retryable", 503, "status 503, retried", 3.0),
        RetryScheduled(LONG, "action", 2, 0.2),
        AttemptStarted(LONG, "action", 2, 3, "PUT", "http://127.0.0.1:8081/r/1"),
        AttemptFinished(LONG, "action", 2, "success", 201, None, 2.0),
        StepFinished(LONG, "action", "succeeded"),
        AttemptStarted("index", "action", 1, 3, "PUT", "http://127.0.0.1:8083/i/A"),
        AttemptFinished(
            "index",
            "action",
            1,
            "failure",
            422,
            "status 422, expected 200, 201 " + "and a long tail " * 10,
            4.0,
        ),
        StepFinished(
            "index",
            "action",
            "failed",
            "status 422, expected 200, 201",
            "/home/me/projects/catalogue/sagas/add-product.yaml:57",
            "PUT http://127.0.0.1:8083/i/A",
            '{"error": "search rejects this request"}',
        ),
        PhaseStarted("compensate"),
        AttemptStarted(LONG, "compensate", 1, 10, "DELETE", "http://127.0.0.1:8081/r/1"),
        AttemptFinished(LONG, "compensate", 1, "retryable", 500, "status 500", 1.0),
        StepFinished(
            LONG,
            "compensate",
            "failed",
            "status 500, retried",
            "/home/me/projects/catalogue/sagas/add-product.yaml:38",
            "DELETE http://127.0.0.1:8081/r/1",
        ),
        RunFinished(
            RUN,
            "stuck",
            f"compensation not finished for {LONG}: status 500",
            1.5,
            LONG,
            "compensate",
            ("compensate",),
        ),
    ]


def many(count: int = 50, failing: int = 30, parallel: int = 3) -> list[Event]:
    """A saga of `count` steps run `parallel` at a time; step `failing` fails, and every step
    before it is compensated, newest first."""
    ids = [f"step_{i:02d}" + ("_with_a_long_name" if i % 7 == 0 else "") for i in range(count)]
    events: list[Event] = [RunStarted(RUN, "big", JOURNAL, steps=tuple(ids))]
    for start in range(0, failing + 1, parallel):
        batch = ids[start : min(start + parallel, failing + 1)]
        for sid in batch:
            events.append(AttemptStarted(sid, "action", 1, 3, "PUT", "http://127.0.0.1:1/x"))
        for sid in batch:
            bad = sid == ids[failing]
            status = 409 if bad else 201
            events.append(AttemptFinished(sid, "action", 1, "success", status, None, 1.0))
            events.append(StepFinished(sid, "action", "failed" if bad else "succeeded"))
    events.append(PhaseStarted("compensate"))
    for sid in reversed(ids[:failing]):
        events.append(AttemptStarted(sid, "compensate", 1, 3, "DELETE", "http://127.0.0.1:1/x"))
        events.append(AttemptFinished(sid, "compensate", 1, "success", 200, None, 1.0))
        events.append(StepFinished(sid, "compensate", "succeeded"))
    events.append(RunFinished(RUN, "compensated", f"step {ids[failing]}: status 409", 2.0))
    return events


def terminal(width: int, height: int = 40) -> Console:
    return Console(
        file=io.StringIO(),
        force_terminal=True,
        width=width,
        height=height,
        color_system=None,
        record=True,
    )


def render(events: Sequence[Event], width: int, height: int = 40) -> tuple[list[str], str]:
    """Every frame the live view would paint, and what stays on the screen at the end."""
    console = terminal(width, height)
    renderer = LiveView(console, clock=lambda: 100.0)
    frames: list[str] = []
    for event in events:
        if isinstance(event, RunFinished):
            console.export_text(clear=True)  # what the live area painted: not left behind
            renderer(event)
            return frames, console.export_text()
        renderer(event)
        frame = terminal(width, height)
        frame.print(renderer)
        frames.append(frame.export_text())
    raise AssertionError("the story has no end")


def rows(frame: str) -> list[str]:
    """The table's rows: the lines under the column titles."""
    lines = frame.splitlines()
    titles = next(i for i, line in enumerate(lines) if line.lstrip().startswith("step"))
    return [line for line in lines[titles + 1 :] if line and line[0] in SYMBOLS]


def cells(line: str, columns: Layout) -> list[str]:
    """A row cut at the layout's column boundaries."""
    widths = [1, columns.step, columns.phase, columns.attempt, columns.status, columns.time]
    out, at = [], 0
    for width in (w for w in widths if w):
        out.append(line[at : at + width])
        at += width + 1
    return out


@pytest.mark.parametrize("width", [120, 80, 50, 40])
def test_every_frame_keeps_symbols_steps_and_column_widths(width: int) -> None:
    frames, final = render(story(), width)
    columns = layout(width, len(LONG))
    titles = {f.splitlines()[1] for f in frames}
    assert len(titles) == 1, titles  # the same columns in every frame
    for frame in frames:
        assert all(len(line) <= width for line in frame.splitlines()), frame
        table = rows(frame)
        assert len(table) >= 3, frame  # every step has a row from the start
        for line in table:
            row = cells(line, columns)
            assert row[0] in SYMBOLS, line
            step = row[1].strip()
            assert len(step) >= min(len(LONG), 12) or step in ("price", "index"), line
            assert all(cell.strip() != "…" for cell in row[1:]), line
            # the columns start where the titles say, whatever the row holds
            assert all(line[len(cell)] == " " for cell in row[:1]), line
    assert "running add-product" in frames[0] and RUN in frames[0]
    last_rows = rows(final)
    assert [r[0] for r in last_rows] == ["✓", "·", "✗", "✗"], final
    assert any("422" in r for r in last_rows) or columns.status == 0


def test_no_frame_is_wider_or_taller_than_the_terminal() -> None:
    """Every width from the layout's least (8) up, and short terminals: no line wraps, the
    titles sit over their columns, every row keeps its state symbol."""
    odd = story()
    # an error over several lines, in characters two cells wide, and a journal path with
    # two spaces in a row
    odd[0] = RunStarted(
        RUN, "add-product", "/tmp/my  dir/journal.db", steps=(LONG, "price", "index")
    )
    odd[9] = AttemptFinished("index", "action", 1, "failure", 422, "一行目\n二行目 " * 8, 4.0)
    for events in (story(), odd, many(12, 8, 3)):
        for width in [*range(8, 61), *range(64, 140, 9)]:
            for height in (4, 25):
                frames, final = render(events, width, height)
                for frame in frames:
                    lines = frame.splitlines()
                    assert all(cell_len(line) <= width for line in lines), (width, frame)
                    assert len(lines) <= height - 1, (width, height, frame)
                    assert all(row[0] in SYMBOLS for row in rows(frame)), frame
                titles = next(
                    line for line in final.splitlines() if line.lstrip().startswith("step")
                )
                assert cell_len(titles) <= width, (width, titles)


def test_the_retry_countdown_shows_where_there_is_room() -> None:
    frames, _ = render(story(), 80)
    waiting = next(f for f in frames if "↻" in f)
    assert "retry in 0.2s" in waiting
    frames, _ = render(story(), 50)
    waiting = next(f for f in frames if "↻" in f)
    assert "retry in" not in waiting  # no room for the detail: the rest stays whole
    assert "1/3" in waiting and "503" in waiting


def test_columns_give_way_in_order_of_priority() -> None:
    wide, mid, narrow, tiny = (layout(w, len(LONG)) for w in (120, 50, 40, 24))
    assert wide.step == len(LONG) and wide.detail > 0
    assert mid.step < len(LONG) and mid.time and not mid.detail  # step, then detail
    assert narrow.step >= 12 and narrow.phase and not narrow.time  # then the time
    assert tiny.step >= 6 and not tiny.attempt  # the step id is what stays
    for width in range(12, 200):
        assert layout(width, len(LONG)).width <= width


def test_a_long_saga_on_a_short_terminal_keeps_running_and_failed_rows_in_view() -> None:
    events = many()
    frames, final = render(events, 80, height=20)
    failed_at = next(
        i for i, e in enumerate(events) if isinstance(e, StepFinished) and e.state == "failed"
    )
    started = 0
    for i, (frame, event) in enumerate(zip(frames, events, strict=False)):
        assert len(frame.splitlines()) <= 19, frame  # fits, a line spare for the cursor
        shown = rows(frame)
        if isinstance(event, AttemptStarted):
            started += 1
            assert any(event.step in r and "→" in r for r in shown), frame
        # every row in flight is in view, and the failed one from when it failed
        in_flight = sum(1 for e in events[: i + 1] if isinstance(e, AttemptStarted)) - sum(
            1 for e in events[: i + 1] if isinstance(e, StepFinished)
        )
        assert sum(1 for r in shown if r[0] == "→") == in_flight, frame
        if i >= failed_at:
            assert any(r[0] == "✗" and "step_30" in r for r in shown), frame
    assert started == 31 + 30
    assert any(re.search(r"✓ \d+ succeeded", f) for f in frames)
    assert any(re.search(r"· \d+ more", f) for f in frames)
    # what stays at the end is the whole table, every row
    assert len(rows(final)) == 50 + 30


def test_the_summary_starts_its_own_lines_and_never_breaks_a_path_or_command() -> None:
    _, final = render(story(), 40)
    lines = final.splitlines()
    assert lines[:3] == ["running add-product", f"run {RUN}", f"journal {JOURNAL}"], final
    # the path stays whole on a line, though longer than the terminal; the command too
    path = "/home/me/projects/catalogue/sagas/add-product.yaml:38"
    assert any(line.strip() in (path, f"--> {path}") for line in lines), final
    assert "  to roll it back:" in lines and f"    sagactl compensate {RUN}" in lines, final
    # prose wraps between words, its continuation indented
    assert "cause: compensation not finished for" in lines, final
    assert f"  {LONG}:" in lines, final
    assert "sagactl resume" not in final  # stuck compensating: compensate alone is offered
    stuck = next(i for i, line in enumerate(lines) if line.startswith("stuck in 1.50s"))
    assert lines[stuck - 1][0] in SYMBOLS  # the table ended on a line of its own


def test_an_interrupted_run_leaves_its_table_and_the_cursor_on_a_new_line() -> None:
    console = terminal(80)
    renderer = LiveView(console, clock=lambda: 100.0)
    for event in story()[:6]:
        renderer(event)
    renderer.close()
    text = console.export_text()
    assert text.endswith("\n")
    assert any(LONG[:20] in line and "→" in line and "2/3" in line for line in text.splitlines())


def test_cleanup_of_a_run_reads_as_success() -> None:
    console = terminal(80)
    renderer = LiveView(console, clock=lambda: 100.0)
    for event in [
        RunStarted(RUN, "smoke", JOURNAL, steps=("a", "b")),
        AttemptStarted("a", "action", 1, 3, "PUT", "http://127.0.0.1:1/a"),
        AttemptFinished("a", "action", 1, "success", 201, None, 1.0),
        StepFinished("a", "action", "succeeded"),
        RunFinished(RUN, "succeeded", None, 0.01),
        RunStarted(RUN, "smoke", JOURNAL, True, True, cleanup=True, steps=("a",)),
        PhaseStarted("compensate"),
        AttemptStarted("a", "compensate", 1, 3, "DELETE", "http://127.0.0.1:1/a"),
        AttemptFinished("a", "compensate", 1, "success", 200, None, 1.0),
        StepFinished("a", "compensate", "succeeded"),
        RunFinished(RUN, "cleaned", None, 0.01),
    ]:
        renderer(event)
    text = console.export_text()
    assert "cleaning up smoke  run " + RUN in text
    words = " ".join(text.split())
    assert f"cleaned in 0.01s run {RUN} (succeeded, then --cleanup undid 1 step)" in words
    assert "cause" not in text and "sagactl compensate" not in text


def test_a_poll_shows_how_many_answers_said_not_yet() -> None:
    console = terminal(80)
    renderer = LiveView(console, clock=lambda: 100.0)
    for event in [
        RunStarted(RUN, "job", JOURNAL, steps=("wait",)),
        AttemptStarted("wait", "action", 1, 3, "GET", "http://127.0.0.1:1/jobs/1"),
        AttemptFinished("wait", "action", 1, "pending", 200, "not done yet", 1.0),
        RetryScheduled("wait", "action", 2, 2.0, poll=1),
        AttemptStarted("wait", "action", 2, 4, "GET", "http://127.0.0.1:1/jobs/1"),
        AttemptFinished("wait", "action", 2, "pending", 200, "not done yet", 1.0),
        RetryScheduled("wait", "action", 3, 2.0, poll=2),
    ]:
        renderer(event)
    frame = terminal(80)
    frame.print(renderer)
    line = next(r for r in rows(frame.export_text()) if "wait" in r)
    assert line.startswith("↻ wait") and "not done yet (poll 2)" in line, line
    assert " 2 " in line and "/" not in line.split("action")[1], line  # no most attempts
    renderer.close()


def items_story() -> list[Event]:
    """A foreach step of five items, two at a time: the third fails; the two before it and
    the one in flight beside it are undone."""
    events: list[Event] = [
        RunStarted(RUN, "order", JOURNAL, steps=("order", "lines", "total")),
        PhaseStarted("forward"),
        AttemptStarted("order", "action", 1, 3, "PUT", "http://127.0.0.1:1/o"),
        AttemptFinished("order", "action", 1, "success", 201, None, 1.0),
        StepFinished("order", "action", "succeeded"),
        ItemsStarted("lines", "action", 5, 5),
    ]
    for index, status in ((0, 201), (1, 201), (2, 422), (3, 201)):
        key = f"lines[{index}]"
        state = "failed" if status == 422 else "succeeded"
        events += [
            AttemptStarted(key, "action", 1, 3, "PUT", f"http://127.0.0.1:1/l/{index}", item=index),
            AttemptFinished(key, "action", 1, "success", status, None, 1.0, item=index),
            StepFinished(key, "action", state, "status 422" if status == 422 else None, item=index),
        ]
    events += [
        StepFinished("lines", "action", "failed", "lines[2]: status 422"),
        PhaseStarted("compensate"),
        ItemsStarted("lines", "compensate", 3, 5),
    ]
    for index in (3, 1, 0):
        key = f"lines[{index}]"
        events += [
            AttemptStarted(key, "compensate", 1, 10, "DELETE", "http://x/l", item=index),
            AttemptFinished(key, "compensate", 1, "success", 200, None, 1.0, item=index),
            StepFinished(key, "compensate", "succeeded", item=index),
        ]
    events += [
        StepFinished("lines", "compensate", "succeeded"),
        RunFinished(RUN, "compensated", "step lines[2]: status 422", 1.0, "lines[2]", "action"),
    ]
    return events


def test_items_have_rows_under_their_step_and_the_step_counts_them() -> None:
    frames, final = render(items_story(), 100)
    during = [f for f in frames if "lines[1]" in f and "lines[2]" not in f][-1]
    table = [line.split()[1] for line in rows(during)]
    assert table == ["order", "lines", "lines[0]", "lines[1]", "total"], during
    assert re.search(r"→ lines .* 2/5 items", during), during
    table = [line.split()[:3] for line in rows(final)]
    assert table == [
        ["✓", "order", "action"],
        ["✗", "lines", "action"],
        ["✓", "lines[0]", "action"],
        ["✓", "lines[1]", "action"],
        ["✗", "lines[2]", "action"],
        ["✓", "lines[3]", "action"],
        ["·", "total", "action"],
        ["✓", "lines", "compensate"],
        ["✓", "lines[0]", "compensate"],
        ["✓", "lines[1]", "compensate"],
        ["✓", "lines[3]", "compensate"],
    ], final
    # one step undone, whatever its number of items; the cause is the item's
    assert "compensated in 1.00s" in final and "cause: step lines[2]: status 422" in final


def test_a_thousand_items_fold_and_the_failing_one_stays_in_view() -> None:
    events: list[Event] = [
        RunStarted(RUN, "big", JOURNAL, steps=("lines",)),
        ItemsStarted("lines", "action", 1000, 1000),
    ]
    for index in range(1000):
        key = f"lines[{index}]"
        bad = index == 700
        events += [
            AttemptStarted(key, "action", 1, 3, "PUT", "http://x/l", item=index),
            StepFinished(key, "action", "failed" if bad else "succeeded", item=index),
        ]
    events.append(RunFinished(RUN, "compensated", "step lines[700]: 409", 1.0))
    frames, _ = render(events, 80, 20)
    last = frames[-1]
    assert len(last.splitlines()) <= 19
    assert "✓ 999 succeeded" in last and "lines[700]" in last, last
