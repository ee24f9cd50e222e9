from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from helpers import Runs, Ui


def pytest_configure(config: pytest.Config) -> None:
    # Sagas validated by the tests are cached in a directory of this session's (every command
    # the tests run inherits it), never in the user's own cache.
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sagactl-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a saga file and return its path."""

    def _write(text: str, name: str = "saga.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def service():  # type: ignore[no-untyped-def]
    """A real idempotent HTTP service on 127.0.0.1, on a random port."""
    from sagactl.testing.service import Service

    with Service() as svc:
        yield svc


@pytest.fixture
def runs(tmp_path: Path, service: Any) -> Runs:
    """The command line with a journal and `service`'s URL in its environment."""
    return Runs(tmp_path, service)


@pytest.fixture
def ui(runs: Runs) -> Iterator[Ui]:
    """A `sagactl ui` on a free port of 127.0.0.1, over `runs`' journal."""
    started = Ui(runs)
    yield started
    if started.proc.poll() is None:
        started.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for the session (tests/postgres_server.py); skipped, with
    how to install it, where there is none. CI installs it, so there they run."""
    from postgres_server import PostgresServer, missing_reason

    why = missing_reason()
    if why is not None:
        pytest.skip(why)
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def new_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes the target of a new, empty journal of each backend, one a call (a randomized
    test's examples each get their own)."""
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        return cast(Callable[[], str], server.url)
    return lambda: str(tmp_path / f"j{os.urandom(4).hex()}.db")
