"""The journal contract (`sagactl.journal.contract`), the same assertions over every backend.

Only the public contract is used: what one process writes is checked through another journal
object, as another process would read it, and a crash between two calls is a real SIGKILL of a
real process. A new backend joins by adding its target to `BACKENDS`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import helpers
from postgres_server import PostgresServer
from sagactl.errors import JournalError, LeaseLost
from sagactl.journal import Durability, Journal, open_journal, shown_status
from sagactl.records import Owner, RunStatus, StepState

BACKENDS = ["sqlite", "postgresql"]

ME = Owner.this_process()


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty journal of the backend is."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.url()
    return str(tmp_path / "journal.db")


@pytest.fixture
def journal(target: str) -> Iterator[Journal]:
    with open_journal(target, Durability.NORMAL) as store:
        yield store


def other(target: str, **kwargs: Any) -> Journal:
    """The same journal as another process opens it."""
    return open_journal(target, Durability.NORMAL, **kwargs)


def new_run(
    journal: Journal,
    run_id: str = "R0001",
    *,
    owner: Owner = ME,
    ttl: float = 30,
    name: str = "two",
) -> str:
    return helpers.new_run(journal, run_id, owner=owner, ttl=ttl, name=name)


def begin(journal: Journal, step: str = "a", number: int = 1, run_id: str = "R0001") -> Any:
    return journal.begin_attempt(
        run_id,
        step,
        "action",
        number,
        span_id="s" * 16,
        method="PUT",
        url=f"http://127.0.0.1:9/{step}",
        headers={"Idempotency-Key": f"{run_id}.{step}.action"},
        body=None,
    )


def dead_pid() -> int:
    """The id of a process of this host that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- runs ----------------------------------------------------------------------------------


def test_a_new_run_is_running_forward_and_owned_by_its_creator(
    journal: Journal, target: str
) -> None:
    new_run(journal)
    with other(target) as reader:
        run = reader.get_run("R0001")
    assert (run.status, run.phase, run.pivot_passed, run.error) == (
        RunStatus.RUNNING,
        "forward",
        False,
        None,
    )
    assert (run.inputs, run.env, run.step_ids) == (
        {"sku": "A"},
        {"BASE": "http://127.0.0.1:9"},
        ("a", "b"),
    )
    assert (run.owner_host, run.owner_pid) == ME and journal.driven(run)
    assert run.finished_at is None and run.created_at <= run.updated_at


def test_a_run_id_is_taken_once(journal: Journal) -> None:
    new_run(journal, name="first")
    with pytest.raises(JournalError, match="already exists"):
        new_run(journal, name="second")
    assert journal.get_run("R0001").name == "first"


def test_no_such_run_is_an_error(journal: Journal) -> None:
    with pytest.raises(JournalError, match="no run R0001"):
        journal.get_run("R0001")


def test_a_run_is_found_by_a_prefix_of_its_id(journal: Journal) -> None:
    for run_id in ("01ABCD1", "01ABCE2", "my-run"):
        new_run(journal, run_id)
    assert journal.find_run("01abcd").id == "01ABCD1"  # generated ids are upper case
    assert journal.find_run(" my-run ").id == "my-run"
    with pytest.raises(JournalError, match="too short"):
        journal.find_run("01A")
    with pytest.raises(JournalError, match="matches several runs") as several:
        journal.find_run("01ABC")
    assert "01ABCD1" in str(several.value) and "01ABCE2" in str(several.value)
    with pytest.raises(JournalError, match="no run matches 'ZZZZ'"):
        journal.find_run("ZZZZ")


def test_pages_of_runs_neither_repeat_nor_skip_one(journal: Journal) -> None:
    for i in range(23):
        new_run(journal, f"R{i:04d}", name="even" if i % 2 == 0 else "odd")
        if i % 3 == 0:
            journal.set_run(f"R{i:04d}", status=RunStatus.SUCCEEDED)
    seen: list[str] = []
    before = None
    while True:
        page = journal.list_runs(limit=5, before=before)
        seen += [run.id for run in page]
        if len(page) < 5:
            break
        before = (page[-1].created_at, page[-1].id)
    assert seen == [f"R{i:04d}" for i in reversed(range(23))]
    assert {r.id for r in journal.list_runs(status="succeeded", limit=100)} == {
        f"R{i:04d}" for i in range(0, 23, 3)
    }
    assert {r.id for r in journal.list_runs(status=["succeeded", "running"], limit=100)} == {
        f"R{i:04d}" for i in range(23)
    }
    assert {r.id for r in journal.list_runs(name="odd", status="running", limit=100)} == {
        f"R{i:04d}" for i in range(23) if i % 2 and i % 3
    }


def run_with(journal: Journal, run_id: str, inputs: dict[str, Any], owner: Owner = ME) -> None:
    journal.create_run(
        run_id=run_id,
        name="shop" if run_id < "R3" else "other",
        saga_path="s.yaml",
        saga_text="name: s",
        saga_hash="h",
        inputs=inputs,
        env={},
        trace_id="t" * 32,
        owner=owner,
        lease_ttl=30,
        step_ids=["a"],
    )


def test_runs_are_filtered_by_time_and_searched_by_id_or_input(journal: Journal) -> None:
    run_with(journal, "R1AAA", {"sku": "blue-shirt"})
    run_with(journal, "R2BBB", {"sku": "red_hat", "n": 100})
    run_with(journal, "R3CCC", {"note": "50% off"})
    run_with(journal, "R4DDD", {"sku": "BLUE-CAP"})
    created = {r.id: r.created_at for r in journal.list_runs(limit=10)}

    def found(**filters: Any) -> list[str]:
        return sorted(r.id for r in journal.list_runs(limit=10, **filters))

    assert found(since=created["R2BBB"]) == ["R2BBB", "R3CCC", "R4DDD"]
    assert found(until=created["R3CCC"]) == ["R1AAA", "R2BBB"]  # before, not at
    assert found(since=created["R2BBB"], until=created["R4DDD"]) == ["R2BBB", "R3CCC"]
    assert found(search="r2b") == ["R2BBB"]  # an id prefix, typed in lower case
    assert found(search="blue") == ["R1AAA", "R4DDD"]  # an input value, whatever its case
    assert found(search="BBB") == []  # an id matches by its start only
    # the characters of LIKE patterns are themselves, not wildcards
    assert found(search="_") == ["R2BBB"]
    assert found(search="%") == ["R3CCC"]
    assert found(search="100") == ["R2BBB"]
    run_with(journal, "R5EEE", {"name": 'Café "Zoë"'})
    assert found(search="café") == found(search='"Zoë"') == ["R5EEE"]
    assert found(search="blue", name="other") == ["R4DDD"]
    # counts take the same filters, and none of a status is left out, not zero
    journal.set_run("R1AAA", status=RunStatus.SUCCEEDED)
    journal.set_run("R4DDD", status=RunStatus.STUCK, error="a: 500")
    assert journal.count_runs() == {"succeeded": 1, "running": 3, "stuck": 1}
    assert journal.count_runs(search="blue") == {"succeeded": 1, "stuck": 1}
    assert journal.count_runs(name="shop", since=created["R2BBB"]) == {"running": 1}


def test_a_run_whose_owner_is_gone_counts_as_interrupted(journal: Journal) -> None:
    run_with(journal, "R1AAA", {}, owner=Owner(ME.host, dead_pid()))
    run_with(journal, "R2BBB", {})
    assert journal.count_runs() == {"interrupted": 1, "running": 1}


def test_statistics_sum_runs_and_attempts_by_saga_and_phase(journal: Journal) -> None:
    run_with(journal, "R1AAA", {})
    run_with(journal, "R3CCC", {})
    for run_id, took in (("R1AAA", (5.0, 300.0)), ("R3CCC", (2000.0,))):
        for number, ms in enumerate(took, 1):
            attempt = begin(journal, "a", number, run_id=run_id)
            last = number == len(took)
            journal.finish_attempt(
                attempt,
                outcome="success" if last else "retryable",
                duration_ms=ms,
                status=200 if last else 503,
                step_state=StepState.SUCCEEDED if last else None,
                applied=last,
            )
    in_doubt = begin(journal, "b", run_id="R3CCC")
    journal.finish_attempt(
        in_doubt,
        outcome="in_doubt",
        duration_ms=1.0,
        in_doubt=True,
        step_state=StepState.IN_DOUBT,
        applied=True,
    )
    journal.set_run("R1AAA", status=RunStatus.SUCCEEDED)
    stats = journal.statistics([0.01, 1.0])
    assert sorted((saga, status) for saga, status, *_ in stats.runs) == [
        ("other", "running"),
        ("shop", "succeeded"),
    ]
    finished = {saga: done for saga, _, _, _, done in stats.runs}
    assert finished["shop"] is not None and finished["other"] is None
    by_saga = {(saga, phase): rest for saga, phase, *rest in stats.attempts}
    count, seconds, within, retries = by_saga[("shop", "action")]
    assert (count, within, retries) == (2, [1, 2], 1)
    assert seconds == pytest.approx(0.305)
    count, seconds, within, retries = by_saga[("other", "action")]
    assert (count, within, retries) == (2, [1, 1], 0)
    assert stats.in_doubt == {"other": 1}


def test_a_status_sets_its_finish_and_clears_an_error_not_given(journal: Journal) -> None:
    new_run(journal)
    journal.set_run("R0001", status=RunStatus.COMPENSATING, phase="compensate", error="step b: 500")
    run = journal.get_run("R0001")
    assert (run.status, run.phase, run.error, run.finished_at) == (
        RunStatus.COMPENSATING,
        "compensate",
        "step b: 500",
        None,
    )
    journal.set_run("R0001", pivot_passed=True)
    assert journal.get_run("R0001").error == "step b: 500"  # no status: the error stays
    journal.set_run("R0001", status=RunStatus.COMPENSATED)
    run = journal.get_run("R0001")
    assert run.error is None and run.finished_at is not None and run.pivot_passed


# --- leases --------------------------------------------------------------------------------


def test_a_run_driven_by_a_live_process_is_not_taken(journal: Journal, target: str) -> None:
    new_run(journal)
    with (
        other(target) as second,
        pytest.raises(JournalError, match=f"being driven by process {ME.pid}"),
    ):
        second.take_lease("R0001", Owner(ME.host, ME.pid + 1), 30)
    assert (journal.get_run("R0001").owner_pid) == ME.pid


def zombie() -> subprocess.Popen[bytes]:
    """A child that has exited and is not yet reaped: signal 0 still finds it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)  # waiting for the child to exit, not for time to pass
    return child


@pytest.mark.parametrize(
    "why", ["its lease expired", "its process is gone", "its process is a zombie"]
)
def test_a_run_whose_owner_stopped_is_taken(journal: Journal, target: str, why: str) -> None:
    child = None
    if why == "its lease expired":
        new_run(journal, ttl=-1)  # alive (this very process), but no longer renewing
    elif why == "its process is gone":
        new_run(journal, owner=Owner(ME.host, dead_pid()))
    else:
        child = zombie()
        new_run(journal, owner=Owner(ME.host, child.pid))
    assert not journal.driven(journal.get_run("R0001"))
    if child is not None:
        child.wait()
    with other(target) as second:
        second.take_lease("R0001", Owner(ME.host, 42), 30)
        run = second.get_run("R0001")
    assert (run.owner_host, run.owner_pid) == (ME.host, 42)


def queue(journal: Journal, run_id: str) -> None:
    """A run as `submit` journals it: owned by nobody."""
    journal.create_run(
        run_id=run_id,
        name="two",
        saga_path="two.yaml",
        saga_text="name: two",
        saga_hash="h",
        inputs={"sku": run_id},
        env={},
        trace_id="t" * 32,
        owner=None,
        lease_ttl=0,
        step_ids=["a", "b"],
    )


def test_a_queued_run_is_owned_by_nobody_until_claimed_oldest_first(
    journal: Journal, target: str
) -> None:
    for run_id in ("Q0001", "Q0002"):
        queue(journal, run_id)
    with other(target) as reader:
        run = reader.get_run("Q0001")
        assert (run.status, run.owner_pid, shown_status(reader, run)) == (
            RunStatus.QUEUED,
            None,
            "queued",
        )
        assert [r.id for r in reader.list_runs(status="queued")] == ["Q0002", "Q0001"]
    worker = Owner("worker-host", 7)
    claimed = journal.claim_run(worker, 30)
    assert claimed is not None and claimed.id == "Q0001"
    assert claimed.status is RunStatus.QUEUED  # as it was: a run to start, not to take over
    run = journal.get_run("Q0001")
    assert (run.status, run.owner_host, run.owner_pid) == (RunStatus.RUNNING, *worker)
    assert journal.claim_run(worker, 30, skip={"Q0002"}) is None
    second = journal.claim_run(worker, 30)
    assert second is not None and second.id == "Q0002"
    assert journal.claim_run(worker, 30) is None


def test_a_run_whose_driver_stopped_is_claimed_before_queued_ones(journal: Journal) -> None:
    queue(journal, "Q0001")
    new_run(journal, "R0001", owner=Owner(ME.host, dead_pid()))  # its process is gone
    new_run(journal, "R0002", owner=Owner("elsewhere", 5), ttl=-1)  # its lease lapsed
    new_run(journal, "R0003", owner=Owner("elsewhere", 6), ttl=300)  # driven: left alone
    new_run(journal, "R0004")  # driven by this very process: left alone
    journal.set_run("R0002", status=RunStatus.COMPENSATING)
    worker = Owner("worker-host", 8)
    claimed = [journal.claim_run(worker, 30) for _ in range(4)]
    assert [c.id if c else None for c in claimed] == ["R0002", "R0001", "Q0001", None]
    assert journal.get_run("R0002").status is RunStatus.COMPENSATING  # taken over as it was


def test_a_run_whose_process_is_gone_is_claimed_behind_any_number_of_live_ones(
    journal: Journal,
) -> None:
    for i in range(60):  # driven by this very process: alive, left alone
        new_run(journal, f"L{i:04d}")
    new_run(journal, "GONE", owner=Owner(ME.host, dead_pid()))
    claimed = journal.claim_run(Owner("worker-host", 9), 30)
    assert claimed is not None and claimed.id == "GONE"


def test_workers_claiming_at_once_each_get_runs_of_their_own(journal: Journal, target: str) -> None:
    for i in range(40):
        queue(journal, f"Q{i:04d}")
    claimed: dict[int, list[str]] = {}

    def claims(worker: int) -> None:
        with other(target) as mine:
            got = claimed.setdefault(worker, [])
            while (run := mine.claim_run(Owner("host", 100 + worker), 30)) is not None:
                got.append(run.id)

    threads = [threading.Thread(target=claims, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [run_id for got in claimed.values() for run_id in got]
    assert sorted(every) == [f"Q{i:04d}" for i in range(40)]  # each once, none left out
    owners = {r.id: r.owner_pid for r in journal.list_runs(limit=100)}
    assert all(owners[run_id] == 100 + w for w, got in claimed.items() for run_id in got)


def test_only_the_owner_renews_or_releases_a_lease(journal: Journal) -> None:
    new_run(journal)
    stranger = Owner("elsewhere", 7)
    assert not journal.renew_lease("R0001", stranger, 30)
    journal.release_lease("R0001", stranger)
    assert journal.driven(journal.get_run("R0001"))
    expires = journal.get_run("R0001").lease_expires
    assert journal.renew_lease("R0001", ME, 300)
    assert (journal.get_run("R0001").lease_expires or 0) > (expires or 0)
    journal.release_lease("R0001", ME)
    run = journal.get_run("R0001")
    assert (run.owner_host, run.owner_pid, run.lease_expires) == (None, None, None)
    assert not journal.driven(run)


def test_a_driver_whose_run_was_taken_writes_nothing_more(target: str) -> None:
    # This object's lease expired (it stalled); another process, for which the owner is gone,
    # takes the run. Every later write of the stalled one fails, and changes nothing.
    stalled = other(target)
    new_run(stalled, ttl=-1)
    stalled.drive("R0001", ME)
    with other(target, alive=lambda owner, expires: False) as taker:
        taker.take_lease("R0001", Owner("elsewhere", 7), 30)
    with pytest.raises(LeaseLost, match="taken over by another process"):
        stalled.set_run("R0001", status=RunStatus.SUCCEEDED)
    with pytest.raises(LeaseLost):
        begin(stalled)
    stalled.undrive("R0001")
    stalled.close()
    with other(target) as reader:
        assert reader.get_run("R0001").status is RunStatus.RUNNING
        assert reader.attempts("R0001") == []


def test_a_run_taken_from_a_process_does_not_stop_its_other_runs(target: str) -> None:
    # One process drives two runs (`run --each`, a worker); A stalled past its lease and was
    # taken over; B's lease holds. A's writes fail; B's go on, its deferred result too.
    driver = other(target)
    new_run(driver, "RUNA", ttl=-1)
    new_run(driver, "RUNB", ttl=300)
    driver.drive("RUNA", ME)
    driver.drive("RUNB", ME)
    handle = begin(driver, "a", run_id="RUNB")
    driver.finish_attempt(
        handle,
        outcome="success",
        duration_ms=1.0,
        status=200,
        step_state=StepState.SUCCEEDED,
        applied=True,
        defer=True,
    )
    with other(target, alive=lambda owner, expires: False) as taker:
        taker.take_lease("RUNA", Owner("elsewhere", 7), 30)
    with pytest.raises(LeaseLost, match="run RUNA was taken over"):
        begin(driver, "a", run_id="RUNA")
    with pytest.raises(LeaseLost):
        driver.set_run("RUNA", status=RunStatus.SUCCEEDED)
    begin(driver, "b", run_id="RUNB")  # B goes on, its deferred result with it
    driver.set_run("RUNB", status=RunStatus.SUCCEEDED)
    driver.close()
    with other(target) as reader:
        assert reader.get_run("RUNA").status is RunStatus.RUNNING
        assert reader.attempts("RUNA") == []
        assert reader.get_run("RUNB").status is RunStatus.SUCCEEDED
        assert [(a.step_id, a.outcome) for a in reader.attempts("RUNB")] == [
            ("a", "success"),
            ("b", None),
        ]


# --- attempts ------------------------------------------------------------------------------


def test_an_intent_is_durable_before_begin_returns(journal: Journal, target: str) -> None:
    new_run(journal)
    handle = begin(journal)
    with other(target) as reader:
        (attempt,) = reader.attempts("R0001")
        step = reader.steps("R0001")[("a", "action")]
    assert (attempt.id, attempt.step_id, attempt.outcome, attempt.in_doubt) == (
        handle.id,
        "a",
        None,
        False,
    )
    assert attempt.request_headers == {"Idempotency-Key": "R0001.a.action"}
    assert (step.state, step.attempts) == (StepState.RUNNING, 1)


def test_a_result_is_durable_when_finish_returns(journal: Journal, target: str) -> None:
    new_run(journal)
    journal.finish_attempt(
        begin(journal),
        outcome="success",
        duration_ms=3.0,
        status=201,
        response_headers={"Location": "/a/1"},
        response_body='{"id": 1}',
        step_state=StepState.SUCCEEDED,
        applied=True,
        outputs={"id": 1},
    )
    with other(target) as reader:
        (attempt,) = reader.attempts("R0001")
        step = reader.steps("R0001")[("a", "action")]
    assert (attempt.outcome, attempt.status, attempt.response_body) == ("success", 201, '{"id": 1}')
    assert (step.state, step.applied, step.outputs, step.status) == (
        StepState.SUCCEEDED,
        True,
        {"id": 1},
        201,
    )


def test_a_deferred_result_waits_for_the_next_write(journal: Journal, target: str) -> None:
    new_run(journal)
    journal.finish_attempt(
        begin(journal, "a"),
        outcome="success",
        duration_ms=1.0,
        status=200,
        step_state=StepState.SUCCEEDED,
        applied=True,
        defer=True,
    )
    with other(target) as reader:
        assert [a.outcome for a in reader.attempts("R0001")] == [None]
        begin(journal, "b")  # the next write carries it
        assert [a.outcome for a in reader.attempts("R0001")] == ["success", None]


def test_a_step_of_items_is_written_whole_and_keeps_its_list(journal: Journal, target: str) -> None:
    """`set_step`: a foreach step's own row, its list written before its items are sent and
    kept by later writes that give none; durable when it returns, carrying what was
    deferred before it."""
    new_run(journal)
    journal.set_step("R0001", "a", "action", state=StepState.RUNNING, items=["x", {"y": 1}])
    with other(target) as reader:
        record = reader.steps("R0001")[("a", "action")]
    assert (record.state, record.items, record.attempts) == (StepState.RUNNING, ["x", {"y": 1}], 0)
    journal.finish_attempt(
        begin(journal, "a[0]"),
        outcome="success",
        duration_ms=1.0,
        status=200,
        step_state=StepState.SUCCEEDED,
        applied=True,
        outputs={"id": 1},
        defer=True,
    )
    journal.set_step(
        "R0001",
        "a",
        "action",
        state=StepState.FAILED,
        applied=True,
        outputs={},
        attempts=2,
        error="a[1]: status 422",
    )
    with other(target) as reader:
        steps = reader.steps("R0001")
        assert [a.outcome for a in reader.attempts("R0001")] == ["success"]
    record = steps[("a", "action")]
    assert (record.state, record.applied, record.attempts, record.error, record.items) == (
        StepState.FAILED,
        True,
        2,
        "a[1]: status 422",
        ["x", {"y": 1}],
    )
    assert steps[("a[0]", "action")].outputs == {"id": 1}
    assert steps[("a[0]", "action")].items is None
    journal.set_step("R0001", "a", "compensate", state=StepState.SUCCEEDED)
    assert journal.steps("R0001")[("a", "compensate")].items is None


def test_an_operator_action_and_its_state_are_written_together(
    journal: Journal, target: str
) -> None:
    """`operate`: the action (who, where, when, why) and the state it gives, both durable
    when it returns; a settled doubt is not brought back by a later settling."""
    new_run(journal)
    journal.finish_attempt(
        begin(journal, "a"),
        outcome="retryable",
        duration_ms=1.0,
        in_doubt=True,
        step_state=StepState.IN_DOUBT,
        applied=True,
    )
    journal.operate(
        "R0001",
        "a",
        "action",
        action="mark absent",
        state=StepState.RUNNING,
        applied=False,
        settled=True,
        user="ops",
        host="h1",
        reason="checked the ledger",
    )
    with other(target) as reader:
        record = reader.steps("R0001")[("a", "action")]
        [action] = reader.operator_actions("R0001")
    assert (record.state, record.applied, record.attempts) == (StepState.RUNNING, False, 1)
    assert (action.step_id, action.phase, action.action, action.user, action.host) == (
        "a",
        "action",
        "mark absent",
        "ops",
        "h1",
    )
    assert action.reason == "checked the ledger" and action.at > 0
    journal.settle_interrupted("R0001")
    assert journal.steps("R0001")[("a", "action")].state is StepState.RUNNING
    # an attempt after the settling counts again
    begin(journal, "a", 2)
    journal.settle_interrupted("R0001")
    assert journal.steps("R0001")[("a", "action")].state is StepState.IN_DOUBT


@pytest.mark.parametrize("how", ["a read", "flush", "close"])
def test_reads_flush_and_close_write_what_was_deferred(target: str, how: str) -> None:
    journal = other(target)
    new_run(journal)
    journal.finish_attempt(
        begin(journal),
        outcome="failure",
        duration_ms=1.0,
        status=409,
        step_state=StepState.FAILED,
        step_error="409",
        defer=True,
    )
    if how == "a read":
        assert journal.steps("R0001")[("a", "action")].state is StepState.FAILED
    elif how == "flush":
        journal.flush()
    journal.close()
    with other(target) as reader:
        assert [a.outcome for a in reader.attempts("R0001")] == ["failure"]


def test_settling_marks_what_had_no_result_in_doubt(journal: Journal) -> None:
    new_run(journal)
    a1 = begin(journal, "a")
    journal.finish_attempt(a1, outcome="retryable", duration_ms=1.0, status=503)
    begin(journal, "a", 2)  # no result: may have reached the service
    b1 = begin(journal, "b")
    journal.finish_attempt(b1, outcome="retryable", duration_ms=1.0, status=503)
    assert journal.settle_interrupted("R0001") == 1
    steps = journal.steps("R0001")
    assert (steps[("a", "action")].state, steps[("a", "action")].applied) == (
        StepState.IN_DOUBT,
        True,
    )
    # Every attempt of b had a definite answer: b is simply not finished.
    assert steps[("b", "action")].state is StepState.RUNNING
    attempts = journal.attempts("R0001")
    assert [(a.step_id, a.attempt, a.outcome, a.in_doubt) for a in attempts] == [
        ("a", 1, "retryable", False),
        ("a", 2, "interrupted", True),
        ("b", 1, "retryable", False),
    ]
    assert journal.settle_interrupted("R0001") == 0


def test_a_step_with_an_attempt_in_doubt_stays_in_doubt_whatever_came_after(
    journal: Journal,
) -> None:
    new_run(journal)
    journal.finish_attempt(
        begin(journal, "a", 1),
        outcome="retryable",
        duration_ms=1.0,
        error_class="ReadTimeout",
        in_doubt=True,
    )
    journal.finish_attempt(begin(journal, "a", 2), outcome="retryable", duration_ms=1.0, status=503)
    begin(journal, "a", 3)
    journal.settle_interrupted("R0001")
    assert journal.steps("R0001")[("a", "action")].state is StepState.IN_DOUBT


def test_an_attempt_that_took_effect_before_the_last_leaves_the_step_applied(
    journal: Journal,
) -> None:
    """A poll's answer that the work is not done yet took effect: a crash while the step
    waits to poll again leaves a step that a compensation undoes."""
    new_run(journal)
    journal.finish_attempt(
        begin(journal, "a", 1), outcome="pending", duration_ms=1.0, status=202, applied=True
    )
    assert journal.steps("R0001")[("a", "action")].applied
    journal.settle_interrupted("R0001")
    step = journal.steps("R0001")[("a", "action")]
    assert (step.state, step.applied) == (StepState.IN_DOUBT, True)


# --- a crash between two calls: a real process, killed -------------------------------------

DIES = textwrap.dedent("""
    import os, signal, sys
    from sagactl.journal import Durability, open_journal
    from sagactl.records import Owner, RunStatus, StepState
    journal = open_journal(sys.argv[1], Durability(sys.argv[2]))
    me = Owner.this_process()
    def begin(step, number=1):
        return journal.begin_attempt("R0001", step, "action", number, span_id="s" * 16,
                                     method="PUT", url="http://127.0.0.1:9/" + step,
                                     headers={}, body=None)
    journal.create_run(run_id="R0001", name="two", saga_path="two.yaml", saga_text="t",
                       saga_hash="h", inputs={}, env={}, trace_id="t" * 32, owner=me,
                       lease_ttl=30, step_ids=["a", "b"])
    journal.drive("R0001", me)
    case = sys.argv[3]
    if case != "created":
        a = begin("a")
    if case in ("deferred", "deferred, then the next intent"):
        journal.finish_attempt(a, outcome="success", duration_ms=1.0, status=200,
                               step_state=StepState.SUCCEEDED, applied=True, defer=True)
    if case == "deferred, then the next intent":
        begin("b")
    if case == "a retryable answer":
        journal.finish_attempt(a, outcome="retryable", duration_ms=1.0, status=503)
    if case == "the decision to compensate":
        journal.finish_attempt(a, outcome="failure", duration_ms=1.0, status=409,
                               step_state=StepState.FAILED, step_error="409")
        journal.set_run("R0001", status=RunStatus.COMPENSATING, phase="compensate",
                        error="a: 409")
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")

AFTER = {
    # case: (run status, [(step, outcome, in doubt)] after settling, {step: state})
    "created": ("running", [], {}),
    "an intent": ("running", [("a", "interrupted", True)], {"a": "in_doubt"}),
    "deferred": ("running", [("a", "interrupted", True)], {"a": "in_doubt"}),
    "deferred, then the next intent": (
        "running",
        [("a", "success", False), ("b", "interrupted", True)],
        {"a": "succeeded", "b": "in_doubt"},
    ),
    "a retryable answer": ("running", [("a", "retryable", False)], {"a": "running"}),
    "the decision to compensate": ("compensating", [("a", "failure", False)], {"a": "failed"}),
}


@pytest.mark.parametrize("durability", list(Durability))
@pytest.mark.parametrize("case", list(AFTER))
def test_a_process_killed_between_two_calls_leaves_what_the_contract_says(
    target: str, case: str, durability: Durability
) -> None:
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", DIES, target, durability.value, case],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL and proc.stdout == "ready\n", proc.stderr
    status, attempts, states = AFTER[case]
    with other(target) as resumer:
        run = resumer.get_run("R0001")
        assert run.status.value == status
        assert not resumer.driven(run)  # its owner is dead: the run can be taken over
        resumer.take_lease("R0001", Owner(socket.gethostname(), os.getpid()), 30)
        resumer.settle_interrupted("R0001")
        assert [(a.step_id, a.outcome, a.in_doubt) for a in resumer.attempts("R0001")] == attempts
        assert {
            step: record.state.value for (step, _), record in resumer.steps("R0001").items()
        } == states
