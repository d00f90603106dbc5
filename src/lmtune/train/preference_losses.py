"""The preference losses, as functions of completion log-probabilities: DPO's beside IPO, SimPO, ORPO and KTO.

Each follows its paper and TRL's implementation of it (TRL is the benchmark peer, so its conventions are the
ones a practitioner's numbers come from):

- ``sigmoid``: DPO (Rafailov et al., 2023), TRL ``DPOConfig(loss_type="sigmoid")``; summed log-probs.
- ``ipo``: IPO (Azar et al., 2023), TRL ``DPOConfig(loss_type="ipo")``. TRL divides each completion's summed
  log-prob by its token count for IPO (``all_logps / loss_mask.sum(-1)``, policy and reference alike), so the
  margin h is one of per-token averages; followed here.
- ``simpo``: SimPO (Meng et al., 2024), TRL ``CPOConfig(loss_type="simpo", cpo_alpha=0)``; reference-free,
  per-token averages.
- ``orpo``: ORPO (Hong et al., 2024), TRL ``ORPOTrainer``; reference-free, per-token averages, the NLL of the
  chosen completion plus ``beta`` (the paper's lambda) times the odds-ratio term.
- ``kto``: KTO (Ethayarajh et al., 2024), TRL ``KTOTrainer``; unpaired records, summed log-probs.

Rewards are TRL's too: ``beta * (policy - reference)`` where there is a reference, ``beta * policy`` (per-token
average) for the reference-free losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lmtune.train.objectives import STAND_IN

#: Every loss, DPO's first; the same names as ``training.preference_loss.type``.
LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "simpo", "orpo", "kto")
#: Losses that need no reference model (no reference pass, no adapter-disabled forward).
REFERENCE_FREE = frozenset({"simpo", "orpo"})
#: Losses of per-token average log-probs (TRL's ``average_log_prob``); the others sum them.
AVERAGED = frozenset({"ipo", "simpo", "orpo"})
#: ORPO's odds are held finite where a completion's average log-prob reaches 0 (every token certain).
_MAX_AVG_LOGP = -1e-6


@dataclass(frozen=True)
class LossSpec:
    """Which loss, with the values it reads (``training.preference_loss``, beta resolved).

    Attributes:
        type: one of :data:`LOSSES`.
        beta: the loss's beta (DPO, IPO's tau, SimPO's beta, ORPO's lambda, KTO's beta).
        simpo_gamma: SimPO's target reward margin.
        desirable_weight / undesirable_weight: KTO's lambda_D and lambda_U.
    """

    type: str = "sigmoid"
    beta: float = 0.1
    simpo_gamma: float = 0.5
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def __post_init__(self):
        if self.type not in LOSSES:
            raise ValueError(f"unknown preference loss {self.type!r}; choose from {', '.join(LOSSES)}")

    @property
    def needs_reference(self) -> bool:
        return self.type not in REFERENCE_FREE

    @property
    def averaged(self) -> bool:
        return self.type in AVERAGED

    @property
    def unpaired(self) -> bool:
        return self.type == "kto"

    @property
    def loss_key(self) -> str:
        """The mean loss's key in evaluation results (``dpo_loss`` for DPO, as before the other losses)."""
        return "dpo_loss" if self.type == "sigmoid" else f"{self.type}_loss"


def dpo_loss(pc, pr, rc, rr, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al., 2023, Eq. 7): -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))."""
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def ipo_loss(pc, pr, rc, rr, beta: float) -> torch.Tensor:
    """IPO (Azar et al., 2023, Eq. 17): (h - 1 / (2 tau))^2, h = (pi_w - ref_w) - (pi_l - ref_l), tau = beta.

    The square pulls h to a finite target instead of pushing it to infinity as DPO's sigmoid does, which is
    IPO's answer to DPO over-fitting deterministic preferences.
    """
    return ((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2


def simpo_loss(pc, pr, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al., 2024): -log sigmoid(beta * (avg_w - avg_l) - gamma), no reference model.

    ``pc`` / ``pr`` are per-token averages: the reward is the length-normalised likelihood the model
    generates by, and gamma a margin the chosen completion must win by.
    """
    return -F.logsigmoid(beta * (pc - pr) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate everywhere (Maechler 2012: expm1 near 0, log1p elsewhere).

    Each branch is computed on inputs clamped to its own side, so the branch not taken never produces an
    infinity whose zero gradient would still turn into NaN.
    """
    cut = -math.log(2)
    near = torch.log(-torch.expm1(x.clamp(min=cut)))
    far = torch.log1p(-torch.exp(x.clamp(max=cut)))
    return torch.where(x > cut, near, far)


def log_odds_ratio(pc, pr) -> torch.Tensor:
    """log(odds(y_w) / odds(y_l)) with odds(y) = P / (1 - P), P = exp(average log-prob) (ORPO, Eq. 4)."""
    pc, pr = pc.clamp(max=_MAX_AVG_LOGP), pr.clamp(max=_MAX_AVG_LOGP)
    return (pc - log1mexp(pc)) - (pr - log1mexp(pr))


def orpo_loss(pc, pr, lam: float) -> torch.Tensor:
    """ORPO (Hong et al., 2024, Eqs. 4-7): L_SFT + lambda * L_OR, L_OR = -log sigmoid(log odds ratio).

    L_SFT is the chosen completion's NLL averaged over its tokens (``-pc``): one stage does supervised
    fine-tuning and preference alignment, so no reference model and no prior SFT run are needed.
    """
    return -pc + lam * -F.logsigmoid(log_odds_ratio(pc, pr))


def kto_reference_point(policy_kl: torch.Tensor, reference_kl: torch.Tensor) -> torch.Tensor:
    """KTO's z0: the batch's mean log-ratio on mismatched (prompt, completion) pairs, detached, at least 0.

    As TRL estimates the KL(pi || pi_ref) term: not backpropagated (the paper treats it as a reference point,
    not a target) and clamped at 0, as a KL divergence is.
    """
    return (policy_kl - reference_kl).mean().detach().clamp(min=0)


def kto_loss(policy, reference, desirable: torch.Tensor, z0, spec: LossSpec) -> torch.Tensor:
    """KTO (Ethayarajh et al., 2024, Eq. 7): per record, lambda_y - v(x, y) with r = pi - ref and

    v = lambda_D * sigmoid(beta * (r - z0)) for a desirable completion, lambda_U * sigmoid(beta * (z0 - r))
    for an undesirable one; i.e. ``weight * (1 - sigmoid(...))``, as TRL writes it.
    """
    r = policy - reference
    good = spec.desirable_weight * (1 - torch.sigmoid(spec.beta * (r - z0)))
    bad = spec.undesirable_weight * (1 - torch.sigmoid(spec.beta * (z0 - r)))
    return torch.where(desirable, good, bad)


@dataclass
class PairTerms:
    """A batch of pairs under one loss: per-pair losses, TRL's rewards, and the loss's own diagnostics."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def pair_terms(spec: LossSpec, policy: torch.Tensor, reference: torch.Tensor | None,
               lengths: torch.Tensor) -> PairTerms:
    """The loss of each pair from (2 * pairs,) summed log-probs laid out chosen rows then rejected rows.

    Args:
        spec: the loss.
        policy: the policy's summed completion log-probs.
        reference: the reference's, or None for a reference-free loss.
        lengths: each row's completion tokens (the averaged losses divide by them).
    """
    if spec.averaged:
        policy = policy / lengths
        reference = reference / lengths if reference is not None else None
    pc, pr = policy.chunk(2)
    if not spec.needs_reference:
        rewards = spec.beta * policy.detach()
        chosen, rejected = rewards.chunk(2)
        if spec.type == "simpo":
            return PairTerms(simpo_loss(pc, pr, spec.beta, spec.simpo_gamma), chosen, rejected)
        return PairTerms(orpo_loss(pc, pr, spec.beta), chosen, rejected,
                         {"nll_loss": -pc.detach(), "log_odds_chosen": log_odds_ratio(pc, pr).detach()})
    rc, rr = reference.chunk(2)
    chosen, rejected = (spec.beta * (policy - reference).detach()).chunk(2)
    losses = ipo_loss(pc, pr, rc, rr, spec.beta) if spec.type == "ipo" else dpo_loss(pc, pr, rc, rr, spec.beta)
    return PairTerms(losses, chosen, rejected)


def completion_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Target tokens of each row (what :func:`~lmtune.train.preference.sequence_logps` sums over), at least 1."""
    from lmtune.data.encode import IGNORE

    return (batch["labels"][:, 1:] != IGNORE).sum(1).clamp(min=1).float()


class WindowMeans:
    """Named means over the training steps since the last log line, summed over the processes when read.

    Values are added as detached tensors and kept on their device: reading them is the only host-device sync,
    once per log line, as the loop's own loss.
    """

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self._sums: torch.Tensor | None = None  # (names, [sum, count])

    def add(self, name: str, values: torch.Tensor) -> None:
        """Add ``values`` to the window; nothing for a stand-in batch (:data:`~lmtune.train.objectives.STAND_IN`),
        though the window is opened, so that every process reads (all-reduces) it at the log line."""
        if not torch.is_grad_enabled():
            return  # validation and evaluation run without gradients: only training steps are logged
        values = values.detach().float().reshape(-1)
        if self._sums is None:
            self._sums = torch.zeros(len(self.names), 2, device=values.device)
        if STAND_IN.get():
            return
        row = self.names.index(name)
        self._sums[row, 0] += values.sum()
        self._sums[row, 1] += values.numel()

    def read(self, world) -> dict[str, float]:
        """The means (a name with no values in the window is left out), and a fresh window."""
        from lmtune.train.parallel import summed

        if self._sums is None:
            return {}
        totals = summed([self._sums], world)[0].tolist()
        self._sums = None
        return {name: total / count for name, (total, count) in zip(self.names, totals) if count > 0}
