"""LoRA through peft; recipe options go to ``peft.LoraConfig`` unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.methods.registry import Method, register

DEFAULTS = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}


@register
class Lora(Method):
    name = "lora"

    def config(self, options: dict[str, Any]):
        from peft import LoraConfig

        try:
            return LoraConfig(task_type="CAUSAL_LM", **{**DEFAULTS, **options})
        except (TypeError, ValueError) as exc:
            raise UserError(f"peft rejected the options: {exc}", source="method.peft") from None

    def apply(self, model, options: dict[str, Any], freeze: dict[str, Any]):
        from peft import get_peft_model

        if freeze:
            raise UserError("freeze applies to full fine-tuning only; remove method.freeze",
                            source="method.freeze")
        try:
            return get_peft_model(model, self.config(options))
        except ValueError as exc:
            raise UserError(f"peft could not apply LoRA: {exc}", source="method.peft") from None

    def save(self, model, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model, path: Path):
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, path)
