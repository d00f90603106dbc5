"""A tour of ``lmtune studio`` in Chromium: a screenshot of every page, and a run started from the New-run page.

Starts the studio over a runs folder (``make demo`` writes ``runs/demo``), opens the Runs page, the page of
each run, a confusion-matrix cell's examples and the predictions browser filtered to errors; then starts
a run from the New-run page with a recipe from ``--recipes`` (each ``--set key=value`` edited into its
text, as a person would in the page), waits until the page says it finished, and compares it with the
first run. Usage::

    make demo
    .venv/bin/python examples/studio/tour.py --out screenshots --start drug-reviews-demo.yaml \\
        --set name=demo-short --set training.max_steps=20

Chromium is Debian's package (``make chromium``); Playwright drives it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import yaml
from playwright.sync_api import expect, sync_playwright

from lmtune.recipe import apply_override
from lmtune.studio.server import StudioServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--recipes", type=Path, default=Path("recipes"))
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--start", help="a recipe file in --recipes to start from the New-run page")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="key.path=value edits")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the started run")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("error: chromium is missing: run `make chromium`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    server = StudioServer(args.runs, port=0, recipes=args.recipes, quiet=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            names = _pages(page, server.url, args.out)
            if args.start:
                started = _start(page, server.url, args, args.out)
                _compare(page, server.url, [names[0], started], args.out)
            browser.close()
    finally:
        server.stop()
    print(f"screenshots in {args.out}/")
    return 0


def _shot(page, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"  {name}.png  {page.url}")


def _pages(page, url: str, out: Path) -> list[str]:
    """The Runs page, then each finished run's page, a confusion cell and the errors; the names seen."""
    page.goto(url + "/")
    page.wait_for_selector("#runs tbody tr")
    _shot(page, out, "runs")
    names = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")
    for name in names:
        page.goto(f"{url}/runs/{name}")
        page.wait_for_selector("#curve-loss svg")
        _shot(page, out, f"run-{name}")
        cell = page.locator("table.confusion [data-gold]")
        if cell.count():
            cell.last.click()
            page.wait_for_selector("#cell-examples tbody tr")
            page.locator("#cell-examples").screenshot(path=str(out / f"run-{name}-cell.png"))
            print(f"  run-{name}-cell.png")
    return names


def _start(page, url: str, args, out: Path) -> str:
    page.goto(url + "/new")
    page.locator("#recipe-file").select_option(args.start)
    expect(page.locator("#recipe-text")).not_to_have_value("")
    recipe = yaml.safe_load(page.locator("#recipe-text").input_value())
    for item in args.overrides:
        apply_override(recipe, item)
    page.locator("#recipe-text").fill(yaml.safe_dump(recipe, sort_keys=False))
    _shot(page, out, "new-run")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url("**/runs/*")
    name = page.url.rsplit("/", 1)[1]
    time.sleep(20)
    _shot(page, out, f"started-{name}-training")
    expect(page.locator("#run-status .status")).to_have_text("finished", timeout=args.timeout * 1000)
    page.wait_for_selector("#curve-loss svg path[data-series]")
    _shot(page, out, f"started-{name}")
    return name


def _compare(page, url: str, names: list[str], out: Path) -> None:
    page.goto(url + "/compare?" + "&".join(f"run={n}" for n in names))
    page.wait_for_selector("#compare-loss svg")
    _shot(page, out, "compare")


if __name__ == "__main__":
    sys.exit(main())
