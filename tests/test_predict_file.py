"""``lmtune predict``: batch inference over JSONL, prompts built as training built them, resumable."""

import json

import pytest
from conftest import evaluated, write_jsonl
from typer.testing import CliRunner

from lmtune.cli import app

REVIEWS = [("the movie was great and i loved it", "positive"), ("the movie was terrible and boring", "negative"),
           ("it was fine, nothing special", "neutral"), ("this drug helped my pain a lot", "positive"),
           ("this drug gave me awful side effects", "negative")]


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cli(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--quiet"])
    return result.exit_code, result.stdout + (result.stderr or "")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A classification run on the tiny model, trained on {"review", "rating"} records with the sentiment template."""
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    root = tmp_path_factory.mktemp("predict-run")
    data = jsonl(root / "train.jsonl", [{"review": f"{t} #{i}", "rating": lab}
                                        for i, (t, lab) in enumerate(REVIEWS * 8)])
    recipe = {"name": "run", "seed": 0, "model": str(tiny_model_dir),
              "task": {"type": "classification", "labels": ["negative", "neutral", "positive"],
                       "template": "sentiment"},
              "data": {"train": str(data), "fields": {"text": "review", "label": "rating"},
                       "split": {"validation": 0.0, "test": 0.0}},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "max_length": 64},
              "eval": {"systems": ["finetuned"]}}
    return run_recipe(recipe_from_dict(recipe), out=root / "run", quiet=True)


def test_predicts_the_runs_own_format_and_resumes_after_a_crash(run, tmp_path):
    records = [{"review": text, "rating": label, "id": i} for i, (text, label) in enumerate(REVIEWS)]
    source = jsonl(tmp_path / "heldout.jsonl", records)
    out = tmp_path / "predictions.jsonl"
    code, output = cli(run, "--input", source, "--output", out, "--max-tokens", "6", "--batch-size", "2")
    assert code == 0, output
    assert "wrote 5 predictions" in output
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in first] == list(range(5))
    assert [r["reference"] for r in first] == [label for _, label in REVIEWS]
    assert all(isinstance(r["prediction"], str) for r in first)

    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10])  # a crash in the middle of the third line
    code, output = cli(run, "--input", source, "--output", out, "--max-tokens", "6", "--batch-size", "2")
    assert code == 0, output
    assert "wrote 3 predictions" in output and "2 already there" in output
    assert [json.loads(line) for line in out.read_text().splitlines()] == first  # greedy: the same lines again
    code, output = cli(run, "--input", source, "--output", out)
    assert code == 0 and "wrote 0 predictions" in output


def test_chat_and_prompt_records_build_the_same_prompt(tiny_model_dir, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [
        {"prompt": "the movie was great"},
        {"messages": [{"role": "user", "content": "the movie was great"}, {"role": "assistant", "content": "ok"}]},
    ])
    out = tmp_path / "out.jsonl"
    code, output = cli(tiny_model_dir, "--input", source, "--output", out, "--max-tokens", "8")
    assert code == 0, output
    plain, chat = [json.loads(line) for line in out.read_text().splitlines()]
    assert plain["prediction"] == chat["prediction"]
    assert chat["reference"] == "ok" and "reference" not in plain


def test_bad_input_is_one_error_line_with_its_place(tiny_model_dir, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"prompt": "fine"}, {"question": "no prompt here"}])
    code, output = cli(tiny_model_dir, "--input", source, "--output", tmp_path / "out.jsonl")
    assert code == 2 and output.strip() == (f'error: {source}:2: record gives no prompt: use {{"messages": [...]}} '
                                            'or {"prompt": "..."}')
    longer = jsonl(tmp_path / "longer.jsonl", [{"prediction": "x"}] * 3)
    code, output = cli(tiny_model_dir, "--input", source, "--output", longer)
    assert code == 2 and output.startswith(f"error: {longer}: has 3 lines but the input has only 2 records")


@pytest.mark.parametrize("existing, line, words", [
    ('{"prompt": "one", "prediction": "x"}\nnot json at all\n', 2, "not valid JSON"),
    ('{"prompt": "one", "answer": "x"}\n', 1, "no \"prediction\""),
    ('["prompt", "one"]\n', 1, "no \"prediction\""),
    ('{"prompt": "one", "prediction": "x"}\n\n', 2, "blank line"),
    ('{"prompt": "another input", "prediction": "x"}\n', 1, "does not match input record 1"),
])
def test_lines_in_the_output_that_are_not_its_predictions_are_not_counted_as_done(tiny_model_dir, tmp_path,
                                                                                   existing, line, words):
    source = jsonl(tmp_path / "in.jsonl", [{"prompt": "one"}, {"prompt": "two"}, {"prompt": "three"}])
    out = tmp_path / "out.jsonl"
    out.write_text(existing)
    code, output = cli(tiny_model_dir, "--input", source, "--output", out)
    assert code == 2 and output.startswith(f"error: {out}:{line}: ") and words in output, output
    assert out.read_text() == existing  # nothing appended after a line that is not ours


def test_output_that_is_a_directory_or_cannot_be_created(tiny_model_dir, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"prompt": "one"}])
    code, output = cli(tiny_model_dir, "--input", source, "--output", tmp_path)
    assert code == 2 and output.startswith(f"error: {tmp_path}: is a directory"), output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, output = cli(tiny_model_dir, "--input", source, "--output", blocker / "out.jsonl")
    assert code == 2 and output.startswith(f"error: {blocker / 'out.jsonl'}: ") and "--output" in output, output


def test_missing_input_names_the_option_not_a_recipe(tiny_model_dir, tmp_path):
    code, output = cli(tiny_model_dir, "--input", tmp_path / "nope.jsonl", "--output", tmp_path / "out.jsonl")
    assert code == 2 and output.startswith(f"error: {tmp_path / 'nope.jsonl'}: no such input file"), output
    assert "recipe" not in output and not (tmp_path / "out.jsonl").exists()


def test_plain_prompt_records_work_on_a_run_with_a_template(run, tmp_path):
    source = jsonl(tmp_path / "in.jsonl", [{"prompt": "the movie was great"},
                                           {"review": "the movie was great", "rating": "positive"}])
    out = tmp_path / "out.jsonl"
    code, output = cli(run, "--input", source, "--output", out, "--max-tokens", "3")
    assert code == 0, output
    plain, templated = [json.loads(line) for line in out.read_text().splitlines()]
    assert isinstance(plain["prediction"], str) and "reference" not in plain
    assert templated["reference"] == "positive"


def test_predict_answers_a_classification_run_with_its_evaluated_labels(task_runs, tmp_path):
    from lmtune.predict_file import predict_file

    pairs = evaluated(task_runs["reviews"])
    out = tmp_path / "out.jsonl"
    predict_file(str(task_runs["reviews"]), write_jsonl(tmp_path / "in.jsonl", [r for r, _ in pairs]), out, quiet=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["prediction"] for line in lines] == [p["prediction"] for _, p in pairs]
    assert all(sum(line["label_probabilities"].values()) == pytest.approx(1.0) for line in lines)
