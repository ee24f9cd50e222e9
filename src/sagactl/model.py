"""The saga model: frozen values built by the loader, read by every other layer.

Templated values (URLs, headers, bodies, outputs) are kept as the raw strings, lists and dicts of
the file; `templating` renders them. Nothing here does IO or knows YAML, HTTP or SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "COMPENSATION_RETRY",
    "DEFAULT_MAX_RESPONSE",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "METHODS",
    "READ_ONLY_METHODS",
    "BodyKind",
    "Call",
    "Expect",
    "Item",
    "Notify",
    "Phase",
    "Poll",
    "Request",
    "RetryPolicy",
    "Saga",
    "Step",
    "StepKind",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
    "status_matches",
]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds in `250ms`, `5s`, `2m`, `1h`, or a plain number of seconds.

    Raises ValueError for anything else (the schema catches those first, with a position).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is not a duration")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, as a user would write it (`200ms`, `5s`, `2m`)."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    ms = seconds * 1000
    return f"{ms:g}ms" if ms == round(ms, 3) else f"{seconds:g}s"


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_UNIT_BYTES = {
    None: 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_size(value: str | int) -> int:
    """Bytes in `16MiB`, `512KiB`, `1MB`, or a plain number of bytes.

    Raises ValueError for anything else (the schema catches those first, with a position).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size")
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])


def format_size(size: int) -> str:
    """A size as a user would write it: `16MiB`, `64KiB`, `1000B`."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def status_matches(spec: tuple[int | str, ...], status: int) -> bool:
    """Whether `status` is one of `spec`'s codes (200) or classes ("2xx")."""
    for item in spec:
        if isinstance(item, int):
            if item == status:
                return True
        elif status // 100 == int(item[0]):
            return True
    return False


class StepKind(StrEnum):
    """How a step behaves when the saga must roll back (SPEC §2.4)."""

    COMPENSATABLE = "compensatable"
    READ_ONLY = "read-only"
    PIVOT = "pivot"


class Phase(StrEnum):
    """Which of a step's requests is meant: the action, its compensation, its confirm, or the
    probe that settles its action's outcome when in doubt (SPEC §2.6)."""

    ACTION = "action"
    COMPENSATE = "compensate"
    CONFIRM = "confirm"
    VERIFY = "verify"


class BodyKind(StrEnum):
    """How a request body is encoded; the saga key that gave it."""

    JSON = "json"
    FORM = "form"
    TEXT = "body"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often one request is tried again."""

    attempts: int = 3
    """Every attempt counts, the first included: 1 means no retry."""
    backoff: float = 0.2
    """Seconds before the first retry."""
    factor: float = 2.0
    """Each later wait is the previous one times this."""
    max_backoff: float = 5.0
    """No wait is longer than this, `Retry-After` included."""
    jitter: bool = True
    """Full jitter: each wait is drawn uniformly between 0 and its computed value."""
    on: tuple[int | str, ...] = (408, 425, 429, "5xx")
    """Statuses that are retried; a connect error, timeout or reset always is."""

    def retries_status(self, status: int) -> bool:
        return status_matches(self.on, status)


DEFAULT_RETRY = RetryPolicy()
COMPENSATION_RETRY = RetryPolicy(attempts=10, backoff=0.5, max_backoff=30.0)
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Expect:
    """What makes a response a success."""

    status: tuple[int | str, ...] = ("2xx",)
    """Accepted codes (201) and classes ("2xx")."""
    that: tuple[str, ...] = ()
    """Bare expressions over `response`, each of which must be true."""

    def status_ok(self, status: int) -> bool:
        return status_matches(self.status, status)


@dataclass(frozen=True)
class Poll:
    """Send a call again until its answer says the work is done (SPEC §2.5): `until` and
    `fail_if` are bare expressions over `response`."""

    until: str
    fail_if: str | None = None
    every: float = 2.0
    """Seconds between polls."""
    timeout: float = 600.0
    """Seconds of polling at most, from the first poll (of whichever process polled first)."""


class Call(Protocol):
    """One call of a step (its action, compensation or confirm), of any kind: `kind` names
    the executor that runs it (`sagactl.executors`). The engine reads only what is here."""

    @property
    def kind(self) -> str: ...

    @property
    def phase(self) -> Phase: ...

    @property
    def timeout(self) -> float:
        """Seconds an attempt may take, whole."""
        ...

    @property
    def retry(self) -> RetryPolicy: ...

    @property
    def checks(self) -> tuple[str, ...]:
        """Expressions over `response` that must all be true for a success."""
        ...

    @property
    def read_only(self) -> bool:
        """Whether, as an action, it has no effect to undo whatever it does."""
        ...

    @property
    def poll(self) -> Poll | None:
        """Whether it is sent again until its answer says the work is done."""
        ...

    @property
    def reads_steps(self) -> bool:
        """Whether it reads other steps' outputs: it is prepared only once they are known."""
        ...

    @property
    def line(self) -> int:
        """Its line in the saga file, for messages."""
        ...

    def templates(self) -> tuple[Any, ...]:
        """Every value in it that may hold templates."""
        ...


@dataclass(frozen=True)
class Request:
    """One HTTP request of a step (a `Call` of kind `http`), with the saga's defaults
    already merged in."""

    phase: Phase
    method: str
    url: str
    base_url: str | None = None
    query: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    auth: Mapping[str, Any] | None = None
    """`{"basic": [user, password]}` or `{"bearer": token}` (templates): the Authorization
    header, over any in `headers`."""
    body_kind: BodyKind | None = None
    body: Any = None
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = DEFAULT_RETRY
    expect: Expect = Expect()
    max_response: int = DEFAULT_MAX_RESPONSE
    """Bytes of a response body read at most when something reads the body."""
    follow_redirects: bool = False
    """Follow at most `MAX_REDIRECTS` redirects within the attempt's timeout."""
    poll: Poll | None = None
    reads_body: bool = True
    """Whether `expect.that` (or, for an action, the step's `outputs`) read the body."""
    reads_steps: bool = False
    """Whether its URL, headers or body read other steps' outputs: it can be prepared only
    once they are known."""
    line: int = 0
    """Line of the request in the saga file, for messages."""

    @property
    def kind(self) -> str:
        return "http"

    @property
    def checks(self) -> tuple[str, ...]:
        return self.expect.that

    @property
    def read_only(self) -> bool:
        return self.method in READ_ONLY_METHODS

    def templates(self) -> tuple[Any, ...]:
        return (self.url, self.base_url, self.query, self.headers, self.auth, self.body)


@dataclass(frozen=True)
class Item:
    """One item of a foreach step: its position in the list and its value, which templates
    read as `item.index` and `item.<name>` (`name` is the step's `as`)."""

    index: int
    value: Any
    name: str

    def namespace(self) -> dict[str, Any]:
        return {self.name: self.value, "index": self.index}


@dataclass(frozen=True)
class Step:
    """One step: an action, and optionally its compensation and confirm."""

    id: str
    index: int
    """Position in the file, from 0."""
    needs: tuple[str, ...]
    """Direct dependencies: the `needs` list; without one, the step depends on every step
    above it, and this holds those of them no other step above depends on (which imply the
    rest: `explicit_needs` tells the two apart)."""
    action: Call
    compensate: Call | None = None
    confirm: Call | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    explicit_needs: bool = False
    """Whether `needs` was written in the file (otherwise it is implied by file order)."""
    line: int = 0
    safe: bool = False
    """Marked `safe: true`: its action has no effect to undo (a login, a search)."""
    secret_outputs: frozenset[str] = frozenset()
    """Outputs that are secrets: declared `secret: true`, or read into a credential header
    (Authorization, Cookie, Proxy-Authorization, `auth`). Never journaled."""
    foreach: Any = None
    """For a step run once per item of a list (SPEC §2.5): the template of the list (a string,
    or a list of templates); None for a step run once."""
    item_name: str = ""
    """The name its items go by in templates (`as`): `item.<item_name>`."""
    verify: Call | None = None
    """The probe sent when its action's outcome is in doubt (SPEC §2.6)."""
    applied: str | None = None
    """A bare expression over the verify's `response`: true when the action took effect."""
    absent: str | None = None
    """A bare expression over the verify's `response`: true when the action never did."""

    @property
    def repeated(self) -> bool:
        """Whether it runs once per item of a list (`foreach`)."""
        return self.foreach is not None

    @property
    def kind(self) -> StepKind:
        if self.compensate is not None:
            return StepKind.COMPENSATABLE
        if self.safe or self.action.read_only:
            return StepKind.READ_ONLY
        return StepKind.PIVOT

    def withheld_names(self, withheld: set[str]) -> list[str]:
        """Which of `withheld` (`steps.S.outputs.X`) are this step's outputs."""
        prefix = f"steps.{self.id}.outputs."
        return [name for name in withheld if name.startswith(prefix)]

    def request(self, phase: Phase) -> Call | None:
        if phase is Phase.ACTION:
            return self.action
        if phase is Phase.VERIFY:
            return self.verify
        return self.compensate if phase is Phase.COMPENSATE else self.confirm


@dataclass(frozen=True)
class Notify:
    """Who to tell when a run ends (SPEC §6): `url` (a template: POST the run's summary to
    it) or `command` (run with the summary on its standard input)."""

    url: str | None = None
    command: str | None = None
    on: tuple[str, ...] = ("stuck", "compensated")
    """The run statuses that notify."""
    timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy(attempts=5, backoff=0.5, max_backoff=5.0)


@dataclass(frozen=True)
class Saga:
    """A validated saga file."""

    name: str
    steps: tuple[Step, ...]
    order: tuple[str, ...]
    """Step ids in dependency order, file order among independent steps."""
    ancestors: Mapping[str, AbstractSet[str]]
    """For each step, every step guaranteed to have finished before it starts."""
    waits_on: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """For each step, the needs that are not implied by others: what it waits on directly."""
    descendants: Mapping[str, AbstractSet[str]] = field(default_factory=dict)
    """For each step, every step that cannot start before it has finished."""
    path: str = ""
    source: str = ""
    """The file's text, as journaled."""
    version: int = 1
    description: str = ""
    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    vars: tuple[tuple[str, Any], ...] = ()
    timeout: float | None = None
    """Deadline of the forward phase in seconds, if any."""
    notify: Notify | None = None
    plans: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """How each template of the file made only of text and plain lookups renders, made when
    it was checked (`definition.templating.Plan`): a run compiles those without parsing."""

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def dependents(self, step_id: str) -> AbstractSet[str]:
        """Every step that cannot start before `step_id` has finished."""
        return self.descendants.get(step_id, frozenset())

    def ordered_steps(self) -> list[Step]:
        by_id = {s.id: s for s in self.steps}
        return [by_id[i] for i in self.order]
