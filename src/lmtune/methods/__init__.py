"""Fine-tuning methods; importing this package registers every built-in method."""

from lmtune.methods import adapter, full, ia3, lora, qlora, registry, soft_prompts  # noqa: F401  (imports register)
