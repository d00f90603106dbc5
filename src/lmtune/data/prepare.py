"""The data stage: read, clean, deduplicate, split, correct gold labels, check leakage, augment; every step counted.

Order matters: cleaning and deduplication come before the split so a near-copy cannot land on
both sides; ``data.corrections`` come right after it, so a corrected label moves no record between
splits (:mod:`lmtune.data.corrections`); the leakage check comes after that (and covers validation/test
files given as such); augmentation comes last and touches the training split only.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune import assets, atomic
from lmtune.data import augment, clean, corrections, io, leakage, neardup, pii
from lmtune.data.formats import Example, load_examples
from lmtune.data.sample import sample_examples
from lmtune.data.split import label_counts, split_examples
from lmtune.data.subset import subset
from lmtune.errors import UserError
from lmtune.run_dir import DataDir

SPLITS = ("train", "validation", "test")
# Defaults of recipe keys read with getattr, so this module works with recipes that lack them.
MAX_RECORD_CHARS = 1_000_000  # data.max_record_chars


@dataclass
class PreparedData:
    """The three splits as used, and what was done to get them."""

    splits: dict[str, list[Example]]
    report: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def prepare(data_cfg, task: str, labels: list[str] | None, seed: int, model: str | None = None) -> PreparedData:
    """Load the recipe's data files and produce clean, deduplicated, leakage-free splits.

    Args:
        data_cfg: the recipe's ``data`` section.
        task: ``task.type``.
        labels: ``task.labels``.
        seed: the recipe seed (split and augmentation are reproducible).
        model: the recipe's model, used by model-based augmentation unless ``data.augment.model`` is set.
    """
    cfg = data_cfg.clean
    fixes = _corrections(data_cfg, task, labels)  # checked before any data file is read
    files = {name: assets.resolve_data_ref(getattr(data_cfg, name)) for name in SPLITS if getattr(data_cfg, name)}
    report: dict[str, Any] = {"sources": {k: str(v) for k, v in files.items()}, "steps": []}
    loaded = {}
    for name, path in files.items():
        how = getattr(data_cfg, "sample", "stratified")
        # Streamed: raw records are not all held besides the examples made from them. A sample other
        # than the first N needs every record read first.
        rows = io.iter_rows(path)
        if how == "first":
            rows = itertools.islice(rows, data_cfg.max_records)
        loaded[name], dropped = _load(rows, data_cfg, task, labels)
        _step(report, name, "read", len(loaded[name]) + len(dropped))
        if how != "first" and data_cfg.max_records is not None:
            loaded[name] = _sample(loaded[name], data_cfg.max_records, seed, how, name, report)
        if cfg.empty == "drop":
            _step(report, name, "empty fields dropped", len(loaded[name]), removed=len(dropped), examples=dropped[:5])
        loaded[name] = _clean_file(loaded[name], cfg, name, report)

    splits = _split(loaded, data_cfg.split, seed, report)
    if fixes is not None:
        _correct(fixes, splits, report)
    for path in getattr(data_cfg, "add_train", None) or []:
        splits["train"] = _add_train(splits["train"], path, data_cfg, task, labels, report)
    splits["train"] = _check_leakage(splits, data_cfg, report)
    if getattr(data_cfg, "subset", None) is not None:
        sub = data_cfg.subset
        splits["train"] = subset(splits["train"], sub.size, sub.seed)
        _step(report, "train", f"nested subset (data.subset: size {sub.size}, seed {sub.seed})", len(splits["train"]))
    if data_cfg.augment:
        options = {"model": model, **data_cfg.augment}
        splits["train"], report["augmentation"] = augment.augment(splits["train"], options, seed)
        _step(report, "train", f"augmented ({data_cfg.augment.get('method')})", len(splits["train"]))
    if not splits["train"]:
        raise UserError("no training records are left after cleaning and splitting", source="data.train")
    report["counts"] = {name: len(splits.get(name, [])) for name in SPLITS}
    report["label_distribution"] = {n: label_counts(e) for n, e in splits.items() if label_counts(e) is not None}
    return PreparedData(splits, report, files)


def _load(rows, data_cfg, task: str, labels: list[str] | None) -> tuple[list[Example], list[str]]:
    """A data file's rows as examples, and the records dropped for empty fields (with ``data.clean.empty: drop``)."""
    dropped: list[str] = []
    examples = load_examples(rows, data_cfg.fields, task, labels, dropped if data_cfg.clean.empty == "drop" else None,
                             data_cfg.clean.label_map, getattr(data_cfg, "max_record_chars", MAX_RECORD_CHARS))
    return examples, dropped


def _sample(examples: list[Example], n: int, seed: int, how: str, name: str, report: dict) -> list[Example]:
    """``data.max_records`` of one file, seeded and (with labels) stratified; recorded in the report."""
    kept, said = sample_examples(examples, n, seed, how)
    report.setdefault("sampled", {})[name] = said
    _step(report, name, f"sampled (data.max_records): {said}", len(kept))
    return [examples[i] for i in kept]


def _clean_file(examples: list[Example], cfg, name: str, report: dict) -> list[Example]:
    """Normalise, filter by length, handle personal data and remove duplicates in one file."""
    if cfg.normalize:
        changed = sum(clean.normalise_example(ex) for ex in examples)
        _step(report, name, "normalised (NFKC, HTML entities, control characters, spaces)", len(examples),
              changed=changed)
    lengths = [len(clean.input_key(ex)) for ex in examples]
    short = [ex.source for ex, n in zip(examples, lengths) if n < cfg.min_chars]
    long = [ex.source for ex, n in zip(examples, lengths) if cfg.max_chars and n > cfg.max_chars]
    if short or long:
        bad = set(short) | set(long)
        examples = [ex for ex in examples if ex.source not in bad]
        _step(report, name, f"length filter (min_chars {cfg.min_chars}, max_chars {cfg.max_chars})",
              len(examples), too_short=len(short), too_long=len(long), examples=(short + long)[:5])
    if cfg.pii != "none":
        examples = _pii(examples, cfg.pii, name, report)
    # One pass finds exact duplicates and same-input records with different labels (reported
    # even when duplicates are kept).
    keys = [clean.input_key(ex) for ex in examples]
    kept, rep = clean.dedup_exact(examples, keys)
    classification = bool(examples) and examples[0].format == "classification"
    report.setdefault("conflicting_labels", {})[name] = {
        "count": rep["conflicting_targets"] if classification else 0,
        "examples": rep["conflict_examples"] if classification else []}
    if cfg.dedup != "none":
        key_of = {id(ex): key for ex, key in zip(examples, keys)}
        examples, keys = kept, [key_of[id(ex)] for ex in kept]
        _step(report, name, "exact duplicates removed", len(examples), removed=rep["exact_duplicates"],
              examples=rep["examples"])
    if cfg.dedup == "exact+near":
        drops = neardup.dedup(keys, cfg.near_threshold)
        pairs = [{"source": examples[i].source, "repeats": examples[j].source, "similarity": round(s, 3)}
                 for i, j, s in drops[:5]]
        gone = {i for i, _, _ in drops}
        examples = [ex for i, ex in enumerate(examples) if i not in gone]
        _step(report, name, f"near-duplicates removed (Jaccard >= {cfg.near_threshold})", len(examples),
              removed=len(gone), examples=pairs)
    return examples


def _pii(examples: list[Example], policy: str, name: str, report: dict) -> list[Example]:
    counts: Counter = Counter()
    with_pii: set[int] = set()
    for i, ex in enumerate(examples):
        found: Counter = Counter()

        def mask(text: str, found: Counter = found) -> str:
            new, c = pii.scan(text)
            found.update(c)
            return new if policy == "mask" else text
        clean.map_text(ex, mask)
        if found:
            with_pii.add(i)
            counts.update(found)
    if policy == "drop":
        examples = [ex for i, ex in enumerate(examples) if i not in with_pii]
    report.setdefault("pii", {})[name] = {"policy": policy, "records_with_pii": len(with_pii),
                                          **{k: counts.get(k, 0) for k in pii.kinds()}}
    _step(report, name, f"personal data ({policy})", len(examples), records_with_pii=len(with_pii))
    return examples


def _split(loaded: dict[str, list[Example]], split_cfg, seed: int, report: dict) -> dict[str, list[Example]]:
    splits = {"train": loaded["train"]}
    base = len(loaded["train"])
    for name, fraction in (("test", split_cfg.test), ("validation", split_cfg.validation)):
        if name in loaded:
            splits[name] = loaded[name]
            continue
        # Fractions are of the whole train file, so the second split rescales.
        frac = fraction * base / max(len(splits["train"]), 1)
        splits["train"], splits[name] = split_examples(splits["train"], frac, seed, split_cfg.stratify, name,
                                                       split_cfg.group_by)
        if fraction > 0:
            _step(report, name, f"split from train ({fraction:.0%}"
                                f"{', grouped by ' + split_cfg.group_by if split_cfg.group_by else ''})",
                  len(splits[name]))
    return splits


def _add_train(train: list[Example], path: str, data_cfg, task: str, labels: list[str] | None,
               report: dict) -> list[Example]:
    """``train`` with the records of one ``data.add_train`` file, cleaned like a data file, minus those whose input
    train already has (the train split's label wins); a counted step."""
    source = assets.resolve_data_ref(path)
    name = f"train + {Path(path).name}"
    added, dropped = _load(io.iter_rows(source), data_cfg, task, labels)
    read = len(added) + len(dropped)
    _step(report, name, "read (data.add_train)", read)
    added = _clean_file(added, data_cfg.clean, name, report)
    known = {clean.input_key(ex) for ex in train}
    fresh = [ex for ex in added if clean.input_key(ex) not in known]
    report.setdefault("added_train", []).append({"file": str(source), "read": read, "kept_after_cleaning": len(added),
                                                 "added": len(fresh), "already_in_train": len(added) - len(fresh)})
    _step(report, "train", f"records added from {Path(path).name} (data.add_train)", len(train) + len(fresh),
          added=len(fresh), already_in_train=len(added) - len(fresh))
    return train + fresh


def _corrections(data_cfg, task: str, labels: list[str] | None) -> corrections.Corrections | None:
    """``data.corrections`` read and checked (None without it)."""
    path = getattr(data_cfg, "corrections", None)
    return corrections.read(path, task, labels) if path else None


def _correct(fixes: corrections.Corrections, splits: dict[str, list[Example]], report: dict) -> None:
    """Apply the corrections to every split: a counted step each, a summary, and a warning for unused ones."""
    for name in SPLITS:
        if name in splits:
            changed = fixes.apply(splits[name], name)
            _step(report, name, f"gold labels corrected (data.corrections: {len(fixes.items)})", len(splits[name]),
                  changed=changed)
    report["corrections"] = fixes.summary()
    if (warning := fixes.warning()) is not None:
        report.setdefault("warnings", []).append(warning)


def _check_leakage(splits: dict[str, list[Example]], data_cfg, report: dict) -> list[Example]:
    # Near leaks are looked for whatever data.clean.dedup says: a leak is worse than a duplicate.
    threshold = getattr(data_cfg.clean, "leak_threshold", leakage.DEFAULT_THRESHOLD)
    train = splits["train"]
    held = leakage.keys([ex for name in ("validation", "test") for ex in splits.get(name, [])])
    train, report["leakage"] = leakage.apply(data_cfg.leakage, "validation/test",
                                             train, leakage.find(train, held, threshold))
    _step(report, "train", f"leakage vs validation/test ({data_cfg.leakage})", len(train))
    if data_cfg.contamination:
        keys = [k for path in data_cfg.contamination for k in leakage.evaluation_keys(assets.resolve_data_ref(path))]
        train, report["contamination"] = leakage.apply(data_cfg.leakage, "evaluation-file", train,
                                                       leakage.find(train, keys, threshold))
        report["contamination"]["files"] = list(data_cfg.contamination)
        _step(report, "train", f"contamination vs {len(data_cfg.contamination)} evaluation file(s)", len(train))
    return train


def _step(report: dict, split: str, step: str, after: int, **extra) -> None:
    report["steps"].append({"split": split, "step": step, "records": after, **extra})


def write(prepared: PreparedData, out_dir: Path) -> None:
    """Write ``train/validation/test.jsonl`` and ``data_report.json`` into ``out_dir``."""
    folder = DataDir(out_dir)
    for name, examples in prepared.splits.items():
        atomic.write_jsonl(folder.split(name), [{**ex.extra, **ex.record} for ex in examples])
    atomic.write_json(folder.report, prepared.report)


def steps_table(report: dict[str, Any]) -> str:
    """One line per data step: split, records after it, and what it removed or found."""
    lines = []
    for step in report.get("steps", []):
        extra = ", ".join(f"{k} {v}" for k, v in step.items()
                          if k not in ("split", "step", "records", "examples") and v)
        lines.append(f"{step['split']:<10} {step['records']:>8}  {step['step']}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)
