"""Mixed precision: which one a run uses, the autocast context for evaluation, and the dtype weights load in."""

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


#: ``model.dtype`` / ``training.precision`` names and the torch dtypes they stand for.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def weights_dtype(choice: str, full_weights: bool, device: torch.device | str | None = None,
                  compute: str | None = None) -> torch.dtype:
    """The dtype a model's weights load in, for ``model.dtype`` ``choice``.

    ``bf16``/``fp16``/``fp32`` are taken as they are, for any method (full fine-tuning in bf16 is then
    pure-bf16 training). ``auto`` is bf16 for a frozen base (``full_weights`` False: adapter methods)
    on a CUDA GPU that has bf16, when training computes in bf16 there (``compute``: the resolved
    ``training.precision``, default what ``auto`` resolves to); otherwise fp32: full fine-tuning keeps
    fp32 master weights (autocast gives it mixed precision), and on a CPU the weights stay fp32 so CPU
    runs (``make demo``) are unchanged.
    """
    if choice != "auto":
        return DTYPES[choice]
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if full_weights or kind != "cuda" or not torch.cuda.is_bf16_supported():
        return torch.float32
    return torch.bfloat16 if (compute or resolve("auto", device)) == "bf16" else torch.float32


def for_run(model_dtype: str, training_choice: str, full_weights: bool,
            device: torch.device | str | None = None) -> tuple[torch.dtype, str]:
    """``(weights dtype, training precision)`` of a run: ``model.dtype`` and ``training.precision`` resolved
    together (:func:`weights_dtype`, then :func:`compute_precision`)."""
    dtype = weights_dtype(model_dtype, full_weights, device, compute=resolve(training_choice, device))
    return dtype, compute_precision(training_choice, dtype, device)


def compute_precision(choice: str, weights: torch.dtype, device: torch.device | str | None = None) -> str:
    """``training.precision`` ``choice`` resolved (:func:`resolve`), then matched to bf16/fp16 ``weights``:
    fp32 activations cannot meet low-precision weights, so such weights compute under their own autocast.

    (An explicit ``training.precision`` that contradicts an explicit ``model.dtype`` is refused by the recipe.)
    """
    resolved = resolve(choice, device)
    low = {dtype: name for name, dtype in DTYPES.items() if dtype != torch.float32}.get(weights)
    return low if low is not None else resolved


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``, as eval.json records it."""
    return str(dtype).removeprefix("torch.")


def upcast_trainable(model) -> int:
    """Cast every trainable floating-point parameter that is not fp32 to fp32 (adapters, a new head,
    peft's ``modules_to_save`` copies over a bf16/fp16 base), so the optimizer updates fp32 weights, as
    peft and TRL recommend; returns how many were cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
