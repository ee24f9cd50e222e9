"""Every kind of mistake in a saga file is reported with the file, the line, the JSON path and
what was expected; exit 2, no traceback, every problem at once.

In each case below, the line marked `#!` is where the problem must be reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli, cli_process

HEAD = """\
version: 1
name: shop
env: [SHOP_URL]
secrets: [TOKEN]
inputs:
  sku: {type: string}
"""

CASES = {
    "yaml-syntax": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: GET, url: /x
  - id: b  #!
""",
        "YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping that "
        "starts at line 9)",
    ),
    "secret-not-a-name": (
        """\
version: 1
name: shop
env: [SHOP_URL]
secrets:
  - []  #!
steps:
  - id: a
    action: {method: GET, url: /x}
""",
        "secrets[0]: expected a string, got a list",
    ),
    "unknown-kind": (
        HEAD
        + """\
steps:
  - id: a
    action: {kind: sql, method: GET, url: /x}  #!
""",
        "steps[0].action.kind: 'sql' is not one of http",
    ),
    "unknown-key": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: /x}
    compensation: {method: DELETE, url: /x}  #!
""",
        "steps[0].compensation: unknown key 'compensation' (did you mean 'compensate'?)",
    ),
    "wrong-enum": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: FETCH  #!
      url: /x
""",
        "steps[0].action.method: 'FETCH' is not one of GET, POST, PUT, PATCH, DELETE, HEAD, "
        "OPTIONS",
    ),
    "bad-duration": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: GET
      url: /x
      timeout: 5 seconds  #!
""",
        "steps[0].action.timeout: expected a duration such as 250ms, 5s, 2m, 1h, or a number of "
        "seconds, got the string '5 seconds'",
    ),
    "bad-status-class": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: GET
      url: /x
      expect: {status: [200, 6xx]}  #!
""",
        "steps[0].action.expect.status[1]: expected a status code (100 to 599) or a status class",
    ),
    "duplicate-step-id": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: GET, url: /x}
  - id: a  #!
    action: {method: GET, url: /y}
""",
        "steps[1].id: duplicate step id 'a' (first used by steps[0])",
    ),
    "unknown-needs": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: GET, url: /x}
  - id: b
    needs: [a, c]  #!
    action: {method: GET, url: /y}
""",
        "steps[1].needs[1]: unknown step 'c'",
    ),
    "cycle": (
        HEAD
        + """\
steps:
  - id: a
    needs: [b]  #!
    action: {method: GET, url: /x}
  - id: b
    action: {method: GET, url: /y}
""",
        "steps[0].needs: steps depend on each other in a cycle: a -> b -> a (b without needs "
        "depends on every step above)",
    ),
    "undefined-name": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: GET, url: "/{{ imputs.sku }}"}  #!
""",
        "steps[0].action.url: undefined name 'imputs' (did you mean 'inputs'?)",
    ),
    "undeclared-env": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: GET, url: "{{ env.SHOP_UR }}/x"}  #!
""",
        "steps[0].action.url: env.SHOP_UR is not declared (did you mean 'SHOP_URL'?)",
    ),
    "undeclared-secret": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: GET
      url: /x
      headers: {Authorization: "Bearer {{ secrets.API_KEY }}"}  #!
""",
        "steps[0].action.headers.Authorization: secrets.API_KEY is not declared (add API_KEY to "
        "the saga's secrets list)",
    ),
    "unknown-output": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: /x}
    outputs: {ident: "{{ response.json.id }}"}
  - id: b
    action: {method: POST, url: "/y/{{ steps.a.outputs.id }}"}  #!
""",
        "steps[1].action.url: step 'a' has no output 'id' (its outputs: ident)",
    ),
    "unknown-step-reference": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: "/y/{{ steps.zz.outputs.id }}"}  #!
""",
        "steps[0].action.url: unknown step 'zz'",
    ),
    "not-upstream": (
        HEAD
        + """\
steps:
  - id: a
    needs: []
    action: {method: POST, url: /x}
    outputs: {id: "{{ response.json.id }}"}
  - id: b
    needs: []
    action:
      method: POST
      url: /y
      json: {a: "{{ steps.a.outputs.id }}"}  #!
""",
        "steps[1].action.json.a: step 'a' is not guaranteed to have finished before this action "
        "of 'b': add it to the needs of 'b'",
    ),
    "own-outputs-in-action": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: "/x/{{ steps.a.outputs.id }}"}  #!
    outputs: {id: "{{ response.json.id }}"}
""",
        "steps[0].action.url: step 'a' cannot read its own outputs in its action",
    ),
    "response-outside-outputs": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: "/x/{{ response.status }}"}  #!
""",
        "steps[0].action.url: 'response' is only available in outputs, expect.that and poll",
    ),
    "response-in-vars": (
        HEAD
        + """\
vars:
  x: "{{ response.json }}"  #!
steps:
  - id: a
    action: {method: POST, url: /x}
""",
        "vars.x: 'response' is only available in outputs, expect.that and poll",
    ),
    "braces-in-expect-that": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: POST
      url: /x
      expect:
        that: ["{{ response.status == 200 }}"]  #!
""",
        "steps[0].action.expect.that[0]: template error: write a bare expression here, without",
    ),
    "template-syntax": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: "/x/{{ inputs.sku "}  #!
""",
        "steps[0].action.url: template error:",
    ),
    "unknown-filter": (
        HEAD
        + """\
steps:
  - id: a
    action: {method: POST, url: "/x/{{ inputs.sku | shout }}"}  #!
""",
        "steps[0].action.url: template error: no filter named 'shout'",
    ),
    "two-bodies": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: POST
      url: /x
      json: {a: 1}
      body: text  #!
""",
        "steps[0].action.body: a request has one body at most, got json and body",
    ),
    "duplicate-yaml-key": (
        HEAD
        + """\
steps:
  - id: a
    action:
      method: POST
      method: PUT  #!
      url: /x
""",
        "steps[0].action.method: duplicate key 'method'",
    ),
    "missing-required": (
        HEAD
        + """\
steps:
  - id: a
    action:  #!
      url: /x
""",
        "steps[0].action: missing required key 'method'",
    ),
    "wrong-type": (
        HEAD
        + """\
steps:
  - id: a
    needs: a  #!
    action: {method: GET, url: /x}
""",
        "steps[0].needs: expected a list, got the string 'a'",
    ),
    "bad-step-id": (
        HEAD
        + """\
steps:
  - id: Reserve-Stock  #!
    action: {method: GET, url: /x}
""",
        "steps[0].id: 'Reserve-Stock' does not match ^[a-z][a-z0-9_]*$",
    ),
    "steps-in-defaults": (
        HEAD
        + """\
defaults:
  headers: {X-Id: "{{ steps.a.outputs.id }}"}  #!
steps:
  - id: a
    action: {method: GET, url: /x}
    outputs: {id: "{{ response.json.id }}"}
""",
        'defaults.headers["X-Id"]: step outputs cannot be read in defaults',
    ),
    "var-used-before-defined": (
        HEAD
        + """\
vars:
  a: "{{ vars.b }}"  #!
  b: "1"
steps:
  - id: a
    action: {method: GET, url: /x}
""",
        "vars.a: vars.b is computed after this one: vars are computed in order",
    ),
    "bad-input-schema": (
        HEAD.replace("sku: {type: string}", "sku: {type: strung}  #!")
        + """\
steps:
  - id: a
    action: {method: GET, url: /x}
""",
        "inputs.sku.type: not a valid JSON Schema",
    ),
    "wrong-version": (
        HEAD.replace("version: 1", "version: 2  #!")
        + """\
steps:
  - id: a
    action: {method: GET, url: /x}
""",
        "version: expected 1, got the number 2",
    ),
}


def _marked_line(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if "#!" in line)


@pytest.mark.parametrize("case", list(CASES))
def test_mistake_is_reported_at_its_line(case: str, tmp_path: Path) -> None:
    text, message = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{path}:{_marked_line(text)}:"), lines[0]
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_position_points_at_the_value() -> None:
    text, _ = CASES["wrong-enum"]
    line = text.splitlines()[_marked_line(text) - 1]
    column = line.index("FETCH") + 1
    # `plan` and `graph` load files the same way, so any command shows it.
    path = Path("/tmp") / "sagactl-enum-position.yaml"
    path.write_text(text)
    try:
        result = cli("graph", str(path))
    finally:
        path.unlink()
    assert result.stderr.startswith(f"{path}:{_marked_line(text)}:{column}: ")


def test_every_problem_is_reported_at_once(write) -> None:  # type: ignore[no-untyped-def]
    path = write(
        HEAD
        + """\
steps:
  - id: a
    action: {method: FETCH, url: /x, timeout: soon}
    compensation: {method: DELETE, url: /x}
  - id: b
    needs: [zz]
    action: {method: POST, url: "/{{ env.NOPE }}"}
"""
    )
    result = cli("validate", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "steps[0].action.method",
        "steps[0].action.timeout",
        "steps[0].compensation",
        "steps[1].needs[0]",
        "steps[1].action.url",
    ]
    # sorted by position
    positions = [tuple(map(int, line.split(":")[1:3])) for line in lines]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a saga (a mapping), got an empty file"),
        ("- a\n- b\n", "expected a saga (a mapping), got a list"),
        ("a: [1\n", "YAML syntax error"),
        ("a: &x\n  b: *x\n", "an alias refers to a node that contains it"),
        ("a: !!binary aGVsbG8=\n", "unsupported YAML value"),
        ("a: !!python/object:os.system x\n", "YAML"),
        ("? [a, b]\n: c\n", "a mapping key must be a plain string"),
    ],
)
def test_malformed_documents(write, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write(text)
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:")
    assert message in result.stderr


def test_alias_bomb_is_refused(write) -> None:  # type: ignore[no-untyped-def]
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    path = write("\n".join(lines) + "\n")
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert "too large once aliases are expanded" in result.stderr


def test_file_problems(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    results = {
        "missing": cli("validate", str(tmp_path / "missing.yaml")),
        "directory": cli("validate", str(tmp_path)),
        "binary": cli("validate", str(binary)),
    }
    assert results["missing"].stderr == f"{tmp_path / 'missing.yaml'}: no such file\n"
    assert results["directory"].stderr == f"{tmp_path}: is a directory, not a saga file\n"
    assert results["binary"].stderr == f"{binary}: not UTF-8 text (byte 6)\n"
    assert all(r.exit_code == 2 for r in results.values())


def test_yaml_12_scalars(write) -> None:  # type: ignore[no-untyped-def]
    """`on:` is a key and `NO` a country code, not booleans; dates stay strings."""
    from sagactl.definition.loader import load

    path = write(
        HEAD
        + """\
steps:
  - id: a
    action:
      method: POST
      url: /x
      json: {country: NO, answer: yes, day: 2024-01-31, flag: true}
      retry: {on: [503]}
"""
    )
    saga = load(path)
    action = saga.step("a").action
    assert action.body == {"country": "NO", "answer": "yes", "day": "2024-01-31", "flag": True}
    assert action.retry.on == (503,)


def test_real_process_reports_without_traceback(write) -> None:  # type: ignore[no-untyped-def]
    text, message = CASES["cycle"]
    path = write(text)
    result = cli_process("validate", str(path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
