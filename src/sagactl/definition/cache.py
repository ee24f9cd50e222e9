"""Sagas checked before: a saga whose exact text this build of sagactl validated is read back
from a cache instead of being validated again (YAML, JSON Schema, static checks, building).

An entry is keyed by the text's hash and by what could change the result: sagactl's version,
the files of the code that checks and builds a saga (their sizes and modification times, as
Python's own bytecode cache does), and the Python version (the entry is a pickle of the
model). It lives under `$XDG_CACHE_HOME/sagactl/sagas` (`~/.cache/...` by default).

An entry is never trusted: one that does not start with its own checksum, whose checksum does
not match, that does not unpickle into a `Saga` of the same text, or that is in a directory
or file another user could write, is ignored, and the saga validated again. Writing is best
effort: a cache that cannot be written (read-only home, no home) only costs the validation.
Deleting the directory at any time is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
import threading
from functools import cache
from pathlib import Path

from sagactl.model import Saga

__all__ = ["directory", "recall", "remember"]

_MAGIC = b"sagactl saga cache 1\n"
_DIGEST = hashlib.sha256().digest_size
_KEEP = 256
"""Entries kept at most: when a write finds more, the oldest half goes."""


def directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: which the XDG spec says to ignore
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sagactl" / "sagas"


@cache
def _fingerprint() -> bytes:
    """What a cached model depends on besides the text."""
    import sagactl

    parts = [sagactl.__version__, sys.version, str(pickle.HIGHEST_PROTOCOL)]
    package = Path(sagactl.__file__).parent
    for path in sorted(
        [
            *package.joinpath("definition").glob("*.py"),
            package / "model.py",
            package / "saga.schema.json",
        ]
    ):
        try:
            info = path.stat()
        except OSError:
            continue
        parts.append(f"{path.name}:{info.st_size}:{info.st_mtime_ns}")
    return "\n".join(parts).encode()


def _entry(text: str) -> Path:
    key = hashlib.sha256(_fingerprint() + b"\0" + text.encode("utf-8", "surrogatepass"))
    return directory() / f"{key.hexdigest()}.pickle"


def _private(info: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else: anything else could have been put
    there by someone else, and unpickling runs what the pickle names."""
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def recall(text: str) -> Saga | None:
    """The saga validated from `text` before, or None (never validated, or an entry not to be
    trusted). Its `path` is whatever it was loaded as then."""
    path = _entry(text)
    try:
        with path.open("rb") as file:
            if not (_private(os.fstat(file.fileno())) and _private(path.parent.stat())):
                return None
            data = file.read()
    except OSError:
        return None
    start = len(_MAGIC) + _DIGEST
    if not data.startswith(_MAGIC) or len(data) <= start:
        return None
    payload = data[start:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC) : start]:
        return None
    try:
        saga = pickle.loads(payload)
    except Exception:  # a corrupt or foreign entry, whatever it raises: validate again
        return None
    if not isinstance(saga, Saga) or saga.source != text:
        return None
    return saga


def remember(text: str, saga: Saga) -> None:
    """Keep `saga`, validated from `text`, for the next load of the same text."""
    path = _entry(text)
    payload = pickle.dumps(saga, protocol=pickle.HIGHEST_PROTOCOL)
    data = _MAGIC + hashlib.sha256(payload).digest() + payload
    # A name of this thread's own: two runs of a batch may write the same entry at once.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        # Whole or not at all: a reader never sees half an entry under its name.
        os.replace(temporary, path)
        _prune(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    entries = list(folder.glob("*.pickle"))
    if len(entries) <= _KEEP:
        return
    by_age = []
    for entry in entries:
        try:
            by_age.append((entry.stat().st_mtime, entry))
        except OSError:
            continue
    by_age.sort()
    for _, entry in by_age[: len(by_age) // 2]:
        entry.unlink(missing_ok=True)
