"""The JSON Schema: valid draft 2020-12, every property described, no unknown keys anywhere,
shipped in the package and at schemas/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema

from helpers import ROOT
from sagactl.definition.schema import schema, schema_text

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
