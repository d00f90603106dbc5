"""Every task type end to end on tiny models: head classification, regression, preference (DPO); what a
task kind hands to the data stage and to every system."""

import json

import pytest
from conftest import RUN_FILES, run_cli, write_jsonl
from tiny import build_tokenizer, save_tiny_encoder

from lmtune.data.encode import Encoder

GOOD = ["the movie was great and i loved it", "this drug helped my pain a lot"]
BAD = ["the movie was terrible and boring", "this drug gave me awful side effects"]


def _results(out):
    return json.loads((out / "eval.json").read_text())


def test_encoder_with_a_classification_head_beats_nothing_but_is_compared_to_majority(recipe_file, tmp_path):
    encoder_dir = save_tiny_encoder(tmp_path / "tiny-bert")
    path = recipe_file(model=str(encoder_dir), method={"name": "full", "peft": {}},
                       training={"max_steps": 6, "learning_rate": 1e-2},
                       eval={"systems": ["zero_shot", "majority", "finetuned"]})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    for name in RUN_FILES:
        assert (out / name).exists(), name
    results = _results(out)["results"]
    assert set(results) == {"majority", "finetuned"}  # an encoder has no zero-shot: skipped, said so
    train_labels = [json.loads(line)["label"] for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    majority = [json.loads(line)["prediction"]
                for line in (out / "predictions" / "majority.jsonl").read_text().splitlines()]
    assert len(set(majority)) == 1  # one constant answer: a most frequent training label
    assert train_labels.count(majority[0]) == max(train_labels.count(x) for x in train_labels)
    assert {"accuracy", "f1_macro", "confusion_matrix"} <= set(results["finetuned"])
    info = json.loads((out / "final" / "lmtune.json").read_text())
    assert info["head"] is True


def _regression_data(tmp_path, n=40):
    rows = [{"text": f"{(GOOD if i % 2 else BAD)[i % 2]} #{i}", "score": 4.0 if i % 2 else -2.0} for i in range(n)]
    return write_jsonl(tmp_path / "scores.jsonl", rows)


def test_regression_head_learns_a_number_and_reports_mse_mae_pearson(recipe_file, tmp_path):
    data = _regression_data(tmp_path)
    path = recipe_file(task={"type": "regression", "labels": None, "template": None},
                       data={"train": str(data), "fields": {"label": "score"},
                             "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                       method={"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
                       training={"max_steps": 30, "learning_rate": 3e-2, "batch_size": 8},
                       eval={"systems": ["majority", "finetuned"]})
    out = tmp_path / "reg"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    results = _results(out)["results"]
    assert {"mse", "mae", "pearson"} <= set(results["finetuned"])
    assert results["majority"]["pearson"] is None  # a constant predictor has no correlation
    assert results["finetuned"]["mse"] < results["majority"]["mse"]
    rows = [json.loads(line) for line in (out / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    assert isinstance(rows[0]["prediction"], float)


def test_preference_dpo_end_to_end_raises_reward_accuracy(recipe_file, tmp_path):
    rows = [{"prompt": f"how was the movie {i}?", "chosen": GOOD[i % 2], "rejected": BAD[i % 2]} for i in range(30)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    path = recipe_file(task={"type": "preference", "labels": None, "template": None},
                       data={"train": str(data), "fields": {},
                             "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                       training={"max_steps": 10, "learning_rate": 3e-2, "dpo_beta": 0.5},
                       eval={"systems": ["zero_shot", "few_shot", "finetuned"]})
    out = tmp_path / "dpo"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    results = _results(out)["results"]
    assert set(results) == {"zero_shot", "finetuned"}
    assert results["zero_shot"]["reward_margin"] == pytest.approx(0.0, abs=1e-4)  # the base is its own reference
    assert results["finetuned"]["reward_accuracy"] > results["zero_shot"]["reward_accuracy"]
    assert results["finetuned"]["reward_margin"] > 0


def test_pipeline_counts_truncation_in_the_report(recipe_file, tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.data.templates import resolve as resolve_template
    from lmtune.recipe import load_recipe
    from lmtune.tasks import encode_splits

    recipe = load_recipe(recipe_file(training={"max_length": 12}))
    prepared = data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed)
    enc = Encoder(build_tokenizer(), 12)
    encode_splits(prepared, enc, resolve_template("sentiment", "classification"), recipe)
    trunc = prepared.report["truncation"]
    assert trunc["train"]["truncated"] == trunc["train"]["total"] > 0
    data_stage.write(prepared, tmp_path / "data")
    report = json.loads((tmp_path / "data" / "data_report.json").read_text())
    assert report["truncation"]["max_length"] == 12
    assert report["counts"]["train"] + report["counts"]["validation"] + report["counts"]["test"] == 60


def test_token_task_hands_the_recipe_generation_settings_to_every_system(monkeypatch):
    from lmtune import tasks
    from lmtune.evaluate import systems
    from lmtune.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"type": "generation"}, "data": {"train": "t"},
                               "eval": {"generation": {"stop": ["\n\n"], "no_repeat_ngram_size": 3}}})
    seen = []
    monkeypatch.setattr(tasks.systems, "run_system", lambda *args, **kw: seen.append(args[3]))
    kind = tasks.TokenTask(recipe)
    spec = systems.TaskSpec("generation", None, None)
    for system in ("zero_shot", "few_shot", "finetuned"):
        kind.run(system, None, None, None, spec, [], [], [], [], quiet=True)
    assert [s.generation for s in seen] == [recipe.eval.generation] * 3


def test_replay_on_a_head_task_is_a_clear_error(recipe_file, tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "general text"}])
    path = recipe_file(task={"head": True}, training={"replay": {"data": str(general), "ratio": 0.2}},
                       eval={"systems": ["majority", "finetuned"]})
    code, output = run_cli("train", path, "--out", tmp_path / "x")
    assert code == 2 and "training.replay" in output
