"""``train --resume``: the recipe must be the one the run was started with.

A resumed run continues training from a checkpoint made with the saved recipe, so a changed learning
rate, data file or model would silently mix two experiments in one run directory (and the run's
``recipe.yaml`` would then describe neither). Keys under ``eval.`` change only how the result is
measured; they may be changed on purpose, and then the baselines are measured again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lmtune import distributed
from lmtune.errors import UserError
from lmtune.progress import say
from lmtune.recipe import Recipe
from lmtune.recipe_model import as_mapping
from lmtune.run_dir import RunDir

#: How many differences the error lists before "and N more" (it stays one readable line).
SHOWN = 5
#: The one section a resumed run may change (with ``allow_eval_changes``).
EVAL_PREFIX = "eval."


def check_resume(recipe: Recipe, run_dir: Path, allow_eval_changes: bool = False,
                 world: distributed.World | None = None, announce: bool = True) -> list[str]:
    """Compare ``recipe`` with the run's saved ``recipe.yaml``; refuse a resume that would change it.

    Args:
        recipe: the recipe given for the resumed run.
        run_dir: the run directory being resumed.
        allow_eval_changes: accept changed ``eval.*`` keys (announced on stderr); other keys are
            always refused.
        world: the processes that will continue it (default: this process's, as the launcher set them).
            ``lmtune train --processes N`` checks with N before it starts them.
        announce: say which ``eval.*`` keys changed (the launcher leaves it to the processes it starts).

    Returns:
        The changed ``eval.*`` keys that were accepted (empty when the recipe is unchanged or there
        is no saved recipe yet, e.g. a resume of an empty directory).

    Raises:
        UserError: (source: the run directory) a key outside ``eval.`` differs, or an ``eval.*`` key
            differs and ``allow_eval_changes`` is False.
    """
    if not RunDir(run_dir).recipe.is_file():
        return []
    diffs = changes(recipe, run_dir)
    if _same_global_batch(recipe, run_dir, world or distributed.world()):  # other processes, the same batch
        diffs.pop("training.batch_size", None)
    for key in [k for k in diffs if k.startswith("training.distributed.")]:
        diffs.pop(key)  # how processes share the run: _same_global_batch checked the checkpoint can continue
    if not diffs:
        return []
    trained = {k: v for k, v in diffs.items() if not k.startswith(EVAL_PREFIX)}
    if trained:
        # Keys that change what is trained come first; eval.* ones are listed too, so one fix suffices.
        ordered = {**trained, **{k: v for k, v in diffs.items() if k not in trained}}
        raise UserError(f"the recipe differs from the one this run was trained with ({_listed(ordered)}); "
                        "resuming would mix two experiments in one run: pass --overwrite to start it again, "
                        "or --out for a new run", source=str(run_dir))
    if not allow_eval_changes:
        raise UserError(f"the recipe's evaluation settings differ from this run's ({_listed(diffs)}); pass "
                        "--allow-eval-changes to resume and evaluate with the new ones, --overwrite to start "
                        "again, or --out for a new run", source=str(run_dir))
    if announce:
        say(f"notice: {run_dir}: resuming with changed evaluation settings ({_listed(diffs, limit=None)}); "
            "the baselines are measured again and recipe.yaml records the new values")
    return sorted(diffs)


def _same_global_batch(recipe: Recipe, run_dir: Path, world: distributed.World) -> bool:
    """Whether the newest checkpoint's examples per micro-batch over all processes are this run's too.

    Raises:
        UserError: (``training.batch_size``) they differ: the steps after the checkpoint would see other examples.
    """
    from lmtune.train import checkpoint, parallel

    newest = checkpoint.latest(RunDir(run_dir).checkpoints)
    if newest is None:
        return False
    saved = parallel.read_world(newest)
    parallel.check_global_batch(saved, world, recipe.training.batch_size)
    parallel.check_strategy(saved, world, recipe.training.distributed.strategy)
    return saved.get("global_batch") is not None


def changes(recipe: Recipe, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """:func:`differences` between the run's saved ``recipe.yaml`` and ``recipe``.

    Raises:
        UserError: the saved recipe cannot be read or parsed.
    """
    try:
        saved = RunDir(run_dir).read_recipe()
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the run's recipe.yaml ({exc}); pass --overwrite to start the run again "
                        "or --out for a new one", source=str(run_dir)) from None
    if isinstance(saved, dict) and "model" in saved:  # `model: <ref>` (older runs) is {name: <ref>, dtype: auto}
        saved["model"] = as_mapping(saved["model"])
    return differences(saved, recipe.model_dump(mode="json"))


def differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted key -> ``(old, new)`` for every leaf that differs; a list is compared as one value.

    A key the saved recipe does not have is not a difference: the run was started by an lmtune that
    had no such key yet, and its recipe.yaml records every key that lmtune had (defaults filled in),
    so the new key's default stands for the behaviour that run already had.
    """
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return {} if old == new else {prefix.rstrip("."): (old, new)}
    out: dict[str, tuple[Any, Any]] = {}
    for key in old:
        out.update(differences(old[key], new.get(key), f"{prefix}{key}."))
    return out


def _listed(diffs: dict[str, tuple[Any, Any]], limit: int | None = SHOWN) -> str:
    """``key: old -> new`` for the first ``limit`` differences, then how many more."""
    items = list(diffs.items())
    shown = items if limit is None else items[:limit]
    text = ", ".join(f"{key}: {_value(old)} -> {_value(new)}" for key, (old, new) in shown)
    return text + (f" and {len(items) - len(shown)} more" if len(items) > len(shown) else "")


def _value(value: Any) -> str:
    """A value as it is written in a recipe (flow-style YAML, one line, shortened if long)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."
