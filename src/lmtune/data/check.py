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
from lmtune.data.formats import FORMATS, Format, detect, iter_examples, map_fields

#: Unused columns named one by one before the rest are counted.
MAX_UNUSED_SHOWN = 10
#: Unused column names kept at most (the count shown is then a lower bound).
MAX_UNUSED_KEPT = 1000
#: The order a format's keys are named in: inputs before outputs, as a record is read.
_KEY_ORDER = ("messages", "prompt", "instruction", "text", "completion", "output", "chosen", "rejected", "label")


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
    first_format, unused = None, {}
    for ex in iter_examples(itertools.chain([first], rows), fields, task, labels):
        first_format = first_format or ex.format
        # Insertion-ordered, and capped: a file whose records each add a new key stays in bounded memory.
        if len(unused) < MAX_UNUSED_KEPT:
            unused.update(dict.fromkeys(ex.extra))
        key = input_key(ex)
        lengths.append(min(len(key), 2**32 - 1))
        hashes.append(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True))
        if "label" in ex.record and isinstance(ex.record["label"], str):
            label_counts[ex.record["label"]] += 1
    n = len(lengths)
    lens = np.frombuffer(lengths, dtype=np.uint32)
    unique = len(np.unique(np.frombuffer(hashes, dtype=np.int64)))
    fmt = next(f for f in FORMATS if f.name == first_format)
    return {"file": str(path), "records": n, "format": first_format, "task": task, "detected": detected_because(fmt),
            "unused_columns": list(unused), "fields": fields,
            "labels": dict(sorted(label_counts.items())) or None, "exact_duplicates": n - unique,
            "chars": {"min": int(lens.min()), "median": float(np.median(lens)), "max": int(lens.max())}}


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for a check summary."""
    lines = [f"{summary['file']}: {summary['records']} records, format {summary['format']} "
             f"(task {summary['task']}): {summary['detected']}",
             f"  input length (chars): min {summary['chars']['min']}, median {summary['chars']['median']:.0f}, "
             f"max {summary['chars']['max']}",
             f"  exact duplicate inputs: {summary['exact_duplicates']}"]
    if summary["labels"]:
        total = sum(summary["labels"].values())
        lines.append("  labels: " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)"
                                              for k, v in summary["labels"].items()))
    lines += unused_warnings(summary)
    return "\n".join(lines)


def detected_because(fmt: Format) -> str:
    """Why records are in ``fmt``: the keys they have, and those of a more specific format they lack.

    E.g. "every record has 'text' and no 'label'" (with a label it would be classification).
    """
    has = _and([repr(k) for k in sorted(fmt.keys, key=_KEY_ORDER.index)])
    # Only the formats tried before this one (FORMATS is most specific first) that share a key with it.
    lacking = [sorted(f.keys - fmt.keys, key=_KEY_ORDER.index) for f in FORMATS[:FORMATS.index(fmt)]
               if f.keys & fmt.keys]
    clauses = [f"no {k[0]!r}" if len(k) == 1 else "not both " + " and ".join(map(repr, k)) for k in lacking]
    return f"every record has {has}" + "".join(f" and {c}" for c in clauses)


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def unused_warnings(summary: dict[str, Any]) -> list[str]:
    """One ``warning:`` line per column that the detected format ignores (it is not trained on)."""
    columns = summary.get("unused_columns") or []
    fmt = summary["format"]
    lines = []
    for column in columns[:MAX_UNUSED_SHOWN]:
        if fmt == "text" and "label" not in (summary.get("fields") or {}):
            hint = f"if it is the label, pass --field label={column}"
        else:
            hint = f"it is ignored; if it holds one of the format's fields, map it with --field <field>={column}"
        lines.append(f"warning: column {column!r} is not used by format {fmt}; {hint}")
    if len(columns) > MAX_UNUSED_SHOWN:
        lines.append(f"warning: {len(columns) - MAX_UNUSED_SHOWN} more columns are not used by format {fmt}")
    return lines
