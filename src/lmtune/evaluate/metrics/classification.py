"""Scorers of predicted labels (scikit-learn), the label set averages run over, and the full report.

Predictions that are not one of the labels count as wrong for accuracy and for the recall of
their true class, and as nobody's prediction for precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from lmtune.evaluate.metrics.scorer import Scored, check_pairs, mean_rows

#: The measures reported for each label, in the order of the per-class keys.
PER_CLASS = ("precision", "recall", "f1")


def per_class_keys(labels: Sequence[str]) -> list[str]:
    """The result keys of ``per_class``: ``precision[<label>]``, ``recall[<label>]``, ``f1[<label>]`` per label."""
    return [f"{name}[{label}]" for label in labels for name in PER_CLASS]


def accuracy(references, predictions, labels) -> Scored:
    """Fraction of exact label matches."""
    rows = np.array([[float(r == p)] for r, p in zip(references, predictions, strict=True)])
    return mean_rows({"accuracy": float(accuracy_score(references, predictions))}, rows)


def prf(references, predictions, labels) -> Scored:
    """Macro, micro and per-class precision/recall/F1 (scikit-learn, ``zero_division=0``)."""
    values: dict[str, float | None] = {}
    for average in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(references, predictions, labels=labels, average=average,
                                                     zero_division=0)
        values.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    per = precision_recall_fscore_support(references, predictions, labels=labels, average=None, zero_division=0)
    for i, key in enumerate(per_class_keys(labels)):
        values[key] = float(per[i % 3][i // 3])
    code = {label: i for i, label in enumerate(labels)}  # anything else is -1: wrong, and no label's prediction
    rows = np.array([[code.get(r, -1), code.get(p, -1)] for r, p in zip(references, predictions, strict=True)])
    return Scored(values, rows, lambda samples: _prf_from_codes(samples, len(labels)))


def _prf_from_codes(samples: np.ndarray, k: int) -> np.ndarray:
    """:func:`prf`'s keys for each sample of ``(reference, prediction)`` label codes, vectorised.

    Hand-written because scikit-learn costs ~3 ms a call in input validation, i.e. seconds per
    1000 resamples: confusion counts by ``bincount``, then the formulas of
    ``precision_recall_fscore_support(zero_division=0)``; tests check both agree.
    """
    r = samples.shape[0]
    cells = (samples[..., 0] + 1) * (k + 1) + samples[..., 1] + 1 + (np.arange(r) * (k + 1) ** 2)[:, None]
    # counts[s, i + 1, j + 1]: examples of sample s with reference code i and prediction code j.
    counts = np.bincount(cells.ravel(), minlength=r * (k + 1) ** 2).reshape(r, k + 1, k + 1).astype(float)
    tp = np.diagonal(counts[:, 1:, 1:], axis1=1, axis2=2)  # (R, k)
    true_sum, pred_sum = counts[:, 1:, :].sum(axis=2), counts[:, :, 1:].sum(axis=1)

    def ratios(tp, true_sum, pred_sum):
        div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # noqa: E731
        return div(tp, pred_sum), div(tp, true_sum), div(2 * tp, true_sum + pred_sum)

    per = ratios(tp, true_sum, pred_sum)
    micro = ratios(tp.sum(1), true_sum.sum(1), pred_sum.sum(1))
    per_class = np.stack(per, axis=2).reshape(r, -1)  # label-major: p, r, f of label 0, then label 1...
    return np.vstack([*(x.mean(1) for x in per), *micro, per_class.T])


def averaged_labels(references: Sequence[Any], predictions: Sequence[Any],
                    labels: Sequence[str] | None = None) -> list[str]:
    """The label set that macro averages and per-class scores run over: lmtune's one definition.

    The task's labels when they are known (``labels``, as scikit-learn's ``labels=``): a task
    label that no reference and no prediction uses counts, with F1 0. When they are not known
    (None), the sorted union of the labels seen in references and predictions, which is
    scikit-learn's default. ``lmtune train`` passes ``task.labels``; ``lmtune score`` passes
    ``--labels`` or None; the bootstrap resamples over the same set, so value and interval agree.

    Args:
        references: true label of each example.
        predictions: predicted label of each example.
        labels: the task's label set, or None when unknown.

    Returns:
        The label set, in the order of ``labels`` (or sorted).

    Raises:
        ValueError: ``labels`` is given but empty or repeats a label.
    """
    if labels is None:
        return sorted(set(references) | set(predictions), key=str)
    return _check_labels(labels)


def _check_labels(labels: Sequence[str] | None) -> list[str]:
    labels = list(labels or [])
    if not labels:
        raise ValueError("classification metrics need a non-empty list of labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    return labels


def classification_metrics(references: list[str], predictions: list[str],
                           labels: list[str] | None) -> dict[str, Any]:
    """Accuracy, macro and micro precision/recall/F1, per-class scores and the confusion matrix.

    Predictions that are not one of ``labels`` count as wrong for accuracy and for the recall
    of their true class, but have no column in the confusion matrix; map free-text outputs onto
    labels before calling this if that matters.

    Args:
        references: true label of each example.
        predictions: predicted label of each example, aligned with ``references``.
        labels: the label set, in the order used for ``per_class`` and the matrix axes; None
            for the labels seen (see :func:`averaged_labels`, which defines the macro averages).

    Returns:
        ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_micro``,
        ``recall_micro``, ``f1_micro``, ``per_class`` (``{label: {precision, recall, f1,
        support}}``), ``confusion_matrix`` (rows = true label, columns = predicted label, both in
        ``labels`` order) and ``labels``: the set the macro averages are over.

    Raises:
        ValueError: empty or misaligned inputs, or an empty or repeated label set.
    """
    check_pairs(references, predictions)
    labels = averaged_labels(references, predictions, labels)
    flat = accuracy(references, predictions, labels).values | prf(references, predictions, labels).values
    support = precision_recall_fscore_support(references, predictions, labels=labels, average=None,
                                              zero_division=0)[3]
    result: dict[str, Any] = {key: value for key, value in flat.items() if "[" not in key}
    result["per_class"] = {label: {**{m: flat[f"{m}[{label}]"] for m in PER_CLASS}, "support": int(support[i])}
                           for i, label in enumerate(labels)}
    result["confusion_matrix"] = confusion_matrix(references, predictions, labels=labels).astype(int).tolist()
    result["labels"] = labels
    return result
