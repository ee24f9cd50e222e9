"""--env-file: dotenv syntax, the environment wins, bad lines named with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagactl.definition.envfile import read_env_file, with_env_file
from sagactl.errors import UsageError


def test_dotenv_syntax(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# a comment\n\n"
        "export URL=http://127.0.0.1:1\n"
        "TOKEN='a b # not a comment'\n"
        'QUOTED="line\\nnext \\"x\\" \\\\"\n'
        "PLAIN = value   # a comment\n"
        "EMPTY=\n"
    )
    assert read_env_file(path) == {
        "URL": "http://127.0.0.1:1",
        "TOKEN": "a b # not a comment",
        "QUOTED": 'line\nnext "x" \\',
        "PLAIN": "value",
        "EMPTY": "",
    }


def test_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=file\nB=file\n")
    assert with_env_file({"A": "env"}, path) == {"A": "env", "B": "file"}
    assert with_env_file({"A": "env"}, None) == {"A": "env"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nnot a line\n", ":2: expected KEY=VALUE"),
        ("A='open\n", ":1: unclosed single quote"),
        ('A="open\n', ":1: unclosed double quote"),
        ("1A=x\n", ":1: expected KEY=VALUE"),
    ],
)
def test_bad_lines(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / ".env"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_env_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such env file"):
        read_env_file(tmp_path / "nope")
