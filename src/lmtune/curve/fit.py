"""The learning curve's fit: a saturating power law, what doubling the data adds, and where the curve flattens.

The form is ``y = a - b * n^-c`` for a metric where higher is better (``a + b * n^-c`` where lower is), with
``b >= 0``, ``c`` in (0, 2] and ``a`` inside the metric's range: the metric approaches ``a`` as the data grows, and
each doubling adds less than the one before. It is fitted with SciPy's ``curve_fit``, each point weighted by the
width of its bootstrap interval, every repeat a point of its own.

The interval of the doubling gain is a parametric bootstrap: each point's value is drawn again from a normal with
the standard deviation its 95% interval implies (``(ci_high - ci_low) / 3.92``), the law is fitted again, and the
2.5th and 97.5th percentiles of the refits' gains are the interval. Draws whose fit does not converge are left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from lmtune.evaluate import metrics

#: Doubling adds less than this share of the metric's scale (0.01 of macro-F1): the curve has flattened.
FLATTEN_SHARE = 0.01
DRAWS = 300
Z95_WIDTH = 3.92  # a normal's 95% interval is 3.92 standard deviations wide
MIN_SIZES = 3  # three parameters: fewer distinct sizes cannot pin them down
NEVER = 1e9  # a curve that flattens beyond this many examples is said not to flatten
# Metrics whose range is not 0..1: every other higher-is-better metric is a share or a mean F-measure.
STARTS = (0.2, 0.5, 1.0)  # starting exponents c; the best of their fits is kept


@dataclass(frozen=True)
class Measured:
    """One finished point: ``n`` training examples gave ``value``, with its 95% interval (None without one)."""

    n: int
    value: float
    ci_low: float | None = None
    ci_high: float | None = None


def law(n, a: float, b: float, c: float, sign: float = 1.0):
    """The saturating power law at ``n``: ``a - sign * b * n^-c`` (sign -1 for lower-is-better metrics)."""
    return a - sign * b * np.power(np.asarray(n, dtype=float), -c)


def gain(a: float, b: float, c: float, n: float, sign: float = 1.0) -> float:
    """What doubling ``n`` changes the fitted metric by: ``y(2n) - y(n)``."""
    return float(law(2 * n, a, b, c, sign) - law(n, a, b, c, sign))


def fit(points: Sequence[Measured], metric: str, higher_is_better: bool = True, seed: int = 0,
        draws: int = DRAWS) -> tuple[dict | None, str]:
    """Fit the law to the finished points; return the fit (None when there is none) and the sentence that says it.

    Args:
        points: every finished point, repeats as separate points.
        metric: the metric's key (its range bounds the asymptote; the sentence names it).
        higher_is_better: the metric's direction; it picks the law's sign.
        seed: seeds the bootstrap draws.
        draws: bootstrap refits of the doubling gain's interval.
    """
    sizes = sorted({p.n for p in points})
    if len(sizes) < MIN_SIZES:
        return None, (f"No fit yet: a saturating power law has three parameters and needs points at {MIN_SIZES} or "
                      f"more training-set sizes ({len(sizes)} finished so far).")
    sign = 1.0 if higher_is_better else -1.0
    low, high = metrics.value_range(metric)  # the asymptote ``a`` lies in the metric's own range
    n = np.array([p.n for p in points], dtype=float)
    y = np.array([p.value for p in points], dtype=float)
    sd = _spreads(points, _scale(low, high, y))
    params = _fit_once(n, y, sd, sign, (low, high), None)
    if params is None:
        return None, "No fit: the saturating power law did not converge on these points."
    a, b, c = params
    n_max = int(n.max())
    threshold = FLATTEN_SHARE * _scale(low, high, y)
    interval = _bootstrap(n, y, sd, sign, (low, high), params, n_max, seed, draws) if sd is not None else None
    found = {"form": "a - b * n^-c" if higher_is_better else "a + b * n^-c", "a": a, "b": b, "c": c,
             "at_n": n_max, "doubling_gain": gain(a, b, c, n_max, sign), "doubling_ci": interval,
             "flattens_at": flattens_at(b, c, threshold), "flatten_threshold": threshold,
             "bootstrap_draws": draws if sd is not None else 0}
    found["statement"] = statement(found, metric, higher_is_better)
    return found, found["statement"]


def _scale(low: float, high: float, y: np.ndarray) -> float:
    """The metric's scale: its range where bounded, else the largest value seen (an error or a perplexity)."""
    return high - low if math.isfinite(high - low) else max(float(np.abs(y).max()), 1e-12)


def _spreads(points: Sequence[Measured], scale: float) -> np.ndarray | None:
    """Each point's standard deviation from its 95% interval; None when a point has no interval (no bootstrap)."""
    if any(p.ci_low is None or p.ci_high is None for p in points):
        return None
    sd = np.array([(p.ci_high - p.ci_low) / Z95_WIDTH for p in points], dtype=float)
    return np.maximum(sd, 1e-3 * scale)  # a point scored perfectly has a zero-width interval, not infinite weight


def _fit_once(n: np.ndarray, y: np.ndarray, sd: np.ndarray | None, sign: float, bounds: tuple[float, float],
              start: Sequence[float] | None) -> tuple[float, float, float] | None:
    """The least-squares parameters (a, b, c), the best of a few starts; None when no start converged."""
    low, high = bounds
    margin = 1e-6 * (high - low if math.isfinite(high - low) else 1.0)
    edge = y.max() if sign > 0 else y.min()
    a0 = float(np.clip(edge + sign * 0.01 * (abs(edge) + 1e-3), low + margin, high - margin))
    smallest = y[np.argmin(n)]
    starts = [tuple(start)] if start is not None else [
        (a0, max(abs(a0 - smallest) * n.min() ** c0, 1e-6), c0) for c0 in STARTS]
    best, best_cost = None, math.inf
    for p0 in starts:
        p0 = (float(np.clip(p0[0], low + margin, high - margin)), max(p0[1], 1e-9), float(np.clip(p0[2], 1e-3, 2.0)))
        try:
            with warnings.catch_warnings():  # a covariance that cannot be estimated is not used here
                warnings.simplefilter("ignore", OptimizeWarning)
                params, _ = curve_fit(lambda x, a, b, c: law(x, a, b, c, sign), n, y, p0=p0, sigma=sd,
                                      bounds=([low, 0.0, 1e-3], [high, np.inf, 2.0]), maxfev=5000)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        residual = (law(n, *params, sign) - y) / (sd if sd is not None else 1.0)
        cost = float(np.sum(residual ** 2))
        if np.all(np.isfinite(params)) and cost < best_cost:
            best, best_cost = tuple(float(v) for v in params), cost
    return best


def _bootstrap(n, y, sd, sign, bounds, params, n_max: int, seed: int, draws: int) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the doubling gain over refits to redrawn points."""
    rng = np.random.default_rng(seed)
    low, high = bounds
    gains = []
    for _ in range(draws):
        redrawn = np.clip(y + rng.normal(0.0, sd), low, high)
        refit = _fit_once(n, redrawn, sd, sign, bounds, params)
        if refit is not None:
            gains.append(gain(*refit, n_max, sign))
    if len(gains) < 10:
        return None
    return [float(v) for v in np.percentile(gains, [2.5, 97.5])]


def flattens_at(b: float, c: float, threshold: float) -> int | None:
    """The smallest n where doubling changes the fitted metric by less than ``threshold``; None beyond 10^9.

    The doubling gain at n is ``b * n^-c * (1 - 2^-c)``, which falls with n, so solving it for ``threshold``
    gives the answer directly.
    """
    at_one = b * (1.0 - 2.0 ** -c)
    if at_one < threshold:
        return 1
    n = (at_one / threshold) ** (1.0 / c)
    return int(math.ceil(n)) if n <= NEVER else None


def statement(found: dict, metric: str, higher_is_better: bool = True) -> str:
    """One sentence a person reads: what doubling the data adds, with its interval, and where the curve flattens."""
    n_max, change, interval = found["at_n"], found["doubling_gain"], found["doubling_ci"]
    verb = "add" if higher_is_better else "lower"
    amount = change if higher_is_better else -change
    text = f"Doubling the {n_max:,} training examples is expected to {verb} {_num(amount)} {metric}"
    if interval is None:
        text += " (no interval: the points have no bootstrap intervals; set eval.bootstrap)"
    else:
        lo, hi = sorted(v if higher_is_better else -v for v in interval)
        text += f" [{_num(lo)}, {_num(hi)}]"
        if round(lo, 3) <= 0.0:
            text += ", an interval that reaches 0: these points cannot rule out that more data adds nothing"
    threshold, where = f"{found['flatten_threshold']:g}", found["flattens_at"]
    if where is None:
        text += f"; the fitted curve does not flatten (doubling changes it by < {threshold}) within 10^9 examples"
    elif where == 1:
        text += f"; the fitted curve is flat: doubling changes it by < {threshold} at any size"
    elif where <= n_max:
        text += (f"; the curve has already flattened (doubling changes it by < {threshold}) from about "
                 f"{_about(where):,} examples")
    else:
        text += (f"; the curve flattens (doubling changes it by < {threshold}) beyond the data, at about "
                 f"{_about(where):,} examples")
    return text + "."


def _num(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"


def _about(n: int) -> int:
    """``n`` to two significant figures, as "about" promises (2,437 -> 2,400)."""
    if n < 100:
        return n
    digits = int(math.floor(math.log10(n))) - 1
    return int(round(n, -digits))
