"""``lmtune score``: metrics with 95% confidence intervals for a file of predictions.

The file is JSONL with one ``{"prediction": ..., "reference": ...}`` object per line (other
keys are ignored, so ``predictions/<system>.jsonl`` of a run scores as it is). When no task is
given it is inferred from the references and predictions, in this order:

1. every reference and prediction is a number (a JSON number, or a string that parses as a
   finite one) -> ``regression``;
2. the references take at most :data:`MAX_LABELS` distinct values, each at most
   :data:`MAX_LABEL_WORDS` words, and on average every value occurs at least twice ->
   ``classification``;
3. otherwise -> ``generation``.

Pass ``task`` to override (e.g. integer class ids 0/1 would otherwise be regression); passing
``labels`` means classification.

Macro averages (precision, recall, F1) use the same definition as ``lmtune train``
(``metrics.averaged_labels``): over ``labels`` when given (the task's label set, as in the
recipe's ``task.labels``), otherwise over the union of the labels seen in references and
predictions. Each macro entry of the output names that set in ``averaged_over``.

A classification file whose rows carry their label ``scores`` (a run's ``predictions/<system>.jsonl`` of a
label-scored system) also gets ``ece``, the expected calibration error of its confidences
(:func:`calibration_error`), unless ``--metrics`` narrows the output.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lmtune.data.io import iter_rows
from lmtune.errors import UserError
from lmtune.evaluate import bootstrap, calibration, metrics
from lmtune.kinds.tasks import find as find_task
from lmtune.kinds.tasks import scored_per_example, task_kind

#: Most distinct references a file may have to be taken for classification.
MAX_LABELS = 20
#: Most words a reference may have to be taken for a class label.
MAX_LABEL_WORDS = 3
#: Task types ``score`` accepts: those scored example by example (:mod:`lmtune.kinds.tasks`).
TASKS = scored_per_example()

_FIELDS = ("prediction", "reference")

#: Names users type for a family of metrics, and the registered names each stands for. Precision,
#: recall and F1 mean the macro averages: every label counts the same, as in the run's eval.json.
FAMILIES: dict[str, tuple[str, ...]] = {
    "rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum"),
    "f1": ("f1_macro",), "precision": ("precision_macro",), "recall": ("recall_macro",),
    "acc": ("accuracy",), "em": ("exact_match",),
}


def expand_metric_names(requested: str | list[str] | None) -> str | list[str] | None:
    """Metric names as the registry spells them: families expanded, any letter case accepted.

    ``"rouge,BLEU"`` -> ``["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]``. ``None`` and
    ``"auto"`` pass through; a name that matches nothing is kept as typed, so that
    :func:`metrics.select_metrics` reports it with the list of valid names.
    """
    if requested is None or requested == "auto":
        return requested
    names = requested.split(",") if isinstance(requested, str) else list(requested)
    canonical = {name.lower(): name for name in metrics.METRICS}
    out: list[str] = []
    for name in (str(n).strip() for n in names):
        key = name.lower()
        out.extend(FAMILIES.get(key) or [canonical.get(key, name)])
    return [name for name in out if name]


def score_file(path: str | Path, metric_names: str | list[str] | None = None, task: str | None = None,
               n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
               labels: str | list[str] | None = None) -> dict[str, Any]:
    """Score a predictions file: each metric's value and bootstrap confidence interval.

    Args:
        path: JSONL file, one ``{"prediction", "reference"}`` object per line.
        metric_names: metric names (comma-separated or a list); None for all of the task's. Family
            names expand (:data:`FAMILIES`: ``rouge``, ``f1``, ...) and letter case is ignored.
        task: ``classification``, ``generation``, ``chat`` or ``regression``; None to infer.
        n_resamples: bootstrap resamples for the intervals.
        seed: seeds the resampling.
        confidence: interval coverage.
        labels: the task's label set (comma-separated or a list) that macro averages run over;
            None for the labels seen in references and predictions.

    Returns:
        ``{"task", "n", "labels", "metrics": {key: {"value", "ci_low", "ci_high"}}}``
        (``labels`` is None unless the task is classification); macro entries also hold
        ``averaged_over``, the label set of their average. Rows with label ``scores`` add ``ece``
        (:func:`calibration_error`) when ``metric_names`` is None or ``"auto"``.

    Raises:
        UserError: missing or unreadable file, a line without both fields or with a value that
            is not text or a number (``file:line``), an unknown task or metric, ``labels`` with a
            task other than classification, empty or repeated, or missing a reference's label;
            a row's ``scores`` or ``confidence`` that is not what a run writes.
    """
    if not Path(path).exists():
        raise UserError("no such data file; check the predictions path given to lmtune score", source=str(path))
    sources, references, predictions = read_pairs(path)
    if task is not None and task not in TASKS:
        perplexity = getattr(find_task(task), "perplexity", False)
        hint = "; perplexity needs token log-likelihoods, not text pairs" if perplexity else ""
        raise UserError(f"unknown task {task!r}; use one of {', '.join(TASKS)}{hint}", source="--task")
    given = _label_list(labels)
    if given is not None and task is not None and not task_kind(task).labelled:
        raise UserError(f"labels apply to classification, not to task {task!r}", source="--labels")
    task = task or ("classification" if given is not None else infer_task(references, predictions))
    kind = task_kind(task)
    if kind.numeric:
        references, predictions = _numbers(references, sources), _numbers(predictions, sources)
    else:
        references, predictions = [_text(x) for x in references], [_text(x) for x in predictions]
    averaged = _averaged_labels(references, predictions, given, sources) if kind.labelled else None
    names = metrics.select_metrics(task, expand_metric_names(metric_names), source="--metrics")
    scores = bootstrap.confidence_intervals(task, references, predictions, averaged, names, n_resamples, seed,
                                            confidence)
    for key, entry in scores.items():
        if key.endswith("_macro"):  # say which labels the average is over, next to its number
            entry["averaged_over"] = averaged
    if kind.labelled and metric_names in (None, "auto"):
        ece = calibration_error(path, references, predictions, n_resamples, seed, confidence)
        if ece is not None:
            scores["ece"] = ece
    return {"task": task, "n": len(references), "labels": averaged, "metrics": scores}


def calibration_error(path: str | Path, references: list[str], predictions: list[str], n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, Any] | None:
    """The expected calibration error of a file whose rows carry their label ``scores``, with a percentile
    bootstrap interval; None when the first row has no ``scores``.

    A row's confidence is its own ``confidence`` when every row has one (what the run's system said, after the
    temperature ``eval.calibrate`` fitted), else the softmax of its ``scores`` at its prediction (T = 1). So the
    ECE of a run's predictions file is the one in its ``eval.json``. ``confidence_from`` says which it was.

    Raises:
        UserError: a row without ``scores`` after one with them, ``scores`` that are not label -> number, or a
            ``confidence`` outside [0, 1] (``file:line``).
    """
    rows = list(iter_rows(path))
    if not rows or "scores" not in rows[0][1]:
        return None
    own = all("confidence" in record for _, record in rows)
    said = np.array([_row_confidence(where, record, own) for where, record in rows])
    correct = np.array([p == r for p, r in zip(predictions, references, strict=True)], dtype=np.float64)
    low = high = None
    if len(said) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns when every resample gives the same ECE: then that's it
            found = stats.bootstrap((said, correct), _ece, paired=True, vectorized=True, n_resamples=n_resamples,
                                    method="percentile", confidence_level=confidence, rng=np.random.default_rng(seed))
        low, high = round(float(found.confidence_interval.low), 4), round(float(found.confidence_interval.high), 4)
    # Four decimals, as in eval.json: the bins' means it is computed from are rounded so.
    return {"value": round(calibration.expected_calibration_error(said, correct), 4), "ci_low": low, "ci_high": high,
            "confidence_from": "confidence" if own else "scores"}


def _row_confidence(where: str, record: dict[str, Any], own: bool) -> float:
    """One row's confidence (see :func:`calibration_error`), its fields checked."""
    scores = record.get("scores")
    if not isinstance(scores, dict) or not scores or not all(_is_finite(v) for v in scores.values()):
        raise UserError("'scores' must be an object of label -> log-likelihood (finite numbers), as a run's "
                        "predictions write it; remove it from every line to score the labels alone", source=where)
    if own:
        value = record["confidence"]
        if not _is_finite(value) or not 0.0 <= value <= 1.0:
            raise UserError(f"'confidence' is {value!r}; it must be a probability from 0 to 1", source=where)
        return float(value)
    probs = calibration.probabilities(np.array([float(v) for v in scores.values()]))
    labels = list(scores)
    picked = labels.index(record["prediction"]) if record["prediction"] in scores else int(probs.argmax())
    return float(probs[picked])


def _ece(said: np.ndarray, correct: np.ndarray, axis: int = -1) -> np.ndarray:
    """ECE of each resample along ``axis``: the bins of :func:`lmtune.evaluate.calibration.reliability`, where
    a bin's count times its confidence-accuracy gap is the sum of its examples' gaps."""
    edges = np.linspace(0.0, 1.0, calibration.BINS + 1)
    which = np.clip(np.digitize(said, edges[1:-1], right=True), 0, calibration.BINS - 1)
    gap = said - correct
    return sum(np.abs(np.where(which == b, gap, 0.0).sum(axis=axis)) for b in range(calibration.BINS)) \
        / said.shape[axis]


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _label_list(labels: str | list[str] | None) -> list[str] | None:
    """``--labels`` as a list: comma-separated text split and trimmed; None when not given."""
    if labels is None:
        return None
    names = [str(n).strip() for n in (labels.split(",") if isinstance(labels, str) else labels)]
    names = [n for n in names if n]
    if not names or len(set(names)) != len(names):
        raise UserError(f"labels must be distinct and non-empty, got {labels!r}", source="--labels")
    return names


def _averaged_labels(references: list[str], predictions: list[str], given: list[str] | None,
                     sources: list[str]) -> list[str]:
    """The macro averages' label set (``metrics.averaged_labels``), checking references against ``given``."""
    if given is not None:
        for reference, where in zip(references, sources, strict=True):
            if reference not in given:
                # A reference outside the task's labels is a typo in --labels or in the file.
                raise UserError(f"reference {reference!r} is not one of --labels ({', '.join(given)})",
                                source=where)
    return metrics.averaged_labels(references, predictions, given)


def read_pairs(path: str | Path) -> tuple[list[str], list[Any], list[Any]]:
    """``(sources, references, predictions)`` of a JSONL file, checking each line's two fields.

    Raises:
        UserError: with ``file:line`` of the first line that lacks a field or holds a value that
            is neither text nor a number.
    """
    sources, references, predictions = [], [], []
    for where, record in iter_rows(path):
        missing = [name for name in _FIELDS if name not in record]
        if missing:
            raise UserError(f"no {' and no '.join(repr(m) for m in missing)} field; every line needs "
                            '{"prediction": ..., "reference": ...}', source=where)
        for name in _FIELDS:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise UserError(f"{name!r} is {_json_type(value)}; it must be text or a number", source=where)
        sources.append(where)
        references.append(record["reference"])
        predictions.append(record["prediction"])
    return sources, references, predictions


def infer_task(references: list[Any], predictions: list[Any]) -> str:
    """The task the pairs look like (the rule is in this module's docstring)."""
    if all(_as_number(x) is not None for x in references + predictions):
        return "regression"
    distinct = {_text(x) for x in references}
    short = all(len(label.split()) <= MAX_LABEL_WORDS for label in distinct)
    if short and len(distinct) <= MAX_LABELS and len(references) >= 2 * len(distinct):
        return "classification"
    return "generation"


def _json_type(value: Any) -> str:
    """How JSON names the type of ``value`` (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def _numbers(values: list[Any], sources: list[str]) -> list[float]:
    out = []
    for value, where in zip(values, sources, strict=True):
        number = _as_number(value)
        if number is None:
            raise UserError(f"{value!r} is not a finite number; regression scores numbers (or pass another "
                            "--task)", source=where)
        out.append(number)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
