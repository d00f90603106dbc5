"""The oracle experiment: ``lmtune active RECIPE --pool POOL --budget N --oracle FIELD --rounds R``, unattended.

A hidden field of the pool (``--oracle FIELD``) stands in for the labeller, so whether a strategy saves labels is
measured rather than hoped. For each strategy and seed (an *arm*):

- round 0 labels ``--initial`` records (default: the budget) drawn at random with the seed: the same records for
  every strategy of that seed, so arms differ only in what they select later; it is trained once per seed, in
  ``initial-s<seed>/``, and shared by the seed's arms;
- each later round scores the records not yet labelled with the previous round's model, selects ``--budget`` of
  them by the strategy, reveals their labels from FIELD, and trains a new run FROM SCRATCH (from the base model)
  on everything labelled so far. Warm starts are not offered: a model trained from scratch on n labels is what
  the learning curve compares across strategies, and it is what a team would ship.

Every run is ``lifecycle.run_recipe`` with the labelled set as ``data.train`` (``labelled-<r>.jsonl`` beside the
round's run directory), ``eval.systems: [finetuned]`` without probes, and the recipe's own ``data.test`` file:
the same fixed test set for every round and arm (required). The directory (``--out``, default
``runs/<name>-active``)::

    active.json   the arms, their rounds and the curves across seeds (:mod:`lmtune.active.results`)
    active.html   the learning curves per strategy, the table of every round, the statement
    active.lock   held while an experiment runs: a second one of the same directory is refused
    initial-s<seed>/round-0/, <strategy>-s<seed>/round-<r>/   run directories
    <arm>/labelled-<r>.jsonl, <arm>/selected-<r>.json          round r's training file and what it added

Resumable, as ``lmtune curve`` is: a round whose run is finished (``status.json`` finished and ``eval.json`` with
the metric) is reused, a killed one resumes from its checkpoints (or trains again without one), and a selection
already made (``selected-<r>.json``) is not made again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from lmtune import atomic, outputs, run_status
from lmtune.active import page, results
from lmtune.active.pool import Pool, read_pool
from lmtune.active.queue import check_budget, check_strategies, check_task
from lmtune.active.scoring import Scorer, find_run
from lmtune.active.selection import choose
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.progress import say
from lmtune.recipe import Recipe, recipe_from_dict
from lmtune.run_dir import RUNS, RunDir

ACTIVE_JSON, ACTIVE_HTML, LOCK = "active.json", "active.html", "active.lock"
SYSTEM = "finetuned"


@dataclass
class Experiment:
    """A checked oracle experiment: what every round trains and where everything goes."""

    recipe: Recipe
    base: dict[str, Any]  # the recipe every round trains, before its data.train and name are set
    pool: Pool
    column: str  # the recipe's column of the target in pool records (data.fields)
    oracle: str
    strategies: list[str]
    seeds: list[int]
    budget: int
    initial: int
    rounds: int
    directory: Path
    metric: str
    quiet: bool = False
    fingerprint: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    arms: list[dict[str, Any]] = field(default_factory=list)


def prepare(recipe: Recipe, pool_path: Path, oracle: str, budget: int, rounds: int = 3,
            strategies: list[str] | None = None, seeds: list[int] | None = None, initial: int | None = None,
            out: Path | None = None, quiet: bool = False) -> Experiment:
    """Check everything the experiment needs before anything is trained or written.

    Raises:
        UserError: a bad strategy, task or number; no fixed ``data.test`` file; a pool record without the oracle
            field or with a value that is not a valid target; a pool too small for the rounds; an output directory
            that holds something else, or another recipe's experiment.
    """
    strategies = list(dict.fromkeys(strategies or ["entropy", "random"]))
    seeds = list(dict.fromkeys(seeds if seeds is not None else [0]))
    check_strategies(strategies, recipe.task.type, "--strategies")
    if not seeds or min(seeds) < 0:
        raise UserError("give one or more seeds, each 0 or more, e.g. --seeds 0,1,2", source="--seeds")
    if rounds < 1:
        raise UserError(f"is {rounds}; run at least 1 round (round 0 is the random initial set)", source="--rounds")
    check_budget(budget)
    initial = budget if initial is None else initial
    check_budget(initial, option="--initial")
    if recipe.data.test is None:
        raise UserError("the oracle experiment needs a fixed test file: every round of every arm is measured on "
                        "the same test records; give data.test: FILE", source="data.test")
    directory = Path(out or RUNS / f"{recipe.name}-active")
    check_directory(directory)
    pool = read_pool(pool_path, recipe, oracle=oracle)
    needed = initial + budget * (rounds - 1)
    if needed > len(pool):
        raise UserError(f"--initial {initial} + {rounds - 1} later rounds x --budget {budget} = {needed} records, "
                        f"but the pool holds only {len(pool)}; lower --budget or --rounds", source="--budget")
    check_task(recipe)
    exp = Experiment(recipe, _round_recipe(recipe), pool, recipe.data.fields.get(pool.target, pool.target), oracle,
                     strategies, seeds, budget, initial, rounds, directory,
                     metrics.PRIMARY_METRIC.get(recipe.task.type, "loss"), quiet)
    if recipe.data.validation is None and recipe.data.split.validation > 0:
        exp.notes.append(f"validation is split from each round's labelled records (data.split.validation "
                         f"{recipe.data.split.validation:g}); with few labels give data.validation: FILE instead")
    if recipe.data.max_records is not None:
        exp.notes.append("data.max_records is not applied: it would cut the labelled set; eval.max_examples "
                         "samples the test file")
    exp.fingerprint = {"recipe_sha256": _sha(exp.base), "settings_sha256": _sha(
        {"pool": _file_sha(pool.path), "oracle": oracle, "budget": budget, "initial": initial})}
    _check_same(exp)
    return exp


def _round_recipe(recipe: Recipe) -> dict[str, Any]:
    """The recipe each round trains: fine-tuned system only, no probes, search or subsets, every record kept."""
    raw = recipe.model_dump(mode="json")
    raw["search"] = None
    raw["data"].update(subset=None, max_records=None)
    raw["training"]["self_training"] = None
    raw["eval"].update(systems=[SYSTEM], bias=None, forgetting=None)
    return raw


def check_directory(directory: Path) -> None:
    """A new or empty directory, or an earlier oracle experiment's (it has ``active.json``)."""
    outputs.check_dir_target(directory)
    if directory.is_dir() and not (directory / ACTIVE_JSON).is_file():
        others = [p.name for p in directory.iterdir() if p.name != LOCK and not p.name.startswith("queue-")]
        if others:
            raise UserError(f"not empty and not an lmtune active experiment (no {ACTIVE_JSON}); choose a new or "
                            "empty directory with --out", source=str(directory))


def _check_same(exp: Experiment) -> None:
    """An existing ``active.json`` must be this recipe's, pool's, oracle's and budget's, or nothing is reused."""
    path = exp.directory / ACTIVE_JSON
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"unreadable {ACTIVE_JSON}; delete the directory to start over", source=str(path)) from None
    for key, value in exp.fingerprint.items():
        if saved.get(key) != value:
            what = "recipe" if key == "recipe_sha256" else "pool, --oracle, --budget or --initial"
            raise UserError(f"holds an experiment with another {what}; give another --out, or delete this "
                            "directory to start over", source=str(exp.directory))


def run(exp: Experiment) -> Path:
    """Run every arm's rounds (reusing finished ones), writing ``active.json`` and ``active.html`` after each."""
    exp.directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(exp.directory / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError("another lmtune active experiment is running in this directory; wait for it or give another "
                        "--out", source=str(exp.directory)) from None
    try:
        exp.arms = [{"strategy": s, "seed": seed, "rounds": [_pending(exp, r) for r in range(exp.rounds)]}
                    for seed in exp.seeds for s in exp.strategies]
        say(f"oracle experiment: {len(exp.strategies)} strategies x {len(exp.seeds)} seeds, {exp.rounds} rounds, "
            f"{exp.initial} initial + {exp.budget} per round from {len(exp.pool)} pool records; every round trains "
            "from scratch", exp.quiet)
        for seed in exp.seeds:
            _run_seed(exp, seed)
    except BaseException as exc:  # the round under way did not finish: say so, rather than "running" forever
        state = run_status.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else run_status.FAILED
        for entry in (r for arm in exp.arms for r in arm["rounds"] if r["state"] == "running"):
            entry["state"] = state
        raise
    finally:
        _write(exp)
        lock.release()
    return exp.directory


def _pending(exp: Experiment, r: int) -> dict[str, Any]:
    return {"round": r, "n_labelled": exp.initial + r * exp.budget, "value": None, "ci_low": None, "ci_high": None,
            "run": None, "state": "pending", "seconds": None, "selected_score_mean": None}


def _run_seed(exp: Experiment, seed: int) -> None:
    """Round 0 once for the seed, then each later round for each of its arms in turn."""
    order = np.random.default_rng(seed).permutation(len(exp.pool))
    initial = sorted(int(i) for i in order[:exp.initial])
    arms = [a for a in exp.arms if a["seed"] == seed]
    _running(exp, arms, 0, f"initial-s{seed}")
    first = _round(exp, f"initial-s{seed}", 0, [], lambda: (initial, None, 0.0))
    first.pop("selected")
    for arm in arms:
        arm["rounds"][0] = dict(first)
    labelled = {arm["strategy"]: list(initial) for arm in arms}
    _write(exp)
    for r in range(1, exp.rounds):
        for arm in arms:
            strategy = arm["strategy"]
            previous = exp.directory / (arm["rounds"][r - 1]["run"])
            pick = _selector(exp, strategy, seed, r, labelled[strategy], previous)
            _running(exp, [arm], r, f"{strategy}-s{seed}")
            arm["rounds"][r] = _round(exp, f"{strategy}-s{seed}", r, labelled[strategy], pick)
            labelled[strategy] = labelled[strategy] + arm["rounds"][r].pop("selected")
            _write(exp)


def _running(exp: Experiment, arms: list[dict[str, Any]], r: int, folder: str) -> None:
    """Mark round ``r`` of ``arms`` running in ``active.json`` (a page shows which round is under way), unless it
    is a finished round about to be reused."""
    run = f"{folder}/round-{r}"
    if finished_value(RunDir(exp.directory / run), exp.metric) is not None:
        return
    for arm in arms:
        arm["rounds"][r].update(state="running", run=run)
    _write(exp)


def _selector(exp: Experiment, strategy: str, seed: int, r: int, labelled: list[int], previous: Path):
    """What selects round ``r`` of an arm: the strategy on the unlabelled records, with round r-1's model."""
    def pick() -> tuple[list[int], float | None, float]:
        taken = set(labelled)
        remaining = [i for i in range(len(exp.pool)) if i not in taken]
        scorer = Scorer(exp.recipe, find_run(previous, exp.recipe, option=str(previous)),
                        [exp.pool.solved(i) for i in labelled], exp.pool.examples[0].format, quiet=True)
        choice = choose(scorer, [exp.pool.examples[i] for i in remaining], strategy, exp.budget, [seed, r])
        return [remaining[p] for p in choice.picked], float(np.mean(choice.scores)), choice.seconds
    return pick


def _round(exp: Experiment, arm: str, r: int, before: list[int], pick) -> dict[str, Any]:
    """One round of an arm: its selection (made, or read back), its training file, its run (trained or reused)."""
    folder = exp.directory / arm
    chosen_file, labelled_file = folder / f"selected-{r}.json", folder / f"labelled-{r}.jsonl"
    if chosen_file.is_file():
        chosen = json.loads(chosen_file.read_text())
    else:
        picked, score, seconds = pick()
        chosen = {"round": r, "selected": picked, "pool_lines": [exp.pool.lines[i] for i in picked],
                  "selected_score_mean": score, "seconds": round(seconds, 2)}
        atomic.write_jsonl(labelled_file, [exp.pool.labelled(i, exp.column) for i in before + picked])
        atomic.write_json(chosen_file, chosen)
    run_dir = RunDir(folder / f"round-{r}")
    reused = finished_value(run_dir, exp.metric) is not None
    started = time.monotonic()
    if not reused:
        _train(exp, arm, r, labelled_file, run_dir)
    value, interval = finished_value(run_dir, exp.metric), _interval(run_dir, exp.metric)
    if value is None:
        raise UserError(f"the run finished without a {exp.metric} of {SYSTEM} on the test file; see its eval.json",
                        source=str(run_dir.path))
    seconds = chosen["seconds"] + (run_status.read(run_dir).get("elapsed_s") or time.monotonic() - started)
    entry = {"round": r, "n_labelled": len(before) + len(chosen["selected"]), "value": value, "ci_low": interval[0],
             "ci_high": interval[1], "run": run_dir.path.relative_to(exp.directory).as_posix(), "state": "finished",
             "seconds": round(seconds, 1), "selected_score_mean": chosen["selected_score_mean"],
             "selected_lines": chosen["pool_lines"], "selected": chosen["selected"]}
    print(f"{arm} round {r}: {entry['n_labelled']} labelled, {exp.metric} {value:.4f} "
          f"[{_shown(interval[0])}, {_shown(interval[1])}], {entry['seconds']:.1f} s" + (" (reused)" if reused else ""),
          flush=True)
    return entry


def _train(exp: Experiment, arm: str, r: int, labelled_file: Path, run_dir: RunDir) -> None:
    """Train round ``r`` from scratch on ``labelled_file``: resumed from a checkpoint a killed run left, else anew."""
    from lmtune.lifecycle import run_recipe
    from lmtune.run_dir import checkpoint_dirs

    raw = json.loads(json.dumps(exp.base))
    raw["data"]["train"] = str(labelled_file.resolve())
    raw["name"] = f"{exp.recipe.name}-{arm}-r{r}"[-100:].lstrip("-._") or "active-round"
    recipe = recipe_from_dict(raw, source=str(run_dir.path))
    resume = run_dir.is_run and bool(checkpoint_dirs(run_dir.checkpoints, complete=True))
    say(f"{arm} round {r}: {'resuming' if resume else 'training'} in {run_dir.path}", exp.quiet)
    run_recipe(recipe, out=run_dir.path, resume=resume, overwrite=not resume, quiet=True)


def finished_value(run_dir: RunDir, metric: str) -> float | None:
    """The fine-tuned system's ``metric`` of a finished run (status finished, eval.json with it), else None."""
    if not run_dir.eval.is_file() or run_status.read(run_dir).get("state") != run_status.FINISHED:
        return None
    try:
        value = ((run_dir.read_eval().get("results") or {}).get(SYSTEM) or {}).get(metric)
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _interval(run_dir: RunDir, metric: str) -> tuple[float | None, float | None]:
    """The bootstrap 95% interval of the metric that evaluation wrote (``ci``), or (None, None)."""
    found = ((run_dir.read_eval().get("results") or {}).get(SYSTEM) or {}).get("ci", {}).get(metric)
    return (float(found[0]), float(found[1])) if isinstance(found, list) and len(found) == 2 else (None, None)


def _write(exp: Experiment) -> None:
    """``active.json`` and ``active.html`` as they stand (atomically)."""
    body = results.document(exp)
    atomic.write_json(exp.directory / ACTIVE_JSON, body)
    page.write(exp.directory / ACTIVE_HTML, body)


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
