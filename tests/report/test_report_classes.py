"""The report's per-class section (``lmtune.report.classes``): per-class scores, from ``eval.json`` or computed
from the predictions, and the test inputs some system misclassified."""

from __future__ import annotations

import json

import pytest
from report_runs import LABELS, REAL_LABELS, REAL_SYSTEMS, make_realistic_run, make_run, write_file
from report_runs import section as _section

from lmtune.evaluate import metrics
from lmtune.report.page import write_report


def test_per_class_scores(tmp_path):
    run = make_realistic_run(tmp_path)
    page = write_report(run).read_text(encoding="utf-8")
    per_class = _section(page, "Per-class scores")
    body = json.loads((run / "eval.json").read_text())
    for label in REAL_LABELS:
        assert f"<th>{label}</th>" in per_class
    f1 = body["results"]["finetuned"]["per_class"]["neutral"]["f1"]
    assert f"{f1:.3f}" in per_class


def test_misclassified_examples(tmp_path):
    run = make_realistic_run(tmp_path)
    page = write_report(run).read_text(encoding="utf-8")
    wrong = _section(page, "Misclassified examples")
    rows = [json.loads(line) for line in (run / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    by_system = {s: [json.loads(x)["prediction"] for x in (run / "predictions" / f"{s}.jsonl").read_text()
                     .splitlines()] for s in REAL_SYSTEMS}
    total = sum(any(by_system[s][i] != row["reference"] for s in REAL_SYSTEMS) for i, row in enumerate(rows))
    assert f"20 of {total} test examples" in wrong
    assert wrong.count("<tr>") == 1 + 20
    assert 'class="wrong"' in wrong and 'class="right"' in wrong


def _page_without_per_class(tmp_path) -> tuple:
    run = make_run(tmp_path, "classification")
    body = json.loads((run / "eval.json").read_text())
    for result in body["results"].values():
        del result["per_class"]
    write_file(run / "eval.json", json.dumps(body))
    return run, write_report(run).read_text(encoding="utf-8")


def test_per_class_scores_are_computed_from_predictions_when_eval_json_has_none(tmp_path):
    run, page = _page_without_per_class(tmp_path)
    per_class = _section(page, "Per-class scores")
    # few_shot is wrong on every third review, the negatives, which it calls neutral.
    predictions = [json.loads(x) for x in (run / "predictions" / "few_shot.jsonl").read_text().splitlines()]
    expected = metrics.classification_metrics([p["reference"] for p in predictions],
                                              [p["prediction"] for p in predictions], LABELS)["per_class"]
    assert [expected[label]["f1"] for label in LABELS] == pytest.approx([0.0, 2 / 3, 1.0])
    assert "0.667" in per_class and "1.000" in per_class and "from the predictions" in per_class


def test_misclassified_examples_are_counted_from_the_predictions(tmp_path):
    _, page = _page_without_per_class(tmp_path)
    wrong = _section(page, "Misclassified examples")
    assert "of 8 test examples" in wrong  # reviews 0, 2, 3, 4, 6, 8, 9, 10: someone is wrong on each
