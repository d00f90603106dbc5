"""Calibrated confidence through a whole run on the tiny model: ``eval.calibrate: temperature`` fits a temperature
per system and eval.json, the predictions, the report and ``lmtune score`` agree on it; bad recipes exit 2 before
the model loads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import refused_train, run_cli, sentiment_records, write_jsonl, write_recipe

from lmtune.evaluate import calibration
from lmtune.evaluate.calibration import LOG_T_BOUNDS
from lmtune.report import calibration as report_calibration
from lmtune.report import plots
from lmtune.report.run import Run
from lmtune.run_dir import RunDir
from lmtune.studio import run_html, run_view

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "reviews.jsonl", sentiment_records())


def _train(tmp_path_factory, tiny_model_dir, data_file, name: str, **sections):
    root = tmp_path_factory.mktemp(name)
    recipe = write_recipe(root / "recipe.yaml", tiny_model_dir, data_file, **sections)
    code, output = run_cli("train", recipe, "--out", root / "run", "--quiet")
    assert code == 0, output
    return root / "run"


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory, tiny_model_dir, data_file):
    """zero_shot and a few LoRA steps, each with a temperature fitted on the validation split."""
    return _train(tmp_path_factory, tiny_model_dir, data_file, "scaled",
                  eval={"systems": ["zero_shot", "finetuned"], "calibrate": "temperature"})


def _rows(run, system: str) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions" / f"{system}.jsonl").read_text().splitlines()]


def test_temperature_scaling_is_in_eval_json_and_the_predictions(scaled_run):
    evaluation = json.loads((scaled_run / "eval.json").read_text())
    assert set(evaluation["results"]) == {"zero_shot", "finetuned"}
    for system, result in evaluation["results"].items():
        t = result["temperature"]
        assert 0 <= result["ece"] <= 1 and 0 <= result["ece_uncalibrated"] <= 1, system
        assert t > 0 and t != 1.0, system  # fitted, not the model's own
        assert sum(b["n"] for b in result["reliability"]) == evaluation["n"]
        rows = _rows(scaled_run, system)
        assert len(rows) == evaluation["n"]
        probs = calibration.probabilities(calibration.score_matrix(rows, LABELS), t)
        for row, p in zip(rows, probs):
            assert 0.0 <= row["confidence"] <= 1.0
            # the probability of the predicted label at the fitted temperature (scores and T kept to 4 decimals)
            assert row["confidence"] == pytest.approx(p[LABELS.index(row["prediction"])], abs=2e-3)
        correct = [r["prediction"] == r["reference"] for r in rows]
        recomputed = calibration.expected_calibration_error([r["confidence"] for r in rows], correct)
        assert result["ece"] == pytest.approx(recomputed, abs=2e-3)
        unscaled = calibration.calibrated([dict(r) for r in rows], LABELS)["ece"]
        assert result["ece_uncalibrated"] == pytest.approx(unscaled, abs=2e-3)


def test_the_report_and_lmtune_score_show_the_calibration(scaled_run):
    page = (scaled_run / "report.html").read_text()
    assert "<h2>Calibrated confidence</h2>" in page and "ECE before scaling" in page
    for system in ("zero_shot", "finetuned"):
        assert f'alt="reliability diagram of {system}"' in page
    studio_sections = run_html.probes(run_view.light(RunDir(scaled_run)))  # the studio's Run page reuses it
    assert "<h2>Calibrated confidence</h2>" in studio_sections[0]
    evaluation = json.loads((scaled_run / "eval.json").read_text())
    code, output = run_cli("score", scaled_run / "predictions" / "finetuned.jsonl", "--resamples", "50")
    assert code == 0, output
    ece = json.loads(output[output.index("{"):output.rindex("}") + 1])["ece"]
    assert ece["confidence_from"] == "confidence"
    assert ece["value"] == pytest.approx(evaluation["results"]["finetuned"]["ece"], abs=2e-3)


def test_without_eval_calibrate_the_ece_is_the_models_own(tmp_path_factory, tiny_model_dir, data_file):
    run = _train(tmp_path_factory, tiny_model_dir, data_file, "unscaled", eval={"systems": ["zero_shot"]})
    result = json.loads((run / "eval.json").read_text())["results"]["zero_shot"]
    assert result["temperature"] == 1.0 and "ece_uncalibrated" not in result and 0 <= result["ece"] <= 1
    rows = _rows(run, "zero_shot")
    probs = calibration.probabilities(calibration.score_matrix(rows, LABELS))
    for row, p in zip(rows, probs):
        assert row["confidence"] == pytest.approx(p[LABELS.index(row["prediction"])], abs=2e-3)
    page = (run / "report.html").read_text()
    assert "<h2>Calibrated confidence</h2>" in page and "ECE before scaling" not in page


# --- bad input: one line, exit 2, before the model loads -------------------------------------------------------


@pytest.mark.usefixtures("no_model_load")
def test_temperature_without_a_validation_split_says_how_to_add_one(tmp_path, tiny_model_dir, data_file):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, data_file, eval={"calibrate": "temperature"},
                          data={"split": {"validation": 0.0, "test": 0.2}})
    line = refused_train(recipe, tmp_path / "run")
    assert line.startswith("error: eval.calibrate: ") and "validation split" in line
    assert "data.split.validation" in line and "data.validation" in line


@pytest.mark.usefixtures("no_model_load")
def test_temperature_on_a_generation_task_isrefused_train(tmp_path, tiny_model_dir):
    records = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": f"the movie was great {i}", "completion": "positive"}
                                                   for i in range(20)])
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, records,
                          task={"type": "generation", "labels": None, "template": None},
                          data={"fields": {}, "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                          eval={"systems": ["zero_shot"], "calibrate": "temperature"})
    line = refused_train(recipe, tmp_path / "run")
    assert line.startswith("error: eval.calibrate: ") and "generation" in line and "remove eval.calibrate" in line


@pytest.mark.usefixtures("no_model_load")
def test_an_unknown_calibration_method_isrefused_train(tmp_path, tiny_model_dir, data_file):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, data_file, eval={"calibrate": "platt"})
    line = refused_train(recipe, tmp_path / "run")
    assert line.startswith("error: eval.calibrate: ") and "'temperature'" in line and "platt" in line


# --- the report section and its diagram, from eval.json alone -----------------------------------------------------


def _bins(pairs: list[tuple[float, float, int]]) -> list[dict]:
    """Reliability bins of 15 from (mean confidence, accuracy, count)."""
    out = []
    for confidence, accuracy, n in pairs:
        b = min(int(confidence * 15), 14)
        out.append({"low": round(b / 15, 4), "high": round((b + 1) / 15, 4), "n": n, "confidence": confidence,
                    "accuracy": accuracy})
    return out


def test_the_section_tabulates_each_system_and_flags_a_temperature_at_its_bound(tmp_path):
    at_bound = round(math.exp(LOG_T_BOUNDS[1]), 4)
    results = {"zero_shot": {"accuracy": 0.5, "ece": 0.2, "ece_uncalibrated": 0.45, "temperature": at_bound,
                             "reliability": _bins([(0.5, 0.25, 20), (0.9, 0.75, 20)])},
               "finetuned": {"accuracy": 0.8, "ece": 0.05, "ece_uncalibrated": 0.12, "temperature": 2.5,
                             "reliability": _bins([(0.85, 0.8, 40)])},
               "majority": {"accuracy": 0.4}}  # no label scores: not in the section
    run = Run(directory=tmp_path, evaluation={"task": "classification", "results": results})
    section = report_calibration.section(run)
    assert section.count('alt="reliability diagram of') == 2 and "majority" not in section
    # zero_shot's mean confidence (0.5 * 20 + 0.9 * 20) / 40 = 0.7 beside its accuracy over the same answers
    assert '<td class="num">0.7</td><td class="num">0.5</td>' in section
    assert "zero_shot: the temperature stopped at the edge of its search range" in section
    assert "finetuned:" not in section
    assert "<img" not in report_calibration.section(run, charts=False)
    without = Run(directory=tmp_path, evaluation={"task": "classification", "results": {"majority": {"a": 1}}})
    assert report_calibration.section(without) == ""


def test_the_reliability_diagram_draws_each_bins_accuracy_against_the_diagonal():
    bins = _bins([(0.45, 0.3, 5), (0.75, 0.7, 12), (1.0, 1.0, 3)])
    fig = plots.reliability_figure(bins, "finetuned", 0.0789, 2.5)
    ax = fig.axes[0]
    accuracy, gap = ax.containers  # the accuracy bars, then the gap to each bin's confidence stacked on them
    assert accuracy.get_label() == "accuracy" and gap.get_label() == "gap to confidence"
    accuracy_bars = accuracy.patches
    np.testing.assert_allclose([p.get_height() for p in accuracy_bars], [0.3, 0.7, 1.0])
    np.testing.assert_allclose([p.get_x() for p in accuracy_bars], [b["low"] for b in bins])
    np.testing.assert_allclose([p.get_y() + p.get_height() for p in gap.patches], [0.45, 0.75, 1.0])
    assert "ECE 0.079" in ax.get_title() and "T = 2.5" in ax.get_title()
    diagonal = ax.lines[0]
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]
    assert "T =" not in plots.reliability_figure(bins, "zero_shot", 0.1, 1.0).axes[0].get_title()
    assert plots.reliability_diagram(bins, "x", 0.1).startswith("data:image/png;base64,")
