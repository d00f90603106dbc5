"""QLoRA: LoRA adapters on a base model whose weights are stored in 4 bits (Dettmers et al., 2023).

The base is quantized while it loads (``load_kwargs`` gives ``from_pretrained`` a
``BitsAndBytesConfig``); bitsandbytes' 4-bit kernels need a CUDA GPU, so on any other machine the
method fails before a model is loaded.
"""

from __future__ import annotations

from typing import Any

from lmtune.errors import UserError
from lmtune.methods.lora import Lora
from lmtune.methods.registry import register


@register
class QLora(Lora):
    """LoRA defaults on an NF4, double-quantized base computing in bfloat16."""

    name = "qlora"
    shares_base = False  # 4-bit base weights: served as its own model, not as an adapter on a shared base

    def load_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        require_4bit_support()
        return {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)}

    def prepare(self, model, options: dict[str, Any]):
        """Freeze the quantized base and upcast its norms to fp32, as peft recommends for k-bit training."""
        from peft import prepare_model_for_kbit_training

        require_4bit_support()
        if not getattr(model, "is_loaded_in_4bit", False):
            # The lifecycle must pass load_kwargs() to from_pretrained; a full-precision base would be plain LoRA.
            raise RuntimeError("qlora was given a base model that was not loaded in 4 bits; "
                               "load it with from_pretrained(..., **method.load_kwargs(options))")
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def require_4bit_support() -> None:
    """Raise a UserError unless this machine can hold bitsandbytes 4-bit weights."""
    import torch
    from transformers.utils import is_bitsandbytes_available

    if not torch.cuda.is_available():
        raise UserError("qlora needs a CUDA GPU for bitsandbytes 4-bit weights; on this machine use "
                        "method.name=lora (same adapters, full-precision base)", source="method.name")
    if not is_bitsandbytes_available():
        raise UserError("qlora needs the bitsandbytes package (a recent version); pip install -U bitsandbytes",
                        source="method.name")
