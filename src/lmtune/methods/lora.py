"""The LoRA family through peft: LoRA and DoRA (QLoRA, LoRA on a 4-bit base, is in ``qlora.py``).

Recipe options go to ``peft.LoraConfig`` unchanged, over ``DEFAULTS``.
"""

from __future__ import annotations

from lmtune.methods.peft_base import PeftMethod
from lmtune.methods.registry import register

DEFAULTS = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}


@register
class Lora(PeftMethod):
    name = "lora"
    shares_base = True
    config_class = "LoraConfig"
    defaults = DEFAULTS


@register
class Dora(Lora):
    """Weight-decomposed LoRA: a trained magnitude per output feature on top of the LoRA direction."""

    name = "dora"
    defaults = {**DEFAULTS, "use_dora": True}
