"""A run's inputs: `-i KEY=VALUE` coerced by the declared type, `--inputs FILE`, then the
declared JSON Schemas, with defaults applied.

`--inputs FILE` values come first; `-i` values override them key by key.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sagactl.definition.schema import quiet_patterns
from sagactl.errors import InputError, UsageError
from sagactl.model import Saga

__all__ = [
    "describe_schema",
    "read_inputs_file",
    "read_user_file",
    "resolve_inputs",
    "resolve_many",
]

_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a JSON array",
    "object": "a JSON object",
    "null": "null",
}


def describe_schema(spec: Mapping[str, Any]) -> str:
    """What an input's schema asks for, in a few words: `an integer >= 1`."""
    if "enum" in spec:
        return "one of " + ", ".join(json.dumps(v) for v in spec["enum"])
    types = spec.get("type")
    names = types if isinstance(types, list) else [types] if types else []
    words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in names) or "a value"
    if "pattern" in spec:
        words += f" matching {spec['pattern']}"
    if "minimum" in spec:
        words += f" >= {spec['minimum']}"
    if "maximum" in spec:
        words += f" <= {spec['maximum']}"
    return words


def _coerce_as(kind: str | None, raw: str) -> Any:
    """`raw` as a value of JSON Schema type `kind`. Raises ValueError."""
    if kind == "string":
        return raw
    if kind == "integer":
        if not _INTEGER.match(raw.strip()):
            raise ValueError
        return int(raw)
    if kind == "number":
        if _INTEGER.match(raw.strip()):
            return int(raw)
        number = float(raw)
        if not math.isfinite(number):
            raise ValueError
        return number
    if kind == "boolean":
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError
    if kind == "null":
        if raw.strip() != "null":
            raise ValueError
        return None
    value = json.loads(raw)
    if kind == "array" and not isinstance(value, list):
        raise ValueError
    if kind == "object" and not isinstance(value, dict):
        raise ValueError
    return value


def _coerce(raw: str, spec: Mapping[str, Any]) -> Any:
    types = spec.get("type")
    if types is None:
        # No declared type: JSON when it reads as JSON, else the text itself.
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    for kind in types if isinstance(types, list) else [types]:
        try:
            return _coerce_as(kind, raw)
        except ValueError:
            continue
    raise ValueError


def read_user_file(path: str | Path, what: str) -> str:
    """The text of a file named on the command line (`what`: "inputs file", "env file").

    Raises UsageError naming the file and what went wrong."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the {what}: {exc}") from None


def read_inputs_file(path: str | Path) -> dict[str, Any]:
    """Inputs from a JSON or YAML file holding one mapping. Raises UsageError."""
    from sagactl.definition.source import parse_data

    text = read_user_file(path, "inputs file")
    try:
        data = parse_data(text)
    except Exception as exc:  # yaml.YAMLError, kept lazy: yaml is imported by the loader
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{path}{where}: not valid JSON or YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of input names to values")
    return {str(k): v for k, v in data.items()}


def resolve_inputs(
    saga: Saga, assignments: Sequence[str] = (), file_values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's inputs: file values, then `-i` values, validated, defaults applied.

    Raises InputError naming every input that is wrong and what it expected.
    """
    import jsonschema

    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = dict(file_values or {})
    for item in assignments:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append((item, "expected -i KEY=VALUE"))
            continue
        spec = saga.inputs.get(name)
        if spec is None:
            values[name] = raw  # reported below as undeclared
            continue
        try:
            values[name] = _coerce(raw, spec)
        except ValueError:
            problems.append((name, f"expected {describe_schema(spec)}, got {raw!r}"))
            values.pop(name, None)
    for name in values:
        if name not in saga.inputs:
            declared = ", ".join(saga.inputs) or "none"
            problems.append((name, f"not declared by saga '{saga.name}' (its inputs: {declared})"))
    result: dict[str, Any] = {}
    bad = {name for name, _ in problems}
    for name, spec in saga.inputs.items():
        if name in values:
            value = values[name]
        elif "default" in spec:
            value = copy.deepcopy(spec["default"])
        else:
            if name not in bad:
                problems.append(
                    (
                        name,
                        f"required: expected {describe_schema(spec)} (give it as -i {name}=VALUE)",
                    )
                )
            continue
        with quiet_patterns():
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(spec).iter_errors(value)
            )
        if error is not None and name not in bad:
            # Where in a list or mapping it is: `lines[2].qty`.
            where = "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
            )
            expected = f"expected {describe_schema(spec)}" if not where else "in " + name + where
            problems.append((name, f"{error.message} ({expected})"))
        result[name] = value
    if problems:
        raise InputError(problems)
    return result


def resolve_many(
    sagas: Sequence[Saga], assignments: Sequence[str], file_values: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Inputs for each of several sagas run in one call: each saga takes the values it
    declares; a value that no saga declares is an error."""
    if len(sagas) == 1:
        return [resolve_inputs(sagas[0], assignments, file_values)]
    declared = {name for saga in sagas for name in saga.inputs}
    named = [(item.partition("=")[0].strip(), item) for item in assignments]
    unknown = sorted(
        {n for n, _ in named if n not in declared}
        | {n for n in (file_values or {}) if n not in declared}
    )
    if unknown:
        raise InputError([(n, "not declared by any of the sagas given") for n in unknown])
    result = []
    for saga in sagas:
        mine = [item for n, item in named if n in saga.inputs]
        values = {k: v for k, v in (file_values or {}).items() if k in saga.inputs}
        try:
            result.append(resolve_inputs(saga, mine, values))
        except InputError as exc:
            raise InputError([(f"{n}' of saga '{saga.name}", m) for n, m in exc.problems]) from None
    return result
