"""``lmtune curve``: the learning curve of a recipe (registers on the one :data:`lmtune.cli.app`)."""

from __future__ import annotations

from pathlib import Path

import typer

from lmtune.cli import SET_HELP, app, user_errors


@app.command()
@user_errors
def curve(recipe: Path = typer.Argument(..., help="Recipe YAML file: each point trains it on a subset of train."),
          fractions: str = typer.Option("0.1,0.25,0.5,1", "--fractions", help="Comma-separated fractions of the "
                                        "training split in (0, 1]; each is a point of round(fraction * N) examples."),
          repeats: int = typer.Option(1, "--repeats", min=1, help="Subsets per fraction, drawn with seeds 0..R-1 "
                                      "(the training seed stays the recipe's)."),
          out: Path | None = typer.Option(None, "--out", help="Curve directory: curve.json, curve.html, points/ "
                                          "(default runs/<name>-curve; an existing one of this recipe continues)."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          quiet: bool = typer.Option(False, "--quiet", help="Only each point's line and the fit's sentence.")):
    """Learning curve: train on nested subsets of train, score each on test, fit and extrapolate the metric."""
    from lmtune.curve.plan import parse_fractions, plan
    from lmtune.recipe import load_recipe

    chosen = parse_fractions(fractions)  # before the recipe is read: a typo fails at once
    checked = plan(load_recipe(recipe, set_), chosen, repeats, out)  # sizes and directory, before anything is written
    if quiet:
        from lmtune.progress import quiet_libraries

        quiet_libraries()
    from lmtune.curve.points import run_curve

    run_curve(checked, quiet=quiet)
