"""Bottleneck adapters: a small down/up projection added after attention and/or the MLP of every layer.

- houlsby (Houlsby et al., 2019): after the attention block and after the MLP of every layer.
- pfeiffer (Pfeiffer et al., 2021): after the MLP only (half the parameters, about the same quality).

peft has no bottleneck adapters and AdapterHub's ``adapters`` library (1.3.0) pins
transformers 4.57, so they live here: each is a child module of the block it follows, applied by a
forward hook, so the base model's parameter names do not change. The up projection starts at zero:
before training the adapted model computes exactly what the base does. Adapters are nonlinear and
cannot be merged into the base weights, so the model gets no ``merge_adapter``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmtune.errors import UserError
from lmtune.methods.registry import Method, register

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CHILD = "bottleneck_adapter"  # attribute name of the adapter inside the block it follows
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
STYLES = {"houlsby": ("attention", "mlp"), "pfeiffer": ("mlp",)}
DEFAULTS = {"style": "houlsby", "reduction_factor": 16, "non_linearity": "relu"}
# Blocks an adapter follows, by module name: Llama-like decoders (self_attn, mlp), GPT-2 (attn, mlp),
# BERT-style encoders (attention.output.dense, output.dense: before the residual add and LayerNorm).
_LAYER = r"(?:^|\.)(?:layers|h|layer)\.\d+\."
SITES = {"attention": re.compile(_LAYER + r"(?:self_attn|attn|attention\.output\.dense)$"),
         "mlp": re.compile(_LAYER + r"(?:mlp|output\.dense)$")}
HEADS = ("score", "classifier")  # sequence-classification heads, trained with the adapters


class Bottleneck(nn.Module):
    """``h + up(act(down(h)))`` with ``up`` zero-initialised, so it starts as the identity."""

    def __init__(self, hidden: int, size: int, non_linearity: str = "relu"):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


@register
class BottleneckAdapter(Method):
    """Options (``method.peft``): style (houlsby | pfeiffer), reduction_factor (hidden / bottleneck,
    default 16) or bottleneck_size, non_linearity (relu | gelu | silu)."""

    name = "adapter"

    def apply(self, model, options: dict[str, Any], freeze: dict[str, Any]):
        if freeze:
            raise UserError("freeze applies to full fine-tuning only; remove method.freeze", source="method.freeze")
        config = resolve_config(model, options)
        for p in model.parameters():
            p.requires_grad_(False)
        insert(model, config)
        for name, p in model.named_parameters():
            p.requires_grad_(_is_saved(name, config))
        return model

    def save(self, model, out_dir: Path) -> None:
        from safetensors.torch import save_file

        config = model.bottleneck_adapter_config
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if _is_saved(n, config)}
        save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
        (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    def load(self, base_model, path: Path):
        from safetensors.torch import load_file

        path = Path(path)
        config = json.loads((path / CONFIG_FILE).read_text())
        if config.get("method") != self.name:
            raise UserError(f"{path / CONFIG_FILE} is not a bottleneck adapter saved by lmtune", source=str(path))
        hidden = base_model.config.get_text_config().hidden_size
        if config["hidden_size"] != hidden:
            raise UserError(f"the saved adapter does not fit this base model (hidden size {config['hidden_size']}, "
                            f"not {hidden}); load the base model it was trained on", source=str(path))
        insert(base_model, config)
        saved = load_file(str(path / WEIGHTS_FILE))
        expected = {n for n, _ in base_model.named_parameters() if _is_saved(n, config)}
        if set(saved) != expected:
            odd = min(set(saved) ^ expected)
            raise UserError(f"the saved adapter does not fit this base model (parameter {odd}); load the base "
                            "model it was trained on", source=str(path))
        try:
            base_model.load_state_dict(saved, strict=False)
        except RuntimeError as exc:  # a head of another shape (number of classes)
            raise UserError(f"the saved adapter does not fit this base model: {' '.join(str(exc).split())}",
                            source=str(path)) from None
        for p in base_model.parameters():
            p.requires_grad_(False)
        return base_model


def resolve_config(model, options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``method.peft`` and return what :func:`insert` and ``adapter_config.json`` need."""
    unknown = sorted(set(options) - {"style", "reduction_factor", "bottleneck_size", "non_linearity"})
    if unknown:
        raise UserError(f"unknown adapter option {unknown[0]!r}; use style, reduction_factor, bottleneck_size "
                        "or non_linearity", source="method.peft")
    if "reduction_factor" in options and "bottleneck_size" in options:
        raise UserError("set reduction_factor or bottleneck_size, not both", source="method.peft")
    opts = {**DEFAULTS, **options}
    if opts["style"] not in STYLES:
        raise UserError(f"unknown adapter style {opts['style']!r}; use houlsby or pfeiffer", source="method.peft")
    if opts["non_linearity"] not in ACTIVATIONS:
        raise UserError(f"unknown non_linearity {opts['non_linearity']!r}; use {', '.join(ACTIVATIONS)}",
                        source="method.peft")
    for key in ("reduction_factor", "bottleneck_size"):
        value = options.get(key, opts.get(key))
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{key} must be a whole number of at least 1, got {value!r}", source="method.peft")
    hidden = model.config.get_text_config().hidden_size
    size = options.get("bottleneck_size") or max(1, hidden // opts["reduction_factor"])
    modules = [name for name, _ in model.named_modules()
               if any(SITES[kind].search(name) for kind in STYLES[opts["style"]])]
    if not modules:
        raise UserError(f"cannot find attention or MLP blocks in {type(model).__name__} to insert adapters into; "
                        "use method.name=lora", source="method.name")
    heads = [h for h in HEADS if isinstance(getattr(model, h, None), nn.Module)]
    return {"method": "adapter", "style": opts["style"], "hidden_size": hidden, "bottleneck_size": size,
            "non_linearity": opts["non_linearity"], "modules": modules, "heads": heads}


def insert(model, config: dict[str, Any]) -> None:
    """Add a zero-initialised bottleneck after each block in ``config['modules']`` (in place)."""
    blocks = dict(model.named_modules())
    missing = [m for m in config["modules"] if m not in blocks]
    if missing:
        raise UserError(f"the base model has no module {missing[0]!r} to attach an adapter to; load the base "
                        "model the adapter was trained on", source="method.name")
    reference = next(model.parameters())
    for name in config["modules"]:
        block = blocks[name]
        if hasattr(block, CHILD):
            raise ValueError(f"{name} already has an adapter")
        adapter = Bottleneck(config["hidden_size"], config["bottleneck_size"], config["non_linearity"])
        block.add_module(CHILD, adapter.to(reference.device, reference.dtype))
        block.register_forward_hook(_apply_adapter)
    model.bottleneck_adapter_config = config


def _apply_adapter(block: nn.Module, args, output):
    """Forward hook: pass the block's output (or, for attention, its first element) through the adapter."""
    adapter = getattr(block, CHILD)
    if isinstance(output, tuple):
        return (adapter(output[0]),) + output[1:]
    return adapter(output)


def _is_saved(name: str, config: dict[str, Any]) -> bool:
    """Adapter weights and the classification head: what trains, and what ``adapter_model.safetensors`` holds."""
    return f".{CHILD}." in f".{name}" or name.split(".")[0] in config["heads"]
