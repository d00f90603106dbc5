"""Whether a run fits its device, and what to change when it does not, each change with its estimated effect.

The changes are the usual ones: a smaller micro-batch with more accumulation (the same examples per optimizer
step), gradient checkpointing, LoRA instead of full fine-tuning, a 4-bit base (QLoRA, CUDA only). Each effect
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


def available_mb() -> tuple[float, str, bool]:
    """This machine's memory for a run in MB, what it is, and whether it is a CUDA GPU's (else the RAM's)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / memory.MB, f"{props.name} memory", True
    import psutil

    return psutil.virtual_memory().total / memory.MB, "RAM (total)", False


def suggestions(params: Params, setup: Setup, micro: dict, training, method, lora_params: Callable[[], Params],
                cuda: bool, need_mb: float, available: float) -> list[dict[str, Any]]:
    """Each change that lowers the memory the run needs, with its effect and whether the run then fits.

    Args:
        params / setup / micro: the run as the recipe has it (the largest micro-batch).
        training: the recipe's ``training`` section (batch size, accumulation).
        method: the recipe's method (its capabilities: full weights, checkpointing).
        lora_params: the model's parameters with LoRA (defaults, no dropout) instead (built only if asked).
        cuda: the target is a CUDA GPU (a 4-bit base needs one).
        need_mb / available: what the run needs as it stands, and what the device has.
    """
    base = _total(params, setup, micro)
    options: list[tuple[str, Params, Setup, dict]] = []
    batch = _smaller_batch(params, setup, micro, training, need_mb, available, base)
    if batch is not None:
        options.append(batch)
    if not setup.checkpointing and method.checkpointing:
        options.append(("training.gradient_checkpointing: true (about a third more compute)", params,
                        replace(setup, checkpointing=True), micro))
    lora = None
    if method.full_weights:
        lora = lora_params()
        options.append(("method.name: lora (r 16 on every linear layer, lora_dropout 0, a frozen base)", lora,
                        replace(setup, weights="bf16" if cuda and setup.weights == "fp32" else setup.weights,
                                trainable="fp32"), micro))
    if cuda and setup.weights != "nf4":
        options.append(("method.name: qlora (LoRA on a 4-bit base)", lora or params,
                        replace(setup, weights="nf4", trainable="fp32", compute="bf16"), micro))
    out = []
    for change, p, s, m in options:
        saves = base - _total(p, s, m)
        if saves > 0:
            need = round(need_mb - saves, 3)
            out.append({"change": change, "saves_mb": round(saves, 3), "need_mb": need, "fits": need <= available})
    return out


def _smaller_batch(params: Params, setup: Setup, micro: dict, training, need_mb: float, available: float,
                   base: float) -> tuple[str, Params, Setup, dict] | None:
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
        if need_mb - (base - _total(params, setup, smaller)) <= available:
            break
    if chosen is None:
        return None
    size, smaller = chosen
    accum = math.ceil(training.batch_size * training.grad_accum / size)
    return (f"training.batch_size: {size}, training.grad_accum: {accum} (same examples per step)", params, setup,
            smaller)


def _total(params: Params, setup: Setup, micro: dict) -> float:
    return memory.breakdown(params, setup, micro, 1, 1)["training_total"]
