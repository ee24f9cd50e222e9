"""The journal under stress: many processes at once, a read-only file, a copy taken mid-run
(what a power cut leaves on disk)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import sagas
from helpers import ROOT, cli, wait_for
from sagactl.journal import open_journal
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service


def start(saga: Path, journal: Path, service: Service, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BASE": service.url,
        "TOKEN": "tok-5ecr3t",
        "SAGACTL_JOURNAL": str(journal),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "sagactl", "run", str(saga), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ten_processes_share_one_journal(tmp_path: Path, service: Service) -> None:
    saga = tmp_path / "three.yaml"
    saga.write_text(sagas.THREE)
    journal = tmp_path / "journal.db"
    procs = [start(saga, journal, service) for _ in range(10)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    with open_journal(journal) as store:
        runs = store.list_runs(limit=100)
        assert len(runs) == 10 and {r.status for r in runs} == {RunStatus.SUCCEEDED}
        assert all(len(store.attempts(r.id)) == 3 for r in runs)
    assert len(service.applied) == 30 == len({key for key, _, _ in service.applied})


def test_journal_that_cannot_be_written_is_refused_and_nothing_is_sent(
    tmp_path: Path, service: Service
) -> None:
    """A journal on a read-only filesystem: SQLite opened with immutable=0 on a file it may not
    write. Simulated with a directory in place of the journal's WAL file, which no user (root
    included) can open as a file."""
    saga = tmp_path / "three.yaml"
    saga.write_text(sagas.THREE)
    journal = tmp_path / "journal.db"
    open_journal(journal).close()  # a valid, empty journal
    before = journal.read_bytes()
    (tmp_path / "journal.db-wal").unlink(missing_ok=True)
    (tmp_path / "journal.db-wal").mkdir()
    result = cli(
        "run",
        str(saga),
        "--journal",
        str(journal),
        env={"BASE": service.url, "TOKEN": "tok-5ecr3t"},
    )
    assert result.exit_code == 4, result.stderr
    assert "cannot" in result.stderr and str(journal) in result.stderr
    assert service.received == []
    assert journal.read_bytes() == before
    assert not stat.S_ISREG(os.stat(tmp_path / "journal.db-wal").st_mode)


def test_a_full_disk_stops_the_run_resumably_at_any_point(tmp_path: Path) -> None:
    """The kernel refuses the journal's writes past a size, as on a full disk (RLIMIT_FSIZE,
    with SIGXFSZ ignored: writes fail with EFBIG). Swept over sizes so that the disk fills at
    every point of a run: opening the journal, creating the run, before and after each
    request. Every time: exit 4 with a clear message and no traceback, and either nothing was
    sent, or the run is left as far as it got and `resume` on a disk with room finishes it,
    each effect applied once."""
    saga = tmp_path / "three.yaml"
    saga.write_text(sagas.THREE)
    seen: dict[str, int] = {}  # outcome: the first size that gave it
    for limit in range(0, 400_000, 8_192):
        journal = tmp_path / f"j{limit}.db"
        open_journal(journal).close()

        def disk_fills_at(limit: int = limit) -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        with Service() as service:
            env = {
                **os.environ,
                "BASE": service.url,
                "TOKEN": "tok-5ecr3t",
                "SAGACTL_JOURNAL": str(journal),
            }
            proc = subprocess.run(
                [sys.executable, "-m", "sagactl", "run", str(saga)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                preexec_fn=disk_fills_at,
            )
            assert proc.returncode in (0, 4), proc.stderr
            assert "Traceback" not in proc.stderr
            with open_journal(journal) as store:
                runs = store.list_runs()
            if proc.returncode == 0:
                outcome = "succeeded"
            elif not runs:
                assert f"{journal}: cannot" in proc.stderr
                outcome = "not started"
            else:
                run_id = runs[0].id
                assert f"{journal}: cannot write the journal" in proc.stderr
                assert f"sagactl resume {run_id}" in proc.stderr
                assert not runs[0].status.final
                outcome = f"stopped after {len(service.applied)} of 3"
                result = cli(
                    "resume",
                    run_id,
                    "--journal",
                    str(journal),
                    env={"BASE": service.url, "TOKEN": "tok-5ecr3t"},
                )
                assert result.exit_code == 0, result.stdout + result.stderr
            keys = [key for key, _, _ in service.applied]
            assert len(keys) == len(set(keys)) == (0 if outcome == "not started" else 3)
            seen[outcome] = seen.get(outcome, limit)
            if outcome == "succeeded":
                break  # room enough for the whole run: larger sizes change nothing
    assert {
        "not started",
        "stopped after 0 of 3",
        "stopped after 1 of 3",
        "stopped after 2 of 3",
        "stopped after 3 of 3",
        "succeeded",
    } <= set(seen), seen


def test_a_copy_taken_mid_run_resumes_to_the_same_end(tmp_path: Path, service: Service) -> None:
    """Copy the database and its WAL while a step is in flight, as a power cut would leave
    them; the copy opens, and `resume` from it applies nothing twice."""
    saga = tmp_path / "three.yaml"
    saga.write_text(sagas.THREE)
    journal = tmp_path / "journal.db"
    service.faults.append(Fault("PUT", "/b/", kind="delay_before", delay=0.8))
    proc = start(saga, journal, service)
    wait_for(lambda: bool(service.requests("PUT", "/b/")))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("journal.db", "journal.db-wal"):
        if (tmp_path / name).exists():
            shutil.copy(tmp_path / name, copy / name)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    with open_journal(copy / "journal.db") as store:
        run = store.list_runs()[0]
        assert run.status is RunStatus.RUNNING
    result = cli(
        "resume",
        run.id,
        "--journal",
        str(copy / "journal.db"),
        env={"BASE": service.url, "TOKEN": "tok-5ecr3t"},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    keys = [key for key, _, _ in service.applied]
    assert sorted(keys) == sorted(f"{run.id}.{s}.action" for s in "abc")


OPEN_AT_ONCE = """
import os, sys, time
from sagactl.journal import Journal, open_journal
journal, go = sys.argv[1], sys.argv[2]
open(f"{go}.{os.getpid()}", "w").close()  # ready: everything is imported
while not os.path.exists(go):
    time.sleep(0.0002)
open_journal(journal).close()
"""


def test_eight_processes_creating_the_journal_at_once_all_succeed(tmp_path: Path) -> None:
    """Each reads the new file's header while another may be creating its tables: none may
    take it for a foreign database, and the file is private."""
    for round_ in range(12):
        journal, go = tmp_path / f"j{round_}.db", tmp_path / f"go{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, str(journal), str(go)],
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        wait_for(lambda go=go: len(list(tmp_path.glob(f"{go.name}.*"))) == 8, timeout=60)
        go.touch()
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, errors
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
