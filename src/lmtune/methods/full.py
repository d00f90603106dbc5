"""Full fine-tuning: every weight trains, optionally with embeddings or early layers frozen."""

from __future__ import annotations

from typing import Any

from lmtune.errors import UserError
from lmtune.methods.registry import Method, register


@register
class Full(Method):
    name = "full"
    full_weights = True

    def apply(self, model, options: dict[str, Any], freeze: dict[str, Any]):
        if options:
            raise UserError("full fine-tuning takes no peft options; remove method.peft",
                            source="method.peft")
        unknown = set(freeze) - {"embeddings", "layers"}
        if unknown:
            raise UserError(f"unknown key {sorted(unknown)[0]!r}; use embeddings: true or layers: N",
                            source="method.freeze")
        for p in model.parameters():
            p.requires_grad_(True)
        if freeze.get("embeddings"):
            for p in model.get_input_embeddings().parameters():
                p.requires_grad_(False)
        n_layers = int(freeze.get("layers") or 0)
        if n_layers:
            layers = _decoder_layers(model)
            for layer in layers[:n_layers]:
                for p in layer.parameters():
                    p.requires_grad_(False)
        return model


def _decoder_layers(model):
    base = getattr(model, model.base_model_prefix, model)
    for attr in ("layers", "h", "block"):
        if hasattr(base, attr):
            return getattr(base, attr)
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):
        return base.encoder.layer
    raise UserError("cannot find this model's layer list to freeze; remove method.freeze.layers",
                    source="method.freeze.layers")
