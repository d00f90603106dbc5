"""The report and the compare page as a reader sees them: rendered by Chromium at 1280 px.

Chromium is Debian's ``chromium`` package (``make test`` installs it); Playwright drives it. A machine
without it fails here with the command that installs it: a report nobody looked at is not tested.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import chromium
from report_runs import make_realistic_run

from lmtune.report.compare import compare
from lmtune.report.page import write_report

WIDTH = 1280

# Every table's right edge against its parent's; a table wider than the page's column spills out of it.
_OVERFLOWING_TABLES = """() => [...document.querySelectorAll('table')]
  .filter(t => t.getBoundingClientRect().right > t.parentElement.getBoundingClientRect().right + 1)
  .map(t => (t.closest('section')?.querySelector('h2')?.textContent || 'page') + ': '
             + Math.round(t.getBoundingClientRect().width) + ' px')"""


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def _look(browser, page_file: Path, screenshot: Path):
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(page_file.resolve().as_uri())
    page.screenshot(path=str(screenshot), full_page=True)
    return page


def _assert_fits(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert page.evaluate(_OVERFLOWING_TABLES) == []
    broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
    assert broken == 0


def test_report_fits_1280_px_and_shows_the_classification_details(browser, tmp_path):
    page = _look(browser, write_report(make_realistic_run(tmp_path)), tmp_path / "report.png")
    _assert_fits(page)
    headings = page.locator("h2").all_inner_texts()
    for heading in ("Systems side by side", "Per-class scores", "Misclassified examples", "Data"):
        assert any(h.startswith(heading) for h in headings), headings
    assert page.locator("table.per-class tbody tr").count() == 4  # one row per label
    assert page.locator("table.misclassified tbody tr").count() == 20
    assert page.get_by_text("measured at load average 1.32 (1 min) on 2 CPUs").is_visible()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    page.close()


def test_compare_page_fits_1280_px(browser, tmp_path):
    a = make_realistic_run(tmp_path, "drug-reviews")
    b = make_realistic_run(tmp_path, "drug-reviews-lr5e-4", seed=7, learning_rate=5e-4)
    page = _look(browser, compare([a, b], tmp_path / "compare.html"), tmp_path / "compare.png")
    _assert_fits(page)
    assert page.locator("p.warning").count() == 1  # the two runs split off different test reviews
    assert page.locator("img").count() >= 1
    page.close()
