"""`lmtune score` end to end: numbers equal rouge-score, sacrebleu and scikit-learn; bad lines exit 2."""

from __future__ import annotations

import json

import pytest
import sacrebleu
from conftest import write_jsonl
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, mean_squared_error, precision_recall_fscore_support
from typer.testing import CliRunner

from lmtune.cli import app
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.evaluate.score import infer_task, score_file

REFS = ["the dose was reduced after two weeks", "patients reported mild headaches",
        "no side effects at all", "it stopped working after a month"]
PREDS = ["the dose was lowered after two weeks", "some patients report headaches",
         "no side effects", "it worked for a month then stopped"]
LABELS = ["positive", "negative", "neutral", "positive", "negative", "positive", "neutral", "negative"]
LABEL_PREDS = ["positive", "positive", "neutral", "negative", "negative", "positive", "positive", "negative"]


def _score(*args):
    result = CliRunner().invoke(app, ["score", *map(str, args), "--resamples", "200"])
    return result.exit_code, result.stdout, result.stderr


def _pairs(tmp_path, refs, preds, **extra):
    return write_jsonl(tmp_path / "predictions.jsonl",
                       [{"input": f"x{i}", "reference": r, "prediction": p, **extra} for i, (r, p) in
                        enumerate(zip(refs, preds, strict=True))])


def test_generation_scores_equal_rouge_score_and_sacrebleu(tmp_path):
    code, stdout, stderr = _score(_pairs(tmp_path, REFS, PREDS), "--metrics", "rouge1,rouge2,rougeL,bleu,chrf")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert list(result) == ["rouge1", "rouge2", "rougeL", "bleu", "chrf"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for r, p in zip(REFS, PREDS, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL"):
        assert result[key]["value"] == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores), abs=1e-12)
    assert result["bleu"]["value"] == sacrebleu.corpus_bleu(PREDS, [REFS]).score
    assert result["chrf"]["value"] == sacrebleu.corpus_chrf(PREDS, [REFS]).score
    for interval in result.values():
        assert set(interval) == {"value", "ci_low", "ci_high"}
        assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]
    assert "as generation (inferred" in stderr


def test_classification_is_inferred_and_equals_sklearn(tmp_path):
    code, stdout, stderr = _score(_pairs(tmp_path, LABELS, LABEL_PREDS))
    assert code == 0, stderr
    result = json.loads(stdout)
    labels = sorted(set(LABELS))
    assert result["accuracy"]["value"] == accuracy_score(LABELS, LABEL_PREDS)
    for average in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(LABELS, LABEL_PREDS, labels=labels, average=average,
                                                     zero_division=0)
        assert [result[f"{m}_{average}"]["value"] for m in ("precision", "recall", "f1")] == [p, r, f]
    per = precision_recall_fscore_support(LABELS, LABEL_PREDS, labels=labels, average=None, zero_division=0)
    assert result["f1[neutral]"]["value"] == per[2][labels.index("neutral")]
    assert "as classification" in stderr


def test_regression_is_inferred_from_numbers(tmp_path):
    refs, preds = [1, 2, 3, 4, 5], ["1.5", 2, 2.5, 4, 6]
    code, stdout, _ = _score(_pairs(tmp_path, refs, preds), "--metrics", "mse")
    assert code == 0
    assert json.loads(stdout)["mse"]["value"] == mean_squared_error(refs, [float(p) for p in preds])


def test_an_explicit_task_overrides_the_inferred_one(tmp_path):
    refs, preds = [1, 2, 3, 4, 5], ["1.5", 2, 2.5, 4, 6]
    code, stdout, _ = _score(_pairs(tmp_path, refs, preds), "--task", "generation", "--metrics", "exact_match")
    assert code == 0 and json.loads(stdout)["exact_match"]["value"] == 0.4


def test_broken_line_exits_2_naming_file_and_line(tmp_path):
    path = _pairs(tmp_path, REFS, PREDS)
    path.write_text(path.read_text() + '{"reference": "a", "prediction": \n')
    code, stdout, stderr = _score(path)
    assert code == 2 and stdout == ""
    assert stderr.startswith(f"error: {path}:5: not valid JSON") and "Traceback" not in stderr


@pytest.mark.parametrize("line,message", [
    ({"reference": "a"}, "no 'prediction' field"),
    ({"reference": "a", "prediction": None}, "'prediction' is null"),
    ({"reference": ["a"], "prediction": "a"}, "'reference' is an array"),
])
def test_bad_record_exits_2_naming_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"reference": "b", "prediction": "b"}, line])
    code, _, stderr = _score(path)
    assert code == 2 and stderr.startswith(f"error: {path}:2: {message}") and len(stderr.splitlines()) == 1


@pytest.mark.parametrize("args,where", [
    (["--metrics", "blue"], "--metrics: unknown metric 'blue'"),
    (["--metrics", "accuracy"], "--metrics: 'accuracy' is a classification metric"),
    (["--task", "language_modeling"], "--task: unknown task"),
])
def test_bad_options_exit_2(tmp_path, args, where):
    code, _, stderr = _score(_pairs(tmp_path, REFS, PREDS), *args)
    assert code == 2 and stderr.startswith(f"error: {where}")


def test_missing_file_exits_2(tmp_path):
    code, _, stderr = _score(tmp_path / "nope.jsonl")
    assert code == 2 and "no such data file" in stderr


def test_task_inference_rule():
    assert infer_task([1, 2.5, "3"], [1, 2, 3]) == "regression"
    assert infer_task(LABELS, LABEL_PREDS) == "classification"
    assert infer_task(LABELS[:3], LABEL_PREDS[:3]) == "generation"  # every label once: no evidence of a label set
    assert infer_task(REFS * 5, PREDS * 5) == "generation"  # repeated, but sentences are not labels
    assert infer_task(["1", "2"] * 4, ["1", "x"] * 4) == "classification"


@pytest.mark.parametrize("given, keys", [
    ("rouge", ["rouge1", "rouge2", "rougeL", "rougeLsum"]),
    ("rouge,bleu,rougeL", ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]),
    ("BLEU,RougeL", ["bleu", "rougeL"]),
])
def test_generation_metric_families_and_any_case(tmp_path, given, keys):
    code, stdout, stderr = _score(_pairs(tmp_path, REFS, PREDS), "--metrics", given)
    assert code == 0, stderr
    assert list(json.loads(stdout)) == keys


@pytest.mark.parametrize("given, keys", [
    ("f1", ["f1_macro"]),
    ("precision,recall,f1", ["precision_macro", "recall_macro", "f1_macro"]),
    ("f1,f1_micro", ["f1_macro", "f1_micro"]),
])
def test_classification_metric_families(tmp_path, given, keys):
    code, stdout, stderr = _score(_pairs(tmp_path, LABELS, LABEL_PREDS), "--metrics", given)
    assert code == 0, stderr
    assert list(json.loads(stdout)) == keys


def test_unknown_metric_still_lists_the_valid_names(tmp_path):
    code, _, stderr = _score(_pairs(tmp_path, REFS, PREDS), "--metrics", "rogue")
    assert code == 2 and stderr.startswith("error: --metrics: unknown metric 'rogue'") and "rougeL" in stderr


def test_missing_file_does_not_mention_a_recipe(tmp_path):
    code, _, stderr = _score(tmp_path / "nope.jsonl")
    assert code == 2 and "recipe" not in stderr


# 30 predictions of a 3-label task whose test references hold only two labels; "neutral" is predicted.
TASK_LABELS = ["negative", "neutral", "positive"]
REFS30 = ["positive"] * 15 + ["negative"] * 15
PREDS30 = (["positive"] * 10 + ["neutral"] * 3 + ["negative"] * 2
           + ["negative"] * 11 + ["neutral"] * 2 + ["positive"] * 2)


def test_score_and_train_agree_on_macro_f1_and_name_its_labels(tmp_path):
    train = metrics.classification_metrics(REFS30, PREDS30, TASK_LABELS)  # what lmtune train reports
    code, stdout, stderr = _score(_pairs(tmp_path, REFS30, PREDS30), "--metrics", "f1,precision,recall")
    assert code == 0, stderr
    result = json.loads(stdout)
    for key in ("f1_macro", "precision_macro", "recall_macro"):
        assert result[key]["value"] == pytest.approx(train[key], abs=1e-12), key
        assert result[key]["averaged_over"] == train["labels"] == TASK_LABELS


def test_score_labels_option_gives_the_task_label_set(tmp_path):
    labels = [*TASK_LABELS, "mixed"]  # a task label that nobody predicts and no reference has
    path = _pairs(tmp_path, REFS30, PREDS30)
    train = metrics.classification_metrics(REFS30, PREDS30, labels)
    result = score_file(path, "f1_macro,per_class", labels="negative, neutral,positive,mixed", n_resamples=100)
    assert result["task"] == "classification" and result["labels"] == labels
    assert result["metrics"]["f1_macro"]["value"] == pytest.approx(train["f1_macro"], abs=1e-12)
    assert result["metrics"]["f1_macro"]["averaged_over"] == labels and "f1[mixed]" in result["metrics"]
    with pytest.raises(UserError, match="positive"):
        score_file(path, labels="negative,neutral")
    with pytest.raises(UserError, match="--labels"):
        score_file(path, task="regression", labels="a,b")


def test_cli_labels_option_states_the_averaging_set(tmp_path):
    labels = [*TASK_LABELS, "mixed"]
    path = _pairs(tmp_path, REFS30, PREDS30)
    code, out, err = _score(path, "--metrics", "f1", "--labels", ",".join(labels))
    assert code == 0, err
    assert json.loads(out)["f1_macro"]["averaged_over"] == labels
    code, out, err = _score(path, "--task", "regression", "--labels", "a,b")
    assert code == 2 and err.startswith("error: --labels") and "Traceback" not in out + err
