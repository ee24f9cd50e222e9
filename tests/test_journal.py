"""The journal's write-ahead rule with one commit a step: an attempt's intent is committed before
it is sent; its final result rides with the next write. Checked from a second connection, as
another process (or a resume after a crash) would read the file."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sagactl.engine import Engine, create_run
from sagactl.errors import JournalError
from sagactl.journal import Durability, Journal, RunStatus, StepState
from sagactl.loader import load_text
from sagactl.services import Service

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
    return journal.begin_attempt("R0001", step, "action", 1, span_id="s", method="PUT",
                                 url=f"http://127.0.0.1:9/{step}", headers={}, body=None)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    store = Journal(tmp_path / "j.db", Durability.NORMAL)
    store.create_run(run_id="R0001", name="two", saga_path="p", saga_text="t", saga_hash="h",
                     inputs={}, env={}, trace_id="t", owner_host="h", owner_pid=1, lease_ttl=30)
    return store


def test_an_intent_is_committed_before_the_call_returns(journal: Journal) -> None:
    begin(journal, "a")
    assert outcomes(journal.path) == [("a", None)]


def test_a_deferred_result_is_committed_with_the_next_intent(journal: Journal) -> None:
    first = begin(journal, "a")
    journal.finish_attempt(first, outcome="success", duration_ms=1.0, status=200,
                           step_state=StepState.SUCCEEDED, applied=True, defer=True)
    assert outcomes(journal.path) == [("a", None)]  # not yet: no commit of its own
    begin(journal, "b")
    assert outcomes(journal.path) == [("a", "success"), ("b", None)]


def test_reads_flush_and_close_see_deferred_results_written(journal: Journal) -> None:
    first = begin(journal, "a")
    journal.finish_attempt(first, outcome="success", duration_ms=1.0, status=200,
                           step_state=StepState.SUCCEEDED, applied=True, defer=True)
    assert journal.steps("R0001")[("a", "action")].state is StepState.SUCCEEDED
    second = begin(journal, "b")
    journal.finish_attempt(second, outcome="failure", duration_ms=1.0, status=422,
                           step_state=StepState.FAILED, defer=True)
    journal.close()
    assert outcomes(journal.path) == [("a", "success"), ("b", "failure")]


def test_a_result_not_yet_committed_when_the_process_dies_is_sent_again_once(
        tmp_path: Path) -> None:
    """The process dies when it journals b's intent, the write that carries a's result. The
    resume finds a in doubt and sends it again under the same key: the service answers from its
    record, and applies a once."""

    class Died(BaseException):
        pass

    class DiesBeforeB(Journal):
        """Dies as b's intent is journaled: that write and every later one never happen."""

        dead = False

        def begin_attempt(self, run_id: str, step_id: str, *args: Any, **kwargs: Any) -> Any:
            self.dead = self.dead or step_id == "b"
            return super().begin_attempt(run_id, step_id, *args, **kwargs)

        def _write(self) -> Any:  # type: ignore[override]
            if self.dead:
                raise Died
            return super()._write()

    saga = load_text(TWO, "two.yaml")
    path = tmp_path / "j.db"
    with Service() as service, httpx.Client() as client:
        environ = {"BASE": service.url}
        dying = DiesBeforeB(path, Durability.NORMAL)
        run = create_run(dying, saga, {}, environ)
        with pytest.raises(Died):
            Engine(saga, run, journal=dying, client=client, secrets={}).start()
        dying._db.close()  # as the dead process's descriptors would be
        assert outcomes(path) == [("a", None)]
        with Journal(path, Durability.NORMAL) as store:
            status = Engine(saga, store.get_run(run.id), journal=store, client=client,
                            secrets={}).resume()
        assert status is RunStatus.SUCCEEDED
        keys = [key for key, _, _ in service.applied]
        assert sorted(keys) == [f"{run.id}.a.action", f"{run.id}.b.action"]
        sent = [r.headers["Idempotency-Key"] for r in service.received]
        assert sent.count(f"{run.id}.a.action") == 2
        assert outcomes(path) == [("a", "interrupted"), ("a", "success"), ("b", "success")]


def queue_while_locked(journal: Journal, steps: list[str],
                       run_ids: dict[str, str] | None = None) -> list[Any]:
    """Begin one attempt a thread while a commit is under way (the journal's lock is held), so
    that every intent is queued before any is written; returns each thread's handle or error."""
    outcome: list[Any] = [None] * len(steps)

    def one(i: int) -> None:
        try:
            outcome[i] = journal.begin_attempt(
                (run_ids or {}).get(steps[i], "R0001"), steps[i], "action", 1, span_id="s",
                method="PUT", url="http://127.0.0.1:9/x", headers={}, body=None)
        except BaseException as exc:  # handed to the test, raised or not there
            outcome[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(steps))]
    with journal._lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(journal._intents) < len(steps) and time.monotonic() < deadline:
            time.sleep(0.001)  # waiting for the threads to queue, not for time to pass
        assert len(journal._intents) == len(steps)
    for thread in threads:
        thread.join()
    return outcome


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
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
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
    Journal(link).close()
    assert target.exists() and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o700


def other_owner(journal: Journal, pid: int, expires_in: float, run_id: str = "R0001") -> None:
    import socket

    db = sqlite3.connect(journal.path)
    db.execute("UPDATE runs SET owner_host = ?, owner_pid = ?, lease_expires = ? WHERE id = ?",
               (socket.gethostname(), pid, time.time() + expires_in, run_id))
    db.commit()
    db.close()


def test_a_lease_held_by_a_zombie_can_be_taken(journal: Journal) -> None:
    import subprocess
    import sys

    from sagactl.journal import owner_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Exited, not yet reaped: a zombie, which signal 0 still finds.
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        other_owner(journal, child.pid, expires_in=30)
        assert not owner_alive(*journal.lease_owner("R0001"))
        journal.take_lease("R0001", "me", 42, 30, owner_alive)
    finally:
        child.wait()


def test_a_lease_not_renewed_within_its_time_to_live_can_be_taken(journal: Journal) -> None:
    """Its owner is alive (this very process), but stopped renewing: stalled, or its PID
    reused by an unrelated process."""
    import os

    from sagactl.journal import owner_alive

    other_owner(journal, os.getpid(), expires_in=-1)
    journal.take_lease("R0001", "me", 42, 30, owner_alive)
    other_owner(journal, os.getpid(), expires_in=30)
    with pytest.raises(JournalError, match="being driven by process"):
        journal.take_lease("R0001", "me", 42, 30, owner_alive)


def test_a_process_whose_lease_was_taken_sends_nothing_more(tmp_path: Path) -> None:
    from sagactl.errors import LeaseLost

    sent: list[str] = []
    store = Journal(tmp_path / "j.db", Durability.NORMAL)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        # Meanwhile this process stalls past its lease, and another one takes the run over.
        other_owner(store, 1, expires_in=30, run_id=request.url.path.rsplit("/", 1)[1])
        time.sleep(0.06)
        return httpx.Response(200)

    saga = load_text(TWO.replace('"{{ env.BASE }}"', "http://127.0.0.1:9"), "two.yaml")
    run = create_run(store, saga, {}, {}, lease_ttl=0.05)
    engine = Engine(saga, run, journal=store, secrets={}, lease_ttl=0.05,
                    client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(LeaseLost, match="taken over by another process"):
        engine.start()
    assert sent == [f"/a/{run.id}"]
    store.close()


def test_every_filter_finds_its_runs_however_many_newer_runs_there_are(journal: Journal) -> None:
    from sagactl.runs import list_runs

    for i in range(120):
        journal.create_run(run_id=f"R{i:04d}x", name="two", saga_path="p", saga_text="t",
                           saga_hash="h", inputs={}, env={}, trace_id="t", owner_host="h",
                           owner_pid=1, lease_ttl=30)
        journal.set_run(f"R{i:04d}x", status=RunStatus.SUCCEEDED)
    # R0001, the oldest, is running with its owner gone: interrupted.
    other_owner(journal, 1, expires_in=-1)
    found = list_runs(journal, status="interrupted", limit=5, page=10)
    assert [run.id for run, _ in found] == ["R0001"]
    assert [shown for _, shown in found] == ["interrupted"]
    assert list_runs(journal, status="running", page=10) == []
    assert len(list_runs(journal, status="succeeded", limit=500)) == 120


def test_a_stalled_process_that_lost_its_lease_writes_nothing_over_the_new_owner(
        tmp_path: Path) -> None:
    """Its last request was answered after another process had taken the run over: its
    result and the run's end are not written, and the new owner's view stays as it was."""
    from sagactl.errors import LeaseLost

    store = Journal(tmp_path / "j.db", Durability.NORMAL)
    store.clock_margin = 0.0
    saga = load_text(TWO.replace('"{{ env.BASE }}"', "http://127.0.0.1:9"), "two.yaml")
    run = create_run(store, saga, {}, {}, lease_ttl=0.2)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/b/"):
            time.sleep(0.3)  # this process stalls past its lease (its heartbeat too)…
            other_owner(store, 1, expires_in=30, run_id=run.id)  # …and another takes over
        return httpx.Response(200)

    engine = Engine(saga, run, journal=store, secrets={}, lease_ttl=1000,
                    client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(LeaseLost, match="taken over by another process"):
        engine.start()
    final = store.get_run(run.id)
    assert final.status is RunStatus.RUNNING and final.owner_pid == 1
    assert store.steps(run.id)[("b", "action")].state is StepState.RUNNING
    store.close()


def test_time_up_before_a_byte_of_the_request_left_is_not_in_doubt() -> None:
    """Connecting took the whole attempt: the request was never sent, as after a connect
    timeout."""
    import socket

    import httpcore

    from sagactl.transport import _Stream, deadline

    here, there = socket.socketpair()
    stream = _Stream(_SocketStream(here))  # type: ignore[arg-type]
    with deadline(0.0), pytest.raises(httpcore.ConnectTimeout):
        stream.write(b"PUT / HTTP/1.1\r\n\r\n")
    with deadline(5.0):
        stream.write(b"PUT / HTTP/1.1\r\n")
    assert there.recv(100) == b"PUT / HTTP/1.1\r\n"
    here.close()
    there.close()


class _SocketStream:
    """The part of httpcore's stream that _Stream uses, over a plain socket."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else None
