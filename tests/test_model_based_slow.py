"""The slow mode of the model-based test (`pytest -m slow`): the same generated sagas and
faults drawn per attempt, but the real `sagactl` command runs in its own process and is killed
with SIGKILL at a random moment; then `sagactl resume` or `sagactl compensate` (chosen at
random) until the run is final. SAGACTL_SLOW_CASES sets how many cases (default 2,000).

Every fault but `refused` is played by the service itself; a refused connection needs the
client's network to refuse one attempt and not the next, which only the in-process test can
do (tests/test_model_based.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fault_model import (
    Case,
    act_as_operator,
    cases,
    check,
    check_stuck,
    faults,
    saga_text,
    statistics,
)
from helpers import ROOT
from sagactl.definition.loader import load_text
from sagactl.journal import open_journal
from sagactl.records import RunStatus
from sagactl.testing.service import Service

CASES = int(os.environ.get("SAGACTL_SLOW_CASES", "2000"))


def sagactl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagactl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases(real_processes=True), kill_after=st.floats(0.0, 0.3))
def test_sigkill_at_random_moments_breaks_no_promise(
    case: Case, kill_after: float, tmp_path: Path
) -> None:
    journal = tmp_path / f"j{os.urandom(4).hex()}.db"
    saga_file = tmp_path / "model.yaml"
    saga_file.write_text(saga_text(case))
    saga = load_text(saga_text(case), "model.yaml")
    with Service() as service:
        service.faults = faults(case)
        env = {**os.environ, "BASE": service.url, "SAGACTL_JOURNAL": str(journal)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "sagactl", "run", str(saga_file), "--durability", "normal"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A real process: no clock of ours to inject. Wait until its run is journaled (or it
        # ended), then let it go on for a random while before the kill.
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not service.received:
            time.sleep(0.005)
        time.sleep(kill_after)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        event(f"killed mid-run: {killed}")
        runs = []
        if journal.exists():
            with open_journal(journal) as store:
                runs = store.list_runs()
        if not runs:
            # Killed before the run was journaled: it must not have sent anything.
            assert service.received == []
            return
        run_id = runs[0].id
        status = runs[0].status
        for round_, choice in enumerate(case.choices):
            if status in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED):
                break
            if status is RunStatus.STUCK:
                check_stuck(journal, run_id, saga, service, killed)
                if case.operator:

                    def operate(key: str, verdict: str | None) -> None:
                        args = ["mark", run_id, key, verdict] if verdict else ["skip", run_id, key]
                        done = sagactl(*args, "--reason", "the model", env=env)
                        assert done.returncode == 0, done.stderr

                    for done in act_as_operator(journal, run_id, service, operate):
                        event(f"operator: {done}")
            if status is RunStatus.STUCK or round_ >= 3:
                service.clear_faults()
            result = sagactl(choice, run_id, "--durability", "normal", env=env)
            if result.returncode == 2:  # a pivot forbids compensating: go forward
                result = sagactl("resume", run_id, "--durability", "normal", env=env)
            with open_journal(journal) as store:
                status = store.get_run(run_id).status
        if status not in (RunStatus.SUCCEEDED, RunStatus.COMPENSATED):
            service.clear_faults()
            sagactl("resume", run_id, env=env)
            with open_journal(journal) as store:
                status = store.get_run(run_id).status
        check(case, service, run_id, status, saga, journal)
        statistics(case, service, status)
