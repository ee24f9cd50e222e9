"""Operator actions (SPEC §7): `skip` a request done by hand and `mark` an action in doubt,
on runs that are stuck or whose process is gone; journaled with who, where, when and why;
then `resume` or `compensate` carries on. Checked on what the service received and holds."""

from __future__ import annotations

import json
import re
import socket

from lxml import etree

import sagas
from helpers import Runs, wait_for
from sagactl.api import operator
from sagactl.journal import open_journal
from sagactl.records import RunStatus, StepState
from sagactl.testing.service import Fault, Service

# The pivot `charge` gets one attempt of 200ms; `ship` fails for good.
PIVOT = sagas.PIVOT.replace(
    "  retry: {attempts: 3, backoff: 10ms, factor: 1, jitter: false}",
    "  timeout: 200ms\n  retry: {attempts: 1}",
)


def stuck_compensating(runs: Runs, service: Service) -> str:
    """THREE with `c` failing and `a`'s compensation answered 500, for good."""
    service.faults += [
        Fault("PUT", "/c/", status=422, times=None),
        Fault("DELETE", "/a/", status=500, times=None),
    ]
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 3, result.stdout
    return run_id


def test_a_compensation_done_by_hand_is_skipped_and_the_run_finishes(
    runs: Runs, service: Service
) -> None:
    run_id = stuck_compensating(runs, service)
    stuck = runs("show", run_id).stdout
    # the stuck run names the action that may help
    assert f"if a's compensation was done by hand: sagactl skip {run_id} a --reason 'WHY'" in stuck
    # the operator deletes a's resource by hand, then says so
    service.resources = {p: v for p, v in service.resources.items() if not p.startswith("/a/")}
    skipped = runs("skip", run_id, "a", "--reason", "deleted by hand, ticket OPS-12")
    assert skipped.exit_code == 0, skipped.stderr
    assert skipped.stdout.startswith(
        f"run {run_id}: skipped the compensation of a: it counts as done (journaled"
    )
    assert f"sagactl compensate {run_id}" in skipped.stdout
    deletes = len(service.requests("DELETE", "/a/"))
    finished = runs("compensate", run_id)
    assert finished.exit_code == 0, finished.stdout
    assert len(service.requests("DELETE", "/a/")) == deletes  # not sent again
    assert service.resources == {}
    shown = runs("show", run_id).stdout
    assert re.search(
        rf"operator actions:\n  \S+ \S+  skip compensate of a  by {re.escape(operator())}@"
        rf"{re.escape(socket.gethostname())}: deleted by hand, ticket OPS-12",
        shown,
    ), shown
    record = json.loads(runs("show", run_id, "--output", "json").stdout)
    [action] = record["operator_actions"]
    assert (action["step"], action["phase"], action["action"], action["reason"]) == (
        "a",
        "compensate",
        "skip",
        "deleted by hand, ticket OPS-12",
    )
    assert action["user"] == operator() and action["host"] == socket.gethostname()


def test_the_stuck_message_and_json_name_the_operator_actions(runs: Runs, service: Service) -> None:
    service.faults += [
        Fault("PUT", "/c/", status=422, times=None),
        Fault("DELETE", "/a/", status=500, times=None),
    ]
    junit = runs.tmp / "report.xml"
    result = runs("run", str(runs.file(sagas.THREE)), "--output", "json", "--junit", str(junit))
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["operator"] == [{"command": "skip", "step": "a", "phase": "compensate"}]
    finished = [json.loads(line) for line in result.stdout.splitlines()][-2]
    assert finished["event"] == "run_finished" and finished["operator"] == [
        ["skip", "a", "compensate"]
    ]
    run_id = summary["run"]
    runs("skip", run_id, "a", "--reason", "done by hand")
    again = runs.tmp / "again.xml"
    runs("compensate", run_id, "--junit", str(again))
    props = etree.parse(str(again)).getroot().findall(".//property[@name='operator action']")
    assert [p.get("value").split(" by ")[0] for p in props] == ["skip compensate of a"]


def test_an_action_in_doubt_marked_absent_is_sent_again_with_its_key(
    runs: Runs, service: Service
) -> None:
    """The pivot's connection was reset before the service applied it: in doubt, the run
    stuck. The operator checks the service — nothing — and marks it absent; resume sends it
    again, under the same key, as the next attempt."""
    service.faults.append(Fault("PUT", "/charge/", kind="drop_before"))
    result, run_id = runs.run(PIVOT)
    assert result.exit_code == 3, result.stdout
    assert f"once you know if charge took effect: sagactl mark {run_id} charge" in (result.stdout)
    assert f"/charge/{run_id}" not in service.resources
    marked = runs("mark", run_id, "charge", "absent", "--reason", "not in the ledger")
    assert marked.exit_code == 0, marked.stderr
    assert "marked the action of charge absent: it never took effect" in marked.stdout
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    sent = service.requests("PUT", "/charge/")
    assert [r.headers["Idempotency-Key"] for r in sent] == [f"{run_id}.charge.action"] * 2
    assert [r.headers["Saga-Attempt"] for r in sent] == ["1", "2"]
    assert f"/ship/{run_id}" in service.resources


def test_an_action_in_doubt_marked_applied_is_not_sent_again(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/charge/", kind="delay_after", delay=0.5))
    result, run_id = runs.run(PIVOT)
    assert result.exit_code == 3, result.stdout
    wait_for(lambda: f"/charge/{run_id}" in service.resources)
    assert runs("mark", run_id, "charge", "applied", "--reason", "seen").exit_code == 0
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    assert len(service.requests("PUT", "/charge/")) == 1
    with open_journal(runs.journal) as journal:
        assert journal.get_run(run_id).pivot_passed
        assert journal.steps(run_id)[("charge", "action")].state is StepState.SUCCEEDED


def test_a_pivot_marked_absent_no_longer_holds_the_run(runs: Runs, service: Service) -> None:
    """Its doubt settled by hand stays settled when the next command takes the run over (its
    attempts left in doubt are not counted again): the run can be rolled back."""
    service.faults.append(Fault("PUT", "/charge/", kind="drop_before"))
    result, run_id = runs.run(PIVOT)
    assert result.exit_code == 3, result.stdout
    assert runs("compensate", run_id).exit_code == 2  # a pivot in doubt: refused
    assert runs("mark", run_id, "charge", "absent", "--reason", "checked").exit_code == 0
    finished = runs("compensate", run_id)
    assert finished.exit_code == 0, finished.stdout + finished.stderr
    assert len(service.requests("PUT", "/charge/")) == 1
    assert service.resources == {}


def test_operator_actions_refuse_what_they_do_not_apply_to(runs: Runs, service: Service) -> None:
    run_id = stuck_compensating(runs, service)
    for args, message in [
        (["skip", run_id, "zz"], "saga three has no step 'zz' (its steps: a, b, c)"),
        (["skip", run_id, "c"], "the action of c never took effect: it has nothing to undo"),
        (["mark", run_id, "a", "absent"], "mark settles an action in doubt, and the action of a"),
        (["skip", run_id, "a[0]"], "step a is not a foreach step: name it a"),
    ]:
        refused = runs(*args, "--reason", "x")
        assert refused.exit_code == 2, (args, refused.stdout)
        assert message in refused.stderr, (args, refused.stderr)
    empty = runs("skip", run_id, "a", "--reason", " ")
    assert empty.exit_code == 2 and "--reason is empty" in empty.stderr
    service.clear_faults()
    assert runs("compensate", run_id).exit_code == 0
    ended = runs("skip", run_id, "a", "--reason", "x")
    assert ended.exit_code == 2
    assert f"run {run_id} compensated: skip applies to a run that is stuck or interrupted" in (
        ended.stderr
    )
    with open_journal(runs.journal) as journal:
        assert journal.operator_actions(run_id) == []


def test_an_operator_action_on_a_live_run_is_refused(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/b/", kind="delay_before", delay=2))
    saga = runs.file(sagas.THREE)
    proc = runs.start("run", str(saga))
    wait_for(lambda: bool(service.requests("PUT", "/b/")))
    with open_journal(runs.journal) as journal:
        run_id = journal.list_runs(limit=1)[0].id
    refused = runs("mark", run_id, "b", "absent", "--reason", "x")
    proc.communicate(timeout=20)
    assert refused.exit_code == 4, refused.stderr
    assert "is driven by" in refused.stderr or "process" in refused.stderr, refused.stderr
    assert runs.status(run_id) is RunStatus.SUCCEEDED


def test_list_stuck_shows_who_waits_longest_first(runs: Runs, service: Service) -> None:
    first = stuck_compensating(runs, service)
    done, _ = runs.run(sagas.THREE)
    assert done.exit_code == 3  # the faults still there: stuck too, later
    service.clear_faults()
    ok, finished = runs.run(sagas.THREE)
    assert ok.exit_code == 0
    listed = runs("list", "--stuck").stdout.splitlines()
    assert listed[0][:26] == first
    assert len(listed) == 2 and all(" stuck " in line and "waiting " in line for line in listed)
    assert finished not in runs("list", "--stuck").stdout
    records = [
        json.loads(line) for line in runs("list", "--stuck", "--output", "json").stdout.splitlines()
    ]
    assert records[0]["run"] == first and records[0]["waiting_s"] >= 0
    refused = runs("list", "--stuck", "--status", "stuck")
    assert refused.exit_code == 2 and "--stuck lists stuck and interrupted runs" in refused.stderr


def test_a_pivot_marked_absent_is_offered_rollback_again(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/charge/", kind="drop_before"))
    result, run_id = runs.run(PIVOT)
    assert result.exit_code == 3
    marked = runs("mark", run_id, "charge", "absent", "--reason", "checked")
    assert f"to roll it back: sagactl compensate {run_id}" in marked.stdout, marked.stdout
    with open_journal(runs.journal) as journal:
        assert not journal.get_run(run_id).pivot_passed


def test_skip_refuses_what_is_not_its_to_skip(runs: Runs, service: Service) -> None:
    text = sagas.ORDER
    service.faults.append(Fault("DELETE", "/lines/", status=500, times=None))
    service.faults.append(Fault("PUT", "/totals/", status=422, times=None))
    result, run_id = runs.run(text, "-i", 'skus=["A","B","C"]')
    assert result.exit_code == 3, result.stdout
    for args, message in [
        (
            ["skip", run_id, "lines[7]"],
            "step lines has no item 7 (its items: lines[0] to lines[2])",
        ),
        (["skip", run_id, "lines"], "step lines runs once per item: name the item, as lines[0]"),
    ]:
        refused = runs(*args, "--reason", "x")
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused.stderr)
    assert runs("skip", run_id, "lines[1]", "--reason", "by hand").exit_code == 0


def test_skip_of_an_action_needs_a_pivot_that_forbids_rolling_back(
    runs: Runs, service: Service
) -> None:
    service.faults.append(Fault("PUT", "/b/", kind="delay_before", delay=2))
    proc = runs.start("run", str(runs.file(sagas.THREE)))
    wait_for(lambda: bool(service.requests("PUT", "/b/")))
    proc.kill()
    proc.communicate(timeout=20)
    with open_journal(runs.journal) as journal:
        run_id = journal.list_runs(limit=1)[0].id
    wait_for(lambda: service.busy == 0)
    refused = runs("skip", run_id, "c", "--reason", "x")
    assert refused.exit_code == 2
    assert "can still be rolled back: skip applies to an action once a pivot" in refused.stderr
