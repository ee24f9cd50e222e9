"""Sandboxed Jinja2 templates: rendering with types kept, and the names an expression reads.

A string that is one whole `{{ expression }}` renders to the expression's value with its type
(`"{{ inputs.qty }}"` is the integer 2); any other string renders to a string. Strings without
`{{` or `{%` are returned as they are, without touching Jinja2.

Rendering is bounded (SPEC §2.2): no value a template builds — by an operator, a filter, a
method call, or its output — may pass `MAX_RESULT` characters or `MAX_ITEMS` items, and each is
refused *before* it is built wherever its size is known in advance (`'x' * 10**13`, a width of
a billion), so a template cannot exhaust memory. A loop that builds nothing is not bounded.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.sandbox
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame

__all__ = [
    "MAX_ITEMS",
    "MAX_RESULT",
    "Lookup",
    "Namespace",
    "Outputs",
    "Part",
    "Plan",
    "Reference",
    "Renderer",
    "Secrets",
    "TemplateProblem",
    "adopt",
    "expression_references",
    "is_template",
    "is_whole_expression",
    "plan_of",
    "references",
    "strings_in",
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
    guarded: bool = False
    """Read under a `default` filter or an `is defined` test: an unset value is no error."""

    def __str__(self) -> str:
        return ".".join((self.root, *self.path))


class Namespace(dict[str, Any]):
    """A dict of names seen by templates (`env`, `inputs`…), labelled for error messages."""

    def __init__(self, label: str, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(values or {})
        self.label = label


_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})

_SCALARS = frozenset({int, float, bool, type(None)})

MAX_RESULT = 1 << 20
"""Characters a value built by a template may hold, in all its strings (1 MiB of text)."""
MAX_ITEMS = 100_000
"""Items a list or mapping built by a template may hold."""


class _TooLarge(jinja2.exceptions.SecurityError):
    """A template tried to build a value past the limits."""


def _too_large(what: str = "the result") -> _TooLarge:
    return _TooLarge(
        f"{what} would pass {MAX_RESULT // 2**20} MiB or {MAX_ITEMS:,} items, "
        "the most a template may build"
    )


def _bounded(value: Any) -> Any:
    """`value`, after checking that it is within the limits; raises _TooLarge otherwise."""
    kind = type(value)
    if kind is str:
        if len(value) > MAX_RESULT:
            raise _too_large()
        return value
    if kind in _SCALARS:
        return value
    chars, items = 0, 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            chars += len(item)
        elif isinstance(item, Mapping):
            items += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            items += len(item)
            stack.extend(item)
        if chars > MAX_RESULT or items > MAX_ITEMS:
            raise _too_large()
    return value


def _bounded_join(parts: Any) -> str:
    """ "".join, stopping as soon as the text passes the limit (a template's output, `~`)."""
    out: list[str] = []
    size = 0
    for part in parts:
        text = part if type(part) is str else str(part)
        size += len(text)
        if size > MAX_RESULT:
            raise _too_large("the text")
        out.append(text)
    return "".join(out)


_SEQUENCES = (str, bytes, bytearray, list, tuple)
_TEXTS = (str, bytes, bytearray)


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, _SEQUENCES) else None


_PRINTF_WIDTH = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")
# [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[_,]?(?:\.(\d+))?.?$", re.S)


def _check_format(fmt: Any, *, printf: bool, arguments: Iterable[Any] = ()) -> None:
    """Refuse a format string whose widths or precisions would build a huge string."""
    if not isinstance(fmt, str):
        return
    if printf:
        for match in _PRINTF_WIDTH.finditer(fmt):
            for number in match.groups():
                if number == "*" or (number and int(number) > MAX_RESULT):
                    raise _too_large("the formatted text")
        return
    import string

    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format will refuse it itself
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            # A width or precision given as an argument (`{:{}}`): refuse any huge number.
            if any(
                isinstance(a, int) and not isinstance(a, bool) and a > MAX_RESULT for a in arguments
            ):
                raise _too_large("the formatted text")
            continue
        parsed = _FORMAT_SPEC.match(spec)
        numbers = parsed.groups() if parsed else re.findall(r"\d+", spec)
        if any(n and int(n) > MAX_RESULT for n in numbers):
            raise _too_large("the formatted text")


def _check_join(separator: str, items: Any) -> list[Any]:
    """The items to join, after checking that the joined text stays within the limit."""
    if isinstance(items, str):
        listed: list[Any] = list(items)
    else:
        listed = []
        for item in items:
            listed.append(item)
            if len(listed) > MAX_ITEMS:
                raise _too_large()
    size = len(separator) * max(len(listed) - 1, 0)
    for item in listed:
        size += len(item) if isinstance(item, str) else 20
        if size > MAX_RESULT:
            raise _too_large("the joined text")
    return listed


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a method call whose arguments would build a huge value, before it runs."""
    name = getattr(obj, "__name__", "")
    owner = getattr(obj, "__self__", None) or getattr(
        getattr(obj, "__wrapped__", None), "__self__", None
    )
    if not isinstance(owner, str):
        return
    if name in _WIDTH_METHODS:
        width = args[0] if args else next(iter(kwargs.values()), 0)
        if (
            isinstance(width, int)
            and width * (len(owner) if name == "expandtabs" else 1) > MAX_RESULT
        ):
            raise _too_large()
    elif name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        old, new = args[0], args[1]
        count = owner.count(old) if old else len(owner) + 1
        if len(owner) + count * max(len(new) - len(old), 0) > MAX_RESULT:
            raise _too_large()
    elif name == "join" and args:
        _check_join(owner, args[0])
    elif name in ("format", "format_map"):
        values = [*args, *kwargs.values()]
        if name == "format_map" and args and isinstance(args[0], Mapping):
            values = list(args[0].values())
        _check_format(owner, printf=False, arguments=values)


def _checked_filter(name: str, function: Any) -> Any:
    """A filter that refuses arguments known to build a huge value, and any huge result."""
    import functools

    @functools.wraps(function)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        # Filters that take the environment or context get it first: skip it.
        values = [
            a
            for a in args
            if not isinstance(
                a, jinja2.Environment | jinja2.runtime.Context | jinja2.nodes.EvalContext
            )
        ]
        value = values[0] if values else None
        rest = values[1:]
        if name in ("center", "indent", "wordwrap", "truncate"):
            width = rest[0] if rest else kwargs.get("width", 0)
            text = str(value)
            lines = text.count("\n") + 1
            if isinstance(width, int) and width * lines > MAX_RESULT:
                raise _too_large()
            if name == "wordwrap":
                wrap = kwargs.get("wrapstring", rest[2] if len(rest) > 2 else "\n")
                # At most one break per character of the text.
                if len(text) * (1 + len(str(wrap or ""))) > MAX_RESULT:
                    raise _too_large()
        elif name == "replace" and len(rest) >= 2:
            _check_call(str(value).replace, tuple(rest), {})
        elif name == "join":
            _check_join(str(rest[0]) if rest else kwargs.get("d", ""), value)
        elif name == "format":
            _check_format(value, printf=True)
        elif (
            name in ("slice", "batch") and rest and isinstance(rest[0], int) and rest[0] > MAX_ITEMS
        ):
            raise _too_large()
        return _bounded(function(*args, **kwargs))

    return filtered


def _b64encode(value: Any, urlsafe: bool = False) -> str:
    """`b64encode`: the value's text (UTF-8) in base64, or base64url with `urlsafe=true`."""
    import base64

    raw = (value if isinstance(value, str) else str(value)).encode()
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with `~` joining through the bounded join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    # Operators that can build large values go through call_binop, which checks them.
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator
    # A template's output, and every block's, is joined through this.
    concat = staticmethod(_bounded_join)
    bounded_join = staticmethod(_bounded_join)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters["b64encode"] = _b64encode
        self.filters = {name: _checked_filter(name, f) for name, f in self.filters.items()}
        # lipsum(n) writes n paragraphs of text: nothing a saga needs, and unbounded.
        self.globals.pop("lipsum", None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                size = _length(sequence)
                if (
                    size is not None
                    and isinstance(times, int)
                    and size * times > (MAX_RESULT if isinstance(sequence, _TEXTS) else MAX_ITEMS)
                ):
                    raise _too_large()
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and right * abs(left).bit_length() > 8 * MAX_RESULT:
                raise _too_large("the number")
        elif operator == "%":
            _check_format(left, printf=True)
        return _bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_call(__obj, args, kwargs)
        return _bounded(super().call(__context, __obj, *args, **kwargs))

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
            value = (
                super().getattr(obj, attribute)
                if attribute in _MAPPING_METHODS
                else self.undefined(obj=obj, name=attribute)
            )
            if isinstance(value, jinja2.Undefined):
                label = getattr(obj, "label", None)
                keys = ", ".join(map(str, obj)) or "none"
                hint = (
                    f"{label}.{attribute} is not set"
                    if label
                    else f"no key '{attribute}' (keys: {keys})"
                )
                return self.undefined(hint=hint, obj=obj, name=attribute)
            return value
        return super().getattr(obj, attribute)


@cache
def _environment() -> _Environment:
    return _Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def is_whole_expression(text: str) -> bool:
    """Whether `text` is one `{{ expression }}` and nothing else, so that its value keeps its
    type (a list stays a list). Raises TemplateProblem when it does not parse."""
    if not is_template(text):
        return False
    body = _parse(text).body
    return (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a value of the saga file (a mapping's values, a list's items)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


@lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Template:
    """The syntax tree of a template; cached, and never modified by its users."""
    try:
        return _environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(exc.message or str(exc), exc.lineno) from None


_GUARDS = frozenset({"default", "d", "defined", "undefined"})


def _collect(
    node: nodes.Node, roots: set[str], out: list[Reference], guarded: bool = False
) -> None:
    if (
        isinstance(node, nodes.Filter | nodes.Test)
        and node.name in _GUARDS
        and node.node is not None
    ):
        _collect(node.node, roots, out, guarded=True)
        for child in node.iter_child_nodes():
            if child is not node.node:
                _collect(child, roots, out)
        return
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
                out.append(Reference(cur.name, tuple(path), dynamic=None in parts, guarded=guarded))
            for arg in computed:
                _collect(arg, roots, out)
            return
    for child in node.iter_child_nodes():
        _collect(child, roots, out, guarded)


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


_reading = threading.local()
"""`secret`: whether the expression being evaluated on this thread read a secret."""


class _Whole:
    """Reading a mapping as a whole — iterating it, copying it, printing it — reads every
    value in it (`validate` refuses such templates; this holds without it too)."""

    def _whole(self) -> None:
        _reading.secret = True

    def __iter__(self) -> Any:
        self._whole()
        return super().__iter__()  # type: ignore[misc]

    def keys(self) -> Any:
        self._whole()
        return super().keys()  # type: ignore[misc]

    def items(self) -> Any:
        self._whole()
        return super().items()  # type: ignore[misc]

    def values(self) -> Any:
        self._whole()
        return super().values()  # type: ignore[misc]

    def __repr__(self) -> str:
        self._whole()
        return super().__repr__()

    __str__ = __repr__


class Secrets(_Whole, Namespace):
    """The `secrets` namespace: reading any of it makes what the template produces a secret."""

    def __getitem__(self, key: str) -> Any:
        _reading.secret = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        _reading.secret = True
        return super().get(key, default)


class Outputs(_Whole, dict[str, Any]):
    """A step's outputs as templates read them, some of them secret (`secret: true`): reading
    one of those, or the whole, makes what the template produces a secret."""

    def __init__(self, values: Mapping[str, Any], secret: frozenset[str]) -> None:
        super().__init__(values)
        self.secret = secret

    def __getitem__(self, key: str) -> Any:
        if key in self.secret:
            _reading.secret = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.secret:
            _reading.secret = True
        return super().get(key, default)


Part = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class _Compiled:
    """A template ready to render: its output's parts (text, and one callable per `{{ }}`),
    or, for a template with `{% %}` statements, one callable for the whole."""

    parts: tuple[str | Part, ...] = ()
    whole: bool = False
    """One expression and nothing else: the value keeps its type."""
    statements: Callable[..., str] | None = None
    constants: frozenset[str] = frozenset()
    """The strings written in the template itself: never a secret's."""
    checked: bool = False
    """Whether any part builds values (operators, filters, calls): then the output is
    joined within the limits. Plain lookups only read values that exist."""


def _leaves(value: Any, context: Mapping[str, Any], constants: frozenset[str]) -> list[Any]:
    """The values in a list or mapping an expression built while reading a secret — which of
    them came from it is not known — but its keys, the strings written in the template, and
    values that are plainly an input's or an env value (`{'user': inputs.user, 'password':
    secrets.P, 'mode': 'login'}` makes only P's a secret)."""
    plain: set[str] = set(constants)
    for name in ("inputs", "env"):
        names = context.get(name)
        if isinstance(names, Mapping):
            plain.update(str(v) for v in names.values() if isinstance(v, str | int | float))
    found: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif str(item) not in plain:
            found.append(item)
    return found


_COMPILED: dict[str, _Compiled] = {}
"""Every template compiled in this process, by source: what one compiles depends on its text
alone (and the one sandboxed environment), so the runs of a batch or a worker compile each
once, not once a run. Compiling costs about a millisecond; rendering, microseconds."""
_COMPILED_AT_MOST = 10_000
"""Past this many sources (a worker given many different sagas), the cache starts again."""


Lookup = tuple[str, tuple[tuple[bool, Any], ...]]
"""A plain lookup: the name it starts from, then each attribute (True) or item (False)."""
Plan = tuple[str | Lookup, ...]
"""How a template made only of text and plain lookups renders: its parts in order, as plain
data (picklable: kept with a checked saga, so that a run need not parse it again)."""


def _lookup_path(node: nodes.Node) -> Lookup | None:
    """`steps.a.outputs["id"]` as ("steps", ((True, "a"), (True, "outputs"), (False, "id"))),
    or None for any expression that is not a plain lookup."""
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
    return node.name, tuple(path)


def _lookup_part(name: str, steps: tuple[tuple[bool, Any], ...], env: _Environment) -> Part:
    """A plain lookup as a part. Lookups go through the environment's sandboxed getattr and
    getitem, so they behave as in a compiled template."""

    def lookup(context: Mapping[str, Any]) -> Any:
        value = context[name] if name in context else env.undefined(name=name)
        for is_attr, key in steps:
            if isinstance(value, jinja2.Undefined):
                break
            value = env.getattr(value, key) if is_attr else env.getitem(value, key)
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        return value

    return lookup


def plan_of(source: str) -> Plan | None:
    """The plan of a template made only of text and plain lookups; None for any other (or
    one that does not parse)."""
    try:
        body = _parse(source).body
    except TemplateProblem:
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts: list[str | Lookup] = []
    for node in body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        path = _lookup_path(node)
        if path is None:
            return None
        parts.append(path)
    return tuple(parts)


def adopt(plans: Mapping[str, Plan]) -> None:
    """Compile templates from the plans their saga was checked with (`Saga.plans`) rather
    than by parsing them: a saga read back from the cache of checked sagas is run without its
    plain templates going through Jinja2's lexer and parser again."""
    env = _environment()
    for source, plan in plans.items():
        if source in _COMPILED:
            continue
        if len(_COMPILED) >= _COMPILED_AT_MOST:
            _COMPILED.clear()
        parts = tuple(p if isinstance(p, str) else _lookup_part(*p, env) for p in plan)
        _COMPILED[source] = _Compiled(parts, len(parts) == 1 and not isinstance(parts[0], str))


class Renderer:
    """Renders templated values; compiles each distinct source once in the process.

    With `on_secret`, every value a `{{ }}` produced while reading a secret (or a secret
    output) is handed to it, each expression on its own — in `/items?key={{ secrets.K }}`
    the key's value, not the whole URL (SPEC §2.2). A template with `{% %}` statements is
    handed on whole."""

    def __init__(self, on_secret: Callable[[Any], None] | None = None) -> None:
        self._env = _environment()
        self._compiled = _COMPILED
        self.on_secret = on_secret

    def _compile(self, source: str) -> _Compiled:
        compiled = self._compiled.get(source)
        if compiled is None:
            ast = _parse(source)
            try:
                compiled = self._parts(ast, source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateProblem(exc.message or str(exc), exc.lineno) from None
            if len(self._compiled) >= _COMPILED_AT_MOST:
                self._compiled.clear()
            self._compiled[source] = compiled
        return compiled

    def _parts(self, ast: nodes.Template, source: str) -> _Compiled:
        body = ast.body
        if len(body) != 1 or not isinstance(body[0], nodes.Output):
            return _Compiled(statements=self._env.from_string(source).render)
        parts: list[str | Part] = []
        checked = False
        for node in body[0].nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)
                continue
            lookup = self._lookup(node)
            if lookup is None:
                lookup = self._expression(node)
                checked = True
            parts.append(lookup)
        whole = len(parts) == 1 and not isinstance(parts[0], str)
        # Only an expression that builds values can hold strings written in it (plain
        # lookups are the commonest templates: spare walking their tree).
        constants = (
            frozenset(
                str(const.value)
                for const in ast.find_all(nodes.Const)
                if isinstance(const.value, str | int | float)
            )
            if checked
            else frozenset()
        )
        return _Compiled(tuple(parts), whole, constants=constants, checked=checked)

    def _lookup(self, node: nodes.Node) -> Part | None:
        """The commonest expression — a plain lookup such as `steps.a.outputs.id` — read by
        walking Jinja2's own syntax tree instead of compiling it: compiling costs about a
        millisecond, more than the request. None for any other."""
        path = _lookup_path(node)
        return None if path is None else _lookup_part(*path, self._env)

    def _expression(self, node: nodes.Node) -> Part:
        """Any other expression, compiled on its own, its value kept (and checked against the
        limits)."""
        from jinja2.environment import TemplateExpression

        assign = nodes.Assign(nodes.Name("result", "store"), copy.deepcopy(node), lineno=1)
        evaluate = TemplateExpression(
            self._env.from_string(nodes.Template([assign], lineno=1)), False
        )

        def expression(context: Mapping[str, Any]) -> Any:
            value = evaluate(**context)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            # A value the expression built (a list, a mapping) is checked whole; every
            # operator, filter and call in it was checked on its way.
            return _bounded(value)

        return expression

    def _run(self, compiled: _Compiled, context: Mapping[str, Any]) -> Any:
        tracked = self.on_secret
        if compiled.statements is not None:
            if tracked is None:
                return compiled.statements(**context)
            _reading.secret = False
            text = compiled.statements(**context)
            if _reading.secret:
                tracked(text)
            return text
        parts = compiled.parts
        if compiled.whole:
            part: Any = parts[0]
            if tracked is None:
                return part(context)
            _reading.secret = False
            value = part(context)
            if _reading.secret:
                tracked(
                    value if isinstance(value, str) else _leaves(value, context, compiled.constants)
                )
            return value
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if tracked is not None:
                _reading.secret = False
            text = str(part(context))
            if tracked is not None and _reading.secret:
                tracked(text)
            out.append(text)
        return _bounded_join(out) if compiled.checked else "".join(out)

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
                return self._run(self._compile(value), context)
            except jinja2.UndefinedError as exc:
                raise TemplateProblem(f"{value.strip()}: {exc.message}") from None
            except jinja2.TemplateError as exc:
                raise TemplateProblem(f"{value.strip()}: {exc}") from None
            except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
                raise TemplateProblem(f"{value.strip()}: {exc}") from None
            except RecursionError:
                raise TemplateProblem(f"{value.strip()}: nested too deeply") from None
            except MemoryError:
                raise TemplateProblem(f"{value.strip()}: {_too_large()}") from None
        if isinstance(value, Mapping):
            return {k: self.render(v, context) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.render(v, context) for v in value]
        return value

    def evaluate(self, expression: str, context: Mapping[str, Any]) -> Any:
        """The value of a bare expression. Raises TemplateProblem, saying what is wrong
        without repeating the expression (its caller names it)."""
        template = "{{ " + expression + " }}"
        try:
            return self.render(template, context)
        except TemplateProblem as exc:
            raise TemplateProblem(str(exc).removeprefix(f"{template.strip()}: ")) from None

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
        assign = nodes.Assign(nodes.Name("result", "store"), copy.deepcopy(node.expr), lineno=1)
        try:
            template = self._env.from_string(nodes.Template([assign], lineno=1))
            return True, TemplateExpression(template, False)(**context)
        except (jinja2.TemplateError, TypeError, ValueError, LookupError):
            return False, None
