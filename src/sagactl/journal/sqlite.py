"""The SQLite journal: one file holding every run (the tables of `sql.py`), shared by the
processes of one host (WAL mode, a busy timeout).

The file is refused, and never modified, when it is not a sagactl journal, is corrupt, or has a
newer schema version; a journal of an older sagactl is brought to this version by adding to it
only. Nothing here knows HTTP, templates or the terminal.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagactl.errors import JournalError
from sagactl.journal.contract import Durability
from sagactl.journal.leases import Alive, owner_alive
from sagactl.journal.sql import SqlJournal

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SqliteJournal"]

SCHEMA_VERSION = 7
APPLICATION_ID = 0x53414741  # "SAGA": tells a sagactl journal from any other SQLite file


# Each attempt writes its intent and its result, and every B-tree page a write touches is a page
# appended to the WAL (and fsynced at full durability). So `steps` is clustered on its key (no
# separate index to update) and attempt ids use plain row ids: no rows are ever deleted, so they
# never repeat, and AUTOINCREMENT would write its counter table on every insert. Journals created
# before these two choices keep their tables; every statement works on both.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            saga_path TEXT NOT NULL,
            saga_text TEXT NOT NULL,
            saga_hash TEXT NOT NULL,
            inputs TEXT NOT NULL,
            env TEXT NOT NULL,
            status TEXT NOT NULL,
            phase TEXT NOT NULL,
            pivot_passed INTEGER NOT NULL DEFAULT 0,
            trace_id TEXT NOT NULL,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL,
            owner_host TEXT,
            owner_pid INTEGER,
            lease_expires REAL
        )""",
        "CREATE INDEX runs_created ON runs (created_at DESC)",
        "CREATE INDEX runs_name ON runs (name, created_at DESC)",
        "CREATE INDEX runs_status ON runs (status, created_at DESC)",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL REFERENCES runs (id),
            step_id TEXT NOT NULL,
            phase TEXT NOT NULL,
            state TEXT NOT NULL,
            applied INTEGER NOT NULL DEFAULT 0,
            outputs TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            status INTEGER,
            error TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (run_id, step_id, phase)
        ) WITHOUT ROWID""",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            step_id TEXT NOT NULL,
            phase TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            span_id TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            duration_ms REAL,
            method TEXT NOT NULL,
            url TEXT NOT NULL,
            request_headers TEXT NOT NULL,
            request_body TEXT,
            outcome TEXT,
            status INTEGER,
            error_class TEXT,
            error_message TEXT,
            response_headers TEXT,
            response_body TEXT
        )""",
        "CREATE INDEX attempts_run ON attempts (run_id, id)",
    ],
    # The saga's step ids in file order (a JSON list), so that `show` need not parse the
    # journaled YAML again; NULL for runs journaled before.
    2: ["ALTER TABLE runs ADD COLUMN step_ids TEXT"],
    # Whether each attempt may have reached the service without an answer being read: a step
    # is in doubt when any of its attempts is, whatever later ones answered. Attempts journaled
    # before kept only the last attempt's doubt, in its outcome or error class.
    3: [
        "ALTER TABLE attempts ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0",
        "UPDATE attempts SET in_doubt = 1 WHERE outcome IN ('in_doubt', 'interrupted') OR"
        " error_class IN ('ReadTimeout', 'WriteTimeout', 'ReadError', 'WriteError',"
        " 'RemoteProtocolError')",
    ],
    # Each attempt's request and answer as JSON documents, whatever the kind of step. Added
    # beside the columns of versions 1-3, not in their place, so that an older sagactl still
    # driving a run on this journal goes on writing; rows written since hold placeholders in
    # those columns, and rows written before are read from them.
    4: [
        "ALTER TABLE attempts ADD COLUMN request TEXT",
        "ALTER TABLE attempts ADD COLUMN response TEXT",
    ],
    # Whether the run's compensation is the cleanup of a run that succeeded (`run --cleanup`),
    # which ends `cleaned`: a smoke test that passed, told apart from a failure undone.
    5: ["ALTER TABLE runs ADD COLUMN cleanup INTEGER NOT NULL DEFAULT 0"],
    # The list of a foreach step's items (SPEC §2.5), on the row of its action, journaled
    # before any item is sent; each item's requests have rows of their own (`lines[2]`).
    6: ["ALTER TABLE steps ADD COLUMN items TEXT"],
    # What operators did to runs by hand (SPEC §7): who, where, when and why.
    7: [
        """CREATE TABLE operator_actions (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            step_id TEXT NOT NULL,
            phase TEXT NOT NULL,
            action TEXT NOT NULL,
            user TEXT NOT NULL,
            host TEXT NOT NULL,
            at REAL NOT NULL,
            reason TEXT NOT NULL
        )""",
        "CREATE INDEX operator_actions_run ON operator_actions (run_id, id)",
        # The last attempt whose doubt a verify or an operator settled: those up to it no
        # longer make the step in doubt.
        "ALTER TABLE steps ADD COLUMN settled INTEGER",
        # Each time a run's end was told to someone (SPEC §6), and what came of it.
        """CREATE TABLE notifications (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            target TEXT NOT NULL,
            at REAL NOT NULL,
            delivered INTEGER NOT NULL,
            detail TEXT NOT NULL
        )""",
        "CREATE INDEX notifications_run ON notifications (run_id, id)",
    ],
}


class SqliteJournal(SqlJournal):
    """A `Journal` (see `contract.py`) in one SQLite file."""

    _BEGIN = "BEGIN IMMEDIATE"  # the write lock at once: no deadlock between two upgraders
    _ERRORS = (sqlite3.Error,)
    _INTEGRITY = sqlite3.IntegrityError
    _LIKE = "LIKE"  # SQLite's LIKE ignores the case of ASCII letters

    def __init__(
        self,
        path: str | Path,
        durability: Durability = Durability.FULL,
        clock: Callable[[], float] = time.time,
        alive: Alive = owner_alive,
    ) -> None:
        self.path = Path(path)
        super().__init__(durability, clock, alive)

    @property
    def location(self) -> str:
        return str(self.path)

    def _rows(self, cursor: Any) -> list[Any]:
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())

    # --- opening -----------------------------------------------------------------------------

    def _refuse(self, why: str) -> JournalError:
        return JournalError(f"{self.path}: {why}; it was left untouched")

    def _connect(self, durability: Durability) -> sqlite3.Connection:
        # Through a symlink, the file to create is its target: creating the link's path
        # with O_EXCL would fail, and SQLite would then create the target world-readable.
        real = Path(os.path.realpath(self.path))
        if not real.exists():
            try:
                real.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Created here only to set its mode; O_EXCL because opening and closing a
                # database file that this process already has open would drop SQLite's locks
                # on it (POSIX locks belong to the process, not to the descriptor).
                os.close(os.open(real, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass  # another process created it meanwhile
            except OSError as exc:
                raise JournalError(
                    f"{self.path}: cannot create the journal: {exc.strerror}"
                ) from None
        # An existing file is only read through SQLite (reading pragmas writes nothing), never
        # opened directly: closing a descriptor of it would drop this process's SQLite locks.
        try:
            db = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the journal: {exc}") from None
        try:
            # One statement, so one snapshot: read one by one, another process creating the
            # journal meanwhile could show its tables without its application id yet.
            app_id, version, tables = db.execute(
                "SELECT (SELECT application_id FROM pragma_application_id),"
                " (SELECT user_version FROM pragma_user_version),"
                " (SELECT count(*) FROM sqlite_master)"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            # Not the file's fault: it cannot be read or its shared-memory index cannot be
            # written (a full disk, a read-only directory).
            db.close()
            raise JournalError(f"{self.path}: cannot open the journal: {exc}") from None
        except sqlite3.DatabaseError as exc:
            db.close()
            if "not a database" in str(exc):
                raise self._refuse("not a sagactl journal (not an SQLite database)") from None
            raise self._refuse(f"corrupt or not a journal ({exc})") from None
        if tables and app_id != APPLICATION_ID:
            db.close()
            raise self._refuse("not a sagactl journal (an SQLite database of something else)")
        if version > SCHEMA_VERSION:
            db.close()
            raise self._refuse(
                f"journal schema version {version} is newer than this sagactl "
                f"understands ({SCHEMA_VERSION}); upgrade sagactl"
            )
        try:
            self._use_wal(db)
            sync = "FULL" if durability is Durability.FULL else "NORMAL"
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("PRAGMA foreign_keys=ON")
            if version < SCHEMA_VERSION:
                self._migrate(db, version)
        except sqlite3.Error as exc:
            db.close()
            raise JournalError(f"{self.path}: cannot prepare the journal: {exc}") from None
        return db

    @staticmethod
    def _use_wal(db: sqlite3.Connection, patience: float = 10.0) -> None:
        """Put the file in WAL mode, once for all (the mode stays with the file). Changing it
        needs the file to itself, and SQLite does not wait for that as it waits for a write
        lock: processes opening a new journal at the same moment wait here instead."""
        give_up = time.monotonic() + patience
        while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > give_up:
                    raise
                time.sleep(0.005)

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (a full disk): a second
            # rollback would fail and hide the first error.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
