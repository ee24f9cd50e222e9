"""`--env-file FILE`: environment values in dotenv syntax, for `env` and `secrets`.

    # comments and blank lines are skipped
    export INVENTORY_URL=http://127.0.0.1:8081
    SHOP_TOKEN='single quotes keep everything as written'
    GREETING="double quotes understand \\n, \\" and \\\\"
    PLAIN=value   # a comment after an unquoted value

Values already in the environment win over the file's, so that a CI secret is never shadowed
by a developer's file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from sagactl.definition.inputs import read_user_file
from sagactl.errors import UsageError

__all__ = ["read_env_file", "with_env_file"]

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _value(raw: str, where: str) -> str:
    if raw.startswith("'"):
        if not raw.endswith("'") or len(raw) < 2:
            raise UsageError(f"{where}: unclosed single quote")
        return raw[1:-1]
    if raw.startswith('"'):
        match = re.match(r'^"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$', raw)
        if not match:
            raise UsageError(f"{where}: unclosed double quote")
        return re.sub(
            r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), match.group(1)
        )
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def read_env_file(path: str | Path) -> dict[str, str]:
    """The values of a dotenv file. Raises UsageError naming the file and line."""
    text = read_user_file(path, "env file")
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if not match:
            raise UsageError(f"{path}:{number}: expected KEY=VALUE")
        values[match.group(1)] = _value(match.group(2).strip(), f"{path}:{number}")
    return values


def with_env_file(environ: Mapping[str, str], path: str | Path | None) -> dict[str, str]:
    """The environment with the file's values added under it."""
    return {**(read_env_file(path) if path else {}), **environ}
