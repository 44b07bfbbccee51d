"""Playwright driving Debian's Chromium against pytest-django's live server.

One browser is launched per test session; each test gets a fresh context
(cookies, storage). Screenshots go to AGENTMARGIN_SCREENSHOT_DIR when it
is set (docs/screenshots contains the committed ones), else to a temporary
folder, so an ordinary test run changes no tracked file.
"""

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("AGENTMARGIN_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}
# Playwright's wait for an element or a navigation, in milliseconds.
TIMEOUT_MS = 15_000


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Run the browser tests last, after pytest-django has ordered the rest.

    Playwright's sync API keeps an asyncio loop running in the main thread
    while the browser is open, and a test that later calls asyncio.run()
    would fail. Running these last lets one browser serve the whole session.
    """
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium is not at {CHROMIUM}. Install it with `apt-get install -y "
            "chromium` (make browser does), or set AGENTMARGIN_CHROMIUM."
        )
    # With Playwright's loop running in the test thread, Django's ORM would
    # reject the tests' own queries (SynchronousOnlyOperation) without this.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    configured = os.environ.get("AGENTMARGIN_SCREENSHOT_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def screenshot(page, screenshot_dir):
    """Save a full-page screenshot of the current page under `name`.png."""

    def save(name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
