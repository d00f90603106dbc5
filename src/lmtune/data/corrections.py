"""``data.corrections``: gold labels (or generation targets) a person found wrong, put right in the data stage.

The file is JSONL, one correction a line, as the studio's review page exports it::

    {"text": <the record's input>, "label": <its gold label now>, "corrected": <the right label>,
     "split": "test", "run": ..., "annotator": ..., "reason": ..., "at": ...}

A record is corrected when its input text and its current label are a correction's, compared as cleaning compares
text (HTML entities, NFKC, spacing and case do not matter; a text with personal data matches its masked form). The
whole file is checked before any data file is read, every problem named ``file:line``. Corrections are applied to
each split right after the split: the split and ``data.max_records`` are stratified by label, so a label changed
before them would move other records between splits; after it, a corrected record stays where the run that found
the mistake had it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data import clean, pii
from lmtune.data.formats import Example, detect
from lmtune.errors import UserError
from lmtune.kinds.tasks import task_kind

REQUIRED = ("text", "label", "corrected")
SPLITS = ("train", "validation", "test")
#: Problems named at most when a file has many (the first ones; the count says how many more).
MAX_PROBLEMS = 20
#: Formats whose records have a target a correction can replace, and the field holding it.
TARGETS = {"classification": "label", "completion": "completion", "instruction": "output", "chat": "messages"}


def record_text(record: dict[str, Any], fmt: str) -> str:
    """A record's input as text: what the model reads (an instruction and its input joined by a blank line, a
    chat's turns before the reply as JSON)."""
    if fmt == "chat":
        return json.dumps(record["messages"][:-1], ensure_ascii=False)
    if fmt == "instruction":
        return "\n\n".join(part for part in (record["instruction"], record.get("input") or "") if part)
    return str(record.get("prompt") if fmt == "completion" else record.get("text"))


def record_target(record: dict[str, Any], fmt: str) -> Any:
    """A record's gold label or target text (None for a format without one)."""
    if fmt == "chat":
        return record["messages"][-1]["content"]
    key = TARGETS.get(fmt)
    return record.get(key) if key else None


def _set_target(record: dict[str, Any], fmt: str, value: Any) -> None:
    if fmt == "chat":
        record["messages"][-1]["content"] = value
    else:
        record[TARGETS[fmt]] = value


def of_record(record: dict[str, Any], task: str) -> tuple[str, Any]:
    """``(text, label)`` of a prepared split file's record (``data/<split>.jsonl``), as a correction names them.

    Raises:
        UserError: the record has no format the task reads with a target.
    """
    fmt = detect(record, task)
    if fmt is None or fmt.name not in TARGETS:
        raise UserError(f"this record has no {task} gold label or target to correct", source="index")
    return record_text(record, fmt.name), record_target(record, fmt.name)


def text_key(text: str) -> str:
    """The key two texts are the same input under: cleaning's normalisation, then case and spacing folded."""
    return clean.normalise(clean.normalise_text(text))


@dataclass(frozen=True)
class Correction:
    """One line of a corrections file."""

    line: int
    text: str
    label: Any
    corrected: Any
    split: str | None = None


@dataclass
class Corrections:
    """A checked corrections file and what applying it did.

    Attributes:
        changed: per split, the records whose label was corrected.
        matched: the lines that corrected at least one record.
    """

    path: Path
    task: str
    items: list[Correction]
    changed: dict[str, int] = field(default_factory=dict)
    matched: set[int] = field(default_factory=set)
    _index: dict[tuple[str, Any], Correction] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for item in self.items:  # a later line about the same record wins, as in the studio's export
            for text in {item.text, pii.scan(item.text)[0]}:
                self._index[(text_key(text), _label_key(item.label, self.task))] = item

    def apply(self, examples: list[Example], split: str) -> int:
        """Correct ``examples`` in place; returns how many changed (counted under ``split``)."""
        n = 0
        for ex in examples:
            if ex.format not in TARGETS:
                continue
            key = (text_key(record_text(ex.record, ex.format)), _label_key(record_target(ex.record, ex.format),
                                                                            self.task))
            item = self._index.get(key)
            if item is not None:
                _set_target(ex.record, ex.format, item.corrected)
                self.matched.add(item.line)
                n += 1
        self.changed[split] = self.changed.get(split, 0) + n
        return n

    def summary(self) -> dict[str, Any]:
        """What the data report records: corrections read, records changed (per split), lines that matched nothing."""
        unmatched = [item.line for item in self.items if item.line not in self.matched]
        return {"file": str(self.path), "read": len(self.items), "records_changed": sum(self.changed.values()),
                "per_split": {k: v for k, v in self.changed.items() if v}, "unmatched": len(unmatched),
                "unmatched_lines": unmatched[:20]}

    def warning(self) -> str | None:
        """The sentence about corrections that matched no record, or None."""
        lines = [item.line for item in self.items if item.line not in self.matched]
        if not lines:
            return None
        shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
        return (f"{len(lines)} of {len(self.items)} corrections (data.corrections) matched no record with that text "
                f"and label (lines {shown} of {self.path.name}): the data changed, or they were applied already.")


def _label_key(value: Any, task: str) -> Any:
    kind = task_kind(task)
    if kind.numeric:
        return float(value) if _is_number(value) else None
    if kind.labelled:
        return " ".join(str(value).split()).casefold()
    return text_key(value) if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read(path: str | Path, task: str, labels: list[str] | None) -> Corrections:
    """The checked corrections of ``path`` (``data.corrections``).

    Raises:
        UserError: a task without labels or targets, a missing or empty file, or every bad line (``file:line``):
            not a JSON object, a missing key, a label or correction that is not one of ``task.labels`` (a number
            for regression, text for generation), or a correction that changes nothing.
    """
    kind = task_kind(task)
    if not (kind.labelled or kind.numeric or kind.family == "generation"):
        raise UserError(f"corrections change gold labels or generation targets; a {task} task has none to correct: "
                        "remove data.corrections", source="data.corrections")
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError("no such corrections file; check data.corrections", source=str(path))
    items, problems = [], []
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                items.append(_correction(line, number, task, labels))
            except UserError as exc:
                problems.append((f"{path}:{number}", exc.message))
    if not items and not problems:
        raise UserError("the corrections file is empty; it needs one {\"text\", \"label\", \"corrected\"} object "
                        "per line", source=str(path))
    if problems:
        more = len(problems) - MAX_PROBLEMS
        shown = problems[:MAX_PROBLEMS] + ([(str(path), f"and {more} more bad lines")] if more > 0 else [])
        raise UserError(shown[0][1], source=shown[0][0], problems=shown)
    return Corrections(path, task, items)


def _correction(line: str, number: int, task: str, labels: list[str] | None) -> Correction:
    """One line checked (raises UserError with the problem; the caller adds ``file:line``)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise UserError('each line must be a JSON object {"text", "label", "corrected", ...}')
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        raise UserError(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; each "
                        'correction needs "text", "label" (the gold label now) and "corrected" (the right one)')
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise UserError("'text' must be the record's input, a non-empty string")
    split = row.get("split")
    if split is not None and split not in SPLITS:
        raise UserError(f"split {str(split)[:40]!r} is not one of {', '.join(SPLITS)}")
    label, corrected = (_value(row[key], key, task, labels) for key in ("label", "corrected"))
    if _label_key(label, task) == _label_key(corrected, task):
        raise UserError(f"'corrected' is the gold label already ({str(label)[:60]!r}); remove the line")
    return Correction(number, row["text"], label, corrected, split)


def _value(value: Any, key: str, task: str, labels: list[str] | None) -> Any:
    """A label or target of a correction, checked for ``task`` (a class name is folded onto ``task.labels``)."""
    kind = task_kind(task)
    if kind.numeric:
        if not _is_number(value):
            raise UserError(f"{key!r} is {json.dumps(value)[:40]}; a regression label is a finite number")
        return float(value)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
        raise UserError(f"{key!r} must be a non-empty {'label' if kind.labelled else 'text'}")
    if kind.labelled and labels is not None:
        folded = {" ".join(lab.split()).casefold(): lab for lab in labels}
        found = folded.get(" ".join(str(value).split()).casefold())
        if found is None:
            raise UserError(f"{key} {str(value)[:60]!r} is not one of task.labels {labels}")
        return found
    return str(value)
