"""Annotators: a name each, known to the studio by a token that only its SHA-256 is kept of.

The studio's owner adds annotators (the token is shown once, inside the link to send them); an annotator's
requests carry the token, and every answer stored names who gave it. Tokens are compared as hashes, so the
database never holds one that could be replayed.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time

from lmtune.errors import UserError
from lmtune.guidance import db, naming

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
"""
LOCAL = "local"  # who answers on a studio without a token when no annotator token is given


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """``name`` when it is a usable annotator name.

    Raises:
        UserError: not 1-40 letters, digits, ``_``, ``.`` or ``-`` (starting with a letter or digit).
    """
    return naming.check_name(name, "an annotator")


def create(conn: sqlite3.Connection, name: str) -> str:
    """Add annotator ``name``; returns its token (shown once: only its hash is stored).

    Raises:
        UserError: a bad name, or one already taken.
    """
    check_name(name)
    token = secrets.token_urlsafe(24)
    try:
        with db.transaction(conn):
            conn.execute("INSERT INTO annotators (name, token_sha256, created_at) VALUES (?, ?, ?)",
                         (name, _digest(token), time.time()))
    except sqlite3.IntegrityError:
        raise UserError(f"there is already an annotator called {name!r}; pick another name", source="name") from None
    return token


def find(conn: sqlite3.Connection, token: str) -> str | None:
    """The name of the annotator whose token this is, or None."""
    if not token:
        return None
    row = conn.execute("SELECT name FROM annotators WHERE token_sha256 = ?", (_digest(token),)).fetchone()
    return row["name"] if row else None


def names(conn: sqlite3.Connection) -> list[str]:
    """Every annotator's name, oldest first."""
    return [row["name"] for row in conn.execute("SELECT name FROM annotators ORDER BY created_at, name")]
