"""A foreach step's state, gathered from its items' (SPEC §2.5): each item is journaled,
retried and compensated on its own, under its key (`lines[2]`); the step is what its items
add up to. Derived from the items' records every time, so that it is right after a crash
whatever the step's own row last said."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sagactl.model import Phase
from sagactl.records import StepRecord, StepState, item_key

__all__ = ["WITHHELD_ITEMS", "applied_items", "gather", "item_count", "took_effect"]

WITHHELD_ITEMS = "held a secret"
"""What the journal keeps, with their count, in place of items that held a secret."""


def took_effect(record: StepRecord | None) -> bool:
    """Whether an action may have taken effect: succeeded, in doubt, or accepted."""
    return record is not None and (
        record.applied or record.state in (StepState.SUCCEEDED, StepState.IN_DOUBT)
    )


def item_count(record: StepRecord | None) -> int | None:
    """How many items the journal says a foreach step has: its list's length, or the count
    kept in place of a list that held a secret; None before the list was journaled."""
    if record is None or record.items is None:
        return None
    if isinstance(record.items, list):
        return len(record.items)
    return int(record.items.get("count", 0))


def applied_items(
    step_id: str, count: int, states: Mapping[tuple[str, str], StepRecord]
) -> list[int]:
    """The items whose action may have taken effect: those a compensation undoes."""
    return [
        i for i in range(count) if took_effect(states.get((item_key(step_id, i), Phase.ACTION)))
    ]


def gather(
    step_id: str,
    phase: Phase,
    count: int,
    states: Mapping[tuple[str, str], StepRecord],
    outputs: Mapping[str, Any] | None = None,
) -> tuple[StepRecord | None, str | None]:
    """The state of `phase` of a foreach step of `count` items, from the items' records in
    `states`; and the key of the item its error comes from. None when none of the items
    concerned has a record yet (none of them started), and for a compensation when no item
    is concerned yet.

    The items concerned are every item, but for a compensation those that may have taken
    effect. The step failed (or is in doubt) as soon as one item did, the first in item
    order naming why; it succeeded when every item did (there may be none); else it is
    running. Going forward it may have taken effect when any item may have; its outputs are
    `outputs` (the lists of its items'), given by the caller once it succeeded."""
    indexes = applied_items(step_id, count, states) if phase is Phase.COMPENSATE else range(count)
    records = [(item_key(step_id, i), states.get((item_key(step_id, i), phase))) for i in indexes]
    started = [(key, record) for key, record in records if record is not None]
    if not started and (records or phase is Phase.COMPENSATE):
        # None of them started: the phase has not begun. (A compensation with nothing to
        # undo yet has not either: items may still take effect before it runs.)
        return None, None
    state = StepState.RUNNING
    cause: tuple[str, StepRecord] | None = None
    for wanted in (StepState.FAILED, StepState.IN_DOUBT):
        cause = next(((k, r) for k, r in started if r.state is wanted), None)
        if cause is not None:
            state = wanted
            break
    else:
        if len(started) == len(records) and all(r.state is StepState.SUCCEEDED for _, r in started):
            state = StepState.SUCCEEDED
    applied = phase is Phase.ACTION and any(took_effect(r) for _, r in started)
    record = StepRecord(
        step_id,
        phase.value,
        state,
        applied,
        dict(outputs or {}) if state is StepState.SUCCEEDED else {},
        sum(r.attempts for _, r in started),
        None,
        f"{cause[0]}: {cause[1].error}" if cause is not None else None,
        time.time(),
    )
    return record, cause[0] if cause is not None else None
