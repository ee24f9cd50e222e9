"""Templates keep their value's type when they are one whole expression, render to strings
otherwise, and report the names they read."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagactl.definition import templating
from sagactl.definition.templating import (
    Reference,
    Renderer,
    TemplateProblem,
    expression_references,
    references,
)

CONTEXT = {
    "inputs": {
        "qty": 2,
        "price": 9.5,
        "flag": True,
        "tags": ["a", "b"],
        "meta": {"k": 1},
        "none": None,
        "sku": "ABC-1",
    },
    "response": {"json": {"items": [1, 2], "id": "r-1"}, "status": 201},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
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
    ],
)
def test_whole_expression_keeps_its_type(source: str, expected: Any) -> None:
    value = Renderer().render(source, CONTEXT)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("qty={{ inputs.qty }}", "qty=2"),
        (" {{ inputs.qty }} ", " 2 "),
        ("{{ inputs.qty }}{{ inputs.qty }}", "22"),
        ("{{ inputs.flag }} ", "True "),
        ("{% if inputs.flag %}yes{% endif %}", "yes"),
        ("/items/{{ inputs.sku | lower }}", "/items/abc-1"),
        ("no template here", "no template here"),
    ],
)
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


@pytest.mark.parametrize(
    "source",
    [
        "{{ inputs.missing }}",
        "x{{ inputs.missing }}",
        "{{ nothing }}",
        "{{ inputs.none.k }}",
    ],
)
def test_undefined_names_are_errors(source: str) -> None:
    with pytest.raises(TemplateProblem):
        Renderer().render(source, CONTEXT)


def test_undefined_messages_name_what_is_missing() -> None:
    from sagactl.definition.templating import Namespace

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
        Reference("env", ("URL",), guarded=True),
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


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ x | shout }}", "no filter named 'shout'"),
        ("{{ x is odd_number }}", "no test named 'odd_number'"),
        ("{{ x ", "unexpected end of template"),
    ],
)
def test_references_report_bad_templates(source: str, message: str) -> None:
    with pytest.raises(TemplateProblem, match=message):
        references(source)


HUGE = [
    "{{ 'x' * 10**13 }}",
    "{{ 10**13 * 'x' }}",
    "{{ [1] * 10**9 }}",
    "{{ 10 ** 100000000 }}",
    "{{ range(10**9) | list }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 'x' | center(10**10) }}",
    "{{ 'x'.center(10**10) }}",
    "{{ 'x'.ljust(width=10**10) }}",
    "{{ 'x'.zfill(10**10) }}",
    "{{ ('\\t' * 1000).expandtabs(10**4) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' | format(10**9, 1) }}",
    "{{ '{:>9999999999}'.format(1) }}",
    "{{ ([inputs.s] * 100000) | join('') }}",
    "{{ ''.join([inputs.s] * 100000) }}",
    "{{ [inputs.s] * 100000 }}",
    "{{ inputs.s.replace('x', 'y' * 100000) }}",
    "{{ inputs.s | replace('x', 'y' * 2000) }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{{ 'x' | indent(10**9) }}",
    "{{ [1, 2] | slice(10**9) | list }}",
    "{{ [1] * 60000 + [1] * 60000 }}",
    "{{ lipsum(10**6) }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ '{:{}}'.format('x', 10**9) }}",
    "{{ '{:0>999999999}'.format(1) }}",
    "{{ '{:.999999999f}'.format(1.0) }}",
    "{{ '%(a)999999999s' % {'a': 1} }}",
    "{{ 'x'.encode() * 10**9 }}",
    "{{ 'a' | indent(width=10**9) }}",
    "{{ 'x' | center(width=10**9) }}",
    "{{ ('a ' * 1000) | wordwrap(1, wrapstring='x' * 1000) }}",
]


@pytest.mark.parametrize("source", HUGE)
def test_a_template_cannot_build_a_huge_value(source: str) -> None:
    """SPEC §2.2: a located error (here TemplateProblem), in no time and no memory, rather
    than gigabytes."""
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(TemplateProblem):
        Renderer().render(source, {"inputs": {"s": "x" * 1000}})
    assert time.monotonic() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ 2 ** 10 }}", 1024),
        ("{{ 'a-%s' % 5 }}", "a-5"),
        ("{{ [1, 2] + [3] }}", [1, 2, 3]),
        ("{{ '{}-{}'.format(1, 2) }}", "1-2"),
        ("{{ ['a', 'b'] | join(',') }}", "a,b"),
        ("{{ 'x' * 10 ~ 'y' }}", "xxxxxxxxxxy"),
        ("{{ 'x' | center(5) }}", "  x  "),
        ("{{ 7 % 3 }}", 1),
        ("{{ range(100000) | list | length }}", 100000),
    ],
)
def test_ordinary_templates_stay_within_the_limits(source: str, expected: Any) -> None:
    assert Renderer().render(source, {}) == expected


_SOURCES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "{{ inputs.sku }}",
                "{{ inputs['qty'] }}",
                "{{inputs.meta.k}}",
                "{{ inputs.tags[0] }}",
                "{{ inputs.meta.items }}",
                "{{ inputs.missing }}",
                "{{ nothing.here }}",
                "{{ response.json.id }}",
                "{{ inputs.qty + 1 }}",
                "{% if inputs.flag %}yes{% endif %}",
            ]
        ),
        st.text(st.sampled_from("ab/ -\n{}%#"), max_size=6),
    ),
    min_size=1,
    max_size=4,
).map("".join)


def _outcome(renderer: Renderer, source: str) -> tuple[str, Any]:
    try:
        return "ok", renderer.render(source, CONTEXT)
    except TemplateProblem as exc:
        return "problem", str(exc)


@given(_SOURCES)
def test_a_template_compiled_from_its_plan_renders_as_parsed(source: str) -> None:
    """A checked saga keeps the plan of each template made of text and plain lookups, and a
    run compiles those from it without parsing: the same value, the same type, the same
    error as the template parsed."""
    templating._COMPILED.pop(source, None)
    parsed = _outcome(Renderer(), source)
    plan = templating.plan_of(source)
    templating._COMPILED.pop(source, None)
    if plan is not None:
        templating.adopt({source: plan})
        assert source in templating._COMPILED
    assert _outcome(Renderer(), source) == parsed
    assert type(_outcome(Renderer(), source)[1]) is type(parsed[1])


def test_only_text_and_plain_lookups_have_a_plan() -> None:
    assert templating.plan_of("/items/{{ steps.a.outputs['id'] }}?x=1") == (
        "/items/",
        ("steps", ((True, "a"), (True, "outputs"), (False, "id"))),
        "?x=1",
    )
    for other in ("{{ a + 1 }}", "{{ a | upper }}", "{% if a %}x{% endif %}", "{{ a[b] }}", "{{"):
        assert templating.plan_of(other) is None
