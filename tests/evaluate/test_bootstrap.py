"""Bootstrap confidence intervals and paired tests: values, coverage of the estimate, shrinking with n."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lmtune.errors import UserError
from lmtune.evaluate import bootstrap, metrics

LABELS = ["negative", "neutral", "positive"]
WORDS = "the drug helped my pain a lot but gave me headaches and nausea for two weeks".split()


def _classification(n: int, accuracy: float, seed: int) -> tuple[list[str], list[str]]:
    """References and predictions that are right with probability ``accuracy``, else a random label."""
    rng = random.Random(seed)
    refs = [rng.choice(LABELS) for _ in range(n)]
    return refs, [r if rng.random() < accuracy else rng.choice(LABELS) for r in refs]


def _generation(n: int, keep: float, seed: int) -> tuple[list[str], list[str]]:
    """Random 12-word references; predictions keep each word with probability ``keep``, else another word."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n)]
    preds = [" ".join(w if rng.random() < keep else rng.choice(WORDS) for w in r.split()) for r in refs]
    return refs, preds


def _width(interval: dict) -> float:
    return interval["ci_high"] - interval["ci_low"]


@pytest.mark.parametrize("task,data,labels", [
    ("classification", _classification(120, 0.6, 0), LABELS),
    ("generation", _generation(60, 0.7, 0), None),
    ("regression", ([i / 40 for i in range(40)], [i / 40 + (0.1 if i % 3 else -0.2) for i in range(40)]), None),
])
def test_value_is_the_plain_metric_and_lies_in_its_interval(task, data, labels):
    refs, preds = data
    result = bootstrap.confidence_intervals(task, refs, preds, labels, n_resamples=500)
    plain = metrics.compute_selected(task, refs, preds, labels)
    assert list(result) == list(plain)
    for key, interval in result.items():
        assert interval["value"] == plain[key], key
        assert interval["ci_low"] <= interval["value"] <= interval["ci_high"], key
    assert any(_width(interval) > 0 for interval in result.values())


def test_classification_values_equal_classification_metrics():
    refs, preds = _classification(90, 0.5, 1)
    result = bootstrap.confidence_intervals("classification", refs, preds, LABELS,
                                            ["accuracy", "f1_macro", "per_class"])
    full = metrics.classification_metrics(refs, preds, LABELS)
    assert result["accuracy"]["value"] == full["accuracy"] and result["f1_macro"]["value"] == full["f1_macro"]
    assert result["recall[neutral]"]["value"] == full["per_class"]["neutral"]["recall"]


@pytest.mark.parametrize("task,make,names,labels", [
    ("classification", _classification, ["accuracy", "f1_macro"], LABELS),
    ("generation", _generation, ["rougeL", "bleu", "chrf", "exact_match"], None),
])
def test_interval_shrinks_as_the_test_set_grows(task, make, names, labels):
    keep = 0.6 if task == "classification" else 0.9  # exact_match needs some perfect predictions
    small = bootstrap.confidence_intervals(task, *make(50, keep, 2), labels, names, n_resamples=400)
    large = bootstrap.confidence_intervals(task, *make(800, keep, 3), labels, names, n_resamples=400)
    for key in small:
        # Standard errors fall with sqrt(n): 16x the examples, about a quarter of the width.
        assert 0 < _width(large[key]) < 0.5 * _width(small[key]), key


def test_same_seed_same_interval():
    refs, preds = _classification(100, 0.6, 4)
    first = bootstrap.confidence_intervals("classification", refs, preds, LABELS, ["accuracy"], seed=7)
    assert first == bootstrap.confidence_intervals("classification", refs, preds, LABELS, ["accuracy"], seed=7)


def test_a_higher_confidence_widens_the_interval():
    refs, preds = _classification(100, 0.6, 4)
    first = bootstrap.confidence_intervals("classification", refs, preds, LABELS, ["accuracy"], seed=7)
    wide = bootstrap.confidence_intervals("classification", refs, preds, LABELS, ["accuracy"], seed=7,
                                          confidence=0.99)
    assert _width(wide["accuracy"]) > _width(first["accuracy"])


def test_undefined_intervals_are_none():
    one = bootstrap.confidence_intervals("generation", ["a b c"], ["a b"], metrics=["rouge1"])
    assert one["rouge1"]["value"] > 0 and one["rouge1"]["ci_low"] is None and one["rouge1"]["ci_high"] is None
    flat = bootstrap.confidence_intervals("regression", [0.0, 1.0, 0.5], [0.5, 0.5, 0.5], metrics=["pearson", "mse"])
    assert flat["pearson"] == {"value": None, "ci_low": None, "ci_high": None}
    assert flat["mse"]["ci_low"] is not None


def test_paired_p_value_separates_different_systems_from_equal_ones():
    refs, good = _classification(200, 0.9, 5)
    bad = _classification(200, 0.3, 5)[1]  # same references (same seed), far worse predictions
    assert bootstrap.paired_p_value("classification", "f1_macro", refs, good, bad, LABELS) < 0.01
    assert bootstrap.paired_p_value("classification", "f1_macro", refs, good, good, LABELS) == 1.0
    nearly = list(good)
    nearly[0] = next(label for label in LABELS if label != good[0])
    assert bootstrap.paired_p_value("classification", "accuracy", refs, good, nearly, LABELS) > 0.3
    assert bootstrap.paired_p_value("classification", "f1[neutral]", refs, good, bad, LABELS) < 0.01


def test_paired_p_value_recomputes_corpus_bleu_and_is_symmetric():
    refs, close = _generation(80, 0.9, 6)
    far = _generation(80, 0.4, 6)[1]
    p = bootstrap.paired_p_value("generation", "bleu", refs, close, far, n_resamples=300)
    assert 0 < p < 0.01
    assert p == bootstrap.paired_p_value("generation", "bleu", refs, far, close, n_resamples=300)
    values = bootstrap.paired_p_values("generation", refs, close, close, metrics=["rougeL", "chrf"], n_resamples=200)
    assert values == {"rougeL": 1.0, "chrf": 1.0}
    with pytest.raises(UserError, match="classification metric"):
        bootstrap.paired_p_value("generation", "f1[x]", refs, close, far, n_resamples=10)
    labels, predictions = _classification(20, 0.5, 6)
    with pytest.raises(ValueError, match="not a result key"):
        bootstrap.paired_p_value("classification", "f1[maybe]", labels, predictions, predictions, LABELS)


def test_perplexity_interval_resamples_documents():
    nll, tokens = [12.0, 30.0, 8.0, 22.0, 15.0], [6, 10, 5, 9, 7]
    result = bootstrap.perplexity_interval(nll, tokens)
    assert result["value"] == pytest.approx(math.exp(sum(nll) / sum(tokens)))
    assert result["ci_low"] <= result["value"] <= result["ci_high"]



def test_paired_change_of_a_mean_is_the_difference_with_an_interval():
    rng = np.random.default_rng(1)
    before = rng.normal(0.0, 1.0, size=(200, 1))
    after = before + 0.3 + rng.normal(0.0, 0.1, size=(200, 1))
    mean = lambda rows: rows[..., 0].mean(-1)  # noqa: E731
    result = bootstrap.paired_change(before, after, mean, n_resamples=500)
    assert result["value"] == pytest.approx(after.mean() - before.mean())
    assert result["ci_low"] < result["value"] < result["ci_high"] and result["ci_low"] > 0.25
    assert result["p_value"] < 0.01
    assert bootstrap.paired_change(before, before, mean, n_resamples=100)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        bootstrap.paired_change(before, after[:10], mean)

@pytest.mark.parametrize("kwargs,match", [({"n_resamples": 0}, "n_resamples"), ({"confidence": 95}, "confidence")])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap.confidence_intervals("classification", LABELS, LABELS, LABELS, **kwargs)


def test_interval_without_labels_uses_the_labels_seen_like_the_value():
    refs, preds = _classification(90, 0.5, 2)
    preds[0] = "unsure"  # a predicted label outside the references counts in the macro average
    result = bootstrap.confidence_intervals("classification", refs, preds, None, ["f1_macro"], n_resamples=300)
    union = metrics.averaged_labels(refs, preds)
    same = bootstrap.confidence_intervals("classification", refs, preds, union, ["f1_macro"], n_resamples=300)
    assert result == same
    assert result["f1_macro"]["value"] == metrics.classification_metrics(refs, preds, None)["f1_macro"]


def test_paired_test_without_labels_averages_both_systems_over_one_label_set():
    refs, preds = _classification(60, 0.6, 3)
    other = ["unsure"] + preds[1:]
    union = metrics.averaged_labels(refs, preds + other)
    assert (bootstrap.paired_p_values("classification", refs, preds, other, None, ["f1_macro"], n_resamples=200)
            == bootstrap.paired_p_values("classification", refs, preds, other, union, ["f1_macro"], n_resamples=200))
