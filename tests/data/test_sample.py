"""Sampling n of N records: stratified and seeded by default, first-n only when asked."""

from collections import Counter

import pytest

from lmtune.data.sample import describe, sample_indices


def _sorted_by_label(labels: int = 20, each: int = 30) -> list[str]:
    return [f"intent{j}" for j in range(labels) for _ in range(each)]  # like Banking77's official files


def test_stratified_sample_keeps_every_label_of_a_sorted_file():
    keys = _sorted_by_label()
    kept = sample_indices(len(keys), 100, seed=0, keys=keys)
    counts = Counter(keys[i] for i in kept)
    assert len(kept) == 100 and kept == sorted(set(kept))
    assert len(counts) == 20 and set(counts.values()) == {5}
    first = Counter(keys[i] for i in sample_indices(len(keys), 100, seed=0, how="first", keys=keys))
    assert len(first) == 4  # what first-N gives on a sorted file: 4 of 20 intents


def test_shares_follow_the_label_proportions_and_small_labels_are_kept():
    keys = ["a"] * 90 + ["b"] * 9 + ["c"]
    counts = Counter(keys[i] for i in sample_indices(len(keys), 20, seed=1, keys=keys))
    assert sum(counts.values()) == 20 and counts["c"] == 1 and counts["b"] in (1, 2) and counts["a"] >= 17


def test_fewer_records_than_labels_keep_distinct_labels():
    keys = _sorted_by_label(20, 3)
    kept = sample_indices(len(keys), 7, seed=3, keys=keys)
    assert len(kept) == 7 and len({keys[i] for i in kept}) == 7


def test_samples_are_seeded():
    keys = _sorted_by_label(20, 3)
    kept = sample_indices(len(keys), 7, seed=3, keys=keys)
    assert sample_indices(len(keys), 7, seed=3, keys=keys) == kept
    assert sample_indices(len(keys), 7, seed=4, keys=keys) != kept


@pytest.mark.parametrize("how", ["stratified", "random", "first"])
def test_all_or_none_requested(how):
    assert sample_indices(5, None, 0, how) == [0, 1, 2, 3, 4]
    assert sample_indices(5, 9, 0, how) == [0, 1, 2, 3, 4]
    assert len(sample_indices(50, 10, 0, how)) == 10


def test_description_says_what_was_sampled():
    assert (describe(100, 3080, "stratified", 42, "label")
            == "100 of 3080, sampled at random, stratified by label (seed 42)")
    assert describe(10, 20, "first", 0, None) == "the first 10 of 20 (in file order)"
    assert describe(20, 20, "stratified", 0, "label") == "all 20"


LABELS = [f"intent{j}" for j in range(10)]


def _prepare_sorted_file(tmp_path, **data):
    import json

    from lmtune.data.prepare import prepare
    from lmtune.recipe import recipe_from_dict

    path = tmp_path / "sorted.jsonl"
    path.write_text("".join(json.dumps({"text": f"message {j} {i} about {lab}", "label": lab}) + "\n"
                            for j, lab in enumerate(LABELS) for i in range(20)))
    recipe = recipe_from_dict({"name": "s", "model": "m", "task": {"type": "classification", "labels": LABELS},
                               "data": {"train": str(path), "max_records": 50,
                                        "split": {"validation": 0.0, "test": 0.0}, **data}})
    return prepare(recipe.data, "classification", LABELS, 0)


def test_max_records_samples_every_label_of_a_file_sorted_by_label(tmp_path):
    prepared = _prepare_sorted_file(tmp_path)
    assert Counter(ex.record["label"] for ex in prepared.splits["train"]) == {lab: 5 for lab in LABELS}
    assert prepared.report["sampled"]["train"] == "50 of 200, sampled at random, stratified by label (seed 0)"


def test_max_records_takes_the_first_records_only_when_asked(tmp_path):
    prepared = _prepare_sorted_file(tmp_path, sample="first")
    assert Counter(ex.record["label"] for ex in prepared.splits["train"]) == {"intent0": 20, "intent1": 20,
                                                                              "intent2": 10}


def test_eval_max_examples_samples_every_label_and_says_so(recipe_file, tmp_path):
    import json

    from conftest import write_jsonl

    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import load_recipe

    labels = ["negative", "neutral", "positive"]
    test = write_jsonl(tmp_path / "test_sorted.jsonl", [{"review": f"{lab} review number {i}", "rating": lab}
                                                        for lab in labels for i in range(10)])
    path = recipe_file(data={"test": str(test), "split": {"validation": 0.2, "test": 0.0}},
                       training={"max_steps": 1}, eval={"systems": ["zero_shot"], "max_examples": 6})
    out = run_recipe(load_recipe(path, []), tmp_path / "run", quiet=True)
    refs = [json.loads(line)["reference"] for line in (out / "predictions" / "zero_shot.jsonl").open()]
    assert Counter(refs) == {"negative": 2, "neutral": 2, "positive": 2}
    report = json.loads((out / "data" / "data_report.json").read_text())
    assert report["sampled"]["test (eval.max_examples)"] == "6 of 30, sampled at random, stratified by label (seed 0)"
