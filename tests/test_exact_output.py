"""What users read, to the character: the message of every way a run can be stuck, a cleanup that
passed, and `show` of a run with every kind of attempt. Piped output (NO_COLOR, COLUMNS=80);
times, durations and ports are the only things normalized."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Runs
from sagactl.output.run_views import format_show
from sagactl.records import (
    AttemptRecord,
    RunPhase,
    RunRecord,
    RunStatus,
    StepRecord,
    StepState,
)
from sagactl.testing.service import Fault, Service

HEAD = """\
version: 1
name: {name}
env: [BASE]
defaults:
  base_url: "{{{{ env.BASE }}}}"
  timeout: 300ms
  retry: {{attempts: 2, backoff: 10ms, jitter: false}}
steps:
"""


def saga(runs: Runs, name: str, steps: str) -> Path:
    return runs.file(HEAD.format(name=name) + steps, f"{name}.yaml")


def normalized(text: str, runs: Runs) -> str:
    text = text.replace(str(runs.tmp), "TMP").replace(runs.service.url, "http://SERVICE")
    text = re.sub(r"\d\d:\d\d:\d\d\.\d{3}", "HH:MM:SS.mmm", text)
    text = re.sub(r"\(\d+ms\)", "(Nms)", text)
    return re.sub(r" in \d+\.\d\ds", " in N.NNs", text)


def run(runs: Runs, path: Path, run_id: str, *args: str) -> tuple[int, str]:
    result = runs("run", str(path), "--run-id", run_id, *args, COLUMNS="80")
    return result.exit_code, normalized(result.stdout + result.stderr, runs)


def test_stuck_compensating_offers_compensate_alone(runs: Runs, service: Service) -> None:
    service.faults += [
        Fault("PUT", "/b/", status=422, body={"error": "no such sku"}),
        Fault("DELETE", "/a/", status=500, times=None, body={"error": "db down"}),
    ]
    path = saga(
        runs,
        "undo",
        """\
  - id: a
    action: {method: PUT, url: "/a/1"}
    compensate: {method: DELETE, url: "/a/1"}
  - id: b
    needs: [a]
    action: {method: PUT, url: "/b/1"}
""",
    )
    code, out = run(runs, path, "RUN-UNDO")
    assert code == 3
    assert out == (
        """\
RUN-UNDO
HH:MM:SS.mmm running saga undo (journal TMP/journal.db)
HH:MM:SS.mmm a action attempt 1 201 (Nms)
HH:MM:SS.mmm b action attempt 1 failure: status 422, expected 2xx (Nms)
HH:MM:SS.mmm b action failed: status 422, expected 2xx
HH:MM:SS.mmm -- compensate
HH:MM:SS.mmm a compensate attempt 1 retryable: status 500, retried (Nms)
HH:MM:SS.mmm a compensate attempt 2 retryable: status 500, retried (Nms)
HH:MM:SS.mmm a compensate failed: status 500, retried
run RUN-UNDO stuck in N.NNs
  cause: compensation not finished for a: status 500, retried
    --> TMP/undo.yaml:11 (a compensate)
    DELETE http://SERVICE/a/1
    response: {"error": "db down"}
  to roll it back: sagactl compensate RUN-UNDO
  if a's compensation was done by hand: sagactl skip RUN-UNDO a --reason 'WHY'
"""
    )


def test_stuck_after_a_pivot_offers_resume_alone(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/ship/", status=503, times=None))
    path = saga(
        runs,
        "pivot",
        """\
  - id: charge
    action: {method: PUT, url: "/charge/1"}
  - id: ship
    needs: [charge]
    action: {method: PUT, url: "/ship/1"}
    compensate: {method: DELETE, url: "/ship/1"}
""",
    )
    code, out = run(runs, path, "RUN-PIVOT")
    assert code == 3
    assert out.endswith(
        """\
HH:MM:SS.mmm ship action failed: status 503, retried
run RUN-PIVOT stuck in N.NNs
  cause: step ship: status 503, retried; pivot charge succeeded, so the saga can only go \
forward
    --> TMP/pivot.yaml:13 (ship action)
    PUT http://SERVICE/ship/1
    response: {"error": "injected"}
  to carry it on:  sagactl resume RUN-PIVOT
  if ship's action was done by hand: sagactl skip RUN-PIVOT ship --reason 'WHY'
"""
    ), out


def test_stuck_on_a_pivot_in_doubt_offers_resume_alone(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/charge/", kind="delay_after", delay=1.0, times=None))
    path = saga(
        runs,
        "doubt",
        """\
  - id: hold
    action: {method: PUT, url: "/hold/1"}
    compensate: {method: DELETE, url: "/hold/1"}
  - id: charge
    needs: [hold]
    action: {method: PUT, url: "/charge/1"}
""",
    )
    code, out = run(runs, path, "RUN-DOUBT")
    assert code == 3
    tail = out[out.index("run RUN-DOUBT stuck") :]
    assert tail == (
        """\
run RUN-DOUBT stuck in N.NNs
  cause: step charge: no answer within the timeout (0.3s); in doubt since attempt 1: it may \
have reached the service; pivot charge is in doubt: it can be neither compensated nor assumed \
undone
    --> TMP/doubt.yaml:14 (charge action)
    PUT http://SERVICE/charge/1
  to carry it on:  sagactl resume RUN-DOUBT
  once you know if charge took effect: sagactl mark RUN-DOUBT charge applied|absent --reason 'WHY'
"""
    ), tail


def test_stuck_confirming_offers_both(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/seat/1/confirmed", status=500, times=None))
    path = saga(
        runs,
        "tcc",
        """\
  - id: seat
    action: {method: PUT, url: "/seat/1"}
    compensate: {method: DELETE, url: "/seat/1"}
    confirm: {method: PUT, url: "/seat/1/confirmed"}
""",
    )
    code, out = run(runs, path, "RUN-TCC")
    assert code == 3
    tail = out[out.index("run RUN-TCC stuck") :]
    assert tail == (
        """\
run RUN-TCC stuck in N.NNs
  cause: confirm of step seat: status 500, retried
    --> TMP/tcc.yaml:12 (seat confirm)
    PUT http://SERVICE/seat/1/confirmed
    response: {"error": "injected"}
  to carry it on:  sagactl resume RUN-TCC
  to roll it back: sagactl compensate RUN-TCC
  if seat's confirm was done by hand: sagactl skip RUN-TCC seat --reason 'WHY'
"""
    ), tail


CLEANED = """\
  - id: a
    action: {method: PUT, url: "/a/1"}
    compensate: {method: DELETE, url: "/a/1"}
  - id: b
    needs: [a]
    action: {method: PUT, url: "/b/1"}
    compensate: {method: DELETE, url: "/b/1"}
  - id: look
    needs: [b]
    action: {method: GET, url: "/b/1"}
"""


def test_a_cleanup_that_passed_reads_as_success(runs: Runs, service: Service) -> None:
    code, out = run(runs, saga(runs, "smoke", CLEANED), "RUN-SMOKE", "--cleanup")
    assert code == 0
    assert service.resources == {}
    assert out == (
        """\
RUN-SMOKE
HH:MM:SS.mmm running saga smoke (journal TMP/journal.db)
HH:MM:SS.mmm a action attempt 1 201 (Nms)
HH:MM:SS.mmm b action attempt 1 201 (Nms)
HH:MM:SS.mmm look action attempt 1 200 (Nms)
run RUN-SMOKE succeeded in N.NNs
HH:MM:SS.mmm -- cleanup: undo every step
HH:MM:SS.mmm b compensate attempt 1 200 (Nms)
HH:MM:SS.mmm a compensate attempt 1 200 (Nms)
run RUN-SMOKE cleaned in N.NNs (succeeded, then --cleanup undid 2 steps)
"""
    )
    listed = runs("list").stdout
    assert re.fullmatch(r"RUN-SMOKE  smoke  cleaned +\S+ \S+\n", listed), listed
    shown = runs("show", "RUN-SMOKE").stdout
    assert "  status    cleaned (it succeeded, then --cleanup undid its steps)\n" in shown
    assert "cause" not in shown and "next:" not in shown


def test_a_cleanup_that_went_stuck_says_what_is_left(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("DELETE", "/b/", status=500, times=None))
    code, out = run(runs, saga(runs, "smoke", CLEANED), "RUN-LEFT", "--cleanup")
    assert code == 3
    tail = out[out.index("run RUN-LEFT stuck") :]
    assert tail == (
        """\
run RUN-LEFT stuck in N.NNs (succeeded, but its cleanup did not finish)
  cause: cleanup not finished for a, b: status 500, retried
    --> TMP/smoke.yaml:15 (b compensate)
    DELETE http://SERVICE/b/1
    response: {"error": "injected"}
  to finish the cleanup: sagactl compensate RUN-LEFT
  if b's compensation was done by hand: sagactl skip RUN-LEFT b --reason 'WHY'
"""
    ), tail
    shown = runs("show", "RUN-LEFT").stdout
    assert "  status    stuck (while cleaning up)\n" in shown
    assert "\nnext:\n  to finish the cleanup: sagactl compensate RUN-LEFT\n" in shown
    service.clear_faults()
    finished = runs("resume", "RUN-LEFT")
    assert finished.exit_code == 0, finished.stdout
    assert "run RUN-LEFT cleaned in " in finished.stdout
    assert service.resources == {}


@pytest.fixture
def utc() -> Iterator[None]:
    import os

    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


T0 = 1_780_000_000.0


def attempt(
    n: int,
    step: str,
    phase: str,
    at: float,
    took: float | None,
    outcome: str | None,
    status: int | None,
    error: tuple[str, str] | None = None,
    *,
    doubt: bool = False,
    body: str | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        id=n,
        step_id=step,
        phase=phase,
        attempt=n,
        span_id="0" * 16,
        started_at=T0 + at,
        finished_at=T0 + at + took / 1000 if took is not None else None,
        duration_ms=took,
        method="PUT" if phase == "action" else "DELETE",
        url=f"http://127.0.0.1/{step}",
        request_headers={"Idempotency-Key": f"RUN.{step}.{phase}"},
        request_body=None,
        outcome=outcome,
        status=status,
        error_class=error[0] if error else None,
        error_message=error[1] if error else None,
        response_headers={"Content-Type": "application/json"} if body else None,
        response_body=body,
        in_doubt=doubt,
    )


def test_show_of_a_run_with_every_kind_of_attempt(utc: None) -> None:
    run = RunRecord(
        id="RUN-SHOW",
        name="catalogue",
        saga_path="sagas/catalogue.yaml",
        saga_text="",
        saga_hash="ab" * 32,
        inputs={"name": "Überzug"},
        env={},
        status=RunStatus.STUCK,
        phase=RunPhase.COMPENSATE,
        pivot_passed=False,
        trace_id="0" * 32,
        error="compensation not finished for stock: status 500, retried",
        created_at=T0,
        updated_at=T0 + 75,
        finished_at=None,
        owner_host=None,
        owner_pid=None,
        lease_expires=None,
        step_ids=("stock", "price", "search"),
    )

    def step(
        sid: str, phase: str, state: StepState, n: int, error: str | None = None
    ) -> StepRecord:
        return StepRecord(sid, phase, state, True, {}, n, None, error, T0)

    steps = {
        ("stock", "action"): StepRecord(
            "stock", "action", StepState.SUCCEEDED, True, {"id": "ü-1"}, 2, 201, None, T0
        ),
        ("stock", "compensate"): step("stock", "compensate", StepState.FAILED, 2, "status 500"),
        ("price", "action"): step("price", "action", StepState.IN_DOUBT, 2, "timed out"),
        ("price", "compensate"): step("price", "compensate", StepState.SUCCEEDED, 1),
        ("search", "action"): step("search", "action", StepState.FAILED, 1, "check failed"),
    }
    attempts = [
        attempt(1, "stock", "action", 0.010, 3.2, "retryable", 503, ("HTTPStatus", "status 503")),
        attempt(2, "stock", "action", 0.120, 2.0, "success", 201),
        attempt(
            1,
            "price",
            "action",
            0.125,
            300.0,
            "retryable",
            None,
            ("ReadTimeout", "timed out"),
            doubt=True,
        ),
        attempt(2, "price", "action", 0.5, None, "interrupted", None, ("Interrupted", "killed")),
        attempt(
            1,
            "search",
            "action",
            0.6,
            1.5,
            "failure",
            200,
            ("Expectation", "check failed"),
            body='{"name": "\\u00dcberzug"}',
        ),
        attempt(1, "price", "compensate", 61.0, 1.0, "success", 200),
        attempt(
            1, "stock", "compensate", 61.2, 1.0, "retryable", 500, ("HTTPStatus", "status 500")
        ),
        attempt(2, "stock", "compensate", 62.5, None, None, None),
    ]
    shown = format_show(run, "stuck", steps, attempts, run.step_ids or ())
    assert shown == (
        """\
run RUN-SHOW
  saga      catalogue (sagas/catalogue.yaml, sha256 abababababab)
  status    stuck (while compensating)
  started   2026-05-28 20:26:40
  cause     compensation not finished for stock: status 500, retried
  inputs    {"name": "Überzug"}

next:
  to roll it back: sagactl compensate RUN-SHOW
  if stock's compensation was done by hand: sagactl skip RUN-SHOW stock --reason 'WHY'

steps:
  stock   action      succeeded  2 attempts  outputs {"id": "ü-1"}
  stock   compensate  failed     2 attempts  status 500
  price   action      in doubt   2 attempts  timed out
  price   compensate  succeeded  1 attempt
  search  action      failed     1 attempt   check failed

timeline:
  stock action #1     |█                                       | 503
  stock action #2     |█                                       | 201
  price action #1     |█                                       | retryable (in doubt)
  price action #2     |█                                       | interrupted
  search action #1    |█                                       | 200
  price compensate #1 |                                       █| 200
  stock compensate #1 |                                       █| 500
  stock compensate #2 |                                       █| in flight
                       0                                 62.490s

attempts:
  +  0.010s stock action #1      503 retryable 3ms  status 503
            PUT http://127.0.0.1/stock
  +  0.120s stock action #2      201 success 2ms
            PUT http://127.0.0.1/stock
  +  0.125s price action #1        - retryable, in doubt 300ms  timed out
            PUT http://127.0.0.1/price
  +  0.500s price action #2        - interrupted -  killed
            PUT http://127.0.0.1/price
  +  0.600s search action #1     200 failure 2ms  check failed
            PUT http://127.0.0.1/search
  + 61.000s price compensate #1  200 success 1ms
            DELETE http://127.0.0.1/price
  + 61.200s stock compensate #1  500 retryable 1ms  status 500
            DELETE http://127.0.0.1/stock
  + 62.500s stock compensate #2    - in flight -
            DELETE http://127.0.0.1/stock

failing attempt: stock compensate #2
  > DELETE http://127.0.0.1/stock
  > Idempotency-Key: RUN.stock.compensate
  * no response: in flight"""
    ), shown


def test_a_cleanup_of_read_only_steps_has_nothing_to_undo(runs: Runs, service: Service) -> None:
    path = saga(runs, "look", '  - id: look\n    action: {method: GET, url: "/a/1"}\n')
    service.faults.append(Fault("GET", "/a/", status=200, body={"ok": True}))
    code, out = run(runs, path, "RUN-LOOK", "--cleanup")
    assert code == 0
    assert out.endswith(
        """\
run RUN-LOOK succeeded in N.NNs
HH:MM:SS.mmm -- cleanup: undo every step
run RUN-LOOK cleaned in N.NNs (succeeded; --cleanup had nothing to undo)
"""
    ), out


def test_compensating_a_run_cleaned_up_already_sends_nothing(runs: Runs, service: Service) -> None:
    code, _ = run(runs, saga(runs, "smoke", CLEANED), "RUN-TWICE", "--cleanup")
    assert code == 0
    count = len(service.received)
    again = runs("compensate", "RUN-TWICE", COLUMNS="80")
    assert again.exit_code == 0, again.stdout + again.stderr
    out = normalized(again.stdout, runs)
    assert out.endswith(
        "run RUN-TWICE cleaned in N.NNs (it was cleaned up already: nothing more to undo)\n"
    ), out
    assert len(service.received) == count
