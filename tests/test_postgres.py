"""Every command on a PostgreSQL journal (SPEC §4, §8), run as a user runs them: the real
command line against a throwaway cluster (tests/postgres_server.py) and a local service.
The journal contract, the crash tests, a killed `--each` batch and the randomized model run on
PostgreSQL too (test_journal_contract.py, test_crash.py, test_each.py, test_model_based.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import sagas
from helpers import Runs, Ui, effects, lines_file, some_runs, wait_for
from postgres_server import PostgresServer
from sagactl.journal import open_journal
from sagactl.testing.service import Fault, Service
from sagas import LINES


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


def test_a_worker_that_loses_the_database_sends_nothing_until_it_has_its_runs_back(
    tmp_path: Path, service: Service
) -> None:
    """The database goes away while a worker's requests are in flight: their answers cannot
    be journaled, so nothing more of those runs is sent; once the database is back, the
    worker opens it again and takes its runs back when their leases lapse, sending the
    requests in doubt again under their keys."""
    hold = Fault("PUT", "/b/", kind="hold", times=None)
    service.faults.append(hold)
    with PostgresServer() as server:  # a cluster of its own: it is stopped halfway
        runs = Runs(tmp_path, service)
        runs.journal = server.url()  # type: ignore[assignment]
        saga, each = runs.file(LINES), lines_file(runs, [1, 2, 3])
        assert runs("submit", str(saga), "--each", str(each), "--run-id", "lost").exit_code == 0
        worker = runs.start("worker", "--lease", "2", "--concurrency", "3")
        try:
            wait_for(lambda: service.busy == 3)  # every run's b is held by the service
            server.stop()
            hold.release.set()  # b lands, but its answer cannot be journaled
            wait_for(lambda: service.busy == 0)
            sent = len(service.received)
            server.start()
            with open_journal(str(runs.journal)) as journal:
                wait_for(lambda: journal.count_runs() == {"succeeded": 3}, timeout=90)
        finally:
            hold.release.set()
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert "cannot" in err  # it said the journal could not be written or reached
    # While the database was away nothing more was sent: b again, then nothing else.
    again = [r for r in service.received[sent:] if r.method == "PUT"]
    assert sorted(r.path for r in again) == ["/b/1", "/b/2", "/b/3"]
    assert set(effects(service).values()) == {1}
