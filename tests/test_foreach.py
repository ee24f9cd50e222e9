"""`foreach` (SPEC §2.5): a step run once per item of a list, each item sent, journaled, retried,
keyed and compensated on its own; checked on what the service received and holds."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

import sagas
from helpers import SAGAS, Runs, cli, http_executors
from sagactl.definition.loader import load_text
from sagactl.engine.machine import Engine
from sagactl.engine.runs import create_run
from sagactl.journal import open_journal
from sagactl.records import RunStatus, StepState
from sagactl.testing.service import Fault, Service

FIVE = ["-i", 'skus=["A","B","C","D","E"]']


def lines(service: Service, method: str = "PUT") -> list[str]:
    """The line indexes of the requests of `method` the service received, in order."""
    return [r.path.rsplit("/", 1)[-1] for r in service.requests(method, "/lines/")]


def test_each_item_is_sent_keyed_and_its_outputs_are_a_list_in_item_order(
    runs: Runs, service: Service
) -> None:
    result, run_id = runs.run(sagas.ORDER, "-i", 'skus=["A","B","C"]')
    assert result.exit_code == 0, result.stdout
    sent = service.requests("PUT", "/lines/")
    assert sorted(r.path for r in sent) == [f"/lines/{run_id}/{i}" for i in range(3)]
    for request in sent:
        index = request.path.rsplit("/", 1)[-1]
        assert request.headers["Idempotency-Key"] == f"{run_id}.lines[{index}].action"
        assert request.headers["Saga-Step"] == f"lines[{index}]"
        assert request.body == {"sku": "ABC"[int(index)], "line": int(index)}
    # the step after it reads the list of the items' outputs, in item order
    assert service.resources[f"/totals/{run_id}"] == {"skus": ["A", "B", "C"]}
    assert "lines action: 3 items" in result.stdout
    with open_journal(runs.journal) as journal:
        steps = journal.steps(run_id)
    assert steps[("lines", "action")].state is StepState.SUCCEEDED
    assert steps[("lines", "action")].outputs == {"sku": ["A", "B", "C"]}
    assert steps[("lines", "action")].items == ["A", "B", "C"]
    assert [steps[(f"lines[{i}]", "action")].outputs for i in range(3)] == [
        {"sku": sku} for sku in "ABC"
    ]


def test_a_failed_item_fails_the_step_and_only_what_took_effect_is_undone(
    runs: Runs, service: Service
) -> None:
    """Five items, the third fails: the first two are undone, the last two never sent (one
    at a time); then the order, newest first."""
    service.faults.append(Fault("PUT", "/lines/", suffix="/2", status=422, times=None))
    result, run_id = runs.run(sagas.ORDER, *FIVE, "--concurrency", "1")
    assert result.exit_code == 1, result.stdout
    assert lines(service) == ["0", "1", "2"]
    assert lines(service, "DELETE") == ["1", "0"]
    assert [r.path for r in service.requests("DELETE")][-1] == f"/orders/{run_id}"
    assert service.resources == {}
    assert "cause: step lines[2]: status 422" in result.stdout, result.stdout
    assert "--> " in result.stdout and "(lines[2] action)" in result.stdout
    assert "lines compensate: 2 of 5 items" in result.stdout
    with open_journal(runs.journal) as journal:
        steps = journal.steps(run_id)
    assert steps[("lines", "action")].state is StepState.FAILED
    assert steps[("lines", "compensate")].state is StepState.SUCCEEDED
    assert ("lines[3]", "action") not in steps and ("lines[2]", "compensate") not in steps


def test_items_in_flight_when_one_fails_finish_and_are_undone(runs: Runs, service: Service) -> None:
    """All five at once: whatever was sent is undone, whatever was not is never sent."""
    service.faults.append(Fault("PUT", "/lines/", suffix="/2", status=422, times=None))
    result, _run_id = runs.run(sagas.ORDER, *FIVE)
    assert result.exit_code == 1, result.stdout
    applied = {i for i in lines(service) if i != "2"}
    assert set(lines(service, "DELETE")) == applied
    assert service.resources == {}


def test_an_item_in_doubt_is_undone_with_the_others(runs: Runs, service: Service) -> None:
    """The second item's answer never comes in time: it may have taken effect (it did), so
    it is compensated like the items that succeeded."""
    service.faults.append(Fault("PUT", "/lines/", suffix="/1", kind="delay_after", delay=0.5))
    text = sagas.ORDER.replace("retry: {attempts: 2", "timeout: 200ms\n  retry: {attempts: 1")
    result, _run_id = runs.run(text, *FIVE, "--concurrency", "1")
    assert result.exit_code == 1, result.stdout
    assert "cause: step lines[1]: no answer within the timeout (0.2s); in doubt" in result.stdout
    assert lines(service) == ["0", "1"]
    assert lines(service, "DELETE") == ["1", "0"]
    assert service.resources == {}


def test_an_empty_list_is_a_step_that_did_nothing(runs: Runs, service: Service) -> None:
    result, run_id = runs.run(sagas.ORDER, "-i", "skus=[]")
    assert result.exit_code == 0, result.stdout
    assert lines(service) == []
    assert service.resources[f"/totals/{run_id}"] == {"skus": []}
    assert "lines action: 0 items" in result.stdout
    shown = runs("show", run_id).stdout
    assert re.search(r"lines +action +succeeded +0 items", shown), shown
    # undone, it has nothing to undo
    undone = runs("compensate", run_id, "--yes")
    assert undone.exit_code == 0, undone.stdout
    assert lines(service, "DELETE") == [] and service.resources == {}


def test_a_list_that_is_not_a_list_is_refused_before_anything_is_sent(
    runs: Runs, service: Service
) -> None:
    text = sagas.ORDER.replace("skus: {type: array, items: {type: string}}", "skus: {}")
    result = runs("run", str(runs.file(text)), "-i", "skus=ABC")
    assert result.exit_code == 2
    assert "steps[1].foreach: expected a list, got a string" in result.stderr
    assert service.received == []


def test_a_list_read_from_an_answer_that_is_not_one_fails_the_step(
    runs: Runs, service: Service
) -> None:
    text = (
        sagas.ORDER.replace('    outputs: {sku: "{{ response.json.sku }}"}\n', "")
        .replace(
            '  - id: lines\n    foreach: "{{ inputs.skus }}"',
            '    outputs: {skus: "{{ response.json.lines }}"}\n'
            '  - id: lines\n    foreach: "{{ steps.order.outputs.skus }}"',
        )
        .replace('{skus: "{{ steps.lines.outputs.sku }}"}', "{}")
    )
    result, _run_id = runs.run(text, *FIVE)
    assert result.exit_code == 1, result.stdout
    assert (
        "cause: step lines: cannot make the list of foreach: expected a list, got a number"
        in result.stdout
    ), result.stdout
    assert lines(service) == [] and service.resources == {}


def test_an_items_compensation_reads_its_own_outputs(runs: Runs, service: Service) -> None:
    """Lines created by POST, each undone by the id its own answer gave."""
    text = (
        sagas.ORDER.replace(
            """      method: PUT
      url: "/lines/{{ run.id }}/{{ item.index }}\"""",
            """      method: POST
      url: "/lines/{{ run.id }}\"""",
        )
        .replace(
            '    outputs: {sku: "{{ response.json.sku }}"}',
            '    outputs: {sku: "{{ response.json.sku }}", id: "{{ response.json.id }}"}',
        )
        .replace(
            'url: "/lines/{{ run.id }}/{{ item.index }}"\n      expect',
            'url: "/lines/{{ run.id }}/{{ steps.lines.outputs.id }}"\n      expect',
        )
    )
    service.faults.append(Fault("PUT", "/totals/", status=422, times=None))
    result, run_id = runs.run(text, *FIVE)
    assert result.exit_code == 1, result.stdout
    created = sorted(r for r in service.applied if r[1] == "POST")
    deleted = sorted(path for _, method, path in service.applied if method == "DELETE")
    assert len(created) == 5
    assert deleted == sorted([f"/lines/{run_id}/{i}" for i in range(1, 6)] + [f"/orders/{run_id}"])
    assert service.resources == {}


def test_a_pivot_item_that_succeeded_forbids_rolling_back(runs: Runs, service: Service) -> None:
    text = sagas.ORDER.replace(
        """    compensate:
      method: DELETE
      url: "/lines/{{ run.id }}/{{ item.index }}"
      expect: {status: [200, 404]}
""",
        "",
    )
    service.faults.append(Fault("PUT", "/lines/", suffix="/1", status=422, times=None))
    result, run_id = runs.run(text, *FIVE, "--concurrency", "1")
    assert result.exit_code == 3, result.stdout
    assert "pivot lines took effect, or may have, for some of its items" in result.stdout
    assert "sagactl compensate" not in result.stdout
    refused = runs("compensate", run_id)
    assert refused.exit_code == 2, refused.stdout
    service.clear_faults()
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    # each line once; the one that succeeded is not sent again
    assert lines(service)[:2] == ["0", "1"]
    assert sorted(lines(service)[2:]) == ["1", "2", "3", "4"]
    assert [key for key, _, _ in service.applied].count(f"{run_id}.lines[0].action") == 1


def test_items_run_at_most_concurrency_at_once(tmp_path: Path) -> None:
    """Counted by the transport, in process: ten items, three at a time, never more."""
    in_flight, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
            if most == 3:
                release.set()
        release.wait(5)
        with lock:
            in_flight -= 1
        return httpx.Response(200, json={"sku": json.loads(request.content or b"{}").get("sku")})

    saga = load_text(sagas.ORDER, "order.yaml")
    with open_journal(tmp_path / "j.db") as journal:
        run = create_run(journal, saga, {"skus": list("ABCDEFGHIJ")}, {"BASE": "http://svc"})
        client = httpx.Client(transport=httpx.MockTransport(handler))
        status = Engine(
            saga,
            run,
            journal=journal,
            executors=http_executors(client),
            secrets={},
            concurrency=3,
        ).start()
    assert status is RunStatus.SUCCEEDED
    assert most == 3


def test_a_run_killed_during_a_foreach_is_resumed_and_each_item_applied_once(
    runs: Runs, service: Service, tmp_path: Path
) -> None:
    from helpers import wait_for

    run_id = _killed_during_item_2(runs, service, tmp_path)
    resumed = runs("resume", run_id)
    assert resumed.exit_code == 0, resumed.stdout
    keys = [key for key, _, _ in service.applied]
    assert sorted(k for k in keys if ".lines[" in k) == [
        f"{run_id}.lines[{i}].action" for i in range(5)
    ]
    assert len(keys) == len(set(keys))
    wait_for(lambda: len(lines(service)) == 6)  # item 2 was sent twice, with one key
    held = [r for r in service.requests("PUT", "/lines/") if r.path.endswith("/2")]
    assert {r.headers["Idempotency-Key"] for r in held} == {f"{run_id}.lines[2].action"}
    assert service.resources[f"/totals/{run_id}"] == {"skus": list("ABCDE")}


def test_a_run_killed_during_a_foreach_is_compensated_and_nothing_is_left(
    runs: Runs, service: Service, tmp_path: Path
) -> None:
    run_id = _killed_during_item_2(runs, service, tmp_path)
    undone = runs("compensate", run_id)
    assert undone.exit_code == 0, undone.stdout
    # the item in flight when the process died is in doubt: undone too
    assert sorted(lines(service, "DELETE")) == ["0", "1", "2"]
    assert service.resources == {}
    assert lines(service) == ["0", "1", "2"]  # the last two were never sent


def _killed_during_item_2(runs: Runs, service: Service, tmp_path: Path) -> str:
    """A real process, one item at a time, SIGKILLed while item 2's request is held (it
    lands anyway)."""

    from helpers import wait_for

    service.faults.append(Fault("PUT", "/lines/", suffix="/2", kind="delay_before", delay=0.6))
    saga = runs.file(sagas.ORDER)
    proc = runs.start("run", str(saga), *FIVE, "--concurrency", "1")
    wait_for(lambda: any(r.path.endswith("/2") for r in service.requests("PUT", "/lines/")))
    proc.kill()
    proc.communicate(timeout=20)
    with open_journal(runs.journal) as journal:
        run_id = journal.list_runs(limit=1)[0].id
        steps = journal.steps(run_id)
    assert steps[("lines[2]", "action")].state is StepState.RUNNING
    assert steps[("lines", "action")].items == list("ABCDE")
    wait_for(lambda: f"{run_id}.lines[2].action" in [k for k, _, _ in service.applied])
    listed = runs("list").stdout
    assert f"{run_id}  order  interrupted" in listed
    return run_id


def test_show_json_and_junit_show_every_item(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/lines/", suffix="/2", status=422, times=None))
    junit = runs.tmp / "report.xml"
    result, run_id = runs.run(sagas.ORDER, *FIVE, "--concurrency", "1", "--junit", str(junit))
    assert result.exit_code == 1
    shown = runs("show", run_id).stdout
    for expected in (
        r"lines +action +failed +5 items +lines\[2\]: status 422",
        r"lines\[0\] +action +succeeded +1 attempt",
        r"lines\[2\] +action +failed +1 attempt",
        r"lines\[1\] +compensate +succeeded",
        r"lines\[2\] action #1 +422 failure",
    ):
        assert re.search(expected, shown), (expected, shown)
    record = json.loads(runs("show", run_id, "--output", "json").stdout)
    step = next(s for s in record["steps"] if s["id"] == "lines")
    assert step["action"] == "failed" and step["attempts"] == 5
    assert [(i["id"], i["action"], i["compensate"]) for i in step["items"]] == [
        ("lines[0]", "succeeded", "succeeded"),
        ("lines[1]", "succeeded", "succeeded"),
        ("lines[2]", "failed", None),
        ("lines[3]", None, None),
        ("lines[4]", None, None),
    ]
    assert {a["item"] for a in record["attempts"] if a["step"].startswith("lines")} == {0, 1, 2}
    service.clear_faults()
    events = [
        json.loads(line)
        for line in runs(
            "run", str(runs.file(sagas.ORDER)), *FIVE, "--output", "json"
        ).stdout.splitlines()
    ]
    started = [e for e in events if e["event"] == "items_started"]
    assert started == [{**started[0], "step": "lines", "phase": "action", "count": 5, "total": 5}]
    assert {e["item"] for e in events if e["event"] == "attempt_started"} == {None, 0, 1, 2, 3, 4}
    summary = events[-1]
    assert [i["action"] for i in summary["steps"][1]["items"]] == ["succeeded"] * 5
    cases = etree.parse(str(junit)).getroot().findall(".//testcase")
    named = {(c.get("name"), c.get("classname")): c for c in cases}
    assert named[("lines[2]", "order.action")].find("failure") is not None
    assert named[("lines[3]", "order.action")].find("skipped") is not None
    assert named[("lines[0]", "order.compensate")].find("failure") is None
    assert ("lines", "order.action") not in named


def test_plan_shows_the_first_items_and_validate_and_graph_name_the_foreach(
    runs: Runs, service: Service
) -> None:
    path = str(runs.file(sagas.ORDER))
    planned = runs("plan", path, *FIVE)
    assert planned.exit_code == 0, planned.stderr
    text = planned.stdout
    assert "2. lines (compensatable; needs order; foreach {{ inputs.skus }} as sku)" in text
    assert '   item 0 (sku = "A")\n   action      PUT ' in text
    assert "/lines/<run.id>/2\n" in text and "/lines/<run.id>/3" not in text
    assert "   and 2 more items, alike" in text
    validated = runs("validate", path).stdout
    assert re.search(r"lines +compensatable +needs order +\[foreach sku, compensate\]", validated)
    assert 'lines["lines (compensatable, for each item)"]' in runs("graph", path).stdout
    assert service.received == []


def test_plan_of_a_list_known_only_once_running_shows_placeholders(runs: Runs) -> None:
    text = sagas.ORDER.replace(
        '  - id: lines\n    foreach: "{{ inputs.skus }}"',
        '    outputs: {skus: "{{ response.json.skus }}"}\n'
        '  - id: lines\n    foreach: "{{ steps.order.outputs.skus }}"',
    )
    planned = runs("plan", str(runs.file(text)), *FIVE)
    assert planned.exit_code == 0, planned.stderr
    assert "   each item (sku): known once running" in planned.stdout
    assert '/lines/<run.id>/<item.index>\n               json {"sku": "<item.sku>"' in (
        planned.stdout
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("    as: sku\n", ""), "steps[1].foreach: a foreach step needs `as`"),
        (("    as: sku", "    as: index"), "steps[1].as: 'index' is taken"),
        (('"{{ inputs.skus }}"', '"x{{ inputs.skus }}"'), "steps[1].foreach: expected a list"),
        (('"{{ inputs.skus }}"', '"{{ item.sku }}"'), "cannot read its own items"),
        (("{{ item.sku }}", "{{ item.skus }}"), "item has no field 'skus' (did you mean 'sku'?)"),
        (
            ('{skus: "{{ steps.lines.outputs.sku }}"}', '{s: "{{ steps.lines.outputs.sku.x }}"}'),
            "steps.lines.outputs.sku is a list (step 'lines' runs once per item)",
        ),
        (
            ('/totals/{{ run.id }}", json', '/totals/{{ item.index }}", json'),
            "'item' is only available in a foreach step",
        ),
        (('"{{ inputs.skus }}"', '["{{ step.id }}"]'), "'step' is only available in requests"),
    ],
)
def test_static_checks_know_items(
    runs: Runs, service: Service, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in sagas.ORDER
    result = runs("validate", str(runs.file(sagas.ORDER.replace(old, new, 1))))
    assert result.exit_code == 2
    assert message in result.stderr, result.stderr
    assert re.search(r"saga\.yaml:\d+:\d+: ", result.stderr), result.stderr


def test_validating_costs_the_same_whatever_the_number_of_items(write: Any) -> None:
    """Loading never looks at the items: the same templates are rendered before a run of 1
    item and of 1,000 (the list itself once), and no request of the foreach step is
    prepared ahead."""
    from sagactl.definition.scope import run_context
    from sagactl.definition.templating import Renderer
    from sagactl.executors.http.prepare import preflight

    saga = load_text(sagas.ORDER, "order.yaml")
    renders = []
    for count in (1, 1000):
        renderer = Renderer()
        calls = 0
        render = renderer.render

        def counted(value: Any, context: Any, render: Any = render) -> Any:
            nonlocal calls
            calls += 1
            return render(value, context)

        renderer.render = counted  # type: ignore[method-assign]
        inputs = {"skus": [f"S{i}" for i in range(count)]}
        context = run_context(
            saga, run_id="R", inputs=inputs, env={"BASE": "http://x"}, secrets={}, renderer=renderer
        )
        prepared = preflight(saga, context, renderer)
        assert ("lines", "action") not in {(s, p.value) for s, p in prepared}
        renders.append(calls)
    assert renders[0] == renders[1]


def test_the_example_order_saga_runs_against_the_service(service: Service, tmp_path: Path) -> None:
    lines_input = json.dumps([{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}])
    env = {
        "SHOP_URL": service.url,
        "SHOP_TOKEN": "t0ken-value",
        "SAGACTL_JOURNAL": str(tmp_path / "j.db"),
    }
    result = cli(
        "run", str(SAGAS / "order.yaml"), "-i", "order=O-1", "-i", f"lines={lines_input}", env=env
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert service.resources["/orders/O-1/confirmation"] == {"reservations": ["O-1-0", "O-1-1"]}
    assert service.resources["/stock/A-1/reservations/O-1-0"] == {"qty": 2}


def test_items_stop_starting_when_the_sagas_timeout_passes(tmp_path: Path) -> None:
    """Each item takes a second of an injected clock; the saga may take 2.5: the third item
    is the last sent, and the run is compensated as a run past its deadline."""
    now = [0.0]
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if request.method == "PUT" and request.url.path.startswith("/lines/"):
            now[0] += 1.0
        return httpx.Response(200, json={"sku": "x"})

    text = sagas.ORDER.replace("steps:\n", "timeout: 2500ms\nsteps:\n", 1)
    saga = load_text(text, "order.yaml")
    with open_journal(tmp_path / "j.db") as journal:
        run = create_run(journal, saga, {"skus": list("ABCDE")}, {"BASE": "http://svc"})
        client = httpx.Client(transport=httpx.MockTransport(handler))
        status = Engine(
            saga,
            run,
            journal=journal,
            executors=http_executors(client),
            secrets={},
            concurrency=1,
            clock=lambda: now[0],
        ).start()
        error = journal.get_run(run.id).error
    assert status is RunStatus.COMPENSATED
    assert error == "the saga's timeout (2.5s) passed"
    assert [s for s in sent if s.startswith("PUT /lines/")] == [
        f"PUT /lines/{run.id}/{i}" for i in range(3)
    ]
    assert sorted(s for s in sent if s.startswith("DELETE /lines/")) == [
        f"DELETE /lines/{run.id}/{i}" for i in range(3)
    ]


KEYS = """\
version: 1
name: keys
env: [BASE]
secrets: [KEYS]
defaults: {base_url: "{{ env.BASE }}", retry: {attempts: 1}}
steps:
  - id: grant
    foreach: "{{ secrets.KEYS.split(',') }}"
    as: key
    action: {method: PUT, url: "/grants/{{ run.id }}/{{ item.index }}", json: {k: "{{ item.key }}"}}
    compensate: {method: DELETE, url: "/grants/{{ run.id }}/{{ item.index }}"}
  - id: done
    action: {method: PUT, url: "/done/{{ run.id }}"}
"""


def _killed_at_second_item(
    service: Service, path: Path, text: str, secrets: dict[str, str]
) -> tuple[str, Any]:
    """A run of `text`, one item at a time, killed as it journals the first attempt of
    `grant[1]`."""
    from helpers import Crash, DyingJournal

    saga = load_text(text, "saga.yaml")
    journal = DyingJournal(
        open_journal(path),
        dies_at=lambda name, args, kwargs: name == "begin_attempt" and args[1] == "grant[1]",
    )
    with httpx.Client() as client:
        run = create_run(journal, saga, {}, {"BASE": service.url})
        with pytest.raises(Crash):
            Engine(
                saga,
                run,
                journal=journal,
                executors=http_executors(client),
                secrets=secrets,
                concurrency=1,
            ).start()
    journal.close()
    return run.id, saga


def _killed_granting(service: Service, path: Path, keys: str) -> tuple[str, Any]:
    return _killed_at_second_item(service, path, KEYS, {"KEYS": keys})


def _resume(service: Service, path: Path, run_id: str, saga: Any, keys: str) -> RunStatus:
    with open_journal(path) as journal, httpx.Client() as client:
        run = journal.get_run(run_id)
        return Engine(
            saga, run, journal=journal, executors=http_executors(client), secrets={"KEYS": keys}
        ).resume()


def test_a_list_holding_a_secret_is_journaled_by_its_count_and_made_again(
    service: Service, tmp_path: Path
) -> None:
    keys = "key-one-5ecret,key-two-5ecret"
    path = tmp_path / "j.db"
    run_id, saga = _killed_granting(service, path, keys)
    with open_journal(path) as journal:
        assert journal.steps(run_id)[("grant", "action")].items == {
            "withheld": "held a secret",
            "count": 2,
        }
    assert _resume(service, path, run_id, saga, keys) is RunStatus.SUCCEEDED
    # the first item, whose result died with the process, was sent again under its key
    assert service.resources[f"/grants/{run_id}/0"] == {"k": "key-one-5ecret"}
    assert service.resources[f"/grants/{run_id}/1"] == {"k": "key-two-5ecret"}
    assert [key for key, _, _ in service.applied if ".grant[" in key] == [
        f"{run_id}.grant[0].action",
        f"{run_id}.grant[1].action",
    ]
    for sink in path.parent.iterdir():
        data = sink.read_bytes()
        assert b"5ecret" not in data, sink


def test_a_list_holding_a_secret_that_changed_length_stops_the_run(
    service: Service, tmp_path: Path
) -> None:
    """Its items cannot be known any more, so neither sent nor undone: stuck as it stands —
    no rollback decided — until the secret is the one the run began with."""
    keys = "key-one-5ecret,key-two-5ecret"
    path = tmp_path / "j.db"
    run_id, saga = _killed_granting(service, path, keys)
    assert _resume(service, path, run_id, saga, keys + ",key-three") is RunStatus.STUCK
    with open_journal(path) as journal:
        run = journal.get_run(run_id)
        # the step's own row caught up with its items' (the first in doubt)
        assert journal.steps(run_id)[("grant", "action")].state is StepState.IN_DOUBT
    assert (run.phase, run.error) == (
        "forward",
        "step grant: the list of foreach now has 3 items, and had 2 when its items were "
        "first sent (it held a secret, so the journal kept only its count): are the secrets "
        "the run began with set?",
    )
    assert not service.requests("PUT", "/done/")
    assert _resume(service, path, run_id, saga, keys) is RunStatus.SUCCEEDED
    assert len(service.resources) == 3


# A list made of secret outputs: of a step that is not safe (mint), or of a safe one (login).
MINTED = """\
version: 1
name: minted
env: [BASE]
defaults: {base_url: "{{ env.BASE }}", retry: {attempts: 1}}
steps:
  - id: mint
    foreach: ["t1", "t2"]
    as: t
    action: {method: PUT, url: "/keys/{{ run.id }}/{{ item.index }}", json: {tok: "tok-5ecret"}}
    outputs: {tok: {value: "{{ response.json.tok }}-{{ item.t }}", secret: true}}
    compensate: {method: DELETE, url: "/keys/{{ run.id }}/{{ item.index }}"}
  - id: grant
    foreach: "{{ steps.mint.outputs.tok }}"
    as: key
    action: {method: PUT, url: "/grants/{{ run.id }}/{{ item.index }}", json: {k: "{{ item.key }}"}}
    compensate: {method: DELETE, url: "/grants/{{ run.id }}/{{ item.index }}"}
  - id: done
    action: {method: PUT, url: "/done/{{ run.id }}"}
"""
LOGIN = MINTED.replace(
    """  - id: mint
    foreach: ["t1", "t2"]
    as: t
    action: {method: PUT, url: "/keys/{{ run.id }}/{{ item.index }}", json: {tok: "tok-5ecret"}}
    outputs: {tok: {value: "{{ response.json.tok }}-{{ item.t }}", secret: true}}
    compensate: {method: DELETE, url: "/keys/{{ run.id }}/{{ item.index }}"}""",
    """  - id: mint
    safe: true
    action:
      {method: PUT, url: "/login/{{ run.id }}", json: {tok: ["tok-5ecret-t1", "tok-5ecret-t2"]}}
    outputs: {tok: {value: "{{ response.json.tok }}", secret: true}}""",
)


def test_a_list_of_secret_outputs_that_cannot_be_read_anew_stops_the_run(
    service: Service, tmp_path: Path
) -> None:
    """The tokens of `mint` were not journaled, and it cannot be sent again: the rest of the
    list cannot be sent, nor undone by items — never sent with holes where they were."""
    path = tmp_path / "j.db"
    run_id, saga = _killed_at_second_item(service, path, MINTED, {})
    assert _resume(service, path, run_id, saga, "") is RunStatus.STUCK
    with open_journal(path) as journal:
        error = journal.get_run(run_id).error
    assert error is not None and "steps.mint.outputs.tok held a secret" in error, error
    assert "step mint cannot be sent again to read it anew: it is not safe" in error
    assert [r.body for r in service.requests("PUT", "/grants/")] == [{"k": "tok-5ecret-t1"}]


def test_a_list_of_secret_outputs_of_a_safe_step_is_read_anew(
    service: Service, tmp_path: Path
) -> None:
    path = tmp_path / "j.db"
    run_id, saga = _killed_at_second_item(service, path, LOGIN, {})
    assert _resume(service, path, run_id, saga, "") is RunStatus.SUCCEEDED
    assert len(service.requests("PUT", "/login/")) == 2  # sent again, to read the list anew
    assert service.resources[f"/grants/{run_id}/1"] == {"k": "tok-5ecret-t2"}
    with open_journal(path) as journal:
        assert journal.steps(run_id)[("grant", "action")].items == {
            "withheld": "held a secret",
            "count": 2,
        }


def test_a_list_of_secret_outputs_is_cleaned_up(runs: Runs, service: Service) -> None:
    text = LOGIN.replace(
        'url: "/done/{{ run.id }}"}',
        'url: "/done/{{ run.id }}"}\n    compensate: {method: DELETE, url: "/done/{{ run.id }}"}',
    )
    result, _ = runs.run(text, "--cleanup")
    assert result.exit_code == 0, result.stdout
    assert [path for path in service.resources if not path.startswith("/login/")] == []


def test_a_list_that_is_not_one_never_quotes_its_value(runs: Runs, service: Service) -> None:
    token = "Zq9" * 30
    text = """\
version: 1
name: tl
env: [BASE]
secrets: [TOKEN]
defaults: {base_url: "{{ env.BASE }}"}
steps:
  - id: grant
    foreach: "{{ secrets.TOKEN }}"
    as: key
    action: {method: PUT, url: "/grants/{{ item.index }}"}
"""
    result = runs("run", str(runs.file(text)), TOKEN=token)
    assert result.exit_code == 2
    assert "steps[0].foreach: expected a list, got a string" in result.stderr
    assert "Zq9Zq9" not in result.stdout + result.stderr
    assert service.received == []


def test_a_misspelt_foreach_is_said_once(runs: Runs) -> None:
    text = sagas.ORDER.replace(
        '    foreach: "{{ inputs.skus }}"', '    forech: "{{ inputs.skus }}"'
    )
    result = runs("validate", str(runs.file(text)))
    assert result.exit_code == 2
    assert [line.split(": ", 1)[1] for line in result.stderr.splitlines()] == [
        "steps[1].forech: unknown key 'forech' (did you mean 'foreach'?)",
        "steps[1].as: `as` names the items of a foreach step: add foreach (the list), or remove as",
    ]


def test_a_bad_item_of_a_list_input_is_named(service: Service, tmp_path: Path) -> None:
    lines_input = json.dumps([{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}])
    result = cli(
        "run",
        str(SAGAS / "order.yaml"),
        "-i",
        "order=O-1",
        "-i",
        f"lines={lines_input}",
        env={
            "SHOP_URL": service.url,
            "SHOP_TOKEN": "t0ken",
            "SAGACTL_JOURNAL": str(tmp_path / "j"),
        },
    )
    assert result.exit_code == 2
    assert result.stderr == "input 'lines': 0 is less than the minimum of 1 (in lines[1].qty)\n"
    assert service.received == []
