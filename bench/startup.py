"""Start-up time of `sagactl --help` and `sagactl validate` on a 100-step saga, against
their floors, measured in the same run, interleaved, median of N runs.

    python bench/startup.py [--runs N]

`validate` is timed twice: the first time (its cache of checked sagas cannot be written, so
the file is validated from scratch each run) and seen before (read back from the cache).
Targets: --help <= 8x `python -c pass`; validate <= 1.15x importing the libraries it needs.
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
        no_cache = Path(tmp) / "no-cache"
        no_cache.write_text("")  # a file where the cache's directory would be
        sagactl = sagactl_command()
        imports = "import typer+yaml+jsonschema+jinja2"
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            # What validate cannot do without: the libraries it must import, and nothing else.
            imports: [sys.executable, "-c", "import typer, yaml, jsonschema, jinja2.sandbox"],
            "sagactl --help": [*sagactl, "--help"],
            "sagactl validate (100 steps), first": [
                "env",
                f"XDG_CACHE_HOME={no_cache}",
                *sagactl,
                "validate",
                str(saga),
            ],
            "sagactl validate (100 steps), again": [
                "env",
                f"XDG_CACHE_HOME={tmp}/cache",
                *sagactl,
                "validate",
                str(saga),
            ],
        }
        medians = measure(commands, args.runs)
    targets = {
        "sagactl --help": ("python -c pass", 8.0),
        "sagactl validate (100 steps), first": (imports, 1.15),
        "sagactl validate (100 steps), again": (imports, 1.15),
    }
    print(f"{'command':<38} {'median ms':>10} {'ratio':>7}  target")
    for name, seconds in medians.items():
        floor_name, target = targets.get(name, ("python -c pass", 0.0))
        ratio = seconds / medians[floor_name]
        verdict = f"<= {target:g}x {floor_name}: {'ok' if ratio <= target else 'MISSED'}"
        print(f"{name:<38} {seconds * 1000:>10.1f} {ratio:>6.2f}x  {verdict if target else ''}")
    print(f"({args.runs} runs each, interleaved; {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
