"""The fault model shared by the randomized tests (tests/test_model_based.py in process,
tests/test_model_based_slow.py with real processes): generated saga shapes, a fault drawn for
every attempt of every request, and the invariants, read only from the service's own record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import event
from hypothesis import strategies as st

from sagactl.journal import Durability, open_journal
from sagactl.model import StepKind
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service

__all__ = [
    "FAULTS",
    "NOT_ANSWERED",
    "Case",
    "StepPlan",
    "cases",
    "check",
    "check_stuck",
    "faults",
    "saga_text",
    "statistics",
]

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


POLL_ANSWERS = ("notyet", "started", "failed")
"""What a polled action can be answered besides the faults: 200 saying not done yet (without
applying anything, or having applied the request: a job started), or saying the work failed
(its `fail_if`), applying nothing."""


@dataclass
class StepPlan:
    kind: str  # compensatable, pivot, read
    needs: list[int] | None
    confirm: bool
    attempts: dict[str, list[str]] = field(default_factory=dict)
    """Phase -> the fault of each of its successive attempts (then success)."""
    poll: str | None = None
    """For a polled action, its poll's timeout."""
    items: list[dict[str, list[str]]] | None = None
    """For a foreach step (SPEC §2.5), each item's faults, as `attempts` (which is then
    empty); None for a step run once."""
    verify: bool = False
    """Whether the step has a verify (SPEC §2.6): a GET of its resource, applied on 200,
    absent on 404; its attempts meet faults like any request ("4xx": an answer that settles
    nothing)."""


@dataclass
class Case:
    steps: list[StepPlan]
    crash_at: int | None
    choices: list[str] = field(default_factory=list)
    real_processes: bool = False
    operator: bool = False
    """When the run is stuck, an operator does by hand what it waits on, then says so with
    `skip`, or checks the service and settles an action in doubt with `mark` (SPEC §7)."""


def attempt_faults(
    real_processes: bool = False, poll: bool = False
) -> st.SearchStrategy[list[str]]:
    """The faults of a request's successive attempts, each drawn on its own: success half of
    the time, any fault otherwise (for a polled request, its answers too)."""
    kinds = [k for k in FAULTS if not (real_processes and k == "refused")]
    if poll:
        kinds += ["notyet", "notyet", "started", "started", "failed"]
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
        # Short enough, at times, for a poll to run out of time before it is done.
        poll = draw(st.sampled_from([None, None, "5ms", "2s"])) if kind == "compensatable" else None
        verify = kind != "read" and draw(st.integers(0, 2)) == 0
        plan = StepPlan(kind, needs, confirm, poll=poll, verify=verify)
        phases = (
            ["action"]
            + (["compensate"] if kind == "compensatable" else [])
            + (["confirm"] if confirm else [])
            + (["verify"] if verify else [])
        )

        def drawn(phases: list[str] = phases, poll: str | None = poll) -> dict[str, list[str]]:
            return {
                phase: draw(attempt_faults(real_processes, phase == "action" and poll is not None))
                for phase in phases
            }

        if draw(st.integers(0, 3)) == 0:  # a foreach step of 0 to 5 items, faults per item
            plan.items = [drawn() for _ in range(draw(st.integers(0, 5)))]
        else:
            plan.attempts = drawn()
        steps.append(plan)
    crash_at = draw(st.one_of(st.none(), st.integers(1, 4 * count + 4)))
    choices = draw(st.lists(st.sampled_from(["resume", "compensate"]), min_size=6, max_size=6))
    return Case(steps, crash_at, choices, real_processes, operator=draw(st.booleans()))


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
        # Each item of a foreach step has a resource of its own, under its step's.
        path = f"/s{i}/{{{{ run.id }}}}"
        if step.items is not None:
            lines += [f"    foreach: {list(range(len(step.items)))}", "    as: n"]
            path += "/{{ item.n }}"
        if step.kind == "read":
            probe = f"/probe/s{i}" + ("/{{ item.n }}" if step.items is not None else "")
            lines.append(
                f'    action: {{method: GET, url: "{probe}", expect: {{status: [200, 404]}}}}'
            )
        elif step.poll is not None:
            lines += [
                "    action:",
                "      method: PUT",
                f'      url: "{path}"',
                "      json: {ready: true}",
                "      poll:",
                # Strict templates: a key only some answers hold is read with .get
                "        until: \"response.json.get('ready') == true\"",
                "        fail_if: \"response.json.get('failed') == true\"",
                "        every: 1ms",
                f"        timeout: {step.poll}",
            ]
        else:
            lines.append(f'    action: {{method: PUT, url: "{path}"}}')
        if step.kind == "compensatable":
            lines.append(
                f'    compensate: {{method: DELETE, url: "{path}", expect: {{status: [200, 404]}}}}'
            )
        if step.confirm:
            lines.append(f'    confirm: {{method: PUT, url: "{path}/ok"}}')
        if step.verify:
            lines.append(
                f'    verify: {{method: GET, url: "{path}", applied: "response.status == 200", '
                'absent: "response.status == 404"}'
            )
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
    if kind == "notyet":
        return Fault(**where, status=200, body={"ready": False})
    if kind == "started":
        return Fault(**where, kind="applied_status", status=200, body={"ready": False})
    if kind == "failed":
        return Fault(**where, status=200, body={"failed": True})
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


def units(step: StepPlan, index: int) -> list[tuple[str, dict[str, list[str]]]]:
    """What of a step is sent on its own, by the name its requests carry (`Saga-Step`): the
    step, or each of its items (`s2[0]`, `s2[1]`…), with their faults."""
    if step.items is None:
        return [(f"s{index}", step.attempts)]
    return [(f"s{index}[{j}]", attempts) for j, attempts in enumerate(step.items)]


def faults(case: Case) -> list[Fault]:
    """The faults of every attempt, in order: the service takes the first that matches."""
    return [
        fault(kind, name, phase)
        for i, step in enumerate(case.steps)
        for name, attempts in units(step, i)
        for phase, kinds in attempts.items()
        for kind in kinds
    ]


_RESOURCE = re.compile(r"^/(?P<step>s[0-9]+)/(?P<run>[^/]+)(?:/(?P<item>[0-9]+))?(?:/ok)?$")


def left_in_service(service: Service, run_id: str, saga: Any) -> set[str]:
    """What the service still holds, by the name of the step or item that made it."""
    left = set()
    for path in service.resources:
        match = _RESOURCE.match(path)
        if match is not None and match["run"] == run_id:
            item = match["item"]
            left.add(match["step"] + (f"[{item}]" if item is not None else ""))
    return left


def step_of(name: str) -> str:
    """The step of a step's or an item's name: `s2` of `s2[1]`."""
    return name.split("[", 1)[0]


def reached(service: Service, name: str, phase: str = "action") -> bool:
    """Whether a request of this step (or item, or any item of this step) and phase ever
    reached the service."""
    return any(
        r.headers.get("Saga-Phase") == phase
        and (r.headers.get("Saga-Step") == name or step_of(r.headers.get("Saga-Step", "")) == name)
        for r in service.received
    )


def expected_effects(saga: Any, run_id: str) -> set[str]:
    """The resource of each step and item that writes (and of its confirm), as a run that
    succeeded leaves it. The model's foreach steps write their list out."""
    paths = set()
    for step in saga.steps:
        if step.kind is StepKind.READ_ONLY:
            continue
        base = f"/{step.id}/{run_id}"
        for path in [base] if step.foreach is None else [f"{base}/{j}" for j in step.foreach]:
            paths.add(path)
            if step.confirm is not None:
                paths.add(f"{path}/ok")
    return paths


def resource(key: str, run_id: str) -> str:
    """The resource the action of a step (`s2`) or item (`s2[1]`) makes."""
    step, _, index = key.partition("[")
    return f"/{step}/{run_id}" + (f"/{index.rstrip(']')}" if index else "")


def act_as_operator(
    path: Path | str,
    run_id: str,
    service: Service,
    operate: Any,
) -> list[str]:
    """What an operator does for a stuck run, truthfully: for each operator action the run
    suggests, the work by hand in the service, then `operate(step, verdict)` (`skip` when
    the verdict is None). An action in doubt is settled by looking at the service once no
    request is on its way. Returns what was done, for the statistics."""
    from helpers import wait_for
    from sagactl.records import operator_commands

    with open_journal(path, Durability.NORMAL) as store:
        hints = operator_commands(store.get_run(run_id), store.steps(run_id))
    wait_for(lambda: service.busy == 0)  # late requests landed, or were refused
    done = []
    for command, key, phase in hints:
        target = resource(key, run_id)
        with service._lock:
            if command == "mark":
                verdict = "applied" if target in service.resources else "absent"
            elif phase == "compensate":  # undone by hand
                verdict = None
                for path_ in [
                    p for p in service.resources if p == target or p.startswith(target + "/")
                ]:
                    del service.resources[path_]
            elif phase == "confirm":  # confirmed by hand
                verdict = None
                service.resources[target + "/ok"] = {"by": "hand"}
            else:  # applied by hand
                verdict = None
                service.resources[target] = {"by": "hand"}
                service.by_hand.add(key)
        operate(key, verdict)
        done.append(f"{command} {phase}" + (f" {verdict}" if verdict else ""))
    return done


def check_stuck(
    path: Path | str, run_id: str, saga: Any, service: Service, killed: bool = False
) -> None:
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
        undoable = {name for name in left if step_of(name) in compensatable}
        # An item is named, or (its list unknown) its step.
        assert all(name in names or step_of(name) in names for name in undoable), (run.error, left)
        assert killed or all(reached(service, name) for name in names), (
            run.error,
            service.received,
        )
    elif run.phase == "confirm":
        named = re.match(r"confirm of step (\S+):", run.error)
        assert named, run.error
        writes = expected_effects(saga, run_id)
        assert {p for p in writes if not p.endswith("/ok")} <= set(service.resources), (
            run.error,
            left,
        )
        name = named.group(1)
        path = f"/{step_of(name)}/{run_id}" + (
            f"/{name.split('[', 1)[1].rstrip(']')}" if "[" in name else ""
        )
        assert (
            f"{path}/ok" not in service.resources or killed or reached(service, name, "confirm")
        ), run.error
    else:  # held going forward by a pivot that took effect or may have
        named = re.match(r"step (\S+):", run.error)
        assert named, run.error
        assert killed or any(
            reached(service, s.id) for s in saga.steps if s.kind is StepKind.PIVOT
        ), (run.error, service.received)


def check(
    case: Case,
    service: Service,
    run_id: str,
    status: RunStatus,
    saga: Any,
    journal: Path | None = None,
) -> None:
    """The invariants on the service's record. A run left stuck once every fault was
    cleared is allowed only when a poll ran out of time after a pivot had passed: a poll's
    timeout runs from its first poll ever, so no resume can finish it, and the run says so
    (checked by `check_stuck`, with the journal)."""
    if status is RunStatus.STUCK and journal is not None:
        with open_journal(journal, Durability.NORMAL) as store:
            error = store.get_run(run_id).error or ""
        if "poll: not done after" in error:
            event("stuck for good: a poll ran out of time after a pivot")
            check_stuck(journal, run_id, saga, service, killed=True)
            return
    assert status in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED), status
    keys = [key for key, _, _ in service.applied]
    assert len(keys) == len(set(keys)), "an idempotency key was applied twice"
    effects = {(method, path) for _, method, path in service.applied}
    assert len(effects) == len(service.applied), "an effect was applied twice"
    if status is RunStatus.SUCCEEDED:
        missing = expected_effects(saga, run_id) - set(service.resources)
        assert not missing, ("succeeded, yet the service lacks", missing)
    else:
        assert service.resources == {}, (
            "compensated, yet the service still holds",
            service.resources,
        )
    # An item's requests count as its step's.
    received = [
        (step_of(r.headers.get("Saga-Step", "")), r.headers.get("Saga-Phase"))
        for r in service.received
    ]

    def first(step: str, phase: str) -> int:
        return received.index((step, phase)) if (step, phase) in received else -1

    def last(step: str, phase: str) -> int:
        return max((i for i, r in enumerate(received) if r == (step, phase)), default=-1)

    for step in saga.steps:
        at = first(step.id, "action")
        if at >= 0:
            for above in saga.ancestors[step.id]:
                if saga.step(above).foreach == []:
                    continue  # a foreach step of no items sends nothing
                if any(step_of(key) == above for key in service.by_hand):
                    continue  # applied by hand, then skipped: no request of it came
                # Every request of a step it waits on (every item's, every retry) came first.
                assert 0 <= last(above, "action") < at, (above, step.id)
        undo = first(step.id, "compensate")
        if undo >= 0:
            for below in saga.dependents(step.id):
                later = [i for i, r in enumerate(received) if r == (below, "compensate")]
                assert all(i < undo for i in later), (below, step.id)


def statistics(case: Case, service: Service, status: RunStatus) -> None:
    """Figures for docs/reliability.md (pytest --hypothesis-show-statistics)."""
    drawn = [
        kind
        for i, step in enumerate(case.steps)
        for _, attempts in units(step, i)
        for kinds in attempts.values()
        for kind in kinds
    ]
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
    polled = [step for step in case.steps if step.poll is not None]
    if polled:
        answers = [
            k
            for step in polled
            for attempts in (step.items if step.items is not None else [step.attempts])
            for k in attempts.get("action", ())
            if k in POLL_ANSWERS
        ]
        event(f"polled steps answered not done or failed: {bool(answers)}")
    verified = [r for r in service.received if r.headers.get("Saga-Phase") == "verify"]
    if any(step.verify for step in case.steps):
        event(f"a verify was sent: {bool(verified)}")
    sizes = [len(step.items) for step in case.steps if step.items is not None]
    if sizes:
        event(f"foreach steps with no item: {0 in sizes}; most items: {max(sizes)}")
    event(f"faults drawn: {min(len(drawn), 10)}{'+' if len(drawn) >= 10 else ''}")
    event(f"faults met by the service: {any(f for kinds in met.values() for f in kinds)}")
    event(f"the service answered a request after one it did not: {doubt_then_answer}")
