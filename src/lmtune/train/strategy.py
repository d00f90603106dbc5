"""How the processes of a run hold the model (``training.distributed.strategy``): what the loop asks of it.

``Replicated`` is DDP through accelerate (a whole model per process; one process is the same without the
all-reduce); ``Sharded`` is FSDP2 (:mod:`lmtune.train.fsdp`); ``ZeRO`` is DeepSpeed's engine through
accelerate's plugin (:mod:`lmtune.train.zero`). The loop calls the same methods for all three: wrap the model,
build the optimizer on what that leaves, run backward, skip the gradient sync between micro-batches, clip, and
read or write full weights and optimizer state for checkpoints (collectives where sharded).
"""

from __future__ import annotations

import torch

from lmtune import distributed
from lmtune.errors import UserError
from lmtune.train import fsdp, zero
from lmtune.train.zero import torch_optimizer  # noqa: F401  (the loop's scheduler is built on it)

#: A checkpoint's optimizer state saved by a sharded run: keyed by parameter name, not position.
BY_NAME = "by_name"


def trainable(model) -> dict[str, torch.Tensor]:
    """The trainable parameters of an unsharded model, as contiguous CPU copies."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


class Replicated:
    """A whole copy of the model in every process; accelerate's DDP averages the gradients."""

    name = "ddp"
    sharded = False

    def shard(self, model, accelerator):
        """The model the optimizer is built on (unchanged: DDP keeps the parameters)."""
        return model

    def prepare(self, model, optimizer, accelerator):
        return accelerator.prepare(model, optimizer)

    def unwrap(self, model, accelerator):
        """The model under the wrapper (DDP's ``.module``), with the parameter names of a plain one.

        What accelerate's ``unwrap_model`` does for DDP, without it: that imports DeepSpeed whenever DeepSpeed is
        installed (about two seconds in every process of every run) to test for its engine, which only
        :class:`ZeRO` has."""
        while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        return model

    def no_sync(self, model, accelerator):
        return accelerator.no_sync(model)

    def backward(self, accelerator, loss: torch.Tensor) -> None:
        accelerator.backward(loss)

    def clip(self, accelerator, params: list[torch.Tensor], max_norm: float) -> None:
        accelerator.clip_grad_norm_(params, max_norm)

    def weights(self, model, world: distributed.World) -> dict[str, torch.Tensor] | None:
        """Trainable parameters as CPU tensors on the main process (None elsewhere)."""
        return trainable(model) if world.main else None

    def all_weights(self, model) -> dict[str, torch.Tensor] | None:
        """After training, the trained weights whole on every process where the model is left sharded (the
        caller then evaluates and saves an unsharded copy); None where the model itself is whole."""
        return None

    def close(self) -> None:
        """Training is over: undo what the strategy set for the whole process."""

    def optimizer_state(self, model, optimizer, world: distributed.World) -> dict | None:
        return optimizer.state_dict() if world.main else None

    def load_weights(self, model, tensors: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in tensors.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        if state.get(BY_NAME):
            fsdp.load_optimizer_state(model, optimizer, state["state"])
        else:
            optimizer.load_state_dict(state)


class Sharded(Replicated):
    """FSDP2: every parameter, gradient and optimizer state split across the processes."""

    name = "fsdp"
    sharded = True
    backend = fsdp  # the module that gathers and scatters whole tensors

    def __init__(self, reshard_after_forward: bool = True, cpu_offload: bool = False):
        self.reshard_after_forward, self.cpu_offload = reshard_after_forward, cpu_offload

    def shard(self, model, accelerator):
        return fsdp.shard(model, distributed.world(), accelerator.device, self.reshard_after_forward,
                          self.cpu_offload)

    def prepare(self, model, optimizer, accelerator):
        return model, optimizer  # accelerate would wrap the sharded model in DDP on top

    def unwrap(self, model, accelerator):
        return model

    def no_sync(self, model, accelerator):
        return fsdp.no_sync(model)

    def clip(self, accelerator, params: list[torch.Tensor], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm of the whole gradient, from its shards

    def weights(self, model, world: distributed.World) -> dict[str, torch.Tensor] | None:
        gathered = self.backend.full_weights(model)  # every process takes part in gathering
        return gathered if world.main else None

    def all_weights(self, model) -> dict[str, torch.Tensor] | None:
        return self.backend.full_weights(model)

    def optimizer_state(self, model, optimizer, world: distributed.World) -> dict | None:
        state = self._gathered_state(model, optimizer, world)
        return {BY_NAME: True, "state": state} if state is not None else None

    def _gathered_state(self, model, optimizer, world: distributed.World) -> dict | None:
        return fsdp.optimizer_state(model, optimizer, world)

    def load_weights(self, model, tensors: dict[str, torch.Tensor]) -> None:
        self.backend.load_weights(model, tensors)

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        if not state.get(BY_NAME):
            raise UserError("this checkpoint was written by a ddp run (optimizer state by position); continue it "
                            "with strategy: ddp", source="training.distributed.strategy")
        self.backend.load_optimizer_state(model, optimizer, state["state"])


class ZeRO(Sharded):
    """DeepSpeed ZeRO (stage 1, 2 or 3, optional CPU offload): the engine accelerate builds from ``config``
    partitions optimizer state, gradients and parameters, steps, clips and reduces the gradients itself."""

    name = "deepspeed"
    backend = zero

    def __init__(self, config: dict):
        self.config = config
        self.groups: list[tuple[dict, list[str]]] = []  # the optimizer's groups before DeepSpeed drops empty ones

    def shard(self, model, accelerator):
        return model  # deepspeed.initialize (in prepare) partitions it

    def prepare(self, model, optimizer, accelerator):
        self.groups = zero.named_groups(model, optimizer)
        return accelerator.prepare(model, optimizer)  # the engine, and the optimizer under ZeRO's

    def unwrap(self, model, accelerator):
        return accelerator.unwrap_model(model)

    def no_sync(self, model, accelerator):
        return zero.within_step(accelerator)

    def backward(self, accelerator, loss: torch.Tensor) -> None:
        zero.backward(accelerator, loss)

    def clip(self, accelerator, params: list[torch.Tensor], max_norm: float) -> None:
        """Nothing: the engine clipped in its step (``gradient_clipping`` of its config)."""

    def close(self) -> None:
        zero.close()

    def _gathered_state(self, model, optimizer, world: distributed.World) -> dict | None:
        return zero.optimizer_state(model, optimizer, world, self.groups)


def check(distributed_config, compute: str, *, batch_size: int, grad_accum: int,
          max_grad_norm: float | None, cuda_available: bool | None = None) -> None:
    """Refuse, before anything slow, a strategy this machine or this recipe cannot run.

    Args:
        distributed_config: the recipe's ``training.distributed`` section.
        compute: what training computes in (``fp32``, ``bf16``, ``fp16``; resolved).
        cuda_available: whether the run has CUDA; None asks torch (``lmtune estimate --hardware`` says True:
            it estimates a run on that GPU).

    Raises:
        UserError: fp16 with fsdp (its loss scaler would have to work on shards; bf16 needs none); fsdp's CPU
            offload without a GPU (nothing to offload from; torch's policy pins memory for a device); deepspeed
            with a config (built from the recipe, or the user's JSON) that contradicts the recipe's batch sizes or
            precision, without its package, or offloading on a machine without a GPU.
    """
    name = distributed_config.strategy
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "fsdp" and compute == "fp16":
        raise UserError("fp16 needs a gradient scaler, which sharded (fsdp) training does not run; use bf16 (or "
                        "fp32), or strategy: ddp", source="training.precision")
    if name == "fsdp" and distributed_config.fsdp.cpu_offload and not cuda_available:
        raise UserError("there is no GPU here: the shards are in CPU memory already; set cpu_offload: false",
                        source="training.distributed.fsdp.cpu_offload")
    if name != "deepspeed":
        return
    from lmtune.train import deepspeed_config

    config = deepspeed_config.resolve(distributed_config.deepspeed, batch_size=batch_size, grad_accum=grad_accum,
                                      world_size=distributed.world().size, precision=compute,
                                      max_grad_norm=max_grad_norm)
    deepspeed_config.check_runnable(config, cuda_available)


def for_run(name: str, world: distributed.World, reshard_after_forward: bool = True,
            cpu_offload: bool = False, deepspeed: dict | None = None) -> Replicated:
    """The strategy a run uses: fsdp shards only with more than one process (one holds everything anyway);
    deepspeed runs its engine (its config: ``deepspeed``) with one process too, for ZeRO's offload."""
    if name == "deepspeed":
        if deepspeed is None:
            raise ValueError("strategy deepspeed needs its resolved config (Settings.deepspeed)")
        return ZeRO(deepspeed)
    if name == "fsdp" and world.distributed:
        return Sharded(reshard_after_forward, cpu_offload)
    return Replicated()
