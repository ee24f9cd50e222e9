"""`sagactl submit` and `sagactl worker` (SPEC §8): runs queued, then driven by worker processes
sharing a journal — SQLite on one machine, PostgreSQL across machines — one driver per run,
a killed worker's runs taken over once their lease lapsed. Checked on the service's record."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable

from helpers import Runs, effects, lines_file, wait_for
from sagactl.journal import open_journal
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service
from sagas import LINES


def finished(runs: Runs) -> dict[str, int]:
    with open_journal(str(runs.journal)) as journal:
        return journal.count_runs()


def test_workers_share_the_queue_and_a_killed_workers_runs_are_taken_over(
    runs: Runs, service: Service, new_journal: Callable[[], str]
) -> None:
    runs.journal = new_journal()  # type: ignore[assignment]  # a file, then PostgreSQL
    # Line 7's b is held while its worker is SIGKILLed; 503s make some attempts retry.
    hold = Fault("PUT", "/b/7", kind="hold")
    service.faults += [hold, Fault("PUT", "/a/1", status=503, times=2)]
    saga, each = runs.file(LINES), lines_file(runs, range(1, 301))
    submitted = runs("submit", str(saga), "--each", str(each), "--run-id", "qrun")
    assert submitted.exit_code == 0, submitted
    assert "300 runs queued" in submitted.stdout
    assert service.received == []  # submitting sends nothing
    workers = [runs.start("worker", "--lease", "2", "--concurrency", "4") for _ in range(3)]
    try:
        wait_for(lambda: any(r.path == "/b/7" for r in service.received))
        with open_journal(str(runs.journal)) as journal:
            holder = journal.get_run("qrun-7").owner_pid
        killed = next(w for w in workers if w.pid == holder)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=20)
        hold.release.set()  # b lands after its worker died: the taker sends it again, keyed
        stopped = next(w for w in workers if w is not killed)
        wait_for(lambda: finished(runs).get("succeeded", 0) >= 150, timeout=120)
        stopped.send_signal(signal.SIGTERM)  # stops claiming, releases what it drives
        out, _ = stopped.communicate(timeout=60)
        assert stopped.returncode == 0, out
        assert "worker stopped:" in out
        try:
            wait_for(lambda: finished(runs) == {"succeeded": 300}, timeout=180)
        except AssertionError:
            raise AssertionError(f"not all runs ended: {finished(runs)}") from None
    finally:
        hold.release.set()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
    # Every line's effects are there, each applied once however often it was sent.
    assert set(service.resources) == {f"/{s}/{n}" for n in range(1, 301) for s in "ab"}
    assert set(effects(service).values()) == {1}, effects(service).most_common(3)
    sent = [r for r in service.received if r.path == "/b/7"]
    assert len(sent) == 2  # by the killed worker, then by the one that took the run over
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1


def test_submit_names_each_bad_line_queues_the_others_and_once_only(
    runs: Runs, service: Service
) -> None:
    saga = runs.file(LINES)
    each = lines_file(runs, [1, 2], ['{"n": "x"}\n'])
    first = runs("submit", str(saga), "--each", str(each), "--run-id", "subm")
    assert first.exit_code == 2
    assert f"refused: {each}:3: input 'n':" in first.stderr
    assert "2 runs queued, 1 lines refused" in first.stdout
    again = runs("submit", str(saga), "--each", str(each), "--run-id", "subm", "-o", "json")
    records = [json.loads(line) for line in again.stdout.splitlines()]
    ended = [r for r in records if r["event"] == "line_finished"]
    assert [(r["run_id"], r["status"], r["earlier"]) for r in ended] == [
        ("subm-1", "queued", True),
        ("subm-2", "queued", True),
        (None, "refused", False),
    ]
    one = runs("submit", str(saga), "-i", "n=5")
    assert one.exit_code == 0 and "queued: a worker drives it" in one.stdout
    shown = runs("show", one.stdout.splitlines()[0])
    assert "status    queued (nothing sent: a worker drives it, sagactl worker)" in shown.stdout
    assert finished(runs) == {"queued": 3}
    twice = runs("submit", str(saga), "--each", str(each), "--run-id", "subm", "-q")
    assert twice.exit_code == 2  # line 3 is still refused; 1 and 2 were left as they are
    again_one = runs("submit", str(saga), "-i", "n=1", "--run-id", "subm-1")
    assert again_one.stdout.splitlines()[1] == "submitted before, and queued now: nothing queued"
    assert finished(runs) == {"queued": 3}
    assert service.received == []
    done = runs("worker", "--until-idle")
    assert done.exit_code == 0, done
    assert finished(runs) == {"succeeded": 3}
    assert set(service.resources) == {f"/{s}/{n}" for n in (1, 2, 5) for s in "ab"}


def test_a_worker_without_a_secret_leaves_the_run_queued_for_one_that_has_it(
    runs: Runs, service: Service
) -> None:
    saga = runs.file(LINES)
    assert runs("submit", str(saga), "-i", "n=1", "--run-id", "needs-token").exit_code == 0
    lacking = runs("worker", "--until-idle", TOKEN=None)
    assert lacking.exit_code == 2  # a run it could not start
    assert "run needs-token (lines) not started here: missing secret TOKEN" in lacking.stderr
    with open_journal(str(runs.journal)) as journal:
        run = journal.get_run("needs-token")
    assert (run.status, run.owner_pid) == (RunStatus.QUEUED, None)
    assert service.received == []
    assert runs("worker", "--until-idle").exit_code == 0
    assert finished(runs) == {"succeeded": 1}


def test_a_run_a_worker_cannot_render_is_left_as_it_was_and_said(
    runs: Runs, service: Service
) -> None:
    """`submit` needs no secrets, so it cannot render every request. A run whose request this
    worker cannot make (an env value unset when it was submitted) is not ended — what fails
    may be a worker's — but left queued for a person, said, and --until-idle exits 2."""
    saga = runs.file(LINES.replace('url: "/a/{{ inputs.n }}"', 'url: "/a/{{ env.MISSING }}"'))
    saga.write_text(saga.read_text().replace("env: [BASE]", "env: [BASE, MISSING]"))
    assert runs("submit", str(saga), "-i", "n=1", "--run-id", "cannot-render").exit_code == 0
    done = runs("worker", "--until-idle")
    assert done.exit_code == 2, done
    assert "run cannot-render (lines) not started here:" in done.stderr
    with open_journal(str(runs.journal)) as journal:
        run = journal.get_run("cannot-render")
    assert (run.status, run.owner_pid) == (RunStatus.QUEUED, None)
    assert service.received == []


def test_a_queued_run_that_resume_drives_is_not_claimed_by_a_worker(
    runs: Runs, service: Service
) -> None:
    """`resume` of a queued run takes it: no worker may claim it meanwhile (each step would
    be sent twice, by two drivers)."""
    hold = Fault("PUT", "/a/", kind="hold")
    service.faults.append(hold)
    assert runs("submit", str(runs.file(LINES)), "-i", "n=1", "--run-id", "by-hand").exit_code == 0
    resuming = runs.start("resume", "by-hand")
    try:
        wait_for(lambda: service.busy == 1)
        idle = runs("worker", "--until-idle")
        assert idle.exit_code == 0 and "worker stopped: no run" in idle.stdout
    finally:
        hold.release.set()
        resuming.communicate(timeout=30)
    assert resuming.returncode == 0
    assert len(service.requests("PUT", "/a/1")) == 1
