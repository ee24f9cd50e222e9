"""Every place that writes — a sink — goes through the one redactor (SPEC §4).

`SINKS` lists each function of sagactl that writes output, and where it writes. A new one
fails this test until it is listed: listing it is where its author checks that what it writes
is masked, and that tests/test_secrets.py reads that sink. The sinks are:

- terminal: standard output and error, which the command line masks as a whole
  (`sagactl.cli._root` wraps them in `Redactor.stream`);
- journal: SQLite, written only by sagactl.journal, from values the engine masked;
- junit: the XML report, masked by `write_junit`;
- report and pages: the HTML report file and the dashboard's pages, masked by
  `output.pages.views._render` (the dashboard's answers are written by the server, not by a
  writer this test sees);
- notify: the summary a notification POSTs or gives a command (SPEC §6), masked by
  `api.notify_run` (the network and the command's input are written to by httpx and
  subprocess, not by a writer this test sees);
- not a sink: the network (requests carry secrets to the services that need them), code
  generated for templates, the masking stream itself, the demo services.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT, cli

SOURCE = ROOT / "src" / "sagactl"

WRITERS = {"echo", "write", "write_text", "write_bytes", "print", "writelines", "sendall", "send"}

SINKS: dict[str, str] = {
    "cli._reported": "terminal",
    "cli._version": "terminal",
    "cli._known_secrets": "terminal",
    "cli.validate": "terminal",
    "cli.plan": "terminal",
    "cli.graph": "terminal",
    "cli.schema": "terminal",
    "cli._signals.handler": "terminal",
    "cli._drive.report": "terminal",
    "cli._drive.tell": "terminal",
    "cli._drive": "terminal",
    "cli._run_each": "terminal",
    "cli.submit": "terminal",
    "cli.submit.told": "terminal",
    "cli.worker": "terminal",
    "cli.worker.ended": "terminal",
    "cli.worker.problem": "terminal",
    "cli.list_command": "terminal",
    "cli.show": "terminal",
    "cli._operate": "terminal",
    "cli.metrics": "terminal",
    "cli._write_report": "report",
    "cli.report_command": "terminal",
    "cli.ui": "terminal",
    "cli.demo": "terminal",
    "demo.run_demo": "terminal",
    "output.live.LiveView.close": "terminal",
    "output.live.LiveView.print_summary": "terminal",
    "output.lines.PlainLines.line": "terminal",
    "output.lines.PlainLines.exchange": "terminal",
    "output.lines.JsonLines.write": "terminal",
    "output.lines.JsonLines.__call__": "terminal",
    "output.junit.write_junit": "junit",
    "output.batch.EachLines._write": "terminal",
    "output.batch.EachProgress.__call__": "terminal",
    "output.batch.EachProgress.close": "terminal",
    "output.batch.EachJson._write": "terminal",
    "definition.cache.remember": "cache: the checked saga, its file's text and nothing else",
    "redact._MaskedStream.write": "not a sink: the mask itself",
    "definition.templating._BoundedCodeGenerator.visit_Concat": "not a sink: generated code",
    "executors.http.transport._Stream.write": "not a sink: the network",
    "executors.http.attempt._attempt": "not a sink: the network (client.send)",
}
"""Every function that calls a writer, by module and qualified name."""

NOT_CHECKED = {"testing/service.py"}
"""The demo services: a service, not a sink of sagactl's."""


def writers() -> set[str]:
    """Each `module.function` of sagactl that calls a write method or `print`."""
    found: set[str] = set()
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if relative.as_posix() in NOT_CHECKED:
            continue
        module = ".".join(relative.with_suffix("").parts)
        tree = ast.parse(path.read_text())

        def visit(node: ast.AST, scope: tuple[str, ...], module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    visit(child, (*scope, child.name))
                    continue
                if isinstance(child, ast.Call):
                    func = child.func
                    name = (
                        func.attr
                        if isinstance(func, ast.Attribute)
                        else func.id
                        if isinstance(func, ast.Name)
                        else ""
                    )
                    if name in WRITERS and scope:
                        found.add(".".join((module, *scope)))
                visit(child, scope)

        visit(tree, ())
    return found


def test_every_place_that_writes_is_a_known_sink() -> None:
    unknown = sorted(writers() - set(SINKS))
    assert unknown == [], (
        f"new output paths: {unknown}. Add each to SINKS with the sink it writes to, make "
        "sure the redactor masks what it writes, and that tests/test_secrets.py reads it"
    )
    gone = sorted(set(SINKS) - writers())
    assert gone == [], f"SINKS lists places that no longer write: {gone}"


def test_nothing_writes_past_the_masked_streams() -> None:
    """The original streams, raw file descriptors and binary buffers would bypass the mask."""
    for path in sorted(SOURCE.rglob("*.py")):
        if path.name in NOT_CHECKED:
            continue
        text = path.read_text()
        for bypass in (
            "sys.__stdout__",
            "sys.__stderr__",
            "os.write(",
            ".buffer.write",
            "stdout.buffer",
            "stderr.buffer",
        ):
            assert bypass not in text, f"{path.name}: {bypass}"


def test_the_terminal_is_masked_whatever_prints(tmp_path: Path) -> None:
    """An error while rendering `vars` quotes the template's value; the terminal shows ***
    (it once quoted the secret on stderr)."""
    saga = tmp_path / "s.yaml"
    saga.write_text("""\
version: 1
name: s
secrets: [S]
inputs: {k: {type: object, default: {}}}
vars:
  v: "{{ inputs.k[secrets.S] }}"
steps:
  - id: a
    action: {method: GET, url: "http://127.0.0.1:9/{{ vars.v }}"}
""")
    secret = "s3cr3t/+=value"
    result = cli("run", str(saga), env={"S": secret, "SAGACTL_JOURNAL": str(tmp_path / "j.db")})
    assert result.exit_code == 2, result.stderr
    assert "vars.v" in result.stderr and "***" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert "s3cr3t" not in result.stderr + result.stdout
