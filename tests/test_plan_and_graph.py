"""`plan` renders every request without sending; `graph` draws the step graph."""

from __future__ import annotations

import json

from helpers import SAGAS, cli

ENV = {
    "NO_COLOR": "1",
    "COLUMNS": "80",
    "SEARCH_URL": "http://127.0.0.1:9003",
    "SHOP_TOKEN": "s3cr3t-token-value",
}

PLAN = """\
plan of saga add-product (sagas/add-product.yaml), 3 steps
inputs: sku="ABC-1" price=9.5 qty=2

1. reserve (compensatable; needs nothing)
   action      PUT http://127.0.0.1:8081/reservations/<run.id>
               Authorization: ***
               json {"sku": "ABC-1", "qty": 2}
               expect status 200, 201; response.json.reserved == true
               timeout 5s, 3 attempts, backoff 200ms x2 up to 5s, jitter
   outputs     available = {{ response.json.available }}
   compensate  DELETE http://127.0.0.1:8081/reservations/<run.id>
               Authorization: ***
               expect status 200, 204, 404
               timeout 5s, 10 attempts, backoff 500ms x2 up to 30s, jitter

2. price (compensatable; needs reserve)
   action      PUT http://127.0.0.1:8082/prices/ABC-1
               Authorization: ***
               json {"amount": 9.5}
               expect status 2xx
               timeout 5s, 3 attempts, backoff 200ms x2 up to 5s, jitter
   compensate  DELETE http://127.0.0.1:8082/prices/ABC-1
               Authorization: ***
               expect status 200, 204, 404
               timeout 5s, 10 attempts, backoff 500ms x2 up to 30s, jitter

3. index (compensatable; needs reserve)
   action      PUT http://127.0.0.1:9003/index/ABC-1
               Authorization: ***
               json {"sku": "ABC-1", "in_stock": "<steps.reserve.outputs.available>"}
               expect status 200, 201
               timeout 5s, 3 attempts, backoff 200ms x2 up to 5s, jitter
   compensate  DELETE http://127.0.0.1:9003/index/ABC-1
               Authorization: ***
               expect status 200, 204, 404
               timeout 5s, 10 attempts, backoff 500ms x2 up to 30s, jitter
"""


def test_plan_of_add_product_exactly(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(SAGAS.parent)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    result = cli(
        "plan",
        "sagas/add-product.yaml",
        "-i",
        "sku=ABC-1",
        "-i",
        "price=9.5",
        "-i",
        "qty=2",
        env=ENV,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == PLAN
    assert "s3cr3t" not in result.stdout + result.stderr


def test_plan_shows_confirms_and_outputs_of_earlier_steps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TRAVEL_URL", raising=False)
    result = cli("plan", str(SAGAS / "book-trip.yaml"), "-i", "traveller=Ada", "-i", "flight=BA123")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "   confirm     POST http://127.0.0.1:8090/hotel/holds/<run.id>/confirm" in lines
    assert '               json {"seat": "<steps.seat.outputs.seat>"}' in lines
    assert "               X-Request-Source: sagactl" in lines
    notify = lines.index("3. notify (pivot; needs seat, room)")
    assert lines[notify + 1] == "   action      POST http://127.0.0.1:8090/notifications"


def test_plan_secret_in_a_var_is_masked(write) -> None:  # type: ignore[no-untyped-def]
    path = write("""\
version: 1
name: s
secrets: [KEY]
vars:
  url: "http://127.0.0.1:1/?key={{ secrets.KEY }}"
steps:
  - id: a
    action: {method: GET, url: "{{ vars.url }}", json: {k: "{{ secrets.KEY }}"}}
""")
    result = cli("plan", str(path), env={"KEY": "topsecret"})
    assert result.exit_code == 0
    assert "topsecret" not in result.stdout
    assert "GET http://127.0.0.1:1/?key=***" in result.stdout
    assert 'json {"k": "***"}' in result.stdout


def test_plan_query_and_relative_url_errors(write) -> None:  # type: ignore[no-untyped-def]
    path = write("""\
version: 1
name: q
env: [BASE]
steps:
  - id: a
    action: {method: GET, url: "http://127.0.0.1:1/x", query: {q: a b, n: [1, 2], f: true}}
  - id: b
    action: {method: GET, url: /relative}
  - id: c
    action: {method: GET, url: "{{ env.BASE }}/x"}
""")
    result = cli("plan", str(path), env={"BASE": ""})
    assert result.exit_code == 2
    assert (
        result.stderr == f"{path}:8: steps[1].action.url: '/relative' is relative and no "
        "base_url is set\n"
    )


def test_plan_reports_an_unset_env_value(write) -> None:  # type: ignore[no-untyped-def]
    path = write("""\
version: 1
name: q
env: [BASE]
steps:
  - id: a
    action: {method: GET, url: "{{ env.BASE }}/x"}
""")
    assert cli("plan", str(path), env={"BASE": "http://127.0.0.1:1"}).exit_code == 0
    result = cli("plan", str(path), env={"BASE": None})
    assert result.exit_code == 2
    assert result.stderr == (
        f"{path}:6: steps[0].action.url: {{{{ env.BASE }}}}/x: env.BASE is not set\n"
    )


MERMAID = """\
flowchart TD
  seat["seat (compensatable)"]
  room["room (compensatable)"]
  notify["notify (pivot)"]
  subgraph confirms["confirms, once every action succeeded"]
    confirm_seat(["confirm seat"])
    confirm_room(["confirm room"])
  end
  subgraph compensation["compensation, if the saga fails"]
    undo_seat["undo seat"]
    undo_room["undo room"]
  end
  seat --> notify
  room --> notify
  notify --> confirm_seat
  notify --> confirm_room
"""


def test_graph_mermaid() -> None:
    result = cli("graph", str(SAGAS / "book-trip.yaml"))
    assert result.exit_code == 0
    assert result.stdout == MERMAID


def test_graph_dot_orders_compensations_backwards() -> None:
    result = cli("graph", str(SAGAS / "add-product.yaml"), "--format", "dot")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == 'digraph "add-product" {'
    assert '  "reserve" -> "price";' in lines
    assert '  "reserve" -> "index";' in lines
    assert '  "undo_price" -> "undo_reserve" [style=dashed];' in lines
    assert '  "undo_index" -> "undo_reserve" [style=dashed];' in lines
    assert lines[-1] == "}"


def test_graph_draws_only_the_edges_that_matter() -> None:
    result = cli("graph", str(SAGAS / "warm-regions.yaml"))
    edges = [line.strip() for line in result.stdout.splitlines() if "-->" in line]
    regions = ["eu_west", "eu_north", "us_east", "us_west", "ap_south"]
    assert edges == [f"{r} --> record" for r in regions]
    undo = [line.strip() for line in result.stdout.splitlines() if "-.->" in line]
    assert undo == [f"undo_record -.-> undo_{r}" for r in regions]


def test_graph_of_a_bad_file_and_bad_format(write) -> None:  # type: ignore[no-untyped-def]
    bad = cli("graph", str(write("version: 1\n")))
    assert bad.exit_code == 2
    assert "missing required key 'name'" in bad.stderr
    wrong = cli("graph", str(SAGAS / "book-trip.yaml"), "--format", "png")
    assert wrong.exit_code == 2


def test_schema_command_prints_the_shipped_schema() -> None:
    result = cli("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(
        (SAGAS.parent / "schemas" / "saga.schema.json").read_text()
    )


def test_a_body_that_is_not_json_is_a_clear_error(write) -> None:  # type: ignore[no-untyped-def]
    path = write("""\
version: 1
name: q
inputs:
  m: {type: object, default: {a: 1}}
steps:
  - id: a
    action: {method: POST, url: "http://127.0.0.1:1/x", json: {v: "{{ inputs.m.items }}"}}
""")
    result = cli("plan", str(path))
    assert result.exit_code == 2
    assert (
        f"{path}:7: steps[0].action.json: cannot be sent as JSON: Object of type "
        "builtin_function_or_method is not JSON serializable" in result.stderr
    )


FORWARD = """\
version: 1
name: fw
steps:
  - id: a
    needs: [b]
    action: {method: PUT, url: "http://127.0.0.1:1/a"}
  - id: b
    needs: []
    action: {method: PUT, url: "http://127.0.0.1:1/b"}
  - id: c
    action: {method: PUT, url: "http://127.0.0.1:1/c"}
  - id: d
    needs: [c, b, a]
    action: {method: PUT, url: "http://127.0.0.1:1/d"}
  - id: e
    action: {method: PUT, url: "http://127.0.0.1:1/e"}
"""


def test_validate_and_plan_say_what_each_step_needs_as_the_file_says_it(write) -> None:  # type: ignore[no-untyped-def]
    """A step without `needs` needs every step above it, whatever the model keeps of them
    (only those that imply the rest); a first step's own `needs` is still said."""
    saga = write(FORWARD)
    validated = cli("validate", str(saga), env=ENV)
    assert validated.exit_code == 0, validated
    assert [line.split(None, 2)[2].rstrip() for line in validated.stdout.splitlines()[1:6]] == [
        "needs nothing",
        "needs b",
        "needs a, b",
        "needs the 3 steps above it",
        "needs the 4 steps above it",
    ]
    planned = cli("plan", str(saga), env=ENV)
    assert planned.exit_code == 0, planned
    assert [line for line in planned.stdout.splitlines() if line[:1].isdigit()] == [
        "1. b (pivot; needs nothing)",
        "2. a (pivot; needs b)",
        "3. c (pivot; needs a, b)",
        "4. d (pivot; needs c, b, a)",
        "5. e (pivot; needs a, b, c, d)",
    ]
