"""Task metrics, computed by their reference libraries and looked up by name.

Every number here comes from scikit-learn, ``rouge-score`` or ``sacrebleu`` so that results
match what practitioners get from those libraries directly; this module only validates inputs,
dispatches by task and turns numpy scalars into plain floats that serialise to JSON.

To add a metric, add a scorer to :data:`GENERATION_SCORERS` (or a task to :data:`TASK_METRICS`)
and say in :data:`HIGHER_IS_BETTER` which direction is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

#: The metric each task is judged by, e.g. to pick the best system or checkpoint.
PRIMARY_METRIC: dict[str, str] = {
    "classification": "f1_macro",
    "generation": "rougeL",
    "chat": "rougeL",
    "language_modeling": "perplexity",
    "regression": "mse",
    "preference": "reward_accuracy",
}

#: Direction of every metric key that can appear in ``eval.json`` results.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "precision_macro": True,
    "recall_macro": True,
    "f1_macro": True,
    "rouge1": True,
    "rouge2": True,
    "rougeL": True,
    "bleu": True,
    "meteor": True,
    "perplexity": False,
    "mse": False,
    "mae": False,
    "pearson": True,
    "reward_accuracy": True,
    "reward_margin": True,
    "logp_accuracy": True,
    "dpo_loss": False,
    "loss": False,
    "latency_s": False,
}

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better.

    Unknown keys fall back on their name, so that a new loss- or error-like metric is not
    ranked backwards before someone adds it to :data:`HIGHER_IS_BETTER`.

    Args:
        metric: a metric key such as ``f1_macro`` or ``val_loss``.

    Returns:
        True when larger is better.
    """
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    lowered = metric.lower()
    return not any(word in lowered for word in ("loss", "perplexity", "mse", "error", "latency"))


def best_systems(values: dict[str, float], metric: str) -> list[str]:
    """The names that reach the best value of ``metric`` (more than one when tied).

    Args:
        values: metric value per system (or checkpoint, or run).
        metric: the metric's key, which decides whether the best is the largest or smallest.

    Returns:
        The best names, in the order of ``values``.

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError(f"no values of {metric} to rank")
    best = (max if higher_is_better(metric) else min)(values.values())
    return [name for name, value in values.items() if value == best]


def _check_pairs(references: Sequence[str], predictions: Sequence[str]) -> None:
    if len(references) == 0 or len(predictions) == 0:
        raise ValueError(
            f"cannot compute metrics on empty inputs "
            f"({len(references)} references, {len(predictions)} predictions)"
        )
    if len(references) != len(predictions):
        raise ValueError(
            f"references and predictions differ in length "
            f"({len(references)} vs {len(predictions)}); they must be aligned one to one"
        )


def classification_metrics(references: list[str], predictions: list[str],
                           labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix.

    Predictions that are not one of ``labels`` count as wrong for accuracy and for the recall
    of their true class, but have no column in the confusion matrix; map free-text outputs onto
    labels before calling this if that matters.

    Args:
        references: true label of each example.
        predictions: predicted label of each example, aligned with ``references``.
        labels: the label set, in the order used for ``per_class`` and the matrix axes.

    Returns:
        ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``per_class``
        (``{label: {precision, recall, f1, support}}``), ``confusion_matrix`` (rows = true
        label, columns = predicted label, both in ``labels`` order) and ``labels``.

    Raises:
        ValueError: empty or misaligned inputs, or an empty or repeated label set.
    """
    _check_pairs(references, predictions)
    labels = list(labels or [])
    if not labels:
        raise ValueError("classification metrics need a non-empty list of labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    macro = precision_recall_fscore_support(
        references, predictions, labels=labels, average="macro", zero_division=0)
    per = precision_recall_fscore_support(
        references, predictions, labels=labels, average=None, zero_division=0)
    matrix = confusion_matrix(references, predictions, labels=labels)
    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": {
            label: {"precision": float(per[0][i]), "recall": float(per[1][i]),
                    "f1": float(per[2][i]), "support": int(per[3][i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": matrix.astype(int).tolist(),
        "labels": labels,
    }


def _rouge(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for reference, prediction in zip(references, predictions, strict=True):
        scores = scorer.score(reference, prediction)  # argument order: (target, prediction)
        for key in _ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: total / len(references) for key, total in totals.items()}


def _bleu(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    # sacrebleu takes a list of reference *streams*; we have one reference per example.
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)}


#: Scorers for free-text outputs; each returns one or more metric keys.
GENERATION_SCORERS: dict[str, Callable[[Sequence[str], Sequence[str]], dict[str, float]]] = {
    "rouge": _rouge,
    "bleu": _bleu,
}


def generation_metrics(references: list[str], predictions: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L and corpus BLEU of generated text against one reference each.

    Args:
        references: reference text of each example.
        predictions: generated text of each example, aligned with ``references``.

    Returns:
        ``rouge1``, ``rouge2``, ``rougeL``: mean F-measure on a 0..1 scale (rouge-score with
        the Porter stemmer); ``bleu``: sacrebleu corpus BLEU on its usual 0..100 scale.

    Raises:
        ValueError: empty or misaligned inputs.
    """
    _check_pairs(references, predictions)
    results: dict[str, float] = {}
    for scorer in GENERATION_SCORERS.values():
        results.update(scorer(references, predictions))
    return results


def regression_metrics(references: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Mean squared error and mean absolute error (scikit-learn), Pearson correlation (SciPy).

    Pearson is NaN (reported as None) when either side is constant, e.g. a mean-predicting baseline.
    """
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    if not references or len(references) != len(predictions):
        raise ValueError(f"need equally many references and predictions, got {len(references)} and {len(predictions)}")
    constant = len(set(references)) < 2 or len(set(predictions)) < 2
    return {"mse": float(mean_squared_error(references, predictions)),
            "mae": float(mean_absolute_error(references, predictions)),
            "pearson": None if constant else float(pearsonr(references, predictions).statistic)}


def perplexity(total_nll: float, total_tokens: int) -> float:
    """Perplexity from a summed negative log-likelihood.

    Sum the NLL (natural log) over all scored tokens of the corpus first and divide once, so
    that long and short documents weigh by their token count, not per document.

    Args:
        total_nll: sum of per-token negative log-likelihoods, in nats.
        total_tokens: number of tokens that NLL was summed over.

    Returns:
        ``exp(total_nll / total_tokens)``; ``inf`` if that overflows a float.

    Raises:
        ValueError: no tokens.
    """
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got total_tokens={total_tokens}")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf


#: Metric function per task type: ``(references, predictions, labels) -> metrics``.
TASK_METRICS: dict[str, Callable[[list[str], list[str], list[str] | None], dict[str, Any]]] = {
    "classification": lambda refs, preds, labels: classification_metrics(refs, preds, labels or []),
    "generation": lambda refs, preds, labels: generation_metrics(refs, preds),
    "chat": lambda refs, preds, labels: generation_metrics(refs, preds),
}


def compute(task: str, references: list[str], predictions: list[str],
            labels: list[str] | None = None) -> dict[str, Any]:
    """Metrics for one system's predictions, chosen by task type.

    Language modelling is scored by :func:`perplexity` from summed log-likelihoods, not from
    text pairs, so it is not dispatched here.

    Args:
        task: ``classification``, ``generation`` or ``chat``.
        references: reference of each example.
        predictions: prediction of each example, aligned with ``references``.
        labels: the label set; required for classification.

    Returns:
        The task's metric dict (see :func:`classification_metrics`, :func:`generation_metrics`).

    Raises:
        ValueError: an unknown task, empty or misaligned inputs, or missing labels.
    """
    if task not in TASK_METRICS:
        hint = " (use perplexity() on summed log-likelihoods)" if task == "language_modeling" else ""
        raise ValueError(
            f"no text metrics for task {task!r}{hint}; known tasks: {sorted(TASK_METRICS)}")
    return TASK_METRICS[task](references, predictions, labels)
