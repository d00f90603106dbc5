"""Memory of one process of a run in several processes, by ``training.distributed.strategy``.

The whole run's breakdown (:func:`lmtune.estimate.memory.breakdown`: weights ``W``, gradients ``G``, AdamW state
``O``, autocast weight copies ``C``, activations ``A`` of one process's largest micro-batch) is laid out as each
strategy lays it out over ``N`` processes:

- ``ddp``: a whole copy per process, plus DDP's gradient buckets (one more copy of ``G``; accelerate leaves
  ``gradient_as_bucket_view`` off).
- ``fsdp`` (FSDP2 ``fully_shard`` per decoder layer, as :mod:`lmtune.train.fsdp` shards): ``W/N + G/N + O/N``;
  gathered whole at a time: the units outside the layers (embeddings, heads, final norm: the root unit, held
  from forward to backward) and two layers (the one computing and the one prefetched), or every layer with
  ``reshard_after_forward: false``; under accumulation the gradients stay whole between micro-batches
  (``set_requires_gradient_sync(False)``); autocast's weight copies are kept whole for backward, as without
  sharding. ``cpu_offload`` keeps the shards and the optimizer state in CPU memory.
- ``deepspeed``: ZeRO as DeepSpeed's own estimators count it (``estimate_zero2_model_states_mem_needs``,
  ``estimate_zero3_model_states_mem_needs``), extended to a frozen base. Under bf16/fp16 DeepSpeed casts the
  whole model to 16 bits and keeps per trained parameter a 16-bit gradient, an fp32 gradient partition, an fp32
  master weight and the two fp32 moments (2 + 4 + 4 + 8 bytes); in fp32, a gradient and two moments (4 + 8).
  Stage 1 partitions the fp32 states, stage 2 the gradients too, stage 3 the weights too and gathers the largest
  layer's weights and gradients (``2 x`` its bytes). ``offload_optimizer`` moves the fp32 states to CPU memory,
  ``offload_params`` (stage 3) the weights. Communication buckets are not counted (neither does DeepSpeed).

Activations and evaluation do not shrink: each process runs its own micro-batches of ``training.batch_size``
examples, and evaluates with an unsharded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.estimate.memory import MB, Params, Setup
from lmtune.train import deepspeed_config

ITEMS = ("weights", "gradients", "optimizer_state", "autocast_weight_copies", "gathered", "buffers")


@dataclass(frozen=True)
class Layout:
    """How the run's processes share it: the strategy, their number and the strategy's options."""

    strategy: str = "ddp"
    processes: int = 1
    grad_accum: int = 1
    stage: int = 0  # ZeRO stage (deepspeed)
    offload_optimizer: bool = False  # deepspeed
    offload_params: bool = False  # deepspeed, stage 3
    reshard_after_forward: bool = True  # fsdp
    cpu_offload: bool = False  # fsdp

    @property
    def name(self) -> str:
        if self.strategy != "deepspeed":
            return self.strategy
        offloaded = [k for k, on in (("optimizer", self.offload_optimizer), ("parameters", self.offload_params)) if on]
        return f"deepspeed ZeRO-{self.stage}" + (f", {' and '.join(offloaded)} offloaded" if offloaded else "")


def layout(distributed, processes: int, grad_accum: int, deepspeed: dict | None = None) -> Layout:
    """The layout of a recipe's ``training.distributed`` over ``processes``; ``deepspeed``: the resolved DeepSpeed
    config (:func:`lmtune.train.deepspeed_config.resolve`), which says the stage and offloading."""
    if distributed.strategy == "deepspeed" and deepspeed is not None:
        offloaded = deepspeed_config.offloads(deepspeed)
        stage = int(deepspeed.get("zero_optimization", {}).get("stage", 0))
        return Layout("deepspeed", processes, grad_accum, stage=stage,
                      offload_optimizer="offload_optimizer" in offloaded, offload_params="offload_param" in offloaded)
    return Layout(distributed.strategy, processes, grad_accum,
                  reshard_after_forward=distributed.fsdp.reshard_after_forward,
                  cpu_offload=distributed.fsdp.cpu_offload)


def per_process(here: dict, params: Params, setup: Setup, plan: Layout) -> dict[str, Any]:
    """One process's memory in MB, item by item, on its device and in CPU memory (what is offloaded).

    Args:
        here: the whole run's breakdown (:func:`lmtune.estimate.memory.breakdown`) for one process's micro-batch.
        params: the model's parameter counts (:class:`lmtune.estimate.memory.Params`).
        setup: dtypes and switches.
        plan: the strategy and the number of processes.
    """
    if plan.strategy == "deepspeed":
        device, host = _zero(params, setup, plan)
        device["autocast_weight_copies"] = 0.0 if setup.compute in ("bf16", "fp16") else \
            here["autocast_weight_copies"]
    elif plan.strategy == "fsdp":
        device, host = _fsdp(here, params, plan)
    else:
        device, host = _ddp(here, plan), {}
    activations = here["activations_checkpointed" if setup.checkpointing else "activations"]
    device = {k: round(device.get(k, 0.0), 3) for k in ITEMS} | {"activations": activations}
    training = round(sum(device.values()), 3)
    return {"strategy": plan.name, "processes": plan.processes, "device": device, "training_total": training,
            "evaluation_total": here["evaluation_total"], "host_offloaded": round(sum(host.values()), 3),
            "host_offloaded_items": {k: round(v, 3) for k, v in host.items()}}


def _ddp(here: dict, plan: Layout) -> dict[str, float]:
    copies = {k: here[k] for k in ("weights", "gradients", "optimizer_state", "autocast_weight_copies")}
    copies["buffers"] = here["gradients"] if plan.processes > 1 else 0.0  # DDP's gradient buckets
    return copies


def _fsdp(here: dict, params: Params, plan: Layout) -> tuple[dict[str, float], dict[str, float]]:
    n = plan.processes
    per_param = here["weights"] / max(params.total, 1)  # MB per parameter, over the dtypes the weights have
    root = params.total - params.in_layers
    gathered = here["weights"] if not plan.reshard_after_forward else \
        min(here["weights"], per_param * (root + 2 * params.largest_layer))
    # A layer's gradients exist whole until they are reduce-scattered; under accumulation, all of them.
    whole_share = 1.0 if plan.grad_accum > 1 else min(1.0, 2 * params.largest_layer / max(params.total, 1))
    shards = {"weights": here["weights"] / n, "gradients": here["gradients"] / n,
              "optimizer_state": here["optimizer_state"] / n}
    device = {"gathered": gathered, "gradients": here["gradients"] * whole_share,
              "autocast_weight_copies": here["autocast_weight_copies"]}
    if plan.cpu_offload:
        return device, shards
    device["weights"] = shards["weights"]
    device["gradients"] += shards["gradients"]
    device["optimizer_state"] = shards["optimizer_state"]
    return device, {}


def _zero(params: Params, setup: Setup, plan: Layout) -> tuple[dict[str, float], dict[str, float]]:
    n, trained = plan.processes, params.trainable
    mixed = setup.compute in ("bf16", "fp16")
    weight = 2 if mixed else 4  # DeepSpeed casts the whole model to the 16-bit dtype under mixed precision
    parts = n if plan.stage >= 2 else 1  # the gradients are partitioned from stage 2 on
    # Mixed precision: 16-bit gradients (none kept under stage 3, reduced straight into the fp32 partition) and
    # the fp32 gradient partition; in fp32, the gradients alone.
    low_grads = (2 * trained / parts if plan.stage < 3 else 0.0) if mixed else 0.0
    fp32_grads = 4 * trained / (n if mixed else parts)
    states = (12 if mixed else 8) * trained / n  # fp32 master (mixed) and the two moments
    weights = weight * params.total / (n if plan.stage == 3 else 1)
    device = {"weights": weights, "gradients": low_grads + fp32_grads, "optimizer_state": states,
              "gathered": 2 * weight * params.largest_layer if plan.stage == 3 else 0.0}
    host: dict[str, float] = {}
    if plan.offload_optimizer:
        host["gradients"], host["optimizer_state"] = fp32_grads, states
        device.update(gradients=0.0, optimizer_state=0.0)
    if plan.offload_params and plan.stage == 3:
        host["weights"] = weights
        device["weights"] = 0.0
    return {k: v / MB for k, v in device.items()}, {k: v / MB for k, v in host.items()}
