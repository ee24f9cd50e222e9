"""Errors raised by sagactl, each with the exit code the command line maps it to (SPEC §5.1).

    SagactlError                      exit_code 1 (only for programming errors reaching the top)
    ├── UsageError                    2  bad arguments, an unreadable inputs file
    ├── LocatedError(location)        2  a problem at FILE:LINE:COL: PATH
    │   ├── DefinitionError           2  one problem in a saga file (raised together as
    │   │                                DefinitionErrors, so all of a file's are reported)
    │   └── RenderError               2  a template that cannot be rendered (an unset env value…)
    ├── DefinitionErrors              2  every problem found in one saga file
    ├── InputError(problems)          2  inputs that are missing, undeclared or ill-typed
    ├── JournalError                  4  run not found, ambiguous prefix, locked, unreadable
    │   └── LeaseLost                 4  another process took the run over from this one
    └── Interrupted               130/143  stopped by SIGINT / SIGTERM; resumable

This module imports nothing from sagactl, so every other module may raise these.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DefinitionError",
    "DefinitionErrors",
    "InputError",
    "Interrupted",
    "JournalError",
    "LeaseLost",
    "LocatedError",
    "Location",
    "RenderError",
    "SagactlError",
    "UsageError",
]


@dataclass(frozen=True)
class Location:
    """Where something stands in a saga file: 1-based line and column, and its JSON path."""

    file: str
    line: int = 0
    column: int = 0
    path: str = ""

    def __str__(self) -> str:
        head = self.file
        if self.line:
            head += f":{self.line}:{self.column}" if self.column else f":{self.line}"
        return f"{head}: {self.path}" if self.path else head


class SagactlError(Exception):
    """Base of every error sagactl reports to its user instead of a traceback."""

    exit_code = 1


class UsageError(SagactlError):
    """The command line itself is wrong: a bad flag value, an unreadable inputs file."""

    exit_code = 2


class LocatedError(SagactlError):
    """A problem at a place in a saga file, printed as `FILE:LINE:COL: PATH: message`."""

    exit_code = 2

    def __init__(self, location: Location, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class DefinitionError(LocatedError):
    """One problem in a saga file, located as precisely as the file allows."""


class DefinitionErrors(SagactlError):
    """Every problem found in one saga file, sorted by position."""

    exit_code = 2

    def __init__(self, errors: list[DefinitionError], *, by_position: bool = True) -> None:
        self.errors = (
            sorted(errors, key=lambda e: (e.location.line, e.location.column))
            if by_position
            else list(errors)
        )
        super().__init__("\n".join(str(e) for e in self.errors))


class InputError(SagactlError):
    """Inputs that are missing, not declared by the saga, or not of their declared type;
    every problem at once, each as (input name, message)."""

    exit_code = 2

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("\n".join(f"input '{name}': {message}" for name, message in problems))
        self.problems = problems


class RenderError(LocatedError):
    """A template that cannot be rendered with the values at hand (say, an unset env value)."""


class Interrupted(SagactlError):
    """The run was stopped by a signal; it can be resumed or compensated."""

    exit_code = 130

    def __init__(self, run_id: str, signal_exit: int = 130) -> None:
        super().__init__(f"run {run_id} interrupted")
        self.run_id = run_id
        self.exit_code = signal_exit


class JournalError(SagactlError):
    """The journal cannot answer: unknown run, ambiguous prefix, live owner, unreadable file."""

    exit_code = 4

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message)
        # Set when a run was under way: it stays journaled as far as it got, to be resumed.
        self.run_id = run_id


class LeaseLost(JournalError):
    """This process stopped renewing its lease on a run (it was stalled), and another process
    took the run over: this one must send nothing more."""
