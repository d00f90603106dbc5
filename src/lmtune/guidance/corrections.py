"""Corrections of gold labels: a person says a record's label is wrong and what it should be.

Each correction names the run and split it was seen in, the record's line in that split's file, and the record's
input text and gold label as the run's prepared data holds them (read by the server, never sent by a browser). A
correction is withdrawn, never deleted, by the annotator who made it or the studio's owner. :func:`export` writes
the live ones as the JSONL that ``data.corrections`` reads (:mod:`lmtune.data.corrections`).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from lmtune.errors import UserError
from lmtune.guidance import db

SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    split TEXT NOT NULL,
    record INTEGER NOT NULL,
    text TEXT NOT NULL,
    label TEXT NOT NULL,
    corrected TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    annotator TEXT NOT NULL,
    created_at REAL NOT NULL,
    withdrawn_at REAL,
    withdrawn_by TEXT
);
CREATE INDEX IF NOT EXISTS corrections_by_run ON corrections (run, split, record);
"""
SPLITS = ("train", "validation", "test")
MAX_REASON = 1000


class NotFound(Exception):
    """No correction has this id."""


class NotYours(Exception):
    """Only the annotator who made a correction, or the studio's owner, may withdraw it."""


def add(conn: sqlite3.Connection, *, run: str, split: str, record: int, text: str, label: str, corrected: str,
        reason: str, annotator: str) -> dict[str, Any]:
    """Store a correction (committed when this returns) and return it.

    Raises:
        UserError: an unknown split, a correction equal to the gold label, or a reason that is not text or too long.
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}", source="split")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise UserError(f"the reason is text of at most {MAX_REASON} characters", source="reason")
    if corrected == label:
        raise UserError(f"{corrected!r} is the gold label already; pick the label it should have", source="corrected")
    with db.transaction(conn):
        cursor = conn.execute(
            "INSERT INTO corrections (run, split, record, text, label, corrected, reason, annotator, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run, split, record, text, label, corrected, reason.strip(), annotator, time.time()))
    return get(conn, cursor.lastrowid)


def get(conn: sqlite3.Connection, correction: int) -> dict[str, Any]:
    """One correction by id.

    Raises:
        NotFound: no correction has this id.
    """
    row = conn.execute("SELECT * FROM corrections WHERE id = ?", (correction,)).fetchone()
    if row is None:
        raise NotFound(f"no correction {correction}")
    return dict(row)


def listed(conn: sqlite3.Connection, run: str | None = None, split: str | None = None,
           withdrawn: bool = False) -> list[dict[str, Any]]:
    """Corrections, newest first: of one run (and split) when given, the withdrawn ones too when asked."""
    where, args = ["1 = 1"], []
    if run is not None:
        where.append("run = ?")
        args.append(run)
    if split is not None:
        where.append("split = ?")
        args.append(split)
    if not withdrawn:
        where.append("withdrawn_at IS NULL")
    query = f"SELECT * FROM corrections WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC"
    return [dict(row) for row in conn.execute(query, args)]


def withdraw(conn: sqlite3.Connection, correction: int, who: str, owner: bool) -> dict[str, Any]:
    """Withdraw a correction (it stays stored, marked withdrawn); returns it.

    Args:
        who: the annotator asking.
        owner: whether the studio's owner asks (may withdraw anyone's).

    Raises:
        NotFound: no correction has this id.
        NotYours: someone else's correction, and the asker is not the owner.
    """
    with db.transaction(conn):
        found = get(conn, correction)
        if not owner and found["annotator"] != who:
            raise NotYours(f"correction {correction} is {found['annotator']}'s; only they or the studio's owner may "
                           "withdraw it")
        if found["withdrawn_at"] is None:
            conn.execute("UPDATE corrections SET withdrawn_at = ?, withdrawn_by = ? WHERE id = ?",
                         (time.time(), who, correction))
    return get(conn, correction)


def export(conn: sqlite3.Connection, run: str | None = None) -> list[dict[str, Any]]:
    """The live corrections as ``data.corrections`` lines, oldest first: the latest one per (text, label)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in reversed(listed(conn, run)):
        key = (row["text"], row["label"])
        latest.pop(key, None)  # re-inserted: the file's order is that of each record's latest correction
        latest[key] = row
    return [{"text": r["text"], "label": r["label"], "corrected": r["corrected"], "split": r["split"],
             "run": r["run"], "record": r["record"], "annotator": r["annotator"], "reason": r["reason"],
             "at": datetime.fromtimestamp(r["created_at"], UTC).isoformat(timespec="seconds")}
            for r in latest.values()]
