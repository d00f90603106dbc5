"""Classification metrics (``lmtune.evaluate.metrics.classification``) equal sklearn's on fixed inputs."""

from __future__ import annotations

import pytest
from metric_cases import LABELS, PREDS, REFS
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from lmtune.evaluate import metrics


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


def test_micro_averages_match_sklearn_with_out_of_label_predictions():
    preds = PREDS[:-1] + ["maybe"]  # not a label: wrong, and nobody's prediction
    result = metrics.classification_metrics(REFS, preds, LABELS)
    p, r, f, _ = precision_recall_fscore_support(REFS, preds, labels=LABELS, average="micro", zero_division=0)
    assert (result["precision_micro"], result["recall_micro"], result["f1_micro"]) == (p, r, f)
    assert result["precision_micro"] != result["recall_micro"]


def test_macro_averages_over_the_task_labels():
    # "mixed" is a task label nobody uses: with the task's labels it counts (F1 0), as sklearn's labels=.
    task_labels = [*LABELS, "mixed"]
    known = metrics.classification_metrics(REFS, PREDS, task_labels)
    f = precision_recall_fscore_support(REFS, PREDS, labels=task_labels, average="macro", zero_division=0)[2]
    assert known["f1_macro"] == f and known["labels"] == task_labels


def test_macro_averages_without_a_label_set_over_the_labels_seen():
    # Without a label set: the union of the labels in references and predictions, sorted.
    preds = PREDS[:-1] + ["maybe"]
    seen = metrics.classification_metrics(REFS, preds, None)
    assert seen["labels"] == metrics.averaged_labels(REFS, preds) == ["maybe", *LABELS]
    assert seen["f1_macro"] == precision_recall_fscore_support(REFS, preds, average="macro", zero_division=0)[2]
    assert metrics.compute_selected("classification", REFS, preds, metrics=["f1_macro"])["f1_macro"] == seen["f1_macro"]
