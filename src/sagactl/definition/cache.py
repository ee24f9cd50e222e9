"""Sagas checked before: a saga whose exact text this build of sagactl validated is read back
from a cache instead of being validated again (YAML, JSON Schema, static checks, building).

An entry is keyed by the text's hash and by what could change the result: sagactl's version,
the contents of the code that checks and builds a saga, the versions of the libraries it uses
to (Jinja2, jsonschema, PyYAML), and the Python version (the entry is a pickle of the model).
It lives under `$XDG_CACHE_HOME/sagactl/sagas` (`~/.cache/...` by default).

An entry is never trusted: one that does not start with its own checksum, whose checksum does
not match, or that does not unpickle into a `Saga` of the same text is ignored, and the saga
validated again. Nothing is read or written unless `sagactl/` and `sagas/` are real
directories (not links) owned by this user that nobody else can write, and the entry a file
of the same kind: unpickling runs what the pickle names. Writing is best effort: a cache that
cannot be used (read-only, no home directory, someone else's) only costs the validation.
Deleting the directory at any time is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import stat
import sys
import threading
import time
from functools import cache
from pathlib import Path

from sagactl.model import Saga

__all__ = ["directory", "recall", "remember"]

_MAGIC = b"sagactl saga cache 1\n"
_DIGEST = hashlib.sha256().digest_size
_ENTRY = re.compile(r"^[0-9a-f]{64}\.pickle$")
_KEEP = 256
"""Entries kept at most: when a write finds more, the least recently used half goes."""
_LIBRARIES = {
    "jinja2": "jinja2",
    "jsonschema": "jsonschema",
    "jsonschema_rs": "jsonschema-rs",
    "yaml": "PyYAML",
}
"""The libraries a checked saga depends on: import name, distribution name."""
_OPTIONAL = {"jsonschema_rs"}
"""Libraries whose absence is part of the key rather than a reason not to cache."""
_TEMPORARY = re.compile(r"^\.[0-9a-f]{64}\.pickle\.[0-9]+\.[0-9]+$")
_STALE = 3600.0
"""Seconds after which a temporary file is taken for one a killed process left behind."""


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def directory() -> Path | None:
    """Where entries are kept; None without a home directory to put them in, or on a system
    that cannot open a directory without following links (no cache is better than a cache
    that could be planted)."""
    if not (hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY") and hasattr(os, "geteuid")):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: which the XDG spec says to ignore
        base = os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no HOME, and no entry in the password database
        return None
    return Path(base) / "sagactl" / "sagas"


@cache
def _fingerprint() -> bytes | None:
    """What a cached model depends on besides the text; None when it cannot be told (a file
    of the package that cannot be read: a zip, a frozen build), and then nothing is cached.
    Contents, not modification times: builds that set every file's time alike (reproducible
    builds, Nix, container layers) would otherwise share the entries of another build."""
    import importlib.util

    import sagactl

    digest = hashlib.sha256()
    for part in (sagactl.__version__, sys.version, str(pickle.HIGHEST_PROTOCOL)):
        digest.update(part.encode() + b"\0")
    package = Path(sagactl.__file__).parent
    files = [
        *package.joinpath("definition").glob("*.py"),
        package / "model.py",
        package / "saga.schema.json",
    ]
    for path in sorted(files):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            return None
    # A library's version, from the name of its metadata directory beside it: without
    # importing it (jsonschema takes tens of milliseconds) or reading every distribution's
    # metadata (importlib.metadata takes as long). Names are compared as pip normalises them
    # (`pyyaml-6.0.2.dist-info`, `Jinja2-3.1.2.egg-info`, `jsonschema_rs-0.61.2.dist-info`).
    for module, distribution in _LIBRARIES.items():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            if module in _OPTIONAL:
                digest.update(module.encode() + b"\0absent\0")
                continue
            return None
        site = Path(spec.origin).parent.parent
        wanted = _normalised(distribution)
        try:
            found = sorted(
                name
                for name in os.listdir(site)
                if name.endswith((".dist-info", ".egg-info"))
                and _normalised(name.split("-", 1)[0]) == wanted
            )
        except OSError:
            return None
        digest.update(module.encode() + b"\0" + "\0".join(found).encode() + b"\0")
    return digest.digest()


def _private(info: os.stat_result, kind: int) -> bool:
    """Of `kind` (a directory, a regular file), owned by this user and writable by nobody
    else: anything else could have been put there by someone else."""
    return (
        stat.S_IFMT(info.st_mode) == kind
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _open_folder(create: bool) -> int | None:
    """A descriptor of the entries' directory, or None when it may not be used: every file is
    then reached through it, so that no link swapped in on the way is followed."""
    where = directory()
    if where is None:
        return None
    opened: list[int] = []
    try:
        if create:
            where.parent.parent.mkdir(parents=True, exist_ok=True)
        opened.append(os.open(where.parent.parent, os.O_RDONLY | os.O_DIRECTORY))
        for name in (where.parent.name, where.name):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=opened[-1])
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            opened.append(os.open(name, flags, dir_fd=opened[-1]))
            if not _private(os.fstat(opened[-1]), stat.S_IFDIR):
                return None
        return opened.pop()
    except OSError:
        return None
    finally:
        for descriptor in opened:
            os.close(descriptor)


def _name(text: str) -> str | None:
    fingerprint = _fingerprint()
    if fingerprint is None:
        return None
    key = hashlib.sha256(fingerprint + b"\0" + text.encode("utf-8", "surrogatepass"))
    return f"{key.hexdigest()}.pickle"


def recall(text: str) -> Saga | None:
    """The saga validated from `text` before, or None (never validated, or an entry not to be
    trusted). Its `path` is whatever it was loaded as then."""
    name = _name(text)
    if name is None:
        return None
    folder = _open_folder(create=False)
    if folder is None:
        return None
    try:
        data = _read_private(name, folder)
        if data is None:
            return None
        # Used: the last to be pruned.
        with contextlib.suppress(OSError):
            os.utime(name, dir_fd=folder, follow_symlinks=False)
    finally:
        os.close(folder)
    start = len(_MAGIC) + _DIGEST
    if not data.startswith(_MAGIC) or len(data) <= start:
        return None
    payload = data[start:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC) : start]:
        return None
    try:
        saga = pickle.loads(payload)
    except Exception:  # a corrupt entry, whatever it raises: validate again
        return None
    if not isinstance(saga, Saga) or saga.source != text:
        return None
    return saga


def _read_private(name: str, folder: int) -> bytes | None:
    """The bytes of the entry `name` when it is a regular file of this user's that nobody
    else can write; None otherwise. Non-blocking: a FIFO in its place does not hang."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    try:
        if not _private(os.fstat(descriptor), stat.S_IFREG):
            return None
        chunks = []
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def remember(text: str, saga: Saga) -> None:
    """Keep `saga`, validated from `text`, for the next load of the same text."""
    name = _name(text)
    if name is None:
        return
    try:
        payload = pickle.dumps(saga, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a model pickle cannot take (a body nested past the recursion limit)
        return
    data = _MAGIC + hashlib.sha256(payload).digest() + payload
    # A name of this thread's own: two runs of a batch may write the same entry at once.
    temporary = f".{name}.{os.getpid()}.{threading.get_ident()}"
    folder = _open_folder(create=True)
    if folder is None:
        return
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(temporary, flags, 0o600, dir_fd=folder), "wb") as file:
            file.write(data)
        # Whole or not at all: a reader never sees half an entry under its name.
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        _prune(folder)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
    finally:
        os.close(folder)


def _prune(folder: int) -> None:
    """The least recently used half of the entries, when there are more than `_KEEP`, and
    temporary files a killed process left; only names of those (nothing else that may be in
    the directory)."""
    entries = []
    for name in os.listdir(folder):
        if _ENTRY.match(name):
            entries.append(name)
        elif _TEMPORARY.match(name):
            with contextlib.suppress(OSError):
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
                if info.st_mtime < time.time() - _STALE:
                    os.unlink(name, dir_fd=folder)
    if len(entries) <= _KEEP:
        return
    by_use = []
    for name in entries:
        with contextlib.suppress(OSError):
            by_use.append((os.stat(name, dir_fd=folder, follow_symlinks=False).st_mtime, name))
    by_use.sort()
    for _, name in by_use[: len(by_use) // 2]:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=folder)
