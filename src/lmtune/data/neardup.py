"""Near-duplicates by MinHash locality-sensitive hashing, in memory linear in the records and small.

Each text becomes a set of word 3-gram shingles and a MinHash signature (datasketch); signatures are
cut into LSH bands and each band hashed to one 64-bit bucket id, kept in a numpy array (8 bytes per
band per record; datasketch's own MinHashLSH keeps a dict of sets per band, about 4 KB per record,
too much for a million records). Texts sharing a bucket in any band are candidates. LSH is tuned to
a threshold below the requested one, because banding finds only about half of the pairs just above
its threshold; every candidate is then verified with the exact Jaccard similarity of its shingle
sets, so nothing below the threshold is reported.

:func:`band_keys` takes other features too, and :class:`BandIndex` looks many queries up among
reference texts at once: the leakage check (:mod:`lmtune.data.leakage`) uses both with its own
features and similarity.
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
_UPDATE_SLICE = 4096
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


def band_keys(texts: list, threshold: float, num_perm: int = NUM_PERM, features=shingles,
              margin: float = CANDIDATE_MARGIN) -> np.ndarray:
    """``(len(texts), bands)`` int64 bucket ids, computed in chunks so no signature matrix is kept.

    Args:
        texts: the items to hash.
        threshold: the Jaccard similarity wanted; LSH is tuned to ``threshold - margin``.
        features: an item's set of byte strings (default: its word 3-gram shingles).
    """
    lsh = MinHashLSH(threshold=max(0.05, threshold - margin), num_perm=num_perm)
    bands, rows = lsh.b, lsh.r  # datasketch's choice of bands for this threshold
    mh = MinHash(num_perm=num_perm, seed=1)  # one object, cleared per text: construction is costly
    mix = np.random.default_rng(0).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    keys = np.empty((len(texts), bands), dtype=np.int64)
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start:start + _CHUNK]
        values = np.empty((len(chunk), bands * rows), dtype=np.uint64)
        for i, text in enumerate(chunk):
            mh.clear()
            feats = list(features(text))
            # In slices: datasketch hashes a batch as one (features x permutations) matrix, which for
            # one very long text would take gigabytes.
            for at in range(0, len(feats), _UPDATE_SLICE):
                mh.update_batch(feats[at:at + _UPDATE_SLICE])
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


class BandIndex:
    """Reference items' LSH bucket ids, sorted per band, to look up many queries at once (numpy arrays:
    16 bytes per band per reference, no per-bucket Python objects).

    Args:
        keys: ``(references, bands)`` bucket ids from :func:`band_keys`.
    """

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, axis=0, kind="stable")  # per band; stable keeps file order in a bucket
        self.sorted = np.take_along_axis(keys, self.order, axis=0)

    def candidates(self, query_keys: np.ndarray, limit: int = MAX_BUCKET_PARTNERS) -> list[set[int]]:
        """For each query row, the references sharing a bucket in some band (at most ``limit`` per bucket,
        the earliest ones: a huge bucket is boilerplate)."""
        found: list[set[int]] = [set() for _ in range(len(query_keys))]
        if not len(self.sorted):
            return found
        for band in range(query_keys.shape[1]):
            col, keys = self.sorted[:, band], query_keys[:, band]
            lo = np.searchsorted(col, keys, side="left")
            hi = np.minimum(np.searchsorted(col, keys, side="right"), lo + limit)
            for q in np.flatnonzero(hi > lo):
                found[q].update(self.order[lo[q]:hi[q], band].tolist())
        return found
