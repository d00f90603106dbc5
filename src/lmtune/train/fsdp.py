"""FSDP2 for the training loop: torch's ``fully_shard`` on every decoder layer and on the whole model.

accelerate wraps the same ``fully_shard`` (its FSDP plugin), but only on accelerators: on CPU its state
turns the run into plain DDP. Calling torch directly gives one code path on CUDA (NCCL) and CPU (gloo),
so what runs on a GPU machine is what the tests run here. Each process keeps 1/N of every parameter,
gradient and optimizer state; a layer's weights are gathered for its forward and backward and freed after.

Checkpoints hold *full* tensors (gathered to the main process): a sharded run resumes with any number of
processes, and its weights load into an unsharded model.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from lmtune import distributed
from lmtune.train.loss import loss_parts


def shard(model, world: distributed.World, device: torch.device, reshard_after_forward: bool = True,
          cpu_offload: bool = False):
    """Shard ``model`` in place across the processes of ``world`` (decoder layers first, then the rest)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world.size,))
    options = {"mesh": mesh, "reshard_after_forward": reshard_after_forward,
               "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy()}
    for layer in layers(model):
        fully_shard(layer, **options)
    parts = loss_parts(model)
    if parts is not None and not _shared(*parts):
        # The loss runs body and output layer separately (no full logits): each must gather its own weights.
        for part in parts:
            fully_shard(part, **options)
    fully_shard(model, **options)
    return model


def _shared(body, head) -> bool:
    """Whether the output layer's weights are the body's (tied embeddings): then they are one unit, reached
    only through the whole model's forward."""
    return bool({id(p) for p in head.parameters()} & {id(p) for p in body.parameters()})


def layers(model) -> list[torch.nn.Module]:
    """The modules each sharded as one unit: the classes transformers keeps whole (``_no_split_modules``:
    decoder or encoder layers), found in the model under any peft wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(inner, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names and m is not model]


@contextmanager
def no_sync(model):
    """Micro-batches before the last of a step: gradients stay local, reduce-scattered once at the end."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_weights(model) -> dict[str, torch.Tensor]:
    """The trainable parameters, each gathered whole (a collective: every process calls it), as CPU tensors."""
    return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().to("cpu").contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def load_weights(model, tensors: dict[str, torch.Tensor]) -> None:
    """Full tensors (every process has them) copied into the model's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model, optimizer, world: distributed.World) -> dict | None:
    """The optimizer's state gathered whole, keyed by parameter name: on the main process, None elsewhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if world.main else None


def load_optimizer_state(model, optimizer, state: dict) -> None:
    """A whole optimizer state (keyed by parameter name) loaded into this process's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
