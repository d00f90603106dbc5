"""KTO: preference training on unpaired records, each a completion judged desirable or not.

Kahneman-Tversky Optimization (Ethayarajh et al., 2024) needs no pairs: a ``{"prompt", "completion",
"label": true|false}`` record says whether one completion is desirable. Its loss compares each record's
implicit reward ``log pi(y|x) - log pi_ref(y|x)`` with a reference point z0, the KL divergence of the
policy from the reference, estimated as TRL's ``KTOTrainer`` does: on *mismatched* pairs, each prompt with
the completion of the record before it (wrapping round), so z0 measures how far the policy has drifted in
general, not on the records it is pushed on. Those mismatched pairs are fixed when the split is encoded (TRL
builds them once, in its dataset), so their reference log-probs can be precomputed like the records' own.

z0 is the micro-batch's mean over its records' mismatched pairs, detached and clamped at 0. With several
processes each holds a shard of the micro-batch and z0 is the mean over all of them (summed and counted over the
processes), so N processes x batch b train as one process x batch N*b; TRL averages the processes' means.
Log-probs are summed over completion tokens.
The reference is DPO's (:mod:`lmtune.train.preference`): the adapter-disabled model, or for full fine-tuning
log-probs precomputed before training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtune import distributed
from lmtune.data.encode import Encoded, Encoder
from lmtune.train.batches import collate
from lmtune.train.objectives import STAND_IN, Objective
from lmtune.train.preference import REFERENCE_KEY, _device, _eval_mode, _unwrap, reference_logps, sequence_logps
from lmtune.train.preference_losses import LossSpec, WindowMeans, kto_loss, kto_reference_point

KL_PREFIX = "kl_"  # batch keys of the mismatched pairs: kl_input_ids, kl_attention_mask, kl_labels, ...
DESIRABLE_KEY = "desirable"
_LOGGED = ("kl", "rewards/chosen", "rewards/rejected")
REFERENCE_FIELDS = ("ref", "ref_kl")  # what precompute_reference fills in on each record


@dataclass
class Unpaired:
    """One tokenized KTO record.

    ``sequence`` is the prompt and its completion (prompt masked, as supervised training sees it);
    ``kl_sequence`` the same prompt with another record's completion, for the reference point.
    ``ref`` / ``ref_kl`` are the reference model's summed completion log-probs of each, when precomputed.
    """

    sequence: Encoded
    kl_sequence: Encoded
    desirable: bool
    ref: float | None = None
    ref_kl: float | None = None

    @property
    def truncated(self) -> bool:
        return self.sequence.truncated


def encode_unpaired(encoder: Encoder, records: list[tuple[list[dict[str, str]], str, bool]]) -> list[Unpaired]:
    """Tokenize ``(messages, completion, desirable)`` records; record i's mismatched pair takes record i-1's
    completion (TRL's rotation by one), encoded after record i's own messages with the same truncation."""
    out = []
    for i, (messages, completion, desirable) in enumerate(records):
        other = records[i - 1][1]  # i = 0 wraps round to the last record
        out.append(Unpaired(encoder.encode(messages, completion), encoder.encode(messages, other), desirable))
    return out


def _part(batch: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The rows of one kind (the records' own, ``prefix=""``, or the mismatched pairs) as a plain batch."""
    keys = ("input_ids", "attention_mask", "labels", REFERENCE_KEY)
    return {k: batch[prefix + k] for k in keys if prefix + k in batch}


class UnpairedObjective(Objective):
    """KTO's loss, summed over records; one unit per record.

    Args:
        loss: the ``kto`` loss with its beta and desirable / undesirable weights.
    """

    def __init__(self, loss: LossSpec):
        self.loss = loss
        self.window = WindowMeans(_LOGGED)

    def collate(self, examples: list[Unpaired], pad_id: int) -> dict[str, torch.Tensor]:
        """The records' rows and, under ``kl_`` keys, their mismatched pairs' rows, in the same order;
        precomputed reference log-probs when every record has them."""
        batch = collate([e.sequence for e in examples], pad_id)
        batch.update({KL_PREFIX + k: v for k, v in collate([e.kl_sequence for e in examples], pad_id).items()})
        batch[DESIRABLE_KEY] = torch.tensor([e.desirable for e in examples], dtype=torch.bool)
        if all(e.ref is not None and e.ref_kl is not None for e in examples):
            batch[REFERENCE_KEY] = torch.tensor([e.ref for e in examples], dtype=torch.float32)
            batch[KL_PREFIX + REFERENCE_KEY] = torch.tensor([e.ref_kl for e in examples], dtype=torch.float32)
        return batch

    def loss_sum(self, model, batch):
        own, mismatched = _part(batch, ""), _part(batch, KL_PREFIX)
        policy = sequence_logps(model, own)
        with torch.no_grad():  # z0 is not backpropagated: its rows need no graph (nor DDP's bookkeeping)
            policy_kl = sequence_logps(_unwrap(model), mismatched)
        reference = reference_logps(model, own).to(policy.device)
        z0 = _reference_point(policy_kl, reference_logps(model, mismatched).to(policy.device))
        desirable = batch[DESIRABLE_KEY].to(policy.device)
        rewards = self.loss.beta * (policy - reference).detach()
        self.window.add("kl", z0)
        self.window.add("rewards/chosen", rewards[desirable])
        self.window.add("rewards/rejected", rewards[~desirable])
        return kto_loss(policy, reference, desirable, z0, self.loss).sum()

    def units(self, example: Unpaired) -> int:
        return 1

    def length(self, example: Unpaired) -> int:
        return len(example.sequence.input_ids) + len(example.kl_sequence.input_ids)

    def window_metrics(self, world) -> dict[str, float]:
        return self.window.read(world)


def _reference_point(policy_kl: torch.Tensor, reference_kl: torch.Tensor) -> torch.Tensor:
    """z0 over the micro-batch of every process, each holding a shard of it (a stand-in batch adds nothing)."""
    if not distributed.world().distributed:
        return kto_reference_point(policy_kl, reference_kl)
    import torch.distributed as dist

    ratios = (policy_kl - reference_kl).detach().double()
    counted = 0.0 if STAND_IN.get() else 1.0
    sums = torch.stack([ratios.sum() * counted, ratios.new_tensor(ratios.numel() * counted)])
    dist.all_reduce(sums)
    return (sums[0] / sums[1].clamp(min=1)).to(policy_kl.dtype).clamp(min=0)


def _logps(model, examples: list[Unpaired], batch_size: int, pad_id: int) -> torch.Tensor:
    """(4, records): the policy's and the reference's log-probs of the records and of their mismatched pairs."""
    device = _device(model)
    objective = UnpairedObjective(LossSpec("kto"))
    out = []
    with _eval_mode(model):
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in objective.collate(examples[i:i + batch_size], pad_id).items()}
            own, mismatched = _part(batch, ""), _part(batch, KL_PREFIX)
            out.append(torch.stack([sequence_logps(model, own), reference_logps(model, own).to(device),
                                    sequence_logps(model, mismatched), reference_logps(model, mismatched).to(device)]))
    return torch.cat(out, dim=1)


@torch.no_grad()
def precompute_reference(model, examples: list[Unpaired], batch_size: int, pad_id: int) -> list[Unpaired]:
    """Fill each record's ``ref`` / ``ref_kl`` with ``model`` as it is now (full fine-tuning: before training)."""
    device = _device(model)
    with _eval_mode(model):
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            batch = {k: v.to(device) for k, v in UnpairedObjective(LossSpec("kto")).collate(chunk, pad_id).items()}
            own = sequence_logps(model, _part(batch, "")).tolist()
            mismatched = sequence_logps(model, _part(batch, KL_PREFIX)).tolist()
            for example, ref, ref_kl in zip(chunk, own, mismatched):
                example.ref, example.ref_kl = ref, ref_kl
    return examples


@torch.no_grad()
def kto_metrics(model, examples: list[Unpaired], loss: LossSpec, batch_size: int, pad_id: int) -> dict[str, float]:
    """How ``model`` judges held-out records, with TRL's KTO metrics and where each kind falls.

    z0 is estimated once over the whole split (its mismatched pairs), so the loss is that of one large batch.

    Returns:
        ``reward_accuracy``: share of records whose implicit reward ``beta * (policy - reference)`` has their
        label's sign (above the reference for a desirable completion, below it for an undesirable one);
        ``desirable_above_reference`` / ``undesirable_below_reference``: that share for each kind (None when
        the split has none of it); ``chosen_reward`` / ``rejected_reward``: mean reward of the desirable and
        undesirable records (TRL's ``rewards/chosen`` and ``rewards/rejected``), ``reward_margin`` their
        difference; ``kl``: z0; ``kto_loss``: the mean loss; ``n``, ``n_desirable``, ``n_undesirable``.
    """
    if not examples:
        return {"n": 0}
    policy, reference, policy_kl, reference_kl = _logps(model, examples, batch_size, pad_id)
    desirable = torch.tensor([e.desirable for e in examples], device=policy.device)
    z0 = kto_reference_point(policy_kl, reference_kl)
    rewards = loss.beta * (policy - reference)
    good, bad = rewards[desirable], rewards[~desirable]
    above = (good > 0).float().mean().item() if good.numel() else None
    below = (bad < 0).float().mean().item() if bad.numel() else None
    chosen = good.mean().item() if good.numel() else None
    rejected = bad.mean().item() if bad.numel() else None
    right = torch.where(desirable, rewards > 0, rewards < 0)
    return {"reward_accuracy": right.float().mean().item(),
            "desirable_above_reference": above, "undesirable_below_reference": below,
            "chosen_reward": chosen, "rejected_reward": rejected,
            "reward_margin": chosen - rejected if chosen is not None and rejected is not None else None,
            "kl": z0.item(), loss.loss_key: kto_loss(policy, reference, desirable, z0, loss).mean().item(),
            "n": len(examples), "n_desirable": int(good.numel()), "n_undesirable": int(bad.numel())}
