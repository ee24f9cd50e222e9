"""Operator actions (SPEC §7): what an operator may do by hand to a run that is stuck, or
whose owner is gone — `skip` a step's pending request (done by hand) or `mark` an action in
doubt as `applied` or `absent` (checked in the service) — and what each does to the journal.
A refusal says which states the action applies to."""

from __future__ import annotations

from dataclasses import dataclass

from sagactl.engine.items import item_count, took_effect
from sagactl.errors import UsageError
from sagactl.model import Phase, Saga, Step, StepKind
from sagactl.records import RunPhase, RunRecord, StepRecord, StepState, split_item_key

__all__ = ["Operation", "mark", "skip"]


@dataclass(frozen=True)
class Operation:
    """A state to give one request of a step (or item), and how the journal tells of it."""

    step_id: str
    phase: Phase
    action: str
    """`skip`, `mark applied` or `mark absent`."""
    state: StepState
    applied: bool
    settled: bool = False
    """The action's attempts so far no longer make it in doubt."""
    pivot: bool | None = None
    """What it says of the run's pivots: True, a pivot marked applied (the run can only go
    forward from now on); False, the only pivot that held the run marked absent (it may be
    rolled back again); None, nothing."""

    def describe(self) -> str:
        """What was done, in words: `skipped the compensation of b`."""
        what = {
            Phase.ACTION: "action",
            Phase.COMPENSATE: "compensation",
            Phase.CONFIRM: "confirm",
            Phase.VERIFY: "verify",
        }[self.phase]
        if self.action == "skip":
            return f"skipped the {what} of {self.step_id}: it counts as done"
        verdict = self.action.removeprefix("mark ")
        meaning = "it took effect" if verdict == "applied" else "it never took effect"
        return f"marked the action of {self.step_id} {verdict}: {meaning}"


def _step(saga: Saga, key: str, steps: dict[tuple[str, str], StepRecord]) -> Step:
    """The step `key` names (or whose item it names); UsageError when there is none, or when
    it names a foreach step whose items must be named one by one, or an item it has not."""
    step_id, index = split_item_key(key)
    try:
        step = saga.step(step_id)
    except KeyError:
        known = ", ".join(s.id for s in saga.steps)
        raise UsageError(f"saga {saga.name} has no step {step_id!r} (its steps: {known})") from None
    if step.repeated and index is None:
        raise UsageError(
            f"step {step_id} runs once per item: name the item, as {step_id}[0], "
            f"{step_id}[1]… (sagactl show lists them)"
        )
    if index is not None and not step.repeated:
        raise UsageError(f"step {step_id} is not a foreach step: name it {step_id}")
    if index is not None:
        count = item_count(steps.get((step_id, Phase.ACTION.value))) or 0
        if index >= count:
            have = f"{step_id}[0] to {step_id}[{count - 1}]" if count else "none yet"
            raise UsageError(f"step {step_id} has no item {index} (its items: {have})")
    return step


def _refuse_ended(run: RunRecord, what: str) -> None:
    if run.status.final:
        raise UsageError(
            f"run {run.id} {run.status.value}: {what} applies to a run that is stuck or "
            "interrupted, not to one that ended"
        )


_PHASES = {
    RunPhase.FORWARD: Phase.ACTION,
    RunPhase.CONFIRM: Phase.CONFIRM,
    RunPhase.COMPENSATE: Phase.COMPENSATE,
}
_NAMES = {Phase.ACTION: "action", Phase.CONFIRM: "confirm", Phase.COMPENSATE: "compensation"}
_DOING = {
    Phase.ACTION: "going forward",
    Phase.CONFIRM: "confirming",
    Phase.COMPENSATE: "compensating",
}


def skip(
    saga: Saga, run: RunRecord, steps: dict[tuple[str, str], StepRecord], key: str
) -> Operation:
    """Treat the pending request of `key` in the run's phase as done without sending it: a
    compensation while compensating (of an action that may have taken effect), a confirm
    while confirming, an action going forward."""
    _refuse_ended(run, "skip")
    step = _step(saga, key, steps)
    phase = _PHASES[run.phase]
    if phase is Phase.ACTION and not run.pivot_passed:
        raise UsageError(
            f"run {run.id} can still be rolled back: skip applies to an action once a pivot "
            f"forbids that (sagactl compensate {run.id} undoes what took effect)"
        )
    name = _NAMES[phase]
    if step.request(phase) is None:
        raise UsageError(
            f"run {run.id} is {_DOING[phase]}, and step {step.id} has no {name} to skip"
        )
    record = steps.get((key, phase.value))
    if record is not None and record.state is StepState.SUCCEEDED:
        raise UsageError(f"the {name} of {key} succeeded already: there is nothing to skip")
    if phase is Phase.COMPENSATE and not took_effect(steps.get((key, Phase.ACTION.value))):
        raise UsageError(
            f"the action of {key} never took effect: it has nothing to undo, so no "
            "compensation to skip"
        )
    return Operation(key, phase, "skip", StepState.SUCCEEDED, True)


def mark(
    saga: Saga,
    run: RunRecord,
    steps: dict[tuple[str, str], StepRecord],
    key: str,
    verdict: str,
) -> Operation:
    """Settle the action of `key`, in doubt, as `applied` (it succeeded: the run goes on
    from it, without its outputs) or `absent` (it never took effect: sent again going
    forward, not compensated going back)."""
    _refuse_ended(run, "mark")
    step = _step(saga, key, steps)
    record = steps.get((key, Phase.ACTION.value))
    if record is None or record.state is not StepState.IN_DOUBT:
        state = "never sent" if record is None else record.state.value.replace("_", " ")
        raise UsageError(
            f"mark settles an action in doubt, and the action of {key} is {state}: "
            + (
                "use skip for a request that fails"
                if record is not None and record.state is StepState.FAILED
                else "there is no doubt to settle"
            )
        )
    pivot = step.kind is StepKind.PIVOT
    if verdict == "applied":
        return Operation(
            key, Phase.ACTION, "mark applied", StepState.SUCCEEDED, True, pivot=pivot or None
        )
    pivots = {s.id for s in saga.steps if s.kind is StepKind.PIVOT}
    others = any(
        took_effect(record)
        for (other, phase), record in steps.items()
        if phase == Phase.ACTION.value and other != key and split_item_key(other)[0] in pivots
    )
    return Operation(
        key,
        Phase.ACTION,
        "mark absent",
        StepState.RUNNING,
        False,
        settled=True,
        pivot=False if pivot and not others else None,
    )
