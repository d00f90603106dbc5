"""The shape of a ``task.type: reward`` recipe: prompts, trained with GRPO from a grader's rewards
(:mod:`lmtune.train.grpo`), evaluated as generation whose answers the graders score.

The records are ``{"prompt"}`` (or ``{"prompt", "completion"}``): every field reaches the grader as
``{{item.<field>}}`` and none but the prompt is ever shown to the model, in training or evaluation (a few-shot
system, which would show solved examples, does not apply). Evaluation is :class:`~lmtune.tasks.TokenTask`'s
generation; ``training.grpo.grader`` is among ``eval.graders`` as ``reward`` (:func:`lmtune.recipe_grpo.check`),
so each system's mean reward on the held-out prompts is in ``eval.json`` with its interval, and the verdict
ranks by it.
"""

from __future__ import annotations

from typing import Any

from lmtune.data.templates import render
from lmtune.kinds import systems as system_kinds
from lmtune.models import pad_id
from lmtune.progress import say
from lmtune.recipe_grpo import GRADER_NAME
from lmtune.tasks import TokenTask
from lmtune.train.objectives import Objective


def item_of(example) -> dict[str, Any]:
    """OpenAI's ``item``: the whole record, its fields beyond the format's too (as ``eval.graders`` sees it)."""
    return {**example.extra, **example.record}


class RewardTask(TokenTask):
    """Prompts whose completions the policy samples and a grader scores (GRPO)."""

    def __init__(self, recipe):
        super().__init__(recipe)
        self.tokenizer = None  # set by encode: the objective decodes its samples with it

    def encode(self, prepared, tokenizer, encoder, template) -> dict[str, list]:
        """Train and validation prompts as :class:`~lmtune.train.grpo.Prompt` (test prompts are encoded by the
        evaluation), each cut (middle out, counted) to leave ``max_completion_length`` tokens of room."""
        from lmtune.train.grpo import Prompt

        self.tokenizer = tokenizer
        budget = self.recipe.training.max_length - self.recipe.training.grpo.max_completion_length
        encoded, truncation = {}, {"max_length": self.recipe.training.max_length, "prompt_budget": budget}
        for name, examples in prepared.splits.items():
            if name == "test":
                continue
            fitted = [encoder.fit_prompt(encoder.prompt_ids(render(template, ex, None).messages), budget)
                      for ex in examples]
            encoded[name] = [Prompt(ids, item_of(ex), cut) for (ids, cut), ex in zip(fitted, examples)]
            truncation[name] = {"truncated": sum(cut for _, cut in fitted), "total": len(fitted)}
            if truncation[name]["truncated"]:
                say(f"warning: {truncation[name]['truncated']} of {len(fitted)} {name} prompts are longer than "
                    f"training.max_length minus training.grpo.max_completion_length ({budget} tokens) and were cut "
                    "in the middle")
        truncation["note"] = ("train and validation prompts are cut to max_length minus "
                              "training.grpo.max_completion_length; test prompts are evaluated whole")
        prepared.report["truncation"] = truncation
        return encoded

    def objective(self) -> Objective:
        """GRPO with ``training.grpo``'s grader (built now: a judge model loads once, for the whole run)."""
        from lmtune import graders
        from lmtune.train.grpo import GRPOObjective, GRPOSettings

        grpo, training = self.recipe.training.grpo, self.recipe.training
        grader = graders.build(grpo.grader, GRADER_NAME, self.recipe.eval.batch_size, "training.grpo.grader")
        settings = GRPOSettings(**grpo.model_dump(exclude={"grader"}))
        return GRPOObjective(grader, self.tokenizer, pad_id(self.tokenizer), settings, seed=self.recipe.seed,
                             grad_accum=training.grad_accum)

    def distilled(self, objective, pad: int, resume_from=None):
        """No distillation (the recipe refuses it): the GRPO objective as it is, told the step a resumed run
        continues from, so that it samples on as the uninterrupted run would."""
        from lmtune.train.distill import resumed_step

        objective.start_at(resumed_step(resume_from))
        return objective

    def run(self, system, model, tokenizer, encoder, spec, test, test_encoded, shots, train, quiet):
        if system_kinds.system_kind(system).shots:
            return None  # solved examples would show the model what only the grader may read
        return super().run(system, model, tokenizer, encoder, spec, test, test_encoded, shots, train, quiet)


def check(recipe, prepared) -> None:
    """``training.grpo``'s grader against the training records (each ``{{item.<field>}}`` in every one) and this
    machine (its file, module or judge), before the model loads; nothing without ``training.grpo``.

    Raises:
        UserError: what :func:`lmtune.graders.check` finds, under ``training.grpo.grader``.
    """
    if recipe.training.grpo is None:
        return
    from lmtune import graders

    records = prepared.splits.get("train") or []
    graders.check(recipe.training.grpo.grader, [item_of(ex) for ex in records], "training.grpo.grader",
                  [ex.source for ex in records])
