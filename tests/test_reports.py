"""What CI sees: JSON Lines, JUnit reports, --cleanup, several files in one call, --env-file."""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree

import sagas
from helpers import Runs
from sagactl.testing.service import Fault, Service

XSD = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "junit.xsd")))


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def junit(path: Path) -> etree._Element:
    tree = etree.parse(str(path))
    XSD.assertValid(tree)
    return tree.getroot()


def test_json_lines_events_then_a_summary(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/c/", status=400))
    result = runs("run", str(runs.file(sagas.THREE)), "--output", "json")
    assert result.exit_code == 1
    records = lines(result.stdout)
    assert all(r["v"] == 1 for r in records)
    kinds = [r["event"] for r in records]
    assert kinds[0] == "run_started" and kinds[-2:] == ["run_finished", "summary"]
    assert "attempt_finished" in kinds and "phase_started" in kinds
    summary = records[-1]
    assert summary["status"] == "compensated" and summary["exit_code"] == 1
    assert [(s["id"], s["action"], s["compensate"]) for s in summary["steps"]] == [
        ("a", "succeeded", "succeeded"),
        ("b", "succeeded", "succeeded"),
        ("c", "failed", None),
    ]
    listed = lines(runs("list", "--output", "json").stdout)
    assert [r["run"] for r in listed] == [summary["run"]]
    shown = json.loads(runs("show", str(summary["run"]), "--output", "json").stdout)
    assert shown["status"] == "compensated"
    assert shown["steps"][0]["outputs"] == {"ident": summary["run"]}
    assert [a["status"] for a in shown["attempts"]] == [201, 201, 400, 200, 200]


def test_junit_report_has_a_testcase_per_step_and_phase(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/c/", status=400))
    report = runs.tmp / "report.xml"
    result = runs("run", str(runs.file(sagas.THREE)), "--junit", str(report))
    assert result.exit_code == 1
    root = junit(report)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "5"
    cases = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    assert cases == [
        ("three.action", "a"),
        ("three.compensate", "a"),
        ("three.action", "b"),
        ("three.compensate", "b"),
        ("three.action", "c"),
    ]
    failure = suite.find("testcase[@name='c']/failure")
    assert failure is not None
    # The start of the answer in the message, which CI pages show first.
    assert failure.get("message") == (
        'action failed: status 400, expected 2xx; response: {"error": "injected"}'
    )
    assert failure.get("type") == "status"
    assert "PUT http://127.0.0.1:" in (failure.text or "")
    assert "status: 400" in (failure.text or "") and '"injected"' in (failure.text or "")


def test_cleanup_undoes_a_successful_run_and_reports_it(runs: Runs, service: Service) -> None:
    report = runs.tmp / "report.xml"
    result = runs("run", str(runs.file(sagas.TCC)), "--cleanup", "--junit", str(report))
    assert result.exit_code == 0, result.stdout
    assert service.resources == {}
    phases = [r.headers["Saga-Phase"] for r in service.received]
    assert phases == ["action"] * 3 + ["confirm"] * 3 + ["compensate"] * 3
    suite = junit(report).find("testsuite")
    assert suite is not None
    classes = [c.get("classname") for c in suite.iter("testcase")]
    assert classes.count("tcc.cleanup") == 3 and classes.count("tcc.confirm") == 3
    assert suite.get("failures") == "0"
    status = suite.find("properties/property[@name='status']")
    assert status is not None and status.get("value") == "cleaned"
    assert " cleaned in " in result.stdout and "cause" not in result.stdout


def test_cleanup_that_cannot_finish_is_stuck(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("DELETE", "/room/", status=500, times=None))
    result = runs("run", str(runs.file(sagas.TCC)), "--cleanup")
    assert result.exit_code == 3


def test_a_stuck_cleanup_reports_every_step_left_in_the_service(
    runs: Runs, service: Service
) -> None:
    """`mail` needs seat and room: its cleanup fails, so theirs never start, and all three
    are still held by the service. Each is a failure in the report, and each failure's
    message quotes the start of the answer where there was one."""
    service.faults.append(
        Fault("DELETE", "/mail/", status=409, times=None, body={"error": "mail already sent"})
    )
    report = runs.tmp / "report.xml"
    result = runs("run", str(runs.file(sagas.TCC)), "--cleanup", "--junit", str(report))
    assert result.exit_code == 3, result.stdout
    held = {path.split("/")[1] for path in service.resources}
    assert held == {"seat", "room", "mail"}
    suite = junit(report).find("testsuite")
    assert suite is not None
    failed = {
        case.get("name"): case.find("failure")
        for case in suite.iter("testcase")
        if case.get("classname") == "tcc.cleanup" and case.find("failure") is not None
    }
    assert set(failed) == held
    mail = failed["mail"]
    assert mail is not None and "mail already sent" in (mail.get("message") or "")
    seat = failed["seat"]
    assert seat is not None and "cleanup did not run" in (seat.get("message") or "")
    assert suite.get("failures") == "3"
    status = suite.find("properties/property[@name='status']")
    assert status is not None and status.get("value") == "stuck"


def test_cleanup_refuses_sagas_with_a_pivot_before_sending(runs: Runs, service: Service) -> None:
    result = runs("run", str(runs.file(sagas.PIVOT)), "--cleanup")
    assert result.exit_code == 2
    assert "--cleanup cannot undo pivot step charge" in result.stderr
    assert service.received == []


def test_several_files_run_in_order_with_the_worst_exit_code(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/mail/", status=400))
    report = runs.tmp / "report.xml"
    files = [
        str(runs.file(sagas.THREE, "one.yaml")),
        str(runs.file(sagas.TCC, "two.yaml")),
        str(runs.file(sagas.THREE, "three.yaml")),
    ]
    result = runs("run", *files, "--junit", str(report))
    assert result.exit_code == 1
    assert result.stdout.count(" succeeded in ") == 2
    assert result.stdout.count(" compensated in ") == 1
    suites = junit(report).findall("testsuite")
    assert [s.get("name", "").split()[0] for s in suites] == ["three", "tcc", "three"]


def test_a_bad_file_among_several_stops_everything(runs: Runs, service: Service) -> None:
    bad = runs.file("version: 1\nname: x\nsteps: []\n", "bad.yaml")
    result = runs("run", str(runs.file(sagas.THREE)), str(bad))
    assert result.exit_code == 2
    assert f"{bad}:3:8: steps: expected at least 1 item" in result.stderr
    assert service.received == []


def test_env_file_provides_env_and_secrets(runs: Runs, service: Service) -> None:
    env_file = runs.tmp / ".env"
    env_file.write_text(f"BASE={service.url}\nTOKEN='from-the-file'\n")
    result = runs(
        "run", str(runs.file(sagas.THREE)), "--env-file", str(env_file), BASE=None, TOKEN=None
    )
    assert result.exit_code == 0, result.stderr
    assert service.received[0].headers["Authorization"] == "Bearer from-the-file"
    overridden = runs("run", str(runs.file(sagas.THREE)), "--env-file", str(env_file))
    assert overridden.exit_code == 0
    assert service.received[-1].headers["Authorization"] != "Bearer from-the-file"
    bad = runs("run", str(runs.file(sagas.THREE)), "--env-file", str(runs.tmp / "none"))
    assert bad.exit_code == 2 and "no such env file" in bad.stderr


def test_plan_reads_the_env_file_too(runs: Runs, service: Service) -> None:
    env_file = runs.tmp / ".env"
    env_file.write_text("BASE=http://127.0.0.1:7/base\nTOKEN='token-from-the-file'\n")
    planned = runs(
        "plan", str(runs.file(sagas.THREE)), "--env-file", str(env_file), BASE=None, TOKEN=None
    )
    assert planned.exit_code == 0, planned.stderr
    assert "PUT http://127.0.0.1:7/base/a/" in planned.stdout
    assert "token-from-the-file" not in planned.stdout and "Authorization: ***" in planned.stdout
    bad = runs("plan", str(runs.file(sagas.THREE)), "--env-file", str(runs.tmp / "none"))
    assert bad.exit_code == 2 and "no such env file" in bad.stderr


def test_a_run_id_with_several_files_names_each_run_after_its_saga(
    runs: Runs, service: Service
) -> None:
    files = [str(runs.file(sagas.THREE, "one.yaml")), str(runs.file(sagas.TCC, "two.yaml"))]
    result = runs("run", *files, "--run-id", "build-7")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "build-7-three" in lines and "build-7-tcc" in lines
    keys = {r.headers["Idempotency-Key"].split(".")[0] for r in service.received}
    assert keys == {"build-7-three", "build-7-tcc"}
    count = len(service.received)
    twice = runs("run", files[0], files[0], "--run-id", "build-8")
    assert twice.exit_code == 2 and "build-8-three" in twice.stderr
    long = runs("run", *files, "--run-id", "b" * 60)
    assert long.exit_code == 2 and "--run-id" in long.stderr
    assert len(service.received) == count  # refused before anything was sent


def test_a_bad_run_id_with_several_files_is_named_as_given(runs: Runs, service: Service) -> None:
    files = [str(runs.file(sagas.THREE, "one.yaml")), str(runs.file(sagas.THREE, "two.yaml"))]
    bad = runs("run", *files, "--run-id", "bad id")
    assert bad.exit_code == 2 and "--run-id 'bad id': use 4 to 64" in bad.stderr, bad.stderr
    assert service.received == []


def test_a_taken_run_id_is_refused_before_any_run_starts(runs: Runs, service: Service) -> None:
    files = [str(runs.file(sagas.THREE, "one.yaml")), str(runs.file(sagas.TCC, "two.yaml"))]
    assert runs("run", files[1], "--run-id", "bld9-tcc").exit_code == 0
    count = len(service.received)
    clash = runs("run", *files, "--run-id", "bld9")
    assert clash.exit_code == 4 and "a run with id bld9-tcc already exists" in clash.stderr
    assert len(service.received) == count  # bld9-three was not run either
