"""The model built from a file: durations, defaults merged into requests, kinds, the graph."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagactl.definition.graph import (
    ancestors,
    closure,
    find_cycle,
    nearest,
    reduce,
    topological_order,
)
from sagactl.definition.loader import load_text
from sagactl.model import (
    COMPENSATION_RETRY,
    DEFAULT_RETRY,
    BodyKind,
    Phase,
    RetryPolicy,
    StepKind,
    format_duration,
    parse_duration,
    status_matches,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (3, 3.0),
        (0.1, 0.1),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "5 sec", "-1s", "s", True, -2])
def test_parse_duration_refuses(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "200ms"), (5.0, "5s"), (120.0, "2m"), (3600.0, "1h"), (1.5, "1500ms"), (0, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_status_matches_codes_and_classes() -> None:
    assert status_matches((200, "4xx"), 200)
    assert status_matches((200, "4xx"), 404)
    assert not status_matches((200, "4xx"), 201)


SAGA = """\
version: 1
name: merged
timeout: 5m
defaults:
  base_url: http://127.0.0.1:9000/api
  headers: {Authorization: Bearer t, X-Trace: on}
  query: {lang: en}
  timeout: 3s
  retry: {attempts: 5, backoff: 1s}
  expect: {status: [200, 201]}
  compensation:
    headers: {X-Undo: "yes"}
    retry: {max_backoff: 1m}
    timeout: 30s
steps:
  - id: create
    action:
      method: POST
      url: /items
      headers: {authorization: Bearer other}
      query: {page: 1}
      retry: {attempts: 2}
      form: {a: b}
    compensate: {method: DELETE, url: /items/1, retry: {attempts: 20}}
    confirm: {method: POST, url: /items/1/confirm}
  - id: look
    action: {method: GET, url: http://127.0.0.1:9001/x}
  - id: send
    needs: [create]
    action: {method: POST, url: /mail, body: hello}
"""


def test_defaults_merge_into_requests() -> None:
    saga = load_text(SAGA)
    action = saga.step("create").action
    assert action.base_url == "http://127.0.0.1:9000/api"
    # header names merge case-insensitively: the step's spelling and value win
    assert action.headers == {"X-Trace": "on", "authorization": "Bearer other"}
    assert action.query == {"lang": "en", "page": 1}
    assert action.timeout == 3.0
    assert action.retry == RetryPolicy(
        attempts=2, backoff=1.0, factor=DEFAULT_RETRY.factor, max_backoff=DEFAULT_RETRY.max_backoff
    )
    assert action.expect.status == (200, 201)
    assert (action.body_kind, action.body) == (BodyKind.FORM, {"a": "b"})


def test_compensation_defaults_layer_over_saga_defaults() -> None:
    saga = load_text(SAGA)
    for request in (saga.step("create").compensate, saga.step("create").confirm):
        assert request is not None
        assert request.headers == {"Authorization": "Bearer t", "X-Trace": "on", "X-Undo": "yes"}
        assert request.timeout == 30.0
        assert request.retry.backoff == 1.0
        assert request.retry.max_backoff == 60.0
    assert saga.step("create").compensate.retry.attempts == 20  # type: ignore[union-attr]
    assert saga.step("create").confirm.retry.attempts == 5  # type: ignore[union-attr]
    assert saga.step("create").confirm.phase is Phase.CONFIRM  # type: ignore[union-attr]


def test_builtin_retry_policies_without_defaults() -> None:
    saga = load_text("""\
version: 1
name: plain
steps:
  - id: a
    action: {method: POST, url: http://127.0.0.1/x}
    compensate: {method: DELETE, url: http://127.0.0.1/x}
""")
    assert saga.step("a").action.retry == DEFAULT_RETRY
    assert saga.step("a").compensate.retry == COMPENSATION_RETRY  # type: ignore[union-attr]
    assert saga.step("a").action.expect.status == ("2xx",)
    assert saga.timeout is None


def test_kinds_needs_and_order() -> None:
    saga = load_text(SAGA)
    assert [s.kind for s in saga.steps] == [
        StepKind.COMPENSATABLE,
        StepKind.READ_ONLY,
        StepKind.PIVOT,
    ]
    assert saga.step("look").needs == ("create",)  # implied: every step above
    assert saga.step("send").needs == ("create",)
    assert saga.step("send").explicit_needs
    assert saga.order == ("create", "look", "send")
    assert saga.dependents("create") == {"look", "send"}
    assert saga.timeout == 300.0
    assert saga.step("send").action.body_kind is BodyKind.TEXT


def test_graph_functions() -> None:
    needs = {"a": [], "b": ["a"], "c": ["a", "b"], "d": []}
    order = ["c", "b", "a", "d"]
    # among steps free to go, the earlier in file order goes first
    assert topological_order(needs, order) == ["a", "b", "c", "d"]
    assert topological_order({"x": [], "y": []}, ["y", "x"]) == ["y", "x"]
    assert topological_order(needs, ["a", "b", "c", "d"]) == ["a", "b", "c", "d"]
    above = ancestors(needs, ["a", "b", "c", "d"])
    assert above["c"] == {"a", "b"}
    assert reduce(needs, above) == {"a": [], "b": ["a"], "c": ["b"], "d": []}
    assert find_cycle(needs, order) is None
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}, ["a", "b", "c"]) == ["a", "c", "b", "a"]


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[str]]:
    """A random acyclic graph in a shuffled file order: a node needs only nodes made before it,
    as densely as a saga whose steps have no `needs`."""
    size = draw(st.integers(1, 14))
    made = [f"n{i}" for i in range(size)]
    needs = {
        node: draw(st.lists(st.sampled_from(made[:i]), unique=True)) if i else []
        for i, node in enumerate(made)
    }
    return needs, draw(st.permutations(made))


def _reachable(edges: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    """Every node reached from `start` (included) along `edges`, walked one edge at a time."""
    found: set[str] = set()
    todo = list(start)
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo += edges[node]
    return found


@given(dags())
def test_the_closure_agrees_with_walking_the_graph(
    graph: tuple[dict[str, list[str]], list[str]],
) -> None:
    needs, order = graph
    topo = topological_order(needs, order)
    assert all(topo.index(dep) < topo.index(node) for node in needs for dep in needs[node])

    def reach(node: str) -> set[str]:
        return _reachable(needs, needs[node])

    result = closure(needs, topo)
    assert result.order == topo
    assert result.ancestors == {node: reach(node) for node in needs}
    assert result.descendants == {node: {n for n in needs if node in reach(n)} for node in needs}
    # A need stays unless another need of the same node depends on it.
    assert result.reduced == {
        node: [d for d in deps if not any(d in reach(o) for o in deps)]
        for node, deps in needs.items()
    }
    assert reduce(needs, result.ancestors) == result.reduced


@st.composite
def graphs_with_implied(
    draw: st.DrawFn,
) -> tuple[dict[str, list[str]], list[str], set[str]]:
    """A random graph in file order (cycles possible), where some nodes have no `needs`: they
    need every node above them."""
    size = draw(st.integers(1, 12))
    order = [f"n{i}" for i in range(size)]
    implied = set(draw(st.lists(st.sampled_from(order), unique=True)))
    needs = {
        node: []
        if node in implied
        else draw(st.lists(st.sampled_from([o for o in order if o != node]), unique=True))
        if size > 1
        else []
        for node in order
    }
    return needs, order, implied


@given(graphs_with_implied())
def test_implied_needs_are_every_step_above(
    graph: tuple[dict[str, list[str]], list[str], set[str]],
) -> None:
    """Steps without `needs` given as `implied` (linear) and as lists of every step above
    (quadratic, what they mean) give the same cycle, order, closure and reduction."""
    needs, order, implied = graph
    spelled = {
        node: order[: order.index(node)] if node in implied else deps
        for node, deps in needs.items()
    }
    assert find_cycle(needs, order, implied) == find_cycle(spelled, order)
    if find_cycle(spelled, order) is not None:
        return
    topo = topological_order(needs, order, implied)
    assert topo == topological_order(spelled, order)
    fast, slow = closure(needs, topo, order, implied), closure(spelled, topo)
    assert fast.ancestors == slow.ancestors
    assert fast.descendants == slow.descendants
    assert fast.reduced == slow.reduced
    for node in order:
        assert set(fast.ancestors[node]) == {a for a in order if a in fast.ancestors[node]}
        assert len(fast.ancestors[node]) == len(set(slow.ancestors[node]))


@given(dags(), st.data())
def test_waiting_on_the_nearest_waits_on_all(
    graph: tuple[dict[str, list[str]], list[str]], data: st.DataObject
) -> None:
    """Compensations (and confirms) wait on the nearest steps being undone along the reduced
    graph, passing through those with nothing to undo: followed through one another, those
    cover every step being undone that the full sets named."""
    needs, order = graph
    topo = topological_order(needs, order)
    result = closure(needs, topo)
    within = set(data.draw(st.lists(st.sampled_from(order), unique=True)))
    users: dict[str, list[str]] = {node: [] for node in needs}
    for node, deps in result.reduced.items():
        for dep in deps:
            users[dep].append(node)
    for edges, full in ((users, result.descendants), (result.reduced, result.ancestors)):
        direct = {node: nearest(node, edges, within) for node in needs}
        for node in needs:
            assert direct[node] <= set(full[node]) & within
            assert _reachable(direct, direct[node]) == set(full[node]) & within
