"""Self-distillation against forgetting (``training.distill``): the base model as its own teacher on general text.

``training.distill: {data: general.jsonl, weight: 1, temperature: 2}`` adds, at every micro-batch of
training, ``weight * T^2 * KL(p_base^T || p_policy^T)`` averaged over the tokens of a batch of general-text
blocks, where ``p^T`` is the next-token distribution at temperature ``T``. This is Learning without Forgetting
(Li & Hoiem, 2016) with Hinton et al.'s ``T^2``, which keeps the gradient's size as ``T`` changes. Unlike
replay, which trains on the general text's *tokens*, distillation keeps the model's whole *distribution* over
the vocabulary on it, the one the model had before training.

The teacher is never a second copy of the weights: it is the same model with its adapter switched off (peft's
``disable_adapter``, in eval mode, without gradient), the trick DPO's reference uses (``preference.py``).
Full fine-tuning has no adapter to switch off, so the recipe refuses it
(:data:`lmtune.recipe_distill.ADAPTER_NEEDED`). Precomputing the base's top-k log-probs per token would
allow it, but only as an approximation of the KL, with memory growing with the data; replay covers full
fine-tuning.

:class:`DistillObjective` wraps the task's objective, so the loop is unchanged:

- The loop divides every micro-batch's ``loss_sum`` by the units (target tokens) of the whole step. The term
  of a micro-batch is therefore its mean KL per token times the micro-batch's own task units: the step then
  gets ``weight * T^2`` times the units-weighted mean of its micro-batches' KL, exactly the KL averaged over
  the step's blocks for one micro-batch per step on one process.
- The value ``loss_sum`` returns is the task's loss alone; only the gradient carries the term. The logged
  ``loss`` then compares with the validation loss (task only) and with runs without distillation, and the KL
  is logged beside it as ``distill_kl``.
- Which blocks micro-batch ``c`` distils on depends only on ``c`` (:class:`BlockOrder`), and a resumed run
  starts at the checkpoint's step (:func:`resumed_step`), so it draws the blocks an uninterrupted run draws.
- ``distill_kl``, on each training line of ``metrics.jsonl`` (and so in every tracker), is the mean KL per
  token over the blocks of the steps since the last line. The objective's state is not in the checkpoint, so
  after a resume from a checkpoint inside a log window (``save_every`` not a multiple of ``log_every``, or a
  Ctrl-C) the first line's mean covers the steps since the resume only; the loss, whose window the loop
  checkpoints, is exact either way.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmtune import distributed
from lmtune.data.encode import IGNORE, Encoded, Encoder, pack_blocks
from lmtune.data.io import iter_rows
from lmtune.errors import UserError
from lmtune.recipe_distill import ADAPTER_NEEDED
from lmtune.run_dir import checkpoint_step
from lmtune.train import checkpoint
from lmtune.train.batches import collate
from lmtune.train.loss import CHUNK, _inputs, target_states
from lmtune.train.objectives import Objective

UNITS = "distill_units"  # batch key: the task units of this process's micro-batch (a float tensor)
SOURCE = "training.distill"


def read_documents(path: str | Path, limit: int | None = None) -> list[str]:
    """The ``text`` of each record of a general-text file (read before the model loads, so a wrong path or
    record stops the run at once).

    Raises:
        UserError: a missing file, or a record without a non-empty ``text`` (file:line), or no record at all.
    """
    documents = []
    for source, record in iter_rows(path):
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{SOURCE}.data needs {{\"text\": \"...\"}} records of general text; this record has "
                            f"{'an empty text' if 'text' in record else sorted(record)}", source=source)
        documents.append(text)
        if limit is not None and len(documents) >= limit:
            break
    if not documents:
        raise UserError("no records of general text; give a file with some", source=f"{SOURCE}.data")
    return documents


def make_blocks(documents: list[str], encoder: Encoder, block_size: int) -> list[Encoded]:
    """Documents as language-modelling blocks of ``block_size`` tokens, as ``training.replay`` makes them
    (BOS/EOS as in continued pre-training, no chat template, every token but a block's first predicted)."""
    return pack_blocks(encoder, [([], text) for text in documents], block_size)


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.random.default_rng([seed, epoch]).permutation(n))


class BlockOrder:
    """The blocks each micro-batch distils on: a fresh seeded shuffle per pass over them, cycling.

    Micro-batch ``c`` takes positions ``c * B * size`` to ``(c + 1) * B * size`` of the endless shuffled
    sequence (``B`` blocks per process, ``size`` processes), and process ``rank`` every ``size``-th of them,
    so nothing but ``c`` decides the draw.
    """

    def __init__(self, n_blocks: int, per_process: int, seed: int):
        self.n, self.per_process, self.seed = n_blocks, per_process, seed

    def indices(self, cursor: int, rank: int = 0, size: int = 1) -> list[int]:
        """Block indices of micro-batch ``cursor`` for process ``rank`` of ``size``."""
        start = cursor * self.per_process * size + rank
        return [self._at(start + i * size) for i in range(self.per_process)]

    def _at(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        return _permutation(self.n, self.seed, epoch)[offset]


def resumed_step(checkpoints: Path | None) -> int:
    """The step a run resumes from: the newest complete checkpoint's, which the loop loads (0 when none)."""
    found = checkpoint.latest(Path(checkpoints)) if checkpoints is not None else None
    return checkpoint_step(found) if found is not None else 0


def token_kl(policy_logits: torch.Tensor, base_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(p_base^T || p_policy^T)`` in nats at each position, from (positions, vocabulary) logits."""
    policy = F.log_softmax(policy_logits.float() / temperature, dim=-1)
    base = F.log_softmax(base_logits.float() / temperature, dim=-1)
    return F.kl_div(policy, base, log_target=True, reduction="none").sum(-1)


def kl_sum(model, batch: dict[str, torch.Tensor], temperature: float, chunk: int = CHUNK) -> torch.Tensor:
    """The KL summed over every position of ``batch`` that predicts a target token, float32, with the gradient
    of the policy (``model`` as it is) and none of the base (``model`` with its adapter switched off)."""
    inner = getattr(model, "module", model)  # the peft model inside a DDP wrapper
    with _adapter_off(inner):
        base = torch.cat(list(_position_logits(inner, batch, chunk)))
    total, at = base.new_zeros((), dtype=torch.float32), 0
    for logits in _position_logits(model, batch, chunk):
        total = total + token_kl(logits, base[at:at + logits.size(0)], temperature).sum()
        at += logits.size(0)
    return total


def _position_logits(model, batch: dict[str, torch.Tensor], chunk: int):
    """The logits at the positions that predict a target, a chunk of positions at a time: as the task loss, the
    transformer body runs once and the output layer only where needed (the model's own forward otherwise)."""
    found = target_states(model, batch)
    if found is None:
        labels = batch["labels"]
        # Prompt-learning adapters put virtual tokens in front of the logits: keep the real positions.
        logits = model(**_inputs(batch)).logits[:, -labels.size(1):][:, :-1]
        yield logits[labels[:, 1:] != IGNORE]
        return
    head, selected, _, _ = found
    for i in range(0, selected.size(0), chunk):
        yield head(selected[i:i + chunk])


@contextlib.contextmanager
def _adapter_off(model):
    """``model`` as it was before training: adapter switched off, eval mode (no dropout), no gradient."""
    if not hasattr(model, "disable_adapter"):
        raise UserError(ADAPTER_NEEDED.format(method="this model"), source=SOURCE)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.disable_adapter():
            yield
    finally:
        model.train(was_training)


class DistillObjective(Objective):
    """The task's objective, plus the distillation term in the gradient of every training micro-batch.

    Args:
        task: the task's own objective (batching, loss, units, lengths are its own).
        blocks: general-text blocks (:func:`make_blocks`).
        pad_id: padding token of the blocks' batches.
        weight: multiplies ``T^2 * KL``.
        temperature: ``T``, applied to both distributions.
        batch_size: blocks per micro-batch on each process.
        grad_accum: micro-batches per optimizer step (where a resumed run's first micro-batch is in the order).
        seed: the block order's seed.
        start_step: the step training starts after (:func:`resumed_step` when resuming).
    """

    def __init__(self, task: Objective, blocks: list[Encoded], pad_id: int, *, weight: float, temperature: float,
                 batch_size: int, grad_accum: int = 1, seed: int = 0, start_step: int = 0):
        if not blocks:
            raise UserError("the distill data produced no blocks; give a file with some general text",
                            source=f"{SOURCE}.data")
        self.task, self.blocks, self.pad_id = task, blocks, pad_id
        self.weight, self.temperature = weight, temperature
        self.order = BlockOrder(len(blocks), batch_size, seed)
        self.cursor = start_step * grad_accum  # training micro-batches so far: the next one distils on this draw
        self.window: list[tuple[torch.Tensor, int]] = []  # (KL sum, tokens) per micro-batch since the last line

    def collate(self, examples: list, pad_id: int) -> dict[str, torch.Tensor]:
        batch = self.task.collate(examples, pad_id)
        batch[UNITS] = torch.tensor(float(sum(self.task.units(e) for e in examples)))
        return batch

    def loss_sum(self, model, batch):
        task = self.task.loss_sum(model, {k: v for k, v in batch.items() if k != UNITS})
        if UNITS not in batch or not torch.is_grad_enabled():
            return task  # validation: the task's loss alone
        kl, tokens = self._distilled(model, batch[UNITS].device)
        term = self.weight * self.temperature ** 2 * kl / tokens * batch[UNITS]
        return task + (term - term.detach())  # the task's loss as the value, both in the gradient

    def _distilled(self, model, device) -> tuple[torch.Tensor, int]:
        """The KL summed over the next distill batch's tokens, and how many tokens that is."""
        world = distributed.world()
        batch = collate([self.blocks[i] for i in self.order.indices(self.cursor, world.rank, world.size)],
                        self.pad_id)
        self.cursor += 1
        tokens = max(int((batch["labels"][:, 1:] != IGNORE).sum()), 1)
        kl = kl_sum(model, {k: v.to(device) for k, v in batch.items()}, self.temperature)
        self.window.append((kl.detach(), tokens))
        return kl, tokens

    def units(self, example) -> int:
        return self.task.units(example)

    def length(self, example) -> int:
        return self.task.length(example)

    def window_metrics(self, world) -> dict[str, float]:
        """The task objective's own, and ``distill_kl``: the mean KL per token over every process's distill
        blocks since the last log line (one sum over the processes per line)."""
        if not self.window:
            return self.task.window_metrics(world)
        kl = torch.stack([k for k, _ in self.window]).sum()
        both = torch.stack([kl, kl.new_tensor(float(sum(t for _, t in self.window)))])
        if world.distributed:
            import torch.distributed as dist

            dist.all_reduce(both)
        self.window = []
        return {**self.task.window_metrics(world), "distill_kl": (both[0] / both[1]).item()}
