"""`sagactl ui` and `sagactl report` (SPEC §6) over journals made by real runs against the
service, checked over HTTP: what the pages hold, the token, read-only, the security headers,
and the report file's being whole on its own. tests/test_ui_browser.py looks at them in a
real browser."""

from __future__ import annotations

import html
import http.client
import re
import signal
import time

import httpx
import pytest

import sagas
from helpers import Runs, Ui, some_runs, wait_for
from sagactl.journal import open_journal
from sagactl.records import Owner
from sagactl.testing.service import Fault, Service


def test_the_list_filters_counts_and_searches(runs: Runs, service: Service, ui: Ui) -> None:
    ids = some_runs(runs, service)
    page = ui.get("/").text
    for outcome, run_id in ids.items():
        assert f'data-run="{run_id}" data-status="{outcome}"' in page
    assert re.search(r'data-status="stuck" href="\?status=stuck">stuck <b>1</b>', page)
    stuck = ui.get("/", params={"status": "stuck"}).text
    assert ids["stuck"] in stuck and ids["succeeded"] not in stuck
    found = ui.get("/", params={"q": ids["compensated"][:22].lower()}).text
    assert ids["compensated"] in found and ids["stuck"] not in found
    assert ui.get("/", params={"saga": "nope"}).text.count('class="run"') == 0
    bad = ui.get("/", params={"since": "yesterday"})
    assert bad.status_code == 400 and "expected a date as YYYY-MM-DD" in bad.text


def test_a_run_page_holds_what_the_journal_says(runs: Runs, service: Service, ui: Ui) -> None:
    ids = some_runs(runs, service)
    page = ui.get(f"/runs/{ids['stuck']}").text
    assert 'id="status">stuck<' in page
    # it ran for milliseconds and has waited since: the wait is not counted as running
    took = re.search(r"<dt>took</dt><dd>(\d+)ms; waiting since \d{4}-\d\d-\d\d ", page)
    assert took, page
    assert "compensation not finished for a: status 500" in page
    assert re.search(r"saga\.yaml:\d+ \(a compensate\)", page)
    assert f"sagactl skip {ids['stuck']} a --reason" in page
    for step in ("a", "b", "c"):
        assert re.search(rf'class="node state-\w+" data-step="{step}"', page)
    assert page.count('<rect class="attempt') == page.count('<details class="attempt')
    assert "&lt; 500" in page and "DELETE" in page
    assert "Bearer ***" in page or "Authorization: ***" in page  # masked as journaled
    missing = ui.get("/runs/NOSUCHRUN")
    assert missing.status_code == 404


def test_the_dashboard_only_reads_and_sends_strict_headers(ui: Ui) -> None:
    answer = ui.get("/")
    assert answer.status_code == 200
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert httpx.post(ui.base + "/", timeout=10).status_code == 405
    assert ui.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    for raw in ("/static/../../etc/passwd", "/static/..%2F..%2Fetc%2Fpasswd", "/static/"):
        assert raw_get(ui, raw) == 404, raw  # sent as written: httpx would normalize it
    assert ui.stop() == 0  # Ctrl-C stops it cleanly


def raw_get(ui: Ui, path: str, host: str | None = None) -> int:
    """The status of a GET of `path` exactly as written, with another Host header if given."""
    address = ui.base.removeprefix("http://")
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_on_loopback_it_answers_only_to_loopback_names(ui: Ui) -> None:
    """Without a token, a page of another site whose name is made to resolve to 127.0.0.1
    (DNS rebinding) must not read the journal: the Host header has to be a loopback name."""
    port = ui.base.rsplit(":", 1)[1]
    assert raw_get(ui, "/health", host=f"attacker.example:{port}") == 421
    assert raw_get(ui, "/", host=f"localhost:{port}") == 200
    assert raw_get(ui, "/", host=f"127.0.0.1:{port}") == 200


def test_a_missing_run_is_named_escaped(ui: Ui) -> None:
    answer = ui.get("/runs/%3Cmeta%20http-equiv%3Drefresh%20content%3D0%3Burl%3Dx%3E")
    assert answer.status_code == 404
    assert "<meta" not in answer.text and "&lt;meta http-equiv=refresh" in answer.text


def test_a_short_or_empty_token_is_refused(runs: Runs) -> None:
    for token in ("", "short"):
        refused = runs("ui", "--port", "0", "--host", "127.0.0.2", "--token", token)
        assert refused.exit_code == 2
        assert "--token: give at least 16 characters" in refused.stderr


def test_the_next_page_keeps_the_filters(runs: Runs, ui: Ui) -> None:
    with open_journal(runs.journal) as store:
        for i in range(120):
            store.create_run(
                run_id=f"R{i:04d}",
                name="shop",
                saga_path="s.yaml",
                saga_text="name: shop",
                saga_hash="h",
                inputs={"tag": "a&b=c" if i % 2 else "a"},
                env={},
                trace_id="t" * 32,
                owner=Owner("elsewhere", 1),
                lease_ttl=30,
                step_ids=[],
            )
    first = ui.get("/", params={"q": "a&b=c"}).text
    assert first.count('class="run"') == 50
    more = re.search(r'class="next" href="\?([^"]+)"', first)
    assert more, first
    second = ui.get("/?" + html.unescape(more.group(1))).text
    shown = re.findall(r'data-run="R(\d+)"', first) + re.findall(r'data-run="R(\d+)"', second)
    assert sorted(int(n) for n in shown) == list(range(1, 120, 2))  # each once, only those


def test_odd_journaled_sagas_still_show(runs: Runs, ui: Ui) -> None:
    """A run journaled before step ids were (its order read from the saga text), and one
    whose saga text a hand-edit left with a `needs` that is not a step id."""
    texts = {
        "OLDRUN1": "name: s\nsteps:\n  - id: a\n  - id: b\n",
        "ODDNEEDS": "name: s\nsteps:\n  - id: a\n  - id: b\n    needs: [{x: 1}, a]\n",
    }
    with open_journal(runs.journal) as store:
        for run_id, text in texts.items():
            store.create_run(
                run_id=run_id,
                name="s",
                saga_path="s.yaml",
                saga_text=text,
                saga_hash="h",
                inputs={},
                env={},
                trace_id="t" * 32,
                owner=Owner("elsewhere", 1),
                lease_ttl=30,
                step_ids=None,
            )
    for run_id in texts:
        page = ui.get(f"/runs/{run_id}")
        assert page.status_code == 200, page.text
        assert re.findall(r'class="node [\w-]+" data-step="(\w+)"', page.text) == ["a", "b"]


def test_a_day_is_the_day_in_local_time_summer_time_changes_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sagactl.output.pages.server import _day

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        for day, hours in (("2024-11-03", 25), ("2024-03-10", 23), ("2024-06-01", 24)):
            start, end = _day(day, "from"), _day(day, "to", after=True)
            assert start is not None and end is not None
            assert end - start == hours * 3600, day
    finally:
        monkeypatch.undo()
        time.tzset()


def test_off_loopback_a_token_is_required(runs: Runs) -> None:
    ui = Ui(runs, "--host", "127.0.0.2")
    try:
        assert "?token=" in ui.address
        token = ui.address.split("?token=")[1]
        assert ui.get("/").status_code == 401
        assert ui.get("/", params={"token": "wrong"}).status_code == 401
        opened = ui.get("/", params={"token": token})
        assert opened.status_code == 200
        # the page keeps it as a cookie: later requests need not carry it
        port = ui.base.rsplit(":", 1)[1]
        cookie = opened.cookies.get(f"sagactl_token_{port}")  # one per port: see server.py
        assert cookie == token
        kept = {f"sagactl_token_{port}": token}
        assert ui.get("/static/app.css", cookies=kept).status_code == 200
        other_port = {"sagactl_token_1": token}
        assert ui.get("/static/app.css", cookies=other_port).status_code == 401
    finally:
        ui.stop()


def test_a_report_is_whole_on_its_own(runs: Runs, service: Service) -> None:
    ids = some_runs(runs, service)
    out = runs.tmp / "report.html"
    made = runs("report", ids["compensated"], ids["stuck"], "-o", str(out))
    assert made.exit_code == 0, made.stderr
    html = out.read_text()
    assert html.count('<section class="run"') == 2
    # nothing fetched from anywhere: no script, no link, no source but inline data
    assert "<script" not in html and "<link" not in html
    assert not re.search(r'(src|href)="(?!#)', html)
    assert "default-src 'none'" in html


def test_run_report_is_written_even_when_the_run_fails(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/c/", status=422))
    out = runs.tmp / "r.html"
    result, run_id = runs.run(sagas.THREE, "--report", str(out))
    assert result.exit_code == 1
    assert f'data-run="{run_id}" data-status="compensated"' in out.read_text()
    bad = runs("report", "NOSUCH", "-o", str(runs.tmp / "x.html"))
    assert bad.exit_code == 4


def test_ui_and_report_refuse_a_journal_that_is_not_there(runs: Runs) -> None:
    missing = runs.tmp / "typo.db"
    for command in (["ui", "--port", "0"], ["report", "R1", "-o", str(runs.tmp / "r.html")]):
        refused = runs(*command, "--journal", str(missing))
        assert refused.exit_code == 4
        assert f"no journal at {missing}: nothing has run with it" in refused.stderr
    assert not missing.exists()  # and none was made


def test_ui_refuses_a_port_in_use(runs: Runs, ui: Ui) -> None:
    port = ui.base.rsplit(":", 1)[1]
    taken = runs("ui", "--port", port)
    assert taken.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr


def test_a_run_driven_elsewhere_shows_as_running_then_succeeded(
    runs: Runs, service: Service, ui: Ui
) -> None:
    hold = Fault("PUT", "/b/", kind="hold")
    service.faults.append(hold)
    proc = runs.start("run", str(runs.file(sagas.THREE)))
    try:
        wait_for(lambda: bool(service.requests("PUT", "/b/")))
        listed = ui.get("/").text
        run_id = re.search(r'data-run="(\w+)" data-status="running"', listed)
        assert run_id, listed
        assert 'data-live="1"' in ui.get(f"/runs/{run_id.group(1)}").text
    finally:
        hold.release.set()
    proc.communicate(timeout=20)
    done = ui.get(f"/runs/{run_id.group(1)}").text
    assert 'id="status">succeeded<' in done and 'data-live="1"' not in done


def test_run_report_is_written_when_the_run_is_interrupted(runs: Runs, service: Service) -> None:
    service.faults.append(Fault("PUT", "/b/", kind="delay_before", delay=1.0))
    out = runs.tmp / "r.html"
    proc = runs.start("run", str(runs.file(sagas.THREE)), "--report", str(out))
    wait_for(lambda: bool(service.requests("PUT", "/b/")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert re.search(r'data-run="\w+" data-status="interrupted"', out.read_text())


def test_operator_actions_are_marked_on_the_timeline(runs: Runs, service: Service, ui: Ui) -> None:
    run_id = some_runs(runs, service)["stuck"]
    done = runs("skip", run_id, "a", "--reason", "deleted by hand, ticket OPS-7")
    assert done.exit_code == 0, done.stderr
    page = ui.get(f"/runs/{run_id}").text
    mark = re.search(
        r'<g class="operator-action" data-step="a" data-phase="compensate">'
        r"<title>([^<]*)</title>",
        page,
    )
    assert mark and "skip compensate of a" in mark.group(1) and "OPS-7" in mark.group(1)
    assert 'class="operator-action" data-step="a">' in page  # and in the list below
