"""``eval.graders`` through ``lmtune train`` on a tiny generation recipe: every system's predictions graded,
eval.json's means with intervals agree with the per-row scores, ``eval.rank_by`` makes a grader the verdict's
metric, a failing python grader is counted and the run goes on; bad graders exit 2 before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import refused_train, run_cli, sentiment_records, write_jsonl

from lmtune.report.verdict import verdict_sentences

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = {"positive": "great", "negative": "awful", "neutral": "fine"}
GRADERS = {
    "exact": {"type": "string_check", "name": "exact answer", "input": "{{ sample.output_text }}",
              "reference": "{{ item.completion }}", "operation": "eq"},
    "fuzzy": {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.completion}}",
              "evaluation_metric": "fuzzy_match", "pass_threshold": 0.5},
    "flaky": {"type": "python", "timeout_s": 5,
              "source": "def grade(sample, item):\n"
                        "    if item['sentiment'] == 'neutral':\n"
                        "        raise KeyError('no rubric for neutral')\n"
                        "    return min(len(sample['output_text']) / 20, 1.0)\n"},
    "combo": {"type": "multi", "graders": {"fuzzy": {"type": "text_similarity", "input": "{{sample.output_text}}",
                                                     "reference": "{{item.completion}}",
                                                     "evaluation_metric": "rouge_1"},
                                           "short": {"type": "python", "source": "def grade(s, i):\n"
                                                                                  "    return 1.0\n"}},
              "calculate_output": "0.5 * fuzzy + 0.5 * short"},
}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    records = [{"prompt": r["review"], "completion": WORDS[r["rating"]], "sentiment": r["rating"]}
               for r in sentiment_records(30)]
    return write_jsonl(tmp_path_factory.mktemp("graded-data") / "notes.jsonl", records)


def _recipe(path, model_dir, data_file, **eval_section):
    recipe = {"name": "graded", "seed": 0, "model": str(model_dir), "task": {"type": "generation"},
              "data": {"train": str(data_file), "split": {"validation": 0.2, "test": 0.3}},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              "training": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "max_length": 64},
              "eval": {"systems": ["zero_shot", "finetuned"], "max_new_tokens": 4, "bootstrap": 200,
                       **eval_section}}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def graded_run(tmp_path_factory, tiny_model_dir, data_file):
    root = tmp_path_factory.mktemp("graded")
    recipe = _recipe(root / "recipe.yaml", tiny_model_dir, data_file, graders=GRADERS, rank_by="fuzzy")
    code, output = run_cli("train", recipe, "--out", root / "run")
    assert code == 0, output
    return root / "run", output


def _rows(run, system: str) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions" / f"{system}.jsonl").read_text().splitlines()]


def test_every_system_has_each_graders_mean_with_its_interval(graded_run):
    run, _ = graded_run
    evaluation = json.loads((run / "eval.json").read_text())
    n = evaluation["n"]
    for system, result in evaluation["results"].items():
        rows = _rows(run, system)
        for name in GRADERS:
            summary = result["graders"][name]
            scores = [row["graders"][name] for row in rows]
            assert summary["n"] == len(scores) == n
            assert summary["mean"] == pytest.approx(np.mean(scores)) == result[f"graders.{name}"]
            low, high = result["ci"][f"graders.{name}"]
            assert summary["ci"] == [low, high] and low <= summary["mean"] <= high
        # string_check eq is exact equality of the output and the item's completion, sample by sample
        assert [row["graders"]["exact"] for row in rows] == [float(r["prediction"] == r["reference"]) for r in rows]
        fuzzy = result["graders"]["fuzzy"]
        assert fuzzy["pass_rate"] == pytest.approx(np.mean([row["graders"]["fuzzy"] >= 0.5 for row in rows]))


def test_a_failing_python_grader_is_counted_and_the_run_goes_on(graded_run, data_file):
    run, output = graded_run
    test = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    neutral = sum(r["sentiment"] == "neutral" for r in test)
    assert 0 < neutral < len(test)
    evaluation = json.loads((run / "eval.json").read_text())
    for system, result in evaluation["results"].items():
        flaky = result["graders"]["flaky"]
        assert (flaky["errors"], flaky["timeouts"], flaky["unparsable"]) == (neutral, 0, 0), system
        assert "KeyError: 'no rubric for neutral'" in flaky["problems"][0]
        rows = _rows(run, system)
        assert all(row["graders"]["flaky"] == 0.0 for row, t in zip(rows, test) if t["sentiment"] == "neutral")
        assert result["graders"]["exact"]["errors"] == 0
    assert f"{neutral} errors scored 0" in output


def test_rank_by_makes_the_grader_the_verdicts_metric(graded_run):
    run, _ = graded_run
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["primary_metric"] == "graders.fuzzy"
    means = {s: r["graders.fuzzy"] for s, r in evaluation["results"].items()}
    winner = max(means, key=means.get)
    tested = [t for t in evaluation["significance"] if t["metric"] == "graders.fuzzy"]
    assert [(t["a"], t["b"]) for t in tested] == [(winner, next(s for s in means if s != winner))]
    assert 0 < tested[0]["p_value"] <= 1
    sentences = verdict_sentences(evaluation, evaluation["primary_metric"])
    assert sentences[0].startswith(f"{winner} wins on graders.fuzzy: {means[winner]:.4g} (95% CI")
    assert f"paired bootstrap p = {tested[0]['p_value']:.3g}" in sentences[1]
    report = (run / "report.html").read_text()
    assert "graders.fuzzy" in report and "graders.combo" in report


def test_the_console_table_shows_the_graders(graded_run):
    _, output = graded_run
    header = next(line for line in output.splitlines() if line.startswith("system "))
    assert all(f"graders.{name}" in header for name in GRADERS)
    assert "verdict: " in output and "wins on graders.fuzzy" in output


@pytest.mark.usefixtures("no_model_load")
@pytest.mark.parametrize(("graders", "rank_by", "says"), [
    ({"exact": {**GRADERS["exact"], "reference": "{{ itm.completion }}"}}, None,
     "error: eval.graders.exact.reference: template variable {{itm.completion}}"),
    ({"exact": {**GRADERS["exact"], "reference": "{{item.answer}}"}}, None,
     "error: eval.graders.exact.reference: {{item.answer}}: "),
    ({"exact": {**GRADERS["exact"], "type": "regex"}}, None, "error: eval.graders.exact: unknown grader type 'regex'"),
    ({"sim": {**GRADERS["fuzzy"], "evaluation_metric": "cosine"}}, None,
     "error: eval.graders.sim.evaluation_metric: cosine compares OpenAI text-embedding-3-large embeddings"),
    ({"r": {"type": "callable", "path": "no_such_module_abc:reward"}}, None,
     "error: eval.graders.r.path: cannot import 'no_such_module_abc'"),
    ({"p": {"type": "python", "file": "no/such/grader.py"}}, None, "error: eval.graders.p.file: cannot read"),
    ({"exact": GRADERS["exact"]}, "fuzzy", "error: eval.rank_by: 'fuzzy' is not a grader of eval.graders"),
    ({"combo": {**GRADERS["combo"], "calculate_output": "fuzzy + long"}}, None,
     "error: eval.graders.combo.calculate_output: 'long' is not a grader of this multi grader"),
])
def test_bad_graders_exit_2_before_the_model_loads(tmp_path, tiny_model_dir, data_file, graders, rank_by, says):
    recipe = _recipe(tmp_path / "recipe.yaml", tiny_model_dir, data_file, graders=graders,
                     **({"rank_by": rank_by} if rank_by else {}))
    line = refused_train(recipe, tmp_path / "run")
    assert line.startswith(says), line


@pytest.mark.usefixtures("no_model_load")
def test_a_missing_item_field_names_the_record(tmp_path, tiny_model_dir, data_file):
    recipe = _recipe(tmp_path / "recipe.yaml", tiny_model_dir, data_file,
                     graders={"exact": {**GRADERS["exact"], "reference": "{{item.meta.answer}}"}})
    line = refused_train(recipe, tmp_path / "run")
    assert f"{data_file}:" in line and "has no field 'meta.answer' (its fields: completion, prompt, sentiment)" in line
