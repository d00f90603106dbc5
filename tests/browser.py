"""Debian's Chromium driven by Playwright, for the browser tests, and where the studio's screenshots go.

Chromium missing is a failure with the command that installs it, never a skip: a page nobody looked at is not
tested. Screenshots go to ``$LMTUNE_STUDIO_SCREENSHOTS`` when it is set, else to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

HEIGHT = 900
TIMEOUT_MS = 20_000


def shots_folder(tmp_path_factory) -> Path:
    """``$LMTUNE_STUDIO_SCREENSHOTS`` (made if missing), else a new temporary folder."""
    folder = Path(os.environ.get("LMTUNE_STUDIO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_path() -> str:
    """Debian's ``chromium``; the test fails with the command that installs it when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium is not installed: run `make chromium` (as root it runs `apt-get install -y chromium`)",
                    pytrace=False)
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on leaving."""
    path = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        yield browser
        browser.close()


def new_tab(browser: Browser, width: int = 1280, **options) -> Page:
    """A page in a context of its own, ``width`` by 900 px, that waits up to 20 s; ``options`` go to ``new_page``."""
    tab = browser.new_page(viewport={"width": width, "height": HEIGHT}, **options)
    tab.set_default_timeout(TIMEOUT_MS)
    return tab


def shot(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot ``folder/name.png``, which must hold more than a blank page."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
