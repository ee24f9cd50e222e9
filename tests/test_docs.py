"""The docs cannot rot: every shell example marked `<!-- doctest -->` in the README and docs/
runs against the demo services, and its output must match what the docs show.

A marker may say `exit=N` (the expected exit code, default 0), `fail=SERVICE` (that demo
service rejects every action while the example runs), `flaky=SERVICE` (it answers 503
twice first) and `stuck=SERVICE` (it refuses every compensation). Values that change from
run to run — run ids, clock times, durations, ports, the journal path — are masked on both
sides.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT
from sagactl.demo import DemoFaults, demo_environment, demo_services
from sagactl.testing.service import Service

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_MARKER = re.compile(r"^<!-- doctest((?:\s+\w+=\S+)*)\s*-->$")
_MASKS = [
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<RUN>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\b"), "<DATE>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b"), "<TIME>"),
    (re.compile(r"\(\d+ms\)"), "(<MS>)"),
    (re.compile(r"\bin \d+\.\d+s\b"), "in <S>s"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
    (re.compile(r"\(journal [^)]+\)"), "(journal <JOURNAL>)"),
    (re.compile(r"waiting \S+ +"), "waiting <DURATION>  "),
]


@dataclass
class Example:
    doc: Path
    line: int
    language: str
    body: str
    options: dict[str, str]

    def __str__(self) -> str:
        return f"{self.doc.name}:{self.line}"


def examples(doc: Path) -> Iterator[Example]:
    lines = doc.read_text().splitlines()
    for i, line in enumerate(lines):
        marker = _MARKER.match(line.strip())
        if not marker:
            continue
        fence = lines[i + 1]
        assert fence.startswith("```"), (
            f"{doc.name}:{i + 1}: a doctest marker must precede a fenced block"
        )
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        options = dict(pair.split("=", 1) for pair in marker.group(1).split())
        yield Example(doc, i + 2, fence[3:].strip(), "\n".join(lines[i + 2 : end]), options)


ALL = [example for doc in DOCS for example in examples(doc)]


def mask(text: str) -> list[str]:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return [line.rstrip() for line in text.strip().splitlines()]


def commands(example: Example) -> Iterator[tuple[str, list[str] | None]]:
    """(command, expected output lines or None when the docs do not show them)."""
    if example.language == "sh":
        yield example.body, None
        return
    assert example.language == "console", f"{example}: a doctest is a console or sh block"
    current: str | None = None
    output: list[str] = []
    for line in example.body.splitlines():
        if line.startswith("$ "):
            if current is not None:
                yield current, output
            current, output = line[2:], []
        else:
            output.append(line)
    assert current is not None, f"{example}: a console block holds `$ command` lines"
    yield current, output


def test_the_docs_have_runnable_examples() -> None:
    assert len([e for e in ALL if e.doc.name == "README.md"]) >= 5


@dataclass
class Demo:
    env: dict[str, str]
    services: dict[str, Service]


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], Demo]]:
    """Each document gets its own demo services and journal, as a reader starting it would."""
    started: dict[Path, Demo] = {}
    with ExitStack() as stack:

        def get(doc: Path) -> Demo:
            if doc not in started:
                services = stack.enter_context(demo_services())
                env = {
                    **os.environ,
                    **demo_environment(services),
                    "NO_COLOR": "1",
                    "COLUMNS": "80",
                    "SAGACTL_JOURNAL": str(tmp_path_factory.mktemp("docs") / "journal.db"),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                }
                started[doc] = Demo(env, services)
            return started[doc]

        yield get


@pytest.mark.parametrize("example", ALL, ids=str)
def test_example(example: Example, demos: Callable[[Path], Demo]) -> None:
    demo = demos(example.doc)
    faults = DemoFaults(
        **{
            kind: example.options[kind].split(",")
            for kind in ("fail", "flaky", "stuck")
            if kind in example.options
        }
    )
    for name, service in demo.services.items():
        service.clear_faults()
        faults.apply(name, service)
    expected_exit = int(example.options.get("exit", "0"))
    for command, expected in commands(example):
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=demo.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        assert proc.returncode == expected_exit, f"{example}: {command}\n{proc.stdout}"
        if expected is not None:
            actual, wanted = mask(proc.stdout), mask("\n".join(expected))
            # Steps that run side by side may finish in either order.
            assert actual == wanted or Counter(actual) == Counter(wanted), (
                f"{example}: {command}\n" + "\n".join(actual)
            )
    for service in demo.services.values():
        service.clear_faults()
