"""The dashboard and the report in a real browser: Debian's Chromium driven by Selenium
through chromedriver, headless. What a person sees and clicks: the list and its filters, a
run's graph and timeline, an attempt opened, a run followed live without a reload, the token
off loopback, and a report opened from a file with every request refused.

Chromium runs as root here, so it is started with --no-sandbox, and with
--disable-background-networking so that it reaches nothing but the page under test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import sagas
from helpers import Runs, Ui, some_runs, wait_for
from sagactl.testing.service import Fault, Service

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = os.environ.get("SAGACTL_SCREENSHOTS")  # a folder: save what the docs show

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "needs Chromium and chromedriver: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def until(browser: WebDriver, condition, timeout: float = 20):  # type: ignore[no-untyped-def]
    return WebDriverWait(browser, timeout).until(lambda _: condition())


def shoot(browser: WebDriver, name: str) -> None:
    if SHOTS:
        width = browser.execute_script("return document.documentElement.scrollWidth")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(max(1280, width), min(max(800, height), 2400))
        browser.save_screenshot(str(Path(SHOTS) / name))
        browser.set_window_size(1280, 1000)


def test_the_list_filters_and_opens_a_run(
    browser: WebDriver, runs: Runs, service: Service, ui: Ui
) -> None:
    ids = some_runs(runs, service)
    browser.get(ui.base + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.run")
    assert {r.get_attribute("data-run"): r.get_attribute("data-status") for r in rows} == {
        run_id: outcome for outcome, run_id in ids.items()
    }
    shoot(browser, "list.png")
    # the stuck count is a link to the stuck runs only
    browser.find_element(By.CSS_SELECTOR, 'a.count[data-status="stuck"]').click()
    until(browser, lambda: "status=stuck" in browser.current_url)
    shown = [r.get_attribute("data-run") for r in browser.find_elements(By.CSS_SELECTOR, "tr.run")]
    assert shown == [ids["stuck"]]
    # the search box, typed into and sent
    browser.get(ui.base + "/")
    box = browser.find_element(By.NAME, "q")
    box.send_keys(ids["compensated"][:20])
    box.submit()
    until(browser, lambda: "q=" in browser.current_url)
    shown = [r.get_attribute("data-run") for r in browser.find_elements(By.CSS_SELECTOR, "tr.run")]
    assert shown == [ids["compensated"]]
    browser.find_element(By.CSS_SELECTOR, "a.run-link").click()
    until(browser, lambda: browser.current_url.endswith("/runs/" + ids["compensated"]))
    assert browser.find_element(By.ID, "status").text == "compensated"


def test_a_run_shows_its_graph_timeline_and_attempts(
    browser: WebDriver, runs: Runs, service: Service, ui: Ui
) -> None:
    ids = some_runs(runs, service)
    browser.get(f"{ui.base}/runs/{ids['compensated']}")
    nodes = {
        n.get_attribute("data-step"): n.get_attribute("data-state")
        for n in browser.find_elements(By.CSS_SELECTOR, "svg.graph g.node")
    }
    assert nodes == {"a": "undone", "b": "undone", "c": "failed"}
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect.attempt")
    details = browser.find_elements(By.CSS_SELECTOR, "details.attempt")
    # what the service received for that run, one bar and one attempt each
    received = [r for r in service.requests() if ids["compensated"] in str(r.headers)]
    assert len(bars) == len(details) == len(received) == 5
    assert all(bar.size["width"] > 0 for bar in bars)
    shoot(browser, "run-compensated.png")
    # a bar is a link to its attempt, which opens with the request and the answer
    assert not browser.find_element(By.CSS_SELECTOR, "pre.request").is_displayed()
    browser.find_element(By.CSS_SELECTOR, 'rect.attempt[data-step="c"]').click()
    until(browser, lambda: "#attempt-" in browser.current_url)
    attempt = browser.find_element(By.ID, browser.current_url.split("#")[1])
    assert attempt.get_attribute("data-step") == "c"
    request = attempt.find_element(By.CSS_SELECTOR, "pre.request")
    until(browser, request.is_displayed)
    assert request.text.startswith("> PUT http://127.0.0.1:")
    assert attempt.find_element(By.CSS_SELECTOR, "pre.response").text.startswith("< 422")


def test_an_attempt_in_doubt_is_marked_on_the_timeline(
    browser: WebDriver, runs: Runs, service: Service, ui: Ui
) -> None:
    # the answer to b's first attempt is lost after the service applied it: in doubt, retried
    service.faults.append(Fault("PUT", "/b/", kind="drop_after"))
    result, run_id = runs.run(sagas.THREE)
    assert result.exit_code == 0, result.stderr
    browser.get(f"{ui.base}/runs/{run_id}")
    doubtful = browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect.attempt.in-doubt")
    assert [(d.get_attribute("data-step"), d.get_attribute("data-attempt")) for d in doubtful] == [
        ("b", "1")
    ]
    assert browser.find_element(By.CSS_SELECTOR, "svg.timeline text.retry").text == "#2"


def test_a_run_driven_elsewhere_updates_without_a_reload(
    browser: WebDriver, runs: Runs, service: Service, ui: Ui
) -> None:
    hold = Fault("PUT", "/b/", kind="hold")  # b stays in flight until released
    service.faults.append(hold)
    proc = runs.start("run", str(runs.file(sagas.THREE)))
    try:
        wait_for(lambda: bool(service.requests("PUT", "/b/")))
        browser.get(ui.base + "/")
        row = browser.find_element(By.CSS_SELECTOR, 'tr.run[data-status="running"]')
        run_id = row.get_attribute("data-run")
        browser.get(f"{ui.base}/runs/{run_id}")
        assert browser.find_element(By.ID, "status").text == "running"
        # what a reader opened stays open through the updates
        browser.find_element(By.CSS_SELECTOR, "details.saga summary").click()
        browser.find_element(By.CSS_SELECTOR, 'details.attempt[data-step="a"] summary').click()
        # a mark the page's script would lose if the page were loaded again
        browser.execute_script("window.sagactlMark = 1")
    finally:
        hold.release.set()
    proc.communicate(timeout=30)
    until(browser, lambda: browser.find_element(By.ID, "status").text == "succeeded")
    assert browser.execute_script("return window.sagactlMark") == 1
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.graph g.node")
    assert {n.get_attribute("data-state") for n in nodes} == {"succeeded"}
    for opened in ("details.saga", 'details.attempt[data-step="a"]'):
        assert browser.find_element(By.CSS_SELECTOR, opened).get_attribute("open") is not None


def test_off_loopback_the_token_opens_it_and_nothing_else_does(
    browser: WebDriver, runs: Runs, service: Service
) -> None:
    run_id = runs.run(sagas.THREE)[1]
    ui = Ui(runs, "--host", "127.0.0.2")
    try:
        browser.delete_all_cookies()
        browser.get(ui.base + "/")
        assert "token" in browser.find_element(By.TAG_NAME, "body").text.lower()
        assert not browser.find_elements(By.CSS_SELECTOR, "tr.run")
        browser.get(ui.address)  # the address it printed, with the token
        browser.find_element(By.CSS_SELECTOR, "a.run-link").click()
        # the link carries no token: the cookie the first page set lets it in
        until(browser, lambda: browser.current_url.endswith("/runs/" + run_id))
        assert browser.find_element(By.ID, "status").text == "succeeded"
    finally:
        ui.stop()


def test_a_report_opens_from_a_file_with_every_request_refused(
    browser: WebDriver, runs: Runs, service: Service, tmp_path: Path
) -> None:
    ids = some_runs(runs, service)
    out = tmp_path / "report.html"
    assert runs("report", ids["compensated"], ids["stuck"], "-o", str(out)).exit_code == 0
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*"]})
    try:
        browser.get(out.as_uri())
        sections = browser.find_elements(By.CSS_SELECTOR, "section.run")
        assert [s.get_attribute("data-status") for s in sections] == ["compensated", "stuck"]
        # styled by its own inline sheet: a stuck badge is not in the text's colour
        badge = browser.find_element(By.CSS_SELECTOR, ".badge.status-stuck")
        body = browser.find_element(By.TAG_NAME, "body")
        assert badge.value_of_css_property("color") != body.value_of_css_property("color")
        assert browser.find_elements(By.CSS_SELECTOR, "svg.graph g.node")
        shoot(browser, "report.png")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        browser.execute_cdp_cmd("Network.disable", {})
