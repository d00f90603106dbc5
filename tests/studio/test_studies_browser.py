"""The study pages as a person uses them, in Debian's Chromium driven by Playwright, over a real studio server.

The runs folder holds a search (a real Optuna study on SQLite with its trials' runs), a learning curve with a
point still pending and an active-learning experiment. The tune page must show the leaderboard and the
parallel coordinates and follow the study while a trial is added; the curve page must draw its points and pick
up a point that finishes. Each step saves a screenshot, in ``$LMTUNE_STUDIO_SCREENSHOTS`` when it is set, else in
the test's temporary folder. Chromium missing is a failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import chromium, new_tab, shot, shots_folder
from optuna.trial import TrialState
from playwright.sync_api import expect
from studio_studies import active_json, add_trial, curve_json, open_study, tune_study

from lmtune.studio.server import StudioServer

POLL_MS = 15_000  # the pages poll every 3 s; a busy machine gets five polls


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return shots_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    runs = tmp_path_factory.mktemp("studies-browser") / "runs"
    tune_study(runs)
    curve_json(runs)
    active_json(runs)
    server = StudioServer(runs, port=0, quiet=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(studio):
    errors: list[str] = []
    with chromium() as browser:
        tab = new_tab(browser)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
    assert not errors, errors  # a script that threw would leave a page half drawn


def test_the_studies_page_lists_the_three_studies(studio, page, shots):
    page.goto(studio.url + "/")
    page.get_by_role("link", name="Studies").click()
    expect(page).to_have_url(studio.url + "/studies")
    rows = page.locator("#studies tbody tr[data-study]")
    expect(rows).to_have_count(3)
    expect(page.locator('tr[data-study="lr-search"]')).to_contain_text("4 trials: 3 complete, 1 pruned")
    expect(page.locator('tr[data-study="lc"]')).to_contain_text("3 of 4 points")
    shot(page, shots, "6-studies")


def test_the_tune_page_shows_the_leaderboard_and_the_parallel_coordinates(studio, page, shots):
    page.goto(studio.url + "/studies")
    page.locator('tr[data-study="lr-search"] a').click()
    expect(page).to_have_url(studio.url + "/tune/lr-search")
    rows = page.locator("#leaderboard tbody tr")
    expect(rows).to_have_count(4)
    assert [r.get_attribute("data-trial") for r in rows.all()] == ["1", "3", "0", "2"]
    expect(rows.first).to_contain_text("0.74")
    expect(page.locator("#parallel svg path[data-trial]")).to_have_count(3)  # the complete trials
    expect(page.locator("#parallel svg line[data-axis]")).to_have_count(3)  # learning_rate, r, f1_macro
    expect(page.locator("#importances svg rect[data-bar]")).to_have_count(2)
    expect(page.locator("#tune-best")).to_contain_text("trial 1")
    shot(page, shots, "7-tune")
    rows.first.locator("a").click()
    expect(page).to_have_url(studio.url + "/runs/lr-search~trial-1")
    expect(page.locator("#run-status .status")).to_have_text("finished")


def test_the_tune_page_follows_the_study_while_a_trial_is_added(studio, page, shots):
    page.goto(studio.url + "/tune/lr-search")
    expect(page.locator("#leaderboard tbody tr")).to_have_count(4)
    directory = studio.studio.runs / "lr-search"
    add_trial(open_study(directory), directory, 2e-3, 16, TrialState.COMPLETE, 0.91)
    expect(page.locator("#leaderboard tbody tr")).to_have_count(5, timeout=POLL_MS)
    expect(page.locator("#leaderboard tbody tr").first).to_have_attribute("data-trial", "4")
    expect(page.locator("#parallel svg path[data-trial]")).to_have_count(4)
    expect(page.locator("#tune-summary")).to_contain_text("Best: trial 4, f1_macro 0.91")
    shot(page, shots, "8-tune-updated")


def test_the_curve_page_draws_its_points_and_picks_up_a_finished_one(studio, page, shots):
    page.goto(studio.url + "/curves/lc")
    expect(page.locator("#curve-chart svg circle[data-point]")).to_have_count(3)
    expect(page.locator('#curve-chart svg path[data-series="fitted power law"]')).to_have_count(1)
    beyond = page.locator('#curve-chart svg path[data-series="extrapolated"]')
    expect(beyond).to_have_attribute("stroke-dasharray", "6,4")  # dashed beyond the data
    expect(page.locator("#curve-chart svg line[data-hline]")).to_have_count(1)  # zero-shot
    expect(page.locator("#curve-statement")).to_contain_text("Doubling the 400 training examples")
    expect(page.locator("#curve-points tbody tr")).to_have_count(5)  # zero-shot and four points
    shot(page, shots, "9-curve")
    marker = studio.studio.runs / "lc" / "curve.json"
    body = json.loads(marker.read_text())
    body["points"][3].update(state="finished", value=0.82, ci_low=0.78, ci_high=0.86, seconds=50.0)
    marker.write_text(json.dumps(body))
    expect(page.locator("#curve-chart svg circle[data-point]")).to_have_count(4, timeout=POLL_MS)


def test_the_active_page_draws_a_band_per_strategy_and_every_round(studio, page, shots):
    page.goto(studio.url + "/active/al")
    expect(page.locator("#active-chart svg path[data-band]")).to_have_count(2)
    expect(page.locator("#active-chart svg path[data-series]")).to_have_count(2)
    expect(page.locator("#active-arms tbody tr")).to_have_count(6)
    expect(page.locator('#active-reach li[data-strategy="entropy"]')).to_contain_text("40 labels")
    shot(page, shots, "10-active")
