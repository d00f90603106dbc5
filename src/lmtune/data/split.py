"""Seeded, stratified train/validation/test split."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import GroupShuffleSplit, train_test_split

from lmtune.data.formats import Example
from lmtune.errors import UserError

MIN_TRAIN = 2  # fewer training records cannot train anything (and break stratified splitters)


def split_examples(examples: list[Example], fraction: float, seed: int, stratify: bool,
                   what: str, group_by: str | None = None) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of the examples, keeping label proportions when ``stratify``.

    With ``group_by`` (a record field such as a patient or product id), whole groups are held out,
    so one group never straddles two splits; the fraction then counts groups, and label
    proportions are not enforced.

    Returns:
        (kept, held_out). With fraction 0 nothing is held out.

    Raises:
        UserError: too few examples (fewer than one to hold out or than 2 left for training), or a
            class too small to appear on both sides.
    """
    if fraction <= 0:
        return examples, []
    n_out = round(len(examples) * fraction)
    if n_out < 1 or len(examples) - n_out < MIN_TRAIN:
        raise UserError(f"{len(examples)} records are too few to hold out {fraction:.0%} for {what} and keep at "
                        f"least {MIN_TRAIN} training records; add data, lower data.split.{what}, or give "
                        f"data.{what} as a file", source=f"data.split.{what}")
    labels = [ex.record["label"] for ex in examples] if _has_class_labels(examples) else None
    strata = labels if stratify and labels else None
    if strata is not None:
        counts = Counter(strata)
        small = [lab for lab, n in counts.items() if n < 2]
        if small or n_out < len(counts) or len(examples) - n_out < len(counts):
            raise UserError(f"class {small[0] if small else min(counts, key=counts.get)!r} has too few "
                            f"examples ({counts}) to appear in both splits when stratifying {what}; "
                            "add examples or set data.split.stratify: false", source=f"data.split.{what}")
    index = list(range(len(examples)))
    if group_by:
        groups = [_group(ex, group_by) for ex in examples]
        if len(set(groups)) < 2:
            raise UserError(f"all records share one {group_by!r} value, so no group can be held out",
                            source="data.split.group_by")
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        try:
            kept, held = next(splitter.split(index, groups=groups))
        except ValueError as exc:  # sklearn: too few groups for this fraction
            raise UserError(f"cannot hold out {fraction:.0%} of {len(set(groups))} groups for {what} ({exc}); "
                            f"add data or change data.split.{what}", source=f"data.split.{what}") from None
        if len(kept) < MIN_TRAIN:
            raise UserError(f"holding out {fraction:.0%} of the groups for {what} leaves {len(kept)} training "
                            f"record(s); add data or lower data.split.{what}", source=f"data.split.{what}")
        _check_classes(examples, held, labels, what)
    else:
        kept, held = train_test_split(index, test_size=n_out, random_state=seed, shuffle=True, stratify=strata)
    return [examples[i] for i in sorted(kept)], [examples[i] for i in sorted(held)]


def _group(example: Example, field: str):
    value = example.record.get(field, example.extra.get(field))
    if value is None or value == "":
        raise UserError(f"record has no {field!r} to group by (data.split.group_by)", source=example.source)
    return str(value)


def _check_classes(examples: list[Example], held, labels: list[str] | None, what: str) -> None:
    if labels is None:
        return
    missing = sorted(set(labels) - {examples[i].record["label"] for i in held})
    if missing:
        raise UserError(f"the grouped split leaves class {missing[0]!r} with no {what} examples; use more "
                        f"data, a larger data.split.{what}, or another seed", source=f"data.split.{what}")


def _has_class_labels(examples: list[Example]) -> bool:
    return examples[0].format == "classification" and isinstance(examples[0].record["label"], str)


def label_counts(examples: list[Example]) -> dict[str, int] | None:
    """Examples per class, or None when records carry no class label."""
    if not examples or not _has_class_labels(examples):
        return None
    return dict(sorted(Counter(ex.record["label"] for ex in examples).items()))
