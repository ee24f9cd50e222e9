"""How runs look: one plain line per event, the summary with what to do next, and the `list`
and `show` views. All terminal output of a run goes through a `PlainRenderer`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import IO

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
from sagactl.journal import AttemptRecord, RunRecord, StepRecord

__all__ = [
    "JsonRenderer",
    "PlainRenderer",
    "format_list",
    "format_show",
    "list_records",
    "next_commands",
    "show_record",
    "summary_record",
    "where_to_look",
]


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


def next_commands(run_id: str, journal_flag: str = "") -> str:
    return (f"  to carry it on:  sagactl resume {run_id}{journal_flag}\n"
            f"  to roll it back: sagactl compensate {run_id}{journal_flag}")


class PlainRenderer:
    """One grep-able line per event on `out`; the run id alone on the first line; with
    `verbose`, each request and response curl-style (`>` sent, `<` received)."""

    def __init__(self, out: IO[str] | None = None, *, journal_flag: str = "",
                 quiet: bool = False, verbose: bool = False) -> None:
        self.out = out or sys.stdout
        self.journal_flag = journal_flag
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.failure: StepFinished | None = None

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepFinished) and event.state != "succeeded":
            self.failure = event  # the latest failure is the one that ended the run
        if isinstance(event, RunStarted):
            self.failure = None
            self.line(event.run_id)
            if not self.quiet:
                verb = "resuming" if event.resumed else "running"
                self.line(f"{_clock()} {verb} saga {event.saga} (journal {event.journal})")
        elif self.quiet and not isinstance(event, RunFinished):
            return
        elif isinstance(event, PhaseStarted):
            if event.phase != "forward":
                self.line(f"{_clock()} -- {event.phase}")
        elif isinstance(event, AttemptStarted):
            if self.verbose:
                self.exchange(">", f"{event.method} {event.url}", event.headers, event.body)
        elif isinstance(event, AttemptFinished):
            if self.verbose and event.status is not None:
                self.exchange("<", str(event.status), event.response_headers or {},
                              event.response_body)
            elif self.verbose:
                self.line(f"* no response: {event.error}")
            result = str(event.status) if event.status is not None else "no response"
            if event.outcome != "success" and event.error:
                result = f"{event.outcome}: {event.error}"
            self.line(f"{_clock()} {event.step} {event.phase} attempt {event.attempt} "
                      f"{result} ({event.duration_ms:.0f}ms)")
        elif isinstance(event, RetryScheduled):
            if self.verbose:
                self.line(f"* attempt {event.attempt} in {event.wait_s:.3f}s")
        elif isinstance(event, StepFinished):
            if event.state != "succeeded":
                self.line(f"{_clock()} {event.step} {event.phase} {event.state}"
                          + (f": {event.error}" if event.error else ""))
        elif isinstance(event, RunFinished):
            self.summary(event)

    def exchange(self, mark: str, first: str, headers: dict[str, str],
                 body: str | None) -> None:
        lines = [f"{mark} {first}", *(f"{mark} {k}: {v}" for k, v in headers.items())]
        if body:
            lines += [f"{mark}", *(f"{mark} {part}" for part in body.splitlines())]
        self.out.write("\n".join(lines) + "\n")

    def summary(self, event: RunFinished) -> None:
        text = f"run {event.run_id} {event.status} in {event.duration_s:.2f}s"
        failure = self.failure
        if event.error and event.status != "succeeded":
            text += f"\n  cause: {event.error}"
            text += "".join(f"\n    {line}" for line in where_to_look(failure))
        if event.status == "stuck":
            text += "\n" + next_commands(event.run_id, self.journal_flag)
        self.line(text)


def _age(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def format_list(runs: Sequence[tuple[RunRecord, str]]) -> str:
    """Runs newest first: id, name, shown status, start time."""
    if not runs:
        return "no runs"
    width = max(len(r.name) for r, _ in runs)
    return "\n".join(f"{run.id}  {run.name.ljust(width)}  {status.ljust(12)}  "
                     f"{_age(run.created_at)}" for run, status in runs)


def timeline(attempts: Sequence[AttemptRecord], width: int = 40) -> list[str]:
    """A bar per attempt on one time axis: `█` while the request was out, `·` the backoff
    wait before a retry, as in a step-functions console."""
    if not attempts:
        return ["  (no attempt yet)"]
    start = min(a.started_at for a in attempts)
    end = max(a.finished_at or a.started_at for a in attempts)
    span = max(end - start, 1e-3)

    def column(at: float) -> int:
        return min(width - 1, int((at - start) / span * width))

    labels = [f"{a.step_id} {a.phase} #{a.attempt}" for a in attempts]
    pad = max(len(label) for label in labels)
    previous: dict[tuple[str, str], float] = {}
    lines = []
    for label, a in zip(labels, attempts, strict=True):
        bar = [" "] * width
        waited_from = previous.get((a.step_id, a.phase))
        if waited_from is not None:
            for i in range(column(waited_from), column(a.started_at)):
                bar[i] = "·"
        finish = a.finished_at or a.started_at
        for i in range(column(a.started_at), max(column(finish), column(a.started_at)) + 1):
            bar[i] = "█"
        previous[(a.step_id, a.phase)] = finish
        status = a.status if a.status is not None else (a.outcome or "in flight")
        lines.append(f"  {label.ljust(pad)} |{''.join(bar)}| {status}")
    lines.append(f"  {' ' * pad}  0{f'{span:.3f}s'.rjust(width)}")
    return lines


def format_show(run: RunRecord, shown_status: str, steps: dict[tuple[str, str], StepRecord],
                attempts: Sequence[AttemptRecord], order: Sequence[str]) -> str:
    lines = [f"run {run.id}", f"  saga      {run.name} ({run.saga_path}, sha256 "
             f"{run.saga_hash[:12]})", f"  status    {shown_status} (phase {run.phase})",
             f"  started   {_age(run.created_at)}"]
    if run.finished_at:
        lines.append(f"  finished  {_age(run.finished_at)} "
                     f"({run.finished_at - run.created_at:.2f}s)")
    if run.error:
        lines.append(f"  cause     {run.error}")
    lines.append(f"  inputs    {json.dumps(run.inputs, ensure_ascii=False)}")
    lines += ["", "steps:"]
    for step_id in order:
        for phase in ("action", "confirm", "compensate"):
            record = steps.get((step_id, phase))
            if record is None:
                continue
            extra = f" outputs {json.dumps(record.outputs)}" if record.outputs else ""
            error = f" error: {record.error}" if record.error else ""
            lines.append(f"  {step_id} {phase}: {record.state.value}, {record.attempts} "
                         f"attempt{'s' if record.attempts != 1 else ''}{extra}{error}")
    lines += ["", "timeline:", *timeline(attempts), "", "attempts:"]
    start = run.created_at
    for a in attempts:
        took = f"{a.duration_ms:.0f}ms" if a.duration_ms is not None else "-"
        status = a.status if a.status is not None else "-"
        error = f" {a.error_class}: {a.error_message}" if a.error_class else ""
        lines.append(f"  +{a.started_at - start:7.3f}s {a.step_id} {a.phase} #{a.attempt} "
                     f"{a.method} {a.url} -> {status} {a.outcome or 'in flight'} {took}{error}")
    failing = next((a for a in reversed(attempts) if a.outcome not in ("success", "retryable")),
                   None)
    if failing is not None:
        lines += ["", f"failing attempt: {failing.step_id} {failing.phase} #{failing.attempt}",
                  f"  > {failing.method} {failing.url}",
                  *(f"  > {k}: {v}" for k, v in failing.request_headers.items())]
        if failing.request_body:
            lines += [f"  > {part}" for part in failing.request_body[:2048].splitlines()]
        if failing.status is not None:
            lines.append(f"  < {failing.status}")
            lines += [f"  < {k}: {v}" for k, v in (failing.response_headers or {}).items()]
            if failing.response_body:
                lines += [f"  < {part}" for part in failing.response_body[:2048].splitlines()]
        else:
            lines.append(f"  * {failing.error_class}: {failing.error_message}")
    return "\n".join(lines)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _iso(seconds: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds % 1 * 1000):03d}Z"


class JsonRenderer:
    """JSON Lines on `out`: one object per event (docs/events.md), versioned by `"v": 1`."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def write(self, record: dict[str, object]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        import dataclasses

        self.write({"v": 1, "event": _snake(type(event).__name__), "time": _iso(time.time()),
                    **dataclasses.asdict(event)})


def summary_record(run: RunRecord, steps: dict[tuple[str, str], StepRecord],
                   attempts: Sequence[AttemptRecord], order: Sequence[str], exit_code: int,
                   cleanup: str | None = None) -> dict[str, object]:
    """The last JSON line of a run: its outcome and every step's state."""
    per_step = []
    for step_id in order:
        entry: dict[str, object] = {"id": step_id}
        for phase in ("action", "compensate", "confirm"):
            record = steps.get((step_id, phase))
            entry[phase] = record.state.value if record else None
        mine = [a for a in attempts if a.step_id == step_id]
        entry["attempts"] = len(mine)
        entry["duration_ms"] = round(sum(a.duration_ms or 0 for a in mine), 3)
        per_step.append(entry)
    return {"v": 1, "event": "summary", "run": run.id, "saga": run.name, "file": run.saga_path,
            "status": run.status.value, "cleanup": cleanup, "exit_code": exit_code,
            "error": run.error,
            "duration_s": round((run.finished_at or run.updated_at) - run.created_at, 3),
            "steps": per_step}


def list_records(runs: Sequence[tuple[RunRecord, str]]) -> list[dict[str, object]]:
    return [{"v": 1, "run": run.id, "saga": run.name, "status": status,
             "created": _iso(run.created_at),
             "finished": _iso(run.finished_at) if run.finished_at else None,
             "error": run.error} for run, status in runs]


def show_record(run: RunRecord, shown: str, steps: dict[tuple[str, str], StepRecord],
                attempts: Sequence[AttemptRecord], order: Sequence[str]) -> dict[str, object]:
    """`show --output json`: the run, its steps and every attempt."""
    record = summary_record(run, steps, attempts, order, exit_code=0)
    del record["exit_code"]
    record.update(event="run", status=shown, inputs=run.inputs, created=_iso(run.created_at))
    for entry in record["steps"]:  # type: ignore[attr-defined]
        action = steps.get((entry["id"], "action"))
        entry["outputs"] = action.outputs if action else {}
    record["attempts"] = [
        {"step": a.step_id, "phase": a.phase, "attempt": a.attempt, "started": _iso(a.started_at),
         "duration_ms": a.duration_ms, "method": a.method, "url": a.url,
         "status": a.status, "outcome": a.outcome, "error": a.error_message,
         "request_headers": a.request_headers, "request_body": a.request_body,
         "response_headers": a.response_headers, "response_body": a.response_body}
        for a in attempts]
    return record
