"""The ``model`` section of a recipe: which model, and the dtype its weights load in; split from
:mod:`lmtune.recipe` to keep each file short.

``model: <ref>`` (a plain string, the form every recipe had before) is short for ``model: {name: <ref>}``;
both validate to the same :class:`ModelConfig`. What ``dtype: auto`` means for a run is
:func:`lmtune.precision.weights_dtype`'s to say.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmtune.recipe_eval import _Strict

#: ``model.dtype``: the dtype the model's weights load in.
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
DEFAULT_DTYPE = "auto"


class ModelConfig(_Strict):
    """The model to fine-tune and evaluate (``model: <ref>`` or ``model: {name: <ref>, dtype: ...}``)."""

    name: str = Field(description="Alias, hub id, local directory or .gguf file.")
    dtype: Dtype = Field(
        DEFAULT_DTYPE, description="Weights dtype: auto = bf16 for adapter methods on a CUDA GPU with bf16 "
        "(training in bf16), else fp32; bf16/fp16/fp32 load the model in that dtype for any method.")

    @model_validator(mode="before")
    @classmethod
    def _string_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if not isinstance(value, dict | ModelConfig):
            raise ValueError("a model reference (alias, hub id, local directory or .gguf file), or a mapping "
                             "{name: <reference>, dtype: auto|bf16|fp16|fp32}")
        return value


def as_mapping(value: Any) -> Any:
    """A saved recipe's ``model`` value as the mapping it stands for: the string form becomes
    ``{name: <ref>, dtype: auto}``; anything else is returned as it is."""
    return {"name": value, "dtype": DEFAULT_DTYPE} if isinstance(value, str) else value


def model_name(value: Any) -> str | None:
    """The model reference of a saved recipe's ``model`` value, in either form (None if it has none)."""
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) else None


def check_precision(dtype: str, training_precision: str, full_weights: bool) -> None:
    """Refuse a low-precision ``model.dtype`` with an explicitly different ``training.precision``, and
    full fine-tuning (``full_weights``) of fp16 weights.

    Weights in bf16/fp16 compute under autocast of that dtype (fp32 activations would meet bf16 weights);
    ``training.precision: auto`` follows the model, an explicit other choice contradicts it. fp16 training
    scales the loss, and the gradient scaler refuses fp16 gradients; adapters train in fp32 over an fp16 base.
    """
    if full_weights and dtype == "fp16":
        raise ValueError("model.dtype: full fine-tuning cannot train fp16 weights (fp16 training scales the loss, "
                         "and the scaler needs fp32 gradients); use bf16, or fp32 with training.precision: fp16")
    if dtype in ("bf16", "fp16") and training_precision not in ("auto", dtype):
        raise ValueError(f"training.precision: {training_precision} contradicts model.dtype {dtype}; weights in "
                         f"{dtype} train under {dtype} autocast: set training.precision to {dtype} or auto, or "
                         "model.dtype to fp32")
