"""A run's inputs: `-i KEY=VALUE` coerced by the declared type, `--inputs FILE`, then the
declared JSON Schemas, with defaults applied.

`--inputs FILE` values come first; `-i` values override them key by key. With `--each
FILE.jsonl` (SPEC §8), each line's values override both, for that line's run.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagactl.errors import InputError, UsageError
from sagactl.model import Saga

__all__ = [
    "EachLine",
    "describe_schema",
    "each_line",
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
        error = _schema_error(spec, value)
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


_validators: dict[int, tuple[Mapping[str, Any], Any]] = {}


def _schema_error(spec: Mapping[str, Any], value: Any) -> Any:
    """The jsonschema error that says best why `value` does not follow `spec`, or None.
    jsonschema is imported here, not with the module: a saga without inputs never needs it."""
    import jsonschema

    from sagactl.definition.schema import quiet_patterns

    with quiet_patterns():
        return jsonschema.exceptions.best_match(_validator(spec).iter_errors(value))


def _validator(spec: Mapping[str, Any]) -> Any:
    """The validator of an input's schema, built once per schema (an `--each` file checks the
    same schemas once per line). Keyed by identity, with the schema kept so the key is not
    reused by another object."""
    import jsonschema

    kept = _validators.get(id(spec))
    if kept is None or kept[0] is not spec:
        kept = (spec, jsonschema.Draft202012Validator(spec))
        _validators[id(spec)] = kept
    return kept[1]


@dataclass(frozen=True, slots=True)
class EachLine:
    """One line of an `--each` file: the inputs of its run, or why it has none."""

    number: int
    inputs: dict[str, Any] | None
    problem: str | None = None
    where: str = ""
    """The file and line (`inputs.jsonl:12`), to name it in messages."""


def each_line(
    saga: Saga,
    path: str | Path,
    assignments: Sequence[str] = (),
    file_values: Mapping[str, Any] | None = None,
    *,
    first: int = 1,
) -> Iterator[EachLine]:
    """The runs of an `--each` file, line by line as it is read (a file of a million lines is
    never held whole): each non-blank line a JSON object of inputs over `file_values` and the
    `-i` values, resolved as for one run; a line that is not is given with its problem, for
    the caller to report and skip. Lines before `first` are passed over.

    Raises UsageError at once when the file cannot be opened."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator below
    except FileNotFoundError:
        raise UsageError(f"{path}: no such inputs file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the inputs file: {exc.strerror}") from None
    return _lines(saga, path, handle, assignments, file_values or {}, first)


def _lines(
    saga: Saga,
    path: str | Path,
    handle: Any,
    assignments: Sequence[str],
    file_values: Mapping[str, Any],
    first: int,
) -> Iterator[EachLine]:
    named = [(item.partition("=")[0].strip(), item) for item in assignments]
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number < first or not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                values = json.loads(raw)
            except UnicodeDecodeError as exc:
                yield EachLine(number, None, f"{where}: not UTF-8 ({exc.reason})")
                continue
            except json.JSONDecodeError as exc:
                yield EachLine(number, None, f"{where}:{exc.colno}: not valid JSON: {exc.msg}")
                continue
            if not isinstance(values, dict):
                yield EachLine(
                    number,
                    None,
                    f"{where}: expected a JSON object of input names to values, "
                    f"got {_TYPE_WORDS.get(_json_type(values), 'a value')}",
                )
                continue
            mine = [item for name, item in named if name not in values]
            try:
                inputs = resolve_inputs(saga, mine, {**file_values, **values})
            except InputError as exc:
                yield EachLine(number, None, f"{where}: {exc}".replace("\n", f"\n{where}: "))
                continue
            yield EachLine(number, inputs, where=where)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "null"
