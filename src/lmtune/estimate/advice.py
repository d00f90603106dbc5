"""Whether a run fits its device, and what to change when it does not, each change with its estimated effect.

The changes are the usual ones: a smaller micro-batch with more accumulation (the same examples per optimizer
step), gradient checkpointing, LoRA instead of full fine-tuning, a 4-bit base (QLoRA, CUDA only), and with
several processes a strategy that shards more (:mod:`lmtune.estimate.sharding`). Each effect
is the difference of the memory formula (:mod:`lmtune.estimate.memory`) with and without the change, taken off
the figure the fit was judged on (measured on this machine when the steps ran, else the formula).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lmtune.estimate import memory
from lmtune.estimate.memory import Params, Setup
from lmtune.estimate.sharding import Layout, per_process


def available_mb() -> tuple[float, str, bool]:
    """This machine's memory for a run in MB, what it is, and whether it is a CUDA GPU's (else the RAM's)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / memory.MB, f"{props.name} memory", True
    import psutil

    return psutil.virtual_memory().total / memory.MB, "RAM (total)", False


def suggestions(params: Params, setup: Setup, micro: dict, training, method, lora_params: Callable[[], Params],
                cuda: bool, need_mb: float, available: float, layout: Layout | None = None) -> list[dict[str, Any]]:
    """Each change that lowers the memory the run needs, with its effect and whether the run then fits.

    Args:
        params / setup / micro: the run as the recipe has it (the largest micro-batch).
        training: the recipe's ``training`` section (batch size, accumulation).
        method: the recipe's method (its capabilities: full weights, checkpointing).
        lora_params: the model's parameters with LoRA (defaults, no dropout) instead (built only if asked).
        cuda: the target is a CUDA GPU (a 4-bit base needs one).
        need_mb / available: what one process needs as the run stands, and what it has.
        layout: the strategy and number of processes (default: one process); with several, a strategy that
            shards more is a change too.
    """
    layout = layout or Layout()
    base = _total(params, setup, micro, layout)
    options: list[tuple[str, Params, Setup, dict, Layout]] = []
    batch = _smaller_batch(params, setup, micro, training, need_mb, available, base, layout)
    if batch is not None:
        options.append(batch)
    if not setup.checkpointing and method.checkpointing:
        options.append(("training.gradient_checkpointing: true (about a third more compute)", params,
                        replace(setup, checkpointing=True), micro, layout))
    lora = None
    if method.full_weights:
        lora = lora_params()
        options.append(("method.name: lora (r 16 on every linear layer, lora_dropout 0, a frozen base)", lora,
                        replace(setup, weights="bf16" if cuda and setup.weights == "fp32" else setup.weights,
                                trainable="fp32"), micro, layout))
    if cuda and setup.weights != "nf4":
        options.append(("method.name: qlora (LoRA on a 4-bit base)", lora or params,
                        replace(setup, weights="nf4", trainable="fp32", compute="bf16"), micro, layout))
    options += [(change, params, setup, micro, other) for change, other in _strategies(layout, setup, cuda)]
    out = []
    for change, p, s, m, lay in options:
        saves = base - _total(p, s, m, lay)
        if saves > 0:
            need = round(need_mb - saves, 3)
            out.append({"change": change, "saves_mb": round(saves, 3), "need_mb": need, "fits": need <= available})
    return out


def _strategies(layout: Layout, setup: Setup, cuda: bool) -> list[tuple[str, Layout]]:
    """With several processes: sharding everything across them (FSDP, ZeRO-3), and on a GPU ZeRO-3 offloading
    its optimizer state to CPU memory."""
    if layout.processes < 2:
        return []
    n, key = layout.processes, "training.distributed"
    out = []
    if layout.strategy != "fsdp" and setup.compute != "fp16":
        out.append((f"{key}.strategy: fsdp (weights, gradients and AdamW state sharded over the {n} processes)",
                    Layout("fsdp", n, layout.grad_accum)))
    if layout.strategy != "deepspeed" or layout.stage != 3:
        out.append((f"{key}.strategy: deepspeed, {key}.deepspeed.stage: 3 (ZeRO-3 over the {n} processes)",
                    Layout("deepspeed", n, layout.grad_accum, stage=3)))
    if cuda and not layout.offload_optimizer:
        out.append((f"{key}.strategy: deepspeed, stage: 3, offload_optimizer: true (its state in CPU memory)",
                    Layout("deepspeed", n, layout.grad_accum, stage=3, offload_optimizer=True)))
    return out


def _smaller_batch(params: Params, setup: Setup, micro: dict, training, need_mb: float, available: float,
                   base: float, layout: Layout) -> tuple[str, Params, Setup, dict, Layout] | None:
    """The largest micro-batch (halving) that fits, or 1 if none does, with accumulation keeping the step's size."""
    rows = micro["rows"]
    if rows <= 1:
        return None
    size = training.batch_size
    chosen = None
    while size > 1:
        size //= 2
        smaller = {**micro, "rows": min(rows, size), "targets": math.ceil(micro["targets"] * min(rows, size) / rows)}
        chosen = (size, smaller)
        if need_mb - (base - _total(params, setup, smaller, layout)) <= available:
            break
    if chosen is None:
        return None
    size, smaller = chosen
    accum = math.ceil(training.batch_size * training.grad_accum / size)
    return (f"training.batch_size: {size}, training.grad_accum: {accum} (same examples per step)", params, setup,
            smaller, replace(layout, grad_accum=accum))


def _total(params: Params, setup: Setup, micro: dict, layout: Layout) -> float:
    """One process's training memory (the whole run's with one process)."""
    return per_process(memory.breakdown(params, setup, micro, 1, 1), params, setup, layout)["training_total"]
