"""The dashboard in a real Chromium against the real stack: sign-in, the overview, runs that
appear and move live, the actions a user takes on the page (checked over the API), and that the
page asks no other host for anything and logs no console error (the `page` fixture)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from runlane.client import Client
from tests.browser.conftest import copy_for_docs
from tests.browser.page import PHONE, Page
from tests.helpers import Stack, wait_for

UNAUTHORIZED = "/v1/queues - Failed to load resource: the server responded with a status of"


def status_is(api: Client, run_id: str, *statuses: str) -> Any:
    return lambda: (run := api.get(run_id))["status"] in statuses and run


def test_sign_in_then_the_overview_shows_the_queues(page: Page, api: Client) -> None:
    api.submit("demo.echo", {"hello": "overview"})
    page.sign_out()
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
    recent = page.wait(lambda _: page.text('[data-queue="default"] [data-field="recent"]'))
    assert re.match(r"[1-9]\d* finished in 10 min .* failure rate 0%", recent), recent
    page.screenshot("overview")
    page.css("#signout").click()
    page.shown("#token")
    assert page.js("return sessionStorage.getItem('runlane.token')") is None


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
    page.wait(lambda _: value() >= 40, what="a timeline worth a picture")
    copy_for_docs(page.screenshot("run-progress"))
    shot = page.screenshot("run-progress-phone", PHONE)
    page.color_scheme("dark")
    page.screenshot("run-progress-dark")
    page.color_scheme("light")
    page.wait(lambda _: value() == 100, timeout=30, what="the end")
    page.wait(lambda _: page.attr(".run-head", "data-status") == "succeeded")
    assert timeline() == api.get(run["id"])["last_seq"]
    assert shot.exists()


def test_cancel_and_retry_from_the_page(page: Page, api: Client) -> None:
    run = api.submit("demo.sleep", {"seconds": 30})
    page.get(f"/ui/runs/{run['id']}")
    page.wait(lambda _: page.attr(".run-head", "data-status") == "running",
              what="the run to start")  # fmt: skip
    page.tab_to("#cancel").send_keys(Keys.ENTER)  # by keyboard alone
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
    page.screenshot("overview")


def test_search_finds_a_run_by_its_idempotency_key(page: Page, api: Client) -> None:
    run = api.submit("demo.echo", {"find": "me"}, idempotency_key="ui-search-key-1")
    api.submit("demo.echo", {"find": "not me"})
    page.get("/ui/runs?q=ui-search-key-1")
    row = f'tr[data-run-id="{run["id"]}"]'
    page.shown(row)
    page.wait(lambda _: len(page.all("#runs-table tbody tr[data-run-id]")) == 1)


def test_the_list_pages_with_next_cursor(page: Page, api: Client) -> None:
    api.submit_many([{"task": "demo.echo", "queue": "paged", "input": n} for n in range(60)])
    page.get("/ui/runs?queue=paged")
    page.wait(lambda _: len(page.all("#runs-table tr[data-run-id]")) == 50, what="a first page")
    page.shown("#more").click()
    page.wait(lambda _: len(page.all("#runs-table tr[data-run-id]")) == 60, what="the next page")
    page.wait(lambda _: not page.css("#more").is_displayed(), what="no page after the last")


def test_a_queue_is_paused_resumed_and_limited_from_its_page(page: Page, api: Client) -> None:
    page.get("/ui/queues/default")
    page.shown("#pause").click()
    wait_for(lambda: queue(api, "default")["paused"], 10, message="the pause")
    page.shown("#resume")
    page.shown('[data-queue="default"] .pill.paused')
    page.screenshot("queue-paused")
    page.css("#resume").click()
    wait_for(lambda: not queue(api, "default")["paused"], 10, message="the resume")
    page.shown("#l-concurrency").send_keys("3")
    page.css("#l-rate").send_keys("10")
    page.css("#l-period").send_keys("60")
    page.css("#limits-save").click()
    wait_for(lambda: queue(api, "default")["limits"]["concurrency"] == 3, 10, message="limits")
    assert queue(api, "default")["limits"]["rate"] == {"limit": 10, "period_s": 60}
    page.wait(lambda _: "3 at once · 10 per 60 s" in page.text('[data-queue="default"] .facts'))
    page.screenshot("queue")
    api.set_limits("default", concurrency=None, rate=None)


def test_workers_and_schedules_are_listed_and_schedules_made_and_deleted(
    page: Page, api: Client
) -> None:
    page.get("/ui/workers")
    page.shown("#workers-table tbody tr[data-worker]")
    page.screenshot("workers")
    page.get("/ui/schedules")
    page.shown("#s-task option[value='demo.noop']")
    page.css("#s-name").send_keys("ui-hourly")
    Select(page.css("#s-task")).select_by_value("demo.noop")
    page.css("#s-when").send_keys("3600")
    page.css("#s-input").send_keys('{"from": "the page"}')
    page.css("#s-create").click()
    page.shown('tr[data-schedule="ui-hourly"]')
    made = [s for s in api.schedules()["items"] if s["name"] == "ui-hourly"]
    assert made and made[0]["every_s"] == 3600 and made[0]["input"] == {"from": "the page"}
    page.screenshot("schedules")
    page.css('tr[data-schedule="ui-hourly"] button').click()
    wait_for(lambda: not api.schedules()["items"], 10, message="the delete")
    page.wait(lambda _: not page.all('tr[data-schedule="ui-hourly"]'))


def test_the_progress_card_embeds_in_a_page_of_another_origin(
    page: Page, api: Client, user_site: dict[str, bytes]
) -> None:
    run = api.submit("demo.progress", {"steps": 5, "interval_ms": 100})
    other = api.submit("demo.echo")
    token = api.scoped_token(runs=[run["id"]], ttl_s=600)["token"]  # what the README advises
    page.expect_console("403")  # the page's try at another run: refused, as it must be
    user_site["/export"] = EMBED.format(
        base=page.base, run_id=run["id"], token=token, other_id=other["id"]
    ).encode()
    page.driver.get(user_site["origin"].decode() + "/export")
    card = page.wait(lambda d: d.find_element("css selector", "runlane-run").shadow_root)
    page.wait(lambda _: card.find_element("css selector", ".status").text == "✓ succeeded")
    bar = card.find_element("css selector", '[role="progressbar"]')
    assert bar.get_attribute("aria-valuenow") == "100"
    assert page.js("return window.seqs") == list(range(1, api.get(run["id"])["last_seq"] + 1))
    # CORS: the page's own fetch of the run with the token, and of a run outside its scope
    page.wait(lambda _: page.js("return window.fetched.length") == 2)
    assert page.js("return window.fetched") == [[200, run["id"]], [403, None]]
    page.screenshot("embed")


# The README's example, as a user's own page would hold it.
EMBED = """<!doctype html><meta charset="utf-8"><title>My app</title><link rel="icon" href="data:,">
<h1>Export</h1>
<runlane-run run-id="{run_id}" token="{token}"></runlane-run>
<script type="module">
  import {{ tailRun }} from "{base}/ui/runlane.js";
  window.seqs = [];
  tailRun("{run_id}", {{ token: "{token}", onEvent: (e) => window.seqs.push(e.seq) }});
  window.fetched = [];
  for (const id of ["{run_id}", "{other_id}"]) {{
    const headers = {{ Authorization: "Bearer {token}" }};
    const answer = await fetch(`{base}/v1/runs/${{id}}`, {{ headers }});
    window.fetched.push([answer.status, answer.ok ? (await answer.json()).id : null]);
  }}
</script>"""


def queue(api: Client, name: str) -> dict[str, Any]:
    return next(q for q in api.queues()["items"] if q["name"] == name)


def test_cancel_and_retry_every_run_of_the_filter_on_the_server(page: Page, api: Client) -> None:
    ids = [api.submit("demo.echo", {"n": n}, queue="held")["id"] for n in range(3)]
    page.get("/ui/runs?queue=held&status=queued")
    page.wait(lambda _: len(page.all("#runs-table tr[data-run-id]")) == 3, what="three rows")
    page.css("#bulk-cancel").click()
    page.shown("#bulk-confirm").click()
    page.wait(lambda _: "Cancelled 3 of 3" in page.text("#toasts"), what="the bulk cancel")
    assert {api.get(run_id)["status"] for run_id in ids} == {"cancelled"}
    page.get("/ui/runs?queue=held&status=cancelled")
    page.wait(lambda _: len(page.all("#runs-table tr[data-run-id]")) == 3, what="three rows")
    page.shown("#bulk-retry").click()
    page.shown("#bulk-confirm").click()
    page.wait(lambda _: "Retried 3 of 3" in page.text("#toasts"), what="the bulk retry")
    assert {api.get(run_id)["status"] for run_id in ids} == {"queued"}


def test_a_parent_shows_its_children_as_a_tree_and_why_it_waits(page: Page, api: Client) -> None:
    grandchild = {"task": "demo.echo", "queue": "held-flow"}
    children = [{"task": "demo.collect", "queue": "held-flow", "children": [grandchild]},
                {"task": "demo.echo", "queue": "held-flow"}]  # fmt: skip
    parent = api.submit_flow("demo.collect", children, queue="held-flow")
    page.get(f"/ui/runs/{parent['id']}")
    page.wait(lambda _: page.attr("#run-waiting .waiting", "data-reason") == "children")
    page.wait(lambda _: len(page.all("#run-children li[data-run-id]")) == 3, what="the tree")
    assert len(page.all("#run-children .tree .tree li[data-run-id]")) == 1  # the grandchild
    page.screenshot("run-flow")
    leaf = page.all("#run-children .tree .tree li[data-run-id]")[0].get_attribute("data-run-id")
    page.get(f"/ui/runs/{leaf}")
    page.wait(lambda _: page.attr("#run-waiting .waiting", "data-reason") == "no_workers")
    page.shown(f'#run-fields a[href="/ui/runs/{children_of(api, parent["id"])}"]')
    api.cancel(parent["id"])


def children_of(api: Client, parent_id: str) -> str:
    """The id of the parent's child that is itself a parent."""
    return next(c["id"] for c in api.children(parent_id) if c["task"] == "demo.collect")


def test_a_burst_of_events_keeps_the_page_responsive(page: Page, api: Client) -> None:
    """1,000 runs submitted at once (3,000 events within seconds): the tail's events are
    applied once per frame, so no task blocks the page for long and the list keeps up."""
    page.get("/ui/runs?task=demo.noop")
    page.shown("#runs-table")
    page.js(LONG_TASKS)
    api.submit_many([{"task": "demo.noop", "input": {"n": n}} for n in range(1000)])
    page.wait(lambda _: len(page.all("#runs-table tr[data-run-id]")) >= 50, what="the new runs")
    done = '#runs-table tr[data-status="succeeded"]'
    page.wait(lambda _: len(page.all(done)) >= 50, timeout=60, what="them to finish, live")
    assert page.js("return window.longest") < 750, page.js("return window.longTasks")


LONG_TASKS = """
window.longTasks = [];
window.longest = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.longTasks.push(Math.round(entry.duration));
    window.longest = Math.max(window.longest, entry.duration);
  }
}).observe({ type: "longtask" });
"""


def test_after_a_drop_the_tail_resumes_from_its_cursor(
    page: Page, api: Client, ui_stack: Stack
) -> None:
    """The web process killed and started again: the page reconnects with its last cursor and
    gets what happened meanwhile (the run's end, committed while no web process ran). Last in
    this module: it restarts the stack's web process."""
    page.get("/ui/runs")
    page.wait(lambda _: page.text("#conn") == "● live", what="the tail")
    run = api.submit("demo.sleep", {"seconds": 2})
    row = f'tr[data-run-id="{run["id"]}"]'
    page.wait(lambda _: page.attr(row, "data-status") == "running", what="the run to start")
    lists = page.js(LIST_FETCHES)
    page.expect_console("WebSocket connection to")
    page.expect_console("net::ERR_CONNECTION_REFUSED")
    ui_stack.kill("web")
    page.wait(lambda _: page.text("#conn") == "◌ reconnecting…", what="the drop to show")
    wait_for(lambda: stored_status(ui_stack, run["id"]) == "succeeded", 30, message="its end")
    ui_stack.start("web")
    ui_stack.wait_ready()
    page.wait(lambda _: page.text("#conn") == "● live", timeout=30, what="the tail to resume")
    page.wait(lambda _: page.attr(row, "data-status") == "succeeded", what="the missed events")
    assert page.js(LIST_FETCHES) == lists  # from the tail, not from reloading the list


LIST_FETCHES = """return performance.getEntriesByType("resource")
  .filter((e) => new URL(e.name).pathname === "/v1/runs").length"""


def stored_status(stack: Stack, run_id: str) -> str:
    """The run's status in Postgres itself, for when no web process answers."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
    return str(row[0]) if row else ""
