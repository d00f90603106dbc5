"""``data.add_train``: labelled records (a studio queue's export) joining the train split after the split."""

from __future__ import annotations

import pytest
from conftest import write_jsonl

from lmtune.data import prepare as data_stage
from lmtune.errors import UserError
from lmtune.recipe import recipe_from_dict

LABELS = ["negative", "neutral", "positive"]


def _prepare(train, added):
    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"labels": LABELS},
                               "data": {"train": str(train), "add_train": [str(a) for a in added],
                                        "split": {"validation": 0.2, "test": 0.2}}})
    return data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed)


def _texts(prepared, split: str) -> list[str]:
    return [ex.record["text"] for ex in prepared.splits[split]]


def test_added_records_join_train_only_and_leave_the_held_out_splits_as_they_were(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"review {i}", "label": LABELS[i % 3]} for i in range(30)])
    before = _prepare(train, [])
    held_out_text = _texts(before, "test")[0]
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"text": "a brand new review", "label": "positive", "annotator": "ann", "labelled_at": "2026-11-27T10:00"},
        {"text": "review 0", "label": "negative"},  # train already has it: the split's label wins
        {"text": held_out_text, "label": "neutral"},  # a test input: the leakage check drops it from train
    ])
    after = _prepare(train, [labels])
    for split in ("validation", "test"):
        assert _texts(after, split) == _texts(before, split)
    assert set(_texts(after, "train")) - set(_texts(before, "train")) == {"a brand new review"}
    assert after.report["added_train"] == [{"file": str(labels), "read": 3, "kept_after_cleaning": 3, "added": 2,
                                            "already_in_train": 1}]
    assert any(step["step"].startswith("records added from labels.jsonl") for step in after.report["steps"])


def test_a_missing_or_malformed_added_file_is_one_clear_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"review {i}", "label": LABELS[i % 3]} for i in range(30)])
    with pytest.raises(UserError, match="no such data file"):
        _prepare(train, [tmp_path / "gone.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\nnot json\n')
    with pytest.raises(UserError) as caught:
        _prepare(train, [bad])
    assert "bad.jsonl" in str(caught.value.source) or "bad.jsonl" in str(caught.value)
