"""Running sagas end to end: the real command line against a real service on 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

import sagas
from helpers import TOKEN, Runs, cli
from sagactl.journal import open_journal
from sagactl.journal.sqlite import SCHEMA_VERSION
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service


def test_happy_path_sends_every_saga_header(runs: Runs, service: Service) -> None:
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", run_id)
    assert result.stdout.splitlines()[-1].startswith(f"run {run_id} succeeded in ")
    received = service.requests("PUT")
    assert [r.path for r in received] == [f"/a/{run_id}", f"/b/{run_id}", f"/c/{run_id}"]
    traces = set()
    spans = set()
    for request, step in zip(received, "abc", strict=True):
        headers = request.headers
        assert headers["Idempotency-Key"] == f"{run_id}.{step}.action"
        assert (
            headers["Saga-Id"],
            headers["Saga-Step"],
            headers["Saga-Phase"],
            headers["Saga-Attempt"],
        ) == (run_id, step, "action", "1")
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        version, trace, span, flags = headers["traceparent"].split("-")
        assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
        traces.add(trace)
        spans.add(span)
    assert len(traces) == 1 and len(spans) == 3
    assert received[1].body == {"from_a": run_id}  # an output of a, read by b
    assert runs.status(run_id) is RunStatus.SUCCEEDED


@pytest.mark.parametrize("failing", ["a", "b", "c"])
def test_failure_at_each_position_compensates_exactly_the_steps_before(
    runs: Runs, service: Service, failing: str
) -> None:
    service.faults.append(Fault("PUT", f"/{failing}/", status=400))
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 1, result.stdout
    before = "abc"[: "abc".index(failing)]
    deletes = [r.path for r in service.requests("DELETE")]
    assert deletes == [f"/{s}/{run_id}" for s in reversed(before)]
    assert service.resources == {}
    assert runs.status(run_id) is RunStatus.COMPENSATED
    assert f"cause: step {failing}: status 400, expected 2xx" in result.stdout


def test_transient_503s_are_retried_with_the_same_key(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/b/", status=503, times=2))
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 0, result.stdout
    tries = service.requests("PUT", "/b/")
    assert [r.headers["Saga-Attempt"] for r in tries] == ["1", "2", "3"]
    assert {r.headers["Idempotency-Key"] for r in tries} == {f"{run_id}.b.action"}
    assert len({r.headers["traceparent"] for r in tries}) == 3
    assert [k for k, _, _ in service.applied].count(f"{run_id}.b.action") == 1


def test_a_compensation_is_retried(runs: Runs, service: Service) -> None:
    service.faults += [Fault("PUT", "/c/", status=400), Fault("DELETE", "/b/", status=503)]
    result, _ = runs.run(sagas.THREE)
    assert result.exit_code == 1, result.stdout
    assert [r.headers["Saga-Attempt"] for r in service.requests("DELETE", "/b/")] == ["1", "2"]
    assert service.resources == {}


def test_a_stuck_run_says_in_json_which_commands_can_carry_it_on(
    runs: Runs, service: Service
) -> None:
    service.faults.append(Fault("PUT", "/ship/", status=400))
    result = runs("run", str(runs.file(sagas.PIVOT)), "--output", "json")
    assert result.exit_code == 3, result.stdout
    finished = [
        json.loads(line) for line in result.stdout.splitlines() if '"event":"run_finished"' in line
    ]
    assert [f["next"] for f in finished] == [["resume"]]
    # Seconds to the millisecond, not to the float's last digit.
    assert all(round(f["duration_s"], 3) == f["duration_s"] for f in finished)
    service.clear_faults()
    service.faults += [
        Fault("PUT", "/c/", status=400),
        Fault("DELETE", "/b/", status=503, times=None),
    ]
    result = runs("run", str(runs.file(sagas.THREE)), "--output", "json")
    finished = [
        json.loads(line) for line in result.stdout.splitlines() if '"event":"run_finished"' in line
    ]
    # Stuck compensating: either command would go on compensating, so one is suggested.
    assert [f["next"] for f in finished] == [["compensate"]]


def test_compensate_says_it_is_compensating(runs: Runs, service: Service) -> None:
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 0, result.stdout
    undone = runs("compensate", run_id, "--yes")
    assert undone.exit_code == 0, undone.stdout + undone.stderr
    assert " compensating saga three " in undone.stdout, undone.stdout
    assert "resuming" not in undone.stdout


def test_exhausted_compensation_is_stuck_until_compensated_again(
    runs: Runs, service: Service
) -> None:
    service.faults += [
        Fault("PUT", "/c/", status=400),
        Fault("DELETE", "/b/", status=503, times=None),
    ]
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 3, result.stdout
    # Either command would go on compensating: only one is suggested.
    assert f"sagactl resume {run_id}" not in result.stdout
    assert f"to roll it back: sagactl compensate {run_id}" in result.stdout
    assert runs.status(run_id) is RunStatus.STUCK
    # a was not undone: b, which depends on it, is not undone yet
    assert service.requests("DELETE", "/a/") == []
    service.clear_faults()
    again = runs("compensate", run_id[:6])
    assert again.exit_code == 0, again.stdout + again.stderr
    assert service.resources == {}
    assert runs.status(run_id) is RunStatus.COMPENSATED


def test_timeout_after_the_service_applied_is_in_doubt_and_compensated(
    runs: Runs, service: Service
) -> None:
    text = sagas.THREE_IMPATIENT
    service.faults.append(Fault("PUT", "/c/", kind="delay_after", delay=0.4))
    result, run_id = runs.run(text)
    assert result.exit_code == 1, result.stdout
    assert "c action in_doubt" in result.stdout
    time.sleep(0.3)  # let the service finish the answer nobody waits for
    deletes = [r.path for r in service.requests("DELETE")]
    assert deletes == [f"/c/{run_id}", f"/b/{run_id}", f"/a/{run_id}"]
    assert service.resources == {}


def test_connect_error_is_never_in_doubt(runs: Runs) -> None:
    result = runs("run", str(runs.file(sagas.THREE)), BASE="http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "a action failed" in result.stdout
    run_id = result.stdout.splitlines()[0]
    with open_journal(runs.journal) as journal:
        assert journal.steps(run_id)[("a", "action")].applied is False
        assert ("a", "compensate") not in journal.steps(run_id)


def test_pivot_then_failure_is_stuck_then_resumed_forward(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/ship/", status=400))
    result, run_id = runs.run(sagas.PIVOT)
    assert result.exit_code == 3, result.stdout
    assert "pivot charge succeeded" in result.stdout
    # Only what can succeed is suggested: rolling back is refused after the pivot.
    assert f"to carry it on:  sagactl resume {run_id}" in result.stdout
    assert "compensate" not in result.stdout.split("cause:")[1]
    assert service.requests("DELETE") == []
    refused = runs("compensate", run_id)
    assert refused.exit_code == 2
    assert "pivot charge succeeded, so the saga can only go forward" in refused.stderr
    assert refused.stdout == ""  # the refusal is all it prints: no run header, no table
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    assert [k for k, _, _ in service.applied] == [
        f"{run_id}.reserve.action",
        f"{run_id}.charge.action",
        f"{run_id}.ship.action",
    ]
    assert len(service.requests("PUT", "/charge/")) == 1


def test_confirms_run_only_after_every_action(runs: Runs, service: Service) -> None:
    result, _ = runs.run(sagas.TCC)
    assert result.exit_code == 0, result.stdout
    phases = [r.headers["Saga-Phase"] for r in service.received]
    assert phases == ["action"] * 3 + ["confirm"] * 3
    confirms = [r.headers["Saga-Step"] for r in service.received[3:]]
    assert confirms.index("mail") == 2  # mail needs seat and room: confirmed after both


def test_no_confirm_when_an_action_fails(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/mail/", status=409))
    result, _ = runs.run(sagas.TCC)
    assert result.exit_code == 1
    assert [r for r in service.received if r.headers["Saga-Phase"] == "confirm"] == []
    assert service.resources == {}


def test_fan_out_runs_in_parallel_up_to_the_concurrency(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/fan/", kind="delay_before", delay=0.2, times=None))
    started = time.monotonic()
    result, _ = runs.run(sagas.fan_out(5), "--concurrency", "5")
    parallel = time.monotonic() - started
    assert result.exit_code == 0
    started = time.monotonic()
    result, _ = runs.run(sagas.fan_out(5), "--concurrency", "1")
    serial = time.monotonic() - started
    assert result.exit_code == 0
    assert parallel < 0.8 < 1.0 <= serial


def test_secrets_never_reach_the_journal_or_the_output(runs: Runs, service: Service) -> None:
    text = sagas.THREE.replace("json: {v: 3}", 'json: {v: "{{ secrets.TOKEN }}"}').replace(
        'url: "/c/{{ run.id }}",', 'url: "/c/{{ run.id }}?t={{ secrets.TOKEN }}",'
    )
    service.faults.append(Fault("DELETE", "/b/", status=500))  # an error message too
    service.faults.append(Fault("PUT", "/c/", status=422))
    result, run_id = runs.run(text)
    assert result.exit_code == 1
    assert service.requests("PUT", "/c/")[0].body == {"v": TOKEN}  # the service got it
    import base64
    from urllib.parse import quote

    forms = [TOKEN, quote(TOKEN, safe=""), base64.b64encode(TOKEN.encode()).decode(), "5ecr3t"]
    stored = b"".join(p.read_bytes() for p in runs.journal.parent.glob("journal.db*"))
    shown = runs("show", run_id).stdout + result.stdout + result.stderr
    for form in forms:
        assert form.encode() not in stored, form
        assert form not in shown, form
    with open_journal(runs.journal) as journal:
        headers = [a.request_headers for a in journal.attempts(run_id)]
    assert headers and all(h["Authorization"] == "***" for h in headers)


def test_missing_secret_is_refused_before_anything(runs: Runs, service: Service) -> None:
    result = runs("run", str(runs.file(sagas.THREE)), TOKEN=None)
    assert result.exit_code == 2
    assert result.stderr == "missing secret TOKEN: set it in the environment\n"
    assert service.received == []
    assert runs("list").stdout == "no runs\n"


def test_list_show_and_prefixes(runs: Runs, service: Service) -> None:
    ok, first = runs.run(sagas.THREE, "--run-id", "01ABCDEFGHJKMNPQRSTVWXYZ00")
    service.faults.append(Fault("PUT", "/c/", status=400))
    bad, second = runs.run(sagas.THREE, "--run-id", "01ABCDEFGHJKMNPQRSTVWXYZ11")
    assert (ok.exit_code, bad.exit_code) == (0, 1)
    listed = runs("list").stdout.splitlines()
    assert [line.split()[:3] for line in listed] == [
        [second, "three", "compensated"],
        [first, "three", "succeeded"],
    ]
    assert runs("list", "--status", "succeeded").stdout.split()[0] == first
    assert runs("list", "--limit", "1").stdout.count("\n") == 1
    ambiguous = runs("show", "01ABCD")
    assert ambiguous.exit_code == 4
    assert first in ambiguous.stderr and second in ambiguous.stderr
    assert runs("show", "ZZZZZZ").exit_code == 4
    assert runs("show", "01A").exit_code == 4
    shown = runs("show", second[:-1].lower()).stdout
    assert f"run {second}" in shown
    assert "status    compensated" in shown
    assert re.search(r"\n  c +action +failed +1 attempt +status 400", shown), shown
    assert re.search(r"\n  b +compensate +succeeded", shown), shown
    assert re.search(
        r"\+ *\d+\.\d{3}s c action #1 +400 failure \d+ms  status 400, expected 2xx\n"
        r" {12}PUT http://127\.0\.0\.1:\d+/c/\S+\n",
        shown,
    )


def test_resume_uses_the_journaled_saga_not_the_edited_file(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/ship/", status=400))
    path = runs.file(sagas.PIVOT, "pivot.yaml")
    result = runs("run", str(path))
    run_id = result.stdout.splitlines()[0]
    assert result.exit_code == 3
    path.write_text(sagas.PIVOT.replace("/ship/", "/elsewhere/"))
    assert runs("resume", run_id).exit_code == 0
    assert service.requests("PUT", "/elsewhere/") == []
    assert len(service.requests("PUT", "/ship/")) == 2


def test_resume_of_a_finished_run_sends_nothing(runs: Runs, service: Service) -> None:
    _, run_id = runs.run(sagas.THREE)
    count = len(service.received)
    assert runs("resume", run_id).exit_code == 0
    assert len(service.received) == count


def test_compensate_a_succeeded_run_needs_yes(runs: Runs, service: Service) -> None:
    _, run_id = runs.run(sagas.TCC)
    refused = runs("compensate", run_id)
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    done = runs("compensate", run_id, "--yes")
    assert done.exit_code == 0
    assert service.resources == {}


@pytest.mark.parametrize("content", [b"not a database at all, just text\n" * 4, b"\x00" * 100])
def test_a_file_that_is_not_a_journal_is_refused_untouched(runs: Runs, content: bytes) -> None:
    runs.journal.write_bytes(content)
    result = runs("list")
    assert result.exit_code == 4
    assert "left untouched" in result.stderr
    assert runs.journal.read_bytes() == content


def test_newer_and_foreign_journals_are_refused_untouched(runs: Runs, tmp_path: Path) -> None:
    import sqlite3

    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA application_id=1396787009")
    db.execute("CREATE TABLE runs (id TEXT)")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE notes (x TEXT)")
    db.commit()
    db.close()
    for path, message in [
        (newer, "schema version 99 is newer"),
        (foreign, "not a sagactl journal"),
    ]:
        before = path.read_bytes()
        result = runs("run", str(runs.file(sagas.THREE)), SAGACTL_JOURNAL=str(path))
        assert result.exit_code == 4, result.stderr
        assert message in result.stderr
        assert path.read_bytes() == before
    assert runs.service.received == []


# The tables as sagactl's first schema created them (version 1), word for word; version 2 added
# the runs' step ids. Written here, not taken from the code: they are what users' files hold.
SCHEMA_1 = [
    """CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, saga_path TEXT NOT NULL,
        saga_text TEXT NOT NULL, saga_hash TEXT NOT NULL, inputs TEXT NOT NULL, env TEXT NOT NULL,
        status TEXT NOT NULL, phase TEXT NOT NULL, pivot_passed INTEGER NOT NULL DEFAULT 0,
        trace_id TEXT NOT NULL, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        finished_at REAL, owner_host TEXT, owner_pid INTEGER, lease_expires REAL)""",
    "CREATE INDEX runs_created ON runs (created_at DESC)",
    "CREATE INDEX runs_name ON runs (name, created_at DESC)",
    "CREATE INDEX runs_status ON runs (status, created_at DESC)",
    """CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs (id), step_id TEXT NOT NULL,
        phase TEXT NOT NULL, state TEXT NOT NULL, applied INTEGER NOT NULL DEFAULT 0,
        outputs TEXT, attempts INTEGER NOT NULL DEFAULT 0, status INTEGER, error TEXT,
        updated_at REAL NOT NULL, PRIMARY KEY (run_id, step_id, phase)) WITHOUT ROWID""",
    """CREATE TABLE attempts (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs (id),
        step_id TEXT NOT NULL, phase TEXT NOT NULL, attempt INTEGER NOT NULL,
        span_id TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, duration_ms REAL,
        method TEXT NOT NULL, url TEXT NOT NULL, request_headers TEXT NOT NULL,
        request_body TEXT, outcome TEXT, status INTEGER, error_class TEXT, error_message TEXT,
        response_headers TEXT, response_body TEXT)""",
    "CREATE INDEX attempts_run ON attempts (run_id, id)",
]


def old_journal(path: Path, version: int) -> None:
    """A journal as sagactl of schema `version` (1 or 2) left it: one compensated run of THREE
    whose b timed out (in doubt, then compensated), and a later attempt in flight."""
    import sqlite3

    db = sqlite3.connect(path)
    for statement in SCHEMA_1 + (
        ["ALTER TABLE runs ADD COLUMN step_ids TEXT"] if version == 2 else []
    ):
        db.execute(statement)
    db.execute("PRAGMA application_id=1396787009")  # "SAGA"
    db.execute(f"PRAGMA user_version={version}")
    db.execute(
        "INSERT INTO runs (id, name, saga_path, saga_text, saga_hash, inputs, env, status, phase,"
        " trace_id, error, created_at, updated_at, finished_at) VALUES ('OLD1', 'three',"
        " 'three.yaml', ?, 'h', '{}', '{}', 'compensated', 'compensate', 't', 'step b: timeout',"
        " 1000, 1001, 1001)",
        (sagas.THREE,),
    )
    rows = [
        (
            1,
            "a",
            "action",
            1,
            "PUT",
            "http://127.0.0.1:9/a/OLD1",
            '{"Idempotency-Key":"OLD1.a.action"}',
            None,
            "success",
            201,
            None,
            None,
            '{"Location":"/a/1"}',
            '{"id": 1}',
        ),
        (
            2,
            "b",
            "action",
            1,
            "PUT",
            "http://127.0.0.1:9/b/OLD1",
            '{"Idempotency-Key":"OLD1.b.action"}',
            '{"n": 1}',
            "in_doubt",
            None,
            "ReadTimeout",
            "no answer",
            None,
            None,
        ),
        (
            3,
            "a",
            "compensate",
            1,
            "DELETE",
            "http://127.0.0.1:9/a/OLD1",
            "{}",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
    ]
    for row in rows:
        db.execute(
            "INSERT INTO attempts (id, run_id, step_id, phase, attempt, span_id, started_at,"
            " method, url, request_headers, request_body, outcome, status, error_class,"
            " error_message, response_headers, response_body) VALUES (?, 'OLD1', ?, ?, ?, 's',"
            " 1000, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
    db.commit()
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_journal_of_an_older_schema_is_migrated_and_its_runs_still_show(
    runs: Runs, version: int
) -> None:
    """Version 2 added the runs' step ids (runs journaled before have none: `show` reads their
    order from the journaled saga text); 3, each attempt's doubt; 4, each attempt's request and
    answer as documents, whatever the kind of step; 5, whether a run's compensation is a
    cleanup."""
    import sqlite3

    old_journal(runs.journal, version)
    _, new_run = runs.run(sagas.THREE)
    with open_journal(runs.journal) as journal:
        assert journal.get_run("OLD1").step_ids is None
        assert journal.get_run(new_run).step_ids == ("a", "b", "c")
        old = journal.attempts("OLD1")
    assert [(a.step_id, a.phase, a.method, a.url, a.outcome, a.in_doubt) for a in old] == [
        ("a", "action", "PUT", "http://127.0.0.1:9/a/OLD1", "success", False),
        ("b", "action", "PUT", "http://127.0.0.1:9/b/OLD1", "in_doubt", True),
        ("a", "compensate", "DELETE", "http://127.0.0.1:9/a/OLD1", None, False),
    ]
    assert (old[0].request_headers, old[0].request_body) == (
        {"Idempotency-Key": "OLD1.a.action"},
        None,
    )
    assert (old[0].response_headers, old[0].response_body) == ({"Location": "/a/1"}, '{"id": 1}')
    assert (old[1].request_body, old[1].response_headers, old[1].response_body) == (
        '{"n": 1}',
        None,
        None,
    )
    db = sqlite3.connect(runs.journal)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with open_journal(runs.journal) as journal:
        assert journal.get_run("OLD1").cleanup is False
        assert all(record.items is None for record in journal.steps("OLD1").values())
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    shown = [runs("show", run_id, "--output", "json") for run_id in ("OLD1", new_run)]
    for result in shown:
        assert result.exit_code == 0, result.stderr
        assert [s["id"] for s in json.loads(result.stdout)["steps"]] == ["a", "b", "c"]
    text = runs("show", "OLD1")
    assert text.exit_code == 0 and "PUT http://127.0.0.1:9/b/OLD1" in text.stdout, text.stdout


def test_journal_is_private(runs: Runs) -> None:
    runs.run(sagas.THREE)
    assert runs.journal.stat().st_mode & 0o777 == 0o600


def test_chosen_run_ids_are_checked_and_found_as_typed(runs: Runs) -> None:
    bad = runs("run", str(runs.file(sagas.THREE)), "--run-id", "no spaces")
    assert bad.exit_code == 2 and "--run-id 'no spaces'" in bad.stderr
    result, run_id = runs.run(sagas.THREE, "--run-id", "ci-build-42")
    assert (result.exit_code, run_id) == (0, "ci-build-42")
    assert runs("show", "ci-build").exit_code == 0
    again, _ = runs.run(sagas.THREE, "--run-id", "ci-build-42")
    assert again.exit_code == 4 and "already exists" in again.stderr


def test_resume_without_its_secret_sends_nothing(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/ship/", status=400))
    text = sagas.PIVOT.replace("env: [BASE]", "env: [BASE]\nsecrets: [TOKEN]")
    _, run_id = runs.run(text)
    count = len(service.received)
    result = runs("resume", run_id, TOKEN=None)
    assert result.exit_code == 2
    assert result.stderr == "missing secret TOKEN: set it in the environment\n"
    assert len(service.received) == count


def test_compensation_of_an_in_doubt_step_that_reads_its_own_outputs_is_stuck(
    runs: Runs, service: Service
) -> None:
    """`a` undoes itself with an id from its own response: in doubt, there is no response."""
    text = sagas.THREE_IMPATIENT
    service.faults.append(Fault("PUT", "/a/", kind="delay_after", delay=0.4))
    result, run_id = runs.run(text)
    assert result.exit_code == 3, result.stdout
    assert (
        "cannot render the compensate (the outputs of a are unknown: its action is in "
        "doubt)" in result.stdout
    )
    assert f"sagactl compensate {run_id}" in result.stdout


def test_an_output_holding_a_secret_is_withheld_not_garbled(runs: Runs, service: Service) -> None:
    """A masked value must never be sent as if it were the real one after a resume."""
    text = (
        sagas.PIVOT.replace("env: [BASE]", "env: [BASE]\nsecrets: [TOKEN]")
        .replace(
            """    action: {method: PUT, url: "/reserve/{{ run.id }}"}""",
            """    action:
      {method: PUT, url: "/reserve/{{ run.id }}", json: {k: "{{ secrets.TOKEN }}"}}
    outputs: {copy: "{{ response.json.k }}"}""",
        )
        .replace(
            """    action: {method: PUT, url: "/ship/{{ run.id }}"}""",
            """    action:
      method: PUT
      url: "/ship/{{ run.id }}"
      json: {k: "{{ steps.reserve.outputs.copy }}"}""",
        )
    )
    service.faults.append(Fault("PUT", "/ship/", status=400))
    result, run_id = runs.run(text)
    assert result.exit_code == 3
    assert service.requests("PUT", "/ship/")[0].body == {"k": TOKEN}  # in-process: the real one
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 3
    assert (
        "steps.reserve.outputs.copy held a secret, so the journal did not keep it" in resumed.stdout
    )
    assert len(service.requests("PUT", "/ship/")) == 1  # nothing garbled was sent
    assert TOKEN.encode() not in b"".join(
        p.read_bytes() for p in runs.journal.parent.glob("journal.db*")
    )


def test_hints_quote_a_journal_path_with_a_space(tmp_path: Path, service: Service) -> None:
    """A suggested command pastes as it is, also when the journal's path has a space."""
    journal = tmp_path / "my journals" / "j.db"
    journal.parent.mkdir()
    saga = tmp_path / "pivot.yaml"
    saga.write_text(sagas.PIVOT)
    service.faults.append(Fault("PUT", "/ship/", status=400))
    result = cli(
        "run",
        str(saga),
        "--journal",
        str(journal),
        env={"BASE": service.url, "NO_COLOR": "1", "SAGACTL_JOURNAL": None},
    )
    assert result.exit_code == 3, result.stdout
    run_id = result.stdout.splitlines()[0]
    assert f"sagactl resume {run_id} --journal '{journal}'" in result.stdout, result.stdout
