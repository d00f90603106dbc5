"""The studio as a person uses it, in Debian's Chromium driven by Playwright, over a real server and real runs.

A tiny run is trained before the studio starts; a second one is started from the New-run page and watched
until it finishes; then both are compared. Each step saves a screenshot, in ``$LMTUNE_STUDIO_SCREENSHOTS``
when it is set (the issue's note lists them), else in the test's temporary folder. Chromium missing is a
failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import chromium, new_tab, shot, shots_folder
from conftest import sentiment_records, write_jsonl, write_recipe
from playwright.sync_api import expect

from lmtune.lifecycle import run_recipe
from lmtune.recipe import load_recipe
from lmtune.studio.server import StudioServer

FINISH_S = 240  # a tiny run on 2 busy cores: seconds, but the whole suite may be running beside it


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return shots_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("studio")
    data = write_jsonl(root / "reviews.jsonl", sentiment_records())
    recipes = root / "recipes"
    recipes.mkdir()
    steps = {"max_steps": 12, "log_every": 1, "eval_every": 4}
    write_recipe(recipes / "tiny-a.yaml", tiny_model_dir, data, name="tiny-a", training=steps)
    write_recipe(recipes / "tiny-b.yaml", tiny_model_dir, data, name="tiny-b",
                 training={**steps, "learning_rate": 3e-2}, seed=1)
    run_recipe(load_recipe(recipes / "tiny-a.yaml"), out=root / "runs" / "tiny-a", quiet=True)
    server = StudioServer(root / "runs", port=0, recipes=recipes, quiet=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(studio):
    with chromium() as browser:
        yield new_tab(browser)


def test_runs_page_lists_the_finished_run(studio, page, shots):
    page.goto(studio.url + "/")
    row = page.locator('#runs tr[data-run="tiny-a"]')
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("finished")
    expect(row).to_contain_text("lora")
    shot(page, shots, "1-runs")


def test_run_page_draws_the_curves_and_opens_a_confusion_cell(studio, page, shots):
    page.goto(studio.url + "/")
    page.locator('#runs tr[data-run="tiny-a"] a').first.click()
    expect(page).to_have_url(studio.url + "/runs/tiny-a")
    expect(page.locator("#curve-loss svg path[data-series]").first).to_be_attached()
    assert page.locator("#curve-loss svg path[data-series]").count() == 2  # train and validation loss
    cell = page.locator("table.confusion [data-gold]").first
    gold, predicted = cell.get_attribute("data-gold"), cell.get_attribute("data-predicted")
    cell.click()
    examples = page.locator("#cell-examples tbody tr")
    expect(examples.first).to_be_visible()
    assert examples.count() >= 1
    expect(page.locator("#cell-examples")).to_contain_text(gold)
    expect(page.locator("#cell-examples")).to_contain_text(predicted)
    shot(page, shots, "2-run")


def test_a_run_started_from_the_new_run_page_finishes_and_compares(studio, page, shots):
    page.goto(studio.url + "/new")
    page.locator("#recipe-file").select_option("tiny-b.yaml")
    expect(page.locator("#recipe-text")).to_have_value(re.compile("name: tiny-b"))
    shot(page, shots, "3-new-run")
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(studio.url + "/runs/tiny-b", timeout=30_000)
    expect(page.locator("#run-status .status")).to_have_text("finished", timeout=FINISH_S * 1000)
    expect(page.locator("#curve-loss svg path[data-series]").first).to_be_attached()
    shot(page, shots, "4-started-run")
    page.goto(studio.url + "/")
    for name in ("tiny-a", "tiny-b"):
        page.locator(f'#runs input[type=checkbox][data-run="{name}"]').check()
    page.locator("#compare-selected").click()
    expect(page).to_have_url(studio.url + "/compare?run=tiny-a&run=tiny-b")
    expect(page.locator("#compare-loss svg path[data-series]").first).to_be_attached()
    assert page.locator("#compare-loss svg path[data-series]").count() == 4  # two runs x train, validation
    expect(page.locator("body")).to_contain_text("training.learning_rate")
    shot(page, shots, "5-compare")
