"""The `list` and `show` views of runs in the journal, as text and as JSON records.

Imports only the journal, so that `list` and `show` start fast."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence

from sagactl.records import (
    AttemptRecord,
    Notification,
    OperatorAction,
    RunRecord,
    RunStatus,
    StepRecord,
    item_key,
    operator_commands,
    split_item_key,
)

__all__ = [
    "duration",
    "error_kind",
    "failing_attempt",
    "format_list",
    "format_show",
    "iso_time",
    "item_keys",
    "json_line",
    "list_records",
    "next_commands",
    "readable",
    "show_record",
    "summary_record",
    "timeline",
]


# What the attempt errors recorded by the HTTP executor are, in a reader's words; an error
# of another kind of step (or a class this version does not know) is an "error".
_ERROR_KINDS = {
    "HTTPStatus": "status",
    "Expectation": "check",
    "ResponseTooLarge": "too large",
    "DecodingError": "undecodable",
    "InvalidRequest": "invalid request",
    "Interrupted": "interrupted",
    "ConnectError": "connection",
    "ConnectTimeout": "timeout",
    "ReadTimeout": "timeout",
    "WriteTimeout": "timeout",
    "PoolTimeout": "timeout",
    "ReadError": "connection",
    "WriteError": "connection",
    "RemoteProtocolError": "protocol",
    "LocalProtocolError": "protocol",
}


def error_kind(error_class: str | None) -> str:
    """An attempt's error class as users are told it (`status`, `timeout`, …)."""
    return _ERROR_KINDS.get(error_class or "", "error")


def item_keys(step_id: str, steps: Mapping[tuple[str, str], StepRecord]) -> list[str] | None:
    """The keys of a foreach step's items (`lines[0]`, `lines[1]`…), in item order: as many
    as its journaled list holds (or, for a list journaled only by its count, that many).
    None for a step that is not a foreach, or whose list was never journaled."""
    action = steps.get((step_id, "action"))
    if action is None or action.items is None:
        return None
    count = (
        len(action.items) if isinstance(action.items, list) else int(action.items.get("count", 0))
    )
    return [item_key(step_id, i) for i in range(count)]


def _step_rows(
    order: Sequence[str], steps: Mapping[tuple[str, str], StepRecord]
) -> list[tuple[str, str, StepRecord]]:
    """(key, phase, record) of every step and phase that started, in the run's order: a
    foreach step's row, then its items' in item order."""
    rows = []
    for step_id in order:
        keys = item_keys(step_id, steps) or []
        for phase in ("action", "verify", "confirm", "compensate"):
            for key in (step_id, *keys):
                record = steps.get((key, phase))
                if record is not None:
                    rows.append((key, phase, record))
    return rows


def _belongs(attempt_step: str, step_id: str) -> bool:
    """Whether an attempt recorded under `attempt_step` is one of `step_id`'s (or of one of
    its items)."""
    return attempt_step == step_id or split_item_key(attempt_step)[0] == step_id


def json_line(record: dict[str, object]) -> str:
    """One line of JSON Lines output (docs/events.md)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def iso_time(seconds: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds % 1 * 1000):03d}Z"


def _age(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def format_list(runs: Sequence[tuple[RunRecord, str]], *, waiting: bool = False) -> str:
    """Runs: id, name, shown status, start time; with `waiting`, how long each has waited
    since its last change (before its start time)."""
    if not runs:
        return "no runs waiting" if waiting else "no runs"
    width = max(len(r.name) for r, _ in runs)
    now = time.time()
    return "\n".join(
        f"{run.id}  {run.name.ljust(width)}  {status.ljust(12)}  "
        + (f"waiting {duration(max(0.0, now - run.updated_at)).ljust(7)}  " if waiting else "")
        + _age(run.created_at)
        for run, status in runs
    )


_HINTS = {"resume": "to carry it on: ", "compensate": "to roll it back:"}
_CLEANUP_HINTS = {"resume": "to finish the cleanup:", "compensate": "to finish the cleanup:"}


def next_commands(
    run_id: str,
    journal_flag: str = "",
    commands: Sequence[str] = (),
    *,
    cleanup: bool = False,
    operator: Sequence[Sequence[str]] = (),
) -> str:
    """The commands that can carry a run on, one a line; without `commands` (a run that was
    interrupted: nothing says a pivot forbids it), both. Then the operator actions that may
    help (`records.operator_commands`: (command, step, phase))."""
    hints = _CLEANUP_HINTS if cleanup else _HINTS
    lines = [
        f"  {hints[command]} sagactl {command} {run_id}{journal_flag}"
        for command in commands or _HINTS
    ]
    for command, step, phase in operator:
        if command == "skip":
            what = "compensation" if phase == "compensate" else phase
            lines.append(
                f"  if {step}'s {what} was done by hand: sagactl skip {run_id} {step} "
                f"--reason 'WHY'{journal_flag}"
            )
        else:
            lines.append(
                f"  once you know if {step} took effect: sagactl mark {run_id} {step} "
                f"applied|absent --reason 'WHY'{journal_flag}"
            )
    return "\n".join(lines)


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


_STATE_WORDS = {"in_doubt": "in doubt"}
_DOING = {
    "forward": "while running its actions",
    "confirm": "while confirming",
    "compensate": "while compensating",
}
_OUTCOME_WORDS = {"in_doubt": "in doubt", None: "in flight"}


def duration(seconds: float) -> str:
    """A duration as people read it: `84ms`, `1.81s`, `2m03s`, `1h02m`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


# A \uXXXX escape (or a surrogate pair of them) not itself escaped: JSON from a service that
# escapes every non-ASCII character, shown as the characters it stands for. ASCII escapes stay
# as they are, so that nothing a masked text hides can be spelled out by unescaping it.
_ESCAPE = re.compile(
    r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|"
    r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})",
    re.IGNORECASE,
)


def _unescaped(match: re.Match[str]) -> str:
    if match.group(2):
        high, low = int(match.group(2), 16), int(match.group(3), 16)
        code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        return match.group(1) + chr(code)
    code = int(match.group(5), 16)
    if code < 0x80 or 0xD800 <= code <= 0xDFFF:
        return match.group(0)
    return match.group(4) + chr(code)


def readable(text: str) -> str:
    """`text` with its JSON escapes of non-ASCII characters shown as those characters."""
    return _ESCAPE.sub(_unescaped, text) if "\\u" in text else text


def _shown_status(run: RunRecord, shown: str) -> str:
    if shown == "cleaned":
        return "cleaned (it succeeded, then --cleanup undid its steps)"
    if run.status.final:
        return shown
    if shown == "queued":
        return "queued (nothing sent: a worker drives it, sagactl worker)"
    doing = "while cleaning up" if run.cleanup else _DOING.get(run.phase.value, "")
    return f"{shown} ({doing})" if doing else shown


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def format_show(
    run: RunRecord,
    shown_status: str,
    steps: dict[tuple[str, str], StepRecord],
    attempts: Sequence[AttemptRecord],
    order: Sequence[str],
    journal_flag: str = "",
    actions: Sequence[OperatorAction] = (),
    notifications: Sequence[Notification] = (),
) -> str:
    lines = [
        f"run {run.id}",
        f"  saga      {run.name} ({run.saga_path}, sha256 {run.saga_hash[:12]})",
        f"  status    {_shown_status(run, shown_status)}",
        f"  started   {_age(run.created_at)}",
    ]
    if run.finished_at:
        lines.append(
            f"  finished  {_age(run.finished_at)} ({duration(run.finished_at - run.created_at)})"
        )
    if run.error:
        lines.append(f"  cause     {run.error}")
    lines.append(f"  inputs    {_json(run.inputs)}")
    if shown_status in ("stuck", "interrupted"):
        commands = next_commands(
            run.id,
            journal_flag,
            run.next_commands(),
            cleanup=run.cleanup,
            operator=operator_commands(run, steps),
        )
        lines += ["", "next:", commands]
    if actions:
        lines += ["", "operator actions:"]
        lines += [
            f"  {_age(a.at)}  {a.action} {a.phase} of {a.step_id}  by {a.user}@{a.host}: {a.reason}"
            for a in actions
        ]
    if notifications:
        lines += ["", "notifications:"]
        lines += [
            f"  {_age(n.at)}  {'delivered' if n.delivered else 'not delivered'}: {n.target}"
            f" ({n.detail})"
            for n in notifications
        ]
    lines += ["", "steps:"]
    rows = _step_rows(order, steps)
    step_width = max((len(step_id) for step_id, _, _ in rows), default=0)
    for step_id, phase, record in rows:
        state = _STATE_WORDS.get(record.state.value, record.state.value)
        counted = f"{record.attempts} attempt{'s' if record.attempts != 1 else ''}"
        keys = item_keys(step_id, steps)
        if keys is not None:  # a foreach step: its items' attempts are on their rows
            counted = f"{len(keys)} item{'s' if len(keys) != 1 else ''}"
        extra = f"  outputs {_json(record.outputs)}" if record.outputs else ""
        error = f"  {record.error}" if record.error else ""
        lines.append(
            f"  {step_id.ljust(step_width)}  {phase.ljust(10)}  {state.ljust(9)}  "
            f"{counted.ljust(10)}{extra}{error}".rstrip()
        )
    if not rows:
        lines.append("  (no step started)")
    lines += ["", "timeline:", *timeline(attempts), "", "attempts:"]
    start = run.created_at
    labels = [f"{a.step_id} {a.phase} #{a.attempt}" for a in attempts]
    pad = max((len(label) for label in labels), default=0)
    for label, a in zip(labels, attempts, strict=True):
        # What came of it on one line, the request under it: a long URL wraps alone.
        took = duration(a.duration_ms / 1000) if a.duration_ms is not None else "-"
        status = str(a.status) if a.status is not None else "-"
        outcome = _OUTCOME_WORDS.get(a.outcome, a.outcome)
        doubt = ", in doubt" if a.in_doubt else ""
        error = f"  {a.error_message}" if a.error_message else ""
        lines += [
            f"  +{a.started_at - start:7.3f}s {label.ljust(pad)}  {status.rjust(3)} "
            f"{outcome}{doubt} {took}{error}",
            f"{' ' * 12}{a.method} {a.url}",
        ]
    failing = failing_attempt(steps, attempts)
    if failing is not None:
        lines += [
            "",
            f"failing attempt: {failing.step_id} {failing.phase} #{failing.attempt}",
            f"  > {failing.method} {failing.url}",
            *(f"  > {k}: {v}" for k, v in failing.request_headers.items()),
        ]
        if failing.request_body:
            lines += [f"  > {part}" for part in readable(failing.request_body[:2048]).splitlines()]
        if failing.status is not None:
            lines.append(f"  < {failing.status}")
            lines += [f"  < {k}: {v}" for k, v in (failing.response_headers or {}).items()]
            if failing.response_body:
                body = readable(failing.response_body[:2048])
                lines += [f"  < {part}" for part in body.splitlines()]
        else:
            what = failing.error_message or _OUTCOME_WORDS.get(failing.outcome, failing.outcome)
            lines.append(f"  * no response: {what}")
    return "\n".join(lines)


def failing_attempt(
    steps: dict[tuple[str, str], StepRecord], attempts: Sequence[AttemptRecord]
) -> AttemptRecord | None:
    """The last attempt of the last request that did not succeed: what a reader of a failed
    run looks at first."""
    # A verify that settled nothing is no failure of the run: it left the doubt as it was.
    unfinished = {
        key
        for key, record in steps.items()
        if record.state.value != "succeeded" and record.phase != "verify"
    }
    return next((a for a in reversed(attempts) if (a.step_id, a.phase) in unfinished), None)


def summary_record(
    run: RunRecord,
    steps: dict[tuple[str, str], StepRecord],
    attempts: Sequence[AttemptRecord],
    order: Sequence[str],
    exit_code: int,
) -> dict[str, object]:
    """The last JSON line of a run: its outcome and every step's state."""
    per_step = []
    for step_id in order:
        entry = _step_entry(step_id, steps, [a for a in attempts if _belongs(a.step_id, step_id)])
        keys = item_keys(step_id, steps)
        if keys is not None:
            entry["items"] = [
                {"index": i, **_step_entry(key, steps, [a for a in attempts if a.step_id == key])}
                for i, key in enumerate(keys)
            ]
        per_step.append(entry)
    return {
        "v": 1,
        "event": "summary",
        "run": run.id,
        "saga": run.name,
        "file": run.saga_path,
        "status": run.status.value,
        # What the --cleanup compensation reached, for a run it undoes.
        "cleanup": run.status.value if run.cleanup else None,
        "exit_code": exit_code,
        "error": run.error,
        "duration_s": round((run.finished_at or run.updated_at) - run.created_at, 3),
        "next": list(run.next_commands()) if run.status is RunStatus.STUCK else [],
        "operator": [
            {"command": command, "step": step, "phase": phase}
            for command, step, phase in (
                operator_commands(run, steps) if run.status is RunStatus.STUCK else []
            )
        ],
        "steps": per_step,
    }


def _step_entry(
    key: str, steps: Mapping[tuple[str, str], StepRecord], attempts: Sequence[AttemptRecord]
) -> dict[str, object]:
    """A step's (or an item's) states and attempts, as the JSON summary gives them."""
    entry: dict[str, object] = {"id": key}
    for phase in ("action", "compensate", "confirm", "verify"):
        record = steps.get((key, phase))
        entry[phase] = record.state.value if record else None
    entry["attempts"] = len(attempts)
    entry["duration_ms"] = round(sum(a.duration_ms or 0 for a in attempts), 3)
    return entry


def list_records(
    runs: Sequence[tuple[RunRecord, str]], *, waiting: bool = False
) -> list[dict[str, object]]:
    now = time.time()
    return [
        {
            "v": 1,
            "run": run.id,
            "saga": run.name,
            "status": status,
            "created": iso_time(run.created_at),
            "finished": iso_time(run.finished_at) if run.finished_at else None,
            "error": run.error,
            **({"waiting_s": round(max(0.0, now - run.updated_at), 3)} if waiting else {}),
        }
        for run, status in runs
    ]


def show_record(
    run: RunRecord,
    shown: str,
    steps: dict[tuple[str, str], StepRecord],
    attempts: Sequence[AttemptRecord],
    order: Sequence[str],
    actions: Sequence[OperatorAction] = (),
    notifications: Sequence[Notification] = (),
) -> dict[str, object]:
    """`show --output json`: the run, its steps, every attempt and every operator action."""
    record = summary_record(run, steps, attempts, order, exit_code=0)
    del record["exit_code"]
    record.update(
        event="run",
        status=shown,
        next=list(run.next_commands()) if shown in ("stuck", "interrupted") else [],
        operator=[
            {"command": command, "step": step, "phase": phase}
            for command, step, phase in (
                operator_commands(run, steps) if shown in ("stuck", "interrupted") else []
            )
        ],
        inputs=run.inputs,
        created=iso_time(run.created_at),
    )
    for entry in record["steps"]:  # type: ignore[attr-defined]
        for one in (entry, *entry.get("items", ())):
            action = steps.get((one["id"], "action"))
            one["outputs"] = action.outputs if action else {}
    record["attempts"] = [
        {
            "step": a.step_id,
            "item": split_item_key(a.step_id)[1],
            "phase": a.phase,
            "attempt": a.attempt,
            "started": iso_time(a.started_at),
            "duration_ms": round(a.duration_ms, 3) if a.duration_ms is not None else None,
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
    record["operator_actions"] = [
        {
            "step": a.step_id,
            "phase": a.phase,
            "action": a.action,
            "user": a.user,
            "host": a.host,
            "at": iso_time(a.at),
            "reason": a.reason,
        }
        for a in actions
    ]
    record["notifications"] = [
        {"target": n.target, "at": iso_time(n.at), "delivered": n.delivered, "detail": n.detail}
        for n in notifications
    ]
    return record
