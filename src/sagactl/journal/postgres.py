"""The PostgreSQL journal (SPEC §4, §8): the tables of `sql.py` in a database that processes on
several machines share, so that runs are driven and watched from any of them.

`--journal postgresql://USER@HOST/DB` (or `SAGACTL_JOURNAL`); a password is best left to
`PGPASSWORD` or `~/.pgpass`, and is never shown (`***`). The tables are made in the schema the
connection's `search_path` names first, by whichever process gets there first (an advisory lock
serialises them); a schema of a newer sagactl, or tables of something else, are refused and
left alone. Needs psycopg 3: `pip install 'sagactl[postgres]'`.

The same write-ahead rule as on SQLite: an attempt's intent is committed before its request is
sent. `--durability full` commits with `synchronous_commit` as the server has it (on: durable
once it returns); `normal` turns it off for this connection — a commit may then be lost if the
server itself crashes, never if this process is killed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from sagactl.errors import JournalError
from sagactl.journal.contract import Durability
from sagactl.journal.leases import Alive, owner_alive, passwords_in, shown_target
from sagactl.journal.sql import SqlJournal

__all__ = ["SCHEMA_VERSION", "PostgresJournal"]

SCHEMA_VERSION = 1
_LOCK_KEY = 0x53414741  # "SAGA": the advisory lock held while the tables are made

# The columns of SQLite's version 7, with PostgreSQL's types: times in seconds as double
# precision (REAL would be 4 bytes here), row ids from identity columns.
_SCHEMA = [
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
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        owner_host TEXT,
        owner_pid INTEGER,
        lease_expires DOUBLE PRECISION,
        step_ids TEXT,
        cleanup INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX runs_created ON runs (created_at DESC, id DESC)",
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
        updated_at DOUBLE PRECISION NOT NULL,
        items TEXT,
        settled BIGINT,
        PRIMARY KEY (run_id, step_id, phase)
    )""",
    """CREATE TABLE attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        step_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        span_id TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        duration_ms DOUBLE PRECISION,
        method TEXT NOT NULL,
        url TEXT NOT NULL,
        request_headers TEXT NOT NULL,
        request_body TEXT,
        outcome TEXT,
        status INTEGER,
        error_class TEXT,
        error_message TEXT,
        response_headers TEXT,
        response_body TEXT,
        in_doubt INTEGER NOT NULL DEFAULT 0,
        request TEXT,
        response TEXT
    )""",
    "CREATE INDEX attempts_run ON attempts (run_id, id)",
    """CREATE TABLE operator_actions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        step_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        action TEXT NOT NULL,
        "user" TEXT NOT NULL,
        host TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL
    )""",
    "CREATE INDEX operator_actions_run ON operator_actions (run_id, id)",
    """CREATE TABLE notifications (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id),
        target TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        delivered INTEGER NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX notifications_run ON notifications (run_id, id)",
    # What makes these tables a sagactl journal, and of which version.
    "CREATE TABLE sagactl_journal (version INTEGER NOT NULL)",
]


class _Row(tuple[Any, ...]):
    """A row read by position or by column name, as SQLite's rows are."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            key = self.names[key]
        return super().__getitem__(key)


def _rows_by_name(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def row(values: Sequence[Any]) -> _Row:
        made = _Row(values)
        made.names = names
        return made

    return row


class _Connection:
    """psycopg's connection as `SqlJournal` speaks to it: `?` parameters, `in_transaction`."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self._queries: dict[str, str] = {}

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        query = self._queries.get(sql)
        if query is None:
            query = self._queries[sql] = sql.replace("%", "%%").replace("?", "%s")
        # A service may answer with NUL characters, which PostgreSQL's text cannot hold.
        values = [a.replace("\x00", "\ufffd") if isinstance(a, str) else a for a in args]
        return self.connection.execute(query, values)

    @property
    def in_transaction(self) -> bool:
        return self.connection.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.connection.close()


class PostgresJournal(SqlJournal):
    """A `Journal` (see `contract.py`) in a PostgreSQL database."""

    _BEGIN = "BEGIN"
    _ERRORS = (psycopg.Error,)
    _INTEGRITY = psycopg.errors.UniqueViolation
    _PREFIX = "starts_with(id, ?)"  # collations need not sort by code point
    _LIKE = "ILIKE"
    # Row locks that do not block the key-share locks of the owner's inserts (attempts and
    # steps refer to their run): taking a lease waits for a commit relying on it, not for
    # the attempts being journaled.
    _FOR_UPDATE = " FOR NO KEY UPDATE"  # two processes taking one lease: the second waits
    _SHARE = " FOR SHARE"  # a commit relying on its lease: no takeover until it is written
    _CLAIM = " FOR NO KEY UPDATE SKIP LOCKED"  # claiming workers each get runs of their own
    _RETRY = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

    def __init__(
        self,
        url: str,
        durability: Durability = Durability.FULL,
        clock: Callable[[], float] = time.time,
        alive: Alive = owner_alive,
        *,
        existing: bool = False,
    ) -> None:
        self.url = url
        self._existing = existing
        super().__init__(durability, clock, alive)

    @property
    def location(self) -> str:
        return shown_target(self.url)

    def _rows(self, cursor: Any) -> list[Any]:
        return list(cursor.fetchall())

    def _connect(self, durability: Durability) -> _Connection:
        try:
            connection = psycopg.connect(self.url, autocommit=True, row_factory=_rows_by_name)
        except psycopg.Error as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            for password in passwords_in(self.url):  # libpq may quote what it could not parse
                message = message.replace(password, "***")
            raise JournalError(
                f"{self.location}: cannot connect to the journal: {shown_target(message)}"
            ) from None
        db = _Connection(connection)
        try:
            if durability is Durability.NORMAL:
                db.execute("SET synchronous_commit = off")
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: _Connection) -> None:
        """Make the tables if this database has none yet; refuse what is not ours or newer."""
        try:
            (found,) = db.execute("SELECT to_regclass('sagactl_journal') IS NOT NULL").fetchone()
            if found:
                self._check_version(db)
                return
            if self._existing:
                raise JournalError(
                    f"no journal at {self.location}: nothing has run with it. Give the journal "
                    "runs were written to (--journal, or SAGACTL_JOURNAL)"
                )
            db.execute("BEGIN")
            try:
                db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
                (found,) = db.execute(
                    "SELECT to_regclass('sagactl_journal') IS NOT NULL"
                ).fetchone()
                if not found:
                    (other,) = db.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone()
                    if other:
                        raise JournalError(
                            f"{self.location}: a table 'runs' that is not a sagactl journal's "
                            "is there; give a database or schema of its own; it was left "
                            "untouched"
                        )
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute("INSERT INTO sagactl_journal VALUES (?)", (SCHEMA_VERSION,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._check_version(db)
        except psycopg.Error as exc:
            raise JournalError(f"{self.location}: cannot prepare the journal: {exc}") from None

    def _check_version(self, db: _Connection) -> None:
        (version,) = db.execute("SELECT max(version) FROM sagactl_journal").fetchone()
        if version is not None and version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.location}: journal schema version {version} is newer than this "
                f"sagactl understands ({SCHEMA_VERSION}); upgrade sagactl; it was left untouched"
            )
