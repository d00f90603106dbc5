"""Studies for the studio tests: a real Optuna study on SQLite as ``lmtune tune`` writes it, and ``curve.json`` /
``active.json`` files in the schemas ``lmtune curve`` and ``lmtune active --oracle`` write, each with run
directories where the study keeps its runs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from studio_runs import studio_run

#: (learning rate, LoRA r, state, objective) of the trials :func:`tune_study` adds, in trial order.
TRIALS = [(1e-4, 8, TrialState.COMPLETE, 0.61), (1e-3, 16, TrialState.COMPLETE, 0.74),
          (3e-5, 8, TrialState.PRUNED, None), (5e-4, 32, TrialState.COMPLETE, 0.69)]
SPACE = {"training.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
         "method.peft.r": CategoricalDistribution([8, 16, 32])}


def open_study(directory: Path) -> optuna.Study:
    """The study of ``directory`` as ``lmtune tune`` opens it (study name "lmtune", maximising)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{directory / 'study.db'}", study_name="lmtune",
                               direction="maximize", load_if_exists=True)


def add_trial(study: optuna.Study, directory: Path, lr: float, r: int, state: TrialState, value: float | None,
              runs: bool = True) -> int:
    """Add a finished trial with the user attributes ``lmtune tune`` sets (and, with ``runs``, its run directory);
    return its number."""
    number = len(study.get_trials(deepcopy=False))
    attrs = {"run_dir": f"trial-{number}", "val_loss": 1.2 - lr * 100, "seconds": 30.0 + number}
    if state == TrialState.PRUNED:
        attrs["reason"] = "pruned at step 4: validation loss 1.3 is worse than the median"
    trial = create_trial(params={"training.learning_rate": lr, "method.peft.r": r}, distributions=SPACE,
                         value=value, state=state, user_attrs=attrs,
                         intermediate_values={4: 1.3} if state == TrialState.PRUNED else None)
    study.add_trial(trial)
    if runs:
        studio_run(directory, f"trial-{number}",
                   name=f"lr-search-trial-{number}", state="finished" if state == TrialState.COMPLETE else "failed")
    return number


def tune_study(root: Path, name: str = "lr-search", trials=TRIALS) -> Path:
    """A search with ``trials`` (see :data:`TRIALS`) in ``root/name``, each with its run directory."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    study = open_study(directory)
    study.set_user_attr("metric", "f1_macro")
    for lr, r, state, value in trials:
        add_trial(study, directory, lr, r, state, value)
    return directory


#: The planted fit of :func:`curve_json`: y(n) = A - B * n^-C.
A, B, C = 0.9, 2.0, 0.5


def curve_json(root: Path, name: str = "lc", statement: str = "Doubling the 400 training examples is expected to "
               "add 0.02 f1_macro [0.01, 0.04].", runs: bool = True) -> Path:
    """A learning curve of four sizes, one repeat: three finished points (their runs made), one pending, and the
    zero-shot reference."""
    directory = root / name
    points = []
    for i, (fraction, n) in enumerate(((0.1, 40), (0.25, 100), (0.5, 200), (1.0, 400))):
        value = A - B * n ** -C
        finished = i < 3
        run = f"points/n{n}-r0"
        if finished and runs:
            studio_run(directory / "points", f"n{n}-r0", name=f"{name}-n{n}-r0")
        points.append({"fraction": fraction, "n_train": n, "repeat": 0, "run": run,
                       "state": "finished" if finished else "pending", "value": value if finished else None,
                       "ci_low": value - 0.05 if finished else None, "ci_high": value + 0.05 if finished else None,
                       "seconds": 12.5 * (i + 1) if finished else None})
    body = {"name": name, "recipe_sha256": "0" * 64, "metric": "f1_macro", "system": "finetuned",
            "higher_is_better": True, "n_train_total": 400, "fractions": [0.1, 0.25, 0.5, 1.0], "repeats": 1,
            "points": points, "notes": ["the smallest size leaves one class with 2 examples"],
            "baseline": {"system": "zero_shot", "value": 0.35, "ci_low": 0.3, "ci_high": 0.4, "run": "points/zero-shot",
                         "seconds": 7.5},
            "fit": {"form": "a - b * n^-c", "a": A, "b": B, "c": C, "at_n": 200, "doubling_gain": 0.02,
                    "doubling_ci": [0.01, 0.04], "flattens_at": 10000, "flatten_threshold": 0.01,
                    "statement": statement}}
    if runs:
        studio_run(directory / "points", "zero-shot", name=f"{name}-zero-shot")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "curve.json").write_text(json.dumps(body))
    return directory


def active_json(root: Path, name: str = "al", runs: bool = True) -> Path:
    """An active-learning experiment: entropy and random, one seed, rounds 0 and 1 finished and round 2 running."""
    directory = root / name
    arms, curves = [], {}
    for k, strategy in enumerate(("entropy", "random")):
        rounds = []
        for r in range(3):
            value = 0.5 + 0.05 * r + 0.03 * k * r if r < 2 else None
            run = f"{strategy}-s0/round-{r}"
            if r < 2 and runs:
                studio_run(directory / f"{strategy}-s0", f"round-{r}", name=f"{name}-{strategy}-{r}")
            rounds.append({"round": r, "n_labelled": 20 + 20 * r, "value": value,
                           "ci_low": value - 0.04 if value else None, "ci_high": value + 0.04 if value else None,
                           "run": run, "state": "finished" if r < 2 else "running", "seconds": 20.0 if r < 2 else None,
                           "selected_score_mean": 0.8 - 0.1 * r if r else None})
        arms.append({"strategy": strategy, "seed": 0, "rounds": rounds})
        curves[strategy] = [{"n_labelled": x["n_labelled"], "mean": x["value"], "ci_low": x["ci_low"],
                             "ci_high": x["ci_high"], "seeds": 1} for x in rounds if x["value"] is not None]
    body = {"name": name, "recipe_sha256": "0" * 64, "metric": "f1_macro", "higher_is_better": True,
            "strategies": ["random", "entropy"], "seeds": [0], "budget": 20, "initial": 20, "rounds": 3,
            "start": "scratch", "pool_size": 500, "arms": arms, "curves": curves,
            "labels_to_reach": {"entropy": 40, "random": 40}, "target": {"strategy": "random", "value": 0.55},
            "statement": "entropy reached random's final f1_macro with 40 labels, as random did."}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "active.json").write_text(json.dumps(body))
    return directory
