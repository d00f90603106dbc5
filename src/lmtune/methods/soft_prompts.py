"""Soft prompts through peft: trained virtual tokens in front of every input, the base untouched.

- ``prompt_tuning`` (Lester et al., 2021): virtual token embeddings prepended to the input embeddings.
- ``prefix_tuning`` (Li & Liang, 2021): virtual keys and values prepended in every attention layer.

Both start from random virtual tokens: peft's TEXT initialisation loads a tokenizer from the hub by
name, which these machines cannot reach; a recipe may still ask for it with ``prompt_tuning_init``.
The model's forward adds the virtual tokens, so the loss and evaluation code use its plain forward
(see :func:`lmtune.models.is_prompt_learning`).
"""

from __future__ import annotations

from typing import Any

from lmtune.errors import UserError
from lmtune.methods.peft_base import PeftMethod, task_type_of
from lmtune.methods.registry import register


@register
class PromptTuning(PeftMethod):
    name = "prompt_tuning"
    virtual_tokens = True
    config_class = "PromptTuningConfig"
    defaults = {"num_virtual_tokens": 20, "prompt_tuning_init": "RANDOM"}

    def prepare(self, model, options: dict[str, Any]):
        # A decoder's head (``score``) pools the last non-pad token, found from input_ids; peft passes
        # embeddings instead, so in a padded batch the head would read a pad position.
        if task_type_of(model) == "SEQ_CLS" and hasattr(model, "score"):
            raise UserError("prompt_tuning cannot train a decoder's classification head (in padded batches it "
                            "would read a pad position); use prefix_tuning or lora", source="method.name")
        return model


@register
class PrefixTuning(PeftMethod):
    name = "prefix_tuning"
    virtual_tokens = True
    checkpointing = False  # transformers drops the prefix key/values inside checkpointed layers
    config_class = "PrefixTuningConfig"
    defaults = {"num_virtual_tokens": 20}
