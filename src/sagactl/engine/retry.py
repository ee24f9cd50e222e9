"""When to try a request again (SPEC §2.1): the retry policy translated in one place.

Exponential backoff with full jitter (tenacity's waits), raised to what the service asked for
(`Retry-After`), capped, and never past a deadline. Pure: the engine sleeps, with the sleep it
was given, and reads the clock it was given.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagactl.model import RetryPolicy

__all__ = ["next_wait", "wait_before"]


def wait_before(policy: RetryPolicy, number: int, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt `number + 1`: exponential backoff (with full jitter
    when the policy says so), raised to `Retry-After`, never past `max_backoff`."""
    import tenacity  # only now: most runs never retry, and importing it costs milliseconds

    base = dict(multiplier=policy.backoff, exp_base=policy.factor, max=policy.max_backoff)
    backoff = (
        tenacity.wait_random_exponential(**base)
        if policy.jitter
        else tenacity.wait_exponential(**base)
    )
    # tenacity's waits read only the number of the attempt that just ended.
    seconds = float(backoff(_AttemptNumber(number)))  # type: ignore[arg-type]
    if retry_after is not None:
        seconds = max(seconds, retry_after)
    return min(seconds, policy.max_backoff)


def next_wait(
    policy: RetryPolicy,
    number: int,
    retry_after: float | None,
    *,
    now: float,
    deadline: float | None,
) -> float | None:
    """The wait before the attempt after `number`, or None when there is none: the policy's
    attempts are used up, or it would start past `deadline` (a time of the same clock as
    `now`)."""
    if number >= policy.attempts:
        return None
    wait = wait_before(policy, number, retry_after)
    if deadline is not None and now + wait > deadline:
        return None
    return wait


@dataclass(frozen=True)
class _AttemptNumber:
    attempt_number: int
