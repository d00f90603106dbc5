"""The ``training.distributed`` section of a recipe: how several processes share a run, split from
:mod:`lmtune.recipe` to keep each file short.

``ddp`` copies the model into every process (accelerate's DistributedDataParallel), ``fsdp`` shards
parameters, gradients and optimizer state across them (torch's FSDP2, ``fully_shard``), ``deepspeed``
hands the model to DeepSpeed ZeRO through accelerate's plugin (on CUDA, or on CPU processes over gloo).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmtune.recipe_eval import _Strict

Strategy = Literal["ddp", "fsdp", "deepspeed"]


class FsdpConfig(_Strict):
    """FSDP2 options (``training.distributed.fsdp``)."""

    reshard_after_forward: bool = Field(
        True, description="Free each layer's gathered weights after its forward pass (less memory, one more "
                          "all-gather in backward); false keeps them until backward (ZeRO-2-like).")
    cpu_offload: bool = Field(False, description="Keep sharded parameters and optimizer state in CPU memory.")


class DeepSpeedConfig(_Strict):
    """DeepSpeed ZeRO options (``training.distributed.deepspeed``), or a user's own JSON config."""

    stage: Literal[1, 2, 3] = Field(2, description="ZeRO stage: 1 shards optimizer state, 2 also gradients, "
                                                   "3 also parameters.")
    offload_optimizer: bool = Field(False, description="Optimizer state in CPU memory (ZeRO-Offload).")
    offload_params: bool = Field(False, description="Parameters in CPU memory (stage 3 only).")
    config: str | None = Field(
        None, description="A DeepSpeed JSON config used as given (batch sizes must agree with the recipe; "
                          "\"auto\" values are filled in from it); stage and offload above are then ignored.")

    @model_validator(mode="after")
    def _offload_params_needs_stage3(self):
        if self.offload_params and self.stage != 3 and self.config is None:
            raise ValueError("offload_params: DeepSpeed offloads parameters only under ZeRO stage 3; set stage: 3")
        return self


class DistributedConfig(_Strict):
    """How the processes of a multi-process run (``--processes``, torchrun, accelerate launch) share it."""

    strategy: Strategy = Field("ddp", description="ddp: a full copy per process; fsdp: parameters, gradients and "
                                                  "optimizer state sharded (FSDP2); deepspeed: DeepSpeed ZeRO.")
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
