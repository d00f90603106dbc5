"""Self-training (``training.self_training``) through whole runs on the tiny model: the pool is pseudo-labelled
with calibrated confidence, capped, tagged and mixed into a retraining from the base model; eval.json has the
rounds, the ``self_trained`` system and its gain with an interval; pool records already labelled or held out are
dropped; wrong pseudo-labels are counted against the pool's hidden labels; bad recipes exit 2 before the model
loads."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from conftest import refused_train, run_cli, sentiment_records, write_jsonl, write_recipe

from lmtune.errors import UserError
from lmtune.evaluate import bootstrap, calibration
from lmtune.lifecycle import pseudo_labels
from lmtune.recipe import recipe_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["negative", "neutral", "positive"]
WORDS = ("apple river stone cloud pepper violin garden lantern copper meadow orbit canyon velvet harbor "
         "falcon marble tunnel saddle pillow beacon quartz willow thunder ember").split()
THRESHOLD, MAX_RATIO = 0.3, 0.5


def _test_records() -> list[dict]:
    rng = random.Random(1)
    return [{"review": f"held out {' '.join(rng.sample(WORDS, 5))} case {i}", "rating": LABELS[i % 3]}
            for i in range(12)]


def _pool_records(test: list[dict]) -> list[dict]:
    """24 new records (20 with a hidden label in ``gold``, a misleading ``rating`` on all), then 3 test inputs
    and 1 training input written differently (case, spaces): these 4 must be dropped as known."""
    rng = random.Random(2)
    pool = []
    for i in range(24):
        record = {"review": f"pool {' '.join(rng.sample(WORDS, 6))} item {i}", "rating": "neutral"}
        if i < 20:
            record["gold"] = LABELS[rng.randrange(3)]
        pool.append(record)
    planted = [f"  {r['review'].upper()}   " for r in test[:3]] + [sentiment_records()[0]["review"].title()]
    return pool + [{"review": text, "rating": "neutral", "gold": "negative"} for text in planted]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("self-training-data")
    test = _test_records()
    return {"train": write_jsonl(root / "reviews.jsonl", sentiment_records()),
            "test": write_jsonl(root / "test.jsonl", test),
            "pool": write_jsonl(root / "pool.jsonl", _pool_records(test))}


def _recipe(path, model_dir, files, self_training: dict | None = None, **sections):
    config = {"pool": str(files["pool"]), "threshold": THRESHOLD, "max_ratio": MAX_RATIO, "rounds": 2,
              "label_field": "gold", **(self_training or {})}
    sections.setdefault("data", {"test": str(files["test"]), "split": {"validation": 0.2, "test": 0.0}})
    sections.setdefault("eval", {"systems": ["zero_shot", "finetuned"]})
    return write_recipe(path, model_dir, files["train"], training={"self_training": config}, **sections)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir, files):
    """Two rounds of self-training after a few LoRA steps; the temperature is fitted by self-training itself."""
    root = tmp_path_factory.mktemp("self-trained")
    recipe = _recipe(root / "recipe.yaml", tiny_model_dir, files)
    code, output = run_cli("train", recipe, "--out", root / "run", "--quiet")
    assert code == 0, output
    return root / "run"


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _eval(run) -> dict:
    return json.loads((run / "eval.json").read_text())


def test_eval_json_has_the_rounds_the_self_trained_system_and_its_gain(run):
    evaluation = _eval(run)
    block, results = evaluation["self_training"], evaluation["results"]
    assert block["threshold"] == THRESHOLD and block["max_ratio"] == MAX_RATIO and block["pool_records"] == 28
    assert [r["round"] for r in block["rounds"]] == [1, 2]
    for r in block["rounds"]:
        assert r["temperature"] > 0 and r["scored"] == 24 and r["run"] == f"self_training/round-{r['round']}"
        assert r["kept"] == min(r["above_threshold"], math.floor(MAX_RATIO * r["labelled"]))
        assert sum(r["label_distribution"].values()) == r["kept"]
        assert set(r["label_distribution"]) <= set(LABELS)
        assert r["value"] == _eval(run / r["run"])["results"]["finetuned"]["f1_macro"]
        assert r["ci"][0] <= r["value"] <= r["ci"][1]
    # The last round's test results are the system self_trained, predictions and intervals included.
    last = _eval(run / block["rounds"][-1]["run"])["results"]["finetuned"]
    assert results["self_trained"]["f1_macro"] == last["f1_macro"] and "f1_macro" in results["self_trained"]["ci"]
    rows, tuned = _jsonl(run / "predictions" / "self_trained.jsonl"), _jsonl(run / "predictions" / "finetuned.jsonl")
    assert len(rows) == len(tuned) == evaluation["n"] == 12
    assert [r["input"] for r in rows] == [r["input"] for r in tuned]
    gain = block["gain"]
    assert gain["metric"] == "f1_macro"
    assert gain["value"] == pytest.approx(results["self_trained"]["f1_macro"] - results["finetuned"]["f1_macro"])
    assert gain["ci_low"] <= gain["value"] <= gain["ci_high"] and 0 < gain["p_value"] <= 1
    # The significance list compares self_trained with finetuned, with the same p-value as the gain's.
    pair = [s for s in evaluation["significance"] if {s["a"], s["b"]} == {"self_trained", "finetuned"}]
    assert len(pair) == 1 and pair[0]["p_value"] == pytest.approx(gain["p_value"])


def test_the_retraining_data_holds_the_tagged_pseudo_labels_capped_and_most_confident_first(run, files):
    labelled = _jsonl(run / "data" / "train.jsonl")
    for r in _eval(run)["self_training"]["rounds"]:
        written = _jsonl(run / "self_training" / f"round-{r['round']}.train.jsonl")
        pseudo = [x for x in written if x.get("pseudo_label")]
        assert written[:len(labelled)] == labelled and len(pseudo) == len(written) - len(labelled) == r["kept"]
        assert 0 < len(pseudo) <= MAX_RATIO * len(labelled)
        confidences = [x["pseudo_confidence"] for x in pseudo]
        assert confidences == sorted(confidences, reverse=True) and min(confidences) >= THRESHOLD
        assert all(x["pseudo_round"] == r["round"] and x["label"] in LABELS for x in pseudo)
        # The pool's own labels (the misleading rating, the hidden gold) never reach training.
        assert not any("gold" in x or "rating" in x for x in pseudo)
        # What the nested run trained on: its own data/train.jsonl keeps the tags.
        nested = _jsonl(run / r["run"] / "data" / "train.jsonl")
        tagged = [x for x in nested if x.get("pseudo_label")]
        assert tagged and len(tagged) == r["pseudo_in_train"] and len(nested) == r["n_train"]
        assert all(x["pseudo_confidence"] >= THRESHOLD for x in tagged)
        assert len(tagged) <= MAX_RATIO * len(labelled)
        # Validation and test are the parent's own files, never pseudo-labelled.
        for split in ("validation", "test"):
            assert _jsonl(run / r["run"] / "data" / f"{split}.jsonl") == _jsonl(run / "data" / f"{split}.jsonl")


def test_pool_records_already_labelled_or_held_out_are_dropped(run, files):
    block = _eval(run)["self_training"]
    assert block["dropped_known"] == 4 and block["rounds"][0]["scored"] == 24
    held_out = {r["review"].casefold() for r in _jsonl(files["test"])}
    known = held_out | {r["text"].casefold() for split in ("train", "validation")
                        for r in _jsonl(run / "data" / f"{split}.jsonl")}
    for r in block["rounds"]:
        pseudo = [x for x in _jsonl(run / "self_training" / f"round-{r['round']}.train.jsonl") if x.get("pseudo_label")]
        assert not any(" ".join(x["text"].split()).casefold() in known for x in pseudo)


def test_wrong_pseudo_labels_are_counted_against_the_hidden_labels(run, files):
    gold = {r["review"]: r.get("gold") for r in _jsonl(files["pool"])}
    for r in _eval(run)["self_training"]["rounds"]:
        pseudo = [x for x in _jsonl(run / "self_training" / f"round-{r['round']}.train.jsonl") if x.get("pseudo_label")]
        checked = [x for x in pseudo if gold[x["text"]] is not None]
        wrong = sum(x["label"] != gold[x["text"]] for x in checked)
        assert r["checked"] == len(checked)
        assert r["wrong"] == wrong and r["wrong_rate"] == pytest.approx(wrong / len(checked), abs=1e-4)


def test_the_report_has_the_self_training_section(run):
    page = (run / "report.html").read_text()
    gain = _eval(run)["self_training"]["gain"]
    assert "<h2>Self-training" in page and "self_training/round-2/report.html" in page
    assert f"{abs(gain['value']):.3f} macro-F1 [" in page and f"(p = {gain['p_value']:.2g})" in page


def test_a_resumed_run_reuses_the_finished_rounds(run):
    before = _eval(run)
    attempts = [json.loads((run / r["run"] / "status.json").read_text())["attempts"]
                for r in before["self_training"]["rounds"]]
    code, output = run_cli("train", run / "recipe.yaml", "--out", run, "--resume", "--quiet")
    assert code == 0, output
    after = _eval(run)
    assert [json.loads((run / r["run"] / "status.json").read_text())["attempts"]
            for r in after["self_training"]["rounds"]] == attempts == [1, 1]
    assert after["self_training"]["rounds"] == before["self_training"]["rounds"]
    assert after["self_training"]["gain"] == before["self_training"]["gain"]


def test_choose_keeps_the_most_confident_labels_above_the_threshold_up_to_the_cap():
    # Confidences at T = 1 (softmax of the scores): 0.84, 0.59, 0.79, 0.96; the row predicting "neutral" with
    # 0.59 is below the threshold, and the cap of 2 leaves out the third most confident.
    scores = [[0.0, -2.0, -3.0], [-1.0, -0.5, -3.0], [-3.0, -3.0, -1.0], [-5.0, -4.0, -0.5]]
    rows = [{"prediction": LABELS[int(np.argmax(s))], "scores": dict(zip(LABELS, s))} for s in scores]
    probs = calibration.probabilities(np.array(scores))
    chosen, above = pseudo_labels.choose(rows, LABELS, 1.0, 0.6, limit=2)
    assert above == 3 and [i for i, _, _ in chosen] == [3, 0]
    assert [label for _, label, _ in chosen] == ["positive", "negative"]
    assert [c for _, _, c in chosen] == pytest.approx([probs[3].max(), probs[0].max()])
    # A higher temperature flattens the confidences: fewer reach the threshold.
    assert pseudo_labels.choose(rows, LABELS, 4.0, 0.6, limit=10)[1] < 3


def test_wrong_counts_only_pseudo_labels_with_a_hidden_label():
    chosen = [(0, "positive", 0.9), (1, "negative", 0.8), (2, "neutral", 0.7)]
    assert pseudo_labels.wrong(chosen, ["positive", None, "negative"]) == (1, 2)


def test_paired_difference_agrees_with_the_paired_p_value():
    rng = np.random.default_rng(0)
    refs = list(rng.choice(LABELS, 40))
    a = [r if rng.random() < 0.8 else LABELS[0] for r in refs]
    b = [r if rng.random() < 0.5 else LABELS[1] for r in refs]
    found = bootstrap.paired_difference("classification", "f1_macro", refs, a, b, LABELS, n_resamples=200, seed=3)
    p = bootstrap.paired_p_value("classification", "f1_macro", refs, a, b, LABELS, n_resamples=200, seed=3)
    assert found["p_value"] == p and found["ci_low"] <= found["value"] <= found["ci_high"]
    assert found["value"] > 0


@pytest.mark.usefixtures("no_model_load")
@pytest.mark.parametrize("case,expected", [
    ({"self_training": {"threshold": 1.5}}, "training.self_training.threshold"),
    ({"self_training": {"threshold": 0}}, "training.self_training.threshold"),
    ({"self_training": {"pool": "missing.jsonl"}}, "training.self_training.pool: no such pool file"),
    ({"pool": ""}, "file is empty; it needs at least one record (training.self_training.pool)"),
    ({"self_training": {"label_field": "stars"}}, "training.self_training.label_field: no pool record has"),
    ({"pool": "known"}, "training.self_training.pool: none of the"),
    ({"data": {"split": {"validation": 0.0, "test": 0.2}}}, "training.self_training: self-training needs a "
                                                           "validation split"),
    ({"eval": {"systems": ["zero_shot"]}}, "training.self_training: self-training pseudo-labels with the fine-tuned"),
    ({"eval": {"systems": ["finetuned", "self_trained"]}}, "eval.systems"),
])
def test_bad_recipes_exit_2_with_one_line_before_the_model_loads(tmp_path, tiny_model_dir, files, case, expected):
    files = dict(files)
    if "pool" in case:  # an empty pool, or one whose every record is already labelled
        known = [{**r, "gold": r["rating"]} for r in sentiment_records()[:5]]
        text = "" if case.pop("pool") == "" else "".join(json.dumps(r) + "\n" for r in known)
        files["pool"] = tmp_path / "pool.jsonl"
        files["pool"].write_text(text)
    recipe = _recipe(tmp_path / "recipe.yaml", tiny_model_dir, files, **case)
    line = refused_train(recipe, tmp_path / "run")
    assert line.startswith("error: ") and expected in line, line


@pytest.mark.usefixtures("no_model_load")
def test_a_generation_task_cannot_self_train(tmp_path, tiny_model_dir, files):
    data = write_jsonl(tmp_path / "notes.jsonl", [{"prompt": r["review"], "completion": r["rating"]}
                                                  for r in sentiment_records(30)])
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, data, task={"type": "generation", "labels": None,
                                                                              "template": None},
                          data={"fields": {}}, eval={"systems": ["finetuned"]},
                          training={"self_training": {"pool": str(files["pool"])}})
    line = refused_train(recipe, tmp_path / "run")
    assert line.startswith("error: training.self_training: ") and "generation task" in line


def test_the_recipe_key_names_its_bounds():
    raw = {"name": "r", "model": "tiny", "task": {"type": "classification", "labels": LABELS},
           "data": {"train": "t.jsonl"}, "training": {"self_training": {"pool": "p.jsonl", "max_ratio": 0}}}
    with pytest.raises(UserError) as err:
        recipe_from_dict(raw)
    assert err.value.source == "training.self_training.max_ratio"
