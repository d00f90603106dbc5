"""The whole estimate of a recipe's run: tokens, steps, memory, time and money, before it runs.

The stages, cheapest first, so a problem in the recipe or its data stops it before any model loads:

1. check: the recipe's method, precision and strategy as the run checks them; ``--hardware`` by name;
2. data and tokens (:mod:`~lmtune.estimate.tokens`): the data stage, the template, exact token counts, steps;
3. memory (:mod:`~lmtune.estimate.memory`): the model from its config on the meta device, broken down, and one
   process's share under the recipe's strategy (:mod:`~lmtune.estimate.sharding`);
4. time (:mod:`~lmtune.estimate.timing`): a few real optimizer steps on this machine, with its peak memory;
   the rest of the run (:mod:`~lmtune.estimate.plan`), money, the fit (:mod:`~lmtune.estimate.advice`) and,
   for named hardware, a projection (:mod:`~lmtune.estimate.hardware`).

Nothing is written to ``runs/``. :func:`estimate` returns one dict (``lmtune estimate --json`` prints it);
:func:`lmtune.estimate.report.text` is its console form; :mod:`~lmtune.estimate.result` puts it together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from lmtune import models, precision, tasks
from lmtune.data import prepare as data_stage
from lmtune.data.templates import check as check_template
from lmtune.data.templates import resolve as resolve_template
from lmtune.estimate import advice, hardware, memory, result, sharding, timing, tokens
from lmtune.kinds.tasks import task_kind
from lmtune.methods import registry
from lmtune.progress import say
from lmtune.recipe import Recipe
from lmtune.seeding import seed_everything
from lmtune.train import deepspeed_config, loop, strategy
from lmtune.training_settings import deepspeed_for, loop_settings


@dataclass
class _Checked:
    """What the stages share once the recipe is checked."""

    recipe: Recipe
    task: Any
    method: Any
    load_kwargs: dict
    settings: loop.Settings
    setup: memory.Setup  # dtypes and switches on this machine
    device: hardware.Hardware | None
    layout: sharding.Layout  # the strategy and the number of processes


def estimate(recipe: Recipe, hardware_name: str | None = None, price_per_hour: float | None = None,
             steps: int = 3, quiet: bool = False, processes: int = 1) -> dict[str, Any]:
    """Estimate ``recipe``'s run; see the module docstring.

    Args:
        recipe: a validated recipe.
        hardware_name: a device of :data:`lmtune.estimate.hardware.HARDWARE` to project onto.
        price_per_hour: price of one device-hour (this machine's, or the named hardware's instead of its table's).
        steps: optimizer steps timed (after one warm-up).
        quiet: no progress messages.
        processes: the processes the run trains in (``lmtune train --processes``, torchrun's): steps take
            ``processes x training.batch_size`` examples and memory is one process's under the recipe's strategy.

    Raises:
        UserError: an unknown hardware name, or any problem the run itself would refuse before training.
    """
    checked = _check(recipe, hardware_name, processes)
    say(f"[1/4] data: reading {recipe.data.train}", quiet)
    started = time.perf_counter()
    prepared = data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed, recipe.model.name)
    template = None
    if checked.task.prompted:
        template = resolve_template(recipe.task.template, prepared.splits["train"][0].format)
        check_template(template, prepared.splits["train"][0], recipe.task.labels)
    say(f"[2/4] tokens: encoding with {recipe.model.name}'s tokenizer", quiet)
    counts = tokens.count(recipe, checked.task, prepared, models.load_tokenizer(recipe.model.name), template,
                          processes)
    data_s = time.perf_counter() - started
    say("[3/4] memory: the model from its config on the meta device", quiet)
    params = _params(checked, recipe.method.name, recipe.method.peft, recipe.method.freeze)
    eval_shape = _eval_shape(recipe, counts)
    here = memory.breakdown(params, checked.setup, counts.peak_micro, *eval_shape)
    room = advice.available_mb()  # MB, what it is, whether a CUDA GPU's
    # What this process holds already (a CPU's RSS counts it; a GPU's allocation starts at zero).
    runtime = timing.current_mb() if timing.parallel.memory_kind() == "rss" else 0.0
    measured = None
    if runtime + here["training_total"] <= room[0]:
        say(f"[4/4] time: {min(steps, counts.timed[0])} optimizer steps after a warm-up, on this machine", quiet)
        measured = timing.measure(checked.task, checked.method, recipe, checked.load_kwargs, counts, checked.settings,
                                  min(steps, counts.timed[0]), quiet)
    else:
        say(f"[4/4] time: not timed here, the formula needs {runtime + here['training_total']:,.0f} MB and this "
            f"machine has {room[0]:,.0f} MB", quiet)
    return result.build(checked, counts, params, here, measured, eval_shape, data_s, runtime, room, price_per_hour,
                        lambda: _params(checked, "lora", {"lora_dropout": 0.0}, {}))


def _check(recipe: Recipe, hardware_name: str | None, processes: int = 1) -> _Checked:
    """What the run checks before its data stage, and the named hardware; nothing slow."""
    device = hardware.get(hardware_name) if hardware_name else None
    seed_everything(recipe.seed)
    task = tasks.task_for(recipe)
    method = registry.get(recipe.method.name)
    dtype, compute = precision.for_run(recipe.model.dtype, recipe.training.precision, method.full_weights)
    load_kwargs = {**method.load_kwargs(recipe.method.peft), "dtype": dtype}
    t = recipe.training
    # Offloading needs a GPU to offload from: the named hardware is one, whatever this machine has.
    strategy.check(t.distributed, compute, batch_size=t.batch_size, grad_accum=t.grad_accum,
                   max_grad_norm=t.max_grad_norm, cuda_available=True if device is not None else None)
    settings = _timed_here(loop_settings(recipe))  # what the run's loop gets
    weights = "nf4" if "quantization_config" in load_kwargs else _name(dtype)
    setup = memory.Setup(weights=weights, trainable=_name(dtype) if method.full_weights else "fp32", compute=compute,
                         checkpointing=t.gradient_checkpointing, full_logits=method.virtual_tokens)
    layout = sharding.layout(t.distributed, processes, t.grad_accum, deepspeed_for(recipe, compute, processes))
    return _Checked(recipe, task, method, load_kwargs, settings, setup, device, layout)


def _timed_here(settings: loop.Settings) -> loop.Settings:
    """The settings the steps are timed with here. Without a GPU, nothing is offloaded: the state is in CPU
    memory already, and DeepSpeed would first compile its CPU Adam (minutes) for steps that time the same."""
    if settings.deepspeed is None or torch.cuda.is_available():
        return settings
    return replace(settings, deepspeed=deepspeed_config.without_offload(settings.deepspeed))


def _name(dtype) -> str:
    return {v: k for k, v in precision.DTYPES.items()}[dtype]


def _params(checked: _Checked, method_name: str, options: dict, freeze: dict) -> memory.Params:
    """The recipe's model with ``method_name`` applied, on the meta device."""
    from transformers import AutoConfig

    from lmtune.assets import resolve_model

    recipe = checked.recipe
    # The loader's own helper: the same offline handling and error for a model that cannot be found.
    config = models._from_pretrained(AutoConfig, resolve_model(recipe.model.name))
    head = None
    if checked.task.shape == "head":
        head = 1 if task_kind(recipe.task.type).numeric else len(recipe.task.labels or [])
    return memory.meta_params(config, registry.get(method_name), options, freeze, head)


def _eval_shape(recipe: Recipe, counts) -> tuple[int, int]:
    """One evaluation batch: rows, and tokens per row (the longest test prompt and the answer)."""
    longest = max(counts.test_prompt_lengths, default=0)
    answer = 0 if task_kind(recipe.task.type).labelled else recipe.eval.max_new_tokens
    return min(recipe.eval.batch_size, max(len(counts.test_prompt_lengths), 1)), longest + answer
