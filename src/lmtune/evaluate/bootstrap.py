"""Bootstrap confidence intervals for every metric, and paired bootstrap tests between two systems.

A test set is a sample; a metric measured on it is an estimate. Resampling the examples with
replacement (the bootstrap) shows how much the estimate would move with another sample of the
same size: its 2.5th and 97.5th percentiles are a 95% interval, and resampling two systems'
outputs on the same examples together tells whether their difference is more than that noise.

The resampling is ``scipy.stats.bootstrap`` (percentile method, vectorised). Each resample
recomputes the metric from per-example rows kept by :mod:`lmtune.evaluate.metrics`: the mean of
per-example scores (ROUGE, METEOR, accuracy, exact match, squared and absolute errors), the
score of summed sufficient statistics (corpus BLEU and chrF from sacrebleu's n-gram counts, as
sacrebleu's own bootstrap does; perplexity from NLL and token sums), or the metric of the
resampled pairs (precision/recall/F1 from resampled confusion counts, Pearson). So corpus-level
metrics are recomputed per resample, never averaged from sentence scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from lmtune.evaluate import metrics as metric_registry
from lmtune.kinds.tasks import find as find_task

#: Most array elements one batch of resamples may gather (rows x examples x columns), ~160 MB.
_BATCH_ELEMENTS = 20_000_000


def confidence_intervals(task: str, references: Sequence[Any], predictions: Sequence[Any],
                         labels: Sequence[str] | None = None, metrics: str | Sequence[str] | None = None,
                         n_resamples: int = 1000, seed: int = 0,
                         confidence: float = 0.95) -> dict[str, dict[str, float | None]]:
    """Each selected metric's value with a percentile bootstrap confidence interval.

    All metrics see the same resamples (the same seed draws the same example indices).

    Args:
        task: the task type (its family picks the metrics, see ``metrics.known_metrics``).
        references: reference of each example (label, text or number).
        predictions: prediction of each example, aligned with ``references``.
        labels: the classification label set; None for the labels seen in references and
            predictions (``metrics.averaged_labels``, the definition every macro average uses).
        metrics: metric names, ``"auto"`` or None for all of the task's.
        n_resamples: bootstrap resamples.
        seed: seeds the resampling; equal seeds give equal intervals.
        confidence: the interval's coverage, e.g. 0.95 for the 2.5th..97.5th percentiles.

    Returns:
        ``{key: {"value", "ci_low", "ci_high"}}``; ``value`` is the metric on all examples,
        exactly as ``metrics.compute_selected`` gives it. The interval is None with fewer than
        two examples, or when the metric is undefined on the data or on some resample (Pearson
        of a constant side).

    Raises:
        ValueError: empty or misaligned inputs, an empty or repeated label set, bad ``n_resamples``/``confidence``.
        UserError: an unknown or inapplicable metric name.
    """
    _check_settings(n_resamples, confidence)
    results: dict[str, dict[str, float | None]] = {}
    for part in metric_registry.scored(task, references, predictions, labels, metrics):
        statistic = lambda idx, part=part: part.reduce(part.rows[idx])  # noqa: E731
        resampled = _resample(statistic, part.rows.shape, n_resamples, seed, confidence)
        for i, (key, value) in enumerate(part.values.items()):
            low, high = _interval(resampled, i, value)
            results[key] = {"value": value, "ci_low": low, "ci_high": high}
    return results


def paired_p_values(task: str, references: Sequence[Any], predictions_a: Sequence[Any],
                    predictions_b: Sequence[Any], labels: Sequence[str] | None = None,
                    metrics: str | Sequence[str] | None = None, n_resamples: int = 1000,
                    seed: int = 0) -> dict[str, float]:
    """:func:`paired_p_value` for several metrics at once (each scorer runs once per system).

    Returns:
        ``{key: p}`` for every key of the selected metrics; NaN where the metric is undefined.
    """
    _check_settings(n_resamples, 0.95)
    if len(predictions_a) != len(predictions_b):
        raise ValueError(f"the two systems' predictions differ in length ({len(predictions_a)} vs "
                         f"{len(predictions_b)}); a paired test needs the same examples")
    if labels is None and getattr(find_task(task), "labelled", False):
        # Both systems must be averaged over one label set, or their difference mixes two definitions.
        labels = metric_registry.averaged_labels(references, [*predictions_a, *predictions_b])
    parts_a = metric_registry.scored(task, references, predictions_a, labels, metrics)
    parts_b = metric_registry.scored(task, references, predictions_b, labels, metrics)
    results: dict[str, float] = {}
    for a, b in zip(parts_a, parts_b, strict=True):
        statistic = lambda idx, a=a, b=b: a.reduce(a.rows[idx]) - b.reduce(b.rows[idx])  # noqa: E731
        resampled = _resample(statistic, (len(references), a.rows.shape[1] + b.rows.shape[1]), n_resamples, seed)
        for i, key in enumerate(a.values):
            va, vb = a.values[key], b.values[key]
            observed = None if va is None or vb is None else va - vb
            results[key] = _two_sided_p(None if resampled is None else resampled.bootstrap_distribution[i], observed)
    return results


def paired_p_value(task: str, metric: str, references: Sequence[Any], predictions_a: Sequence[Any],
                   predictions_b: Sequence[Any], labels: Sequence[str] | None = None,
                   n_resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for the difference of two systems on one metric.

    Koehn (2004)'s paired bootstrap resampling, made two-sided by shifting to the null
    hypothesis (Hall & Wilson 1991): draw ``B = n_resamples`` resamples of the example indices
    (with replacement, the same indices for both systems) and compute ``d_i = m(A_i) - m(B_i)``
    on each, corpus metrics recomputed per resample. ``d_i - d`` mimics how far the observed
    difference ``d = m(A) - m(B)`` (all examples) falls from the true one; if the systems were
    equally good, a difference as large as ``|d|`` arises with probability about::

        p = (1 + #{i : |d_i - d| >= |d|}) / (B + 1)

    The ``+1`` keeps ``p`` above zero (``B`` resamples cannot show less than ``1/(B+1)``).
    Identical systems give ``d = 0`` and ``p = 1``.

    Args:
        task: the task type.
        metric: a result key, e.g. ``f1_macro``, ``bleu`` or ``f1[positive]``.
        references: reference of each example.
        predictions_a: system A's predictions, aligned with ``references``.
        predictions_b: system B's predictions, on the same examples in the same order.
        labels: the classification label set; None for the labels seen in references and
            predictions (``metrics.averaged_labels``, the definition every macro average uses).
        n_resamples: bootstrap resamples (``B``).
        seed: seeds the resampling.

    Returns:
        ``p`` in ``(0, 1]``; NaN when the metric is undefined (Pearson of a constant side) or
        there are fewer than two examples.

    Raises:
        ValueError: misaligned inputs, an empty or repeated label set.
        UserError: an unknown or inapplicable metric.
    """
    name = "per_class" if metric.endswith("]") and "[" in metric else metric
    result = paired_p_values(task, references, predictions_a, predictions_b, labels, [name], n_resamples, seed)
    if metric not in result:
        raise ValueError(f"{metric!r} is not a result key of task {task!r}; keys: {', '.join(result)}")
    return result[metric]


def perplexity_interval(nll: Sequence[float], tokens: Sequence[int], n_resamples: int = 1000, seed: int = 0,
                        confidence: float = 0.95) -> dict[str, float | None]:
    """Perplexity with a bootstrap interval, resampling documents (or blocks).

    Args:
        nll: summed negative log-likelihood (nats) of each document's scored tokens.
        tokens: number of scored tokens of each document, aligned with ``nll``.
        n_resamples, seed, confidence: as for :func:`confidence_intervals`.

    Returns:
        ``{"value", "ci_low", "ci_high"}``; ``value`` is ``metrics.perplexity(sum(nll), sum(tokens))``.
    """
    _check_settings(n_resamples, confidence)
    if not len(nll) or len(nll) != len(tokens):
        raise ValueError(f"need equally many NLL sums and token counts, got {len(nll)} and {len(tokens)}")
    rows = np.column_stack([np.asarray(nll, dtype=float), np.asarray(tokens, dtype=float)])
    value = metric_registry.perplexity(float(rows[:, 0].sum()), int(rows[:, 1].sum()))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        statistic = lambda idx: np.exp(rows[idx, 0].sum(-1) / rows[idx, 1].sum(-1))[None]  # noqa: E731
        resampled = _resample(statistic, rows.shape, n_resamples, seed, confidence)
    low, high = _interval(resampled, 0, value)
    return {"value": value, "ci_low": low, "ci_high": high}


def paired_change(before: np.ndarray, after: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray],
                  n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, float | None]:
    """The change of a statistic between two measurements of the same items, with its interval and p.

    Args:
        before, after: ``(n, k)`` per-item rows of the two measurements, row ``i`` the same item.
        reduce: rows ``(..., n, k)`` to the statistic ``(...)``, e.g. a mean or a ratio of sums.
        n_resamples, seed, confidence: as for :func:`confidence_intervals`.

    Returns:
        ``{"value", "ci_low", "ci_high", "p_value"}`` for ``reduce(after) - reduce(before)``: a
        paired bootstrap (the same resampled items for both), ``p_value`` two-sided as in
        :func:`paired_p_value`; interval None and p NaN below two items.
    """
    _check_settings(n_resamples, confidence)
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"need two (n, k) arrays of the same shape, got {before.shape} and {after.shape}")
    value = float(reduce(after) - reduce(before))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        statistic = lambda idx: (reduce(after[idx]) - reduce(before[idx]))[None]  # noqa: E731
        resampled = _resample(statistic, (len(before), 2 * before.shape[1]), n_resamples, seed, confidence)
    low, high = _interval(resampled, 0, value)
    p = _two_sided_p(None if resampled is None else resampled.bootstrap_distribution[0], value)
    return {"value": value, "ci_low": low, "ci_high": high, "p_value": p}


def paired_difference(task: str, metric: str, references: Sequence[Any], predictions_a: Sequence[Any],
                      predictions_b: Sequence[Any], labels: Sequence[str] | None = None, n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, float | None]:
    """``metric(A) - metric(B)`` on the same examples, with its paired bootstrap interval and p-value.

    The resamples are :func:`paired_p_value`'s (same seed, same draws), so ``p_value`` equals what it gives;
    the interval is the percentile interval of the resampled differences (self-training's gain over the
    supervised run, say).

    Returns:
        ``{"value", "ci_low", "ci_high", "p_value"}``; interval None and p NaN where undefined.
    """
    _check_settings(n_resamples, confidence)
    if len(predictions_a) != len(predictions_b):
        raise ValueError(f"the two systems' predictions differ in length ({len(predictions_a)} vs "
                         f"{len(predictions_b)}); a paired difference needs the same examples")
    if labels is None and getattr(find_task(task), "labelled", False):
        labels = metric_registry.averaged_labels(references, [*predictions_a, *predictions_b])
    name = "per_class" if metric.endswith("]") and "[" in metric else metric
    parts_a = metric_registry.scored(task, references, predictions_a, labels, [name])
    parts_b = metric_registry.scored(task, references, predictions_b, labels, [name])
    for a, b in zip(parts_a, parts_b, strict=True):
        if metric not in a.values:
            continue
        i = list(a.values).index(metric)
        va, vb = a.values[metric], b.values[metric]
        value = None if va is None or vb is None else va - vb
        statistic = lambda idx, a=a, b=b: a.reduce(a.rows[idx]) - b.reduce(b.rows[idx])  # noqa: E731
        resampled = _resample(statistic, (len(references), a.rows.shape[1] + b.rows.shape[1]), n_resamples, seed,
                              confidence)
        low, high = _interval(resampled, i, value)
        p = _two_sided_p(None if resampled is None else resampled.bootstrap_distribution[i], value)
        return {"value": value, "ci_low": low, "ci_high": high, "p_value": p}
    raise ValueError(f"{metric!r} is not a result key of task {task!r}")


def _check_settings(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, e.g. 0.95; got {confidence}")


def _resample(statistic: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int], n_resamples: int,
              seed: int, confidence: float = 0.95) -> Any:
    """``scipy.stats.bootstrap`` of ``statistic(indices) -> (keys, resamples)``; None below two examples.

    Resampling the example indices ``0..n-1`` lets several arrays (the rows of two systems) be
    resampled together, in batches that bound memory. The result's ``bootstrap_distribution``
    is ``(keys, n_resamples)``; its ``confidence_interval`` is the percentile interval per key.
    """
    n, width = shape
    if n < 2:
        return None
    batch = max(1, min(n_resamples, _BATCH_ELEMENTS // max(1, n * width)))
    with warnings.catch_warnings():
        # NaN resamples (Pearson of a constant resample) make scipy warn; _interval reports None.
        warnings.simplefilter("ignore")
        result = bootstrap((np.arange(n),), lambda idx, axis=-1: statistic(idx), n_resamples=n_resamples,
                           batch=batch, vectorized=True, method="percentile", confidence_level=confidence,
                           rng=np.random.default_rng(seed))
    result.bootstrap_distribution = np.atleast_2d(result.bootstrap_distribution)
    return result


def _interval(resampled: Any, i: int, value: float | None) -> tuple[float | None, float | None]:
    """Key ``i``'s percentile interval; None where undefined (no resamples, no value, NaN resamples)."""
    if resampled is None or value is None or not np.all(np.isfinite(resampled.bootstrap_distribution[i])):
        return None, None
    low, high = np.atleast_1d(resampled.confidence_interval.low), np.atleast_1d(resampled.confidence_interval.high)
    return float(low[i]), float(high[i])


def _two_sided_p(dist: np.ndarray | None, observed: float | None) -> float:
    """``(1 + #{|d_i - d| >= |d|}) / (B + 1)``, see :func:`paired_p_value`."""
    if dist is None or observed is None or not np.all(np.isfinite(dist)):
        return math.nan
    shifted = np.abs(dist - observed)
    # A difference equal to the observed one up to float rounding counts as reaching it.
    reached = shifted >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    return float((1 + np.count_nonzero(reached)) / (len(dist) + 1))

