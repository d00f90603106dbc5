"""Fine-tuning methods, registered by name (``method.name`` in a recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_METHODS: dict[str, Method] = {}


class Method:
    """How a base model is made trainable, saved and loaded back.

    Subclasses set ``name`` and override :meth:`apply`; the default save/load handle a full model.
    The capabilities below are what recipe checks, serving and export ask, instead of method names.
    """

    name: str = ""
    #: Saves every weight of the model (nothing to merge on export).
    full_weights: bool = False
    #: Trained virtual tokens in front of every input (soft prompts): one set per sequence, so no packing.
    virtual_tokens: bool = False
    #: Trains under activation checkpointing (prefix tuning's key/values are dropped inside checkpointed layers).
    checkpointing: bool = True
    #: Saved as a peft adapter that loads onto a shared base with ``load_adapter`` (served many per base).
    shares_base: bool = False

    def load_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """Extra ``from_pretrained`` keyword arguments for loading the base model (e.g. 4-bit weights).

        Called before any model is loaded, so a method that cannot run here fails fast.
        """
        return {}

    def apply(self, model, options: dict[str, Any], freeze: dict[str, Any]):
        """Return the model prepared for training (trainable parameters set)."""
        raise NotImplementedError

    def save(self, model, out_dir: Path) -> None:
        """Write the trained artefact (safetensors) to ``out_dir``."""
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model, path: Path):
        """Load a saved artefact; a full model replaces ``base_model``, so only its class is used
        (a causal LM, or a sequence-classification head model)."""
        return type(base_model).from_pretrained(path, dtype=base_model.dtype)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    _METHODS[cls.name] = cls()
    return cls


def get(name: str) -> Method:
    """The method registered as ``name``."""
    from lmtune.errors import UserError

    if name not in _METHODS:
        raise UserError(f"unknown method {name!r}; choose from {names()}", source="method.name")
    return _METHODS[name]


def names() -> list[str]:
    """All registered method names."""
    return sorted(_METHODS)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
