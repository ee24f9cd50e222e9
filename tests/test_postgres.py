"""Every command on a PostgreSQL journal (SPEC §4, §8), run as a user runs them: the real
command line against a throwaway cluster (tests/postgres_server.py) and a local service.
The journal contract, the crash tests, a killed `--each` batch and the randomized model run on
PostgreSQL too (test_journal_contract.py, test_crash.py, test_each.py, test_model_based.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import sagas
from helpers import Runs, Ui, some_runs, wait_for
from postgres_server import PostgresServer
from sagactl.journal import open_journal
from sagactl.testing.service import Fault, Service


@pytest.fixture
def pg_runs(tmp_path: Path, service: Service, postgres: PostgresServer) -> Runs:
    """The command line with a PostgreSQL journal of its own in SAGACTL_JOURNAL."""
    runs = Runs(tmp_path, service)
    runs.journal = postgres.url()  # type: ignore[assignment]
    return runs


def test_run_list_show_resume_metrics_report_and_ui_work_on_postgresql(
    pg_runs: Runs, service: Service
) -> None:
    ids = some_runs(pg_runs, service)
    listed = pg_runs("list", "-o", "json")
    assert listed.exit_code == 0, listed
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    statuses = {r["run"]: r["status"] for r in records}
    assert statuses == {ids[k]: k for k in ("succeeded", "compensated", "stuck")}
    shown = pg_runs("show", ids["stuck"][-8:].lower())  # not a prefix: exact or prefix only
    assert shown.exit_code == 4
    shown = pg_runs("show", ids["stuck"][:20].lower())
    assert shown.exit_code == 0 and "stuck" in shown.stdout
    # The stuck run's compensation is let through: compensate finishes it.
    assert pg_runs("compensate", ids["stuck"]).exit_code == 0
    undone = (ids["stuck"], ids["compensated"])
    assert not [p for p in service.resources if p.endswith(undone)]  # nothing of them is left
    assert [p for p in service.resources if p.endswith(ids["succeeded"])]
    metrics = pg_runs("metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics.stdout)}
    runs_by_status = {s.labels["status"]: s.value for s in families["sagactl_runs"].samples}
    assert runs_by_status == {"succeeded": 1, "compensated": 2}
    report = pg_runs.tmp / "r.html"
    assert pg_runs("report", *ids.values(), "-o", str(report)).exit_code == 0
    assert f'data-run="{ids["stuck"]}" data-status="compensated"' in report.read_text()
    ui = Ui(pg_runs)
    try:
        page = ui.get("/")
        assert page.status_code == 200 and ids["succeeded"] in page.text
    finally:
        ui.stop()


def test_a_run_of_another_process_is_not_taken_while_its_lease_holds(
    pg_runs: Runs, service: Service
) -> None:
    hold = Fault("PUT", "/b/", kind="hold")
    service.faults.append(hold)
    process = pg_runs.start("run", str(pg_runs.file(sagas.THREE)))
    try:
        wait_for(lambda: service.busy == 1)
        with open_journal(str(pg_runs.journal)) as journal:
            run_id = journal.list_runs(limit=1)[0].id
        taken = pg_runs("resume", run_id)
        assert taken.exit_code == 4
        assert "is being driven by process" in taken.stderr
    finally:
        hold.release.set()
        out: Any = process.communicate(timeout=30)
    assert process.returncode == 0, out
