"""What an oracle experiment found: the learning curve of each strategy across seeds, the labels each needed to
reach random selection's final score, and a statement a person reads (``active.json``).

Across seeds, a curve point is the mean of the seeds' values at that number of labels, with a 95% Student-t
interval over the seeds (``scipy.stats.t``, cut to the metric's range) when there are two or more, else the
single run's bootstrap interval (evaluation's). The target is random selection's final mean: the score the
labels a team would otherwise label at random buy. ``labels_to_reach`` is the first number of labels at which a
strategy's mean reaches it, interpolated linearly between two rounds when it is crossed between them (the
statement says so).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from lmtune.evaluate import metrics

#: The baseline every strategy is compared with.
BASELINE = "random"


def document(exp) -> dict[str, Any]:
    """The whole ``active.json`` of an experiment as it stands (finished rounds and pending ones)."""
    higher = metrics.higher_is_better(exp.metric)
    bounds = metrics.value_range(exp.metric)
    curves = {s: curve([a for a in exp.arms if a["strategy"] == s], bounds) for s in exp.strategies}
    target = _target(curves, exp)
    reach = {s: labels_to_reach(points, target["value"], higher) if target else None for s, points in curves.items()}
    return {"name": exp.recipe.name, **exp.fingerprint, "metric": exp.metric, "system": "finetuned",
            "higher_is_better": higher, "strategies": exp.strategies, "seeds": exp.seeds, "budget": exp.budget,
            "initial": exp.initial, "rounds": exp.rounds, "start": "scratch", "pool_size": len(exp.pool),
            "pool": str(exp.pool.path), "oracle": exp.oracle, "test": exp.recipe.data.test,
            "arms": exp.arms, "curves": curves, "labels_to_reach": reach, "target": target,
            "statement": statement(curves, reach, target, exp.metric, higher), "notes": exp.notes}


def curve(arms: list[dict[str, Any]], bounds: tuple[float, float] = (-math.inf, math.inf)) -> list[dict[str, Any]]:
    """One strategy's points across its arms (one per seed): each round's mean and 95% interval over seeds, kept
    within ``bounds``, the metric's range (with two or three seeds a t-interval easily reaches past an F1 of 1)."""
    by_n: dict[int, list[dict[str, Any]]] = {}
    for arm in arms:
        for entry in arm["rounds"]:
            if entry.get("state") == "finished" and entry.get("value") is not None:
                by_n.setdefault(entry["n_labelled"], []).append(entry)
    points = []
    for n in sorted(by_n):
        entries = by_n[n]
        values = np.array([e["value"] for e in entries], dtype=np.float64)
        mean = float(values.mean())
        if len(values) >= 2:
            sem = float(values.std(ddof=1) / math.sqrt(len(values)))
            low, high = (mean, mean) if sem == 0 else stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
            low, high = max(low, bounds[0]), min(high, bounds[1])
        else:
            low, high = entries[0].get("ci_low"), entries[0].get("ci_high")
        points.append({"n_labelled": n, "mean": round(mean, 6), "ci_low": _round(low), "ci_high": _round(high),
                       "seeds": len(values)})
    return points


def _target(curves: dict[str, list[dict[str, Any]]], exp) -> dict[str, Any] | None:
    """Random selection's final mean, once every seed finished its last round; None before (or without random)."""
    points = curves.get(BASELINE) or []
    final_n = exp.initial + (exp.rounds - 1) * exp.budget
    last = next((p for p in points if p["n_labelled"] == final_n and p["seeds"] == len(exp.seeds)), None)
    return {"strategy": BASELINE, "value": last["mean"], "n_labelled": final_n} if last else None


def labels_to_reach(points: list[dict[str, Any]], target: float, higher: bool = True) -> float | None:
    """The first number of labels at which the curve's mean reaches ``target`` (interpolated between two rounds
    when it crosses between them); None if it never does."""
    def reached(value: float) -> bool:
        return value >= target if higher else value <= target

    for i, point in enumerate(points):
        if not reached(point["mean"]):
            continue
        if i == 0:
            return float(point["n_labelled"])
        before = points[i - 1]
        gap = point["mean"] - before["mean"]
        share = (target - before["mean"]) / gap if gap else 1.0
        return round(before["n_labelled"] + share * (point["n_labelled"] - before["n_labelled"]), 1)
    return None


def statement(curves, reach, target, metric: str, higher: bool) -> str:
    """One or two sentences: how many labels each strategy needed to match random selection, honestly.

    A strategy is compared with the labels random selection itself needed to first reach its final score (on a
    curve that flattened early, fewer than it was given), so a flat curve never reads as a saving.
    """
    if BASELINE not in curves:
        return ("No random arm to compare with: add random to --strategies to learn whether a strategy saves "
                "labels.")
    if target is None:
        return "Random selection's last round is not finished for every seed yet; no comparison so far."
    final_n, base_n = target["n_labelled"], reach.get(BASELINE) or target["n_labelled"]
    said, beat = [], False
    for strategy, points in curves.items():
        if strategy == BASELINE:
            continue
        n = reach.get(strategy)
        if n is None:
            said.append(f"{strategy} did not reach it within {final_n} labels")
        elif n < base_n:
            beat = True
            said.append(f"{strategy} reached it with about {n:g} labels ({100 * (1 - n / base_n):.0f}% fewer"
                        f"{_overlap(points, curves[BASELINE])})")
        elif n == base_n:
            said.append(f"{strategy} reached it with {n:g} labels too (no saving)")
        else:
            said.append(f"{strategy} needed about {n:g} labels (more than random)")
    head = (f"Random selection reached {metric} {target['value']:.4f} with {final_n} labels"
            + (f" (its mean first reached it at about {base_n:g})" if base_n < final_n else "")
            + f", {'higher' if higher else 'lower'} is better")
    text = head + ("; " + "; ".join(said) if said else "") + "."
    if beat:
        text += " Label counts between two rounds are interpolated linearly."
    else:
        text += " No strategy saved labels over random selection in this experiment."
    return text


def _overlap(points: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> str:
    """A caution when the strategy's and random's final intervals overlap: the saving is then not established."""
    mine, theirs = points[-1] if points else None, baseline[-1] if baseline else None
    if not mine or not theirs or None in (mine["ci_low"], mine["ci_high"], theirs["ci_low"], theirs["ci_high"]):
        return ""
    if mine["ci_low"] <= theirs["ci_high"] and theirs["ci_low"] <= mine["ci_high"]:
        return "; but their final 95% intervals overlap, so the difference is not established"
    return ""


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)
