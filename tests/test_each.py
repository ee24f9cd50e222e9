"""`sagactl run FILE --each inputs.jsonl` (SPEC §8): one run per line in one process. Checked
on the service's own record: what it holds, and how many times each effect was applied."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable

import pytest

from helpers import TOKEN, Runs, effects, lines_file, wait_for
from sagactl.journal import open_journal
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service
from sagas import LINES


def test_every_line_runs_and_each_bad_line_is_named_and_skipped(
    runs: Runs, service: Service
) -> None:
    service.faults.append(Fault("PUT", "/b/7", status=422, times=None))
    saga = runs.file(LINES)
    each = lines_file(
        runs,
        range(1, 13),
        [
            "not json\n",
            '{"n": "twelve"}\n',
            "\n",
            '{"n": 99, "colour": "red"}\n',
            "[1, 2]\n",
        ],
    )
    result = runs("run", str(saga), "--each", str(each), "--concurrency", "4")
    assert result.exit_code == 2, result  # refused lines are the worst here: nothing of them sent
    out = result.stdout
    assert out.splitlines()[0].startswith("batch ")
    assert f"refused: {each}:13:1: not valid JSON: Expecting value (nothing sent)" in out
    assert f"refused: {each}:14: input 'n':" in out and "(expected an integer)" in out
    assert f"refused: {each}:16: input 'colour': not declared by saga 'lines'" in out
    assert f"refused: {each}:17: expected a JSON object of input names to values" in out
    assert "line 7: run " in out and "compensated: step b: status 422" in out
    assert f"16 lines of {each}: 11 succeeded, 1 compensated, 4 refused" in out
    assert "refused lines (nothing of them was sent): 13, 14, 16, 17" in out
    # The service's record: every good line applied once, line 7 undone, the rest never sent.
    held = set(service.resources)
    assert held == {f"/{s}/{n}" for n in range(1, 13) if n != 7 for s in "ab"}
    assert set(effects(service).values()) == {1}
    assert not [r for r in service.received if "/99" in r.path or "twelve" in r.path]
    with open_journal(runs.journal) as journal:
        assert journal.count_runs() == {"succeeded": 11, "compensated": 1}


def test_at_most_concurrency_runs_at_once(runs: Runs, service: Service) -> None:
    hold = Fault("PUT", "/a/", kind="hold", times=None)
    service.faults.append(hold)
    saga, each = runs.file(LINES), lines_file(runs, range(1, 10))
    process = runs.start("run", str(saga), "--each", str(each), "--concurrency", "3")
    try:
        wait_for(lambda: service.busy == 3)
        hold.release.set()
        _, err = process.communicate(timeout=60)
    finally:
        hold.release.set()
        process.kill()
    assert process.returncode == 0, err
    assert service.most_busy == 3  # the service never had more than 3 requests at once
    assert set(effects(service).values()) == {1} and len(effects(service)) == 18


def test_a_batch_killed_then_given_again_finishes_each_line_applied_once(
    runs: Runs, service: Service, new_journal: Callable[[], str]
) -> None:
    runs.journal = new_journal()  # type: ignore[assignment]  # a file, then PostgreSQL
    # Line 6's b is held by the service while the process is SIGKILLed: in doubt.
    hold = Fault("PUT", "/b/6", kind="hold")
    service.faults += [hold, Fault("PUT", "/a/1", status=503, times=2)]
    saga, each = runs.file(LINES), lines_file(runs, range(1, 41))
    command = ("run", str(saga), "--each", str(each), "--run-id", "nightly-1", "--concurrency", "4")
    process = runs.start(*command)
    wait_for(lambda: service.busy >= 1 and any("/b/6" in r.path for r in service.received))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    hold.release.set()  # the held b lands now, after its sender died
    wait_for(lambda: service.busy == 0)
    again = runs(*command)
    assert again.exit_code == 0, again
    assert "40 lines of" in again.stdout and "40 succeeded" in again.stdout
    assert "had ended before" in again.stdout  # those were left alone
    assert set(service.resources) == {f"/{s}/{n}" for n in range(1, 41) for s in "ab"}
    assert set(effects(service).values()) == {1}, effects(service).most_common(3)
    # Run a third time: nothing is sent.
    sent = len(service.received)
    third = runs(*command)
    assert third.exit_code == 0 and "40 of them had ended before" in third.stdout
    assert len(service.received) == sent


def test_ctrl_c_stops_starting_runs_and_says_how_to_finish(runs: Runs, service: Service) -> None:
    hold = Fault("PUT", "/a/3", kind="hold")
    service.faults.append(hold)
    saga, each = runs.file(LINES), lines_file(runs, range(1, 31))
    command = ("run", str(saga), "--each", str(each), "--run-id", "ctrlc-1", "--concurrency", "2")
    process = runs.start(*command)
    try:
        wait_for(lambda: service.busy == 1 and any("/a/3" in r.path for r in service.received))
        process.send_signal(signal.SIGINT)
        threading.Timer(0.2, hold.release.set).start()
        out, err = process.communicate(timeout=60)
    finally:
        hold.release.set()
        process.kill()
    assert process.returncode == 130, (out, err)
    assert "not finished" in out
    assert f"sagactl run {saga} --each {each} --run-id ctrlc-1" in out
    assert len(set(service.resources)) < 60  # it stopped starting lines
    again = runs(*command)
    assert again.exit_code == 0, again
    assert set(service.resources) == {f"/{s}/{n}" for n in range(1, 31) for s in "ab"}
    assert set(effects(service).values()) == {1}


def test_json_gives_every_event_with_its_line_and_run(runs: Runs, service: Service) -> None:
    saga, each = runs.file(LINES), lines_file(runs, [1, 2], ["{}\n"])
    result = runs("run", str(saga), "--each", str(each), "--run-id", "js-batch", "-o", "json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["event"] == "each_started" and records[0]["batch"] == "js-batch"
    started = [r for r in records if r["event"] == "run_started"]
    assert sorted((r["line"], r["run_id"]) for r in started) == [
        (1, "js-batch-1"),
        (2, "js-batch-2"),
    ]
    attempts = [r for r in records if r["event"] == "attempt_finished"]
    assert {(r["line"], r["step"]) for r in attempts} == {(1, "a"), (1, "b"), (2, "a"), (2, "b")}
    ended = {r["line"]: r for r in records if r["event"] == "line_finished"}
    assert ended[1]["status"] == "succeeded" and ended[1]["exit_code"] == 0
    assert ended[3]["status"] == "refused" and ended[3]["run_id"] is None
    assert "input 'n': required" in ended[3]["error"]
    assert records[-1] == {
        **records[-1],
        "event": "each_finished",
        "lines": 3,
        "counts": {"refused": 1, "succeeded": 2},
        "exit_code": 2,
    }


def test_a_line_whose_inputs_changed_is_refused_when_the_batch_is_given_again(
    runs: Runs, service: Service
) -> None:
    saga, each = runs.file(LINES), lines_file(runs, [1, 2])
    assert runs("run", str(saga), "--each", str(each), "--run-id", "same-1").exit_code == 0
    each.write_text('{"n": 1}\n{"n": 3}\n')
    again = runs("run", str(saga), "--each", str(each), "--run-id", "same-1")
    assert again.exit_code == 2
    assert (
        f"{each}:2: run same-1-2 was started with other inputs (did the file change?): "
        "give the batch another --run-id" in again.stdout
    )
    assert "/a/3" not in service.resources


def test_a_secret_given_as_a_line_input_is_refused_and_never_shown(
    runs: Runs, service: Service
) -> None:
    saga = runs.file(LINES)
    each = lines_file(runs, [1], [json.dumps({"n": 2, "tag": TOKEN}) + "\n"])
    result = runs("run", str(saga), "--each", str(each), "-o", "json")
    assert result.exit_code == 2
    assert "input 'tag' holds a secret's value" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN.encode() not in runs.journal.read_bytes()
    assert "/a/2" not in service.resources and "/a/1" in service.resources


def test_a_line_whose_run_another_process_takes_meanwhile_is_refused_alone(
    runs: Runs, service: Service
) -> None:
    """Given again, a line's run looked free, then another process took it before this one
    could: that line is refused (4), the batch goes on."""
    from sagactl.definition.inputs import EachLine
    from sagactl.definition.loader import load_text
    from sagactl.many import LineOutcome, run_each
    from sagactl.records import Owner

    answers = iter([False])  # free when looked at; driven from then on

    def alive(owner: Owner, expires: float | None) -> bool:
        return next(answers, True)

    saga = load_text(LINES, "lines.yaml")
    ended: list[LineOutcome] = []
    with open_journal(runs.journal, alive=alive) as journal:
        journal.create_run(
            run_id="race-1",
            name="lines",
            saga_path="lines.yaml",
            saga_text=LINES,
            saga_hash="h",
            inputs={"n": 1, "tag": "plain"},
            env={"BASE": service.url},
            trace_id="t" * 32,
            owner=Owner("elsewhere", 7),
            lease_ttl=30,
        )
        run_each(
            saga,
            [EachLine(1, {"n": 1, "tag": "plain"}), EachLine(2, {"n": 2, "tag": "plain"})],
            journal,
            {"BASE": service.url, "TOKEN": TOKEN},
            batch="race",
            again=True,
            on_line=ended.append,
            concurrency=1,
        )
    by_line = {o.line: o for o in ended}
    assert by_line[1].refused_with == 4 and "driven by another process" in str(by_line[1].problem)
    assert by_line[2].status is RunStatus.SUCCEEDED
    assert "/a/1" not in service.resources and "/a/2" in service.resources


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["second.yaml"], "--each runs one saga once per line: give one saga file"),
        (["--junit", "r.xml"], "--junit cannot be used with --each"),
        (["--report", "r.html"], "--report cannot be used with --each"),
        (["--run-id", "x"], "--run-id 'x': use 4 to 64 letters"),
    ],
)
def test_what_cannot_go_with_each_is_refused_before_anything_is_sent(
    runs: Runs, service: Service, extra: list[str], says: str
) -> None:
    saga, each = runs.file(LINES), lines_file(runs, [1])
    runs.file(LINES, "second.yaml")
    args = [str(runs.tmp / a) if a.endswith(".yaml") else a for a in extra]
    result = runs("run", str(saga), *args, "--each", str(each))
    assert result.exit_code == 2 and says in result.stderr, result
    assert service.received == []


def test_an_each_file_that_is_not_there_is_a_usage_error(runs: Runs, service: Service) -> None:
    result = runs("run", str(runs.file(LINES)), "--each", str(runs.tmp / "nope.jsonl"))
    assert result.exit_code == 2
    assert f"{runs.tmp / 'nope.jsonl'}: no such inputs file" in result.stderr
    assert service.received == []


@pytest.mark.slow
def test_ten_thousand_lines_with_faults_a_kill_and_the_batch_again_apply_each_line_once(
    runs: Runs, service: Service, new_journal: Callable[[], str]
) -> None:
    """The batch of SPEC §8 at size (`pytest -m slow`): 10,000 lines, 503s on some actions,
    one line whose b is refused for good (its run compensated), the process SIGKILLed while
    a request is held, then the same command again: every line's run final, each effect the
    service holds applied once, nothing of the failed line left."""
    runs.journal = new_journal()  # type: ignore[assignment]  # a file, then PostgreSQL
    hold = Fault("PUT", "/b/5000", kind="hold")
    service.faults += [
        hold,
        Fault("PUT", "/a/7", status=503, times=2),
        Fault("PUT", "/a/9999", status=503, times=2),
        Fault("PUT", "/b/4242", status=422, times=None),
    ]
    saga, each = runs.file(LINES), lines_file(runs, range(1, 10_001))
    command = ("run", str(saga), "--each", str(each), "--run-id", "big-1", "--concurrency", "16")
    process = runs.start(*command)
    held = lambda: any(r.path == "/b/5000" for r in service.received)  # noqa: E731
    wait_for(lambda: held() or process.poll() is not None, timeout=600)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    hold.release.set()
    wait_for(lambda: service.busy == 0)
    again = runs(*command, "--durability", "normal")
    assert again.exit_code == 1, again.stdout[-2000:]  # line 4242 compensated, no worse
    with open_journal(str(runs.journal)) as journal:
        assert journal.count_runs() == {"succeeded": 9_999, "compensated": 1}
    expected = {f"/{s}/{n}" for n in range(1, 10_001) if n != 4242 for s in "ab"}
    assert set(service.resources) == expected
    assert set(effects(service).values()) == {1}
