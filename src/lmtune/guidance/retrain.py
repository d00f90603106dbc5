"""Closing the loop: a queue's labels merged into its recipe's training data, as a new run of that recipe.

A retrain writes the queue's export (:mod:`lmtune.guidance.label_export`) to a file of its own and returns the
recipe with that file added to ``data.add_train``: the labels join the train split after the split, so the new
run's validation and test records are the old run's and the two compare like for like. Each retrain is recorded
(``label_retrains``) with how many labelled records it used, so the next one can ask for enough *new* labels.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.guidance import db, label_export, labelling

SCHEMA = """
CREATE TABLE IF NOT EXISTS label_retrains (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    run TEXT NOT NULL,
    base_run TEXT,
    labels_file TEXT NOT NULL,
    labels INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""
DEFAULT_MIN_NEW = 10


def previous(conn: sqlite3.Connection, queue: str) -> list[dict[str, Any]]:
    """The queue's retrains, oldest first."""
    rows = conn.execute("SELECT run, base_run, labels_file, labels, created_at FROM label_retrains WHERE queue = ? "
                        "ORDER BY id", (queue,))
    return [dict(row) for row in rows]


def labels_file(conn: sqlite3.Connection, queue: str, folder: Path, min_new: int = DEFAULT_MIN_NEW) -> tuple[Path, int]:
    """The queue's labelled records written (atomically) to ``folder/<queue>-labels-<n>.jsonl``, and their number.

    Raises:
        UserError: a queue without a recipe, or fewer than ``min_new`` labelled records since the last retrain.
    """
    found = labelling.find(conn, queue)
    if not found.settings.recipe:
        raise UserError("this queue was made without a recipe, so there is nothing to retrain; make a queue from "
                        "the recipe to retrain, or export the labels and add them to a recipe's data.add_train",
                        source="queue")
    records = label_export.export(conn, queue)
    before = max((r["labels"] for r in previous(conn, queue)), default=0)
    if len(records) - before < min_new:
        raise UserError(f"{len(records) - before} new labelled records since the last retrain ({before} then, "
                        f"{len(records)} now); label at least {min_new} new ones first", source="min_new")
    path = Path(folder) / f"{queue}-labels-{len(previous(conn, queue)) + 1}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_jsonl(path, records)
    return path, len(records)


def recipe_text(recipe: Path, queue: str, labels: Path, round_number: int) -> tuple[str, str]:
    """The recipe's YAML with ``labels`` added to ``data.add_train`` and a new name; (text, the recipe's own name).

    Raises:
        UserError: the recipe file is gone or not a YAML mapping with a ``data`` section.
    """
    try:
        raw = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the queue's recipe: {exc}", source=str(recipe)) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise UserError("the queue's recipe has no data: section", source=str(recipe))
    name = str(raw.get("name") or Path(recipe).stem)
    raw["name"] = f"{name}-{queue}-r{round_number}"
    raw["data"]["add_train"] = [*(raw["data"].get("add_train") or []), str(Path(labels).resolve())]
    return yaml.safe_dump(raw, sort_keys=False), name


def record(conn: sqlite3.Connection, queue: str, run: str, base_run: str | None, labels: Path, count: int) -> None:
    """Remember a retrain that was queued."""
    with db.transaction(conn):
        conn.execute("INSERT INTO label_retrains (queue, run, base_run, labels_file, labels, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (queue, run, base_run, str(labels), count, time.time()))
