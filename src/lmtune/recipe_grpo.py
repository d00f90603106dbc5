"""``training.grpo``: reinforcement learning from a grader's rewards (GRPO), split from :mod:`lmtune.recipe`.

The keys and defaults are TRL's ``GRPOConfig`` (``num_generations``, ``max_completion_length``, ``temperature``,
``top_p``, ``beta``, ``epsilon``, ``num_iterations``, ``scale_rewards``, ``loss_type``), so a practitioner's TRL
config reads the same; the reward is one grader object in OpenAI's schema (:mod:`lmtune.recipe_graders`), so a
reinforcement fine-tuning job's ``grader`` ports unchanged. Two differences from TRL, both said in README.md:
``training.batch_size`` counts prompts (each brings ``num_generations`` completions), and ``beta`` keeps the
0.04 of the GRPO paper and of TRL before 0.19.

A recipe with ``task.type: reward`` trains with GRPO and needs this section; :func:`check` says what else a
reward recipe must (not) have, and fills in the evaluation: the grader becomes ``eval.graders.reward`` and the
verdict ranks by it, so ``eval.json`` holds the mean reward of every system on the held-out prompts.
:mod:`lmtune.train.grpo` computes the objective.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lmtune.recipe_eval import _Strict
from lmtune.recipe_graders import GraderConfig, parse_grader

#: What a method must be for GRPO: the reference policy of the KL term is the same weights with the adapter
#: switched off (as DPO's), so there is no second copy of the model.
ADAPTER_NEEDED = ("training.grpo: needs an adapter method (lora, dora, qlora, ia3, prompt_tuning, prefix_tuning): "
                  "the KL term's reference policy is the same weights with the adapter switched off, and {method} has "
                  "none to switch off; use method.name: lora")
#: The task type that trains with GRPO, and the name its grader gets among eval.graders.
REWARD_TASK = "reward"
GRADER_NAME = "reward"
#: GRPO's normalisations of the per-token loss (TRL's ``loss_type`` values; see lmtune.train.grpo_loss).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
#: Sections a GRPO run cannot use, and why.
_REFUSED = {
    "replay": "mixes general-text blocks into the training examples, and GRPO's examples are prompts",
    "distill": "adds a KL term on general text to token training; GRPO has its own KL to the reference",
    "self_training": "pseudo-labels a pool of classification records",
}


class GRPOConfig(_Strict):
    """Group Relative Policy Optimization on the prompts of a ``task.type: reward`` recipe."""

    grader: GraderConfig = Field(description="The reward: one grader object in OpenAI's schema (string_check, "
                                 "text_similarity, python, score_model, multi; or callable), scored 0..1 as a rule.")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group whose rewards are "
                                 "compared); at least 2.")
    max_completion_length: int = Field(64, ge=1, description="Tokens a sampled completion may have.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature; the log-probs are of the same tempered "
                               "distribution (as TRL computes them).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1.0: off).")
    beta: float = Field(0.04, ge=0, description="Weight of the KL to the reference (adapter off); 0: no KL term "
                        "and no reference pass.")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clipping of the policy ratio to [1 - epsilon, 1 + epsilon].")
    num_iterations: int = Field(1, ge=1, description="Optimizer steps per batch of samples (PPO's epochs, mu); "
                                "above 1 the ratio moves and clipping applies.")
    scale_rewards: bool = Field(True, description="Divide each advantage by its group's reward std (+1e-4); false: "
                                "r - group mean only (Dr. GRPO's advice).")
    loss_type: Literal[LOSS_TYPES] = Field(
        "grpo", description="grpo: each completion's token mean, then the mean over completions; bnpo: the mean over "
        "the micro-batch's tokens; dr_grpo: the token sum over completions x max_completion_length.")

    @field_validator("grader", mode="before")
    @classmethod
    def _grader(cls, raw: Any) -> Any:
        return parse_grader(raw)  # a problem is named by its path under grader (grader.operation: ...)


def check(recipe, adapter: bool) -> None:
    """What a reward recipe must (not) have, then its evaluation filled in (called by the recipe's validation).

    ``task.type: reward`` and ``training.grpo`` go together; the method must have an adapter (``adapter``);
    replay, distill, self-training and packing are refused. Evaluation: the GRPO grader is added to
    ``eval.graders`` as ``reward`` (a grader of that name the recipe gives is kept instead) and ``eval.rank_by``
    defaults to it.

    Raises:
        ValueError: ``key.path: what is wrong`` (the recipe names the key).
    """
    training, grpo = recipe.training, recipe.training.grpo
    if recipe.task.type != REWARD_TASK:
        if grpo is not None:
            raise ValueError(f"training.grpo: GRPO trains on the prompts of a task.type: {REWARD_TASK} recipe (this "
                             f"one is {recipe.task.type}); set task.type: {REWARD_TASK} or remove training.grpo")
        return
    if grpo is None:
        raise ValueError("training.grpo: task.type reward learns from a grader's rewards with GRPO: add training.grpo: "
                         "{grader: {type: string_check, input: '{{sample.output_text}}', reference: '{{item.answer}}', "
                         "operation: eq}}")
    if not adapter:
        raise ValueError(ADAPTER_NEEDED.format(method=recipe.method.name))
    _check_training(training, grpo)
    if GRADER_NAME not in recipe.eval.graders:
        recipe.eval.graders = {**recipe.eval.graders, GRADER_NAME: grpo.grader}
    if recipe.eval.rank_by is None:
        recipe.eval.rank_by = GRADER_NAME


def _check_training(training, grpo: GRPOConfig) -> None:
    """The other ``training.*`` keys a GRPO run cannot take."""
    for key, why in _REFUSED.items():
        if getattr(training, key) is not None:
            raise ValueError(f"training.{key}: {why}; remove it from a task.type reward recipe")
    if training.packing:
        raise ValueError("training.packing: GRPO batches prompts and their sampled completions, not packed rows; "
                         "set packing: false")
    if training.max_length < grpo.max_completion_length + 8:
        raise ValueError(f"training.max_length: {training.max_length} leaves no room for a prompt before "
                         f"training.grpo.max_completion_length ({grpo.max_completion_length}) tokens; raise it")
