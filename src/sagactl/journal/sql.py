"""What every journal kept in an SQL database does (SQLite, PostgreSQL): the runs, each step's
state, and the history of every attempt, written before and after each request so that a
killed run can be resumed, whoever reads it.

Tables (the same columns in every database; `sqlite.py` and `postgres.py` create them):
    runs      one row a run: the saga text and hash, inputs, env values read, status, lease
    steps     one row a (run, step, phase) once it started: state, outputs, whether it may have
              taken effect; for a foreach step, one row for the step (its action's row holds
              the list of its items) and one for each item (`lines[2]`)
    attempts  one row an attempt, inserted *before* its request is sent and completed once with
              its result; never deleted. An attempt without a result is one whose outcome was
              never seen: in doubt. Its request and its answer are JSON documents, whatever
              the kind of step: {"operation", "target", "headers", "body"} (an HTTP method
              and URL) and {"headers", "body"}; rows of journals older than version 4 keep
              them in the columns `method`, `url`, `request_headers`... instead.
    operator_actions, notifications   what operators did by hand, and whom a run's end was told

`SqlJournal` holds every query, written once with `?` parameters; a subclass connects, names
its database's errors and says the few words its dialect spells differently (class constants).
Nothing here knows HTTP, templates or the terminal.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ClassVar, Self, TypeVar, cast

from sagactl.errors import JournalError, LeaseLost
from sagactl.journal.contract import Durability, shown_status
from sagactl.journal.leases import Alive, owner_alive
from sagactl.records import (
    AttemptHandle,
    AttemptRecord,
    Notification,
    OperatorAction,
    Owner,
    RunPhase,
    RunRecord,
    RunStatus,
    Statistics,
    StepRecord,
    StepState,
)

__all__ = ["BODY_LIMIT", "SqlJournal"]

_T = TypeVar("_T")

BODY_LIMIT = 64 * 1024


def _clip(text: str | None, limit: int = BODY_LIMIT) -> str | None:
    """Text as the journal keeps it: at most `limit` bytes, and always valid UTF-8 (a service
    can put a lone surrogate in its JSON, which SQLite cannot store)."""
    if text is None:
        return None
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raw = text.encode(errors="replace")
        text = raw.decode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore") + "…[truncated]"


class _Again(Exception):
    """A transaction the database rolled back for another's sake, to be run again."""


class _Lost(Exception):
    """Runs of the transaction another process took over: run again without their writes."""

    def __init__(self, lost: Mapping[str, tuple[str, int]]) -> None:
        super().__init__(", ".join(lost))
        self.lost = lost


class _Work:
    """A write waiting to be committed with others (`SqliteJournal._commit`), and what came of
    it: the value `apply` returned, or the JournalError it raised."""

    __slots__ = ("apply", "done", "error", "result", "run_id")

    def __init__(self, apply: Callable[[Any], Any], run_id: str | None = None) -> None:
        self.apply = apply
        self.run_id = run_id
        """The run the write is of: it fails alone if another process took the run."""
        self.done = False
        self.result: Any = None
        self.error: JournalError | None = None


# One encoder for every write: json.dumps with options builds a new one per call.
# ASCII only: a lone surrogate in a value (from a service's JSON) is written as its escape, which
# a database can store and json.loads reads back.
_json = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class SqlJournal:
    """A `Journal` (see `contract.py`) in an SQL database, shared safely by the threads of one
    process (one connection, one lock, group commit) and by any number of processes."""

    clock_margin = 5.0
    """Seconds by which another host's clock may run ahead of this one's: how long before its
    lease expires a commit starts checking that the run is still this process's."""

    # What each database spells its own way.
    _BEGIN: ClassVar[str] = "BEGIN"
    """How a write transaction starts: it must hold the right to write until its commit."""
    _ERRORS: ClassVar[tuple[type[Exception], ...]] = ()
    """The database's errors, reported as JournalError."""
    _INTEGRITY: ClassVar[type[Exception]] = Exception
    """The error of a row whose key is taken."""
    _PREFIX: ClassVar[str] = "id >= ? AND id < ? || char(1114111)"
    """Whether a run's id starts with a text (its index used): every id with a prefix sorts
    from it to below prefix || the highest character, in the order of code points."""
    _LIKE: ClassVar[str] = "LIKE"
    """A match that ignores the case of ASCII letters."""
    _FOR_UPDATE: ClassVar[str] = ""
    """Appended to a SELECT of a row the transaction is about to change (a lease taken)."""
    _SHARE: ClassVar[str] = ""
    """Appended to the SELECT of a lease a commit relies on: no other may take it meanwhile."""
    _RETRY: ClassVar[tuple[type[Exception], ...]] = ()
    """Errors after which a transaction is run again: nothing of it was written."""
    _CLAIM: ClassVar[str] = ""
    """Appended to the SELECT of runs to claim: rows another process is claiming are passed
    over rather than waited for (SQLite's transactions are one at a time: nothing to add)."""

    def __init__(
        self,
        durability: Durability = Durability.FULL,
        clock: Callable[[], float] = time.time,
        alive: Alive = owner_alive,
    ) -> None:
        self.clock = clock
        self._alive = alive
        self._lock = threading.RLock()
        # Results recorded with `defer`: written by the next transaction, whatever it is.
        self._pending: list[tuple[str, str, tuple[Any, ...]]] = []
        # Writes queued by `_commit`, written together by whichever thread commits next.
        self._queue_lock = threading.Lock()
        self._works: list[_Work] = []
        # The runs this object's process drives, and as whom: every commit checks that their
        # leases are still this process's, so that one that lost its lease while stalled
        # writes nothing over the process that took the run over.
        self._driving: dict[str, Owner] = {}
        # When the lease this object last wrote for each run expires: until shortly before,
        # no other process can have taken it, and commits need not look.
        self._leases: dict[str, float] = {}
        # The runs it drove that another process took over: their writes fail, unwritten,
        # until they are undriven; the other runs' go on.
        self._taken: dict[str, tuple[str, int]] = {}
        self._db = self._connect(durability)

    # --- opening -----------------------------------------------------------------------------

    # --- what a database says for itself -------------------------------------------------------

    def _connect(self, durability: Durability) -> Any:
        """A DB-API connection in autocommit mode (this class begins and commits), taking `?`
        parameters."""
        raise NotImplementedError

    @property
    def location(self) -> str:
        raise NotImplementedError

    def _rows(self, cursor: Any) -> list[Any]:
        """A query's rows, each read by column name or position."""
        return cast(list[Any], cursor.fetchall())

    @classmethod
    def _prefix_args(cls, prefix: str) -> tuple[str, ...]:
        return (prefix,) * cls._PREFIX.count("?")

    @staticmethod
    def _in_transaction(db: Any) -> bool:
        return bool(db.in_transaction)

    # --- writing -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            # A deferred result that cannot be written leaves its attempt in doubt, which a
            # resume settles safely: not worth an error while closing.
            with suppress(JournalError):
                self.flush()
            self._db.close()

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._commit(lambda db: None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One transaction, committed (and fsynced, at full durability) before returning."""
        with self._lock:
            try:
                self._db.execute(self._BEGIN)
                try:
                    for _, sql, args in self._pending:
                        self._db.execute(sql, args)
                    yield self._db
                    lost = self._lost()
                    if lost:
                        raise _Lost(lost)
                    self._db.execute("COMMIT")
                    self._pending.clear()
                except BaseException:
                    # SQLite has already rolled back after some errors (a full disk): a second
                    # rollback would fail and hide the first error.
                    if self._in_transaction(self._db):
                        self._db.execute("ROLLBACK")
                    raise
            except self._RETRY as exc:
                raise _Again(str(exc)) from None
            except self._ERRORS as exc:
                raise JournalError(f"{self.location}: cannot write the journal: {exc}") from None

    def _commit(self, apply: Callable[[Any], _T], run_id: str | None = None) -> _T:
        """`apply(db)` in a transaction committed (and fsynced, at full durability) before
        this returns, with its value. Group commit: writes that other threads ask for while a
        commit is under way queue, and the first of them to get the connection commits them
        all in one transaction — each in a savepoint of its own, so that one refused (a run id
        taken) fails alone. Runs driven at once then share fsyncs instead of taking turns."""
        work = _Work(apply, run_id)
        with self._queue_lock:
            self._works.append(work)
        with self._lock:
            if not work.done:
                self._commit_queued(work)
        if work.error is not None:
            # Each thread raises its own error object: tracebacks are not shared.
            raise type(work.error)(str(work.error), run_id=work.error.run_id) from None
        return cast(_T, work.result)

    def _commit_queued(self, mine: _Work) -> None:
        with self._queue_lock:
            batch, self._works = self._works, []
        several = len(batch) > 1
        try:
            tries_left = 3
            self._refuse_taken(batch)
            batch = [work for work in batch if not work.done]
            several = len(batch) > 1
            while batch:
                try:
                    with self._write() as db:
                        for work in batch:
                            work.error = None
                            if several:
                                db.execute("SAVEPOINT work")
                            try:
                                work.result = work.apply(db)
                            except JournalError as exc:
                                if not several:
                                    raise
                                db.execute("ROLLBACK TO work")
                                work.error = exc
                            if several:
                                db.execute("RELEASE work")
                    break
                except _Lost as exc:
                    # Runs taken over by another process: their writes fail, nothing of
                    # them is written; the others' are written without them.
                    self._let_go(exc.lost)
                    self._refuse_taken(batch)
                    batch = [work for work in batch if not work.done]
                    several = len(batch) > 1
                except _Again as exc:
                    # The database gave up on this transaction to let another through (a
                    # deadlock broken): nothing of it was written, so it is written again.
                    tries_left -= 1
                    if not tries_left:
                        raise JournalError(
                            f"{self.location}: cannot write the journal: {exc}"
                        ) from None
        except JournalError as exc:
            # Nothing of the transaction was written: every write in it failed.
            for work in batch:
                work.error, work.done = exc, True
            return
        except BaseException:
            # Interrupted (a signal) before the commit: nothing was written. The other
            # threads' writes go back to the queue, for them to write; this one's is dropped.
            with self._queue_lock:
                self._works[:0] = [work for work in batch if work is not mine]
            raise
        for work in batch:
            work.done = True

    def _refuse_taken(self, batch: Sequence[_Work]) -> None:
        """Fail, unwritten, the writes of runs another process took from this one."""
        for work in batch:
            if work.run_id is not None and work.run_id in self._taken:
                host, pid = self._taken[work.run_id]
                work.error = LeaseLost(
                    f"run {work.run_id} was taken over by another process (process {pid} on "
                    f"{host}) while this one was stalled: this one writes and sends nothing more",
                    run_id=work.run_id,
                )
                work.done = True

    def drive(self, run_id: str, owner: Owner) -> None:
        with self._lock:
            self._driving[run_id] = owner

    def undrive(self, run_id: str) -> None:
        with self._lock:
            self._driving.pop(run_id, None)
            self._taken.pop(run_id, None)

    def _leased(self, run_id: str, expires: float) -> float:
        self._leases[run_id] = expires
        return expires

    def _lost(self) -> dict[str, tuple[str, int]]:
        """Within a transaction: the runs this process drives that another process owns now
        (they were taken over while this one stalled), with their new owner. Only looked at
        once a lease may have expired: before, no other process can have taken it (with a
        margin for the clocks of other hosts)."""
        now = self.clock()
        lost: dict[str, tuple[str, int]] = {}
        for run_id, owner in self._driving.items():
            if run_id in self._taken or now < self._leases.get(run_id, 0.0) - self.clock_margin:
                continue
            row = self._db.execute(
                f"SELECT owner_host, owner_pid FROM runs WHERE id = ?{self._SHARE}", (run_id,)
            ).fetchone()
            if row is not None and tuple(row) != owner:
                lost[run_id] = (row[0], row[1])
        return lost

    def _let_go(self, lost: Mapping[str, tuple[str, int]]) -> None:
        """Runs taken over by another process: what this one had still to write of them is
        stale and must not land later, and it drives them no more. The other runs' writes
        are not touched."""
        self._pending = [p for p in self._pending if p[0] not in lost]
        self._taken.update(lost)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            self.flush()  # what was recorded is what is read
            try:
                return self._rows(self._db.execute(sql, args))
            except self._ERRORS as exc:
                raise JournalError(f"{self.location}: cannot read the journal: {exc}") from None

    # --- runs --------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        name: str,
        saga_path: str,
        saga_text: str,
        saga_hash: str,
        inputs: Mapping[str, Any],
        env: Mapping[str, Any],
        trace_id: str,
        owner: Owner | None,
        lease_ttl: float,
        step_ids: Sequence[str] | None = None,
    ) -> None:
        run = (run_id, name, saga_path, saga_text, saga_hash, inputs, env, trace_id, step_ids)
        if owner is None:
            self._insert_run(run, RunStatus.QUEUED, (None, None, None))
            return
        expires = self._leased(run_id, self.clock() + lease_ttl)
        self._insert_run(run, RunStatus.RUNNING, (owner.host, owner.pid, expires))

    def _insert_run(
        self, run: tuple[Any, ...], status: RunStatus, lease: tuple[Any, Any, Any]
    ) -> None:
        run_id, name, saga_path, saga_text, saga_hash, inputs, env, trace_id, step_ids = run
        now = self.clock()

        def insert(db: Any) -> None:
            try:
                db.execute(
                    "INSERT INTO runs (id, name, saga_path, saga_text, saga_hash, inputs, env,"
                    " status, phase, trace_id, created_at, updated_at, owner_host, owner_pid,"
                    " lease_expires, step_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'forward', ?, ?, ?,"
                    " ?, ?, ?, ?)",
                    (
                        run_id,
                        name,
                        saga_path,
                        saga_text,
                        saga_hash,
                        _json(dict(inputs)),
                        _json(dict(env)),
                        status.value,
                        trace_id,
                        now,
                        now,
                        *lease,
                        _json(list(step_ids)) if step_ids is not None else None,
                    ),
                )
            except self._INTEGRITY:
                raise JournalError(f"a run with id {run_id} already exists") from None

        self._commit(insert, run_id)

    @staticmethod
    def _run(row: Any) -> RunRecord:
        return RunRecord(
            id=row["id"],
            name=row["name"],
            saga_path=row["saga_path"],
            saga_text=row["saga_text"],
            saga_hash=row["saga_hash"],
            inputs=json.loads(row["inputs"]),
            env=json.loads(row["env"]),
            status=RunStatus(row["status"]),
            phase=RunPhase(row["phase"]),
            pivot_passed=bool(row["pivot_passed"]),
            trace_id=row["trace_id"],
            error=row["error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            owner_host=row["owner_host"],
            owner_pid=row["owner_pid"],
            lease_expires=row["lease_expires"],
            step_ids=tuple(json.loads(row["step_ids"])) if row["step_ids"] else None,
            cleanup=bool(row["cleanup"]),
        )

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise JournalError(f"no run {run_id} in {self.location}")
        return self._run(rows[0])

    def find_run(self, prefix: str) -> RunRecord:
        """The run whose id is `prefix`, or starts with it (4 characters at least)."""
        prefix = prefix.strip()
        if len(prefix) < 4:
            raise JournalError(f"run id prefix '{prefix}' is too short: give 4 characters or more")
        exact = self._read("SELECT * FROM runs WHERE id = ?", (prefix,))
        if exact:
            return self._run(exact[0])
        # Generated ids are upper case; ids given with --run-id are kept as they were typed.
        rows = self._read(
            f"SELECT * FROM runs WHERE ({self._PREFIX}) OR ({self._PREFIX}) ORDER BY id LIMIT 11",
            (*self._prefix_args(prefix), *self._prefix_args(prefix.upper())),
        )
        if not rows:
            raise JournalError(f"no run matches '{prefix}' in {self.location}")
        if len(rows) > 1:
            runs = [self._run(row) for row in rows[:10]]
            width = max(len(r.name) for r in runs)
            listed = "\n".join(
                f"  {r.id}  {r.name.ljust(width)}  {shown_status(self, r)}" for r in runs
            )
            more = "\n  …" if len(rows) > 10 else ""
            raise JournalError(
                f"'{prefix}' matches several runs; give more characters:\n{listed}{more}"
            )
        return self._run(rows[0])

    def list_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first: of a status (or any of several), of a saga, and older than
        `before` (the created time and id of the last run of the previous page)."""
        where, args = self._filters(name, since, until, search)
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend([before[0], before[0], before[1]])
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [self._run(r) for r in self._read(sql, (*args, limit))]

    def _filters(
        self, name: str | None, since: float | None, until: float | None, search: str | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if name:
            where.append("name = ?")
            args.append(name)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if until is not None:
            where.append("created_at < ?")
            args.append(until)
        if search:
            # An id by a prefix of it (as typed or in upper case), or an input's value.
            def like(text: str) -> str:  # the text itself, no character a wildcard
                return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

            pattern = like(search)
            # Inputs are kept as ASCII JSON: a value is looked for as written there too
            # (`é` as `\u00e9`, `"` as `\"`), encoded first and then made a pattern.
            escaped = like(json.dumps(search)[1:-1])
            like_ = f"{self._LIKE} ? ESCAPE '\\'"
            where.append(f"(id {like_} OR id {like_} OR inputs {like_} OR inputs {like_})")
            args += [f"{pattern}%", f"{pattern.upper()}%", f"%{pattern}%", f"%{escaped}%"]
        return where, args

    def statistics(self, bounds: Sequence[float]) -> Statistics:
        runs = []
        for r in self._read(
            "SELECT name, status, created_at, updated_at, finished_at, owner_host, owner_pid,"
            " lease_expires FROM runs"
        ):
            status = r["status"]
            if status in ("running", "compensating") and (
                r["owner_host"] is None
                or r["owner_pid"] is None
                or not self._alive(Owner(r["owner_host"], r["owner_pid"]), r["lease_expires"])
            ):
                status = "interrupted"
            runs.append((r["name"], status, r["created_at"], r["updated_at"], r["finished_at"]))
        below = ", ".join(
            f"sum(CASE WHEN a.duration_ms <= {float(b) * 1000!r} THEN 1 ELSE 0 END)" for b in bounds
        )
        attempts = [
            (r[0], r[1], r[2], (r[3] or 0.0) / 1000, list(r[5 : 5 + len(bounds)]), r[4])
            for r in self._read(
                "SELECT r.name, a.phase, count(*), sum(a.duration_ms),"
                " sum(CASE WHEN a.attempt > 1 THEN 1 ELSE 0 END)"
                + (f", {below}" if bounds else "")
                + " FROM attempts a JOIN runs r ON r.id = a.run_id"
                " WHERE a.duration_ms IS NOT NULL GROUP BY r.name, a.phase"
            )
        ]
        in_doubt = {
            r[0]: r[1]
            for r in self._read(
                "SELECT r.name, count(*) FROM steps s JOIN runs r ON r.id = s.run_id"
                " WHERE s.phase = 'action' AND s.state = 'in_doubt' GROUP BY r.name"
            )
        }
        return Statistics(runs, attempts, in_doubt)

    def count_runs(
        self,
        *,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> dict[str, int]:
        where, args = self._filters(name, since, until, search)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        counts = {
            r[0]: r[1]
            for r in self._read(
                f"SELECT status, count(*) FROM runs{clause} GROUP BY status", tuple(args)
            )
        }
        # A run journaled running or compensating whose owner is gone is interrupted: few
        # runs are, so each is looked at.
        live = " AND ".join([*where, "status IN ('running', 'compensating')"])
        for row in self._read(
            f"SELECT status, owner_host, owner_pid, lease_expires FROM runs WHERE {live}",
            tuple(args),
        ):
            host, pid = row["owner_host"], row["owner_pid"]
            if (
                host is None
                or pid is None
                or not self._alive(Owner(host, pid), row["lease_expires"])
            ):
                counts[row["status"]] -= 1
                counts["interrupted"] = counts.get("interrupted", 0) + 1
        return {status: n for status, n in counts.items() if n}

    def set_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        phase: RunPhase | None = None,
        error: str | None = None,
        pivot_passed: bool | None = None,
        cleanup: bool | None = None,
    ) -> None:
        now = self.clock()
        sets: list[str] = ["updated_at = ?"]
        args: list[Any] = [now]
        if status is not None:
            sets.append("status = ?")
            args.append(status.value)
            sets.append("finished_at = ?")
            args.append(now if status.final else None)
        if phase is not None:
            sets.append("phase = ?")
            args.append(phase)
        if error is not None or status is not None:
            sets.append("error = ?")
            args.append(_clip(error))
        if pivot_passed is not None:
            sets.append("pivot_passed = ?")
            args.append(int(pivot_passed))
        if cleanup is not None:
            sets.append("cleanup = ?")
            args.append(int(cleanup))
        statement = f"UPDATE runs SET {', '.join(sets)} WHERE id = ?"
        self._commit(lambda db: db.execute(statement, (*args, run_id)), run_id)

    # --- leases ------------------------------------------------------------------------------

    def take_lease(self, run_id: str, owner: Owner, ttl: float) -> None:
        host, pid = owner

        def take(db: Any) -> None:
            row = db.execute(
                "SELECT owner_host, owner_pid, lease_expires FROM runs WHERE id = ?"
                + self._FOR_UPDATE,
                (run_id,),
            ).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id} in {self.location}")
            owner_host, owner_pid, expires = row
            if (
                owner_pid is not None
                and (owner_host, owner_pid) != (host, pid)
                and self._alive(Owner(owner_host, owner_pid), expires)
            ):
                raise JournalError(
                    f"run {run_id} is being driven by process {owner_pid} on "
                    f"{owner_host}; wait for it to finish, or stop it first"
                )
            db.execute(
                # A queued run taken by `resume` is under way from now: no worker claims it.
                "UPDATE runs SET owner_host = ?, owner_pid = ?, lease_expires = ?,"
                " status = CASE WHEN status = 'queued' THEN 'running' ELSE status END"
                " WHERE id = ?",
                (host, pid, self._leased(run_id, self.clock() + ttl), run_id),
            )

        self._commit(take, run_id)

    def claim_run(
        self, owner: Owner, ttl: float, *, skip: Collection[str] = ()
    ) -> RunRecord | None:
        host, pid = owner
        skipped = tuple(skip)
        unless = f" AND id NOT IN ({', '.join('?' * len(skipped))})" if skipped else ""

        def claim(db: Any) -> RunRecord | None:
            now = self.clock()
            # Runs under way whose lease lapsed, or whose owner may be a process of this
            # machine that is gone (the lease policy can tell); then the oldest queued run. Rows
            # another process is claiming are passed over, not waited for.
            # Looked at without a lock: rows of runs other processes drive are never locked
            # here (their writes would wait on this claim); the one chosen is locked below.
            under_way = f"SELECT * FROM runs WHERE status IN ('running', 'compensating'){unless}"
            # Those whose lease lapsed first (any of them will do); then those of this
            # machine's processes, alive or not, all of them: the live ones are passed over
            # in Python, and however many there are, one that is gone is found behind them.
            candidates = self._rows(
                db.execute(
                    f"{under_way} AND (owner_pid IS NULL OR lease_expires IS NULL OR"
                    " lease_expires < ?) ORDER BY created_at, id LIMIT 50",
                    (*skipped, now),
                )
            ) or self._rows(
                db.execute(
                    f"{under_way} AND owner_host = ? ORDER BY created_at, id",
                    (*skipped, Owner.this_process().host),
                )
            )
            # Not a run this object drives; a run of this very process that it no longer
            # drives (its connection was lost, say) once its lease lapsed, like any other.
            taken = next(
                (
                    row
                    for row in candidates
                    if row["id"] not in self._driving
                    and (
                        row["owner_pid"] is None
                        or not self._alive(
                            Owner(row["owner_host"], row["owner_pid"]), row["lease_expires"]
                        )
                    )
                ),
                None,
            )
            if taken is not None:
                # Locked, and read again: another process may have claimed it meanwhile.
                again = self._rows(
                    db.execute("SELECT * FROM runs WHERE id = ?" + self._CLAIM, (taken["id"],))
                )
                if not again or tuple(again[0]) != tuple(taken):
                    taken = None  # changed meanwhile: a queued run instead
            if taken is None:
                queued = self._rows(
                    db.execute(
                        "SELECT * FROM runs WHERE status = 'queued' AND owner_pid IS NULL"
                        f"{unless}"
                        " ORDER BY created_at, id LIMIT 1" + self._CLAIM,
                        skipped,
                    )
                )
                if not queued:
                    return None
                taken = queued[0]
            db.execute(
                "UPDATE runs SET owner_host = ?, owner_pid = ?, lease_expires = ?,"
                " status = CASE WHEN status = 'queued' THEN 'running' ELSE status END,"
                " updated_at = ? WHERE id = ?",
                (host, pid, self._leased(taken["id"], now + ttl), now, taken["id"]),
            )
            return self._run(taken)

        return self._commit(claim)

    def driven(self, run: RunRecord) -> bool:
        if run.owner_host is None or run.owner_pid is None:
            return False
        return self._alive(Owner(run.owner_host, run.owner_pid), run.lease_expires)

    def renew_lease(self, run_id: str, owner: Owner, ttl: float) -> bool:
        host, pid = owner
        expires = self.clock() + ttl
        renewed = self._commit(
            lambda db: (
                db.execute(
                    "UPDATE runs SET lease_expires = ? WHERE id = ? AND "
                    "owner_host = ? AND owner_pid = ?",
                    (expires, run_id, host, pid),
                ).rowcount
                == 1
            ),
            run_id,
        )
        if renewed:
            self._leased(run_id, expires)
        return bool(renewed)

    def release_lease(self, run_id: str, owner: Owner) -> None:
        host, pid = owner
        self._commit(
            lambda db: db.execute(
                "UPDATE runs SET owner_host = NULL, owner_pid = NULL, "
                "lease_expires = NULL WHERE id = ? AND owner_host = ? AND owner_pid = ?",
                (run_id, host, pid),
            ),
            run_id,
        )

    # --- steps and attempts ------------------------------------------------------------------

    def steps(self, run_id: str) -> dict[tuple[str, str], StepRecord]:
        rows = self._read("SELECT * FROM steps WHERE run_id = ?", (run_id,))
        return {
            (r["step_id"], r["phase"]): StepRecord(
                step_id=r["step_id"],
                phase=r["phase"],
                state=StepState(r["state"]),
                applied=bool(r["applied"]),
                outputs=json.loads(r["outputs"] or "{}"),
                attempts=r["attempts"],
                status=r["status"],
                error=r["error"],
                updated_at=r["updated_at"],
                items=json.loads(r["items"]) if r["items"] is not None else None,
            )
            for r in rows
        }

    def set_step(
        self,
        run_id: str,
        step_id: str,
        phase: str,
        *,
        state: StepState,
        applied: bool = False,
        outputs: Mapping[str, Any] | None = None,
        attempts: int = 0,
        error: str | None = None,
        items: Sequence[Any] | Mapping[str, Any] | None = None,
        settled: bool = False,
    ) -> None:
        now = self.clock()

        def upsert(db: Any) -> None:
            db.execute(
                "INSERT INTO steps (run_id, step_id, phase, state, applied, outputs, attempts,"
                " error, updated_at, items) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, step_id, phase) DO UPDATE SET state = excluded.state,"
                " applied = excluded.applied, outputs = excluded.outputs,"
                " attempts = excluded.attempts, error = excluded.error,"
                " updated_at = excluded.updated_at, items = coalesce(excluded.items, steps.items)",
                (
                    run_id,
                    step_id,
                    phase,
                    state.value,
                    int(applied),
                    _json(dict(outputs or {})),
                    attempts,
                    _clip(error),
                    now,
                    None if items is None else _json(items),
                ),
            )
            if settled:
                self._settle_doubt(db, run_id, step_id, phase)

        self._commit(upsert, run_id)

    @staticmethod
    def _settle_doubt(db: Any, run_id: str, step_id: str, phase: str) -> None:
        """The (step, phase)'s attempts so far no longer make it in doubt."""
        db.execute(
            "UPDATE steps SET settled = (SELECT max(id) FROM attempts a WHERE a.run_id = ?"
            " AND a.step_id = ? AND a.phase = ?) WHERE run_id = ? AND step_id = ? AND phase = ?",
            (run_id, step_id, phase, run_id, step_id, phase),
        )

    def begin_attempt(
        self,
        run_id: str,
        step_id: str,
        phase: str,
        attempt: int,
        *,
        span_id: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: str | None,
    ) -> AttemptHandle:
        """Committed with the writes of other threads that arrive meanwhile (`_commit`), so
        steps started together cost one commit rather than one each."""
        row = (
            run_id,
            step_id,
            phase,
            attempt,
            span_id,
            self.clock(),
            _json(
                {
                    "operation": method,
                    "target": _clip(url),
                    "headers": dict(headers),
                    "body": _clip(body),
                }
            ),
        )

        def insert(db: Any) -> int:
            (attempt_id,) = db.execute(
                "INSERT INTO attempts (run_id, step_id, phase, attempt, span_id,"
                " started_at, method, url, request_headers, request) VALUES"
                " (?, ?, ?, ?, ?, ?, '', '', '{}', ?) RETURNING id",
                row,
            ).fetchone()
            db.execute(
                "INSERT INTO steps (run_id, step_id, phase, state, attempts, updated_at)"
                " VALUES (?, ?, ?, 'running', 1, ?) ON CONFLICT (run_id, step_id, phase)"
                " DO UPDATE SET state = 'running', attempts = steps.attempts + 1,"
                " updated_at = excluded.updated_at",
                (run_id, step_id, phase, row[5]),
            )
            return int(attempt_id)

        return AttemptHandle(self._commit(insert, run_id), run_id, step_id, phase)

    def finish_attempt(
        self,
        attempt: AttemptHandle,
        *,
        outcome: str,
        duration_ms: float,
        status: int | None = None,
        error_class: str | None = None,
        error_message: str | None = None,
        in_doubt: bool = False,
        response_headers: Mapping[str, str] | None = None,
        response_body: str | None = None,
        step_state: StepState | None = None,
        applied: bool = False,
        outputs: Mapping[str, Any] | None = None,
        step_error: str | None = None,
        defer: bool = False,
    ) -> None:
        """Deferred results are statements kept in memory and run first by the next
        transaction: most often the next attempt's intent, so a step costs one commit."""
        now = self.clock()
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "UPDATE attempts SET finished_at = ?, duration_ms = ?, outcome = ?, status = ?,"
                " error_class = ?, error_message = ?, response = ?, in_doubt = ? WHERE id = ?",
                (
                    now,
                    duration_ms,
                    outcome,
                    status,
                    error_class,
                    _clip(error_message),
                    None
                    if response_headers is None and response_body is None
                    else _json(
                        {
                            "headers": None if response_headers is None else dict(response_headers),
                            "body": _clip(response_body),
                        }
                    ),
                    int(in_doubt),
                    attempt.id,
                ),
            )
        ]
        if step_state is None and applied:
            # Not the last attempt, but it took effect: a crash before the last must leave a
            # step that compensation undoes (settled in doubt).
            statements.append(
                (
                    "UPDATE steps SET applied = 1 WHERE run_id = ? AND step_id = ? AND phase = ?",
                    (attempt.run_id, attempt.step_id, attempt.phase),
                )
            )
        if step_state is not None:
            statements.append(
                (
                    "UPDATE steps SET state = ?, applied = ?, outputs = ?, status = ?, error = ?,"
                    " updated_at = ? WHERE run_id = ? AND step_id = ? AND phase = ?",
                    (
                        step_state.value,
                        int(applied),
                        _json(dict(outputs or {})),
                        status,
                        _clip(step_error if step_error is not None else error_message),
                        now,
                        attempt.run_id,
                        attempt.step_id,
                        attempt.phase,
                    ),
                )
            )
        with self._lock:
            self._pending += [(attempt.run_id, sql, args) for sql, args in statements]
            if not defer:
                self.flush()

    def operate(
        self,
        run_id: str,
        step_id: str,
        phase: str,
        *,
        action: str,
        state: StepState,
        applied: bool,
        settled: bool = False,
        pivot_passed: bool | None = None,
        user: str,
        host: str,
        reason: str,
    ) -> None:
        now = self.clock()

        def write(db: Any) -> None:
            db.execute(
                "INSERT INTO steps (run_id, step_id, phase, state, applied, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, step_id, phase) DO UPDATE SET"
                " state = excluded.state, applied = excluded.applied,"
                " updated_at = excluded.updated_at, error = NULL",
                (run_id, step_id, phase, state.value, int(applied), now),
            )
            if settled:
                self._settle_doubt(db, run_id, step_id, phase)
            if pivot_passed is not None:
                db.execute(
                    "UPDATE runs SET pivot_passed = ? WHERE id = ?", (int(pivot_passed), run_id)
                )
            db.execute(
                'INSERT INTO operator_actions (run_id, step_id, phase, action, "user", host, at,'
                " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, step_id, phase, action, user, host, now, _clip(reason)),
            )

        self._commit(write, run_id)

    def operator_actions(self, run_id: str) -> list[OperatorAction]:
        rows = self._read("SELECT * FROM operator_actions WHERE run_id = ? ORDER BY id", (run_id,))
        return [
            OperatorAction(
                r["id"],
                r["run_id"],
                r["step_id"],
                r["phase"],
                r["action"],
                r["user"],
                r["host"],
                r["at"],
                r["reason"],
            )
            for r in rows
        ]

    def record_notification(
        self, run_id: str, *, target: str, delivered: bool, detail: str
    ) -> None:
        self._commit(
            lambda db: db.execute(
                "INSERT INTO notifications (run_id, target, at, delivered, detail)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, _clip(target), self.clock(), int(delivered), _clip(detail)),
            ),
            run_id,
        )

    def notifications(self, run_id: str) -> list[Notification]:
        rows = self._read("SELECT * FROM notifications WHERE run_id = ? ORDER BY id", (run_id,))
        return [
            Notification(
                r["id"], r["run_id"], r["target"], r["at"], bool(r["delivered"]), r["detail"]
            )
            for r in rows
        ]

    def settle_interrupted(self, run_id: str) -> int:
        now = self.clock()
        if not self._read(
            "SELECT 1 FROM attempts WHERE run_id = ? AND outcome IS NULL UNION "
            "ALL SELECT 1 FROM steps WHERE run_id = ? AND state = 'running' "
            "LIMIT 1",
            (run_id, run_id),
        ):
            return 0  # nothing to settle: spare the commit

        def settle(db: Any) -> int:
            cursor = db.execute(
                "UPDATE attempts SET outcome = 'interrupted', in_doubt = 1, finished_at = ?,"
                " error_class = 'Interrupted', error_message = 'no result was recorded: the"
                " request may have reached the service' WHERE run_id = ? AND outcome IS NULL",
                (now, run_id),
            )
            db.execute(
                "UPDATE steps SET state = 'in_doubt', applied = 1, error = 'in doubt: "
                "interrupted while an attempt may have reached the service', updated_at = ?"
                " WHERE run_id = ? AND state = 'running' AND (applied = 1 OR EXISTS (SELECT 1"
                " FROM attempts a WHERE a.run_id = steps.run_id AND a.step_id = steps.step_id"
                " AND a.phase = steps.phase AND a.in_doubt = 1"
                " AND a.id > coalesce(steps.settled, 0)))",
                (now, run_id),
            )
            return int(cursor.rowcount)

        return self._commit(settle, run_id)

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = self._read("SELECT * FROM attempts WHERE run_id = ? ORDER BY id", (run_id,))
        return [self._attempt(r) for r in rows]

    @staticmethod
    def _attempt(r: Any) -> AttemptRecord:
        if r["request"] is not None:
            request = json.loads(r["request"])
            response = json.loads(r["response"]) if r["response"] else None
        else:  # written by a sagactl of schema 1-3
            request = {
                "operation": r["method"],
                "target": r["url"],
                "headers": json.loads(r["request_headers"]),
                "body": r["request_body"],
            }
            response = {
                "headers": json.loads(r["response_headers"]) if r["response_headers"] else None,
                "body": r["response_body"],
            }
        return AttemptRecord(
            id=r["id"],
            step_id=r["step_id"],
            phase=r["phase"],
            attempt=r["attempt"],
            span_id=r["span_id"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            duration_ms=r["duration_ms"],
            method=request["operation"],
            url=request["target"],
            request_headers=request["headers"],
            request_body=request["body"],
            outcome=r["outcome"],
            status=r["status"],
            error_class=r["error_class"],
            error_message=r["error_message"],
            response_headers=response["headers"] if response else None,
            response_body=response["body"] if response else None,
            in_doubt=bool(r["in_doubt"]),
        )
