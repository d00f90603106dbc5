"""Scorers of numeric predictions: squared and absolute error (scikit-learn), Pearson correlation (SciPy)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error

from lmtune.evaluate.metrics.scorer import Scored, mean_rows


def errors(references, predictions, labels) -> Scored:
    """Mean squared error and mean absolute error."""
    y, yhat = np.asarray(references, dtype=float), np.asarray(predictions, dtype=float)
    rows = np.column_stack([(y - yhat) ** 2, np.abs(y - yhat)])
    return mean_rows({"mse": float(mean_squared_error(y, yhat)), "mae": float(mean_absolute_error(y, yhat))}, rows)


def pearson(references, predictions, labels) -> Scored:
    """Pearson correlation; None when either side is constant."""
    from scipy.stats import pearsonr

    rows = np.column_stack([np.asarray(references, dtype=float), np.asarray(predictions, dtype=float)])

    def reduce(samples: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # a constant sample has no correlation: NaN, dropped from the CI
            return np.asarray(pearsonr(samples[..., 0], samples[..., 1], axis=-1).statistic, dtype=float)[None]

    constant = len(set(rows[:, 0])) < 2 or len(set(rows[:, 1])) < 2
    value = None if constant else float(pearsonr(rows[:, 0], rows[:, 1]).statistic)
    return Scored({"pearson": value}, rows, reduce)
