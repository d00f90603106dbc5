"""``lmtune active``: the unlabelled records most worth labelling next, or (``--oracle``) the experiment that
measures whether a strategy saves labels over random selection. It registers on :data:`lmtune.cli.app`."""

from __future__ import annotations

from pathlib import Path

import typer

from lmtune.cli import SET_HELP, app, user_errors
from lmtune.errors import UserError

STRATEGY_HELP = ("entropy, margin, least_confidence (uncertainty of the scoring model), committee (disagreement of "
                 "zero-shot, few-shot and, with --run, fine-tuned; ROUGE-L between their outputs for generation), "
                 "diverse (uncertainty plus k-means over embeddings), random.")


@app.command()
@user_errors
def active(recipe: Path = typer.Argument(..., help="Recipe YAML file: the task, template, data format and model."),
           pool: Path = typer.Option(..., "--pool", help="Unlabelled records in the recipe's data format "
                                     "(data.fields applies; a label they carry is ignored without --oracle)."),
           budget: int = typer.Option(..., "--budget", help="Records to select (with --oracle: per round)."),
           strategy: str = typer.Option("entropy", "--strategy", help=STRATEGY_HELP),
           run: str | None = typer.Option(None, "--run", help="A finished run of this recipe whose fine-tuned model "
                                          "scores the pool (default: the recipe's base model zero-shot)."),
           out: Path | None = typer.Option(None, "--out", help="The queue file (default runs/<name>-active/"
                                           "queue-<strategy>.jsonl); with --oracle the experiment's directory "
                                           "(default runs/<name>-active)."),
           seed: int | None = typer.Option(None, "--seed", help="Seed of random selection and of ties (default: the "
                                           "recipe's seed)."),
           oracle: str | None = typer.Option(None, "--oracle", help="A pool field holding each record's true label: "
                                             "run the unattended experiment (select, label from FIELD, retrain)."),
           rounds: int | None = typer.Option(None, "--rounds", help="--oracle: rounds, round 0 included (default 3)."),
           strategies: str | None = typer.Option(None, "--strategies", help="--oracle: comma-separated strategies "
                                                 "compared (default: --strategy and random)."),
           seeds: str | None = typer.Option(None, "--seeds", help="--oracle: comma-separated seeds, one arm per "
                                            "strategy and seed (default 0)."),
           initial: int | None = typer.Option(None, "--initial", help="--oracle: records labelled at random in "
                                              "round 0 (default: --budget)."),
           set_: list[str] = typer.Option([], "--set", help=SET_HELP),
           quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")):
    """Pick the unlabelled records most worth labelling next (a labelling queue), or measure it with --oracle."""
    from lmtune.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    if oracle is None:
        given = [name for name, value in (("--rounds", rounds), ("--strategies", strategies), ("--seeds", seeds),
                                          ("--initial", initial)) if value is not None]
        if given:
            raise UserError("applies to the oracle experiment only; add --oracle FIELD, or leave it out",
                            source=given[0])
        return _queue(rec, pool, budget, strategy, run, out, seed, quiet)
    if run is not None:
        raise UserError("the oracle experiment trains its own model every round; leave --run out", source="--run")
    chosen = _names(strategies, "--strategies") if strategies is not None else list(dict.fromkeys([strategy,
                                                                                                   "random"]))
    _experiment(rec, pool, oracle, budget, 3 if rounds is None else rounds, chosen,
                _seeds(seeds), initial, out, quiet)


def _queue(rec, pool: Path, budget: int, strategy: str, run: str | None, out: Path | None, seed: int | None,
           quiet: bool) -> None:
    from lmtune.active import queue

    checked = queue.plan(rec, pool, budget, strategy, run, out, seed, quiet)  # before any model loads
    _quiet(quiet)
    print(queue.describe(queue.select(checked)))


def _experiment(rec, pool: Path, oracle: str, budget: int, rounds: int, chosen: list[str], seeds: list[int],
                initial: int | None, out: Path | None, quiet: bool) -> None:
    from lmtune.active import experiment, results

    exp = experiment.prepare(rec, pool, oracle, budget, rounds, chosen, seeds, initial, out, quiet)
    _quiet(True)  # the rounds' own progress bars and stage lines are not shown: one line per round is
    directory = experiment.run(exp)
    print(results.document(exp)["statement"])
    print(f"experiment: {(directory / experiment.ACTIVE_JSON).resolve()}\n"
          f"page: {(directory / experiment.ACTIVE_HTML).resolve()}")


def _names(text: str, option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("names nothing; give a comma-separated list, e.g. entropy,random", source=option)
    return names


def _seeds(text: str | None) -> list[int]:
    if text is None:
        return [0]
    try:
        return [int(part) for part in _names(text, "--seeds")]
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of whole numbers, e.g. 0,1,2",
                        source="--seeds") from None


def _quiet(quiet: bool) -> None:
    if quiet:
        from lmtune.progress import quiet_libraries

        quiet_libraries()
