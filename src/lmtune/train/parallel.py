"""Data parallelism for the training loop, on accelerate: each process takes its shard of every step.

Every process builds the same global micro-batches (the order is seeded), takes every ``size``-th
example of each (:func:`shard`; with length grouping the shards get similar lengths), and divides its
summed loss by the *global* number of target tokens, which every process counts from the whole
micro-batch. DDP and FSDP average gradients over the processes, so the loss is multiplied by their number:
N processes x batch b then compute the gradient of 1 process x batch N*b. Logged losses are summed
over the processes once per log line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

from lmtune import distributed, precision
from lmtune.errors import UserError
from lmtune.train import checkpoint, zero
from lmtune.train.objectives import Objective, TokenObjective, shared_batches, standing_in
from lmtune.train.strategy import Replicated

#: In a checkpoint: how many processes trained it, with how many examples per micro-batch over all of them.
WORLD_FILE = "world.json"


def check_global_batch(saved: dict, world: distributed.World, batch_size: int) -> None:
    """Resuming from a checkpoint's ``state.json`` must keep its examples per micro-batch over all processes:
    any number of processes may continue a run (DDP's state is whole on every process), the global batch
    may not change, or the steps after the checkpoint would see other examples.

    Raises:
        UserError: (``training.batch_size``) the global batch differs, with the batch size that fits.
    """
    before = saved.get("global_batch")
    if before is None or before == batch_size * world.size:
        return
    fits = f"training.batch_size: {before // world.size}" if before % world.size == 0 else (
        f"a number of processes that divides {before}")
    raise UserError(f"the checkpoint was trained with {before} examples per micro-batch over "
                    f"{saved.get('world_size', 1)} process(es); this run has {world.size} x {batch_size}. Resume "
                    f"with {fits}", source="training.batch_size")


def check_strategy(saved: dict, world: distributed.World, strategy: str) -> None:
    """A checkpoint of replicated training (optimizer state by position) cannot be loaded into shards; one of
    sharded training (full tensors, state by name) continues under any strategy and number of processes.

    Raises:
        UserError: (``training.distributed.strategy``) sharding a run whose checkpoint was written by ddp.
    """
    if saved.get("strategy", "ddp") == "ddp" and (strategy == "deepspeed" or strategy == "fsdp" and world.distributed):
        raise UserError(f"the checkpoint was written by ddp training, whose optimizer state cannot be loaded into "
                        f"{strategy} shards; continue it with strategy: ddp (or start again with --overwrite)",
                        source="training.distributed.strategy")


def memory_kind() -> str:
    """What :func:`peak_memory_mb` measures here: ``cuda`` (memory allocated on the GPU) or ``rss`` (the
    process's peak resident set, what the machine had to hold for it)."""
    return "cuda" if torch.cuda.is_available() else "rss"


def peak_memory_mb(world: distributed.World) -> list[float]:
    """Each process's peak memory in MB, in rank order, of the :func:`memory_kind` this machine has."""
    if memory_kind() == "cuda":
        mine = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    if not world.distributed:
        return [round(mine, 1)]
    import torch.distributed as dist

    everyone: list[float | None] = [None] * world.size
    dist.all_gather_object(everyone, round(mine, 1))
    return [float(x) for x in everyone]


def read_world(directory: Path) -> dict:
    """A checkpoint's ``world.json`` (``world_size``, ``global_batch``); empty for one saved before it existed."""
    path = directory / WORLD_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def make_accelerator(choice: str = "auto", deepspeed: dict | None = None):
    """A fresh Accelerator for one run (accelerate keeps global state; a second run may differ).

    On a machine without CUDA it is told so (``cpu=True``): processes started by torchrun then join one
    gloo group instead of each believing it is alone. With a DeepSpeed config it starts DeepSpeed's engine
    instead (on gloo without CUDA: accelerate's ``cpu=True`` would turn DeepSpeed off).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    AcceleratorState._reset_state(reset_partial_state=True)
    mixed = precision.accelerate_name(precision.resolve(choice))
    if deepspeed is not None:
        plugin = zero.plugin(deepspeed)
        group = InitProcessGroupKwargs(backend=zero.process_group_backend(), timeout=distributed.timeout())
        try:
            return Accelerator(mixed_precision=mixed, deepspeed_plugin=plugin, kwargs_handlers=[group])
        finally:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)  # a later Accelerator (evaluation) is a plain one
    handlers = [InitProcessGroupKwargs(timeout=distributed.timeout())] if distributed.world().distributed else []
    return Accelerator(mixed_precision=mixed, cpu=distributed.uses_cpu(), kwargs_handlers=handlers)


def shard(examples: list, world: distributed.World) -> tuple[list, float]:
    """This process's share of a global micro-batch, and the weight of its loss (0 for a stand-in).

    A process left without examples (a short last micro-batch) still runs one example with weight 0:
    DDP's gradient all-reduce needs every process to run backward.
    """
    mine = examples[world.rank::world.size]
    return (mine, 1.0) if mine else (examples[:1], 0.0)


def fill_shared(items: list, batch_size: int, fill: Callable[[list], object], fields: tuple[str, ...],
                world: distributed.World | None = None) -> None:
    """``fill(part)`` sets ``fields`` on each item of ``part``, ``batch_size`` items a batch (the reference
    pass of preference training). With several processes each fills every N-th batch and they exchange the
    values: each process ends with all of them in 1/N of the time, each value from the batch one process alone
    would have put it in. The model must be whole on each process (it is before training sets up sharding):
    the processes run different numbers of forwards."""
    world = world or distributed.world()
    if not world.distributed:
        fill(items)
        return
    batches = [range(start, min(start + batch_size, len(items))) for start in range(0, len(items), batch_size)]
    mine = [i for batch, counted in shared_batches(batches, world) if counted for i in batch]
    fill([items[i] for i in mine])
    import torch.distributed as dist

    shares: list = [None] * world.size
    dist.all_gather_object(shares, [(i, [getattr(items[i], name) for name in fields]) for i in mine])
    for share in shares:
        for i, values in share:
            for name, value in zip(fields, values):
                setattr(items[i], name, value)


def accumulate_gradients(model, micro: list[list], pad_id: int, accelerator,
                         objective: Objective | None = None,
                         world: distributed.World | None = None, holder: Replicated | None = None) -> torch.Tensor:
    """Backpropagate this process's shard of one optimizer step's micro-batches; return its summed loss (detached).

    Each micro-batch's summed loss is divided by the target tokens of the *whole* step on all processes, so
    the accumulated gradient equals the gradient of one large batch, whatever the split.
    """
    objective, holder = objective or TokenObjective(), holder or Replicated()
    world = world or distributed.World()
    n_targets = max(sum(objective.units(e) for mb in micro for e in mb), 1)
    total = torch.zeros((), device=accelerator.device)
    for i, mb in enumerate(micro):
        examples, weight = shard(mb, world)
        batch = {k: v.to(accelerator.device) for k, v in objective.collate(examples, pad_id).items()}
        # Gradients are all-reduced once per optimizer step, after its last micro-batch.
        sync = nullcontext() if i == len(micro) - 1 else holder.no_sync(model, accelerator)
        with sync:
            with standing_in(weight == 0), accelerator.autocast():
                loss_sum = objective.loss_sum(model, batch)
            loss = loss_sum / n_targets
            if world.distributed:
                loss = loss * (world.size * weight)
            holder.backward(accelerator, loss)
        total += loss_sum.detach().float() * weight
    return total


def summed(values: list[torch.Tensor], world: distributed.World) -> torch.Tensor:
    """Per-step loss sums added up over the processes (one collective call), as one float32 tensor."""
    if not values:
        return torch.zeros(0)
    stacked = torch.stack(values).float()
    if world.distributed:
        import torch.distributed as dist

        dist.all_reduce(stacked)
    return stacked


def restored_window(saved: list[float], world: distributed.World, device) -> list[torch.Tensor]:
    """A checkpoint's open-window losses (already summed over processes), put back so that the next
    :func:`summed` gives them again: on the main process, zeros elsewhere."""
    return [torch.tensor(v if world.main else 0.0, dtype=torch.float32, device=device) for v in saved]


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict, world: distributed.World,
                    global_batch: int, holder: Replicated | None = None) -> None:
    """Write one checkpoint together: the main process writes weights, optimizer, state and how many processes
    shared how large a batch under which strategy (``world.json``), every other process its RNG state, then the
    main process commits the folder in one rename. A sharded ``holder`` first gathers weights and optimizer
    state whole (every process takes part)."""
    holder = holder or Replicated()
    weights, optimizer_state = holder.weights(model, world), holder.optimizer_state(model, optimizer, world)
    tmp = checkpoint.staging(path)
    if world.main:
        checkpoint.write(tmp, weights, optimizer_state, scheduler, state)
        (tmp / WORLD_FILE).write_text(json.dumps({"world_size": world.size, "global_batch": global_batch,
                                                  "strategy": holder.name}))
    distributed.barrier()
    if not world.main:
        checkpoint.write_rng(tmp, world.rank)
    distributed.barrier()
    if world.main:
        checkpoint.commit(tmp, path)
    distributed.barrier()
