"""The eight record formats, detected per record, and column mapping onto them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmtune.errors import UserError
from lmtune.kinds.tasks import task_kind, tasks_of_format


@dataclass(frozen=True)
class Format:
    """A record format: the fields that identify it and the fields that must be non-empty.

    ``accepts``, when set, must also hold of a record's values for it to be in this format (an unpaired
    preference record is a ``{"prompt", "completion"}`` record whose ``label`` is true or false).
    """

    name: str
    keys: frozenset[str]
    optional: frozenset[str] = frozenset()
    accepts: Callable[[dict[str, Any]], bool] | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        return self.keys <= set(record) and (self.accepts is None or self.accepts(record))

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task types that read this format (each task kind lists its formats), its default first."""
        return tasks_of_format(self.name)


#: What an unpaired preference record's ``label`` may say: desirable (true) or not (false). CSV and TSV
#: cells are text, so the words count too.
DESIRABLE = {True: True, False: False, "true": True, "false": False}


def desirable(label: Any) -> bool | None:
    """An unpaired preference label as a bool, or None when it is neither true nor false."""
    key = label.strip().casefold() if isinstance(label, str) else label
    return DESIRABLE.get(key) if isinstance(key, (bool, str)) else None


# Most specific first: {"prompt", "chosen", "rejected"} also has "prompt".
FORMATS: tuple[Format, ...] = (
    Format("preference", frozenset({"prompt", "chosen", "rejected"})),
    # KTO's unpaired records (TRL's "unpaired preference" type): is this completion desirable?
    Format("unpaired_preference", frozenset({"prompt", "completion", "label"}),
           accepts=lambda record: desirable(record["label"]) is not None),
    Format("chat", frozenset({"messages"})),
    Format("instruction", frozenset({"instruction", "output"}), frozenset({"input"})),
    Format("completion", frozenset({"prompt", "completion"})),
    Format("classification", frozenset({"text", "label"})),
    Format("text", frozenset({"text"})),
    # A prompt alone (task.type reward: GRPO samples the completions); its other fields reach the grader.
    Format("prompt", frozenset({"prompt"})),
)

# Fields that hold text the model reads or writes (a "label" may also be a number).
TEXT_FIELDS = ("text", "prompt", "completion", "instruction", "input", "output", "chosen", "rejected")


@dataclass
class Example:
    """One record in a known format, with where it came from."""

    record: dict[str, Any]
    source: str
    format: str
    extra: dict[str, Any] = field(default_factory=dict)


def detect(record: dict[str, Any], task: str | None = None) -> Format | None:
    """The most specific format whose identifying keys (and values, where it checks them) the record has.

    A format recognised by its values yields to the next one for a ``task`` that does not read it: a
    generation file may well carry a true/false ``label`` column beside ``prompt`` and ``completion``.
    """
    found = [fmt for fmt in FORMATS if fmt.matches(record)]
    if task is not None and len(found) > 1 and found[0].accepts is not None and task not in found[0].tasks:
        found = found[1:]
    return found[0] if found else None


def map_fields(record: dict[str, Any], fields: dict[str, str], source: str) -> dict[str, Any]:
    """Rename source columns onto format fields (``fields: {text: review, label: rating}``)."""
    if not fields:
        return record
    out = {k: v for k, v in record.items() if k not in fields.values()}
    for target, column in fields.items():
        if column not in record:
            raise UserError(f"column {column!r} (data.fields.{target}) is missing; the record has "
                            f"{sorted(record)}", source=source)
        out[target] = record[column]
    return out


def to_example(record: dict[str, Any], source: str, task: str, labels: list[str] | None,
               label_map: dict[str, str] | None = None, fields: dict[str, str] | None = None) -> Example:
    """Validate one mapped record and wrap it as an Example.

    Args:
        fields: the ``data.fields`` mapping, so an error can name the source column.

    Raises:
        UserError: no known format, a format the task cannot use, empty fields, a field that is not
            text (an object, list, binary or null value), unknown or non-finite label.
    """
    fmt = detect(record, task)
    if fmt is None:
        raise UserError(f"record matches no format (keys {sorted(record)}); expected e.g. "
                        '{"text", "label"}, {"prompt", "completion"}, {"instruction", "output"}, '
                        '{"messages"} or {"text"}; map other columns with data.fields', source=source)
    if task not in fmt.tasks:
        _check_desirable(record, task, source)
        missing = _missing_for(task, record)
        if missing:
            raise UserError(f"missing field {missing!r}: a {task} record needs {_formats_for(task)}",
                            source=source)
        raise UserError(f"a {fmt.name} record cannot train a {task} task; expected "
                        f"{_formats_for(task)}", source=source)
    for key in fmt.keys:
        _check_filled(record[key], key, source)
    core = {k: record[k] for k in fmt.keys | fmt.optional if k in record}
    for key in core.keys() & set(TEXT_FIELDS):
        core[key] = _as_text(core[key], key, source, fields or {})
    # Binary columns (images, blobs) can be neither JSON nor text; they are not needed to train.
    extra = {k: v for k, v in record.items() if k not in core and not isinstance(v, (bytes, bytearray))}
    if fmt.name == "chat":
        _check_messages(core["messages"], source)
    if fmt.name == "preference" and " ".join(core["chosen"].split()) == " ".join(core["rejected"].split()):
        raise UserError("chosen and rejected are the same text, so the pair teaches nothing; fix or remove "
                        "the record", source=source)
    if fmt.name == "classification":
        core["label"] = _check_label(core["label"], task, labels, source, label_map or {})
    if fmt.name == "unpaired_preference":
        core["label"] = desirable(core["label"])
    return Example(core, source, fmt.name, extra)


def _check_desirable(record: dict[str, Any], task: str, source: str) -> None:
    """A ``{"prompt", "completion", "label"}`` record for a task that reads unpaired preferences, whose label
    is not true or false: say so, rather than that a completion record cannot train the task."""
    unpaired = next(fmt for fmt in FORMATS if fmt.name == "unpaired_preference")
    if task in unpaired.tasks and unpaired.keys <= set(record):
        raise UserError(f"label {record['label']!r} is not true or false: an unpaired preference record's label "
                        "says whether its completion is desirable (true) or not (false)", source=source)


def _describe(value: Any) -> str:
    """What a non-text value is, in a user's words (Parquet structs and maps arrive as dicts/lists)."""
    if isinstance(value, dict):
        return "a struct/object"
    if isinstance(value, (list, tuple)):
        return "a list (array or map)"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else f"a {type(value).__name__}"


def _as_text(value: Any, key: str, source: str, fields: dict[str, str]) -> str:
    """A text field's value as a string: numbers are written out, anything else is an error (its repr
    would otherwise be trained on). A null optional field (``input``) is empty text."""
    if isinstance(value, str):
        return value
    if value is None and key == "input":
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    column = f"field {key!r}" + (f" (column {fields[key]!r})" if key in fields else "")
    raise UserError(f"{column} is {_describe(value)}, not text; map data.fields.{key} to a text column "
                    "or fix the record", source=source)


def _missing_for(task: str, record: dict[str, Any]) -> str | None:
    """The one key a record lacks to be in a format this task takes, if exactly one is missing."""
    for fmt in FORMATS:
        gap = fmt.keys - set(record)
        if task in fmt.tasks and len(gap) == 1 and len(fmt.keys) > 1:
            return next(iter(gap))
    return None


def _formats_for(task: str) -> str:
    return " or ".join("{" + ", ".join(sorted(f.keys)) + "}" for f in FORMATS if task in f.tasks)


class EmptyFieldError(UserError):
    """A required field is empty (a recipe may choose to drop such records instead)."""


def _check_filled(value: Any, key: str, source: str) -> None:
    if value is None or (isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str)
                                                              else value)):
        raise EmptyFieldError(f"field {key!r} is empty; fill it, remove the record, or set "
                              "data.clean.empty: drop", source=source)


def _check_messages(messages: Any, source: str) -> None:
    if not isinstance(messages, list):
        raise UserError('"messages" must be a list of {"role", "content"} objects', source=source)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise UserError(f'messages[{i}] needs "role" and "content"', source=source)
        if msg["role"] not in ("system", "user", "assistant"):
            raise UserError(f"messages[{i}].role is {msg['role']!r}; use system, user or assistant",
                            source=source)
        if not isinstance(msg["content"], str):
            raise UserError(f"messages[{i}].content is {_describe(msg['content'])}, not text; give every "
                            "turn its text as a string", source=source)
    if messages[-1]["role"] != "assistant":
        raise UserError("the last message must be the assistant's reply to learn", source=source)
    if not messages[-1]["content"].strip():
        raise EmptyFieldError("the assistant's reply (the last message) is empty; fill it, remove the record, "
                              "or set data.clean.empty: drop", source=source)


def _check_label(label: Any, task: str, labels: list[str] | None, source: str, label_map: dict[str, Any]) -> Any:
    if isinstance(label, (dict, list, tuple, bytes, bytearray)):
        raise UserError(f"field 'label' is {_describe(label)}, not a class name or number; fix the record or "
                        "map data.fields.label to another column", source=source)
    if task_kind(task).numeric:
        label = label_map.get(" ".join(str(label).split()), label)
        try:
            value = float(label) if not isinstance(label, bool) else math.nan
        except (TypeError, ValueError):
            raise UserError(f"label {label!r} is not a number", source=source) from None
        if not math.isfinite(value):
            raise UserError(f"label {label!r} is not a finite number (NaN and infinity cannot be learned); "
                            "fix or remove the record", source=source)
        return value
    text = " ".join(str(label).split())
    text = label_map.get(text, text)
    if labels is not None and text not in labels:
        # Case and spacing are not meaningful in a class name: " Positive" is positive.
        folded = {lab.casefold(): lab for lab in labels}
        text = folded.get(text.casefold(), text)
    if labels is not None and text not in labels:
        raise UserError(f"label {text!r} is not one of task.labels {labels}; fix the record or add "
                        "the label to task.labels", source=source)
    return text


def load_examples(rows, fields: dict[str, str], task: str, labels: list[str] | None,
                  dropped: list[str] | None = None, label_map: dict[str, str] | None = None,
                  max_chars: int | None = None) -> list[Example]:
    """All examples of :func:`iter_examples`, as a list."""
    return list(iter_examples(rows, fields, task, labels, dropped, label_map, max_chars))


def iter_examples(rows, fields: dict[str, str], task: str, labels: list[str] | None,
                  dropped: list[str] | None = None, label_map: dict[str, str] | None = None,
                  max_chars: int | None = None):
    """Map, detect and validate rows one at a time; one file must hold one format.

    Args:
        rows: ``(source, record)`` pairs from :func:`lmtune.data.io.iter_rows`.
        fields: ``data.fields`` column mapping.
        task: the recipe's task type.
        labels: ``task.labels`` for classification.
        dropped: when a list is given, records with an empty required field are skipped and their
            sources appended to it; otherwise such a record is an error.
        label_map: label renames (``data.clean.label_map``), applied before checking ``labels``.
        max_chars: most characters of text one record may hold (``data.max_record_chars``); a larger
            record is an error here, before cleaning and near-duplicate search would spend memory on it.
    """
    first: Example | None = None
    kinds: set[bool] = set()  # unpaired preference labels seen: both are needed
    for source, raw in rows:
        try:
            ex = to_example(map_fields(raw, fields, source), source, task, labels, label_map, fields)
        except EmptyFieldError:
            if dropped is None:
                raise
            dropped.append(source)
            continue
        if max_chars is not None and (size := text_chars(ex)) > max_chars:
            raise UserError(f"record holds {size:,} characters of text, more than data.max_record_chars "
                            f"({max_chars:,}); split it into smaller records or raise data.max_record_chars",
                            source=source)
        if first is None:
            first = ex
        elif ex.format != first.format:
            raise UserError(f"mixed formats: this record is {ex.format} but {first.source} is "
                            f"{first.format}; keep one format per file", source=source)
        if ex.format == "unpaired_preference":
            kinds.add(ex.record["label"])
        yield ex
    if first is not None and first.format == "unpaired_preference" and len(kinds) < 2:
        _one_kind(first, kinds.pop())


def _one_kind(first: Example, label: bool) -> None:
    """KTO learns where desirable and undesirable completions differ; a file of one kind cannot show it."""
    kind, other = ("desirable", "false") if label else ("undesirable", "true")
    raise UserError(f"every unpaired preference record here is {kind} (label {str(label).lower()}); KTO needs both "
                    f"kinds: add records with label {other}", source=first.source.rsplit(":", 1)[0])


def text_chars(example: Example) -> int:
    """Characters of text in an example: its text fields and chat turns."""
    rec = example.record
    return (sum(len(rec[k]) for k in TEXT_FIELDS if isinstance(rec.get(k), str))
            + sum(len(m["content"]) for m in rec.get("messages", ())))
