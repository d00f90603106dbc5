"""``data.corrections``: gold labels a person found wrong, put right in the data stage and counted in its report."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, write_jsonl

from lmtune.data import prepare as data_stage
from lmtune.errors import UserError
from lmtune.recipe import recipe_from_dict
from lmtune.report.data import data as data_section
from lmtune.report.run import Run

LABELS = ["negative", "neutral", "positive"]
SPLIT = {"validation": 0.2, "test": 0.2}


def _records(n: int = 30) -> list[dict]:
    return [{"text": f"review number {i} says &amp; something", "label": LABELS[i % 3]} for i in range(n)]


def _recipe(train, corrections=None, task: dict | None = None, split: dict | None = None):
    data = {"train": str(train), "split": split or SPLIT}
    if corrections is not None:
        data["corrections"] = str(corrections)
    return recipe_from_dict({"name": "x", "model": "m", "task": task or {"labels": LABELS}, "data": data})


def _prepare(recipe):
    return data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed)


def _by_split(prepared) -> dict[str, dict[str, str]]:
    return {name: {ex.record["text"]: ex.record["label"] for ex in examples}
            for name, examples in prepared.splits.items()}


def test_corrections_change_the_matching_records_where_they_are_and_are_counted(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", _records())
    before = _by_split(_prepare(_recipe(train)))
    (test_text, test_gold), (train_text, train_gold) = next(iter(before["test"].items())), \
        next(iter(before["train"].items()))
    other = {gold: next(label for label in LABELS if label != gold) for gold in LABELS}
    fixes = write_jsonl(tmp_path / "corrections.jsonl", [
        # as the studio exports it: the cleaned text of data/test.jsonl (here with other spacing and case)
        {"text": "  " + test_text.upper().replace(" ", "   "), "label": test_gold, "corrected": other[test_gold],
         "split": "test", "run": "r", "annotator": "ann", "reason": "sarcasm", "at": "2025-01-01T00:00:00+00:00"},
        # the raw text of the file (an HTML entity, which cleaning decoded), gold label in other case
        {"text": train_text.replace("&", "&amp;"), "label": train_gold.upper(), "corrected": other[train_gold]},
        # the right text with a label it does not have: matches nothing
        {"text": test_text, "label": other[test_gold], "corrected": test_gold},
    ])
    prepared = _prepare(_recipe(train, fixes))
    after = _by_split(prepared)
    assert {k: set(v) for k, v in after.items()} == {k: set(v) for k, v in before.items()}  # nothing moved
    assert after["test"][test_text] == other[test_gold] and after["train"][train_text] == other[train_gold]
    unchanged = [(s, t) for s in after for t in after[s] if after[s][t] != before[s][t]]
    assert sorted(unchanged) == sorted([("test", test_text), ("train", train_text)])
    report = prepared.report
    assert report["corrections"] == {"file": str(fixes), "read": 3, "records_changed": 2,
                                     "per_split": {"train": 1, "test": 1}, "unmatched": 1, "unmatched_lines": [3]}
    steps = {s["split"]: s for s in report["steps"] if s["step"].startswith("gold labels corrected")}
    assert {k: v.get("changed") for k, v in steps.items()} == {"train": 1, "validation": 0, "test": 1}
    assert any("1 of 3 corrections (data.corrections) matched no record" in w and "lines 3 " in w
               for w in report["warnings"])
    html = data_section(Run(directory=tmp_path, data_report=json.loads(json.dumps(report))), charts=False)
    assert "3 corrections changed 2 records (train: 1, test: 1)" in html
    assert "matched no record" in html


def test_a_generation_target_is_replaced(tmp_path):
    rows = [{"prompt": f"question {i}?", "completion": f"answer {i}"} for i in range(20)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    fixes = write_jsonl(tmp_path / "corrections.jsonl",
                        [{"text": "Question 7?", "label": "answer  7", "corrected": "the right answer"}])
    prepared = _prepare(_recipe(train, fixes, task={"type": "generation"},
                                split={"validation": 0.1, "test": 0.2, "stratify": False}))
    targets = {ex.record["prompt"]: ex.record["completion"] for exs in prepared.splits.values() for ex in exs}
    assert targets["question 7?"] == "the right answer"
    assert sum(t != f"answer {p.split()[1][:-1]}" for p, t in targets.items()) == 1
    assert prepared.report["corrections"]["records_changed"] == 1 and not prepared.report.get("warnings")


def test_every_bad_line_is_named_before_any_data_file_is_read(tmp_path):
    fixes = tmp_path / "corrections.jsonl"
    fixes.write_text(json.dumps({"text": "a", "label": "negative", "corrected": "neutral"}) + "\n"
                     + json.dumps({"text": "b", "label": "negative", "corrected": "great"}) + "\n\n"
                     + json.dumps({"text": "c", "label": "negative"}) + "\n"
                     + "{not json\n"
                     + json.dumps({"text": "d", "label": "neutral", "corrected": " Neutral"}) + "\n")
    with pytest.raises(UserError) as info:  # the train file does not exist: corrections are checked first
        _prepare(_recipe(tmp_path / "missing.jsonl", fixes))
    problems = {source: message for source, message in info.value.problems}
    assert info.value.source == f"{fixes}:2"
    assert problems[f"{fixes}:2"] == f"corrected 'great' is not one of task.labels {LABELS}"
    assert "missing key 'corrected'" in problems[f"{fixes}:4"]
    assert problems[f"{fixes}:5"].startswith("not JSON")
    assert "gold label already" in problems[f"{fixes}:6"]
    assert len(problems) == 4


def test_the_cli_refuses_a_bad_correction_with_its_line_and_an_empty_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", _records())
    fixes = write_jsonl(tmp_path / "corrections.jsonl", [{"text": "a", "label": "negative", "corrected": "great"}])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "x", "model": "m", "task": {"labels": LABELS},
                                  "data": {"train": str(train), "corrections": str(fixes)}}))
    code, output = run_cli("data", "prepare", recipe, "--out", tmp_path / "out")
    assert code == 2 and "corrections.jsonl:1: corrected 'great' is not one of task.labels" in output, output
    assert "Traceback" not in output and not (tmp_path / "out").exists()
    fixes.write_text("\n \n")
    code, output = run_cli("data", "prepare", recipe, "--out", tmp_path / "out")
    assert code == 2 and "the corrections file is empty" in output, output


def test_a_task_without_targets_refuses_corrections(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"some text {i}"} for i in range(20)])
    fixes = write_jsonl(tmp_path / "corrections.jsonl", [{"text": "a", "label": "b", "corrected": "c"}])
    with pytest.raises(UserError, match="language_modeling task has none to correct") as info:
        _prepare(_recipe(train, fixes, task={"type": "language_modeling"}))
    assert info.value.source == "data.corrections"
