"""Model-based randomized testing: generated saga shapes, and a fault drawn independently for
every attempt of every request, against a real idempotent service on 127.0.0.1; a crash
injected at a random journal write; then `resume` or `compensate` (chosen at random) until the
run is final.

The faults are the full set a real network and a real service produce, per attempt, for
actions, compensations and confirms alike: applied then the answer too late (timed out),
applied then the connection reset, reset before applying, timed out before applying (and
applied later), a body trickled past the timeout, 503, 429 with `Retry-After`, 4xx, connection
refused, or success. So any sequence can occur: in doubt then 503, 503 then in doubt then 4xx…

The invariants look only at the service's own record — what was applied, how often, what
remains — never at sagactl's journal or its idea of what happened: a run that says `succeeded`
left every effect once, one that says `compensated` left nothing, and one that says `stuck`
names at least everything that is left (and nothing that never reached the service).

The crash is injected in process, at a journal write: every write after it fails, as after a
SIGKILL, while requests already sent still reach the service. tests/test_model_based_slow.py
kills real processes instead.
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

from helpers import Crash, DyingJournal, http_executors
from sagactl.definition.loader import load_text
from sagactl.engine.machine import Engine
from sagactl.engine.runs import create_run
from sagactl.errors import UsageError
from sagactl.journal import Durability, open_journal
from sagactl.model import StepKind
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service

CASES = int(os.environ.get("SAGACTL_MODEL_CASES", "200"))

TIMEOUT = 0.1
"""Each attempt's timeout in the generated sagas, in seconds."""
LATE = 0.15
"""How late a slow answer comes: past the timeout."""
TRICKLE = 0.04
"""Seconds between the bytes of a trickled body: its whole is past the timeout."""

FAULTS = ("late", "drop", "reset", "early", "trickle", "503", "429", "4xx", "refused")
"""Every way an attempt can go wrong; "ok" is success."""
NOT_ANSWERED = frozenset({"late", "drop", "reset", "early", "trickle"})
"""Faults after which the client cannot know whether the request took effect."""


@dataclass
class StepPlan:
    kind: str  # compensatable, pivot, read
    needs: list[int] | None
    confirm: bool
    attempts: dict[str, list[str]] = field(default_factory=dict)
    """Phase -> the fault of each of its successive attempts (then success)."""


@dataclass
class Case:
    steps: list[StepPlan]
    crash_at: int | None
    choices: list[str] = field(default_factory=list)
    real_processes: bool = False


def attempt_faults(real_processes: bool = False) -> st.SearchStrategy[list[str]]:
    """The faults of a request's successive attempts, each drawn on its own: success half of
    the time, any fault otherwise."""
    kinds = [k for k in FAULTS if not (real_processes and k == "refused")]
    one = st.one_of(st.just("ok"), st.sampled_from(kinds))
    return st.integers(0, 5).flatmap(lambda n: st.lists(one, min_size=n, max_size=n))


@st.composite
def cases(draw: st.DrawFn, real_processes: bool = False) -> Case:
    count = draw(st.integers(2, 8))
    steps = []
    for i in range(count):
        kind = draw(st.sampled_from(["compensatable"] * 6 + ["pivot", "read"]))
        needs = draw(
            st.one_of(
                st.none(),
                st.lists(st.integers(0, i - 1), unique=True, max_size=i) if i else st.just([]),
            )
        )
        confirm = kind == "compensatable" and draw(st.booleans()) and draw(st.booleans())
        plan = StepPlan(kind, needs, confirm)
        phases = (
            ["action"]
            + (["compensate"] if kind == "compensatable" else [])
            + (["confirm"] if confirm else [])
        )
        for phase in phases:
            plan.attempts[phase] = draw(attempt_faults(real_processes))
        steps.append(plan)
    crash_at = draw(st.one_of(st.none(), st.integers(1, 4 * count + 4)))
    choices = draw(st.lists(st.sampled_from(["resume", "compensate"]), min_size=6, max_size=6))
    return Case(steps, crash_at, choices, real_processes)


def saga_text(case: Case) -> str:
    lines = [
        "version: 1",
        "name: model",
        "env: [BASE]",
        "defaults:",
        '  base_url: "{{ env.BASE }}"',
        f"  timeout: {int(TIMEOUT * 1000)}ms",
        "  retry: {attempts: 2, backoff: 1ms, max_backoff: 1ms, jitter: false}",
        "  compensation:",
        "    retry: {attempts: 3, backoff: 1ms, max_backoff: 1ms, jitter: false}",
        "steps:",
    ]
    for i, step in enumerate(case.steps):
        lines.append(f"  - id: s{i}")
        if step.needs is not None:
            lines.append(f"    needs: [{', '.join(f's{n}' for n in step.needs)}]")
        if step.kind == "read":
            lines.append(
                f'    action: {{method: GET, url: "/probe/s{i}", expect: {{status: [200, 404]}}}}'
            )
        else:
            lines.append(f'    action: {{method: PUT, url: "/s{i}/{{{{ run.id }}}}"}}')
        if step.kind == "compensatable":
            lines.append(
                f'    compensate: {{method: DELETE, url: "/s{i}/{{{{ run.id }}}}", '
                "expect: {status: [200, 404]}}"
            )
        if step.confirm:
            lines.append(f'    confirm: {{method: PUT, url: "/s{i}/{{{{ run.id }}}}/ok"}}')
    return "\n".join(lines) + "\n"


def fault(kind: str, step: str, phase: str) -> Fault:
    """One attempt's fault as the service (or, for `refused`, the client's network) plays it."""
    where = {"method": "*", "path": "/", "step": step, "phase": phase, "times": 1}
    if kind == "4xx":
        return Fault(**where, status=422)
    if kind == "503":
        return Fault(**where, status=503)
    if kind == "429":
        return Fault(**where, status=429, headers={"Retry-After": "0"})
    named = {
        "late": ("delay_after", LATE),
        "drop": ("drop_after", 0.0),
        "reset": ("drop_before", 0.0),
        "early": ("delay_before", LATE),
        "trickle": ("trickle", TRICKLE),
        "ok": ("ok", 0.0),
        "refused": ("refused", 0.0),
    }
    fault_kind, delay = named[kind]
    return Fault(**where, kind=fault_kind, delay=delay)


def faults(case: Case) -> list[Fault]:
    """The faults of every attempt, in order: the service takes the first that matches."""
    return [
        fault(kind, f"s{i}", phase)
        for i, step in enumerate(case.steps)
        for phase, kinds in step.attempts.items()
        for kind in kinds
    ]


class RefusingTransport(httpx.BaseTransport):
    """The network between sagactl and the service: refuses the connection for an attempt
    whose fault is `refused` (the service never sees it), as a closed port does."""

    def __init__(self, service: Service, inner: httpx.BaseTransport) -> None:
        self.service = service
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {
            "Saga-Step": request.headers.get("Saga-Step", ""),
            "Saga-Phase": request.headers.get("Saga-Phase", ""),
        }
        with self.service._lock:
            for f in self.service.faults:
                if f.matches(request.method, request.url.path, headers):
                    if f.kind == "refused":
                        f.times = 0
                        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
                    break
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def client_for(service: Service) -> httpx.Client:
    from sagactl.executors.http.transport import DeadlineTransport

    return httpx.Client(transport=RefusingTransport(service, DeadlineTransport()))


def drive(case: Case, service: Service, tmp: Path) -> tuple[str, RunStatus, Any, bool]:
    """Run the case's saga to its end; returns the run's id and status, the saga, and whether
    the first process died."""
    saga = load_text(saga_text(case), "model.yaml")
    environ = {"BASE": service.url}
    path = tmp / f"j{os.urandom(4).hex()}.db"
    journal = DyingJournal(open_journal(path, Durability.NORMAL), crash_at=case.crash_at)
    client = client_for(service)
    status: RunStatus | None = None
    try:
        run = create_run(journal, saga, {}, environ)
        status = Engine(
            saga,
            run,
            journal=journal,
            executors=http_executors(client),
            secrets={},
            sleep=lambda s: None,
        ).start()
    except Crash:
        pass
    journal.close()
    with open_journal(path, Durability.NORMAL) as store:
        runs = store.list_runs()
    if not runs:  # it died writing the run itself: nothing may have been sent
        assert service.received == []
        return "", RunStatus.COMPENSATED, saga, True
    run_id = runs[0].id

    def resumer(store: Any) -> Engine:
        """The engine of a later process, carrying the run on."""
        return Engine(
            saga,
            store.get_run(run_id),
            journal=store,
            executors=http_executors(client),
            secrets={},
            sleep=lambda s: None,
        )

    for choice in case.choices:
        if status in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED):
            break
        if status is RunStatus.STUCK:
            check_stuck(path, run_id, saga, service)
            service.clear_faults()
        with open_journal(path, Durability.NORMAL) as store:
            engine = resumer(store)
            try:
                status = engine.compensate() if choice == "compensate" else engine.resume()
            except UsageError:  # a pivot succeeded: it can only go forward
                status = engine.resume()
    else:
        service.clear_faults()
        with open_journal(path, Durability.NORMAL) as store:
            status = resumer(store).resume()
    client.close()
    return run_id, status, saga, journal.dead


def left_in_service(service: Service, run_id: str, saga: Any) -> set[str]:
    """The steps whose effect the service still holds."""
    return {s.id for s in saga.steps if f"/{s.id}/{run_id}" in service.resources}


def reached(service: Service, step: str, phase: str = "action") -> bool:
    """Whether a request of this step and phase ever reached the service."""
    return any(
        r.headers.get("Saga-Step") == step and r.headers.get("Saga-Phase") == phase
        for r in service.received
    )


def check_stuck(path: Path, run_id: str, saga: Any, service: Service, killed: bool = False) -> None:
    """A stuck run names at least everything the service still holds that it must undo or
    finish, and never a step that did not reach the service — unless a process was killed:
    one killed between journaling an attempt and sending it leaves a step that may have
    reached the service (the journal cannot know), and that did not."""
    with open_journal(path, Durability.NORMAL) as store:
        run = store.get_run(run_id)
    assert run.status is RunStatus.STUCK and run.error, run
    event(f"stuck on the way, in phase {run.phase}")
    left = left_in_service(service, run_id, saga)
    if run.phase == "compensate":
        named = re.match(r"compensation not finished for ([^:]+):", run.error)
        assert named, run.error
        names = set(named.group(1).split(", "))
        compensatable = {s.id for s in saga.steps if s.kind is StepKind.COMPENSATABLE}
        assert left & compensatable <= names, (run.error, left)
        assert killed or all(reached(service, name) for name in names), (
            run.error,
            service.received,
        )
    elif run.phase == "confirm":
        named = re.match(r"confirm of step (\S+):", run.error)
        assert named, run.error
        writers = {s.id for s in saga.steps if s.kind is not StepKind.READ_ONLY}
        assert writers <= left, (run.error, left)
        assert (
            f"/{named.group(1)}/{run_id}/ok" not in service.resources
            or killed
            or reached(service, named.group(1), "confirm")
        ), run.error
    else:  # held going forward by a pivot that took effect or may have
        named = re.match(r"step (\S+):", run.error)
        assert named, run.error
        assert killed or any(
            reached(service, s.id) for s in saga.steps if s.kind is StepKind.PIVOT
        ), (run.error, service.received)


def check(case: Case, service: Service, run_id: str, status: RunStatus, saga: Any) -> None:
    assert status in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED), status
    keys = [key for key, _, _ in service.applied]
    assert len(keys) == len(set(keys)), "an idempotency key was applied twice"
    effects = {(method, path) for _, method, path in service.applied}
    assert len(effects) == len(service.applied), "an effect was applied twice"
    writers = [s for s in saga.steps if s.kind is not StepKind.READ_ONLY]
    if status is RunStatus.SUCCEEDED:
        for step in writers:
            assert f"/{step.id}/{run_id}" in service.resources, step.id
            if step.confirm is not None:
                assert f"/{step.id}/{run_id}/ok" in service.resources, step.id
    else:
        assert service.resources == {}, (
            "compensated, yet the service still holds",
            service.resources,
        )
    received = [(r.headers.get("Saga-Step"), r.headers.get("Saga-Phase")) for r in service.received]

    def first(step: str, phase: str) -> int:
        return received.index((step, phase)) if (step, phase) in received else -1

    for step in saga.steps:
        at = first(step.id, "action")
        if at >= 0:
            for above in saga.ancestors[step.id]:
                assert 0 <= first(above, "action") < at, (above, step.id)
        undo = first(step.id, "compensate")
        if undo >= 0:
            for below in saga.dependents(step.id):
                later = [i for i, r in enumerate(received) if r == (below, "compensate")]
                assert all(i < undo for i in later), (below, step.id)


def statistics(case: Case, service: Service, status: RunStatus) -> None:
    """Figures for docs/reliability.md (pytest --hypothesis-show-statistics)."""
    drawn = [kind for step in case.steps for kinds in step.attempts.values() for kind in kinds]
    met: dict[tuple[str | None, str | None], list[str | None]] = {}
    for r in service.received:
        met.setdefault((r.headers.get("Saga-Step"), r.headers.get("Saga-Phase")), []).append(
            r.fault
        )
    unanswered = {"delay_after", "drop_after", "drop_before", "delay_before", "trickle"}
    doubt_then_answer = any(
        first in unanswered and later not in unanswered
        for kinds in met.values()
        for i, first in enumerate(kinds)
        for later in kinds[i + 1 :]
    )
    event(f"outcome: {status.value}")
    event(f"faults drawn: {min(len(drawn), 10)}{'+' if len(drawn) >= 10 else ''}")
    event(f"faults met by the service: {any(f for kinds in met.values() for f in kinds)}")
    event(f"the service answered a request after one it did not: {doubt_then_answer}")


@settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_no_schedule_of_faults_and_crashes_breaks_the_promise(case: Case, tmp_path: Path) -> None:
    with Service() as service:
        service.faults = faults(case)
        run_id, status, saga, crashed = drive(case, service, tmp_path)
        check(case, service, run_id, status, saga)
        event(f"crash injected: {crashed}")
        statistics(case, service, status)
