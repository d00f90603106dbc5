"""The server's persistent state in SQLite: uploaded files, fine-tuning jobs and their events.

The server and the job worker process both write here (WAL mode; a short connection per call).
Status changes name the status they expect to leave (``UPDATE ... WHERE status IN (...)``), so a
cancel and a worker finishing at the same moment cannot overwrite each other.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL,
    purpose TEXT NOT NULL, status TEXT NOT NULL, path TEXT NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, model TEXT NOT NULL, base_ref TEXT NOT NULL,
    training_file TEXT NOT NULL, validation_file TEXT, hyperparameters TEXT NOT NULL, method TEXT NOT NULL,
    suffix TEXT, seed INTEGER NOT NULL, metadata TEXT, recipe TEXT NOT NULL, run_dir TEXT NOT NULL,
    fine_tuned_model_name TEXT NOT NULL, status TEXT NOT NULL, fine_tuned_model TEXT, finished_at INTEGER,
    error TEXT, trained_tokens INTEGER, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id);
"""


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class Store:
    """Files, jobs and events of one state directory.

    Args:
        path: the SQLite database file (created with its tables if missing).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _db(self):
        return _Connection(self.path)

    # ------------------------------------------------------------------ files

    def add_file(self, row: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT INTO files (id, filename, bytes, created_at, purpose, status, path, summary) "
                       "VALUES (:id, :filename, :bytes, :created_at, :purpose, :status, :path, :summary)",
                       {**row, "summary": json.dumps(row["summary"])})

    def file(self, file_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return _decode(row, ("summary",))

    def files(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM files ORDER BY rowid DESC").fetchall()
        return [_decode(r, ("summary",)) for r in rows]

    def delete_file(self, file_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    # ------------------------------------------------------------------ jobs

    def add_job(self, row: dict[str, Any]) -> None:
        row = {**row, **{k: json.dumps(row[k]) for k in ("hyperparameters", "method", "metadata", "recipe")}}
        keys = list(row)
        with self._db() as db:
            db.execute(f"INSERT INTO jobs ({', '.join(keys)}) VALUES ({', '.join(':' + k for k in keys)})", row)

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _decode(row, JOB_JSON)

    def jobs(self, statuses: Iterable[str] | None = None, newest_first: bool = True) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM jobs", ()
        if statuses is not None:
            statuses = tuple(statuses)
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = statuses
        query += " ORDER BY rowid " + ("DESC" if newest_first else "ASC")
        with self._db() as db:
            rows = db.execute(query, args).fetchall()
        return [_decode(r, JOB_JSON) for r in rows]

    def next_job(self) -> dict[str, Any] | None:
        """The job to run next: one left running by a stopped server first, then the oldest queued."""
        for status in ("running", "queued"):
            found = self.jobs([status], newest_first=False)
            if found:
                return found[0]
        return None

    def update_job(self, job_id: str, expect: Iterable[str], **fields) -> bool:
        """Set ``fields`` if the job's status is one of ``expect``; return whether it was."""
        expect = tuple(expect)
        fields = {k: json.dumps(v) if k in JOB_JSON and v is not None else v for k, v in fields.items()}
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        marks = ", ".join(f":_s{i}" for i in range(len(expect)))
        args = {**fields, "_id": job_id, **{f"_s{i}": s for i, s in enumerate(expect)}}
        with self._db() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = :_id AND status IN ({marks})", args)
            return cur.rowcount == 1

    def finish_job(self, job_id: str, status: str, expect: Iterable[str] = ("running",), **fields) -> bool:
        """Move a job to a terminal status (with its finish time) if its status is one of ``expect``."""
        return self.update_job(job_id, expect, status=status, finished_at=int(time.time()), **fields)

    # ------------------------------------------------------------------ events

    def add_event(self, job_id: str, message: str, level: str = "info", kind: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        with self._db() as db:
            db.execute("INSERT INTO events (job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?)",
                       (job_id, int(time.time()), level, message, kind, json.dumps(data) if data else None))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's events, newest first (as the API lists them)."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM events WHERE job_id = ? ORDER BY id DESC", (job_id,)).fetchall()
        return [_decode(r, ("data",)) for r in rows]


JOB_JSON = ("hyperparameters", "method", "metadata", "recipe", "error")


class _Connection:
    """``with`` a short-lived connection that commits on success and always closes."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.row_factory = sqlite3.Row
        return self.db

    def __exit__(self, kind, exc, tb) -> None:
        with closing(self.db):
            if kind is None:
                self.db.commit()
            else:
                self.db.rollback()


def _decode(row: sqlite3.Row | None, json_fields: tuple[str, ...]) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in json_fields:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out
