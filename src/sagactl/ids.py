"""Run ids (ULIDs: sortable by creation time, 26 characters) and W3C trace and span ids."""

from __future__ import annotations

import os
import time

__all__ = ["new_run_id", "new_span_id", "new_trace_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds since the epoch, then 80 random bits, in Crockford
    base 32, so that ids sort by creation time."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()
