"""`sagactl demo`: the newcomer's first command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, cli, cli_process
from sagactl.journal import open_journal
from sagactl.records import RunStatus


def test_demo_shows_a_success_then_a_compensation(tmp_path: Path) -> None:
    journal = tmp_path / "demo.db"
    result = cli("demo", "--journal", str(journal))
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Demo services on 127.0.0.1: inventory http://127.0.0.1:")
    assert "1. A run that succeeds" in out and "2. A run where search rejects" in out
    second = out[out.index("2. A run") :]
    undo = [line.split()[1] for line in second.splitlines() if " compensate attempt " in line]
    assert undo == ["price", "reserve"]
    with open_journal(journal) as store:
        runs = store.list_runs()
    assert [r.status for r in runs] == [RunStatus.COMPENSATED, RunStatus.SUCCEEDED]
    assert f"sagactl show {runs[0].id} --journal {journal}" in out
    # the report it suggests, run as printed, holds both runs
    suggested = re.search(r"^  sagactl (report .+)$", out, re.MULTILINE)
    assert suggested, out
    made = cli_process(*suggested.group(1).split(), cwd=tmp_path)
    assert made.exit_code == 0, made.stderr
    page = (tmp_path / "demo.html").read_text()
    assert [m.group(1) for m in re.finditer(r'<section class="run" data-run="(\w+)"', page)] == [
        runs[1].id,
        runs[0].id,
    ]


def test_demo_faults(tmp_path: Path) -> None:
    flaky = cli("demo", "--journal", str(tmp_path / "a.db"), "--flaky", "search")
    assert flaky.exit_code == 0
    assert "index action attempt 3 201" in flaky.stdout
    failing = cli("demo", "--journal", str(tmp_path / "b.db"), "--fail", "pricing")
    assert failing.exit_code == 0
    assert "A run where pricing rejects every action." in failing.stdout
    assert re.search(r"run \w+ compensated", failing.stdout)
    assert cli("demo", "--fail", "billing").exit_code == 2


def test_demo_serve_prints_a_command_that_works(tmp_path: Path) -> None:
    env = {**os.environ, "SAGACTL_JOURNAL": str(tmp_path / "j.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagactl", "demo", "--serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    while not lines or not lines[-1].startswith("Ctrl-C"):
        lines.append(proc.stdout.readline().strip())
    exports = next(line for line in lines if line.startswith("export "))
    command = next(line for line in lines if line.startswith("sagactl run "))
    assert command == "sagactl run sagas/add-product.yaml -i sku=ABC-1 -i price=9.5"
    run_env = dict(pair.split("=", 1) for pair in exports.removeprefix("export ").split())
    result = cli(*command.split()[1:], env={**run_env, "SAGACTL_JOURNAL": env["SAGACTL_JOURNAL"]})
    assert result.exit_code == 0, result.stdout
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
