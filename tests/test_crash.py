"""Crashes and signals: a real `sagactl` process is killed mid-request, then the run is resumed
or compensated. The service's own record says whether anything was applied twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import sagas
from helpers import ROOT, cli, wait_for
from sagactl.journal import open_journal
from sagactl.records import RunStatus, StepState
from sagactl.testing.service import Fault, Service

TOKEN = "crash-token"


class Crash:
    def __init__(self, tmp_path: Path, service: Service, journal: str) -> None:
        self.service = service
        self.tmp = tmp_path
        self.journal = journal
        self.saga = tmp_path / "three.yaml"
        self.saga.write_text(sagas.THREE)
        self.env = {
            **os.environ,
            "BASE": service.url,
            "TOKEN": TOKEN,
            "SAGACTL_JOURNAL": str(self.journal),
        }

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "sagactl", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = cli(
            *args,
            env={"BASE": self.service.url, "TOKEN": TOKEN, "SAGACTL_JOURNAL": str(self.journal)},
        )
        return result.exit_code, result.stdout, result.stderr

    def run_id(self) -> str:
        with open_journal(self.journal) as journal:
            return journal.list_runs(limit=1)[0].id

    def applied_keys(self) -> list[str]:
        return [key for key, _, _ in self.service.applied]

    def kill_during(self, path: str, sig: int = signal.SIGKILL) -> subprocess.CompletedProcess[str]:
        """Run the saga; send `sig` while the request to `path` is held by the service."""
        self.service.faults.append(Fault("PUT", path, kind="delay_before", delay=0.6))
        proc = self.start("run", str(self.saga))
        wait_for(lambda: bool(self.service.requests("PUT", path)))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def crash(tmp_path: Path, service: Service, new_journal: Callable[[], str]) -> Crash:
    """Each test on each backend: a journal file, and PostgreSQL."""
    return Crash(tmp_path, service, new_journal())


def test_sigkill_in_flight_then_resume_applies_every_effect_once(crash: Crash) -> None:
    proc = crash.kill_during("/b/")
    assert proc.returncode == -signal.SIGKILL
    run_id = crash.run_id()
    with open_journal(crash.journal) as journal:
        assert journal.steps(run_id)[("b", "action")].state is StepState.RUNNING
    wait_for(lambda: f"{run_id}.b.action" in crash.applied_keys())  # the held request lands anyway
    code, listed, _ = crash.cli("list")
    assert f"{run_id}  three  interrupted" in listed
    code, out, err = crash.cli("resume", run_id)
    assert code == 0, out + err
    assert sorted(crash.applied_keys()) == sorted(f"{run_id}.{s}.action" for s in "abc")
    b_requests = crash.service.requests("PUT", "/b/")
    assert [r.headers["Idempotency-Key"] for r in b_requests] == [f"{run_id}.b.action"] * 2
    assert [r.headers["Saga-Attempt"] for r in b_requests] == ["1", "2"]
    assert len(crash.service.requests("PUT", "/a/")) == 1  # finished steps are not re-sent
    with open_journal(crash.journal) as journal:
        outcomes = [(a.step_id, a.outcome) for a in journal.attempts(run_id)]
    assert outcomes == [("a", "success"), ("b", "interrupted"), ("b", "success"), ("c", "success")]


def test_sigkill_in_flight_then_compensate_undoes_the_step_in_doubt(crash: Crash) -> None:
    crash.kill_during("/b/")
    run_id = crash.run_id()
    wait_for(lambda: f"{run_id}.b.action" in crash.applied_keys())
    code, out, err = crash.cli("compensate", run_id)
    assert code == 0, out + err
    assert [r.path for r in crash.service.requests("DELETE")] == [f"/b/{run_id}", f"/a/{run_id}"]
    assert crash.service.resources == {}
    assert crash.service.requests("PUT", "/c/") == []


def test_a_second_driver_of_a_live_run_is_refused(crash: Crash) -> None:
    crash.service.faults.append(Fault("PUT", "/c/", kind="delay_before", delay=1.5))
    proc = crash.start("run", str(crash.saga))
    wait_for(lambda: bool(crash.service.requests("PUT", "/c/")))
    run_id = crash.run_id()
    for command in ("resume", "compensate"):
        code, _, err = crash.cli(command, run_id)
        assert code == 4
        assert f"being driven by process {proc.pid}" in err
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(crash.applied_keys()) == sorted(f"{run_id}.{s}.action" for s in "abc")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_resumably(crash: Crash, sig: int, code: int) -> None:
    proc = crash.kill_during("/b/", sig)
    err = proc.stderr
    run_id = crash.run_id()
    assert proc.returncode == code, err
    assert f"sagactl resume {run_id}" in err and f"sagactl compensate {run_id}" in err
    with open_journal(crash.journal) as journal:
        run = journal.get_run(run_id)
        assert run.status is RunStatus.RUNNING and run.owner_pid is None  # lease released
        assert journal.steps(run_id)[("b", "action")].state is StepState.IN_DOUBT
    wait_for(lambda: f"{run_id}.b.action" in crash.applied_keys())
    resumed, out, err = crash.cli("resume", run_id)
    assert resumed == 0, out + err
    assert sorted(crash.applied_keys()) == sorted(f"{run_id}.{s}.action" for s in "abc")


def test_a_second_interrupt_exits_at_once_and_the_run_still_resumes(crash: Crash) -> None:
    crash.service.faults.append(Fault("PUT", "/b/", kind="delay_before", delay=0.6))
    proc = crash.start("run", str(crash.saga))
    wait_for(lambda: bool(crash.service.requests("PUT", "/b/")))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    run_id = crash.run_id()
    wait_for(lambda: f"{run_id}.b.action" in crash.applied_keys())
    code, out, err = crash.cli("resume", run_id)
    assert code == 0, out + err
    assert sorted(crash.applied_keys()) == sorted(f"{run_id}.{s}.action" for s in "abc")


def test_interrupted_after_a_pivot_offers_resume_alone(crash: Crash) -> None:
    """The pivot's success is journaled as it happens, so that a run interrupted after it is
    offered only what can work: the message, show and JSON say resume, not compensate."""
    crash.saga.write_text(sagas.PIVOT)
    crash.service.faults.append(Fault("PUT", "/ship/", kind="delay_before", delay=0.6))
    proc = crash.start("run", str(crash.saga))
    wait_for(lambda: bool(crash.service.requests("PUT", "/ship/")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    run_id = crash.run_id()
    assert proc.returncode == 130, err
    assert f"to carry it on:  sagactl resume {run_id}" in err
    assert "compensate" not in err
    code, shown, _ = crash.cli("show", run_id)
    assert code == 0
    assert "\nnext:\n  to carry it on:  sagactl resume " in shown and "compensate" not in shown
    code, record, _ = crash.cli("show", run_id, "--output", "json")
    assert code == 0 and json.loads(record)["next"] == ["resume"]


def test_an_interrupted_cleanup_says_how_to_finish_it(crash: Crash) -> None:
    crash.service.faults.append(Fault("DELETE", "/b/", kind="delay_before", delay=0.6))
    report = crash.tmp / "report.xml"
    proc = crash.start("run", str(crash.saga), "--cleanup", "--junit", str(report))
    wait_for(lambda: bool(crash.service.requests("DELETE", "/b/")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    run_id = crash.run_id()
    assert proc.returncode == 130, err
    assert f"to finish the cleanup: sagactl compensate {run_id}" in err, err
    cases = report.read_text()
    assert 'classname="three.cleanup"' in cases and 'classname="three.compensate"' not in cases
    code, out, err = crash.cli("resume", run_id)
    assert code == 0, out + err
    assert f"run {run_id} cleaned in " in out
    assert crash.service.resources == {}


def test_an_ambiguous_prefix_lists_an_interrupted_run_as_such(crash: Crash) -> None:
    crash.service.faults.append(Fault("PUT", "/b/", kind="delay_before", delay=0.6))
    proc = crash.start("run", str(crash.saga), "--run-id", "SAME-1")
    wait_for(lambda: bool(crash.service.requests("PUT", "/b/")))
    proc.kill()
    proc.communicate(timeout=20)
    code, _, _ = crash.cli("run", str(crash.saga), "--run-id", "SAME-2")
    assert code == 0
    code, _, err = crash.cli("show", "SAME")
    assert code == 4
    assert "  SAME-1  three  interrupted\n  SAME-2  three  succeeded" in err, err


def test_a_run_killed_while_polling_polls_on_when_resumed(crash: Crash) -> None:
    crash.saga.write_text(sagas.POLL.replace("every: 10ms", "every: 50ms"))
    crash.service.faults.append(
        Fault("GET", "/jobs/", status=200, body={"state": "running"}, times=None)
    )
    proc = crash.start("run", str(crash.saga))
    wait_for(lambda: len(crash.service.requests("GET", "/jobs/")) >= 3)
    proc.kill()
    proc.communicate(timeout=20)
    run_id = crash.run_id()
    crash.service.clear_faults()  # the job is done now
    code, out, err = crash.cli("resume", run_id)
    assert code == 0, out + err
    with open_journal(crash.journal) as journal:
        step = journal.steps(run_id)[("wait", "action")]
        # settled in doubt by the resume, then a success: no doubt left to tell of
        assert (step.state, step.outputs, step.error) == (StepState.SUCCEEDED, {"result": 42}, None)
        outcomes = [a.outcome for a in journal.attempts(run_id) if a.step_id == "wait"]
    assert outcomes[-1] == "success" and outcomes.count("pending") >= 2, outcomes
    assert [key for key, _, _ in crash.service.applied] == [f"{run_id}.start.action"]


def test_a_poll_that_took_effect_is_undone_after_a_kill(crash: Crash) -> None:
    """A polled request that changes something (a PUT that starts a job, answered "running"
    and sent again until done) took effect with its first answer: killed while it waits to
    poll again, the run is compensated, and nothing is left."""
    crash.saga.write_text(
        """\
version: 1
name: job
env: [BASE]
defaults: {base_url: "{{ env.BASE }}"}
steps:
  - id: job
    action:
      method: PUT
      url: "/jobs/{{ run.id }}"
      json: {state: running}
      poll: {until: "response.json.state == 'done'", every: 100ms, timeout: 1m}
    compensate: {method: DELETE, url: "/jobs/{{ run.id }}"}
"""
    )
    proc = crash.start("run", str(crash.saga))
    wait_for(lambda: len(crash.service.requests("PUT", "/jobs/")) >= 2)
    proc.kill()
    proc.communicate(timeout=20)
    run_id = crash.run_id()
    assert crash.service.resources  # the job was started
    code, out, err = crash.cli("compensate", run_id)
    assert code == 0, out + err
    assert crash.service.resources == {}


def test_a_resumed_poll_keeps_the_timeout_of_the_first_poll(crash: Crash) -> None:
    import time

    crash.saga.write_text(
        sagas.POLL.replace("every: 10ms", "every: 50ms").replace("timeout: 5s", "timeout: 1s")
    )
    crash.service.faults.append(
        Fault("GET", "/jobs/", status=200, body={"state": "running"}, times=None)
    )
    proc = crash.start("run", str(crash.saga))
    wait_for(lambda: len(crash.service.requests("GET", "/jobs/")) >= 2)
    first = crash.service.requests("GET", "/jobs/")[0].at
    proc.kill()
    proc.communicate(timeout=20)
    wait_for(lambda: time.monotonic() - first > 1.1)  # past the timeout, from the first poll
    before = len(crash.service.requests("GET", "/jobs/"))
    code, out, err = crash.cli("resume", crash.run_id())
    assert code == 1, out + err
    assert "poll: not done after 1s" in out, out
    assert len(crash.service.requests("GET", "/jobs/")) - before == 1  # one look, not 1s more
