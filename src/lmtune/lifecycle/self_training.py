"""Self-training (``training.self_training``): pseudo-label a pool with the fine-tuned model, train again.

After the fine-tuned model is evaluated, each round

1. takes the current model's temperature on the validation split (the one ``eval.calibrate: temperature``
   fitted, else fitted now), so a confidence of 0.9 means right about nine times in ten;
2. scores the whole pool with the model's own label scoring (or head), exactly as the ``finetuned`` system
   answers the test split, and turns the scores into calibrated probabilities;
3. keeps the records whose confidence reaches ``threshold``, at most ``max_ratio`` x the labelled training
   examples, most confident first, each tagged ``pseudo_label: true`` with ``pseudo_confidence`` and
   ``pseudo_round``;
4. trains again **from the base model** (not on top of the fine-tuned one, so a wrong pseudo-label is not
   learned twice) on the labelled train split plus these records, as a nested run
   ``<run>/self_training/round-<r>/`` of the same recipe: the same method, training settings and seed,
   validated and tested on the parent's own validation and test files;
5. hands that round's model to the next round, which labels the whole pool afresh.

The last round's fine-tuned test results become the system ``self_trained`` in the parent's results, so the
significance tests compare it with ``finetuned``; ``eval.json``'s ``self_training`` block keeps each round's
counts (and, where the pool has hidden labels, how many pseudo-labels were wrong) and the gain over the
supervised run with a paired bootstrap interval on the same test examples.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from lmtune import atomic, distributed, run_status
from lmtune.evaluate import bootstrap, metrics, sharding, systems
from lmtune.lifecycle import calibrating, pseudo_labels
from lmtune.methods.merge import merged_adapter
from lmtune.progress import say
from lmtune.recipe import recipe_from_dict
from lmtune.run_dir import RunDir

#: The folder of a run that holds the rounds: ``round-<r>/`` (a nested run), its training file and its counts.
FOLDER = "self_training"
SYSTEM = "self_trained"


def check(recipe, prepared) -> None:
    """What self-training needs (see :func:`lmtune.lifecycle.pseudo_labels.check`), before the model loads."""
    pseudo_labels.check(recipe, prepared)


def run_rounds(run) -> None:
    """The rounds of ``training.self_training``; nothing when the recipe has none.

    Adds ``self_trained`` to ``run.results`` and the ``self_training`` block (``run.self_training``) that
    ``eval.json`` records.
    """
    config = run.recipe.training.self_training
    if config is None or "finetuned" not in run.results:
        return
    pool = pseudo_labels.read_pool(run.recipe, run.prepared)
    left_out = pseudo_labels.said(pool.counts)
    say(f"[self-training] pool {config.pool}: {pool.read} records read, {len(pool.examples)} to pseudo-label"
        + (f" (left out: {left_out})" if left_out else ""), run.quiet)
    block: dict[str, Any] = {"threshold": config.threshold, "max_ratio": config.max_ratio, "pool": config.pool,
                             "pool_records": pool.read, "dropped_known": pool.counts.get("known", 0),
                             "dropped": dict(pool.counts), "retrained_from": "base model", "rounds": []}
    # The model that labels the pool: the run's own, then each round's (loaded only when a round needs it).
    labeller, measured = (lambda: run.model), run.results["finetuned"].metrics
    result = None
    for r in range(1, config.rounds + 1):
        stats = _pseudo_labelled(run, labeller, measured, pool, r)
        nested = _retrained(run, r)
        result = _round_result(run, nested)
        stats.update(_round_facts(run, nested, result))
        block["rounds"].append(stats)
        labeller, measured = (lambda nested=nested: _round_model(run, nested)), result.metrics
    run.results[SYSTEM] = result
    block["gain"] = gain(run)
    run.self_training = block
    _say_gain(block["gain"], run.quiet)


def _folder(run) -> Path:
    return run.run_dir.path / FOLDER


def _pseudo_labelled(run, labeller, measured: dict[str, Any], pool, r: int) -> dict[str, Any]:
    """Round ``r``'s pseudo-labels: chosen, written with the labelled train split as the round's training file,
    and counted. A resumed run reuses what an earlier attempt wrote for the round."""
    counts_file = _folder(run) / f"round-{r}.json"
    if run.resume and counts_file.is_file():
        say(f"[self-training] round {r}: pseudo-labels of the earlier attempt reused", run.quiet)
        return json.loads(counts_file.read_text())
    config, labels = run.recipe.training.self_training, run.recipe.task.labels
    labelled = len(run.prepared.splits["train"])
    model = labeller()
    with merged_adapter(model):
        temperature = _temperature(run, model, measured)
        say(f"[self-training] round {r}: scoring {len(pool.examples)} pool records", run.quiet)
        rows = _score(run, model, pool.examples)
    chosen, above = pseudo_labels.choose(rows, labels, temperature, config.threshold,
                                         math.floor(config.max_ratio * labelled))
    wrong, checked = pseudo_labels.wrong(chosen, pool.hidden)
    stats = {"round": r, "temperature": round(temperature, 4), "scored": len(rows), "above_threshold": above,
             "kept": len(chosen), "cap": math.floor(config.max_ratio * labelled), "labelled": labelled,
             "checked": checked, "wrong": wrong if checked else None,
             "wrong_rate": round(wrong / checked, 4) if checked else None,
             "label_distribution": dict(sorted(Counter(label for _, label, _ in chosen).items())),
             "run": f"{FOLDER}/round-{r}"}
    say(f"[self-training] round {r}: {above} of {len(rows)} pool records reach confidence {config.threshold} "
        f"(temperature {temperature:.3g}); {len(chosen)} kept (at most {stats['cap']})"
        + (f", {wrong} of {checked} wrong by the pool's hidden labels" if checked else ""), run.quiet)
    if not chosen:
        say(f"warning: no pseudo-label reached confidence {config.threshold}; round {r} retrains on the labelled "
            "data alone (lower training.self_training.threshold to add some)", run.quiet)
    if distributed.world().main:
        train = [json.loads(line) for line in run.run_dir.data.split("train").read_text().splitlines()]
        added = [pseudo_labels.tagged(pool.examples[i], label, confidence, r) for i, label, confidence in chosen]
        atomic.write_jsonl(_folder(run) / f"round-{r}.train.jsonl", train + added)
        atomic.write_json(counts_file, stats)  # last: its presence says the round's training file is complete
    distributed.barrier()
    return stats


def _temperature(run, model, measured: dict[str, Any]) -> float:
    """The model's temperature on the validation split: the one its evaluation fitted, else fitted now."""
    if run.recipe.eval.calibrate == "temperature" and isinstance(measured.get("temperature"), (int, float)):
        return float(measured["temperature"])
    return calibrating.fit(dataclasses.replace(run, model=model), "finetuned", None)


def _score(run, model, examples: list) -> list[dict[str, Any]]:
    """The ``finetuned`` system's prediction rows (with ``scores`` per label) on ``examples``."""
    if run.task.prompted:  # the longest pool prompt within label scoring's memory budget
        systems.check_fits(model, run.encoder, run.spec, examples)
    train = run.prepared.splits["train"]
    answered = sharding.answered(
        lambda part, encoded: run.task.run("finetuned", model, run.tokenizer, run.encoder, run.spec, part, encoded,
                                           None, train, run.quiet),
        run.spec, examples, run.task.encode_test(run.tokenizer, examples))
    return answered.predictions


def derived_recipe(run, r: int):
    """The recipe of round ``r``'s retraining: the run's own, on its prepared splits plus the pseudo-labels.

    The splits are already mapped, relabelled, subset and augmented, so those keys are cleared; near copies of
    validation/test among the pseudo-labels are dropped (``data.leakage: drop``) whatever the run's policy;
    only ``finetuned`` is evaluated, with no bias or forgetting probes and no extra trackers.
    """
    raw = run.recipe.model_dump(mode="json")
    data = run.run_dir.data
    raw["name"] = f"{run.recipe.name[:80]}-self-training-{r}"
    raw["data"].update(train=str((_folder(run) / f"round-{r}.train.jsonl").absolute()),
                       validation=str(data.split("validation").absolute()),
                       test=str(data.split("test").absolute()), fields={}, max_records=None, augment=None,
                       subset=None, leakage="drop")
    raw["data"]["split"].update(validation=0.0, test=0.0, group_by=None)
    raw["data"]["clean"]["label_map"] = {}
    raw["training"]["self_training"] = None
    raw["eval"].update(systems=["finetuned"], bias=None, forgetting=None)
    raw.update(tracking=["jsonl"], search=None)
    return recipe_from_dict(raw, source="training.self_training")


def _retrained(run, r: int) -> RunDir:
    """Round ``r``'s nested run, trained now (or continued); a finished one of an earlier attempt is reused."""
    from lmtune.lifecycle import run_recipe  # the package imports this module

    nested = RunDir(_folder(run) / f"round-{r}")
    if run.resume and nested.path.is_dir() and run_status.read(nested).get("state") == run_status.FINISHED:
        say(f"[self-training] round {r}: the finished retraining in {nested.path} reused", run.quiet)
        return nested
    say(f"[self-training] round {r}: retraining from the base model in {nested.path}", run.quiet)
    run_recipe(derived_recipe(run, r), out=nested.path, resume=run.resume and nested.path.is_dir(),
               quiet=run.quiet, evaluate_on=run.split)
    return nested


def _round_result(run, nested: RunDir) -> systems.SystemResult:
    """The round's ``finetuned`` results and predictions, checked to be on the parent's evaluated examples.

    Raises:
        RuntimeError: the nested run evaluated other examples (then no gain could be measured on them).
    """
    evaluated = nested.read_eval()
    report = json.loads(nested.data.report.read_text())
    predictions = nested.read_predictions("finetuned")
    ours = [(r.get("input"), r["reference"]) for r in run.results["finetuned"].predictions]
    if (report.get("test_sha256") != run.prepared.report.get("test_sha256") or "finetuned" not in
            evaluated.get("results", {}) or [(r.get("input"), r["reference"]) for r in predictions] != ours):
        raise RuntimeError(f"the self-training run {nested.path} did not evaluate the same {run.split} examples as "
                           f"{run.run_dir.path} (fingerprints {report.get('test_sha256')} and "
                           f"{run.prepared.report.get('test_sha256')}); its gain cannot be measured")
    return systems.SystemResult(dict(evaluated["results"]["finetuned"]), predictions)


def _round_facts(run, nested: RunDir, result: systems.SystemResult) -> dict[str, Any]:
    """What a round's nested run trained on and scored: examples, pseudo-labels kept, steps, the metric."""
    metric = metrics.PRIMARY_METRIC.get(run.recipe.task.type)
    train = [json.loads(line) for line in nested.data.split("train").read_text().splitlines()]
    training = nested.read_eval().get("training") or {}
    ci = (result.metrics.get("ci") or {}).get(metric)
    return {"n_train": len(train), "pseudo_in_train": sum(bool(r.get("pseudo_label")) for r in train),
            "train_steps": training.get("train_steps"), "train_seconds": training.get("train_seconds"),
            "metric": metric, "value": result.metrics.get(metric), "ci": ci}


def _round_model(run, nested: RunDir):
    """Round ``nested``'s trained model, loaded as ``lmtune eval`` loads a run: the base model, then its artefact."""
    base = run.task.load(run.load_kwargs)[0]
    return run.method.load(base, nested.final).eval()


def gain(run) -> dict[str, Any]:
    """The task metric of ``self_trained`` minus ``finetuned`` on the same examples, with a paired bootstrap
    interval and p-value (``eval.bootstrap`` resamples; the difference alone when it is 0)."""
    recipe, results = run.recipe, run.results
    metric = metrics.PRIMARY_METRIC.get(recipe.task.type)
    found: dict[str, Any] = {"value": None, "ci_low": None, "ci_high": None, "p_value": None}
    ours, theirs = results[SYSTEM].metrics.get(metric), results["finetuned"].metrics.get(metric)
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)):
        found["value"] = ours - theirs
    tuned, base = results[SYSTEM].predictions, results["finetuned"].predictions
    if recipe.eval.bootstrap and found["value"] is not None:
        found = bootstrap.paired_difference(recipe.task.type, metric, [r["reference"] for r in base],
                                            [r["prediction"] for r in tuned], [r["prediction"] for r in base],
                                            recipe.task.labels, n_resamples=recipe.eval.bootstrap, seed=recipe.seed)
    p = found["p_value"]
    return {"metric": metric, "a": SYSTEM, "b": "finetuned", "value": found["value"], "ci_low": found["ci_low"],
            "ci_high": found["ci_high"], "p_value": None if p is None or math.isnan(p) else p}


def _say_gain(found: dict[str, Any], quiet: bool) -> None:
    if found["value"] is None:
        return
    interval = (f" [{found['ci_low']:+.3f}, {found['ci_high']:+.3f}]" if found["ci_low"] is not None else "")
    p = f" (p = {found['p_value']:.2g})" if found["p_value"] is not None else ""
    say(f"[self-training] {found['metric']} {found['value']:+.3f}{interval}{p} over the supervised run", quiet)
