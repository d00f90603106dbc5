"""Deterministic micro-batches: the order depends only on the seed, so a resumed run sees the same data."""

from __future__ import annotations

import math

import torch

from lmtune.data.encode import IGNORE, Encoded


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into input_ids / attention_mask / labels tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(examples: list[Encoded], pad_id: int, capacity: int) -> dict[str, torch.Tensor]:
    """Pack examples into as few rows of at most ``capacity`` tokens as first-fit decreasing allows.

    Position ids restart at 0 for every example, and no attention mask is passed: transformers then
    confines attention to each example (a block-diagonal causal mask). The first token of each
    example gets no label, since unpacked it would have nothing before it to be predicted from.
    """
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for e in sorted(examples, key=lambda e: -len(e.input_ids)):
        n = len(e.input_ids)
        slot = next((i for i, r in enumerate(room) if r >= n), None)
        if slot is None:
            rows.append([e])
            room.append(capacity - n)
        else:
            rows[slot].append(e)
            room[slot] -= n
    width = max(capacity - r for r in room)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[i, at:at + n] = torch.tensor(e.input_ids)
            labels[i, at + 1:at + n] = torch.tensor(e.labels[1:])
            positions[i, at:at + n] = torch.arange(n)
            at += n
        positions[i, at:] = torch.arange(width - at)  # padding is a sequence of its own, with no labels
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


class MicroBatches:
    """Micro-batch ``m`` of a run, for any ``m``: epochs are reshuffled with ``seed + epoch``.

    With ``lengths`` given, examples of similar length are grouped (as ``group_by_length`` in
    transformers): each shuffled epoch is cut into chunks of ``GROUP`` optimizer steps, sorted by
    length inside a chunk, and the steps are shuffled again. Padding waste falls from ~35% to a few
    percent on real data. Grouping works on whole optimizer steps, so a step sees the same examples
    whatever its split into micro-batches (accumulation stays equal to the larger batch).

    Args:
        n_examples: size of the training set.
        batch_size: examples per micro-batch.
        seed: the run seed.
        grad_accum: micro-batches per optimizer step.
        lengths: token count of each example, to group by length; None keeps plain shuffling.
    """

    GROUP = 50

    def __init__(self, n_examples: int, batch_size: int, seed: int, grad_accum: int = 1,
                 lengths: list[int] | None = None):
        self.n = n_examples
        self.batch_size = batch_size
        self.step_size = batch_size * grad_accum
        self.seed = seed
        self.lengths = lengths
        self.per_epoch = math.ceil(n_examples / batch_size)
        self._orders: dict[int, list[int]] = {}

    def indices(self, m: int) -> list[int]:
        """Example indices of the ``m``-th micro-batch since the start of training."""
        epoch, within = divmod(m, self.per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: self._order(epoch)}
        order = self._orders[epoch]
        return order[within * self.batch_size:(within + 1) * self.batch_size]

    def _order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        if self.lengths is None:
            return order
        chunk = self.step_size * self.GROUP
        steps: list[list[int]] = []
        for start in range(0, self.n, chunk):
            part = sorted(order[start:start + chunk], key=lambda i: -self.lengths[i])
            steps += [part[i:i + self.step_size] for i in range(0, len(part), self.step_size)]
        # A short step (the epoch's remainder) stays last, so every other step is full.
        full = [s for s in steps if len(s) == self.step_size]
        rest = [s for s in steps if len(s) != self.step_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=gen).tolist()]
        return [i for s in shuffled + rest for i in s]

    def epoch_of(self, m: int) -> float:
        """Fractional epoch reached after micro-batch ``m``."""
        return (m + 1) / self.per_epoch


def total_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float,
                max_steps: int | None) -> int:
    """Optimizer steps a run takes: ``max_steps``, or enough for ``epochs`` passes."""
    if max_steps:
        return max_steps
    per_epoch = math.ceil(n_examples / batch_size) / grad_accum
    return max(1, math.ceil(per_epoch * epochs))
