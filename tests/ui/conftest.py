"""Fixtures for the clinician page: a real uvicorn server on a free port and headless Chromium.

The server runs ``create_app(settings)`` with the committed models in a background thread; the
browser is Debian's Chromium driven by Playwright (no downloaded browsers). Without
/usr/bin/chromium the browser tests skip, unless the CI variable is set: then they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from service.app import create_app
from service.settings import REPO_ROOT, Settings
from tests.conftest import MODELS_DIR, Keys, make_keys, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-output" / "ui"
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}


@dataclass(frozen=True)
class LiveServer:
    url: str
    keys: Keys

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=httpx.Timeout(10.0))

    def predict(self, name: str, features: dict[str, Any]) -> dict[str, Any]:
        with self.api() as client:
            response = client.post(
                f"/v1/models/{name}/predict",
                headers=self.keys.header("predict"),
                json={"features": features},
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def model(self, name: str) -> dict[str, Any]:
        with self.api() as client:
            response = client.get(f"/v1/models/{name}", headers=self.keys.header("predict"))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("ui-server")
    keys = make_keys(root / "keys.json")
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=f"sqlite:///{root / 'audit.db'}",
        api_keys_file=root / "keys.json",
        pseudonym_key="ui-test-pseudonym-key",  # type: ignore[arg-type]
        log_level="WARNING",
    )
    with running_server(create_app(settings)) as url:
        yield LiveServer(url=url, keys=keys)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the clinician page tests, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class BrowserLog:
    """What the page did: uncaught errors, console errors, every URL it requested."""

    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


def open_page(browser: Browser, server: LiveServer, log: BrowserLog, viewport: Any) -> Page:
    context = browser.new_context(viewport=viewport, base_url=server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("pageerror", lambda error: log.exceptions.append(str(error)))
    page.on(
        "console",
        lambda message: (
            log.console_errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("request", lambda request: log.requests.append(request.url))
    return page


@pytest.fixture
def page(browser: Browser, live_server: LiveServer, browser_log: BrowserLog) -> Iterator[Page]:
    """A fresh browser context (empty storage) on a laptop-sized window."""
    opened = open_page(browser, live_server, browser_log, LAPTOP)
    yield opened
    opened.context.close()
    assert browser_log.exceptions == [], "the page threw"
    assert browser_log.console_errors == [], "the page logged errors (CSP violations?)"


@pytest.fixture
def tablet_page(
    browser: Browser, live_server: LiveServer, browser_log: BrowserLog
) -> Iterator[Page]:
    opened = open_page(browser, live_server, browser_log, TABLET)
    yield opened
    opened.context.close()
    assert browser_log.exceptions == []


def save_screenshot(page: Page, directory: Path, name: str) -> Path:
    """Full-page PNG under the test's tmp folder, copied to test-output/ui/ for people to see."""
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SCREENSHOTS / path.name)
    return path
