"""JUnit XML reports (`--junit FILE`): one <testsuite> per run, one <testcase> per step action,
and one per compensation and confirm that ran, each with its own classname, so that CI
consumers (GitHub, GitLab, Jenkins) show every step; a foreach step has one per item
(`lines[2]`) instead.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sagactl.output.run_views import error_kind, item_keys
from sagactl.records import AttemptRecord, OperatorAction, RunRecord, StepRecord
from sagactl.redact import Redactor

__all__ = ["MESSAGE_BODY", "SNIPPET", "RunReport", "write_junit"]

SNIPPET = 2048
MESSAGE_BODY = 200
"""How much of a failing answer's body a failure's message quotes."""
_PHASES = ("action", "verify", "confirm", "compensate")


@dataclass(frozen=True)
class RunReport:
    """What the report needs of one run, read from the journal once it ended."""

    run: RunRecord
    steps: dict[tuple[str, str], StepRecord]
    attempts: Sequence[AttemptRecord]
    order: Sequence[str]
    not_cleaned: Sequence[str] = ()
    """For a run undone by `--cleanup` (`run.cleanup`), the steps whose cleanup did not
    finish (some never started: they waited on another step's), whose effect the services
    still hold."""
    actions: Sequence[OperatorAction] = ()
    """What operators did to the run by hand (SPEC §7): a property each."""


def _classname(report: RunReport, phase: str, cleanup: bool) -> str:
    return f"{report.run.name}.{'cleanup' if cleanup else phase}"


def _suite(report: RunReport) -> ET.Element:
    run = report.run
    suite = ET.Element(
        "testsuite",
        name=f"{run.name} {run.id}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.created_at)),
        hostname=socket.gethostname(),
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (("run", run.id), ("file", run.saga_path), ("status", run.status.value)):
        ET.SubElement(props, "property", name=name, value=value)
    for action in report.actions:
        ET.SubElement(
            props,
            "property",
            name="operator action",
            value=f"{action.action} {action.phase} of {action.step_id} by {action.user}@"
            f"{action.host} at {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(action.at))}: "
            f"{action.reason}",
        )
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    total = 0.0
    units = [
        key for step_id in report.order for key in item_keys(step_id, report.steps) or [step_id]
    ]
    for step_id in units:
        for phase in _PHASES:
            attempts = [a for a in report.attempts if a.step_id == step_id and a.phase == phase]
            # A run undone by --cleanup succeeded first: its every compensation is cleanup.
            cleanup = run.cleanup and phase == "compensate"
            record = report.steps.get((step_id, phase))
            left = cleanup and step_id in report.not_cleaned
            if not attempts and not left and phase != "action":
                continue
            seconds = sum(a.duration_ms or 0 for a in attempts) / 1000
            total += seconds
            case = ET.SubElement(
                suite,
                "testcase",
                name=step_id,
                classname=_classname(report, phase, cleanup),
                time=f"{seconds:.3f}",
            )
            counts["tests"] += 1
            if not attempts and left:
                counts["failures"] += 1
                ET.SubElement(
                    case,
                    "failure",
                    message="cleanup did not run: it waits on the cleanup of a step that "
                    "depends on it; the service still holds this step's effect",
                    type="not cleaned",
                )
                continue
            if not attempts and record is not None and record.state.value == "succeeded":
                continue  # a foreach step of no items: it succeeded, sending nothing
            if not attempts:
                ET.SubElement(case, "skipped", message="never started")
                counts["skipped"] += 1
                continue
            last = attempts[-1]
            state = record.state.value if record else "running"
            if last.outcome != "success" or state not in ("succeeded",):
                counts["failures"] += 1
                # The step's own error says why it is in doubt when an earlier attempt
                # is the reason; the last attempt's says only what it met.
                why = (
                    (record.error if record and record.error and not cleanup else None)
                    or last.error_message
                    or last.outcome
                )
                message = f"{phase} {state.replace('_', ' ')}: {why}"
                if last.response_body:
                    # What a CI reader needs first ("duplicate key"), in the message
                    # that CI pages show; the whole start of the body is in the text.
                    start = " ".join(last.response_body[:MESSAGE_BODY].split())
                    message += f"; response: {start}"
                failure = ET.SubElement(
                    case, "failure", message=message, type=error_kind(last.error_class)
                )
                lines = [
                    f"{last.method} {last.url}",
                    f"status: {last.status if last.status is not None else '-'}",
                    f"attempts: {len(attempts)}",
                ]
                doubtful = [str(a.attempt) for a in attempts if a.in_doubt]
                if doubtful:
                    lines.append(
                        f"in doubt: attempt {', '.join(doubtful)} may have reached the service"
                    )
                if last.response_body:
                    lines.append(last.response_body[:SNIPPET])
                failure.text = "\n".join(lines)
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", "0")
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{total:.3f}")
    return suite


def write_junit(
    path: str | Path, reports: Sequence[RunReport], redactor: Redactor | None = None
) -> None:
    """Write the report of every run, one <testsuite> each, in order; every text in it
    masked by `redactor` (before it is escaped as XML, and once more after)."""
    root = ET.Element("testsuites", name="sagactl")
    for report in reports:
        root.append(_suite(report))
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in root)))
    root.set("time", f"{sum(float(s.get('time', '0')) for s in root):.3f}")
    if redactor:
        for element in root.iter():
            if element.text:
                element.text = redactor.text(element.text)
            for name, value in element.attrib.items():
                element.set(name, redactor.text(value))
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=True)
    Path(path).write_text(redactor.text(text) if redactor else text, encoding="utf-8")
