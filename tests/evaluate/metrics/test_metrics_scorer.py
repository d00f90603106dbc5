"""Per-example rows (``lmtune.evaluate.metrics.scorer``): what bootstrap recomputes per resample equals the
reference library run on the resampled examples."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from metric_cases import LABELS, LSUM_PREDS, LSUM_REFS, PREDS, REFS
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, precision_recall_fscore_support

from lmtune.evaluate import metrics


def _library(task, refs, preds, labels):
    """Every key straight from the reference libraries, for the resampling check below."""
    if task == "classification":
        out = {"accuracy": accuracy_score(refs, preds)}
        for average in ("macro", "micro"):
            p, r, f, _ = precision_recall_fscore_support(refs, preds, labels=labels, average=average, zero_division=0)
            out |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
        per = precision_recall_fscore_support(refs, preds, labels=labels, average=None, zero_division=0)
        for i, label in enumerate(labels):
            out |= {f"precision[{label}]": per[0][i], f"recall[{label}]": per[1][i], f"f1[{label}]": per[2][i]}
        return out
    if task == "regression":
        return {"mse": mean_squared_error(refs, preds), "mae": mean_absolute_error(refs, preds),
                "pearson": pearsonr(refs, preds).statistic}
    return {"bleu": sacrebleu.corpus_bleu(preds, [refs]).score, "chrf": sacrebleu.corpus_chrf(preds, [refs]).score}


@pytest.mark.parametrize("task,refs,preds,labels", [
    ("classification", REFS * 3, PREDS[:-1] * 3 + ["maybe"] * 3, LABELS),
    ("classification", REFS * 2 + ["unlisted"] * 3, PREDS * 2 + ["positive", "unlisted", "negative"], LABELS),
    ("regression", [0.0, 0.5, 1.0, 1.0, 0.5, 0.2], [0.1, 0.4, 0.7, 1.0, 0.9, 0.2], None),
    ("generation", LSUM_REFS * 2, LSUM_PREDS[::-1] * 2, None),
])
def test_resampled_rows_recompute_the_library_metric(task, refs, preds, labels):
    """What bootstrap recomputes per resample equals the library run on the resampled examples."""
    names = ["mse", "mae", "pearson"] if task == "regression" else ["bleu", "chrf"] if task == "generation" else None
    parts = metrics.scored(task, refs, preds, labels, names)
    samples = np.random.default_rng(0).integers(0, len(refs), size=(5, len(refs)))
    for part in parts:
        assert part.reduce(part.rows[None])[:, 0] == pytest.approx(list(part.values.values()), abs=1e-12)
        recomputed = part.reduce(part.rows[samples])
        for r, idx in enumerate(samples):
            expected = _library(task, [refs[i] for i in idx], [preds[i] for i in idx], labels)
            for k, key in enumerate(part.values):
                assert recomputed[k, r] == pytest.approx(expected[key], abs=1e-9), (key, idx)
