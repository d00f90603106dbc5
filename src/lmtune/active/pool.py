"""The unlabelled pool of ``lmtune active``: a file in the recipe's data format whose records may lack the label.

Records are read with the project's readers (``file:line`` on a malformed one) and mapped with the recipe's
``data.fields``. The target a labeller fills in is the task's: ``label`` for classification; ``completion``,
``output`` or the assistant's last turn (``messages``) for generation. Without ``--oracle`` a target found in
the pool is not used (it is reported once and dropped: a pool is what nobody has labelled yet). With
``--oracle FIELD``, FIELD holds each record's true target, hidden from every strategy and revealed only for the
records a round selects, as a labeller would.

Each record becomes an :class:`~lmtune.data.formats.Example` with an empty target, so the recipe's template
renders its prompt exactly as evaluation renders a test example's.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data import io
from lmtune.data.formats import Example, map_fields, to_example
from lmtune.errors import UserError
from lmtune.kinds.tasks import task_kind
from lmtune.progress import say

#: The field a labeller fills in, by what the record holds (classification records always fill ``label``).
CHAT = "messages"


@dataclass
class Pool:
    """The pool's records as read, and what the strategies and the oracle need of them."""

    path: Path
    records: list[dict[str, Any]]  # as in the file, the target column removed (unless it is the oracle's)
    lines: list[int | str]  # each record's line in the file (``row N`` for Parquet), for the queue's pool_line
    examples: list[Example]  # renderable: the target left empty
    target: str  # the format field a labeller fills: label, completion, output or messages
    gold: list[Any] | None = None  # with --oracle: each record's true target, checked as training data is
    carried_labels: int = 0  # records that carried a target without --oracle (dropped)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def keep(self, indices: list[int]) -> Pool:
        """A pool of only the records at ``indices`` (in that order)."""
        return dataclasses.replace(
            self, records=[self.records[i] for i in indices], lines=[self.lines[i] for i in indices],
            examples=[self.examples[i] for i in indices],
            gold=None if self.gold is None else [self.gold[i] for i in indices], notes=list(self.notes))

    def solved(self, index: int) -> Example:
        """Record ``index`` as an example with its oracle target (a few-shot example of a later round)."""
        example = copy.deepcopy(self.examples[index])
        if self.target == CHAT:
            example.record[CHAT][-1] = {"role": "assistant", "content": self.gold[index]}
        else:
            example.record[self.target] = self.gold[index]
        return example

    def labelled(self, index: int, column: str) -> dict[str, Any]:
        """Record ``index`` with its oracle target under ``column`` (the recipe's target column), as training
        data in the recipe's format."""
        record = copy.deepcopy(self.records[index])
        if self.target == CHAT:
            record[column] = [*record[column], {"role": "assistant", "content": self.gold[index]}]
        else:
            record[column] = self.gold[index]
        return record


def target_of(task: str, record: dict[str, Any], fields: dict[str, str]) -> str:
    """The format field a labeller fills in for ``record`` of a ``task`` task."""
    if task_kind(task).labelled:
        return "label"
    if fields.get(CHAT, CHAT) in record:
        return CHAT
    return "output" if fields.get("instruction", "instruction") in record else "completion"


def read_pool(path: Path, recipe, oracle: str | None = None) -> Pool:
    """Read and check every pool record (nothing is scored yet).

    Raises:
        UserError: a missing, empty or malformed file (``file:line``), a record the task cannot read, or with
            ``oracle`` a record without that field or whose value is not a valid target (``file:line``).
    """
    path = Path(path)
    task, fields = recipe.task.type, recipe.data.fields
    pool = Pool(path, [], [], [], "label", [] if oracle else None)
    for source, raw in io.iter_rows(path):
        target = target_of(task, raw, fields)
        column = fields.get(target, target)
        record, carried = _without_target(raw, target, column)
        pool.carried_labels += carried and not oracle
        if oracle is not None:
            gold = _gold(raw, oracle, source)
            if oracle != column:
                record.pop(oracle, None)
            example = _example({**record, column: gold} if target != CHAT else record, target, source, recipe, gold)
            pool.gold.append(example.record[CHAT][-1]["content"] if target == CHAT else example.record[target])
        example = _blank(_example(record, target, source, recipe, None), target)
        if pool.examples and example.format != pool.examples[0].format:
            raise UserError(f"mixed formats: this record is {example.format} but {pool.examples[0].source} is "
                            f"{pool.examples[0].format}; keep one format per file", source=source)
        pool.examples.append(example)
        pool.records.append(record)
        pool.lines.append(_line(source, len(pool.lines) + 1))
        pool.target = target
    if pool.carried_labels:
        say(f"warning: {pool.carried_labels} pool records carry a label; it is ignored (use --oracle FIELD to "
            "simulate labelling)")  # a warning, not progress: --quiet does not hide it
    return pool


def _without_target(raw: dict[str, Any], target: str, column: str) -> tuple[dict[str, Any], bool]:
    """The record without its target (the label column, or a chat's final assistant turn) and whether it had one."""
    record = dict(raw)
    if target == CHAT:
        messages = record.get(column)
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                and messages[-1].get("role") == "assistant":
            record[column] = messages[:-1]
            return record, True
        return record, False
    carried = column in record and record[column] not in (None, "")
    record.pop(column, None)
    return record, carried


def _gold(raw: dict[str, Any], oracle: str, source: str) -> Any:
    value = raw.get(oracle)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"no value in field {oracle!r}, which --oracle names as the hidden true label of every "
                        f"pool record (the record has {sorted(raw)})", source=source)
    return value


def _example(record: dict[str, Any], target: str, source: str, recipe, gold: Any) -> Example:
    """``record`` checked as the recipe's data is checked: with ``gold`` as its target, or a stand-in one."""
    fields = recipe.data.fields
    mapped = map_fields(record, {k: c for k, c in fields.items() if k != target or gold is not None}, source)
    if target == CHAT:
        reply = gold if gold is not None else "?"
        mapped = {**mapped, CHAT: [*(mapped.get(CHAT) or []), {"role": "assistant", "content": reply}]}
    elif gold is None:
        stand_in = recipe.task.labels[0] if target == "label" and recipe.task.labels else "?"
        mapped = {**mapped, target: stand_in}
    return to_example(mapped, source, recipe.task.type, recipe.task.labels, recipe.data.clean.label_map, fields)


def _blank(example: Example, target: str) -> Example:
    """The example with its target emptied: its prompt renders, its stand-in answer is never seen."""
    if target == CHAT:
        example.record[CHAT][-1] = {"role": "assistant", "content": ""}
    else:
        example.record[target] = ""
    return example


def _line(source: str, position: int) -> int | str:
    """The line (or ``row N``) part of ``file:line``; the position when there is none."""
    tail = source.rsplit(":", 1)[-1].strip()
    if tail.isdigit():
        return int(tail)
    return tail if tail.startswith("row ") else position
