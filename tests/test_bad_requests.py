"""No request can crash a run (SPEC §2.1, §2.2, §3.1, §3.2 item 0): a request that cannot be
built is a located error — exit 2 before anything is journaled when it depends only on inputs,
env and vars, otherwise a failure of its step, never in doubt — and never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli
from sagactl.journal import open_journal
from sagactl.testing.service import Service


def saga(action: str, *, second: str = "", inputs: str = "", env: str = "[BASE]") -> str:
    return f"""\
version: 1
name: bad
env: {env}
inputs: {{note: {{type: string, default: plain}}{inputs}}}
defaults:
  base_url: "{{{{ env.BASE }}}}"
  retry: {{attempts: 2, backoff: 1ms, jitter: false}}
steps:
  - id: first
    action: {{method: PUT, url: "/first/{{{{ run.id }}}}"}}
    outputs: {{id: "{{{{ response.json.id }}}}"}}
    compensate: {{method: DELETE, url: "/first/{{{{ run.id }}}}"}}
  - id: second
    action: {action}
    compensate: {{method: DELETE, url: "/second/{{{{ run.id }}}}"}}
{second}"""


def run(
    tmp_path: Path, service: Service, text: str, *args: str, **env: str | None
) -> tuple[int, str, str]:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    journal = tmp_path / "journal.db"
    result = cli(
        "run",
        str(path),
        *args,
        env={"BASE": service.url, "NO_COLOR": "1", "SAGACTL_JOURNAL": str(journal), **env},
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def journaled_runs(tmp_path: Path) -> int:
    journal = tmp_path / "journal.db"
    if not journal.exists():
        return 0
    with open_journal(journal) as store:
        return len(store.list_runs())


# Requests that depend only on inputs, env and vars: refused before anything is journaled.
AT_START = [
    ('{method: PUT, url: "ftp://127.0.0.1/x"}', {}, "only http and https URLs"),
    ('{method: PUT, url: "http://127.0.0.1:99999/x"}', {}, "is not a valid URL"),
    ('{method: PUT, url: "http://127.0.0.1:port/x"}', {}, "is not a valid URL"),
    ('{method: PUT, url: "http:///x"}', {}, "has no host"),
    ('{method: PUT, url: "http://exa mple.com/x"}', {}, "is not a valid URL"),
    ("{method: PUT, url: \"/{{ 'x' * 70000 }}\"}", {}, "is not a valid URL"),
    (
        '{method: PUT, url: /x, headers: {X-Note: "{{ inputs.note }}"}}',
        {"note": "日本"},
        "X-Note: '日' is not Latin-1",
    ),
    (
        '{method: PUT, url: /x, headers: {X-Note: "a{{ inputs.note }}"}}',
        {"note": "x\nEvil: 1"},
        "line break or control character",
    ),
    (
        '{method: PUT, url: /x, json: {v: "{{ inputs.note | float }}"}}',
        {"note": "nan"},
        "cannot be sent as JSON",
    ),
    ("{method: PUT, url: /x, json: {v: \"{{ 'x' * 10**13 }}\"}}", {}, "would pass 1 MiB"),
    ('{method: PUT, url: /x, json: {v: "{{ [inputs.note] * 10**6 }}"}}', {}, "would pass"),
]


@pytest.mark.parametrize(("action", "inputs", "message"), AT_START)
def test_a_request_that_cannot_be_sent_is_refused_before_anything(
    tmp_path: Path, service: Service, action: str, inputs: dict[str, str], message: str
) -> None:
    args = [arg for name, value in inputs.items() for arg in ("-i", f"{name}={value}")]
    code, _, err = run(tmp_path, service, saga(action), *args)
    assert code == 2, err
    assert message in err and "bad.yaml:" in err and "steps[1].action" in err, err
    assert service.received == [] and journaled_runs(tmp_path) == 0


def test_a_latin_1_header_is_sent_as_latin_1(tmp_path: Path, service: Service) -> None:
    action = '{method: PUT, url: "/second/{{ run.id }}", headers: {X-Note: "{{ inputs.note }}"}}'
    code, _, err = run(tmp_path, service, saga(action), "-i", "note=café")
    assert code == 0, err
    assert service.requests("PUT", "/second/")[0].headers["X-Note"] == "café"


def test_a_compensation_that_cannot_be_built_is_refused_at_start(
    tmp_path: Path, service: Service
) -> None:
    """Otherwise the action would be sent, and its undo found impossible only when needed."""
    text = saga('{method: PUT, url: "/second/{{ run.id }}"}').replace(
        'compensate: {method: DELETE, url: "/second/{{ run.id }}"}',
        'compensate: {method: DELETE, url: "gopher://127.0.0.1/x"}',
    )
    code, _, err = run(tmp_path, service, text)
    assert code == 2 and "steps[1].compensate.url" in err, err
    assert service.received == [] and journaled_runs(tmp_path) == 0


def test_an_unset_env_name_is_refused_before_anything(tmp_path: Path, service: Service) -> None:
    """Even where it is read beside a step's output, which cannot be rendered yet."""
    action = '{method: PUT, url: "{{ env.OTHER }}/{{ steps.first.outputs.id }}"}'
    code, _, err = run(tmp_path, service, saga(action, env="[BASE, OTHER]"))
    assert code == 2 and "env.OTHER is not set" in err and "steps[1].action.url" in err, err
    assert service.received == [] and journaled_runs(tmp_path) == 0


def test_an_unset_env_name_with_a_default_is_fine(tmp_path: Path, service: Service) -> None:
    action = (
        '{method: PUT, url: "/second/{{ steps.first.outputs.id }}", headers: '
        "{X-Other: \"{{ env.OTHER | default('none') }}\"}}"
    )
    code, _, err = run(tmp_path, service, saga(action, env="[BASE, OTHER]"))
    assert code == 0, err


def test_a_var_that_cannot_be_rendered_journals_nothing(tmp_path: Path, service: Service) -> None:
    text = saga('{method: PUT, url: "/second/{{ run.id }}"}').replace(
        "defaults:", "vars:\n  n: \"{{ (inputs.note | length) + 'x' }}\"\ndefaults:"
    )
    code, _, err = run(tmp_path, service, text)
    assert code == 2 and "vars.n" in err, err
    assert service.received == [] and journaled_runs(tmp_path) == 0


def test_a_nan_in_the_file_is_refused_at_load(tmp_path: Path, service: Service) -> None:
    code, _, err = run(tmp_path, service, saga("{method: PUT, url: /x, json: {v: .nan}}"))
    assert code == 2 and "steps[1].action.json.v" in err and "NaN" in err, err


# Requests that depend on an output: known only mid-run, a failure of that step.
MID_RUN = [
    ('{method: PUT, url: "ftp://h/{{ steps.first.outputs.id }}"}', "only http and https"),
    ('{method: PUT, url: "http://127.0.0.1:{{ steps.first.outputs.id }}/x"}', "is not a valid URL"),
    ('{method: PUT, url: /x, headers: {X-Id: "{{ steps.first.outputs.id }}日"}}', "is not Latin-1"),
    (
        '{method: PUT, url: /x, json: {v: "{{ (steps.first.outputs.id | length) * 1e308 * 10 }}"}}',
        "cannot be sent as JSON",
    ),
    ('{method: PUT, url: /x, body: "{{ steps.first.outputs.id * 10**9 }}"}', "would pass"),
]


@pytest.mark.parametrize(("action", "message"), MID_RUN)
def test_a_request_that_cannot_be_built_mid_run_fails_its_step_never_in_doubt(
    tmp_path: Path, service: Service, action: str, message: str
) -> None:
    code, out, err = run(tmp_path, service, saga(action))
    assert code == 1, out + err
    assert message in out, out
    # Nothing of the bad step was sent, and the first step was undone.
    assert not service.requests(path="/second/") and service.resources == {}
    with open_journal(tmp_path / "journal.db") as store:
        run_id = store.list_runs()[0].id
        assert all(a.outcome for a in store.attempts(run_id))  # no phantom attempt in flight
        assert not any(a.step_id == "second" for a in store.attempts(run_id))
