"""The labelling API and pages over a studio with a token: annotator tokens open the labelling pages and their own
answers only, the owner's endpoints refuse them, bad input is one 4xx JSON message, and record text is escaped.

A queue needs no model and no run: the pool is a JSONL file in the runs folder; the recipe only names the labels
and the fields (its model is never loaded).
"""

from __future__ import annotations

import pytest
from conftest import sentiment_records, write_jsonl, write_recipe
from fastapi.testclient import TestClient
from studio_runs import studio_folders

from lmtune.studio.app import Studio, create_app

OWNER = "owner-secret"
WRITE = {"X-Lmtune-Studio": "1"}
EVIL = "<script>alert('x')</script> loved it"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-api")
    runs, recipes = studio_folders(root)
    records = sentiment_records(8)
    records[0]["review"] = EVIL
    write_jsonl(runs / "pool.jsonl", records)
    (runs / "broken.jsonl").write_text('{"review": "fine"}\n{"review": oops}\n')
    write_jsonl(root / "outside.jsonl", records)
    write_recipe(recipes / "reviews.yaml", root / "no-model", runs / "pool.jsonl")
    app = create_app(Studio(runs, recipes=recipes, token=OWNER))
    owner = TestClient(app, headers={**WRITE, "Authorization": f"Bearer {OWNER}"})
    created = owner.post("/api/label/queues", json={"name": "reviews", "pool": "pool.jsonl", "recipe": "reviews.yaml",
                                                    "guidelines": "Sentiment of the review."})
    assert created.status_code == 201, created.text
    tokens = {name: owner.post("/api/annotators", json={"name": name}).json()["token"] for name in ("ann", "bob")}
    return {"app": app, "owner": owner, "tokens": tokens, "root": root}


def _as(studio, name: str) -> TestClient:
    return TestClient(studio["app"], headers={**WRITE, "X-Lmtune-Annotator": studio["tokens"][name]})


def test_the_owner_creates_queues_from_a_recipe_and_adds_annotators_with_a_link(studio):
    owner = studio["owner"]
    (row,) = owner.get("/api/label/queues").json()["queues"]
    assert (row["name"], row["task"], row["labels"], row["progress"]["total"]) == (
        "reviews", "classification", ["negative", "neutral", "positive"], 8)
    added = owner.post("/api/annotators", json={"name": "cy"})
    assert added.status_code == 201
    assert added.json()["link"] == f"http://testserver/label?annotator={added.json()['token']}"
    assert owner.get("/api/annotators").json() == {"annotators": ["ann", "bob", "cy"]}
    assert owner.post("/api/annotators", json={"name": "cy"}).json()["error"]["message"] == (
        "name: there is already an annotator called 'cy'; pick another name")


def test_an_annotator_token_opens_the_labelling_pages_and_nothing_else(studio):
    ann = _as(studio, "ann")
    assert ann.get("/label").status_code == 200
    page = ann.get("/label/reviews")
    assert page.status_code == 200 and "Labelling as <b>ann</b>" in page.text
    assert "Sentiment of the review." in page.text
    assert ann.get("/").status_code == 401  # the runs are the owner's
    assert ann.get("/api/runs").status_code == 401
    for response in (ann.post("/api/label/queues", json={"name": "x", "pool": "pool.jsonl", "labels": ["a", "b"]}),
                     ann.get("/api/label/reviews/agreement"), ann.get("/api/label/reviews/export"),
                     ann.get("/label/reviews/overview")):
        assert response.status_code == 403
        assert "only the studio&#x27;s owner can" in response.text or (
            response.json()["error"]["message"].startswith("only the studio's owner can"))
    (row,) = ann.get("/api/label/queues").json()["queues"]
    assert "annotators" not in row and "pool" not in row  # who else labels, and server paths: the owner's


def test_without_a_token_or_with_an_unknown_one_nothing_opens(studio):
    nobody = TestClient(studio["app"], headers=WRITE)
    for url in ("/label", "/label/reviews", "/api/label/queues", "/api/label/reviews/next"):
        assert nobody.get(url).status_code == 401
    stranger = TestClient(studio["app"], headers={**WRITE, "X-Lmtune-Annotator": "made-up"})
    assert stranger.get("/api/label/reviews/next").status_code == 401
    # The owner labels only under an annotator name of their own.
    refused = studio["owner"].get("/api/label/reviews/next")
    assert refused.status_code == 401 and "annotator token" in refused.json()["error"]["message"]


def test_the_annotator_link_signs_in_with_a_cookie(studio):
    browser = TestClient(studio["app"])
    opened = browser.get(f"/label?annotator={studio['tokens']['bob']}")
    assert opened.status_code == 200 and str(opened.url) == "http://testserver/label"  # token gone from the bar
    assert browser.get("/label/reviews").status_code == 200
    assert "Labelling as <b>bob</b>" in browser.get("/label/reviews").text


def test_record_text_is_escaped_in_the_page(studio):
    page = _as(studio, "ann").get("/label/reviews")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; loved it" in page.text
    assert "\\u003cscript>alert" in page.text  # inside the page data too


def test_answers_are_each_annotators_own(studio):
    ann, bob = _as(studio, "ann"), _as(studio, "bob")
    first = ann.get("/api/label/reviews/next").json()["record"]
    replied = ann.post("/api/label/reviews/answer", json={"index": first["index"], "label": "positive"})
    assert replied.status_code == 200
    assert replied.json()["answer"]["label"] == "positive" and replied.json()["record"]["index"] != first["index"]
    assert replied.json()["progress"]["mine"] == 1
    # bob can neither see nor change ann's answer, nor answer what he was not handed
    assert bob.get("/api/label/reviews/mine").json()["answers"] == []
    taken = bob.post("/api/label/reviews/answer", json={"index": first["index"], "label": "negative"})
    assert taken.status_code == 409 and "was not handed to bob" in taken.json()["error"]["message"]
    assert bob.post("/api/label/reviews/undo").status_code == 409
    mine = ann.get("/api/label/reviews/mine").json()
    assert [(a["index"], a["label"], a["annotator"]) for a in mine["answers"]] == [(first["index"], "positive", "ann")]
    assert [(a["index"], a["kind"]) for a in mine["answers"]] == [(first["index"], "label")]
    # undo hands the record back
    undone = ann.post("/api/label/reviews/undo").json()
    assert undone["record"]["index"] == first["index"]
    assert ann.get("/api/label/reviews/next").json()["record"]["index"] == first["index"]
    ann.post("/api/label/reviews/answer", json={"index": first["index"], "kind": "flag", "note": "sarcasm?"})
    export = studio["owner"].get("/api/label/reviews/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert export.text == ""  # a flag without a label is not training data
    overview = studio["owner"].get("/label/reviews/overview")
    assert overview.status_code == 200 and "sarcasm?" in overview.text and 'id="flagged"' in overview.text


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "x", "pool": "../outside.jsonl", "labels": ["a", "b"]}, "must be inside the runs folder"),
    ({"name": "x", "pool": "/etc/hostname", "labels": ["a", "b"]}, "must be inside the runs folder"),
    ({"name": "x", "pool": "missing.jsonl", "labels": ["a", "b"]}, "no such data file"),
    ({"name": "x", "pool": "broken.jsonl", "recipe": "reviews.yaml"}, "broken.jsonl:2: not valid JSON"),
    ({"name": "x", "pool": "pool.jsonl"}, "labels are missing"),
    ({"name": "x", "pool": "pool.jsonl", "labels": ["a", "b"], "overlap": 2}, "overlap is the share"),
    ({"name": "x", "pool": "pool.jsonl", "recipe": "../reviews.yaml"}, "no recipe file called"),
    ({"name": "reviews", "pool": "pool.jsonl", "recipe": "reviews.yaml"}, "already a queue called 'reviews'"),
    ({"name": "x y", "pool": "pool.jsonl", "labels": ["a", "b"]}, "a queue name is"),
])
def test_bad_queues_are_one_clear_400(studio, body, message):
    response = studio["owner"].post("/api/label/queues", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert "Traceback" not in response.text


def test_bad_answers_are_4xx_json(studio):
    bob = _as(studio, "bob")
    index = bob.get("/api/label/reviews/next").json()["record"]["index"]
    wrong = bob.post("/api/label/reviews/answer", json={"index": index, "label": "meh"})
    assert wrong.status_code == 400 and "not one of this queue's labels" in wrong.json()["error"]["message"]
    assert bob.post("/api/label/reviews/answer", content=b"{nope", headers={"Content-Type": "application/json"}
                    ).json()["error"]["message"] == "body: the request body is not JSON"
    assert bob.post("/api/label/reviews/answer", json={"index": "first", "label": "positive"}).status_code == 400
    missing = bob.get("/api/label/nope/next")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no labelling queue called 'nope'"
    assert bob.post("/api/label/reviews/answer", json={"index": index, "label": "neutral"},
                    headers={"X-Lmtune-Studio": ""}).status_code == 403  # the cross-site guard still applies


def test_a_generation_queue_takes_text_answers(studio):
    owner = studio["owner"]
    write_jsonl(studio["root"] / "runs" / "prompts.jsonl", [{"prompt": "Say hi", "prelabel": "hello", "rank": 0,
                                                             "pool_line": 3, "confidence": None, "score": 0.1,
                                                             "strategy": "random"}])
    created = owner.post("/api/label/queues", json={"name": "gen", "pool": "prompts.jsonl", "task": "generation"})
    assert created.status_code == 201, created.text
    ann = _as(studio, "ann")
    page = ann.get("/label/gen")
    assert '<textarea id="answer-text" rows="6" aria-label="Your answer">hello</textarea>' in page.text
    replied = ann.post("/api/label/gen/answer", json={"index": 0, "text": "hello there"}).json()
    assert replied["record"] is None and replied["progress"] == {"mine": 1, "total": 1, "answered": 1, "needed": 1}
    assert owner.get("/api/label/gen/export").json() == {
        "prompt": "Say hi", "completion": "hello there", "annotator": "ann",
        "labelled_at": owner.get("/api/label/gen/export").json()["labelled_at"]}
