"""The SQLite journal beyond the contract (tests/test_journal_contract.py): how one commit a step
holds up when a process dies, the group commit of the intents of several threads (the only
tests here that look inside the backend: nothing public can tell one commit from several), the
file's mode, and leases taken while a run is in flight."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import Crash, DyingJournal, http_executors, new_run
from sagactl.definition.loader import load_text
from sagactl.engine.machine import Engine
from sagactl.engine.runs import create_run
from sagactl.errors import JournalError
from sagactl.journal import Durability, Journal, open_journal
from sagactl.records import Owner, RunStatus, StepState
from sagactl.testing.service import Service

TWO = """\
version: 1
name: two
env: [BASE]
defaults:
  base_url: "{{ env.BASE }}"
steps:
  - id: a
    action: {method: PUT, url: "/a/{{ run.id }}"}
    compensate: {method: DELETE, url: "/a/{{ run.id }}"}
  - id: b
    action: {method: PUT, url: "/b/{{ run.id }}"}
    compensate: {method: DELETE, url: "/b/{{ run.id }}"}
"""


def outcomes(path: Path) -> list[tuple[str, str | None]]:
    """What another process sees: each attempt's step and outcome."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT step_id, outcome FROM attempts ORDER BY id").fetchall()
    finally:
        db.close()


def begin(journal: Journal, step: str) -> Any:
    return journal.begin_attempt(
        "R0001",
        step,
        "action",
        1,
        span_id="s",
        method="PUT",
        url=f"http://127.0.0.1:9/{step}",
        headers={},
        body=None,
    )


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    store = open_journal(tmp_path / "j.db", Durability.NORMAL)
    new_run(store, "R0001", name="two")
    return store


def test_a_result_not_yet_committed_when_the_process_dies_is_sent_again_once(
    tmp_path: Path,
) -> None:
    """The process dies when it journals b's intent, the write that carries a's result. The
    resume finds a in doubt and sends it again under the same key: the service answers from its
    record, and applies a once."""

    saga = load_text(TWO, "two.yaml")
    path = tmp_path / "j.db"
    with Service() as service, httpx.Client() as client:
        environ = {"BASE": service.url}
        dying = DyingJournal(
            open_journal(path, Durability.NORMAL),
            dies_at=lambda name, args, kwargs: name == "begin_attempt" and args[1] == "b",
        )
        run = create_run(dying, saga, {}, environ)
        with pytest.raises(Crash):
            Engine(saga, run, journal=dying, executors=http_executors(client), secrets={}).start()
        dying.close()
        assert outcomes(path) == [("a", None)]
        with open_journal(path, Durability.NORMAL) as store:
            status = Engine(
                saga,
                store.get_run(run.id),
                journal=store,
                executors=http_executors(client),
                secrets={},
            ).resume()
        assert status is RunStatus.SUCCEEDED
        keys = [key for key, _, _ in service.applied]
        assert sorted(keys) == [f"{run.id}.a.action", f"{run.id}.b.action"]
        sent = [r.headers["Idempotency-Key"] for r in service.received]
        assert sent.count(f"{run.id}.a.action") == 2
        assert outcomes(path) == [("a", "interrupted"), ("a", "success"), ("b", "success")]


def queue_while_locked(
    journal: Journal, steps: list[str], run_ids: dict[str, str] | None = None
) -> list[Any]:
    """Begin one attempt a thread while a commit is under way (the journal's lock is held), so
    that every intent is queued before any is written; returns each thread's handle or error."""
    outcome: list[Any] = [None] * len(steps)

    def one(i: int) -> None:
        try:
            outcome[i] = journal.begin_attempt(
                (run_ids or {}).get(steps[i], "R0001"),
                steps[i],
                "action",
                1,
                span_id="s",
                method="PUT",
                url="http://127.0.0.1:9/x",
                headers={},
                body=None,
            )
        except BaseException as exc:  # handed to the test, raised or not there
            outcome[i] = exc

    all_queued([threading.Thread(target=one, args=(i,)) for i in range(len(steps))], journal)
    return outcome


def all_queued(threads: list[threading.Thread], journal: Journal) -> None:
    """Start `threads` while a commit is under way (the journal's lock is held), wait until
    each has queued its write, then let them go and wait for them to end."""
    with journal._lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(journal._works) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.001)  # waiting for the threads to queue, not for time to pass
        assert len(journal._works) == len(threads)
    for thread in threads:
        thread.join()


def test_intents_queued_during_a_commit_are_committed_together(journal: Journal) -> None:
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    handles = queue_while_locked(journal, [f"s{i}" for i in range(6)])
    assert statements.count("COMMIT") == 1
    assert sorted(h.step_id for h in handles) == [f"s{i}" for i in range(6)]
    assert len({h.id for h in handles}) == 6
    db = sqlite3.connect(journal.path)
    try:
        rows = dict(db.execute("SELECT id, step_id FROM attempts").fetchall())
        running = db.execute("SELECT count(*) FROM steps WHERE state = 'running'").fetchone()
    finally:
        db.close()
    assert rows == {h.id: h.step_id for h in handles}  # each thread got its own row's id
    assert running == (6,)


def test_writes_of_several_runs_queued_during_a_commit_share_it_and_a_refused_one_fails_alone(
    journal: Journal,
) -> None:
    """Runs driven at once (`run --each`): a new run, another's status, a third's attempt and
    a run id already taken, all asked for while a commit is under way: one commit, and only
    the taken id refused."""
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    writes = {
        "new run": lambda: new_run(journal, "R0002"),
        "taken id": lambda: new_run(journal, "R0001"),
        "status": lambda: journal.set_run("R0001", status=RunStatus.SUCCEEDED),
        "attempt": lambda: begin(journal, "a"),
    }
    outcome: dict[str, Any] = {}

    def one(name: str) -> None:
        try:
            outcome[name] = writes[name]()
        except BaseException as exc:  # handed to the test
            outcome[name] = exc

    all_queued([threading.Thread(target=one, args=(name,)) for name in writes], journal)
    assert statements.count("COMMIT") == 1
    assert isinstance(outcome["taken id"], JournalError)
    assert "a run with id R0001 already exists" in str(outcome["taken id"])
    assert not any(isinstance(o, BaseException) for k, o in outcome.items() if k != "taken id")
    assert journal.get_run("R0002").status is RunStatus.RUNNING
    assert journal.get_run("R0001").status is RunStatus.SUCCEEDED
    assert journal.get_run("R0001").inputs == {"sku": "A"}  # not overwritten by the refused
    assert outcomes(journal.path) == [("a", None)]


def test_a_group_commit_that_fails_fails_every_intent_in_it(journal: Journal) -> None:
    # An attempt of a run the journal does not hold breaks the foreign key: the transaction
    # fails, and with it every intent it carried; none was written, so none may be sent.
    outcome = queue_while_locked(journal, ["a", "b", "c"], run_ids={"b": "NOPE"})
    assert all(isinstance(o, JournalError) for o in outcome)
    assert all("FOREIGN KEY" in str(o) for o in outcome)
    assert outcomes(journal.path) == []
    begin(journal, "d")  # the journal is still usable
    assert outcomes(journal.path) == [("d", None)]


def test_intents_of_an_interrupted_group_commit_go_to_their_own_threads(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signal interrupts the thread writing the batch before its commit: that thread's own
    # intent is dropped (it will send nothing), the others are written by their threads.
    write = journal._write
    calls: list[int] = []

    def interrupted_once() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return write()

    monkeypatch.setattr(journal, "_write", interrupted_once)
    outcome = queue_while_locked(journal, ["a", "b", "c"])
    interrupted = [o for o in outcome if isinstance(o, KeyboardInterrupt)]
    handles = [o for o in outcome if not isinstance(o, BaseException)]
    assert len(interrupted) == 1 and len(handles) == 2
    assert sorted(outcomes(journal.path)) == sorted((h.step_id, None) for h in handles)


def test_a_journal_through_a_symlink_to_a_file_not_yet_there_is_private(tmp_path: Path) -> None:
    import os
    import stat

    link = tmp_path / "journal.db"
    target = tmp_path / "elsewhere" / "real.db"
    link.symlink_to(target)
    open_journal(link).close()
    assert target.exists() and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o700


def other_owner(journal: Journal, pid: int, expires_in: float, run_id: str = "R0001") -> None:
    """Another process, for which the run's owner is gone, takes the run over."""
    import socket

    with open_journal(
        journal.location, Durability.NORMAL, alive=lambda owner, expires: False
    ) as taker:
        taker.take_lease(run_id, Owner(socket.gethostname(), pid), expires_in)


def test_a_process_whose_lease_was_taken_sends_nothing_more(tmp_path: Path) -> None:
    from sagactl.errors import LeaseLost

    sent: list[str] = []
    store = open_journal(tmp_path / "j.db", Durability.NORMAL)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        # Meanwhile this process stalls past its lease, and another one takes the run over.
        other_owner(store, 1, expires_in=30, run_id=request.url.path.rsplit("/", 1)[1])
        time.sleep(0.06)
        return httpx.Response(200)

    saga = load_text(TWO.replace('"{{ env.BASE }}"', "http://127.0.0.1:9"), "two.yaml")
    run = create_run(store, saga, {}, {}, lease_ttl=0.05)
    engine = Engine(
        saga,
        run,
        journal=store,
        secrets={},
        lease_ttl=0.05,
        executors=http_executors(httpx.Client(transport=httpx.MockTransport(handler))),
    )
    with pytest.raises(LeaseLost, match="taken over by another process"):
        engine.start()
    assert sent == [f"/a/{run.id}"]
    store.close()


def test_every_filter_finds_its_runs_however_many_newer_runs_there_are(journal: Journal) -> None:
    from sagactl.api import list_runs

    for i in range(120):
        new_run(journal, f"R{i:04d}x", name="two")
        journal.set_run(f"R{i:04d}x", status=RunStatus.SUCCEEDED)
    # R0001, the oldest, is running with its owner gone: interrupted.
    other_owner(journal, 1, expires_in=-1)
    found = list_runs(journal, status="interrupted", limit=5, page=10)
    assert [run.id for run, _ in found] == ["R0001"]
    assert [shown for _, shown in found] == ["interrupted"]
    assert list_runs(journal, status="running", page=10) == []
    assert len(list_runs(journal, status="succeeded", limit=500)) == 120


def test_a_stalled_process_that_lost_its_lease_writes_nothing_over_the_new_owner(
    tmp_path: Path,
) -> None:
    """Its last request was answered after another process had taken the run over: its
    result and the run's end are not written, and the new owner's view stays as it was."""
    from sagactl.errors import LeaseLost

    store = open_journal(tmp_path / "j.db", Durability.NORMAL)
    store.clock_margin = 0.0
    saga = load_text(TWO.replace('"{{ env.BASE }}"', "http://127.0.0.1:9"), "two.yaml")
    run = create_run(store, saga, {}, {}, lease_ttl=0.2)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/b/"):
            time.sleep(0.3)  # this process stalls past its lease (its heartbeat too)…
            other_owner(store, 1, expires_in=30, run_id=run.id)  # …and another takes over
        return httpx.Response(200)

    engine = Engine(
        saga,
        run,
        journal=store,
        secrets={},
        lease_ttl=1000,
        executors=http_executors(httpx.Client(transport=httpx.MockTransport(handler))),
    )
    with pytest.raises(LeaseLost, match="taken over by another process"):
        engine.start()
    final = store.get_run(run.id)
    assert final.status is RunStatus.RUNNING and final.owner_pid == 1
    assert store.steps(run.id)[("b", "action")].state is StepState.RUNNING
    store.close()


def test_an_older_sagactl_goes_on_writing_a_journal_a_newer_one_opened(tmp_path: Path) -> None:
    """Schema 4 added each attempt's documents beside the older columns: a sagactl of schema 3
    still driving a run writes its attempts as it did (its statements, word for word), and
    both are read back."""
    path = tmp_path / "j.db"
    with open_journal(path, Durability.NORMAL) as journal:
        new_run(journal)
        handle = begin(journal, "a")
        journal.finish_attempt(
            handle,
            outcome="success",
            duration_ms=1.0,
            status=200,
            response_headers=None,
            response_body="ok",
        )
    older = sqlite3.connect(path)
    cursor = older.execute(
        "INSERT INTO attempts (run_id, step_id, phase, attempt, span_id, started_at, method, url,"
        " request_headers, request_body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "R0001",
            "b",
            "action",
            1,
            "s",
            1000.0,
            "PUT",
            "http://127.0.0.1:9/b",
            '{"Idempotency-Key":"R0001.b.action"}',
            '{"n":1}',
        ),
    )
    older.execute(
        "UPDATE attempts SET finished_at = ?, duration_ms = ?, outcome = ?, status = ?,"
        " error_class = ?, error_message = ?, response_headers = ?, response_body = ?,"
        " in_doubt = ? WHERE id = ?",
        (
            1001.0,
            2.0,
            "failure",
            409,
            "HTTPStatus",
            "status 409",
            '{"X-A":"1"}',
            "conflict",
            0,
            cursor.lastrowid,
        ),
    )
    older.commit()
    older.close()
    with open_journal(path, Durability.NORMAL) as journal:
        a, b = journal.attempts("R0001")
    assert (a.method, a.url, a.response_headers, a.response_body) == (
        "PUT",
        "http://127.0.0.1:9/a",
        None,
        "ok",
    )
    assert (b.method, b.url, b.request_headers, b.request_body) == (
        "PUT",
        "http://127.0.0.1:9/b",
        {"Idempotency-Key": "R0001.b.action"},
        '{"n":1}',
    )
    assert (b.outcome, b.status, b.response_headers, b.response_body) == (
        "failure",
        409,
        {"X-A": "1"},
        "conflict",
    )
