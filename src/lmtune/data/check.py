"""``lmtune data check``: validate one file and summarise it, without a recipe."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from lmtune import assets
from lmtune.data import io
from lmtune.data.clean import input_key
from lmtune.data.formats import FORMATS, detect, load_examples, map_fields
from lmtune.data.split import label_counts
from lmtune.errors import UserError


def check_file(path: Path, task: str | None = None, labels: list[str] | None = None,
               fields: dict[str, str] | None = None) -> dict[str, Any]:
    """Read every record of ``path``; raise UserError (file:line) at the first unusable one.

    Args:
        path: the data file (or ``asset:<name>/<split>``).
        task: task type the records must suit; inferred from the first record when None.
        labels: allowed labels for classification.
        fields: column mapping as in ``data.fields``.
    """
    path = assets.resolve_data_ref(str(path))
    rows = io.iter_rows(path)
    first = next(rows)
    if task is None:
        fmt = detect(map_fields(first[1], fields or {}, first[0]))
        task = fmt.tasks[0] if fmt else "classification"
    examples = load_examples(_chain(first, rows), fields or {}, task, labels)
    lengths = [len(input_key(ex)) for ex in examples]
    keys = Counter(input_key(ex) for ex in examples)
    return {"file": str(path), "records": len(examples), "format": examples[0].format, "task": task,
            "labels": label_counts(examples), "exact_duplicates": sum(n - 1 for n in keys.values()),
            "chars": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}}


def _chain(first, rest):
    yield first
    yield from rest


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for a check summary."""
    lines = [f"{summary['file']}: {summary['records']} records, format {summary['format']} "
             f"(task {summary['task']})",
             f"  input length (chars): min {summary['chars']['min']}, median {summary['chars']['median']:.0f}, "
             f"max {summary['chars']['max']}",
             f"  exact duplicate inputs: {summary['exact_duplicates']}"]
    if summary["labels"]:
        total = sum(summary["labels"].values())
        lines.append("  labels: " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in summary["labels"].items()))
    return "\n".join(lines)


__all__ = ["check_file", "format_summary", "FORMATS", "UserError"]
