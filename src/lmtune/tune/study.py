"""The search: an Optuna study in SQLite beside the runs, each trial a run directory scored on validation.

The study directory (``--out``, default ``runs/<name>-tune``)::

    study.db      the Optuna study (``RDBStorage`` on SQLite, study name "lmtune"); a killed search resumes from it
    tune.lock     held while a search runs: a second search of the same study is refused
    trial-<n>/    trial n's run directory (Optuna's trial number), scored on the validation split only
    tune.html     leaderboard, parameter importances, parallel-coordinate plot
    best.yaml     the recipe with the best trial's values, ``search:`` removed, named ``<name>-best``

A trial is ``lifecycle.run_recipe`` with ``evaluate_on="validation"``: its fine-tuned systems are scored on
the validation split (never test) and the objective is the task's primary metric there. Each validation
loss during training is reported to the trial; when the pruner says so the run stops at once (its
``status.json`` says ``failed``, with the error ``TrialPruned: pruned at step ...``) and the trial is
pruned. A trial's checkpoints are removed when it ends (a trial is never resumed; ``final/`` keeps the model); the
values of a trial a killed search left running are the next search's first trial.
``--trials N`` counts complete and pruned trials, an earlier interrupted search's included.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock, Timeout
from optuna.trial import TrialState

from lmtune import outputs
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.kinds import systems as system_kinds
from lmtune.progress import say
from lmtune.recipe import Recipe, recipe_from_dict
from lmtune.run_dir import RUNS, RunDir
from lmtune.tune import page, space

STUDY_NAME, STUDY_DB, LOCK = "lmtune", "study.db", "tune.lock"
PRUNERS = ("median", "none")
#: Trials that fail in a row (a user error, out of memory) before the search stops with the last error.
MAX_FAILED_IN_A_ROW = 3
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Options:
    """The command line's choices (``lmtune tune --help``)."""

    trials: int = 20
    timeout: float | None = None
    pruner: str = "median"
    startup_trials: int = 5
    warmup_steps: int = 0
    out: Path | None = None
    final: bool = False
    verbose: bool = False


@dataclass
class Search:
    """What the stages of one search share."""

    recipe: Recipe
    dims: list[space.Dimension]
    base: dict[str, Any]  # the recipe as written, ready to take a trial's values
    directory: Path
    options: Options
    view: page.View
    study: Any = None
    started: float = field(default_factory=time.monotonic)
    failed_in_a_row: int = 0
    last_error: BaseException | None = None

    @property
    def final_dir(self) -> Path:
        """Where ``--final`` trains the best recipe: ``<name>-best`` beside the study directory."""
        return self.directory.parent / space.best_name(self.recipe.name)


def prepare(recipe: Recipe, options: Options) -> Search:
    """Check everything a search needs, before anything slow: the space, the options, the directories.

    Raises:
        UserError: a bad search space (see :func:`lmtune.tune.space.check`), an unknown ``--pruner``, a study
            directory that holds other files, or (``--final``) a final run directory that exists already.
    """
    dims = space.check(recipe)
    if options.pruner not in PRUNERS:
        raise UserError(f"unknown pruner {options.pruner!r}; choose from {', '.join(PRUNERS)}", source="--pruner")
    directory = Path(options.out or RUNS / f"{recipe.name}-tune")
    check_directory(directory)
    metric = metrics.PRIMARY_METRIC.get(recipe.task.type, "loss")
    view = page.View(recipe.name, directory, metric, system_kinds.main_trained(recipe.eval.systems),
                     metrics.higher_is_better(metric), dims, seed=recipe.seed)
    search = Search(recipe, dims, space.base_dict(recipe), directory, options, view)
    if options.final:
        outputs.check_run_dir(search.final_dir, resume=False, overwrite=False)
    if not recipe.training.eval_every and options.pruner != "none":
        view.notes.append("training.eval_every is null: no validation loss is measured during training, so no "
                          "trial can be pruned")
    return search


def check_directory(directory: Path) -> None:
    """A new or empty directory, or the directory of an earlier search (it has ``study.db``)."""
    outputs.check_dir_target(directory)
    if directory.is_dir() and not (directory / STUDY_DB).is_file():
        others = [p.name for p in directory.iterdir() if p.name != LOCK]
        if others:
            raise UserError(f"not empty and not a study of lmtune tune (no {STUDY_DB}); choose a new or empty "
                            "directory with --out", source=str(directory))


def tune(search: Search) -> Path:
    """Run the search to ``--trials`` counted trials (or ``--timeout``), write its page and best recipe; with
    ``--final`` train the best recipe too. Returns the study directory."""
    search.directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(search.directory / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError("another lmtune tune is running this study; wait for it to finish or give another --out",
                        source=str(search.directory)) from None
    try:
        search.study = open_study(search)
        fail_stale(search.study, search.directory)
        run_trials(search)
        best = write_outputs(search)
    finally:
        lock.release()
    print(page.table(search.study, search.view))
    _print_importances(search)
    print(f"study: {search.directory / STUDY_DB}\npage: {(search.directory / 'tune.html').resolve()}")
    if best is not None:
        print(f"best recipe: {best}")
    if search.options.final:
        from lmtune.tune.final import train_best

        train_best(search, best)
    return search.directory


def open_study(search: Search):
    """The study of this directory, created on the first search and loaded after (seeded TPE, the pruner asked).

    Raises:
        UserError: the study was started with another recipe (its search space or settings differ).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    o = search.options
    # n_min_trials: a step's median needs startup_trials trials that reported at that step, so a repeat of earlier
    # values (complete, but never trained, so with no validation losses) does not count as a reference.
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=o.startup_trials, n_warmup_steps=o.warmup_steps,
                                          n_min_trials=max(1, o.startup_trials))
              if o.pruner == "median" else optuna.pruners.NopPruner())
    storage = optuna.storages.RDBStorage(f"sqlite:///{(search.directory / STUDY_DB).resolve()}")
    fingerprint = hashlib.sha256(json.dumps(search.base, sort_keys=True).encode()).hexdigest()
    differs = UserError("holds a study of another recipe (its search space or other keys differ); give another "
                        "--out, or delete this directory to start over", source=str(search.directory))
    try:
        study = optuna.create_study(storage=storage, pruner=pruner, study_name=STUDY_NAME, load_if_exists=True,
                                    direction="maximize" if search.view.maximize else "minimize")
    except ValueError:  # an existing study of the other direction
        raise differs from None
    # TPE seeded with the recipe's seed plus the trials so far: a new study starts from the recipe's seed, a resumed
    # one gets a seed of its own (the recipe's again would replay the proposals the earlier search already tried;
    # Optuna keeps the history, not the random state).
    study.sampler = optuna.samplers.TPESampler(seed=search.recipe.seed + len(study.trials))
    saved = study.user_attrs.get("recipe_sha256")
    if saved is None:
        study.set_user_attr("recipe_sha256", fingerprint)
        study.set_user_attr("metric", search.view.metric)
    elif saved != fingerprint:
        raise differs
    return study


def fail_stale(study, directory: Path) -> None:
    """Mark failed the trials a killed search left running (this process holds the study's lock), queue their values
    to be tried first, and remove their checkpoints (a trial is never resumed; its run directory stays as left)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        if t.user_attrs.get("run_dir"):
            shutil.rmtree(RunDir(directory / t.user_attrs["run_dir"]).checkpoints, ignore_errors=True)
        say(f"trial {t.number}: left running by a search that was stopped; marked failed, its values queued to "
            "run again")


def counted(study) -> int:
    """Complete and pruned trials: what ``--trials`` counts."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def run_trials(search: Search) -> None:
    """Ask for trials and run them until ``--trials`` are counted, ``--timeout`` has passed, or too many failed."""
    o, study = search.options, search.study
    if counted(study):
        say(f"resuming the study in {search.directory}: {counted(study)} of {o.trials} trials done")
    while counted(study) < o.trials:
        if o.timeout is not None and time.monotonic() - search.started >= o.timeout:
            say(f"--timeout {o.timeout:g} s reached: no new trial started ({counted(study)} of {o.trials} done)")
            return
        if search.failed_in_a_row >= MAX_FAILED_IN_A_ROW:
            _stop_after_failures(search)
        run_trial(search, study.ask())
        write_outputs(search)


def _stop_after_failures(search: Search) -> None:
    """Several trials failed in a row: the cause is likely the recipe or the machine, not the values."""
    if isinstance(search.last_error, UserError):
        raise search.last_error
    raise UserError(f"{search.failed_in_a_row} trials in a row failed (the last: {search.last_error}); search "
                    "smaller values (training.batch_size, training.max_length) or see each trial's note in tune.html",
                    source=str(search.directory))


def run_trial(search: Search, trial) -> None:
    """One trial: its values, its recipe, its run on the validation split; told to the study as it ended."""
    from lmtune.lifecycle import run_recipe

    started = time.monotonic()
    values = space.suggest(trial, search.dims)
    shown = ", ".join(f"{k}={page.shown_value(v)}" for k, v in values.items())
    repeat = next((t for t in search.study.get_trials(deepcopy=False, states=COUNTED) if t.params == trial.params),
                  None)
    if repeat is not None:  # training is seeded: the same values give the same run
        reason = f"same values as trial {repeat.number}, not trained again"
        return _end(search, trial, repeat.state, shown, started, repeat.value, reason)
    try:
        recipe = recipe_from_dict(space.trial_dict(search.base, values, search.recipe.name, trial.number),
                                  source=f"trial {trial.number}")
    except UserError as exc:  # a combination the schema refuses: nothing to train, and the sampler learns it
        return _end(search, trial, TrialState.PRUNED, shown, started, reason=f"invalid recipe: {exc}")
    run_dir = search.directory / f"trial-{trial.number}"
    trial.set_user_attr("run_dir", run_dir.name)
    say(f"trial {trial.number}: {shown}: training in {run_dir}")
    write_outputs(search)  # tune.html lists the trial as running while it trains
    try:
        run_recipe(recipe, out=run_dir, overwrite=True, quiet=not search.options.verbose, evaluate_on="validation",
                   on_validation=_pruning(trial, search.view.maximize))
        value, state, reason = _objective(search, run_dir), TrialState.COMPLETE, None
    except optuna.TrialPruned as exc:
        value, state, reason = None, TrialState.PRUNED, str(exc)
    except (UserError, MemoryError) as exc:
        value, state, reason, search.last_error = None, TrialState.FAIL, str(exc), exc
    except BaseException as exc:  # Ctrl-C, or a bug: the trial fails, the search stops
        if not _out_of_memory(exc):
            _end(search, trial, TrialState.FAIL, shown, started, reason=f"stopped: {type(exc).__name__}")
            raise
        value, state, reason, search.last_error = None, TrialState.FAIL, f"out of memory: {exc}", exc
    finally:
        shutil.rmtree(RunDir(run_dir).checkpoints, ignore_errors=True)
    _end(search, trial, state, shown, started, value, reason)


def _out_of_memory(exc: BaseException) -> bool:
    """A device that ran out of memory: a fact about these values (a batch too large), not about the search."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _pruning(trial, maximize: bool):
    """The loop's ``on_validation``: report each validation loss (negated when the objective is maximised,
    so that better is in the study's direction) and stop the run when the pruner says so."""
    def report(step: int, loss: float) -> None:
        trial.report(-loss if maximize else loss, step)
        trial.set_user_attr("val_loss", loss)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: validation loss {loss:.4f} is worse than the median "
                                     "of the earlier trials at that step")
    return report


def _objective(search: Search, run_dir: Path) -> float:
    """The objective system's primary metric in the trial's ``eval.json`` (scored on the validation split)."""
    run = RunDir(run_dir)
    body = run.read_eval()
    value = ((body.get("results") or {}).get(search.view.system) or {}).get(search.view.metric)
    if body.get("split") != "validation" or not isinstance(value, int | float):
        raise UserError(f"no {search.view.metric} of {search.view.system} on the validation split "
                        f"({body.get('n', 0)} examples scored)", source=str(run.eval))
    return float(value)


def _end(search: Search, trial, state: TrialState, shown: str, started: float, value: float | None = None,
         reason: str | None = None) -> None:
    """Tell the study how the trial ended and print its line."""
    seconds = round(time.monotonic() - started, 1)
    trial.set_user_attr("seconds", seconds)
    if reason:
        trial.set_user_attr("reason", reason)
    search.study.tell(trial, value if state == TrialState.COMPLETE else None,
                      state=None if state == TrialState.COMPLETE else state)
    search.failed_in_a_row = search.failed_in_a_row + 1 if state == TrialState.FAIL else 0
    metric = search.view.metric
    outcome = {TrialState.COMPLETE: f"{metric} {value:.4f} on validation" if value is not None else "",
               TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}[state]
    detail = f" ({reason})" if reason else ""
    print(f"trial {trial.number}: {shown}: {outcome}{detail}, {seconds:.1f} s", flush=True)


def write_outputs(search: Search) -> Path | None:
    """``best.yaml`` (when a trial is complete) and ``tune.html``; returns ``best.yaml``'s path or None."""
    from lmtune.tune.final import write_best

    best = write_best(search)
    page.write(search.study, search.view, best)
    return best


def _print_importances(search: Search) -> None:
    found, why = page.importances(search.study, search.dims, search.recipe.seed)
    if found is None:
        print(f"parameter importances: {why}")
        return
    print("parameter importances (fANOVA): " + ", ".join(f"{k} {v:.3f}" for k, v in found.items()))
