"""Closing the loop: a queue made from a recipe, labelled through the API, retrained through the studio's run
queue (a real worker process trains the tiny model); the new run's train split has the labels and its
validation and test splits are the recipe's own run's, and the answer opens Compare on old vs new."""

from __future__ import annotations

import json
import time

from conftest import sentiment_records, write_jsonl, write_recipe
from fastapi.testclient import TestClient

from lmtune.lifecycle import run_recipe
from lmtune.recipe import load_recipe
from lmtune.run_dir import RunDir
from lmtune.studio.app import Studio, create_app
from lmtune.studio.queue import RunQueue

WRITE = {"X-Lmtune-Studio": "1"}
QUICK = {"max_steps": 4, "batch_size": 4, "eval_every": 2, "log_every": 1, "max_length": 64}


def _split(run: RunDir, name: str) -> list[str]:
    return [json.loads(line)["text"] for line in run.data.split(name).read_text().splitlines()]


def test_retrain_adds_the_labels_to_train_and_keeps_the_held_out_splits(tmp_path, tiny_model_dir):
    runs, recipes = tmp_path / "runs", tmp_path / "recipes"
    recipes.mkdir()
    data = write_jsonl(tmp_path / "reviews.jsonl", sentiment_records(30))
    recipe = write_recipe(recipes / "loop.yaml", tiny_model_dir, data, name="loop", training=QUICK,
                          eval={"systems": ["finetuned"]})
    run_recipe(load_recipe(recipe), out=runs / "loop", quiet=True)
    pool = [{"review": f"a new review about the drug, number {i}", "rating": "?"} for i in range(12)]
    write_jsonl(runs / "pool.jsonl", pool)
    studio = Studio(runs, recipes=recipes, hosts={"testserver"})
    studio.queue = RunQueue(studio.state_dir, runs)
    studio.queue.start()
    try:
        client = TestClient(create_app(studio), headers=WRITE)
        made = client.post("/api/label/queues", json={"name": "more", "pool": "pool.jsonl", "recipe": "loop.yaml"})
        assert made.status_code == 201, made.text
        shown = client.get("/api/label/more/next").json()
        for i in range(5):
            shown = client.post("/api/label/more/answer", json={"index": shown["record"]["index"],
                                                               "label": ["positive", "negative"][i % 2]}).json()
        refused = client.post("/api/label/more/retrain", json={})  # 5 new labels, 10 needed by default
        assert refused.status_code == 400 and "label at least 10 new ones" in refused.json()["error"]["message"]
        started = client.post("/api/label/more/retrain", json={"min_new": 5})
        assert started.status_code == 201, started.text
        answer = started.json()
        assert answer["labels"] == 5 and answer["base_run"] == "loop"
        assert answer["url"] == f"/compare?run=loop&run={answer['run']}"
        again = client.post("/api/label/more/retrain", json={"min_new": 1})
        assert again.status_code == 400 and "0 new labelled records" in again.json()["error"]["message"]
        new = RunDir(runs / answer["run"])
        deadline = time.monotonic() + 240
        while not new.report.is_file():
            assert time.monotonic() < deadline, client.get(f"/api/runs/{answer['run']}/console").text[-2000:]
            time.sleep(0.5)
        assert client.get(answer["url"]).status_code == 200
        overview = client.get("/label/more/overview").text
        assert answer["run"] in overview
    finally:
        studio.queue.stop()
    old = RunDir(runs / "loop")
    for split in ("validation", "test"):
        assert _split(new, split) == _split(old, split)
    added = set(_split(new, "train")) - set(_split(old, "train"))
    assert added == {pool[i]["review"] for i in range(5)}
    report = json.loads(new.data.report.read_text())
    assert report["added_train"][0]["added"] == 5
