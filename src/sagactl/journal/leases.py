"""Who may still be driving a run: the lease policy every backend applies (SPEC §4); and how a
journal's target is shown (a URL's password never is)."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from sagactl.records import Owner

__all__ = ["Alive", "owner_alive", "passwords_in", "shown_target"]

Alive = Callable[[Owner, float | None], bool]
"""Whether a run's owner, whose lease expires at the given time, may still be driving it."""


def owner_alive(owner: Owner, expires: float | None) -> bool:
    """Whether the process holding a run's lease may still be driving it: its lease was
    renewed within its time to live and, on this host, the process exists and is not a
    zombie. A process that stopped renewing (stalled, or a reused PID) has lost its lease."""
    if expires is None or expires <= time.time():
        return False
    host, pid = owner
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat: "PID (COMMAND) STATE …"; the command may itself hold parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: the process exists, which is all that can be known
    return state not in ("Z", "X")


def shown_target(target: str) -> str:
    """A journal's target as it may be shown: a URL's password as `***`, in its user part
    (`postgresql://me:PW@host`) or its query (`?password=PW`), and any text naming one."""
    shown = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", target)
    return re.sub(r"(?i)(\bpassword=)[^&\s]*", r"\1***", shown)


def passwords_in(target: str) -> list[str]:
    """The password a journal URL holds, as written and decoded, for messages that may
    repeat it (a database library quoting the part of the URL it could not parse)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    found: list[str] = []
    try:
        parts = urlsplit(target)
        if parts.password:
            found.append(parts.password)
        for value in parse_qs(parts.query).get("password", []):
            found.append(value)
    except ValueError:  # not a URL urllib can read: the part after ':' up to '@' is all
        match = re.search(r"://[^:/@]*:([^@/]*)@", target)
        if match:
            found.append(match.group(1))
    found += [unquote(p) for p in found]
    return sorted({p for p in found if p}, key=len, reverse=True)
