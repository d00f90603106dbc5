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


class MicroBatches:
    """Micro-batch ``m`` of a run, for any ``m``: epochs are reshuffled with ``seed + epoch``.

    Args:
        n_examples: size of the training set.
        batch_size: examples per micro-batch.
        seed: the run seed.
    """

    def __init__(self, n_examples: int, batch_size: int, seed: int):
        self.n = n_examples
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = math.ceil(n_examples / batch_size)
        self._orders: dict[int, list[int]] = {}

    def indices(self, m: int) -> list[int]:
        """Example indices of the ``m``-th micro-batch since the start of training."""
        epoch, within = divmod(m, self.per_epoch)
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._orders = {epoch: torch.randperm(self.n, generator=gen).tolist()}
        order = self._orders[epoch]
        return order[within * self.batch_size:(within + 1) * self.batch_size]

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
