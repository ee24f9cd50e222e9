"""Read a saga file into the model: YAML with positions, the JSON Schema, static checks.

Every problem in a file is collected and raised at once as `DefinitionErrors`, each located as
`FILE:LINE:COL: JSON-path: message`. YAML is read with YAML 1.2 scalars: only `true`/`false` are
booleans (`on`, `no`, `yes` stay strings) and dates stay strings, so what a file says is what
is sent.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sagactl.definition import graph
from sagactl.definition import kinds as kinds_
from sagactl.errors import DefinitionError, DefinitionErrors, Location
from sagactl.model import (
    COMPENSATION_RETRY,
    DEFAULT_MAX_RESPONSE,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    BodyKind,
    Call,
    Expect,
    Phase,
    Request,
    RetryPolicy,
    Saga,
    Step,
    parse_duration,
    parse_size,
)

__all__ = [
    "RESPONSE_FIELDS",
    "ROOTS",
    "RUN_FIELDS",
    "STEP_FIELDS",
    "JsonPath",
    "format_path",
    "load",
    "load_text",
    "parse_data",
    "schema",
    "schema_text",
]

JsonPath = tuple[str | int, ...]

RESPONSE_FIELDS = ("status", "headers", "json", "text", "elapsed_ms")
RUN_FIELDS = ("id", "name")
STEP_FIELDS = ("id", "idempotency_key")
ROOTS = ("inputs", "env", "secrets", "vars", "run", "step", "steps", "response")
_MAX_NODES = 200_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
            return {**target, **{k: _inline_refs(v, defs) for k, v in node.items()
                                 if k != "$ref"}}
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
        "if": {"required": ["kind"], "not": {"properties": {"kind": {"enum": known}}}},
        "then": {"properties": {"kind": kind_property}},
        "else": http,
    }
    for name, kind in kinds.items():
        request = {"if": {"required": ["kind"], "properties": {"kind": {"const": name}}},
                   "then": dict(kind.schema), "else": request}
    defs["request"] = request
    return {**base, "$defs": defs}


def _validator() -> Any:
    return _validator_of(tuple(kinds_.registered()))


@cache
def _validator_of(names: tuple[str, ...]) -> Any:
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


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- YAML with positions ---------------------------------------------------------------------

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe loading with YAML 1.2 booleans and no timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class _Positions:
    values: dict[JsonPath, tuple[int, int]]
    keys: dict[JsonPath, tuple[int, int]]

    def value(self, path: JsonPath) -> tuple[int, int]:
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def key(self, path: JsonPath) -> tuple[int, int]:
        return self.keys.get(path) or self.value(path)


class _YamlProblem(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _read_yaml(text: str) -> tuple[Any, _Positions, list[tuple[JsonPath, str, tuple[int, int]]]]:
    """The document as plain data, where each node stands, and duplicate-key problems."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            context = exc.context
            if exc.context_mark and mark and exc.context_mark.line != mark.line:
                context += f" that starts at line {exc.context_mark.line + 1}"
            problem = f"{problem} ({context})"
        raise _YamlProblem(mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                           f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise _YamlProblem(1, 1, f"YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    positions = _Positions({}, {})
    problems: list[tuple[JsonPath, str, tuple[int, int]]] = []
    active: set[int] = set()
    count = 0

    def convert(node: yaml.Node, path: JsonPath) -> Any:
        nonlocal count
        count += 1
        if count > _MAX_NODES:
            raise _YamlProblem(*_mark(node), "the document is too large once aliases are expanded")
        if id(node) in active:
            raise _YamlProblem(*_mark(node), "an alias refers to a node that contains it")
        positions.values.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            active.add(id(node))
            try:
                loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                raise _YamlProblem(*_mark(node), f"YAML error: {exc.problem}") from None
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _YamlProblem(*_mark(key_node), "a mapping key must be a plain string")
                # Keys are their text: `on:` is the key "on", never the boolean true.
                key = str(key_node.value)
                if key in result:
                    problems.append(((*path, key), f"duplicate key '{key}'", _mark(key_node)))
                    continue
                positions.keys[(*path, key)] = _mark(key_node)
                result[key] = convert(value_node, (*path, key))
            active.discard(id(node))
            return result
        if isinstance(node, yaml.SequenceNode):
            active.add(id(node))
            items = [convert(item, (*path, i)) for i, item in enumerate(node.value)]
            active.discard(id(node))
            return items
        try:
            value = loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise _YamlProblem(*_mark(node), f"YAML error: {exc.problem}") from None
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _YamlProblem(*_mark(node), f"unsupported YAML value of type {node.tag}")
        return value

    return convert(root, ()) if root is not None else None, positions, problems


def parse_data(text: str) -> Any:
    """Plain data from YAML or JSON text, with the same scalar rules as saga files.

    Raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


# --- schema errors in the user's words --------------------------------------------------------

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "null"}


def _describe(value: Any) -> str:
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


def _expected_type(spec: Any) -> str:
    names = spec if isinstance(spec, list) else [spec]
    return " or ".join(_TYPE_NAMES.get(str(n), str(n)) for n in names)


def _explain(error: Any) -> Iterator[tuple[JsonPath, str, bool]]:
    """(path, message, at the key rather than the value) for one jsonschema error."""
    path: JsonPath = tuple(error.absolute_path)
    kind, instance, spec = error.validator, error.instance, error.validator_value
    sub = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        for key in instance:
            if key not in known:
                hint = _suggest(key, known) or f" (expected one of: {', '.join(known)})"
                yield (*path, key), f"unknown key '{key}'{hint}", True
    elif kind == "required":
        for key in spec:
            if key not in instance:
                yield path, f"missing required key '{key}'", True
    elif kind == "enum":
        yield path, f"{instance!r} is not one of {', '.join(map(str, spec))}", False
    elif kind == "const":
        yield path, f"expected {spec!r}, got {_describe(instance)}", False
    elif kind == "type":
        yield path, f"expected {_expected_type(spec)}, got {_describe(instance)}", False
    elif kind in ("anyOf", "oneOf"):
        deeper = [e for e in error.context if e.relative_path]
        if deeper:
            yield from _explain(max(deeper, key=lambda e: len(e.relative_path)))
        else:
            wanted = sub.get("title") or sub.get("description", "valid here")
            yield path, f"expected {wanted}, got {_describe(instance)}", False
    elif kind == "propertyNames":
        yield (*path, instance), f"'{instance}' is not a valid name: use letters, digits and " \
            "underscores, not starting with a digit", True
    elif kind == "pattern" and "propertyNames" in error.schema_path:
        yield (*path, instance), f"{instance!r} is not a valid name: {sub.get('description')}", \
            True
    elif kind == "pattern":
        hint = sub.get("description", "")
        yield path, f"{instance!r} does not match {spec}" + (f": {hint}" if hint else ""), False
    elif kind == "not" and isinstance(instance, dict):  # json, form and body exclude each other
        bodies = [k for k in ("json", "form", "body") if k in instance]
        yield (*path, bodies[-1]), f"a request has one body at most, got {' and '.join(bodies)}", \
            True
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


# --- static checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What a template may read where it stands."""

    where: str
    step: str | None = None
    vars: frozenset[str] = frozenset()
    upstream: frozenset[str] | None = None
    """Steps whose outputs may be read; None when unknown (a cycle), so nothing is checked."""
    response: bool = False


class _Checker:
    def __init__(self, file: str, data: Any, positions: _Positions) -> None:
        self.file = file
        self.data = data
        self.positions = positions
        self.errors: list[DefinitionError] = []
        steps = data.get("steps")
        self._steps = [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
        self.outputs: dict[str, list[str]] = {
            s["id"]: list(s["outputs"]) if isinstance(s.get("outputs"), dict) else []
            for s in self._steps if isinstance(s.get("id"), str)
        }
        """Each step's output names, by step id."""

    def error(self, path: JsonPath, message: str, *, at_key: bool = False,
              at: tuple[int, int] | None = None) -> None:
        line, column = at or (self.positions.key(path) if at_key else self.positions.value(path))
        self.errors.append(
            DefinitionError(Location(self.file, line, column, format_path(path)), message)
        )

    # names declared by the file, read defensively: the schema may have failed elsewhere
    def _names(self, key: str) -> list[str]:
        value = self.data.get(key)
        if isinstance(value, dict):
            return list(value)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        return []

    def steps(self) -> list[dict[str, Any]]:
        return self._steps

    def check_text(self, text: str, path: JsonPath, scope: _Scope, *, bare: bool = False) -> None:
        from sagactl.definition.templating import TemplateProblem, expression_references, references

        if not bare and "{{" not in text and "{%" not in text:
            return
        try:
            found = expression_references(text) if bare else references(text)
        except TemplateProblem as exc:
            where = f" (line {exc.lineno} of the template)" if exc.lineno and exc.lineno > 1 else ""
            self.error(path, f"template error: {exc}{where}")
            return
        for ref in found:
            message = self.reference_problem(ref, scope)
            if message:
                self.error(path, message)

    def check_value(self, value: Any, path: JsonPath, scope: _Scope) -> None:
        if isinstance(value, str):
            self.check_text(value, path, scope)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.check_value(item, (*path, key), scope)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check_value(item, (*path, i), scope)

    def reference_problem(self, ref: Any, scope: _Scope) -> str | None:
        root, path = ref.root, ref.path
        first = path[0] if path else None
        if root not in ROOTS:
            return f"undefined name '{root}'{_suggest(root, ROOTS)}"
        if ref.dynamic and root in ("env", "secrets", "steps"):
            return f"'{ref}[…]': name the {root[:-1] if root != 'steps' else 'step'} literally, " \
                "so that it can be checked"
        if root == "response":
            if not scope.response:
                return "'response' is only available in outputs and expect.that"
            if first is not None and first not in RESPONSE_FIELDS:
                return f"response has no field '{first}' (expected one of: " \
                    f"{', '.join(RESPONSE_FIELDS)})"
        elif root == "inputs":
            declared = self._names("inputs")
            if first is not None and first not in declared:
                return f"undeclared input '{first}'{_suggest(first, declared)}"
        elif root in ("env", "secrets"):
            declared = self._names(root)
            if first is None:
                return f"read one value, as {root}.NAME: the whole {root} cannot be read"
            if first not in declared:
                hint = _suggest(first, declared) or f" (add {first} to the saga's {root} list)"
                return f"{root}.{first} is not declared{hint}"
        elif root == "vars":
            if first is not None and first not in scope.vars:
                if first in self._names("vars"):
                    return f"vars.{first} is computed after this one: vars are computed in order"
                return f"undefined var '{first}'{_suggest(first, self._names('vars'))}"
        elif root == "run":
            if first is not None and first not in RUN_FIELDS:
                return f"run has no field '{first}' (expected one of: {', '.join(RUN_FIELDS)})"
        elif root == "step":
            if scope.where == "vars":
                return "'step' is only available in requests and outputs, not in vars"
            if first is not None and first not in STEP_FIELDS:
                return f"step has no field '{first}' (expected one of: {', '.join(STEP_FIELDS)})"
        elif root == "steps":
            return self.steps_problem(ref, scope)
        return None

    def steps_problem(self, ref: Any, scope: _Scope) -> str | None:
        path = ref.path
        if scope.where in ("vars", "defaults"):
            return f"step outputs cannot be read in {scope.where}: no step has run when " \
                f"{'vars are computed' if scope.where == 'vars' else 'defaults apply'}"
        if ref.dynamic:
            return None
        if len(path) < 3 or path[1] != "outputs":
            return f"'{ref}': expected steps.<step>.outputs.<name>"
        outputs = self.outputs
        target, name = path[0], path[2]
        if target not in outputs:
            return f"unknown step '{target}'{_suggest(target, outputs)}"
        if name not in outputs[target]:
            have = ", ".join(outputs[target]) or "none"
            return f"step '{target}' has no output '{name}' (its outputs: {have})"
        if scope.upstream is not None and target not in scope.upstream:
            if target == scope.step:
                return f"step '{target}' cannot read its own outputs in its {scope.where}"
            return f"step '{target}' is not guaranteed to have finished before this " \
                f"{scope.where} of '{scope.step}': add it to the needs of '{scope.step}'"
        return None


def _non_finite(value: Any, path: JsonPath) -> Iterator[JsonPath]:
    """Where NaN and infinities stand in a literal value: JSON has no way to send them."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _non_finite(item, (*path, i))


def _check_requests(checker: _Checker, request: Any, path: JsonPath, scope: _Scope) -> None:
    if not isinstance(request, dict):
        return
    kind = kinds_.registered().get(kinds_.kind_of(request))
    if kind is not None:
        for key in kind.templates:
            if key in request:
                checker.check_value(request[key], (*path, key), scope)
        return
    for where in _non_finite(request.get("json"), (*path, "json")):
        checker.error(where, "NaN and infinity are not JSON (RFC 8259): send a number, null or "
                             "a string")
    for key in ("url", "base_url", "body"):
        if isinstance(request.get(key), str):
            checker.check_text(request[key], (*path, key), scope)
    for key in ("query", "headers", "auth", "json", "form"):
        if key in request:
            checker.check_value(request[key], (*path, key), scope)
    expect = request.get("expect")
    if isinstance(expect, dict) and isinstance(expect.get("that"), list):
        that_scope = _Scope(scope.where, scope.step, scope.vars, scope.upstream, response=True)
        for i, text in enumerate(expect["that"]):
            if isinstance(text, str) and text:
                checker.check_text(text, (*path, "expect", "that", i), that_scope, bare=True)


def _dependencies(checker: _Checker) -> tuple[dict[str, list[str]], list[str]]:
    """Each step's direct needs (explicit or implied), and the step ids in file order."""
    needs: dict[str, list[str]] = {}
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, step in enumerate(checker.steps()):
        sid = step.get("id")
        if not isinstance(sid, str):
            continue
        if sid in seen:
            checker.error(("steps", i, "id"), f"duplicate step id '{sid}' (first used by "
                          f"steps[{seen[sid]}])")
            continue
        seen[sid] = i
        explicit = step.get("needs")
        if isinstance(explicit, list):
            deps = []
            for j, dep in enumerate(explicit):
                if not isinstance(dep, str):
                    continue
                if dep == sid:
                    checker.error(("steps", i, "needs", j), f"step '{sid}' cannot need itself")
                elif dep not in checker.outputs:
                    checker.error(("steps", i, "needs", j),
                                  f"unknown step '{dep}'{_suggest(dep, checker.outputs)}")
                else:
                    deps.append(dep)
            needs[sid] = deps
        else:
            needs[sid] = list(ids)
        ids.append(sid)
    return needs, ids


def _check_secrets(checker: _Checker) -> None:
    """A name declared both as env and as secret; a safe step with a compensation; a secret
    output written wrong."""
    env = set(checker._names("env"))
    secrets = checker.data.get("secrets")
    for i, name in enumerate(secrets if isinstance(secrets, list) else []):
        if name in env:
            checker.error(("secrets", i), f"{name} is declared both in env and in secrets: "
                                          f"read it as secrets.{name} only, which is never "
                                          "journaled or shown (env values are journaled)")
    for i, step in enumerate(checker.steps()):
        if step.get("safe") is True and "compensate" in step:
            checker.error(("steps", i, "safe"), "a safe step has no effect to undo: remove "
                                                "its compensate, or safe")
        outputs = step.get("outputs")
        for name, value in (outputs.items() if isinstance(outputs, dict) else ()):
            if isinstance(value, dict) and "secret" in value and "value" in value and \
                    not _is_secret_output(value):
                checker.error(("steps", i, "outputs", name),
                              "a secret output is {value: TEMPLATE, secret: true}, and nothing "
                              "else")


def _check(checker: _Checker) -> tuple[dict[str, list[str]], graph.Closure | None]:
    data = checker.data
    _check_secrets(checker)
    needs, ids = _dependencies(checker)
    cycle = graph.find_cycle(needs, ids)
    above: dict[str, frozenset[str]] | None = None
    closure: graph.Closure | None = None
    if cycle:
        first = cycle[0]
        index = next(i for i, s in enumerate(checker.steps()) if s.get("id") == first)
        where: JsonPath = ("steps", index, "needs") if "needs" in checker.steps()[index] \
            else ("steps", index, "id")
        implied = [str(s["id"]) for s in checker.steps()
                   if s.get("id") in cycle and "needs" not in s]
        why = f" ({', '.join(implied)} without needs depend{'s' if len(implied) == 1 else ''} " \
            "on every step above)" if implied else ""
        checker.error(where, f"steps depend on each other in a cycle: {' -> '.join(cycle)}{why}")
    else:
        closure = graph.closure(needs, graph.topological_order(needs, ids))
        above = closure.ancestors

    var_names: list[str] = []
    if isinstance(data.get("vars"), dict):
        for name, value in data["vars"].items():
            checker.check_value(value, ("vars", name), _Scope("vars", vars=frozenset(var_names)))
            var_names.append(name)
    all_vars = frozenset(var_names)

    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        scope = _Scope("defaults", vars=all_vars)
        _check_requests(checker, defaults, ("defaults",), scope)
        _check_requests(checker, defaults.get("compensation"), ("defaults", "compensation"),
                        scope)

    for i, step in enumerate(checker.steps()):
        sid = step.get("id") if isinstance(step.get("id"), str) else None
        up = above.get(sid) if above is not None and sid else None
        base: JsonPath = ("steps", i)
        _check_requests(checker, step.get("action"), (*base, "action"),
                        _Scope("action", sid, all_vars, up))
        _check_requests(checker, step.get("compensate"), (*base, "compensate"),
                        _Scope("compensate", sid, all_vars, up | {sid} if up is not None and sid
                               else None))
        _check_requests(checker, step.get("confirm"), (*base, "confirm"),
                        _Scope("confirm", sid, all_vars, frozenset(ids) if above is not None
                               else None))
        if isinstance(step.get("outputs"), dict):
            checker.check_value(step["outputs"], (*base, "outputs"),
                                _Scope("outputs", sid, all_vars, up, response=True))

    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        import jsonschema

        for name, spec in inputs.items():
            if not isinstance(spec, dict):
                continue
            try:
                jsonschema.Draft202012Validator.check_schema(spec)
                if "default" in spec:
                    jsonschema.Draft202012Validator(spec).validate(spec["default"])
            except jsonschema.SchemaError as exc:
                checker.error(("inputs", name, *exc.absolute_path),
                              f"not a valid JSON Schema: {exc.message}")
            except jsonschema.ValidationError as exc:
                checker.error(("inputs", name, "default"),
                              f"the default does not fit the input's schema: {exc.message}")
    return needs, closure


# --- building the model -----------------------------------------------------------------------


def _merge(layers: list[Any]) -> dict[str, Any]:
    """Request keys from the least to the most specific layer: headers and query merge key by
    key (header names case-insensitively), retry field by field, anything else is replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for key, value in layer.items():
            if key == "compensation":
                continue
            if key == "headers" and key in merged:
                lowered = {k.lower() for k in value}
                merged[key] = {k: v for k, v in merged[key].items() if k.lower() not in lowered}
                merged[key].update(value)
            elif key in ("query", "retry") and key in merged:
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _retry(raw: Mapping[str, Any] | None, base: RetryPolicy) -> RetryPolicy:
    raw = raw or {}
    return RetryPolicy(
        attempts=raw.get("attempts", base.attempts),
        backoff=parse_duration(raw["backoff"]) if "backoff" in raw else base.backoff,
        factor=float(raw.get("factor", base.factor)),
        max_backoff=parse_duration(raw["max_backoff"]) if "max_backoff" in raw
        else base.max_backoff,
        jitter=raw.get("jitter", base.jitter),
        on=tuple(raw["on"]) if "on" in raw else base.on,
    )


def _reads_body(templates: list[Any], *, bare: bool = False) -> bool:
    """Whether any of these templates (or bare expressions) reads the response body:
    `response.json`, `response.text`, or `response` itself or by a computed key."""
    from sagactl.definition.templating import expression_references, references, strings_in

    for text in strings_in(templates):
        for ref in (expression_references(text) if bare else references(text)):
            if ref.root == "response" and (not ref.path or ref.path[0] in ("json", "text")
                                           or ref.dynamic):
                return True
    return False


def _request(raw: dict[str, Any], phase: Phase, line: int,
             outputs: Mapping[str, Any] | None = None) -> Request:
    from sagactl.definition.templating import is_template, references, strings_in

    body_kind = next((BodyKind(k) for k in ("json", "form", "body") if k in raw), None)
    expect = raw.get("expect") or {}
    status = expect.get("status", ["2xx"])
    that = list(expect.get("that", ()))
    return Request(
        phase=phase,
        method=raw["method"],
        url=raw["url"],
        base_url=raw.get("base_url"),
        query=raw.get("query", {}),
        headers=raw.get("headers", {}),
        auth=raw.get("auth"),
        body_kind=body_kind,
        body=raw[body_kind.value] if body_kind else None,
        timeout=parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_TIMEOUT,
        retry=_retry(raw.get("retry"), DEFAULT_RETRY if phase is Phase.ACTION
                     else COMPENSATION_RETRY),
        expect=Expect(status=tuple(status) if isinstance(status, list) else (status,),
                      that=tuple(that)),
        max_response=parse_size(raw["max_response"]) if "max_response" in raw
        else DEFAULT_MAX_RESPONSE,
        reads_body=_reads_body(that, bare=True) or _reads_body([outputs or {}]),
        reads_steps=any(ref.root == "steps" for text in strings_in(
            [raw["url"], raw.get("base_url"), raw.get("query"), raw.get("headers"),
             raw.get("auth"), raw.get(body_kind.value) if body_kind else None])
            if is_template(text) for ref in references(text)),
        line=line,
    )


def _is_secret_output(value: Any) -> bool:
    """`{value: TEMPLATE, secret: true}`: an output declared secret."""
    return isinstance(value, dict) and set(value) == {"value", "secret"} and \
        isinstance(value["secret"], bool)


def _outputs(raw: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The outputs' templates, and the names of those declared secret."""
    templates = {name: value["value"] if _is_secret_output(value) else value
                 for name, value in raw.items()}
    return templates, frozenset(name for name, value in raw.items()
                                if _is_secret_output(value) and value["secret"])


_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _credential_outputs(steps: list[Step]) -> dict[str, frozenset[str]]:
    """For each step, its outputs that some request sends in a credential header or `auth`."""
    from sagactl.definition.templating import is_template, references, strings_in

    found: dict[str, set[str]] = {}
    for step in steps:
        for request in (step.action, step.compensate, step.confirm):
            if not isinstance(request, Request):
                continue
            values = [v for k, v in request.headers.items() if k.lower() in _CREDENTIALS]
            values.append(request.auth)
            for text in strings_in(values):
                if not is_template(text):
                    continue
                for ref in references(text):
                    if ref.root == "steps" and len(ref.path) >= 3 and ref.path[1] == "outputs":
                        found.setdefault(ref.path[0], set()).add(ref.path[2])
    return {step: frozenset(names) for step, names in found.items()}


def _build(data: dict[str, Any], positions: _Positions, file: str, text: str,
           needs: dict[str, list[str]], closure: graph.Closure) -> Saga:
    defaults = data.get("defaults") or {}
    compensation = defaults.get("compensation") or {}
    steps = []
    for i, raw in enumerate(data["steps"]):
        def make(phase: Phase, raw_request: Any, index: int = i) -> Call | None:
            if raw_request is None:
                return None
            layers = [defaults] if phase is Phase.ACTION else [defaults, compensation]
            line = positions.value(("steps", index, phase.value))[0]
            merged = _merge([*layers, raw_request])
            kind = kinds_.registered().get(kinds_.kind_of(raw_request))
            if kind is not None:
                return kind.build(merged, phase, line)
            outputs = data["steps"][index].get("outputs") if phase is Phase.ACTION else None
            return _request(merged, phase, line, outputs)

        action = make(Phase.ACTION, raw["action"])
        assert action is not None
        outputs, secret = _outputs(raw.get("outputs") or {})
        steps.append(Step(
            id=raw["id"], index=i, needs=tuple(needs[raw["id"]]), action=action,
            compensate=make(Phase.COMPENSATE, raw.get("compensate")),
            confirm=make(Phase.CONFIRM, raw.get("confirm")),
            outputs=outputs, description=raw.get("description", ""),
            explicit_needs="needs" in raw, line=positions.value(("steps", i))[0],
            safe=bool(raw.get("safe", False)), secret_outputs=secret,
        ))
    # An output sent as a credential is a secret too, from the moment it is read: otherwise
    # a login's token would be journaled and shown before the request that sends it.
    credential = _credential_outputs(steps)
    steps = [dataclasses.replace(s, secret_outputs=s.secret_outputs | credential[s.id])
             if credential.get(s.id) else s for s in steps]
    return Saga(
        name=data["name"], steps=tuple(steps), order=tuple(closure.order),
        ancestors=closure.ancestors,
        waits_on={k: tuple(v) for k, v in closure.reduced.items()},
        descendants=closure.descendants,
        path=file, source=text, version=data["version"],
        description=data.get("description", ""), inputs=data.get("inputs", {}),
        env=tuple(data.get("env", ())), secrets=tuple(data.get("secrets", ())),
        vars=tuple((data.get("vars") or {}).items()),
        timeout=parse_duration(data["timeout"]) if "timeout" in data else None,
    )


def load_text(text: str, file: str = "<saga>") -> Saga:
    """The saga in `text`; `file` names it in messages. Raises DefinitionErrors."""
    try:
        data, positions, problems = _read_yaml(text)
    except _YamlProblem as exc:
        raise DefinitionErrors([DefinitionError(Location(file, exc.line, exc.column),
                                                exc.message)]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else _describe(data)
        raise DefinitionErrors([DefinitionError(Location(file, 1, 1),
                                                f"expected a saga (a mapping), got {got}")])
    checker = _Checker(file, data, positions)
    for path, message, at in problems:
        checker.error(path, message, at=at)
    for error in _validator().iter_errors(data):
        for path, message, at_key in _explain(error):
            checker.error(path, message, at_key=at_key)
    schema_ok = not checker.errors
    needs, closure = _check(checker)
    if checker.errors:
        # Identical messages can come from several schema branches; keep each once.
        unique = {str(e): e for e in checker.errors}
        raise DefinitionErrors(list(unique.values()))
    assert schema_ok and closure is not None  # no cycle, or there would be an error
    return _build(data, positions, file, text, needs, closure)


def load(path: str | Path) -> Saga:
    """The saga in the file at `path`. Raises DefinitionErrors."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DefinitionErrors([DefinitionError(Location(file), "no such file")]) from None
    except IsADirectoryError:
        raise DefinitionErrors([DefinitionError(Location(file),
                                                "is a directory, not a saga file")]) from None
    except OSError as exc:
        raise DefinitionErrors([DefinitionError(Location(file),
                                                f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionErrors([DefinitionError(
            Location(file), f"not UTF-8 text (byte {exc.start})")]) from None
    return load_text(text, file)
