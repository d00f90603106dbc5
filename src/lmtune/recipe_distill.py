"""``training.distill``: self-distillation against forgetting, split from :mod:`lmtune.recipe`.

The base model is its own teacher: on general text, the fine-tuned model is pulled towards the next-token
distribution the model had before training (Learning without Forgetting, Li & Hoiem 2016; the soft-target
loss of Hinton et al. 2015, with its ``T^2`` factor). :mod:`lmtune.train.distill` computes it.
"""

from __future__ import annotations

from pydantic import Field

from lmtune.recipe_eval import _Strict

#: What a method must be for distillation: the base model's predictions come from the same weights with the
#: adapter switched off, so there is no second copy of the model and nothing to precompute.
ADAPTER_NEEDED = ("training.distill: needs an adapter method (lora, dora, qlora, ia3, prompt_tuning, prefix_tuning): "
                  "the base model is the same weights with the adapter switched off, and {method} has none to switch "
                  "off; use method.name: lora, or training.replay for {method}")


class DistillConfig(_Strict):
    """General text on which the fine-tuned model keeps the base model's next-token predictions."""

    data: str = Field(description="{\"text\"} records of general text (JSONL, CSV, Parquet), as training.replay reads.")
    weight: float = Field(1.0, gt=0, description="Multiplies T^2 x KL(base || fine-tuned) per token in the loss.")
    temperature: float = Field(
        2.0, gt=0, description="Softens both distributions before the KL (LwF's 2); the loss is scaled by T^2.")
    max_records: int | None = Field(None, gt=0, description="Read at most this many records.")
    batch_size: int | None = Field(
        None, ge=1, description="General-text blocks per micro-batch (default: training.batch_size).")
