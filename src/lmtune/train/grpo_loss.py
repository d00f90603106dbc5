"""GRPO's loss as functions of rewards and per-token log-probs (no sampling, no model state): what
:mod:`lmtune.train.grpo` computes each micro-batch, and what the tests check against plain torch.

TRL's ``GRPOTrainer`` is the reference for every formula and name:

- advantages (:func:`group_advantages`): ``A = r - mean(group)``, divided by ``std(group) + 1e-4`` when
  ``scale_rewards`` (torch's ``std``, with Bessel's correction, as TRL's); one advantage per completion, the same
  on each of its tokens;
- per token (:func:`per_token_terms`): ``ratio = exp(logp - logp_old)``, the clipped surrogate
  ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``, plus ``beta`` times the k3 estimate of
  ``KL(policy || reference)``: ``exp(ref - logp) - (ref - logp) - 1`` (Schulman's unbiased, always >= 0);
- the normalisation (:func:`normalised`), ``loss_type``: ``grpo`` averages each completion's tokens, then the
  completions (a long completion weighs as much as a short one); ``bnpo`` averages over all tokens of the
  micro-batch; ``dr_grpo`` sums the tokens and divides by completions x ``max_completion_length``.

The loop divides every ``loss_sum`` by the units (prompts) of the whole step, so :func:`normalised` returns the
micro-batch's TRL loss times its prompts: one micro-batch per step gives TRL's loss exactly, and accumulation
weights micro-batches by their prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmtune.data.encode import IGNORE
from lmtune.train.loss import CHUNK, _inputs, target_states

#: Added to a group's reward std before dividing (TRL's value): a constant group's advantages stay 0.
STD_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group: int, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Each completion's advantage over its group, and each group's reward std.

    Args:
        rewards: (prompts x group,) rewards, the completions of one prompt next to each other.
        group: completions per prompt (``num_generations``).
        scale: divide by the group's std (+1e-4), TRL's ``scale_rewards``.

    Returns:
        ``(advantages (prompts x group,), std (prompts,))``.
    """
    grouped = rewards.float().view(-1, group)
    std = grouped.std(dim=1)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (std[:, None] + STD_EPS)
    return advantages.reshape(-1), std


def completion_ids(tokens: list[int], eos: int) -> list[int]:
    """A sampled row up to and including its first EOS (what follows it, padding or more text, is never trained
    on); the whole row when it has none (it ran to ``max_completion_length``)."""
    return tokens[:tokens.index(eos) + 1] if eos in tokens else list(tokens)


def token_logps(model, batch: dict[str, torch.Tensor], temperature: float = 1.0, chunk: int = CHUNK) -> torch.Tensor:
    """Log-probability of each target token under ``model`` at ``temperature``: (rows, positions - 1), float32, 0
    where ``labels[:, 1:]`` is IGNORE. As the task loss, the body runs once and the output layer only at the
    positions that predict a target (the model's own logits for the models where that split is not known)."""
    targets = batch["labels"][:, 1:]
    where = targets != IGNORE
    found = target_states(model, batch)
    if found is None:
        logits = model(**_inputs(batch)).logits[:, -batch["labels"].size(1):-1]
        flat = -F.cross_entropy(logits[where].float() / temperature, targets[where], reduction="none")
    else:
        head, selected, wanted, where = found
        parts = [-F.cross_entropy(head(selected[i:i + chunk]).float() / temperature, wanted[i:i + chunk],
                                  reduction="none") for i in range(0, wanted.numel(), chunk)]
        flat = torch.cat(parts) if parts else selected.new_zeros(0, dtype=torch.float32)
    return torch.zeros(where.shape, dtype=torch.float32, device=flat.device).masked_scatter(where, flat)


@dataclass
class Terms:
    """Per-token parts of the loss, each (rows, positions - 1)."""

    loss: torch.Tensor  # clipped surrogate + beta * KL
    kl: torch.Tensor | None  # k3 KL to the reference (None without one)
    clipped: torch.Tensor  # the clipped term is the one min() took: no gradient from the surrogate there


def per_token_terms(logps: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, advantages: torch.Tensor,
                    beta: float, epsilon: float) -> Terms:
    """The clipped surrogate (and KL) at every token; ``advantages`` is one value per row.

    ``clipped`` marks TRL's clipped region: the ratio is below ``1 - eps`` with a negative advantage, or above
    ``1 + eps`` with a positive one.
    """
    ratio = torch.exp(logps - old)
    adv = advantages[:, None].to(logps.dtype)
    loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    kl = None
    if ref is not None:
        delta = ref - logps
        kl = torch.exp(delta) - delta - 1
        if beta:
            loss = loss + beta * kl
    return Terms(loss, kl, clipped)


def sequence_means(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean of ``values`` over its masked tokens (0 for a row without any)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def normalised(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, group: int,
               max_completion_length: int) -> torch.Tensor:
    """The micro-batch's loss as ``loss_type`` averages it, times its prompts (rows / ``group``)."""
    prompts = mask.size(0) / group
    if loss_type == "grpo":
        return sequence_means(per_token, mask).sum() / group
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1) * prompts
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (group * max_completion_length)
    raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose grpo, bnpo or dr_grpo")
