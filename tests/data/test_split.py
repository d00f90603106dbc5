"""Held-out splits (``lmtune.data.split``): seeded, stratified, and refused when they would starve a class
or leave too little to train on."""

import json
import subprocess
import sys

import pytest
import yaml

from lmtune.data.formats import load_examples
from lmtune.data.split import label_counts, split_examples
from lmtune.errors import UserError

LABELS = ["negative", "neutral", "positive"]


def _examples(records, task="classification", labels=LABELS, fields=None):
    rows = [(f"f.jsonl:{i + 1}", r) for i, r in enumerate(records)]
    return load_examples(rows, fields or {}, task, labels)


def _balanced(n=90):
    return _examples([{"text": f"text {i}", "label": LABELS[i % 3]} for i in range(n)])


def test_split_is_stratified():
    exs = _balanced()
    kept, held = split_examples(exs, 0.2, seed=1, stratify=True, what="test")
    assert len(held) == 18 and len(kept) == 72
    assert label_counts(held) == {"negative": 6, "neutral": 6, "positive": 6}


def test_split_is_seeded():
    kept, _ = split_examples(_balanced(), 0.2, seed=1, stratify=True, what="test")
    again, _ = split_examples(_balanced(), 0.2, seed=1, stratify=True, what="test")
    assert [e.source for e in kept] == [e.source for e in again]
    other, _ = split_examples(_balanced(), 0.2, seed=2, stratify=True, what="test")
    assert [e.source for e in kept] != [e.source for e in other]


def test_split_that_starves_a_class_is_a_user_error():
    exs = _examples([{"text": f"t{i}", "label": "positive"} for i in range(20)]
                    + [{"text": "lone", "label": "neutral"}])
    with pytest.raises(UserError, match="too few") as info:
        split_examples(exs, 0.2, seed=0, stratify=True, what="test")
    assert info.value.source == "data.split.test"


def test_split_must_leave_two_training_records():
    exs = _examples([{"text": f"text {i}", "label": "positive"} for i in range(3)])
    with pytest.raises(UserError, match="training") as info:
        split_examples(exs, 0.5, seed=0, stratify=False, what="validation")
    assert info.value.source == "data.split.validation"


def test_split_that_leaves_a_class_without_test_examples(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"text": f"review number {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]
    rows.append({"text": "the only neutral one", "label": "neutral"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "x", "model": "m",
                                      "task": {"labels": ["negative", "neutral", "positive"]},
                                      "data": {"train": str(data)}}))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lmtune.cli", "data", "prepare", str(recipe), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: data.split.test: class 'neutral'")
    assert not out.exists()  # nothing half-written
