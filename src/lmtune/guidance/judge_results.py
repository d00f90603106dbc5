"""What a judging round adds up to, un-blinded: win counts and rate with an interval, the run's
``human_eval.json``, its report, and the preference pairs the answers make.

``human_eval.json`` holds one entry per round of the run (``{"rounds": [...]}``), rewritten after each answer
(:func:`write_into_run`, atomically, one writer at a time so the last write always counts every committed answer);
``report.html`` shows it as its "Human evaluation" section once :func:`update_report` re-renders it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from lmtune.guidance import judging, win_rate
from lmtune.report.page import write_report
from lmtune.run_dir import RunDir

_WRITING = threading.Lock()  # one human_eval.json writer at a time in this process


def results(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """Round ``name``'s results over every annotator's live answer (see :func:`lmtune.guidance.win_rate.summarize`).

    Raises:
        RoundNotFound: no such round.
    """
    found = judging.get(conn, name)
    summary = win_rate.summarize(judging.live_answers(conn, name))
    return {"round": found.name, "run": found.run, "system_a": found.system_a, "system_b": found.system_b,
            "n_items": found.n_items, "n_identical": found.n_identical, **summary, "updated_at": time.time()}


def write_into_run(conn: sqlite3.Connection, name: str) -> Path:
    """Put round ``name``'s results into its run's ``human_eval.json`` (replacing the round's earlier entry).

    Raises:
        RoundNotFound: no such round; OSError: the run's directory cannot be written.
    """
    with _WRITING:  # results read inside the lock: a later writer has seen every answer an earlier one saw
        found = judging.get(conn, name)
        entry = results(conn, name)
        run = RunDir(found.run_path)
        body = run.read_human_eval()
        rounds = [r for r in body["rounds"] if not (isinstance(r, dict) and r.get("round") == name)]
        run.write_human_eval({**body, "rounds": [*rounds, entry]})
        return run.human_eval


def update_report(conn: sqlite3.Connection, name: str) -> Path:
    """Write round ``name``'s results into its run and re-render the run's ``report.html`` with them.

    Raises:
        RoundNotFound: no such round; OSError: the run's directory cannot be written.
    """
    write_into_run(conn, name)
    return write_report(Path(judging.get(conn, name).run_path))


def pairs(conn: sqlite3.Connection, name: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The preference pairs of round ``name``: ``{"prompt", "chosen", "rejected", "annotator", "reason"}`` for each
    live answer that prefers one side (the ``preference`` data format, ready for ``lmtune data check``).

    Returns:
        The pairs, and how many answers were left out: ``ties``, ``skipped``, and ``empty`` (an output with no
        text, which a preference record cannot hold).
    """
    judging.get(conn, name)
    out, left_out = [], {"ties": 0, "skipped": 0, "empty": 0}
    no_pair = {"tie": "ties", "skip": "skipped"}  # answers that prefer neither side
    for a in judging.live_answers(conn, name):
        if a["winner"] in no_pair:
            left_out[no_pair[a["winner"]]] += 1
            continue
        chosen, rejected = (a["output_a"], a["output_b"]) if a["winner"] == "a" else (a["output_b"], a["output_a"])
        if not (chosen.strip() and rejected.strip() and a["input"].strip()):
            left_out["empty"] += 1
            continue
        pair = {"prompt": a["input"], "chosen": chosen, "rejected": rejected, "annotator": a["annotator"]}
        if a["reason"]:
            pair["reason"] = a["reason"]
        out.append(pair)
    return out, left_out
