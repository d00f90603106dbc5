"""``lmtune data check``: validate one file and summarise it, streaming, without a recipe.

Records are read one at a time and dropped after their checks; what is kept per record is a length
and a 64-bit hash of its normalised input (12 bytes), so a file of several GB is checked in
bounded memory.
"""

from __future__ import annotations

import hashlib
import itertools
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lmtune import assets
from lmtune.data import io
from lmtune.data.clean import input_key
from lmtune.data.formats import detect, iter_examples, map_fields


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
    fields = fields or {}
    rows = io.iter_rows(path)
    first = next(rows)
    if task is None:
        fmt = detect(map_fields(first[1], fields, first[0]))
        task = fmt.tasks[0] if fmt else "classification"
    lengths, hashes = array("I"), array("q")
    label_counts: Counter = Counter()
    first_format = None
    for ex in iter_examples(itertools.chain([first], rows), fields, task, labels):
        first_format = first_format or ex.format
        key = input_key(ex)
        lengths.append(min(len(key), 2**32 - 1))
        hashes.append(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True))
        if "label" in ex.record and isinstance(ex.record["label"], str):
            label_counts[ex.record["label"]] += 1
    n = len(lengths)
    lens = np.frombuffer(lengths, dtype=np.uint32)
    unique = len(np.unique(np.frombuffer(hashes, dtype=np.int64)))
    return {"file": str(path), "records": n, "format": first_format, "task": task,
            "labels": dict(sorted(label_counts.items())) or None, "exact_duplicates": n - unique,
            "chars": {"min": int(lens.min()), "median": float(np.median(lens)), "max": int(lens.max())}}


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
