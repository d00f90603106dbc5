"""Correcting a gold label as a person does it, in Debian's Chromium driven by Playwright, over a real server and a
finished tiny run: mark a test record's gold label wrong in the Run page's predictions browser, export the
corrections from the review page, and prepare the recipe's data again with ``data.corrections``: the record's label
has changed and the data report counts it. Screenshots go to ``$LMTUNE_STUDIO_SCREENSHOTS`` when it is set.
Chromium missing is a failure, never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from browser import chromium, new_tab, shots_folder
from conftest import run_cli, sentiment_records, write_jsonl, write_recipe
from playwright.sync_api import expect

from lmtune.lifecycle import run_recipe
from lmtune.recipe import load_recipe
from lmtune.studio.server import StudioServer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return shots_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("review-studio")
    data = write_jsonl(root / "reviews.jsonl", sentiment_records())
    recipe = write_recipe(root / "tiny.yaml", tiny_model_dir, data, name="tiny", training={"max_steps": 4},
                          eval={"systems": ["zero_shot", "finetuned"]})
    run_recipe(load_recipe(recipe), out=root / "runs" / "tiny", quiet=True)
    server = StudioServer(root / "runs", port=0, quiet=True).start()
    yield SimpleNamespace(url=server.url, runs=root / "runs", recipe=recipe)
    server.stop()


@pytest.fixture(scope="module")
def page(studio):
    with chromium() as browser:
        yield new_tab(browser, accept_downloads=True)


def test_a_gold_label_marked_wrong_in_the_browser_changes_the_next_data_stage(studio, page, shots, tmp_path):
    test = [json.loads(line) for line in (studio.runs / "tiny" / "data" / "test.jsonl").read_text().splitlines()]
    page.goto(studio.url + "/runs/tiny")
    row = page.locator("#pred-table tbody tr").first
    expect(row.locator("button.gold-wrong")).to_be_visible()
    text = row.locator("td").nth(1).inner_text()
    gold = row.locator("td").nth(2).inner_text()
    record = next(i for i, r in enumerate(test) if r["text"] in text and r["label"] == gold)
    row.locator("button.gold-wrong").click()
    choice = row.locator("select.gold-choice")
    options = choice.locator("option").all_inner_texts()
    assert gold not in options and len(options) == 2
    choice.select_option(options[0])
    row.locator("input.gold-reason").fill("the review is sarcastic")
    page.locator("#predictions").screenshot(path=str(shots / "review-1-gold-is-wrong.png"))
    assert (shots / "review-1-gold-is-wrong.png").stat().st_size > 10_000
    row.locator("button.gold-save").click()
    expect(row.locator(".corrected")).to_contain_text(f"gold → {options[0]}")
    page.reload()  # a corrected row shows it on the next visit
    expect(page.locator("#pred-table tbody tr").first.locator(".corrected")).to_contain_text(options[0])

    page.locator("#review-confident").click()
    expect(page.locator("#pred-sort")).to_have_value("confidence")
    expect(page.locator("#pred-correct")).to_have_value("incorrect")

    page.goto(studio.url + "/review")
    listed = page.locator("#corrections tbody tr")
    expect(listed).to_have_count(1)
    expect(listed.first).to_contain_text(f"{gold} → {options[0]}")
    expect(listed.first).to_contain_text("the review is sarcastic")
    page.screenshot(path=str(shots / "review-2-corrections.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("#review-export").click()
    exported = tmp_path / "corrections.jsonl"
    download.value.save_as(exported)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [(c["text"], c["label"], c["corrected"], c["record"]) for c in lines] == \
        [(test[record]["text"], gold, options[0], record)]

    recipe = yaml.safe_load(studio.recipe.read_text())
    recipe["data"]["corrections"] = str(exported)
    corrected = tmp_path / "corrected.yaml"
    corrected.write_text(yaml.safe_dump(recipe))
    code, output = run_cli("data", "prepare", corrected, "--out", tmp_path / "data")
    assert code == 0, output
    assert "gold labels corrected" in output
    again = [json.loads(line) for line in (tmp_path / "data" / "test.jsonl").read_text().splitlines()]
    assert [r["text"] for r in again] == [r["text"] for r in test]  # the same records in the test split
    assert [i for i, (a, b) in enumerate(zip(again, test)) if a["label"] != b["label"]] == [record]
    assert again[record]["label"] == options[0]
    report = json.loads((tmp_path / "data" / "data_report.json").read_text())
    assert report["corrections"]["records_changed"] == 1 and report["corrections"]["per_split"] == {"test": 1}


def test_a_training_record_is_corrected_from_the_review_page_and_withdrawn(studio, page, shots):
    page.goto(studio.url + "/review/tiny?split=train")
    rows = page.locator("#records tbody tr")
    expect(rows.first.locator("button.gold-wrong")).to_be_visible()
    train = json.loads((studio.runs / "tiny" / "data" / "train.jsonl").read_text().splitlines()[-1])
    page.locator("#records-q").fill(train["text"])
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").nth(1)).to_have_text(train["text"])
    rows.first.locator("button.gold-wrong").click()
    rows.first.locator("button.gold-save").click()
    expect(rows.first.locator(".corrected")).to_be_visible()
    page.screenshot(path=str(shots / "review-3-train-records.png"), full_page=True)
    page.goto(studio.url + "/review?run=tiny")
    mine = page.locator('#corrections tbody tr:has(td:text-is("train"))')
    expect(mine).to_have_count(1)
    mine.locator("button[data-withdraw]").click()
    expect(mine).to_contain_text("withdrawn by local")
    expect(mine).to_have_class("withdrawn")
