"""A run's predictions side by side: the Run page's predictions browser and confusion matrix.

Every system's ``predictions/<system>.jsonl`` has one line per test example in the same order, so rows are
matched across systems by line index (files of different lengths: the shortest decides, and the answer says
so). Parsed files are cached per (path, modification time, size), a bounded number of them, so paging
through a folder of fifty runs reads each file once. A file being written never breaks a page: a torn last
line is left out, and a line in the middle that is not JSON leaves that system's answer empty. A label-scored
system's lines carry ``scores`` (each label's log-likelihood): the softmax of them at the answer is its confidence,
by which the browser can rank a system's answers (its confident errors first).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.evaluate import calibration
from lmtune.run_dir import shown_text
from lmtune.studio.cache import Stamped, stamp

#: Parsed prediction files kept in memory (each a list of (input, reference, prediction, confidence)).
CACHED_FILES = 64
PAGE_LIMIT = 200
CORRECT = ("all", "correct", "incorrect")
SORTS = ("index", "confidence")

Entry = tuple[str, str, str, float | None] | None
_files = Stamped(CACHED_FILES)


def read_file(path: Path) -> list[Entry]:
    """One system's predictions, one entry per line (None for a line that is not a JSON object), cached."""
    if stamp(path) is None:
        return []
    return _files.get(path, [path], lambda: _parse(path))


def _parse(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                entries.append((shown_text(row.get("input")), shown_text(row.get("reference")),
                                shown_text(row.get("prediction")),
                                confidence(row)) if isinstance(row, dict) else None)
    except OSError:
        return []
    while entries and entries[-1] is None:  # a torn last line: the writer has not finished it yet
        entries.pop()
    return entries


def confidence(row: dict[str, Any]) -> float | None:
    """The probability of a prediction line's answer: the softmax of its ``scores`` (label log-likelihoods) at
    the answer, else its own ``confidence``; None when it has neither (a generation, a line without scores)."""
    scores = row.get("scores")
    if isinstance(scores, dict) and scores and all(_finite(v) for v in scores.values()):
        labels, answer = list(scores), row.get("prediction")
        probs = calibration.probabilities(list(scores.values()))
        return float(probs[labels.index(answer)] if isinstance(answer, str) and answer in scores else probs.max())
    said = row.get("confidence")
    return float(said) if _finite(said) and 0.0 <= said <= 1.0 else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Table:
    """The test examples with every system's answer, matched by line index.

    Attributes:
        systems: the systems with predictions, in the page's order.
        inputs / references: per example; the input is the shortest any system was given (few-shot and
            RAG inputs carry more before the question).
        answers: per system, its prediction of each example (None where its line could not be read).
        confidences: per system, the probability of each answer (None without label scores).
        uneven: the systems' files differ in length (only the first ``len(inputs)`` examples are shown).
        labelled: answers are labels, judged right or wrong against the reference.
    """

    systems: list[str]
    inputs: list[str]
    references: list[str]
    answers: dict[str, list[str | None]]
    uneven: bool
    labelled: bool
    confidences: dict[str, list[float | None]]

    def correct(self, system: str, i: int) -> bool | None:
        """Whether ``system`` answered example ``i`` right (labelled tasks only; None otherwise)."""
        answer = self.answers[system][i]
        if not self.labelled or answer is None:
            return None
        return answer.strip() == self.references[i].strip()

    def row(self, i: int) -> dict[str, Any]:
        answers = {s: {"prediction": self.answers[s][i], "correct": self.correct(s, i),
                       **({"confidence": round(c, 4)} if (c := self.confidences[s][i]) is not None else {})}
                   for s in self.systems if self.answers[s][i] is not None}
        return {"index": i, "input": self.inputs[i], "reference": self.references[i], "answers": answers}


def table(files: dict[str, Path], labelled: bool) -> Table:
    """The table of the systems' prediction files (``{system: path}``; systems with no rows are left out)."""
    read = {s: entries for s, path in files.items() if (entries := read_file(path))}
    n = min((len(entries) for entries in read.values()), default=0)
    inputs, references = [], []
    for i in range(n):
        given = [entries[i] for entries in read.values() if entries[i] is not None]
        inputs.append(min((e[0] for e in given), key=len, default=""))
        references.append(given[0][1] if given else "")
    answers = {s: [e[2] if e is not None else None for e in entries[:n]] for s, entries in read.items()}
    confidences = {s: [e[3] if e is not None else None for e in entries[:n]] for s, entries in read.items()}
    return Table(list(read), inputs, references, answers, len({len(e) for e in read.values()}) > 1, labelled,
                 confidences)


@dataclass
class Query:
    """The predictions browser's filters (see :func:`select`)."""

    system: str | None = None
    correct: str = "all"
    disagree: bool = False
    q: str = ""
    gold: str | None = None
    predicted: str | None = None
    sort: str = "index"

    def check(self, found: Table) -> None:
        """Refuse filters the table cannot answer.

        Raises:
            UserError: an unknown system or correctness filter, or a correctness filter on a task whose
                answers are not judged right or wrong (generation, regression).
        """
        if self.system is not None and self.system not in found.systems:
            raise UserError(f"no predictions for system {self.system[:200]!r}; this run has "
                            f"{', '.join(found.systems) or 'none'}", source="system")
        if self.correct not in CORRECT:
            raise UserError(f"correct must be one of {', '.join(CORRECT)}", source="correct")
        if self.correct != "all" and not found.labelled:
            raise UserError("this task's answers are not judged right or wrong (no exact-match judgement), so "
                            "they cannot be filtered by correctness", source="correct")
        if (self.correct != "all" or self.gold is not None or self.predicted is not None or self.sort != "index"
                ) and self.system is None:
            raise UserError("give the system to judge", source="system")
        if self.sort not in SORTS:
            raise UserError(f"sort must be one of {', '.join(SORTS)}", source="sort")
        if self.sort == "confidence" and all(c is None for c in found.confidences[self.system]):
            raise UserError(f"{self.system}'s predictions carry no label scores, so they cannot be sorted by "
                            "confidence", source="sort")


def select(found: Table, query: Query) -> list[int]:
    """The indices of the examples that pass every filter of ``query``: in order, or the system's most confident
    answers first (``sort=confidence``; answers without a confidence last)."""
    query.check(found)
    needle = query.q.strip().casefold()
    chosen = [i for i in range(len(found.inputs)) if _passes(found, query, i, needle)]
    if query.sort == "confidence":
        said = found.confidences[query.system]
        chosen.sort(key=lambda i: -said[i] if said[i] is not None else math.inf)
    return chosen


def _passes(found: Table, query: Query, i: int, needle: str) -> bool:
    answers = [found.answers[s][i] for s in found.systems]
    if query.disagree and len({(a or "").strip() for a in answers}) < 2:
        return False
    if query.correct != "all" and found.correct(query.system, i) is not (query.correct == "correct"):
        return False
    mine = found.answers[query.system][i] if query.system is not None else None
    if query.gold is not None and found.references[i].strip() != query.gold.strip():
        return False
    if query.predicted is not None and (mine is None or mine.strip() != query.predicted.strip()):
        return False
    if needle:
        haystack = (found.inputs[i], found.references[i], *(a for a in answers if a is not None))
        return any(needle in value.casefold() for value in haystack)
    return True


def page(found: Table, query: Query, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """One page of the rows that pass ``query`` (the predictions API's answer).

    Raises:
        UserError: a bad filter (see :meth:`Query.check`), or an offset or limit out of range.
    """
    if offset < 0:
        raise UserError("offset must be 0 or more", source="offset")
    if not 1 <= limit <= PAGE_LIMIT:
        raise UserError(f"limit must be between 1 and {PAGE_LIMIT}", source="limit")
    matching = select(found, query)
    body = {"systems": found.systems, "system": query.system, "labelled": found.labelled, "sort": query.sort,
            "total": len(matching),
            "offset": offset, "limit": limit, "rows": [found.row(i) for i in matching[offset:offset + limit]]}
    if found.uneven:
        body["note"] = (f"the systems' prediction files differ in length; the first {len(found.inputs)} examples "
                        "of each are compared")
    return body


def confusion(found: Table, system: str, labels: list[str] | None) -> dict[str, Any]:
    """Counts of (gold, predicted) for ``system``: gold rows (``labels`` and any other reference) by
    predicted columns (``labels`` and any other answer, e.g. one that parses as no label)."""
    Query(system=system).check(found)
    pairs = [(found.references[i].strip(), answer.strip())
             for i, answer in enumerate(found.answers[system]) if answer is not None]
    known = [label.strip() for label in labels or []]
    gold = list(dict.fromkeys(known + [g for g, _ in pairs]))
    predicted = list(dict.fromkeys(known + [p for _, p in pairs]))
    row, column = {g: i for i, g in enumerate(gold)}, {p: j for j, p in enumerate(predicted)}
    matrix = [[0] * len(predicted) for _ in gold]
    for g, p in pairs:
        matrix[row[g]][column[p]] += 1
    return {"system": system, "labels": gold, "predicted_labels": predicted, "matrix": matrix}
