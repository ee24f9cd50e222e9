"""The pages of runs (SPEC §6) — the list and a run — as the dashboard serves them and a report
file holds them: server-rendered HTML with SVG, built from what the journal holds only (masked
when it was written), and every string passed through the redactor once more.

No network and no build step: the templates, the style sheet and the little script ship in
this package."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup, escape

from sagactl.output.run_views import (
    duration,
    failing_attempt,
    item_keys,
    next_commands,
    readable,
)
from sagactl.records import (
    AttemptRecord,
    Notification,
    OperatorAction,
    RunRecord,
    StepRecord,
    operator_commands,
    split_item_key,
)
from sagactl.redact import Redactor

__all__ = ["STATUSES", "RunData", "list_page", "report_page", "run_page", "static_text"]

_PHASES = ("action", "verify", "confirm", "compensate")
STATUSES = (
    "queued",
    "running",
    "compensating",
    "interrupted",
    "stuck",
    "succeeded",
    "compensated",
    "cleaned",
)


@dataclass(frozen=True)
class RunData:
    """What the journal holds of one run, read in one go."""

    run: RunRecord
    status: str
    """As users see it (`interrupted` for a run whose process is gone)."""
    steps: dict[tuple[str, str], StepRecord]
    attempts: Sequence[AttemptRecord]
    order: Sequence[str]
    actions: Sequence[OperatorAction] = ()
    notifications: Sequence[Notification] = ()


def static_text(name: str) -> str:
    """A file of the pages' static folder (`app.css`, `app.js`)."""
    return (
        resources.files("sagactl.output.pages").joinpath("static").joinpath(name).read_text("utf-8")
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sagactl.output.pages", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["took"] = duration
    return env


_ENV: jinja2.Environment | None = None


def _render(template: str, redactor: Redactor | None, **context: Any) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    html = _ENV.get_template(template).render(**context)
    return redactor.text(html) if redactor is not None else html


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


# --- the list ------------------------------------------------------------------------------


def list_page(
    runs: Sequence[tuple[RunRecord, str]],
    counts: Mapping[str, int],
    filters: Mapping[str, str],
    *,
    next_page: str | None,
    journal: str,
    redactor: Redactor | None = None,
) -> str:
    """The runs, newest first, with their filters, counts per status and a link to the next
    page (its query string), if any."""
    rows = [
        {
            "id": run.id,
            "saga": run.name,
            "status": status,
            "created": run.created_at,
            "took": _took(run, status),
            "error": run.error or "",
        }
        for run, status in runs
    ]
    return _render(
        "list.html",
        redactor,
        rows=rows,
        counts=[(s, counts.get(s, 0)) for s in STATUSES],
        total=sum(counts.values()),
        filters=filters,
        statuses=STATUSES,
        next_page=next_page,
        journal=journal,
        live=True,
    )


# --- one run --------------------------------------------------------------------------------


_WAITING = ("stuck", "interrupted")


def _took(run: RunRecord, status: str) -> float:
    """How long the run ran: to its end; for one waiting on someone, to when it stopped
    (the wait since is not work); for one still going, until now."""
    if run.finished_at is not None:
        return run.finished_at - run.created_at
    if status in _WAITING:
        return run.updated_at - run.created_at
    return time.time() - run.created_at


def _row_keys(data: RunData) -> list[tuple[str, str]]:
    """(key, phase) of every request that was sent or acted on by an operator, in the run's
    order: a step's, then its items' (`lines[2]`); any other last."""
    sent = [(a.step_id, a.phase) for a in data.attempts]
    sent += [(act.step_id, act.phase) for act in data.actions]
    seen = set(sent)
    keys = []
    for step_id in data.order:
        for phase in _PHASES:
            for key in (step_id, *(item_keys(step_id, data.steps) or [])):
                if (key, phase) in seen:
                    keys.append((key, phase))
    placed = set(keys)
    keys += [pair for pair in dict.fromkeys(sent) if pair not in placed]
    return keys


def _cause(data: RunData) -> dict[str, Any] | None:
    """The failing request's place in the saga: its file and line, and the lines around."""
    failing = failing_attempt(data.steps, data.attempts)
    if failing is None or not data.run.error:
        return None
    from sagactl.definition.source import YamlProblem, read_yaml

    step_id, _ = split_item_key(failing.step_id)
    try:
        saga, positions, _ = read_yaml(data.run.saga_text)
    except YamlProblem:
        return None
    steps = saga.get("steps", []) if isinstance(saga, dict) else []
    index = next(
        (i for i, s in enumerate(steps) if isinstance(s, dict) and s.get("id") == step_id), None
    )
    if index is None:
        return None
    line = positions.value(("steps", index, failing.phase))[0]
    text = data.run.saga_text.splitlines()
    first = max(1, line - 3)
    return {
        "where": f"{data.run.saga_path}:{line}",
        "what": f"{failing.step_id} {failing.phase}",
        "lines": [(n, text[n - 1], n == line) for n in range(first, min(len(text), line + 3) + 1)],
    }


def _state_of(data: RunData, key: str) -> str:
    """A step's state as the graph colours it: where its last phase stands."""
    action = data.steps.get((key, "action"))
    undo = data.steps.get((key, "compensate"))
    if undo is not None:
        return "undone" if undo.state.value == "succeeded" else undo.state.value
    return action.state.value if action is not None else "pending"


def _levels(data: RunData) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Each step's column in the graph (one past its needs'), and the needs' edges."""
    from sagactl.definition.source import parse_data

    try:
        saga = parse_data(data.run.saga_text)
    except Exception:  # a journaled text always parsed once; never let a page fail on it
        saga = {}
    raw = saga.get("steps", []) if isinstance(saga, dict) else []
    needs: dict[str, list[str]] = {}
    above: list[str] = []
    for step in raw:
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            continue
        explicit = step.get("needs")
        if isinstance(explicit, list):  # step ids; anything else in it a hand-edit left
            needs[step["id"]] = [d for d in explicit if isinstance(d, str)]
        else:
            needs[step["id"]] = list(above[-1:])
        above.append(step["id"])
    level: dict[str, int] = {}
    for step_id in data.order:
        level[step_id] = 1 + max((level.get(d, 0) for d in needs.get(step_id, [])), default=-1)
    edges = [(d, s) for s in data.order for d in needs.get(s, []) if d in level]
    return level, edges


def _graph(data: RunData) -> Markup:
    """The step graph: a box per step in its state, `needs` as arrows, and the order in which
    compensations ran (`undo 1`, `undo 2`…)."""
    level, edges = _levels(data)
    columns: dict[int, list[str]] = {}
    for step_id in data.order:
        columns.setdefault(level[step_id], []).append(step_id)
    undone = []
    for attempt in data.attempts:
        step_id, _ = split_item_key(attempt.step_id)
        if attempt.phase == "compensate" and step_id not in undone:
            undone.append(step_id)
    width, height, gap_x, gap_y = 150, 44, 60, 18
    place = {}
    for column, ids in columns.items():
        for row, step_id in enumerate(ids):
            place[step_id] = (20 + column * (width + gap_x), 20 + row * (height + gap_y))
    total_w = 40 + (max(columns, default=0) + 1) * (width + gap_x)
    total_h = 40 + max((len(ids) for ids in columns.values()), default=1) * (height + gap_y)
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{total_w}" '
        f'height="{total_h}" viewBox="0 0 {total_w} {total_h}" role="img" '
        f'aria-label="step graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/>'
        "</marker></defs>",
    ]
    for source, target in edges:
        (x1, y1), (x2, y2) = place[source], place[target]
        parts.append(
            f'<line class="edge" x1="{x1 + width}" y1="{y1 + height / 2}" x2="{x2}" '
            f'y2="{y2 + height / 2}" marker-end="url(#arrow)"/>'
        )
    for step_id in data.order:
        x, y = place[step_id]
        state = _state_of(data, step_id)
        keys = item_keys(step_id, data.steps)
        label = step_id + (f" x{len(keys)} items" if keys is not None else "")
        undo = f" · undo {undone.index(step_id) + 1}" if step_id in undone else ""
        parts.append(
            f'<g class="node state-{escape(state)}" data-step="{escape(step_id)}" '
            f'data-state="{escape(state)}"><rect x="{x}" y="{y}" width="{width}" '
            f'height="{height}" rx="6"/><text x="{x + 8}" y="{y + 18}" class="name">'
            f'{escape(label)}</text><text x="{x + 8}" y="{y + 34}" class="state">'
            f"{escape(state.replace('_', ' '))}{escape(undo)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _timeline(data: RunData) -> Markup:
    """Every attempt on one time axis, a row per request: a bar while it was out (its
    outcome's colour; in doubt hatched), the waits between as gaps, retries numbered, and
    what operators did by hand as a mark on the row of the request they acted on."""
    attempts = list(data.attempts)
    if not attempts:
        return Markup('<p class="empty">No attempt yet.</p>')
    rows = _row_keys(data)
    start = min(a.started_at for a in attempts)
    end = max([a.finished_at or time.time() for a in attempts] + [act.at for act in data.actions])
    span = max(end - start, 1e-3)
    label_w, plot_w, row_h = 200, 640, 22
    total_h = 30 + len(rows) * row_h
    index = {key: i for i, key in enumerate(rows)}
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" '
        f'height="{total_h}" viewBox="0 0 {label_w + plot_w + 20} {total_h}" role="img" '
        'aria-label="timeline of attempts">'
    ]
    for (key, phase), i in index.items():
        y = 10 + i * row_h
        parts.append(
            f'<text class="row-label" x="4" y="{y + 14}">{escape(key)} {escape(phase)}</text>'
        )
    for attempt in attempts:
        row = index.get((attempt.step_id, attempt.phase))
        if row is None:
            continue
        x = label_w + (attempt.started_at - start) / span * plot_w
        finish = attempt.finished_at or time.time()
        w = max(3.0, (finish - attempt.started_at) / span * plot_w)
        y = 10 + row * row_h
        outcome = attempt.outcome or "in-flight"
        doubt = " in-doubt" if attempt.in_doubt else ""
        title = (
            f"{attempt.step_id} {attempt.phase} #{attempt.attempt}: "
            f"{attempt.status if attempt.status is not None else outcome}"
            + (" (in doubt)" if attempt.in_doubt else "")
            + (f" {attempt.error_message}" if attempt.error_message else "")
        )
        parts.append(
            f'<a href="#attempt-{attempt.id}"><rect class="attempt outcome-{escape(outcome)}'
            f'{doubt}" data-step="{escape(attempt.step_id)}" data-phase="{escape(attempt.phase)}"'
            f' data-attempt="{attempt.attempt}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
            f'height="{row_h - 8}"><title>{escape(title)}</title></rect></a>'
        )
        if attempt.attempt > 1:
            parts.append(
                f'<text class="retry" x="{x + w + 2:.1f}" y="{y + 14}">#{attempt.attempt}</text>'
            )
    for act in data.actions:
        row = index.get((act.step_id, act.phase))
        if row is None:
            continue
        x = label_w + (act.at - start) / span * plot_w
        y = 10 + row * row_h
        title = f"{act.action} {act.phase} of {act.step_id} by {act.user}: {act.reason}"
        parts.append(
            f'<g class="operator-action" data-step="{escape(act.step_id)}" '
            f'data-phase="{escape(act.phase)}"><title>{escape(title)}</title>'
            f'<path d="M{x:.1f},{y + 2} l6,8 l-6,8 l-6,-8 z"/></g>'
        )
    parts.append(
        f'<text class="axis" x="{label_w}" y="{total_h - 4}">0</text>'
        f'<text class="axis" x="{label_w + plot_w - 60}" y="{total_h - 4}">'
        f"{escape(duration(span))}</text></svg>"
    )
    return Markup("".join(parts))


def _pretty(body: str | None) -> str:
    if not body:
        return ""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return readable(body)


def _run_context(data: RunData, journal_flag: str) -> dict[str, Any]:
    run = data.run
    shown = data.status
    commands = ""
    if shown in ("stuck", "interrupted"):
        commands = next_commands(
            run.id,
            journal_flag,
            run.next_commands(),
            cleanup=run.cleanup,
            operator=operator_commands(run, data.steps),
        )
    steps = [
        {
            "key": key,
            "phase": phase,
            "item": split_item_key(key)[1] is not None,
            "record": data.steps[(key, phase)],
        }
        for step_id in data.order
        for phase in _PHASES
        for key in (step_id, *(item_keys(step_id, data.steps) or []))
        if (key, phase) in data.steps
    ]
    attempts = [
        {
            "a": a,
            "request_body": _pretty(a.request_body),
            "response_body": _pretty(a.response_body),
            "at": a.started_at - run.created_at,
        }
        for a in data.attempts
    ]
    return {
        "run": run,
        "status": shown,
        "took": _took(run, shown),
        "waiting": shown in _WAITING,
        "owner": f"process {run.owner_pid} on {run.owner_host}" if run.owner_host else "none",
        "inputs": json.dumps(run.inputs, ensure_ascii=False, indent=2),
        "env_names": sorted(run.env),
        "cause": _cause(data),
        "commands": commands,
        "graph": _graph(data),
        "timeline": _timeline(data),
        "steps": steps,
        "attempts": attempts,
        "actions": data.actions,
        "notifications": data.notifications,
        "saga_text": run.saga_text,
    }


def run_page(
    data: RunData,
    *,
    journal: str,
    journal_flag: str = "",
    redactor: Redactor | None = None,
) -> str:
    """One run, for the dashboard: it follows the run while another process drives it."""
    return _render(
        "run.html",
        redactor,
        journal=journal,
        live=data.status in ("running", "compensating"),
        r=_run_context(data, journal_flag),
    )


def report_page(
    runs: Sequence[RunData],
    *,
    journal_flag: str = "",
    redactor: Redactor | None = None,
) -> str:
    """Runs in one self-contained file (style inline, no script, no reference to anything
    outside it), for CI artifacts."""
    return _render(
        "report.html",
        redactor,
        css=Markup(static_text("app.css")),
        runs=[_run_context(data, journal_flag) for data in runs],
        generated=time.time(),
    )
