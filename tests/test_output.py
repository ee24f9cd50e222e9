"""What users see in plain mode (exactly), in JSON (as documented), with -v (curl-style), and
that no secret reaches any of it."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import quote

import sagas
from helpers import ROOT, TOKEN, Runs
from sagactl.testing.service import Fault, Service

MASKS = [
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<RUN>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b"), "<TIME>"),
    (re.compile(r"\(\d+ms\)"), "(<MS>)"),
    (re.compile(r"\bin \d+\.\d+s\b"), "in <S>s"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
    (re.compile(r"\(journal [^)]+\)"), "(journal <JOURNAL>)"),
]


def masked(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def test_plain_output_of_a_succeeding_run(runs: Runs) -> None:
    result = runs("run", str(runs.file(sagas.THREE)), COLUMNS="80")
    assert result.exit_code == 0
    assert (
        masked(result.stdout)
        == """\
<RUN>
<TIME> running saga three (journal <JOURNAL>)
<TIME> a action attempt 1 201 (<MS>)
<TIME> b action attempt 1 201 (<MS>)
<TIME> c action attempt 1 201 (<MS>)
run <RUN> succeeded in <S>s
"""
    )


def test_plain_output_of_a_compensated_run(runs: Runs, service: Service) -> None:
    service.faults += [
        Fault("PUT", "/b/", status=503, times=1),
        Fault("PUT", "/c/", status=409, body={"error": "taken"}),
    ]
    path = runs.file(sagas.THREE)
    line = (
        next(i for i, text in enumerate(sagas.THREE.splitlines(), start=1) if text == "  - id: c")
        + 1
    )
    result = runs("run", str(path), COLUMNS="80")
    assert result.exit_code == 1
    assert (
        masked(result.stdout)
        == f"""\
<RUN>
<TIME> running saga three (journal <JOURNAL>)
<TIME> a action attempt 1 201 (<MS>)
<TIME> b action attempt 1 retryable: status 503, retried (<MS>)
<TIME> b action attempt 2 201 (<MS>)
<TIME> c action attempt 1 failure: status 409, expected 2xx (<MS>)
<TIME> c action failed: status 409, expected 2xx
<TIME> -- compensate
<TIME> b compensate attempt 1 200 (<MS>)
<TIME> a compensate attempt 1 200 (<MS>)
run <RUN> compensated in <S>s
  cause: step c: status 409, expected 2xx
    --> {path}:{line} (c action)
    PUT http://127.0.0.1:<PORT>/c/<RUN>
    response: {{"error": "taken"}}
"""
    )


def test_an_unmet_expectation_shows_the_actual_value_and_type(runs: Runs, service: Service) -> None:
    text = sagas.THREE.replace(
        "json: {v: 3}}", 'json: {v: 3}, expect: {that: ["response.json.v == 4"]}}'
    )
    result = runs("run", str(runs.file(text)))
    assert result.exit_code == 1
    assert "cause: step c: expect.that[0] response.json.v == 4: actual 3 (int)" in result.stdout


def _documented_fields() -> dict[str, set[str]]:
    """The fields column of docs/events.md's table, without the parenthesised notes."""
    table = (ROOT / "docs" / "events.md").read_text().split("## The summary")[0]
    return {
        kind: set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", fields)))
        for kind, fields in re.findall(r"^\| `(\w+)` \| (.*?) \|", table, re.M)
        if kind != "event"
    }


def test_every_json_event_has_exactly_the_documented_fields(runs: Runs, service: Service) -> None:
    service.faults += [Fault("PUT", "/b/", status=503), Fault("PUT", "/c/", status=400)]
    result = runs("run", str(runs.file(sagas.THREE)), "--output", "json")
    foreach = runs("run", str(runs.file(sagas.ORDER)), "-i", 'skus=["A"]', "--output", "json")
    documented = _documented_fields()
    assert set(documented) == {
        "run_started",
        "phase_started",
        "attempt_started",
        "attempt_finished",
        "retry_scheduled",
        "items_started",
        "step_finished",
        "run_finished",
    }
    seen = set()
    for record in map(json.loads, (result.stdout + foreach.stdout).splitlines()):
        kind = record["event"]
        seen.add(kind)
        if kind == "summary":
            assert record["exit_code"] in (result.exit_code, foreach.exit_code) == (1, 0)
            continue
        assert set(record) - {"v", "event", "time"} == documented[kind], kind
    assert seen == set(documented) | {"summary"}


def test_verbose_shows_requests_and_responses_curl_style(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/b/", status=503))
    result = runs("run", str(runs.file(sagas.THREE)), "-v")
    lines = result.stdout.splitlines()
    assert "* attempt 2 in 0.010s" in lines
    first = lines.index(next(line for line in lines if line.startswith("> PUT ")))
    assert "> Authorization: ***" in lines[first : first + 10]
    assert any(line.startswith("> Idempotency-Key: ") for line in lines[first : first + 10])
    assert "< 201" in lines
    assert any(line.startswith('< {"id": ') for line in lines)


def test_no_secret_in_verbose_json_or_junit(runs: Runs, service: Service) -> None:
    text = sagas.THREE.replace("json: {v: 3}", 'json: {v: "{{ secrets.TOKEN }}"}').replace(
        'url: "/c/{{ run.id }}",', 'url: "/c/{{ run.id }}?t={{ secrets.TOKEN }}",'
    )
    service.faults.append(Fault("PUT", "/c/", status=422, body={"echo": TOKEN}))
    path = runs.file(text)
    report = runs.tmp / "r.xml"
    outputs = [
        runs("run", str(path), "-v", "--junit", str(report)),
        runs("run", str(path), "--output", "json"),
    ]
    assert service.requests("PUT", "/c/")[0].body == {"v": TOKEN}
    shown = "".join(r.stdout + r.stderr for r in outputs) + report.read_text()
    for form in [
        TOKEN,
        quote(TOKEN, safe=""),
        json.dumps(TOKEN)[1:-1],
        base64.b64encode(TOKEN.encode()).decode(),
        "5ecr3t",
    ]:
        assert form not in shown, form
    assert "***" in shown


def test_show_draws_a_timeline_and_the_failing_exchange(runs: Runs, service: Service) -> None:
    service.faults += [
        Fault("PUT", "/b/", status=503, times=2),
        Fault("PUT", "/c/", status=409, body={"error": "taken"}),
    ]
    _, run_id = runs.run(sagas.THREE)
    shown = runs("show", run_id).stdout.splitlines()
    start = shown.index("timeline:")
    bars = shown[start + 1 : start + 9]
    assert [line.split("|")[0].strip() for line in bars[:7]] == [
        "a action #1",
        "b action #1",
        "b action #2",
        "b action #3",
        "c action #1",
        "b compensate #1",
        "a compensate #1",
    ]
    assert bars[7].strip().startswith("0 ") and bars[7].endswith("s")  # the time axis
    b_retry = bars[2].split("|")[1]
    assert "·" in b_retry and "█" in b_retry  # the backoff wait, then the attempt
    assert all(len(line.split("|")[1]) == 40 for line in bars[:7])
    failing = shown[shown.index("failing attempt: c action #1") :]
    assert failing[1].startswith("  > PUT http://127.0.0.1:")
    assert "  < 409" in failing and '  < {"error": "taken"}' in failing


PARALLEL = """\
version: 1
name: parallel
env: [BASE]
defaults:
  base_url: "{{ env.BASE }}"
  retry: {attempts: 1}
steps:
  - id: a
    action: {method: PUT, url: "/a/{{ run.id }}"}
    compensate: {method: DELETE, url: "/a/{{ run.id }}"}
  - id: fast
    needs: [a]
    action: {method: PUT, url: "/fast/{{ run.id }}"}
  - id: slow
    needs: [a]
    action: {method: PUT, url: "/slow/{{ run.id }}"}
"""


def test_when_parallel_steps_fail_the_cause_is_all_one_steps(runs: Runs, service: Service) -> None:
    """Its message, its line, its request and its response: never one step's message with
    another's location."""
    # Both fail; the slow one last.
    service.faults += [
        Fault("PUT", "/fast/", status=409, body={"error": "fast refused"}),
        Fault("PUT", "/slow/", status=422, delay=0.3, body={"error": "slow refused"}),
    ]
    result = runs("run", str(runs.file(PARALLEL)), COLUMNS="80")
    assert result.exit_code == 1, result.stdout
    summary = result.stdout[result.stdout.index("  cause:") :]
    cause = re.search(r"cause: step (\w+):", summary)
    assert cause, summary
    step = cause.group(1)
    other = {"fast": "slow", "slow": "fast"}[step]
    line = (
        next(
            i for i, text in enumerate(PARALLEL.splitlines(), start=1) if text == f"  - id: {step}"
        )
        + 2
    )
    assert f"--> {runs.tmp / 'saga.yaml'}:{line} ({step} action)" in summary
    assert f"/{step}/" in summary and f"{step} refused" in summary
    assert f"/{other}/" not in summary and f"{other} refused" not in summary


def test_show_json_and_junit_say_a_step_is_in_doubt_because_of_an_earlier_attempt(
    runs: Runs, service: Service, tmp_path: Path
) -> None:
    """Attempt 1 reached the service and timed out; attempts 2 and 3 met 503: the step is
    in doubt, and every view says so and why."""
    service.faults += [
        Fault("PUT", "/c/", kind="delay_after", delay=2.5),
        Fault("PUT", "/c/", status=503, times=2),
    ]
    junit = tmp_path / "report.xml"
    result, run_id = runs.run(sagas.THREE, "--junit", str(junit))
    assert result.exit_code == 1, result.stdout
    assert (
        "cause: step c: status 503, retried; in doubt: attempt 1 may have reached the "
        "service" in result.stdout
    )
    assert service.requests("DELETE", "/c/")  # undone, though the last answer was a 503
    shown = runs("show", run_id).stdout
    assert re.search(r"\n  c +action +in doubt +3 attempts +status 503", shown), shown
    assert "in doubt: attempt 1" in shown
    assert re.search(r"c action #1 +- retryable, in doubt 2\.\d\ds  no answer", shown), shown
    assert re.search(r"c action #3 +503 retryable \d+ms", shown), shown
    record = json.loads(runs("show", run_id, "--output", "json").stdout)
    assert [
        a["in_doubt"] for a in record["attempts"] if a["step"] == "c" and a["phase"] == "action"
    ] == [True, False, False]
    report = junit.read_text()
    assert (
        "action in doubt: status 503, retried; in doubt: attempt 1 may have reached" in report
        and "in doubt: attempt 1 may have reached the service" in report
    )
