"""The data stage: read, validate, deduplicate, split and write the splits with a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune import assets, atomic
from lmtune.data import clean, io
from lmtune.data.formats import Example, load_examples
from lmtune.data.split import label_counts, split_examples
from lmtune.errors import UserError

SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    """The three splits as used, and what was done to get them."""

    splits: dict[str, list[Example]]
    report: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def prepare(data_cfg, task: str, labels: list[str] | None, seed: int) -> PreparedData:
    """Load the recipe's data files and produce deduplicated, leakage-free splits.

    Args:
        data_cfg: the recipe's ``data`` section.
        task: ``task.type``.
        labels: ``task.labels``.
        seed: the recipe seed (the split is reproducible).
    """
    files = {name: assets.resolve_data_ref(getattr(data_cfg, name))
             for name in SPLITS if getattr(data_cfg, name)}
    dropped: dict[str, list[str]] = {name: [] for name in files}
    loaded = {name: load_examples(io.read_rows(path, data_cfg.max_records), data_cfg.fields, task, labels,
                                  dropped[name] if data_cfg.clean.empty == "drop" else None)
              for name, path in files.items()}
    report: dict[str, Any] = {"sources": {k: str(v) for k, v in files.items()},
                              "counts": {f"read_{k}": len(v) + len(dropped[k]) for k, v in loaded.items()}}
    if any(dropped.values()):
        report["empty_dropped"] = {k: {"count": len(v), "examples": v[:5]} for k, v in dropped.items() if v}

    # Held-out files are deduplicated first; train then loses anything they already contain,
    # so no test input is ever trained on.
    held_keys: set[str] = set()
    dedup_report = {}
    for name in ("test", "validation", "train"):
        if name not in loaded:
            continue
        if data_cfg.clean.dedup == "none":
            kept, rep = loaded[name], {"exact_duplicates": 0}
        else:
            kept, rep = clean.dedup_exact(loaded[name], held_keys if name == "train" else None)
        held_keys |= {clean.input_key(ex) for ex in kept}
        loaded[name], dedup_report[name] = kept, rep
        if data_cfg.clean.min_chars > 1:
            loaded[name] = [ex for ex in kept if len(clean.input_key(ex)) >= data_cfg.clean.min_chars]
            rep["shorter_than_min_chars"] = len(kept) - len(loaded[name])
    report["dedup"] = dedup_report

    splits = {"train": loaded["train"]}
    split_cfg = data_cfg.split
    for name, fraction in (("test", split_cfg.test), ("validation", split_cfg.validation)):
        if name in loaded:
            splits[name] = loaded[name]
        else:
            # Fractions are of the original train set, so the second split rescales.
            base = len(loaded["train"])
            frac = fraction * base / max(len(splits["train"]), 1)
            splits["train"], splits[name] = split_examples(splits["train"], frac, seed, split_cfg.stratify, name)
    if not splits["train"]:
        raise UserError("no training records are left after cleaning and splitting", source="data.train")
    report["counts"].update({name: len(splits.get(name, [])) for name in SPLITS})
    report["label_distribution"] = {name: label_counts(exs) for name, exs in splits.items()
                                    if label_counts(exs) is not None}
    return PreparedData(splits, report, files)


def write(prepared: PreparedData, out_dir: Path) -> None:
    """Write ``train/validation/test.jsonl`` and ``data_report.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, examples in prepared.splits.items():
        atomic.write_jsonl(out_dir / f"{name}.jsonl", [{**ex.extra, **ex.record} for ex in examples])
    atomic.write_json(out_dir / "data_report.json", prepared.report)
