"""Templates keep their value's type when they are one whole expression, render to strings
otherwise, and report the names they read."""

from __future__ import annotations

from typing import Any

import pytest

from sagactl.templating import (
    Reference,
    Renderer,
    TemplateProblem,
    expression_references,
    references,
)

CONTEXT = {
    "inputs": {"qty": 2, "price": 9.5, "flag": True, "tags": ["a", "b"], "meta": {"k": 1},
               "none": None, "sku": "ABC-1"},
    "response": {"json": {"items": [1, 2], "id": "r-1"}, "status": 201},
}


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ inputs.qty }}", 2),
    ("{{ inputs.price }}", 9.5),
    ("{{ inputs.flag }}", True),
    ("{{ inputs.tags }}", ["a", "b"]),
    ("{{ inputs.meta }}", {"k": 1}),
    ("{{ inputs.none }}", None),
    ("{{inputs.qty}}", 2),
    ("{{- inputs.qty -}}", 2),
    ("{{ inputs.qty + 1 }}", 3),
    ("{{ -inputs.qty }}", -2),
    ("{{ inputs.sku }}", "ABC-1"),
])
def test_whole_expression_keeps_its_type(source: str, expected: Any) -> None:
    value = Renderer().render(source, CONTEXT)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("source", "expected"), [
    ("qty={{ inputs.qty }}", "qty=2"),
    (" {{ inputs.qty }} ", " 2 "),
    ("{{ inputs.qty }}{{ inputs.qty }}", "22"),
    ("{{ inputs.flag }} ", "True "),
    ("{% if inputs.flag %}yes{% endif %}", "yes"),
    ("/items/{{ inputs.sku | lower }}", "/items/abc-1"),
    ("no template here", "no template here"),
])
def test_other_strings_stay_strings(source: str, expected: str) -> None:
    assert Renderer().render(source, CONTEXT) == expected


def test_a_string_that_looks_like_a_number_stays_a_string() -> None:
    assert Renderer().render("{{ v }}", {"v": "123"}) == "123"


def test_values_are_rendered_deeply() -> None:
    value = {"a": ["{{ inputs.qty }}", {"b": "x{{ inputs.qty }}"}], "c": 5}
    assert Renderer().render(value, CONTEXT) == {"a": [2, {"b": "x2"}], "c": 5}


def test_json_keys_win_over_dict_methods() -> None:
    assert Renderer().render("{{ response.json.items }}", CONTEXT) == [1, 2]


def test_a_missing_key_is_undefined_even_if_a_dict_method_has_its_name() -> None:
    renderer = Renderer()
    for source in ("{{ outputs.copy }}", "x{{ outputs.copy }}", "{{ outputs.pop | string }}"):
        with pytest.raises(TemplateProblem, match="no key"):
            renderer.render(source, {"outputs": {"a": 1}})
    items = "{% for k, v in h.items() %}{{ k }}={{ v }};{% endfor %}"
    assert renderer.render(items, {"h": {"a": 1}}) == "a=1;"
    assert renderer.render("{{ h.get('a') }}", {"h": {"a": 1}}) == 1


@pytest.mark.parametrize("source", [
    "{{ inputs.missing }}", "x{{ inputs.missing }}", "{{ nothing }}", "{{ inputs.none.k }}",
])
def test_undefined_names_are_errors(source: str) -> None:
    with pytest.raises(TemplateProblem):
        Renderer().render(source, CONTEXT)


def test_undefined_messages_name_what_is_missing() -> None:
    from sagactl.templating import Namespace

    renderer = Renderer()
    with pytest.raises(TemplateProblem, match=r"env\.URL is not set"):
        renderer.render("{{ env.URL }}/x", {"env": Namespace("env")})
    with pytest.raises(TemplateProblem, match=r"no key 'ident' \(keys: items, id\)"):
        renderer.render("{{ response.json.ident }}", CONTEXT)


def test_default_filter_covers_an_unset_value() -> None:
    assert Renderer().render("{{ env.X | default('d') }}", {"env": {}}) == "d"


def test_sandbox_refuses_unsafe_attributes() -> None:
    with pytest.raises(TemplateProblem):
        Renderer().render("{{ inputs.__class__.__mro__ }}", CONTEXT)


def test_evaluate_bare_expression() -> None:
    renderer = Renderer()
    assert renderer.evaluate("response.status == 201", CONTEXT) is True
    assert renderer.evaluate("response.json.id", CONTEXT) == "r-1"


def test_references_follow_attribute_and_literal_item_access() -> None:
    found = references(
        "{{ steps.a.outputs.x }}{{ steps['b'].outputs.y }}{{ env.URL | default(vars.base) }}"
    )
    assert found == (
        Reference("steps", ("a", "outputs", "x")),
        Reference("steps", ("b", "outputs", "y")),
        Reference("env", ("URL",)),
        Reference("vars", ("base",)),
    )


def test_references_skip_local_names_and_flag_computed_access() -> None:
    found = references("{% for t in inputs.tags %}{{ t.name }}{{ steps[t].outputs.v }}{% endfor %}")
    assert Reference("inputs", ("tags",)) in found
    assert Reference("steps", (), dynamic=True) in found
    assert all(r.root != "t" for r in found)


def test_expression_references() -> None:
    assert expression_references("response.json.ok == true") == (
        Reference("response", ("json", "ok")),
    )
    with pytest.raises(TemplateProblem, match="bare expression"):
        expression_references("{{ response.status }}")


@pytest.mark.parametrize(("source", "message"), [
    ("{{ x | shout }}", "no filter named 'shout'"),
    ("{{ x is odd_number }}", "no test named 'odd_number'"),
    ("{{ x ", "unexpected end of template"),
])
def test_references_report_bad_templates(source: str, message: str) -> None:
    with pytest.raises(TemplateProblem, match=message):
        references(source)
