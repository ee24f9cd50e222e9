"""The example sagas shipped in sagas/ are valid and say which schema they follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import SAGAS, cli
from sagactl.definition.loader import load

EXAMPLES = sorted(SAGAS.glob("*.yaml"))


def test_there_are_the_promised_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"add-product", "book-trip", "warm-regions", "provision", "order"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    result = cli("validate", str(path))
    assert result.exit_code == 0, result.stderr
    assert f"{path}: ok: saga {path.stem}" in result.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_names_the_schema_on_its_first_line(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/saga.schema.json"
    assert (path.parent / "../schemas/saga.schema.json").resolve().is_file()


def test_validate_lists_kinds_needs_env_and_secrets() -> None:
    result = cli("validate", str(SAGAS / "book-trip.yaml"))
    assert result.stdout.splitlines()[1:] == [
        "  seat    compensatable  needs nothing     [compensate, confirm]",
        "  room    compensatable  needs nothing     [compensate, confirm]",
        "  notify  pivot          needs seat, room",
        "  env: TRAVEL_URL",
        "  secrets: -",
    ]


def test_validate_several_files_reports_every_bad_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nsteps: []\n")
    result = cli("validate", str(SAGAS / "add-product.yaml"), str(bad), str(tmp_path / "no.yaml"))
    assert result.exit_code == 2
    assert "ok: saga add-product" in result.stdout
    assert f"{bad}:3:8: steps: expected at least 1 item" in result.stderr
    assert f"{tmp_path / 'no.yaml'}: no such file" in result.stderr


def test_fan_out_example_runs_regions_side_by_side() -> None:
    saga = load(SAGAS / "warm-regions.yaml")
    regions = [s.id for s in saga.steps if s.id != "record"]
    assert all(saga.step(r).needs == () for r in regions)
    assert set(saga.step("record").needs) == set(regions)
