"""What a labelling queue is made of: its settings (from a recipe or given), and its pool read into rows.

A queue's pool is any data file :func:`lmtune.data.io.iter_rows` reads (JSONL, CSV, TSV, Parquet). When every
record carries ``rank`` and ``pool_line``, the pool is an ``lmtune active`` queue file: it is shown in rank order
and its ``prelabel`` (a label, or the model's draft for a generation task) and ``confidence`` are shown beside
each record. Otherwise records are shown in file order. Which record goes to two annotators (``overlap``) is
decided by a hash of (queue, record index), so the same queue over the same pool always overlaps the same ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data.io import iter_rows
from lmtune.errors import UserError
from lmtune.guidance import naming
from lmtune.kinds.tasks import find as find_task
from lmtune.recipe import load_recipe

#: The keys ``lmtune active`` adds to each pool record of its queue file; they are not part of the data.
BOOKKEEPING = ("prelabel", "confidence", "score", "strategy", "rank", "pool_line")
MAX_RECORDS = 200_000
MAX_GUIDELINES = 20_000
CHAT = "messages"


@dataclass
class Settings:
    """A queue's settings, checked: what the annotators answer and where the text and the answer live."""

    name: str
    task: str  # "classification", or a generation task (free-text answers)
    labels: list[str] | None
    fields: dict[str, str] = field(default_factory=dict)  # the recipe's data.fields (format field -> column)
    guidelines: str = ""
    overlap: float = 0.0
    recipe: str | None = None

    @property
    def labelled(self) -> bool:
        return self.labels is not None


@dataclass
class Row:
    """One pool record as the queue keeps it."""

    index: int  # 0-based place in the pool file
    position: float  # the order annotators get it in (rank, or the index)
    record: dict[str, Any]  # as in the file, bookkeeping keys included
    shown: str  # the text an annotator reads
    prelabel: str | None
    confidence: float | None
    source: str  # file:line
    needed: int  # annotators: 2 when picked for overlap, else 1


def settings(name: Any, recipe: Path | None = None, labels: Any = None, task: Any = None, guidelines: Any = "",
             overlap: Any = 0.0) -> Settings:
    """Check a queue's settings; the recipe, when given, supplies the task, its labels and its field mapping.

    Raises:
        UserError: a bad name, an unreadable recipe, a task that is neither classification nor generation,
            fewer than two distinct labels for classification, guidelines too long, overlap outside 0..1.
    """
    naming.check_name(name, "a queue")
    fields: dict[str, str] = {}
    if recipe is not None:
        loaded = load_recipe(recipe)
        task = task or loaded.task.type
        labels = labels or loaded.task.labels
        fields = dict(loaded.data.fields)
    task = task or "classification"
    kind = find_task(task) if isinstance(task, str) else None
    if kind is None or not (kind.labelled or kind.family == "generation"):
        raise UserError(f"a labelling queue needs a classification or generation task, not {task!r}; name a "
                        "recipe, or give labels for classification", source="task")
    return Settings(name, task, _labels(labels) if kind.labelled else None, fields, _guidelines(guidelines),
                    _overlap(overlap), str(recipe) if recipe is not None else None)


def _labels(labels: Any) -> list[str]:
    if isinstance(labels, str):
        labels = [part.strip() for part in labels.split(",")]
    if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise UserError("labels are missing: name a recipe with task.labels, or give at least two labels, e.g. "
                        "negative, positive", source="labels")
    labels = [x.strip() for x in labels]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UserError(f"a classification queue needs at least two distinct labels, got {labels}", source="labels")
    return labels


def _guidelines(text: Any) -> str:
    text = "" if text is None else text
    if not isinstance(text, str) or len(text) > MAX_GUIDELINES:
        raise UserError(f"guidelines are text of at most {MAX_GUIDELINES} characters", source="guidelines")
    return text


def _overlap(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value <= 1:
        raise UserError(f"overlap is the share of records that two annotators label, from 0 to 1; got {value!r}",
                        source="overlap")
    return float(value)


def overlapped(queue: str, index: int, overlap: float) -> bool:
    """Whether record ``index`` of ``queue`` goes to two annotators: a reproducible draw with probability
    ``overlap``."""
    draw = int.from_bytes(hashlib.sha256(f"{queue}\0{index}".encode()).digest()[:8], "big") / 2**64
    return draw < overlap


def read(path: Path, queue: Settings) -> list[Row]:
    """Every record of the pool file, checked, in the order annotators will get them.

    Raises:
        UserError: a missing, empty or malformed file (``file:line``), a record without the text to show, or
            more than :data:`MAX_RECORDS` records.
    """
    rows = []
    for index, (source, record) in enumerate(iter_rows(path)):
        if index >= MAX_RECORDS:
            raise UserError(f"more than {MAX_RECORDS} records; split the pool into several queues", source=str(path))
        prelabel = record.get("prelabel")
        confidence = record.get("confidence")
        rows.append(Row(index, float(index), record, shown(record, queue, source),
                        None if prelabel is None else str(prelabel),
                        float(confidence) if _number(confidence) else None, source,
                        2 if overlapped(queue.name, index, queue.overlap) else 1))
    if ranked(rows):
        for row in rows:  # an `lmtune active` queue file: best first
            row.position = float(row.record["rank"])
        rows.sort(key=lambda row: (row.position, row.index))
    return rows


def ranked(rows: list[Row]) -> bool:
    """Whether the pool is an ``lmtune active`` queue file (every record has a numeric ``rank`` and a
    ``pool_line``)."""
    return bool(rows) and all(_number(row.record.get("rank")) and "pool_line" in row.record for row in rows)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def shown(record: dict[str, Any], queue: Settings, source: str) -> str:
    """The text an annotator reads: the text field (classification), or the prompt, instruction (and input) or
    conversation so far (generation), each through the recipe's ``data.fields``.

    Raises:
        UserError: the record has none of them.
    """
    col = queue.fields.get
    if queue.labelled:
        options = [col("text", "text")]
    else:
        options = [col("prompt", "prompt"), col("instruction", "instruction"), col(CHAT, CHAT), col("text", "text")]
    for key in options:
        value = record.get(key)
        if key == col(CHAT, CHAT) and isinstance(value, list):
            return "\n\n".join(f"{turn.get('role', '?')}: {turn.get('content', '')}" for turn in value
                               if isinstance(turn, dict))
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            extra = record.get(col("input", "input")) if key == col("instruction", "instruction") else None
            return str(value) + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
    wanted = " or ".join(repr(k) for k in options)
    raise UserError(f"the record has no text to show (no {wanted} field); map the pool's text column with the "
                    "recipe's data.fields", source=source)


def target(record: dict[str, Any], queue: Settings) -> str:
    """The column an answer is written to: the label field, or the generation task's target
    (``completion``, ``output`` beside an instruction, ``messages`` for a conversation)."""
    col = queue.fields.get
    if queue.labelled:
        return col("label", "label")
    if col(CHAT, CHAT) in record:
        return col(CHAT, CHAT)
    return col("output", "output") if col("instruction", "instruction") in record else col("completion", "completion")
