"""The unlabelled pool of ``training.self_training``: read, checked, cleaned like the training data, and the
confident pseudo-labels chosen from it.

The pool is read in the recipe's own format with ``data.fields`` applied, so it can be the very file the
labelled data came from. A label the pool records carry is never trained on: it is dropped, unless
``label_field`` names it, in which case it is kept aside (validated against ``task.labels`` as the training
labels are, ``data.clean.label_map`` applied) only to count the pseudo-labels that were wrong.

Records whose input equals, after the data stage's normalisation, an input of the labelled train, validation
or test split are dropped ("already labelled or held out"), so a pool that is the whole source file leaks
nothing of validation or test into training; near copies are left to the retraining run's own leakage check.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmtune import assets
from lmtune.data import clean, io, pii
from lmtune.data.formats import EmptyFieldError, Example, map_fields, text_chars, to_example
from lmtune.errors import UserError
from lmtune.evaluate import calibration

KEY = "training.self_training"
#: What a pool record's label is rendered with before it is scored (its prompt needs one); never used.
PLACEHOLDER = 0


@dataclass
class Pool:
    """The pool as scored: its examples (each with a placeholder label) and what was left out on the way."""

    examples: list[Example]
    hidden: list[str | None]  # each example's hidden gold label (``label_field``), None where unknown
    read: int = 0  # records read from the file (at most ``max_records``)
    counts: dict[str, int] = field(default_factory=dict)  # records dropped: known, duplicates, empty, pii


def check(recipe, prepared) -> None:
    """What self-training needs, checked before the model loads; nothing when the recipe has none.

    Raises:
        UserError: not a classification task, no validation or test split, no ``finetuned`` system, or a pool
            that is missing, empty, in another format, or holds nothing that is not already labelled.
    """
    config = recipe.training.self_training
    if config is None:
        return
    if recipe.task.type != "classification":
        raise UserError(f"pseudo-labels are chosen by class probability; a {recipe.task.type} task has none: "
                        f"remove {KEY}", source=KEY)
    for split, why in (("validation", "the pseudo-labels' confidence is calibrated on it"),
                       ("test", "the gain over the supervised run is measured on it")):
        if not prepared.splits.get(split):
            raise UserError(f"self-training needs a {split} split ({why}); set data.split.{split} (e.g. 0.1) or "
                            f"data.{split}", source=KEY)
    if "finetuned" not in recipe.eval.systems:
        raise UserError("self-training pseudo-labels with the fine-tuned model and compares with it: add finetuned "
                        f"to eval.systems (now {recipe.eval.systems})", source=KEY)
    read_pool(recipe, prepared)


def read_pool(recipe, prepared) -> Pool:
    """The pool's records as examples to score, cleaned as the training data is, known inputs dropped.

    Raises:
        UserError: as :func:`check` says for the pool.
    """
    config, data = recipe.training.self_training, recipe.data
    path = assets.resolve_data_ref(config.pool)
    if not path.exists():
        raise UserError(f"no such pool file {str(path)!r}; check the path", source=f"{KEY}.pool")
    pool = Pool([], [])
    try:
        rows = itertools.islice(io.iter_rows(path), config.max_records)
        for source, raw in rows:
            pool.read += 1
            found = _example(raw, source, recipe, pool.counts)
            if found is not None:
                pool.examples.append(found[0])
                pool.hidden.append(found[1])
    except UserError as exc:
        raise UserError(f"{exc.message} ({KEY}.pool)", source=exc.source or f"{KEY}.pool") from None
    if config.label_field and not any(h is not None for h in pool.hidden):
        raise UserError(f"no pool record has the field {config.label_field!r}; name the pool's label column, or "
                        "remove label_field", source=f"{KEY}.label_field")
    _drop_known(pool, prepared, data.clean.dedup != "none")
    if not pool.examples:
        raise UserError(f"none of the {pool.read} pool records is left to pseudo-label ({said(pool.counts)}); give "
                        "unlabelled records that are not in the train, validation or test data", source=f"{KEY}.pool")
    return pool


def _example(raw: dict[str, Any], source: str, recipe, counts: dict[str, int]) -> tuple[Example, Any] | None:
    """One pool record as an example with a placeholder label, and its hidden label; None if it is dropped."""
    config, data, labels = recipe.training.self_training, recipe.data, recipe.task.labels
    fields = {k: v for k, v in data.fields.items() if k != "label"}
    label_column = data.fields.get("label", "label")
    hidden_column = config.label_field
    if hidden_column and hidden_column not in raw and hidden_column in data.fields:
        hidden_column = data.fields[hidden_column]  # label_field named the format field, not the pool's column
    record = {k: v for k, v in raw.items() if k not in {label_column, "label", hidden_column}}
    try:
        example = to_example({**map_fields(record, fields, source), "label": labels[PLACEHOLDER]}, source,
                             "classification", labels, None, data.fields)
    except EmptyFieldError:
        if data.clean.empty != "drop":
            raise
        counts["empty"] = counts.get("empty", 0) + 1
        return None
    if data.max_record_chars is not None and text_chars(example) > data.max_record_chars:
        raise UserError(f"record holds {text_chars(example):,} characters of text, more than data.max_record_chars",
                        source=source)
    hidden = raw.get(hidden_column) if hidden_column else None
    if hidden is not None and str(hidden).strip():
        hidden = to_example({**example.record, "label": hidden}, source, "classification", labels,
                            data.clean.label_map, data.fields).record["label"]
    else:
        hidden = None
    if data.clean.normalize:
        clean.normalise_example(example)
    if data.clean.pii in ("mask", "drop") and _personal(example, data.clean.pii):
        counts["pii"] = counts.get("pii", 0) + 1
        return None
    return example, hidden


def _personal(example: Example, policy: str) -> bool:
    """Mask personal data in place (``mask``) and say whether there was any: ``drop`` then leaves it out."""
    found = Counter()

    def scan(text: str) -> str:
        new, kinds = pii.scan(text)
        found.update(kinds)
        return new if policy == "mask" else text
    clean.map_text(example, scan)
    return policy == "drop" and bool(found)


def _drop_known(pool: Pool, prepared, dedup: bool) -> None:
    """Leave out records whose input a labelled split has, and (with deduplication on) repeats in the pool."""
    known = {clean.input_key(ex) for examples in prepared.splits.values() for ex in examples}
    kept, hidden, seen = [], [], set()
    for example, label in zip(pool.examples, pool.hidden):
        key = clean.input_key(example)
        if key in known:
            pool.counts["known"] = pool.counts.get("known", 0) + 1
        elif dedup and key in seen:
            pool.counts["duplicates"] = pool.counts.get("duplicates", 0) + 1
        else:
            seen.add(key)
            kept.append(example)
            hidden.append(label)
    pool.examples, pool.hidden = kept, hidden


def said(counts: dict[str, int]) -> str:
    """What was left out of the pool, in words (``3 already labelled or held out, 1 repeats``)."""
    names = {"known": "already labelled or held out", "duplicates": "repeats", "empty": "empty",
             "pii": "personal data"}
    return ", ".join(f"{n} {names[k]}" for k, n in counts.items() if n)


def choose(rows: list[dict[str, Any]], labels: list[str], temperature: float, threshold: float,
           limit: int) -> tuple[list[tuple[int, str, float]], int]:
    """The pseudo-labels to train on: ``(pool index, label, confidence)``, most confident first.

    Args:
        rows: the fine-tuned system's prediction rows on the pool (``prediction`` and ``scores`` per label).
        labels: ``task.labels``.
        temperature: the model's temperature, fitted on the validation split.
        threshold: the calibrated confidence a pseudo-label needs.
        limit: most pseudo-labels kept (``max_ratio`` x the labelled training examples).

    Returns:
        The kept pseudo-labels and how many rows reached ``threshold`` before the cap.
    """
    if not rows:
        return [], 0
    probs = calibration.probabilities(calibration.score_matrix(rows, labels), temperature)
    index = {label: i for i, label in enumerate(labels)}
    picked = [index.get(row["prediction"], int(p.argmax())) for row, p in zip(rows, probs)]
    confidence = probs[np.arange(len(rows)), picked]
    above = [i for i in np.argsort(-confidence, kind="stable") if confidence[i] >= threshold]
    return [(int(i), labels[picked[i]], float(confidence[i])) for i in above[:limit]], len(above)


def tagged(example: Example, label: str, confidence: float, round_: int) -> dict[str, Any]:
    """A pseudo-labelled training record, tagged so it can be traced (and told from a labelled one)."""
    return {**example.extra, **example.record, "label": label, "pseudo_label": True,
            "pseudo_confidence": round(confidence, 4), "pseudo_round": round_}


def wrong(chosen: list[tuple[int, str, float]], hidden: list[str | None]) -> tuple[int, int]:
    """``(wrong, checked)``: pseudo-labels that differ from the pool's hidden label, among those that have one."""
    known = [(label, hidden[i]) for i, label, _ in chosen if hidden[i] is not None]
    return sum(label != gold for label, gold in known), len(known)

