"""Which step goes next: each once the steps it depends on succeeded, at most `concurrency`
requests at once, earlier steps first among those free to go, on a pool of threads.

A foreach step (SPEC §2.5) is split into its items when it is free to go: each item is a unit
of work of its own, counted against `concurrency` like a step, and the step ends when its
last item does."""

from __future__ import annotations

import heapq
import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sagactl.model import Step

__all__ = ["schedule"]

_R = TypeVar("_R")
_U = TypeVar("_U")


def schedule(
    steps: Sequence[Step],
    deps: Mapping[str, set[str]],
    *,
    done: set[str],
    run: Callable[[Step, _U | None], _R],
    run_here: Callable[[Step, _U | None], _R],
    succeeded: Callable[[_R], bool],
    concurrency: int,
    stop: threading.Event,
    stop_on_failure: bool,
    deadline: float | None,
    clock: Callable[[], float],
    idle: Callable[[], None],
    name: str,
    split: Callable[[Step], Sequence[_U] | None] = lambda step: None,
    gather: Callable[[Step], _R] | None = None,
) -> dict[str, _R]:
    """`run` each of `steps` once its `deps` (minus those `done`) succeeded, and return the
    results of those that ran.

    `split` says, when a step is free to go, whether it runs whole (None: `run(step, None)`)
    or as units (`run(step, unit)` for each, in their order). Such a step's result is
    `gather(step)`, asked once none of its units is in flight and none is left to start —
    or none will start any more (work stopped starting: then only some ran).

    Stops starting work on `stop`, past `deadline` (of `clock`), or (with `stop_on_failure`)
    once a step or a unit fails; what is in flight finishes, except on `stop`: then it is
    left running. Work alone is run on this thread (`run_here`), which saves two thread
    switches a step. `idle` is called whenever nothing can start until work in flight ends.
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
    units_left: dict[str, deque[_U]] = {}
    """The units of each split step not started yet."""
    left = 0
    """How many units there are in `units_left`, all steps together."""
    started: set[str] = set()
    """The split steps of which a unit started."""
    in_flight: dict[str, int] = {}
    """How many units of each split step are running."""
    finished: queue.SimpleQueue[tuple[str, bool, _R | BaseException]] = queue.SimpleQueue()
    """(step id, whether it is one unit of the step, its result or what it raised)."""
    failed = False

    def work(step: Step, unit: _U | None) -> None:
        try:
            finished.put((step.id, unit is not None, run(step, unit)))
        except BaseException as exc:  # handed to the scheduling thread, raised there
            finished.put((step.id, unit is not None, exc))

    def ended(step_id: str, result: _R) -> None:
        """Record a step's result; a success frees the steps that wait on it."""
        nonlocal failed
        results[step_id] = result
        if not succeeded(result):
            failed = True
            return
        for user in users.get(step_id, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (position[user], user))

    def gathered(step_id: str) -> None:
        nonlocal left
        left -= len(units_left.pop(step_id))  # those that never started never will
        del in_flight[step_id]
        assert gather is not None
        ended(step_id, gather(by_id[step_id]))

    def next_work() -> tuple[Step, _U | None] | None:
        """The earliest work free to go: a unit of a split step, or a step (split as it
        is taken, when it runs as units)."""
        nonlocal left
        while True:
            split_first = (
                min((position[sid], sid) for sid, units in units_left.items() if units)
                if left
                else None
            )
            if split_first is not None and (not ready or split_first < ready[0]):
                step_id = split_first[1]
                in_flight[step_id] += 1
                started.add(step_id)
                left -= 1
                return by_id[step_id], units_left[step_id].popleft()
            if not ready:
                return None
            step = by_id[heapq.heappop(ready)[1]]
            units = split(step)
            if units is None:
                return step, None
            units_left[step.id], in_flight[step.id] = deque(units), 0
            left += len(units)
            if not units:
                gathered(step.id)  # nothing to run: its result is known already

    running = 0
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"sagactl-{name}")
    try:
        while True:
            if (
                not stop.is_set()
                and not (stop_on_failure and failed)
                and (deadline is None or clock() < deadline)
            ):
                while running < concurrency:
                    alone = not running and len(ready) + left == 1
                    chosen = next_work()
                    if chosen is None:
                        break
                    running += 1
                    if alone and not ready and not left:
                        step, unit = chosen
                        finished.put((step.id, unit is not None, run_here(step, unit)))
                    else:
                        pool.submit(work, *chosen)
            if not running:
                break
            try:
                try:
                    step_id, is_unit, result = finished.get_nowait()
                except queue.Empty:
                    idle()
                    step_id, is_unit, result = finished.get(timeout=0.25)
            except queue.Empty:
                if stop.is_set():
                    # Leave what is in flight: its attempts stay journaled without a result,
                    # that is, in doubt, and the caller settles them.
                    return results
                continue
            running -= 1
            if isinstance(result, BaseException):
                raise result
            if not is_unit:
                ended(step_id, result)
                continue
            in_flight[step_id] -= 1
            if not succeeded(result):
                failed = True
            if not in_flight[step_id] and not units_left[step_id]:
                gathered(step_id)
        if not stop.is_set():
            # Work stopped starting (a failure, the deadline): each split step ends with the
            # units that ran; one of which none started never ran.
            for step_id in [sid for sid in units_left if sid in started]:
                gathered(step_id)
    finally:
        # On a signal, do not wait for requests in flight.
        pool.shutdown(wait=not stop.is_set(), cancel_futures=True)
    return results
