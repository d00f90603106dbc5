"""The parts of a run besides the training steps, in tokens: validation, the reference pass, the evaluation.

Each part is a workload of forward passes (padded tokens, output positions, squared row lengths for attention)
plus decoding steps for systems that generate. On this machine a part takes its forward tokens at the measured
no-grad rate and its decoding steps at the measured time of one (:mod:`lmtune.estimate.timing`); on named
hardware, its FLOPs at the assumed throughput (:mod:`lmtune.estimate.hardware`).

How evaluation is estimated from the test size: every system of ``eval.systems`` that uses the recipe's model
reads every evaluated test prompt once (few-shot prompts hold ``eval.few_shot_k`` more training examples of mean
length); label scoring adds the label tokens; a generating task decodes ``eval.max_new_tokens`` steps per batch
of ``eval.batch_size`` (an upper bound: answers that end early stop sooner). Not counted: retrieved passages
(rag), other models (``model:<ref>``), the bias and forgetting probes, writing checkpoints and the report.
"""

from __future__ import annotations

import math
from typing import Any

from lmtune.distributed import World
from lmtune.kinds import systems as system_kinds
from lmtune.kinds.tasks import task_kind
from lmtune.train.objectives import shared_batches


def validations(steps: int, eval_every: int | None, has_validation: bool) -> int:
    """How often the loop validates: every ``eval_every`` steps and after the last."""
    if not has_validation or not eval_every:
        return 0
    return steps // eval_every + (1 if steps % eval_every else 0)


def workloads(recipe, task, counts) -> dict[str, dict[str, Any]]:
    """Validation, reference pass and evaluation as forward tokens, output positions, squared lengths, decoding."""
    t, s = recipe.training, counts.summary
    parts: dict[str, dict[str, Any]] = {}
    # Validation shares its batches out too, every N-th to each process (``evaluate_loss``), but GRPO's.
    shared = s.get("processes", 1) if counts.objective.shares_validation else 1
    mine = _every_nth_batch(counts.encoded.get("validation", []), t.batch_size, shared)
    n_val = validations(counts.steps, t.eval_every, bool(mine))
    if n_val:
        tokens, squared = _in_batches([counts.objective.length(e) for e in mine], t.batch_size)
        outputs = sum(counts.objective.units(e) for e in mine)
        note = f"{n_val} passes" + (f", the first of {shared} processes' shares" if shared > 1 else "")
        parts["validation"] = _part(n_val * tokens, n_val * outputs, n_val * squared, note=note)
    # The base model's log-probs of every pair, before training (SimPO and ORPO have no reference), the batches
    # of each split shared out too (``parallel.fill_shared``).
    if task.shape == "preference" and getattr(getattr(task, "loss", None), "needs_reference", True):
        n, size = s.get("processes", 1), recipe.eval.batch_size
        tokens = squared = 0
        for name in ("train", "validation"):
            mine = _every_nth_batch(counts.encoded.get(name, []), size, n)
            more = _in_batches([counts.objective.length(e) for e in mine], size)
            tokens, squared = tokens + more[0], squared + more[1]
        parts["reference_pass"] = _part(tokens, tokens, squared,
                                        note=f"the first of {n} processes' shares" if n > 1 else "")
    # Evaluation shares the test prompts out, every N-th to each process (``lmtune.evaluate.sharding``): the first
    # process's share is the largest.
    evaluation = _evaluation(recipe, task, counts.test_prompt_lengths[::s.get("processes", 1)],
                             s["train_length"]["mean"])
    if evaluation is not None:
        if s.get("processes", 1) > 1:
            evaluation["note"] += f"; the first of {s['processes']} processes' shares"
        parts["evaluation"] = evaluation
    return parts


def _evaluation(recipe, task, lengths: list[int], train_mean: float) -> dict[str, Any] | None:
    """Every system of ``eval.systems`` that runs the recipe's model over the test prompts."""
    e, kind = recipe.eval, task_kind(recipe.task.type)
    total = _part(0, 0, 0)
    skipped = []
    for name in e.systems:
        system = system_kinds.system_kind(name)
        if system.constant or task.shape not in system.shapes:
            continue
        if system.other_model or system.retrieval:
            skipped.append(name)
        if system.other_model:
            continue
        extra = e.few_shot_k * train_mean if system.shots else 0.0
        prompts = [n + extra for n in lengths]
        tokens, squared = _in_batches(prompts, e.batch_size)
        outputs = len(lengths) * (sum(1 for _ in recipe.task.labels or []) or 1)
        total = _add(total, _part(tokens, outputs, squared))
        if task.shape == "tokens" and not kind.labelled and not kind.perplexity:
            total = _add(total, _decoding(prompts, e.batch_size, e.max_new_tokens))
    if not total["tokens"] and not skipped:
        return None
    n_systems = sum(1 for n in e.systems if not system_kinds.system_kind(n).constant)
    total["note"] = (f"{n_systems} system(s) x {len(lengths)} test examples"
                     + (f"; not counted: {', '.join(skipped)} (other models, retrieved passages)" if skipped else ""))
    return total


def _decoding(prompts: list[float], batch: int, new_tokens: int) -> dict[str, Any]:
    """``new_tokens`` decoding steps per batch; each step a one-token row per example over its context."""
    batches = math.ceil(len(prompts) / batch) if prompts else 0
    mean = sum(prompts) / len(prompts) if prompts else 0.0
    rows = len(prompts) * new_tokens
    # One new token attends to the prompt and what was generated so far: twice the context as "squared" length.
    return {**_part(0, 0, 0), "decode_steps": batches * new_tokens, "decode_tokens": rows,
            "decode_squared": int(rows * 2 * (mean + new_tokens / 2))}


def _every_nth_batch(examples: list, batch: int, n: int) -> list:
    """The examples the first of n processes reads of ``examples`` batched in order (``shared_batches``, the
    run's own rule); batched again, they give the same batches."""
    batches = [examples[start:start + batch] for start in range(0, len(examples), batch)]
    return [e for chunk, counted in shared_batches(batches, World(0, n)) if counted for e in chunk]


def _in_batches(lengths: list[float], batch: int) -> tuple[int, int]:
    """Padded tokens and rows x width^2 of ``lengths`` batched in order, ``batch`` at a time."""
    tokens = squared = 0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        width = math.ceil(max(chunk))
        tokens += width * len(chunk)
        squared += width * width * len(chunk)
    return tokens, squared


FIELDS = ("tokens", "output_positions", "squared", "decode_steps", "decode_tokens", "decode_squared")


def _part(tokens: float, outputs: float, squared: float, note: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"tokens": int(tokens), "output_positions": int(outputs), "squared": int(squared),
                           "decode_steps": 0, "decode_tokens": 0, "decode_squared": 0}
    if note:
        out["note"] = note
    return out


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in FIELDS}


def seconds_here(parts: dict[str, dict[str, Any]], timing: dict[str, Any]) -> dict[str, float]:
    """Each part's seconds on this machine: forward tokens at the measured rate, decoding steps at theirs."""
    out = {}
    for name, part in parts.items():
        rate = timing["forward_s_per_token"]
        if name == "reference_pass" and timing.get("reference_pass", {}).get("tokens"):
            rate = timing["reference_pass"]["seconds"] / timing["reference_pass"]["tokens"]
        out[name] = round(part["tokens"] * rate + part["decode_steps"] * timing["decode_step_s"], 2)
    return out


def step_seconds(timing: dict[str, Any], mean_step_tokens: float) -> dict[str, float]:
    """Seconds per optimizer step: the measured update plus forward + backward at the measured rate per padded
    token, for a step of the run's mean size. The rate comes from the run's own first steps (the longest step,
    timed first for the peak memory, runs at a better rate per token than a typical one), or from the longest
    when it was the only step timed."""
    rows = timing["steps"]
    typical = rows[1:] or rows
    update = sum(r["optimizer_s"] for r in rows) / len(rows)
    rate = sum(r["forward_backward_s"] for r in typical) / max(sum(r["padded_tokens"] for r in typical), 1)
    measured = sum(r["forward_backward_s"] + r["optimizer_s"] for r in rows) / len(rows)
    return {"seconds_per_step": round(update + rate * mean_step_tokens, 4),
            "measured_seconds_per_step": round(measured, 4), "optimizer_s": round(update, 4),
            "forward_backward_s_per_token": rate}
