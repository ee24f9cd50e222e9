"""The journal: every run, step and attempt, written before it is acted on (SPEC §4).

`Journal` is the contract the engine and the commands rely on (see `contract.py`, each method's
guarantees); `open_journal` picks the backend for a target: a file (`sqlite.py`), or a
`postgresql://` URL (`postgres.py`, the postgres extra); both share their queries (`sql.py`).
Nothing outside this package knows how runs are stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sagactl.errors import JournalError, UsageError
from sagactl.journal.contract import Durability, Journal, shown_status
from sagactl.journal.leases import Alive, owner_alive

__all__ = ["Durability", "Journal", "default_path", "open_journal", "shown_status"]


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$SAGACTL_JOURNAL`, else `$XDG_STATE_HOME/sagactl/journal.db`, else
    `~/.local/state/sagactl/journal.db` (SPEC §4)."""
    environ = os.environ if environ is None else environ
    if environ.get("SAGACTL_JOURNAL"):
        return Path(environ["SAGACTL_JOURNAL"])
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sagactl" / "journal.db"


def open_journal(
    target: str | Path | None = None,
    durability: Durability = Durability.FULL,
    *,
    alive: Alive = owner_alive,
    existing: bool = False,
) -> Journal:
    """The journal at `target`: a file path (or `sqlite:///path`), or a `postgresql://` URL;
    by default `$SAGACTL_JOURNAL`, else `default_path()`.
    The file is created, private to its user, when it is not there, unless `existing` (for
    the commands that only read: a path mistyped is then an error, not an empty journal).
    `alive` is the lease policy: whether a run's owner may still be driving it."""
    if target is None or target == "":
        # Read as text, not as a path: a URL's "//" must stay.
        target = os.environ.get("SAGACTL_JOURNAL") or default_path()
    text = str(target)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in ("postgres", "postgresql"):
        try:
            from sagactl.journal.postgres import PostgresJournal  # the postgres extra
        except ImportError:
            raise UsageError(
                "a PostgreSQL journal needs psycopg: pip install 'sagactl[postgres]'"
            ) from None
        return PostgresJournal(text, durability, alive=alive, existing=existing)
    if scheme == "sqlite":
        text = text.partition("://")[2]
        if not text:
            raise UsageError(f"{target}: no path after sqlite://")
    elif scheme:
        raise UsageError(
            f"{target}: unknown journal kind '{scheme}'; give the path of a journal file"
        )
    if existing and not Path(text).exists():
        raise JournalError(
            f"no journal at {text}: nothing has run with it. Give the journal runs were "
            "written to (--journal, or SAGACTL_JOURNAL)"
        )
    from sagactl.journal.sqlite import SqliteJournal  # sqlite3 only for the commands that use it

    return SqliteJournal(Path(text), durability, alive=alive)
