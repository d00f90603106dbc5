"""A run's prepared records (``data/<split>.jsonl``) as the review of its gold labels reads them.

A record is named by its split and its line in that split's file (from 0). The predictions files have one line per
*evaluated* test example: every test record in file order, or, with ``eval.max_examples``, the seeded sample the
lifecycle drew (``lifecycle._sample_test``), drawn again here the same way. Each predictions row is then given its
record's line only when the record's gold label is the row's reference, so a correction can never land on another
record than the one the person looked at. Files are parsed once per modification (:mod:`lmtune.studio.cache`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.data import corrections as data_corrections
from lmtune.data.sample import label_keys, sample_indices
from lmtune.errors import UserError
from lmtune.report import html
from lmtune.run_dir import RunDir
from lmtune.studio.cache import Stamped

SPLITS = ("train", "validation", "test")
PAGE_LIMIT = 200
_files = Stamped(16)


def records(run: RunDir, split: str) -> list[dict[str, Any] | None]:
    """The records of one split file, one entry per line (None for a line that is not a JSON object)."""
    path = run.data.split(split)
    return _files.get(("records", str(path)), [path], lambda: _parse(path))


def _parse(path: Path) -> list[dict[str, Any] | None]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out: list[dict[str, Any] | None] = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        out.append(row if isinstance(row, dict) else None)
    return out


def record(run: RunDir, split: Any, index: Any) -> dict[str, Any]:
    """Line ``index`` of ``data/<split>.jsonl``.

    Raises:
        UserError: an unknown split, an index that is not a line of the file, or a line that is not a record.
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}", source="split")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UserError("index must be a record's line number (0 or more) in the split's file", source="index")
    found = records(run, split)
    if index >= len(found):
        raise UserError(f"the run's {split} split has {len(found)} records; there is no record {index}",
                        source="index")
    if found[index] is None:
        raise UserError(f"line {index + 1} of the run's data/{split}.jsonl is not a record", source="index")
    return found[index]


def evaluated_lines(run: RunDir, recipe: dict[str, Any]) -> list[int]:
    """The ``data/test.jsonl`` line of each predictions row, in the order the rows are."""
    test = records(run, "test")
    n, how, seed = (html.lookup(recipe, "eval.max_examples"), html.lookup(recipe, "eval.sample") or "stratified",
                    recipe.get("seed", 0))
    key = ("lines", str(run.data.split("test")), n, how, seed)

    def draw() -> list[int]:
        return sample_indices(len(test), n if isinstance(n, int) else None, seed if isinstance(seed, int) else 0,
                              how, label_keys(test))  # the lifecycle's draw (data.sample.sample_examples)
    return _files.get(key, [run.data.split("test")], draw)


def attach(run: RunDir, recipe: dict[str, Any], body: dict[str, Any], task: str | None) -> dict[str, Any]:
    """Give each row of a predictions page its test record's line (``record``; None where it cannot be told)."""
    lines, test = evaluated_lines(run, recipe), records(run, "test")
    for row in body.get("rows", []):
        i = row["index"]
        line = lines[i] if i < len(lines) else None
        row["record"] = line if line is not None and _gold(test[line], task) == row["reference"].strip() else None
    return body


def _gold(record: dict[str, Any] | None, task: str | None) -> str | None:
    if record is None or not task:
        return None
    try:
        _, label = data_corrections.of_record(record, task)
    except (UserError, KeyError, TypeError):
        return None
    return str(label).strip()


def page(run: RunDir, split: Any, task: str, q: str = "", offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """One page of a split's records as ``{index, text, label}``, those whose text or label holds ``q``.

    Raises:
        UserError: an unknown split, or an offset or limit out of range.
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}", source="split")
    if offset < 0:
        raise UserError("offset must be 0 or more", source="offset")
    if not 1 <= limit <= PAGE_LIMIT:
        raise UserError(f"limit must be between 1 and {PAGE_LIMIT}", source="limit")
    needle = q.strip().casefold()
    rows = [{"index": i, "text": text, "label": label} for i, text, label in _texts(run, split, task)
            if not needle or needle in text.casefold() or needle in str(label).casefold()]
    return {"split": split, "total": len(rows), "offset": offset, "limit": limit, "rows": rows[offset:offset + limit]}


def _texts(run: RunDir, split: str, task: str) -> list[tuple[int, str, Any]]:
    """``(line, text, label)`` of each record of a split with a gold label or target, cached."""
    path = run.data.split(split)

    def build() -> list[tuple[int, str, Any]]:
        out = []
        for i, found in enumerate(records(run, split)):
            if found is None:
                continue
            try:
                out.append((i, *data_corrections.of_record(found, task)))
            except (UserError, KeyError, TypeError):
                continue
        return out
    return _files.get(("texts", str(path), task), [path], build)
