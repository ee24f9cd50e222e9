"""What the engine reports while it works. Renderers decide how events look; the engine never
prints.

Events are never changed once emitted. They are plain dataclasses with slots rather than
frozen ones only because several are built for every attempt, and a frozen dataclass costs
five times as much to build."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "Event",
    "ItemsStarted",
    "PhaseStarted",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "StepFinished",
]


@dataclass(slots=True)
class RunStarted:
    run_id: str
    saga: str
    journal: str
    resumed: bool = False
    compensating: bool = False
    """Driven by `compensate`: the run is being rolled back on request."""
    cleanup: bool = False
    """The run succeeded and is being undone by `run --cleanup` (or a resume of that)."""
    steps: tuple[str, ...] = ()
    """The saga's step ids, in file order."""


@dataclass(slots=True)
class PhaseStarted:
    """The run turned to `forward`, `confirm` or `compensate`."""

    phase: str
    reason: str = ""


@dataclass(slots=True)
class AttemptStarted:
    step: str
    phase: str
    attempt: int
    attempts: int
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    """As sent, with secrets and credentials masked."""
    body: str | None = None
    """As sent, masked, at most 2 KiB."""
    item: int | None = None
    """For an item of a foreach step, its index (`step` is then its key: `lines[2]`)."""


@dataclass(slots=True)
class AttemptFinished:
    step: str
    phase: str
    attempt: int
    outcome: str
    status: int | None
    error: str | None
    duration_ms: float
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    """Masked, at most 2 KiB."""
    in_doubt: bool = False
    """The request may have reached the service, and no answer was read."""
    item: int | None = None
    """For an item of a foreach step, its index (`step` is then its key: `lines[2]`)."""


@dataclass(slots=True)
class RetryScheduled:
    """A retry of `step` will be sent in `wait_s` seconds, as attempt `attempt`; with `poll`,
    the next poll (the request answered, not ready yet: `poll` answers so far)."""

    step: str
    phase: str
    attempt: int
    wait_s: float
    poll: int = 0
    item: int | None = None
    """For an item of a foreach step, its index (`step` is then its key: `lines[2]`)."""


@dataclass(slots=True)
class ItemsStarted:
    """A foreach step (SPEC §2.5) starts `phase` for `count` of its `total` items: all of them
    going forward, those that took effect when compensating; events of each item follow, its
    key (`lines[2]`) as their step."""

    step: str
    phase: str
    count: int
    total: int


@dataclass(slots=True)
class StepFinished:
    step: str
    phase: str
    state: str
    error: str | None = None
    where: str = ""
    """`FILE:LINE` of the request in the saga file."""
    request: str | None = None
    """`METHOD URL` of the last attempt, when one was sent."""
    response: str | None = None
    """The start of the last response's body, when there was one."""
    item: int | None = None
    """For an item of a foreach step, its index (`step` is then its key: `lines[2]`)."""
    verdict: str | None = None
    """For a verify (SPEC §2.6) that settled the action's doubt: `applied` or `absent`."""


@dataclass(slots=True)
class RunFinished:
    run_id: str
    status: str
    error: str | None
    duration_s: float
    step: str | None = None
    """The step whose failure `error` names, when it names one."""
    phase: str | None = None
    """And which of its requests: `action`, `compensate` or `confirm`."""
    next: tuple[str, ...] = ()
    """For a stuck run, the commands that can carry it on, in the order to try them:
    `resume`, and `compensate` unless a pivot forbids rolling back."""
    operator: tuple[tuple[str, str, str], ...] = ()
    """For a stuck run, the operator actions that may help (SPEC §7), as (command, step,
    phase): `skip` of a request that keeps failing, `mark` of an action in doubt."""


Event = (
    RunStarted
    | PhaseStarted
    | AttemptStarted
    | AttemptFinished
    | RetryScheduled
    | ItemsStarted
    | StepFinished
    | RunFinished
)
