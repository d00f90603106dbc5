"""``lmtune active RECIPE --pool POOL --budget N``: the records most worth labelling next, as a labelling queue.

Everything is checked first, cheapest first, before any model loads: the strategy and the task, the budget, the
output, the run, then every pool record. The queue (``--out``, default ``runs/<name>-active/queue-<strategy>.jsonl``)
is written atomically once the selection is made: one JSONL line per selected record, best first, the pool record
as it was (without a label it carried) plus ``prelabel``, ``confidence``, ``score``, ``strategy``, ``rank`` and
``pool_line``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune import atomic, outputs
from lmtune.active import strategies
from lmtune.active.pool import Pool, read_pool
from lmtune.active.scoring import RunRef, Scorer, find_run
from lmtune.active.selection import Choice, choose
from lmtune.data import clean, io
from lmtune.data.formats import Example
from lmtune.errors import UserError
from lmtune.kinds.tasks import task_kind
from lmtune.progress import say
from lmtune.run_dir import RUNS, RunDir


@dataclass
class Plan:
    """A checked selection: what is scored, by what, and where the queue goes."""

    recipe: Any
    pool: Pool
    strategy: str
    budget: int
    run: RunRef | None
    out: Path
    seed: int
    train: list[Example]
    quiet: bool = False


def check_strategies(names: list[str], task: str, option: str = "--strategy") -> None:
    """Known strategies that apply to the task.

    Raises:
        UserError: an unknown strategy (listing them), or one that needs probabilities on a generation task.
    """
    for name in names:
        if name not in strategies.STRATEGIES:
            raise UserError(f"unknown strategy {name!r}; choose from {', '.join(strategies.STRATEGIES)}",
                            source=option)
        if name in strategies.NEEDS_PROBABILITIES and not task_kind(task).labelled:
            raise UserError(f"{name} needs label probabilities and a {task} task answers with free text; on a "
                            f"generation task use {' or '.join(strategies.FOR_GENERATION)}", source=option)


def check_task(recipe) -> None:
    """A task whose answers can be scored for selection: labels by label scoring, or generated text.

    Raises:
        UserError: a regression, preference or language-modelling task, or a classification head.
    """
    from lmtune import tasks

    kind = task_kind(recipe.task.type)
    if kind.family != "generation" and not kind.labelled:
        raise UserError(f"lmtune active selects records of classification and generation tasks; a "
                        f"{recipe.task.type} task has no answers to be uncertain about", source="task.type")
    if kind.labelled and tasks.uses_head(recipe):
        raise UserError("lmtune active scores labels by the causal LM's label log-likelihoods; a classification "
                        "head is not supported: set task.head: false (or use a causal LM)", source="task.head")


def check_budget(budget: int, available: int | None = None, option: str = "--budget") -> None:
    """At least one record, and no more than the pool holds."""
    if budget < 1:
        raise UserError(f"is {budget}; select at least 1 record", source=option)
    if available is not None and budget > available:
        raise UserError(f"is {budget} but the pool holds only {available} records; ask for at most "
                        f"{available} or add records to the pool", source=option)


def plan(recipe, pool_path: Path, budget: int, strategy: str = "entropy", run: str | None = None,
         out: Path | None = None, seed: int | None = None, quiet: bool = False) -> Plan:
    """Check everything a selection needs; nothing is loaded or written.

    Raises:
        UserError: see :func:`check_strategies`, :func:`check_task`, :func:`check_budget`,
            :func:`lmtune.active.scoring.find_run` and :func:`lmtune.active.pool.read_pool`; an unusable ``--out``.
    """
    check_strategies([strategy], recipe.task.type)
    check_budget(budget)
    out = Path(out or RUNS / f"{recipe.name}-active" / f"queue-{strategy}.jsonl")
    outputs.check_file_target(out, "--out")
    ref = find_run(run, recipe) if run is not None else None
    pool = read_pool(pool_path, recipe)
    if ref is not None:
        pool = _not_trained_on(pool, ref)
    check_budget(budget, len(pool))
    check_task(recipe)  # reads the model's config (a head?): after every check of the user's files
    train = _train_split(recipe) if strategy == "committee" else []
    return Plan(recipe, pool, strategy, budget, ref, out, recipe.seed if seed is None else seed, train, quiet)


def _not_trained_on(pool: Pool, ref: RunRef) -> Pool:
    """The pool without the records whose input the run trained on (they are labelled already), said when any."""
    trained = RunDir(ref.path).data.split("train")
    if not trained.is_file() or not pool.examples:
        return pool
    fmt = pool.examples[0].format
    known = {clean.input_key(Example(row, "", fmt)) for _, row in io.iter_rows(trained)}
    kept = pool.keep([i for i, ex in enumerate(pool.examples) if clean.input_key(_normalised(ex)) not in known])
    if len(kept) < len(pool):  # said even with --quiet, like other warnings: it changes what can be selected
        say(f"warning: left out {len(pool) - len(kept)} pool records the run trained on (their input is in "
            f"{trained}); {len(kept)} remain")
    return kept


def _normalised(example: Example) -> Example:
    """A copy of ``example`` normalised as the data stage normalises training records."""
    copied = copy.deepcopy(example)
    clean.normalise_example(copied)
    return copied


def _train_split(recipe) -> list[Example]:
    """The recipe's train split as evaluation sees it, for the committee's few-shot member."""
    from lmtune.data import prepare

    return prepare.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed,
                           recipe.model.name).splits["train"]


def select(plan: Plan) -> dict[str, Any]:
    """Score the pool, pick the budget and write the queue; return the summary that is printed."""
    pool = plan.pool
    scorer = Scorer(plan.recipe, plan.run, plan.train, pool.examples[0].format, plan.quiet)
    model = f"the fine-tuned run {plan.run.path}" if plan.run else f"{plan.recipe.model.name} zero-shot"
    say(f"scoring {len(pool)} pool records with {model} ({plan.strategy})", plan.quiet)
    choice = choose(scorer, pool.examples, plan.strategy, plan.budget, plan.seed)
    atomic.write_jsonl(plan.out, queue_records(pool, choice, plan.strategy))
    return summary(plan, scorer, choice)


def queue_records(pool: Pool, choice: Choice, strategy: str) -> list[dict[str, Any]]:
    """The queue's lines: each picked pool record with its pre-label, confidence, score and place."""
    return [{**pool.records[i], "prelabel": label, "confidence": conf, "score": score, "strategy": strategy,
             "rank": rank, "pool_line": pool.lines[i]}
            for rank, (i, label, conf, score) in enumerate(zip(choice.picked, choice.prelabels, choice.confidences,
                                                               choice.scores), start=1)]


def summary(plan: Plan, scorer: Scorer, choice: Choice) -> dict[str, Any]:
    """What was done, measured: pool size, records scored and their speed, the scores chosen, calibration."""
    calibrated = scorer.classifies and scorer.temperature(scorer.primary) is not None
    return {"pool": len(plan.pool), "scored": choice.scored, "passes": choice.passes,
            "seconds": round(choice.seconds, 2),
            "examples_per_s": round(choice.scored * choice.passes / choice.seconds, 2) if choice.seconds else None,
            "budget": plan.budget, "strategy": plan.strategy, "system": scorer.primary,
            "score_min": min(choice.scores), "score_max": max(choice.scores),
            "temperature": scorer.temperature(scorer.primary), "calibrated": calibrated,
            "probabilities": scorer.classifies,
            "carried_labels": plan.pool.carried_labels, "out": str(plan.out)}


def describe(result: dict[str, Any]) -> str:
    """The summary as the lines ``lmtune active`` prints."""
    speed = f"{result['examples_per_s']:g} examples/s" if result["examples_per_s"] else "no time measured"
    passes = f" x {result['passes']} systems" if result["passes"] > 1 else ""
    if not result["probabilities"]:
        confidence = "no confidence (generated text has no label probabilities)"
    elif result["calibrated"]:
        confidence = f"confidence calibrated (temperature {result['temperature']:.3f} fitted on validation)"
    else:
        confidence = ("confidence uncalibrated (no temperature was fitted; a run trained with eval.calibrate: "
                      "temperature has one)")
    return "\n".join([
        f"pool: {result['pool']} records; scored {result['scored']}{passes} in {result['seconds']:g} s ({speed})",
        f"selected {result['budget']} by {result['strategy']}: scores {result['score_min']:.4g} to "
        f"{result['score_max']:.4g}; pre-labels by {result['system']}, {confidence}",
        f"queue: {result['out']}"])
