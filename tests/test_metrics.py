"""`sagactl metrics` (SPEC §6): OpenMetrics text of the journal, read with the parser Prometheus'
own Python client uses, over a journal of real runs against the service."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import sagas
from helpers import Runs
from sagactl.journal import open_journal
from sagactl.testing.service import Fault, Service


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_of_real_runs(runs: Runs, service: Service) -> None:
    assert runs.run(sagas.THREE)[0].exit_code == 0
    service.faults.append(Fault("PUT", "/b/", status=503))  # one retry
    assert runs.run(sagas.THREE)[0].exit_code == 0
    service.faults += [
        Fault("PUT", "/c/", status=422, times=None),
        Fault("DELETE", "/a/", status=500, times=None),
    ]
    assert runs.run(sagas.THREE)[0].exit_code == 3  # stuck compensating
    service.clear_faults()
    service.faults.append(Fault("PUT", "/c/", status=422))
    assert runs.run(sagas.THREE)[0].exit_code == 1  # compensated
    result = runs("metrics")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("# EOF\n")
    found = samples(result.stdout)
    three = ("saga", "three")
    assert found[("sagactl_runs", (three, ("status", "succeeded")))] == 2
    assert found[("sagactl_runs", (three, ("status", "stuck")))] == 1
    assert found[("sagactl_runs", (three, ("status", "compensated")))] == 1
    assert found[("sagactl_run_duration_seconds_count", (three,))] == 3  # those that ended
    action = (("phase", "action"), three)
    assert found[("sagactl_retries_total", action)] == 1  # the 503's
    # a's compensation refused three times, its compensation of the last run once
    assert found[("sagactl_retries_total", (("phase", "compensate"), three))] == 2
    assert found[("sagactl_attempt_duration_seconds_count", action)] >= 12
    inf = found[("sagactl_attempt_duration_seconds_bucket", (("le", "+Inf"), *action))]
    assert inf == found[("sagactl_attempt_duration_seconds_count", action)]
    assert found[("sagactl_waiting_runs", (three,))] == 1
    assert found[("sagactl_oldest_waiting_run_age_seconds", ())] >= 0


def test_metrics_of_an_empty_journal(runs: Runs) -> None:
    open_journal(runs.journal).close()
    result = runs("metrics")
    assert result.exit_code == 0
    found = samples(result.stdout)
    assert found == {("sagactl_oldest_waiting_run_age_seconds", ()): 0}


def test_metrics_of_a_journal_that_is_not_there_is_an_error(runs: Runs) -> None:
    """Zeros for a mistyped path would silence every alert: it is an error instead."""
    result = runs("metrics", "--journal", str(runs.tmp / "typo.db"))
    assert result.exit_code == 4
    assert "no journal at" in result.stderr and result.stdout == ""
