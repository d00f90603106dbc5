"""Regression metrics (``lmtune.evaluate.metrics.regression``) equal sklearn's and scipy's on fixed inputs."""

from __future__ import annotations

from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error

from lmtune.evaluate import metrics


def test_regression_matches_sklearn():
    y, yhat = [0.0, 0.5, 1.0, 1.0, 0.5], [0.1, 0.4, 0.7, 1.0, 0.9]
    result = metrics.regression_metrics(y, yhat)
    assert result["mse"] == mean_squared_error(y, yhat) and result["mae"] == mean_absolute_error(y, yhat)
    assert result["pearson"] == pearsonr(y, yhat).statistic
    assert metrics.regression_metrics(y, [0.5] * 5)["pearson"] is None
