"""Blind A/B judgements: two systems' outputs for the same input, shown in an order the annotator cannot know.

A *round* is made from a finished run of a free-text task and two of its systems: each line of
``predictions/<system>.jsonl`` (``input``, ``reference``, ``prediction``, the same examples in the same order for
every system) becomes an *item*, except where the two outputs read the same (equal once whitespace is collapsed:
there is nothing to prefer, and the pair could not train anything). Each item draws, from a RNG seeded by the
round's seed and the item's index, whether system B is shown on the left (``flipped``); the page only ever shows
"A" and "B". An *answer* is the side chosen as SHOWN (``A``, ``B`` or ``tie``), or ``skip`` (the annotator cannot
tell: the item leaves their queue and counts in no win rate), with an optional reason; an annotator has one live
answer per item, and judging it again keeps the old one as history (``live = 0``).
Results (:mod:`lmtune.guidance.judge_results`) are the only place the sides are mapped back to systems.
"""

from __future__ import annotations

import random
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.guidance import db, naming
from lmtune.kinds.tasks import find as find_task
from lmtune.run_dir import RunDir, shown_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS judge_rounds (
    name TEXT PRIMARY KEY,
    run TEXT NOT NULL,              -- the run's name in the studio
    run_path TEXT NOT NULL,         -- its directory, where human_eval.json is written
    system_a TEXT NOT NULL,
    system_b TEXT NOT NULL,
    seed INTEGER NOT NULL,          -- seeds each item's side draw
    n_items INTEGER NOT NULL,
    n_identical INTEGER NOT NULL,   -- examples left out: both systems' outputs read the same
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS judge_items (
    round TEXT NOT NULL REFERENCES judge_rounds(name),
    idx INTEGER NOT NULL,           -- 0..n_items-1, the order annotators see them in
    line INTEGER NOT NULL,          -- 1-based line of the predictions files
    input TEXT NOT NULL,
    reference TEXT,
    output_a TEXT NOT NULL,         -- system_a's output
    output_b TEXT NOT NULL,         -- system_b's output
    flipped INTEGER NOT NULL,       -- 1: system_b is shown as "A" (and system_a as "B")
    PRIMARY KEY (round, idx)
);
"""
_ANSWERS = """
CREATE TABLE IF NOT EXISTS judge_answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round TEXT NOT NULL,
    idx INTEGER NOT NULL,
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'skip')),   -- as SHOWN
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    live INTEGER NOT NULL DEFAULT 1,                             -- 0: replaced by a later answer
    FOREIGN KEY (round, idx) REFERENCES judge_items(round, idx)
);
"""
_LIVE_INDEX = """
CREATE UNIQUE INDEX IF NOT EXISTS judge_answers_live ON judge_answers(round, idx, annotator) WHERE live = 1;
"""
SCHEMA += _ANSWERS + _LIVE_INDEX
CHOICES = ("A", "B", "tie", "skip")
MAX_REASON = 2000


@contextmanager
def opened(path: Path) -> Iterator[sqlite3.Connection]:
    """The guidance database at ``path`` with the judging tables, upgraded first if it predates ``skip``."""
    with db.opened(path, SCHEMA) as conn:
        upgrade(conn)
        yield conn


def upgrade(conn: sqlite3.Connection) -> None:
    """Rebuild ``judge_answers`` of a database written before ``skip`` was a choice (its CHECK refuses it), keeping
    every row, in one transaction (SQLite cannot alter a CHECK in place)."""
    def current() -> bool:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'judge_answers'").fetchone()
        return row is None or "'skip'" in row["sql"]

    if current():
        return
    with db.transaction(conn):
        if current():  # another connection upgraded it meanwhile
            return
        conn.execute(_ANSWERS.replace("IF NOT EXISTS judge_answers (", "judge_answers_new ("))
        conn.execute("INSERT INTO judge_answers_new SELECT * FROM judge_answers")
        conn.execute("DROP TABLE judge_answers")
        conn.execute("ALTER TABLE judge_answers_new RENAME TO judge_answers")
        conn.execute(_LIVE_INDEX)


class RoundNotFound(LookupError):
    """No judging round of that name."""


@dataclass(frozen=True)
class Round:
    """One judging round: which run, which two systems, how many items."""

    name: str
    run: str
    run_path: str
    system_a: str
    system_b: str
    seed: int
    n_items: int
    n_identical: int
    created_at: float

    def public(self, owner: bool) -> dict[str, Any]:
        """The round as the API shows it; the system names only to the owner (annotators judge blind)."""
        shown = {"name": self.name, "run": self.run, "n_items": self.n_items, "created_at": self.created_at}
        if owner:
            shown.update(system_a=self.system_a, system_b=self.system_b, n_identical=self.n_identical)
        return shown


def free_text(task: str | None) -> bool:
    """Whether ``task``'s answers are free text (generation, chat, reward), so two of them can be compared."""
    kind = find_task(task)
    return kind is not None and kind.per_example and not kind.labelled and not kind.numeric


def run_task(run: RunDir) -> str | None:
    """The run's task type: ``eval.json``'s, else the recipe's ``task.type``; None when neither says."""
    try:
        task = run.read_eval().get("task")
    except (OSError, ValueError, AttributeError):
        task = None
    if not isinstance(task, str):
        try:
            task = (run.read_recipe().get("task") or {}).get("type")
        except (OSError, ValueError, AttributeError):
            task = None
    return task if isinstance(task, str) else None


def systems_of(run: RunDir) -> list[str]:
    """The systems of a free-text run that have predictions; ``[]`` for any other run."""
    return run.prediction_systems() if free_text(run_task(run)) else []


def create(conn: sqlite3.Connection, run: RunDir, run_name: str, system_a: str, system_b: str,
           name: str | None = None, seed: int | None = None) -> Round:
    """A new round of ``run_name`` (the run in ``run``): ``system_a`` against ``system_b``, committed.

    Args:
        name: the round's name; None for ``<run>-<n>`` (no system names: annotators see round names).
        seed: seeds which side each system is shown on; None for a random one (kept in the round).

    Raises:
        UserError: a run whose answers are not free text, a system it has no predictions of, the same system
            twice, predictions files of different examples, nothing left to judge, or a name taken or malformed.
    """
    items, identical = _items(run, run_name, system_a, system_b)
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    with db.transaction(conn):
        name = _free_name(conn, run_name) if name is None else _check_name(conn, name)
        created = Round(name, run_name, str(run.path), system_a, system_b, seed, len(items), identical, time.time())
        conn.execute("INSERT INTO judge_rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (created.name, created.run, created.run_path, system_a, system_b, seed, len(items), identical,
                      created.created_at))
        conn.executemany("INSERT INTO judge_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(name, i, line, text, ref, out_a, out_b, int(flipped(seed, i)))
                          for i, (line, text, ref, out_a, out_b) in enumerate(items)])
    return created


def flipped(seed: int, index: int) -> bool:
    """Whether item ``index`` of a round seeded ``seed`` shows system B on the left (as "A")."""
    return random.Random(f"{seed}:{index}").random() < 0.5


def _items(run: RunDir, run_name: str, system_a: str, system_b: str) -> tuple[list[tuple], int]:
    """``(line, input, reference, output of A, output of B)`` per example whose outputs differ, and how many read
    the same."""
    task = run_task(run)
    if not free_text(task):
        raise UserError(f"run {run_name!r} is a {task or 'run without a task type'} run; blind A/B judging compares "
                        "free-text answers (generation, chat or reward runs)", source="run")
    have = run.prediction_systems()
    for key, system in (("system_a", system_a), ("system_b", system_b)):
        if not isinstance(system, str) or system not in have:
            raise UserError(f"run {run_name!r} has no predictions of system {str(system)[:100]!r}; it has "
                            f"{', '.join(have) or 'none yet (it has not evaluated)'}", source=key)
    if system_a == system_b:
        raise UserError(f"system_a and system_b are both {system_a!r}; pick two different systems", source="system_b")
    rows_a, rows_b = run.read_predictions(system_a), run.read_predictions(system_b)
    if len(rows_a) != len(rows_b) or any(a.get("input") != b.get("input") for a, b in zip(rows_a, rows_b)):
        raise UserError(f"the predictions of {system_a!r} and {system_b!r} are not of the same examples in the same "
                        "order, so they cannot be compared side by side", source="system_b")
    items, identical = [], 0
    for line, (a, b) in enumerate(zip(rows_a, rows_b), start=1):
        out_a, out_b = shown_text(a.get("prediction")), shown_text(b.get("prediction"))
        if " ".join(out_a.split()) == " ".join(out_b.split()):
            identical += 1
            continue
        reference = a.get("reference")
        reference = None if reference is None else shown_text(reference)
        items.append((line, shown_text(a.get("input")), reference, out_a, out_b))
    if not items:
        raise UserError(f"{system_a!r} and {system_b!r} give the same output on all {identical} examples; there is "
                        "nothing to judge", source="system_b")
    return items, identical


def _check_name(conn: sqlite3.Connection, name: Any) -> str:
    naming.check_name(name, "a round", longest=80)
    if conn.execute("SELECT 1 FROM judge_rounds WHERE name = ?", (name,)).fetchone():
        raise UserError(f"there is already a round called {name!r}; pick another name", source="name")
    return name


def _free_name(conn: sqlite3.Connection, run_name: str) -> str:
    """``<run>-<n>``, the first n not taken (the run's name made URL-safe)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-._")[:60] or "round"
    taken = {row["name"] for row in conn.execute("SELECT name FROM judge_rounds")}
    return next(f"{base}-{n}" for n in range(1, len(taken) + 2) if f"{base}-{n}" not in taken)


def rounds(conn: sqlite3.Connection) -> list[Round]:
    """Every round, newest first."""
    return [Round(**dict(row)) for row in conn.execute("SELECT * FROM judge_rounds ORDER BY created_at DESC")]


def get(conn: sqlite3.Connection, name: str) -> Round:
    """The round called ``name``.

    Raises:
        RoundNotFound: there is none.
    """
    row = conn.execute("SELECT * FROM judge_rounds WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise RoundNotFound(f"no judging round called {str(name)[:100]!r}")
    return Round(**dict(row))


def next_item(conn: sqlite3.Connection, name: str, annotator: str) -> dict[str, Any] | None:
    """The first item ``annotator`` has no live answer for, as shown (sides "A" and "B"); None when all are done."""
    row = conn.execute("SELECT * FROM judge_items i WHERE round = ? AND NOT EXISTS (SELECT 1 FROM judge_answers a "
                       "WHERE a.round = i.round AND a.idx = i.idx AND a.annotator = ? AND a.live = 1) "
                       "ORDER BY idx LIMIT 1", (name, annotator)).fetchone()
    return None if row is None else shown(row)


def shown(item: sqlite3.Row) -> dict[str, Any]:
    """An item as the annotator sees it: input, reference and the two outputs by side, never by system."""
    left, right = (item["output_b"], item["output_a"]) if item["flipped"] else (item["output_a"], item["output_b"])
    return {"index": item["idx"], "input": item["input"], "reference": item["reference"], "A": left, "B": right}


def progress(conn: sqlite3.Connection, name: str, annotator: str) -> dict[str, int]:
    """How many of the round's items ``annotator`` has judged, of how many."""
    total = get(conn, name).n_items
    done = conn.execute("SELECT COUNT(*) FROM judge_answers WHERE round = ? AND annotator = ? AND live = 1",
                        (name, annotator)).fetchone()[0]
    return {"done": done, "total": total}


def answer(conn: sqlite3.Connection, name: str, annotator: str, index: Any, choice: Any, reason: Any = "") -> None:
    """Store ``annotator``'s answer to item ``index`` (committed); an earlier live one becomes history.

    Raises:
        RoundNotFound: no such round.
        UserError: an index the round does not have, a choice other than ``A``, ``B``, ``tie`` or ``skip``, a
            reason that is not text or is longer than :data:`MAX_REASON` characters.
    """
    get(conn, name)
    if choice not in CHOICES:
        raise UserError(f"choice must be A, B or tie (the side as shown) or skip, not {str(choice)[:50]!r}",
                        source="choice")
    reason = "" if reason is None else reason
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise UserError(f"reason must be text of at most {MAX_REASON} characters", source="reason")
    if isinstance(index, bool) or not isinstance(index, int):
        raise UserError(f"index must be a whole number, not {str(index)[:50]!r}", source="index")
    with db.transaction(conn):
        if conn.execute("SELECT 1 FROM judge_items WHERE round = ? AND idx = ?", (name, index)).fetchone() is None:
            raise UserError(f"round {name!r} has no item {index}", source="index")
        conn.execute("UPDATE judge_answers SET live = 0 WHERE round = ? AND idx = ? AND annotator = ? AND live = 1",
                     (name, index, annotator))
        conn.execute("INSERT INTO judge_answers (round, idx, annotator, choice, reason, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (name, index, annotator, choice, reason.strip(), time.time()))


def count_answers(conn: sqlite3.Connection, name: str) -> int:
    """How many live answers round ``name`` has, from every annotator."""
    return conn.execute("SELECT COUNT(*) FROM judge_answers WHERE round = ? AND live = 1", (name,)).fetchone()[0]


def own_answers(conn: sqlite3.Connection, name: str, annotator: str, history: bool = False) -> list[dict[str, Any]]:
    """``annotator``'s answers in round ``name`` as given (sides as shown), oldest first; live ones only unless
    ``history``."""
    rows = conn.execute("SELECT idx, choice, reason, created_at, live FROM judge_answers WHERE round = ? AND "
                        f"annotator = ?{'' if history else ' AND live = 1'} ORDER BY id", (name, annotator))
    return [{"index": r["idx"], "choice": r["choice"], "reason": r["reason"], "created_at": r["created_at"],
             "live": bool(r["live"])} for r in rows]


def live_answers(conn: sqlite3.Connection, name: str) -> list[dict[str, Any]]:
    """Every annotator's live answer in round ``name`` with its item, un-blinded: ``winner`` is ``"a"`` (system_a),
    ``"b"`` (system_b), ``"tie"`` or ``"skip"``. For results and exports only, never for an annotator's page."""
    rows = conn.execute("SELECT a.idx, a.annotator, a.choice, a.reason, a.created_at, i.flipped, i.input, "
                        "i.output_a, i.output_b FROM judge_answers a JOIN judge_items i ON a.round = i.round AND "
                        "a.idx = i.idx WHERE a.round = ? AND a.live = 1 ORDER BY a.idx, a.id", (name,))
    return [{"index": r["idx"], "annotator": r["annotator"], "winner": unblind(r["choice"], bool(r["flipped"])),
             "reason": r["reason"], "created_at": r["created_at"], "input": r["input"], "output_a": r["output_a"],
             "output_b": r["output_b"]} for r in rows]


def unblind(choice: str, flipped_item: bool) -> str:
    """The system a shown choice picks: ``"a"``, ``"b"``, or ``"tie"`` / ``"skip"`` as they are."""
    if choice in ("tie", "skip"):
        return choice
    left = "b" if flipped_item else "a"
    return left if choice == "A" else ("a" if left == "b" else "b")
