"""The search's result as a recipe (``best.yaml``), and ``--final``: that recipe trained as a normal run.

``best.yaml`` is the recipe as written (its ``--set`` overrides included) with the best complete trial's
values, ``search:`` removed and the name ``<name>-best``, so ``lmtune train best.yaml`` is the final run.
``--final`` trains it into ``<name>-best`` beside the study directory: every system of ``eval.systems``,
evaluated on the test split once.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from optuna.trial import TrialState

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.progress import say
from lmtune.recipe import recipe_from_dict
from lmtune.run_dir import RunDir
from lmtune.tune import space

BEST = "best.yaml"


def best_trial(study):
    """The best complete trial, or None while there is none."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_best(search) -> Path | None:
    """Write ``best.yaml`` into the study directory; None (and nothing written) while no trial is complete."""
    best = best_trial(search.study)
    if best is None:
        return None
    raw = space.with_values(search.base, space.values_of(best.params, search.dims), space.best_name(search.recipe.name))
    header = (f"# lmtune tune: the recipe with trial {best.number}'s values ({search.view.metric} {best.value:.4f} "
              f"on the validation split).\n# Train it with: lmtune train {search.directory / BEST}\n")
    path = search.directory / BEST
    atomic.write_text(path, header + yaml.safe_dump(raw, sort_keys=False))
    return path


def train_best(search, best_recipe: Path | None) -> Path:
    """``--final``: train ``best.yaml`` as a normal run, print its summary and its test score.

    Raises:
        UserError: no trial completed, so there is no best recipe.
    """
    from lmtune.lifecycle import run_recipe
    from lmtune.report.summary import print_summary

    if best_recipe is None:
        raise UserError("no trial completed, so there is no best recipe to train; run more --trials",
                        source=str(search.directory))
    recipe = recipe_from_dict(yaml.safe_load(best_recipe.read_text()), source=str(best_recipe))
    best = best_trial(search.study)
    say(f"final: training {best_recipe} (trial {best.number}'s values) into {search.final_dir}, evaluated on test")
    run_dir = run_recipe(recipe, out=search.final_dir)
    print_summary(run_dir)
    body = RunDir(run_dir).read_eval()
    metric, system = search.view.metric, search.view.system
    value = ((body.get("results") or {}).get(system) or {}).get(metric)
    shown = f"{value:.4f}" if isinstance(value, int | float) else "not measured"
    print(f"final: {system} {metric} {shown} on {body.get('n')} test examples (trial {best.number}: {best.value:.4f} "
          f"on validation); run directory {run_dir}")
    return run_dir
