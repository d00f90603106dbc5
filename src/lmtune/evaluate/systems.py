"""Evaluation systems on one test split: zero-shot, few-shot (k examples in the prompt), fine-tuned."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from lmtune import precision
from lmtune.data.encode import Encoder, pack_blocks
from lmtune.data.formats import Example
from lmtune.data.templates import Rendered, Template, render
from lmtune.evaluate import metrics, perplexity
from lmtune.evaluate.retrieval import with_context
from lmtune.inference import generation, label_scoring
from lmtune.kinds.tasks import TaskKind, task_kind
from lmtune.models import pad_id
from lmtune.recipe_eval import GenerationConfig


@dataclass
class TaskSpec:
    """What evaluation needs to know about the task."""

    type: str
    labels: list[str] | None
    template: Template | None
    max_new_tokens: int = 128
    batch_size: int = 8
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16
    # Decoding controls (eval.generation), the same for every system that generates.
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    memory_gb: float | None = None  # label scoring's memory budget (None: half of the free memory)

    @property
    def kind(self) -> TaskKind:
        """The task kind ``type`` names: what its answers are and how they are measured."""
        return task_kind(self.type)


@dataclass
class SystemResult:
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    nll_units: list[list[float]] | None = None  # language modelling: [NLL, tokens] per batch of blocks


def few_shot_examples(train: list[Example], k: int, seed: int, labels: list[str] | None) -> list[Example]:
    """``k`` examples from train, stratified over labels (round-robin) when there are labels."""
    rng = random.Random(seed)
    if not labels or train[0].format != "classification":
        return rng.sample(train, min(k, len(train)))
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in train:
        by_label[ex.record["label"]].append(ex)
    for pool in by_label.values():
        rng.shuffle(pool)
    shots: list[Example] = []
    while len(shots) < min(k, len(train)):
        for label in labels:
            if by_label[label] and len(shots) < k:
                shots.append(by_label[label].pop())
    rng.shuffle(shots)
    return shots


def with_shots(query: Rendered, shots: list[Rendered]) -> list[dict[str, str]]:
    """The query's messages preceded by solved examples as earlier user/assistant turns."""
    system = [m for m in query.messages if m["role"] == "system"]
    turns = []
    for shot in shots:
        turns += [m for m in shot.messages if m["role"] != "system"]
        turns.append({"role": "assistant", "content": shot.completion})
    return system + turns + [m for m in query.messages if m["role"] != "system"]


def run_system(model, tokenizer, encoder: Encoder, spec: TaskSpec, test: list[Example],
               shots: list[Example] | list[list[Example]] | None = None, desc: str = "eval", quiet: bool = False,
               contexts: list[list[str]] | None = None) -> SystemResult:
    """Evaluate one system (a model plus a prompting strategy) on the test examples.

    Args:
        shots: solved examples shown before each query: the same list for every query, or one
            list per query (BM25-selected shots).
        contexts: retrieved passages per query, placed in its prompt (RAG).
    """
    with precision.autocast(next(model.parameters()).device, spec.precision):
        return _run_system(model, tokenizer, encoder, spec, test, shots, desc, quiet, contexts)


def _run_system(model, tokenizer, encoder, spec, test, shots, desc, quiet, contexts=None) -> SystemResult:
    pad = pad_id(tokenizer)
    started = time.perf_counter()
    if spec.kind.perplexity:
        rendered = [render(spec.template, ex, spec.labels) for ex in test]
        encoded = pack_blocks(encoder, [(r.messages, r.completion) for r in rendered], encoder.max_length)
        units = perplexity.block_nll(model, encoded, pad, spec.batch_size, desc, quiet)
        nll, n_tokens = sum(x for x, _ in units), sum(n for _, n in units)
        result = {"perplexity": metrics.perplexity(nll, n_tokens), "loss": nll / n_tokens}
        return SystemResult(_with_cost(result, started, len(test), [len(e.input_ids) for e in encoded], [0]),
                            nll_units=units)

    rendered, prompts, n_cut = build_prompts(model, encoder, spec, test, shots, contexts)
    references = [r.completion for r in rendered]
    label_ids = [encoder.target_ids(label) for label in spec.labels or []]
    if spec.kind.labelled:
        best, scores = label_scoring.classify(model, prompts, label_ids, pad, spec.batch_size, desc, quiet,
                                              spec.memory_gb)
        predictions = [spec.labels[i] for i in best]
        result = metrics.classification_metrics(references, predictions, spec.labels)
        completion_tokens = [len(label_ids[i]) for i in best]
        extra = [{"scores": dict(zip(spec.labels, (round(s, 4) for s in row)))} for row in scores]
    else:
        out = generation.generate_detailed(model, tokenizer, prompts, spec.max_new_tokens, pad, spec.batch_size,
                                           desc, quiet, **spec.generation.model_dump())
        predictions, completion_tokens = out.texts, out.counts
        # A reward task's answers have no reference text: its graders score them (lifecycle.grading).
        result = metrics.generation_metrics(references, predictions) if metrics.known_metrics(spec.type) else {}
        # Outputs cut off by max_new_tokens: many of them usually mean the model loops (see eval.generation).
        result["hit_token_cap"] = sum(out.hit_cap)
        extra = [{} for _ in predictions]
    rows = [{"input": _user_text(r), "reference": ref, "prediction": pred, **more}
            for r, ref, pred, more in zip(rendered, references, predictions, extra)]
    result["truncated_prompts"] = n_cut
    return SystemResult(_with_cost(result, started, len(test), [len(p) for p in prompts], completion_tokens), rows)


def build_prompts(model, encoder: Encoder, spec: TaskSpec, test: list[Example],
                  shots: list[Example] | list[list[Example]] | None = None,
                  contexts: list[list[str]] | None = None) -> tuple[list[Rendered], list[list[int]], int]:
    """Each test example's rendering and prompt tokens (shots and passages in place), and how many were cut."""
    rendered = [render(spec.template, ex, spec.labels) for ex in test]
    if contexts is not None:
        rendered = [with_context(r, c) for r, c in zip(rendered, contexts)]
    per_query = shots if shots and isinstance(shots[0], list) else [shots or []] * len(test)
    cache: dict[int, Rendered] = {}

    def shown(examples: list[Example]) -> list[Rendered]:
        return [cache.setdefault(id(ex), render(spec.template, ex, spec.labels)) for ex in examples]
    prompts = [encoder.prompt_ids(with_shots(r, shown(sh)) if sh else r.messages) for r, sh in zip(rendered, per_query)]
    # Test prompts are not cut to training.max_length (few-shot prompts are longer by design), only
    # to what the model can attend to, leaving room for the answer; any cut is counted.
    label_ids = [encoder.target_ids(label) for label in spec.labels or []]
    reserve = max((len(x) for x in label_ids), default=spec.max_new_tokens)
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 1 << 30
    fitted = [encoder.fit_prompt(p, context - reserve) for p in prompts]
    return rendered, [p for p, _ in fitted], sum(cut for _, cut in fitted)


def check_fits(model, encoder: Encoder, spec: TaskSpec, test: list[Example],
               shots: list[Example] | None = None) -> None:
    """Refuse, before anything is scored, a classification system whose prompts exceed the memory budget."""
    if not spec.kind.labelled or not test:
        return
    _, prompts, _ = build_prompts(model, encoder, spec, test, shots)
    label_ids = [encoder.target_ids(label) for label in spec.labels or []]
    label_scoring.check_fits(model, prompts, label_ids, spec.batch_size, spec.memory_gb)


def _with_cost(result: dict[str, Any], started: float, n: int, prompt_tokens: list[int],
               completion_tokens: list[int]) -> dict[str, Any]:
    elapsed = time.perf_counter() - started
    result.update(latency_s=elapsed / max(n, 1), prompt_tokens_mean=sum(prompt_tokens) / max(len(prompt_tokens), 1),
                  completion_tokens_mean=sum(completion_tokens) / max(len(completion_tokens), 1))
    return result


def _user_text(rendered: Rendered) -> str:
    users = [m["content"] for m in rendered.messages if m["role"] == "user"]
    return users[-1] if users else ""
