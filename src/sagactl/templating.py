"""Sandboxed Jinja2 templates: rendering with types kept, and the names an expression reads.

A string that is one whole `{{ expression }}` renders to the expression's value with its type
(`"{{ inputs.qty }}"` is the integer 2); any other string renders to a string. Strings without
`{{` or `{%` are returned as they are, without touching Jinja2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2 import nodes

__all__ = [
    "Namespace",
    "Reference",
    "Renderer",
    "TemplateProblem",
    "expression_references",
    "is_template",
    "references",
]


class TemplateProblem(Exception):
    """A template that does not parse, or cannot be rendered; `lineno` is within the string."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


@dataclass(frozen=True)
class Reference:
    """A name an expression reads: `steps.reserve.outputs.id` is root `steps` and path
    `("reserve", "outputs", "id")`. `dynamic` is true when a part of it is computed
    (`steps[name]`), which static checks cannot follow."""

    root: str
    path: tuple[str, ...]
    dynamic: bool = False

    def __str__(self) -> str:
        return ".".join((self.root, *self.path))


class Namespace(dict[str, Any]):
    """A dict of names seen by templates (`env`, `inputs`…), labelled for error messages."""

    def __init__(self, label: str, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(values or {})
        self.label = label


@dataclass(frozen=True)
class _Lookup:
    """`steps.a.outputs.id`: a name, then attribute (True) or item (False) accesses."""

    name: str
    path: tuple[tuple[bool, Any], ...]


_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})


class _Environment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # A key of a JSON object wins over a dict method of the same name, so that
        # `response.json.items` reads the body's "items" rather than dict.items.
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
            # Without such a key, only the methods templates iterate with: any other (say
            # `outputs.copy` when there is no output `copy`) must be undefined, not dict.copy.
            value = super().getattr(obj, attribute) if attribute in _MAPPING_METHODS \
                else self.undefined(obj=obj, name=attribute)
            if isinstance(value, jinja2.Undefined):
                label = getattr(obj, "label", None)
                keys = ", ".join(map(str, obj)) or "none"
                hint = f"{label}.{attribute} is not set" if label \
                    else f"no key '{attribute}' (keys: {keys})"
                return self.undefined(hint=hint, obj=obj, name=attribute)
            return value
        return super().getattr(obj, attribute)


@cache
def _environment() -> _Environment:
    return _Environment(undefined=jinja2.StrictUndefined, autoescape=False)


_SCALARS = frozenset({int, float, bool, type(None)})


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Template:
    """The syntax tree of a template; cached, and never modified by its users."""
    try:
        return _environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(exc.message or str(exc), exc.lineno) from None


def _whole_expression(ast: nodes.Template) -> bool:
    body = ast.body
    return (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )


def _inner(source: str) -> str:
    """The expression inside a whole `{{ … }}`, without whitespace-control markers."""
    inner = source.strip()[2:-2]
    if inner[:1] in ("-", "+"):
        inner = inner[1:]
    if inner[-1:] == "-":
        inner = inner[:-1]
    return inner


def _collect(node: nodes.Node, roots: set[str], out: list[Reference]) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        parts: list[str | None] = []
        cur: nodes.Node = node
        computed: list[nodes.Node] = []
        while isinstance(cur, nodes.Getattr | nodes.Getitem):
            if isinstance(cur, nodes.Getattr):
                parts.append(cur.attr)
            elif isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value, str | int):
                parts.append(str(cur.arg.value))
            else:
                parts.append(None)
                computed.append(cur.arg)
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.ctx == "load":
            if cur.name in roots:
                path: list[str] = []
                for part in reversed(parts):
                    if part is None:
                        break
                    path.append(part)
                out.append(Reference(cur.name, tuple(path), dynamic=None in parts))
            for arg in computed:
                _collect(arg, roots, out)
            return
    for child in node.iter_child_nodes():
        _collect(child, roots, out)


@lru_cache(maxsize=4096)
def references(source: str) -> tuple[Reference, ...]:
    """Every outside name a template string reads, in order. Raises TemplateProblem.

    Cached: a saga repeats its strings (an action's URL in its compensation) and parsing is
    the bulk of checking a file."""
    ast = _parse(source)
    env = _environment()
    loaded: set[str] = set()
    local: set[str] = set()
    for node in ast.find_all((nodes.Name, nodes.Filter, nodes.Test)):
        if isinstance(node, nodes.Name):
            # A name assigned anywhere in the template (a loop variable, a {% set %}) is
            # local. jinja2.meta.find_undeclared_variables says the same more exactly, but
            # runs the compiler's frame analysis, which costs about 0.5 ms a string.
            (loaded if node.ctx == "load" else local).add(node.name)
        elif isinstance(node, nodes.Filter | nodes.Test) and node.name not in (
            env.filters if isinstance(node, nodes.Filter) else env.tests
        ):
            # Unknown filters and tests are otherwise caught only when compiling, which
            # costs far more than looking at the tree.
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateProblem(f"no {what} named '{node.name}'", node.lineno)
    out: list[Reference] = []
    _collect(ast, loaded - local, out)
    return tuple(out)


def expression_references(expression: str) -> tuple[Reference, ...]:
    """The same for a bare expression (an `expect.that` entry)."""
    if is_template(expression):
        raise TemplateProblem("write a bare expression here, without {{ }}")
    return references("{{ " + expression + " }}")


class Renderer:
    """Renders templated values; compiles each distinct source once."""

    def __init__(self) -> None:
        self._env = _environment()
        self._compiled: dict[str, Any] = {}

    def _compile(self, source: str) -> Any:
        compiled = self._compiled.get(source)
        if compiled is None:
            ast = _parse(source)
            compiled = self._lookups(ast)
            if compiled is not None:
                self._compiled[source] = compiled
                return compiled
            try:
                if _whole_expression(ast):
                    compiled = self._env.compile_expression(_inner(source), undefined_to_none=False)
                else:
                    template = self._env.from_string(source)
                    compiled = template.render
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateProblem(exc.message or str(exc), exc.lineno) from None
            self._compiled[source] = compiled
        return compiled

    def _lookups(self, ast: nodes.Template) -> Any:
        """A renderer for the commonest templates — text and plain lookups such as
        `/items/{{ steps.a.outputs.id }}` — that walks Jinja2's own syntax tree instead of
        compiling it: compiling costs about a millisecond a template, more than the request.

        Lookups go through the environment's sandboxed getattr/getitem, so they behave as in a
        compiled template. Returns None for any other template.
        """
        body = ast.body
        if len(body) != 1 or not isinstance(body[0], nodes.Output):
            return None
        parts: list[str | _Lookup] = []
        for node in body[0].nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)
                continue
            path: list[tuple[bool, Any]] = []
            while isinstance(node, nodes.Getattr | nodes.Getitem):
                if isinstance(node, nodes.Getattr):
                    path.append((True, node.attr))
                elif isinstance(node.arg, nodes.Const):
                    path.append((False, node.arg.value))
                else:
                    return None
                node = node.node
            if not isinstance(node, nodes.Name):
                return None
            path.reverse()
            parts.append(_Lookup(node.name, tuple(path)))
        env = self._env
        whole = len(parts) == 1 and not isinstance(parts[0], str)

        def lookup(item: _Lookup, context: Mapping[str, Any]) -> Any:
            name = item.name
            value = context[name] if name in context else env.undefined(name=name)
            for is_attr, key in item.path:
                if isinstance(value, jinja2.Undefined):
                    break
                value = env.getattr(value, key) if is_attr else env.getitem(value, key)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return value

        def render(**context: Any) -> Any:
            if whole:
                return lookup(parts[0], context)  # type: ignore[arg-type]
            return "".join(part if isinstance(part, str) else str(lookup(part, context))
                           for part in parts)

        return render

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        """`value` with every template string in it rendered. Raises TemplateProblem."""
        kind = type(value)
        # Exact types first: the ABC checks below cost more than the rendering of most values.
        if kind is dict:
            return {k: self.render(v, context) for k, v in value.items()}
        if kind in _SCALARS:
            return value
        if isinstance(value, str):
            if not is_template(value):
                return value
            try:
                result = self._compile(value)(**context)
                if isinstance(result, jinja2.Undefined):
                    # A whole expression hands back the Undefined itself; make it fail as
                    # it would inside a string.
                    result._fail_with_undefined_error()
                return result
            except jinja2.UndefinedError as exc:
                raise TemplateProblem(f"{value.strip()}: {exc.message}") from None
            except jinja2.TemplateError as exc:
                raise TemplateProblem(f"{value.strip()}: {exc}") from None
            except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
                raise TemplateProblem(f"{value.strip()}: {exc}") from None
        if isinstance(value, Mapping):
            return {k: self.render(v, context) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.render(v, context) for v in value]
        return value

    def evaluate(self, expression: str, context: Mapping[str, Any]) -> Any:
        """The value of a bare expression. Raises TemplateProblem."""
        return self.render("{{ " + expression + " }}", context)

    def actual(self, expression: str, context: Mapping[str, Any]) -> tuple[bool, Any]:
        """For a comparison `A == B`, (True, the value of A): what a failed expectation
        reports as the actual value. (False, None) for any other expression."""
        import copy

        from jinja2.environment import TemplateExpression

        try:
            body = _parse("{{ " + expression + " }}").body
        except TemplateProblem:
            return False, None
        node = body[0].nodes[0] if body and isinstance(body[0], nodes.Output) else None
        if not isinstance(node, nodes.Compare) or len(node.ops) != 1:
            return False, None
        assign = nodes.Assign(nodes.Name("result", "store"), copy.deepcopy(node.expr),
                              lineno=1)
        try:
            template = self._env.from_string(nodes.Template([assign], lineno=1))
            return True, TemplateExpression(template, False)(**context)
        except (jinja2.TemplateError, TypeError, ValueError, LookupError):
            return False, None
