"""The engine with httpx.MockTransport, a real journal in a temporary file, and an injected
sleep and clock: nothing waits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import http_executors
from sagactl.definition.loader import load_text
from sagactl.engine.machine import Engine
from sagactl.engine.runs import create_run
from sagactl.events import AttemptFinished, Event, PhaseStarted, RunFinished, RunStarted
from sagactl.journal import open_journal
from sagactl.records import RunStatus

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
    def __init__(
        self, tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response], text: str = CHAIN
    ) -> None:
        self.saga = load_text(text, "chain.yaml")
        self.journal = open_journal(tmp_path / "j.db")
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
        return Engine(
            self.saga,
            run,
            journal=self.journal,
            executors=http_executors(self.client),
            secrets={},
            on_event=self.events.append,
            sleep=self.sleeps.append,
            clock=lambda: self.now,
        )


def answer(failing: dict[str, int] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        code = (failing or {}).get(f"{request.method} {request.url.path}", 200)
        return httpx.Response(code, json={"id": "r-9"})

    return handler


def test_outputs_are_rendered_into_later_requests_and_compensations(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer({"POST /c": 400}))
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sent == [
        ("POST", "/a"),
        ("POST", "/b"),
        ("POST", "/c"),
        ("DELETE", "/b"),
        ("DELETE", "/a/r-9"),
    ]


def test_confirms_follow_every_action_in_dependency_order(tmp_path: Path) -> None:
    h = Harness(tmp_path, answer())
    assert h.engine().resume() is RunStatus.SUCCEEDED
    assert h.sent == [
        ("POST", "/a"),
        ("POST", "/b"),
        ("POST", "/c"),
        ("POST", "/a/r-9/confirm"),
        ("POST", "/b/confirm"),
        ("POST", "/c/confirm"),
    ]


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
    text = CHAIN.replace(
        "action: {method: POST, url: /c}",
        "action: {method: POST, url: /c, expect: {that: ['response.json.id == \"other\"']}}",
    )
    h = Harness(tmp_path, answer(), text)
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sent[-3:] == [("DELETE", "/c"), ("DELETE", "/b"), ("DELETE", "/a/r-9")]
    run_id = h.journal.list_runs()[0].id
    step = h.journal.steps(run_id)[("c", "action")]
    assert (
        step.applied
        and step.error == 'expect.that[0] response.json.id == "other": actual "r-9" (str)'
    )


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


def scripted(script: dict[str, list[Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """Answers each `METHOD /path` with its script in turn (an exception is raised), then
    200: one entry per attempt."""

    def handler(request: httpx.Request) -> httpx.Response:
        queue = script.get(f"{request.method} {request.url.path}", [])
        answer = queue.pop(0) if queue else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, json={"id": "r-9"})

    return handler


def timed_out() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("timed out")


def test_the_loop_retries_only_retryable_attempts_up_to_the_policy(tmp_path: Path) -> None:
    h = Harness(tmp_path, scripted({"POST /b": [503, 503, 503]}))
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sent.count(("POST", "/b")) == 3 and h.sleeps[:2] == pytest.approx([0.1, 0.2])
    run_id = h.journal.list_runs()[0].id
    b = [a for a in h.journal.attempts(run_id) if a.step_id == "b"]
    assert [(a.attempt, a.outcome, a.status, a.in_doubt) for a in b] == [
        (1, "retryable", 503, False),
        (2, "retryable", 503, False),
        (3, "retryable", 503, False),
    ]
    step = h.journal.steps(run_id)[("b", "action")]
    assert step.state.value == "failed" and not step.applied
    assert ("DELETE", "/b") not in h.sent  # three definite refusals: nothing to undo


@pytest.mark.parametrize(
    "later", [[503, 503], [422], [httpx.ConnectError("refused"), 503], [503, 422]]
)
def test_one_attempt_in_doubt_makes_the_step_in_doubt_whatever_later_ones_say(
    tmp_path: Path, later: list[Any]
) -> None:
    """SPEC §3.1: a later 503, 4xx or refused connection proves nothing about an earlier
    attempt that may have reached the service. The step is compensated."""
    h = Harness(tmp_path, scripted({"POST /b": [timed_out(), *later]}))
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert ("DELETE", "/b") in h.sent and ("DELETE", "/a/r-9") in h.sent
    run_id = h.journal.list_runs()[0].id
    step = h.journal.steps(run_id)[("b", "action")]
    assert step.state.value == "in_doubt" and step.applied
    assert "in doubt: attempt 1 may have reached the service" in (step.error or "")
    assert next(a.in_doubt for a in h.journal.attempts(run_id) if a.step_id == "b")


def test_a_success_after_an_attempt_in_doubt_settles_the_step(tmp_path: Path) -> None:
    h = Harness(tmp_path, scripted({"POST /b": [timed_out(), 200]}))
    assert h.engine().resume() is RunStatus.SUCCEEDED
    run_id = h.journal.list_runs()[0].id
    assert h.journal.steps(run_id)[("b", "action")].state.value == "succeeded"


PIVOT = """\
version: 1
name: pivot
defaults:
  base_url: http://127.0.0.1:9
  retry: {attempts: 2, backoff: 100ms, jitter: false}
steps:
  - id: a
    action: {method: POST, url: /a}
    compensate: {method: DELETE, url: /a}
  - id: charge
    action: {method: POST, url: /charge}
"""


def test_a_pivot_in_doubt_then_refused_holds_the_run_stuck(tmp_path: Path) -> None:
    h = Harness(tmp_path, scripted({"POST /charge": [timed_out(), 422]}), PIVOT)
    assert h.engine().resume() is RunStatus.STUCK
    assert ("DELETE", "/a") not in h.sent
    run = h.journal.list_runs()[0]
    assert "pivot charge is in doubt" in (run.error or "")


def test_a_pivot_that_took_effect_then_failed_a_check_holds_the_run_stuck(tmp_path: Path) -> None:
    text = PIVOT.replace(
        "action: {method: POST, url: /charge}",
        "action: {method: POST, url: /charge, expect: {that: ['response.json.id == \"x\"']}}",
    )
    h = Harness(tmp_path, scripted({}), text)
    assert h.engine().resume() is RunStatus.STUCK
    assert ("DELETE", "/a") not in h.sent
    assert "pivot charge took effect" in (h.journal.list_runs()[0].error or "")


def test_a_resume_keeps_the_doubt_of_an_earlier_process(tmp_path: Path) -> None:
    """A killed process left b's attempt without a result; the resume's attempt is refused
    (200 where 201 was expected): b is still in doubt, and compensated."""
    text = CHAIN.replace(
        "action: {method: POST, url: /b,",
        "action: {method: POST, url: /b, expect: {status: [201]},",
    )
    h = Harness(tmp_path, scripted({}), text)
    engine = h.engine()
    run_id = h.journal.list_runs()[0].id
    h.journal.begin_attempt(
        run_id, "b", "action", 1, span_id="s", method="POST", url="u", headers={}, body=None
    )  # sent; the process died
    h.journal.release_lease(run_id, engine.owner)
    resumed = Engine(
        h.saga,
        h.journal.get_run(run_id),
        journal=h.journal,
        executors=http_executors(h.client),
        secrets={},
        sleep=h.sleeps.append,
        clock=lambda: h.now,
    )
    h.journal.set_run(run_id, status=RunStatus.RUNNING)
    assert resumed.resume() is RunStatus.COMPENSATED
    assert ("DELETE", "/b") in h.sent
    assert h.journal.steps(run_id)[("b", "action")].state.value == "in_doubt"


def test_no_retry_after_a_stop(tmp_path: Path) -> None:
    h = Harness(tmp_path, scripted({"POST /a": [503, 503]}))
    engine = h.engine()
    h.sleeps = []
    engine.sleep = lambda seconds: engine.stop.set()  # the signal comes during the backoff
    with pytest.raises(Exception, match="interrupted"):
        engine.resume()
    assert h.sent == [("POST", "/a")]
    run_id = h.journal.list_runs()[0].id
    # Every attempt had a definite answer: the step is unfinished, not in doubt.
    assert h.journal.steps(run_id)[("a", "action")].state.value == "running"


def test_no_retry_past_the_sagas_deadline(tmp_path: Path) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        h.now += 0.95  # the retry's 100 ms wait would end past the saga's 1 s timeout
        return httpx.Response(503)

    h = Harness(tmp_path, slow)
    assert h.engine().resume() is RunStatus.COMPENSATED
    assert h.sent.count(("POST", "/a")) == 1 and h.sleeps == []
