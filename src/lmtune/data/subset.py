"""Nested, stratified subsets of the train split (``data.subset``): the points of a learning curve.

Every example gets a key from its position in its own label's shuffled order, ``(i + u) / m`` for the i-th of
m examples of that label (u a seeded jitter in [0, 1)); the examples sorted by key form one order, and a
subset of size n is its first n. So a smaller subset is always inside a larger one of the same seed (the
curve's points differ only by the added examples), and every prefix holds each label in proportion to the
train split (within one example per label).
"""

from __future__ import annotations

import random
from collections import defaultdict

from lmtune.data.formats import Example
from lmtune.errors import UserError


def nested_order(examples: list[Example], seed: int) -> list[int]:
    """The indices of ``examples`` in the order subsets take them (stratified by label when there are labels)."""
    rng = random.Random(seed)
    by_label: dict[object, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_label[_label(ex)].append(i)
    keyed = []
    for members in by_label.values():
        rng.shuffle(members)
        keyed += [((rank + rng.random()) / len(members), i) for rank, i in enumerate(members)]
    return [i for _, i in sorted(keyed)]


def subset(examples: list[Example], size: int, seed: int) -> list[Example]:
    """The first ``size`` examples of :func:`nested_order`, in the train split's order.

    Raises:
        UserError: ``size`` is more than the examples there are, or leaves a label of the train split with none.
    """
    if size > len(examples):
        raise UserError(f"{size} is more than the {len(examples)} training examples left after cleaning and the "
                        "split; choose a smaller size", source="data.subset.size")
    kept = sorted(nested_order(examples, seed)[:size])
    chosen = [examples[i] for i in kept]
    missing = sorted({str(_label(ex)) for ex in examples} - {str(_label(ex)) for ex in chosen})
    if missing and _label(examples[0]) is not None:
        labels = len({_label(ex) for ex in examples})
        raise UserError(f"{size} training examples leave label {missing[0]!r} with no example ({len(missing)} of "
                        f"{labels} labels missing); use at least {_smallest_size(examples, seed)}",
                        source="data.subset.size")
    return chosen


def _smallest_size(examples: list[Example], seed: int) -> int:
    """The smallest subset of this seed that holds every label."""
    seen, labels = set(), {_label(ex) for ex in examples}
    for n, i in enumerate(nested_order(examples, seed), start=1):
        seen.add(_label(examples[i]))
        if seen == labels:
            return n
    return len(examples)


def _label(example: Example):
    """The class label of a classification example; None for any other format (no stratification)."""
    if example.format != "classification":
        return None
    return example.record.get("label")
