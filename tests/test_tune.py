"""``lmtune tune`` end to end on a tiny model: the planted best learning rate is found, a bad rate is pruned, a
killed search resumes, bad search spaces stop before training, and trials never score the test split.

The task is learnable in 20 steps: each review ends in the word that is its label, and a sharpened tiny Llama
(``tiny.sharpened``) fully fine-tuned at 0.01 reaches a validation macro-F1 near 0.87, where 1e-9 stays at
chance (0.17, one class predicted).
"""

import json

import optuna
import pytest
import yaml
from conftest import killed_cli, run_cli, write_jsonl
from optuna.trial import TrialState
from tiny import build_model, build_tokenizer, sharpened

pytestmark = pytest.mark.usefixtures("one_thread")

GOOD, BAD = 0.01, 1e-9
TEXTS = {"great": "the movie was great", "awful": "this drug gave me awful", "fine": "it was fine"}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(sharpened tiny model directory, reviews file) for a task the model learns in 20 steps at GOOD."""
    root = tmp_path_factory.mktemp("tune-task")
    tok = build_tokenizer()
    model = sharpened(build_model(len(tok)))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    words = list(TEXTS)
    records = [{"review": f"{i}: {TEXTS[words[i % 3]]}", "rating": words[i % 3]} for i in range(60)]
    return root / "model", write_jsonl(root / "reviews.jsonl", records)


@pytest.fixture
def tune_recipe(tmp_path, task):
    """Write a recipe with ``search`` (and any other keys given) merged in; return its path."""
    model, data = task

    def make(search, **sections):
        recipe = {
            "name": "tiny", "seed": 0, "model": str(model),
            "task": {"type": "classification", "labels": ["awful", "fine", "great"], "template": "classification"},
            "data": {"train": str(data), "fields": {"text": "review", "label": "rating"},
                     "split": {"validation": 0.25, "test": 0.25}},
            "method": {"name": "full"},
            "training": {"max_steps": 20, "batch_size": 4, "learning_rate": 1e-3, "eval_every": 5, "log_every": 5,
                         "max_length": 128, "precision": "fp32"},
            "eval": {"systems": ["zero_shot", "finetuned"]},
            "search": search,
        }
        for key, value in sections.items():
            recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path
    return make


def load(study_dir):
    return optuna.load_study(study_name="lmtune", storage=f"sqlite:///{study_dir / 'study.db'}")


def by_rate(study):
    """{learning rate: trial} of the trials that trained (a repeat of earlier values has no run directory)."""
    return {t.params["training.learning_rate"]: t for t in study.trials if t.user_attrs.get("run_dir")}


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tune_finds_the_planted_learning_rate_scored_on_validation_only(tune_recipe, tmp_path):
    out = tmp_path / "study"
    code, output = run_cli("tune", tune_recipe({"training.learning_rate": [BAD, GOOD]}), "--trials", 3,
                           "--pruner", "none", "--out", out, "--final")
    assert code == 0, output
    study = load(out)
    trained = by_rate(study)
    assert set(trained) == {BAD, GOOD} and all(t.state == TrialState.COMPLETE for t in trained.values())
    # The objective values themselves, not the luck of the draw: the rate that learns is clearly better.
    assert trained[GOOD].value >= 0.6 and trained[BAD].value <= 0.4, {k: t.value for k, t in trained.items()}
    assert study.best_trial.params["training.learning_rate"] == GOOD
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 3  # the repeat reuses its value
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["training"]["learning_rate"] == GOOD and "search" not in best and best["name"] == "tiny-best"
    assert best["eval"]["systems"] == ["zero_shot", "finetuned"]  # the recipe's own, not a trial's
    for t in trained.values():  # each trial: a run directory that scored the fine-tuned model on validation only
        run = out / t.user_attrs["run_dir"]
        body = json.loads((run / "eval.json").read_text())
        validation = lines(run / "data" / "validation.jsonl")
        assert body["split"] == "validation" and set(body["results"]) == {"finetuned"}
        assert body["n"] == len(validation) == 15
        predicted = lines(run / "predictions" / "finetuned.jsonl")
        assert [p["reference"] for p in predicted] == [r["label"] for r in validation]
        assert all(r["text"] in p["input"] for p, r in zip(predicted, validation))
        assert sorted(p.name for p in (run / "predictions").iterdir()) == ["finetuned.jsonl"]
        assert not (run / "checkpoints").exists() and (run / "final").is_dir()
    page = (out / "tune.html").read_text()
    assert "Leaderboard" in page and 'src="data:image/png;base64,' in page and "fANOVA" in page
    assert f"f1_macro {trained[GOOD].value:.4f} on validation" in output and "parameter importances" in output
    # --final: the best recipe trained normally, every system, scored on test once.
    final = json.loads((tmp_path / "tiny-best" / "eval.json").read_text())
    assert final["split"] == "test" and set(final["results"]) == {"zero_shot", "finetuned"}
    assert f"final: finetuned f1_macro {final['results']['finetuned']['f1_macro']:.4f} on {final['n']} test" in output


def test_a_trial_with_a_bad_rate_is_pruned_at_its_first_validation(tune_recipe, tmp_path):
    out = tmp_path / "study"
    code, output = run_cli("tune", tune_recipe({"training.learning_rate": [BAD, GOOD]}), "--trials", 2,
                           "--startup-trials", 1, "--out", out)
    assert code == 0, output
    study = load(out)
    trained = by_rate(study)
    good, bad = trained[GOOD], trained[BAD]
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    # Pruned on its numbers: at step 5 its validation loss was far above the complete trial's (values are -loss).
    assert list(bad.intermediate_values) == [5] and -bad.intermediate_values[5] > -good.intermediate_values[5] + 1
    run = out / bad.user_attrs["run_dir"]
    assert [m["step"] for m in lines(run / "metrics.jsonl") if m["split"] == "validation"] == [5]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith("TrialPruned: pruned at step 5")
    assert not (run / "eval.json").exists() and not (run / "checkpoints").exists()
    assert f"trial {bad.number}: training.learning_rate=1e-09: pruned (pruned at step 5" in output


def test_a_search_killed_mid_trial_resumes_and_reaches_its_trials(tune_recipe, tmp_path):
    out = tmp_path / "study"
    recipe = tune_recipe({"training.learning_rate": {"low": 3e-3, "high": 3e-2, "log": True}})
    args = ["tune", str(recipe), "--trials", "3", "--pruner", "none", "--out", str(out)]
    def ready(seen):  # once trial 0 is complete and trial 1 has started, in the middle of trial 1's training
        started = any(line.startswith("trial 1:") and "training in" in line for line in seen)
        return started and (out / "trial-1" / "metrics.jsonl").exists()
    seen = killed_cli(args, ready).splitlines()
    assert any(line.startswith("trial 0:") and "f1_macro" in line for line in seen), "".join(seen)
    killed = load(out)
    assert [t.state for t in killed.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert "1 running" in (out / "tune.html").read_text()  # the page was written as trial 1 started
    first = killed.trials[0].value

    code, output = run_cli(*args)
    assert code == 0, output
    assert "trial 1: left running by a search that was stopped; marked failed, its values queued" in output
    assert "resuming the study" in output and "1 of 3 trials done" in output
    study = load(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                               TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[2].params == study.trials[1].params and study.trials[2].user_attrs["retry_of"] == 1
    # the resumed sampler proposes new values: it does not replay the killed search's proposals
    assert "not trained again" not in output and study.trials[3].params != study.trials[0].params
    assert not (out / "trial-1" / "checkpoints").exists()
    assert study.trials[0].value == first  # the completed trial is kept, not run again
    assert json.loads((out / "trial-1" / "status.json").read_text())["state"] == "running"  # as the kill left it
    assert "left running by a search that was stopped" in (out / "tune.html").read_text()


@pytest.mark.parametrize("search, where, what", [
    ({"training.learnin_rate": [1e-4]}, "search.training.learnin_rate",
     "no recipe key training.learnin_rate; did you mean training.learning_rate?"),
    ({"training.learning_rate": {"low": 1e-3, "high": 1e-5}}, "search.training.learning_rate",
     "low 0.001 is above high 1e-05; swap them"),
    ({"training.learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "search.training.learning_rate",
     "a log range must lie above 0"),
    ({"method.peft.r": []}, "search.method.peft.r", "an empty choice list"),
    ({"training.batch_size": [0, 4]}, "search.training.batch_size", "0 is not a value training.batch_size takes"),
    ({"training.scheduler": ["cosine", "cosin"]}, "search.training.scheduler", "'cosin' is not a value"),
])
def test_a_bad_search_space_is_one_line_and_exit_2_before_training(tune_recipe, tmp_path, search, where, what):
    out = tmp_path / "study"
    code, output = run_cli("tune", tune_recipe(search), "--out", out)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, output
    assert errors[0].startswith(f"error: {where}: ") and what in errors[0], errors[0]
    assert "Traceback" not in output and not out.exists()


def test_tune_needs_a_validation_split_and_a_known_pruner(tune_recipe, tmp_path):
    out = tmp_path / "study"
    code, output = run_cli("tune", tune_recipe({"training.learning_rate": [GOOD]},
                                               data={"split": {"validation": 0.0, "test": 0.25}}), "--out", out)
    assert code == 2 and "error: data.split.validation: lmtune tune scores each trial on the validation" in output
    code, output = run_cli("tune", tune_recipe({"training.learning_rate": [GOOD]}), "--pruner", "hyperband",
                           "--out", out)
    assert code == 2 and "error: --pruner: unknown pruner 'hyperband'; choose from median, none" in output
    assert not out.exists()


def test_a_recipe_without_search_and_a_timeout_of_zero(tune_recipe, tmp_path):
    out = tmp_path / "study"
    code, output = run_cli("tune", tune_recipe(None), "--out", out)
    assert code == 2 and "error: search: lmtune tune needs a search space" in output and not out.exists()
    code, output = run_cli("tune", tune_recipe({"training.learning_rate": [GOOD]}), "--timeout", 0, "--out", out)
    assert code == 0 and "--timeout 0 s reached: no new trial started (0 of 20 done)" in output, output
    assert load(out).trials == [] and "0 trials" in (out / "tune.html").read_text()


def test_a_combination_the_schema_refuses_is_a_pruned_trial_with_its_reason(tune_recipe, tmp_path):
    out = tmp_path / "study"
    # prefix_tuning alone is a valid method, but not with the recipe's packing: found per trial, nothing trains.
    recipe = tune_recipe({"method.name": ["prefix_tuning"]}, training={"packing": True})
    code, output = run_cli("tune", recipe, "--trials", 1, "--out", out)
    assert code == 0, output
    [trial] = load(out).trials
    assert trial.state == TrialState.PRUNED and "invalid recipe" in trial.user_attrs["reason"]
    assert "training.packing" in trial.user_attrs["reason"] and not (out / "trial-0").exists()
    assert not (out / "best.yaml").exists() and "no complete trial yet" in (out / "tune.html").read_text()


def test_search_values_are_set_into_a_trial_recipe_as_set_sets_them(tune_recipe):
    from lmtune.recipe import load_recipe, recipe_from_dict
    from lmtune.tune import space

    recipe = load_recipe(tune_recipe({"training.learning_rate": {"low": "1e-5", "high": "1e-3", "log": True},
                                      "training.batch_size": {"low": 2, "high": 8, "step": 2},
                                      "method.peft.target_modules": [["q_proj"], "all-linear"],
                                      "model.dtype": ["fp32"]}))
    dims = {d.key: d for d in space.check(recipe)}
    assert dims["training.learning_rate"].low == 1e-5 and isinstance(dims["training.batch_size"].low, int)
    assert dims["method.peft.target_modules"].labels == ['["q_proj"]', "all-linear"]  # Optuna keeps scalars only
    values = {"training.learning_rate": 2e-4, "method.peft.target_modules": ["q_proj"], "model.dtype": "fp32"}
    trial = recipe_from_dict(space.trial_dict(space.base_dict(recipe), values, recipe.name, 7))
    assert trial.name == "tiny-trial-7" and trial.search is None and trial.eval.systems == ["finetuned"]
    assert trial.training.learning_rate == 2e-4 and trial.method.peft == {"target_modules": ["q_proj"]}
    assert trial.model.dtype == "fp32" and trial.model.name == recipe.model.name


def test_lmtune_train_says_it_leaves_search_to_lmtune_tune(tune_recipe, tmp_path):
    recipe = tune_recipe({"training.learning_rate": [GOOD]}, training={"max_steps": 1})
    code, output = run_cli("train", recipe, "--out", tmp_path / "run", "--quiet")
    assert code == 0, output
    assert "warning: " in output and "search: is read by `lmtune tune` only" in output


def test_the_median_pruner_waits_for_startup_trials_that_trained(tune_recipe, tmp_path):
    from optuna.distributions import FloatDistribution

    from lmtune.recipe import load_recipe
    from lmtune.tune.study import Options, open_study, prepare

    recipe = load_recipe(tune_recipe({"training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}))
    search = prepare(recipe, Options(trials=4, startup_trials=2, out=tmp_path / "study"))
    search.directory.mkdir()
    study = open_study(search)
    rate = FloatDistribution(1e-4, 1e-2, log=True)

    def finished(value, losses):  # a complete trial with validation losses (as -loss) at steps 5 and 10
        study.add_trial(optuna.trial.create_trial(params={"training.learning_rate": value}, value=0.8,
                                                  distributions={"training.learning_rate": rate},
                                                  intermediate_values=dict(zip((5, 10), losses))))

    def pruned_at_5(loss) -> bool:
        trial = study.ask({"training.learning_rate": rate})
        trial.report(-loss, 5)
        verdict = trial.should_prune()
        study.tell(trial, state=TrialState.FAIL)
        return verdict

    finished(1e-3, [-0.5, -0.4])
    study.add_trial(optuna.trial.create_trial(params={"training.learning_rate": 1e-3}, value=0.8,  # a repeat
                                              distributions={"training.learning_rate": rate}))
    assert not pruned_at_5(9.0)  # two complete trials, but only one trained: no median yet
    finished(2e-3, [-0.6, -0.5])
    assert pruned_at_5(9.0) and not pruned_at_5(0.1)
