"""The engine with httpx.MockTransport, a real journal in a temporary file, and an injected
sleep and clock: nothing waits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sagactl.engine import Engine, create_run
from sagactl.events import AttemptFinished, Event, PhaseStarted, RunFinished, RunStarted
from sagactl.journal import Journal, RunStatus
from sagactl.loader import load_text

CHAIN = """\
version: 1
name: chain
timeout: 1s
defaults:
  base_url: http://127.0.0.1:9
  retry: {attempts: 3, backoff: 100ms, factor: 2, jitter: false}
steps:
  - id: a
    action: {method: POST, url: /a}
    outputs: {id: "{{ response.json.id }}"}
    compensate: {method: DELETE, url: "/a/{{ steps.a.outputs.id }}"}
    confirm: {method: POST, url: "/a/{{ steps.a.outputs.id }}/confirm"}
  - id: b
    action: {method: POST, url: /b, json: {a: "{{ steps.a.outputs.id }}"}}
    compensate: {method: DELETE, url: /b}
    confirm: {method: POST, url: /b/confirm}
  - id: c
    action: {method: POST, url: /c}
    compensate: {method: DELETE, url: /c}
    confirm: {method: POST, url: /c/confirm}
"""


class Harness:
    def __init__(self, tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response],
                 text: str = CHAIN) -> None:
        self.saga = load_text(text, "chain.yaml")
        self.journal = Journal(tmp_path / "j.db")
        self.sent: list[tuple[str, str]] = []
        self.sleeps: list[float] = []
        self.events: list[Event] = []
        self.now = 1000.0

        def record(request: httpx.Request) -> httpx.Response:
            self.sent.append((request.method, request.url.path))
            return handler(request)

        self.client = httpx.Client(transport=httpx.MockTransport(record))

    def engine(self) -> Engine:
        run = create_run(self.journal, self.saga, {}, {})
        return Engine(self.saga, run, journal=self.journal, client=self.client, secrets={},
                      on_event=self.events.append, sleep=self.sleeps.append,
                      clock=lambda: self.now)


def answer(failing: dict[str, int] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        code = (failing or {}).get(f"{request.method} {request.url.path}", 200)
        return httpx.Response(code, json={"id": "r-9"})
    return handler


def test_outputs_are_rendered_into_later_requests_and_compensations(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer({"POST /c": 400}))
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sent == [("POST", "/a"), ("POST", "/b"), ("POST", "/c"), ("DELETE", "/b"),
                      ("DELETE", "/a/r-9")]


def test_confirms_follow_every_action_in_dependency_order(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer())
    assert h.engine().resume() is RunStatus.SUCCEEDED
    assert h.sent == [("POST", "/a"), ("POST", "/b"), ("POST", "/c"),
                      ("POST", "/a/r-9/confirm"), ("POST", "/b/confirm"),
                      ("POST", "/c/confirm")]


def test_failed_confirm_is_stuck_and_never_rolls_back(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer({"POST /b/confirm": 500}))
    assert h.engine().resume() is RunStatus.STUCK
    assert ("DELETE", "/a/r-9") not in h.sent
    assert h.sent.count(("POST", "/b/confirm")) == 3  # defaults.retry applies to confirms too
    assert ("POST", "/c/confirm") not in h.sent  # it waits for b's confirm


def test_retries_wait_as_the_policy_says(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer({"POST /b": 503}))
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sleeps[:2] == pytest.approx([0.1, 0.2])


def test_saga_timeout_stops_new_actions_and_compensates(tmp_path: Path) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        h.now += 2.0  # the first request takes longer than the saga's 1s timeout
        return httpx.Response(200, json={"id": "r-9"})

    h = Harness(tmp_path, slow)
    engine = h.engine()
    assert engine.resume() is RunStatus.COMPENSATED
    assert h.sent == [("POST", "/a"), ("DELETE", "/a/r-9")]
    run = h.journal.list_runs()[0]
    assert run.error == "the saga's timeout (1s) passed"


def test_events_tell_the_story(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer({"POST /b": 400}))
    h.engine().resume()
    kinds = [type(e).__name__ for e in h.events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    assert isinstance(h.events[0], RunStarted) and isinstance(h.events[-1], RunFinished)
    assert h.events[-1].status == "compensated"
    phases = [e.phase for e in h.events if isinstance(e, PhaseStarted)]
    assert phases == ["forward", "compensate"]
    finished = [(e.step, e.phase, e.status) for e in h.events if isinstance(e, AttemptFinished)]
    assert finished == [("a", "action", 200), ("b", "action", 400), ("a", "compensate", 200)]


def test_unmet_expectation_after_the_service_applied_is_compensated(tmp_path: Path) -> None:
    text = CHAIN.replace("action: {method: POST, url: /c}", "action: {method: POST, url: /c, "
                         "expect: {that: ['response.json.id == \"other\"']}}")
    h = Harness(tmp_path, answer(), text)
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sent[-3:] == [("DELETE", "/c"), ("DELETE", "/b"), ("DELETE", "/a/r-9")]
    run_id = h.journal.list_runs()[0].id
    step = h.journal.steps(run_id)[("c", "action")]
    assert step.applied and step.error == \
        'expect.that[0] response.json.id == "other": actual "r-9" (str)'


def test_journal_keeps_request_and_response(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer())
    h.engine().resume()
    run_id = h.journal.list_runs()[0].id
    attempts = h.journal.attempts(run_id)
    b = next(a for a in attempts if a.step_id == "b" and a.phase == "action")
    assert json.loads(b.request_body or "") == {"a": "r-9"}
    assert b.request_headers["Idempotency-Key"] == f"{run_id}.b.action"
    assert json.loads(b.response_body or "") == {"id": "r-9"}
    assert b.status == 200 and b.outcome == "success" and b.duration_ms is not None
    assert b.finished_at is not None and b.finished_at >= b.started_at


