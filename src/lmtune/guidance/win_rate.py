"""Win rate of system B over system A from human answers, ties counted half, with a 95% bootstrap interval.

Each live answer scores B 1 (B preferred), 0.5 (tie) or 0 (A preferred); the win rate is the mean score over all
answers (a ``skip``, an annotator who could not tell, counts in none). Several annotators may judge the same item,
and their answers on it are not independent, so the interval resamples *items* (each with all of its answers): the
statistic is the ratio of summed scores to summed answers over the resampled items. The resampling is the project's
own paired bootstrap (:func:`lmtune.evaluate.bootstrap.paired_change`, percentile method, 2,000 resamples, seed 0)
of that ratio against a baseline where every answer is a tie (0.5 exactly on any resample): the change's interval
shifted by 0.5 is the win rate's, and its p-value is that of "neither system is preferred" (win rate 0.5),
two-sided.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from lmtune.evaluate import bootstrap

N_RESAMPLES, SEED = 2000, 0
SCORE = {"a": 0.0, "tie": 0.5, "b": 1.0}
METHOD = (f"bootstrap over items ({N_RESAMPLES} resamples, seed {SEED}, percentile); ties count half; "
          "p: two-sided, against a win rate of 0.5")


def _ratio(rows: np.ndarray) -> np.ndarray:
    """Summed score over summed answers, on ``(..., items, 2)`` rows."""
    return rows[..., 0].sum(-1) / rows[..., 1].sum(-1)


def interval(answers: Iterable[dict[str, Any]]) -> dict[str, float | None]:
    """B's win rate over the answers' items with its 95% interval and p-value.

    Args:
        answers: ``{"index", "winner"}`` per answer, ``winner`` being ``"a"``, ``"b"``, ``"tie"`` or ``"skip"``
            (left out).

    Returns:
        ``{"win_rate_b", "ci_low", "ci_high", "p_value"}``; all None without answers, the interval and p None when
        fewer than two items are judged.
    """
    per_item: dict[Any, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for a in _judged(answers):
        per_item[a["index"]][0] += SCORE[a["winner"]]
        per_item[a["index"]][1] += 1
    if not per_item:
        return {"win_rate_b": None, "ci_low": None, "ci_high": None, "p_value": None}
    rows = np.array(list(per_item.values()), dtype=float)
    value = float(_ratio(rows))
    if len(rows) < 2:
        return {"win_rate_b": value, "ci_low": None, "ci_high": None, "p_value": None}
    tied = np.column_stack([rows[:, 1] * 0.5, rows[:, 1]])
    change = bootstrap.paired_change(tied, rows, _ratio, n_resamples=N_RESAMPLES, seed=SEED)
    low, high = change["ci_low"], change["ci_high"]
    return {"win_rate_b": value, "ci_low": None if low is None else low + 0.5,
            "ci_high": None if high is None else high + 0.5, "p_value": change["p_value"]}


def _judged(answers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in answers if a["winner"] != "skip"]


def counts(answers: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Answers (skips not counted), A wins, B wins, ties, skips and B's win rate (ties half) of ``answers`` (no
    interval)."""
    winners = [a["winner"] for a in answers]
    n = len(winners) - winners.count("skip")
    out = {"answers": n, "wins_a": winners.count("a"), "wins_b": winners.count("b"), "ties": winners.count("tie"),
           "skipped": winners.count("skip")}
    out["win_rate_b"] = (out["wins_b"] + 0.5 * out["ties"]) / n if n else None
    return out


def summarize(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`counts` and :func:`interval` over all answers, items judged, and :func:`counts` per annotator."""
    by_annotator: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in answers:
        by_annotator[a["annotator"]].append(a)
    return {**counts(answers), **interval(answers), "items_judged": len({a["index"] for a in _judged(answers)}),
            "interval": METHOD, "annotators": {name: counts(rows) for name, rows in sorted(by_annotator.items())}}
