from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from lmtune.demo import demo_recipe_text
from lmtune.errors import UserError
from lmtune.recipe import apply_override, load_recipe, recipe_from_dict

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
MINIMAL = {"name": "x", "model": "m", "task": {"labels": ["a", "b"]}, "data": {"train": "t.jsonl"}}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses(path):
    recipe = load_recipe(path)
    assert recipe.name and recipe.model


def test_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 3


def test_demo_recipe_matches_the_shipped_copy():
    shipped = Path(__file__).parent.parent / "recipes" / "drug-reviews-demo.yaml"
    assert yaml.safe_load(demo_recipe_text()) == yaml.safe_load(shipped.read_text())


def test_defaults_are_filled_in():
    recipe = recipe_from_dict(MINIMAL)
    assert recipe.training.learning_rate == 2e-4
    assert recipe.method.name == "lora"
    assert recipe.eval.systems == ["zero_shot", "few_shot", "finetuned"]


def test_all_problems_reported_at_once_with_key_paths():
    bad = {**MINIMAL, "data": {"train": "t", "bogus": 1}, "training": {"learning_rate": "fast", "batch_size": 0},
           "method": {"name": "magic"}}
    with pytest.raises(UserError) as info:
        recipe_from_dict(bad)
    sources = [src for src, _ in info.value.problems]
    assert sorted(sources) == ["data.bogus", "method.name", "training.batch_size", "training.learning_rate"]
    text = "\n".join(info.value.lines())
    assert "unknown key" in text and "magic" in text


@pytest.mark.parametrize("override, key", [
    ("training.learning_rate=-1", "training.learning_rate"),
    ("data.split.validation=0.6", "data.split"),
    ("task.labels=[only]", "task.labels"),
    ("task.type=poetry", "task.type"),
    ("eval.systems=[zero_shot, oracle]", "eval.systems"),
])
def test_impossible_values_name_their_key(tmp_path, override, key):
    path = tmp_path / "r.yaml"
    raw = {**MINIMAL, "data": {"train": "t", "split": {"test": 0.5}}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as info:
        load_recipe(path, [override])
    assert any(src.startswith(key) for src, _ in info.value.problems), info.value.problems


def test_set_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    recipe = load_recipe(path, ["training.max_steps=20", "training.learning_rate=1e-4", "method.peft.r=4"])
    assert recipe.training.max_steps == 20
    assert recipe.training.learning_rate == 1e-4
    assert recipe.method.peft == {"r": 4}


def test_override_without_equals_is_a_user_error():
    with pytest.raises(UserError, match="key.path=value"):
        apply_override({}, "training.max_steps")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(UserError) as info:
        load_recipe(bad)
    assert str(bad) in info.value.source


def test_every_tracker_is_accepted_and_an_unknown_one_is_an_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    both = load_recipe(path, ["tracking=[jsonl, tensorboard, mlflow, wandb, trackio, mlflow]"]).tracking
    assert both == ["jsonl", "tensorboard", "mlflow", "wandb", "trackio"]  # each once, in order
    with pytest.raises(UserError) as info:
        load_recipe(path, ["tracking=[jsonl, comet]"])
    assert [src for src, _ in info.value.problems] == ["tracking.1"]


@pytest.mark.parametrize("overrides, key", [
    (["method.name=prompt_tuning", "training.packing=true"], "training.packing"),
    (["method.name=prefix_tuning", "training.gradient_checkpointing=true"], "training.gradient_checkpointing"),
])
def test_method_and_training_switches_that_cannot_work_together_fail_when_read(tmp_path, overrides, key):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(UserError) as info:
        load_recipe(path, overrides)
    assert [src for src, _ in info.value.problems] == [key]


def test_eval_metrics_are_checked_against_the_task(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_recipe(path, ["eval.metrics=[accuracy, f1_micro]"]).eval.metrics == ["accuracy", "f1_micro"]
    with pytest.raises(UserError) as info:
        load_recipe(path, ["eval.metrics=[bleu]"])
    assert [src for src, _ in info.value.problems] == ["eval.metrics"]
    assert "generation metric" in info.value.problems[0][1]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape", "/tmp/abs", "a\\b", "a\x00b", "-dash",
                                  " padded", "x" * 101])
def test_a_run_name_must_be_a_plain_directory_name(name):
    # runs/<name> must be one new directory under runs/: never runs/ itself, its parent, or somewhere else.
    with pytest.raises(UserError) as info:
        recipe_from_dict({**MINIMAL, "name": name})
    assert [src for src, _ in info.value.problems] == ["name"]


@pytest.mark.parametrize("name", ["x", "drug-review-sentiment", "run_1.2", "A" * 100])
def test_plain_run_names_are_accepted(name):
    assert recipe_from_dict({**MINIMAL, "name": name}).name == name


@pytest.mark.parametrize("override, key", [
    ("seed=-1", "seed"),
    ("seed=1e20", "seed"),
    ("seed=4294967296", "seed"),
    ("seed=1.5", "seed"),
    ("training.epochs=.inf", "training.epochs"),
    ("training.epochs=.nan", "training.epochs"),
    ("training.weight_decay=.inf", "training.weight_decay"),
])
def test_seed_and_float_keys_must_be_usable_numbers(tmp_path, override, key):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(UserError) as info:
        load_recipe(path, [override])
    assert [src for src, _ in info.value.problems] == [key]


def test_seed_range_ends_are_accepted(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_recipe(path, ["seed=0"]).seed == 0
    assert load_recipe(path, ["seed=4294967295"]).seed == 2**32 - 1  # numpy's largest seed


def test_a_recipe_path_that_is_a_directory_says_so(tmp_path):
    with pytest.raises(UserError, match="is a directory") as info:
        load_recipe(tmp_path)
    assert info.value.source == str(tmp_path)


def test_eval_metrics_accept_family_names(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "task": {"type": "generation"}}))
    assert load_recipe(path, ["eval.metrics=[rouge, bleu]"]).eval.metrics == [
        "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]


def test_eval_generation_controls_default_off_and_parse():
    assert recipe_from_dict(MINIMAL).eval.generation.model_dump() == {
        "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "stop": []}
    recipe = recipe_from_dict({**MINIMAL, "eval": {"generation": {
        "repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "stop": ["\n\n", "Question:"]}}})
    assert recipe.eval.generation.repetition_penalty == 1.2
    assert recipe.eval.generation.no_repeat_ngram_size == 3
    assert recipe.eval.generation.stop == ["\n\n", "Question:"]


def test_eval_generation_rejects_unknown_keys_and_values_out_of_range():
    bad = {**MINIMAL, "eval": {"generation": {"repetition_penalty": 0.9, "no_repeat_ngram_size": -1, "stopp": []}}}
    with pytest.raises(UserError) as info:
        recipe_from_dict(bad)
    assert sorted(src for src, _ in info.value.problems) == [
        "eval.generation.no_repeat_ngram_size", "eval.generation.repetition_penalty", "eval.generation.stopp"]


def test_unknown_key_names_itself_and_the_valid_keys_at_its_level():
    with pytest.raises(UserError) as info:
        recipe_from_dict({**MINIMAL, "trainin": {}, "data": {"train": "t", "split": {"tset": 0.1}}})
    problems = dict(info.value.problems)
    top, split = problems["trainin"], problems["data.split.tset"]
    assert "unknown key 'trainin'" in top and "valid keys here: name, seed, model, task, data, method" in top
    assert "valid keys here: validation, test, stratify, group_by" in split
    assert all("README.md" in p and "Recipes" in p and "DESIGN.md" not in p for p in (top, split))


def test_rag_without_a_corpus_is_a_recipe_error(recipe_file, tmp_path):
    code, output = run_cli("train", recipe_file(eval={"systems": ["rag"]}), "--out", tmp_path / "a")
    assert code == 2 and "eval.rag" in output


def test_an_unknown_system_is_a_recipe_error(recipe_file, tmp_path):
    code, output = run_cli("train", recipe_file(eval={"systems": ["zero_shot", "retrieval"]}), "--out", tmp_path / "b")
    assert code == 2 and "unknown system 'retrieval'" in output
