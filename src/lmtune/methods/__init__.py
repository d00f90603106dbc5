"""Fine-tuning methods; importing this package registers every built-in method."""

from lmtune.methods import full, lora, registry  # noqa: F401  (imports register the methods)
