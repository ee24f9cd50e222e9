"""Fuzzing the loader and the inputs: whatever the file or the values, the answer is exit 0 or
2 with a message, never a traceback or a hang."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import SAGAS
from sagactl.definition.inputs import resolve_inputs
from sagactl.definition.loader import load_text
from sagactl.errors import DefinitionErrors, InputError

SEED = (SAGAS / "add-product.yaml").read_text()
EXAMPLES = [p.read_text() for p in sorted(SAGAS.glob("*.yaml"))]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 1000),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "{{ inputs.sku }}",
            "{{ steps.reserve.outputs.x }}",
            "{{",
            "}}",
            "{% if %}",
            "5s",
            "2xx",
            "GET",
            "POST",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "action",
                    "method",
                    "url",
                    "needs",
                    "steps",
                    "compensate",
                    "retry",
                    "on",
                    "expect",
                    "outputs",
                    "json",
                    "version",
                    "name",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


def check(text: str) -> None:
    try:
        load_text(text, "fuzz.yaml")
    except DefinitionErrors as exc:
        assert exc.errors
        for error in exc.errors:
            assert str(error).startswith("fuzz.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable, max_size=300))
def test_random_text(text: str) -> None:
    check(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_examples(example: str, data: st.DataObject) -> None:
    lines = example.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "cut", "indent", "swap", "garble"]))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            position = data.draw(st.integers(0, len(lines[i])))
            lines[i] = (
                lines[i][:position]
                + data.draw(
                    st.sampled_from(["{{", "}}", ":", "[", "&a", "*a", "!!binary", "- ", "'"])
                )
                + lines[i][position:]
            )
    check("\n".join(lines))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_random_documents(document: object) -> None:
    check(yaml.safe_dump(document))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=15), max_size=5))
def test_random_inputs(assignments: list[str]) -> None:
    saga = load_text(SEED, "sagas/add-product.yaml")
    try:
        resolve_inputs(saga, assignments)
    except InputError as exc:
        assert exc.problems


def test_the_seed_is_valid(tmp_path: Path) -> None:
    load_text(SEED, "seed.yaml")
