"""A saga file's YAML read as plain data, with where each value and key stands (for messages).

YAML 1.2 scalars: only `true`/`false` are booleans (`on`, `no`, `yes` stay strings) and dates
stay strings, so what a file says is what is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["JsonPath", "Positions", "YamlProblem", "parse_data", "read_yaml"]

JsonPath = tuple[str | int, ...]
"""Where a value stands in the document: keys and list indexes from the root."""
_MAX_NODES = 200_000


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
class Positions:
    values: dict[JsonPath, tuple[int, int]]
    keys: dict[JsonPath, tuple[int, int]]

    def value(self, path: JsonPath) -> tuple[int, int]:
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def key(self, path: JsonPath) -> tuple[int, int]:
        return self.keys.get(path) or self.value(path)


class YamlProblem(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def read_yaml(text: str) -> tuple[Any, Positions, list[tuple[JsonPath, str, tuple[int, int]]]]:
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
        raise YamlProblem(
            mark.line + 1 if mark else 1,
            mark.column + 1 if mark else 1,
            f"YAML syntax error: {problem}",
        ) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, 1, f"YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    positions = Positions({}, {})
    problems: list[tuple[JsonPath, str, tuple[int, int]]] = []
    active: set[int] = set()
    count = 0

    def convert(node: yaml.Node, path: JsonPath) -> Any:
        nonlocal count
        count += 1
        if count > _MAX_NODES:
            raise YamlProblem(*_mark(node), "the document is too large once aliases are expanded")
        if id(node) in active:
            raise YamlProblem(*_mark(node), "an alias refers to a node that contains it")
        positions.values.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            active.add(id(node))
            try:
                loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                raise YamlProblem(*_mark(node), f"YAML error: {exc.problem}") from None
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlProblem(*_mark(key_node), "a mapping key must be a plain string")
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
            raise YamlProblem(*_mark(node), f"YAML error: {exc.problem}") from None
        if value is not None and not isinstance(value, str | int | float | bool):
            raise YamlProblem(*_mark(node), f"unsupported YAML value of type {node.tag}")
        return value

    return convert(root, ()) if root is not None else None, positions, problems


def parse_data(text: str) -> Any:
    """Plain data from YAML or JSON text, with the same scalar rules as saga files.

    Raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)
