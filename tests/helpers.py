"""Helpers shared by the tests: the command line, in process and as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

import sagas
from sagactl.cli import app
from sagactl.journal import open_journal
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service

ROOT = Path(__file__).resolve().parent.parent
SAGAS = ROOT / "sagas"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run the command line in this process, as a user would type it."""
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def cli_process(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Result:
    """Run the command line as a real process (`python -m sagactl`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sagactl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Crash(BaseException):
    """What a SIGKILL is to a journal: nothing more gets written."""


class DyingJournal:
    """A journal, through its public contract only, of a process that dies at its `crash_at`-th
    write, or at the first call `dies_at(method, args, kwargs)` holds fatal: that write and
    every later one never happen, and raise `Crash`.

    A result recorded with `defer` is held here until the next call that would write it (any
    write, or a read, which flushes first), so that a death at that call loses it as a real
    one would. Calls are serialized: crash points are then single writes. Not simulated: a
    death between an intent's commit and its request being sent (the slow test, with real
    processes, has it), and results held when a write fails for another reason (the model
    test makes no write that fails)."""

    WRITES = frozenset(
        {
            "create_run",
            "set_run",
            "set_step",
            "take_lease",
            "renew_lease",
            "release_lease",
            "begin_attempt",
            "finish_attempt",
            "settle_interrupted",
            "flush",
        }
    )
    QUIET = frozenset({"location", "drive", "undrive", "driven"})

    def __init__(
        self,
        inner: Any,
        crash_at: int | None = None,
        dies_at: Callable[[str, tuple[Any, ...], dict[str, Any]], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.dies_at = dies_at
        self.writes = 0
        self.dead = False
        self._held: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.RLock()

    def __enter__(self) -> DyingJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.dead:
                self.inner.close()  # nothing is held: what the dead process had is lost
            else:
                self._call("close", (), {})

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name in self.QUIET or not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        return call

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            if self.dead:
                raise Crash
            if name == "finish_attempt" and kwargs.get("defer"):
                self._held.append((args, kwargs))
                return None
            if name in self.WRITES or self._held:
                self.writes += 1
                if (self.crash_at is not None and self.writes >= self.crash_at) or (
                    self.dies_at is not None and self.dies_at(name, args, kwargs)
                ):
                    self.dead = True
                    self._held.clear()
                    raise Crash
            for held_args, held_kwargs in self._held:
                self.inner.finish_attempt(*held_args, **held_kwargs)
            self._held.clear()
            return getattr(self.inner, name)(*args, **kwargs)


def http_executors(client: Any) -> dict[str, Any]:
    """The executors of a run whose HTTP steps go through `client`."""
    from sagactl.executors.http.executor import HttpExecutor

    return {"http": HttpExecutor(client)}


def new_run(
    journal: Any, run_id: str = "R0001", *, name: str = "two", owner: Any = None, ttl: float = 30
) -> str:
    """Journal a run directly, as `create_run` would, owned by `owner` (a host "h", by
    default: nobody that could be driving it from here)."""
    from sagactl.records import Owner

    journal.create_run(
        run_id=run_id,
        name=name,
        saga_path="two.yaml",
        saga_text="name: two",
        saga_hash="h",
        inputs={"sku": "A"},
        env={"BASE": "http://127.0.0.1:9"},
        trace_id="t" * 32,
        owner=owner or Owner("h", 1),
        lease_ttl=ttl,
        step_ids=["a", "b"],
    )
    return run_id


TOKEN = "tok-5ecr3t/+=value"


class Runs:
    """The command line with a journal and the service's URL in its environment."""

    def __init__(self, tmp_path: Path, service: Service) -> None:
        self.journal = tmp_path / "journal.db"
        self.service = service
        self.tmp = tmp_path

    def env(self, **extra: str | None) -> dict[str, str | None]:
        return {
            "BASE": self.service.url,
            "TOKEN": TOKEN,
            "NO_COLOR": "1",
            "SAGACTL_JOURNAL": str(self.journal),
            **extra,
        }

    def file(self, text: str, name: str = "saga.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def __call__(self, *args: str, **env: str | None) -> Result:
        return cli(*args, env=self.env(**env))

    def run(self, text: str, *args: str) -> tuple[Result, str]:
        result = self("run", str(self.file(text)), *args)
        return result, result.stdout.splitlines()[0] if result.stdout else ""

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command line as a real process, in the background, with this environment."""
        import os

        env = {k: v for k, v in self.env().items() if v is not None}
        return subprocess.Popen(
            [sys.executable, "-m", "sagactl", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self, run_id: str) -> RunStatus:
        with open_journal(self.journal) as journal:
            return journal.get_run(run_id).status


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for something another process does (nothing here can inject its clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


class Ui:
    """A `sagactl ui` process on a free port of `host`, over `runs`' journal (made empty
    first if no run made it yet: ui reads only a journal that exists)."""

    def __init__(self, runs: Runs, *args: str) -> None:
        open_journal(runs.journal).close()
        self.proc = runs.start("ui", "--port", "0", *args)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        match = re.match(r"sagactl ui: (http://\S+)", first)
        assert match, first + (self.proc.stderr.read() if self.proc.stderr else "")
        self.address = match.group(1)
        self.base = self.address.split("?")[0].rstrip("/")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=20)  # and its pipes closed
        return self.proc.returncode


def some_runs(runs: Runs, service: Service) -> dict[str, str]:
    """A run that succeeded, one compensated, one stuck: their ids by outcome."""
    ids = {}
    ids["succeeded"] = runs.run(sagas.THREE)[1]
    service.faults.append(Fault("PUT", "/c/", status=422))
    ids["compensated"] = runs.run(sagas.THREE)[1]
    service.faults += [
        Fault("PUT", "/c/", status=422, times=None),
        Fault("DELETE", "/a/", status=500, times=None),
    ]
    ids["stuck"] = runs.run(sagas.THREE)[1]
    service.clear_faults()
    return ids


def lines_file(runs: Runs, numbers: range | list[int], extra: Sequence[str] = ()) -> Path:
    path = runs.tmp / "lines.jsonl"
    path.write_text("".join(json.dumps({"n": n}) + "\n" for n in numbers) + "".join(extra))
    return path


def effects(service: Service) -> Counter[str]:
    """How many times each action was applied, by idempotency key (the service's record)."""
    return Counter(key for key, method, _ in service.applied if method == "PUT")


def imported(
    args: list[str], modules: tuple[str, ...], env: dict[str, str]
) -> tuple[str, list[str]]:
    """Run the CLI with `args` in a fresh interpreter: its exit code, and which of `modules`
    it imported."""
    code = (
        "import json, sys\n"
        "from sagactl.cli import main\n"
        f"sys.argv = ['sagactl', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    print(exc.code)\n"
        f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    code_line, modules_line = proc.stdout.splitlines()[-2:]
    return code_line, json.loads(modules_line)
