"""The DeepSpeed config of a ``strategy: deepspeed`` run, for accelerate's ``DeepSpeedPlugin(hf_ds_config=...)``.

Either written from the recipe (:func:`build`: ``training.distributed.deepspeed`` plus the batch sizes,
precision and clipping of ``training``) or a user's own JSON (:func:`read_user`), whose ``"auto"`` values
are filled in from the recipe and whose explicit values must agree with it: DeepSpeed, not lmtune, then
decides batch sizes, mixed precision and clipping, so a disagreement would silently train another run
than the recipe describes. :func:`check_runnable` refuses what DeepSpeed cannot run here.

Keys as documented in DeepSpeed's configuration reference (deepspeed.ai/docs/config-json) and filled the
way accelerate fills ``"auto"`` (``DeepSpeedPlugin.fill_match``, ``Accelerator._prepare_deepspeed``).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lmtune import atomic
from lmtune import precision as precisions
from lmtune.errors import UserError
from lmtune.recipe_parallel import DeepSpeedConfig

AUTO = "auto"
CONFIG_KEY = "training.distributed.deepspeed.config"
STRATEGY_KEY = "training.distributed.strategy"

#: ``"auto"`` values accelerate itself fills from the model's hidden size when it prepares the model.
MODEL_AUTO_KEYS = frozenset({
    "zero_optimization.reduce_bucket_size",
    "zero_optimization.stage3_prefetch_bucket_size",
    "zero_optimization.stage3_param_persistence_threshold",
})

#: DeepSpeed's dynamic loss scaling for fp16, its documented defaults written out so the run directory shows them.
_FP16_SCALING = {"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2,
                 "min_loss_scale": 1}
_CPU_OFFLOAD = {"device": "cpu", "pin_memory": True}


def build(options: DeepSpeedConfig, *, batch_size: int, grad_accum: int, world_size: int, precision: str,
          max_grad_norm: float | None) -> dict[str, Any]:
    """The DeepSpeed config written from the recipe.

    Args:
        options: ``training.distributed.deepspeed`` (stage and offload).
        batch_size: ``training.batch_size``, examples per micro-batch per process.
        grad_accum: ``training.grad_accum``, micro-batches per optimizer step.
        world_size: the number of processes.
        precision: ``training.precision`` (``auto`` is resolved here).
        max_grad_norm: ``training.max_grad_norm``; None turns clipping off (0).
    """
    run_precision = precisions.resolve(precision)
    zero: dict[str, Any] = {"stage": options.stage, "overlap_comm": True, "contiguous_gradients": True}
    if options.offload_optimizer:
        zero["offload_optimizer"] = dict(_CPU_OFFLOAD)
    if options.offload_params:
        zero["offload_param"] = dict(_CPU_OFFLOAD)
    if options.stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # a whole model can be saved, not only shards
    fp16: dict[str, Any] = {"enabled": run_precision == "fp16"}
    if fp16["enabled"]:
        fp16.update(_FP16_SCALING)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": batch_size * grad_accum * world_size,
        "gradient_clipping": float(max_grad_norm) if max_grad_norm else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": run_precision == "bf16"},
        "fp16": fp16,
    }
    # No "zero_force_ds_cpu_optimizer": false under offload: left at its default (true), accelerate swaps lmtune's
    # torch AdamW for DeepSpeedCPUAdam (same param groups), the CPU optimizer DeepSpeed's ZeRO-Offload is built for.
    return config


def read_user(path: str | Path, *, batch_size: int, grad_accum: int, world_size: int, precision: str,
              max_grad_norm: float | None, base_dir: Path | None = None) -> dict[str, Any]:
    """A user's DeepSpeed JSON config, ``"auto"`` and missing values filled in from the recipe.

    Args:
        path: ``training.distributed.deepspeed.config``; a relative path is read from ``base_dir``.
        base_dir: the recipe file's folder (None: the working directory).
        The others: as for :func:`build`.

    Raises:
        UserError: the file is missing or not a JSON object, or it contradicts the recipe.
    """
    file = _locate(path, base_dir)
    doc = _Doc(file, _read_text(file))
    config = doc.parse()
    _refuse_own_optimizer(config, doc)
    _fill_batch(config, doc, batch_size, grad_accum, world_size)
    _fill_precision(config, doc, precision)
    _fill_clipping(config, doc, max_grad_norm)
    _fill_zero(config, doc)
    _refuse_unfilled(config, doc)
    return config


def resolve(options: DeepSpeedConfig, *, batch_size: int, grad_accum: int, world_size: int, precision: str,
            max_grad_norm: float | None, base_dir: Path | None = None) -> dict[str, Any]:
    """The run's DeepSpeed config: the user's file when ``options.config`` names one, else :func:`build`'s."""
    settings = {"batch_size": batch_size, "grad_accum": grad_accum, "world_size": world_size,
                "precision": precision, "max_grad_norm": max_grad_norm}
    if options.config:
        return read_user(options.config, base_dir=base_dir, **settings)
    return build(options, **settings)


def offloads(config: dict[str, Any]) -> list[str]:
    """The ZeRO sections of ``config`` that offload to a device (``offload_optimizer``, ``offload_param``)."""
    zero = config.get("zero_optimization", {})
    return [k for k in ("offload_optimizer", "offload_param")
            if isinstance(zero.get(k), dict) and zero[k].get("device", "none") != "none"]


def without_offload(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its ZeRO sections offloading nowhere (a copy)."""
    zero = {k: v for k, v in config.get("zero_optimization", {}).items() if k not in ("offload_optimizer",
                                                                                      "offload_param")}
    return {**config, "zero_optimization": zero}


def check_runnable(config: dict[str, Any], cuda_available: bool | None = None) -> None:
    """Refuse ``strategy: deepspeed`` where DeepSpeed cannot run ``config``: no ``deepspeed`` package, or
    offloading on a machine without a GPU (the state is in CPU memory already, and ZeRO-Offload's CPU Adam
    expects a device to offload from). Without CUDA, DeepSpeed's CPU accelerator trains on gloo.

    Only looks the package up: importing deepspeed is slow.

    Args:
        config: the resolved config (:func:`resolve`).
        cuda_available: whether CUDA is there; None asks torch.
    """
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("strategy deepspeed needs the deepspeed package, which is not installed; "
                        "pip install deepspeed (or pip install 'lmtune[deepspeed]'), or use strategy: fsdp or ddp",
                        source=STRATEGY_KEY)
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    offloaded = offloads(config)
    if offloaded and not cuda_available:
        key = "offload_optimizer" if offloaded[0] == "offload_optimizer" else "offload_params"
        raise UserError(f"there is no GPU here: ZeRO's state is in CPU memory already, so {offloaded[0]} has "
                        f"nothing to offload; set {key}: false (or remove it from the DeepSpeed config)",
                        source=f"training.distributed.deepspeed.{key}")


def write(config: dict[str, Any], path: Path) -> None:
    """Record the config DeepSpeed was given as indented JSON, atomically."""
    atomic.write_json(Path(path), config)


# --- reading a user's file ---------------------------------------------------------------------------------


class _Doc:
    """A config file's text, to point errors at the line of a key."""

    def __init__(self, file: Path, text: str):
        self.file = file
        self.text = text

    def parse(self) -> dict[str, Any]:
        try:
            config = json.loads(self.text)
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON: {err.msg} (column {err.colno}); correct the file",
                            source=f"{self.file}:{err.lineno}") from None
        if not isinstance(config, dict):
            raise UserError(f"the top level is {_json_kind(config)}, but a DeepSpeed config is a JSON object "
                            "({\"zero_optimization\": {...}, ...}); put the settings in one", source=str(self.file))
        return config

    def where(self, *keys: str) -> str:
        """``file:line`` of the nested key ``keys`` (each looked for after the one before), else ``file``."""
        pos = 0
        for key in keys:
            found = self.text.find(json.dumps(key), pos)
            if found < 0:
                return str(self.file)
            pos = found
        return f"{self.file}:{self.text.count(chr(10), 0, pos) + 1}"


def _locate(path: str | Path, base_dir: Path | None) -> Path:
    file = Path(path).expanduser()
    if not file.is_absolute() and base_dir is not None:
        file = Path(base_dir) / file
    if file.is_dir():
        raise UserError(f"{file} is a folder, not a DeepSpeed JSON file; point config at the .json file",
                        source=CONFIG_KEY)
    if not file.is_file():
        hint = f" (a relative path is read from the recipe's folder, {base_dir})" if base_dir is not None else ""
        raise UserError(f"no DeepSpeed config at {file}{hint}; fix the path or remove config to let lmtune "
                        "write one from stage and offload", source=CONFIG_KEY)
    return file


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text ({err.reason} at byte {err.start}); save the file as UTF-8 JSON",
                        source=str(file)) from None
    except OSError as err:
        raise UserError(f"cannot read {file}: {err.strerror}; check its permissions", source=CONFIG_KEY) from None


def _refuse_own_optimizer(config: dict[str, Any], doc: _Doc) -> None:
    """lmtune passes its own AdamW and schedule; accelerate refuses a config optimizer next to it, and a config
    scheduler would move the learning rate a second time."""
    owners = {"optimizer": "training.learning_rate and training.weight_decay",
              "scheduler": "training.scheduler and training.warmup_ratio"}
    for section, recipe_keys in owners.items():
        if section in config:
            raise UserError(f"a \"{section}\" section is not supported: lmtune builds the {section} itself from "
                            f"{recipe_keys}; remove the section and set those recipe keys", source=doc.where(section))


def _fill_batch(config: dict[str, Any], doc: _Doc, batch_size: int, grad_accum: int, world_size: int) -> None:
    _fill_whole(config, doc, "train_micro_batch_size_per_gpu", batch_size, "training.batch_size")
    _fill_whole(config, doc, "gradient_accumulation_steps", grad_accum, "training.grad_accum")
    total = batch_size * grad_accum * world_size
    value = config.get("train_batch_size", AUTO)
    if value == AUTO:
        config["train_batch_size"] = total
        return
    if not _is_whole(value) or value != total:
        raise UserError(f"train_batch_size is {json.dumps(value)} but training.batch_size {batch_size} x "
                        f"training.grad_accum {grad_accum} x {world_size} processes = {total}; set train_batch_size "
                        f"to {total} or \"auto\" (or remove it), or change training.batch_size or training.grad_accum",
                        source=doc.where("train_batch_size"))


def _fill_whole(config: dict[str, Any], doc: _Doc, key: str, wanted: int, recipe_key: str) -> None:
    value = config.get(key, AUTO)
    if value == AUTO:
        config[key] = wanted
        return
    if not _is_whole(value):
        raise UserError(f"{key} must be a whole number or \"auto\", not {json.dumps(value)}; set it to {wanted} "
                        f"({recipe_key}) or \"auto\"", source=doc.where(key))
    if value != wanted:
        raise UserError(f"{key} is {value} but {recipe_key} is {wanted}; set {key} to {wanted} or \"auto\" in the "
                        f"DeepSpeed config, or {recipe_key}: {value} in the recipe", source=doc.where(key))


def _fill_precision(config: dict[str, Any], doc: _Doc, choice: str) -> None:
    run_precision = precisions.resolve(choice)
    recipe = f"training.precision is {choice}" + (f" (here: {run_precision})" if choice != run_precision else "")
    for dtype in ("bf16", "fp16"):
        section = config.setdefault(dtype, {})
        if not isinstance(section, dict):
            raise UserError(f"{dtype} must be an object such as {{\"enabled\": \"auto\"}}, not "
                            f"{json.dumps(section)}; write it that way", source=doc.where(dtype))
        wanted = run_precision == dtype
        enabled = section.get("enabled", AUTO)
        if enabled == AUTO:
            section["enabled"] = wanted
            continue
        if not isinstance(enabled, bool):
            raise UserError(f"{dtype}.enabled must be true, false or \"auto\", not {json.dumps(enabled)}; "
                            "set it to \"auto\"", source=doc.where(dtype, "enabled"))
        if enabled is not wanted:
            other = f"training.precision: {dtype}" if enabled is True else "another training.precision"
            raise UserError(f"{dtype}.enabled is {json.dumps(enabled)} but {recipe}; set \"enabled\": \"auto\" "
                            f"(or {json.dumps(wanted)}) under {dtype}, or {other}", source=doc.where(dtype, "enabled"))


def _fill_clipping(config: dict[str, Any], doc: _Doc, max_grad_norm: float | None) -> None:
    wanted = float(max_grad_norm) if max_grad_norm else 0.0
    value = config.get("gradient_clipping", AUTO)
    if value == AUTO:
        config["gradient_clipping"] = wanted
        return
    recipe = f"training.max_grad_norm is {max_grad_norm if max_grad_norm else 'null (no clipping)'}"
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UserError(f"gradient_clipping must be a number >= 0 or \"auto\", not {json.dumps(value)}; set it to "
                        f"{wanted} or \"auto\" ({recipe})", source=doc.where("gradient_clipping"))
    if float(value) != wanted:
        fix = f"training.max_grad_norm: {value}" if value else "training.max_grad_norm: null"
        raise UserError(f"gradient_clipping is {value} but {recipe}; set gradient_clipping to {wanted} or \"auto\", "
                        f"or {fix}", source=doc.where("gradient_clipping"))


def _fill_zero(config: dict[str, Any], doc: _Doc) -> None:
    """accelerate needs a ``zero_optimization`` section; DeepSpeed's default is stage 0."""
    zero = config.setdefault("zero_optimization", {"stage": 0})
    if not isinstance(zero, dict):
        raise UserError(f"zero_optimization must be an object such as {{\"stage\": 2}}, not {json.dumps(zero)}; "
                        "write it that way", source=doc.where("zero_optimization"))
    stage = zero.setdefault("stage", 0)
    if not _is_whole(stage) or not 0 <= stage <= 3:
        raise UserError(f"zero_optimization.stage is {json.dumps(stage)}, but ZeRO's stages are 0, 1, 2 and 3; "
                        "set one of them", source=doc.where("zero_optimization", "stage"))
    if stage == 3 and zero.get("stage3_gather_16bit_weights_on_model_save", AUTO) == AUTO:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # else accelerate fills false: no whole model


def _refuse_unfilled(config: dict[str, Any], doc: _Doc) -> None:
    for key in _auto_keys(config):
        if key not in MODEL_AUTO_KEYS:
            raise UserError(f"{key} is \"auto\", but the recipe has no value for it; write the value itself",
                            source=doc.where(*key.split(".")))


def _auto_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _auto_keys(value, f"{prefix}{key}.")
        elif value == AUTO:
            yield prefix + key


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return f"{json.dumps(value)}"
    return "null" if value is None else "a number"
