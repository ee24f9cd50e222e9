"""The live view: rendered on a recording console forced to be an 80-column terminal."""

from __future__ import annotations

import io

from rich.console import Console

from sagactl.events import (
    AttemptFinished,
    AttemptStarted,
    PhaseStarted,
    RetryScheduled,
    RunFinished,
    RunStarted,
    StepFinished,
)
from sagactl.output.live import LiveView

RUN = "01M8FF6MKXGDRCYQFDY3WQT8RR"


def story() -> list[object]:
    """A run with a retry, a compensation whose retries run out, and so a stuck end."""
    return [
        RunStarted(RUN, "add-product", "/home/me/.local/state/sagactl/journal.db"),
        PhaseStarted("forward"),
        AttemptStarted("reserve", "action", 1, 3, "PUT", "http://127.0.0.1:8081/r/1"),
        AttemptFinished("reserve", "action", 1, "retryable", 503, "status 503, retried", 3.0),
        RetryScheduled("reserve", "action", 2, 0.2),
        AttemptStarted("reserve", "action", 2, 3, "PUT", "http://127.0.0.1:8081/r/1"),
        AttemptFinished("reserve", "action", 2, "success", 201, None, 2.0),
        StepFinished("reserve", "action", "succeeded"),
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
            "sagas/add-product.yaml:57",
            "PUT http://127.0.0.1:8083/i/A",
            '{"error": "search rejects this request"}',
        ),
        PhaseStarted("compensate"),
        AttemptStarted("reserve", "compensate", 1, 10, "DELETE", "http://127.0.0.1:8081/r/1"),
        AttemptFinished("reserve", "compensate", 1, "retryable", 500, "status 500", 1.0),
        StepFinished(
            "reserve",
            "compensate",
            "failed",
            "status 500, retried",
            "sagas/add-product.yaml:38",
            "DELETE http://127.0.0.1:8081/r/1",
        ),
        RunFinished(
            RUN,
            "stuck",
            "compensation not finished for reserve: status 500",
            1.5,
            "reserve",
            "compensate",
        ),
    ]


def render(width: int = 80) -> tuple[list[str], str]:
    """Every frame the live view would paint, and what stays on the screen at the end."""
    live_console = Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)
    renderer = LiveView(live_console, clock=lambda: 100.0)
    frames = []
    for event in story():
        if isinstance(event, RunFinished):
            final = Console(
                file=io.StringIO(), force_terminal=True, width=width, color_system=None, record=True
            )
            renderer.console = final
            renderer(event)
            return frames, final.export_text()
        renderer(event)  # type: ignore[arg-type]
        frame = Console(file=io.StringIO(), width=width, color_system=None, record=True)
        frame.print(renderer)
        frames.append(frame.export_text())
    raise AssertionError("the story has no end")


def test_live_view_renders_at_80_columns() -> None:
    frames, text = render()
    assert all(len(line) <= 80 for frame in frames for line in frame.splitlines())
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "running add-product" in frames[0] and RUN in frames[0]
    assert "retry in 0.2s" in frames[4]
    assert text.startswith("running add-product  run " + RUN)
    assert "stuck" in text and RUN in text
    assert f"sagactl resume {RUN}" in text and f"sagactl compensate {RUN}" in text
    assert "cause: compensation not finished for reserve: status 500" in text
    assert "--> sagas/add-product.yaml:38 (reserve compensate)" in text
    assert "DELETE http://127.0.0.1:8081/r/1" in text
    table = [line for line in text.splitlines() if "reserve" in line or "index" in line]
    assert any("✓" in line and "2/3" in line and "201" in line for line in table)
    assert any("✗" in line and "index" in line and "422" in line for line in table)
    assert any("✗" in line and "compensate" in line and "500" in line for line in table)


def test_live_view_is_also_fine_when_narrow() -> None:
    frames, text = render(width=50)
    assert all(len(line) <= 50 for frame in frames for line in frame.splitlines())
    assert all(len(line) <= 50 for line in text.splitlines())
    assert "stuck" in text


def test_countdown_to_the_next_retry() -> None:
    now = [100.0]
    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    renderer = LiveView(console, clock=lambda: now[0])
    for event in story()[:5]:
        renderer(event)  # type: ignore[arg-type]
    now[0] += 0.125
    capture = Console(file=io.StringIO(), width=80, color_system=None, record=True)
    capture.print(renderer.table())
    assert "retry in 0.1s" in capture.export_text()
    if renderer.live is not None:
        renderer.live.stop()
