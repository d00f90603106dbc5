"""Leakage (validation/test inputs that are also in train) and contamination (evaluation-benchmark
inputs in train), exact and near-duplicate, with a policy: drop from train, fail, or report.

A leak is worse than a duplicate, and held-out texts are often short (an SMS, a question), where
one edited word changes most word 3-grams: the dedup criterion (3-gram Jaccard >= 0.9) misses a
test message copied into train with a word appended. So near leaks are judged on normalised
word tokens (case-folded, punctuation dropped) by their order-aware sequence similarity
(``difflib``'s ratio, 2*matched/total tokens) against ``data.clean.leak_threshold`` (default 0.8):
one word changed in five, or a word appended to a four-word text, is still a copy. A number
replaced by another number, though, makes a different text (an id, a quantity, an answer):
templated records that differ in their numbers are not copies of each other.

Candidates come from MinHash LSH (datasketch, as in :mod:`neardup`) over two feature families
chosen by length, so that texts sharing common words are not all compared with each other: word
sets for short texts (up to :data:`SHORT_TOKENS` tokens), word pairs for longer ones. A reference
is indexed in the family of its length; a query searches every family its possible partners
(lengths within the ratio's bound) fall in.
"""

from __future__ import annotations

import json
import re
import sys
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from lmtune.data import io, neardup
from lmtune.data.clean import input_key, normalise
from lmtune.data.formats import Example, detect, to_example
from lmtune.errors import UserError

DEFAULT_THRESHOLD = 0.8  # data.clean.leak_threshold
SHORT_TOKENS = 12
_QUERY_CHUNK = 8192
# LSH is tuned this far below the lowest word-set Jaccard a leak can have (0.67 at the default): word
# sets to 25 bands of 5 rows (a 0.67 pair is a candidate with probability 0.97), word pairs, whose
# Jaccard is lower for the same edits, to 32 bands of 4 rows (0.5: 0.87, 0.6: 0.99).
_WORDS_MARGIN, _PAIRS_MARGIN = 0.17, 0.27

_DIGIT = re.compile(r"\d")
Key = tuple[str, str, str]  # (source, exact key, near text)


def near_text(example: Example) -> str:
    """The input text compared for near leaks: the words a model reads, without JSON scaffolding.

    For chat records, system messages are left out: one system prompt is usually shared by every
    record, and would make all of them look alike.
    """
    rec = example.record
    if example.format == "chat":
        text = " ".join(m["content"] for m in rec["messages"][:-1] if m["role"] != "system")
    elif example.format == "instruction":
        text = f"{rec['instruction']} {rec.get('input') or ''}"
    elif example.format in ("completion", "preference", "unpaired_preference", "prompt"):
        text = rec["prompt"]
    else:
        text = rec["text"]
    return normalise(text)


def keys(examples: list[Example]) -> list[Key]:
    """``(source, exact key, near text)`` of each example, for :func:`find`."""
    return [(ex.source, input_key(ex), near_text(ex)) for ex in examples]


def find(train: list[Example], held_keys: list[Key], threshold: float | None) -> dict[int, dict]:
    """Train examples whose input repeats a held-out input, exactly or (with ``threshold``) nearly.

    Args:
        train: training examples.
        held_keys: :func:`keys` of the held-out records.
        threshold: token sequence similarity (0-1) from which a train input is a near copy; None
            checks exact repeats only.

    Returns:
        ``{train index: {"source", "matches", "kind", "similarity"}}``.
    """
    exact: dict[str, str] = {}
    for source, key, _ in held_keys:
        exact.setdefault(key, source)
    found: dict[int, dict] = {}
    for i, ex in enumerate(train):
        if (match := exact.get(input_key(ex))) is not None:
            found[i] = {"source": ex.source, "matches": match, "kind": "exact", "similarity": 1.0}
    if threshold is not None and held_keys:
        rest = [i for i in range(len(train)) if i not in found]
        refs = [tokens(text) for _, _, text in held_keys]
        queries = [tokens(near_text(train[i])) for i in rest]
        for j, ref, sim in near_matches(refs, queries, threshold):
            i = rest[j]
            found[i] = {"source": train[i].source, "matches": held_keys[ref][0], "kind": "near",
                        "similarity": round(sim, 3)}
    return found


def tokens(text: str) -> tuple[str, ...]:
    """Case-folded word tokens, punctuation dropped; interned, so a million texts share their words."""
    return tuple(map(sys.intern, neardup._WORD.findall(text.casefold())))


def near_matches(references: list[tuple[str, ...]], queries: list[tuple[str, ...]],
                 threshold: float) -> list[tuple[int, int, float]]:
    """Queries whose token sequence is at least ``threshold`` similar to some reference's.

    Returns:
        ``(query index, reference index, similarity)`` per matching query: a reference it nearly
        repeats (the most similar of the candidates checked; ties: the earliest).
    """
    best: dict[int, tuple[int, float]] = {}
    same: dict[tuple[str, ...], int] = {}
    for r, toks in enumerate(references):
        same.setdefault(toks, r)
    for q, toks in enumerate(queries):  # differing only in case, spacing or punctuation
        if toks and (r := same.get(toks)) is not None:
            best[q] = (r, 1.0)
    # With similarity 2*matched/(a+b) >= t, the shorter text has at least t/(2-t) of the longer's
    # tokens, and (for distinct words) their word sets a Jaccard similarity of at least t/(2-t).
    ratio = threshold / (2 - threshold)
    for family in _families(ratio):
        _search(references, queries, threshold, ratio, family, best)
    return [(q, r, s) for q, (r, s) in sorted(best.items())]


def _families(ratio: float) -> list[dict[str, Any]]:
    """The two LSH feature families with which lengths they index (references) and search (queries)."""
    return [
        {"features": _word_set, "jaccard": ratio, "margin": _WORDS_MARGIN,
         "holds": lambda n: 0 < n <= SHORT_TOKENS, "searches": lambda n: 0 < n * ratio <= SHORT_TOKENS},
        {"features": _word_pairs, "jaccard": ratio, "margin": _PAIRS_MARGIN,
         "holds": lambda n: n > SHORT_TOKENS, "searches": lambda n: n / ratio > SHORT_TOKENS},
    ]


def _word_set(toks: tuple[str, ...]) -> set[bytes]:
    return {t.encode() for t in toks}


def _word_pairs(toks: tuple[str, ...]) -> set[bytes]:
    return {f"{a} {b}".encode() for a, b in zip(toks, toks[1:])} or _word_set(toks)


def _search(references, queries, threshold: float, ratio: float, family: dict, best: dict) -> None:
    """Look up every query the family searches among the references it holds; verify candidates."""
    held = [r for r, toks in enumerate(references) if family["holds"](len(toks))]
    asking = [q for q, toks in enumerate(queries) if q not in best and family["searches"](len(toks))]
    if not held or not asking:
        return
    lsh = {"threshold": family["jaccard"], "features": family["features"], "margin": family["margin"]}
    index = neardup.BandIndex(neardup.band_keys([references[r] for r in held], **lsh))
    matcher = SequenceMatcher(autojunk=False)
    for start in range(0, len(asking), _QUERY_CHUNK):
        chunk = asking[start:start + _QUERY_CHUNK]
        found = index.candidates(neardup.band_keys([queries[q] for q in chunk], **lsh))
        for q, candidates in zip(chunk, found):
            if candidates:
                hit = _verify(matcher, queries[q], [held[c] for c in sorted(candidates)], references,
                              threshold, ratio)
                if hit is not None:
                    best[q] = hit


def _verify(matcher: SequenceMatcher, query: tuple[str, ...], candidates: list[int], references,
            threshold: float, ratio: float) -> tuple[int, float] | None:
    """The most similar candidate reference at or above ``threshold``, if any."""
    matcher.set_seq2(query)  # difflib caches its analysis of the second sequence
    best: tuple[int, float] | None = None
    for r in candidates:
        ref = references[r]
        if min(len(ref), len(query)) < ratio * max(len(ref), len(query)):
            continue
        matcher.set_seq1(ref)
        if matcher.quick_ratio() < threshold:
            continue
        sim = matcher.ratio()
        if sim >= threshold and (best is None or sim > best[1]) and not _number_changed(matcher):
            best = (r, sim)
    return best


def _number_changed(matcher: SequenceMatcher) -> bool:
    """Whether the aligned sequences replace a number (a token with digits) by another number."""
    a, b = matcher.a, matcher.b
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "replace" and any(_DIGIT.search(t) for t in a[i1:i2]) and any(_DIGIT.search(t) for t in b[j1:j2]):
            return True
    return False


def apply(policy: str, what: str, train: list[Example], found: dict[int, dict]) -> tuple[list[Example], dict[str, Any]]:
    """Act on ``found`` by policy; return the train set to use and a report entry."""
    report = {"exact": sum(1 for f in found.values() if f["kind"] == "exact"),
              "near": sum(1 for f in found.values() if f["kind"] == "near"),
              "policy": policy, "examples": [found[i] for i in sorted(found)[:5]]}
    if found and policy == "fail":
        first = found[min(found)]
        raise UserError(f"{len(found)} training records repeat {what} inputs ({report['exact']} exactly, "
                        f"{report['near']} nearly), e.g. this one repeats {first['matches']}; remove them "
                        f"or set data.leakage: drop", source=first["source"])
    if policy == "drop":
        train = [ex for i, ex in enumerate(train) if i not in found]
        report["dropped_from_train"] = len(found)
    return train, report


def evaluation_keys(path: Path) -> list[Key]:
    """:func:`keys` of every record of an evaluation file, whatever its format.

    MMLU-style ``{"question", "choices"}`` records count by their question.
    """
    out = []
    for source, record in io.iter_rows(path):
        fmt = detect(record)
        if fmt is None and "question" in record:
            question = record["question"]
            if not isinstance(question, str):
                raise UserError(f"contamination file record's 'question' is {json.dumps(question)[:40]}, not text",
                                source=source)
            out.append((source, normalise(question), normalise(question)))
            continue
        if fmt is None:
            raise UserError(f"contamination file record matches no format (keys {sorted(record)})", source=source)
        ex = to_example(record, source, fmt.tasks[0], None)  # its fields must be text, as in training data
        out.append((source, input_key(ex), near_text(ex)))
    return out
