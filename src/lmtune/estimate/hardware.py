"""Named hardware for ``lmtune estimate --hardware``: a projection from FLOPs, marked as one.

Time on a named device is projected, not measured: FLOPs of the run divided by the device's dense bf16 peak
times an assumed utilisation (:data:`UTILIZATION`). Training FLOPs per token of a matrix weight are 6 for full
fine-tuning (forward 2, backward 4: gradients of inputs and of weights) and 4 for a method with a frozen base
(no weight gradients of the base; the adapters' own are negligible), plus 2 with gradient checkpointing (the
forward again). The input embedding is a lookup (no FLOPs); the output layer runs only at target positions
(``lmtune.train.loss``), so its FLOPs count targets, not tokens. Attention's own products (scores and their
weighted sum, causal: ``2 s^2 q`` FLOPs per row of ``s`` tokens per layer forward, ``q`` the query width) are
added from each micro-batch's rows x width squared; in training they take forward + backward (x3), and once
more with checkpointing.
Memory is the breakdown of :mod:`lmtune.estimate.memory` with the dtypes a CUDA GPU with bf16 gives the run
(``model.dtype: auto``: a bf16 base for adapter methods, fp32 weights under bf16 autocast for full fine-tuning),
plus :data:`CONTEXT_MB` for the CUDA context and the caching allocator's slack.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.errors import UserError

#: Assumed model FLOPs utilisation of the dense bf16 peak. Reported with every projection; models under ~1B
#: parameters and short rows reach less (kernel launches, not arithmetic, then bound a step).
UTILIZATION = 0.35
#: CUDA context and allocator slack outside ``max_memory_allocated``, assumed (MB).
CONTEXT_MB = 600


@dataclass(frozen=True)
class Hardware:
    """One device: memory, dense bf16 peak, and a typical on-demand price per hour (an input, not a quote)."""

    name: str
    memory_gb: float
    bf16_tflops: float
    price_per_hour: float
    description: str


HARDWARE: dict[str, Hardware] = {h.name: h for h in (
    Hardware("a10-24gb", 24, 125, 0.75, "NVIDIA A10, 24 GB"),
    Hardware("l4-24gb", 24, 121, 0.70, "NVIDIA L4, 24 GB"),
    Hardware("rtx4090-24gb", 24, 165, 0.40, "NVIDIA GeForce RTX 4090, 24 GB"),
    Hardware("a100-40gb", 40, 312, 1.30, "NVIDIA A100, 40 GB"),
    Hardware("l40s-48gb", 48, 362, 1.00, "NVIDIA L40S, 48 GB"),
    Hardware("a100-80gb", 80, 312, 1.80, "NVIDIA A100, 80 GB"),
    Hardware("h100-80gb", 80, 989, 2.50, "NVIDIA H100 SXM, 80 GB"),
)}


def get(name: str) -> Hardware:
    """The named device.

    Raises:
        UserError: (``--hardware``) an unknown name, listing the known ones.
    """
    if name not in HARDWARE:
        import difflib

        close = difflib.get_close_matches(name.lower(), list(HARDWARE), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown hardware {name!r}; {hint}known: {', '.join(HARDWARE)}", source="--hardware")
    return HARDWARE[name]


def training_flops(params, full_weights: bool, checkpointing: bool, padded_tokens: int, targets: int,
                   squared: int, full_logits: bool = False) -> float:
    """FLOPs of the training steps (see the module docstring); ``squared``: rows x width^2 summed over micro-batches."""
    per_weight = (6 if full_weights else 4) + (2 if checkpointing else 0)
    body = params.matmul - params.output
    weights = per_weight * (body * padded_tokens + params.output * (padded_tokens if full_logits else targets))
    return weights + (3 + (1 if checkpointing else 0)) * _attention(params, squared)


def forward_flops(params, tokens: int, output_positions: int, squared: int) -> float:
    """FLOPs of a no-grad forward over ``tokens`` (``squared``: the rows' lengths squared, summed), with the output
    layer at ``output_positions``."""
    return 2 * ((params.matmul - params.output) * tokens + params.output * output_positions) + \
        _attention(params, squared)


def _attention(params, squared: int) -> float:
    """Forward FLOPs of causal attention's two products over rows whose squared lengths sum to ``squared``."""
    return 2 * params.layers * params.q_width * squared


def project(device: Hardware, params, flops: dict[str, float], memory: dict, price_per_hour: float | None,
            devices: int = 1) -> dict:
    """Time, memory and money of the run on ``devices`` of ``device``, marked as a projection.

    Args:
        device: the named hardware.
        params: :class:`lmtune.estimate.memory.Params` of the recipe's model and method.
        flops: FLOPs per part of the run (training, validation, evaluation, ...).
        memory: :func:`lmtune.estimate.memory.breakdown` with the dtypes this device gives the run; its
            ``per_process`` (:func:`lmtune.estimate.sharding.per_process`) is what each device holds.
        price_per_hour: ``--price-per-hour``; default the table's price, per device.
        devices: one per process; ``flops`` are one device's share, so time is per device (gradient exchange
            not counted) and money is for all of them.
    """
    rate = device.bf16_tflops * 1e12 * UTILIZATION
    seconds = {part: float(f"{value / rate:.4g}") for part, value in flops.items()}
    total = float(f"{sum(seconds.values()):.4g}")
    price = device.price_per_hour if price_per_hour is None else price_per_hour
    available = device.memory_gb * 1024
    held = memory.get("per_process", memory)
    need = round(max(held["training_total"], held["evaluation_total"]) + CONTEXT_MB, 1)
    return {"projection": True, "hardware": device.name, "description": device.description,
            "assumptions": {"bf16_tflops": device.bf16_tflops, "utilization": UTILIZATION,
                            "context_mb": CONTEXT_MB, "price_per_hour": price,
                            "price_source": "--price-per-hour" if price_per_hour is not None else "hardware table"},
            "flops": {part: float(f"{value:.4g}") for part, value in flops.items()},
            "devices": devices, "seconds": seconds, "total_seconds": total,
            "device_hours": round(devices * total / 3600, 4), "cost": round(devices * total / 3600 * price, 4),
            "memory": memory, "memory_needed_mb": need, "memory_available_mb": available, "fits": need <= available}
