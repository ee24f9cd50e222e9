"""Bugs found by the randomized and stress tests, each kept as a named test."""

from __future__ import annotations

from pathlib import Path

import sagas
from helpers import Runs, http_executors, new_run
from sagactl.definition.loader import load_text
from sagactl.engine.machine import Engine
from sagactl.engine.runs import create_run
from sagactl.journal import open_journal
from sagactl.records import StepState
from sagactl.testing.service import Fault, Service


def test_compensate_refuses_while_a_pivot_is_in_doubt(tmp_path: Path, service: Service) -> None:
    """Found by the model-based test: a crash after a pivot's request was sent, then
    `compensate`, undid the other steps and called the run compensated, though the pivot's
    effect remained."""
    runs = Runs(tmp_path, service)
    text = sagas.PIVOT.replace("  retry: {attempts: 3", "  timeout: 100ms\n  retry: {attempts: 1")
    service.faults.append(Fault("PUT", "/charge/", kind="delay_after", delay=0.3))
    result, run_id = runs.run(text)
    assert result.exit_code == 3
    assert "pivot charge is in doubt" in result.stdout
    refused = runs("compensate", run_id)
    assert refused.exit_code == 2
    assert (
        "pivot charge is in doubt: it can be neither compensated nor assumed undone"
        in refused.stderr
    )
    assert service.requests("DELETE") == []


def test_a_step_left_running_between_attempts_is_settled_in_doubt(tmp_path: Path) -> None:
    """Found by the model-based test: a process that died during a backoff left its step
    `running` with every attempt finished, and nothing settled it; compensation skipped it."""
    with open_journal(tmp_path / "j.db") as journal:
        new_run(journal, "R0001", name="n")
        attempt = journal.begin_attempt(
            "R0001", "a", "action", 1, span_id="s", method="PUT", url="u", headers={}, body=None
        )
        journal.finish_attempt(
            attempt, outcome="retryable", duration_ms=1.0, error_class="ReadTimeout", in_doubt=True
        )
        second = journal.begin_attempt(
            "R0001", "b", "action", 1, span_id="s", method="PUT", url="u", headers={}, body=None
        )
        journal.finish_attempt(
            second, outcome="retryable", duration_ms=1.0, status=503, error_class="HTTPStatus"
        )
        assert journal.steps("R0001")[("a", "action")].state is StepState.RUNNING
        journal.settle_interrupted("R0001")
        step = journal.steps("R0001")[("a", "action")]
        assert step.state is StepState.IN_DOUBT and step.applied
        # A step whose every attempt had a definite answer (503) is not in doubt: it is
        # simply unfinished, and a resume tries it again rather than compensating it.
        other = journal.steps("R0001")[("b", "action")]
        assert other.state is StepState.RUNNING and not other.applied


def test_a_short_secret_does_not_mask_output_names(tmp_path: Path, service: Service) -> None:
    """Found by the journal stress test: with a one-letter secret, output names were masked
    in the journal (`iden***`), and a resumed run could not find its outputs."""
    saga = load_text(sagas.THREE, "three.yaml")
    with open_journal(tmp_path / "j.db") as journal:
        run = create_run(journal, saga, {}, {"BASE": service.url})
        import httpx

        with httpx.Client() as client:
            Engine(
                saga, run, journal=journal, executors=http_executors(client), secrets={"TOKEN": "t"}
            ).start()
        assert journal.steps(run.id)[("a", "action")].outputs == {"ident": run.id}


def test_two_journals_on_one_file_in_one_process_stay_consistent(tmp_path: Path) -> None:
    """Found by the slow randomized test ("database disk image is malformed"): opening the
    journal file directly to set its mode, or to read its header, then closing it, dropped the
    SQLite locks another connection of the same process held on it (POSIX locks belong to the
    process). The file is now created with O_EXCL only when absent, and otherwise read only
    through SQLite."""
    import sqlite3

    path = tmp_path / "j.db"
    first = open_journal(path)
    new_run(first, "R0001", name="n")
    for i in range(20):
        with open_journal(path) as second:
            new_run(second, f"S{i:04d}", name="n")
        first.set_run("R0001", error=f"round {i}")
    assert len(first.list_runs(limit=100)) == 21
    first.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
