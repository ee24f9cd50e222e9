"""A run before the engine drives it: the secrets and env values it reads, and its first
journal write (SPEC §4: journaled before its first request)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sagactl.errors import UsageError
from sagactl.ids import new_run_id, new_trace_id
from sagactl.journal.contract import Journal
from sagactl.model import Saga
from sagactl.records import Owner, RunRecord
from sagactl.redact import Redactor

__all__ = [
    "WITHHELD",
    "WITHHELD_BODY",
    "create_run",
    "env_values",
    "journaled_env",
    "queue_run",
    "read_secrets",
    "saga_hash",
]

# What the journal keeps in place of an output that held a secret.
WITHHELD = {"withheld": "held a secret"}
# In place of an answer that holds a secret output that could not be read from it.
WITHHELD_BODY = "(withheld: this answer holds a secret output that could not be read from it)"


def read_secrets(saga: Saga, environ: Mapping[str, str]) -> dict[str, str]:
    """Every declared secret from the environment; a missing one is a usage error, raised before
    anything is sent."""
    missing = [name for name in saga.secrets if name not in environ]
    if missing:
        raise UsageError(
            f"missing secret{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}: set {'them' if len(missing) > 1 else 'it'} in "
            "the environment"
        )
    return {name: environ[name] for name in saga.secrets}


def env_values(saga: Saga, environ: Mapping[str, str]) -> dict[str, str]:
    """The values of the env names the saga declares, as a run reads and journals them."""
    return {name: environ[name] for name in saga.env if name in environ}


def saga_hash(saga: Saga) -> str:
    """The hash the journal keeps of a saga's text."""
    return hashlib.sha256(saga.source.encode()).hexdigest()


def journaled_env(
    saga: Saga, environ: Mapping[str, str], redactor: Redactor | None
) -> dict[str, Any]:
    """The env values a run reads, as the journal keeps them: one that holds a secret (a URL
    with a password in it) only marked, for a resume to read from the environment again."""
    env: dict[str, Any] = env_values(saga, environ)
    if redactor:
        env = {
            name: WITHHELD if redactor.text(value) != value else value
            for name, value in env.items()
        }
    return env


def create_run(
    journal: Journal,
    saga: Saga,
    inputs: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    run_id: str | None = None,
    lease_ttl: float = 30.0,
    redactor: Redactor | None = None,
) -> RunRecord:
    """Journal a new run (saga text and hash, inputs, env values read) before its first
    request, owned by this process. An env value that holds a secret (a URL with a password
    in it) is not journaled, only marked: a resume reads it from the environment again."""
    run_id = run_id or new_run_id()
    _journal(journal, saga, inputs, environ, run_id, Owner.this_process(), lease_ttl, redactor)
    return journal.get_run(run_id)


def queue_run(
    journal: Journal,
    saga: Saga,
    inputs: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    run_id: str,
    redactor: Redactor | None = None,
) -> None:
    """Journal a run as `create_run` does, but queued (SPEC §8: `submit`): owned by no
    process until a worker claims it."""
    _journal(journal, saga, inputs, environ, run_id, None, 0.0, redactor)


def _journal(
    journal: Journal,
    saga: Saga,
    inputs: Mapping[str, Any],
    environ: Mapping[str, str],
    run_id: str,
    owner: Owner | None,
    lease_ttl: float,
    redactor: Redactor | None,
) -> None:
    journal.create_run(
        run_id=run_id,
        name=saga.name,
        saga_path=saga.path,
        saga_text=saga.source,
        saga_hash=saga_hash(saga),
        inputs=inputs,
        env=journaled_env(saga, environ, redactor),
        trace_id=new_trace_id(),
        owner=owner,
        lease_ttl=lease_ttl,
        step_ids=[s.id for s in saga.steps],
    )
