"""Exact token counts of a recipe: its own data stage, prompt template, tokenizer and truncation; steps and epochs.

Nothing here is approximated: the splits are the data stage's, every training example is encoded as
:mod:`lmtune.tasks` encodes it for the run, and the run's micro-batches are walked as the training loop
walks them (:class:`lmtune.train.batches.MicroBatches`, same seed and length grouping), so
``train_tokens`` is the figure ``eval.json`` will record as ``training.train_tokens`` (one process).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from lmtune.data.sample import sample_examples
from lmtune.data.templates import render
from lmtune.kinds.tasks import task_kind
from lmtune.train.batches import MicroBatches, total_steps
from lmtune.train.objectives import Objective, TokenObjective

#: What the loss of one training example is averaged over, by objective class name.
UNITS = {"TokenObjective": "target tokens", "HeadObjective": "examples", "PreferenceObjective": "pairs"}


@dataclass
class Counts:
    """The encoded splits and what the run will do with them."""

    encoded: dict[str, list]  # train (with replay blocks) and validation, as the run trains on them
    objective: Objective
    steps: int
    step_tokens: list[int]  # padded tokens of each optimizer step of the run, in one process (the busiest)
    longest_step: int  # the step whose micro-batches hold the most padded tokens: where memory peaks
    peak_micro: dict[str, int]  # the largest micro-batch of one process: rows, width, tokens, targets
    test_prompt_lengths: list[int]  # tokens of each evaluated test prompt, whole (as evaluation reads them)
    timed: tuple[int, int]  # steps and longest step of the run in one process (where the timed steps come from)
    summary: dict[str, Any] = field(default_factory=dict)


def count(recipe, task, prepared, tokenizer, template, processes: int = 1) -> Counts:
    """Encode the recipe's splits with its own task shape and count what its run will process.

    With ``processes`` > 1 the run's steps each take ``processes x batch_size`` examples (``training.batch_size``
    is per process), dealt out as the loop deals them; the figures that set a process's memory and time (the
    largest micro-batch, padded tokens per step) are then one process's, the busiest.

    Args:
        recipe: the validated recipe.
        task: its task shape (:func:`lmtune.tasks.task_for`).
        prepared: the data stage's output (:func:`lmtune.data.prepare.prepare`).
        tokenizer: the model's tokenizer.
        template: the resolved prompt template (None for a head or preference task).
        processes: the processes the run trains in.
    """
    t = recipe.training
    encoder = task.encoder(tokenizer)
    encoded = task.encode(prepared, tokenizer, encoder, template)
    if t.replay is not None:
        encoded["train"] = task.with_replay(encoded["train"], encoder)
    objective = task.objective() or TokenObjective(t.max_length if t.packing else None)
    train = encoded["train"]
    lengths = [objective.length(e) for e in train]
    steps = total_steps(len(train), t.batch_size * processes, t.grad_accum, t.epochs, t.max_steps)
    walk = _walk(train, lengths, objective, recipe.seed, t, steps, processes)
    test = _test_prompts(recipe, task, prepared, encoder, template, encoded)
    counts = Counts({k: v for k, v in encoded.items() if k != "test"}, objective, steps, walk["step_padded"],
                    walk["longest_step"], walk["peak_micro"], test, (steps, walk["longest_step"]))
    if processes > 1:  # the timed steps run in one process, on the one-process run's steps
        one = total_steps(len(train), t.batch_size, t.grad_accum, t.epochs, t.max_steps)
        counts.timed = (one, _walk(train, lengths, objective, recipe.seed, t, one)["longest_step"])
    per_epoch = -(-len(train) // (t.batch_size * processes))  # micro-batches in one pass (MicroBatches.per_epoch)
    counts.summary = {
        "examples": {**{name: len(items) for name, items in prepared.splits.items()},
                     "train_with_replay": len(train), "test_evaluated": len(test)},
        "max_length": t.max_length,
        "truncated": _truncated(prepared.report.get("truncation", {})),
        "target_unit": UNITS.get(type(objective).__name__, "units"),
        "train_tokens_per_epoch": sum(lengths),
        "train_targets_per_epoch": sum(objective.units(e) for e in train),
        "train_length": _stats(lengths),
        "validation_tokens": sum(objective.length(e) for e in encoded.get("validation", [])),
        "test_prompt_tokens": {**_stats(test), "total": sum(test)},
        "batch_size": t.batch_size, "grad_accum": t.grad_accum, "processes": processes,
        "steps": steps, "epochs": round(steps * t.grad_accum / per_epoch, 3) if per_epoch else 0.0,
        "train_tokens": walk["tokens"], "train_targets": walk["targets"],
        # What one process computes (the busiest, step by step): all of it with one process.
        "train_padded_tokens": walk["busiest"]["padded_tokens"],
        "train_squared_lengths": walk["busiest"]["squared_lengths"],
        "process_targets": walk["busiest"]["targets"],
        "longest_step": walk["longest_step"], "peak_micro_batch": walk["peak_micro"],
    }
    return counts


def _walk(train: list, lengths: list[int], objective: Objective, seed: int, t, steps: int,
          processes: int = 1) -> dict[str, Any]:
    """Every micro-batch of the run, in the loop's order: tokens, targets, padded tokens per step, the largest.

    With several processes each global micro-batch of ``processes x batch_size`` examples is dealt out as the
    loop deals it (``lmtune.train.parallel.shard``: every N-th example); a step lasts as long as its busiest
    process, so ``step_padded`` and ``busiest`` hold that process's figures, ``tokens`` and ``targets`` all of them.
    """
    batches = MicroBatches(len(train), t.batch_size * processes, seed, t.grad_accum,
                           lengths if t.group_by_length else None)
    totals = {"tokens": 0, "targets": 0}
    busiest = {"padded_tokens": 0, "targets": 0, "squared_lengths": 0}
    step_padded: list[int] = []
    peak = {"rows": 0, "width": 0, "tokens": 0, "targets": 0}
    for step in range(steps):
        ranks = [{"padded_tokens": 0, "targets": 0, "squared_lengths": 0} for _ in range(processes)]
        for m in range(step * t.grad_accum, (step + 1) * t.grad_accum):
            idx = batches.indices(m)
            for rank in range(processes):
                micro = _micro(idx[rank::processes], lengths, objective, train, t)
                if micro is None:
                    continue
                totals["tokens"] += micro["sizes"]
                totals["targets"] += micro["targets"]
                for key in ranks[rank]:
                    ranks[rank][key] += micro[key]
                if micro["padded_tokens"] > peak["tokens"]:
                    peak = micro["peak"]
        top = max(ranks, key=lambda r: r["padded_tokens"])
        step_padded.append(top["padded_tokens"])
        for key in busiest:
            busiest[key] += top[key]
    longest = max(range(steps), key=lambda s: step_padded[s]) if steps else 0
    return {**totals, "busiest": busiest, "step_padded": step_padded, "longest_step": longest, "peak_micro": peak}


def _micro(idx: list[int], lengths: list[int], objective: Objective, train: list, t) -> dict[str, Any] | None:
    """One process's micro-batch: its tokens, padded tokens, squared lengths, targets, and its shape."""
    if not idx:
        return None
    sizes = [lengths[i] for i in idx]
    # Packed rows hold examples end to end (almost no padding); otherwise each row is as wide as the longest.
    width = max(sizes)
    padded = sum(sizes) if t.packing else width * len(idx)
    targets = sum(objective.units(train[i]) for i in idx)
    # Packed: rows of max_length tokens, as many as the examples fill.
    rows = -(-padded // t.max_length) if t.packing else len(idx)
    return {"sizes": sum(sizes), "padded_tokens": padded, "targets": targets,
            "squared_lengths": sum(n * n for n in sizes) if t.packing else width * width * len(idx),
            "peak": {"rows": rows, "width": t.max_length if t.packing else width, "tokens": padded,
                     "targets": targets}}


def _test_prompts(recipe, task, prepared, encoder, template, encoded) -> list[int]:
    """Token counts of the test examples evaluation reads (``eval.max_examples`` sampled as the run samples them).

    Prompted tasks: the whole prompt, as the systems score it (not cut to ``training.max_length``), or the whole
    text for perplexity; a head or preference task: its encoded test inputs, as its evaluation reads them.
    """
    test = prepared.splits.get("test", [])
    kept, _ = sample_examples(test, recipe.eval.max_examples, recipe.seed, recipe.eval.sample)
    if "test" in encoded:  # a head or preference task encodes its test split as it evaluates it
        objective = task.objective()
        return [objective.length(encoded["test"][i]) for i in kept]
    rendered = [render(template, test[i], recipe.task.labels) for i in kept]
    if task_kind(recipe.task.type).perplexity:  # the text itself is what is scored
        return [len(encoder.prompt_ids(r.messages)) + len(encoder.target_ids(r.completion)) for r in rendered]
    return [len(encoder.prompt_ids(r.messages)) for r in rendered]


def _truncated(truncation: dict[str, Any]) -> dict[str, int]:
    """Examples cut to ``training.max_length`` per split (test: prompts longer than it, evaluated whole)."""
    return {name: value.get("truncated", value.get("longer_than_max_length", 0))
            for name, value in truncation.items() if isinstance(value, dict)}


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(values), 1), "median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}
