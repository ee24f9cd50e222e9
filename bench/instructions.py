"""Instructions per step, counted by valgrind's callgrind: repeatable where wall-clock time is
not (the same count run after run, whatever else the machine is doing).

    python bench/instructions.py

Each case runs twice in its own process under callgrind, with 20 and with 120 steps; the
difference divided by 100 is the cost of one step, with start-up, imports and loading cancelled
out. `items` is one foreach step of 20 and of 120 items, sent one at a time, each the request
a step of the chain sends (durability normal): the cost of one item. `cli` is the whole
`sagactl run FILE -q` of an N-step file whose saga is in the cache (validated once before,
outside callgrind): what a step costs a user, loading the saga included, against the engine
called in process. The `... 1000` rows count the same from 100 to 1,000 steps,
(I1000 - I100) / 900: a cost that grows with the saga's length shows there. Counts cover the
client's own code in user space: not the kernel (socket calls, fsync) and not the server, which
is why the wall-clock ratios of bench/run.py are lower. The hash seed is fixed
(PYTHONHASHSEED=0), so the count is the same run after run.

    python bench/instructions.py            # every row (about ten minutes on 2 cores)
    python bench/instructions.py --quick    # the 20/120-step rows only
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402
    bare_loop,
    bare_loop_with_commits,
    chain_saga,
    foreach_saga,
    start_server,
)
from startup import compile_sagactl, sagactl_command  # noqa: E402

SIZES = (20, 120)
LONG = (100, 1000)
CASES = {
    "bare": "bare httpx loop, the same PUTs",
    "commits": "  bare + 2 commits (no fsync)",
    "normal": "saga, durability normal",
    "full": "saga, durability full",
    "items": "foreach items, one at a time",
    "cli": "sagactl run FILE -q, normal",
}
LONG_CASES = {
    "bare": "bare httpx loop, steps 100-1000",
    "normal": "saga, normal, steps 100-1000",
    "cli": "sagactl run FILE -q, steps 100-1000",
}


def one(case: str, url: str, steps: int) -> None:
    """What runs under callgrind. Both saga sizes are loaded in every case, so that loading
    cancels out of the difference."""
    from sagactl.api import start_run
    from sagactl.definition.loader import load_text
    from sagactl.journal import Durability, open_journal

    sizes = LONG if steps in LONG else SIZES
    sagas = {n: load_text(chain_saga(n), "bench.yaml") for n in sizes}
    repeated = {n: load_text(foreach_saga(n), "bench.yaml") for n in SIZES}
    if case == "bare":
        bare_loop(url, steps)
    elif case == "commits":
        bare_loop_with_commits(url, steps, "NORMAL")
    else:
        saga = repeated[steps] if case == "items" else sagas[steps]
        durability = Durability.NORMAL if case == "items" else Durability(case)
        with (
            tempfile.TemporaryDirectory() as tmp,
            open_journal(Path(tmp) / "j.db", durability) as journal,
        ):
            # Items one at a time, as the chain's steps go: the same requests, in order.
            concurrency = 1 if case == "items" else 8
            _, status = start_run(
                saga, {}, journal, {"BASE": url}, on_event=lambda e: None, concurrency=concurrency
            )
        assert status.value == "succeeded", status


def count(case: str, url: str, steps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        # A fixed hash seed: with a random one, dict and set orders vary from run to run, and
        # with them the count, by a few percent.
        # A cache of validated sagas of its own: loading costs the same in both runs.
        env = {**os.environ, "PYTHONHASHSEED": "0", "XDG_CACHE_HOME": f"{tmp}/cache"}
        if case == "cli":
            saga = Path(tmp) / f"chain{steps}.yaml"
            saga.write_text(chain_saga(steps))
            env.update(BASE=url, SAGACTL_JOURNAL=f"{tmp}/j.db")
            # Validated once, outside the count: the run reads it from the cache.
            subprocess.run(
                [*sagactl_command(), "validate", str(saga)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            command = [*sagactl_command(), "run", str(saga), "-q", "--durability", "normal"]
        else:
            command = [sys.executable, __file__, "--one", case, url, str(steps)]
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *command],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
    match = re.search(r"Collected : (\d+)", result.stderr)
    assert match, result.stderr
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("CASE", "URL", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="the 20/120-step rows only")
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], int(args.one[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    compile_sagactl()
    server, url = start_server()
    try:
        jobs = [(case, n) for case in CASES for n in SIZES]
        if not args.quick:
            jobs += [(case, n) for case in LONG_CASES for n in LONG]
        with ThreadPoolExecutor(2) as pool:  # one valgrind per core
            counts = dict(
                zip(jobs, pool.map(lambda job: count(job[0], url, job[1]), jobs), strict=True)
            )
    finally:
        server.terminate()
        server.wait()

    def per_step(case: str, sizes: tuple[int, int]) -> float:
        return (counts[case, sizes[1]] - counts[case, sizes[0]]) / (sizes[1] - sizes[0])

    per = {case: per_step(case, SIZES) for case in CASES}
    width = 36
    for case, name in CASES.items():
        print(
            f"{name:<{width}} {per[case] / 1e6:6.2f} M instructions/step  "
            f"{per[case] / per['bare']:5.2f}x"
        )
    print(
        f"{'  the whole command vs the engine':<{width}} {per['cli'] / per['normal']:6.2f}x"
        "          target <= 1.1x"
    )
    if not args.quick:
        for case, name in LONG_CASES.items():
            long = per_step(case, LONG)
            print(
                f"{name:<{width}} {long / 1e6:6.2f} M instructions/step  "
                f"{long / per[case] - 1:+6.1%} vs steps 20-120"
            )
    print(f"(callgrind, client side, user space; Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
