"""Optional switches that change how fast (or in how much memory) a step runs, never what it computes.

- activation checkpointing: decoder layers keep only their inputs and recompute the rest in the
  backward pass (less memory, about a third more compute);
- ``torch.compile``: each decoder layer compiled on its own, as torchtune does, so the model's
  mask building and the output layer stay eager and one compiled graph serves every layer.

Each has a test showing the loss and gradients equal the plain path. ``check`` tells, without a
forward pass, whether a model can take the switches a recipe asks for, so a run refuses before
anything slow; a refusal is a ``UserError`` naming the recipe key.
"""

from __future__ import annotations

import torch

from lmtune.errors import UserError
from lmtune.models import is_prompt_learning


def check(model, gradient_checkpointing: bool = False, compile: bool = False, packing: bool = False) -> None:
    """Refuse the switches ``model`` cannot take (cheap: no forward pass, nothing changed).

    Args:
        model: the model to train (a peft model or its base model: both give the same answer, except that
            only a peft model shows its soft prompts).
        gradient_checkpointing: ``training.gradient_checkpointing`` is on.
        compile: ``training.compile`` is on.
        packing: ``training.packing`` is on.

    Raises:
        UserError: one problem per switch the model cannot take, each naming its recipe key.
    """
    problems = []
    if gradient_checkpointing and not getattr(_base(model), "supports_gradient_checkpointing", False):
        problems.append(("training.gradient_checkpointing", f"{type(_base(model)).__name__} does not support "
                         "activation checkpointing; set training.gradient_checkpointing: false"))
    problems += virtual_token_problems(model, gradient_checkpointing, packing)
    if compile and not _decoder_layers(model):
        problems.append(("training.compile", f"{type(model).__name__}: no decoder layers found to compile; "
                         "set training.compile: false"))
    if problems:
        raise UserError(problems[0][1], source=problems[0][0], problems=problems)


def virtual_token_problems(model, gradient_checkpointing: bool, packing: bool) -> list[tuple[str, str]]:
    """Switches that would silently compute something else with soft prompts, as (recipe key, message).

    The recipe schema refuses them from the method's capabilities; ``check`` refuses them for a peft model
    before training starts, and the loss refuses a batch that slipped through (a library call).
    """
    if not is_prompt_learning(model):
        return []
    problems = []
    if packing:
        problems.append(("training.packing", "packed batches cannot be used with prompt or prefix tuning (every "
                         "packed example would share one set of virtual tokens); set training.packing: false"))
    if gradient_checkpointing and model.active_peft_config.peft_type == "PREFIX_TUNING":
        # transformers drops past_key_values (where the prefix lives) inside checkpointed layers.
        problems.append(("training.gradient_checkpointing", "prefix tuning cannot be combined with activation "
                         "checkpointing (the virtual keys and values would be dropped); set "
                         "training.gradient_checkpointing: false"))
    return problems


def enable_activation_checkpointing(model, every_n_layers: int = 1) -> None:
    """Recompute decoder-layer activations in the backward pass (non-reentrant, works with PEFT)."""
    if not getattr(_base(model), "supports_gradient_checkpointing", False):
        check(model, gradient_checkpointing=True)
    _base(model).activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=every_n_layers)


def compile_layers(model) -> int:
    """Compile every decoder layer in place; returns how many were compiled.

    ``dynamic=True`` because batch widths change from step to step (length grouping), and a
    shape-specialised graph per width would recompile dozens of times.
    """
    check(model, compile=True)
    layers = _decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def disable(model) -> None:
    """Undo both switches after training: evaluation runs eager, with the KV cache, no recompute."""
    for layer in _decoder_layers(model):
        layer._compiled_call_impl = None  # what nn.Module.compile set
    base = _base(model)
    if getattr(base, "is_activation_checkpointing", False):
        base.activation_checkpointing_disable()


def _decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated transformer blocks: the largest ModuleList of identical module types."""
    best: list[torch.nn.Module] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            if len({type(m) for m in module}) == 1 and hasattr(module[0], "self_attn"):
                best = list(module)
    return best


def _base(model):
    """The transformers model inside a peft wrapper (the one that knows about checkpointing)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
