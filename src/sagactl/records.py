"""What the journal holds, as values every layer may name: run and step states, the records a
journal returns, and who owns a run. Nothing here does IO or knows how a journal stores them."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "AttemptHandle",
    "AttemptRecord",
    "Notification",
    "OperatorAction",
    "Owner",
    "RunPhase",
    "RunRecord",
    "RunStatus",
    "Statistics",
    "StepRecord",
    "StepState",
    "item_key",
    "operator_commands",
    "split_item_key",
]


def item_key(step_id: str, index: int) -> str:
    """What names one item of a foreach step (SPEC §2.5) wherever a step id would: in the
    journal, in its idempotency key (`<run>.lines[2].action`), in events and output."""
    return f"{step_id}[{index}]"


_ITEM_KEY = re.compile(r"^(?P<step>[a-z][a-z0-9_]*)\[(?P<index>[0-9]+)\]$")


def split_item_key(key: str) -> tuple[str, int | None]:
    """The step id and item index of `key` (`lines[2]` → `("lines", 2)`); a plain step id
    has no index (`("lines", None)`)."""
    match = _ITEM_KEY.match(key) if key.endswith("]") else None
    if match is None:
        return key, None
    return match["step"], int(match["index"])


class RunStatus(StrEnum):
    """Where a run stands (SPEC §3.2, §8); `succeeded`, `compensated` and `cleaned` are final.
    `cleaned`: the run succeeded, then `--cleanup` undid every step (a smoke test that
    passed)."""

    QUEUED = "queued"
    """Journaled by `submit`, nothing sent: a worker claims it (SPEC §8)."""
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    COMPENSATED = "compensated"
    CLEANED = "cleaned"
    STUCK = "stuck"

    @property
    def final(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED, RunStatus.CLEANED)


class RunPhase(StrEnum):
    """What a run is doing: its actions (`forward`), its confirms once every action succeeded,
    or its compensations. The calls each sends are of the step phase (`model.Phase`) of the
    same name, `action` for `forward`."""

    FORWARD = "forward"
    CONFIRM = "confirm"
    COMPENSATE = "compensate"


class StepState(StrEnum):
    """Where one phase of one step stands: `in_doubt` when one of its attempts may have
    reached the service and none succeeded (SPEC §3.1)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"


class Owner(NamedTuple):
    """A process that drives runs: the host it runs on and its process id. A run's lease names
    its owner; only the owner writes the run's attempts."""

    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    saga_path: str
    saga_text: str
    saga_hash: str
    inputs: dict[str, Any]
    env: dict[str, Any]
    """The env values read, by name; one that held a secret is `{"withheld": …}`."""
    status: RunStatus
    phase: RunPhase
    """What the run was doing."""
    pivot_passed: bool
    """A pivot succeeded, or may have (in doubt, or accepted and then failing a check): the
    run can only go forward. Journaled when the run goes stuck so."""
    trace_id: str
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    owner_host: str | None
    owner_pid: int | None
    lease_expires: float | None
    step_ids: tuple[str, ...] | None = None
    """The saga's step ids in file order; None for runs journaled with schema version 1."""
    cleanup: bool = False
    """The run succeeded and is being (or was) undone by `--cleanup`: its compensation ends
    `cleaned`, not `compensated`, and is no failure."""

    def next_commands(self) -> tuple[str, ...]:
        """The commands that can carry the run on once it is stuck or interrupted, in the
        order to try them: `resume` alone once a pivot forbids rolling back
        (`pivot_passed`); `compensate` alone for a run that was compensating (either command
        would go on compensating); else both. None for a run that ended."""
        if self.status.final:
            return ()
        if self.pivot_passed:
            return ("resume",)
        if self.phase is RunPhase.COMPENSATE:
            return ("compensate",)
        return ("resume", "compensate")


@dataclass(slots=True)
class StepRecord:
    step_id: str
    phase: str
    state: StepState
    applied: bool
    """Whether the request may have taken effect: succeeded, in doubt, or answered with an
    accepted status and then failed a check."""
    outputs: dict[str, Any]
    attempts: int
    status: int | None
    error: str | None
    updated_at: float
    items: list[Any] | dict[str, Any] | None = None
    """For the action of a foreach step (SPEC §2.5): its list of items, journaled before any
    item is sent (`{"withheld": …, "count": N}` when the list held a secret); None
    otherwise. Each item's own requests are recorded under its key (`lines[2]`)."""


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    step_id: str
    phase: str
    attempt: int
    span_id: str
    started_at: float
    finished_at: float | None
    duration_ms: float | None
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str | None
    outcome: str | None
    """`success`, `retryable`, `failure`, `pending` (a poll answered, not done yet),
    `interrupted` (`in_doubt` in journals of sagactl 0.1's first schemas); None while in
    flight."""
    status: int | None
    error_class: str | None
    error_message: str | None
    response_headers: dict[str, str] | None
    response_body: str | None
    in_doubt: bool = False
    """The request may have reached the service, and no answer was read."""


@dataclass(frozen=True)
class OperatorAction:
    """What an operator did to a run by hand (SPEC §7), as journaled: `skip` (a step's
    pending request treated as done without being sent) or `mark` (an action in doubt
    settled as `applied` or `absent`)."""

    id: int
    run_id: str
    step_id: str
    """The step, or an item of a foreach step (`lines[2]`)."""
    phase: str
    """The request acted on: `action`, `compensate` or `confirm`."""
    action: str
    """`skip`, `mark applied` or `mark absent`."""
    user: str
    host: str
    at: float
    reason: str


@dataclass(frozen=True)
class Notification:
    """A run's end told to someone (SPEC §6), as journaled: where (masked), when, whether
    it was delivered, and what came of it."""

    id: int
    run_id: str
    target: str
    """The URL posted to, or the command run."""
    at: float
    delivered: bool
    detail: str
    """What came back: `status 200 after 3 attempts`, `exit code 1: …`."""


@dataclass(frozen=True)
class Statistics:
    """What `sagactl metrics` reports of a journal (SPEC §6), gathered by the journal."""

    runs: list[tuple[str, str, float, float, float | None]]
    """(saga, status as users see it, created, last changed, finished) of every run."""
    attempts: list[tuple[str, str, int, float, list[int], int]]
    """(saga, phase, attempts, their seconds in all, how many took at most each bound, how
    many were retries: not the first of their request)."""
    in_doubt: dict[str, int]
    """By saga, the steps (and items) whose action is in doubt."""


class AttemptHandle(NamedTuple):
    """An attempt begun and not yet finished: its row, and the step it belongs to."""

    id: int
    run_id: str
    step_id: str
    phase: str


def operator_commands(
    run: RunRecord, steps: Mapping[tuple[str, str], StepRecord]
) -> list[tuple[str, str, str]]:
    """The operator actions (SPEC §7) that may carry a stuck or interrupted run on, as
    (command, step, phase of the request acted on): `skip` of each compensation or confirm
    that failed (for the run's phase), or of each action that failed once a pivot forbids
    rolling back; `mark` of each action in doubt going forward. Of a foreach step, its items
    are named, not the step."""
    if run.status.final:
        return []
    phase = {
        RunPhase.COMPENSATE: "compensate",
        RunPhase.CONFIRM: "confirm",
        RunPhase.FORWARD: "action",
    }[run.phase]
    parents = {split_item_key(key)[0] for key, _ in steps if split_item_key(key)[1] is not None}
    found: list[tuple[str, str, str]] = []
    for (key, record_phase), record in sorted(steps.items()):
        if record_phase != phase or key in parents:
            continue
        if phase == "action" and record.state is StepState.IN_DOUBT:
            found.append(("mark", key, phase))
        elif record.state in (StepState.FAILED, StepState.IN_DOUBT) and (
            phase != "action" or run.pivot_passed
        ):
            found.append(("skip", key, phase))
    return found
