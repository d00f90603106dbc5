"""Augmentation of the training split only: new copies of records, each tagged with its origin.

Text-level methods (EDA, Wei & Zou 2019) change the model input, never the target: random deletion
and random swap of words. Every copy carries ``augmented_from`` (the source file:line) and
``augmentation`` (the method), so it can be traced and told apart in the written splits.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from lmtune.data.formats import Example
from lmtune.errors import UserError

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


INPUT_FIELD = {"classification": "text", "completion": "prompt", "instruction": "instruction"}


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
    if method not in AUGMENTERS:
        raise UserError(f"unknown augmentation {method!r}; choose from {sorted(AUGMENTERS)}",
                        source="data.augment.method")
    copies = int(options.get("copies", 1))
    if copies < 1:
        raise UserError("copies must be at least 1", source="data.augment.copies")
    rng = random.Random(seed)
    fn = AUGMENTERS[method]
    added = []
    for ex in train:
        field = INPUT_FIELD.get(ex.format)
        if field is None:
            raise UserError(f"{method} augments text inputs; {ex.format} records have none",
                            source="data.augment.method")
        for k in range(copies):
            new = Example(copy.deepcopy(ex.record), f"{ex.source}#aug{k + 1}", ex.format, dict(ex.extra))
            new.record[field] = fn(str(ex.record[field]), rng, options)
            new.extra.update(augmented_from=ex.source, augmentation=method)
            added.append(new)
    return train + added, {"method": method, "copies": copies, "added": len(added)}
