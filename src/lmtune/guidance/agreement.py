"""How far annotators agree, on the records of a classification queue that two or more of them labelled.

* **Cohen's kappa** per pair of annotators, on the records both labelled: scikit-learn's ``cohen_kappa_score``.
* **Fleiss' kappa** when three or more annotators labelled the multiply-labelled records: agreement beyond chance
  among any raters, each record rated by two or more (not necessarily the same ones: with ``overlap``, each
  record's two annotators are whoever got it). statsmodels (which has ``fleiss_kappa``) is not a dependency of
  lmtune, so the short formula is written out in :func:`fleiss_kappa`; a record rated ``n_i`` times contributes
  its pairwise agreement ``(sum_j n_ij^2 - n_i) / (n_i (n_i - 1))``, which is Fleiss' own when every ``n_i`` is
  equal.

Each kappa has a 95% percentile bootstrap interval over records (1000 resamples, seed 0). The project's
:mod:`lmtune.evaluate.bootstrap` resamples the metrics of its registry and gives no interval as soon as one
resample is undefined; a kappa is undefined on every resample where one label is all there is (frequent on a
few records), so here those resamples are left out, and no interval is given when they are most of them.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

from lmtune.guidance import labelling

RESAMPLES = 1000
SEED = 0
_CHUNK = 100  # resamples evaluated at once (bounds memory on large queues)
FEW = "fewer than 2 records in common: no kappa"
MIN_INTERVAL = 10  # a bootstrap over fewer records gives degenerate intervals ([0, 0] over 2)
NO_INTERVAL = f"no interval below {MIN_INTERVAL} records in common"


def cohen_rows(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Cohen's kappa of each row of two ``(..., n)`` arrays of label codes ``0..k-1``; NaN where undefined."""
    observed = (a == b).mean(-1)
    chance = sum((a == j).mean(-1) * (b == j).mean(-1) for j in range(k))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isclose(chance, 1.0), np.nan, (observed - chance) / (1 - chance))


def fleiss_kappa(counts: np.ndarray) -> np.ndarray:
    """Fleiss' kappa of ``(..., records, labels)`` counts (how many raters gave each record each label).

    ``P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))``, ``P = mean_i P_i``, ``p_j = sum_i n_ij / sum_i n_i``,
    ``P_e = sum_j p_j^2``, kappa ``= (P - P_e) / (1 - P_e)``; NaN where ``P_e = 1`` (one label only).
    """
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(-1)
    agree = ((counts**2).sum(-1) - n) / (n * (n - 1))
    share = counts.sum(-2) / n.sum(-1)[..., None]
    chance = (share**2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isclose(chance, 1.0), np.nan, (agree.mean(-1) - chance) / (1 - chance))


def interval(statistic: Callable[[np.ndarray], np.ndarray], n: int) -> tuple[float | None, float | None]:
    """The 95% percentile bootstrap interval of ``statistic(indices (resamples, n))`` over ``n`` records; None
    below :data:`MIN_INTERVAL` records or when most resamples are undefined."""
    if n < MIN_INTERVAL:
        return None, None
    draws = np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))
    values = np.concatenate([statistic(draws[i:i + _CHUNK]) for i in range(0, RESAMPLES, _CHUNK)])
    values = values[np.isfinite(values)]
    if len(values) < RESAMPLES / 2:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def cohen(labels: list[str], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Cohen's kappa of two annotators' labels on their common records, with its interval and raw agreement."""
    n = len(pairs)
    row: dict[str, Any] = {"records": n, "raw_agreement": None, "kappa": None, "ci_low": None, "ci_high": None,
                           "note": None}
    if n:
        row["raw_agreement"] = sum(x == y for x, y in pairs) / n
    if n < 2:
        row["note"] = FEW
        return row
    codes = {label: i for i, label in enumerate(labels)}
    a = np.array([codes[x] for x, _ in pairs])
    b = np.array([codes[y] for _, y in pairs])
    with warnings.catch_warnings():  # one label on both sides: sklearn warns and gives NaN, reported below
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(a, b, labels=list(range(len(labels)))))
    if not np.isfinite(kappa):
        row["note"] = "undefined: one and the same label on every common record"
        return row
    row["kappa"] = kappa
    row["ci_low"], row["ci_high"] = interval(lambda idx: cohen_rows(a[idx], b[idx], len(labels)), n)
    if n < MIN_INTERVAL:
        row["note"] = NO_INTERVAL
    return row


def fleiss(labels: list[str], records: list[dict[str, str]]) -> dict[str, Any]:
    """Fleiss' kappa over records each labelled by two or more annotators, with its interval."""
    codes = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(records), len(labels)))
    for i, given in enumerate(records):
        for label in given.values():
            counts[i, codes[label]] += 1
    row: dict[str, Any] = {"records": len(records), "kappa": None, "ci_low": None, "ci_high": None, "note": None}
    if len(records) < 2:
        row["note"] = "fewer than 2 records labelled by several annotators: no kappa"
        return row
    kappa = float(fleiss_kappa(counts))
    if not np.isfinite(kappa):
        row["note"] = "undefined: one and the same label on every record"
        return row
    row["kappa"] = kappa
    row["ci_low"], row["ci_high"] = interval(lambda idx: fleiss_kappa(counts[idx]), len(records))
    return row


def of_queue(conn: sqlite3.Connection, queue: str) -> dict[str, Any]:
    """A queue's agreement: Cohen's kappa per pair that shares records, Fleiss' kappa with three or more
    annotators (None otherwise), on the records with two or more live labels.

    Raises:
        QueueNotFound: no such queue.
    """
    found = labelling.find(conn, queue)
    if not found.settings.labelled:
        return {"applies": False, "note": "answers are free text: agreement is computed for classification queues",
                "records": 0, "annotators": [], "pairs": [], "fleiss": None}
    given: dict[int, dict[str, str]] = {}
    for row in conn.execute("SELECT idx, annotator, label FROM label_answers WHERE queue = ? AND state = 'live' AND "
                            "label IS NOT NULL ORDER BY id", (queue,)):
        given.setdefault(row["idx"], {})[row["annotator"]] = row["label"]
    labels = found.settings.labels
    shared = [answers for answers in given.values() if len(answers) >= 2]
    names = sorted({name for answers in shared for name in answers})
    pairs = []
    for a, b in combinations(names, 2):
        common = [(answers[a], answers[b]) for answers in shared if a in answers and b in answers]
        if common:
            pairs.append({"a": a, "b": b, **cohen(labels, common)})
    note = None if shared else "no record has labels from two annotators yet (set an overlap to measure agreement)"
    return {"applies": True, "note": note, "records": len(shared), "annotators": names, "pairs": pairs,
            "fleiss": fleiss(labels, shared) if len(names) >= 3 else None}
