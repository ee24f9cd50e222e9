"""Which step goes next: each once the steps it depends on succeeded, at most `concurrency` at
once, earlier steps first among those free to go, on a pool of threads."""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sagactl.model import Step

__all__ = ["schedule"]

_R = TypeVar("_R")


def schedule(
    steps: Sequence[Step],
    deps: Mapping[str, set[str]],
    *,
    done: set[str],
    run: Callable[[Step], _R],
    run_here: Callable[[Step], _R],
    succeeded: Callable[[_R], bool],
    concurrency: int,
    stop: threading.Event,
    stop_on_failure: bool,
    deadline: float | None,
    clock: Callable[[], float],
    idle: Callable[[], None],
    name: str,
) -> dict[str, _R]:
    """`run` each of `steps` once its `deps` (minus those `done`) succeeded, and return the
    results of those that ran.

    Stops starting work on `stop`, past `deadline` (of `clock`), or (with `stop_on_failure`)
    once one fails; what is in flight finishes, except on `stop`: then it is left running.
    A step alone is run on this thread (`run_here`), which saves two thread switches a step.
    `idle` is called whenever nothing can start until a step in flight ends.
    """
    results: dict[str, _R] = {}
    by_id = {s.id: s for s in steps}
    position = {s.id: i for i, s in enumerate(steps)}
    waiting = {s.id: len(deps[s.id] - done) for s in steps}
    users: dict[str, list[str]] = {s.id: [] for s in steps}
    for step in steps:
        for dep in deps[step.id] - done:
            users.setdefault(dep, []).append(step.id)
    ready = [(position[sid], sid) for sid, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    finished: queue.SimpleQueue[tuple[str, _R | BaseException]] = queue.SimpleQueue()

    def work(step: Step) -> None:
        try:
            finished.put((step.id, run(step)))
        except BaseException as exc:  # handed to the scheduling thread, raised there
            finished.put((step.id, exc))

    running = 0
    failed = False
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"sagactl-{name}")
    try:
        while True:
            if (
                not stop.is_set()
                and not (stop_on_failure and failed)
                and (deadline is None or clock() < deadline)
            ):
                if len(ready) == 1 and not running:
                    step = by_id[heapq.heappop(ready)[1]]
                    finished.put((step.id, run_here(step)))
                    running += 1
                while ready and running < concurrency:
                    pool.submit(work, by_id[heapq.heappop(ready)[1]])
                    running += 1
            if not running:
                break
            try:
                try:
                    step_id, result = finished.get_nowait()
                except queue.Empty:
                    idle()
                    step_id, result = finished.get(timeout=0.25)
            except queue.Empty:
                if stop.is_set():
                    # Leave what is in flight: its attempts stay journaled without a result,
                    # that is, in doubt, and the caller settles them.
                    return results
                continue
            running -= 1
            if isinstance(result, BaseException):
                raise result
            results[step_id] = result
            if not succeeded(result):
                failed = True
                continue
            for user in users.get(step_id, ()):
                waiting[user] -= 1
                if waiting[user] == 0:
                    heapq.heappush(ready, (position[user], user))
    finally:
        # On a signal, do not wait for requests in flight.
        pool.shutdown(wait=not stop.is_set(), cancel_futures=True)
    return results
