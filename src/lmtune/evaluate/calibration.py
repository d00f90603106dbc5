"""Calibrated confidence of a classification system: probabilities, expected calibration error, reliability
diagram, and temperature scaling fitted on the validation split.

A label-scored system gives each label a log-likelihood (``scores`` in its predictions); the softmax of those
over the label set, divided by a temperature T, is the system's probability of each label. T = 1 is the model
as it is; T fitted by minimising the negative log-likelihood of the gold labels on validation (Guo et al.,
2017) keeps every prediction (the argmax does not move) and makes the confidence mean what it says.

ECE and the reliability bins are computed here with numpy (equal-width bins over the top-label confidence,
as in Guo et al.): scikit-learn's ``calibration_curve`` gives the per-bin accuracies but neither the bin
counts nor ECE, and both must come from the same bins. The temperature fit is scipy's bounded scalar
minimiser over log T.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

#: Equal-width confidence bins of the ECE and the reliability diagram.
BINS = 15
#: The temperature is searched in [e^-4, e^4]: wide enough for label log-likelihoods summed over several tokens.
LOG_T_BOUNDS = (-4.0, 4.0)


def score_matrix(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> np.ndarray:
    """The (n, k) label scores of predictions rows (each with ``scores``: label -> log-likelihood)."""
    return np.array([[float(row["scores"][label]) for label in labels] for row in rows], dtype=np.float64)


def probabilities(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each row's probability of each label: the softmax of ``scores / temperature``."""
    return np.exp(log_softmax(np.asarray(scores, dtype=np.float64) / temperature, axis=-1))


def fit_temperature(scores: np.ndarray, gold: Sequence[int]) -> float:
    """The temperature that minimises the negative log-likelihood of the ``gold`` label indices."""
    scores, gold = np.asarray(scores, dtype=np.float64), np.asarray(gold, dtype=np.int64)
    if len(gold) == 0:
        raise ValueError("no examples to fit a temperature on")

    def nll(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=-1)[np.arange(len(gold)), gold].mean())
    found = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> list[dict[str, float]]:
    """The reliability diagram: per equal-width confidence bin, its bounds, count, mean confidence and accuracy
    (bins with no example are left out)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The top bin is closed on the right: a confidence of exactly 1 belongs to it.
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append({"low": round(float(edges[b]), 4), "high": round(float(edges[b + 1]), 4), "n": int(mask.sum()),
                        "confidence": round(float(confidence[mask].mean()), 4),
                        "accuracy": round(float(correct[mask].mean()), 4)})
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the reliability bins."""
    table = reliability(confidence, correct, bins)
    total = sum(b["n"] for b in table)
    if not total:
        return float("nan")
    return sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in table) / total


def calibrated(rows: list[dict[str, Any]], labels: Sequence[str], temperature: float = 1.0) -> dict[str, Any]:
    """Give each prediction row its ``confidence`` (the probability of its predicted label at ``temperature``)
    and return the system's calibration metrics: ``ece``, ``reliability`` and ``temperature``."""
    if not rows or "scores" not in rows[0]:
        return {}
    probs = probabilities(score_matrix(rows, labels), temperature)
    index = {label: i for i, label in enumerate(labels)}
    confidence, correct = [], []
    for row, p in zip(rows, probs):
        picked = index.get(row["prediction"], int(p.argmax()))
        row["confidence"] = round(float(p[picked]), 4)
        confidence.append(float(p[picked]))
        correct.append(row["prediction"] == row.get("reference"))
    return {"ece": round(expected_calibration_error(confidence, correct), 4),
            "reliability": reliability(confidence, correct), "temperature": round(temperature, 4)}
