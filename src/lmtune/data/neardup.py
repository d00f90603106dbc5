"""Near-duplicates by MinHash locality-sensitive hashing, in memory linear in the records and small.

Each text becomes a set of word 3-gram shingles and a MinHash signature (datasketch); signatures are
cut into LSH bands and each band hashed to one 64-bit bucket id, kept in a numpy array (8 bytes per
band per record; datasketch's own MinHashLSH keeps a dict of sets per band, about 4 KB per record,
too much for a million records). Texts sharing a bucket in any band are candidates. LSH is tuned to
a threshold below the requested one, because banding finds only about half of the pairs just above
its threshold; every candidate is then verified with the exact Jaccard similarity of its shingle
sets, so nothing below the threshold is reported.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
CANDIDATE_MARGIN = 0.2  # LSH threshold = requested threshold - margin; exact check afterwards
MAX_BUCKET_PARTNERS = 20  # earlier texts compared per bucket (a huge bucket is boilerplate, not news)
_CHUNK = 8192
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


def band_keys(texts: list[str], threshold: float, num_perm: int = NUM_PERM) -> np.ndarray:
    """``(len(texts), bands)`` int64 bucket ids, computed in chunks so no signature matrix is kept."""
    lsh = MinHashLSH(threshold=max(0.05, threshold - CANDIDATE_MARGIN), num_perm=num_perm)
    bands, rows = lsh.b, lsh.r  # datasketch's choice of bands for this threshold
    first = MinHash(num_perm=num_perm, seed=1)
    perms, scheme = first.permutations, first.scheme
    mix = np.random.default_rng(0).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    keys = np.empty((len(texts), bands), dtype=np.int64)
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start:start + _CHUNK]
        values = np.empty((len(chunk), bands * rows), dtype=np.uint64)
        for i, text in enumerate(chunk):
            mh = MinHash(num_perm=num_perm, seed=1, permutations=perms, scheme=scheme)
            mh.update_batch(list(shingles(text)))
            values[i] = mh.hashvalues[: bands * rows]
        # One 64-bit id per band: a random odd-multiplier mix of its rows (wrapping arithmetic).
        with np.errstate(over="ignore"):
            mixed = (values.reshape(len(chunk), bands, rows) * mix).sum(axis=2, dtype=np.uint64)
        keys[start:start + len(chunk)] = mixed.view(np.int64)
    return keys


def _candidate_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    """``(later, earlier)`` index pairs that share a bucket in some band."""
    pairs: set[tuple[int, int]] = set()
    for band in range(keys.shape[1]):
        col = keys[:, band]
        order = np.argsort(col, kind="stable")
        sorted_keys = col[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = order[s:e]  # ascending: the sort is stable
            for pos in range(1, len(members)):
                for earlier in members[max(0, pos - MAX_BUCKET_PARTNERS):pos]:
                    pairs.add((int(members[pos]), int(earlier)))
    return pairs


def dedup(texts: list[str], threshold: float, num_perm: int = NUM_PERM) -> list[tuple[int, int, float]]:
    """Near-duplicates within one list, first occurrence kept.

    Returns:
        ``(duplicate index, index of the kept text it repeats, similarity)`` for each drop.
    """
    partners: dict[int, list[int]] = defaultdict(list)
    for later, earlier in _candidate_pairs(band_keys(texts, threshold, num_perm)):
        partners[later].append(earlier)
    dropped: dict[int, tuple[int, float]] = {}
    cache: dict[int, set] = {}

    def sh(i: int) -> set:
        if i not in cache:
            cache[i] = shingles(texts[i])
        return cache[i]
    for later in sorted(partners):
        for earlier in sorted(partners[later]):
            if earlier in dropped:
                continue  # a dropped text cannot be the one kept
            sim = jaccard(sh(later), sh(earlier))
            if sim >= threshold:
                dropped[later] = (earlier, sim)
                break
    return [(i, j, s) for i, (j, s) in sorted(dropped.items())]


def cross_matches(reference: list[str], queries: list[str], threshold: float,
                  num_perm: int = NUM_PERM) -> list[tuple[int, int, float]]:
    """Which ``queries`` nearly repeat a ``reference`` text (e.g. train items repeating test items).

    Returns:
        ``(query index, reference index, similarity)`` per matching query (the earliest reference).
    """
    if not reference or not queries:
        return []
    ref_keys = band_keys(reference, threshold, num_perm)
    buckets: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(ref_keys.shape[1])]
    for i, row in enumerate(ref_keys.tolist()):
        for band, key in enumerate(row):
            if len(buckets[band][key]) < MAX_BUCKET_PARTNERS:
                buckets[band][key].append(i)
    hits = []
    for j, row in enumerate(band_keys(queries, threshold, num_perm).tolist()):
        found = sorted({i for band, key in enumerate(row) for i in buckets[band].get(key, ())})
        if not found:
            continue
        mine = shingles(queries[j])
        for i in found:
            sim = jaccard(mine, shingles(reference[i]))
            if sim >= threshold:
                hits.append((j, i, sim))
                break
    return hits
