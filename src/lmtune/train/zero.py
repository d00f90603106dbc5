"""DeepSpeed ZeRO for the training loop (``training.distributed.strategy: deepspeed``), through accelerate's plugin.

accelerate hands the model and lmtune's AdamW to ``deepspeed.initialize`` (the config of
:mod:`lmtune.train.deepspeed_config`); the engine then owns the optimizer step, clipping and the gradient
reduction (ZeRO 1: optimizer state partitioned, 2: gradients too, 3: parameters too). The loop keeps its own
accumulation: it tells the engine which micro-batch ends a step and turns off DeepSpeed's division by the
accumulation steps (the loop already divides by the step's global target count). On a machine without CUDA,
DeepSpeed's CPU accelerator runs the same engine on gloo, so the tests here run the code a GPU machine runs.

Checkpoints hold *full* fp32 tensors keyed by parameter name, the same form a sharded FSDP run writes
(DeepSpeed's ``safe_get_full_*`` collectives gather them): a ZeRO run resumes with any number of processes
and under any strategy, and its weights load into a plain model.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from lmtune import distributed

#: Adam's moment estimates, as DeepSpeed names them in its partitioned optimizer state.
MOMENTS = ("exp_avg", "exp_avg_sq")


#: The environment variables :func:`plugin` set, with what they held before (None: unset); :func:`close` puts
#: them back, so processes this one starts later (a test's, the studio's queue) are not told they are a
#: DeepSpeed run's rank 0 with this process's rendezvous port.
_SET: dict[str, str | None] = {}


def plugin(config: dict):
    """accelerate's DeepSpeed plugin for ``config``; sets what accelerate reads to start DeepSpeed (its
    environment switch and, for a single process, the rendezvous torchrun would have set)."""
    from accelerate.utils import DeepSpeedPlugin

    _set_env("ACCELERATE_USE_DEEPSPEED", "true")
    if not distributed.world().distributed:
        _single_process_rendezvous()
    return DeepSpeedPlugin(hf_ds_config=config)


def _single_process_rendezvous() -> None:
    """accelerate starts DeepSpeed only in a launched process: give a lone one a group of its own."""
    port = distributed.free_port()
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        if key not in os.environ:
            _set_env(key, value)


def _set_env(key: str, value: str) -> None:
    _SET.setdefault(key, os.environ.get(key))
    os.environ[key] = value


def _restore_env() -> None:
    for key, before in _SET.items():
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
    _SET.clear()


def process_group_backend() -> str | None:
    """gloo on a machine without CUDA (accelerate would pick none and run each process alone), else
    accelerate's choice (NCCL)."""
    return "gloo" if distributed.uses_cpu() else None


def close() -> None:
    """After training: models loaded from now on are whole again (under ZeRO-3, accelerate's plugin told
    transformers to create every model partitioned), and the environment is as it was before :func:`plugin`.

    The process group stays up: the gathering collectives that follow use it, and DeepSpeed keeps its groups in
    module globals (``deepspeed.utils.groups``), so a lone process's group destroyed here made the next DeepSpeed
    run in the same process (a second ``lmtune estimate`` called from Python) fail with "Group ... is not
    registered"."""
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    _restore_env()


@contextmanager
def within_step(accelerator):
    """A micro-batch before the last of a step: DeepSpeed accumulates its gradients and does not step."""
    state = accelerator.gradient_state
    state._set_sync_gradients(False)
    try:
        yield
    finally:
        state._set_sync_gradients(True)


def backward(accelerator, loss: torch.Tensor) -> None:
    """The engine's backward (and, on a step's last micro-batch, its step), without its division of the loss
    by the accumulation steps: the loop's loss is already the step's share.

    lmtune's loss calls the model's body and output layer itself (no full logits), past the engine's forward,
    which is where DeepSpeed counts a finished micro-batch: without that count ZeRO-3 would overwrite the
    step's gradients with each micro-batch's instead of adding them up.
    """
    accelerator.backward(loss, scale_wrt_gas=False)
    count_micro_batch = getattr(accelerator.deepspeed_engine_wrapped.engine.optimizer, "clear_backward_seen_flag",
                                None)
    if count_micro_batch is not None:
        count_micro_batch()


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def full_weights(model) -> dict[str, torch.Tensor]:
    """The trainable parameters whole, from DeepSpeed's fp32 master copies (a collective: every process calls
    it), as CPU tensors shaped like the model's."""
    from deepspeed.utils import safe_get_full_fp32_param

    return {name: safe_get_full_fp32_param(p).detach().to("cpu").reshape(_shape(p)).contiguous()
            for name, p in _trainable(model)}


def _shape(param) -> torch.Size:
    return getattr(param, "ds_shape", param.shape)  # ZeRO-3 leaves an empty placeholder in the module


def load_weights(model, tensors: dict[str, torch.Tensor]) -> None:
    """Full tensors (every process has them) into the engine's master copies and the model's own weights."""
    from deepspeed import zero
    from deepspeed.utils import safe_set_full_fp32_param

    for name, p in _trainable(model):
        if name not in tensors:
            continue
        value = tensors[name].to(torch.float32)
        with zero.GatheredParameters([p], modifier_rank=0), torch.no_grad():  # nothing to gather below ZeRO-3
            p.data.copy_(value.reshape(p.shape).to(p.device, p.dtype))
        safe_set_full_fp32_param(p, value.to(_device(p)))


def named_groups(model, optimizer) -> list[tuple[dict, list[str]]]:
    """The torch optimizer's parameter groups, before DeepSpeed takes it: (settings, parameter names) each."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [({k: v for k, v in g.items() if k != "params"}, [names[id(p)] for p in g["params"]])
            for g in optimizer.param_groups]


def optimizer_state(model, optimizer, world: distributed.World, groups: list[tuple[dict, list[str]]]) -> dict | None:
    """The optimizer's state gathered whole and keyed by parameter name, in the form torch's
    ``get_optimizer_state_dict(full_state_dict=True)`` gives: on the main process, None elsewhere.

    ``groups`` are :func:`named_groups` (empty ones included, as another strategy's optimizer has them); each
    non-empty one takes its current settings (the learning rate) from DeepSpeed's optimizer, in order.
    """
    from deepspeed.utils import safe_get_full_optimizer_state

    _link_state(optimizer)
    step = _step(optimizer)
    state = {}
    for name, p in _trainable(model):
        moments = {k: safe_get_full_optimizer_state(p, k).detach().to("cpu").reshape(_shape(p)) for k in MOMENTS}
        state[name] = {"step": torch.tensor(float(step)), **moments}
    if not world.main:
        return None
    live = _paired([not names for _, names in groups], torch_optimizer(optimizer).param_groups)
    return {"state": state, "param_groups": [{**_settings(settings if current is None else current), "params": names}
                                             for (settings, names), current in zip(groups, live, strict=True)]}


def load_optimizer_state(model, optimizer, state: dict) -> None:
    """A whole optimizer state keyed by parameter name (a ZeRO or FSDP checkpoint) into this process's
    partitions; the step count into every partition's state, each group's settings (the learning rate the
    next step uses) into DeepSpeed's groups."""
    from deepspeed.utils import safe_set_full_optimizer_state

    by_name = state["state"]
    _link_state(optimizer, create=True)
    for name, p in _trainable(model):
        saved = by_name.get(name)
        if saved is None:
            continue
        for key in MOMENTS:
            safe_set_full_optimizer_state(p, saved[key].to(torch.float32).to(_device(p)), key)
    steps = {float(s["step"]) for s in by_name.values() if "step" in s}
    for partition in torch_optimizer(optimizer).state.values():
        if "step" in partition and steps:
            partition["step"] = torch.tensor(max(steps)) if torch.is_tensor(partition["step"]) else int(max(steps))
    _load_settings(optimizer, state.get("param_groups", []))


def _load_settings(optimizer, saved: list[dict]) -> None:
    """The saved groups' settings into the live ones, as :func:`optimizer_state` matched them: one for one, or
    the non-empty saved groups in order where DeepSpeed dropped the empty ones.

    The scheduler sets the learning rate only at its next step, so without this the first step after a resume
    would take the learning rate the optimizer was built with (0 under warm-up), not the schedule's.
    """
    live = _paired([not group.get("params") for group in saved], torch_optimizer(optimizer).param_groups)
    for settings, group in zip(saved, live, strict=True):
        if group is not None:
            group.update(_settings(settings))


def _paired(empty: list[bool], live: list[dict]) -> list[dict | None]:
    """For each of a run's optimizer groups (``empty``: which have no parameters), DeepSpeed's group for it:
    one for one where it kept them all, else the non-empty ones in order and None for each empty one it dropped."""
    if len(empty) == len(live):
        return list(live)
    kept = iter(live)
    return [None if e else next(kept, None) for e in empty]


def _settings(group: dict) -> dict:
    """A parameter group's settings (learning rate, betas, ...), without its parameters."""
    return {k: v for k, v in group.items() if k != "params"}


def _device(param) -> torch.device:
    return param.device if param.device.type != "meta" else torch.device("cpu")


def _link_state(optimizer, create: bool = False) -> None:
    """Give every partition of the optimizer state its tensors (with ``create``), and point ZeRO-1/2's
    per-parameter views at that state as it is now.

    torch's AdamW creates its state at its first step, so a run being resumed, which has taken no step, has
    none to load into: ``create`` gives every partition the zero state AdamW would create (ZeRO-1/2 keeps it
    by the flat partitions of the groups, ZeRO-3 by its ``fp32_partitioned_groups_flat``). DeepSpeed links
    ZeRO-1/2's views once, after the first optimizer step of the first group, when the other groups' state
    does not exist yet (``exp_avg not found in optimizer state fragment`` on reading them): they are linked
    again here. ZeRO-3 reads its state through the partitions directly.
    """
    zero_optimizer, base = optimizer.optimizer, torch_optimizer(optimizer)
    if create:
        flats = getattr(zero_optimizer, "fp32_partitioned_groups_flat", None)
        for flat in flats if flats is not None else [f for group in base.param_groups for f in group["params"]]:
            if not base.state.get(flat):
                base.state[flat] = {"step": torch.tensor(0.0), **{k: torch.zeros_like(flat) for k in MOMENTS}}
    if hasattr(zero_optimizer, "_hp_optimizer_states_linked"):
        zero_optimizer._hp_optimizer_states_linked = False
        zero_optimizer._lazy_init_hp_params_optimizer_state()


def torch_optimizer(optimizer):
    """The torch optimizer under accelerate's wrapper (and DeepSpeed's ZeRO optimizer, if any)."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _step(optimizer) -> int:
    for partition in torch_optimizer(optimizer).state.values():
        if "step" in partition:
            return int(partition["step"])
    return 0
