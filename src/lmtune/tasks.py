"""The three shapes a task takes in the lifecycle, so ``lifecycle.run_recipe`` stays one sequence.

Which shape a recipe takes follows from its task kind's capabilities (:mod:`lmtune.kinds.tasks`); which
systems a shape runs, and what each needs (shots, passages, another model), from the systems registry
(:mod:`lmtune.kinds.systems`).

- ``TokenTask``: a causal LM learns target tokens (classification by label scoring, generation,
  chat, continued pre-training). Baselines: zero-shot and few-shot prompting.
- ``HeadTask``: a sequence-classification head (an encoder such as ``minilm-l6``, or a decoder
  with ``task.head: true``) for classification, or a one-output head for regression.
  Baseline: the majority class / mean target.
- ``PreferenceTask``: DPO (or IPO, SimPO, ORPO) on chosen/rejected pairs, KTO on unpaired records.
  Baseline: the base model's own preferences.

Each kind loads its model, encodes the splits, gives the training objective, runs a system on
the test split, and says which systems it has.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from lmtune import models
from lmtune.data.encode import Encoder, pack_blocks
from lmtune.data.templates import render
from lmtune.errors import UserError
from lmtune.evaluate import heads, systems
from lmtune.evaluate.systems import SystemResult, TaskSpec
from lmtune.kinds import systems as system_kinds
from lmtune.kinds.tasks import task_kind
from lmtune.models import pad_id
from lmtune.progress import say
from lmtune.recipe import Recipe
from lmtune.train.objectives import HeadObjective, Objective, TokenObjective


class TokenTask:
    """Target tokens of a causal LM; the path every generative task takes."""

    shape = "tokens"  # which systems apply (SystemKind.shapes)
    prompted = True  # examples go through a prompt template

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.kind = task_kind(recipe.task.type)
        self._cache: dict[Any, Any] = {}  # retrieval results, shots and term swaps, computed once per test list

    def load(self, load_kwargs: dict[str, Any]):
        return models.load_causal_lm(self.recipe.model.name, **load_kwargs)

    def encoder(self, tokenizer) -> Encoder:
        return Encoder(tokenizer, self.recipe.training.max_length, self.recipe.task.chat_template)

    def encode(self, prepared, tokenizer, encoder: Encoder, template) -> dict[str, list]:
        return encode_splits(prepared, encoder, template, self.recipe)

    def objective(self) -> Objective | None:
        return None  # the loop's default: target tokens, packed when training.packing is set

    def prepare_reference(self, model, encoded: dict[str, list], pad_id: int) -> None:
        """Nothing to do: only preference training needs a reference model."""

    def run(self, system: str, model, tokenizer, encoder, spec: TaskSpec, test, test_encoded, shots, train,
            quiet: bool) -> SystemResult | None:
        kind = system_kinds.system_kind(system)
        if self.shape not in kind.shapes or (self.kind.perplexity and kind.reads_examples):
            return None  # perplexity of raw text: no examples to show, no question to retrieve for
        # The recipe's decoding controls reach every generating system, whoever built the spec.
        spec = dataclasses.replace(spec, generation=self.recipe.eval.generation)
        if kind.other_model:
            return self._other_model(system_kinds.other_model(system), spec, test, quiet)
        if kind.shots and self.recipe.eval.few_shot_selection == "bm25":
            shots = self._similar_shots(train, test)
        contexts = self._contexts(test) if kind.retrieval else None
        return systems.run_system(model, tokenizer, encoder, spec, test, shots if kind.shots else None,
                                  system, quiet, contexts)

    def _similar_shots(self, train, test):
        from lmtune.evaluate.retrieval import similar_shots

        key = ("shots", id(test))
        if key not in self._cache:
            self._cache[key] = similar_shots(train, test, self.recipe.eval.few_shot_k)
        return self._cache[key]

    def _contexts(self, test) -> list[list[str]]:
        """Passages retrieved once per test list (rag and finetuned+rag read the same)."""
        from lmtune.evaluate import retrieval

        key = ("contexts", id(test))
        if key not in self._cache:
            rag = self.recipe.eval.rag
            if "corpus" not in self._cache:
                self._cache["corpus"] = retrieval.load_corpus(rag.corpus, rag.field, rag.max_passages)
            self._cache[key] = retrieval.retrieve(self._cache["corpus"], test, rag.top_k)
        return self._cache[key]

    def bias_check(self, system: str, result: SystemResult, model, tokenizer, encoder, spec: TaskSpec, test,
                   shots, train) -> dict[str, Any] | None:
        """Rerun ``system`` on the test inputs with group terms swapped; flip rate and per-group metrics."""
        from lmtune.evaluate import bias, sharding

        config = self.recipe.eval.bias
        if config is None or not result.predictions or not self.kind.per_example:
            return None
        if "terms" not in self._cache:
            self._cache["terms"] = bias.load_terms(config)
        terms = self._cache["terms"]
        key = ("swapped", id(test))
        if key not in self._cache:
            self._cache[key] = bias.counterfactuals(test, terms)
        swapped, index, groups = self._cache[key]
        if not swapped:
            return {"n_tested": 0, "flip_rate": None, "note": "no test input contains a term of the lists"}
        again = sharding.answered(lambda part, encoded: self.run(system, model, tokenizer, encoder, spec, part,
                                                                 encoded, shots, train, quiet=True),
                                  spec, swapped, self.encode_test(tokenizer, swapped))
        rows = result.predictions
        return bias.report(spec.type, spec.labels, [r["reference"] for r in rows], [r["prediction"] for r in rows],
                           [r["prediction"] for r in again.predictions], index, groups, test=test,
                           group_field=config.group_field, terms=terms)

    def encode_test(self, tokenizer, examples) -> list:
        return []  # prompts are encoded by the evaluation itself

    def with_replay(self, train: list, encoder) -> list:
        """Training examples with general-text blocks mixed in (``training.replay``).

        Blocks are cut to the median training-example length: the loss is averaged over target
        tokens, so 512-token blocks beside 150-token examples would weigh far more than ``ratio``.
        """
        from lmtune.train import replay

        config = self.recipe.training.replay
        if self.shape != "tokens":
            raise UserError("training.replay mixes general text into causal-LM training; this task trains a "
                            f"{'head' if not self.prompted else 'preference objective'}: remove training.replay",
                            source="training.replay")
        general = replay.load_general(config.data, encoder, self._block_size(train), config.max_records)
        return replay.mix(train, general, config.ratio, self.recipe.seed)

    def _block_size(self, train: list) -> int:
        """General-text blocks as long as the median training example (within 16 and max_length)."""
        lengths = sorted(len(e.input_ids) for e in train)
        return max(16, min(self.recipe.training.max_length, lengths[len(lengths) // 2]))

    def check_distill(self) -> None:
        """Refuse ``training.distill`` where it cannot apply and read its text, before the model loads."""
        from lmtune.train import distill

        config = self.recipe.training.distill
        if config is None:
            return
        if self.shape != "tokens":
            raise UserError("training.distill keeps a causal LM's next-token predictions on general text; this task "
                            f"trains a {'head' if not self.prompted else 'preference objective'}: remove "
                            "training.distill", source="training.distill")
        self._cache["distill_documents"] = distill.read_documents(config.data, config.max_records)

    def with_distill(self, train: list, encoder) -> int:
        """``training.distill``'s text (:meth:`check_distill`) cut into blocks; returns how many. Blocks as long as
        replay's keep a distill batch's cost near a task batch's (its KL is averaged per token either way)."""
        from lmtune.train import distill

        documents = self._cache["distill_documents"]
        self._cache["distill"] = distill.make_blocks(documents, encoder, self._block_size(train))
        return len(self._cache["distill"])

    def distilled(self, objective: Objective | None, pad: int, resume_from=None) -> Objective | None:
        """``objective`` (None: the loop's default) with ``training.distill``'s term, if the recipe has one; a run
        resumed from the checkpoints folder ``resume_from`` draws distill blocks on from the step it continues."""
        from lmtune.train import distill

        config, t = self.recipe.training.distill, self.recipe.training
        if config is None:
            return objective
        return distill.DistillObjective(
            objective or TokenObjective(t.max_length if t.packing else None), self._cache["distill"], pad,
            weight=config.weight, temperature=config.temperature, batch_size=config.batch_size or t.batch_size,
            grad_accum=t.grad_accum, seed=self.recipe.seed, start_step=distill.resumed_step(resume_from))

    def _other_model(self, ref: str, spec: TaskSpec, test, quiet: bool) -> SystemResult:
        """Zero-shot prompting of another model (e.g. a larger base) on the same test split."""
        model, tokenizer, _ = models.load_causal_lm(ref)
        encoder = Encoder(tokenizer, self.recipe.training.max_length, self.recipe.task.chat_template)
        return systems.run_system(model, tokenizer, encoder, spec, test, None, f"model:{ref}", quiet)


class HeadTask(TokenTask):
    """A classification or regression head on top of the model body."""

    shape = "head"
    prompted = False

    def load(self, load_kwargs: dict[str, Any]):
        task = self.recipe.task
        if self.kind.numeric:
            return models.load_sequence_classifier(self.recipe.model.name, 1, **load_kwargs)
        return models.load_sequence_classifier(self.recipe.model.name, len(task.labels),
                                               id2label=dict(enumerate(task.labels)), **load_kwargs)

    def encoder(self, tokenizer):
        return None  # the head reads the record's text as it is, without a prompt template

    def encode(self, prepared, tokenizer, encoder, template) -> dict[str, list]:
        encoded = {name: self.encode_test(tokenizer, examples) for name, examples in prepared.splits.items()}
        _count(prepared, encoded, self.recipe.training.max_length)
        return encoded

    def encode_test(self, tokenizer, examples) -> list:
        task = self.recipe.task
        return heads.encode(tokenizer, examples, TaskSpec(task.type, task.labels, None),
                            self.recipe.training.max_length)

    def objective(self) -> Objective:
        return HeadObjective(regression=self.kind.numeric)

    def run(self, system, model, tokenizer, encoder, spec, test, test_encoded, shots, train, quiet):
        kind = system_kinds.system_kind(system)
        if self.shape not in kind.shapes:
            return None  # zero_shot / few_shot: a head has no prompt to follow
        if kind.constant:
            return heads.constant_baseline(train, test, spec)
        return heads.run_head(model, tokenizer, test_encoded, test, spec)


class PreferenceTask(TokenTask):
    """Preference training (``training.preference_loss``): chosen/rejected pairs under DPO, IPO, SimPO or ORPO,
    or unpaired desirable/undesirable records under KTO; relative to the base model where the loss has a reference.
    """

    shape = "preference"

    def __init__(self, recipe: Recipe):
        from lmtune.train.preference_losses import LossSpec

        super().__init__(recipe)
        cfg, training = recipe.training.preference_loss, recipe.training
        self.loss = LossSpec(cfg.type, training.dpo_beta if cfg.beta is None else cfg.beta, cfg.simpo_gamma,
                             cfg.desirable_weight, cfg.undesirable_weight)

    def encode(self, prepared, tokenizer, encoder, template) -> dict[str, list]:
        from lmtune.train.kto import encode_unpaired
        from lmtune.train.preference import encode_pair

        _check_records(prepared, self.loss.type)
        if self.loss.unpaired:
            encoded = {name: encode_unpaired(encoder, [(_asked(ex), str(ex.record["completion"]), ex.record["label"])
                                                       for ex in examples])
                       for name, examples in prepared.splits.items()}
        else:
            encoded = {name: [encode_pair(encoder, _asked(ex), str(ex.record["chosen"]), str(ex.record["rejected"]))
                              for ex in examples]
                       for name, examples in prepared.splits.items()}
        _count(prepared, encoded, self.recipe.training.max_length)
        return encoded

    def objective(self) -> Objective:
        from lmtune.train.kto import UnpairedObjective
        from lmtune.train.preference import PreferenceObjective

        return UnpairedObjective(self.loss) if self.loss.unpaired else PreferenceObjective(loss=self.loss)

    def prepare_reference(self, model, encoded: dict[str, list], pad_id: int) -> None:
        """Reference log-probs from the base model, before any training (no second copy of it); nothing for
        SimPO and ORPO, which have no reference. Several processes each compute a share and exchange them."""
        from lmtune.train import kto, parallel, preference

        if not self.loss.needs_reference:
            return
        module = kto if self.loss.unpaired else preference
        size = self.recipe.eval.batch_size
        for items in encoded.values():  # several processes share the pass out (parallel.fill_shared)
            parallel.fill_shared(items, size, lambda part: module.precompute_reference(model, part, size, pad_id),
                                 module.REFERENCE_FIELDS)

    def run(self, system, model, tokenizer, encoder, spec, test, test_encoded, shots, train, quiet):
        from lmtune.train.kto import kto_metrics
        from lmtune.train.preference import preference_metrics

        if self.shape not in system_kinds.system_kind(system).shapes:
            return None
        pad = pad_id(tokenizer)
        started = time.perf_counter()
        if self.loss.unpaired:
            result = kto_metrics(model, test_encoded, self.loss, spec.batch_size, pad)
        else:
            result = preference_metrics(model, test_encoded, self.loss.beta, spec.batch_size, pad, self.loss)
        result["latency_s"] = (time.perf_counter() - started) / max(len(test_encoded), 1)
        return SystemResult(result)


def _asked(example) -> list[dict[str, str]]:
    """A preference record's prompt as the one user turn its completions answer."""
    return [{"role": "user", "content": str(example.record["prompt"])}]


def _check_records(prepared, loss: str) -> None:
    """Every split holds the records ``loss`` learns from: unpaired ones for KTO, pairs for the others."""
    wanted = "unpaired_preference" if loss == "kto" else "preference"
    for examples in prepared.splits.values():
        wrong = next((ex for ex in examples if ex.format != wanted), None)
        if wrong is None:
            continue
        if loss == "kto":
            raise UserError('training.preference_loss is kto, which learns from unpaired {"prompt", "completion", '
                            '"label": true|false} records, but these are {"prompt", "chosen", "rejected"} pairs; '
                            "use a pair loss (sigmoid, ipo, simpo, orpo), or write each pair as one desirable and "
                            "one undesirable record", source=wrong.source)
        raise UserError('these records are unpaired {"prompt", "completion", "label"}, which only '
                        f"training.preference_loss: kto learns from (this recipe's is {loss}); set it to kto, or "
                        'give {"prompt", "chosen", "rejected"} pairs', source=wrong.source)


def task_for(recipe: Recipe) -> TokenTask:
    """The shape of task a recipe describes."""
    if task_kind(recipe.task.type).preference:
        return PreferenceTask(recipe)
    if not recipe.training.preference_loss.is_default():
        raise UserError(f"only a preference task (task.type: preference) trains with a preference loss, and this "
                        f"one is {recipe.task.type}: remove training.preference_loss",
                        source="training.preference_loss")
    if task_kind(recipe.task.type).reward:  # GRPO on prompts (issue #20)
        from lmtune.reward_task import RewardTask

        return RewardTask(recipe)
    if uses_head(recipe):
        return HeadTask(recipe)
    return TokenTask(recipe)


def uses_head(recipe: Recipe) -> bool:
    """As the task kind says (regression always; classification when asked, or when the model is an encoder)."""
    head = task_kind(recipe.task.type).head
    if head is not None:
        return head
    if recipe.task.head is not None:
        return recipe.task.head
    return not models.is_causal_lm(recipe.model.name)


def _count(prepared, encoded: dict[str, list], max_length: int) -> None:
    """Truncation per split into the data report (examples carry a ``truncated`` flag)."""
    prepared.report["truncation"] = {"max_length": max_length, **{
        name: {"truncated": sum(e.truncated for e in items), "total": len(items)} for name, items in encoded.items()}}


def encode_splits(prepared, encoder: Encoder, template, recipe: Recipe) -> dict[str, list]:
    """Tokenize train and validation; count truncation and token lengths into the data report."""
    lm = task_kind(recipe.task.type).perplexity
    encoded, truncation, lengths = {}, {"max_length": recipe.training.max_length}, {}
    for name, examples in prepared.splits.items():
        rendered = [render(template, ex, recipe.task.labels) for ex in examples]
        if lm:  # continued pre-training: documents concatenated into blocks, nothing truncated away
            items = pack_blocks(encoder, [(r.messages, r.completion) for r in rendered], recipe.training.max_length)
        else:
            items = [encoder.encode(r.messages, r.completion) for r in rendered]
        key = "longer_than_max_length" if name == "test" else "truncated"
        truncation[name] = {key: sum(e.truncated for e in items), "total": len(items)}
        lengths[name] = [len(e.input_ids) for e in items][:5000]
        if name != "test":  # test prompts are encoded by the evaluation, whole
            encoded[name] = items
        if name != "test" and truncation[name]["truncated"]:
            say(f"warning: {truncation[name]['truncated']} of {len(items)} {name} examples are longer than "
                f"training.max_length={recipe.training.max_length} and were truncated")
    truncation["note"] = ("train and validation examples are cut to max_length; test prompts are evaluated "
                          "whole, cut only to the model's context (counted as truncated_prompts in eval.json)")
    prepared.report["truncation"] = truncation
    prepared.report["token_lengths"] = lengths
    return encoded


