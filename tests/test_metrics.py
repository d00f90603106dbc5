"""Metrics equal their reference libraries on fixed inputs; the registry validates names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from nltk.tokenize import word_tokenize
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from lmtune.data import synonyms
from lmtune.errors import UserError
from lmtune.evaluate import metrics

LABELS = ["negative", "neutral", "positive"]
REFS = ["positive", "negative", "neutral", "positive", "negative", "positive", "neutral"]
PREDS = ["positive", "positive", "neutral", "negative", "negative", "positive", "positive"]

GEN_REFS = ["the cat sat on the mat", "dosage was reduced after two weeks",
            "patients reported mild headaches"]
GEN_PREDS = ["a cat is sitting on the mat", "the dosage was lowered after two weeks",
             "some patients report headaches"]


def test_classification_matches_sklearn():
    result = metrics.classification_metrics(REFS, PREDS, LABELS)
    p, r, f, _ = precision_recall_fscore_support(REFS, PREDS, labels=LABELS, average="macro",
                                                 zero_division=0)
    assert result["accuracy"] == pytest.approx(accuracy_score(REFS, PREDS))
    assert result["precision_macro"] == pytest.approx(p)
    assert result["recall_macro"] == pytest.approx(r)
    assert result["f1_macro"] == pytest.approx(f)
    per = precision_recall_fscore_support(REFS, PREDS, labels=LABELS, average=None, zero_division=0)
    for i, label in enumerate(LABELS):
        assert result["per_class"][label] == pytest.approx(
            {"precision": per[0][i], "recall": per[1][i], "f1": per[2][i], "support": per[3][i]})
    assert result["confusion_matrix"] == confusion_matrix(REFS, PREDS, labels=LABELS).tolist()
    assert result["labels"] == LABELS


def test_confusion_matrix_rows_are_true_labels():
    # Two true "negative" examples both predicted "positive": row negative, column positive.
    result = metrics.classification_metrics(["negative", "negative", "positive"],
                                            ["positive", "positive", "positive"], LABELS)
    assert result["confusion_matrix"] == [[0, 0, 2], [0, 0, 0], [0, 0, 1]]
    assert result["per_class"]["neutral"]["support"] == 0


def test_classification_is_json_plain():
    result = metrics.classification_metrics(REFS, PREDS, LABELS)
    assert type(result["accuracy"]) is float
    assert type(result["per_class"]["positive"]["support"]) is int
    assert all(type(x) is int for row in result["confusion_matrix"] for x in row)


def test_generation_matches_rouge_score_and_sacrebleu():
    result = metrics.generation_metrics(GEN_REFS, GEN_PREDS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for ref, pred in zip(GEN_REFS, GEN_PREDS, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = sum(s[key].fmeasure for s in scores) / len(scores)
        assert result[key] == pytest.approx(expected)
        assert 0.0 <= result[key] <= 1.0
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(GEN_PREDS, [GEN_REFS]).score)


def test_generation_identical_text_is_perfect():
    result = metrics.generation_metrics(GEN_REFS, GEN_REFS)
    assert result["rougeL"] == pytest.approx(1.0)
    assert result["bleu"] == pytest.approx(100.0)


def test_perplexity_of_known_nll():
    assert metrics.perplexity(10 * math.log(4.0), 10) == pytest.approx(4.0)
    assert metrics.perplexity(0.0, 5) == pytest.approx(1.0)
    assert metrics.perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="token"):
        metrics.perplexity(1.0, 0)


def test_task_family_picks_the_metrics():
    flat = metrics.compute_selected("classification", REFS, PREDS, LABELS)
    full = metrics.classification_metrics(REFS, PREDS, LABELS)
    assert {key: value for key, value in flat.items() if "[" not in key} == \
        {key: value for key, value in full.items() if key not in ("per_class", "confusion_matrix", "labels")}
    for task in ("generation", "chat"):
        assert metrics.compute_selected(task, GEN_REFS, GEN_PREDS) == \
            metrics.generation_metrics(GEN_REFS, GEN_PREDS)
    with pytest.raises(ValueError, match="perplexity"):
        metrics.compute_selected("language_modeling", GEN_REFS, GEN_PREDS)
    with pytest.raises(ValueError, match="no prediction/reference metrics for task 'astrology'"):
        metrics.compute_selected("astrology", GEN_REFS, GEN_PREDS)


@pytest.mark.parametrize("call", [
    lambda: metrics.classification_metrics([], [], LABELS),
    lambda: metrics.generation_metrics([], []),
    lambda: metrics.compute_selected("generation", [], []),
])
def test_empty_inputs_raise(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="length"):
        metrics.generation_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="labels"):
        metrics.classification_metrics(REFS, PREDS, [])
    with pytest.raises(ValueError, match="labels"):
        metrics.compute_selected("classification", REFS, PREDS, ["positive", "positive"])


def test_every_primary_metric_has_a_direction():
    for task, metric in metrics.PRIMARY_METRIC.items():
        assert metric in metrics.HIGHER_IS_BETTER, task
    assert metrics.HIGHER_IS_BETTER["f1_macro"] is True
    assert metrics.HIGHER_IS_BETTER["perplexity"] is False
    assert metrics.higher_is_better("val_loss") is False  # unknown keys judged by their name
    assert metrics.higher_is_better("exact_match") is True


def test_best_systems_respects_direction_and_ties():
    assert metrics.best_systems({"a": 0.2, "b": 0.7}, "f1_macro") == ["b"]
    assert metrics.best_systems({"a": 12.0, "b": 30.0}, "perplexity") == ["a"]
    assert metrics.best_systems({"a": 0.5, "b": 0.5, "c": 0.1}, "accuracy") == ["a", "b"]


# --- every metric of the registry against its reference library --------------------------------

# Two-line texts make rougeLsum (sentences = lines) differ from rougeL.
LSUM_REFS = GEN_REFS + ["the dose was reduced.\nthe pain stopped after a week"]
LSUM_PREDS = GEN_PREDS + ["the pain stopped after a week\nthe dose was lowered"]


def test_every_generation_metric_matches_its_library():
    result = metrics.generation_metrics(LSUM_REFS, LSUM_PREDS)
    assert list(result) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "meteor", "exact_match"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for ref, pred in zip(LSUM_REFS, LSUM_PREDS, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert result[key] == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores), abs=1e-12)
    assert result["rougeLsum"] != pytest.approx(result["rougeL"])
    assert result["bleu"] == sacrebleu.corpus_bleu(LSUM_PREDS, [LSUM_REFS]).score
    assert result["chrf"] == sacrebleu.corpus_chrf(LSUM_PREDS, [LSUM_REFS]).score
    reader = synonyms.wordnet()
    meteor = [meteor_score([word_tokenize(r, preserve_line=True)], word_tokenize(p, preserve_line=True),
                           wordnet=reader) for r, p in zip(LSUM_REFS, LSUM_PREDS, strict=True)]
    assert result["meteor"] == pytest.approx(sum(meteor) / len(meteor), abs=1e-12)
    assert result["exact_match"] == 0.0
    assert metrics.generation_metrics(["a b", " yes "], ["a b", "yes"])["exact_match"] == 1.0


def test_meteor_uses_wordnet_synonyms():
    # "pill" matches "tablet" only through WordNet (same synset); "cake" matches nothing.
    def meteor(prediction):
        return metrics.compute_selected("generation", ["i took one tablet daily"], [prediction],
                                        metrics=["meteor"])["meteor"]

    assert meteor("i took one cake daily") < meteor("i took one pill daily") <= meteor("i took one tablet daily")


def test_micro_averages_match_sklearn_with_out_of_label_predictions():
    preds = PREDS[:-1] + ["maybe"]  # not a label: wrong, and nobody's prediction
    result = metrics.classification_metrics(REFS, preds, LABELS)
    p, r, f, _ = precision_recall_fscore_support(REFS, preds, labels=LABELS, average="micro", zero_division=0)
    assert (result["precision_micro"], result["recall_micro"], result["f1_micro"]) == (p, r, f)
    assert result["precision_micro"] != result["recall_micro"]


def test_regression_matches_sklearn():
    y, yhat = [0.0, 0.5, 1.0, 1.0, 0.5], [0.1, 0.4, 0.7, 1.0, 0.9]
    result = metrics.regression_metrics(y, yhat)
    assert result["mse"] == mean_squared_error(y, yhat) and result["mae"] == mean_absolute_error(y, yhat)
    assert result["pearson"] == pearsonr(y, yhat).statistic
    assert metrics.regression_metrics(y, [0.5] * 5)["pearson"] is None


def test_registry_selects_and_validates_names():
    assert metrics.known_metrics("chat") == metrics.known_metrics("generation")
    assert metrics.select_metrics("classification", "auto") == metrics.known_metrics("classification")
    assert metrics.select_metrics("generation", "bleu, rougeL,bleu") == ["bleu", "rougeL"]
    with pytest.raises(UserError, match="unknown metric 'blue'.*bleu") as error:
        metrics.select_metrics("generation", ["blue"])
    assert error.value.source == "eval.metrics"
    with pytest.raises(UserError, match="'accuracy' is a classification metric"):
        metrics.select_metrics("generation", ["accuracy"], source="--metrics")
    for name, info in metrics.METRICS.items():
        assert name == "per_class" or name in metrics.HIGHER_IS_BETTER, name
        assert info.scorer is None or callable(info.scorer)


def test_registry_has_one_entry_per_key_and_one_primary_metric_per_task():
    names = [info.name for info in metrics.REGISTRY]
    assert len(names) == len(set(names))
    primaries = [task for info in metrics.REGISTRY for task in info.primary_for]
    assert len(primaries) == len(set(primaries)) and set(metrics.TASK_FAMILY) <= set(primaries)
    for name, info in metrics.METRICS.items():
        assert info.scorer is not None or name == "perplexity", name


def test_compute_selected_gives_the_keys_asked_for():
    result = metrics.compute_selected("classification", REFS, PREDS, LABELS, ["f1_macro", "per_class"])
    assert list(result) == ["f1_macro"] + [f"{m}[{label}]" for label in LABELS for m in ("precision", "recall", "f1")]
    full = metrics.classification_metrics(REFS, PREDS, LABELS)
    assert result["f1[neutral]"] == full["per_class"]["neutral"]["f1"]
    assert metrics.compute_selected("generation", GEN_REFS, GEN_PREDS, metrics="bleu") == {
        "bleu": sacrebleu.corpus_bleu(GEN_PREDS, [GEN_REFS]).score}


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


def test_macro_averages_over_the_task_labels_else_the_labels_seen():
    # "mixed" is a task label nobody uses: with the task's labels it counts (F1 0), as sklearn's labels=.
    task_labels = [*LABELS, "mixed"]
    known = metrics.classification_metrics(REFS, PREDS, task_labels)
    f = precision_recall_fscore_support(REFS, PREDS, labels=task_labels, average="macro", zero_division=0)[2]
    assert known["f1_macro"] == f and known["labels"] == task_labels
    # Without a label set: the union of the labels in references and predictions, sorted.
    preds = PREDS[:-1] + ["maybe"]
    seen = metrics.classification_metrics(REFS, preds, None)
    assert seen["labels"] == metrics.averaged_labels(REFS, preds) == ["maybe", *LABELS]
    assert seen["f1_macro"] == precision_recall_fscore_support(REFS, preds, average="macro", zero_division=0)[2]
    assert metrics.compute_selected("classification", REFS, preds, metrics=["f1_macro"])["f1_macro"] == seen["f1_macro"]
