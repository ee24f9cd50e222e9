"""Model-based randomized testing: generated saga shapes and fault schedules against a real
idempotent service on 127.0.0.1, a crash injected at a random journal write, then `resume` or
`compensate` (chosen at random) until the run is final. The service's own record of applied
effects is checked against what the run's outcome promises.

A run left stuck is checked to name exactly its unfinished work before the faults are cleared.

The crash is injected in process, at a journal write: every write after it fails, as after a
SIGKILL, while requests already sent still reach the service. tests/test_crash.py kills real
processes; this test covers many more shapes and crash points in the time CI allows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sagactl.engine import Engine, create_run
from sagactl.errors import UsageError
from sagactl.journal import Durability, Journal, RunStatus, StepState
from sagactl.loader import load_text
from sagactl.model import StepKind
from sagactl.services import Fault, Service

CASES = int(os.environ.get("SAGACTL_MODEL_CASES", "200"))


class Crash(BaseException):
    """What a SIGKILL is to the journal: nothing more gets written."""


class CrashingJournal(Journal):
    """Fails every write from the `crash_at`-th on, like a process that died there."""

    crash_at: int | None = None
    writes = 0

    def _write(self) -> Any:  # type: ignore[override]
        CrashingJournal.writes += 1
        if self.crash_at is not None and CrashingJournal.writes >= self.crash_at:
            raise Crash
        return super()._write()


@dataclass
class StepPlan:
    kind: str  # compensatable, pivot, read
    needs: list[int] | None
    confirm: bool
    action_fault: str  # ok, 4xx, 5xx1, 5xx2, early, late, drop
    undo_fault: str  # ok, 5xx1, 5xx5
    confirm_fault: str = "ok"  # ok, 5xx1, 5xx5


@dataclass
class Case:
    steps: list[StepPlan]
    crash_at: int | None
    choices: list[str] = field(default_factory=list)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(2, 8))
    steps = []
    for i in range(count):
        kind = draw(st.sampled_from(["compensatable"] * 6 + ["pivot", "read"]))
        needs = draw(st.one_of(st.none(), st.lists(st.integers(0, i - 1), unique=True,
                                                   max_size=i) if i else st.just([])))
        steps.append(StepPlan(
            kind, needs, kind == "compensatable" and draw(st.booleans()) and draw(st.booleans()),
            draw(st.sampled_from(["ok"] * 5 + ["4xx", "5xx1", "5xx2", "early", "late",
                                               "drop"])),
            draw(st.sampled_from(["ok"] * 4 + ["5xx1", "5xx5"])),
            draw(st.sampled_from(["ok"] * 4 + ["5xx1", "5xx5"]))))
    crash_at = draw(st.one_of(st.none(), st.integers(1, 4 * count + 4)))
    choices = draw(st.lists(st.sampled_from(["resume", "compensate"]), min_size=6, max_size=6))
    return Case(steps, crash_at, choices)


def saga_text(case: Case) -> str:
    lines = ["version: 1", "name: model", "env: [BASE]", "defaults:",
             '  base_url: "{{ env.BASE }}"', "  timeout: 100ms",
             "  retry: {attempts: 2, backoff: 1ms, jitter: false}", "  compensation:",
             "    retry: {attempts: 3, backoff: 1ms, jitter: false}", "steps:"]
    for i, step in enumerate(case.steps):
        lines.append(f"  - id: s{i}")
        if step.needs is not None:
            lines.append(f"    needs: [{', '.join(f's{n}' for n in step.needs)}]")
        method = "GET" if step.kind == "read" else "PUT"
        lines.append(f'    action: {{method: {method}, url: "/s{i}/{{{{ run.id }}}}"}}')
        if step.kind == "read":
            lines[-1] = '    action: {method: GET, url: "/probe", expect: {status: [200, 404]}}'
        if step.kind == "compensatable":
            lines.append(f'    compensate: {{method: DELETE, url: "/s{i}/{{{{ run.id }}}}", '
                         'expect: {status: [200, 404]}}')
        if step.confirm:
            lines.append(f'    confirm: {{method: PUT, url: "/s{i}/{{{{ run.id }}}}/ok"}}')
    return "\n".join(lines) + "\n"


def faults(case: Case) -> list[Fault]:
    result = []
    for i, step in enumerate(case.steps):
        path = f"/s{i}/"
        kind = step.action_fault
        if kind == "4xx":
            result.append(Fault("PUT", path, status=422))
        elif kind.startswith("5xx"):
            result.append(Fault("PUT", path, status=503, times=int(kind[3:])))
        elif kind == "early":  # the attempt times out before the service applies it
            result.append(Fault("PUT", path, kind="delay_before", delay=0.15))
        elif kind == "late":  # the attempt times out after the service applied it
            result.append(Fault("PUT", path, kind="delay_after", delay=0.15))
        elif kind == "drop":
            result.append(Fault("PUT", path, kind="drop_after"))
        if step.undo_fault.startswith("5xx"):
            result.append(Fault("DELETE", path, status=503, times=int(step.undo_fault[3:])))
        if step.confirm and step.confirm_fault.startswith("5xx"):
            result.append(Fault("PUT", path, suffix="/ok", status=503,
                                times=int(step.confirm_fault[3:])))
    return result


def drive(case: Case, service: Service, tmp: Path) -> tuple[str, RunStatus, Any]:
    saga = load_text(saga_text(case), "model.yaml")
    environ = {"BASE": service.url}
    path = tmp / f"j{os.urandom(4).hex()}.db"
    CrashingJournal.writes = 0
    journal = CrashingJournal(path, Durability.NORMAL)
    journal.crash_at = case.crash_at
    client = httpx.Client()
    status: RunStatus | None = None
    try:
        run = create_run(journal, saga, {}, environ)
        status = Engine(saga, run, journal=journal, client=client, secrets={},
                        sleep=lambda s: None).start()
    except Crash:
        pass
    finally:
        journal.crash_at = None
    runs = journal.list_runs()
    journal.close()
    if not runs:  # it died writing the run itself: nothing may have been sent
        assert service.received == []
        return "", RunStatus.COMPENSATED, saga
    run_id = runs[0].id
    for choice in case.choices:
        if status in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED):
            break
        if status is RunStatus.STUCK:
            check_stuck(path, run_id, saga, case)
            service.clear_faults()
        with Journal(path, Durability.NORMAL) as store:
            engine = Engine(saga, store.get_run(run_id), journal=store, client=client,
                            secrets={}, sleep=lambda s: None)
            try:
                status = engine.compensate() if choice == "compensate" else engine.resume()
            except UsageError:  # a pivot succeeded: it can only go forward
                status = engine.resume()
    else:
        service.clear_faults()
        with Journal(path, Durability.NORMAL) as store:
            status = Engine(saga, store.get_run(run_id), journal=store, client=client,
                            secrets={}, sleep=lambda s: None).resume()
    client.close()
    return run_id, status, saga


def check_stuck(path: Path, run_id: str, saga: Any, case: Case) -> None:
    """A stuck run's journal names exactly the unfinished work: the compensations left, the
    confirm that failed, or the action a pivot holds the run on."""
    with Journal(path, Durability.NORMAL) as store:
        run = store.get_run(run_id)
        steps = store.steps(run_id)
    assert run.status is RunStatus.STUCK and run.error, (run, case)

    def state(step_id: str, phase: str) -> StepState | None:
        record = steps.get((step_id, phase))
        return record.state if record else None

    unfinished = (StepState.FAILED, StepState.IN_DOUBT)
    event(f"stuck on the way, in phase {run.phase}")
    if run.phase == "compensate":
        named = re.match(r"compensation not finished for ([^:]+):", run.error)
        assert named, (run.error, case)
        applied = {s.id for s in saga.steps if s.compensate is not None
                   and (record := steps.get((s.id, "action"))) is not None
                   and (record.applied or record.state in (StepState.SUCCEEDED,
                                                           StepState.IN_DOUBT))}
        left = {sid for sid in applied if state(sid, "compensate") is not StepState.SUCCEEDED}
        assert set(named.group(1).split(", ")) == left, (run.error, steps, case)
    elif run.phase == "confirm":
        named = re.match(r"confirm of step (\S+):", run.error)
        assert named and state(named.group(1), "confirm") in unfinished, (run.error, case)
        assert all(state(s.id, "action") is StepState.SUCCEEDED for s in saga.steps), case
    else:  # held going forward by a pivot that succeeded or is in doubt
        named = re.match(r"step (\S+):", run.error)
        assert named and state(named.group(1), "action") in unfinished, (run.error, case)


def check(case: Case, service: Service, run_id: str, status: RunStatus, saga: Any) -> None:
    assert status in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED), (status, case)
    keys = [key for key, _, _ in service.applied]
    assert len(keys) == len(set(keys)), "an idempotency key was applied twice"
    effects = {(method, path) for _, method, path in service.applied}
    assert len(effects) == len(service.applied), "an effect was applied twice"
    writers = [s for s in saga.steps if s.kind is not StepKind.READ_ONLY]
    if status is RunStatus.SUCCEEDED:
        for step in writers:
            assert f"{run_id}.{step.id}.action" in keys, (step.id, case)
            if step.confirm is not None:
                assert f"{run_id}.{step.id}.confirm" in keys, (step.id, case)
    else:
        assert service.resources == {}, (service.resources, case)
    received = [(r.headers.get("Saga-Step"), r.headers.get("Saga-Phase"))
                for r in service.received]

    def first(step: str, phase: str) -> int:
        return received.index((step, phase)) if (step, phase) in received else -1

    for step in saga.steps:
        at = first(step.id, "action")
        if at >= 0:
            for above in saga.ancestors[step.id]:
                assert 0 <= first(above, "action") < at, (above, step.id, case)
        undo = first(step.id, "compensate")
        if undo >= 0:
            for below in saga.dependents(step.id):
                later = [i for i, r in enumerate(received) if r == (below, "compensate")]
                assert all(i < undo for i in later), (below, step.id, case)


@settings(max_examples=CASES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_no_schedule_of_faults_and_crashes_breaks_the_promise(case: Case, tmp_path: Path) -> None:
    with Service() as service:
        service.faults = faults(case)
        run_id, status, saga = drive(case, service, tmp_path)
        check(case, service, run_id, status, saga)
        # Figures for docs/reliability.md (pytest --hypothesis-show-statistics).
        crashed = case.crash_at is not None and CrashingJournal.writes >= case.crash_at
        injected = sum(1 for s in case.steps
                       for f in (s.action_fault, s.undo_fault, s.confirm_fault) if f != "ok")
        repeated = len(service.received) > len({(r.method, r.path) for r in service.received})
        event(f"crash injected: {crashed}")
        event(f"outcome: {status.value}")
        event(f"faults injected: {injected}")
        event(f"a request was sent again (retry or resume): {repeated}")
