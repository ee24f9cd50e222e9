"""`poll` (SPEC §2.5): a request sent again until its answer says the work is done, each poll an
attempt in the journal; checked on what the service received and on the journal."""

from __future__ import annotations

import re

import sagas
from helpers import Runs
from sagactl.journal import open_journal
from sagactl.testing.service import Fault, Service


def not_yet(times: int | None, state: str = "running") -> Fault:
    """GETs of the job answer `state` (200) this many times, then the job as stored."""
    return Fault("GET", "/jobs/", status=200, body={"state": state}, times=times)


def attempts(runs: Runs, run_id: str) -> list[tuple[int, str | None]]:
    with open_journal(runs.journal) as journal:
        return [(a.attempt, a.outcome) for a in journal.attempts(run_id) if a.step_id == "wait"]


def test_polls_until_done_and_reads_outputs_from_the_last_answer(
    runs: Runs, service: Service
) -> None:
    service.faults.append(not_yet(3))
    result, run_id = runs.run(sagas.POLL)
    assert result.exit_code == 0, result.stdout
    assert len(service.requests("GET", "/jobs/")) == 4
    assert attempts(runs, run_id) == [
        (1, "pending"),
        (2, "pending"),
        (3, "pending"),
        (4, "success"),
    ]
    assert (
        "wait action attempt 2 pending: not done yet: response.json.state == 'done' is false"
        in (result.stdout)
    )
    with open_journal(runs.journal) as journal:
        assert journal.steps(run_id)[("wait", "action")].outputs == {"result": 42}
    shown = runs("show", run_id).stdout
    assert re.search(r"wait action #3 +200 pending \S+  not done yet", shown), shown
    # every poll carries the same idempotency key, and its own attempt number
    polls = service.requests("GET", "/jobs/")
    assert {r.headers["Idempotency-Key"] for r in polls} == {f"{run_id}.wait.action"}
    assert [r.headers["Saga-Attempt"] for r in polls] == ["1", "2", "3", "4"]


def test_polls_do_not_use_up_the_retries(runs: Runs, service: Service) -> None:
    """Two attempts a request, yet a 503 between polls is retried each time."""
    service.faults += [
        not_yet(1),
        Fault("GET", "/jobs/", status=503),
        not_yet(1),
        Fault("GET", "/jobs/", status=503),
    ]
    result, run_id = runs.run(sagas.POLL)
    assert result.exit_code == 0, result.stdout
    assert [o for _, o in attempts(runs, run_id)] == [
        "pending",
        "retryable",
        "pending",
        "retryable",
        "success",
    ]


def test_a_poll_that_is_never_done_fails_the_step_and_undoes_the_run(
    runs: Runs, service: Service
) -> None:
    service.faults.append(not_yet(None))
    result, run_id = runs.run(sagas.POLL.replace("timeout: 5s", "timeout: 200ms"))
    assert result.exit_code == 1, result.stdout
    assert re.search(
        r"cause: step wait: poll: not done after 200ms \(\d+ polls\): "
        r"response.json.state == 'done' is still false",
        result.stdout,
    ), result.stdout
    assert service.resources == {}  # the job started was undone
    outcomes = [o for _, o in attempts(runs, run_id)]
    assert outcomes[-1] == "failure" and set(outcomes[:-1]) == {"pending"}


def test_fail_if_ends_the_poll_as_a_failure(runs: Runs, service: Service) -> None:
    service.faults.append(not_yet(None, "failed"))
    result, run_id = runs.run(sagas.POLL)
    assert result.exit_code == 1, result.stdout
    assert "cause: step wait: poll.fail_if response.json.state == 'failed': is true" in (
        result.stdout
    )
    assert attempts(runs, run_id) == [(1, "failure")]
    assert service.resources == {}


def test_poll_expressions_are_checked_before_anything_is_sent(runs: Runs, service: Service) -> None:
    bad = sagas.POLL.replace("response.json.state == 'done'", "respons.json.state == 'done'")
    result = runs("run", str(runs.file(bad)))
    assert result.exit_code == 2
    assert "steps[1].action.poll.until: undefined name 'respons'" in result.stderr, result.stderr
    missing = sagas.POLL.replace("        until: \"response.json.state == 'done'\"\n", "")
    result = runs("run", str(runs.file(missing)))
    assert result.exit_code == 2 and "poll: missing required key 'until'" in result.stderr, (
        result.stderr
    )
    assert service.received == []


def test_plan_says_how_a_request_is_polled(runs: Runs, service: Service) -> None:
    planned = runs("plan", str(runs.file(sagas.POLL)))
    assert planned.exit_code == 0, planned.stderr
    assert (
        "polled every 10ms until response.json.state == 'done', failing if "
        "response.json.state == 'failed' (at most 5s)" in planned.stdout
    ), planned.stdout
    assert service.received == []


def test_a_poll_reads_the_whole_body_when_only_until_reads_it(runs: Runs, service: Service) -> None:
    """An answer past what the journal keeps (64 KiB) is still read whole for `until`."""
    big = "x" * 100_000
    service.faults.append(Fault("GET", "/jobs/", status=200, body={"pad": big, "state": "running"}))
    text = sagas.POLL.replace('    outputs: {result: "{{ response.json.result }}"}\n', "")
    text = text.replace(
        '/jobs/{{ run.id }}", json: {state: done, result: 42}',
        '/jobs/{{ run.id }}", json: {state: done, pad: "' + "y" * 100_000 + '"}',
    )
    result, run_id = runs.run(text)
    assert result.exit_code == 0, result.stdout[-2000:]
    assert [o for _, o in attempts(runs, run_id)] == ["pending", "success"]


def test_a_poll_without_a_pause_is_refused(runs: Runs, service: Service) -> None:
    result = runs("run", str(runs.file(sagas.POLL.replace("every: 10ms", "every: 0s"))))
    assert result.exit_code == 2
    assert "steps[1].action.poll.every: a wait of 0 polls without pause" in result.stderr, (
        result.stderr
    )
    assert service.received == []


def test_a_json_null_body_is_not_called_not_json() -> None:
    from sagactl.engine.attempts import body_hint
    from sagactl.executors.base import ResponseView

    assert body_hint(ResponseView(200, {}, "null", 1.0), "response.json.ok") == ""
    hint = body_hint(ResponseView(200, {"content-type": "text/html"}, "<p>", 1.0), "response.json")
    assert hint == " (the body is not JSON; Content-Type: text/html)"
