"""``lmtune eval RECIPE --model REF_OR_RUN``: a model or a finished run on the recipe's test split, nothing trained.

Real runs of the tiny model: ``task_runs`` (conftest) are LoRA runs trained by the lifecycle; evaluating one with
its own recipe must measure what the run measured, and an evaluation must be a run directory that the report,
``compare`` and the studio read like any other.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from lmtune.report.compare import compare
from lmtune.studio.index import Index

pytestmark = pytest.mark.usefixtures("one_thread")

#: What an evaluation writes (a training run has metrics.jsonl, timing.jsonl and final/ besides).
EVAL_FILES = {"recipe.yaml", "manifest.json", "status.json", "data", "eval.json", "predictions", "report.html"}
#: Measured again on every evaluation: wall-clock latency, the machine load it was measured under, and the
#: hours per 1,000 queries that follow from the latency.
TIMED = {"latency_s", "measured_at", "hours_per_1k_queries"}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_error(code: int, output: str, where: str, *words: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {where}: "), output
    for word in words:
        assert word in lines[0], output


@pytest.mark.parametrize("name", ["reviews", "notes"])  # label scoring, and generation with a template field
def test_eval_of_a_finished_run_with_its_recipe_reproduces_its_fine_tuned_numbers(task_runs, tmp_path, name):
    run = task_runs[name]
    out = tmp_path / "eval"
    code, output = run_cli("eval", run / "recipe.yaml", "--model", run, "--out", out, "--quiet")
    assert code == 0, output
    assert {p.name for p in out.iterdir()} == EVAL_FILES  # no checkpoints, no final/: nothing was trained
    trained, evaluated = json.loads((run / "eval.json").read_text()), json.loads((out / "eval.json").read_text())
    assert set(evaluated["results"]) == {"finetuned"} and evaluated["n"] == trained["n"] > 0
    before, after = trained["results"]["finetuned"], evaluated["results"]["finetuned"]
    assert set(before) == set(after)
    assert {k: v for k, v in after.items() if k not in TIMED} == {k: v for k, v in before.items() if k not in TIMED}
    assert _lines(out / "predictions" / "finetuned.jsonl") == _lines(run / "predictions" / "finetuned.jsonl")
    assert (out / "data" / "test.jsonl").read_text() == (run / "data" / "test.jsonl").read_text()
    if name == "reviews":  # the comparison means something only if the model answers differently per input
        assert len({p["prediction"] for p in _lines(out / "predictions" / "finetuned.jsonl")}) > 1
    # Which model answered is recorded, in eval.json and the manifest alike.
    record = {"kind": "run", "ref": str(run), "run": str(run.absolute()), "final": str((run / "final").absolute()),
              "base_model": json.loads((run / "final" / "lmtune.json").read_text())["base_model"], "method": "lora"}
    assert evaluated["evaluated"] == record
    assert json.loads((out / "manifest.json").read_text())["evaluated"] == record
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    assert "training" not in evaluated and str((run / "final").absolute()) in (out / "report.html").read_text()


def test_eval_of_a_base_model_is_a_run_that_report_compare_and_studio_read(recipe_file, tiny_model_dir, tmp_path):
    recipe = recipe_file()
    trained, out = tmp_path / "runs" / "trained", tmp_path / "runs" / "base-zero-shot"
    assert run_cli("train", recipe, "--out", trained, "--quiet")[0] == 0
    code, output = run_cli("eval", recipe, "--model", tiny_model_dir, "--systems", "zero_shot", "--out", out,
                           "--quiet")
    assert code == 0, output
    assert {p.name for p in out.iterdir()} == EVAL_FILES
    result = json.loads((out / "eval.json").read_text())
    assert set(result["results"]) == {"zero_shot"} and result["evaluated"] == {"kind": "model",
                                                                              "ref": str(tiny_model_dir)}
    value = result["results"]["zero_shot"]["f1_macro"]
    assert "zero_shot" in output and "f1_macro" in output
    # The same data stage, seed and split as a training run of the recipe: the same test examples, and the same
    # zero-shot answers, since the recipe's model is the one evaluated.
    assert (out / "data" / "test.jsonl").read_text() == (trained / "data" / "test.jsonl").read_text()
    assert _lines(out / "predictions" / "zero_shot.jsonl") == _lines(trained / "predictions" / "zero_shot.jsonl")
    report = (out / "report.html").read_text()
    assert "zero_shot" in report and "none (baselines only)" in report
    page = compare([trained, out], tmp_path / "compare.html").read_text()
    assert f"tiny-eval-{tiny_model_dir.name}" in page and "zero_shot" in page
    assert "different test sets" not in page
    rows = {row["name"]: row for row in Index(tmp_path / "runs").rows()}
    assert set(rows) == {"trained", "base-zero-shot"}
    row = rows["base-zero-shot"]
    assert (row["metric"], row["system"], row["value"], row["status"]) == ("f1_macro", "zero_shot", value, "finished")
    # --resume keeps what was measured: nothing is measured again, so even the latency is the same.
    code, output = run_cli("eval", recipe, "--model", tiny_model_dir, "--systems", "zero_shot", "--out", out,
                           "--quiet", "--resume")
    assert code == 0, output
    assert json.loads((out / "eval.json").read_text())["results"]["zero_shot"] == result["results"]["zero_shot"]


def test_a_run_of_another_task_or_label_set_is_refused_before_anything_runs(task_runs, recipe_file, tmp_path):
    out = tmp_path / "eval"
    # recipe_file's labels are negative/neutral/positive; the reviews run learned awful/fine/great.
    code, output = run_cli("eval", recipe_file(), "--model", task_runs["reviews"], "--out", out)
    _one_error(code, output, "--model", "task.labels", "'awful'", "'negative'")
    code, output = run_cli("eval", recipe_file(), "--model", task_runs["notes"], "--out", out)
    _one_error(code, output, "--model", "task.type", "'generation'", "'classification'")
    assert not out.exists()


def test_a_model_that_does_not_exist_is_refused(recipe_file, tmp_path):
    out = tmp_path / "eval"
    code, output = run_cli("eval", recipe_file(), "--model", tmp_path / "no-such-model", "--out", out)
    _one_error(code, output, str(tmp_path / "no-such-model"), "no such model directory")
    code, output = run_cli("eval", recipe_file(), "--model", tmp_path / "missing.gguf", "--out", out)
    _one_error(code, output, str(tmp_path / "missing.gguf"), "no such GGUF file")
    code, output = run_cli("eval", recipe_file(), "--model", "nobody-here/no-such-model", "--out", out)
    _one_error(code, output, "nobody-here/no-such-model", "model not found")
    assert not out.exists()


def test_bad_systems_and_unusable_models_or_outputs_are_one_line_each(recipe_file, tiny_model_dir, task_runs,
                                                                     tmp_path):
    recipe, out = recipe_file(), tmp_path / "eval"
    cases = [
        (["--model", tiny_model_dir, "--systems", "zero_shot,bogus"], "--systems", "unknown system 'bogus'"),
        (["--model", tiny_model_dir, "--systems", "finetuned"], "--systems", "not a run"),
        (["--model", tiny_model_dir, "--systems", "rag"], "--systems", "eval.rag"),
        (["--model", tiny_model_dir, "--systems", "zero_shot", "--set", "task.head=true"], "--systems",
         "zero_shot does not apply"),
        (["--model", tiny_model_dir, "--set", "eval.systems=[finetuned]"], "--model", "--systems"),
    ]
    for args, where, words in cases:
        code, output = run_cli("eval", recipe, "--out", out, *args)
        _one_error(code, output, where, words)
    assert not out.exists()
    run = task_runs["reviews"]
    _one_error(*run_cli("eval", run / "recipe.yaml", "--model", run, "--out", run, "--overwrite"), str(run),
               "is the evaluated run")
    assert (run / "final" / "lmtune.json").is_file()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for marker in ("recipe.yaml", "manifest.json"):
        (unfinished / marker).write_text("{}")
    _one_error(*run_cli("eval", recipe, "--model", unfinished, "--out", out), "--model", "no final/")
    # An earlier run in --out is neither resumed nor replaced unless asked.
    _one_error(*run_cli("eval", recipe, "--model", tiny_model_dir, "--out", unfinished), str(unfinished), "--resume")


def test_eval_logs_its_results_to_the_recipe_trackers(task_runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, out = task_runs["reviews"], tmp_path / "eval"
    code, output = run_cli("eval", run / "recipe.yaml", "--model", run, "--out", out, "--quiet",
                           "--set", "tracking=[jsonl,tensorboard]")
    assert code == 0, output
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    f1 = json.loads((out / "eval.json").read_text())["results"]["finetuned"]["f1_macro"]
    assert events.Scalars("eval/finetuned/f1_macro")[-1].value == pytest.approx(f1)
