"""The JSON Schema: valid draft 2020-12, every property described, no unknown keys anywhere,
shipped in the package and at schemas/."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ROOT
from sagactl.definition import kinds
from sagactl.definition.schema import (
    _compiled_of,
    quiet_patterns,
    schema,
    schema_errors,
    schema_text,
    validator,
)
from sagactl.definition.source import read_yaml

# Objects whose keys are the user's own names: header names, input names, output names.
USER_MAPS = {"query", "headers", "form", "inputs", "vars", "outputs"}


def _subschemas(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    yield from _subschemas(sub, f"{path}/{key}/{name}")
            elif key in ("items", "additionalProperties", "not", "propertyNames"):
                yield from _subschemas(value, f"{path}/{key}")
            elif key in ("anyOf", "oneOf", "allOf"):
                for i, sub in enumerate(value):
                    yield from _subschemas(sub, f"{path}/{key}/{i}")
            elif key == "dependentSchemas":
                for name, sub in value.items():
                    yield from _subschemas(sub, f"{path}/{key}/{name}")


def test_schema_is_valid_draft_2020_12() -> None:
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema())


def test_every_property_has_a_description() -> None:
    missing = [
        f"{path}/properties/{name}"
        for path, node in _subschemas(schema())
        for name, sub in node.get("properties", {}).items()
        if isinstance(sub, dict) and not sub.get("description")
    ]
    assert missing == []


def test_every_object_refuses_unknown_keys() -> None:
    open_objects = [
        path
        for path, node in _subschemas(schema())
        if node.get("type") == "object"
        and "additionalProperties" not in node
        and path.rsplit("/", 1)[-1] not in USER_MAPS
        # each input is declared by a JSON Schema of the user's, which may hold any keyword
        and path != "/properties/inputs/additionalProperties"
    ]
    assert open_objects == []
    closed = [path for path, node in _subschemas(schema()) if node.get("properties")]
    assert all(dict(_subschemas(schema()))[p].get("additionalProperties") is False for p in closed)


def test_every_key_of_the_spec_example_is_in_the_schema() -> None:
    defs = schema()["$defs"]
    assert set(schema()["properties"]) == {
        "version",
        "name",
        "description",
        "inputs",
        "env",
        "secrets",
        "vars",
        "defaults",
        "timeout",
        "notify",
        "steps",
    }
    assert set(defs["step"]["properties"]) == {
        "id",
        "description",
        "needs",
        "safe",
        "foreach",
        "as",
        "action",
        "compensate",
        "confirm",
        "verify",
        "outputs",
    }
    assert {
        "method",
        "url",
        "query",
        "headers",
        "auth",
        "json",
        "form",
        "body",
        "timeout",
        "retry",
        "expect",
        "max_response",
        "applied",
        "absent",
    } <= set(defs["request"]["properties"])
    assert set(defs["retry"]["properties"]) == {
        "attempts",
        "backoff",
        "factor",
        "max_backoff",
        "jitter",
        "on",
    }
    assert "compensation" in defs["defaults"]["properties"]


def test_durations_and_status_classes_are_patterned() -> None:
    defs = schema()["$defs"]
    validator = jsonschema.Draft202012Validator({"$defs": defs, "$ref": "#/$defs/duration"})
    for good in ["250ms", "5s", "2m", "1h", 3, 0.5]:
        assert validator.is_valid(good), good
    for bad in ["5", "5 s", "soon", -1, "1d"]:
        assert not validator.is_valid(bad), bad
    status = jsonschema.Draft202012Validator({"$defs": defs, "$ref": "#/$defs/status"})
    assert status.is_valid("2xx") and status.is_valid(404)
    assert not status.is_valid("6xx") and not status.is_valid(99) and not status.is_valid("20x")


def test_repository_copy_is_the_packaged_file() -> None:
    repo_copy = ROOT / "schemas" / "saga.schema.json"
    assert repo_copy.read_text() == schema_text()
    assert json.loads(schema_text()) == schema()


def test_every_property_is_documented() -> None:
    """docs/format.md names every key of the schema, so the reference cannot fall behind."""
    text = (ROOT / "docs" / "format.md").read_text()
    names = {name for _, node in _subschemas(schema()) for name in node.get("properties", {})}
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert missing == []


def _keys(node: Any) -> set[str]:
    """Every property name the schema knows: what a mutated saga is made of."""
    found: set[str] = set()
    if isinstance(node, dict):
        found.update(node.get("properties", {}))
        for value in node.values():
            found |= _keys(value)
    elif isinstance(node, list):
        for value in node:
            found |= _keys(value)
    return found


_BASES = [read_yaml(path.read_text())[0] for path in sorted((ROOT / "sagas").glob("*.yaml"))]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 700),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["5xx", "2xx", "10s", "1.5m", "16MiB", "GET", "PUT", "a\n", "x-y", "", "é"]),
    st.text(max_size=4),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(sorted(_keys(schema()))) | st.text(max_size=3), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


@st.composite
def _mutated_sagas(draw: st.DrawFn) -> Any:
    """A real saga with a few values replaced, keys removed or keys added, anywhere."""
    data = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths[1:]))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent[path[-1]], dict):
            key = draw(st.sampled_from(sorted(_keys(schema()))))
            parent[path[-1]][key] = draw(_VALUES)
        else:
            parent[path[-1]] = draw(_VALUES)
    return data


@settings(max_examples=300, deadline=None)
@given(_mutated_sagas())
def test_the_compiled_validator_never_passes_what_jsonschema_refuses(data: Any) -> None:
    """A saga the compiled validator passes is not checked by jsonschema: the two must agree
    that it is valid, whatever the file holds (the other way, jsonschema decides)."""
    with quiet_patterns():
        refused = list(validator().iter_errors(data))
    assert bool(schema_errors(data)) == bool(refused)
    fast = _compiled_of(kinds.generation())
    assert fast is not None
    if refused:
        assert not fast.is_valid(data), [e.message for e in refused]


def test_with_another_kind_registered_jsonschema_alone_judges() -> None:
    """A kind's own schema may hold patterns Rust's regular expressions read otherwise than
    Python's (`\\D` matches a non-ASCII digit there): jsonschema alone judges then."""
    kind = kinds.Kind(
        name="ledger",
        schema={
            "type": "object",
            "required": ["kind", "entry"],
            "properties": {"kind": {"const": "ledger"}, "entry": {"pattern": "^\\D+$"}},
        },
        build=lambda raw, phase, line: None,  # type: ignore[arg-type,return-value]
    )
    saga = copy.deepcopy(_BASES[0])
    saga["steps"][0]["action"] = {"kind": "ledger", "entry": "\u0663"}  # ARABIC-INDIC THREE
    kinds.register(kind)
    try:
        assert _compiled_of(kinds.generation()) is None
        assert [e.message for e in schema_errors(saga)] == ["'٣' does not match '^\\\\D+$'"]
    finally:
        kinds.unregister("ledger")
