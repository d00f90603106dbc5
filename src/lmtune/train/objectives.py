"""What one training example is and how its loss is summed, per task family.

The loop (``loop.py``) is the same for every task: it asks the objective to batch examples, to
sum their loss, and how many units (target tokens, examples, pairs) that sum is averaged over,
so gradient accumulation always equals the larger batch. ``evaluate_loss`` averages any objective's
loss over a set of examples (validation during training, perplexity in evaluation).

- ``TokenObjective``: next-token cross-entropy on target tokens (classification by label
  scoring, generation, chat, continued pre-training).
- ``HeadObjective``: a sequence-classification head, cross-entropy over classes or, with one
  output, mean squared error (regression).
- ``PreferenceObjective`` (``preference.py``): DPO on chosen/rejected pairs.
- ``GRPOObjective`` (``grpo.py``): GRPO on prompts, rewarded by a grader.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmtune import distributed
from lmtune.data.encode import Encoded
from lmtune.train.batches import collate, collate_packed
from lmtune.train.loss import target_loss_sum

#: True while this process runs a stand-in batch: one it has no examples for (a short last micro-batch, the last
#: round of a shared validation) and whose loss is not counted. A statistic an objective sums over the processes
#: (KTO's z0) leaves it out.
STAND_IN = contextvars.ContextVar("lmtune_stand_in", default=False)


@contextlib.contextmanager
def standing_in(flag: bool):
    """Run the block with :data:`STAND_IN` set to ``flag``."""
    token = STAND_IN.set(flag)
    try:
        yield
    finally:
        STAND_IN.reset(token)


class Objective:
    """Interface every objective implements."""

    #: Whether validation may share the batches out over the processes (:func:`evaluate_loss`). False for an
    #: objective whose validation generates (GRPO): its forwards depend on the answers, so the processes, whose
    #: sharded models gather weights in step, must all answer the same prompts.
    shares_validation = True

    def collate(self, examples: list, pad_id: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss_sum(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's units."""
        raise NotImplementedError

    def units(self, example) -> int:
        """How many units the loss of ``example`` is a sum over."""
        raise NotImplementedError

    def length(self, example) -> int:
        """Tokens in ``example`` (length grouping, tokens/s)."""
        raise NotImplementedError

    def window_metrics(self, world) -> dict[str, float]:
        """Extra values for the training log line: means over the steps since the last line, then reset.

        The loop asks on every process at every log line (an implementation may sum over the processes);
        an objective that measures nothing but its loss returns ``{}``.
        """
        return {}

    def validation_metrics(self) -> dict[str, float]:
        """Extra values for the validation log line, measured by the ``loss_sum`` calls of that validation (GRPO's
        reward); ``{}`` for an objective whose validation loss says it all."""
        return {}


class TokenObjective(Objective):
    """Summed next-token loss over target tokens; ``pack_capacity`` packs rows instead of padding."""

    def __init__(self, pack_capacity: int | None = None):
        self.pack_capacity = pack_capacity

    def collate(self, examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
        if self.pack_capacity:
            return collate_packed(examples, pad_id, self.pack_capacity)
        return collate(examples, pad_id)

    def loss_sum(self, model, batch):
        return target_loss_sum(model, batch)

    def units(self, example: Encoded) -> int:
        return example.n_targets

    def length(self, example: Encoded) -> int:
        return len(example.input_ids)


@dataclass
class Labelled:
    """A tokenized input with a class index (classification) or a number (regression)."""

    input_ids: list[int]
    target: int | float
    truncated: bool = False


class HeadObjective(Objective):
    """Cross-entropy over the head's classes, or MSE when the head has one output."""

    def __init__(self, regression: bool = False):
        self.regression = regression

    def collate(self, examples: list[Labelled], pad_id: int) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[i, :len(e.input_ids)] = 1
        dtype = torch.float32 if self.regression else torch.long
        return {"input_ids": ids, "attention_mask": mask,
                "targets": torch.tensor([e.target for e in examples], dtype=dtype)}

    def loss_sum(self, model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), batch["targets"], reduction="sum")
        return F.cross_entropy(logits, batch["targets"], reduction="sum")

    def units(self, example: Labelled) -> int:
        return 1

    def length(self, example: Labelled) -> int:
        return len(example.input_ids)


@torch.no_grad()
def evaluate_loss(model, examples: list, batch_size: int, pad_id: int, device, accelerator=None,
                  objective: Objective | None = None, world: distributed.World | None = None) -> float:
    """Mean loss per unit (target token, example, pair) over ``examples``; train/eval mode is restored.

    With several processes (``world``) each one takes every N-th batch and the sums are added up over them, so
    each reads 1/N of the examples. Every process runs the same number of forwards (one left without a batch
    runs the first one again, not counted): DDP syncs buffers and sharded models gather weights in each.
    """
    objective, world = objective or TokenObjective(), world or distributed.World()
    batches = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    shared = world.distributed and objective.shares_validation
    mine = shared_batches(batches, world) if shared else [(chunk, True) for chunk in batches]
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for chunk, counted in mine:
        batch = {k: v.to(device) for k, v in objective.collate(chunk, pad_id).items()}
        with standing_in(not counted), accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            loss_sum = objective.loss_sum(model, batch).float()
        if counted:
            total += loss_sum
            count += sum(objective.units(e) for e in chunk)
    model.train(was_training)
    if shared:
        import torch.distributed as dist

        sums = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=device)])
        dist.all_reduce(sums)
        return (sums[0] / max(sums[1].item(), 1)).item()
    return (total / max(count, 1)).item()


def shared_batches(batches: list[list], world: distributed.World) -> list[tuple[list, bool]]:
    """This process's batches (every N-th, from its rank on), as many for each process: ``(batch, counted)``."""
    rounds = -(-len(batches) // world.size)
    picked = [r * world.size + world.rank for r in range(rounds)]
    return [(batches[i], True) if i < len(batches) else (batches[0], False) for i in picked]
