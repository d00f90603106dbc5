"""``train --resume`` with a recipe that differs from the run's recipe.yaml: refused, or (eval.* only) allowed."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from lmtune.cli import app
from lmtune.errors import UserError
from lmtune.recipe import load_recipe

TINY = {"training": {"max_steps": 2, "eval_every": 2, "save_every": 2},
        "eval": {"systems": ["few_shot", "finetuned"], "few_shot_k": 2}}


def _fake_run(recipe_file, out, **changes):
    """A run directory whose recipe.yaml is the recipe of ``recipe_file(**TINY)`` (no model is loaded)."""
    saved = load_recipe(recipe_file(**TINY), []).model_dump(mode="json")
    out.mkdir()
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (out / "manifest.json").write_text("{}")
    return (out / "recipe.yaml").read_text()


def _never_load(monkeypatch):
    """Make loading a model fail loudly: the check must come before anything slow."""
    from lmtune import tasks

    def load(self, *args, **kwargs):
        raise AssertionError("the model was loaded before the recipe was compared")

    for kind in (tasks.TokenTask, tasks.HeadTask):
        monkeypatch.setattr(kind, "load", load, raising=False)


def test_changed_training_key_is_refused_naming_the_key(recipe_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    before = _fake_run(recipe_file, out)
    _never_load(monkeypatch)
    changed = recipe_file(training={**TINY["training"], "learning_rate": 1e-3}, eval=TINY["eval"])
    result = CliRunner().invoke(app, ["train", str(changed), "--out", str(out), "--resume", "--quiet"])
    output = result.stdout + (result.stderr or "")
    assert result.exit_code == 2, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: ")
    assert "training.learning_rate: 0.01 -> 0.001" in lines[0] and "--overwrite" in lines[0]
    assert (out / "recipe.yaml").read_text() == before


def test_many_changes_are_listed_compactly(recipe_file, tmp_path, monkeypatch):
    from lmtune import lifecycle

    out = tmp_path / "run"
    _fake_run(recipe_file, out)
    _never_load(monkeypatch)
    training = {**TINY["training"], "learning_rate": 1e-3, "batch_size": 2, "max_length": 32, "log_every": 2,
                "max_steps": 3, "weight_decay": 0.5}
    recipe = load_recipe(recipe_file(training=training, eval=TINY["eval"]), [])
    with pytest.raises(UserError) as err:
        lifecycle.run_recipe(recipe, out, resume=True, quiet=True)
    assert "and 1 more" in err.value.message and "\n" not in err.value.message


def test_changed_eval_key_is_refused_by_default(recipe_file, tmp_path, monkeypatch):
    from lmtune import lifecycle

    out = tmp_path / "run"
    before = _fake_run(recipe_file, out)
    _never_load(monkeypatch)
    recipe = load_recipe(recipe_file(training=TINY["training"], eval={**TINY["eval"], "few_shot_k": 3}), [])
    with pytest.raises(UserError) as err:
        lifecycle.run_recipe(recipe, out, resume=True, quiet=True)
    assert err.value.source == str(out)
    assert "eval.few_shot_k: 2 -> 3" in err.value.message and "--allow-eval-changes" in err.value.message
    assert (out / "recipe.yaml").read_text() == before


def test_changed_training_key_is_refused_even_with_eval_changes_allowed(recipe_file, tmp_path, monkeypatch):
    from lmtune import lifecycle

    out = tmp_path / "run"
    _fake_run(recipe_file, out)
    _never_load(monkeypatch)
    recipe = load_recipe(recipe_file(training={**TINY["training"], "learning_rate": 1e-3},
                                     eval={**TINY["eval"], "few_shot_k": 3}), [])
    with pytest.raises(UserError) as err:
        lifecycle.run_recipe(recipe, out, resume=True, quiet=True, allow_eval_changes=True)
    assert "training.learning_rate" in err.value.message


def test_allowed_eval_change_is_used_recorded_and_announced(recipe_file, tmp_path, capsys, monkeypatch):
    from lmtune import lifecycle, tasks

    real, shots_seen = tasks.TokenTask.run, []

    def run(self, system, model, tokenizer, encoder, spec, test, test_encoded, shots, *args, **kwargs):
        if system == "few_shot":
            shots_seen.append(len(shots))
        return real(self, system, model, tokenizer, encoder, spec, test, test_encoded, shots, *args, **kwargs)

    monkeypatch.setattr(tasks.TokenTask, "run", run)
    out = tmp_path / "run"
    lifecycle.run_recipe(load_recipe(recipe_file(**TINY), []), out, quiet=True)
    recipe = load_recipe(recipe_file(training=TINY["training"], eval={**TINY["eval"], "few_shot_k": 1}), [])
    capsys.readouterr()
    lifecycle.run_recipe(recipe, out, resume=True, quiet=True, allow_eval_changes=True)
    assert "eval.few_shot_k: 2 -> 1" in capsys.readouterr().err
    assert yaml.safe_load((out / "recipe.yaml").read_text())["eval"]["few_shot_k"] == 1
    # The baselines measured with the old eval settings are measured again with the new ones.
    assert shots_seen == [2, 1]
    assert set(json.loads((out / "eval.json").read_text())["results"]) == {"few_shot", "finetuned"}


def test_identical_recipe_resumes(recipe_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    path = recipe_file(**TINY)
    assert CliRunner().invoke(app, ["train", str(path), "--out", str(out), "--quiet"]).exit_code == 0
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(out), "--quiet", "--resume"])
    assert result.exit_code == 0, result.stdout + (result.stderr or "")


def test_keys_added_to_lmtune_after_the_run_started_are_not_differences():
    from lmtune.resume_check import differences

    saved = {"data": {"train": "t.jsonl", "clean": {"dedup": "exact"}}, "eval": {"few_shot_k": 4}}
    now = {"data": {"train": "t.jsonl", "clean": {"dedup": "exact", "leak_threshold": 0.8}, "sample": "stratified"},
           "eval": {"few_shot_k": 4, "generation": {"stop": []}}}
    assert differences(saved, now) == {}
    assert differences(saved, {**now, "eval": {"few_shot_k": 2}}) == {"eval.few_shot_k": (4, 2)}


def test_the_cli_passes_allow_eval_changes_through(recipe_file, tmp_path, monkeypatch):
    from lmtune import lifecycle

    seen = {}

    def fake_run_recipe(recipe, out, **kwargs):
        seen.update(kwargs)
        raise UserError("stop here", source="test")

    monkeypatch.setattr(lifecycle, "run_recipe", fake_run_recipe)
    out = tmp_path / "run"
    _fake_run(recipe_file, out)
    changed = recipe_file(training=TINY["training"], eval={**TINY["eval"], "few_shot_k": 3})
    result = CliRunner().invoke(app, ["train", str(changed), "--out", str(out), "--resume", "--allow-eval-changes"])
    assert result.exit_code == 2 and seen["allow_eval_changes"] is True


def test_a_demo_asked_for_with_other_settings_starts_again_instead_of_resuming(tmp_path):
    from lmtune.demo import _changed, demo_recipe_text
    from lmtune.recipe import recipe_from_dict

    recipe = recipe_from_dict(yaml.safe_load(demo_recipe_text()), source="demo recipe")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    assert not _changed(recipe, tmp_path)
    other = recipe.model_copy(update={"seed": recipe.seed + 1})
    assert _changed(other, tmp_path)
    (tmp_path / "recipe.yaml").unlink()
    assert _changed(recipe, tmp_path)
