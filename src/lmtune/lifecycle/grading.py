"""The grading step of every system: ``eval.graders`` score its predictions, each a mean with its interval.

Each prediction row gets its scores (``row["graders"][name]``); the system's results get ``graders.<name>`` (the
mean, ranked and tabled like any metric, its interval in ``ci``) and ``graders`` (per grader: mean, interval,
n and the counts of samples scored 0 because grading failed: errors, timeouts, unparsable). The graders are
built once per run, at the first system (a ``score_model`` judge is loaded then), and grade every system.
With ``eval.rank_by`` the verdict ranks the systems by that grader (:func:`primary_metric`).
"""

from __future__ import annotations

from typing import Any

from lmtune import graders
from lmtune.errors import UserError
from lmtune.evaluate import graded, metrics
from lmtune.kinds.tasks import task_kind
from lmtune.progress import say


def check(recipe, prepared) -> None:
    """Each grader against the records it will grade (every split a run may evaluate) and this machine.

    Raises:
        UserError: a task without per-example predictions, or what :func:`lmtune.graders.check` finds.
    """
    if not recipe.eval.graders:
        return
    if not task_kind(recipe.task.type).per_example:
        raise UserError(f"graders score each example's prediction; a {recipe.task.type} task is measured as a whole "
                        "(perplexity, preference accuracy): remove eval.graders", source="eval.graders")
    records = [ex for split in ("test", "validation") for ex in prepared.splits.get(split) or []]
    for name, config in recipe.eval.graders.items():
        graders.check(config, [item_of(ex) for ex in records], f"eval.graders.{name}", [ex.source for ex in records])


def item_of(example) -> dict[str, Any]:
    """OpenAI's ``item``: the whole record as the run's ``data/<split>.jsonl`` has it (its fields beyond the
    format's too, such as an ``answer`` column a grader reads)."""
    return {**example.extra, **example.record}


def primary_metric(recipe) -> str:
    """What the verdict ranks systems by: ``eval.rank_by``'s grader, else the task's metric."""
    if recipe.eval.rank_by:
        return graded.key(recipe.eval.rank_by)
    return metrics.PRIMARY_METRIC.get(recipe.task.type, "loss")


def apply(run, system: str, result) -> None:
    """Grade ``result``'s predictions with every grader of ``eval.graders`` (nothing without them)."""
    config, rows = run.recipe.eval.graders, result.predictions
    if not config or not rows:
        return
    if len(rows) != len(run.test):
        raise RuntimeError(f"{system}: {len(rows)} predictions for {len(run.test)} examples; cannot pair them")
    if run.graders is None:
        say(f"      graders: building {', '.join(config)}", run.quiet)
        run.graders = {name: graders.build(c, name, run.recipe.eval.batch_size, f"eval.graders.{name}")
                       for name, c in config.items()}
    samples, items = [_text(row["prediction"]) for row in rows], [item_of(ex) for ex in run.test]
    said = []
    for name, grader in run.graders.items():
        result_of = grader.grade(samples, items)
        for row, score in zip(rows, result_of.scores):
            row.setdefault("graders", {})[name] = score
        summary = _summary(result_of, config[name], run.recipe.eval.bootstrap, run.recipe.seed)
        result.metrics.setdefault("graders", {})[name] = summary
        result.metrics[graded.key(name)] = summary["mean"]
        if summary["ci"] is not None:
            result.metrics.setdefault("ci", {})[graded.key(name)] = summary["ci"]
        said.append(f"{name} {summary['mean']:.4g}" + _problems(result_of))
    say(f"      graded {system}: {'; '.join(said)}", run.quiet)


def _summary(result_of: graders.GradeResult, config, n_resamples: int, seed: int) -> dict[str, Any]:
    mean, interval = graded.mean_interval(result_of.scores, n_resamples, seed)
    summary = {"mean": mean, "ci": interval, "n": len(result_of.scores), "errors": result_of.errors,
               "timeouts": result_of.timeouts, "unparsable": result_of.unparsable}
    threshold = getattr(config, "pass_threshold", None)
    if threshold is not None:
        summary["pass_rate"] = sum(s >= threshold for s in result_of.scores) / max(len(result_of.scores), 1)
    if result_of.messages:
        summary["problems"] = result_of.messages
    return summary


def _problems(result_of: graders.GradeResult) -> str:
    """``" (2 errors, 1 timeout scored 0: sample 3: ...)"``, or "" when every sample was graded."""
    counts = [f"{n} {word}{'s' if n != 1 and word != 'unparsable' else ''}" for n, word in
              ((result_of.errors, "error"), (result_of.timeouts, "timeout"), (result_of.unparsable, "unparsable"))
              if n]
    if not counts:
        return ""
    return f" ({', '.join(counts)} scored 0; first: {result_of.messages[0] if result_of.messages else '?'})"


def _text(prediction) -> str:
    """A prediction as the grader's sample text (a regression head's number as its digits)."""
    return prediction if isinstance(prediction, str) else str(prediction)
