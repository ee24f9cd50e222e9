"""Read a saga file into the model: YAML with positions (`source`), the JSON Schema and its
errors in words (`schema`), static checks (`checks`), building the model (`build`).

Every problem in a file is collected and raised at once as `DefinitionErrors`, each located as
`FILE:LINE:COL: JSON-path: message`.

A text validated before by this build is read back from the cache (`cache`) instead: none of
YAML, jsonschema or the checks is even imported then.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sagactl.definition import cache
from sagactl.definition import kinds as kinds_
from sagactl.errors import DefinitionError, DefinitionErrors, Location
from sagactl.model import Saga

__all__ = ["load", "load_text"]


def load_text(text: str, file: str = "<saga>") -> Saga:
    """The saga in `text`; `file` names it in messages. Raises DefinitionErrors."""
    # Another kind of step is registered from code, and builds calls the cache could not
    # know how to rebuild: such sagas are validated every time.
    cacheable = not kinds_.registered()
    if cacheable:
        saga = cache.recall(text)
        if saga is not None:
            return saga if saga.path == file else dataclasses.replace(saga, path=file)
    saga = _validated(text, file)
    if cacheable:
        cache.remember(text, saga)
    return saga


def _validated(text: str, file: str) -> Saga:
    from sagactl.definition.build import build
    from sagactl.definition.checks import Checker, check
    from sagactl.definition.schema import describe, explain, schema_errors
    from sagactl.definition.source import YamlProblem, read_yaml

    try:
        data, positions, problems = read_yaml(text)
    except YamlProblem as exc:
        raise DefinitionErrors(
            [DefinitionError(Location(file, exc.line, exc.column), exc.message)]
        ) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else describe(data)
        raise DefinitionErrors(
            [DefinitionError(Location(file, 1, 1), f"expected a saga (a mapping), got {got}")]
        )
    checker = Checker(file, data, positions)
    for path, message, at in problems:
        checker.error(path, message, at=at)
    for error in schema_errors(data):
        for path, message, at_key in explain(error):
            checker.error(path, message, at_key=at_key)
    schema_ok = not checker.errors
    needs, closure = check(checker)
    if checker.errors:
        # Identical messages can come from several schema branches; keep each once.
        unique = {str(e): e for e in checker.errors}
        raise DefinitionErrors(list(unique.values()))
    assert schema_ok and closure is not None  # no cycle, or there would be an error
    return build(data, positions, file, text, needs, closure)


def load(path: str | Path) -> Saga:
    """The saga in the file at `path`. Raises DefinitionErrors."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DefinitionErrors([DefinitionError(Location(file), "no such file")]) from None
    except IsADirectoryError:
        raise DefinitionErrors(
            [DefinitionError(Location(file), "is a directory, not a saga file")]
        ) from None
    except OSError as exc:
        raise DefinitionErrors(
            [DefinitionError(Location(file), f"cannot read: {exc.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionErrors(
            [DefinitionError(Location(file), f"not UTF-8 text (byte {exc.start})")]
        ) from None
    return load_text(text, file)
