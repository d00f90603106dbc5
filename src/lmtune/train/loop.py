"""The training loop: AdamW on accelerate, warm-up + decay, accumulation, validation, checkpoints.

``train`` is a fixed sequence of stages, as in a torchtune recipe: ``setup`` (model, optimizer,
schedule, resume), then for each step ``train_step``, ``log_train``, ``validate`` and
``save_checkpoint``, then ``cleanup`` and ``finish``. Every piece is small and tested on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import get_scheduler

from lmtune import distributed, progress
from lmtune.progress import say
from lmtune.run_dir import BEST_WEIGHTS, RunDir, checkpoint_path
from lmtune.seeding import seed_everything
from lmtune.train import checkpoint, deepspeed_config, parallel, speedups, strategy
from lmtune.train.batches import MicroBatches, total_steps
from lmtune.train.objectives import Objective, TokenObjective, evaluate_loss
from lmtune.train.parallel import accumulate_gradients, make_accelerator
from lmtune.train.track import NoLog, TrainingLog
from lmtune.train.trackers.session import Trackers


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
    strategy: str = "ddp"  # training.distributed.strategy: ddp, fsdp or deepspeed
    fsdp_reshard_after_forward: bool = True
    fsdp_cpu_offload: bool = False
    deepspeed: dict | None = None  # the DeepSpeed config (strategy deepspeed), batch sizes filled in
    #: Called with (step, validation loss) after each validation; it may raise to stop the run there (`lmtune
    #: tune` prunes a trial this way: the exception goes up through `train` to the caller).
    on_validation: Callable[[int, float], None] | None = None


@dataclass
class Result:
    """What a finished (or early-stopped) run did."""

    steps: int
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    train_tokens: int
    seconds: float
    tokens_per_s: float
    peak_memory_mb: list[float] = field(default_factory=list)  # per process: CUDA allocated, or peak RSS on CPU
    memory_kind: str = "rss"  # which of the two (parallel.memory_kind)
    strategy: str = "ddp"  # how the processes held the model (training.distributed.strategy as it applied)
    #: After sharded training, the trained (best) weights whole, on every process: the model passed in is left
    #: sharded, so the caller loads these into an unsharded copy for evaluation and saving.
    weights: dict[str, torch.Tensor] | None = None


@dataclass
class TrainState:
    """Where a run stands: what a checkpoint's ``state.json`` holds, under the same keys as ever.

    ``window_*`` are the steps since the last log line, checkpointed so a resumed run logs what an
    uninterrupted one logs (each step's summed loss, as the float32 it was, its targets and tokens).
    """

    step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # validations since the best one (early stopping)
    tokens: int = 0  # training tokens seen so far
    seconds: float = 0.0  # training time so far, earlier sessions of a resumed run included
    window_losses: list[float] = field(default_factory=list)
    window_targets: int = 0
    window_tokens: int = 0
    window_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``state.json`` form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        """Read a ``state.json``; a key an older checkpoint lacks keeps its default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass
class Training:
    """One run after ``setup``: what its stages share."""

    model: Any  # as prepared by accelerate
    optimizer: Any
    scheduler: Any
    accelerator: Any
    params: list[torch.Tensor]  # the trainable parameters (gradient clipping)
    objective: Objective
    settings: Settings
    train_set: list
    val_set: list
    pad_id: int
    steps: int  # optimizer steps of the whole run
    save_every: int
    batches: MicroBatches
    ckpt_dir: Path
    tracker: TrainingLog
    bar: Any
    quiet: bool
    state: TrainState
    started: float  # perf_counter() when the run would have started, had it never stopped
    window_start: float  # perf_counter() when the open log window started
    pending_loss: list[torch.Tensor]  # the open window's summed step losses, on the device: no sync per step
    world: distributed.World = field(default_factory=distributed.World)
    holder: strategy.Replicated = field(default_factory=strategy.Replicated)  # ddp or fsdp
    stopped_early: bool = False


def train(model, train_set: list, val_set: list, settings: Settings, run_dir: Path, pad_id: int, resume: bool = False,
          quiet: bool = False, objective: Objective | None = None, trackers: Trackers | None = None) -> Result:
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
        trackers: the run's other trackers (``tracking:``), which get each line of ``metrics.jsonl`` too.
    """
    run = setup(model, train_set, val_set, settings, run_dir, pad_id, resume, quiet, objective, trackers)
    try:
        while run.state.step < run.steps and not run.stopped_early:
            train_step(run)
            step, last = run.state.step, run.state.step == run.steps
            if step % settings.log_every == 0 or last:
                log_train(run)
            if val_set and settings.eval_every and (step % settings.eval_every == 0 or last):
                validate(run)
            run.state.seconds = time.perf_counter() - run.started
            if step % run.save_every == 0 or last or run.stopped_early:
                save_checkpoint(run)
                if run.world.main:
                    checkpoint.prune(run.ckpt_dir, settings.keep_checkpoints)
            if run.stopped_early:
                say(f"early stopping at step {step}: validation loss has not improved for "
                    f"{settings.patience} evaluations (best {run.state.best_val_loss:.4f} at step "
                    f"{run.state.best_step})")
    except KeyboardInterrupt:
        interrupted(run)
        raise
    finally:
        cleanup(run)
    return finish(run)


def check(model, settings: Settings) -> None:
    """Refuse, before anything slow, the settings ``train`` could not apply to ``model`` (no forward pass).

    Raises:
        UserError: naming the ``training.*`` key of each setting the model cannot take.
    """
    speedups.check(model, settings.gradient_checkpointing, settings.compile, settings.packing)


def setup(model, train_set: list, val_set: list, settings: Settings, run_dir: Path, pad_id: int, resume: bool = False,
          quiet: bool = False, objective: Objective | None = None, trackers: Trackers | None = None) -> Training:
    """Seed, prepare model and optimizer, restore the newest checkpoint when resuming, open the logs."""
    check(model, settings)  # again with the method applied: soft prompts show only on the peft model
    if objective is None:
        objective = TokenObjective(settings.max_length if settings.packing else None)
    # The run seeded everything before the model was built; seeding again here makes the loop's own draws
    # (dropout) independent of how much randomness the stages before it used (a resumed run skips some).
    seed_everything(settings.seed)
    world = distributed.world()
    holder = strategy.for_run(settings.strategy, world, settings.fsdp_reshard_after_forward,
                              settings.fsdp_cpu_offload, settings.deepspeed)
    accelerator = make_accelerator(settings.precision, settings.deepspeed if holder.name == "deepspeed" else None)
    if settings.deepspeed is not None and world.main:
        deepspeed_config.write(settings.deepspeed, RunDir(run_dir).deepspeed)
    global_batch = settings.batch_size * world.size  # each process takes batch_size examples of it
    model, optimizer, scheduler, params, steps = _optimization(model, len(train_set), settings, accelerator,
                                                               global_batch, holder)
    ckpt_dir = RunDir(run_dir).checkpoints
    state, resumed = _restore(ckpt_dir if resume else None, holder.unwrap(model, accelerator), optimizer,
                              scheduler, steps, world, settings.batch_size, holder)
    tracker = TrainingLog(run_dir, state.step if resumed else None, trackers) if world.main else NoLog()
    lengths = [objective.length(e) for e in train_set] if settings.group_by_length else None
    batches = MicroBatches(len(train_set), global_batch, settings.seed, settings.grad_accum, lengths)
    bar = progress.bar(steps, "train", "step", quiet=quiet or not world.main, initial=state.step)
    return Training(
        model, optimizer, scheduler, accelerator, params, objective, settings, train_set, val_set, pad_id, steps,
        save_every=settings.save_every or settings.eval_every or steps, batches=batches, ckpt_dir=ckpt_dir,
        tracker=tracker, bar=bar, quiet=quiet or not world.main, state=state,
        started=time.perf_counter() - state.seconds, window_start=time.perf_counter() - state.window_seconds,
        pending_loss=parallel.restored_window(state.window_losses, world, accelerator.device), world=world,
        holder=holder)


def _optimization(model, n_train: int, settings: Settings, accelerator, global_batch: int,
                  holder: strategy.Replicated):
    """Switch on the speed-ups; shard the model if the strategy does; build AdamW and the schedule; return
    (model, optimizer, scheduler, trainable parameters, total steps), prepared as the strategy says."""
    if settings.gradient_checkpointing:
        speedups.enable_activation_checkpointing(model)
    if settings.compile:
        speedups.compile_layers(model)
    model = holder.shard(model, accelerator)  # before AdamW: sharding replaces the parameters
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.learning_rate)
    steps = total_steps(n_train, global_batch, settings.grad_accum, settings.epochs, settings.max_steps)
    model, optimizer = holder.prepare(model, optimizer, accelerator)
    # On the torch optimizer under the wrappers, with the groups it has now (DeepSpeed drops empty ones).
    scheduler = get_scheduler(settings.scheduler, strategy.torch_optimizer(optimizer),
                              math.ceil(settings.warmup_ratio * steps), steps)
    return model, optimizer, scheduler, params, steps


def _restore(ckpt_dir: Path | None, model, optimizer, scheduler, steps: int, world: distributed.World,
             batch_size: int, holder: strategy.Replicated | None = None) -> tuple[TrainState, bool]:
    """The newest checkpoint under ``ckpt_dir`` loaded into model, optimizer, scheduler and RNGs; returns its
    loop state and True, or a fresh state and False when there is none (or ``ckpt_dir`` is None)."""
    found = checkpoint.latest(ckpt_dir) if ckpt_dir is not None else None
    if found is None:
        return TrainState(), False
    # The same examples in every step after the checkpoint (`lmtune train --resume` checked it before loading).
    parallel.check_global_batch(parallel.read_world(found), world, batch_size)
    state = TrainState.from_dict(checkpoint.load(found, model, optimizer, scheduler, world.rank, holder))
    say(f"resuming from {found} (step {state.step} of {steps})")
    return state, True


def train_step(run: Training) -> None:
    """One optimizer step: accumulate its micro-batches' gradients, clip, step, count tokens and targets."""
    s, state, objective = run.settings, run.state, run.objective
    run.model.train()
    first = state.step * s.grad_accum
    micro = [[run.train_set[i] for i in run.batches.indices(m)] for m in range(first, first + s.grad_accum)]
    n_targets = sum(objective.units(e) for mb in micro for e in mb)
    run.pending_loss.append(accumulate_gradients(run.model, micro, run.pad_id, run.accelerator, objective,
                                                 run.world, run.holder))
    step_tokens = sum(objective.length(e) for mb in micro for e in mb)
    state.window_tokens += step_tokens
    state.tokens += step_tokens
    if s.max_grad_norm:
        run.holder.clip(run.accelerator, run.params, s.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.window_targets += n_targets
    state.step += 1
    run.bar.update(1)


def log_train(run: Training) -> None:
    """Log the training loss of the steps since the last line and close that window."""
    state = run.state
    # One host-device sync (and one sum over the processes) per log line, not per step.
    loss = (parallel.summed(run.pending_loss, run.world).sum() / max(state.window_targets, 1)).item()
    elapsed = time.perf_counter() - run.window_start
    tps = state.window_tokens / elapsed if elapsed > 0 else 0.0
    run.tracker.log({"step": state.step, "epoch": _epoch(run), "split": "train", "loss": loss,
                     "lr": run.scheduler.get_last_lr()[0], **run.objective.window_metrics(run.world)},
                    tokens_per_s=round(tps, 1), elapsed_s=round(time.perf_counter() - run.started, 2))
    run.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:.0f}")
    run.pending_loss, run.window_start = [], time.perf_counter()
    state.window_targets = state.window_tokens = 0


def validate(run: Training) -> None:
    """Log the validation loss; keep the best weights, or count one more evaluation without improvement
    (``run.stopped_early`` once ``patience`` of them are in a row)."""
    s, state = run.settings, run.state
    val_loss = evaluate_loss(run.model, run.val_set, s.batch_size, run.pad_id, run.accelerator.device,
                             run.accelerator, run.objective, run.world)
    run.tracker.log({"step": state.step, "epoch": _epoch(run), "split": "validation", "loss": val_loss,
                     **run.objective.validation_metrics()})  # e.g. GRPO's reward (its loss is minus it)
    if state.best_val_loss is None or val_loss < state.best_val_loss - s.min_delta:
        state.best_val_loss, state.best_step, state.bad_evals = val_loss, state.step, 0
        # Every process computed the same loss; all gather the weights if sharded, the main one writes them.
        weights = run.holder.weights(run.holder.unwrap(run.model, run.accelerator), run.world)
        if run.world.main:
            run.ckpt_dir.mkdir(parents=True, exist_ok=True)
            best = run.ckpt_dir / BEST_WEIGHTS
            tmp = best.with_name(best.name + ".tmp")
            save_file(weights, str(tmp))
            tmp.replace(best)
    else:
        state.bad_evals += 1
        run.stopped_early = bool(s.patience and state.bad_evals >= s.patience)
    say(f"step {state.step}: validation loss {val_loss:.4f} (best {state.best_val_loss:.4f} at step "
        f"{state.best_step})", run.quiet)
    if s.on_validation is not None:
        s.on_validation(state.step, val_loss)


def _epoch(run: Training) -> float:
    """The fractional epoch reached by the last micro-batch of the step just finished."""
    return round(run.batches.epoch_of(run.state.step * run.settings.grad_accum - 1), 4)


def save_checkpoint(run: Training) -> None:
    """Checkpoint the step just finished, with the log window still open (its losses read back exactly)."""
    state = run.state
    state.window_losses = parallel.summed(run.pending_loss, run.world).tolist()
    state.window_seconds = time.perf_counter() - run.window_start
    parallel.save_checkpoint(checkpoint_path(run.ckpt_dir, state.step), run.holder.unwrap(run.model, run.accelerator),
                             run.optimizer, run.scheduler, state.to_dict(), run.world,
                             run.settings.batch_size * run.world.size, run.holder)


def interrupted(run: Training) -> None:
    """Ctrl-C: checkpoint the last finished step, so ``--resume`` continues from it.

    With several processes nothing is saved (the others may be stopped inside a collective step): the run
    resumes from its last periodic checkpoint.
    """
    if run.world.distributed:
        found = checkpoint.latest(run.ckpt_dir)
        say(f"\ninterrupted at step {run.state.step}; continue with --resume from "
            f"{found.name if found else 'the start'}")
        return
    if run.state.step > 0:
        save_checkpoint(run)
    say(f"\ninterrupted at step {run.state.step}; checkpoint saved, continue with --resume")


def cleanup(run: Training) -> None:
    """Close the progress bar and logs; switch the speed-ups off (evaluation runs the plain model)."""
    run.bar.close()
    run.tracker.close()
    run.holder.close()
    speedups.disable(run.holder.unwrap(run.model, run.accelerator))


def finish(run: Training) -> Result:
    """Load the best validated weights into the model, if any were kept, and sum up the run."""
    model, state = run.holder.unwrap(run.model, run.accelerator), run.state
    distributed.barrier()  # the main process has written the best weights
    if state.best_step is not None and (run.ckpt_dir / BEST_WEIGHTS).exists():
        # The artefact a user keeps is the one that validated best, not the last one.
        checkpoint.load_weights(run.ckpt_dir / BEST_WEIGHTS, model, run.holder)
    seconds = time.perf_counter() - run.started
    return Result(state.step, state.best_val_loss, state.best_step, run.stopped_early,
                  state.tokens, seconds, state.tokens / seconds if seconds else 0.0,
                  parallel.peak_memory_mb(run.world), parallel.memory_kind(), run.holder.name,
                  run.holder.all_weights(model))


def _param_groups(model, weight_decay: float):
    """No weight decay on biases and norms, as in every reference recipe."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
