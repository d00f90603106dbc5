"""The command line end to end on a tiny model: run directory contents and exit codes."""

import json

import hostile
import pytest
from conftest import RUN_FILES, run_cli


def test_train_writes_a_complete_run_directory(recipe_file, tmp_path):
    out = tmp_path / "run"
    code, output = run_cli("train", recipe_file(), "--out", out, "--quiet")
    assert code == 0, output
    for name in RUN_FILES:
        assert (out / name).exists(), name
    for split in ("train", "validation", "test"):
        assert (out / "data" / f"{split}.jsonl").exists()
    assert (out / "data" / "data_report.json").exists()
    assert (out / "final" / "adapter_config.json").exists() and (out / "final" / "adapter_model.safetensors").exists()
    assert (out / "final" / "tokenizer_config.json").exists()
    result = json.loads((out / "eval.json").read_text())
    assert set(result["results"]) == {"zero_shot", "few_shot", "finetuned"}
    for system in result["results"].values():
        assert {"accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion_matrix"} <= set(system)
    n_test = sum(1 for _ in open(out / "data" / "test.jsonl"))
    assert result["n"] == n_test
    preds = (out / "predictions" / "finetuned.jsonl").read_text().splitlines()
    assert len(preds) == n_test and {"input", "reference", "prediction"} <= set(json.loads(preds[0]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0
    assert "f1_macro" in output and "report:" in output
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {m["split"] for m in metrics} >= {"train", "validation"}
    assert "<img src=\"data:image/png;base64," in (out / "report.html").read_text()


def test_generation_recipe_end_to_end(recipe_file, tmp_path):
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"the movie was great {i}", "completion": "positive"}) + "\n"
                            for i in range(20)))
    path = recipe_file(task={"type": "generation", "labels": None, "template": None},
                       data={"train": str(data), "fields": {},
                             "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                       eval={"systems": ["zero_shot", "finetuned"], "max_new_tokens": 4})
    out = tmp_path / "gen"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    result = json.loads((out / "eval.json").read_text())["results"]["finetuned"]
    assert {"rouge1", "rouge2", "rougeL", "bleu"} <= set(result)


def test_existing_run_directory_is_not_clobbered_and_resume_continues(recipe_file, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", recipe_file(), "--out", out, "--quiet")[0] == 0
    code, output = run_cli("train", recipe_file(), "--out", out, "--quiet")
    assert code == 2 and "--resume" in output
    code, output = run_cli("train", recipe_file(), "--out", out, "--quiet", "--resume")
    assert code == 0, output


def _cli(*args):
    """The console entry point in a process of its own (forked: ``hostile.cli``) in a temporary directory: what a
    user sees, tracebacks included."""
    import tempfile

    with tempfile.TemporaryDirectory() as cwd:
        return hostile.cli(*args, cwd=cwd)


def test_unknown_recipe_key_exits_2_with_one_line_naming_the_key(recipe_file):
    path = recipe_file(training={"learning_rte": 1e-4})
    proc = _cli("train", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training.learning_rte: unknown key")
    # Users have README.md, not the project's design notes: the hint must point at something they can read.
    assert "README.md" in lines[0] and "DESIGN.md" not in lines[0]
    assert "Traceback" not in proc.stderr


def test_broken_data_line_exits_2_naming_file_and_line(recipe_file, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"review": "good", "rating": "positive"}\n{"review": "bad", "rating": \n')
    proc = _cli("train", recipe_file(data={"train": str(data)}))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {data}:2: not valid JSON")
    assert "Traceback" not in proc.stderr


def test_missing_model_exits_2_naming_the_model(recipe_file, tmp_path):
    proc = _cli("train", recipe_file(model=str(tmp_path / "no-such-model")))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'no-such-model'}:") and "Traceback" not in proc.stderr


def test_data_check_summarises_and_rejects(tmp_path, sentiment_file):
    proc = _cli("data", "check", sentiment_file, "--field", "text=review", "--field", "label=rating")
    assert proc.returncode == 0, proc.stderr
    assert "60 records" in proc.stdout and "classification" in proc.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"prompt": "p", "completion": "c"}\n')
    proc = _cli("data", "check", bad)
    assert proc.returncode == 2 and f"{bad}:2" in proc.stderr and "Traceback" not in proc.stderr


def test_data_prepare_writes_splits(recipe_file, tmp_path):
    out = tmp_path / "prepared"
    code, output = run_cli("data", "prepare", recipe_file(), "--out", out)
    assert code == 0, output
    assert {p.name for p in out.iterdir()} == {"train.jsonl", "validation.jsonl", "test.jsonl", "data_report.json"}


def test_language_modeling_reports_perplexity_before_and_after(recipe_file, tmp_path):
    data = tmp_path / "domain.jsonl"
    data.write_text("".join(json.dumps({"text": f"this drug helped my pain a lot, day {i}"}) + "\n" for i in range(30)))
    path = recipe_file(task={"type": "language_modeling", "labels": None, "template": None},
                       data={"train": str(data), "fields": {},
                             "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                       eval={"systems": ["zero_shot", "few_shot", "finetuned"], "batch_size": 1},
                       training={"learning_rate": 5e-2, "max_steps": 10, "max_length": 16})
    out = tmp_path / "lm"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    results = json.loads((out / "eval.json").read_text())["results"]
    assert set(results) == {"zero_shot", "finetuned"}  # few-shot has no meaning for raw text
    assert results["finetuned"]["perplexity"] < results["zero_shot"]["perplexity"]
    # Perplexity has its bootstrap interval too, resampling the test text's blocks (one per batch here).
    for result in results.values():
        low, high = result["ci"]["perplexity"]
        assert low <= result["perplexity"] <= high and low < high


def test_chat_records_train_on_the_last_assistant_turn(recipe_file, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "you are a helpful assistant"},
        {"role": "user", "content": f"the movie was great {i}"},
        {"role": "assistant", "content": "positive"}]}) + "\n" for i in range(20)))
    path = recipe_file(task={"type": "chat", "labels": None, "template": None},
                       data={"train": str(data), "fields": {},
                             "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                       eval={"systems": ["finetuned"], "max_new_tokens": 3})
    out = tmp_path / "chat"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    assert "rougeL" in json.loads((out / "eval.json").read_text())["results"]["finetuned"]


def _one_error_line(output):
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_usage_errors_are_one_error_line_with_exit_2(recipe_file):
    code, output = run_cli("train")
    assert code == 2 and "missing argument 'recipe'" in _one_error_line(output).lower()
    code, output = run_cli("train", recipe_file(), "--bogus")
    assert code == 2 and "no such option: --bogus" in _one_error_line(output).lower()
    code, output = run_cli("serve", "some-model", "--port", "99999")
    assert code == 2 and "'--port'" in _one_error_line(output)
    code, output = run_cli("predict", "m", "--input", "i", "--output", "o", "--max-tokens", "many")
    assert code == 2 and "'--max-tokens'" in _one_error_line(output)
    code, output = run_cli("nosuchcommand")
    assert code == 2 and "nosuchcommand" in _one_error_line(output)


def test_help_is_still_help():
    code, output = run_cli("--help")
    assert code == 0 and "train" in output and "error" not in output
    code, output = run_cli("train", "--help")
    assert code == 0 and "--overwrite" in output
    code, output = run_cli()  # no arguments: the help, as before
    assert "Usage" in output and "error:" not in output


def test_overwrite_refuses_a_directory_that_is_not_a_run(recipe_file, tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    code, output = run_cli("train", recipe_file(), "--out", other, "--overwrite", "--quiet")
    assert code == 2 and "not an lmtune run" in _one_error_line(output)
    assert (other / "thesis.tex").read_text() == "years of work"
    runs = tmp_path / "runs"  # --out runs: the folder of runs, not a run
    (runs / "old").mkdir(parents=True)
    for marker in ("recipe.yaml", "manifest.json"):
        (runs / "old" / marker).write_text("{}")
    code, output = run_cli("train", recipe_file(), "--out", runs, "--overwrite", "--quiet")
    assert code == 2 and "not an lmtune run" in output and (runs / "old" / "recipe.yaml").exists()
    code, output = run_cli("train", recipe_file(), "--out", other, "--resume", "--quiet")
    assert code == 2 and not (other / "recipe.yaml").exists()


def test_overwrite_replaces_a_run_directory(recipe_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for marker in ("recipe.yaml", "manifest.json", "stale.txt"):
        (out / marker).write_text("{}")
    code, output = run_cli("train", recipe_file(), "--out", out, "--overwrite", "--quiet")
    assert code == 0, output
    assert not (out / "stale.txt").exists() and (out / "final").is_dir()


def test_out_that_is_a_file_fails_before_anything_runs(recipe_file, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    for args in (["train", recipe_file(), "--out", blocker], ["train", recipe_file(), "--out", blocker / "run"],
                 ["data", "prepare", recipe_file(), "--out", blocker]):
        code, output = run_cli(*args)
        assert code == 2 and str(blocker) in _one_error_line(output) and "file" in output, output


def test_data_prepare_refuses_a_directory_of_other_files(recipe_file, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "train.jsonl").write_text("my own data\n")
    code, output = run_cli("data", "prepare", recipe_file(), "--out", target)
    assert code == 2 and "data_report.json" in _one_error_line(output)
    assert (target / "train.jsonl").read_text() == "my own data\n"


@pytest.mark.parametrize("stage", ["data_stage.write", "systems.few_shot_examples"])
def test_a_run_that_fails_before_training_leaves_no_directory(recipe_file, tmp_path, monkeypatch, stage):
    from lmtune import lifecycle
    from lmtune.recipe import load_recipe

    def broken(*args, **kwargs):
        raise RuntimeError(f"{stage} failed")

    # Fails after the run directory was created and before any result was saved in it.
    module, name = stage.split(".")
    monkeypatch.setattr(getattr(lifecycle, module), name, broken)
    recipe = load_recipe(recipe_file(), [])
    new = tmp_path / "new" / "run"
    try:
        lifecycle.run_recipe(recipe, new, quiet=True)
    except RuntimeError:
        pass
    assert not (tmp_path / "new").exists()  # every directory the run created is gone
    existing = tmp_path / "existing"
    existing.mkdir()
    try:
        lifecycle.run_recipe(recipe, existing, quiet=True)
    except RuntimeError:
        pass
    assert existing.is_dir()  # a directory the user made is never removed


def test_seeds_first_and_checks_the_template_before_loading_the_model(recipe_file, tmp_path, monkeypatch):
    from lmtune import lifecycle, tasks
    from lmtune.errors import UserError
    from lmtune.recipe import load_recipe

    calls = []
    monkeypatch.setattr(lifecycle, "seed_everything", lambda seed: calls.append(("seed", seed)))
    real = tasks.task_for

    def task_for(recipe):
        calls.append(("task", None))
        kind = real(recipe)
        kind.load = lambda *a, **k: calls.append(("load", None))
        return kind

    monkeypatch.setattr(lifecycle.tasks, "task_for", task_for)
    recipe = load_recipe(recipe_file(seed=7, task={"template": {"prompt": "{nosuch}", "completion": "{label}"}}), [])
    try:
        lifecycle.run_recipe(recipe, tmp_path / "run", quiet=True)
        raise AssertionError("the template should have failed")
    except UserError as exc:
        assert exc.source == "task.template"
    assert calls == [("seed", 7), ("task", None)] and not (tmp_path / "run").exists()


def test_baselines_measured_before_an_interruption_are_kept_for_resume(recipe_file, tmp_path, monkeypatch):
    from lmtune import lifecycle, tasks
    from lmtune.recipe import load_recipe

    real, seen = tasks.TokenTask.run, []

    def interrupted_at_few_shot(self, system, *args, **kwargs):
        seen.append(system)
        if system == "few_shot" and seen.count("few_shot") == 1:
            raise KeyboardInterrupt
        return real(self, system, *args, **kwargs)

    monkeypatch.setattr(tasks.TokenTask, "run", interrupted_at_few_shot)
    recipe, out = load_recipe(recipe_file(), []), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        lifecycle.run_recipe(recipe, out, quiet=True)
    assert set(json.loads((out / "eval.json").read_text())["results"]) == {"zero_shot"}
    lifecycle.run_recipe(recipe, out, resume=True, quiet=True)
    assert seen.count("zero_shot") == 1  # not measured again
    assert set(json.loads((out / "eval.json").read_text())["results"]) == {"zero_shot", "few_shot", "finetuned"}


def test_a_recipe_without_a_finetuned_system_runs_only_the_baselines(recipe_file, tmp_path):
    out = tmp_path / "baselines"
    code, output = run_cli("train", recipe_file(eval={"systems": ["zero_shot", "few_shot"], "few_shot_k": 2}), "--out",
                        out)
    assert code == 0, output
    assert "baselines only" in output and "verdict" in output
    assert set(json.loads((out / "eval.json").read_text())["results"]) == {"zero_shot", "few_shot"}
    assert (out / "report.html").exists()
    assert not (out / "final").exists() and not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
