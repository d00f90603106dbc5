"""Taking n of N records: seeded and stratified by label by default, the first n only when asked.

A file sorted by label (Banking77's official files are) gives three intents of twenty in its first
hundred records; a proportional, seeded sample keeps every label's share. sklearn's stratified
splitters refuse a label with a single record and a sample smaller than the number of labels, both
of which a small evaluation sample meets, so the allocation is done here: largest remainders, at
least one record per label while n allows, records kept in their file order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

HOW = ("stratified", "random", "first")


def sample_indices(n_items: int, n: int | None, seed: int, how: str = "stratified",
                   keys: Sequence[Hashable] | None = None) -> list[int]:
    """Indices (ascending) of the ``n`` items to keep out of ``n_items``.

    Args:
        n_items: how many items there are.
        n: how many to keep; None or at least ``n_items`` keeps all.
        seed: seed of the draw.
        how: ``stratified`` (proportional to ``keys``; plain random without keys), ``random`` or ``first``.
        keys: the stratum of each item (e.g. its label), or None.
    """
    if n is None or n >= n_items:
        return list(range(n_items))
    if how == "first":
        return list(range(n))
    rng = random.Random(seed)
    if how == "random" or keys is None:
        return sorted(rng.sample(range(n_items), n))
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    quotas = _allocate({k: len(v) for k, v in groups.items()}, n, rng)
    return sorted(i for key, members in groups.items() for i in rng.sample(members, quotas[key]))


def _allocate(sizes: dict[Hashable, int], n: int, rng: random.Random) -> dict[Hashable, int]:
    """Largest-remainder shares of ``n`` proportional to ``sizes``; every group gets one first if n allows."""
    total = sum(sizes.values())
    order = sorted(sizes, key=lambda k: (str(k), rng.random()))  # fixed order, seeded tie-breaks below
    floor = 1 if n >= len(sizes) else 0
    quotas = {k: min(sizes[k], max(floor, n * sizes[k] // total)) for k in order}
    remainders = sorted(order, key=lambda k: (-(n * sizes[k] % total), rng.random()))
    while sum(quotas.values()) > n:  # the floor of one each can overshoot: take back from the largest
        largest = max(order, key=lambda k: (quotas[k], rng.random()))
        quotas[largest] -= 1
    while sum(quotas.values()) < n:
        grew = False
        for k in remainders:
            if sum(quotas.values()) < n and quotas[k] < sizes[k]:
                quotas[k] += 1
                grew = True
        if not grew:
            break
    return quotas


def label_keys(records: Sequence[dict[str, Any] | None]) -> list[Any] | None:
    """The strata of a stratified sample: each record's ``label`` when the first record has one (None for a record
    that is missing), else None (a plain random sample)."""
    if not records or not records[0] or "label" not in records[0]:
        return None
    return [r.get("label") if r else None for r in records]


def sample_examples(examples: Sequence, n: int | None, seed: int, how: str) -> tuple[list[int], str]:
    """Indices of the ``n`` examples to keep (stratified by their ``label`` where they have one) and what was done.

    Returns:
        ``(indices, description)``; the description is :func:`describe`'s line.
    """
    keys = label_keys([ex.record for ex in examples])
    kept = sample_indices(len(examples), n, seed, how, keys)
    return kept, describe(len(kept), len(examples), how, seed, "label" if keys else None)


def describe(kept: int, total: int, how: str, seed: int, stratified_by: str | None) -> str:
    """One line saying what was sampled, for the console and the report."""
    if kept >= total:
        return f"all {total}"
    if how == "first":
        return f"the first {kept} of {total} (in file order)"
    by = f", stratified by {stratified_by}" if how == "stratified" and stratified_by else ""
    return f"{kept} of {total}, sampled at random{by} (seed {seed})"


def fingerprint(records: Iterable[dict[str, Any]]) -> str:
    """sha256 of a set of records, whatever their order: equal for the same test examples, different otherwise."""
    lines = sorted(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) for r in records)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
