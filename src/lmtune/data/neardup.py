"""Near-duplicates by MinHash locality-sensitive hashing (datasketch).

Each text becomes a set of word 3-gram shingles; MinHash estimates the Jaccard similarity of two
sets, and LSH finds candidate pairs without comparing every pair, so time and memory grow linearly
with the number of records. LSH is tuned to a threshold below the requested one, because banding
alone finds only about half of the pairs just above its threshold; every candidate is then
verified with the exact Jaccard similarity of its shingle sets, so no false positive gets through.
"""

from __future__ import annotations

import re

from datasketch import LeanMinHash, MinHash, MinHashLSH

NUM_PERM = 128
CANDIDATE_MARGIN = 0.2  # LSH threshold = requested threshold - margin; exact check afterwards
_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> set[bytes]:
    """Word n-grams of a (normalised) text; short texts fall back to their words."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {w.encode() for w in words} or {text.encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity of two sets."""
    return len(a & b) / len(a | b) if a or b else 1.0


def signatures(texts: list[str], num_perm: int = NUM_PERM) -> list[LeanMinHash]:
    """One compact MinHash per text."""
    # Drawing the permutations is the costliest part of a MinHash; draw them once.
    first = MinHash(num_perm=num_perm, seed=1)
    perms, scheme = first.permutations, first.scheme
    out = []
    for text in texts:
        mh = MinHash(num_perm=num_perm, seed=1, permutations=perms, scheme=scheme)
        mh.update_batch(list(shingles(text)))
        out.append(LeanMinHash(mh))
    return out


class NearDuplicateIndex:
    """An LSH index of texts; ask which indexed text a new one nearly repeats.

    Args:
        threshold: Jaccard similarity at or above which two texts are near-duplicates.
        num_perm: MinHash permutations (more = sharper candidate selection, slower).
    """

    def __init__(self, threshold: float, num_perm: int = NUM_PERM):
        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=max(0.05, threshold - CANDIDATE_MARGIN), num_perm=num_perm)
        self.texts: dict[int, str] = {}

    def add(self, key: int, sig: LeanMinHash, text: str) -> None:
        self.lsh.insert(key, sig, check_duplication=False)
        self.texts[key] = text

    def match(self, sig: LeanMinHash, text: str) -> tuple[int, float] | None:
        """The earliest-added indexed key whose exact similarity reaches the threshold, and that similarity."""
        mine = None
        for key in sorted(self.lsh.query(sig)):
            mine = shingles(text) if mine is None else mine
            sim = jaccard(mine, shingles(self.texts[key]))
            if sim >= self.threshold:
                return key, sim
        return None


def dedup(texts: list[str], threshold: float, num_perm: int = NUM_PERM) -> list[tuple[int, int, float]]:
    """Near-duplicates within one list, first occurrence kept.

    Returns:
        ``(duplicate index, index of the kept text it repeats, similarity)`` for each drop.
    """
    index = NearDuplicateIndex(threshold, num_perm)
    drops = []
    for i, sig in enumerate(signatures(texts, num_perm)):
        hit = index.match(sig, texts[i])
        if hit is None:
            index.add(i, sig, texts[i])
        else:
            drops.append((i, hit[0], hit[1]))
    return drops


def cross_matches(reference: list[str], queries: list[str], threshold: float,
                  num_perm: int = NUM_PERM) -> list[tuple[int, int, float]]:
    """Which ``queries`` nearly repeat a ``reference`` text (e.g. test items found in train).

    Returns:
        ``(query index, reference index, similarity)`` per matching query.
    """
    index = NearDuplicateIndex(threshold, num_perm)
    for i, sig in enumerate(signatures(reference, num_perm)):
        index.add(i, sig, reference[i])
    hits = []
    for j, sig in enumerate(signatures(queries, num_perm)):
        hit = index.match(sig, queries[j])
        if hit is not None:
            hits.append((j, hit[0], hit[1]))
    return hits
