"""What the engine reports while it works. Renderers decide how events look; the engine never
prints."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AttemptFinished", "AttemptStarted", "Event", "PhaseStarted", "RunFinished",
           "RunStarted", "StepFinished"]


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    saga: str
    journal: str
    resumed: bool = False


@dataclass(frozen=True)
class PhaseStarted:
    """The run turned to `forward`, `confirm` or `compensate`."""

    phase: str
    reason: str = ""


@dataclass(frozen=True)
class AttemptStarted:
    step: str
    phase: str
    attempt: int
    attempts: int
    method: str
    url: str


@dataclass(frozen=True)
class AttemptFinished:
    step: str
    phase: str
    attempt: int
    outcome: str
    status: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True)
class StepFinished:
    step: str
    phase: str
    state: str
    error: str | None = None


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: str
    error: str | None
    duration_s: float


Event = RunStarted | PhaseStarted | AttemptStarted | AttemptFinished | StepFinished | RunFinished
