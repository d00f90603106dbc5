"""Labelling queues: records handed to annotators one at a time, their answers kept with their history.

A queue copies its pool's records into the database when it is created (:func:`create`), so the pool file may
change or go and nothing is lost. :func:`next_record` hands an annotator the first record, in the queue's order,
that they have not answered and that still needs an annotator (one, or two for the records ``overlap`` picked),
counting the other annotators' answers and live leases; the record is leased to them for :data:`LEASE_S`, and
all of it happens in one ``BEGIN IMMEDIATE`` transaction, so two annotators asking at once never both get a
record only one is needed for. :func:`answer` commits before it returns; re-answering marks the old row
``replaced`` and :func:`undo` marks it ``undone`` (nothing is deleted), and undo hands the record back.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.guidance import db, label_pool
from lmtune.guidance.label_pool import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS label_queues (
    name TEXT PRIMARY KEY, task TEXT NOT NULL, labels TEXT, fields TEXT NOT NULL, pool TEXT NOT NULL,
    recipe TEXT, guidelines TEXT NOT NULL, overlap REAL NOT NULL, ordering TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS label_records (
    queue TEXT NOT NULL REFERENCES label_queues(name), idx INTEGER NOT NULL, position REAL NOT NULL,
    record TEXT NOT NULL, shown TEXT NOT NULL, prelabel TEXT, confidence REAL, needed INTEGER NOT NULL,
    source TEXT NOT NULL, PRIMARY KEY (queue, idx)
);
CREATE INDEX IF NOT EXISTS label_records_order ON label_records (queue, position, idx);
CREATE TABLE IF NOT EXISTS label_leases (
    queue TEXT NOT NULL, annotator TEXT NOT NULL, idx INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (queue, annotator)
);
CREATE INDEX IF NOT EXISTS label_leases_record ON label_leases (queue, idx);
CREATE TABLE IF NOT EXISTS label_answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, idx INTEGER NOT NULL, annotator TEXT NOT NULL,
    kind TEXT NOT NULL, label TEXT, note TEXT, state TEXT NOT NULL, answered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS label_answers_record ON label_answers (queue, idx, state);
CREATE INDEX IF NOT EXISTS label_answers_who ON label_answers (queue, annotator, state);
"""
LEASE_S = 600.0
KINDS = ("label", "skip", "flag")
MAX_ANSWER_CHARS = 100_000
MAX_NOTE_CHARS = 2_000

# The first record in order this annotator has not answered whose needed annotators are not yet covered by the
# other annotators' live answers (a skip covers nothing) and live leases.
_OPEN = """
SELECT r.idx FROM label_records r WHERE r.queue = :q {only}
  AND NOT EXISTS (SELECT 1 FROM label_answers a WHERE a.queue = :q AND a.idx = r.idx AND a.annotator = :who
                  AND a.state = 'live')
  AND r.needed > (SELECT COUNT(DISTINCT a.annotator) FROM label_answers a WHERE a.queue = :q AND a.idx = r.idx
                  AND a.state = 'live' AND a.kind != 'skip' AND a.annotator != :who)
               + (SELECT COUNT(*) FROM label_leases l WHERE l.queue = :q AND l.idx = r.idx AND l.annotator != :who
                  AND l.expires > :now)
ORDER BY r.position, r.idx LIMIT 1
"""


class QueueNotFound(LookupError):
    """No labelling queue of that name."""


class NotHanded(Exception):
    """An answer to a record the annotator was not handed (the API answers 409), or nothing to undo."""


@dataclass
class Queue:
    """A stored queue's settings and where it came from."""

    settings: Settings
    pool: str
    ordering: str  # "rank" (an `lmtune active` queue file) or "file"
    created_at: float

    @property
    def name(self) -> str:
        return self.settings.name


def create(conn: sqlite3.Connection, pool: Path, queue: Settings) -> Queue:
    """Read the pool (checked, before anything is written) and store it as a new queue.

    Raises:
        UserError: a bad pool (``file:line``), or a queue of that name already.
    """
    rows = label_pool.read(pool, queue)
    ordering = "rank" if label_pool.ranked(rows) else "file"
    now = time.time()
    with db.transaction(conn):
        if conn.execute("SELECT 1 FROM label_queues WHERE name = ?", (queue.name,)).fetchone():
            raise UserError(f"there is already a queue called {queue.name!r}; pick another name", source="name")
        conn.execute("INSERT INTO label_queues VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (queue.name, queue.task, json.dumps(queue.labels), json.dumps(queue.fields), str(pool),
                      queue.recipe, queue.guidelines, queue.overlap, ordering, now))
        conn.executemany("INSERT INTO label_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(queue.name, r.index, r.position, json.dumps(r.record), r.shown, r.prelabel, r.confidence,
                           r.needed, r.source) for r in rows])
    return Queue(queue, str(pool), ordering, now)


def find(conn: sqlite3.Connection, name: str) -> Queue:
    """The stored queue ``name``.

    Raises:
        QueueNotFound: there is none.
    """
    row = conn.execute("SELECT * FROM label_queues WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise QueueNotFound(name)
    settings = Settings(row["name"], row["task"], json.loads(row["labels"]), json.loads(row["fields"]),
                        row["guidelines"], row["overlap"], row["recipe"])
    return Queue(settings, row["pool"], row["ordering"], row["created_at"])


def names(conn: sqlite3.Connection) -> list[str]:
    """Every queue's name, oldest first."""
    return [row["name"] for row in conn.execute("SELECT name FROM label_queues ORDER BY created_at, name")]


def progress(conn: sqlite3.Connection, queue: str, annotator: str | None = None) -> dict[str, int]:
    """``mine`` (records this annotator answered, skips included), ``total`` records, ``answered`` (the
    annotators' answers that count towards what is ``needed``: one per record, two on overlap records)."""
    total, needed = conn.execute("SELECT COUNT(*), COALESCE(SUM(needed), 0) FROM label_records WHERE queue = ?",
                                 (queue,)).fetchone()
    answered = conn.execute(
        "SELECT COALESCE(SUM(MIN(r.needed, c.n)), 0) FROM label_records r JOIN (SELECT idx, COUNT(DISTINCT annotator)"
        " AS n FROM label_answers WHERE queue = :q AND state = 'live' AND kind != 'skip' GROUP BY idx) c"
        " ON c.idx = r.idx WHERE r.queue = :q", {"q": queue}).fetchone()[0]
    mine = 0
    if annotator is not None:
        mine = conn.execute("SELECT COUNT(*) FROM label_answers WHERE queue = ? AND annotator = ? AND state = 'live'",
                            (queue, annotator)).fetchone()[0]
    return {"mine": mine, "total": total, "answered": answered, "needed": needed}


def next_record(conn: sqlite3.Connection, queue: str, annotator: str, now: float | None = None) -> dict[str, Any]:
    """The record ``annotator`` labels next, leased to them, and the progress.

    Returns:
        ``{"record": {"index", "text", "prelabel", "confidence", "source"} | None, "progress": {...}}``;
        ``record`` is None when nothing is left for them.

    Raises:
        QueueNotFound: no such queue.
    """
    find(conn, queue)
    now = time.time() if now is None else now
    params = {"q": queue, "who": annotator, "now": now}
    with db.transaction(conn):
        held = conn.execute(_OPEN.format(only="AND r.idx = (SELECT idx FROM label_leases WHERE queue = :q AND "
                                              "annotator = :who)"), params).fetchone()
        found = held or conn.execute(_OPEN.format(only=""), params).fetchone()
        if found is None:
            conn.execute("DELETE FROM label_leases WHERE queue = ? AND annotator = ?", (queue, annotator))
        else:
            conn.execute("INSERT OR REPLACE INTO label_leases VALUES (?, ?, ?, ?)",
                         (queue, annotator, found["idx"], now + LEASE_S))
        shown = None if found is None else record(conn, queue, found["idx"])
        return {"record": shown, "progress": progress(conn, queue, annotator)}


def record(conn: sqlite3.Connection, queue: str, index: int) -> dict[str, Any]:
    """What the labelling page shows of record ``index``."""
    row = conn.execute("SELECT idx, shown, prelabel, confidence, source FROM label_records WHERE queue = ? AND "
                       "idx = ?", (queue, index)).fetchone()
    return {"index": row["idx"], "text": row["shown"], "prelabel": row["prelabel"], "confidence": row["confidence"],
            "source": Path(row["source"]).name}  # file:line, without the server's folders


def _checked(queue: Queue, kind: Any, label: Any, note: Any) -> tuple[str, str | None, str | None]:
    """The answer's kind, label (or text) and note, checked against the queue.

    Raises:
        UserError: an unknown kind, a label not in the queue's labels, empty or oversized text, a bad note.
    """
    if kind not in KINDS:
        raise UserError(f"kind is one of {', '.join(KINDS)}, not {kind!r}", source="kind")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
        raise UserError(f"a note is text of at most {MAX_NOTE_CHARS} characters", source="note")
    if kind == "skip" or (kind == "flag" and label in (None, "")):
        return kind, None, note or None
    if queue.settings.labelled:
        if label not in queue.settings.labels:
            raise UserError(f"label {str(label)[:100]!r} is not one of this queue's labels: "
                            f"{', '.join(queue.settings.labels)}", source="label")
    elif not isinstance(label, str) or not label.strip() or len(label) > MAX_ANSWER_CHARS:
        raise UserError(f"the answer is text of 1 to {MAX_ANSWER_CHARS} characters", source="text")
    return kind, label, note or None


def answer(conn: sqlite3.Connection, queue: str, annotator: str, index: Any, kind: Any, label: Any = None,
           note: Any = None) -> dict[str, Any]:
    """Store ``annotator``'s answer to record ``index`` (committed when this returns) and release their lease.

    Args:
        kind: ``label`` (``label`` one of the queue's labels, or free text for a generation queue), ``skip``, or
            ``flag`` (``label`` and ``note`` optional).

    Raises:
        QueueNotFound: no such queue.
        UserError: a bad kind, label, text or note.
        NotHanded: the record is not leased to the annotator and they have not answered it before.
    """
    found = find(conn, queue)
    kind, label, note = _checked(found, kind, label, note)
    if not isinstance(index, int) or isinstance(index, bool):
        raise UserError("index is the record's number, as the queue handed it out", source="index")
    with db.transaction(conn):
        leased = conn.execute("SELECT 1 FROM label_leases WHERE queue = ? AND annotator = ? AND idx = ?",
                              (queue, annotator, index)).fetchone()
        live = conn.execute("SELECT id FROM label_answers WHERE queue = ? AND annotator = ? AND idx = ? AND state = "
                            "'live'", (queue, annotator, index)).fetchall()
        if not leased and not live:
            raise NotHanded(f"record {index} of {queue!r} was not handed to {annotator}; ask for the next record")
        conn.execute("UPDATE label_answers SET state = 'replaced' WHERE queue = ? AND annotator = ? AND idx = ? AND "
                     "state = 'live'", (queue, annotator, index))
        now = time.time()
        cursor = conn.execute("INSERT INTO label_answers (queue, idx, annotator, kind, label, note, state, "
                              "answered_at) VALUES (?, ?, ?, ?, ?, ?, 'live', ?)",
                              (queue, index, annotator, kind, label, note, now))
        if leased:
            conn.execute("DELETE FROM label_leases WHERE queue = ? AND annotator = ?", (queue, annotator))
    return {"id": cursor.lastrowid, "index": index, "kind": kind, "label": label, "note": note,
            "answered_at": now, "replaced": bool(live)}


def undo(conn: sqlite3.Connection, queue: str, annotator: str, now: float | None = None) -> dict[str, Any]:
    """Withdraw ``annotator``'s latest live answer (marked ``undone``) and lease its record back to them.

    Returns:
        ``{"undone": {"index", "kind", "label"}, "record": ..., "progress": ...}``: the record to show again.

    Raises:
        QueueNotFound: no such queue.
        NotHanded: the annotator has no live answer in this queue.
    """
    find(conn, queue)
    now = time.time() if now is None else now
    with db.transaction(conn):
        last = conn.execute("SELECT id, idx, kind, label FROM label_answers WHERE queue = ? AND annotator = ? AND "
                            "state = 'live' ORDER BY id DESC LIMIT 1", (queue, annotator)).fetchone()
        if last is None:
            raise NotHanded(f"{annotator} has no answer in {queue!r} to undo")
        conn.execute("UPDATE label_answers SET state = 'undone' WHERE id = ?", (last["id"],))
        conn.execute("INSERT OR REPLACE INTO label_leases VALUES (?, ?, ?, ?)",
                     (queue, annotator, last["idx"], now + LEASE_S))
        return {"undone": {"index": last["idx"], "kind": last["kind"], "label": last["label"]},
                "record": record(conn, queue, last["idx"]), "progress": progress(conn, queue, annotator)}


def answers(conn: sqlite3.Connection, queue: str, annotator: str | None = None) -> list[dict[str, Any]]:
    """The live answers (one annotator's, or everyone's), oldest first."""
    who = "" if annotator is None else "AND a.annotator = :who"
    rows = conn.execute(f"SELECT a.id, a.idx, a.annotator, a.kind, a.label, a.note, a.answered_at, r.shown "
                        f"FROM label_answers a JOIN label_records r ON r.queue = a.queue AND r.idx = a.idx "
                        f"WHERE a.queue = :q AND a.state = 'live' {who} ORDER BY a.id", {"q": queue, "who": annotator})
    return [{"id": r["id"], "index": r["idx"], "annotator": r["annotator"], "kind": r["kind"], "label": r["label"],
             "note": r["note"], "answered_at": r["answered_at"], "text": r["shown"]} for r in rows]


def summary(conn: sqlite3.Connection, queue: str, annotator: str | None = None,
            everyone: bool = False) -> dict[str, Any]:
    """A queue's row on the queue list; ``everyone``: with the names of those who answered (the owner's view)."""
    found = find(conn, queue)
    row = {"name": found.name, "task": found.settings.task, "labels": found.settings.labels,
           "overlap": found.settings.overlap, "ordering": found.ordering, "created_at": found.created_at,
           "progress": progress(conn, queue, annotator)}
    if everyone:
        row["annotators"] = [r[0] for r in conn.execute(
            "SELECT DISTINCT annotator FROM label_answers WHERE queue = ? AND state = 'live' ORDER BY annotator",
            (queue,))]
        row["pool"], row["recipe"] = found.pool, found.settings.recipe
    return row


def by_annotator(conn: sqlite3.Connection, queue: str) -> list[dict[str, Any]]:
    """Each annotator's live answers in ``queue``: how many, of each kind, and when the latest was given."""
    rows = conn.execute("SELECT annotator, COUNT(*) AS n, SUM(kind = 'label') AS labels, SUM(kind = 'skip') AS skips,"
                        " SUM(kind = 'flag') AS flags, MAX(answered_at) AS latest FROM label_answers WHERE queue = ? "
                        "AND state = 'live' GROUP BY annotator ORDER BY annotator", (queue,))
    return [{"annotator": r["annotator"], "answered": r["n"], "labelled": r["labels"], "skipped": r["skips"],
             "flagged": r["flags"], "latest": r["latest"]} for r in rows]
