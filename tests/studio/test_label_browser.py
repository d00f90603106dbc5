"""Labelling as people do it, in Debian's Chromium driven by Playwright, over a real studio with a token.

The owner creates a queue and an annotator from the Label page's forms; the annotator opens the link they were
sent and labels 20 records with the keyboard alone (digits, Enter for the pre-label, one U), reloads, and finds all
20 answers. Then two annotators label an overlap-1 queue in two browser contexts and the owner's overview shows
their Cohen's kappa. Screenshots go to ``$LMTUNE_STUDIO_SCREENSHOTS`` when set. Chromium missing is a failure,
never a skip. A queue needs no model: the recipe only names the labels and fields.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import chromium, new_tab, shot, shots_folder
from conftest import sentiment_records, write_jsonl, write_recipe
from playwright.sync_api import expect
from sklearn.metrics import cohen_kappa_score
from studio_runs import studio_folders

from lmtune.studio.server import StudioServer

OWNER = "owner-token"
WRITE = {"X-Lmtune-Studio": "1"}
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return shots_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-studio")
    runs, recipes = studio_folders(root)
    # An `lmtune active` queue file: ranked records with the model's pre-label and confidence.
    queue = [{**record, "prelabel": record["rating"], "confidence": 0.6 + (i % 4) / 10, "score": 1.0 - i / 100,
              "strategy": "entropy", "rank": i, "pool_line": i + 1}
             for i, record in enumerate(sentiment_records(24))]
    for record in queue:
        del record["rating"]  # what the annotators decide
    write_jsonl(runs / "queue-entropy.jsonl", queue)
    write_jsonl(runs / "pairs.jsonl", sentiment_records(6))
    write_recipe(recipes / "reviews.yaml", root / "no-model", runs / "pairs.jsonl")
    studio = StudioServer(runs, port=0, token=OWNER, recipes=recipes, quiet=True).start()
    yield studio
    studio.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def _tab(browser, url: str):
    page = new_tab(browser)
    page.goto(url)
    return page


def _press(page, key: str) -> int:
    """Press ``key`` on the record shown; wait until the next one is shown (the answer was stored)."""
    record = page.locator("#record")
    before = record.get_attribute("data-index")
    page.keyboard.press(key)
    expect(record).not_to_have_attribute("data-index", before)
    expect(page.locator("#status")).not_to_have_class("label-status meta error")
    return int(before)


def test_an_annotator_labels_twenty_records_with_the_keyboard_only(server, browser, shots):
    owner = _tab(browser, server.link)
    owner.goto(server.url + "/label")
    form = owner.locator("#new-queue")
    form.locator("[name=name]").fill("reviews")
    form.locator("[name=pool]").fill("queue-entropy.jsonl")
    form.locator("[name=recipe]").select_option("reviews.yaml")
    form.locator("[name=guidelines]").fill("Label the sentiment the writer expresses, not the topic.")
    form.get_by_role("button", name="Create queue").click()
    expect(owner.locator('#label-queues tr[data-queue="reviews"]')).to_contain_text("0 of 24 answers")
    owner.locator("#new-annotator [name=name]").fill("ann")
    owner.locator("#new-annotator").get_by_role("button", name="Add annotator").click()
    expect(owner.locator("#annotator-link")).to_be_visible()
    link = owner.locator("#link").text_content()
    assert link.startswith(server.url + "/label?annotator=")
    shot(owner, shots, "label-1-queues")

    ann = _tab(browser, link)
    assert ann.url == server.url + "/label"  # the token went into a cookie
    ann.locator('#label-queues a[href="/label/reviews"]').click()
    expect(ann.locator("#record-text")).to_have_text(sentiment_records(1)[0]["review"])
    expect(ann.locator("#prelabel")).to_contain_text("positive")
    shot(ann, shots, "label-2-labelling")
    expected, prelabels = {}, {i: r["rating"] for i, r in enumerate(sentiment_records(24))}
    for step in range(21):  # 21 answers, one of them undone
        if step == 10:  # one U: the last answer is withdrawn and its record comes back
            last = max(expected)
            _press(ann, "u")
            assert int(ann.locator("#record").get_attribute("data-index")) == last
            expected.pop(last)
        if step % 4 == 0:
            expected[_press(ann, "Enter")] = None  # the pre-label, filled in below
        else:
            digit = 1 + step % 3
            expected[_press(ann, str(digit))] = LABELS[digit - 1]
    expected = {i: label or prelabels[i] for i, label in expected.items()}
    assert len(expected) == 20

    ann.reload()
    expect(ann.locator("#progress-text")).to_contain_text("you: 20 answered")
    mine = ann.evaluate("studio.get('/api/label/reviews/mine')")
    assert {a["index"]: a["label"] for a in mine["answers"]} == expected
    owner.goto(server.url + "/label/reviews/overview")
    expect(owner.locator('#annotator-progress tr[data-annotator="ann"]')).to_contain_text("20")
    exported = owner.request.get(server.url + "/api/label/reviews/export").text().splitlines()
    assert len(exported) == 20


def test_two_annotators_on_an_overlap_queue_give_the_owner_a_kappa(server, browser, shots):
    owner = _tab(browser, server.link)
    created = owner.request.post(server.url + "/api/label/queues", headers=WRITE, data={
        "name": "pairs", "pool": "pairs.jsonl", "recipe": "reviews.yaml", "overlap": 1})
    assert created.status == 201, created.text()
    answers = {"bob": "1 2 3 1 3 3", "cy": "1 2 3 3 1 3"}
    for name, keys in answers.items():
        added = owner.request.post(server.url + "/api/annotators", headers=WRITE, data={"name": name})
        page = _tab(browser, added.json()["link"])
        page.goto(server.url + "/label/pairs")
        for key in keys.split():
            _press(page, key)
        expect(page.locator("#done")).to_be_visible()
        page.context.close()
    owner.goto(server.url + "/label/pairs/overview")
    row = owner.locator('#agreement tr[data-pair="bob|cy"]')
    codes = {name: [int(k) for k in keys.split()] for name, keys in answers.items()}
    kappa = cohen_kappa_score(codes["bob"], codes["cy"])
    expect(row).to_contain_text("Cohen")
    expect(row.locator(".kappa")).to_have_text(f"{kappa:.3f}")
    expect(row).to_contain_text("0.667")  # raw agreement, 4 of 6
    shot(owner, shots, "label-3-overview")


def test_a_generation_queue_is_answered_in_the_text_box_and_a_refused_answer_stays(server, browser):
    owner = _tab(browser, server.link)
    prompts = [{"prompt": f"Greet person {i}", "prelabel": f"hello {i}", "confidence": None, "score": 0.5,
                "strategy": "random", "rank": i, "pool_line": i + 1} for i in range(2)]
    write_jsonl(Path(server.studio.runs) / "prompts.jsonl", prompts)
    created = owner.request.post(server.url + "/api/label/queues", headers=WRITE, data={
        "name": "greetings", "pool": "prompts.jsonl", "task": "generation"})
    assert created.status == 201, created.text()
    added = owner.request.post(server.url + "/api/annotators", headers=WRITE, data={"name": "dee"})
    page = _tab(browser, added.json()["link"])
    page.goto(server.url + "/label/greetings")
    box = page.locator("#answer-text")
    expect(box).to_have_value("hello 0")  # the model's draft
    expect(box).to_be_focused()
    page.keyboard.press("End")
    page.keyboard.type(" and thanks, sue")  # s, u and f type into the box
    _press(page, "Control+Enter")
    expect(box).to_have_value("hello 1")
    box.fill("")
    page.keyboard.press("Control+Enter")  # refused: the record stays, the status line says why
    expect(page.locator("#status")).to_contain_text("not saved: text: the answer is text of 1 to")
    assert page.locator("#record").get_attribute("data-index") == "1"
    mine = page.evaluate("studio.get('/api/label/greetings/mine')")
    assert [(a["index"], a["label"]) for a in mine["answers"]] == [(0, "hello 0 and thanks, sue")]
