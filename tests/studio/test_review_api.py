"""Corrections of gold labels through the studio's API, on a finished tiny run: the record's text and label come from
the run (never from the request), the export is what ``data.corrections`` reads, and only the annotator who made a
correction, or the owner, may withdraw it."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from conftest import sentiment_records, write_jsonl, write_recipe
from fastapi.testclient import TestClient

from lmtune.data import corrections as data_corrections
from lmtune.guidance import annotators, db
from lmtune.lifecycle import run_recipe
from lmtune.recipe import load_recipe
from lmtune.studio.app import Studio, create_app

pytestmark = pytest.mark.usefixtures("one_thread")
WRITE = {"X-Lmtune-Studio": "1"}
LABELS = ["negative", "neutral", "positive"]
NASTY = "sarcastic <script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A finished tiny run whose evaluation sampled 8 of its 12 test records (predictions rows are not lines)."""
    root = tmp_path_factory.mktemp("review")
    data = write_jsonl(root / "reviews.jsonl", sentiment_records())
    recipe = write_recipe(root / "tiny.yaml", tiny_model_dir, data, name="tiny", training={"max_steps": 4},
                          eval={"systems": ["zero_shot", "finetuned"], "max_examples": 8})
    run_recipe(load_recipe(recipe), out=root / "runs" / "tiny", quiet=True)
    return root / "runs"


def _client(runs, tmp_path) -> tuple[TestClient, Studio]:
    studio = Studio(runs, state_dir=tmp_path / "state", hosts={"testserver"})
    return TestClient(create_app(studio), headers=WRITE), studio


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _token(studio: Studio, name: str) -> dict[str, str]:
    with db.opened(db.path_in(studio.state_dir), annotators.SCHEMA) as conn:
        return {"X-Lmtune-Annotator": annotators.create(conn, name)}


def test_a_correction_of_a_test_record_reads_its_text_and_gold_label_from_the_run(runs, tmp_path):
    client, _ = _client(runs, tmp_path)
    test = _lines(runs / "tiny" / "data" / "test.jsonl")
    body = client.get("/api/runs/tiny/predictions?limit=200").json()
    assert body["total"] == 8 and len(test) == 12
    for row in body["rows"]:  # each row names the test record it answered
        record = test[row["record"]]
        assert record["label"] == row["reference"] and record["text"] in row["input"]
    assert [r["record"] for r in body["rows"]] != [r["index"] for r in body["rows"]]  # sampled: lines differ
    row = body["rows"][-1]
    wrong = next(label for label in LABELS if label != row["reference"])
    made = client.post("/api/runs/tiny/corrections", json={
        "split": "test", "index": row["record"], "corrected": wrong, "reason": NASTY,
        "text": "<b>forged</b>", "label": "forged"})  # text and label from a browser are not read
    assert made.status_code == 201, made.text
    made = made.json()
    assert (made["text"], made["label"], made["corrected"]) == (test[row["record"]]["text"], row["reference"], wrong)
    assert (made["run"], made["split"], made["record"], made["annotator"], made["reason"]) == \
        ("tiny", "test", row["record"], "local", NASTY)
    listed = client.get("/api/runs/tiny/corrections?split=test").json()["corrections"]
    assert [c["id"] for c in listed] == [made["id"]]
    assert client.get("/api/runs/tiny/corrections?split=train").json()["corrections"] == []
    page = client.get("/review").text  # every text escaped
    assert "<script>alert" not in page
    assert "sarcastic &lt;script&gt;alert(1)&lt;/script&gt;" in page and f'data-withdraw="{made["id"]}"' in page


@pytest.mark.parametrize(("body", "problem"), [
    ({"split": "test", "index": 0, "corrected": "great"}, "corrected must be one of the run's labels"),
    ({"split": "test", "index": 12, "corrected": "neutral"}, "test split has 12 records; there is no record 12"),
    ({"split": "test", "index": "0", "corrected": "neutral"}, "index must be a record's line number"),
    ({"split": "dev", "index": 0, "corrected": "neutral"}, "split must be one of train, validation, test"),
    ({"split": "test", "index": 0, "corrected": "neutral", "reason": "x" * 1001}, "at most 1000 characters"),
])
def test_bad_corrections_are_refused_with_one_message(runs, tmp_path, body, problem):
    client, _ = _client(runs, tmp_path)
    answer = client.post("/api/runs/tiny/corrections", json=body)
    assert answer.status_code == 400 and problem in answer.json()["error"]["message"], answer.text
    assert client.get("/api/runs/tiny/corrections").json()["corrections"] == []


def test_the_gold_label_itself_a_missing_header_and_a_body_that_is_not_json_are_refused(runs, tmp_path):
    client, _ = _client(runs, tmp_path)
    gold = _lines(runs / "tiny" / "data" / "test.jsonl")[0]["label"]
    same = client.post("/api/runs/tiny/corrections", json={"split": "test", "index": 0, "corrected": gold})
    assert same.status_code == 400 and "is the gold label already" in same.json()["error"]["message"]
    raw = client.post("/api/runs/tiny/corrections", content=b"{nope", headers={"Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["message"].endswith("the request body is not JSON")
    bare = TestClient(create_app(Studio(runs, state_dir=tmp_path / "state", hosts={"testserver"})))
    assert bare.post("/api/runs/tiny/corrections", json={"split": "test", "index": 0,
                                                         "corrected": "neutral"}).status_code == 403
    assert client.post("/api/runs/nope/corrections", json={}).status_code == 404


def test_the_export_is_the_latest_live_correction_per_record_as_data_corrections_reads_it(runs, tmp_path):
    client, _ = _client(runs, tmp_path)
    train = _lines(runs / "tiny" / "data" / "train.jsonl")
    page = client.get("/api/runs/tiny/records", params={"split": "train", "q": train[3]["text"].upper()}).json()
    assert page["total"] == 1 and page["rows"] == [{"index": 3, "text": train[3]["text"], "label": train[3]["label"]}]
    other = [label for label in LABELS if label != train[3]["label"]]
    first, second = (client.post("/api/runs/tiny/corrections", json={"split": "train", "index": 3, "corrected": c})
                     .json() for c in other)
    gone = client.post("/api/runs/tiny/corrections", json={"split": "train", "index": 5,
                                                           "corrected": other[0] if train[5]["label"] != other[0]
                                                           else other[1]}).json()
    assert client.post(f"/api/review/corrections/{gone['id']}/withdraw").status_code == 200
    answer = client.get("/api/review/export?run=tiny")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="corrections.jsonl"'
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert len(lines) == 1 and second["id"] > first["id"]
    assert {k: lines[0][k] for k in ("text", "label", "corrected", "split", "run", "record", "annotator", "reason")} \
        == {"text": train[3]["text"], "label": train[3]["label"], "corrected": other[1], "split": "train",
            "run": "tiny", "record": 3, "annotator": "local", "reason": ""}
    assert lines[0]["at"].endswith("+00:00")
    exported = tmp_path / "corrections.jsonl"
    exported.write_text(answer.text)
    assert [(c.text, c.label, c.corrected) for c in data_corrections.read(exported, "classification", LABELS).items] \
        == [(train[3]["text"], train[3]["label"], other[1])]
    assert client.get("/api/review/export?run=other").text == ""


def test_only_the_annotator_who_made_a_correction_or_the_owner_may_withdraw_it(runs, tmp_path):
    client, studio = _client(runs, tmp_path)
    ann, other = _token(studio, "ann"), _token(studio, "bob")
    made = [client.post("/api/runs/tiny/corrections", headers=ann,
                        json={"split": "test", "index": i, "corrected": "neutral" if g != "neutral" else "positive"})
            .json() for i, g in enumerate(r["label"] for r in _lines(runs / "tiny" / "data" / "test.jsonl")[:2])]
    assert [m["annotator"] for m in made] == ["ann", "ann"]
    refused = client.post(f"/api/review/corrections/{made[0]['id']}/withdraw", headers=other)
    assert refused.status_code == 403 and "is ann's" in refused.json()["error"]["message"]
    live = client.get("/api/review/corrections").json()["corrections"]
    assert all(c["withdrawn_at"] is None for c in live)
    assert client.post(f"/api/review/corrections/{made[0]['id']}/withdraw", headers=ann).json()["withdrawn_by"] == "ann"
    owned = client.post(f"/api/review/corrections/{made[1]['id']}/withdraw")  # the owner: no annotator token
    assert owned.status_code == 200 and owned.json()["withdrawn_by"] == "local"
    assert client.post("/api/review/corrections/999/withdraw").status_code == 404
    assert client.get("/api/runs/tiny/corrections").json()["corrections"] == []
    page = client.get("/review").text
    assert page.count("withdrawn by") == 2 and "data-withdraw" not in page


def test_confident_errors_come_first_by_the_softmax_of_the_label_scores(runs, tmp_path):
    client, _ = _client(runs, tmp_path)
    scored = _lines(runs / "tiny" / "predictions" / "finetuned.jsonl")

    def softmax_at_answer(row) -> float:
        top = max(row["scores"].values())
        return math.exp(row["scores"][row["prediction"]] - top) / sum(math.exp(v - top) for v in row["scores"].values())
    body = client.get("/api/runs/tiny/predictions?system=finetuned&sort=confidence").json()
    said = [r["answers"]["finetuned"]["confidence"] for r in body["rows"]]
    exact = {i: softmax_at_answer(row) for i, row in enumerate(scored)}
    assert len(said) == 8 and len(set(exact.values())) == 8  # the tiny model's are all near 1, but not equal
    assert [r["index"] for r in body["rows"]] == sorted(exact, key=lambda i: -exact[i])
    assert said == [round(exact[r["index"]], 4) for r in body["rows"]]
    wrong = client.get("/api/runs/tiny/predictions?system=finetuned&correct=incorrect&sort=confidence").json()
    assert wrong["total"] >= 1
    assert [r["index"] for r in wrong["rows"]] == [r["index"] for r in body["rows"]
                                                   if r["answers"]["finetuned"]["correct"] is False]
    bad = client.get("/api/runs/tiny/predictions?sort=loudest")
    assert bad.status_code == 400 and bad.json()["error"]["message"].endswith("sort must be one of index, confidence")


def test_the_pages_link_the_review_and_a_run_without_labels_refuses_corrections(runs, tmp_path):
    client, _ = _client(runs, tmp_path)
    page = client.get("/runs/tiny").text
    for part in ('href="?review=disagreements#predictions"', 'href="?review=confident-errors#predictions"',
                 'href="/review/tiny?split=train"', 'id="pred-sort"', 'src="/static/corrections.js',
                 '<a href="/review">Corrections</a>'):
        assert part in page, part
    data = json.loads(page.split('id="page-data">')[1].split("</script>")[0])
    assert data["labels"] == LABELS and all(isinstance(r["record"], int) for r in data["predictions"]["rows"])
    records = client.get("/review/tiny?split=train")
    assert records.status_code == 200 and 'id="records"' in records.text and 'src="/static/review.js' in records.text
    assert client.get("/review/tiny?split=dev").status_code == 400
    shutil.copytree(runs / "tiny", tmp_path / "runs" / "notes")
    evaluation = json.loads((tmp_path / "runs" / "notes" / "eval.json").read_text())
    (tmp_path / "runs" / "notes" / "eval.json").write_text(json.dumps({**evaluation, "task": "generation"}))
    other, _ = _client(tmp_path / "runs", tmp_path)
    refused = other.post("/api/runs/notes/corrections", json={"split": "test", "index": 0, "corrected": "neutral"})
    assert refused.status_code == 400
    assert "generation run has no labels to correct" in refused.json()["error"]["message"]
