"""Grader scores in a run's results: each system's mean score per grader with its bootstrap interval, and
with ``eval.rank_by`` the paired tests of the winner on that grader (what the verdict reads).

A system's predictions carry each sample's score (``row["graders"][name]``); the mean is a metric like any
other, under the key ``graders.<name>`` (:func:`key`), with its interval in ``ci`` under the same key.
Both intervals and tests are :func:`lmtune.evaluate.bootstrap.paired_change`'s: the mean's interval is its
change from a zero baseline (the same resampling code as every other interval of a run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmtune.evaluate import bootstrap
from lmtune.evaluate.metrics import best_systems


def key(name: str) -> str:
    """The results key of grader ``name``'s mean (``graders.format``)."""
    return f"graders.{name}"


def _mean(rows: np.ndarray) -> np.ndarray:
    return rows[..., 0].mean(axis=-1)


def mean_interval(scores: Sequence[float], n_resamples: int, seed: int) -> tuple[float, list | None]:
    """The mean of ``scores`` and its 95% bootstrap interval (None with ``n_resamples`` 0 or one score)."""
    rows = np.asarray(scores, dtype=float)[:, None]
    mean = float(rows.mean()) if len(rows) else 0.0
    if not n_resamples or len(rows) < 2:
        return mean, None
    change = bootstrap.paired_change(np.zeros_like(rows), rows, _mean, n_resamples=n_resamples, seed=seed)
    return mean, ([change["ci_low"], change["ci_high"]] if change["ci_low"] is not None else None)


def significance(results: dict[str, Any], eval_config, seed: int) -> list[dict[str, Any]]:
    """Paired bootstrap p-values of the best system on ``eval.rank_by``'s grader against every other one.

    Returns:
        ``[{"a", "b", "metric": "graders.<name>", "p_value"}]``, as :func:`lmtune.evaluate.intervals.significance`
        gives for the task metric; [] without ``rank_by``, bootstrap, or two graded systems.
    """
    name = getattr(eval_config, "rank_by", None)
    if not name or not eval_config.bootstrap:
        return []
    scored = {system: [row["graders"][name] for row in result.predictions]
              for system, result in results.items() if _graded(getattr(result, "predictions", None), name)}
    if len(scored) < 2:
        return []
    means = {system: float(np.mean(scores)) for system, scores in scored.items()}
    winner = best_systems(means, key(name))[0]
    out = []
    for other, scores in scored.items():
        if other == winner or len(scores) != len(scored[winner]):
            continue
        change = bootstrap.paired_change(np.asarray(scores, dtype=float)[:, None],
                                         np.asarray(scored[winner], dtype=float)[:, None], _mean,
                                         n_resamples=eval_config.bootstrap, seed=seed)
        out.append({"a": winner, "b": other, "metric": key(name), "p_value": change["p_value"]})
    return out


def _graded(rows, name: str) -> bool:
    return bool(rows) and all(name in (row.get("graders") or {}) for row in rows)
