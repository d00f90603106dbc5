"""What a scorer is: one library pass over a system's outputs, and what it hands bootstrap.

A scorer takes ``(references, predictions, labels)`` and returns a :class:`Scored`: every value
it computes on all examples, as the reference library gives it, plus the per-example rows that
:mod:`lmtune.evaluate.bootstrap` resamples for confidence intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scored:
    """One scorer's values on a system's outputs, and the per-example rows bootstrap resamples.

    Attributes:
        values: metric key -> value on all examples, as the reference library computes it.
        rows: ``(n, d)`` array, one row per example (per-example scores, or sufficient
            statistics such as sacrebleu's n-gram counts).
        reduce: samples of rows ``(R, m, d)`` -> ``(len(values), R)``: every key's value on
            each sample. On all rows it gives ``values`` (up to float rounding).
    """

    values: dict[str, float | None]
    rows: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray]

    def subset(self, keys: Sequence[str]) -> Scored:
        """The same scorer restricted to ``keys`` (in that order)."""
        index = [list(self.values).index(key) for key in keys]
        return Scored({key: self.values[key] for key in keys}, self.rows, lambda s: self.reduce(s)[index])


#: ``(references, predictions, labels) -> Scored``; ``labels`` is the classification label set, else None.
Scorer = Callable[[Sequence[Any], Sequence[Any], list[str] | None], Scored]


def mean_rows(values: dict[str, float | None], rows: np.ndarray) -> Scored:
    """A scorer's result whose every key is the mean of one column of per-example scores."""
    return Scored(values, rows, lambda samples: samples.mean(axis=1).T)


def check_pairs(references: Sequence[Any], predictions: Sequence[Any]) -> None:
    """Raise ValueError unless references and predictions are non-empty and aligned one to one."""
    if len(references) == 0 or len(predictions) == 0:
        raise ValueError(
            f"cannot compute metrics on empty inputs "
            f"({len(references)} references, {len(predictions)} predictions)"
        )
    if len(references) != len(predictions):
        raise ValueError(
            f"references and predictions differ in length "
            f"({len(references)} vs {len(predictions)}); they must be aligned one to one"
        )
