"""Many runs in one process (`sagactl run FILE --each inputs.jsonl`, SPEC §8) against the floor
of this machine, measured in the same rounds, interleaved.

    python bench/each.py            # 2,000 two-step sagas a case, 3 rounds
    python bench/each.py --quick    # 300 a case, 1 round

PostgreSQL rows start a throwaway cluster (tests/postgres_server.py: Debian's postgresql
binaries and psycopg); they are left out, with a line saying why, where there is none.

The saga: two PUTs to one local server (bench/server.py, its own process). The floor: the same
two PUTs per saga plus two fsynced SQLite commits, one saga after the other, on one
keep-alive connection — what a hand-written loop that journals before and after would cost.
Each case prints sagas per second and its ratio to the floor measured in the same round
(median, lowest, highest).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import paired, saga_headers, samples, start_server  # noqa: E402

SAGA = """version: 1
name: bench-each
env: [BASE]
inputs:
  n: {type: integer}
defaults:
  base_url: "{{ env.BASE }}"
steps:
  - id: a
    action: {method: PUT, url: "/a/{{ inputs.n }}", json: {n: "{{ inputs.n }}"}}
    compensate: {method: DELETE, url: "/a/{{ inputs.n }}"}
  - id: b
    needs: [a]
    action: {method: PUT, url: "/b/{{ inputs.n }}", json: {n: "{{ inputs.n }}"}}
    compensate: {method: DELETE, url: "/b/{{ inputs.n }}"}
"""


def floor(url: str, n: int) -> float:
    """Per saga: a commit, two PUTs, a commit — sequential, one connection, fsync per commit."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, n INTEGER, status TEXT)")
        with httpx.Client() as client:
            start = time.perf_counter()
            for i in range(n):
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("INSERT INTO r (n) VALUES (?)", (i,)).lastrowid
                db.execute("COMMIT")
                for step in ("a", "b"):
                    client.put(f"{url}/{step}/{i}", json={"n": i}, headers=saga_headers(i))
                db.execute("BEGIN IMMEDIATE")
                db.execute("UPDATE r SET status = 'succeeded' WHERE id = ?", (row,))
                db.execute("COMMIT")
            elapsed = time.perf_counter() - start
        db.close()
    return elapsed


def in_process(
    url: str, n: int, durability: str, concurrency: int, target: Callable[[], str] | None = None
) -> float:
    """`many.run_each`, what `run --each` calls: a journal (a file, or `target()`), one run
    per line."""
    from sagactl.definition.inputs import EachLine
    from sagactl.definition.loader import load_text
    from sagactl.ids import new_run_id
    from sagactl.journal import Durability, open_journal
    from sagactl.many import run_each

    saga = load_text(SAGA, "bench-each.yaml")
    ended: list[str] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_journal(target() if target else Path(tmp) / "j.db", Durability(durability)) as journal,
    ):
        start = time.perf_counter()
        run_each(
            saga,
            (EachLine(i, {"n": i}) for i in range(1, n + 1)),
            journal,
            {"BASE": url},
            batch=new_run_id(),
            on_line=lambda outcome: ended.append(outcome.status.value if outcome.status else "-"),
            concurrency=concurrency,
        )
        elapsed = time.perf_counter() - start
    assert ended.count("succeeded") == n, ended[:3]
    return elapsed


def command(url: str, n: int, durability: str, concurrency: int) -> float:
    """The whole command, start-up included: `sagactl run bench-each.yaml --each lines`."""
    with tempfile.TemporaryDirectory() as tmp:
        saga, lines = Path(tmp) / "bench-each.yaml", Path(tmp) / "lines.jsonl"
        saga.write_text(SAGA)
        lines.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(n)))
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sagactl",
                "run",
                str(saga),
                "--each",
                str(lines),
                "--journal",
                str(Path(tmp) / "j.db"),
                "--durability",
                durability,
                "--concurrency",
                str(concurrency),
                "-q",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "BASE": url},
        )
        return time.perf_counter() - start


def workers(url: str, n: int, count: int, target: Callable[[], str]) -> float:
    """`submit` n runs (not timed), then `count` worker processes with --until-idle: the time
    from their start to the last one's end, start-up included."""
    journal = target()
    with tempfile.TemporaryDirectory() as tmp:
        saga, lines = Path(tmp) / "bench-each.yaml", Path(tmp) / "lines.jsonl"
        saga.write_text(SAGA)
        lines.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(n)))
        env = {**os.environ, "BASE": url, "SAGACTL_JOURNAL": journal}
        subprocess.run(
            [sys.executable, "-m", "sagactl", "submit", str(saga), "--each", str(lines), "-q"],
            check=True,
            env=env,
        )
        start = time.perf_counter()
        started = [
            subprocess.Popen(
                [sys.executable, "-m", "sagactl", "worker", "--until-idle", "--concurrency=32"],
                env=env,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(count)
        ]
        for process in started:
            assert process.wait() == 0
        return time.perf_counter() - start


def postgres() -> Any:
    """A throwaway cluster, or None (and why) where there is none."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from postgres_server import PostgresServer, missing_reason

    why = missing_reason()
    if why:
        print(f"PostgreSQL rows left out: {why}")
        return None
    return PostgresServer()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sagas", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    n = args.sagas or (300 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)
    proc, url = start_server()
    cluster = postgres()
    try:
        cases: dict[str, Callable[[], float]] = {
            "floor": lambda: floor(url, n),
            "each full c8": lambda: in_process(url, n, "full", 8),
            "each full c32": lambda: in_process(url, n, "full", 32),
            "each normal c32": lambda: in_process(url, n, "normal", 32),
            "command full c32": lambda: command(url, n, "full", 32),
        }
        if cluster is not None:
            cluster.__enter__()
            cases |= {
                "each pg c32": lambda: in_process(url, n, "full", 32, cluster.url),
                "1 worker pg": lambda: workers(url, n, 1, cluster.url),
                "2 workers pg": lambda: workers(url, n, 2, cluster.url),
            }
        in_process(url, 50, "full", 8)  # warm imports and the server
        taken = samples(rounds, cases)
    finally:
        proc.terminate()
        if cluster is not None:
            cluster.__exit__(None, None, None)
    print(f"{n} two-step sagas a case, {rounds} round(s); sagas/s, and vs the floor per round")
    floor_rate = sorted(n / t for t in taken["floor"])
    print(f"{'floor':<18} {floor_rate[len(floor_rate) // 2]:8.0f}/s")
    for name in cases:
        if name == "floor":
            continue
        rates = sorted(n / t for t in taken[name])
        inverse = {k: [1 / t for t in v] for k, v in taken.items()}
        median, low, high = paired(inverse, name, "floor")
        print(
            f"{name:<18} {rates[len(rates) // 2]:8.0f}/s   x{median:.2f} of the floor "
            f"(x{low:.2f}-x{high:.2f})"
        )


if __name__ == "__main__":
    main()
