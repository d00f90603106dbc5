"""``lmtune demo``: the main job on embedded defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from lmtune.recipe import apply_override, recipe_from_dict
from lmtune.run_dir import RunDir


def demo_recipe_text() -> str:
    """The embedded demo recipe (also shipped as recipes/drug-reviews-demo.yaml)."""
    return resources.files("lmtune").joinpath("demo.yaml").read_text(encoding="utf-8")


def run_demo(out: Path, overrides: list[str], fresh: bool = False, quiet: bool = False) -> Path:
    """Run the demo recipe; a previous demo in ``out`` is resumed unless ``fresh``."""
    from lmtune.lifecycle import run_recipe
    from lmtune.report.summary import print_summary

    raw = yaml.safe_load(demo_recipe_text())
    for item in overrides:
        apply_override(raw, item)
    recipe = recipe_from_dict(raw, source="demo recipe")
    # An interrupted demo picks up where it stopped: measured baselines and the newest checkpoint. A demo
    # asked for with other settings (--set) starts again instead: resuming would mix two experiments.
    resume = not fresh and RunDir(out).has_work and not _changed(recipe, out)
    run_dir = run_recipe(recipe, out, resume=resume, overwrite=True, quiet=quiet)
    print_summary(run_dir)
    return run_dir


def _changed(recipe, out: Path) -> bool:
    """Whether ``recipe`` differs from the one the demo in ``out`` was started with."""
    from lmtune.errors import UserError
    from lmtune.resume_check import changes

    try:
        return bool(changes(recipe, out))
    except UserError:
        return True  # missing or unreadable: start again (the demo always overwrites its own directory)
