from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Runs, Ui


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
