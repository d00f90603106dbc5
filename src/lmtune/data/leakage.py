"""Leakage (validation/test inputs that are also in train) and contamination (evaluation-benchmark
inputs in train), exact and near-duplicate, with a policy: drop from train, fail, or report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.data import io, neardup
from lmtune.data.clean import input_key, normalise
from lmtune.data.formats import Example, detect
from lmtune.errors import UserError


def find(train: list[Example], held_keys: list[tuple[str, str]], threshold: float | None) -> dict[int, dict]:
    """Train examples whose input repeats a held-out input, exactly or (with ``threshold``) nearly.

    Args:
        train: training examples.
        held_keys: ``(source, normalised input)`` of the held-out records.
        threshold: Jaccard threshold for near-duplicates; None checks exact repeats only.

    Returns:
        ``{train index: {"source", "matches", "kind", "similarity"}}``.
    """
    exact = {}
    for source, key in held_keys:
        exact.setdefault(key, source)
    train_keys = [input_key(ex) for ex in train]
    found: dict[int, dict] = {}
    for i, key in enumerate(train_keys):
        if key in exact:
            found[i] = {"source": train[i].source, "matches": exact[key], "kind": "exact", "similarity": 1.0}
    if threshold is not None and held_keys:
        rest = [i for i in range(len(train)) if i not in found]
        hits = neardup.cross_matches([k for _, k in held_keys], [train_keys[i] for i in rest], threshold)
        for j, ref, sim in hits:
            i = rest[j]
            found[i] = {"source": train[i].source, "matches": held_keys[ref][0], "kind": "near",
                        "similarity": round(sim, 3)}
    return found


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


def evaluation_keys(path: Path) -> list[tuple[str, str]]:
    """``(source, normalised input)`` of every record of an evaluation file, whatever its format.

    MMLU-style ``{"question", "choices"}`` records count by their question.
    """
    keys = []
    for source, record in io.iter_rows(path):
        if "question" in record and detect(record) is None:
            keys.append((source, normalise(str(record["question"]))))
            continue
        fmt = detect(record)
        if fmt is None:
            raise UserError(f"contamination file record matches no format (keys {sorted(record)})", source=source)
        keys.append((source, input_key(Example(record, source, fmt.name))))
    return keys
