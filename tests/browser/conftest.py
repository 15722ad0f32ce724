"""The browser tests' fixtures: one real stack per module (release, web, a worker serving
`default`, relay, scheduler) on a database and key prefix of its own, and a headless Chromium
driven by selenium that records every request and console message of the page.

They are skipped, with one reason, where no Chromium and chromedriver are installed."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from app.config import Settings
from runlane.client import Client
from runlane.embedded import free_port
from tests.browser.page import Page
from tests.conftest import TOKENS, scratch_database, stack_env
from tests.helpers import Stack

CHROMIUM = os.environ.get("RUNLANE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RUNLANE_CHROMEDRIVER", "/usr/bin/chromedriver")
SKIP_REASON = (
    f"no Chromium at {CHROMIUM} and chromedriver at {CHROMEDRIVER}"
    " (apt-get install chromium chromium-driver)"
)


def chromium_found() -> bool:
    return all(os.access(path, os.X_OK) for path in (CHROMIUM, CHROMEDRIVER))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    browser = Path(__file__).parent
    if os.environ.get("RUNLANE_REQUIRE_BROWSER") == "1" and not chromium_found():
        raise pytest.UsageError(f"RUNLANE_REQUIRE_BROWSER=1 (.ci/run), but {SKIP_REASON}")
    for item in items:
        if browser in item.path.parents:
            item.add_marker(pytest.mark.browser)
            if not chromium_found():
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def screenshots_folder(config: pytest.Config) -> Path:
    """RUNLANE_SCREENSHOTS, else `screenshots` in the run's --basetemp (the same folder in
    every xdist worker), else pytest's own temp root."""
    named = os.environ.get("RUNLANE_SCREENSHOTS")
    if named:
        return Path(named).resolve()
    if config.option.basetemp:
        return (Path(config.option.basetemp) / "screenshots").resolve()
    base: Path = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base / "screenshots"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folder = screenshots_folder(config)
    if folder.is_dir() and any(folder.glob("*.png")):
        terminalreporter.write_line(f"browser tests: screenshots in {folder}")


@pytest.fixture(scope="module")
def site_port() -> int:
    """The port of the module's user site (user_site): its origin is the one CORS allows."""
    return free_port()


@pytest.fixture(scope="module")
def ui_stack(
    servers: tuple[str, str],
    template_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    site_port: int,
) -> Iterator[Stack]:
    """The whole stack, shared by one module's tests (each test uses runs of its own)."""
    home = tmp_path_factory.mktemp("ui-stack")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with scratch_database(servers[1], template_db) as database_url:
        settings = Settings(
            home=home / "home",
            redis_url=servers[0],
            database_url=database_url,
            api_tokens=dict(TOKENS),
            dev_mode=False,
            prefix=prefix,
            lease_seconds=3.0,
            heartbeat_seconds=0.5,
            cancel_grace_seconds=2.0,
        )
        logdir = home / "logs"
        logdir.mkdir()
        env = {**stack_env(settings), "RUNLANE_CORS_ORIGINS": f"http://127.0.0.1:{site_port}"}
        stack = Stack(env, logdir)
        try:
            yield stack.start_all()
        finally:
            stack.stop()
            _forget(servers[0], prefix)


def _forget(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    keys = [*client.scan_iter(match=f"{prefix}*"), *client.scan_iter(match=f"rq:*{prefix}*")]
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def api(ui_stack: Stack) -> Client:
    return Client(ui_stack.base, "tok-alpha", timeout=10)


@pytest.fixture(scope="module")
def browser(ui_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    folder = screenshots_folder(request.config)
    folder.mkdir(parents=True, exist_ok=True)
    page = Page.open(CHROMIUM, CHROMEDRIVER, ui_stack.base, folder)
    try:
        yield page
    finally:
        page.quit()


@pytest.fixture
def page(browser: Page) -> Iterator[Page]:
    """The browser, checked after each test: no console error, no request to another host."""
    browser.reset_view()
    browser.drain_logs()
    yield browser
    problems = browser.drain_logs()
    browser.expected.clear()
    assert problems == [], "\n".join(problems)


@pytest.fixture
def user_site(browser: Page, site_port: int) -> Iterator[dict[str, bytes]]:
    """A site of another origin (another port), as a user's own page that embeds runlane.js
    and calls the API (the stack allows its origin): put a page's HTML under its path in the
    dict the fixture yields."""
    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", site_port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="user-site", daemon=True)
    thread.start()
    origin = f"127.0.0.1:{server.server_port}"
    browser.allowed.append(origin)
    pages["origin"] = f"http://{origin}".encode()
    try:
        yield pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def copy_for_docs(shot: Path) -> None:
    """RUNLANE_DOCS_SCREENSHOT=1 refreshes the README's picture (docs/dashboard.png)."""
    if os.environ.get("RUNLANE_DOCS_SCREENSHOT") == "1":
        docs = Path(__file__).resolve().parents[2] / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs / "dashboard.png")
