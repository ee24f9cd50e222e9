"""What every journal guarantees: the contract the engine and the commands rely on, whatever
stores the runs (SQLite now; PostgreSQL for workers on several machines).

The journal is append-mostly history (SPEC §4): a run, the state of each (step, phase) that
started, and every attempt, written *before* its request is sent and finished once with its
result. The engine derives its next move from what the journal says happened, which is what
makes a resume right; so every method below says what it makes durable and what a crash
between two calls leaves behind. "Durable" means: once the call returns, the write survives the
process being killed (and, at `Durability.FULL`, the machine losing power).

Every method raises `JournalError` when the journal cannot be read or written, and never leaves a
write half done: each write is one transaction, which also carries the results deferred before
it (`finish_attempt(defer=True)`), and a read first writes those. `LeaseLost` (a `JournalError`)
is raised by any transaction once a run this object drives (see `drive`) is owned by another
process; what was deferred is then dropped, never written.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

from sagactl.records import (
    AttemptHandle,
    AttemptRecord,
    Notification,
    OperatorAction,
    Owner,
    RunPhase,
    RunRecord,
    RunStatus,
    Statistics,
    StepRecord,
    StepState,
)

__all__ = ["Durability", "Journal", "shown_status"]


class Durability(StrEnum):
    """`full` makes every commit survive power loss; `normal` survives a killed process."""

    FULL = "full"
    NORMAL = "normal"


class Journal(Protocol):
    """A store of runs shared safely by the threads of one process and by several processes."""

    @property
    def location(self) -> str:
        """Where the journal is, as users are shown it (a path; a URL without its password)."""
        ...

    def close(self) -> None:
        """Write what `finish_attempt(defer=True)` held back (a failure to do so is ignored:
        those attempts stay in doubt, which a resume settles) and let go of the store."""
        ...

    def __enter__(self) -> Journal: ...

    def __exit__(self, *exc: object) -> None: ...

    # --- runs ----------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        name: str,
        saga_path: str,
        saga_text: str,
        saga_hash: str,
        inputs: Mapping[str, Any],
        env: Mapping[str, Any],
        trace_id: str,
        owner: Owner | None,
        lease_ttl: float,
        step_ids: Sequence[str] | None = None,
    ) -> None:
        """Durably add a run, `running` in phase `forward`, with `owner` holding its lease for
        `lease_ttl` seconds; without an owner, `queued` (SPEC §8: `submit`): nothing of it is
        sent until a worker claims it (`claim_run`). Raises `JournalError` when a run with
        this id exists (the existing run is untouched). A crash after it returns leaves a run
        that a resume takes over once the lease lapses or its owner is found dead."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run as last written; `JournalError` when there is none."""
        ...

    def find_run(self, prefix: str) -> RunRecord:
        """The run whose id is `prefix` or starts with it (4 characters at least, matched as
        typed or in upper case); `JournalError` naming the candidates when several match, or
        when none does."""
        ...

    def list_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> list[RunRecord]:
        """At most `limit` runs, newest first (by creation time, then id): of a status or any
        of several, of a saga name, and strictly older than `before` (the creation time and id
        of the last run of the previous page), so pages neither repeat nor skip a run;
        created at `since` or later and before `until`; whose id starts with `search` (as
        typed or in upper case) or one of whose inputs holds it."""
        ...

    def statistics(self, bounds: Sequence[float]) -> Statistics:
        """Every run, and its attempts summed up by saga and phase, with how many took at most
        each of `bounds` seconds (for histograms)."""
        ...

    def count_runs(
        self,
        *,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> dict[str, int]:
        """How many runs there are of each status as users see it (`interrupted` for those
        running or compensating whose owner is gone: see `driven`), with the filters of
        `list_runs`. Statuses with none are left out."""
        ...

    def set_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        phase: RunPhase | None = None,
        error: str | None = None,
        pivot_passed: bool | None = None,
        cleanup: bool | None = None,
    ) -> None:
        """Durably change what is given, and the update time. A new status also sets the
        finish time (cleared unless the status is final) and the error (cleared unless
        given). This is how each decision is journaled before it is acted on: the decision
        to compensate, for one, is written before any compensation is sent."""
        ...

    # --- leases --------------------------------------------------------------------------------

    def claim_run(
        self, owner: Owner, ttl: float, *, skip: Collection[str] = ()
    ) -> RunRecord | None:
        """Durably make `owner` the owner, for `ttl` seconds, of one run nobody drives, and
        return it as it was before the claim: a run `running` or `compensating` whose owner
        is gone or whose lease lapsed (taken over first: it was under way), else the oldest
        `queued` run, which becomes `running`. Runs in `skip` are passed over; None when
        there is nothing to claim. Of any number of processes claiming at once, on any number
        of machines, each run goes to one."""
        ...

    def take_lease(self, run_id: str, owner: Owner, ttl: float) -> None:
        """Durably make `owner` the run's owner for `ttl` seconds, unless another owner may
        still be driving it (`driven`): then `JournalError`, saying which process holds it.
        Taking and checking are one transaction: of two processes taking a run at once, one
        gets it."""
        ...

    def renew_lease(self, run_id: str, owner: Owner, ttl: float) -> bool:
        """Durably extend `owner`'s lease to `ttl` seconds from now; False, the lease left as
        it is, when another process owns the run now."""
        ...

    def release_lease(self, run_id: str, owner: Owner) -> None:
        """Durably leave the run without an owner, if `owner` still owns it."""
        ...

    def driven(self, run: RunRecord) -> bool:
        """Whether the owner `run` names may still be driving it: its lease has not expired
        and, where the journal can tell (a process of this host), the process is alive. A
        run nobody drives, left `running`, was interrupted."""
        ...

    def drive(self, run_id: str, owner: Owner) -> None:
        """From now on, every write of this object first checks that `owner` still owns
        `run_id`, and raises `LeaseLost` (writing nothing) once another process does: a
        process that stalled past its lease must not write over the one that took the run
        over. The check may be skipped while this object's own lease cannot have expired."""
        ...

    def undrive(self, run_id: str) -> None:
        """Stop checking `run_id`'s owner before each write."""
        ...

    # --- steps and attempts --------------------------------------------------------------------

    def steps(self, run_id: str) -> dict[tuple[str, str], StepRecord]:
        """The state of every (step id, phase) of the run that has had an attempt."""
        ...

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every attempt of the run, in the order they began; one without an outcome is in
        flight, or was cut off by a crash."""
        ...

    def set_step(
        self,
        run_id: str,
        step_id: str,
        phase: str,
        *,
        state: StepState,
        applied: bool = False,
        outputs: Mapping[str, Any] | None = None,
        attempts: int = 0,
        error: str | None = None,
        items: Sequence[Any] | Mapping[str, Any] | None = None,
        settled: bool = False,
    ) -> None:
        """Durably write the state of a (step, phase) that is not one request's last
        attempt: a foreach step's (SPEC §2.5), whose items' requests each have their own
        (`lines[2]`), or a request's that a verify settled (SPEC §2.6). With `settled`, the
        attempts made so far no longer make it in doubt (`settle_interrupted` looks only at
        later ones): a verify found that they never took effect. With
        `items`, the list of the step's items (or a marker for a list that held a secret),
        written before any item is sent and kept by later calls that give none. Results
        held back by `defer` are made durable by the same transaction, first.

        The engine derives a foreach step's state from its items' whenever it resumes; this
        row says what it found last, for those who read the journal (`show`, reports). A
        crash between an item's last write and this call leaves the row behind its items',
        which the next drive of the run puts right."""
        ...

    def begin_attempt(
        self,
        run_id: str,
        step_id: str,
        phase: str,
        attempt: int,
        *,
        span_id: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: str | None,
    ) -> AttemptHandle:
        """Durably record an attempt about to be sent (its request as it will be shown:
        already masked) and make its step `running`. Returns only once that is durable: a
        crash after it returns, before `finish_attempt`, leaves an attempt without a result,
        which `settle_interrupted` marks in doubt. Results held back by `defer` are made
        durable by the same transaction, first."""
        ...

    def finish_attempt(
        self,
        attempt: AttemptHandle,
        *,
        outcome: str,
        duration_ms: float,
        status: int | None = None,
        error_class: str | None = None,
        error_message: str | None = None,
        in_doubt: bool = False,
        response_headers: Mapping[str, str] | None = None,
        response_body: str | None = None,
        step_state: StepState | None = None,
        applied: bool = False,
        outputs: Mapping[str, Any] | None = None,
        step_error: str | None = None,
        defer: bool = False,
    ) -> None:
        """Record an attempt's result and, when it was the step's last, the step's new state
        (`applied`: whether it may have taken effect; `step_error`: why it did not succeed),
        both in one transaction. An attempt that is not the last but took effect (a poll's
        answer that the work is not done yet) still marks the step `applied`, so that a crash
        before its last attempt leaves a step that a compensation undoes. Bodies and
        messages may be cut to what the journal keeps.

        Durable when it returns, unless `defer`: then it is written by this object's next
        write (whatever it is) or by `flush`, and until then a crash leaves the attempt
        without a result, that is, in doubt — safe, since a resume sends it again under its
        idempotency key, but only right when nothing but another journal write comes next."""
        ...

    def flush(self) -> None:
        """Make durable the results recorded with `defer`, if any. Every read flushes first:
        what was recorded is what is read."""
        ...

    def operate(
        self,
        run_id: str,
        step_id: str,
        phase: str,
        *,
        action: str,
        state: StepState,
        applied: bool,
        settled: bool = False,
        pivot_passed: bool | None = None,
        user: str,
        host: str,
        reason: str,
    ) -> None:
        """Durably record an operator's action (SPEC §7) and the state it gives the (step,
        phase), in one transaction: both, or neither. The step's attempts and outputs are
        kept; with `settled`, its attempts so far no longer make it in doubt (as
        `set_step(settled=True)`); with `pivot_passed`, the run's flag is set in the same
        transaction (a pivot marked applied)."""
        ...

    def operator_actions(self, run_id: str) -> list[OperatorAction]:
        """Every operator action on the run, in the order they were taken."""
        ...

    def record_notification(
        self, run_id: str, *, target: str, delivered: bool, detail: str
    ) -> None:
        """Durably record that the run's end was told to `target` (already masked), or
        could not be."""
        ...

    def notifications(self, run_id: str) -> list[Notification]:
        """Every notification of the run, in the order they were made."""
        ...

    def settle_interrupted(self, run_id: str) -> int:
        """Durably mark each attempt of the run without a result as `interrupted` and in doubt
        (its request may have reached the service), and each step still `running` as
        `in_doubt` when any of its attempts is (but those a verify or an operator settled),
        or an earlier settling found it so; a step
        between attempts that all had a definite answer stays `running`. Returns how many
        attempts had no result; commits nothing of its own when there is nothing to settle.
        A step marked `applied` by an attempt that was not its last is settled `in_doubt` too.
        Run only by the run's owner, so no attempt of a live process is settled."""
        ...


def shown_status(journal: Journal, run: RunRecord) -> str:
    """The status as users see it: a run journaled `running` or `compensating` whose owner
    is gone is `interrupted` (a worker may take it over); `queued` waits for a worker."""
    if run.status in (RunStatus.RUNNING, RunStatus.COMPENSATING) and not journal.driven(run):
        return "interrupted"
    return run.status.value
