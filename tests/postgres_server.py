"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` binaries, a temporary data
directory, a free port on 127.0.0.1, trust authentication for one user. PostgreSQL refuses to
run as root, so as root the cluster is run as the `postgres` user the package creates.

Each test gets a schema of its own (`search_path` in the URL), which is far cheaper than a
database of its own and as isolated for sagactl's tables."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "binaries", "missing_reason"]

HOW = (
    "PostgreSQL is not installed: `apt-get install postgresql` (the tests of the PostgreSQL "
    "journal start a throwaway cluster with its binaries) and `pip install -e '.[test]'`"
)


def binaries() -> Path | None:
    """The directory of initdb and pg_ctl: Debian keeps them out of PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return HOW
    if binaries() is None:
        return HOW
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "PostgreSQL refuses to run as root, and runuser is missing"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A cluster started on entry and removed on exit; `url(schema)` is a journal URL."""

    USER = "sagactl"

    def __init__(self) -> None:
        bin_dir = binaries()
        assert bin_dir is not None, HOW
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sagactl-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._schemas = itertools.count(1)
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()
        return self

    def start(self) -> None:
        """Start the cluster (again, after `stop`: same data, same port)."""
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200",
            "start",
        )

    def stop(self) -> None:
        """Stop it as a crash would: every connection dropped at once."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def base(self) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/postgres"

    def url(self) -> str:
        """The URL of a new, empty schema: a journal of its own."""
        import psycopg

        schema = f"t{next(self._schemas)}"
        with psycopg.connect(self.base(), autocommit=True) as db:
            db.execute(f"CREATE SCHEMA {schema}")
        return f"{self.base()}?options=-csearch_path%3D{schema}"
