"""The saga JSON Schema (shipped in the package; each request in the branch of its kind) and
its errors said in the user's words, located by JSON path."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

from sagactl.definition import kinds as kinds_
from sagactl.definition.source import JsonPath

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

__all__ = [
    "describe",
    "explain",
    "format_path",
    "quiet_patterns",
    "schema",
    "schema_errors",
    "schema_text",
    "suggest",
    "validator",
]


@contextmanager
def quiet_patterns() -> Iterator[None]:
    """Around validation that compiles a saga's own regular expressions (`pattern`): Python
    warns of some it accepts (`[[a]`: "possible nested set"), and such a warning would reach
    the user's terminal as a traceback-like line from inside jsonschema."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def schema_text() -> str:
    """The saga JSON Schema, as shipped in the package."""
    return resources.files("sagactl").joinpath("saga.schema.json").read_text(encoding="utf-8")


@cache
def schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(schema_text())
    return result


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """The schema with every local `$ref` replaced by what it names (the saga schema has no
    recursion). Following `$ref`s at validation time is most of jsonschema's cost."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
            return {**target, **{k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}}
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _with_kinds(base: Mapping[str, Any], kinds: Mapping[str, kinds_.Kind]) -> dict[str, Any]:
    """The saga schema where each request is of the kind it names: HTTP unless `kind` says
    another registered kind, whose schema it then follows. A kind nobody registered is the
    only error of its request: its other keys cannot be judged."""
    defs = dict(base.get("$defs", {}))
    known = [kinds_.HTTP, *kinds]
    kind_property = {"enum": known, "description": "The kind of step this request is for."}
    http = dict(defs["request"])
    http["properties"] = {**http["properties"], "kind": kind_property}
    request: dict[str, Any] = {
        "if": {
            "type": "object",
            "required": ["kind"],
            "not": {"properties": {"kind": {"enum": known}}},
        },
        "then": {"properties": {"kind": kind_property}},
        "else": http,
    }
    for name, kind in kinds.items():
        request = {
            "if": {"type": "object", "required": ["kind"], "properties": {"kind": {"const": name}}},
            "then": dict(kind.schema),
            "else": request,
        }
    defs["request"] = request
    return {**base, "$defs": defs}


def validator() -> Any:
    return _validator_of(kinds_.generation())


def schema_errors(data: Any) -> list[Any]:
    """jsonschema's errors for `data` (a saga read from YAML), in its own words for `explain`.

    A compiled validator (jsonschema-rs) first says whether there are any: a valid file, the
    common case, then costs a fraction of a millisecond instead of tens, and jsonschema is not
    even imported. Only its "valid" is trusted — anything else (an error, a value it cannot
    take, the library missing) goes to jsonschema, whose verdict and messages stand."""
    fast = _compiled_of(kinds_.generation())
    if fast is not None:
        try:
            if fast.is_valid(data):
                return []
        except Exception:  # a value it cannot convert, whatever it raises: jsonschema decides
            pass
    with quiet_patterns():
        return list(validator().iter_errors(data))


@cache
def _compiled_of(generation: int) -> Any:
    """The compiled validator of the saga schema, or None: with kinds registered (see
    below), without jsonschema-rs, or with a schema it cannot compile."""
    if kinds_.registered():
        # A registered kind brings a schema of its own, whose patterns Rust's regular
        # expressions may read otherwise than Python's (`\\D` and non-ASCII digits) and whose
        # `$ref`s it would fetch: jsonschema judges those alone.
        return None
    try:
        import jsonschema_rs
    except ImportError:
        return None
    full = _with_kinds(schema(), {})
    try:
        return jsonschema_rs.Draft202012Validator(full)
    except Exception:  # jsonschema stays the judge of a schema it cannot take
        return None


@cache
def _validator_of(generation: int) -> Any:
    """The validator of the kinds registered at `generation` (see `kinds.generation`)."""
    import jsonschema  # costly to import; only loading a saga needs it

    full = _with_kinds(schema(), kinds_.registered())
    return jsonschema.Draft202012Validator(_inline_refs(full, full.get("$defs", {})))


def format_path(path: JsonPath) -> str:
    """`("steps", 1, "action", "method")` as `steps[1].action.method`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"the string {value!r}"


_DEPENDENTS = {
    ("foreach", "as"): "a foreach step needs `as`: the name its items go by (as: sku, read "
    "as item.sku)",
    ("as", "foreach"): "`as` names the items of a foreach step: add foreach (the list), or "
    "remove as",
}
"""What a key that needs another says when the other is missing."""


def _expected_type(spec: Any) -> str:
    names = spec if isinstance(spec, list) else [spec]
    return " or ".join(_TYPE_NAMES.get(str(n), str(n)) for n in names)


def explain(error: Any) -> Iterator[tuple[JsonPath, str, bool]]:
    """(path, message, at the key rather than the value) for one jsonschema error."""
    path: JsonPath = tuple(error.absolute_path)
    kind, instance, spec = error.validator, error.instance, error.validator_value
    sub = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        for key in instance:
            if key not in known:
                hint = suggest(key, known) or f" (expected one of: {', '.join(known)})"
                yield (*path, key), f"unknown key '{key}'{hint}", True
    elif kind == "required":
        for key in spec:
            if key not in instance:
                yield path, f"missing required key '{key}'", True
    elif kind == "dependentRequired":
        for key, wanted in spec.items():
            if key in instance:
                for missing in (w for w in wanted if w not in instance):
                    why = _DEPENDENTS.get((key, missing), f"{key} needs {missing}")
                    yield (*path, key), why, True
    elif kind == "enum":
        yield path, f"{instance!r} is not one of {', '.join(map(str, spec))}", False
    elif kind == "const":
        yield path, f"expected {spec!r}, got {describe(instance)}", False
    elif kind == "type":
        yield path, f"expected {_expected_type(spec)}, got {describe(instance)}", False
    elif kind in ("anyOf", "oneOf"):
        deeper = [e for e in error.context if e.relative_path]
        if deeper:
            yield from explain(max(deeper, key=lambda e: len(e.relative_path)))
        else:
            wanted = sub.get("title") or sub.get("description", "valid here")
            yield path, f"expected {wanted}, got {describe(instance)}", False
    elif kind == "propertyNames":
        yield (
            (*path, instance),
            f"'{instance}' is not a valid name: use letters, digits and "
            "underscores, not starting with a digit",
            True,
        )
    elif kind == "pattern" and "propertyNames" in error.schema_path:
        yield (*path, instance), f"{instance!r} is not a valid name: {sub.get('description')}", True
    elif kind == "pattern":
        hint = sub.get("description", "")
        yield path, f"{instance!r} does not match {spec}" + (f": {hint}" if hint else ""), False
    elif kind == "not" and isinstance(instance, dict):  # json, form and body exclude each other
        bodies = [k for k in ("json", "form", "body") if k in instance]
        yield (
            (*path, bodies[-1]),
            f"a request has one body at most, got {' and '.join(bodies)}",
            True,
        )
    elif kind == "minItems":
        yield path, f"expected at least {spec} item{'s' if spec != 1 else ''}", False
    elif kind == "uniqueItems":
        yield path, "has duplicate items", False
    elif kind == "minLength":
        yield path, "must not be empty", False
    elif kind == "minimum":
        yield path, f"expected at least {spec}, got {instance}", False
    elif kind == "maximum":
        yield path, f"expected at most {spec}, got {instance}", False
    else:
        yield path, error.message, False
