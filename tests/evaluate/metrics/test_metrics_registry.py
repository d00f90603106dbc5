"""The metric registry (``lmtune.evaluate.metrics.registry``): which metrics each task family computes, their
directions, the primary metric, and names validated as a recipe gives them."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from metric_cases import GEN_PREDS, GEN_REFS, LABELS, PREDS, REFS

from lmtune.errors import UserError
from lmtune.evaluate import metrics


def test_perplexity_of_known_nll():
    assert metrics.perplexity(10 * math.log(4.0), 10) == pytest.approx(4.0)
    assert metrics.perplexity(0.0, 5) == pytest.approx(1.0)
    assert metrics.perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="token"):
        metrics.perplexity(1.0, 0)


def test_classification_family_gives_the_flat_classification_metrics():
    flat = metrics.compute_selected("classification", REFS, PREDS, LABELS)
    full = metrics.classification_metrics(REFS, PREDS, LABELS)
    assert {key: value for key, value in flat.items() if "[" not in key} == \
        {key: value for key, value in full.items() if key not in ("per_class", "confusion_matrix", "labels")}


def test_generation_and_chat_families_give_the_generation_metrics():
    for task in ("generation", "chat"):
        assert metrics.compute_selected(task, GEN_REFS, GEN_PREDS) == \
            metrics.generation_metrics(GEN_REFS, GEN_PREDS)


def test_language_modeling_has_no_prediction_metrics():
    with pytest.raises(ValueError, match="perplexity"):
        metrics.compute_selected("language_modeling", GEN_REFS, GEN_PREDS)


def test_unknown_task_family_is_refused():
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


def test_references_and_predictions_of_different_lengths_raise():
    with pytest.raises(ValueError, match="length"):
        metrics.generation_metrics(["a", "b"], ["a"])


def test_an_empty_label_set_raises():
    with pytest.raises(ValueError, match="labels"):
        metrics.classification_metrics(REFS, PREDS, [])


def test_a_label_set_with_repeats_raises():
    with pytest.raises(ValueError, match="labels"):
        metrics.compute_selected("classification", REFS, PREDS, ["positive", "positive"])


def test_every_primary_metric_has_a_direction():
    for task, metric in metrics.PRIMARY_METRIC.items():
        assert metric in metrics.HIGHER_IS_BETTER, task
    assert metrics.HIGHER_IS_BETTER["f1_macro"] is True
    assert metrics.HIGHER_IS_BETTER["perplexity"] is False


def test_unknown_keys_are_judged_by_their_name():
    assert metrics.higher_is_better("val_loss") is False  # unknown keys judged by their name
    assert metrics.higher_is_better("exact_match") is True


def test_best_systems_respects_direction_and_ties():
    assert metrics.best_systems({"a": 0.2, "b": 0.7}, "f1_macro") == ["b"]
    assert metrics.best_systems({"a": 12.0, "b": 30.0}, "perplexity") == ["a"]
    assert metrics.best_systems({"a": 0.5, "b": 0.5, "c": 0.1}, "accuracy") == ["a", "b"]


def test_registry_selects_names_per_task():
    assert metrics.known_metrics("chat") == metrics.known_metrics("generation")
    assert metrics.select_metrics("classification", "auto") == metrics.known_metrics("classification")
    assert metrics.select_metrics("generation", "bleu, rougeL,bleu") == ["bleu", "rougeL"]


def test_unknown_metric_lists_the_valid_names_and_its_key():
    with pytest.raises(UserError, match="unknown metric 'blue'.*bleu") as error:
        metrics.select_metrics("generation", ["blue"])
    assert error.value.source == "eval.metrics"


def test_metric_of_another_task_is_named_as_such():
    with pytest.raises(UserError, match="'accuracy' is a classification metric"):
        metrics.select_metrics("generation", ["accuracy"], source="--metrics")


def test_every_registered_metric_has_a_direction_and_a_callable_scorer():
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
