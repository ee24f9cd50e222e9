"""`notify` (SPEC §6): when a run ends stuck or compensated (or, asked, otherwise), its JSON
summary is POSTed — retried — or given to a command; the outcome is journaled and never
changes the run's."""

from __future__ import annotations

import json

import sagas
from helpers import TOKEN, Runs
from sagactl.journal import open_journal
from sagactl.testing.service import Fault, Service

FAILING = sagas.THREE  # with /c/ answering 422: compensated, exit 1


def notifications(runs: Runs, run_id: str) -> list[tuple[str, bool, str]]:
    with open_journal(runs.journal) as journal:
        return [(n.target, n.delivered, n.detail) for n in journal.notifications(run_id)]


def test_a_receiver_that_fails_twice_gets_one_summary(runs: Runs, service: Service) -> None:
    service.faults += [
        Fault("PUT", "/c/", status=422, times=None),
        Fault("POST", "/hook", status=503, times=2, headers={"Retry-After": "0"}),
    ]
    hook = f"{service.url}/hook"
    result, run_id = runs.run(FAILING, "--notify", hook)
    assert result.exit_code == 1, result.stdout
    posts = service.requests("POST", "/hook")
    assert len(posts) == 3
    created = [path for _, method, path in service.applied if method == "POST"]
    assert len(created) == 1  # one summary received
    summary = posts[-1].body
    assert (summary["event"], summary["run"], summary["status"], summary["exit_code"]) == (
        "summary",
        run_id,
        "compensated",
        1,
    )
    assert posts[-1].headers["Content-Type"] == "application/json"
    assert notifications(runs, run_id) == [(hook, True, "status 201 after 3 attempts")]
    assert f"delivered: {hook} (status 201 after 3 attempts)" in runs("show", run_id).stdout
    shown = json.loads(runs("show", run_id, "--output", "json").stdout)
    assert [(n["target"], n["delivered"]) for n in shown["notifications"]] == [(hook, True)]


def test_a_notification_that_fails_changes_nothing_but_is_said(
    runs: Runs, service: Service
) -> None:
    text = FAILING.replace(
        "steps:\n",
        "notify:\n"
        '  url: "{{ env.BASE }}/hook/{{ secrets.TOKEN }}"\n'
        "  retry: {attempts: 2, backoff: 1ms, jitter: false}\n"
        "steps:\n",
        1,
    )
    service.faults += [
        Fault("PUT", "/c/", status=422, times=None),
        Fault("POST", "/hook", status=500, times=None),
    ]
    result, run_id = runs.run(text)
    assert result.exit_code == 1, result.stdout
    assert len(service.requests("POST", "/hook")) == 2
    masked = f"{service.url}/hook/***"
    assert result.stderr == (
        f"notify {masked}: not delivered (status 500 after 2 attempts); the run is "
        "compensated all the same\n"
    )
    assert notifications(runs, run_id) == [(masked, False, "status 500 after 2 attempts")]
    assert TOKEN.encode() not in runs.journal.read_bytes()


def test_a_command_gets_the_summary_on_its_input(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/c/", status=422, times=None))
    out = runs.tmp / "summary.json"
    result, run_id = runs.run(FAILING, "--notify", f"cat > {out}; echo $SAGACTL_STATUS >> {out}")
    assert result.exit_code == 1, result.stdout
    summary, status = out.read_text().splitlines()
    assert json.loads(summary)["run"] == run_id and status == "compensated"
    [(target, delivered, detail)] = notifications(runs, run_id)
    assert (target.startswith("cat > "), delivered, detail) == (True, True, "exit code 0")
    # a run this command found ended is not told of again
    again = runs("compensate", run_id, "--notify", f"cat >> {out}")
    assert again.exit_code == 0 and len(out.read_text().splitlines()) == 2
    failing, _ = runs.run(FAILING, "--notify", "echo broken >&2; exit 3")
    assert failing.exit_code == 1  # unchanged by the notification
    assert "not delivered (exit code 3: broken)" in failing.stderr


def test_a_run_that_succeeded_notifies_only_when_asked(runs: Runs, service: Service) -> None:
    hook = f"{service.url}/hook"
    result, _ = runs.run(FAILING, "--notify", hook)
    assert result.exit_code == 0 and service.requests("POST", "/hook") == []
    asked, run_id = runs.run(FAILING, "--notify", hook, "--notify-on", "succeeded,stuck")
    assert asked.exit_code == 0
    assert [r.body["run"] for r in service.requests("POST", "/hook")] == [run_id]
    bad = runs("run", str(runs.file(FAILING)), "--notify", hook, "--notify-on", "won")
    assert bad.exit_code == 2
    assert "--notify-on won: expected stuck, compensated, succeeded or cleaned" in bad.stderr


def test_validate_checks_notify(runs: Runs, write: object) -> None:
    for notify, message in [
        ("notify: {on: [stuck]}", "notify needs one of url"),
        (
            "notify: {url: x, command: y}",
            "notify needs one of url (a POST of the run's summary) "
            "and command (run with it on standard input), not both",
        ),
        ('notify: {url: "{{ steps.a.outputs.ident }}"}', "step outputs cannot be read in notify"),
        ("notify: {url: x, on: [won]}", "notify.on[0]: 'won' is not one of"),
    ]:
        text = FAILING.replace("steps:\n", f"{notify}\nsteps:\n", 1)
        result = runs("validate", str(runs.file(text)))
        assert result.exit_code == 2, notify
        assert message in result.stderr, (notify, result.stderr)


def test_notify_runs_after_a_cleanup_too(runs: Runs, service: Service) -> None:
    hook = f"{service.url}/hook"
    result, run_id = runs.run(FAILING, "--cleanup", "--notify", hook, "--notify-on", "cleaned")
    assert result.exit_code == 0, result.stdout
    [post] = service.requests("POST", "/hook")
    assert post.body["run"] == run_id
    assert (post.body["status"], post.body["cleanup"]) == ("cleaned", "cleaned")


def test_a_password_in_a_notify_url_is_never_shown(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/c/", status=422, times=None))
    hook = service.url.replace("http://", "http://user:hunter2pw@") + "/hook"
    result, run_id = runs.run(FAILING, "--notify", hook)
    assert result.exit_code == 1
    assert notifications(runs, run_id) == [
        (service.url.replace("http://", "http://user:***@") + "/hook", True, "status 201")
    ]
    assert b"hunter2pw" not in runs.journal.read_bytes()


def test_notify_options_that_cannot_work_are_refused(runs: Runs, service: Service) -> None:
    path = str(runs.file(FAILING))
    for args, message in [
        (["--notify-on", "stuck"], "--notify-on says when --notify tells"),
        (["--notify", "http://x", "--notify-on", ""], '--notify-on "": expected stuck'),
        (["--notify", "ftp://x/y"], "--notify ftp://…: only http and https URLs are posted to"),
    ]:
        refused = runs("run", path, *args)
        assert refused.exit_code == 2, args
        assert message in refused.stderr, (args, refused.stderr)
    assert service.received == []
    text = FAILING.replace("steps:\n", 'notify: {command: "echo {{ run.id }}"}\nsteps:\n', 1)
    refused = runs("validate", str(runs.file(text)))
    assert refused.exit_code == 2
    assert "notify.command: a command is run as written, not rendered" in refused.stderr
