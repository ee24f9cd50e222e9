"""Static checks of a saga file, past its schema: what each template may reference where it
stands, the step graph (no cycle), secrets, inputs' own schemas. Every problem is collected,
located."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from sagactl.definition import graph
from sagactl.definition import kinds as kinds_
from sagactl.definition.schema import format_path, quiet_patterns, suggest
from sagactl.definition.source import JsonPath, Positions
from sagactl.errors import DefinitionError, Location

__all__ = [
    "RESPONSE_FIELDS",
    "ROOTS",
    "RUN_FIELDS",
    "STEP_FIELDS",
    "Checker",
    "Scope",
    "check",
    "is_secret_output",
]

RESPONSE_FIELDS = ("status", "headers", "json", "text", "elapsed_ms")
RUN_FIELDS = ("id", "name")
STEP_FIELDS = ("id", "idempotency_key")
ROOTS = ("inputs", "env", "secrets", "vars", "run", "step", "steps", "response", "item")


@dataclass(frozen=True)
class Scope:
    """What a template may read where it stands."""

    where: str
    step: str | None = None
    vars: frozenset[str] = frozenset()
    upstream: AbstractSet[str] | None = None
    """Steps whose outputs may be read; None when unknown (a cycle), so nothing is checked."""
    response: bool = False
    item: str | None = None
    """In a foreach step's requests and outputs, the name its items go by (`as`; empty when
    it is missing or wrong)."""


class Checker:
    def __init__(self, file: str, data: Any, positions: Positions) -> None:
        self.file = file
        self.data = data
        self.positions = positions
        self.errors: list[DefinitionError] = []
        steps = data.get("steps")
        self._steps = [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
        self.outputs: dict[str, list[str]] = {
            s["id"]: list(s["outputs"]) if isinstance(s.get("outputs"), dict) else []
            for s in self._steps
            if isinstance(s.get("id"), str)
        }
        """Each step's output names, by step id."""
        self.repeated: dict[str, str] = {
            s["id"]: s["as"] if isinstance(s.get("as"), str) else ""
            for s in self._steps
            if isinstance(s.get("id"), str) and "foreach" in s
        }
        """The foreach steps, by id: the name each one's items go by."""

    def error(
        self,
        path: JsonPath,
        message: str,
        *,
        at_key: bool = False,
        at: tuple[int, int] | None = None,
    ) -> None:
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

    def check_text(self, text: str, path: JsonPath, scope: Scope, *, bare: bool = False) -> None:
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

    def check_value(self, value: Any, path: JsonPath, scope: Scope) -> None:
        if isinstance(value, str):
            self.check_text(value, path, scope)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.check_value(item, (*path, key), scope)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check_value(item, (*path, i), scope)

    def reference_problem(self, ref: Any, scope: Scope) -> str | None:
        root, path = ref.root, ref.path
        first = path[0] if path else None
        if root not in ROOTS:
            return f"undefined name '{root}'{suggest(root, ROOTS)}"
        if ref.dynamic and root in ("env", "secrets", "steps"):
            return (
                f"'{ref}[…]': name the {root[:-1] if root != 'steps' else 'step'} literally, "
                "so that it can be checked"
            )
        if root == "response":
            if not scope.response:
                return "'response' is only available in outputs, expect.that and poll"
            if first is not None and first not in RESPONSE_FIELDS:
                return (
                    f"response has no field '{first}' (expected one of: "
                    f"{', '.join(RESPONSE_FIELDS)})"
                )
        elif root == "inputs":
            declared = self._names("inputs")
            if first is not None and first not in declared:
                return f"undeclared input '{first}'{suggest(first, declared)}"
        elif root in ("env", "secrets"):
            declared = self._names(root)
            if first is None:
                return f"read one value, as {root}.NAME: the whole {root} cannot be read"
            if first not in declared:
                hint = suggest(first, declared) or f" (add {first} to the saga's {root} list)"
                return f"{root}.{first} is not declared{hint}"
        elif root == "vars":
            if first is not None and first not in scope.vars:
                if first in self._names("vars"):
                    return f"vars.{first} is computed after this one: vars are computed in order"
                return f"undefined var '{first}'{suggest(first, self._names('vars'))}"
        elif root == "run":
            if first is not None and first not in RUN_FIELDS:
                return f"run has no field '{first}' (expected one of: {', '.join(RUN_FIELDS)})"
        elif root == "step":
            if scope.where in ("vars", "foreach", "notify"):
                return f"'step' is only available in requests and outputs, not in {scope.where}"
            if first is not None and first not in STEP_FIELDS:
                return f"step has no field '{first}' (expected one of: {', '.join(STEP_FIELDS)})"
        elif root == "steps":
            return self.steps_problem(ref, scope)
        elif root == "item":
            return self.item_problem(ref, scope)
        return None

    def item_problem(self, ref: Any, scope: Scope) -> str | None:
        first = ref.path[0] if ref.path else None
        if scope.item is None:
            if scope.where == "foreach":
                return "the list of a foreach step cannot read its own items"
            return "'item' is only available in a foreach step (its requests and outputs)"
        if first is None:
            return f"read one field, as item.{scope.item or 'NAME'} or item.index"
        if not scope.item:
            return None  # `as` is missing or wrong, which is said where it stands
        fields = [scope.item, "index"]
        if first not in fields:
            return (
                f"item has no field '{first}'{suggest(first, fields)} (expected "
                f"{' or '.join(f'item.{name}' for name in fields)})"
            )
        return None

    def steps_problem(self, ref: Any, scope: Scope) -> str | None:
        path = ref.path
        if scope.where in ("vars", "defaults", "notify"):
            when = {
                "vars": "vars are computed",
                "defaults": "defaults apply",
                "notify": "it is read (it may be used for a run that sent nothing)",
            }[scope.where]
            return f"step outputs cannot be read in {scope.where}: no step has run when {when}"
        if ref.dynamic:
            return None
        if len(path) < 3 or path[1] != "outputs":
            return f"'{ref}': expected steps.<step>.outputs.<name>"
        outputs = self.outputs
        target, name = path[0], path[2]
        if target not in outputs:
            return f"unknown step '{target}'{suggest(target, outputs)}"
        if name not in outputs[target]:
            have = ", ".join(outputs[target]) or "none"
            return f"step '{target}' has no output '{name}' (its outputs: {have})"
        if scope.upstream is not None and target not in scope.upstream:
            if target == scope.step:
                return f"step '{target}' cannot read its own outputs in its {scope.where}"
            return (
                f"step '{target}' is not guaranteed to have finished before this "
                f"{scope.where} of '{scope.step}': add it to the needs of '{scope.step}'"
            )
        if (
            target in self.repeated
            and target != scope.step
            and len(path) > 3
            and not path[3].isdigit()
        ):
            # A foreach step's output is the list of its items' (its own requests read their
            # item's): a field of it is read from one item, or from each with a filter.
            return (
                f"steps.{target}.outputs.{name} is a list (step '{target}' runs once per "
                f"item): read one item's as steps.{target}.outputs.{name}[0].{path[3]}, "
                f"or every item's with a filter (| map(attribute='{path[3]}') | list)"
            )
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


def _check_requests(checker: Checker, request: Any, path: JsonPath, scope: Scope) -> None:
    if not isinstance(request, dict):
        return
    kind = kinds_.registered().get(kinds_.kind_of(request))
    if kind is not None:
        for key in kind.templates:
            if key in request:
                checker.check_value(request[key], (*path, key), scope)
        return
    for where in _non_finite(request.get("json"), (*path, "json")):
        checker.error(
            where, "NaN and infinity are not JSON (RFC 8259): send a number, null or a string"
        )
    for key in ("url", "base_url", "body"):
        if isinstance(request.get(key), str):
            checker.check_text(request[key], (*path, key), scope)
    for key in ("query", "headers", "auth", "json", "form"):
        if key in request:
            checker.check_value(request[key], (*path, key), scope)
    that_scope = dataclasses.replace(scope, response=True)
    expect = request.get("expect")
    if isinstance(expect, dict) and isinstance(expect.get("that"), list):
        for i, text in enumerate(expect["that"]):
            if isinstance(text, str) and text:
                checker.check_text(text, (*path, "expect", "that", i), that_scope, bare=True)
    poll = request.get("poll")
    if isinstance(poll, dict) and "every" in poll:
        from sagactl.model import parse_duration

        try:
            if parse_duration(poll["every"]) <= 0:
                checker.error(
                    (*path, "poll", "every"),
                    "a wait of 0 polls without pause, a journal write each time: give one "
                    "more than 0 (2s, 500ms)",
                )
        except (ValueError, TypeError):
            pass  # the schema said what is wrong with it
    if isinstance(poll, dict):
        for key in ("until", "fail_if"):
            if isinstance(poll.get(key), str) and poll[key]:
                checker.check_text(poll[key], (*path, "poll", key), that_scope, bare=True)
    _check_verdicts(checker, request, path, that_scope)


def _check_verdicts(
    checker: Checker, request: dict[str, Any], path: JsonPath, scope: Scope
) -> None:
    """`applied` and `absent` (SPEC §2.6): in a verify only, at least one there, each a bare
    expression over `response`; and a verify does not poll."""
    verdicts = [key for key in ("applied", "absent") if key in request]
    if scope.where != "verify":
        for key in verdicts:
            checker.error(
                (*path, key),
                f"{key} belongs to a step's verify request (the probe that settles doubt)",
                at_key=True,
            )
        return
    if not verdicts:
        checker.error(
            path,
            "a verify says what its answer means: give applied (an expression true when the "
            'action took effect, "response.status == 200") or absent, or both',
        )
    if "poll" in request:
        checker.error((*path, "poll"), "a verify is sent once per doubt, not polled", at_key=True)
    for key in verdicts:
        if isinstance(request[key], str) and request[key]:
            checker.check_text(request[key], (*path, key), scope, bare=True)


def _check_foreach(
    checker: Checker, step: dict[str, Any], base: JsonPath, scope: Scope
) -> str | None:
    """Check a foreach step's list (SPEC §2.5): a list, or one `{{ expression }}` that can
    give one, reading only what is known before the step starts. Returns the name its items
    go by in the step's other templates (`as`), or None for a step that is not a foreach."""
    from sagactl.definition.templating import TemplateProblem, is_template, is_whole_expression

    if "foreach" not in step:
        # Beside `as` it is misspelt or missing, which is said where it stands.
        return "" if "as" in step else None
    name = step.get("as")
    if name == "index":
        checker.error(
            (*base, "as"), "'index' is taken: item.index is the item's position; use another name"
        )
    items = step["foreach"]
    where = (*base, "foreach")
    if isinstance(items, list):
        checker.check_value(items, where, scope)
    elif isinstance(items, str):
        try:
            whole = is_whole_expression(items)
        except TemplateProblem:
            whole = True  # check_text says what does not parse
        if not whole:
            got = "text with a template in it" if is_template(items) else f"the string {items!r}"
            checker.error(
                where,
                f"expected a list, or one expression that gives a list "
                f'("{{{{ inputs.skus }}}}"), got {got}',
            )
        checker.check_text(items, where, scope)
    return name if isinstance(name, str) and name != "index" else ""


def _dependencies(checker: Checker) -> tuple[dict[str, list[str]], list[str], set[str]]:
    """Each step's `needs`, the step ids in file order, and the steps without `needs`, which
    depend on every step above them (`graph`'s `implied`)."""
    needs: dict[str, list[str]] = {}
    ids: list[str] = []
    implied: set[str] = set()
    seen: dict[str, int] = {}
    for i, step in enumerate(checker.steps()):
        sid = step.get("id")
        if not isinstance(sid, str):
            continue
        if sid in seen:
            checker.error(
                ("steps", i, "id"), f"duplicate step id '{sid}' (first used by steps[{seen[sid]}])"
            )
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
                    checker.error(
                        ("steps", i, "needs", j),
                        f"unknown step '{dep}'{suggest(dep, checker.outputs)}",
                    )
                else:
                    deps.append(dep)
            needs[sid] = deps
        else:
            needs[sid] = []
            implied.add(sid)
        ids.append(sid)
    return needs, ids, implied


def _check_secrets(checker: Checker) -> None:
    """A name declared both as env and as secret; a safe step with a compensation; a secret
    output written wrong."""
    env = set(checker._names("env"))
    secrets = checker.data.get("secrets")
    for i, name in enumerate(secrets if isinstance(secrets, list) else []):
        if isinstance(name, str) and name in env:
            checker.error(
                ("secrets", i),
                f"{name} is declared both in env and in secrets: "
                f"read it as secrets.{name} only, which is never "
                "journaled or shown (env values are journaled)",
            )
    for i, step in enumerate(checker.steps()):
        if step.get("safe") is True and "compensate" in step:
            checker.error(
                ("steps", i, "safe"),
                "a safe step has no effect to undo: remove its compensate, or safe",
            )
        outputs = step.get("outputs")
        for name, value in outputs.items() if isinstance(outputs, dict) else ():
            if (
                isinstance(value, dict)
                and "secret" in value
                and "value" in value
                and not is_secret_output(value)
            ):
                checker.error(
                    ("steps", i, "outputs", name),
                    "a secret output is {value: TEMPLATE, secret: true}, and nothing else",
                )


def check(checker: Checker) -> tuple[dict[str, list[str]], graph.Closure | None]:
    data = checker.data
    _check_secrets(checker)
    needs, ids, without_needs = _dependencies(checker)
    cycle = graph.find_cycle(needs, ids, without_needs)
    above: graph.Related | None = None
    closure: graph.Closure | None = None
    if cycle:
        first = cycle[0]
        index = next(i for i, s in enumerate(checker.steps()) if s.get("id") == first)
        where: JsonPath = (
            ("steps", index, "needs")
            if "needs" in checker.steps()[index]
            else ("steps", index, "id")
        )
        implied = [
            str(s["id"]) for s in checker.steps() if s.get("id") in cycle and "needs" not in s
        ]
        why = (
            f" ({', '.join(implied)} without needs depend{'s' if len(implied) == 1 else ''} "
            "on every step above)"
            if implied
            else ""
        )
        checker.error(where, f"steps depend on each other in a cycle: {' -> '.join(cycle)}{why}")
    else:
        topo = graph.topological_order(needs, ids, without_needs)
        closure = graph.closure(needs, topo, ids, without_needs)
        above = closure.ancestors

    var_names: list[str] = []
    if isinstance(data.get("vars"), dict):
        for name, value in data["vars"].items():
            checker.check_value(value, ("vars", name), Scope("vars", vars=frozenset(var_names)))
            var_names.append(name)
    all_vars = frozenset(var_names)

    notify = data.get("notify")
    if isinstance(notify, dict):
        targets = [key for key in ("url", "command") if key in notify]
        if len(targets) != 1:
            checker.error(
                ("notify",),
                "notify needs one of url (a POST of the run's summary) and command (run with "
                "it on standard input)" + (", not both" if len(targets) == 2 else ""),
            )
        from sagactl.definition.templating import is_template

        if isinstance(notify.get("url"), str):
            checker.check_value(notify["url"], ("notify", "url"), Scope("notify", vars=all_vars))
        if isinstance(notify.get("command"), str) and is_template(notify["command"]):
            checker.error(
                ("notify", "command"),
                "a command is run as written, not rendered (a value rendered into a shell "
                "command could run anything): it gets the summary on standard input, and "
                "SAGACTL_RUN_ID and SAGACTL_STATUS in its environment",
            )

    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        scope = Scope("defaults", vars=all_vars)
        _check_requests(checker, defaults, ("defaults",), scope)
        _check_requests(checker, defaults.get("compensation"), ("defaults", "compensation"), scope)

    for i, step in enumerate(checker.steps()):
        sid = step.get("id") if isinstance(step.get("id"), str) else None
        up = above.get(sid) if above is not None and sid else None
        base: JsonPath = ("steps", i)
        item = _check_foreach(checker, step, base, Scope("foreach", sid, all_vars, up))
        _check_requests(
            checker,
            step.get("action"),
            (*base, "action"),
            Scope("action", sid, all_vars, up, item=item),
        )
        _check_requests(
            checker,
            step.get("compensate"),
            (*base, "compensate"),
            Scope(
                "compensate",
                sid,
                all_vars,
                up.including(sid) if up is not None and sid else None,
                item=item,
            ),
        )
        _check_requests(
            checker,
            step.get("confirm"),
            (*base, "confirm"),
            Scope(
                "confirm", sid, all_vars, frozenset(ids) if above is not None else None, item=item
            ),
        )
        _check_requests(
            checker,
            step.get("verify"),
            (*base, "verify"),
            Scope("verify", sid, all_vars, up, item=item),
        )
        if isinstance(step.get("outputs"), dict):
            checker.check_value(
                step["outputs"],
                (*base, "outputs"),
                Scope("outputs", sid, all_vars, up, response=True, item=item),
            )

    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        import jsonschema

        for name, spec in inputs.items():
            if not isinstance(spec, dict):
                continue
            try:
                with quiet_patterns():
                    jsonschema.Draft202012Validator.check_schema(spec)
                    if "default" in spec:
                        jsonschema.Draft202012Validator(spec).validate(spec["default"])
            except jsonschema.SchemaError as exc:
                checker.error(
                    ("inputs", name, *exc.absolute_path), f"not a valid JSON Schema: {exc.message}"
                )
            except jsonschema.ValidationError as exc:
                checker.error(
                    ("inputs", name, "default"),
                    f"the default does not fit the input's schema: {exc.message}",
                )
    return needs, closure


def is_secret_output(value: Any) -> bool:
    """`{value: TEMPLATE, secret: true}`: an output declared secret."""
    return (
        isinstance(value, dict)
        and set(value) == {"value", "secret"}
        and isinstance(value["secret"], bool)
    )
