"""Calibration on planted logits: the temperature fit recovers a known temperature, ECE and the reliability bins
match hand-computed values, and ``lmtune score`` reports the ECE of a file that carries label scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from lmtune.cli import app
from lmtune.evaluate import calibration


def _planted(true_t: float, n: int = 4000, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose calibrated probabilities are known: gold labels are drawn from softmax(logits), and the
    system reports ``logits * true_t``, so dividing its scores by ``true_t`` gives back the true probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, k))
    true = calibration.probabilities(logits)
    gold = (true.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits * true_t, gold


def _top(probs: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each example's confidence (its top probability) and whether the top label is the gold one."""
    return probs.max(axis=1), probs.argmax(axis=1) == gold


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_the_fit_recovers_a_planted_temperature(true_t):
    scores, gold = _planted(true_t)
    fitted = calibration.fit_temperature(scores, gold)
    assert fitted == pytest.approx(true_t, rel=0.10)


def test_scaling_lowers_the_ece_of_overconfident_scores_and_keeps_every_prediction():
    scores, gold = _planted(2.5)
    fitted = calibration.fit_temperature(scores, gold)
    before, after = calibration.probabilities(scores), calibration.probabilities(scores, fitted)
    ece_before = calibration.expected_calibration_error(*_top(before, gold))
    ece_after = calibration.expected_calibration_error(*_top(after, gold))
    assert ece_before > 0.1 and ece_after < 0.03 and ece_after < ece_before / 4
    assert (before.argmax(axis=1) == after.argmax(axis=1)).all()
    np.testing.assert_allclose(after.sum(axis=1), 1.0)
    # Overconfident: before scaling the mean confidence is well above the accuracy, after it is close to it.
    confidence, correct = _top(before, gold)
    assert confidence.mean() - correct.mean() > 0.1
    confidence, correct = _top(after, gold)
    assert abs(confidence.mean() - correct.mean()) < 0.03


def test_a_calibrated_source_has_ece_near_zero_and_a_miscalibrated_one_its_gap():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(1 / 3, 1.0, 100_000)
    calibrated_correct = rng.random(confidence.size) < confidence
    assert calibration.expected_calibration_error(confidence, calibrated_correct) < 0.01
    # Right with probability c^2 when claiming c: the gap E[c - c^2] over U(1/3, 1) is 2/3 - 13/27 = 5/27.
    overconfident_correct = rng.random(confidence.size) < confidence ** 2
    assert calibration.expected_calibration_error(confidence, overconfident_correct) == pytest.approx(5 / 27,
                                                                                                       abs=0.01)


def test_ece_equals_hand_computed_values():
    # Ten answers at 0.9 confidence, half of them right: the gap is 0.4 everywhere.
    assert calibration.expected_calibration_error([0.9] * 10, [True, False] * 5) == pytest.approx(0.4)
    # Two bins of ten: 0.95 and always right (gap 0.05), 0.3 and right 3 times in 10 (gap 0): 0.05 * 10 / 20.
    confidence = [0.95] * 10 + [0.3] * 10
    correct = [True] * 10 + [True] * 3 + [False] * 7
    assert calibration.expected_calibration_error(confidence, correct) == pytest.approx(0.025)
    assert np.isnan(calibration.expected_calibration_error([], []))


def test_reliability_bins_hold_every_example_once_and_the_edges_where_they_belong():
    rng = np.random.default_rng(2)
    confidence = np.concatenate([[0.0, 1.0, 1.0, 1 / 15, 0.5], rng.uniform(0, 1, 500)])
    correct = rng.random(confidence.size) < 0.5
    bins = calibration.reliability(confidence, correct)
    assert sum(b["n"] for b in bins) == confidence.size
    assert bins[0]["low"] == 0.0 and bins[-1]["high"] == 1.0
    for b in bins:
        assert b["n"] > 0 and b["low"] - 1e-4 <= b["confidence"] <= b["high"] + 1e-4 and 0 <= b["accuracy"] <= 1
    top = calibration.reliability([1.0, 1.0], [True, False])
    assert top == [{"low": round(14 / 15, 4), "high": 1.0, "n": 2, "confidence": 1.0, "accuracy": 0.5}]
    assert calibration.reliability([0.0], [False])[0]["low"] == 0.0


def _rows(scores: np.ndarray, gold: np.ndarray, labels: list[str]) -> list[dict]:
    return [{"input": f"x{i}", "reference": labels[g], "prediction": labels[int(s.argmax())],
             "scores": {label: round(float(v), 4) for label, v in zip(labels, s)}}
            for i, (s, g) in enumerate(zip(scores, gold))]


def test_calibrated_gives_each_row_the_softmax_of_its_predicted_label():
    labels = ["negative", "neutral", "positive", "mixed"]
    scores, gold = _planted(2.5, n=300)
    rows = _rows(scores, gold, labels)
    fitted = calibration.fit_temperature(calibration.score_matrix(rows, labels), gold)
    result = calibration.calibrated(rows, labels, fitted)
    assert set(result) == {"ece", "reliability", "temperature"} and result["temperature"] == round(fitted, 4)
    probs = calibration.probabilities(calibration.score_matrix(rows, labels), fitted)
    for row, p in zip(rows, probs):
        assert row["confidence"] == pytest.approx(p[labels.index(row["prediction"])], abs=1e-4)
        assert row["confidence"] == pytest.approx(p.max(), abs=1e-4)  # the prediction is the argmax
    confidence = [r["confidence"] for r in rows]
    correct = [r["prediction"] == r["reference"] for r in rows]
    assert result["ece"] == pytest.approx(calibration.expected_calibration_error(confidence, correct), abs=1e-3)
    assert sum(b["n"] for b in result["reliability"]) == len(rows)
    # Rows without label scores (a generating system) have no confidence to calibrate.
    assert calibration.calibrated([{"prediction": "a", "reference": "a"}], labels) == {}
    with pytest.raises(ValueError, match="no examples"):
        calibration.fit_temperature(np.zeros((0, 4)), [])


# --- lmtune score ---------------------------------------------------------------------------------------------


def _score(*args):
    result = CliRunner().invoke(app, ["score", *map(str, args), "--resamples", "200"])
    return result.exit_code, result.stdout, result.stderr


def _ece_before(rows: list[dict], labels: list[str], gold: np.ndarray) -> float:
    """The ECE of ``rows`` at T = 1."""
    return calibration.expected_calibration_error(
        *_top(calibration.probabilities(calibration.score_matrix(rows, labels)), gold))


def test_score_reports_the_ece_of_rows_with_label_scores(tmp_path):
    labels = ["negative", "neutral", "positive"]
    scores, gold = _planted(2.5, n=400, k=3)
    rows = _rows(scores, gold, labels)
    code, stdout, stderr = _score(write_jsonl(tmp_path / "p.jsonl", rows))
    assert code == 0, stderr
    ece = json.loads(stdout)["ece"]
    assert ece["value"] == pytest.approx(_ece_before(rows, labels, gold), abs=1e-4)
    assert ece["confidence_from"] == "scores" and 0 <= ece["ci_low"] < ece["ci_high"] <= 1
    # Rows with a confidence (a run's, after its temperature) are scored on it, as eval.json's ece is.
    fitted = calibration.fit_temperature(calibration.score_matrix(rows, labels), gold)
    expected = calibration.calibrated(rows, labels, fitted)["ece"]  # adds each row's confidence
    code, stdout, stderr = _score(write_jsonl(tmp_path / "c.jsonl", rows))
    assert code == 0, stderr
    ece = json.loads(stdout)["ece"]
    assert ece["confidence_from"] == "confidence" and ece["value"] == pytest.approx(expected, abs=2e-4)
    assert expected < _ece_before(rows, labels, gold)
    # --metrics narrows the output to what was asked for; a file without scores has no ece.
    code, stdout, _ = _score(tmp_path / "c.jsonl", "--metrics", "f1")
    assert code == 0 and list(json.loads(stdout)) == ["f1_macro"]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"reference": r["reference"], "prediction": r["prediction"]}
                                                   for r in rows])
    code, stdout, _ = _score(plain)
    assert code == 0 and "ece" not in json.loads(stdout)


@pytest.mark.parametrize("second, message", [
    ({"scores": {"a": "high", "b": -2.0}}, "'scores' must be an object of label -> log-likelihood"),
    ({"scores": ["a", "b"]}, "'scores' must be an object"),
    ({}, "'scores' must be an object"),
    ({"scores": {"a": -1.0, "b": -2.0}, "confidence": 1.5}, "'confidence' is 1.5; it must be a probability"),
])
def test_score_rejects_bad_label_scores_with_file_and_line(tmp_path, second, message):
    first = {"reference": "a", "prediction": "a", "scores": {"a": -1.0, "b": -2.0}, "confidence": 0.7}
    extra = [{"reference": r, "prediction": r, "scores": {"a": -1.0, "b": -2.0}, "confidence": 0.7}
             for r in "abab"]
    path = write_jsonl(tmp_path / "p.jsonl", [first, {"reference": "b", "prediction": "a", **second}, *extra])
    code, stdout, stderr = _score(path)
    assert code == 2 and stdout == "" and len(stderr.splitlines()) == 1
    assert stderr.startswith(f"error: {path}:2: {message}") and "Traceback" not in stderr
