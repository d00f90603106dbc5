"""What every peft-backed method shares: options over defaults into a peft config, wrap, save, load.

A family module only names its peft config class and defaults (and, if it must, prepares the
base model first), as peft's own tuners plug into one ``get_peft_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.methods.registry import Method


class PeftMethod(Method):
    """A method implemented by a peft tuner.

    Subclasses set ``name``, ``config_class`` (a class name exported by ``peft``) and ``defaults``
    (recipe options in ``method.peft`` are laid over them and passed to peft unchanged).
    """

    config_class: str = ""
    defaults: dict[str, Any] = {}

    def config(self, options: dict[str, Any], task_type: str = "CAUSAL_LM"):
        """The peft config for ``options`` laid over ``defaults``."""
        import dataclasses
        import difflib

        import peft

        config_class = getattr(peft, self.config_class)
        known = {f.name for f in dataclasses.fields(config_class)}
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"see peft.{self.config_class} for its options"
                raise UserError(f"{self.name} has no option {key!r}; {hint}", source="method.peft")
        try:
            return config_class(task_type=task_type, **{**self.defaults, **options})
        except (TypeError, ValueError) as exc:
            raise UserError(f"peft rejected the {self.name} options: {_one_line(exc)}", source="method.peft") from None

    def prepare(self, model, options: dict[str, Any]):
        """Make the base model ready before peft wraps it (default: as it is)."""
        return model

    def apply(self, model, options: dict[str, Any], freeze: dict[str, Any]):
        """Wrap ``model`` in peft; a sequence-classification head stays trainable (peft's ``SEQ_CLS``)."""
        from peft import get_peft_model

        if freeze:
            raise UserError(f"freeze applies to full fine-tuning only; {self.name} already freezes the base "
                            "model; remove method.freeze", source="method.freeze")
        config = self.config(options, task_type_of(model))
        model = self.prepare(model, options)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            raise UserError(f"peft could not apply {self.name}: {_one_line(exc)}", source="method.peft") from None

    def save(self, model, out_dir: Path) -> None:
        """adapter_config.json + adapter_model.safetensors, which ``PeftModel.from_pretrained`` reads."""
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model, path: Path):
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, path)


def task_type_of(model) -> str:
    """peft's task type: ``SEQ_CLS`` for a classification-head model (its head is then saved and trained)."""
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
