"""Atomic checkpoints: everything needed to continue a run exactly where it stopped."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lmtune.errors import UserError
from lmtune.run_dir import CHECKPOINT_STATE, checkpoint_dirs
from lmtune.train.strategy import Replicated, trainable

WEIGHTS = "trainable.safetensors"
RANK_RNG = "rng-rank{rank}.pt"  # processes other than the main one: their RNG state


def save(directory: Path, model, optimizer, scheduler, state: dict[str, Any]) -> Path:
    """Write a one-process checkpoint into ``directory`` atomically (a temporary folder, then one rename).

    Only trainable parameters are stored: for an adapter that is a few MB, not the base model.
    """
    write(staging(directory), trainable(model), optimizer.state_dict(), scheduler, state)
    return commit(staging(directory), directory)


def staging(directory: Path) -> Path:
    """The temporary folder a checkpoint is written into before :func:`commit` renames it."""
    return directory.with_name(directory.name + ".tmp")


def write(tmp: Path, weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler,
          state: dict[str, Any]) -> None:
    """The main process's part of a checkpoint: trainable weights (whole), optimizer state, schedule, its RNG
    state and the loop state."""
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / WEIGHTS))
    torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                "rng": _rng_state()}, tmp / "optimizer.pt")
    (tmp / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2))


def write_rng(tmp: Path, rank: int) -> None:
    """Another process's part of a checkpoint: its own random-number state (dropout masks differ per rank)."""
    torch.save(_rng_state(), tmp / RANK_RNG.format(rank=rank))


def commit(tmp: Path, directory: Path) -> Path:
    """Replace ``directory`` with the finished ``tmp`` in one rename."""
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def save_weights(path: Path, model) -> None:
    """Trainable parameters as safetensors."""
    save_file(trainable(model), str(path))


def load_weights(path: Path, model, holder: Replicated | None = None) -> None:
    """Copy saved trainable parameters back into the model (into its shards, for a sharded ``holder``),
    checking every name matches."""
    saved = load_file(str(path))
    names = {n for n, _ in model.named_parameters()}
    missing = [n for n in saved if n not in names]
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks, e.g. {missing[0]}")
    (holder or Replicated()).load_weights(model, saved)


def load(directory: Path, model, optimizer, scheduler, rank: int = 0, holder: Replicated | None = None
         ) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG state; return the saved loop state.

    ``holder`` is the run's strategy (how its processes hold the model; default one whole copy). A process
    whose rank has no saved RNG state (the run had fewer processes before) keeps the state it was seeded with.
    """
    holder = holder or Replicated()
    load_weights(directory / WEIGHTS, model, holder)
    blob = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=False)
    holder.load_optimizer_state(model, optimizer, blob["optimizer"])
    scheduler.load_state_dict(_fit_groups(blob["scheduler"], len(scheduler.base_lrs)))
    own = directory / RANK_RNG.format(rank=rank)
    if rank == 0:
        _set_rng_state(blob["rng"])
    elif own.exists():
        _set_rng_state(torch.load(own, map_location="cpu", weights_only=False))
    return json.loads((directory / CHECKPOINT_STATE).read_text())


#: The scheduler's entries kept per optimizer group (torch's LambdaLR and the schedulers transformers builds on it).
PER_GROUP = ("base_lrs", "_last_lr", "lr_lambdas")


def _fit_groups(state: dict[str, Any], groups: int) -> dict[str, Any]:
    """A scheduler's saved state for ``groups`` optimizer groups.

    DeepSpeed drops an empty group (LoRA has no parameters without weight decay) that ddp and FSDP keep, so a
    checkpoint continued under another strategy has one group more or fewer. lmtune gives every group the
    same learning rate and schedule, so the entries are repeated or dropped.

    Raises:
        UserError: (``training.distributed.strategy``) the groups' entries differ, so none stands for the others.
    """
    fitted = dict(state)
    for key in PER_GROUP:
        values = state.get(key)
        if not isinstance(values, list) or len(values) in (0, groups):
            continue
        if any(v != values[0] for v in values):
            raise UserError(f"the checkpoint's schedule has {len(values)} optimizer groups with different settings "
                            f"and this run has {groups}; continue it with the strategy it was written with",
                            source="training.distributed.strategy")
        fitted[key] = [copy.deepcopy(values[0]) for _ in range(groups)]
    return fitted


def latest(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint (``step-N``), ignoring half-written ``.tmp`` folders."""
    found = checkpoint_dirs(checkpoints, complete=True)
    return found[-1] if found else None


def prune(checkpoints: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for old in checkpoint_dirs(checkpoints)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
