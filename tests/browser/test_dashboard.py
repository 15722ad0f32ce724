"""The dashboard in a real Chromium against the real stack: sign-in, the overview, runs that
appear and move live, the actions a user takes on the page (checked over the API), and that the
page asks no other host for anything and logs no console error (the `page` fixture)."""

from __future__ import annotations

import re
from typing import Any

from runlane.client import Client
from tests.browser.conftest import copy_for_docs
from tests.browser.page import PHONE, Page
from tests.helpers import wait_for

UNAUTHORIZED = "/v1/queues - Failed to load resource: the server responded with a status of"


def status_is(api: Client, run_id: str, *statuses: str) -> Any:
    return lambda: (run := api.get(run_id))["status"] in statuses and run


def test_sign_in_then_the_overview_shows_the_queues(page: Page, api: Client) -> None:
    api.submit("demo.echo", {"hello": "overview"})
    page.get("/ui")
    page.expect_console(f"{UNAUTHORIZED} 401")
    page.shown("#token").send_keys("not-a-token")
    page.css("#signin button[type=submit]").click()
    page.wait(lambda _: "not valid" in page.css("#signin-error").text, what="the refusal")
    page.screenshot("signin")
    token = page.css("#token")
    token.clear()
    token.send_keys("tok-alpha")
    page.css("#signin button[type=submit]").click()
    page.shown('article[data-queue="default"]')
    page.wait(lambda _: page.text("#conn") == "● live", what="the tail to be live")
    page.wait(lambda _: page.text('[data-queue="default"] [data-field="workers"]') == "1")
    page.wait(lambda _: int(page.text('[data-queue="default"] [data-count="succeeded"] .n')) >= 1)
    page.screenshot("overview")
    page.css("#signout").click()
    page.shown("#token")
    assert page.js("return sessionStorage.getItem('runlane.token')") is None
    page.sign_in()


def test_a_run_submitted_over_the_api_appears_without_reload(page: Page, api: Client) -> None:
    page.get("/ui/runs")
    page.shown("#runs-table tbody tr")
    page.js("window.notReloaded = true")
    run = api.submit("demo.sleep", {"seconds": 0.3})
    row = f'tr[data-run-id="{run["id"]}"]'
    page.shown(row)
    page.wait(lambda _: page.attr(row, "data-status") == "succeeded", what="the row to succeed")
    assert page.js("return window.notReloaded") is True
    page.screenshot("runs")


def test_a_progress_run_moves_its_bar_eta_and_timeline(page: Page, api: Client) -> None:
    run = api.submit("demo.progress", {"steps": 20, "interval_ms": 300})
    page.get(f"/ui/runs/{run['id']}")
    page.shown('[role="progressbar"]#run-progress')

    def value() -> int:
        return int(page.attr('[role="progressbar"]#run-progress', "aria-valuenow") or 0)

    def timeline() -> int:
        return len(page.all("#timeline li"))

    page.wait(lambda _: 0 < value() < 100, what="some progress")
    first, events = value(), timeline()
    eta = page.wait(lambda _: page.text("#run-eta"), what="an ETA")
    assert re.match(r"ETA in \d+ s", eta), eta
    page.wait(lambda _: value() > first and timeline() > events, what="the bar and timeline move")
    page.wait(lambda _: page.text("#run-eta") not in ("", eta), what="the ETA to change")
    page.screenshot("run-progress")
    shot = page.screenshot("run-progress-phone", PHONE)
    page.wait(lambda _: value() == 100, timeout=30, what="the end")
    page.wait(lambda _: page.attr(".run-head", "data-status") == "succeeded")
    assert timeline() == api.get(run["id"])["last_seq"]
    assert shot.exists()


def test_cancel_and_retry_from_the_page(page: Page, api: Client) -> None:
    run = api.submit("demo.sleep", {"seconds": 30})
    page.get(f"/ui/runs/{run['id']}")
    page.wait(lambda _: page.attr(".run-head", "data-status") == "running",
              what="the run to start")  # fmt: skip
    page.css("#cancel").click()
    wait_for(status_is(api, run["id"], "cancelled"), 20, message="the cancel")
    retry = page.wait(lambda _: (b := page.css("#retry")).is_enabled() and b, what="retry enabled")
    page.screenshot("run-cancelled")
    retry.click()
    wait_for(status_is(api, run["id"], "queued", "running"), 20, message="the retry")
    page.wait(lambda _: page.attr(".run-head", "data-status") in ("queued", "running"))
    api.cancel(run["id"])


def test_a_queue_with_queued_runs_and_no_worker_is_flagged(page: Page, api: Client) -> None:
    api.submit("demo.echo", {}, queue="orphans")
    page.get("/ui")
    warning = page.shown('article[data-queue="orphans"] [data-warning="no-workers"]')
    assert "no live worker" in warning.text
    assert page.all('article[data-queue="default"] [data-warning]') == []
    page.color_scheme("dark")
    shot = page.screenshot("overview-dark")
    page.color_scheme("light")
    page.screenshot("overview-phone", PHONE)
    assert shot.exists()
    copy_for_docs(page.screenshot("overview"))
