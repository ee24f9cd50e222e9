"""A kind of step that exists only here — appending to a ledger — run by the real engine next to
HTTP steps, journaled by the real journal, shown by the real renderers: the executor interface
(`sagactl.executors.base`) is all a new kind needs. The checks read the ledger's own record."""

from __future__ import annotations

import dataclasses
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import cli
from sagactl.definition.kinds import Kind, register, unregister
from sagactl.definition.loader import load_text
from sagactl.definition.scope import step_scope
from sagactl.definition.templating import Renderer
from sagactl.engine.machine import Engine
from sagactl.engine.runs import create_run
from sagactl.errors import DefinitionErrors, UsageError
from sagactl.events import AttemptStarted, Event
from sagactl.executors import registry as executors_registry
from sagactl.executors.base import (
    AttemptContext,
    AttemptResult,
    Check,
    Outcome,
    ResponseView,
    Shown,
)
from sagactl.executors.http.executor import HttpExecutor
from sagactl.journal import open_journal
from sagactl.model import DEFAULT_RETRY, Item, Phase, RetryPolicy, Saga, Step
from sagactl.output.junit import RunReport, write_junit
from sagactl.output.run_views import format_show
from sagactl.records import RunStatus, StepState, item_key
from sagactl.testing.service import Service


@dataclasses.dataclass(frozen=True)
class LedgerCall:
    """Append `entry` to the ledger (an action or a confirm), or take it out (`undo`)."""

    phase: Phase
    entry: str
    undo: bool = False
    timeout: float = 1.0
    retry: RetryPolicy = DEFAULT_RETRY
    checks: tuple[str, ...] = ()
    read_only: bool = False
    poll: None = None
    reads_steps: bool = True
    line: int = 0

    @property
    def kind(self) -> str:
        return "ledger"

    def templates(self) -> tuple[Any, ...]:
        return (self.entry,)


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    step: str
    phase: Phase
    idempotency_key: str
    retry: RetryPolicy
    text: str
    undo: bool


class Ledger:
    """The service: entries by idempotency key, each applied once; `faults` lists what each
    successive attempt meets ("lost": applied, answer lost; "busy": refused, retryable;
    "closed": refused for good)."""

    def __init__(self, faults: list[str] | None = None) -> None:
        self.entries: dict[str, str] = {}
        self.applied: list[str] = []
        self.faults = list(faults or [])
        self.lock = threading.Lock()

    def apply(self, entry: LedgerEntry) -> str:
        with self.lock:
            fault = self.faults.pop(0) if self.faults else "ok"
            if fault in ("busy", "closed"):
                return fault
            action_key = entry.idempotency_key.rsplit(".", 1)[0] + ".action"
            if entry.undo:
                self.entries.pop(action_key, None)
            elif entry.idempotency_key not in self.entries:
                self.entries[entry.idempotency_key] = entry.text
                self.applied.append(entry.idempotency_key)
            return fault


class LedgerExecutor:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def prepare(
        self,
        saga: Saga,
        step: Step,
        phase: Phase,
        context: Mapping[str, Any],
        steps: Mapping[str, Mapping[str, Any]],
        renderer: Renderer,
        *,
        secrets: Any = None,
        item: Item | None = None,
    ) -> LedgerEntry:
        call = step.request(phase)
        assert isinstance(call, LedgerCall)
        scope = step_scope(context, step.id, phase, steps, item=item)
        return LedgerEntry(
            step.id if item is None else item_key(step.id, item.index),
            phase,
            scope["step"]["idempotency_key"],
            call.retry,
            str(renderer.render(call.entry, scope)),
            call.undo,
        )

    def shown(self, prepared: Any, attempt: AttemptContext) -> Shown:
        return Shown(
            "UNDO" if prepared.undo else "APPEND",
            "ledger://book",
            {"Idempotency-Key": prepared.idempotency_key},
            prepared.text,
        )

    def attempt(self, prepared: Any, attempt: AttemptContext, check: Check) -> AttemptResult:
        fault = self.ledger.apply(prepared)
        if fault == "lost":
            return AttemptResult(
                Outcome.RETRYABLE,
                1.0,
                error_class="Lost",
                error_message="the ledger's answer was lost",
                in_doubt=True,
            )
        if fault in ("busy", "closed"):
            return AttemptResult(
                Outcome.RETRYABLE if fault == "busy" else Outcome.FAILURE,
                1.0,
                ResponseView(423, {}, fault, 1.0),
                error_class="Refused",
                error_message=f"the ledger is {fault}",
            )
        view = ResponseView(201, {"X-Ledger": "1"}, '{"ok": true}', 1.0)
        outputs, problem = check(view)
        if problem is not None:
            return AttemptResult(Outcome.FAILURE, 1.0, view, error_message=problem, applied=True)
        return AttemptResult(Outcome.SUCCESS, 1.0, view, applied=True, outputs=outputs)


LEDGER = Kind(
    name="ledger",
    schema={
        "type": "object",
        "required": ["kind", "entry"],
        "additionalProperties": False,
        "properties": {
            "kind": {"const": "ledger"},
            "entry": {"type": "string"},
            "undo": {"type": "boolean"},
        },
    },
    build=lambda raw, phase, line: LedgerCall(
        phase,
        raw["entry"],
        undo=bool(raw.get("undo")),
        line=line,
        retry=RetryPolicy(3, 0.001, jitter=False),
    ),
    templates=("entry",),
)


BOOK = Ledger()
"""The ledger the commands' runs append to."""


@pytest.fixture(autouse=True)
def ledger_kind() -> Iterator[None]:
    """The ledger kind, registered from here: no module of sagactl names it."""
    register(LEDGER)
    executors_registry.register("ledger", lambda: LedgerExecutor(BOOK))
    yield
    unregister("ledger")
    executors_registry.unregister("ledger")


SAGA = """\
version: 1
name: mixed
env: [BASE]
defaults:
  base_url: "{{ env.BASE }}"
  retry: {attempts: 3, backoff: 1ms, jitter: false}
steps:
  - id: order
    action: {method: PUT, url: "/orders/{{ run.id }}"}
    outputs: {id: "{{ run.id }}"}
    compensate: {method: DELETE, url: "/orders/{{ run.id }}"}
  - id: book
    action: {kind: ledger, entry: "order {{ steps.order.outputs.id }}"}
    compensate: {kind: ledger, entry: "order {{ steps.order.outputs.id }}", undo: true}
  - id: ship
    action: {method: PUT, url: "/ships/{{ run.id }}"}
    compensate: {method: DELETE, url: "/ships/{{ run.id }}"}
"""


def mixed_saga() -> Saga:
    return load_text(SAGA, "mixed.yaml")


def run(
    tmp_path: Path, ledger: Ledger, service: Service, executors: dict[str, Any] | None = None
) -> tuple[str, RunStatus, list[Event]]:
    saga = mixed_saga()
    events: list[Event] = []
    with open_journal(tmp_path / "j.db") as journal, httpx.Client() as client:
        record = create_run(journal, saga, {}, {"BASE": service.url})
        engine = Engine(
            saga,
            record,
            journal=journal,
            secrets={},
            on_event=events.append,
            sleep=lambda seconds: None,
            executors=executors
            if executors is not None
            else {"http": HttpExecutor(client), "ledger": LedgerExecutor(ledger)},
        )
        return record.id, engine.start(), events


def test_a_step_of_another_kind_runs_between_http_steps(tmp_path: Path, service: Service) -> None:
    ledger = Ledger(faults=["lost"])  # applied, its answer lost: sent again, under the same key
    run_id, status, events = run(tmp_path, ledger, service)
    assert status is RunStatus.SUCCEEDED
    assert ledger.entries == {f"{run_id}.book.action": f"order {run_id}"}
    assert ledger.applied == [f"{run_id}.book.action"]  # once, whatever was sent again
    assert sorted(service.resources) == [f"/orders/{run_id}", f"/ships/{run_id}"]
    started = [e for e in events if isinstance(e, AttemptStarted) and e.step == "book"]
    assert [(e.method, e.url, e.attempt) for e in started] == [
        ("APPEND", "ledger://book", 1),
        ("APPEND", "ledger://book", 2),
    ]
    with open_journal(tmp_path / "j.db") as journal:
        attempts = [a for a in journal.attempts(run_id) if a.step_id == "book"]
        assert [(a.method, a.url, a.outcome, a.in_doubt) for a in attempts] == [
            ("APPEND", "ledger://book", "retryable", True),
            ("APPEND", "ledger://book", "success", False),
        ]
        assert attempts[0].request_headers == {"Idempotency-Key": f"{run_id}.book.action"}
        assert attempts[0].request_body == f"order {run_id}"
        report = RunReport(
            journal.get_run(run_id),
            journal.steps(run_id),
            journal.attempts(run_id),
            ["order", "book", "ship"],
        )
        shown = format_show(report.run, "succeeded", report.steps, report.attempts, report.order)
    assert "APPEND ledger://book" in shown
    write_junit(tmp_path / "report.xml", [report])
    cases = ET.parse(tmp_path / "report.xml").getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["order", "book", "ship"]


def test_a_step_of_another_kind_in_doubt_is_compensated(tmp_path: Path, service: Service) -> None:
    """Its first attempt was applied and its answer lost; the later ones are refused for good:
    the ledger still holds the entry, so the rollback takes it out (SPEC §3.1)."""
    ledger = Ledger(faults=["lost", "closed"])
    run_id, status, _ = run(tmp_path, ledger, service)
    assert status is RunStatus.COMPENSATED
    assert ledger.applied == [f"{run_id}.book.action"]
    assert ledger.entries == {}  # undone
    assert service.resources == {}
    with open_journal(tmp_path / "j.db") as journal:
        book = journal.steps(run_id)[("book", "action")]
        assert (book.state, book.applied) == (StepState.IN_DOUBT, True)
        assert journal.steps(run_id)[("book", "compensate")].state is StepState.SUCCEEDED


def test_a_kind_without_an_executor_is_refused_before_anything_is_sent(
    tmp_path: Path, service: Service
) -> None:
    with httpx.Client() as client, pytest.raises(UsageError, match="steps of kind 'ledger'"):
        run(tmp_path, Ledger(), service, executors={"http": HttpExecutor(client)})
    assert service.received == []


@pytest.mark.parametrize(
    ("call", "says"),
    [
        ("{kind: ledger, entyr: x}", "steps[1].action"),
        ("{kind: ledgr, entry: x}", "steps[1].action.kind"),
        ('{kind: ledger, entry: "{{ steps.nope.outputs.id }}"}', "nope"),
    ],
)
def test_a_call_of_another_kind_is_checked_where_it_stands(call: str, says: str) -> None:
    text = SAGA.replace('{kind: ledger, entry: "order {{ steps.order.outputs.id }}"}', call)
    with pytest.raises(DefinitionErrors) as raised:
        load_text(text, "mixed.yaml")
    shown = str(raised.value)
    assert says in shown and "mixed.yaml:13:" in shown, shown


def test_without_the_kind_registered_a_ledger_call_is_an_error() -> None:
    unregister("ledger")
    with pytest.raises(DefinitionErrors, match="kind"):
        load_text(SAGA, "mixed.yaml")


def test_the_commands_run_and_show_a_step_of_another_kind(tmp_path: Path, service: Service) -> None:
    saga = tmp_path / "mixed.yaml"
    saga.write_text(SAGA)
    env = {"BASE": service.url, "SAGACTL_JOURNAL": str(tmp_path / "j.db"), "NO_COLOR": "1"}
    ran = cli("run", str(saga), "--output", "json", env=env)
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    run_id = json.loads(ran.stdout.splitlines()[-1])["run"]
    assert BOOK.entries[f"{run_id}.book.action"] == f"order {run_id}"
    shown = cli("show", run_id, env=env)
    assert "APPEND ledger://book" in shown.stdout, shown.stdout
    compensated = cli("compensate", run_id, "--yes", env=env)
    assert compensated.exit_code == 0, compensated.stdout + compensated.stderr
    assert f"{run_id}.book.action" not in BOOK.entries and service.resources == {}


def test_a_kind_registered_anew_is_checked_against_its_new_schema() -> None:
    text = SAGA.replace("entry: ", "note: ")
    with pytest.raises(DefinitionErrors, match="unknown key 'note'"):
        load_text(text, "mixed.yaml")
    unregister("ledger")
    register(
        Kind(
            name="ledger",
            schema={
                "type": "object",
                "required": ["kind", "note"],
                "additionalProperties": False,
                "properties": {
                    "kind": {"const": "ledger"},
                    "note": {"type": "string"},
                    "undo": {"type": "boolean"},
                },
            },
            build=lambda raw, phase, line: LedgerCall(
                phase, raw["note"], undo=bool(raw.get("undo"))
            ),
            templates=("note",),
        )
    )
    saga = load_text(text, "mixed.yaml")
    action = saga.step("book").action
    assert isinstance(action, LedgerCall) and action.entry.startswith("order ")


def test_a_call_that_is_not_a_mapping_is_an_error_whatever_the_kinds() -> None:
    unregister("ledger")
    register(dataclasses.replace(LEDGER, schema={"required": ["kind"]}))  # no "type"
    with pytest.raises(DefinitionErrors, match=r"steps\[0\]\.action: expected a mapping"):
        load_text(SAGA.replace('{method: PUT, url: "/orders/{{ run.id }}"}', "5", 1), "mixed.yaml")
