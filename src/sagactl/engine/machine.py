"""The saga state machine: forward, confirm, compensate, resume (SPEC §3).

The engine's next move always comes from the journal: what succeeded, what failed, what is in
doubt. It writes each attempt before sending it and its result after, emits events instead of
printing, and takes every side effect (executors, journal, sleep, clock) as a parameter. It
knows no kind of step: each call goes to the executor of its kind (`sagactl.executors`).

Steps run on a pool of threads: on this kind of workload (a few to a few dozen requests in
flight to local or nearby services) threads with httpx's sync client beat asyncio's client,
whose per-request overhead is higher and which degrades under concurrency.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sagactl.definition.graph import nearest
from sagactl.definition.scope import foreach_items, run_context, step_scope
from sagactl.definition.templating import Outputs, Renderer, TemplateProblem
from sagactl.engine.attempts import Doubt, body_hint, clip, shown_value, step_error
from sagactl.engine.items import WITHHELD_ITEMS, applied_items, gather, item_count
from sagactl.engine.retry import next_wait
from sagactl.engine.runs import WITHHELD, WITHHELD_BODY
from sagactl.engine.scheduler import schedule
from sagactl.engine.stopping import StopSignal
from sagactl.errors import (
    Interrupted,
    JournalError,
    LeaseLost,
    RenderError,
    SagactlError,
    UsageError,
)
from sagactl.events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    ItemsStarted,
    PhaseStarted,
    RetryScheduled,
    RunFinished,
    RunStarted,
    StepFinished,
)
from sagactl.executors.base import (
    AttemptContext,
    AttemptResult,
    Executor,
    Outcome,
    Prepared,
    ResponseView,
)
from sagactl.ids import new_span_id
from sagactl.journal.contract import Journal
from sagactl.model import (
    Item,
    Phase,
    Poll,
    Saga,
    Step,
    StepKind,
    format_duration,
)
from sagactl.records import (
    Owner,
    RunPhase,
    RunRecord,
    RunStatus,
    StepRecord,
    StepState,
    item_key,
    operator_commands,
    split_item_key,
)
from sagactl.redact import Redactor

__all__ = ["Engine"]


@dataclass
class _Result:
    state: StepState
    applied: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    key: str | None = None
    """For a foreach step, the item the error comes from (`lines[2]`)."""


class Engine:
    """Drives one run to its end, or to `stuck`, from whatever the journal says."""

    def __init__(
        self,
        saga: Saga,
        run: RunRecord,
        *,
        journal: Journal,
        executors: Mapping[str, Executor],
        secrets: Mapping[str, str],
        on_event: Callable[[Event], None] = lambda event: None,
        concurrency: int = 8,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        lease_ttl: float = 30.0,
        renderer: Renderer | None = None,
        context: Mapping[str, Any] | None = None,
        prepared: Mapping[tuple[str, Phase], Prepared] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.saga = saga
        self.run_id = run.id
        self.journal = journal
        self.executors = executors
        """The executor of each kind of step, by kind."""
        missing = sorted(
            {
                call.kind
                for step in saga.steps
                for phase in Phase
                if (call := step.request(phase)) is not None
            }
            - set(executors)
        )
        if missing:
            raise UsageError(
                f"steps of kind {', '.join(repr(k) for k in missing)} cannot be "
                "run here: there is no executor for them"
            )
        self.emit = on_event
        self.concurrency = max(1, concurrency)
        self.stop = stop or threading.Event()
        self.sleep = sleep or self._wait
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.redactor = redactor if redactor is not None else Redactor()
        """The one redactor of this process's sinks: it learns every secret value the run
        meets (SPEC §4) before anything holding it is journaled or emitted."""
        self.redactor.add(list(secrets.values()), derived=False)
        self.renderer = renderer or Renderer(on_secret=self.redactor.add)
        self.trace_id = run.trace_id
        self.owner = Owner.this_process()
        self.context = (
            dict(context)
            if context is not None
            else run_context(
                saga,
                run_id=run.id,
                inputs=run.inputs,
                env=run.env,
                secrets=secrets,
                renderer=self.renderer,
            )
        )
        self.prepared = dict(prepared or {})
        """Requests that depend on no step's outputs, prepared before the run started."""
        self.states: dict[tuple[str, str], StepRecord] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        """The outputs of the steps whose action succeeded, as templates read them:
        `{"reserve": {"outputs": {...}}}`."""
        self.items: dict[str, list[Any]] = {}
        """The items of each foreach step whose list is known, by step id."""
        self._rows: dict[tuple[str, str], tuple[StepState, bool]] = {}
        """What the journal's rows of foreach steps say (state, applied), as last read or
        written: those behind their items' are written once the run stops."""
        self.item_counts: dict[str, int] = {}
        """How many items the journal says each foreach step has, once its list was
        journaled: a list that held a secret is journaled only so."""
        self.item_outputs: dict[str, dict[str, Any]] = {}
        """The outputs of each item whose action succeeded, by item key (`lines[2]`)."""
        self._verdicts: dict[str, str] = {}
        """What each verify just settled (`applied`, `absent`), by key, for `_settle`."""
        self._unlisted: dict[tuple[str, Phase], _Result] = {}
        """Foreach steps whose list could not be made, and why."""
        self.withheld: set[str] = set()
        """Outputs of earlier processes that held a secret and were not journaled."""
        self._started = clock()
        self._cause: tuple[str, str] | None = None
        """The step and phase the run's error names."""
        self._cleanup = False
        """The run's compensation is the cleanup of a run that succeeded."""
        self._pivot_journaled = run.pivot_passed
        """Whether the journal says a pivot forbids rolling back (`RunRecord.pivot_passed`)."""
        self._deadline: float | None = None
        if saga.timeout is not None:
            self._deadline = clock() + saga.timeout - (time.time() - run.created_at)

    # --- entry points -------------------------------------------------------------------------

    def resume(self) -> RunStatus:
        """Carry the run on from where the journal says it stopped."""
        return self._drive(compensate=False)

    def start(self) -> RunStatus:
        """Drive a run this process has just created (and holds the lease of): there is
        nothing to take over or settle, which saves journal commits."""
        return self._drive(compensate=False, fresh=True)

    def compensate(self, *, allow_succeeded: bool = False, cleanup: bool = False) -> RunStatus:
        """Roll the run back: every step whose action may have taken effect is compensated.
        With `cleanup`, the run succeeded and is undone as the end of a smoke test: it ends
        `cleaned` (journaled with the run, so a resume of it ends so too)."""
        return self._drive(compensate=True, allow_succeeded=allow_succeeded, cleanup=cleanup)

    def _drive(
        self,
        *,
        compensate: bool,
        allow_succeeded: bool = False,
        fresh: bool = False,
        cleanup: bool = False,
    ) -> RunStatus:
        run = self.journal.get_run(self.run_id)
        self._cleanup = run.cleanup or (cleanup and run.status is RunStatus.SUCCEEDED)
        if not fresh:
            self.journal.take_lease(self.run_id, self.owner, self.lease_ttl)
        self._renewed = time.monotonic()
        self.journal.drive(self.run_id, self.owner)
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True)
        done = threading.Event()
        self._done = done
        heartbeat.start()
        try:
            if not fresh:
                # Attempts left without a result by a killed process may have reached the
                # service.
                self.journal.settle_interrupted(self.run_id)
                self._load_states()
            if compensate:
                self._refuse_compensation(run, allow_succeeded)
            self.emit(
                RunStarted(
                    self.run_id,
                    self.saga.name,
                    self.journal.location,
                    resumed=bool(self.states),
                    compensating=compensate,
                    cleanup=self._cleanup,
                    steps=tuple(step.id for step in self.saga.steps),
                )
            )
            if run.status is RunStatus.STUCK and not compensate:
                self.journal.set_run(
                    self.run_id,
                    status=RunStatus.COMPENSATING
                    if run.phase == RunPhase.COMPENSATE
                    else RunStatus.RUNNING,
                    error=run.error,
                )
            if compensate:
                status = self._compensate_command(run)
            elif run.status.final:
                status = run.status
            elif run.phase == RunPhase.COMPENSATE:
                status = self._compensate()
            elif run.phase == RunPhase.CONFIRM:
                status = self._confirm()
            else:
                status = self._forward()
            if status is RunStatus.STUCK and self._pivot_block():
                # A pivot that blocked already in an earlier process, or in a journal of an
                # older sagactl: `show` and the operator's commands must know it too.
                self._journal_pivot()
            self._journal_step_rows()
        except Interrupted as exc:
            self.journal.settle_interrupted(self.run_id)
            raise Interrupted(self.run_id, exc.exit_code) from None
        except LeaseLost:
            raise
        except JournalError as exc:
            # The journal stopped taking writes (a full disk, say): nothing more is sent, and
            # what was journaled stays, so the run can be carried on once it is writable.
            raise JournalError(str(exc), run_id=self.run_id) from None
        finally:
            done.set()
            # When the journal cannot be written, the lease cannot be released either: it
            # lapses, and a later resume takes over from this (then dead) process.
            self.journal.undrive(self.run_id)
            with contextlib.suppress(JournalError):
                self.journal.release_lease(self.run_id, self.owner)
        final = self.journal.get_run(self.run_id)
        step, phase = self._cause or (None, None)
        commands = final.next_commands() if status is RunStatus.STUCK else ()
        operator = (
            tuple(operator_commands(final, self.journal.steps(self.run_id)))
            if status is RunStatus.STUCK
            else ()
        )
        self.emit(
            RunFinished(
                self.run_id,
                status.value,
                final.error,
                round(self.clock() - self._started, 3),  # to the millisecond, as shown
                step,
                phase,
                commands,
                operator,
            )
        )
        return status

    def _wait(self, seconds: float) -> None:
        """Backoff that a signal cuts short."""
        self.stop.wait(seconds)

    def _heartbeat(self) -> None:
        while not self._done.wait(self.lease_ttl / 3):
            # A failed renewal is retried at the next beat, or by the next attempt.
            with contextlib.suppress(SagactlError):
                if self.journal.renew_lease(self.run_id, self.owner, self.lease_ttl):
                    self._renewed = time.monotonic()

    def _hold_lease(self) -> None:
        """Before an attempt: make sure this process still drives the run. The heartbeat
        renews the lease every third of its time to live; when it has not for longer (this
        process was stalled, or the journal was busy), the lease may have lapsed and been
        taken, so it is renewed here, or this process stops."""
        if time.monotonic() - self._renewed < self.lease_ttl * 2 / 3:
            return
        if not self.journal.renew_lease(self.run_id, self.owner, self.lease_ttl):
            raise LeaseLost(
                f"run {self.run_id} was taken over by another process: this one "
                f"had not renewed its lease within {self.lease_ttl:g}s (was it "
                "stopped?), so it sends nothing more",
                run_id=self.run_id,
            )
        self._renewed = time.monotonic()

    # --- state ---------------------------------------------------------------------------------

    def _journaled_outputs(self, step: Step, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Outputs as the journal keeps them: a secret one, or one that holds a secret, is not
        kept at all (a masked value would be sent as if it were the real one after a
        resume), only marked."""
        return {
            name: WITHHELD
            if name in step.secret_outputs or self.redactor.value(value) != value
            else value
            for name, value in outputs.items()
        }

    def _scope(
        self,
        step: Step,
        phase: Phase,
        item: Item | None,
        response: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What the templates of `phase` of `step` (of one of its items) see."""
        return step_scope(
            self.context, step.id, phase, self._steps_seen(step, phase, item), response, item
        )

    def _steps_seen(self, step: Step, phase: Phase, item: Item | None) -> dict[str, Any]:
        """The outputs `phase` of `step` reads as `steps`: those known so far, but for an
        item's compensation and confirm, whose own step's outputs are the item's."""
        if item is None or phase in (Phase.ACTION, Phase.VERIFY):
            return self.outputs
        own = self.item_outputs.get(item_key(step.id, item.index))
        if own is None:
            return {k: v for k, v in self.outputs.items() if k != step.id}
        return {**self.outputs, step.id: self._readable(step, own)}

    def _read_secrets(
        self, step: Step, result: AttemptResult, item: Item | None = None
    ) -> frozenset[str]:
        """The step's secret outputs that were read from this attempt's answer."""
        if result.outcome is Outcome.SUCCESS:
            return frozenset(result.outputs) & step.secret_outputs
        view = result.response
        if view is None:
            return frozenset()
        scope = self._scope(step, Phase.ACTION, item, view.context())
        read = set()
        for name in step.secret_outputs:
            with contextlib.suppress(TemplateProblem):
                self.redactor.add(self.renderer.render(step.outputs[name], scope), derived=False)
                read.add(name)
        return frozenset(read)

    def _readable(self, step: Step, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """A step's outputs as templates read them: a secret one — declared so, or holding a
        secret (a service's echo) — makes what reads it a secret too."""
        secret = step.secret_outputs
        if self.redactor:
            secret |= {
                name for name, value in outputs.items() if self.redactor.value(value) != value
            }
        return {"outputs": Outputs(outputs, frozenset(secret)) if secret else outputs}

    def _load_states(self) -> None:
        self.states = self.journal.steps(self.run_id)
        by_id = {s.id: s for s in self.saga.steps}
        for (key, phase), record in list(self.states.items()):
            if phase != Phase.ACTION.value or record.state is not StepState.SUCCEEDED:
                continue
            step_id, index = split_item_key(key)
            step = by_id.get(step_id)
            if step is None or step.repeated != (index is not None):
                continue
            kept = {k: v for k, v in record.outputs.items() if v != WITHHELD}
            self.withheld.update(
                f"steps.{step_id}.outputs.{k}" for k in record.outputs if k not in kept
            )
            if index is not None:
                self.item_outputs[key] = kept
            else:
                self.outputs[step_id] = self._readable(step, kept)
        for step in self.saga.steps:
            if step.repeated:
                self._load_items(step)

    def _load_items(self, step: Step) -> None:
        """A foreach step's list, as journaled, and its state in each phase from its items'."""
        record = self.states.pop((step.id, Phase.ACTION.value), None)
        count = item_count(record)
        if count is None:
            return  # its list was never journaled: none of its items was sent
        self.item_counts[step.id] = count
        for phase in Phase:
            row = record if phase is Phase.ACTION else self.states.get((step.id, phase.value))
            if row is not None:
                self._rows[(step.id, phase.value)] = (row.state, row.applied)
        if record is not None and isinstance(record.items, list):
            self.items[step.id] = record.items
        for phase in Phase:
            if step.request(phase) is not None:
                self._gathered(step, phase, count)

    def _journal_step_rows(self) -> None:
        """Write each foreach step's row that is behind its items' (a process died between
        its items' writes and the step's, and this one did not run that phase again): what
        `show` and reports read."""
        for step in self.saga.steps:
            for phase in Phase:
                record = self.states.get((step.id, phase.value)) if step.repeated else None
                if record is None or self._rows.get((step.id, phase.value)) == (
                    record.state,
                    record.applied,
                ):
                    continue
                self._write_row(step, record, self._journaled_outputs(step, record.outputs))

    def _write_row(self, step: Step, record: StepRecord, outputs: Mapping[str, Any]) -> None:
        """Journal a foreach step's own row, as gathered from its items' (`outputs` as the
        journal keeps them)."""
        self.journal.set_step(
            self.run_id,
            step.id,
            record.phase,
            state=record.state,
            applied=record.applied,
            outputs=outputs,
            attempts=record.attempts,
            error=record.error,
        )
        self._rows[(step.id, record.phase)] = (record.state, record.applied)

    def _gathered(
        self, step: Step, phase: Phase, count: int
    ) -> tuple[StepRecord | None, str | None]:
        """A foreach step's state in `phase` from its items' (`engine.items.gather`), kept
        in `states`; once its action succeeded, its outputs are the lists of its items' — but
        an output an item's journal entry withheld (it held a secret) is no list at all, so
        that what reads it is stopped or reads it anew, never sent a hole."""
        lists: dict[str, list[Any]] = {}
        if phase is Phase.ACTION:
            outputs = [self.item_outputs.get(item_key(step.id, i), {}) for i in range(count)]
            lists = {
                name: [one[name] for one in outputs]
                for name in step.outputs
                if all(name in one for one in outputs)
            }
        record, cause = gather(step.id, phase, count, self.states, lists)
        if record is None:
            self.states.pop((step.id, phase.value), None)
            return None, None
        self.states[(step.id, phase.value)] = record
        if phase is Phase.ACTION and record.state is StepState.SUCCEEDED:
            self.outputs[step.id] = self._readable(step, lists)
        return record, cause

    def _state(self, step_id: str, phase: Phase) -> StepState | None:
        record = self.states.get((step_id, phase.value))
        return record.state if record else None

    def _applied(self, step: Step) -> bool:
        """Whether the step's action may have taken effect; a foreach step's, when one of
        its items' may have."""
        record = self.states.get((step.id, Phase.ACTION.value))
        if record is None:
            return False
        if step.repeated:
            return record.applied
        return record.applied or record.state in (StepState.SUCCEEDED, StepState.IN_DOUBT)

    def _pivot_block(self, *, unless_verifiable: bool = False) -> tuple[str, str] | None:
        """(step, why) of a pivot that forbids rolling back: one that succeeded, one whose
        outcome is in doubt, or one that took effect and then failed a check (it may have
        taken effect, and nothing can undo it). With `unless_verifiable`, not one whose only
        doubt its verify may settle."""
        for step in self.saga.steps:
            if step.kind is not StepKind.PIVOT:
                continue
            record = self.states.get((step.id, Phase.ACTION.value))
            if record is None:
                continue
            if unless_verifiable and step.verify is not None and self._only_doubt(step):
                continue
            if step.repeated:
                if not record.applied:
                    continue  # none of its items took effect (there may be none)
                if record.state is not StepState.SUCCEEDED:
                    return step.id, (
                        f"pivot {step.id} took effect, or may have, for some of its items: "
                        "they can be neither compensated nor assumed undone"
                    )
            if record.state is StepState.SUCCEEDED:
                return step.id, f"pivot {step.id} succeeded, so the saga can only go forward"
            if record.state is StepState.IN_DOUBT or (
                record.state is StepState.FAILED and record.applied
            ):
                what = (
                    "is in doubt"
                    if record.state is StepState.IN_DOUBT
                    else "took effect (the service accepted it) but failed its checks"
                )
                return step.id, (
                    f"pivot {step.id} {what}: it can be neither compensated nor assumed undone"
                )
        return None

    def _only_doubt(self, step: Step) -> bool:
        """Whether all that may have taken effect of `step` (of any of its items) is in
        doubt: nothing succeeded, nothing was accepted."""
        keys = (
            [item_key(step.id, i) for i in range(self.item_counts.get(step.id, 0))]
            if step.repeated
            else [step.id]
        )
        for key in keys:
            record = self.states.get((key, Phase.ACTION.value))
            if record is not None and record.state is not StepState.IN_DOUBT and record.applied:
                return False
            if record is not None and record.state is StepState.SUCCEEDED:
                return False
        return True

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted(self.run_id, getattr(self.stop, "exit_code", 130))

    # --- phases --------------------------------------------------------------------------------

    def _reread_withheld(self, phase: Phase) -> str | None:
        """Before `phase` goes on: every output an earlier process did not journal (it held a
        secret) that a request still to be sent in it reads, or the list of a foreach step
        it sends items of, is read anew, by sending its step again — which only a safe step
        may be (SPEC §2.7); then each list of items the journal kept only by its count is
        made again. Returns why the run cannot go on, or None."""
        if not self.withheld:
            return self._remake_lists(phase)
        from sagactl.definition.templating import is_template, references, strings_in

        needed: dict[str, list[str]] = {}
        for step in self.saga.steps:
            request = step.request(phase)
            if (
                request is None
                or self._state(step.id, phase) is StepState.SUCCEEDED
                or (phase is Phase.COMPENSATE and not self._applied(step))
            ):
                continue
            templates = list(request.templates())
            if self._list_unknown(step):
                templates.append(step.foreach)
            for text in strings_in(templates):
                for ref in references(text) if is_template(text) else ():
                    name = str(ref)
                    if ref.root == "steps" and name in self.withheld:
                        needed.setdefault(ref.path[0], []).append(name)
        for step_id, names in needed.items():
            step = self.saga.step(step_id)
            listed = ", ".join(sorted(set(names)))
            if step.kind is not StepKind.READ_ONLY:
                return (
                    f"{listed} held a secret, so the journal did not keep it, and step "
                    f"{step_id} cannot be sent again to read it anew: it is not safe "
                    f"(mark it `safe: true` if its action has no effect)"
                )
            result = self._execute_whole(step, Phase.ACTION)
            if result.state is not StepState.SUCCEEDED:
                return f"step {step_id}, sent again to read {listed} anew: {result.error}"
        return self._remake_lists(phase)

    def _list_unknown(self, step: Step) -> bool:
        """Whether a foreach step's list was journaled only by its count (it held a secret)
        and is not made again yet."""
        return step.id in self.item_counts and step.id not in self.items

    def _remake_lists(self, phase: Phase) -> str | None:
        """Before `phase` goes on: each list of items it needs that the journal kept only by
        its count, made again — before anything is sent, so that a list that cannot be made
        (a secret now missing, changed or of another length) stops the run as it stands
        rather than failing a step. Returns why the run cannot go on, or None."""
        for step in self.saga.steps:
            if (
                not self._list_unknown(step)
                or step.request(phase) is None
                or self._state(step.id, phase) is StepState.SUCCEEDED
                or (phase is Phase.COMPENSATE and not self._applied(step))
            ):
                continue
            items = self._make_list(step)
            if isinstance(items, str):
                return f"step {step.id}: {items}"
            self.items[step.id] = items
        return None

    def _make_list(self, step: Step) -> list[Any] | str:
        """A foreach step's list rendered; or why it cannot be: a template problem, or a
        length other than the one journaled."""
        try:
            items = foreach_items(self.saga, step, self.context, self.outputs, self.renderer)
        except RenderError as exc:
            return f"cannot make the list of foreach: {exc.message}"
        count = self.item_counts.get(step.id)
        if count is not None and count != len(items):
            return (
                f"the list of foreach now has {len(items)} items, and had {count} when its "
                "items were first sent (it held a secret, so the journal kept only its "
                "count): are the secrets the run began with set?"
            )
        return items

    def _held(self, phase: Phase, run_phase: RunPhase) -> RunStatus | None:
        """STUCK, journaled with the reason, when `phase` needs a secret output that cannot
        be read anew."""
        why = self._reread_withheld(phase)
        if why is None:
            return None
        self.journal.set_run(self.run_id, status=RunStatus.STUCK, phase=run_phase, error=why)
        return RunStatus.STUCK

    def _forward(self) -> RunStatus:
        self.emit(PhaseStarted(RunPhase.FORWARD))
        held = self._held(Phase.ACTION, RunPhase.FORWARD)
        if held is not None:
            return held
        failed = [
            s.id for s in self.saga.steps if self._state(s.id, Phase.ACTION) is StepState.FAILED
        ]
        if failed:
            self._settle_pivots()  # a pivot in doubt that never took effect forbids nothing
        if failed and not self._pivot_block():
            return self._fail_forward(failed[0], self.states[(failed[0], "action")].error)
        todo = [
            s
            for s in self.saga.ordered_steps()
            if self._state(s.id, Phase.ACTION) is not StepState.SUCCEEDED
        ]
        needs = self._direct_needs()
        deps = {s.id: set(needs[s.id]) for s in todo}
        results = self._wave(
            todo, deps, Phase.ACTION, stop_on_failure=True, deadline=self._deadline
        )
        self._check_stop()
        # A foreach step of which only some items ran (the deadline passed) is unfinished, as
        # a step that never started is: not a failure.
        problem = next(
            (
                (sid, r)
                for sid, r in results.items()
                if r.state not in (StepState.SUCCEEDED, StepState.RUNNING)
            ),
            None,
        )
        if problem is None and all(
            self._state(s.id, Phase.ACTION) is StepState.SUCCEEDED for s in self.saga.steps
        ):
            return self._confirm()
        if problem is not None:
            return self._fail_forward(problem[1].key or problem[0], problem[1].error)
        # Nothing failed, yet not everything ran: the saga's deadline passed.
        return self._fail_forward(None, f"the saga's timeout ({self.saga.timeout:g}s) passed")

    def _fail_forward(self, step_id: str | None, error: str | None) -> RunStatus:
        where = f"step {step_id}: {error}" if step_id else (error or "failed")
        if step_id is not None:
            self._cause = (step_id, Phase.ACTION.value)
        self._settle_pivots()
        block = self._pivot_block()
        if block:
            self.journal.set_run(
                self.run_id,
                status=RunStatus.STUCK,
                phase=RunPhase.FORWARD,
                error=f"{where}; {block[1]}",
            )
            return RunStatus.STUCK
        # The decision to roll back is journaled before any compensation is sent.
        self.journal.set_run(
            self.run_id, status=RunStatus.COMPENSATING, phase=RunPhase.COMPENSATE, error=where
        )
        return self._compensate()

    def _direct_needs(self) -> dict[str, tuple[str, ...]]:
        """Each step's needs that no other need of it implies: the reduced graph."""
        return {s.id: tuple(self.saga.waits_on.get(s.id, s.needs)) for s in self.saga.steps}

    def _confirm(self) -> RunStatus:
        confirming = [
            s
            for s in self.saga.ordered_steps()
            if s.confirm is not None and self._state(s.id, Phase.CONFIRM) is not StepState.SUCCEEDED
        ]
        if confirming:
            self.journal.set_run(self.run_id, phase=RunPhase.CONFIRM)
            self.emit(PhaseStarted(RunPhase.CONFIRM))
            held = self._held(Phase.CONFIRM, RunPhase.CONFIRM)
            if held is not None:
                return held
            ids = {s.id for s in confirming}
            # A confirm waits on every confirm above it: on the nearest, through them.
            needs = self._direct_needs()
            deps = {s.id: nearest(s.id, needs, ids) for s in confirming}
            results = self._wave(confirming, deps, Phase.CONFIRM, stop_on_failure=False)
            self._check_stop()
            bad = next(
                ((sid, r) for sid, r in results.items() if r.state is not StepState.SUCCEEDED), None
            )
            # Confirms do not stop on failure, so every confirm that did not run waits on one
            # that failed: `bad` names it.
            if bad is not None:
                sid, result = bad
                sid = result.key or sid
                self._cause = (sid, Phase.CONFIRM.value)
                self.journal.set_run(
                    self.run_id,
                    status=RunStatus.STUCK,
                    phase=RunPhase.CONFIRM,
                    error=f"confirm of step {sid}: {result.error}",
                )
                return RunStatus.STUCK
        self.journal.set_run(self.run_id, status=RunStatus.SUCCEEDED, phase=RunPhase.CONFIRM)
        return RunStatus.SUCCEEDED

    def _refuse_compensation(self, run: RunRecord, allow_succeeded: bool) -> None:
        """Raise UsageError when `compensate` cannot roll the run back: checked before the
        run's output starts, so that a refusal is all the command prints."""
        # A pivot only in doubt may be settled by its verify, sent once the run's output
        # started (`_compensate_command`).
        block = self._pivot_block(unless_verifiable=True)
        if block:
            raise UsageError(
                f"run {run.id} cannot be compensated: {block[1]}; resume it "
                f"instead (sagactl resume {run.id})"
            )
        if run.status is RunStatus.SUCCEEDED and not allow_succeeded:
            raise UsageError(f"run {run.id} succeeded; to undo it anyway, add --yes")

    def _compensate_command(self, run: RunRecord) -> RunStatus:
        # `_drive` has refused what cannot be rolled back, before the run's output started.
        if run.status in (RunStatus.COMPENSATED, RunStatus.CLEANED):
            return run.status
        # A pivot only in doubt was let through by `_refuse_compensation`: asked now.
        self._settle_pivots()
        block = self._pivot_block()
        if block:
            self._journal_pivot()
            raise UsageError(
                f"run {run.id} cannot be compensated: {block[1]}; "
                f"resume it instead (sagactl resume {run.id})"
            )
        self.journal.set_run(
            self.run_id,
            status=RunStatus.COMPENSATING,
            phase=RunPhase.COMPENSATE,
            # A cleanup is no failure: the run has no cause to show.
            error=None if self._cleanup else run.error or "compensation requested",
            cleanup=self._cleanup or None,
        )
        return self._compensate()

    def _compensate(self) -> RunStatus:
        self.emit(PhaseStarted(RunPhase.COMPENSATE))
        held = self._held(Phase.COMPENSATE, RunPhase.COMPENSATE)
        if held is not None:
            return held
        undo = [
            s
            for s in self.saga.ordered_steps()
            if s.compensate is not None
            and self._applied(s)
            and self._state(s.id, Phase.COMPENSATE) is not StepState.SUCCEEDED
        ]
        ids = {s.id for s in undo}
        # A step is undone only after every step that depends on it: after the nearest of
        # them being undone, which wait on the rest. Steps with nothing to undo (done
        # before, never applied, without a compensation) are passed through.
        users: dict[str, list[str]] = {s.id: [] for s in self.saga.steps}
        for step_id, needs in self._direct_needs().items():
            for need in needs:
                users[need].append(step_id)
        deps = {s.id: nearest(s.id, users, ids) for s in undo}
        results = self._wave(list(reversed(undo)), deps, Phase.COMPENSATE, stop_on_failure=False)
        self._check_stop()
        unfinished = [
            s
            for s in undo
            if results.get(s.id, _Result(StepState.FAILED)).state is not StepState.SUCCEEDED
        ]
        if unfinished:
            first = next((results[s.id] for s in unfinished if s.id in results), None)
            error = first.error if first else "waiting on another compensation"
            if first is not None:
                failed = next(s.id for s in unfinished if s.id in results)
                self._cause = (first.key or failed, Phase.COMPENSATE.value)
            left = [name for s in unfinished for name in self._not_undone(s)]
            self.journal.set_run(
                self.run_id,
                status=RunStatus.STUCK,
                phase=RunPhase.COMPENSATE,
                error=f"{'cleanup' if self._cleanup else 'compensation'} not finished for "
                f"{', '.join(left)}: {error}",
            )
            return RunStatus.STUCK
        if self._cleanup:
            self.journal.set_run(self.run_id, status=RunStatus.CLEANED, phase=RunPhase.COMPENSATE)
            return RunStatus.CLEANED
        self.journal.set_run(
            self.run_id,
            status=RunStatus.COMPENSATED,
            phase=RunPhase.COMPENSATE,
            error=self.journal.get_run(self.run_id).error,
        )
        return RunStatus.COMPENSATED

    def _not_undone(self, step: Step) -> list[str]:
        """What of `step` a compensation has left to undo: the step, or for a foreach step
        each of its items that took effect and was not undone."""
        if not step.repeated:
            return [step.id]
        count = self.item_counts.get(step.id, 0)
        keys = [
            key
            for i in applied_items(step.id, count, self.states)
            if self._state(key := item_key(step.id, i), Phase.COMPENSATE) is not StepState.SUCCEEDED
        ]
        return keys or [step.id]

    # --- scheduling ----------------------------------------------------------------------------

    def _wave(
        self,
        steps: list[Step],
        deps: Mapping[str, set[str]],
        phase: Phase,
        *,
        stop_on_failure: bool,
        deadline: float | None = None,
    ) -> dict[str, _Result]:
        """Run `phase` of `steps` in the order `deps` allows (see `schedule`)."""
        # Nothing to start until a request in flight ends: the results held back so far are
        # written rather than kept waiting (one commit for all that ended meanwhile).
        return schedule(
            steps,
            deps,
            done={s.id for s in self.saga.steps if self._state(s.id, phase) is StepState.SUCCEEDED},
            run=lambda step, item: self._execute(step, phase, item),
            run_here=lambda step, item: self._inline(step, phase, item),
            split=lambda step: self._split(step, phase),
            gather=lambda step: self._gather(step, phase),
            succeeded=lambda result: result.state is StepState.SUCCEEDED,
            concurrency=self.concurrency,
            stop=self.stop,
            stop_on_failure=stop_on_failure,
            deadline=deadline,
            clock=self.clock,
            idle=self.journal.flush,
            name=phase.value,
        )

    def _inline(self, step: Step, phase: Phase, item: Item | None = None) -> _Result:
        """`_execute` on this thread; a signal arriving meanwhile interrupts the request."""
        stop = self.stop
        if (
            not isinstance(stop, StopSignal)
            or threading.current_thread() is not threading.main_thread()
        ):
            return self._execute(step, phase, item)
        stop.interruptible = True
        try:
            return self._execute(step, phase, item)
        finally:
            stop.interruptible = False

    # --- foreach steps -------------------------------------------------------------------------

    def _split(self, step: Step, phase: Phase) -> list[Item] | None:
        """The items of a foreach step that `phase` runs, in the order to run them: going
        forward, those whose action has not succeeded; compensating, those that took effect
        and are not undone yet, newest first; confirming, those not confirmed. None for a
        step that is not a foreach."""
        if not step.repeated:
            return None
        items = self._item_list(step, phase)
        if items is None:
            return []
        if phase is Phase.COMPENSATE:
            indexes = list(reversed(applied_items(step.id, len(items), self.states)))
        else:
            indexes = list(range(len(items)))
        todo = [
            Item(i, items[i], step.item_name)
            for i in indexes
            if self._state(item_key(step.id, i), phase) is not StepState.SUCCEEDED
        ]
        self.emit(ItemsStarted(step.id, phase.value, len(todo), len(items)))
        return todo

    def _item_list(self, step: Step, phase: Phase) -> list[Any] | None:
        """A foreach step's items: as journaled, or rendered — and then, before any item is
        sent, journaled (a list that holds a secret only by its count, and rendered again
        when the run is resumed). None when it cannot be made: the step fails, and why is
        kept for `_gather`."""
        known = self.items.get(step.id)
        if known is not None:
            return known
        items = self._make_list(step)
        if isinstance(items, str):
            self._unlisted[(step.id, phase)] = self._give_up(step, phase, items)
            return None
        if step.id not in self.item_counts:
            held = self.redactor.value(items) != items
            self.journal.set_step(
                self.run_id,
                step.id,
                Phase.ACTION.value,
                state=StepState.RUNNING,
                items={"withheld": WITHHELD_ITEMS, "count": len(items)} if held else items,
            )
            self._rows[(step.id, Phase.ACTION.value)] = (StepState.RUNNING, False)
            self.item_counts[step.id] = len(items)
        self.items[step.id] = items
        return items

    def _gather(self, step: Step, phase: Phase) -> _Result:
        """A foreach step's result in `phase`, once its items that ran ended: journaled (for
        those who read the journal; a resume gathers it anew from the items') and
        reported."""
        unlisted = self._unlisted.pop((step.id, phase), None)
        if unlisted is not None:
            return unlisted
        count = len(self.items[step.id])
        record, cause = self._gathered(step, phase, count)
        if record is None:  # none of its items ran (none took effect): nothing to undo
            record = StepRecord(
                step.id, phase.value, StepState.SUCCEEDED, False, {}, 0, None, None, time.time()
            )
            self.states[(step.id, phase.value)] = record
        outputs = record.outputs  # the lists of the items' outputs, once all succeeded
        journaled = self._journaled_outputs(step, outputs)
        if outputs:
            keys = [item_key(step.id, i) for i in range(count)]
            for name in step.withheld_names(self.withheld):
                output = name.rsplit(".", 1)[-1]
                if all(output in self.item_outputs.get(key, {}) for key in keys):
                    self.withheld.discard(name)  # every item sent again, read anew
                else:
                    journaled[output] = WITHHELD
        self._write_row(step, record, journaled)
        self.emit(
            StepFinished(
                step.id, phase.value, record.state.value, record.error, self._where(step, phase)
            )
        )
        error = self.states[(cause, phase.value)].error if cause is not None else None
        return _Result(record.state, record.applied, dict(outputs), error, cause)

    def _execute_whole(self, step: Step, phase: Phase) -> _Result:
        """`phase` of `step` sent again whole, on this thread: each of a foreach step's items."""
        if not step.repeated:
            return self._execute(step, phase)
        items = self._item_list(step, phase)
        if items is None:
            return self._unlisted.pop((step.id, phase))
        self.emit(ItemsStarted(step.id, phase.value, len(items), len(items)))
        for i, value in enumerate(items):
            result = self._execute(step, phase, Item(i, value, step.item_name))
            if result.state is not StepState.SUCCEEDED:
                break
        return self._gather(step, phase)

    # --- one request ---------------------------------------------------------------------------

    def _executor(self, step: Step, phase: Phase) -> Executor:
        call = step.request(phase)
        assert call is not None
        return self.executors[call.kind]  # every kind has one: checked when built

    @staticmethod
    def _key(step: Step, item: Item | None) -> str:
        """What the journal calls the step, or its item (`lines[2]`)."""
        return step.id if item is None else item_key(step.id, item.index)

    def _execute(self, step: Step, phase: Phase, item: Item | None = None) -> _Result:
        key = self._key(step, item)
        doubted = (
            step.verify is not None
            and phase in (Phase.ACTION, Phase.COMPENSATE)
            and self._state(key, Phase.ACTION) is StepState.IN_DOUBT
        )
        if doubted:
            # In doubt since an earlier process: asked before it is sent again or undone.
            verdict = self._settle(step, item)
            if verdict == "applied" and phase is Phase.ACTION:
                return self._settled_result(step, item)
            if verdict == "absent" and phase is Phase.COMPENSATE:
                return _Result(StepState.SUCCEEDED, key=key if item else None)  # nothing to undo
        result = self._send(step, phase, item)
        if phase is Phase.ACTION and result.state is StepState.IN_DOUBT and step.verify:
            # In doubt now: asked at once, so that a run goes on when it took effect.
            # The doubt is settled if it says absent: what `step_error` said of it goes.
            cause = (result.error or "in doubt").split("; in doubt", 1)[0]
            error = f"{cause}; its verify says it never took effect"
            verdict = self._settle(step, item, failed=error)
            if verdict == "applied":
                return self._settled_result(step, item)
            if verdict == "absent":
                if item is not None:
                    self._gathered(step, Phase.ACTION, self.item_counts.get(step.id, 0))
                self.emit(
                    StepFinished(
                        key,
                        Phase.ACTION.value,
                        StepState.FAILED.value,
                        error,
                        self._where(step, Phase.ACTION),
                        item=item.index if item is not None else None,
                    )
                )
                return _Result(StepState.FAILED, error=error, key=result.key)
        if (
            phase is Phase.ACTION
            and step.kind is StepKind.PIVOT
            and (
                result.state in (StepState.SUCCEEDED, StepState.IN_DOUBT)
                or (result.state is StepState.FAILED and result.applied)
            )
        ):
            # From now on the run can only go forward: journaled at once, so that whoever
            # finds it stuck or interrupted is offered `resume` alone.
            self._journal_pivot()
        return result

    def _settled_result(self, step: Step, item: Item | None) -> _Result:
        key = self._key(step, item)
        outputs = self.item_outputs.get(key, {}) if item else self.states[(key, "action")].outputs
        return _Result(StepState.SUCCEEDED, True, dict(outputs), key=key if item else None)

    def _settle(
        self, step: Step, item: Item | None = None, *, failed: str | None = None
    ) -> str | None:
        """Send the verify of a step (or item) whose action is in doubt (SPEC §2.6), and
        journal what it settles: `applied` — the action succeeded, its outputs read from the
        verify's answer; `absent` — it never took effect: it has nothing to undo, and may be
        sent again (or, with `failed`, the error of an action whose retries are used up, it
        failed). None when it settles nothing: the doubt stays."""
        key = self._key(step, item)
        result = self._send(step, Phase.VERIFY, item)
        verdict = self._verdicts.pop(key, None) if result.state is StepState.SUCCEEDED else None
        if verdict is None:
            return None
        earlier = self.states.get((key, Phase.ACTION.value))
        attempts = earlier.attempts if earlier else 0
        applied = verdict == "applied"
        outputs = result.outputs if applied else {}
        state = (
            StepState.SUCCEEDED
            if applied
            else StepState.FAILED
            if failed is not None
            else StepState.RUNNING
        )
        self.journal.set_step(
            self.run_id,
            key,
            Phase.ACTION.value,
            state=state,
            applied=applied,
            outputs=self._journaled_outputs(step, outputs),
            attempts=attempts,
            error=failed,
            settled=not applied,
        )
        self.states[(key, Phase.ACTION.value)] = StepRecord(
            key, Phase.ACTION.value, state, applied, outputs, attempts, None, failed, time.time()
        )
        if applied and item is not None:
            self.item_outputs[key] = outputs
        elif applied:
            self.outputs[step.id] = self._readable(step, outputs)
            for name in step.withheld_names(self.withheld):
                self.withheld.discard(name)  # read anew from the verify's answer
        if applied and step.kind is StepKind.PIVOT:
            self._journal_pivot()
        if item is not None:
            self._gathered(step, Phase.ACTION, self.item_counts.get(step.id, 0))
        if not applied and self._pivot_journaled and self._pivot_block() is None:
            # The pivot in doubt never took effect: the run may be rolled back again.
            self._pivot_journaled = False
            self.journal.set_run(self.run_id, pivot_passed=False)
        if applied:
            self.emit(
                StepFinished(
                    key,
                    Phase.ACTION.value,
                    StepState.SUCCEEDED.value,
                    where=self._where(step, Phase.ACTION),
                    item=item.index if item is not None else None,
                )
            )
        return verdict

    def _settle_pivots(self) -> None:
        """Settle, by their verify, the pivots (and pivot items) in doubt: before deciding
        that one forbids rolling back."""
        for step in self.saga.steps:
            if step.kind is not StepKind.PIVOT or step.verify is None:
                continue
            if not step.repeated:
                if self._state(step.id, Phase.ACTION) is StepState.IN_DOUBT:
                    self._settle(step)
                continue
            items = self.items.get(step.id, [])
            for i, value in enumerate(items):
                if self._state(item_key(step.id, i), Phase.ACTION) is StepState.IN_DOUBT:
                    self._settle(step, Item(i, value, step.item_name))

    def _journal_pivot(self) -> None:
        """Journal, once, that a pivot forbids rolling back the run."""
        if not self._pivot_journaled:
            self._pivot_journaled = True
            self.journal.set_run(self.run_id, pivot_passed=True)

    def _send(self, step: Step, phase: Phase, item: Item | None = None) -> _Result:
        executor = self._executor(step, phase)
        ready = self.prepared.get((step.id, phase)) if item is None else None
        if ready is not None:
            return self._attempts(step, phase, executor, ready)
        try:
            prepared = executor.prepare(
                self.saga,
                step,
                phase,
                self.context,
                self._steps_seen(step, phase, item),
                self.renderer,
                secrets=self.redactor,
                item=item,
            )
        except RenderError as exc:
            why = ""
            key = step.id if item is None else item_key(step.id, item.index)
            known = self.outputs if item is None else self.item_outputs
            if phase is not Phase.ACTION and key not in known and step.outputs:
                why = f" (the outputs of {key} are unknown: its action is in doubt)"
            elif self.withheld:
                why = (
                    f" ({', '.join(sorted(self.withheld))} held a secret, so the journal "
                    "did not keep it)"
                )
            return self._give_up(
                step, phase, f"cannot render the {phase.value}{why}: {exc.message}", item
            )
        return self._attempts(step, phase, executor, prepared, item)

    def _attempts(
        self,
        step: Step,
        phase: Phase,
        executor: Executor,
        prepared: Prepared,
        item: Item | None = None,
    ) -> _Result:
        """Send `prepared` until an attempt succeeds or fails for good, its retries are used
        up, a signal arrives, or (for an action) the next retry would start past the saga's
        deadline. Each attempt is journaled before it is sent, and its result after: begun,
        made, finished, in this frame, once each.

        The request is in doubt when any of its attempts — of this process or of an earlier
        one — may have reached the service and none succeeded: a later 503, 4xx or refused
        connection proves nothing about an earlier attempt (SPEC §3.1)."""
        journal, run_id, phase_name = self.journal, self.run_id, phase.value
        key = prepared.step
        """What the journal and the events call it: the step, or the item (`lines[2]`)."""
        index = item.index if item is not None else None
        policy = prepared.retry
        # Attempt numbers go on from earlier processes' attempts, so that a resumed request
        # says `Saga-Attempt: 3` rather than starting again at 1.
        earlier = self.states.get((key, phase_name))
        offset = earlier.attempts if earlier else 0
        doubt: Doubt | None = None
        """Why the request may have taken effect without a success: the first such attempt."""
        if earlier is not None and earlier.state is StepState.IN_DOUBT:
            doubt = Doubt(0, None)
        # A request an earlier process saw accepted (then failing a check) took effect.
        applied = earlier is not None and earlier.state is StepState.FAILED and earlier.applied
        deadline = self._deadline if phase is Phase.ACTION else None
        action = self.states.get((key, Phase.ACTION.value))
        sent = (action.attempts if action else 0) if phase is Phase.VERIFY else None
        """For a verify: how many attempts of the action it asks about were sent."""
        mask = self.redactor.text
        shown_target = ""
        call = step.request(phase)
        poll = call.poll if call is not None else None
        polls = 0
        """Answers so far that said the work is not done yet."""
        poll_since: float | None = None
        if poll is not None and offset:
            # Polled by an earlier process too: its timeout runs from the first poll ever.
            first = next(
                (
                    a.started_at
                    for a in journal.attempts(run_id)
                    if (a.step_id, a.phase, a.outcome) == (key, phase_name, "pending")
                ),
                None,
            )
            if first is not None:
                poll_since = self.clock() - max(0.0, time.time() - first)
        not_ready = False

        def check(view: ResponseView) -> tuple[dict[str, Any], str | None]:
            nonlocal not_ready
            not_ready = False
            if poll is not None:
                ready, problem = self._poll_state(poll, step, phase, view, item)
                if problem is not None or not ready:
                    not_ready = problem is None
                    return {}, problem
            return self._check(step, phase, view, item)

        number = 0
        tries = 0
        """Attempts since the last answer of a poll: what the retry policy counts."""
        while True:
            number += 1
            tries += 1
            self._hold_lease()
            context = AttemptContext(
                run_id, self.trace_id, offset + number, new_span_id(), self.clock, sent
            )
            shown = executor.shown(prepared, context)
            shown_target = mask(shown.target)
            shown_headers = self.redactor.headers(shown.headers)
            body_text = mask(shown.body) if shown.body is not None else None
            handle = journal.begin_attempt(
                run_id,
                key,
                phase_name,
                context.number,
                span_id=context.span_id,
                method=shown.operation,
                url=shown_target,
                headers=shown_headers,
                body=body_text,
            )
            self.emit(
                AttemptStarted(
                    key,
                    phase_name,
                    context.number,
                    offset + policy.attempts,
                    shown.operation,
                    shown_target,
                    shown_headers,
                    clip(body_text),
                    index,
                )
            )
            began = self.clock()
            not_ready = False
            result = executor.attempt(prepared, context, check)
            pending = result.outcome is Outcome.SUCCESS and not_ready
            if pending:
                assert poll is not None
                polls += 1
                poll_since = began if poll_since is None else poll_since
                next_poll = self.clock() + poll.every
                out_of_time = next_poll - poll_since > poll.timeout
                if out_of_time or (deadline is not None and next_poll > deadline):
                    pending = False
                    over = (
                        f"not done after {format_duration(poll.timeout)}"
                        if out_of_time
                        else "the saga's timeout passed"
                    )
                    result = AttemptResult(
                        Outcome.FAILURE,
                        result.duration_ms,
                        result.response,
                        error_class="PollTimeout",
                        error_message=f"poll: {over} ({polls} polls): {poll.until} is still false",
                        applied=result.applied,
                    )
                else:
                    result = AttemptResult(
                        Outcome.PENDING,
                        result.duration_ms,
                        result.response,
                        error_message=f"not done yet: {poll.until} is false",
                        applied=result.applied,
                    )
            if result.in_doubt and doubt is None:
                doubt = Doubt(context.number, mask(result.error_message or "no answer"))
            applied = applied or result.applied
            wait: float | None = None
            if pending:
                assert poll is not None
                wait, tries = poll.every, 0
            elif result.outcome is Outcome.RETRYABLE and not self.stop.is_set():
                wait = next_wait(
                    policy, tries, result.retry_after, now=self.clock(), deadline=deadline
                )
            state: StepState | None = None
            if wait is None:
                state = (
                    StepState.SUCCEEDED
                    if result.outcome is Outcome.SUCCESS
                    else StepState.IN_DOUBT
                    if doubt is not None and not applied
                    else StepState.FAILED
                )
            response = result.response
            error = mask(result.error_message) if result.error_message else None
            shown_response_headers = self.redactor.headers(response.headers) if response else None
            shown_body = mask(response.text) if response else None
            if (
                response is not None
                and phase in (Phase.ACTION, Phase.VERIFY)
                and step.secret_outputs
                and not step.secret_outputs <= self._read_secrets(step, result, item)
            ):
                # A secret output could not be read from this answer, so it cannot be
                # masked in it: the answer is not kept, only its status.
                shown_body, shown_response_headers = WITHHELD_BODY, {}
            # A final result goes in with the next write (the next step's intent, most often):
            # one commit a step. A retryable one is written now, before the backoff.
            journal.finish_attempt(
                handle,
                outcome=result.outcome.value,
                duration_ms=result.duration_ms,
                status=result.status,
                error_class=result.error_class,
                error_message=error,
                in_doubt=result.in_doubt,
                response_headers=shown_response_headers,
                response_body=shown_body,
                step_state=state,
                applied=doubt is not None or applied,
                outputs=self._journaled_outputs(step, result.outputs) if state else None,
                # A success settles doubt: a succeeded step carries no error.
                step_error=step_error(error, doubt, context.number)
                if state is not None and state is not StepState.SUCCEEDED
                else None,
                defer=state is not None,
            )
            self.emit(
                AttemptFinished(
                    key,
                    phase_name,
                    context.number,
                    result.outcome.value,
                    result.status,
                    error,
                    round(result.duration_ms, 3),  # to the microsecond, as the journal shows
                    shown_response_headers,
                    clip(shown_body),
                    in_doubt=result.in_doubt,
                    item=index,
                )
            )
            if state is not None:
                break
            assert wait is not None
            self.emit(
                RetryScheduled(
                    key,
                    phase_name,
                    context.number + 1,
                    round(wait, 3),
                    polls if pending else 0,
                    index,
                )
            )
            self.sleep(wait)
            if self.stop.is_set():
                # A signal during the backoff: nothing more is sent. The step is left running;
                # settling the interrupted run says whether it is in doubt.
                return _Result(StepState.RUNNING, error="interrupted")
        final_error = (
            step_error(error, doubt, offset + number) if state is not StepState.SUCCEEDED else None
        )
        record = StepRecord(
            key,
            phase_name,
            state,
            doubt is not None or applied,
            result.outputs,
            offset + number,
            result.status,
            final_error,
            time.time(),
        )
        self.states[(key, phase_name)] = record
        if state is StepState.SUCCEEDED and phase is Phase.ACTION:
            if item is not None:
                self.item_outputs[key] = result.outputs
            else:
                self.outputs[step.id] = self._readable(step, result.outputs)
                for name in step.withheld_names(self.withheld):
                    self.withheld.discard(name)  # sent again, read anew
        self.emit(
            StepFinished(
                key,
                phase_name,
                state.value,
                final_error,
                self._where(step, phase),
                f"{shown.operation} {shown_target}",
                clip(shown_body, 300),
                index,
                self._verdicts.get(key) if phase is Phase.VERIFY else None,
            )
        )
        return _Result(state, record.applied, result.outputs, final_error)

    def _where(self, step: Step, phase: Phase) -> str:
        request = step.request(phase)
        return f"{self.saga.path}:{request.line if request else step.line}"

    def _give_up(self, step: Step, phase: Phase, error: str, item: Item | None = None) -> _Result:
        """A request that cannot even be rendered fails without being sent."""
        error = self.redactor.text(error)
        key = step.id if item is None else item_key(step.id, item.index)
        earlier = self.states.get((key, phase.value))
        # What an earlier process's attempts may have done stays known.
        applied = earlier is not None and earlier.applied
        state = (
            StepState.IN_DOUBT
            if earlier is not None and earlier.state is StepState.IN_DOUBT
            else StepState.FAILED
        )
        record = StepRecord(
            key,
            phase.value,
            state,
            applied or state is StepState.IN_DOUBT,
            {},
            earlier.attempts if earlier else 0,
            None,
            error,
            time.time(),
        )
        self.states[(key, phase.value)] = record
        self.emit(
            StepFinished(
                key,
                phase.value,
                state.value,
                error,
                self._where(step, phase),
                item=item.index if item is not None else None,
            )
        )
        return _Result(state, record.applied, error=error, key=key if item else None)

    def _poll_state(
        self, poll: Poll, step: Step, phase: Phase, view: ResponseView, item: Item | None
    ) -> tuple[bool, str | None]:
        """Whether the answer says the polled work is done, and why the step fails if it
        does: `fail_if` true, or an expression that cannot be evaluated."""
        scope = self._scope(step, phase, item, view.context())
        for key, expression, failing in (
            ("fail_if", poll.fail_if, True),
            ("until", poll.until, False),
        ):
            if expression is None:
                continue
            try:
                value = self.renderer.evaluate(expression, scope)
            except TemplateProblem as exc:
                return False, f"poll.{key} {expression}: {exc}{body_hint(view, expression)}"
            if failing and value:
                return False, f"poll.fail_if {expression}: is true"
            if not failing:
                return bool(value), None
        return False, None

    def _secret_outputs(self, step: Step, scope: Mapping[str, Any]) -> dict[str, Any]:
        """The step's secret outputs that can be read from an answer, read first, whatever
        comes of its checks: the redactor must know them before the answer that holds them
        is journaled or shown."""
        secret: dict[str, Any] = {}
        for name in step.secret_outputs:
            with contextlib.suppress(TemplateProblem):
                secret[name] = self.renderer.render(step.outputs[name], scope)
                self.redactor.add(secret[name], derived=False)
        return secret

    def _outputs(
        self,
        step: Step,
        scope: Mapping[str, Any],
        view: ResponseView,
        secret: Mapping[str, Any],
    ) -> tuple[dict[str, Any], str | None]:
        """The step's outputs read from an answer (the secret ones, read already, as given)."""
        outputs: dict[str, Any] = {}
        for name, template in step.outputs.items():
            if name in secret:
                outputs[name] = secret[name]
                continue
            try:
                outputs[name] = self.renderer.render(template, scope)
            except TemplateProblem as exc:
                hint = body_hint(view, str(template))
                return {}, f"outputs.{name}: cannot read the response: {exc}{hint}"
        return outputs, None

    def _judge(
        self, step: Step, view: ResponseView, item: Item | None
    ) -> tuple[dict[str, Any], str | None]:
        """A verify's answer (SPEC §2.6): `applied` true settles the action as having taken
        effect (its outputs read from this answer), `absent` true as never applied; the
        verdict is kept for `_settle`. Neither is a failure of the verify, which leaves the
        doubt. An expression that cannot be evaluated on this answer (`response.json.id` of a
        404's body) is not true: the other may still settle it."""
        scope = self._scope(step, Phase.VERIFY, item, view.context())
        secret = self._secret_outputs(step, scope)
        problems = []
        for verdict, expression in (("applied", step.applied), ("absent", step.absent)):
            if expression is None:
                continue
            try:
                value = self.renderer.evaluate(expression, scope)
            except TemplateProblem as exc:
                problems.append(f"{verdict} {expression}: {exc}{body_hint(view, expression)}")
                continue
            if not value:
                continue
            outputs: dict[str, Any] = {}
            if verdict == "applied":
                outputs, problem = self._outputs(step, scope, view, secret)
                if problem is not None:
                    return {}, f"verify says applied, but {problem}"
            self._verdicts[self._key(step, item)] = verdict
            return outputs, None
        if problems:
            return {}, f"verify settles nothing: {'; '.join(problems)}"
        said = " or ".join(
            f"{k} ({e})" for k, e in (("applied", step.applied), ("absent", step.absent)) if e
        )
        return {}, f"verify settles nothing: neither {said} is true (status {view.status})"

    def _check(
        self, step: Step, phase: Phase, view: ResponseView, item: Item | None = None
    ) -> tuple[dict[str, Any], str | None]:
        if phase is Phase.VERIFY:
            return self._judge(step, view, item)
        request = step.request(phase)
        assert request is not None
        if not request.checks and (phase is not Phase.ACTION or not step.outputs):
            return {}, None  # nothing reads the response: spare parsing it
        scope = self._scope(step, phase, item, view.context())
        secret = self._secret_outputs(step, scope) if phase is Phase.ACTION else {}
        mask = self.redactor.text
        for i, expression in enumerate(request.checks):
            try:
                value = self.renderer.evaluate(expression, scope)
            except TemplateProblem as exc:
                return {}, f"expect.that[{i}] {expression}: {exc}{body_hint(view, expression)}"
            if not value:
                known, actual = self.renderer.actual(expression, scope)
                shown = (
                    f"actual {shown_value(actual, mask)}"
                    if known
                    else f"is {shown_value(value, mask)}"
                )
                return {}, f"expect.that[{i}] {expression}: {shown}{body_hint(view, expression)}"
        if phase is not Phase.ACTION or not step.outputs:
            return {}, None
        return self._outputs(step, scope, view, secret)
