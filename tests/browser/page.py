"""The dashboard in a headless Chromium, as the browser tests drive it: waits with deadlines,
screenshots, and what the page logged and requested (Chrome's browser and performance logs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")
DESKTOP = (1280, 900)
PHONE = (390, 844)
LOCAL_SCHEMES = {"data", "about", "blob", "chrome", "devtools"}


class Page:
    def __init__(self, driver: webdriver.Chrome, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots
        self.origin = urlsplit(base).netloc
        self.expected: list[str] = []  # console messages a test provokes on purpose
        self.allowed: list[str] = []  # other origins a test serves on purpose

    def expect_console(self, text: str) -> None:
        self.expected.append(text)

    @classmethod
    def open(cls, chromium: str, chromedriver: str, base: str, shots: Path) -> Page:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync"):  # fmt: skip
            options.add_argument(flag)
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        driver.set_page_load_timeout(20)
        return cls(driver, base, shots)

    def quit(self) -> None:
        self.driver.quit()

    # --- navigation and waiting -------------------------------------------------------------

    def get(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait(self, check: Callable[[Any], T], timeout: float = 20, what: str = "") -> T:
        """`check` until it returns something truthy; views re-render, so it should find its
        elements itself (one gone from the page meanwhile counts as not yet)."""
        ignored = (NoSuchElementException, StaleElementReferenceException)
        waiter = WebDriverWait(self.driver, timeout, 0.05, ignored_exceptions=ignored)
        return waiter.until(check, what)

    def attr(self, selector: str, name: str) -> str | None:
        return self.css(selector).get_attribute(name)

    def text(self, selector: str) -> str:
        return str(self.css(selector).text)

    def css(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def shown(self, selector: str, timeout: float = 20) -> WebElement:
        """The element once it is in the page and visible."""

        def found(_: Any) -> WebElement | None:
            elements = [e for e in self.all(selector) if e.is_displayed()]
            return elements[0] if elements else None

        return self.wait(found, timeout, f"{selector} to be shown")

    def tab_to(self, selector: str, presses: int = 40) -> WebElement:
        """Tab from the top of the page until `selector` has the focus (it is reachable by
        keyboard), and return it."""
        target = self.shown(selector)
        self.js("document.activeElement && document.activeElement.blur()")
        for _ in range(presses):
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            if self.driver.switch_to.active_element == target:
                return target
        raise AssertionError(f"{selector} was not reached in {presses} presses of Tab")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def signed_in(self, token: str = "tok-alpha") -> None:
        """The token in this tab's session storage, as the sign-in form leaves it."""
        self.get("/ui/signing-in")
        self.js("sessionStorage.setItem('runlane.token', arguments[0])", token)

    def sign_out(self) -> None:
        self.get("/ui/signing-out")
        self.js("sessionStorage.clear()")

    # --- what the page did --------------------------------------------------------------------

    def drain_logs(self) -> list[str]:
        """Console errors and requests to another host since the last call."""
        problems = [
            f"console: {entry['message']}"
            for entry in self.driver.get_log("browser")
            if entry["level"] in ("SEVERE", "ERROR")
            and not any(text in entry["message"] for text in self.expected)
        ]
        for entry in self.driver.get_log("performance"):
            url = _requested_url(json.loads(entry["message"])["message"])
            if url and not self._local(url):
                problems.append(f"request to another host: {url}")
        return problems

    def _local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in LOCAL_SCHEMES or parts.netloc in (self.origin, *self.allowed)

    def reset_view(self) -> None:
        self.signed_in()
        self.driver.set_window_size(*DESKTOP)
        self.color_scheme("light")

    def color_scheme(self, scheme: str) -> None:
        features = [{"name": "prefers-color-scheme", "value": scheme}]
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})

    def screenshot(self, name: str, size: tuple[int, int] = DESKTOP) -> Path:
        """The whole page (as tall as its content) at `size`'s width."""
        self.driver.set_window_size(*size)
        height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(size[0], max(size[1], min(int(height) + 140, 4000)))
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(*size)
        return path


def _requested_url(message: dict[str, Any]) -> str | None:
    method, params = message.get("method"), message.get("params", {})
    if method == "Network.requestWillBeSent":
        return str(params["request"]["url"])
    if method == "Network.webSocketCreated":
        return str(params["url"])
    return None
