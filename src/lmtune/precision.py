"""Mixed precision: which one a run uses, and the autocast context for evaluation."""

from __future__ import annotations

import contextlib

import torch


def resolve(choice: str, device: torch.device | str | None = None) -> str:
    """``fp32``/``bf16``/``fp16`` or ``auto``: bf16 where the hardware computes it natively, else fp32.

    On CPUs with AVX512-BF16 or AMX, bf16 autocast runs matrix products about twice as fast as fp32
    (measured here: training 1.4x, forward 2x); on CPUs without it, bf16 would be emulated and slower.
    """
    if choice != "auto":
        return choice
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


def accelerate_name(choice: str) -> str:
    """The ``mixed_precision`` name accelerate expects."""
    return "no" if choice == "fp32" else choice


def autocast(device: torch.device, choice: str):
    """An autocast context for ``choice`` on ``device`` (a no-op for fp32)."""
    if choice == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if choice == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
