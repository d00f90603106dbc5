"""Metrics equal their reference libraries on a fixed input."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from lmtune.evaluate import metrics

LABELS = ["negative", "neutral", "positive"]
REFS = ["positive", "negative", "neutral", "positive", "negative", "positive", "neutral"]
PREDS = ["positive", "positive", "neutral", "negative", "negative", "positive", "positive"]

GEN_REFS = ["the cat sat on the mat", "dosage was reduced after two weeks",
            "patients reported mild headaches"]
GEN_PREDS = ["a cat is sitting on the mat", "the dosage was lowered after two weeks",
             "some patients report headaches"]


def test_classification_matches_sklearn():
    result = metrics.classification_metrics(REFS, PREDS, LABELS)
    p, r, f, _ = precision_recall_fscore_support(REFS, PREDS, labels=LABELS, average="macro",
                                                 zero_division=0)
    assert result["accuracy"] == pytest.approx(accuracy_score(REFS, PREDS))
    assert result["precision_macro"] == pytest.approx(p)
    assert result["recall_macro"] == pytest.approx(r)
    assert result["f1_macro"] == pytest.approx(f)
    per = precision_recall_fscore_support(REFS, PREDS, labels=LABELS, average=None, zero_division=0)
    for i, label in enumerate(LABELS):
        assert result["per_class"][label] == pytest.approx(
            {"precision": per[0][i], "recall": per[1][i], "f1": per[2][i], "support": per[3][i]})
    assert result["confusion_matrix"] == confusion_matrix(REFS, PREDS, labels=LABELS).tolist()
    assert result["labels"] == LABELS


def test_confusion_matrix_rows_are_true_labels():
    # Two true "negative" examples both predicted "positive": row negative, column positive.
    result = metrics.classification_metrics(["negative", "negative", "positive"],
                                            ["positive", "positive", "positive"], LABELS)
    assert result["confusion_matrix"] == [[0, 0, 2], [0, 0, 0], [0, 0, 1]]
    assert result["per_class"]["neutral"]["support"] == 0


def test_classification_is_json_plain():
    result = metrics.classification_metrics(REFS, PREDS, LABELS)
    assert type(result["accuracy"]) is float
    assert type(result["per_class"]["positive"]["support"]) is int
    assert all(type(x) is int for row in result["confusion_matrix"] for x in row)


def test_generation_matches_rouge_score_and_sacrebleu():
    result = metrics.generation_metrics(GEN_REFS, GEN_PREDS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for ref, pred in zip(GEN_REFS, GEN_PREDS, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = sum(s[key].fmeasure for s in scores) / len(scores)
        assert result[key] == pytest.approx(expected)
        assert 0.0 <= result[key] <= 1.0
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(GEN_PREDS, [GEN_REFS]).score)


def test_generation_identical_text_is_perfect():
    result = metrics.generation_metrics(GEN_REFS, GEN_REFS)
    assert result["rougeL"] == pytest.approx(1.0)
    assert result["bleu"] == pytest.approx(100.0)


def test_perplexity_of_known_nll():
    assert metrics.perplexity(10 * math.log(4.0), 10) == pytest.approx(4.0)
    assert metrics.perplexity(0.0, 5) == pytest.approx(1.0)
    assert metrics.perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="token"):
        metrics.perplexity(1.0, 0)


def test_compute_dispatches_by_task():
    assert metrics.compute("classification", REFS, PREDS, LABELS) == \
        metrics.classification_metrics(REFS, PREDS, LABELS)
    for task in ("generation", "chat"):
        assert metrics.compute(task, GEN_REFS, GEN_PREDS) == \
            metrics.generation_metrics(GEN_REFS, GEN_PREDS)
    with pytest.raises(ValueError, match="perplexity"):
        metrics.compute("language_modeling", GEN_REFS, GEN_PREDS)
    with pytest.raises(ValueError, match="known tasks"):
        metrics.compute("astrology", GEN_REFS, GEN_PREDS)


@pytest.mark.parametrize("call", [
    lambda: metrics.classification_metrics([], [], LABELS),
    lambda: metrics.generation_metrics([], []),
    lambda: metrics.compute("generation", [], []),
])
def test_empty_inputs_raise(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="length"):
        metrics.generation_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="labels"):
        metrics.classification_metrics(REFS, PREDS, [])
    with pytest.raises(ValueError, match="labels"):
        metrics.compute("classification", REFS, PREDS)


def test_every_primary_metric_has_a_direction():
    for task, metric in metrics.PRIMARY_METRIC.items():
        assert metric in metrics.HIGHER_IS_BETTER, task
    assert metrics.HIGHER_IS_BETTER["f1_macro"] is True
    assert metrics.HIGHER_IS_BETTER["perplexity"] is False
    assert metrics.higher_is_better("val_loss") is False  # unknown keys judged by their name
    assert metrics.higher_is_better("exact_match") is True


def test_best_systems_respects_direction_and_ties():
    assert metrics.best_systems({"a": 0.2, "b": 0.7}, "f1_macro") == ["b"]
    assert metrics.best_systems({"a": 12.0, "b": 30.0}, "perplexity") == ["a"]
    assert metrics.best_systems({"a": 0.5, "b": 0.5, "c": 0.1}, "accuracy") == ["a", "b"]
