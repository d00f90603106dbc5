"""What the training loop takes from a recipe: ``training.*``, the seed and the compute precision, as a
:class:`lmtune.train.loop.Settings` (recipe sections do not travel into the loop)."""

from __future__ import annotations

from collections.abc import Callable

from lmtune import distributed, precision
from lmtune.methods import registry
from lmtune.recipe import Recipe
from lmtune.train import deepspeed_config, loop


def loop_settings(recipe: Recipe, on_validation: Callable[[int, float], None] | None = None) -> loop.Settings:
    """The loop's settings for ``recipe``; ``on_validation`` is called after each validation (``lmtune tune``'s
    pruning: it may raise to stop the run)."""
    t = recipe.training
    es = t.early_stopping
    _, compute = precision.for_run(recipe.model.dtype, t.precision, registry.get(recipe.method.name).full_weights)
    return loop.Settings(learning_rate=t.learning_rate, batch_size=t.batch_size, grad_accum=t.grad_accum,
                         epochs=t.epochs, max_steps=t.max_steps, weight_decay=t.weight_decay,
                         warmup_ratio=t.warmup_ratio, scheduler=t.scheduler, max_grad_norm=t.max_grad_norm,
                         eval_every=t.eval_every, save_every=t.save_every, keep_checkpoints=t.keep_checkpoints,
                         patience=es.patience if es else None, min_delta=es.min_delta if es else 0.0,
                         log_every=t.log_every, seed=recipe.seed, precision=compute,
                         group_by_length=t.group_by_length, packing=t.packing, max_length=t.max_length,
                         gradient_checkpointing=t.gradient_checkpointing, compile=t.compile,
                         strategy=t.distributed.strategy, fsdp_cpu_offload=t.distributed.fsdp.cpu_offload,
                         fsdp_reshard_after_forward=t.distributed.fsdp.reshard_after_forward,
                         deepspeed=_deepspeed(recipe, compute), on_validation=on_validation)


def _deepspeed(recipe: Recipe, compute: str) -> dict | None:
    """The DeepSpeed config of a ``strategy: deepspeed`` run for this number of processes, else None."""
    return deepspeed_for(recipe, compute, distributed.world().size)


def deepspeed_for(recipe: Recipe, compute: str, processes: int) -> dict | None:
    """The DeepSpeed config of a ``strategy: deepspeed`` run of ``recipe`` in ``processes`` processes, else None."""
    t = recipe.training
    if t.distributed.strategy != "deepspeed":
        return None
    return deepspeed_config.resolve(t.distributed.deepspeed, batch_size=t.batch_size, grad_accum=t.grad_accum,
                                    world_size=processes, precision=compute, max_grad_norm=t.max_grad_norm)
