"""Seeded, stratified train/validation/test split."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

from lmtune.data.formats import Example
from lmtune.errors import UserError


def split_examples(examples: list[Example], fraction: float, seed: int, stratify: bool,
                   what: str) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of the examples, keeping label proportions when ``stratify``.

    Returns:
        (kept, held_out). With fraction 0 nothing is held out.

    Raises:
        UserError: too few examples, or a class too small to appear on both sides.
    """
    if fraction <= 0:
        return examples, []
    n_out = round(len(examples) * fraction)
    if n_out < 1 or n_out >= len(examples):
        raise UserError(f"{len(examples)} records are too few to hold out {fraction:.0%} for {what}; "
                        f"add data or give data.{what} as a file", source=f"data.split.{what}")
    labels = [ex.record["label"] for ex in examples] if _has_class_labels(examples) else None
    strata = labels if stratify and labels else None
    if strata is not None:
        counts = Counter(strata)
        small = [lab for lab, n in counts.items() if n < 2]
        if small or n_out < len(counts):
            raise UserError(f"class {small[0] if small else min(counts, key=counts.get)!r} has too few "
                            f"examples ({counts}) to appear in both splits when stratifying {what}; "
                            "add examples or set data.split.stratify: false", source=f"data.split.{what}")
    index = list(range(len(examples)))
    kept, held = train_test_split(index, test_size=n_out, random_state=seed, shuffle=True, stratify=strata)
    return [examples[i] for i in sorted(kept)], [examples[i] for i in sorted(held)]


def _has_class_labels(examples: list[Example]) -> bool:
    return examples[0].format == "classification" and isinstance(examples[0].record["label"], str)


def label_counts(examples: list[Example]) -> dict[str, int] | None:
    """Examples per class, or None when records carry no class label."""
    if not examples or not _has_class_labels(examples):
        return None
    return dict(sorted(Counter(ex.record["label"] for ex in examples).items()))
