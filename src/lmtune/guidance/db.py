"""The guidance database: one SQLite file in WAL mode, opened per request, each module creating its own tables.

WAL lets readers (the queue page, exports) run beside the writer (an annotator's answer); ``synchronous=FULL``
makes a committed answer survive a killed process and a power cut; ``busy_timeout`` makes concurrent writers
wait for each other instead of failing. :func:`transaction` is ``BEGIN IMMEDIATE``: a read-then-write (which
record does this annotator get next) holds the write lock from its first read, so two annotators cannot be
handed the same record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE = "guidance.sqlite"
BUSY_TIMEOUT_MS = 10_000
_created: set[tuple[str, str]] = set()  # (database, schema) pairs already applied in this process


def path_in(state_dir: Path) -> Path:
    """The database file in the studio's state folder."""
    return Path(state_dir) / FILE


def connect(path: Path, schema: str = "") -> sqlite3.Connection:
    """A connection to ``path`` (created with its folder when missing), with ``schema`` applied once.

    Args:
        path: the database file.
        schema: ``CREATE TABLE IF NOT EXISTS ...`` statements of the calling module.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    key = (str(path.resolve()), schema)
    if schema and key not in _created:
        conn.executescript(schema)
        _created.add(key)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def opened(path: Path, schema: str = "") -> Iterator[sqlite3.Connection]:
    """:func:`connect`, closed on leaving."""
    conn = connect(path, schema)
    try:
        yield conn
    finally:
        conn.close()
