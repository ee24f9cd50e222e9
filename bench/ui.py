"""How fast `sagactl ui` answers over a large journal: the first page of runs, filtered ones,
a search, and a run's page, each timed over HTTP against the server's own floor (`/health`,
which reads nothing), interleaved in every round; medians and the range of the ratios.

    python bench/ui.py [--runs 100000] [--rounds 15]

Target: the first page of runs on a 100,000-run journal in <= 200 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import build_journal, paired, samples  # noqa: E402
from startup import compile_sagactl, sagactl_command  # noqa: E402


def start_ui(journal: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*sagactl_command(), "ui", "--journal", str(journal), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    match = re.match(r"sagactl ui: (http://\S+)", proc.stdout.readline())
    assert match, "sagactl ui did not start"
    return proc, match.group(1).rstrip("/")


def fetch(client: httpx.Client, path: str) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        answer = client.get(path)
        answer.raise_for_status()
        return time.perf_counter() - start

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the journal")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    compile_sagactl()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "big.db"
        started = time.perf_counter()
        middle = build_journal(journal, args.runs)
        print(f"journal of {args.runs:,} runs written in {time.perf_counter() - started:.1f} s")
        proc, base = start_ui(journal)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                cold = fetch(client, "/")()
                older = re.search(r'class="next" href="([^"]+)"', client.get("/").text)
                assert older, "no next page"
                cases = {
                    "floor": fetch(client, "/health"),
                    "first page of runs": fetch(client, "/"),
                    "stuck runs": fetch(client, "/?status=stuck"),
                    "one saga, one day": fetch(
                        client, "/?saga=bench&since=" + time.strftime("%Y-%m-%d")
                    ),
                    "search by id prefix": fetch(client, "/?q=" + middle[:12]),
                    "search by input value": fetch(client, f"/?q=SKU-{args.runs // 2}"),
                    "the next page (older runs)": fetch(
                        client, "/" + older.group(1).replace("&amp;", "&")
                    ),
                    "a run's page": fetch(client, f"/runs/{middle}"),
                }
                taken = samples(args.rounds, cases)
        finally:
            proc.terminate()
            proc.wait()
    floor = statistics.median(taken["floor"])
    print(f"{'first page, cold (first request)':<36} {cold * 1000:7.1f} ms")
    print(f"{'floor: /health':<36} {floor * 1000:7.1f} ms")
    for name in cases:
        if name == "floor":
            continue
        took = statistics.median(taken[name])
        ratio, low, high = paired(taken, name, "floor")
        target = ""
        if name == "first page of runs":
            target = f"  <= 200 ms {'ok' if took <= 0.2 else 'MISSED'}"
        print(
            f"{name:<36} {took * 1000:7.1f} ms  {ratio:6.1f}x floor ({low:.1f}-{high:.1f}){target}"
        )
    print(
        f"(medians of {args.rounds} rounds; {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    main()
