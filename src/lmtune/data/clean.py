"""Cleaning before the split. Exact (normalised) deduplication for now."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from lmtune.data.formats import Example

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-folded, NFKC, whitespace-collapsed text: the key two records are duplicates under."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def input_key(example: Example) -> str:
    """The normalised input of an example (what the model sees, not what it must answer)."""
    rec = example.record
    if example.format == "chat":
        value: Any = rec["messages"][:-1]
    elif example.format == "instruction":
        value = [rec["instruction"], rec.get("input") or ""]
    elif example.format in ("completion", "preference"):
        value = rec["prompt"]
    else:
        value = rec["text"]
    return normalise(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def target_of(example: Example) -> Any:
    """What the model must answer for an example."""
    rec = example.record
    for key in ("label", "completion", "output"):
        if key in rec:
            return rec[key]
    if example.format == "chat":
        return rec["messages"][-1]["content"]
    return None


def dedup_exact(examples: list[Example], seen: set[str] | None = None) -> tuple[list[Example], dict]:
    """Drop records whose normalised input was seen before (keeping the first).

    Args:
        examples: records in file order.
        seen: keys already taken (e.g. by the test file) that also count as duplicates.

    Returns:
        (kept, report) where report counts duplicates, same-input records with conflicting
        targets, records dropped because a held-out file has them, and shows a few examples.
    """
    first: dict[str, Example] = {}
    kept, dropped, held_out, conflicts = [], [], [], []
    for ex in examples:
        key = input_key(ex)
        if key in first:
            dropped.append(ex)
            if target_of(first[key]) != target_of(ex):
                conflicts.append((first[key].source, ex.source))
        elif seen is not None and key in seen:
            held_out.append(ex)
        else:
            first[key] = ex
            kept.append(ex)
    report = {
        "exact_duplicates": len(dropped),
        "conflicting_targets": len(conflicts),
        "examples": [ex.source for ex in dropped[:5]],
        "conflict_examples": [f"{a} vs {b}" for a, b in conflicts[:5]],
    }
    if seen is not None:
        report["also_in_held_out_files"] = len(held_out)
        report["held_out_examples"] = [ex.source for ex in held_out[:5]]
    return kept, report
