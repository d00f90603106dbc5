"""Cleaning before the split: text normalisation, length filters, exact deduplication."""

from __future__ import annotations

import html
import json
import re
import unicodedata
from typing import Any

from lmtune.data.formats import TEXT_FIELDS, Example

_SPACE = re.compile(r"\s+")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
# C0/C1 control characters except tab and newline, plus zero-width and BOM characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")


def normalise_text(text: str) -> str:
    """What a human would call the same text: HTML entities decoded (twice-escaped ones too),
    NFKC, no control characters, runs of spaces collapsed, line breaks kept (at most one blank line)."""
    for _ in range(3):  # review data is often escaped twice: &amp;#039;
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _INLINE_SPACE.sub(" ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def normalise_example(example: Example) -> bool:
    """Normalise every text field of an example in place; return whether anything changed."""
    rec, changed = example.record, False
    for key in TEXT_FIELDS:
        if isinstance(rec.get(key), str):
            new = normalise_text(rec[key])
            changed |= new != rec[key]
            rec[key] = new
    for msg in rec.get("messages", ()):
        new = normalise_text(msg["content"])
        changed |= new != msg["content"]
        msg["content"] = new
    return changed


def map_text(example: Example, fn) -> None:
    """Apply ``fn`` to every text field of an example in place (used by PII masking)."""
    rec = example.record
    for key in TEXT_FIELDS:
        if isinstance(rec.get(key), str):
            rec[key] = fn(rec[key])
    for msg in rec.get("messages", ()):
        msg["content"] = fn(msg["content"])


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
    elif example.format in ("completion", "preference", "prompt"):
        value = rec["prompt"]
    elif example.format == "unpaired_preference":  # one judgement of one completion: prompts recur (KTO)
        value = [rec["prompt"], rec["completion"]]
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


def dedup_exact(examples: list[Example], keys: list[str] | None = None) -> tuple[list[Example], dict]:
    """Drop records whose normalised input was seen before (keeping the first).

    Args:
        examples: records in file order.
        keys: their :func:`input_key` values, when the caller has them already.

    Returns:
        (kept, report) where report counts duplicates, same-input records with conflicting
        targets, and shows a few examples.
    """
    first: dict[str, Example] = {}
    kept, dropped, conflicts = [], [], []
    for ex, key in zip(examples, keys if keys is not None else map(input_key, examples)):
        if key in first:
            dropped.append(ex)
            if target_of(first[key]) != target_of(ex):
                conflicts.append((first[key].source, ex.source))
        else:
            first[key] = ex
            kept.append(ex)
    report = {
        "exact_duplicates": len(dropped),
        "conflicting_targets": len(conflicts),
        "examples": [ex.source for ex in dropped[:5]],
        "conflict_examples": [f"{a} vs {b}" for a, b in conflicts[:5]],
    }
    return kept, report
