"""Preference training on (prompt, chosen, rejected) pairs: DPO, IPO, SimPO and ORPO.

Direct Preference Optimization (Rafailov et al., 2023), the default, raises the policy's log-probability
of the chosen completion relative to the rejected one, measured against a frozen reference model:

    loss = -logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))

where each term is a completion's summed token log-probability. This is TRL's ``DPOTrainer`` with
``loss_type="sigmoid"``: completions summed (not averaged), the batch laid out as all chosen rows
then all rejected rows, rewards ``beta * (policy - reference)``. The other pair losses
(``training.preference_loss``) are in :mod:`lmtune.train.preference_losses`; SimPO and ORPO need no
reference, so for them neither the reference pass nor the adapter-disabled forward runs. KTO's
unpaired records are :mod:`lmtune.train.kto`'s.

The reference is never a second copy of the weights: with an adapter (peft) it is the same model
with the adapter disabled; for full fine-tuning its log-probs are computed once before training by
``precompute_reference`` and travel with each pair.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmtune.data.encode import IGNORE, Encoded, Encoder
from lmtune.errors import UserError
from lmtune.train.batches import collate
from lmtune.train.loss import CHUNK, _inputs, target_states
from lmtune.train.objectives import Objective
from lmtune.train.preference_losses import LossSpec, WindowMeans, completion_lengths, dpo_loss, pair_terms

REFERENCE_KEY = "reference_logps"  # batch key: precomputed reference log-probs, chosen rows then rejected
REFERENCE_FIELDS = ("ref_chosen", "ref_rejected")  # what precompute_reference fills in on each pair


@dataclass
class Pair:
    """One tokenized preference pair.

    ``chosen_ids`` / ``rejected_ids`` are completion tokens only (ending with EOS unless truncated);
    both follow the same ``prompt_ids``. ``ref_chosen`` / ``ref_rejected`` are the reference model's
    summed completion log-probs, when precomputed.
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False
    ref_chosen: float | None = None
    ref_rejected: float | None = None

    def sequences(self) -> tuple[Encoded, Encoded]:
        """The chosen and rejected sequences, prompt masked, as supervised training sees them."""
        mask = [IGNORE] * len(self.prompt_ids)
        return (Encoded(self.prompt_ids + self.chosen_ids, mask + self.chosen_ids, self.truncated),
                Encoded(self.prompt_ids + self.rejected_ids, mask + self.rejected_ids, self.truncated))


def encode_pair(encoder: Encoder, messages: list[dict[str, str]], chosen: str, rejected: str) -> Pair:
    """Tokenize a pair exactly as supervised examples are (chat template, EOS, truncation).

    Both completions are encoded after the same messages. When truncation shortened the prompt
    of one more than the other (the longer completion leaves it less room), the shorter prompt
    is used for both: the other sequence then still fits ``max_length``.
    """
    c = encoder.encode(messages, chosen)
    r = encoder.encode(messages, rejected)
    c_prompt, c_target = _split(c)
    r_prompt, r_target = _split(r)
    prompt = c_prompt if len(c_prompt) <= len(r_prompt) else r_prompt
    return Pair(prompt, c_target, r_target, truncated=c.truncated or r.truncated)


def _split(example: Encoded) -> tuple[list[int], list[int]]:
    """(prompt, completion) of an encoded example: the completion starts at its first target."""
    start = next((i for i, t in enumerate(example.labels) if t != IGNORE), len(example.labels))
    return example.input_ids[:start], example.input_ids[start:]


def sequence_logps(model, batch: dict[str, torch.Tensor], chunk: int = CHUNK) -> torch.Tensor:
    """Summed log-probability of each row's target tokens, shape (rows,), float32.

    As ``loss.target_loss_sum``: the transformer body runs once and the output layer only at
    positions that predict a target, in chunks, so the (tokens x vocabulary) logits never exist.
    """
    found = target_states(model, batch)
    if found is None:
        return _full_logits_logps(model, batch)
    head, selected, wanted, where = found
    per_token = [-F.cross_entropy(head(selected[i:i + chunk]).float(), wanted[i:i + chunk], reduction="none")
                 for i in range(0, wanted.numel(), chunk)]
    return _per_row(where, torch.cat(per_token) if per_token else selected.new_zeros(0, dtype=torch.float32))


def _full_logits_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same sums from the model's full logits (any causal LM, prompt-learning adapters too)."""
    labels = batch["labels"]
    # Prompt-learning adapters prepend virtual tokens to the logits: keep the real positions.
    logits = model(**_inputs(batch)).logits[:, -labels.size(1):-1]
    targets = labels[:, 1:]
    where = targets != IGNORE
    per_token = -F.cross_entropy(logits[where].float(), targets[where], reduction="none")
    return _per_row(where, per_token)


def _per_row(where: torch.Tensor, per_token: torch.Tensor) -> torch.Tensor:
    """Sum per-position values (in ``where``'s row-major order) into one value per row."""
    rows = where.nonzero()[:, 0]
    return per_token.new_zeros(where.size(0)).index_add(0, rows, per_token)


def reference_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference model's summed completion log-probs for each row of ``batch`` (no gradient).

    A peft model is run with its adapter disabled, in eval mode (no dropout: the reference is a
    fixed function); otherwise the precomputed values collated into the batch are used.
    """
    inner = _unwrap(model)
    if hasattr(inner, "disable_adapter"):
        with torch.no_grad(), inner.disable_adapter(), _eval_mode(inner):
            return sequence_logps(inner, batch)
    if REFERENCE_KEY not in batch:
        raise UserError("preference training without an adapter needs the reference model's log-probs: "
                        "call precompute_reference(model, pairs, ...) on every split before training, "
                        "or train an adapter (e.g. method.name: lora)", source="method.name")
    return batch[REFERENCE_KEY].float()


def _unwrap(model):
    """The model inside a DDP / FSDP wrapper (whose ``module`` holds the peft model)."""
    return getattr(model, "module", model)


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


#: What the training log line gets per loss, TRL's names (``rewards/accuracies``: chosen reward above rejected).
_LOGGED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


class PreferenceObjective(Objective):
    """A pair loss (DPO's sigmoid unless ``loss`` says otherwise), summed over pairs; one unit per pair.

    Args:
        beta: DPO's strength of the pull towards the reference (TRL's default 0.1); larger values keep
            the policy closer to it. Read when ``loss`` is not given.
        loss: the loss and its parameters (``training.preference_loss``).
    """

    def __init__(self, beta: float = 0.1, loss: LossSpec | None = None):
        loss = loss or LossSpec(beta=beta)
        if not loss.beta > 0:
            raise UserError(f"beta must be positive, got {loss.beta}", source="training.dpo_beta")
        if loss.unpaired:
            raise UserError("kto learns from unpaired records, not pairs", source="training.preference_loss")
        self.loss, self.beta = loss, loss.beta
        extra = ("nll_loss", "log_odds_chosen") if loss.type == "orpo" else ()
        self.window = WindowMeans(_LOGGED + extra)

    def collate(self, examples: list[Pair], pad_id: int) -> dict[str, torch.Tensor]:
        """One padded batch: the chosen rows, then the rejected rows, in the same pair order.

        Precomputed reference log-probs are included (key ``reference_logps``) when every pair has them.
        """
        chosen, rejected = zip(*(p.sequences() for p in examples))
        batch = collate(list(chosen) + list(rejected), pad_id)
        refs = [p.ref_chosen for p in examples] + [p.ref_rejected for p in examples]
        if all(r is not None for r in refs):
            batch[REFERENCE_KEY] = torch.tensor(refs, dtype=torch.float32)
        return batch

    def loss_sum(self, model, batch):
        policy = sequence_logps(model, batch)
        reference = reference_logps(model, batch).to(policy.device) if self.loss.needs_reference else None
        terms = pair_terms(self.loss, policy, reference, completion_lengths(batch).to(policy.device))
        margins = terms.chosen_rewards - terms.rejected_rewards
        for name, values in (("rewards/chosen", terms.chosen_rewards), ("rewards/rejected", terms.rejected_rewards),
                             ("rewards/margins", margins), ("rewards/accuracies", (margins > 0).float()),
                             *terms.extra.items()):
            self.window.add(name, values)
        return terms.losses.sum()

    def window_metrics(self, world) -> dict[str, float]:
        return self.window.read(world)

    def units(self, example: Pair) -> int:
        return 1

    def length(self, example: Pair) -> int:
        return 2 * len(example.prompt_ids) + len(example.chosen_ids) + len(example.rejected_ids)


def dpo_losses(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair DPO loss from (2 * pairs,) log-probs laid out chosen rows then rejected rows."""
    return dpo_loss(*policy.chunk(2), *reference.chunk(2), beta)


@torch.no_grad()
def precompute_reference(model, pairs: list[Pair], batch_size: int, pad_id: int) -> list[Pair]:
    """Fill each pair's ``ref_chosen`` / ``ref_rejected`` with ``model`` as it is now.

    For full fine-tuning, call it before training: the initial model is the reference, and its
    log-probs are all DPO needs of it, so no second copy of the weights is kept. Returns ``pairs``
    (filled in place).
    """
    device = _device(model)
    with _eval_mode(model):
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            batch = {k: v.to(device) for k, v in PreferenceObjective().collate(chunk, pad_id).items()}
            logps = sequence_logps(model, batch).tolist()
            for pair, c, r in zip(chunk, logps[:len(chunk)], logps[len(chunk):]):
                pair.ref_chosen, pair.ref_rejected = c, r
    return pairs


@torch.no_grad()
def preference_metrics(model, pairs: list[Pair], beta: float, batch_size: int, pad_id: int,
                       loss: LossSpec | None = None) -> dict[str, float]:
    """How well ``model`` ranks the pairs, with TRL's reward metrics for the pair loss trained with.

    Rewards are the loss's own, as TRL logs them: ``beta * (policy - reference)`` for DPO (summed log-probs)
    and IPO (per-token averages); ``beta * policy`` (per-token average) for the reference-free SimPO and
    ORPO, whose evaluation runs no reference either.

    Returns:
        ``reward_accuracy``: share of pairs whose chosen completion gets the higher reward;
        ``reward_margin``: mean chosen minus rejected reward; ``chosen_reward`` / ``rejected_reward``:
        their means; the mean loss as ``dpo_loss`` (DPO) or ``<type>_loss`` (``ipo_loss``, ...);
        ``logp_accuracy``: share of pairs where the policy gives the chosen completion the higher summed
        log-probability (needs no reference, so it also scores an untrained model); ``n``.
    """
    if not pairs:
        return {"n": 0}
    loss = loss or LossSpec(beta=beta)
    device = _device(model)
    objective = PreferenceObjective(loss=loss)
    policy, reference, lengths = [], [], []
    with _eval_mode(model):
        for i in range(0, len(pairs), batch_size):
            batch = {k: v.to(device) for k, v in objective.collate(pairs[i:i + batch_size], pad_id).items()}
            policy.append(torch.stack(sequence_logps(model, batch).chunk(2)))
            lengths.append(torch.stack(completion_lengths(batch).to(device).chunk(2)))
            if loss.needs_reference:
                reference.append(torch.stack(reference_logps(model, batch).to(device).chunk(2)))
    policy = torch.cat(policy, dim=1)  # (2, pairs): chosen, rejected
    refs = torch.cat(reference, dim=1).flatten() if reference else None
    terms = pair_terms(loss, policy.flatten(), refs, torch.cat(lengths, dim=1).flatten())
    margins = terms.chosen_rewards - terms.rejected_rewards
    return {"reward_accuracy": (margins > 0).float().mean().item(),
            "reward_margin": margins.mean().item(),
            "chosen_reward": terms.chosen_rewards.mean().item(),
            "rejected_reward": terms.rejected_rewards.mean().item(),
            loss.loss_key: terms.losses.mean().item(),
            "logp_accuracy": (policy[0] > policy[1]).float().mean().item(),
            "n": len(pairs)}


def _device(model) -> torch.device:
    return next(model.parameters()).device

