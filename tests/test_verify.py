"""`verify` (SPEC §2.6): the probe that settles an action in doubt — applied (the run goes on,
outputs read from its answer), absent (sent again going forward, not compensated going back),
or neither (the doubt stays). Checked on what the service received and holds."""

from __future__ import annotations

import json
import re

import pytest

from helpers import Runs, wait_for
from sagactl.journal import open_journal
from sagactl.records import StepState
from sagactl.testing.service import Fault, Service

CHARGE = """\
version: 1
name: charge
env: [BASE]
defaults: {base_url: "{{ env.BASE }}", timeout: 300ms, retry: {attempts: 1}}
steps:
  - id: charge
    action: {method: PUT, url: "/charges/{{ run.id }}", json: {amount: 5}}
    outputs: {amount: "{{ response.json.amount }}"}
    verify:
      method: GET
      url: "/charges/{{ run.id }}"
      applied: "response.status == 200"
      absent: "response.status == 404"
    compensate: {method: DELETE, url: "/charges/{{ run.id }}"}
  - id: ship
    action:
      method: PUT
      url: "/ships/{{ run.id }}"
      json: {amount: "{{ steps.charge.outputs.amount }}"}
    compensate: {method: DELETE, url: "/ships/{{ run.id }}"}
"""


def charges(service: Service, method: str) -> list[str | None]:
    """The `Saga-Attempt` of each request of `method` to /charges/."""
    return [r.headers.get("Saga-Attempt") for r in service.requests(method, "/charges/")]


def test_an_action_in_doubt_that_took_effect_goes_on(runs: Runs, service: Service) -> None:
    """Its answer came too late: the verify finds the charge, so the run goes on, with the
    charge's outputs read from the verify's answer."""
    service.faults.append(Fault("PUT", "/charges/", kind="delay_after", delay=0.5))
    result, run_id = runs.run(CHARGE)
    assert result.exit_code == 0, result.stdout
    assert "charge verify: applied: its action took effect" in result.stdout
    assert service.resources[f"/ships/{run_id}"] == {"amount": 5}
    assert charges(service, "PUT") == ["1"] and charges(service, "DELETE") == []
    verify = service.requests("GET", "/charges/")[0].headers
    assert verify["Idempotency-Key"] == f"{run_id}.charge.verify"
    assert (verify["Saga-Phase"], verify["Saga-Attempts-Sent"]) == ("verify", "1")
    with open_journal(runs.journal) as journal:
        steps = journal.steps(run_id)
    assert steps[("charge", "action")].state is StepState.SUCCEEDED
    assert steps[("charge", "action")].outputs == {"amount": 5}
    assert steps[("charge", "verify")].state is StepState.SUCCEEDED


def test_an_action_in_doubt_that_never_arrived_is_not_undone(runs: Runs, service: Service) -> None:
    """Held past its timeout before it is applied: the verify finds nothing, so there is
    nothing to undo — and the late request is refused when it lands."""
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=0.5))
    result, run_id = runs.run(CHARGE)
    assert result.exit_code == 1, result.stdout
    assert (
        "cause: step charge: no answer within the timeout (0.3s); its verify says it never "
        "took effect" in result.stdout
    ), result.stdout
    wait_for(lambda: bool(service.refused_late))
    assert service.refused_late == [f"{run_id}.charge.action"]
    assert charges(service, "DELETE") == [] and service.resources == {}


def test_a_verify_that_settles_nothing_leaves_the_doubt(runs: Runs, service: Service) -> None:
    service.faults += [
        Fault("PUT", "/charges/", kind="delay_after", delay=0.5),
        Fault("GET", "/charges/", status=409, body={"error": "ask later"}),
    ]
    result, run_id = runs.run(CHARGE)
    assert result.exit_code == 1, result.stdout
    assert "charge verify failed: verify settles nothing: neither applied" in result.stdout
    # Asked again before it is compensated: the second answer settles it.
    assert charges(service, "GET") == ["1", "2"]
    assert charges(service, "DELETE") == ["1"]
    assert service.resources == {}
    shown = runs("show", run_id).stdout
    assert re.search(r"charge verify #1 +409 failure \S+  verify settles nothing", shown), shown
    assert re.search(r"charge verify #2 +200 success", shown), shown


def test_a_pivot_in_doubt_that_never_arrived_lets_the_run_roll_back(
    runs: Runs, service: Service
) -> None:
    """Without its verify, a pivot in doubt leaves the run stuck; settled absent, the steps
    before it are undone."""
    text = CHARGE.replace(
        '    compensate: {method: DELETE, url: "/charges/{{ run.id }}"}\n', ""
    ).replace(
        "  - id: charge\n",
        "  - id: first\n"
        '    action: {method: PUT, url: "/first/{{ run.id }}"}\n'
        '    compensate: {method: DELETE, url: "/first/{{ run.id }}"}\n'
        "  - id: charge\n",
    )
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=0.5))
    result, run_id = runs.run(text)
    assert result.exit_code == 1, result.stdout
    assert [r.path for r in service.requests("DELETE")] == [f"/first/{run_id}"]
    wait_for(lambda: bool(service.refused_late))
    assert service.resources == {}
    without = text.replace(text[text.index("    verify:") : text.index("  - id: ship")], "")
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=0.5))
    stuck, _ = runs.run(without)
    assert stuck.exit_code == 3, stuck.stdout


def _killed_while_charging(runs: Runs, service: Service, delay: float) -> str:
    """A real process SIGKILLed while the charge is held by the service for `delay`."""
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=delay))
    saga = runs.file(CHARGE.replace("timeout: 300ms", "timeout: 10s"))
    proc = runs.start("run", str(saga))
    wait_for(lambda: bool(service.requests("PUT", "/charges/")))
    proc.kill()
    proc.communicate(timeout=20)
    with open_journal(runs.journal) as journal:
        return journal.list_runs(limit=1)[0].id


def test_after_a_kill_a_charge_that_landed_is_not_sent_again(runs: Runs, service: Service) -> None:
    run_id = _killed_while_charging(runs, service, 0.3)
    wait_for(lambda: f"/charges/{run_id}" in service.resources)
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    assert charges(service, "PUT") == ["1"]  # asked, not sent again
    assert service.resources[f"/ships/{run_id}"] == {"amount": 5}


def test_after_a_kill_a_charge_that_never_landed_is_sent_again(
    runs: Runs, service: Service
) -> None:
    """Asked before the held request lands: absent, so it is sent again with the same key (as
    attempt 2, above the 1 the verify was told of); the held one, landing later, is answered
    from the service's record. Applied once."""
    run_id = _killed_while_charging(runs, service, 1.5)
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    assert "charge verify: absent: its action never took effect" in resumed.stdout
    assert service.requests("GET", "/charges/")[0].headers["Saga-Attempts-Sent"] == "1"
    assert charges(service, "PUT") == ["1", "2"]
    assert [key for key, _, path in service.applied if path.startswith("/charges/")] == [
        f"{run_id}.charge.action"
    ]
    assert service.resources[f"/ships/{run_id}"] == {"amount": 5}


def test_after_a_kill_compensate_asks_before_undoing(runs: Runs, service: Service) -> None:
    run_id = _killed_while_charging(runs, service, 1.5)
    undone = runs("compensate", run_id)
    assert undone.exit_code == 0, undone.stdout
    assert charges(service, "DELETE") == []  # absent: nothing to undo
    wait_for(lambda: bool(service.refused_late))
    assert service.resources == {}


def test_each_item_in_doubt_is_verified_on_its_own(runs: Runs, service: Service) -> None:
    text = """\
version: 1
name: lines
env: [BASE]
defaults: {base_url: "{{ env.BASE }}", timeout: 300ms, retry: {attempts: 1}}
steps:
  - id: lines
    foreach: [a, b, c]
    as: sku
    action: {method: PUT, url: "/lines/{{ run.id }}/{{ item.sku }}", json: {sku: "{{ item.sku }}"}}
    outputs: {sku: "{{ response.json.sku }}"}
    verify:
      method: GET
      url: "/lines/{{ run.id }}/{{ item.sku }}"
      applied: "response.status == 200"
      absent: "response.status == 404"
    compensate: {method: DELETE, url: "/lines/{{ run.id }}/{{ item.sku }}"}
  - id: total
    action:
      {method: PUT, url: "/totals/{{ run.id }}", json: {skus: "{{ steps.lines.outputs.sku }}"}}
"""
    service.faults.append(Fault("PUT", "/lines/", suffix="/b", kind="delay_after", delay=0.5))
    result, run_id = runs.run(text)
    assert result.exit_code == 0, result.stdout
    assert "lines[1] verify: applied: its action took effect" in result.stdout
    verify = service.requests("GET", "/lines/")[0].headers
    assert verify["Idempotency-Key"] == f"{run_id}.lines[1].verify"
    assert service.resources[f"/totals/{run_id}"] == {"skus": ["a", "b", "c"]}


def test_show_json_junit_and_plan_show_the_verify(runs: Runs, service: Service) -> None:
    from lxml import etree

    service.faults.append(Fault("PUT", "/charges/", kind="delay_after", delay=0.5))
    junit = runs.tmp / "report.xml"
    result, run_id = runs.run(CHARGE, "--junit", str(junit))
    assert result.exit_code == 0, result.stdout
    record = json.loads(runs("show", run_id, "--output", "json").stdout)
    assert [(a["step"], a["phase"], a["status"]) for a in record["attempts"]][:2] == [
        ("charge", "action", None),
        ("charge", "verify", 200),
    ]
    assert record["steps"][0]["verify"] == "succeeded"
    cases = etree.parse(str(junit)).getroot().findall(".//testcase")
    assert ("charge", "charge.verify") in {(c.get("name"), c.get("classname")) for c in cases}
    planned = runs("plan", str(runs.file(CHARGE))).stdout
    assert re.search(
        r"verify +GET .*/charges/<run.id>\n(.*\n)*? +settles: applied if response.status == 200; "
        r"absent if response.status == 404",
        planned,
    ), planned
    validated = runs("validate", str(runs.file(CHARGE))).stdout
    assert "[compensate, verify]" in validated


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('      absent: "response.status == 404"\n', ""),
            None,  # applied alone is enough
        ),
        (
            (
                '      applied: "response.status == 200"\n      absent: "response.status == 404"\n',
                "",
            ),
            "steps[0].verify: a verify says what its answer means: give applied",
        ),
        (
            ('applied: "response.status == 200"', 'applied: "respons.status == 200"'),
            "steps[0].verify.applied: undefined name 'respons'",
        ),
        (
            (
                '{method: PUT, url: "/charges/{{ run.id }}", json: {amount: 5}}',
                '{method: PUT, url: "/charges/{{ run.id }}", json: {amount: 5}, applied: "true"}',
            ),
            "steps[0].action.applied: applied belongs to a step's verify request",
        ),
        (
            (
                '      absent: "response.status == 404"\n',
                '      absent: "response.status == 404"\n      poll: {until: "true"}\n',
            ),
            "steps[0].verify.poll: a verify is sent once per doubt, not polled",
        ),
        (
            (
                'url: "/charges/{{ run.id }}"\n      applied',
                'url: "/charges/{{ steps.charge.outputs.amount }}"\n      applied',
            ),
            "step 'charge' cannot read its own outputs in its verify",
        ),
    ],
)
def test_validate_checks_the_verify(
    runs: Runs, change: tuple[str, str], message: str | None
) -> None:
    old, new = change
    assert old in CHARGE
    result = runs("validate", str(runs.file(CHARGE.replace(old, new, 1))))
    if message is None:
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr, result.stderr


def test_compensate_of_a_pivot_that_took_effect_is_refused_once_asked(
    runs: Runs, service: Service
) -> None:
    """A pivot in doubt after a kill does not stop `compensate` before it asks; told that it
    took effect, `compensate` refuses (exit 2) and says to resume, which goes on without
    sending it again."""
    saga_text = CHARGE.replace(
        '    compensate: {method: DELETE, url: "/charges/{{ run.id }}"}\n', "", 1
    )
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=0.3))
    saga = runs.file(saga_text.replace("timeout: 300ms", "timeout: 10s"))
    proc = runs.start("run", str(saga))
    wait_for(lambda: bool(service.requests("PUT", "/charges/")))
    proc.kill()
    proc.communicate(timeout=20)
    with open_journal(runs.journal) as journal:
        run_id = journal.list_runs(limit=1)[0].id
    wait_for(lambda: f"/charges/{run_id}" in service.resources)
    refused = runs("compensate", run_id)
    assert refused.exit_code == 2, refused.stdout
    assert (
        f"run {run_id} cannot be compensated: pivot charge succeeded, so the saga can only go "
        f"forward; resume it instead (sagactl resume {run_id})"
    ) in refused.stderr
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    assert charges(service, "PUT") == ["1"]
    assert service.resources[f"/ships/{run_id}"] == {"amount": 5}


def test_an_applied_that_cannot_be_read_leaves_absent_to_settle(
    runs: Runs, service: Service
) -> None:
    """`response.json.amount` of a 404's body cannot be read: not true, and `absent` still
    settles the charge that never arrived (it is not compensated)."""
    text = CHARGE.replace(
        'applied: "response.status == 200"', 'applied: "response.json.amount == 5"'
    )
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=0.5))
    result, run_id = runs.run(text)
    assert result.exit_code == 1, result.stdout
    assert "charge verify: absent: its action never took effect" in result.stdout
    assert charges(service, "DELETE") == []
    # journaled as failed, not as waiting to be sent again: the run was rolled back
    with open_journal(runs.journal) as journal:
        action = journal.steps(run_id)[("charge", "action")]
    assert (action.state, action.applied) == (StepState.FAILED, False)
    assert re.search(
        r"charge +action +failed .*its verify says it never took effect",
        runs("show", run_id).stdout,
    )


def test_a_verify_is_not_judged_by_the_defaults_expect(runs: Runs, service: Service) -> None:
    text = CHARGE.replace("retry: {attempts: 1}}", "retry: {attempts: 1}, expect: {status: [2xx]}}")
    assert text != CHARGE
    service.faults.append(Fault("PUT", "/charges/", kind="delay_before", delay=0.5))
    result, _ = runs.run(text)
    assert result.exit_code == 1, result.stdout
    assert "charge verify: absent: its action never took effect" in result.stdout
    assert charges(service, "DELETE") == []
