"""The `list` and `show` views of runs in the journal, as text and as JSON records.

Imports only the journal, so that `list` and `show` start fast."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sagactl.records import AttemptRecord, RunRecord, StepRecord

__all__ = [
    "failing_attempt",
    "format_list",
    "format_show",
    "iso_time",
    "json_line",
    "list_records",
    "show_record",
    "summary_record",
    "timeline",
]


def json_line(record: dict[str, object]) -> str:
    """One line of JSON Lines output (docs/events.md)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def iso_time(seconds: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds % 1 * 1000):03d}Z"


def _age(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def format_list(runs: Sequence[tuple[RunRecord, str]]) -> str:
    """Runs newest first: id, name, shown status, start time."""
    if not runs:
        return "no runs"
    width = max(len(r.name) for r, _ in runs)
    return "\n".join(
        f"{run.id}  {run.name.ljust(width)}  {status.ljust(12)}  {_age(run.created_at)}"
        for run, status in runs
    )


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
        doubt = " (in doubt)" if a.in_doubt else ""
        lines.append(f"  {label.ljust(pad)} |{''.join(bar)}| {status}{doubt}")
    lines.append(f"  {' ' * pad}  0{f'{span:.3f}s'.rjust(width)}")
    return lines


def format_show(
    run: RunRecord,
    shown_status: str,
    steps: dict[tuple[str, str], StepRecord],
    attempts: Sequence[AttemptRecord],
    order: Sequence[str],
) -> str:
    lines = [
        f"run {run.id}",
        f"  saga      {run.name} ({run.saga_path}, sha256 {run.saga_hash[:12]})",
        f"  status    {shown_status} (phase {run.phase})",
        f"  started   {_age(run.created_at)}",
    ]
    if run.finished_at:
        lines.append(
            f"  finished  {_age(run.finished_at)} ({run.finished_at - run.created_at:.2f}s)"
        )
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
            lines.append(
                f"  {step_id} {phase}: {record.state.value}, {record.attempts} "
                f"attempt{'s' if record.attempts != 1 else ''}{extra}{error}"
            )
    lines += ["", "timeline:", *timeline(attempts), "", "attempts:"]
    start = run.created_at
    for a in attempts:
        took = f"{a.duration_ms:.0f}ms" if a.duration_ms is not None else "-"
        status = a.status if a.status is not None else "-"
        error = f" {a.error_class}: {a.error_message}" if a.error_class else ""
        doubt = ", in doubt" if a.in_doubt else ""
        lines.append(
            f"  +{a.started_at - start:7.3f}s {a.step_id} {a.phase} #{a.attempt} "
            f"{a.method} {a.url} -> {status} {a.outcome or 'in flight'}{doubt} "
            f"{took}{error}"
        )
    failing = failing_attempt(steps, attempts)
    if failing is not None:
        lines += [
            "",
            f"failing attempt: {failing.step_id} {failing.phase} #{failing.attempt}",
            f"  > {failing.method} {failing.url}",
            *(f"  > {k}: {v}" for k, v in failing.request_headers.items()),
        ]
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


def failing_attempt(
    steps: dict[tuple[str, str], StepRecord], attempts: Sequence[AttemptRecord]
) -> AttemptRecord | None:
    """The last attempt of the last request that did not succeed: what a reader of a failed
    run looks at first."""
    unfinished = {key for key, record in steps.items() if record.state.value != "succeeded"}
    return next((a for a in reversed(attempts) if (a.step_id, a.phase) in unfinished), None)


def summary_record(
    run: RunRecord,
    steps: dict[tuple[str, str], StepRecord],
    attempts: Sequence[AttemptRecord],
    order: Sequence[str],
    exit_code: int,
    cleanup: str | None = None,
) -> dict[str, object]:
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
    return {
        "v": 1,
        "event": "summary",
        "run": run.id,
        "saga": run.name,
        "file": run.saga_path,
        "status": run.status.value,
        "cleanup": cleanup,
        "exit_code": exit_code,
        "error": run.error,
        "duration_s": round((run.finished_at or run.updated_at) - run.created_at, 3),
        "steps": per_step,
    }


def list_records(runs: Sequence[tuple[RunRecord, str]]) -> list[dict[str, object]]:
    return [
        {
            "v": 1,
            "run": run.id,
            "saga": run.name,
            "status": status,
            "created": iso_time(run.created_at),
            "finished": iso_time(run.finished_at) if run.finished_at else None,
            "error": run.error,
        }
        for run, status in runs
    ]


def show_record(
    run: RunRecord,
    shown: str,
    steps: dict[tuple[str, str], StepRecord],
    attempts: Sequence[AttemptRecord],
    order: Sequence[str],
) -> dict[str, object]:
    """`show --output json`: the run, its steps and every attempt."""
    record = summary_record(run, steps, attempts, order, exit_code=0)
    del record["exit_code"]
    record.update(event="run", status=shown, inputs=run.inputs, created=iso_time(run.created_at))
    for entry in record["steps"]:  # type: ignore[attr-defined]
        action = steps.get((entry["id"], "action"))
        entry["outputs"] = action.outputs if action else {}
    record["attempts"] = [
        {
            "step": a.step_id,
            "phase": a.phase,
            "attempt": a.attempt,
            "started": iso_time(a.started_at),
            "duration_ms": a.duration_ms,
            "method": a.method,
            "url": a.url,
            "status": a.status,
            "outcome": a.outcome,
            "in_doubt": a.in_doubt,
            "error": a.error_message,
            "request_headers": a.request_headers,
            "request_body": a.request_body,
            "response_headers": a.response_headers,
            "response_body": a.response_body,
        }
        for a in attempts
    ]
    return record
