"""The studio's Run page and its API: curves, confusion matrix, predictions browser, a run being written, escaping."""

from __future__ import annotations

import json
from collections import Counter

from conftest import write_recipe
from fastapi.testclient import TestClient
from report_runs import NASTY, REAL_SYSTEMS, make_run
from studio_runs import studio_run

from lmtune.run_dir import RunDir
from lmtune.studio.app import Studio, create_app
from lmtune.studio.queue import RunQueue


def _client(root) -> TestClient:
    return TestClient(create_app(Studio(root, hosts={"testserver"})))


def _predictions(run, system: str) -> list[dict]:
    return [json.loads(line) for line in RunDir(run).prediction(system).read_text().splitlines()]


def _add_probes(run) -> None:
    files = RunDir(run)
    body = json.loads(files.eval.read_text())
    body["forgetting"] = {"change": {"general_qa": {"metric": "accuracy", "before": 0.61, "after": 0.55,
                                                    "change": -0.06, "ci_low": -0.1, "ci_high": -0.02,
                                                    "p_value": 0.01, "forgot": True}}}
    body["bias"] = {"finetuned": {"n_tested": 12, "flip_rate": 0.083,
                                  "metric_gap": {"metric": "accuracy", "groups": ["he", "she"], "gap": 0.05}}}
    files.eval.write_text(json.dumps(body))


def test_the_page_of_a_finished_run_has_every_section(tmp_path):
    run = studio_run(tmp_path, "a")
    _add_probes(run)
    page = _client(tmp_path).get("/runs/a")
    assert page.status_code == 200
    text = page.text
    for part in ('id="run-status"><span class="status finished">finished', "drug-review-sentiment",
                 "task: <strong>classification", "method: <strong>lora", 'href="/runs/a/report"',
                 'id="run-cancel" hidden', 'id="run-resume" hidden', 'id="console"', 'id="curve-loss"',
                 'id="curve-lr"', 'id="curve-speed"', "<h2>Verdict", "<h2>Systems side by side",
                 'id="confusion-system"', 'table class="confusion"', 'id="cell-examples"', 'id="pred-system"',
                 'id="pred-table"', "<h2>Data", "Affected records", "drugsComTrain_raw_with_a_long_file_name.jsonl:33",
                 "test:3", "<h2>Forgetting", "<h2>Bias check", 'src="/static/run.js'):
        assert part in text, part
    data = json.loads(text.split('id="page-data">')[1].split("</script>")[0])
    assert data["status"]["state"] == "finished" and data["system"] == "finetuned"
    assert len(data["curves"]["train"]) == 12 and data["predictions"]["total"] == 60
    assert data["confusion"]["system"] == "finetuned"


def test_curves_api_returns_the_metrics_and_the_speeds_matched_by_step(tmp_path):
    studio_run(tmp_path, "a", steps=60, learning_rate=2e-4)
    body = _client(tmp_path).get("/api/runs/a/curves").json()
    assert body["status"] == "finished"
    assert [r["step"] for r in body["train"]] == list(range(5, 61, 5))
    assert all(r["tokens_per_s"] == 400.0 + r["step"] for r in body["train"])
    assert body["train"][0]["loss"] == 2.0 / 1.5 and body["train"][0]["lr"] == 2e-4 * (1 - 5 / 61)
    assert [r["step"] for r in body["validation"]] == [20, 40, 60]
    assert body["best_step"] == 100  # eval.json's training.best_step


def test_confusion_counts_are_the_predictions_files_counts_and_a_cell_lists_exactly_its_rows(tmp_path):
    run = studio_run(tmp_path, "a")
    client = _client(tmp_path)
    for system in REAL_SYSTEMS:
        rows = _predictions(run, system)
        body = client.get("/api/runs/a/confusion", params={"system": system}).json()
        counts = Counter((r["reference"], r["prediction"]) for r in rows)
        assert {(g, p): body["matrix"][i][j] for i, g in enumerate(body["labels"])
                for j, p in enumerate(body["predicted_labels"]) if body["matrix"][i][j]} == counts
        assert sum(map(sum, body["matrix"])) == len(rows)
    rows = _predictions(run, "few_shot")
    gold, predicted = "negative", "neutral"
    expected = [i for i, r in enumerate(rows) if r["reference"] == gold and r["prediction"] == predicted]
    assert expected
    body = client.get("/api/runs/a/predictions", params={"system": "few_shot", "gold": gold, "predicted": predicted,
                                                         "limit": 200}).json()
    assert [r["index"] for r in body["rows"]] == expected and body["total"] == len(expected)
    assert all(r["answers"]["few_shot"]["correct"] is False for r in body["rows"])


def test_a_prediction_outside_the_labels_gets_its_own_column(tmp_path):
    run = studio_run(tmp_path, "a")
    rows = _predictions(run, "finetuned")
    rows[3]["prediction"] = "I think it is positive"
    RunDir(run).prediction("finetuned").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = _client(tmp_path).get("/api/runs/a/confusion").json()
    assert body["system"] == "finetuned" and body["predicted_labels"][-1] == "I think it is positive"
    assert body["labels"] == ["negative", "neutral", "positive", "mixed_or_unclear"]
    assert body["matrix"][body["labels"].index(rows[3]["reference"])][-1] == 1


def test_predictions_filters_and_paging(tmp_path):
    run = studio_run(tmp_path, "a")
    client = _client(tmp_path)
    api = "/api/runs/a/predictions"
    tuned = _predictions(run, "finetuned")
    body = client.get(api, params={"system": "finetuned", "correct": "incorrect", "limit": 200}).json()
    assert [r["index"] for r in body["rows"]] == [i for i, r in enumerate(tuned) if r["prediction"] != r["reference"]]
    assert len(body["systems"]) == 7 and all(len(r["answers"]) == 7 for r in body["rows"])
    right = client.get(api, params={"system": "finetuned", "correct": "correct"}).json()
    assert right["total"] + body["total"] == 60
    every = {s: _predictions(run, s) for s in REAL_SYSTEMS}
    for system, rows in every.items():  # every system agrees on the first five examples
        for row in rows[:5]:
            row["prediction"] = "positive"
        RunDir(run).prediction(system).write_text("".join(json.dumps(r) + "\n" for r in rows))
    disagree = [i for i in range(60) if len({rows[i]["prediction"] for rows in every.values()}) > 1]
    body = client.get(api, params={"disagree": 1, "limit": 200}).json()
    assert [r["index"] for r in body["rows"]] == disagree and body["total"] == len(disagree) == 55
    assert [r["index"] for r in client.get(api, params={"q": "page=7"}).json()["rows"]] == [7]
    assert client.get(api, params={"q": "TRAMADOL"}).json()["total"] == 60  # case-insensitive
    assert client.get(api, params={"q": "mixed_OR_unclear", "limit": 200}).json()["total"] == len(
        [i for i in range(60) if any(rows[i]["prediction"] == "mixed_or_unclear" or rows[i]["reference"] ==
                                     "mixed_or_unclear" for rows in every.values())])
    first = client.get(api).json()
    assert (first["total"], first["offset"], first["limit"], len(first["rows"])) == (60, 0, 50, 50)
    last = client.get(api, params={"offset": 50}).json()
    assert [r["index"] for r in last["rows"]] == list(range(50, 60))
    assert client.get(api, params={"offset": 60}).json()["rows"] == []
    for bad in ({"limit": 201}, {"limit": 0}, {"offset": -1}, {"offset": "x"}, {"correct": "maybe"},
                {"disagree": "perhaps"}, {"system": "nobody"}):
        response = client.get(api, params=bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == 400, bad


def test_a_generation_run_shows_text_and_refuses_a_correctness_filter(tmp_path):
    make_run(tmp_path, "generation")
    client = _client(tmp_path)
    assert client.get("/runs/run-generation").status_code == 200
    body = client.get("/api/runs/run-generation/predictions").json()
    assert body["total"] == 12 and body["labelled"] is False
    assert {a["correct"] for r in body["rows"] for a in r["answers"].values()} == {None}
    assert body["rows"][1]["answers"]["few_shot"]["prediction"] == "few_shot pred 1"
    refused = client.get("/api/runs/run-generation/predictions", params={"correct": "incorrect"})
    assert refused.status_code == 400 and "correctness" in refused.json()["error"]["message"]
    assert client.get("/api/runs/run-generation/confusion").status_code == 400
    assert client.get("/api/runs/run-generation/predictions", params={"q": "pred 11"}).json()["total"] == 1


def test_script_in_a_record_and_in_the_run_name_is_escaped_everywhere(tmp_path):
    run = studio_run(tmp_path, "evil", nasty=True)
    _add_probes(run)
    client = _client(tmp_path)
    page = client.get("/runs/evil").text
    assert "<script>alert" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert" in page  # the recipe's name, in the header
    assert "\\u003cscript>alert" in page  # the record, in the page's JSON data that run.js writes as text
    body = client.get("/api/runs/evil/predictions", params={"q": "alert"}).json()
    assert body["total"] == 1 and body["rows"][0]["input"] == NASTY  # JSON carries the text as it is


def test_a_run_being_written_still_has_a_page_and_its_complete_curves(tmp_path):
    run = studio_run(tmp_path, "w", state="running")
    files = RunDir(run)
    with files.metrics.open("a") as out:
        out.write('{"step": 65, "epoch": 2.1, "spl')
    with files.prediction("finetuned").open("a") as out:
        out.write('{"input": "half a rec')
    files.eval.write_text(files.eval.read_text()[:500])
    client = _client(tmp_path)
    page = client.get("/runs/w")
    assert page.status_code == 200
    assert "results appear when the run has evaluated" in page.text and "eval.json could not be parsed" in page.text
    assert 'id="run-cancel">' in page.text and 'id="curve-loss"' in page.text  # running: cancel shown, curves live
    body = client.get("/api/runs/w/curves").json()
    assert body["status"] == "running" and [r["step"] for r in body["train"]] == list(range(5, 61, 5))
    predictions = client.get("/api/runs/w/predictions", params={"system": "finetuned"}).json()
    assert predictions["total"] == 60 and "note" not in predictions


def test_a_run_that_did_not_train_says_so(tmp_path):
    run = studio_run(tmp_path, "b")
    RunDir(run).metrics.unlink()
    RunDir(run).timing.unlink()
    client = _client(tmp_path)
    assert "no training curves (this run did not train)" in client.get("/runs/b").text
    assert client.get("/api/runs/b/curves").json()["train"] == []


def test_unknown_runs_and_systems_outside_the_run_are_refused_without_reading_a_file(tmp_path):
    runs = tmp_path / "runs"
    run = studio_run(runs, "a")
    secret = '{"input": "SECRET", "reference": "x", "prediction": "SECRET"}\n'
    (runs / "etc.jsonl").write_text(secret)  # what predictions/../../etc.jsonl would name
    (runs / "secret.jsonl").write_text(secret)
    body = json.loads(RunDir(run).eval.read_text())
    body["results"]["../../secret"] = {"accuracy": 1.0}  # a hostile eval.json naming a file outside the run
    RunDir(run).eval.write_text(json.dumps(body))
    client = _client(runs)
    for url in ("/runs/nope", "/api/runs/nope/curves", "/api/runs/nope/predictions", "/api/runs/nope/confusion",
                "/runs/..%2Fa", "/api/runs/%2e%2e/curves"):
        assert client.get(url).status_code == 404, url
    for url in ("/api/runs/a/predictions?system=../../etc", "/api/runs/a/confusion?system=../../etc",
                "/api/runs/a/predictions?system=../../secret", "/api/runs/a/confusion?system=..%2F..%2Fsecret"):
        response = client.get(url)
        assert response.status_code in (400, 404) and "SECRET" not in response.text, url
    listed = client.get("/api/runs/a/predictions", params={"q": "SECRET"}).json()
    assert "../../secret" not in listed["systems"] and listed["total"] == 0
    assert "SECRET" not in client.get("/runs/a").text


def test_a_queued_run_without_a_directory_has_a_live_page_until_it_is_cancelled(tmp_path, tiny_model_dir,
                                                                                  sentiment_file):
    runs = tmp_path / "runs"
    studio_run(runs, "a")
    studio = Studio(runs, hosts={"testserver"})
    studio.queue = RunQueue(studio.state_dir, runs)  # not started: its jobs stay queued
    client = TestClient(create_app(studio), headers={"X-Lmtune-Studio": "1"})
    name = studio.queue.submit(write_recipe(tmp_path / "r.yaml", tiny_model_dir, sentiment_file,
                                            name="waiting").read_text())
    page = client.get(f"/runs/{name}")
    assert page.status_code == 200
    assert 'class="status queued">queued' in page.text and 'id="run-cancel">' in page.text
    assert 'id="curve-loss"' in page.text and "results appear" not in page.text
    body = client.get(f"/api/runs/{name}/curves").json()
    assert (body["status"], body["directory"], body["train"]) == ("queued", False, [])
    assert client.post(f"/api/runs/{name}/cancel").status_code == 200
    assert client.get(f"/api/runs/{name}/curves").json()["status"] == "cancelled"
    assert 'id="run-resume">' in client.get(f"/runs/{name}").text
    assert client.get("/api/runs/a/curves").json()["status"] == "finished"  # a run with no studio job
