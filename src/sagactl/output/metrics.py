"""`sagactl metrics`: OpenMetrics text from the journal (SPEC §6), for a Prometheus textfile
collector or a scrape: runs by saga and status, run and attempt durations, retries, steps in
doubt, stuck runs and how long the oldest has waited."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sagactl.records import Statistics

__all__ = ["BOUNDS", "format_metrics"]

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Bucket bounds of the duration histograms, in seconds."""

_WAITING = ("stuck", "interrupted")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _histogram(
    name: str, labels: dict[str, str], below: Sequence[int], count: int, total: float
) -> Iterable[str]:
    for bound, n in zip(BOUNDS, below, strict=True):
        yield f"{name}_bucket{_labels(**labels, le=repr(bound))} {n}"
    yield f"{name}_bucket{_labels(**labels, le='+Inf')} {count}"
    yield f"{name}_count{_labels(**labels)} {count}"
    yield f"{name}_sum{_labels(**labels)} {_number(total)}"


def format_metrics(stats: Statistics, now: float | None = None) -> str:
    """The metrics of `stats` (gathered with `BOUNDS`), in OpenMetrics text."""
    now = time.time() if now is None else now
    lines: list[str] = []
    counts: dict[tuple[str, str], int] = defaultdict(int)
    durations: dict[str, list[float]] = defaultdict(list)
    waiting: dict[str, list[float]] = defaultdict(list)
    for saga, status, created, changed, finished in stats.runs:
        counts[(saga, status)] += 1
        if finished is not None:
            durations[saga].append(max(0.0, finished - created))
        if status in _WAITING:
            waiting[saga].append(max(0.0, now - changed))

    lines += [
        "# TYPE sagactl_runs gauge",
        "# HELP sagactl_runs Runs in the journal, by saga and status (interrupted: running or "
        "compensating, its process gone).",
    ]
    lines += [
        f"sagactl_runs{_labels(saga=s, status=t)} {n}" for (s, t), n in sorted(counts.items())
    ]

    lines += [
        "# TYPE sagactl_run_duration_seconds histogram",
        "# HELP sagactl_run_duration_seconds How long runs that ended took, start to end.",
        "# UNIT sagactl_run_duration_seconds seconds",
    ]
    for saga, values in sorted(durations.items()):
        below = [sum(1 for v in values if v <= bound) for bound in BOUNDS]
        lines += _histogram(
            "sagactl_run_duration_seconds", {"saga": saga}, below, len(values), sum(values)
        )

    lines += [
        "# TYPE sagactl_attempt_duration_seconds histogram",
        "# HELP sagactl_attempt_duration_seconds How long each attempt of a request took, by "
        "saga and phase (action, compensate, confirm, verify).",
        "# UNIT sagactl_attempt_duration_seconds seconds",
    ]
    for saga, phase, count, total, below, _ in sorted(stats.attempts):
        labels = {"saga": saga, "phase": phase}
        lines += _histogram(
            "sagactl_attempt_duration_seconds", labels, below, count, round(total, 6)
        )

    lines += [
        "# TYPE sagactl_retries counter",
        "# HELP sagactl_retries Attempts that were not the first of their request.",
    ]
    lines += [
        f"sagactl_retries_total{_labels(saga=saga, phase=phase)} {retries}"
        for saga, phase, _, _, _, retries in sorted(stats.attempts)
    ]

    lines += [
        "# TYPE sagactl_steps_in_doubt gauge",
        "# HELP sagactl_steps_in_doubt Steps (and items) whose action may have taken effect "
        "without an answer, by saga.",
    ]
    lines += [
        f"sagactl_steps_in_doubt{_labels(saga=s)} {n}" for s, n in sorted(stats.in_doubt.items())
    ]

    lines += [
        "# TYPE sagactl_waiting_runs gauge",
        "# HELP sagactl_waiting_runs Runs that wait on someone (stuck or interrupted), by saga.",
    ]
    lines += [f"sagactl_waiting_runs{_labels(saga=s)} {len(v)}" for s, v in sorted(waiting.items())]
    lines += [
        "# TYPE sagactl_oldest_waiting_run_age_seconds gauge",
        "# HELP sagactl_oldest_waiting_run_age_seconds How long the run waiting longest has "
        "waited, since it last changed.",
        "# UNIT sagactl_oldest_waiting_run_age_seconds seconds",
        "sagactl_oldest_waiting_run_age_seconds "
        + _number(round(max((a for v in waiting.values() for a in v), default=0.0), 3)),
        "# EOF",
    ]
    return "\n".join(lines) + "\n"
