"""Blind A/B judging as a person does it, in Debian's Chromium driven by Playwright, over a real server and a real
tiny generation run: a round created from the form, judged with the keyboard, its results, the pairs export that
``lmtune data check`` accepts as preference data, and the run's report. Screenshots go to
``$LMTUNE_STUDIO_SCREENSHOTS`` when it is set, else the test's temporary folder. Chromium missing is a failure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import chromium, new_tab, shot, shots_folder
from conftest import run_cli
from judge_runs import generation_run
from playwright.sync_api import expect

from lmtune.guidance import db, judging
from lmtune.run_dir import RunDir
from lmtune.studio.server import StudioServer

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = {"a": "A", "1": "A", "b": "B", "2": "B", "t": "tie", "0": "tie", "s": "skip"}
PRESSED = ["a", "2", "t", "s", "1", "b", "0"]  # in turn, item after item (at least 4 items: one skipped)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return shots_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("judge-studio")
    generation_run(root, tiny_model_dir)  # 9 test examples
    server = StudioServer(root / "runs", port=0, quiet=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(studio):
    with chromium() as browser:
        yield new_tab(browser, accept_downloads=True)


@pytest.fixture(scope="module")
def judged() -> dict[int, str]:
    """Item index -> the side chosen (as shown), filled by the judging test for the results test."""
    return {}


def _progress(page, done: int, total: int) -> None:
    expect(page.locator("#judge-progress")).to_have_text(f"{done} of {total} judged")


def test_a_blind_round_is_judged_with_the_keyboard(studio, page, shots, judged):
    page.goto(studio.url + "/judge")
    expect(page.locator("#round-run")).to_have_value("gen")
    expect(page.locator("#round-a")).to_have_value("zero_shot")
    expect(page.locator("#round-b")).to_have_value("finetuned")
    page.get_by_role("button", name="Create round").click()
    expect(page).to_have_url(studio.url + "/judge/gen-1")
    total = int(re.match(r"0 of (\d+) judged", page.locator("#judge-progress").inner_text()).group(1))
    assert 4 <= total <= 9
    assert "finetuned" not in page.content() and "zero_shot" not in page.content()  # blind: sides only
    page.locator("#judge-reason").click()
    page.locator("#judge-reason").press_sequentially("a b t 1 2 0: fewer broken tokens")
    _progress(page, 0, total)  # typing a reason answers nothing
    shot(page, shots, "judge-1-item")
    page.route("**/api/judge/*/answer", lambda route: route.fulfill(
        status=500, json={"error": {"message": "the disk is full", "code": 500}}))
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    expect(page.locator("#judge-error")).to_have_text("not saved: the disk is full")
    expect(page.locator("#judge-item")).to_have_attribute("data-index", "0")  # the item stays until saved
    page.unroute("**/api/judge/*/answer")
    for done in range(total):
        key = PRESSED[done % len(PRESSED)]
        index = int(page.locator("#judge-item").get_attribute("data-index"))
        page.keyboard.press(key)
        _progress(page, done + 1, total)
        judged[index] = KEYS[key]
        expect(page.locator("#judge-error")).to_be_hidden()
    expect(page.locator("#judge-done")).to_be_visible()
    assert sorted(judged) == list(range(total))
    answers = page.request.get(studio.url + "/api/judge/gen-1/answers").json()["answers"]
    assert answers[0]["reason"] == "a b t 1 2 0: fewer broken tokens" and answers[1]["reason"] == ""
    assert [(a["index"], a["choice"]) for a in answers] == sorted(judged.items())


def test_results_show_the_win_rate_and_export_preference_pairs(studio, page, shots, judged, tmp_path):
    with db.opened(db.path_in(studio.studio.state_dir), judging.SCHEMA) as conn:
        items = {r["idx"]: r for r in conn.execute("SELECT * FROM judge_items")}
    winners = [judging.unblind(choice, bool(items[index]["flipped"])) for index, choice in judged.items()]
    # ties and skips are no pair, nor is an empty output (a preference record needs both texts)
    expected_pairs = sum(judging.unblind(choice, bool(items[index]["flipped"])) not in ("tie", "skip")
                         and bool(items[index]["output_a"].strip() and items[index]["output_b"].strip())
                         for index, choice in judged.items())
    assert expected_pairs >= 3
    page.goto(studio.url + "/judge")
    page.locator("#rounds a", has_text="results").click()
    expect(page).to_have_url(studio.url + "/judge/gen-1/results")
    table = page.locator("table.results")
    for label, winner in (("zero_shot (system A) preferred", "a"), ("finetuned (system B) preferred", "b"),
                          ("ties", "tie"), ("skipped (cannot tell; in no count)", "skip")):
        cell = table.locator("th", has_text=re.compile(f"^{re.escape(label)}$")).locator("xpath=following-sibling::td")
        expect(cell).to_have_text(str(winners.count(winner)))
    assert winners.count("skip") == 1
    rate = (winners.count("b") + 0.5 * winners.count("tie")) / (len(winners) - 1)  # the skip counts in none
    expect(table.locator("tr", has_text="win rate of finetuned").locator("td")).to_contain_text(f"{rate:.4g}")
    expect(table.locator("tr", has_text="win rate of finetuned").locator("td small")).to_be_visible()  # interval
    expect(page.locator("table.annotators")).to_contain_text("local")
    shot(page, shots, "judge-2-results")
    with page.expect_download() as download:
        page.locator("#pairs-link").click()
    pairs = tmp_path / "pairs.jsonl"
    download.value.save_as(pairs)
    assert len(pairs.read_text().splitlines()) == expected_pairs
    code, output = run_cli("data", "check", pairs, "--task", "preference")
    assert code == 0 and "format preference" in output, output
    page.get_by_role("button", name="Update the run's report.html").click()
    expect(page.locator("#report-message")).to_contain_text("report.html updated")
    assert "Human evaluation: blind A/B judgements" in RunDir(studio.studio.runs / "gen").report.read_text()
    page.goto(studio.url + "/runs/gen")
    expect(page.locator("#human-eval")).to_contain_text("gen-1")
