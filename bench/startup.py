"""Start-up time of `sagactl --help` and `sagactl validate` on a 100-step saga, against
`python -c pass`, measured in the same run, interleaved, median of N runs.

    python bench/startup.py [--runs N]

Targets: --help <= 8x and validate <= 15x `python -c pass`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def saga_text(steps: int) -> str:
    lines = [
        "version: 1",
        "name: big",
        "inputs:",
        "  sku: {type: string}",
        "env: [BASE_URL]",
        "secrets: [TOKEN]",
        "vars:",
        "  base: \"{{ env.BASE_URL | default('http://127.0.0.1:8080') }}\"",
        "defaults:",
        '  base_url: "{{ vars.base }}"',
        '  headers: {Authorization: "Bearer {{ secrets.TOKEN }}"}',
        "steps:",
    ]
    for i in range(steps):
        needs = f"[s{i - 1}]" if i else "[]"
        ref = f"{{{{ steps.s{i - 1}.outputs.id }}}}" if i else "first"
        lines += [
            f"  - id: s{i}",
            f"    needs: {needs}",
            "    action:",
            "      method: POST",
            f"      url: /items/s{i}",
            f'      json: {{sku: "{{{{ inputs.sku }}}}", previous: "{ref}"}}',
            '      expect: {status: [200, 201], that: ["response.json.ok == true"]}',
            '    outputs: {id: "{{ response.json.id }}"}',
            "    compensate:",
            "      method: DELETE",
            f"      url: /items/s{i}/{{{{ steps.s{i}.outputs.id }}}}",
        ]
    return "\n".join(lines) + "\n"


def compile_sagactl() -> None:
    """Compile sagactl's modules to bytecode first, as a normal install does: an editable install
    run with PYTHONDONTWRITEBYTECODE set would otherwise compile every module on every start."""
    import compileall

    import sagactl

    compileall.compile_dir(Path(sagactl.__file__).parent, quiet=1)


def sagactl_command() -> list[str]:
    script = Path(sys.executable).parent / "sagactl"
    if script.exists():
        return [str(script)]
    found = shutil.which("sagactl")
    return [found] if found else [sys.executable, "-m", "sagactl"]


def measure(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():  # interleaved: drift hits every row alike
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    compile_sagactl()
    with tempfile.TemporaryDirectory() as tmp:
        saga = Path(tmp) / "big.yaml"
        saga.write_text(saga_text(100))
        sagactl = sagactl_command()
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            # What validate cannot do without: the libraries it must import, and nothing else.
            "import typer+yaml+jsonschema+jinja2": [
                sys.executable,
                "-c",
                "import typer, yaml, jsonschema, jinja2.sandbox",
            ],
            "sagactl --help": [*sagactl, "--help"],
            "sagactl validate (100 steps)": [*sagactl, "validate", str(saga)],
        }
        medians = measure(commands, args.runs)
    floor = medians["python -c pass"]
    targets = {"sagactl --help": 8.0, "sagactl validate (100 steps)": 15.0}
    print(f"{'command':<36} {'median ms':>10} {'ratio':>7} {'target':>7}")
    for name, seconds in medians.items():
        target = targets.get(name)
        verdict = "" if target is None else ("ok" if seconds / floor <= target else "MISSED")
        target_text = f"<={target:g}x" if target else ""
        print(
            f"{name:<36} {seconds * 1000:>10.1f} {seconds / floor:>6.2f}x {target_text:>7}"
            f" {verdict}"
        )
    print(f"({args.runs} runs each, interleaved; {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
