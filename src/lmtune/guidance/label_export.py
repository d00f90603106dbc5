"""A queue's answers as training data: one JSONL record per labelled record, in the recipe's format.

Each exported record is the pool record as it was (without the bookkeeping keys ``lmtune active`` adds to its
queue file) with the answer under the recipe's label column (``data.fields.label``, default ``label``), or for a
generation queue under its target (``completion``, ``output``, or an assistant turn added to ``messages``),
plus who answered (``annotator``, or ``annotators`` when several did) and when (``labelled_at``, UTC ISO 8601,
the latest answer). A record several annotators labelled takes the majority label (a tie: the label answered
first among the tied ones) and carries ``agreement: false`` when they disagree (``true`` when they agree). A
record only skipped, or only flagged without a label, is left out; a flagged one carries ``flagged: true``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from lmtune.guidance import label_pool, labelling


def export(conn: sqlite3.Connection, queue: str) -> list[dict[str, Any]]:
    """The queue's labelled records, in the queue's order.

    Raises:
        QueueNotFound: no such queue.
    """
    found = labelling.find(conn, queue)
    given: dict[int, list[sqlite3.Row]] = {}
    for row in conn.execute("SELECT idx, annotator, kind, label, answered_at FROM label_answers WHERE queue = ? AND "
                            "state = 'live' AND kind != 'skip' ORDER BY id", (queue,)):
        given.setdefault(row["idx"], []).append(row)
    out = []
    for row in conn.execute("SELECT idx, record FROM label_records WHERE queue = ? ORDER BY position, idx", (queue,)):
        answers = given.get(row["idx"], [])
        labelled = [a for a in answers if a["label"] is not None]
        if labelled:
            out.append(_record(json.loads(row["record"]), found.settings, answers, labelled))
    return out


def majority(labels: list[str]) -> str:
    """The most frequent label; among equally frequent ones, the one answered first (``labels`` in answer order)."""
    counts = Counter(labels)
    top = max(counts.values())
    return next(label for label in labels if counts[label] == top)


def _record(record: dict[str, Any], settings, answers: list[sqlite3.Row],
            labelled: list[sqlite3.Row]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in label_pool.BOOKKEEPING}
    labels = [a["label"] for a in labelled]
    chosen = majority(labels)
    column = label_pool.target(record, settings)
    if column == settings.fields.get(label_pool.CHAT, label_pool.CHAT) and not settings.labelled:
        turns = out.get(column) if isinstance(out.get(column), list) else []
        out[column] = [*turns, {"role": "assistant", "content": chosen}]
    else:
        out[column] = chosen
    names = list(dict.fromkeys(a["annotator"] for a in labelled))
    if len(names) == 1:
        out["annotator"] = names[0]
    else:
        out["annotators"] = names
        out["agreement"] = len(set(labels)) == 1
    latest = max(a["answered_at"] for a in answers)
    out["labelled_at"] = datetime.fromtimestamp(latest, UTC).isoformat(timespec="seconds")
    if any(a["kind"] == "flag" for a in answers):
        out["flagged"] = True
    return out
