"""The experiment-management commands: ``lmtune estimate``, ``lmtune tune`` and ``lmtune eval``.

They register on the one :data:`lmtune.cli.app`, so ``lmtune --help`` lists them with the others.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmtune.cli import SET_HELP, app, user_errors


@app.command("eval")
@user_errors
def eval_(recipe: Path = typer.Argument(..., help="Recipe YAML file: its data, split, seed, template and eval keys "
                                        "say what is measured."),
          model: str = typer.Option(..., "--model", help="What answers: a model (alias, hub id, local directory, "
                                    ".gguf file), or a run directory of `lmtune train` (or its final/)."),
          systems: str | None = typer.Option(None, "--systems", help="Comma-separated systems, e.g. "
                                             "zero_shot,few_shot,finetuned (default: the recipe's eval.systems; "
                                             "a run adds finetuned, a model leaves the fine-tuned ones out)."),
          out: Path | None = typer.Option(None, "--out", help="Run directory (default "
                                          "runs/<name>-eval-<model or run name>)."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          resume: bool = typer.Option(False, "--resume", help="Continue an interrupted evaluation in --out."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")):
    """Evaluate a model or a finished run on the recipe's test split with its systems and probes; no training."""
    from lmtune.evaluation_run import evaluate, plan
    from lmtune.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    chosen = None if systems is None else [s.strip() for s in systems.split(",") if s.strip()]
    checked = plan(rec, model, chosen, out, resume=resume, overwrite=overwrite)  # before any data or model loads
    if quiet:
        from lmtune.progress import quiet_libraries

        quiet_libraries()
    run_dir = evaluate(checked, resume=resume, overwrite=overwrite, quiet=quiet)
    from lmtune.report.summary import print_summary

    print_summary(run_dir)


@app.command()
@user_errors
def tune(recipe: Path = typer.Argument(..., help="Recipe YAML file with a search: section (key path -> a list of "
                                       "choices or {low, high, log, step})."),
         trials: int = typer.Option(20, "--trials", min=1, help="Stop when N trials are complete or pruned (those of "
                                    "an earlier, interrupted search of the same study count)."),
         timeout: float | None = typer.Option(None, "--timeout", min=0, help="Start no new trial after S seconds."),
         set_: list[str] = typer.Option([], "--set", help=SET_HELP),
         out: Path | None = typer.Option(None, "--out", help="Study directory: study.db, trial-<n>/, tune.html, "
                                         "best.yaml (default runs/<name>-tune; an existing one is resumed)."),
         pruner: str = typer.Option("median", "--pruner", help="median: stop a trial whose validation loss is worse "
                                    "than the median of the earlier trials at the same step; none: never stop one."),
         startup_trials: int = typer.Option(5, "--startup-trials", min=0, help="Median pruner: trials that train to "
                                            "the end (and report at a step) before any is pruned there."),
         warmup_steps: int = typer.Option(0, "--warmup-steps", min=0, help="Median pruner: training steps of a trial "
                                          "before it may be pruned."),
         final: bool = typer.Option(False, "--final", help="Then train best.yaml as a normal run (every system, "
                                    "evaluated on test once) into <name>-best beside the study directory."),
         verbose: bool = typer.Option(False, "--verbose", help="Show each trial's stages and training progress.")):
    """Search hyperparameters on Optuna: each trial a run scored on the validation split, bad ones pruned."""
    from lmtune.recipe import load_recipe
    from lmtune.tune.study import Options, prepare
    from lmtune.tune.study import tune as run_search

    rec = load_recipe(recipe, set_)
    options = Options(trials=trials, timeout=timeout, pruner=pruner, startup_trials=startup_trials,
                      warmup_steps=warmup_steps, out=out, final=final, verbose=verbose)
    search = prepare(rec, options)  # the space, the options and the directories, before any data or model loads
    from lmtune.progress import quiet_libraries

    if not verbose:
        quiet_libraries()
    run_search(search)


@app.command()
@user_errors
def estimate(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
             hardware: str | None = typer.Option(None, "--hardware", help="Also project onto named hardware (marked "
                                                 "as a projection): a10-24gb, l4-24gb, rtx4090-24gb, a100-40gb, "
                                                 "l40s-48gb, a100-80gb, h100-80gb."),
             price_per_hour: float | None = typer.Option(None, "--price-per-hour", min=0, help="Price of one "
                                                         "device-hour (default with --hardware: the table's)."),
             steps: int = typer.Option(3, "--steps", min=1, help="Optimizer steps timed on this machine, after one "
                                       "warm-up."),
             processes: int = typer.Option(1, "--processes", min=1, help="Processes the run trains in (`lmtune "
                                           "train --processes N`, torchrun, accelerate launch): steps of N x "
                                           "training.batch_size examples, memory per process under "
                                           "training.distributed.strategy."),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP),
             json_: bool = typer.Option(False, "--json", help="Print the estimate as one JSON object."),
             quiet: bool = typer.Option(False, "--quiet", help="No progress messages.")):
    """Before training: exact tokens and steps, memory broken down, time from a few real steps, money, the fit."""
    from lmtune.estimate import hardware as devices
    from lmtune.recipe import load_recipe

    if hardware is not None:
        devices.get(hardware)  # an unknown name fails before the recipe's data or model is read
    rec = load_recipe(recipe, set_)
    from lmtune.progress import quiet_libraries, stdout_to_stderr

    if quiet:
        quiet_libraries()
    from lmtune.estimate.run import estimate as run_estimate

    with stdout_to_stderr():  # stdout is the estimate alone
        result = run_estimate(rec, hardware, price_per_hour, steps=steps, quiet=quiet, processes=processes)
    if json_:
        import json

        print(json.dumps(result))
        return
    from lmtune.estimate.report import text

    print(text(result))
