"""GRPO (``training.grpo``): the policy samples a group of completions per prompt, a grader scores them, and each
completion is pushed up or down by how its reward compares with its group's (Shao et al., 2024, DeepSeekMath).

:class:`GRPOObjective` is an :class:`~lmtune.train.objectives.Objective`, so the loop is the one every task uses;
each training micro-batch of prompts (one unit each) goes:

1. **sample** ``num_generations`` completions per prompt with the batched generator
   (:func:`lmtune.inference.generation.generate_detailed`), the model in eval mode, each completion from a random
   stream of its own (:mod:`lmtune.inference.row_sampling`) seeded from the run seed, the micro-batch's number,
   the prompt's place in the micro-batch of all processes and the completion's number: a resumed run samples what
   an uninterrupted one does, N processes x b prompts sample what 1 process x N*b does, and nothing else's
   randomness moves; each row is cut after its first EOS (:func:`grpo_loss.completion_ids`);
2. **grade** all of them in one call of the grader's batch API (a failed sample scores 0 and is counted);
3. **advantages** within each group (:func:`grpo_loss.group_advantages`); a group whose rewards are all equal
   teaches nothing: it is counted (``frac_reward_zero_std``) and warned about, at most once per
   :data:`WARN_EVERY` micro-batches;
4. **reference** per-token log-probs: the same model with its adapter switched off, eval mode, no gradient (as
   DPO's, no second copy of the weights); skipped at ``beta: 0``;
5. **loss**: per-token log-probs of the completions under the policy, with gradient; the old policy's are these,
   detached, at the step that sampled (ratio 1), kept for the ``num_iterations - 1`` steps that reuse the samples,
   where the ratio moves and clipping applies (:mod:`lmtune.train.grpo_loss` has the formulas).

With ``num_iterations`` > 1 a step that reuses samples reuses those of the same micro-batch position of the
step that sampled; the prompts the loop hands it are not sampled (TRL repeats each batch instead), so an epoch
covers 1 / ``num_iterations`` of the prompts: set ``training.max_steps``. A run resumed inside such a round
samples afresh (the samples are not in the checkpoint).

Validation (the loop's ``evaluate_loss``, without gradient) answers each validation prompt greedily and returns
minus its reward: the logged and early-stopped validation loss is minus the mean reward, the best weights kept
are those with the highest one, and the validation line carries ``reward`` itself (:meth:`validation_metrics`).
A policy-gradient surrogate on held-out prompts would say nothing about how good the answers are.

Logged per training line (TRL's names): ``reward``, ``reward_std`` (the mean within-group std), ``kl``,
``completions/mean_length``, ``clip_ratio``, ``frac_reward_zero_std``, ``grader_errors``, ``grader_timeouts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmtune import distributed
from lmtune.data.encode import IGNORE, Encoded
from lmtune.inference.generation import generate_detailed
from lmtune.progress import say
from lmtune.train import grpo_loss
from lmtune.train.batches import collate
from lmtune.train.objectives import STAND_IN, Objective
from lmtune.train.parallel import summed
from lmtune.train.preference_losses import WindowMeans

KEY = "grpo_batch"  # batch key: which collated prompts a batch stands for
#: Training micro-batches between two warnings of the same kind (constant groups, grader failures).
WARN_EVERY = 25
_MEANS = ("reward", "reward_std", "kl", "completions/mean_length", "clip_ratio", "frac_reward_zero_std")
_PROBLEMS = ("errors", "timeouts", "unparsable")

#: ``(model, prompts, seeds) -> token rows``: how a micro-batch's completions are sampled (each prompt already
#: repeated ``num_generations`` times, a seed for each row); rows may run past EOS. Tests plant completions through it.
Sampler = Callable[[Any, list[list[int]], list[int]], list[list[int]]]


@dataclass
class Prompt:
    """One training or validation prompt: its tokens (the chat template applied) and its dataset item."""

    ids: list[int]
    item: dict[str, Any]
    truncated: bool = False


@dataclass
class GRPOSettings:
    """``training.grpo`` without the grader (built separately), as the objective needs it."""

    num_generations: int = 4
    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.04
    epsilon: float = 0.2
    num_iterations: int = 1
    scale_rewards: bool = True
    loss_type: str = "grpo"


@dataclass
class Rollout:
    """A micro-batch's samples, ready for the loss (reused by the steps of a ``num_iterations`` round)."""

    batch: dict[str, torch.Tensor]  # prompt + completion rows, completion tokens as labels
    mask: torch.Tensor  # (rows, positions - 1): 1 at completion tokens
    advantages: torch.Tensor  # (rows,)
    ref: torch.Tensor | None  # reference per-token log-probs
    old: torch.Tensor | None = None  # the sampling policy's, detached (set by the step that sampled)


class GRPOObjective(Objective):
    """GRPO on :class:`Prompt` examples, rewarded by ``grader``.

    Args:
        grader: a built grader (:func:`lmtune.graders.build`).
        tokenizer: decodes completions for the grader; its EOS ends them.
        pad_id: padding of the generated batches.
        settings: the GRPO hyperparameters.
        seed: the run seed (sampling seeds derive from it).
        grad_accum: micro-batches per optimizer step.
        start_step: the step training starts after (a resumed run's checkpoint step).
        sampler: replaces sampling with the generator (planted completions in tests).
    """

    shares_validation = False  # every process answers every validation prompt (Objective.shares_validation)

    def __init__(self, grader, tokenizer, pad_id: int, settings: GRPOSettings, *, seed: int = 0, grad_accum: int = 1,
                 start_step: int = 0, sampler: Sampler | None = None):
        self.grader, self.tokenizer, self.pad_id, self.s = grader, tokenizer, pad_id, settings
        self.eos = tokenizer.eos_token_id
        self.seed, self.grad_accum = seed, grad_accum
        self.sampler = sampler or self.sample
        self.cursor = start_step * grad_accum  # training micro-batches so far
        self.window = WindowMeans(_MEANS)
        self._problems: torch.Tensor | None = None  # grader errors, timeouts, unparsable since the last line
        self._validated = [0.0, 0, 0]  # reward sum, prompts, grader failures since the last validation line
        self._pending: dict[int, list[Prompt]] = {}
        self._next_key = 0
        self._buffer: dict[int, Rollout] = {}  # num_iterations > 1: this round's rollouts by micro-batch position
        self._unwarned = {"constant": [0, 0], "failed": [0, 0]}  # since the last warning: (count, out of)
        self._warned_at = {"constant": None, "failed": None}

    def start_at(self, step: int) -> None:
        """Continue after ``step`` (a resumed run): sampling seeds go on from there."""
        self.cursor = step * self.grad_accum

    def collate(self, examples: list[Prompt], pad_id: int) -> dict[str, torch.Tensor]:
        key, self._next_key = self._next_key, self._next_key + 1
        self._pending[key] = examples
        return {KEY: torch.tensor(key)}

    def units(self, example: Prompt) -> int:
        return 1

    def length(self, example: Prompt) -> int:
        return len(example.ids)

    def loss_sum(self, model, batch):
        prompts = self._pending.pop(int(batch[KEY]))
        device = batch[KEY].device
        if not torch.is_grad_enabled():
            return self._validation_loss(model, prompts, device)
        rollout = self._rollout(model, prompts, device)
        self.cursor += 1
        s = self.s
        logps = grpo_loss.token_logps(model, rollout.batch, s.temperature)
        if rollout.old is None:
            rollout.old = logps.detach()  # the policy that sampled: ratio 1 now, kept for the reusing steps
        terms = grpo_loss.per_token_terms(logps, rollout.old, rollout.ref, rollout.advantages, s.beta, s.epsilon)
        if terms.kl is not None:
            self.window.add("kl", grpo_loss.sequence_means(terms.kl.detach(), rollout.mask))
        self.window.add("clip_ratio", terms.clipped[rollout.mask.bool()].float())
        return grpo_loss.normalised(terms.loss, rollout.mask, s.loss_type, s.num_generations,
                                    s.max_completion_length)

    def _rollout(self, model, prompts: list[Prompt], device) -> Rollout:
        """This micro-batch's samples: drawn now, or those of its round when ``num_iterations`` reuses them."""
        step, position = divmod(self.cursor, self.grad_accum)
        if self.s.num_iterations > 1:
            if step % self.s.num_iterations and position in self._buffer:
                return self._buffer[position]
            if position == 0:
                self._buffer = {}
        rollout = self._sampled(model, prompts, device)
        if self.s.num_iterations > 1:
            self._buffer[position] = rollout
        return rollout

    def _sampled(self, model, prompts: list[Prompt], device) -> Rollout:
        """Sample, grade, and score under the reference (step 1 to 4 of the module's list)."""
        g = self.s.num_generations
        world = distributed.world()
        # Prompt j of this process is prompt rank + j * size of the micro-batch (parallel.shard).
        seeds = [row_seed(self.seed, self.cursor, world.rank + j * world.size, k)
                 for j in range(len(prompts)) for k in range(g)]
        rows = self.sampler(model, [p.ids for p in prompts for _ in range(g)], seeds)
        completions = [grpo_loss.completion_ids(list(row), self.eos) for row in rows]
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in completions]
        graded = self.grader.grade(texts, [p.item for p in prompts for _ in range(g)])
        rewards = torch.tensor(graded.scores, dtype=torch.float32, device=device)
        advantages, std = grpo_loss.group_advantages(rewards, g, self.s.scale_rewards)
        constant = torch.isclose(std, torch.zeros_like(std)).float()
        sequences = [Encoded(p.ids + c, [IGNORE] * len(p.ids) + c)
                     for p, c in zip((p for p in prompts for _ in range(g)), completions)]
        batch = {k: v.to(device) for k, v in collate(sequences, self.pad_id).items()}
        mask = (batch["labels"][:, 1:] != IGNORE).float()
        for name, values in (("reward", rewards), ("reward_std", std), ("frac_reward_zero_std", constant),
                             ("completions/mean_length", mask.sum(dim=1))):
            self.window.add(name, values)
        self._count(graded, int(constant.sum().item()), len(prompts), device)
        return Rollout(batch, mask, advantages, self._reference(model, batch) if self.s.beta else None)

    def _reference(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probs of the model before training: its adapter off, eval mode, no gradient."""
        inner = getattr(model, "module", model)
        was_training = inner.training
        inner.eval()
        try:
            with torch.no_grad(), inner.disable_adapter():
                return grpo_loss.token_logps(inner, batch, self.s.temperature)
        finally:
            inner.train(was_training)

    def sample(self, model, prompts: list[list[int]], seeds: list[int]) -> list[list[int]]:
        """The default sampler: the batched generator, in eval mode, row ``i`` drawn with ``seeds[i]``."""
        inner = getattr(model, "module", model)
        was_training = inner.training
        try:
            out = generate_detailed(inner, self.tokenizer, prompts, self.s.max_completion_length, self.pad_id,
                                    batch_size=len(prompts), quiet=True, row_seeds=seeds,
                                    temperature=self.s.temperature, top_p=self.s.top_p)
        finally:
            inner.train(was_training)
        # The generator cuts each row before its EOS; put it back where the row ended with one.
        return [tokens + ([] if capped else [self.eos]) for tokens, capped in zip(out.tokens, out.hit_cap)]

    def _validation_loss(self, model, prompts: list[Prompt], device) -> torch.Tensor:
        """Minus the summed reward of greedy answers to ``prompts`` (the loop averages it per prompt)."""
        out = generate_detailed(getattr(model, "module", model), self.tokenizer, [p.ids for p in prompts],
                                self.s.max_completion_length, self.pad_id, batch_size=len(prompts), quiet=True)
        graded = self.grader.grade(out.texts, [p.item for p in prompts])
        total = float(sum(graded.scores))
        self._validated = [self._validated[0] + total, self._validated[1] + len(prompts),
                           self._validated[2] + graded.problems]
        return torch.tensor(-total, dtype=torch.float32, device=device)

    def validation_metrics(self) -> dict[str, float]:
        """The validation line's ``reward``: the mean reward of the greedy answers (and grader failures)."""
        reward_sum, n, failed = self._validated
        self._validated = [0.0, 0, 0]
        return {"reward": reward_sum / n, "grader_failures": failed} if n else {}

    def window_metrics(self, world) -> dict[str, float]:
        means = self.window.read(world)
        if self._problems is None:
            return means
        errors, timeouts, unparsable = summed([self._problems], world)[0].tolist()
        self._problems = None
        return {**means, "grader_errors": errors + unparsable, "grader_timeouts": timeouts}

    def _count(self, graded, constant: int, groups: int, device) -> None:
        """Add a micro-batch's grader failures and constant groups to the counts, and warn (rarely) about them."""
        stand_in = STAND_IN.get()  # a stand-in batch counts nothing (but every process reads the counts)
        counts = torch.tensor([0.0 if stand_in else float(getattr(graded, kind)) for kind in _PROBLEMS], device=device)
        self._problems = counts if self._problems is None else self._problems + counts
        if stand_in:
            return
        self._warn("constant", constant, groups, "groups had the same reward for every completion: they carry no "
                   "learning signal (check the grader's range, or raise temperature or num_generations)")
        first = f" (first: {graded.messages[0]})" if graded.messages else ""
        self._warn("failed", graded.problems, len(graded.scores), f"completions could not be graded and scored 0"
                   f"{first}")

    def _warn(self, kind: str, count: int, total: int, what: str) -> None:
        seen = self._unwarned[kind]
        seen[0], seen[1] = seen[0] + count, seen[1] + total
        last = self._warned_at[kind]
        if seen[0] and (last is None or self.cursor - last >= WARN_EVERY):
            say(f"warning: GRPO: {seen[0]} of {seen[1]} {what}")
            self._unwarned[kind], self._warned_at[kind] = [0, 0], self.cursor


def row_seed(seed: int, micro_batch: int, prompt: int, completion: int) -> int:
    """The seed of one completion's random stream: the run seed, the training micro-batch's number, the prompt's
    place in the micro-batch of all processes, and the completion's number within its group."""
    return int(np.random.SeedSequence([seed, micro_batch, prompt, completion]).generate_state(1)[0])
