"""A few real optimizer steps of the recipe on this machine: seconds per step and peak memory, measured.

The model is loaded and the method applied as the run does it, and the training loop's own ``setup`` prepares
them (speed switches, accelerate, AdamW, the micro-batch order), into a temporary directory: nothing goes to
``runs/``. One warm-up step on the run's longest step (the most padded tokens: where memory peaks), then the
timed steps: the longest again (now with the optimizer state allocated, so the peak is the run's), then the
run's own first steps. Each step is timed in two parts, forward + backward of its micro-batches and the
optimizer update (clipping, AdamW), so a step of another length can be predicted: the update is the same for
every step, forward + backward scales with padded tokens (at the rate of the run's own steps:
:func:`lmtune.estimate.plan.step_seconds`). A no-grad pass over validation examples (the loop's
own ``evaluate_loss``) gives the forward rate that validation and evaluation take; a forward of one token per
row gives the time of a decoding step.

Peak memory is what ``eval.json`` records for a run (:func:`lmtune.train.parallel.peak_memory_mb`): the peak
resident set of the process on a CPU, the peak CUDA allocation on a GPU.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lmtune import distributed, precision, progress
from lmtune.models import pad_id
from lmtune.train import loop, parallel


def current_mb() -> float:
    """Memory held now, in the measure :func:`lmtune.train.parallel.peak_memory_mb` peaks: RSS, or CUDA allocated."""
    if parallel.memory_kind() == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure(task, method, recipe, load_kwargs: dict, counts, settings: loop.Settings, steps: int,
            quiet: bool = False) -> dict[str, Any]:
    """Load the model, train ``steps`` timed steps (after one warm-up) and measure; see the module docstring.

    Args:
        task / method: the recipe's task shape and method.
        recipe: the validated recipe (``method.peft`` and ``method.freeze``).
        load_kwargs: ``from_pretrained`` arguments (the method's and the weights' dtype).
        counts: :class:`lmtune.estimate.tokens.Counts` of the recipe.
        settings: the loop settings the run would use.
        steps: timed optimizer steps.
        quiet: no progress bar.
    """
    before_load = current_mb()
    started = time.perf_counter()
    model, tokenizer, _ = task.load(load_kwargs)
    load_s = time.perf_counter() - started
    pad = pad_id(tokenizer)
    chosen = _chosen_steps(counts, steps)
    train, val = counts.encoded["train"], counts.encoded.get("validation", [])
    reference_s = _reference(task, model, counts, chosen, settings, pad)
    model = method.apply(model, recipe.method.peft, recipe.method.freeze)
    if not method.full_weights:
        precision.upcast_trainable(model)
    loop.check(model, settings)
    with tempfile.TemporaryDirectory(prefix="lmtune-estimate-") as tmp:
        run = loop.setup(model, train, val, settings, Path(tmp), pad, quiet=True, objective=task.objective())
        try:
            before_steps = current_mb()
            rows = _steps(run, chosen, quiet)
            peak = parallel.peak_memory_mb(distributed.world())[0]
            forward = _forward_rate(run, [e for step in chosen for mb in _micro(run, step) for e in mb])
            decode_s = _decode_step(run, recipe.eval.batch_size) if task.shape == "tokens" else 0.0
        finally:
            loop.cleanup(run)
    return {"load_s": round(load_s, 2), "steps": rows, "reference_pass": reference_s,
            "forward_s_per_token": forward, "decode_step_s": decode_s,
            "memory_kind": parallel.memory_kind(), "before_load_mb": round(before_load, 1),
            "before_steps_mb": round(before_steps, 1),
            "peak_memory_mb": round(peak, 1), "steps_growth_mb": round(peak - before_steps, 1)}


def _chosen_steps(counts, steps: int) -> list[int]:
    """The longest step, then the run's first steps (as many as make ``steps`` in all), of the run in one process
    (this process times steps of ``training.batch_size`` examples, what each process of a larger run takes)."""
    total, longest = counts.timed
    chosen = [longest]
    for step in range(total):
        if len(chosen) >= steps:
            break
        if step != longest:
            chosen.append(step)
    return chosen


def _micro(run: loop.Training, step: int) -> list[list]:
    """The micro-batches of optimizer step ``step``, as ``loop.train_step`` takes them."""
    s = run.settings
    return [[run.train_set[i] for i in run.batches.indices(m)]
            for m in range(step * s.grad_accum, (step + 1) * s.grad_accum)]


def _steps(run: loop.Training, chosen: list[int], quiet: bool) -> list[dict[str, Any]]:
    """One warm-up step on ``chosen[0]`` and then every step in ``chosen``, each timed in two parts."""
    rows = []
    with progress.bar(len(chosen) + 1, "estimate: timing", "step", quiet=quiet) as bar:
        _step(run, chosen[0])  # warm-up: allocations, kernels chosen, lazy initialisation
        bar.update(1)
        for step in chosen:
            rows.append(_step(run, step))
            bar.update(1)
    return rows


def _step(run: loop.Training, step: int) -> dict[str, Any]:
    """One optimizer step as ``loop.train_step`` takes it: forward + backward of its micro-batches, then the update."""
    micro = _micro(run, step)
    run.model.train()  # as loop.train_step: transformers checkpoints activations only in training mode
    _sync()
    started = time.perf_counter()
    parallel.accumulate_gradients(run.model, micro, run.pad_id, run.accelerator, run.objective, run.world,
                                  run.holder)
    _sync()
    middle = time.perf_counter()
    if run.settings.max_grad_norm:
        run.holder.clip(run.accelerator, run.params, run.settings.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    _sync()
    ended = time.perf_counter()
    return {"step": step, "padded_tokens": _padded(run, micro), "forward_backward_s": round(middle - started, 4),
            "optimizer_s": round(ended - middle, 4)}


def _padded(run: loop.Training, micro: list[list]) -> int:
    """Padded tokens of the micro-batches, counted as :mod:`lmtune.estimate.tokens` counts them."""
    lengths = [[run.objective.length(e) for e in mb] for mb in micro if mb]
    if run.settings.packing:
        return sum(sum(sizes) for sizes in lengths)
    return sum(max(sizes) * len(sizes) for sizes in lengths)


def _forward_rate(run: loop.Training, examples: list, batches: int = 2, repeats: int = 3) -> float:
    """Seconds per padded token of a no-grad pass (the loop's ``evaluate_loss``) over a few batches of ``examples``
    (the timed steps' own: a preference pair has its reference log-probs only there); the median of ``repeats``
    passes after a warm-up."""
    size = run.settings.batch_size
    sample = examples[:size * batches]
    if not sample:
        return 0.0
    tokens = _padded(run, [sample[i:i + size] for i in range(0, len(sample), size)])
    times = []
    for _ in range(repeats + 1):
        _sync()
        started = time.perf_counter()
        loop.evaluate_loss(run.model, sample, size, run.pad_id, run.accelerator.device, run.accelerator,
                           run.objective)
        _sync()
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2] / max(tokens, 1)


@torch.no_grad()
def _decode_step(run: loop.Training, rows: int, repeats: int = 3) -> float:
    """Seconds of one forward of one token per row for ``rows`` rows: about one step of batched decoding."""
    model = run.holder.unwrap(run.model, run.accelerator)
    ids = torch.full((rows, 1), run.pad_id, dtype=torch.long, device=run.accelerator.device)
    was_training = model.training
    model.eval()
    times = []
    with run.accelerator.autocast():
        for _ in range(repeats + 1):
            _sync()
            started = time.perf_counter()
            model(input_ids=ids)
            _sync()
            times.append(time.perf_counter() - started)
    model.train(was_training)
    return round(min(times[1:]), 5)


def _reference(task, model, counts, chosen: list[int], settings: loop.Settings, pad: int) -> dict[str, float]:
    """Preference tasks: the reference log-probs of the timed steps' pairs (the run computes them for every pair
    before training); returns the seconds and tokens of that pass, to scale to the whole data."""
    if task.shape != "preference":
        return {}
    from lmtune.train.batches import MicroBatches

    train = counts.encoded["train"]
    lengths = [counts.objective.length(e) for e in train] if settings.group_by_length else None
    batches = MicroBatches(len(train), settings.batch_size, settings.seed, settings.grad_accum, lengths)
    picked = {i for s in chosen for m in range(s * settings.grad_accum, (s + 1) * settings.grad_accum)
              for i in batches.indices(m)}
    pairs = [train[i] for i in sorted(picked)]
    started = time.perf_counter()
    task.prepare_reference(model, {"train": pairs}, pad)
    return {"seconds": round(time.perf_counter() - started, 3),
            "tokens": sum(counts.objective.length(p) for p in pairs)}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
