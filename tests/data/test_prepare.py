"""The data stage (``lmtune.data.prepare``): test inputs removed from training, empty records refused or dropped."""

import pytest
from conftest import write_jsonl

from lmtune.errors import UserError

LABELS = ["negative", "neutral", "positive"]


def test_prepare_removes_test_inputs_from_train(tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import recipe_from_dict

    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": LABELS[i % 3]} for i in range(30)])
    test = write_jsonl(tmp_path / "test.jsonl",
                       [{"text": "T1", "label": "neutral"}, {"text": "new", "label": "positive"}])
    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"labels": LABELS},
                               "data": {"train": str(train), "test": str(test),
                                        "split": {"validation": 0.2, "test": 0}}})
    prepared = data_stage.prepare(recipe.data, "classification", LABELS, 0)
    assert prepared.report["leakage"]["exact"] == 1 and prepared.report["leakage"]["dropped_from_train"] == 1
    assert len(prepared.splits["train"]) + len(prepared.splits["validation"]) == 29


def _generation_with_empty_completions(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": "" if i % 5 == 0 else "c"} for i in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    raw = {"name": "x", "model": "m", "task": {"type": "generation"},
           "data": {"train": str(train), "split": {"validation": 0.1, "test": 0.1, "stratify": False}}}
    return train, raw


def test_empty_records_are_refused_by_default(tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import recipe_from_dict

    train, raw = _generation_with_empty_completions(tmp_path)
    with pytest.raises(UserError, match="data.clean.empty: drop") as info:
        data_stage.prepare(recipe_from_dict(raw).data, "generation", None, 0)
    assert info.value.source == f"{train}:1"


def test_empty_records_dropped_and_counted_when_asked(tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import recipe_from_dict

    _, raw = _generation_with_empty_completions(tmp_path)
    raw["data"]["clean"] = {"empty": "drop"}
    prepared = data_stage.prepare(recipe_from_dict(raw).data, "generation", None, 0)
    step = next(s for s in prepared.report["steps"] if s["step"] == "empty fields dropped")
    assert step["records"] == 24 and step["removed"] == 6
    assert sum(len(v) for v in prepared.splits.values()) == 24
