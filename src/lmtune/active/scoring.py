"""Answering pool records the way evaluation answers test examples, to score them for selection.

The model is a fine-tuned run's (``--run``: its ``final/`` on its base model, loaded as ``lmtune predict``
loads it) or, without one, the recipe's base model prompted zero-shot, as in round 0. Prompts are the recipe's
template rendered by :func:`lmtune.evaluate.systems.build_prompts` (few-shot examples included), classification
is :func:`lmtune.inference.label_scoring.classify`, generation :func:`lmtune.inference.generation.generate_detailed`:
nothing here re-implements how a system answers.

A system's probabilities are the softmax of its label log-likelihoods divided by the temperature the run fitted
for that system on its validation split (``eval.calibrate: temperature``: ``results.<system>.temperature`` in its
``eval.json``, with ``ece_uncalibrated`` beside it); without a fitted one the temperature is 1 and the confidence
is said to be uncalibrated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmtune import models, precision
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.templates import resolve as resolve_template
from lmtune.errors import UserError
from lmtune.evaluate import calibration, systems
from lmtune.inference import generation, label_scoring
from lmtune.kinds.tasks import task_kind
from lmtune.methods.merge import merged_adapter
from lmtune.run_dir import RunDir, read_model_info, run_final, run_of

TUNED, BASE = "finetuned", "base"


@dataclass(frozen=True)
class RunRef:
    """A finished run whose fine-tuned model scores the pool: its ``final/``, ``lmtune.json`` and the temperatures
    it fitted per system."""

    path: Path
    final: Path
    info: dict[str, Any]
    temperatures: dict[str, float] = field(default_factory=dict)


@dataclass
class Answer:
    """One system's answers to some records: label probabilities (classification) and predicted labels or texts."""

    system: str
    predictions: list[str]
    probs: np.ndarray | None
    seconds: float


def find_run(ref: str | Path, recipe, option: str = "--run") -> RunRef:
    """The run ``ref`` names, checked against the recipe before any weights load.

    Raises:
        UserError: no finished ``final/``; a head model; a task type or label set other than the recipe's.
    """
    final = run_final(ref)
    if final is None:
        raise UserError("not a finished run of lmtune train (it has no final/lmtune.json); give the directory of a "
                        "run whose training finished", source=option)
    try:
        info = read_model_info(final)
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable {final / 'lmtune.json'} ({exc}); train the run again", source=option) from None
    if info.get("head"):
        raise UserError("this run trained a classification head; lmtune active scores labels by the causal LM's "
                        "label log-likelihoods, so give a run without task.head", source=option)
    task = info.get("task") or {}
    mine = {"type": recipe.task.type, "labels": recipe.task.labels}
    differ = [f"task.{key}: the run's is {task.get(key)!r}, the recipe's {mine[key]!r}" for key in mine
              if task.get(key) != mine[key]]
    if differ:
        raise UserError(f"the run was trained on another task ({'; '.join(differ)}); give a run of this recipe",
                        source=option)
    run = run_of(final)
    return RunRef(run.path, final, info, fitted_temperatures(run))


def fitted_temperatures(run: RunDir) -> dict[str, float]:
    """The temperature each system of the run fitted on validation (only systems that fitted one)."""
    try:
        results = run.read_eval().get("results") or {}
    except (OSError, ValueError):
        return {}
    return {name: float(r["temperature"]) for name, r in results.items()
            if isinstance(r, dict) and "ece_uncalibrated" in r and isinstance(r.get("temperature"), int | float)}


class Scorer:
    """The systems that answer pool records: zero-shot and few-shot on the base model, fine-tuned with a run.

    Models load on first use (``random`` scores only the records it picked; a plain uncertainty strategy never
    needs the base model when a run is given).

    Args:
        recipe: the validated recipe: template, labels, eval.batch_size, few_shot_k, decoding controls.
        run: the fine-tuned run, or None (the base model zero-shot is the scoring model).
        train: solved examples the few-shot system shows (the recipe's train split, or an arm's labelled set).
        fmt: the pool's record format, which picks the template when the recipe names none.
    """

    def __init__(self, recipe, run: RunRef | None, train: list[Example], fmt: str, quiet: bool = False):
        self.recipe, self.run, self.train, self.quiet = recipe, run, train, quiet
        self.classifies = task_kind(recipe.task.type).labelled
        self.labels = recipe.task.labels if self.classifies else None
        self.device = "cuda" if _cuda() else "cpu"
        self.spec = systems.TaskSpec(recipe.task.type, self.labels, resolve_template(recipe.task.template, fmt),
                                     recipe.eval.max_new_tokens, recipe.eval.batch_size,
                                     precision.resolve(recipe.training.precision, self.device),
                                     generation=recipe.eval.generation, memory_gb=recipe.eval.memory_gb)
        self._loaded: dict[str, tuple[Any, Any, Encoder]] = {}

    @property
    def primary(self) -> str:
        """The system whose answers give the pre-label and the uncertainty: fine-tuned with a run, else zero-shot."""
        return TUNED if self.run is not None else "zero_shot"

    @property
    def committee(self) -> list[str]:
        """The systems of ``committee``: zero-shot, few-shot and, with a run, fine-tuned."""
        return ["zero_shot", "few_shot"] + ([TUNED] if self.run is not None else [])

    def temperature(self, system: str) -> float | None:
        """The temperature ``system`` fitted on validation, or None (uncalibrated: T = 1 is used)."""
        return self.run.temperatures.get(system) if self.run is not None else None

    def answer(self, system: str, examples: list[Example]) -> Answer:
        """``system``'s answers to ``examples``, with a progress bar."""
        model, tokenizer, encoder = self._model(TUNED if system == TUNED else BASE)
        shots = self._shots(examples) if system == "few_shot" else None
        _, prompts, _ = systems.build_prompts(model, encoder, self.spec, examples, shots)
        pad, desc = models.pad_id(tokenizer), f"score pool ({system})"
        started = time.perf_counter()
        with merged_adapter(model), precision.autocast(next(model.parameters()).device, self.spec.precision):
            if self.classifies:
                label_ids = [encoder.target_ids(label) for label in self.labels]
                best, scores = label_scoring.classify(model, prompts, label_ids, pad, self.spec.batch_size, desc,
                                                      self.quiet, self.spec.memory_gb)
                probs = calibration.probabilities(np.asarray(scores), self.temperature(system) or 1.0)
                return Answer(system, [self.labels[i] for i in best], probs, time.perf_counter() - started)
            out = generation.generate_detailed(model, tokenizer, prompts, self.spec.max_new_tokens, pad,
                                               self.spec.batch_size, desc, self.quiet,
                                               **self.recipe.eval.generation.model_dump())
        return Answer(system, list(out.texts), None, time.perf_counter() - started)

    def embed(self, examples: list[Example]) -> np.ndarray:
        """The scoring model's mean last hidden state over each example's prompt (``diverse``)."""
        from lmtune.active.diverse import embed

        model, tokenizer, encoder = self._model(TUNED if self.run is not None else BASE)
        _, prompts, _ = systems.build_prompts(model, encoder, self.spec, examples)
        with merged_adapter(model), precision.autocast(next(model.parameters()).device, self.spec.precision):
            return embed(model, prompts, models.pad_id(tokenizer), self.spec.batch_size, self.quiet)

    def load(self) -> None:
        """Load the scoring model now (a benchmark then times scoring alone)."""
        self._model(TUNED if self.run is not None else BASE)

    def _shots(self, examples: list[Example]):
        """The few-shot system's solved examples, chosen as evaluation chooses them (``eval.few_shot_selection``)."""
        if not self.train:
            raise UserError("the few-shot member of the committee needs solved examples and the train split is "
                            "empty", source="data.train")
        k = self.recipe.eval.few_shot_k
        if self.recipe.eval.few_shot_selection == "bm25":
            from lmtune.evaluate.retrieval import similar_shots

            return similar_shots(self.train, examples, k)
        return systems.few_shot_examples(self.train, k, self.recipe.seed, self.labels)

    def _model(self, which: str):
        """(model, tokenizer, encoder) of the fine-tuned run or of the base model, loaded once."""
        if which not in self._loaded:
            if which == TUNED:
                from lmtune.export import load_final

                model, tokenizer = load_final(self.run.final, self.run.info)
            else:
                ref = self.run.info.get("base_model") if self.run is not None else self.recipe.model.name
                model, tokenizer, _ = models.load_causal_lm(ref)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = model.to(self.device).eval()
            encoder = Encoder(tokenizer, self.recipe.training.max_length, self.recipe.task.chat_template)
            self._loaded[which] = (model, tokenizer, encoder)
        return self._loaded[which]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
