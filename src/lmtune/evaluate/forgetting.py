"""Forgetting probes: general ability measured before and after fine-tuning.

A narrow fine-tune can make a model worse at everything else ("catastrophic forgetting"). The
recipe's ``eval.forgetting`` names general data; each file becomes one probe, its kind decided by
the file's records:

- ``{"text"}``: **perplexity** of general text. Documents (each ending in EOS, no chat template)
  are concatenated and cut into blocks of ``max_length`` tokens, as in continued pre-training;
  perplexity is ``exp`` of the mean next-token NLL over every predicted token.
- ``{"question", "choices", "answer"}``: **multiple-choice accuracy**, MMLU style. The user turn is

      <question>
      A. <choice 1>
      B. <choice 2>
      ...
      Answer:

  wrapped in the tokenizer's chat template when it has one (as every lmtune prompt is); without
  one, the text plus a newline. The reply scored for each choice is its letter's tokens (``B``),
  without EOS; the predicted choice is the letter with the highest log-likelihood, as in the
  original MMLU evaluation and the lm-evaluation-harness ``mmlu`` task. ``answer`` may be a
  letter (``"B"``), a 0-based index (``1``) or the text of the right choice.

:func:`measure` runs the probes on one model, :func:`compare` says what changed between the base
and the fine-tuned model.
"""

from __future__ import annotations

import random
import string
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmtune import distributed
from lmtune import precision as amp
from lmtune.data.encode import Encoder, pack_blocks
from lmtune.data.io import iter_rows
from lmtune.errors import UserError
from lmtune.evaluate import bootstrap, metrics, perplexity, sharding
from lmtune.inference import label_scoring
from lmtune.models import pad_id

#: A probe counts as forgotten when it got worse by more than this fraction of its base value
#: (perplexity up, or accuracy down, by more than 1% relative).
FORGET_THRESHOLD = 0.01

LETTERS = string.ascii_uppercase
_SPLIT_NAMES = {"train", "test", "validation", "valid", "val", "dev", "data"}


@dataclass
class Question:
    """One multiple-choice question; ``answer`` is the index of the right choice."""

    question: str
    choices: list[str]
    answer: int
    source: str
    subject: str = ""


@dataclass
class Probe:
    """A named general-ability probe: documents (perplexity) or questions (multiple choice)."""

    name: str
    kind: str  # "perplexity" | "multiple_choice"
    path: str
    items: list  # list[str] for perplexity, list[Question] for multiple choice


def load_probes(spec: dict[str, Any], seed: int = 0) -> list[Probe]:
    """Read the probe files named by ``eval.forgetting``.

    Args:
        spec: ``{"data": path or [paths], "max_examples": 200}``; ``max_examples`` documents or
            questions are sampled per file (seeded; questions round-robin over ``subject`` when
            records have one, so every subject is represented).
        seed: sampling seed.

    Returns:
        One probe per file, named after the file's stem (after its folder too when the stem is a
        split name such as ``test``: ``mmlu/test``).

    Raises:
        UserError: missing or unreadable file, a record of neither format, or a malformed record
            (with file:line).
    """
    paths = spec.get("data")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths or [])
    if not paths:
        raise UserError("name at least one general data file: {data: general.jsonl}", source="eval.forgetting.data")
    limit = spec.get("max_examples", 200)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise UserError(f"max_examples must be a positive integer, got {limit!r}",
                        source="eval.forgetting.max_examples")
    probes = []
    for path in paths:
        kind, items = _read_probe_file(Path(path))
        if kind == "multiple_choice":
            items = _sample_questions(items, limit, seed)
        elif len(items) > limit:
            items = [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]
        probes.append(Probe(probe_name(Path(path)), kind, str(path), items))
    names = [p.name for p in probes]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"two probe files are both named {name!r}; rename one so the report can tell them "
                            "apart", source="eval.forgetting.data")
    return probes


def probe_name(path: Path) -> str:
    """``general.jsonl`` -> ``general``; ``mmlu/test.jsonl`` -> ``mmlu/test``."""
    stem = path.stem if path.is_file() or path.suffix else path.name
    if stem.lower() in _SPLIT_NAMES and path.parent.name:
        return f"{path.parent.name}/{stem}"
    return stem


def _read_probe_file(path: Path) -> tuple[str, list]:
    """The file's probe kind, from its first record, and its documents or questions."""
    kind, items = None, []
    for source, record in iter_rows(path):
        this = _kind_of(record, source)
        if kind is None:
            kind = this
        elif this != kind:
            raise UserError(f"this record is a {this.replace('_', '-')} probe record but the file's first one is "
                            f"{kind.replace('_', '-')}; keep one kind per file", source=source)
        items.append(_question(record, source) if kind == "multiple_choice" else _text(record, source))
    return kind, items


def _kind_of(record: dict[str, Any], source: str) -> str:
    if {"question", "choices", "answer"} <= set(record):
        return "multiple_choice"
    if "text" in record:
        return "perplexity"
    raise UserError(f"a forgetting probe record needs {{\"text\"}} (perplexity) or {{\"question\", \"choices\", "
                    f"\"answer\"}} (multiple choice); this one has {sorted(record)}", source=source)


def _text(record: dict[str, Any], source: str) -> str:
    text = record["text"]
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"\"text\" must be a non-empty string, got {text!r:.60}", source=source)
    return text


def _question(record: dict[str, Any], source: str) -> Question:
    question, choices = record["question"], record["choices"]
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"\"question\" must be a non-empty string, got {question!r:.60}", source=source)
    if (not isinstance(choices, (list, tuple)) or not 2 <= len(choices) <= len(LETTERS)
            or not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) and str(c).strip()
                       for c in choices)):
        raise UserError(f"\"choices\" must be a list of 2 to {len(LETTERS)} non-empty strings, got "
                        f"{choices!r:.80}", source=source)
    choices = [str(c) for c in choices]
    return Question(question, choices, parse_answer(record["answer"], choices, source), source,
                    str(record.get("subject") or ""))


def parse_answer(answer: Any, choices: list[str], source: str) -> int:
    """The right choice's index from a letter (``"B"``), a 0-based index (``1``) or the choice's text.

    A single letter is read as a letter even when a choice's text is also that letter.
    """
    n = len(choices)
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < n:
            return answer
    elif isinstance(answer, str):
        key = answer.strip()
        if len(key) == 1 and key.upper() in LETTERS[:n]:
            return LETTERS.index(key.upper())
        if key in choices:
            return choices.index(key)
    raise UserError(f"\"answer\" {answer!r:.60} is neither a letter A-{LETTERS[n - 1]}, an index 0-{n - 1} nor the "
                    "text of one of the choices", source=source)


def _sample_questions(questions: list[Question], limit: int, seed: int) -> list[Question]:
    """``limit`` questions, taken round-robin over subjects (in a seeded order) when there are several."""
    if len(questions) <= limit:
        return questions
    rng = random.Random(seed)
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        by_subject[q.subject].append(i)
    pools = list(by_subject.values())
    rng.shuffle(pools)
    for pool in pools:
        rng.shuffle(pool)
    chosen: list[int] = []
    while len(chosen) < limit:
        for pool in pools:
            if pool and len(chosen) < limit:
                chosen.append(pool.pop())
    return [questions[i] for i in sorted(chosen)]


def mc_prompt(question: Question) -> str:
    """The user turn of a multiple-choice question (see the module docstring)."""
    lines = [question.question.strip()]
    lines += [f"{LETTERS[i]}. {choice.strip()}" for i, choice in enumerate(question.choices)]
    return "\n".join(lines + ["Answer:"])


def measure(model, tokenizer, probes: list[Probe], batch_size: int = 8, precision: str = "fp32",
            max_length: int = 512, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """Run every probe on one model.

    Args:
        model: a causal LM (plain or peft-wrapped).
        tokenizer: its tokenizer.
        probes: from :func:`load_probes`.
        batch_size: sequences per forward pass.
        precision: resolved ``fp32``/``bf16``/``fp16`` autocast.
        max_length: perplexity block size; multiple-choice prompts are cut (middle out, counted) to fit.
        quiet: no progress bars.

    Returns:
        Per probe ``{"kind": "perplexity", "perplexity", "tokens"}`` or
        ``{"kind": "multiple_choice", "accuracy", "n", "truncated_prompts"}``.
    """
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    results = {}
    with amp.autocast(device, precision):
        for probe in probes:
            if probe.kind == "perplexity":
                results[probe.name] = _perplexity(model, tokenizer, probe, pad, batch_size, max_length, quiet)
            else:
                results[probe.name] = _multiple_choice(model, tokenizer, probe, pad, batch_size, max_length, quiet)
    return results


def _perplexity(model, tokenizer, probe: Probe, pad: int, batch_size: int, max_length: int,
                quiet: bool) -> dict[str, Any]:
    encoder = Encoder(tokenizer, max_length, use_chat_template=False)
    blocks = pack_blocks(encoder, [([], text) for text in probe.items], max_length)
    # [NLL, tokens] of each batch of blocks: the resampling unit of compare()'s interval. With several processes
    # each measures every N-th batch (only the last batch of all is short, so the batches stay the same).
    world = distributed.world()
    batches = [blocks[i:i + batch_size] for i in range(0, len(blocks), batch_size)]
    mine = [block for j in sharding.share(len(batches), world) for block in batches[j]]
    units = sharding.in_order(perplexity.block_nll(model, mine, pad, batch_size, f"forgetting {probe.name}", quiet),
                              len(batches), world)
    tokens = sum(n for _, n in units)
    return {"kind": "perplexity", "perplexity": metrics.perplexity(sum(nll for nll, _ in units), tokens),
            "tokens": tokens, "units": units}


def _multiple_choice(model, tokenizer, probe: Probe, pad: int, batch_size: int, max_length: int,
                     quiet: bool) -> dict[str, Any]:
    encoder, world = Encoder(tokenizer, max_length), distributed.world()
    letters = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in LETTERS]
    correct: list[int] = []  # 1/0 per question, grouped by choice count (the same order on every model)
    cut = 0
    by_count: dict[int, list[Question]] = defaultdict(list)
    for q in probe.items:
        by_count[len(q.choices)].append(q)
    for n, questions in sorted(by_count.items()):
        label_ids = letters[:n]
        fitted = [encoder.fit_prompt(encoder.prompt_ids([{"role": "user", "content": mc_prompt(q)}]),
                                     max_length - max(len(x) for x in label_ids)) for q in questions]
        cut += sum(was_cut for _, was_cut in fitted)
        # Every question with n choices is scored on the same n letters: classify() encodes each
        # prompt once and scores all letters from it (equal to completion_logprobs, n times cheaper).
        mine = sharding.share(len(fitted), world)  # every N-th question, with several processes
        best = label_scoring.classify(model, [fitted[i][0] for i in mine], label_ids, pad, batch_size,
                                      desc=f"forgetting {probe.name}", quiet=quiet)[0] if mine else []
        best = sharding.in_order(list(best), len(fitted), world)
        correct += [int(b == q.answer) for b, q in zip(best, questions)]
    return {"kind": "multiple_choice", "accuracy": sum(correct) / len(probe.items), "n": len(probe.items),
            "truncated_prompts": cut, "correct": correct}


def compare(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
            n_resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """What changed on each probe measured on both models, and whether it is more than noise.

    The change gets a paired bootstrap 95% interval and p-value: the same questions, or the same
    batches of text blocks, resampled for both models (:func:`bootstrap.paired_change`).
    ``forgot`` is true when the probe got worse by more than :data:`FORGET_THRESHOLD` (1%) of its
    base value (perplexity up, or accuracy down) and the change is significant (p < 0.05), or, for
    results without per-item scores, by the threshold alone. ``relative_change`` is None when the
    base value is 0.
    """
    out = {}
    for name in before.keys() & after.keys():
        metric = "perplexity" if before[name]["kind"] == "perplexity" else "accuracy"
        b, a = before[name][metric], after[name][metric]
        relative = (a - b) / b if b else None
        worse = -1 if metric == "accuracy" else 1
        entry = {"metric": metric, "before": b, "after": a, "change": a - b, "relative_change": relative}
        key = "units" if metric == "perplexity" else "correct"
        rows_b, rows_a = before[name].get(key), after[name].get(key)
        significant = True
        if rows_b is not None and rows_a is not None and len(rows_b) == len(rows_a):
            if metric == "perplexity":
                reduce = lambda r: np.exp(r[..., 0].sum(-1) / r[..., 1].sum(-1))  # noqa: E731
            else:
                reduce = lambda r: r[..., 0].mean(-1)  # noqa: E731
            tested = bootstrap.paired_change(np.asarray(rows_b, dtype=float).reshape(len(rows_b), -1),
                                             np.asarray(rows_a, dtype=float).reshape(len(rows_a), -1),
                                             reduce, n_resamples, seed)
            entry.update(ci_low=tested["ci_low"], ci_high=tested["ci_high"], p_value=tested["p_value"])
            significant = tested["p_value"] < 0.05
        entry["forgot"] = relative is not None and worse * relative > FORGET_THRESHOLD and significant
        out[name] = entry
    return {name: out[name] for name in before if name in out}
