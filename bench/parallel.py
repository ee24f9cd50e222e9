"""Parallel `sagactl run` processes on one journal: aggregate sagas per second with K processes
in flight at once (K = 1, 2, 4, 8), measured in the same rounds, interleaved.

    python bench/parallel.py                 # 60 sagas a case, 3 rounds, both durabilities
    python bench/parallel.py --quick         # 24 sagas a case, 1 round
    python bench/parallel.py --sagas 100 --rounds 5 --durability full

Each process runs one two-step saga (`chain_saga(2)`: two PUTs to bench/server.py, its own
process) with `sagactl run SAGA -q`, start-up included; as soon as one ends the next starts, so
that K are in flight until the case's sagas are done. Every case of a round writes to a journal
of its own, created before the clock starts. Prints sagas/s per K (median, lowest-highest of the
rounds), the CPU time of a saga's process (steadier than sagas/s on a busy machine) and, per
round, the ratio of 8 processes to 2 (target: >= 1.0, more processes on one journal never do
less).

The floor, measured in the same rounds: the same K processes that each import what `run` uses
and send one PUT, with no journal at all. On a machine with fewer cores than K, processes that
are all computing take turns on the cores, and each turn costs CPU of its own (caches refilled,
a process moved between cores): what the floor's ratio shows is the machine's, not sagactl's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import chain_saga, start_server  # noqa: E402
from startup import compile_sagactl, sagactl_command  # noqa: E402

WIDTHS = (1, 2, 4, 8)


def floor_command(url: str) -> list[str]:
    """A process that does what `sagactl run` cannot do without, and no journal: import its
    libraries, send one PUT."""
    put = f"httpx.put('{url}/items/0/x')"
    return [sys.executable, "-c", f"import typer, yaml, jsonschema, jinja2, sqlite3, httpx; {put}"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parallel_case(
    url: str, saga: Path, journal: Path, k: int, sagas: int, durability: str, floor: bool = False
) -> tuple[float, float]:
    """Seconds for `sagas` runs of `saga`, one `sagactl run` process each, `k` at a time (or as
    many floor processes), and the CPU seconds of one process (user and system, mean)."""
    env = {**os.environ, "BASE": url, "SAGACTL_JOURNAL": str(journal)}
    command = [*sagactl_command(), "run", str(saga), "-q", "--durability", durability]
    if floor:
        command = floor_command(url)
    left = [sagas]
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0 or failures:
                    return
                left[0] -= 1
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                with lock:
                    failures.append(done.stdout + done.stderr)

    threads = [threading.Thread(target=worker) for _ in range(k)]
    cpu = children_cpu()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = children_cpu() - cpu
    if failures:
        raise RuntimeError(f"a sagactl run failed:\n{failures[0]}")
    return elapsed, cpu / sagas


Case = tuple[str, int]  # (durability, or "floor"; K)


def measure(
    url: str,
    rounds: int,
    sagas: int,
    durabilities: Sequence[str] = ("full",),
    widths: Sequence[int] = WIDTHS,
    floor: bool = True,
) -> tuple[dict[Case, list[float]], dict[Case, list[float]]]:
    """Sagas/s and CPU seconds a saga's process of every (durability, K), and of the floor
    ("floor", K), each case once a round, in turn."""
    from sagactl.journal import Durability, open_journal

    kinds = [*durabilities, *(["floor"] if floor else [])]
    rates: dict[Case, list[float]] = {(d, k): [] for d in kinds for k in widths}
    cpus: dict[Case, list[float]] = {(d, k): [] for d in kinds for k in widths}
    with tempfile.TemporaryDirectory() as tmp:
        saga = Path(tmp) / "two.yaml"
        saga.write_text(chain_saga(2))
        for r in range(rounds):
            for kind in kinds:
                for k in widths:
                    durability = "full" if kind == "floor" else kind
                    journal = Path(tmp) / f"j-{r}-{kind}-{k}.db"
                    open_journal(journal, Durability(durability)).close()  # created beforehand
                    elapsed, cpu = parallel_case(
                        url, saga, journal, k, sagas, durability, floor=kind == "floor"
                    )
                    rates[(kind, k)].append(sagas / elapsed)
                    cpus[(kind, k)].append(cpu)
    return rates, cpus


def ratios(rates: dict[Case, list[float]], kind: str) -> list[float]:
    """8 processes against 2, per round (measured a moment apart)."""
    return [a / b for a, b in zip(rates[(kind, 8)], rates[(kind, 2)], strict=True)]


def parallel_rows(
    url: str, rounds: int, sagas: int, durabilities: Sequence[str] = ("full",)
) -> list[tuple[str, str, str, str]]:
    """Rows (label, value, ratio, target) for bench/run.py's table: 8 parallel `sagactl run`
    processes on one journal against 2, per durability, and the same for the floor (no
    journal) measured in the same rounds."""
    rates, _ = measure(url, rounds, sagas, durabilities, widths=(2, 8))
    rows = []
    for kind in (*durabilities, "floor"):
        each = sorted(ratios(rates, kind))
        ratio = statistics.median(each)
        spread = f"({each[0]:.2f}-{each[-1]:.2f})"
        if kind == "floor":
            rows.append(
                (
                    "  floor: libraries + 1 PUT, no journal, 8 processes vs 2",
                    f"{statistics.median(rates[(kind, 8)]):.1f}/s",
                    f"{ratio:.2f}x",
                    spread,
                )
            )
            continue
        ok = "ok" if ratio >= 1.0 else "MISSED"
        rows.append(
            (
                f"2-step sagas/s, 8 parallel processes vs 2, durability {kind}",
                f"{statistics.median(rates[(kind, 8)]):.1f}/s",
                f"{ratio:.2f}x",
                f">= 1.0x {ok}  {spread}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of fewer sagas")
    parser.add_argument("--sagas", type=int, help="sagas a case (default 60, quick 24)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--durability", choices=("full", "normal", "both"), default="both", help="default both"
    )
    parser.add_argument("--no-floor", action="store_true", help="leave the floor out")
    args = parser.parse_args()
    sagas = args.sagas or (24 if args.quick else 60)
    rounds = args.rounds or (1 if args.quick else 3)
    durabilities = ("full", "normal") if args.durability == "both" else (args.durability,)
    compile_sagactl()
    server, url = start_server(delay=0.2)
    try:
        # Warm up: the page cache, the server, the interpreter's files.
        measure(url, 1, 4, ("normal",), widths=(2,), floor=False)
        rates, cpus = measure(url, rounds, sagas, durabilities, floor=not args.no_floor)
    finally:
        server.terminate()
        server.wait()
    kinds = [*durabilities, *([] if args.no_floor else ["floor"])]
    print(f"{'case':<22} {'sagas/s':>8} {'range':>10} {'CPU ms':>7}   sagas/s per round")
    for kind in kinds:
        for k in WIDTHS:
            values = rates[(kind, k)]
            spread = f"{min(values):.1f}-{max(values):.1f}"
            cpu = statistics.median(cpus[(kind, k)]) * 1000
            per = " ".join(f"{v:.1f}" for v in values)
            label = f"{kind}, {k} process{'es' if k > 1 else ''}"
            print(f"{label:<22} {statistics.median(values):>8.1f} {spread:>10} {cpu:>7.0f}   {per}")
        each = ratios(rates, kind)
        verdict = ""
        if kind != "floor":
            verdict = f", target >= 1.0x {'ok' if statistics.median(each) >= 1.0 else 'MISSED'}"
        print(
            f"  {kind}: 8 vs 2 processes, per round: "
            + " ".join(f"{x:.2f}x" for x in each)
            + f"  (median {statistics.median(each):.2f}x{verdict})"
        )
    print(
        f"({sagas} sagas a case, {rounds} round{'s' if rounds > 1 else ''}, interleaved; "
        "CPU ms: user + system of one process, median of the rounds; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
