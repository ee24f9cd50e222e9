"""sagactl against the floor of this machine, measured in the same run, interleaved.

    python bench/run.py            # the full run (a few minutes)
    python bench/run.py --quick    # a smoke run (seconds)

Prints one table: the cost of a step against a bare httpx loop of the same requests (both
durabilities), a 50-step fan-out against one step's latency, start-up against `python -c pass`,
and `list` / `show` on a large journal. Every figure is printed beside its target.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from startup import compile_sagactl, sagactl_command  # noqa: E402
from startup import saga_text as validate_saga_text  # noqa: E402


def start_server(delay: float = 0.2) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "server.py"), "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def chain_saga(steps: int, *, prefix: str = "/items") -> str:
    lines = [
        "version: 1",
        "name: bench",
        "env: [BASE]",
        "defaults:",
        '  base_url: "{{ env.BASE }}"',
        "steps:",
    ]
    for i in range(steps):
        lines += [
            f"  - id: s{i}",
            f'    action: {{method: PUT, url: "{prefix}/{i}/{{{{ run.id }}}}", '
            f'json: {{n: {i}, run: "{{{{ run.id }}}}"}}}}',
            f'    compensate: {{method: DELETE, url: "{prefix}/{i}/{{{{ run.id }}}}"}}',
        ]
    return "\n".join(lines) + "\n"


def foreach_saga(items: int) -> str:
    """One foreach step of `items` items sending what `chain_saga` sends step by step."""
    return (
        "\n".join(
            [
                "version: 1",
                "name: bench",
                "env: [BASE]",
                "defaults:",
                '  base_url: "{{ env.BASE }}"',
                "steps:",
                "  - id: s",
                f"    foreach: {list(range(items))}",
                "    as: n",
                '    action: {method: PUT, url: "/items/{{ item.n }}/{{ run.id }}", '
                'json: {n: "{{ item.n }}", run: "{{ run.id }}"}}',
                '    compensate: {method: DELETE, url: "/items/{{ item.n }}/{{ run.id }}"}',
            ]
        )
        + "\n"
    )


def fan_saga(steps: int) -> str:
    return chain_saga(steps, prefix="/slow").replace("    action:", "    needs: []\n    action:")


# --- the floor --------------------------------------------------------------------------------


def saga_headers(i: int) -> dict[str, str]:
    """The headers every saga request carries (SPEC §3.3), as a hand-written loop would set
    them: part of "the same requests"."""
    run = "01M8FF94HG4K3RFY1XMJZ5WX6W"
    return {
        "Idempotency-Key": f"{run}.s{i}.action",
        "Saga-Id": run,
        "Saga-Step": f"s{i}",
        "Saga-Phase": "action",
        "Saga-Attempt": "1",
        "traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01",
    }


def bare_loop(url: str, n: int, headers: bool = True) -> float:
    with httpx.Client() as client:
        start = time.perf_counter()
        for i in range(n):
            client.put(
                f"{url}/items/{i}/bench",
                json={"n": i, "run": "bench"},
                headers=saga_headers(i) if headers else None,
            )
        return time.perf_counter() - start


def bare_loop_busy(url: str, n: int, busy: float) -> float:
    """The bare loop with `busy` seconds of computing before each request, as any client that
    does something per step has: on a virtual machine the server then sits idle between two
    requests, and waking it costs each request time of its own."""
    with httpx.Client() as client:
        start = time.perf_counter()
        for i in range(n):
            until = time.perf_counter() + busy
            while time.perf_counter() < until:
                pass
            client.put(
                f"{url}/items/{i}/bench", json={"n": i, "run": "bench"}, headers=saga_headers(i)
            )
        return time.perf_counter() - start


def bare_loop_with_commits(url: str, n: int, synchronous: str) -> float:
    """The bare loop plus what write-ahead needs at least: a commit before, one after."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, step TEXT, status INTEGER)")
        with httpx.Client() as client:
            start = time.perf_counter()
            for i in range(n):
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("INSERT INTO a (step) VALUES (?)", (str(i),)).lastrowid
                db.execute("COMMIT")
                response = client.put(
                    f"{url}/items/{i}/bench", json={"n": i, "run": "bench"}, headers=saga_headers(i)
                )
                db.execute("BEGIN IMMEDIATE")
                db.execute("UPDATE a SET status = ? WHERE id = ?", (response.status_code, row))
                db.execute("COMMIT")
            elapsed = time.perf_counter() - start
        db.close()
        return elapsed


def saga_run(url: str, text: str, durability: str, concurrency: int = 8) -> float:
    from sagactl.api import start_run
    from sagactl.definition.loader import load_text
    from sagactl.journal import Durability, open_journal

    saga = load_text(text, "bench.yaml")
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_journal(Path(tmp) / "j.db", Durability(durability)) as journal,
    ):
        start = time.perf_counter()
        _, status = start_run(
            saga, {}, journal, {"BASE": url}, on_event=lambda e: None, concurrency=concurrency
        )
        elapsed = time.perf_counter() - start
    assert status.value == "succeeded", status
    return elapsed


def samples(rounds: int, cases: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Every case once per round, in turn, so that a slow spell of the machine hits them all."""
    taken: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            taken[name].append(case())
    return taken


def interleaved(rounds: int, cases: dict[str, Callable[[], float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples(rounds, cases).items()}


def paired(taken: dict[str, list[float]], name: str, floor: str) -> tuple[float, float, float]:
    """The ratio of `name` to `floor` in each round (measured a moment apart), as median, lowest
    and highest: steadier than a ratio of medians on a machine whose speed drifts."""
    ratios = sorted(a / b for a, b in zip(taken[name], taken[floor], strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


# --- fan-out: how to run 50 requests at once --------------------------------------------------


def threads_one_client(url: str, n: int) -> float:
    with (
        httpx.Client(limits=httpx.Limits(max_connections=n)) as client,
        ThreadPoolExecutor(n) as pool,
    ):
        start = time.perf_counter()
        list(pool.map(lambda i: client.put(f"{url}/slow/{i}/x"), range(n)))
        return time.perf_counter() - start


def asyncio_one_client(url: str, n: int) -> float:
    async def main() -> float:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n)) as client:
            start = time.perf_counter()
            await asyncio.gather(*(client.put(f"{url}/slow/{i}/x") for i in range(n)))
            return time.perf_counter() - start

    return asyncio.run(main())


def fast_async_vs_sync(url: str, n: int) -> tuple[float, float]:
    """Sequential per-request cost of the sync and the async client, for the record."""
    with httpx.Client() as client:
        start = time.perf_counter()
        for i in range(n):
            client.put(f"{url}/items/{i}/x")
        sync = (time.perf_counter() - start) / n

    async def main() -> float:
        async with httpx.AsyncClient() as client:
            start = time.perf_counter()
            for i in range(n):
                await client.put(f"{url}/items/{i}/x")
            return (time.perf_counter() - start) / n

    return sync, asyncio.run(main())


# --- start-up and large journals --------------------------------------------------------------


def timed(command: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    values = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        values.append(time.perf_counter() - start)
    return statistics.median(values)


def build_journal(path: Path, runs: int) -> str:
    """A journal of `runs` three-step runs (input `sku` SKU-<n>), written in bulk; returns a
    run id from the middle."""
    from sagactl.ids import new_run_id
    from sagactl.journal import Durability, open_journal

    text = chain_saga(3)
    open_journal(path, Durability.NORMAL).close()  # creates the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    base = time.time() - runs
    middle = ""
    for r in range(runs):
        run_id = new_run_id(base + r)
        if r == runs // 2:
            middle = run_id
        # mostly succeeded, some compensated, a few stuck: as a journal in use
        status = "stuck" if r % 997 == 0 else "compensated" if r % 50 == 0 else "succeeded"
        db.execute(
            "INSERT INTO runs (id, name, saga_path, saga_text, saga_hash, inputs, env, "
            "status, phase, trace_id, created_at, updated_at, finished_at, step_ids) "
            "VALUES (?, 'bench', 'bench.yaml', ?, 'h', ?, '{}', ?, "
            "'confirm', 't', ?, ?, ?, '[\"s0\",\"s1\",\"s2\"]')",
            (
                run_id,
                text,
                json.dumps({"sku": f"SKU-{r}"}),
                status,
                base + r,
                base + r,
                base + r + 0.01,
            ),
        )
        for s in range(3):
            db.execute(
                "INSERT INTO steps (run_id, step_id, phase, state, applied, outputs, "
                "attempts, status, updated_at) VALUES (?, ?, 'action', 'succeeded', 1, "
                "'{}', 1, 200, ?)",
                (run_id, f"s{s}", base + r),
            )
            db.execute(
                "INSERT INTO attempts (run_id, step_id, phase, attempt, span_id, "
                "started_at, finished_at, duration_ms, method, url, request_headers, request, "
                "outcome, status, response) VALUES (?, ?, 'action', 1, 'abcdef0123456789', "
                "?, ?, 0.5, '', '', '{}', ?, 'success', 200, ?)",
                (
                    run_id,
                    f"s{s}",
                    base + r,
                    base + r,
                    json.dumps(
                        {
                            "operation": "PUT",
                            "target": f"http://127.0.0.1:1/items/{s}/{run_id}",
                            "headers": {
                                "Idempotency-Key": f"{run_id}.s{s}.action",
                                "Saga-Id": run_id,
                            },
                            "body": json.dumps({"n": s, "run": run_id}),
                        }
                    ),
                    json.dumps(
                        {
                            "headers": {"content-type": "application/json", "content-length": "2"},
                            "body": "{}",
                        }
                    ),
                ),
            )
    db.execute("COMMIT")
    db.close()
    return middle


# --- the report -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer, smaller")
    args = parser.parse_args()
    steps = 50 if args.quick else 200
    rounds = 3 if args.quick else 15
    big = 5_000 if args.quick else 100_000
    compile_sagactl()
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: str, ratio: str = "", target: str = "") -> None:
        rows.append((name, value, ratio, target))

    server, url = start_server(delay=0.2)
    try:
        bare_loop(url, 50)  # warm up both sides
        chain = chain_saga(steps)
        saga_run(url, chain, "normal")
        # Each saga right after the bare loop it is compared with, in every round.
        taken = samples(
            rounds,
            {
                "bare": lambda: bare_loop(url, steps),
                "saga normal": lambda: saga_run(url, chain, "normal"),
                "bare+2 commits (no fsync)": lambda: bare_loop_with_commits(url, steps, "NORMAL"),
                "saga full": lambda: saga_run(url, chain, "full"),
                "bare+2 commits (fsync)": lambda: bare_loop_with_commits(url, steps, "FULL"),
                "bare, no saga headers": lambda: bare_loop(url, steps, headers=False),
                "bare, 300 µs of work a step": lambda: bare_loop_busy(url, steps, 300e-6),
            },
        )
        floor = statistics.median(taken["bare"]) / steps
        row(f"bare httpx loop, the same {steps} PUTs", f"{floor * 1e6:.0f} µs/req", "1.00x")
        for name in (
            "bare, no saga headers",
            "bare, 300 µs of work a step",
            "bare+2 commits (fsync)",
            "bare+2 commits (no fsync)",
        ):
            per = statistics.median(taken[name]) / steps
            ratio, low, high = paired(taken, name, "bare")
            row(f"  {name}", f"{per * 1e6:.0f} µs/req", f"{ratio:.2f}x", f"({low:.2f}-{high:.2f})")

        def step_row(label: str, name: str, count: int, target: float) -> None:
            """A row of a step's cost against the bare loop's request, per round."""
            per = statistics.median(taken[name]) / count
            ratio, low, high = paired(taken, name, "bare")
            ok = "ok" if ratio <= target else "MISSED"
            row(
                label,
                f"{per * 1e6:.0f} µs/step",
                f"{ratio:.2f}x",
                f"<= {target}x {ok}  ({low:.2f}-{high:.2f})",
            )

        for name, target in (("saga full", 1.5), ("saga normal", 1.35)):
            step_row(f"{steps}-step saga, durability {name.split()[1]}", name, steps, target)
        with tempfile.TemporaryDirectory() as tmp:
            # The whole command, its saga validated before (read from the cache): a step's cost
            # is the difference between a long and a short file, start-up cancelled out.
            short, long = 20, steps
            files = {}
            for n in (short, long):
                files[n] = Path(tmp) / f"chain{n}.yaml"
                files[n].write_text(chain_saga(n))
            env = {
                **os.environ,
                "BASE": url,
                "SAGACTL_JOURNAL": str(Path(tmp) / "j.db"),
                "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
            }
            sagactl = sagactl_command()

            def command_run(n: int, durability: str) -> float:
                command = [*sagactl, "run", str(files[n]), "-q", "--durability", durability]
                return timed(command, 1, env)

            for n in files:
                command_run(n, "normal")  # validated once, and cached
            taken = samples(
                rounds,
                {
                    "bare": lambda: bare_loop(url, long - short),
                    **{
                        f"{durability} {n}": functools.partial(command_run, n, durability)
                        for durability in ("normal", "full")
                        for n in (short, long)
                    },
                },
            )
        for durability, target in (("full", 1.5), ("normal", 1.35)):
            taken[durability] = [
                b - a
                for a, b in zip(
                    taken[f"{durability} {short}"], taken[f"{durability} {long}"], strict=True
                )
            ]
            label = f"sagactl run, {short}->{long} steps, {durability}"
            step_row(label, durability, long - short, target)

        width = 50
        fan = fan_saga(width)
        saga_run(url, fan, "normal", concurrency=width)
        fan_medians = interleaved(
            max(3, rounds // 3),
            {
                "saga": lambda: saga_run(url, fan, "normal", concurrency=width),
                "saga full": lambda: saga_run(url, fan, "full", concurrency=width),
                "threads": lambda: threads_one_client(url, width),
                "asyncio": lambda: asyncio_one_client(url, width),
            },
        )
        latency = 0.2
        ok = "ok" if fan_medians["saga"] <= 1.5 * latency else "MISSED"
        row(
            f"fan-out: {width} steps x 200 ms, --concurrency {width}",
            f"{fan_medians['saga'] * 1000:.0f} ms",
            f"{fan_medians['saga'] / latency:.2f}x",
            f"<= 1.5x {ok}",
        )
        row(
            "  the same, durability full",
            f"{fan_medians['saga full'] * 1000:.0f} ms",
            f"{fan_medians['saga full'] / latency:.2f}x",
        )
        row(
            f"  {width} threads, one httpx.Client",
            f"{fan_medians['threads'] * 1000:.0f} ms",
            f"{fan_medians['threads'] / latency:.2f}x",
        )
        row(
            "  asyncio, one httpx.AsyncClient",
            f"{fan_medians['asyncio'] * 1000:.0f} ms",
            f"{fan_medians['asyncio'] / latency:.2f}x",
        )
        sync, asynchronous = fast_async_vs_sync(url, steps)
        row("  sequential request, sync client", f"{sync * 1e6:.0f} µs")
        row(
            "  sequential request, async client",
            f"{asynchronous * 1e6:.0f} µs",
            f"{asynchronous / sync:.2f}x",
        )

        with tempfile.TemporaryDirectory() as tmp:
            one = Path(tmp) / "one.yaml"
            one.write_text(chain_saga(1))
            hundred = Path(tmp) / "hundred.yaml"
            hundred.write_text(validate_saga_text(100))
            env = {**os.environ, "BASE": url, "SAGACTL_JOURNAL": str(Path(tmp) / "j.db")}
            sagactl = sagactl_command()
            n = 5 if args.quick else 15
            put = f"httpx.put('{url}/items/0/x', json={{'n': 0, 'run': 'x'}})"
            # A cache that cannot be written (a file where its directory would be): the file
            # is validated from scratch every time.
            no_cache = Path(tmp) / "no-cache"
            no_cache.write_text("")
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "python: import typer": [sys.executable, "-c", "import typer"],
                "sagactl --help": [*sagactl, "--help"],
                "python: import typer, yaml, jsonschema, jinja2": [
                    sys.executable,
                    "-c",
                    "import typer, yaml, jsonschema, jinja2",
                ],
                "sagactl validate (100 steps), first time": [*sagactl, "validate", str(hundred)],
                "sagactl validate (100 steps), seen before": [*sagactl, "validate", str(hundred)],
                # What a hand-written script sending the run's one request costs.
                "python: import httpx, the same PUT": [
                    sys.executable,
                    "-c",
                    f"import httpx; {put}",
                ],
                "sagactl run, 1-step saga": [*sagactl, "run", str(one), "-q"],
            }
            env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
            envs = {
                name: {**env, "XDG_CACHE_HOME": str(no_cache)} if "first time" in name else env
                for name in commands
            }
            taken = samples(
                n,
                {
                    name: functools.partial(timed, command, 1, envs[name])
                    for name, command in commands.items()
                },
            )
            took = {name: statistics.median(values) for name, values in taken.items()}
            first = "sagactl validate (100 steps), first time"
            floors = {
                "sagactl --help": ("python -c pass", 8.0, ""),
                first: ("python: import typer, yaml, jsonschema, jinja2", 1.15, " imports"),
                "sagactl validate (100 steps), seen before": (
                    "python: import typer, yaml, jsonschema, jinja2",
                    1.15,
                    " imports",
                ),
                "sagactl run, 1-step saga": ("python: import httpx, the same PUT", 1.3, " script"),
            }
            for name in took:
                floor_name, target, of = floors.get(name, ("python -c pass", 0.0, ""))
                ratio, low, high = paired(taken, name, floor_name)
                verdict = (
                    f"<= {target:g}x{of} {'ok' if ratio <= target else 'MISSED'}"
                    f"  ({low:.2f}-{high:.2f})"
                    if target
                    else ""
                )
                row(name, f"{took[name] * 1000:.0f} ms", f"{ratio:.2f}x{of}", verdict)

            # Processes side by side on one journal, as CI jobs or a shell loop run them.
            from parallel import parallel_rows  # it imports this module: here, not above

            for entry in parallel_rows(url, 1 if args.quick else 3, 24 if args.quick else 60):
                row(*entry)

            journal = Path(tmp) / "big.db"
            middle = build_journal(journal, big)
            env = {**os.environ, "SAGACTL_JOURNAL": str(journal)}
            taken = samples(
                n,
                {
                    "floor": lambda: timed([sys.executable, "-c", "import typer, sqlite3"], 1, env),
                    "list": lambda: timed([*sagactl, "list", "--limit", "20"], 1, env),
                    "show": lambda: timed([*sagactl, "show", middle], 1, env),
                },
            )
            took = {name: statistics.median(values) for name, values in taken.items()}
            size = journal.stat().st_size
            row("python: import typer, sqlite3 (their floor)", f"{took['floor'] * 1000:.0f} ms")
            for name, label in (
                ("list", f"list --limit 20, {big:,} runs"),
                ("show", f"show RUN, {big:,} runs"),
            ):
                ok = "ok" if took[name] <= 0.200 else "MISSED"
                row(label, f"{took[name] * 1000:.0f} ms", "", f"<= 200 ms {ok}")
            row("journal size per step", f"{size / (big * 3):.0f} bytes")
    finally:
        server.terminate()
        server.wait()

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for entry in rows:
        print(
            f"{entry[0]:<{widths[0]}}  {entry[1]:>{widths[1]}}  {entry[2]:>{widths[2]}}  {entry[3]}"
        )
    print(
        f"({'quick, ' if args.quick else ''}medians; {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, {threading.active_count()} threads at the end)"
    )


if __name__ == "__main__":
    main()
