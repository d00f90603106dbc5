"""The training loop: AdamW on accelerate, warm-up + decay, accumulation, validation, checkpoints.

Reads top to bottom like nanoGPT's train.py; every piece it calls is small and tested on its own.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from lmtune import precision, progress
from lmtune.seeding import seed_everything
from lmtune.train import checkpoint, speedups
from lmtune.train.batches import MicroBatches, total_steps
from lmtune.train.objectives import Objective, TokenObjective
from lmtune.train.track import TrainingLog


@dataclass
class Settings:
    """What the loop needs from ``training`` (config objects do not travel deeper)."""

    learning_rate: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"
    max_grad_norm: float | None = 1.0
    eval_every: int | None = 50
    save_every: int | None = None
    keep_checkpoints: int = 2
    patience: int | None = None
    min_delta: float = 0.0
    log_every: int = 5
    seed: int = 42
    precision: str = "auto"
    group_by_length: bool = True
    packing: bool = False
    max_length: int = 512  # row capacity when packing
    gradient_checkpointing: bool = False
    compile: bool = False


@dataclass
class Result:
    steps: int
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    train_tokens: int
    seconds: float
    tokens_per_s: float


def train(model, train_set: list, val_set: list, settings: Settings, run_dir: Path,
          pad_id: int, resume: bool = False, quiet: bool = False, objective: Objective | None = None) -> Result:
    """Fine-tune ``model`` in place and return what happened.

    Args:
        model: a model whose trainable parameters are already chosen (by a method).
        train_set / val_set: encoded examples (``Encoded`` unless the objective says otherwise);
            ``val_set`` may be empty.
        settings: hyperparameters.
        run_dir: receives ``metrics.jsonl``, ``timing.jsonl`` and ``checkpoints/``.
        pad_id: token used for padding.
        resume: continue from the newest checkpoint in ``run_dir/checkpoints``.
        quiet: no progress bar and no validation-loss lines.
        objective: how examples are batched and their loss summed (default: target-token loss).
    """
    if objective is None:
        objective = TokenObjective(settings.max_length if settings.packing else None)
    # The run seeded everything before the model was built; seeding again here makes the loop's own draws
    # (dropout) independent of how much randomness the stages before it used (a resumed run skips some).
    seed_everything(settings.seed)
    accelerator = make_accelerator(settings.precision)
    if settings.gradient_checkpointing:
        speedups.enable_activation_checkpointing(model)
    if settings.compile:
        speedups.compile_layers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.learning_rate)
    steps = total_steps(len(train_set), settings.batch_size, settings.grad_accum, settings.epochs,
                        settings.max_steps)
    scheduler = get_scheduler(settings.scheduler, optimizer, math.ceil(settings.warmup_ratio * steps), steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    ckpt_dir = run_dir / "checkpoints"
    # ``window_*``: the steps since the last log line, checkpointed so a resumed run logs what an
    # uninterrupted one logs (each step's summed loss, as the float32 it was, its targets and tokens).
    state = {"step": 0, "best_val_loss": None, "best_step": None, "bad_evals": 0, "tokens": 0, "seconds": 0.0,
             "window_losses": [], "window_targets": 0, "window_tokens": 0, "window_seconds": 0.0}
    found = checkpoint.latest(ckpt_dir) if resume else None
    if found is not None:
        state.update(checkpoint.load(found, accelerator.unwrap_model(model), optimizer, scheduler))
        print(f"resuming from {found} (step {state['step']} of {steps})", file=sys.stderr)
    tracker = TrainingLog(run_dir, resume_step=state["step"] if found else None)
    lengths = [objective.length(e) for e in train_set] if settings.group_by_length else None
    batches = MicroBatches(len(train_set), settings.batch_size, settings.seed, settings.grad_accum, lengths)
    save_every = settings.save_every or settings.eval_every or steps

    bar = progress.bar(steps, "train", "step", quiet=quiet, initial=state["step"])
    stopped_early = False
    started = time.perf_counter() - state["seconds"]
    window_start = time.perf_counter() - state["window_seconds"]
    pending_loss = [torch.tensor(v, dtype=torch.float32, device=device) for v in state["window_losses"]]
    try:
        while state["step"] < steps:
            model.train()
            first = state["step"] * settings.grad_accum
            micro = [[train_set[i] for i in batches.indices(m)] for m in range(first, first + settings.grad_accum)]
            n_targets = sum(objective.units(e) for mb in micro for e in mb)
            pending_loss.append(accumulate_gradients(model, micro, pad_id, accelerator, objective))
            step_tokens = sum(objective.length(e) for mb in micro for e in mb)
            state["window_tokens"] += step_tokens
            state["tokens"] += step_tokens
            if settings.max_grad_norm:
                accelerator.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["window_targets"] += n_targets
            state["step"] += 1
            bar.update(1)
            step = state["step"]

            if step % settings.log_every == 0 or step == steps:
                # One host-device sync per log line, not per step.
                loss = (torch.stack(pending_loss).sum() / max(state["window_targets"], 1)).item()
                elapsed = time.perf_counter() - window_start
                tps = state["window_tokens"] / elapsed if elapsed > 0 else 0.0
                tracker.log({"step": step, "epoch": round(batches.epoch_of(first + settings.grad_accum - 1), 4),
                             "split": "train", "loss": loss, "lr": scheduler.get_last_lr()[0]},
                            tokens_per_s=round(tps, 1), elapsed_s=round(time.perf_counter() - started, 2))
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:.0f}")
                pending_loss, window_start = [], time.perf_counter()
                state.update(window_targets=0, window_tokens=0)

            if val_set and settings.eval_every and (step % settings.eval_every == 0 or step == steps):
                val_loss = evaluate_loss(model, val_set, settings.batch_size, pad_id, device, accelerator, objective)
                tracker.log({"step": step, "epoch": round(batches.epoch_of(first + settings.grad_accum - 1), 4),
                             "split": "validation", "loss": val_loss})
                if state["best_val_loss"] is None or val_loss < state["best_val_loss"] - settings.min_delta:
                    state.update(best_val_loss=val_loss, best_step=step, bad_evals=0)
                    ckpt_dir.mkdir(parents=True, exist_ok=True)
                    checkpoint.save_weights(ckpt_dir / "best.safetensors.tmp", accelerator.unwrap_model(model))
                    (ckpt_dir / "best.safetensors.tmp").replace(ckpt_dir / "best.safetensors")
                else:
                    state["bad_evals"] += 1
                    stopped_early = bool(settings.patience and state["bad_evals"] >= settings.patience)
                if not quiet:
                    # tqdm.write keeps a terminal's bar intact; without one it is a plain print.
                    tqdm.write(f"step {step}: validation loss {val_loss:.4f} (best {state['best_val_loss']:.4f} "
                               f"at step {state['best_step']})", file=sys.stderr)
            state["seconds"] = time.perf_counter() - started
            if step % save_every == 0 or step == steps or stopped_early:
                _save(ckpt_dir, model, optimizer, scheduler, state, pending_loss, window_start, accelerator)
                checkpoint.prune(ckpt_dir, settings.keep_checkpoints)
            if stopped_early:
                print(f"early stopping at step {step}: validation loss has not improved for "
                      f"{settings.patience} evaluations (best {state['best_val_loss']:.4f} at step "
                      f"{state['best_step']})", file=sys.stderr)
                break
    except KeyboardInterrupt:
        if state["step"] > 0:
            _save(ckpt_dir, model, optimizer, scheduler, state, pending_loss, window_start, accelerator)
        print(f"\ninterrupted at step {state['step']}; checkpoint saved, continue with --resume", file=sys.stderr)
        raise
    finally:
        bar.close()
        tracker.close()
        speedups.disable(accelerator.unwrap_model(model))

    model = accelerator.unwrap_model(model)
    if state["best_step"] is not None and (ckpt_dir / "best.safetensors").exists():
        # The artefact a user keeps is the one that validated best, not the last one.
        checkpoint.load_weights(ckpt_dir / "best.safetensors", model)
    seconds = time.perf_counter() - started
    return Result(state["step"], state["best_val_loss"], state["best_step"], stopped_early,
                  state["tokens"], seconds, state["tokens"] / seconds if seconds else 0.0)


def _save(ckpt_dir: Path, model, optimizer, scheduler, state: dict, pending_loss: list[torch.Tensor],
          window_start: float, accelerator) -> None:
    """Checkpoint the step just finished, with the log window still open (its losses read back exactly)."""
    state.update(window_losses=[t.item() for t in pending_loss], window_seconds=time.perf_counter() - window_start)
    checkpoint.save(ckpt_dir / f"step-{state['step']}", accelerator.unwrap_model(model), optimizer, scheduler, state)


def make_accelerator(choice: str = "auto"):
    """A fresh Accelerator for one run (accelerate keeps global state; a second run may differ)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision.accelerate_name(precision.resolve(choice)))


def accumulate_gradients(model, micro: list[list], pad_id: int, accelerator,
                         objective: Objective | None = None) -> torch.Tensor:
    """Backpropagate one optimizer step's micro-batches; return their summed token loss (detached).

    Each micro-batch's summed loss is divided by the target tokens of the *whole* step, so the
    accumulated gradient equals the gradient of one large batch, whatever the split.
    """
    objective = objective or TokenObjective()
    n_targets = max(sum(objective.units(e) for mb in micro for e in mb), 1)
    total = torch.zeros((), device=accelerator.device)
    for mb in micro:
        batch = {k: v.to(accelerator.device) for k, v in objective.collate(mb, pad_id).items()}
        with accelerator.autocast():
            loss_sum = objective.loss_sum(model, batch)
        accelerator.backward(loss_sum / n_targets)
        total += loss_sum.detach().float()
    return total


@torch.no_grad()
def evaluate_loss(model, examples: list, batch_size: int, pad_id: int, device, accelerator=None,
                  objective: Objective | None = None) -> float:
    """Mean loss per unit (target token, example, pair) over ``examples``; train/eval mode is restored."""
    objective = objective or TokenObjective()
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        batch = {k: v.to(device) for k, v in objective.collate(chunk, pad_id).items()}
        with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            total += objective.loss_sum(model, batch).float()
        count += sum(objective.units(e) for e in chunk)
    model.train(was_training)
    return (total / max(count, 1)).item()


def _param_groups(model, weight_decay: float):
    """No weight decay on biases and norms, as in every reference recipe."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
