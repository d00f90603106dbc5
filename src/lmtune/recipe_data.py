"""The data sections of a recipe (``data:``, and ``training.self_training``'s pool), split from :mod:`lmtune.recipe`.

``lmtune.recipe`` re-exports every class here, so ``from lmtune.recipe import DataConfig`` works.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmtune.recipe_eval import _Strict


class SplitConfig(_Strict):
    """Fractions held out from train when validation/test files are not given."""

    validation: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of train held out for validation.")
    test: float = Field(0.2, ge=0.0, lt=1.0, description="Fraction of train held out for test.")
    stratify: bool = Field(True, description="Keep label proportions equal across splits.")
    group_by: str | None = Field(None, description="A record field; one group never straddles two splits.")

    @model_validator(mode="after")
    def _sum_below_one(self):
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must be below 1.0 so some data is left to train on")
        return self


class CleanConfig(_Strict):
    """Cleaning before the split; every step is counted in data_report.json."""

    normalize: bool = Field(True, description="NFKC, HTML entities, control characters, whitespace.")
    dedup: Literal["none", "exact", "exact+near"] = Field("exact+near", description="Duplicate removal.")
    near_threshold: float = Field(0.9, gt=0.0, le=1.0, description="Jaccard threshold for near-duplicates.")
    pii: Literal["none", "report", "mask", "drop"] = Field("mask", description="Personal data handling.")
    min_chars: int = Field(1, ge=0, description="Drop records whose input is shorter than this.")
    max_chars: int | None = Field(None, gt=0, description="Drop records whose input is longer than this.")
    leak_threshold: float | None = Field(
        0.8, gt=0.0, le=1.0, description="Token similarity (case and punctuation ignored) from which a train input "
        "counts as a near copy of a validation/test or contamination input; null: exact repeats only.")
    empty: Literal["error", "drop"] = Field(
        "error", description="A record with an empty field: stop, or drop it (counted).")
    label_map: dict[str, str | float] = Field(
        default_factory=dict, description="Rename labels, e.g. {pos: positive}; numbers for regression.")


class DataConfig(_Strict):
    """Where the data comes from and how it is prepared."""

    train: str = Field(description="JSONL, CSV, TSV or Parquet file, or asset:<name>/<split>.")
    validation: str | None = Field(None, description="If null, split from train.")
    test: str | None = Field(None, description="If null, split from train.")
    fields: dict[str, str] = Field(default_factory=dict, description="Format field -> source column.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    leakage: Literal["drop", "fail", "report"] = Field(
        "drop", description="Validation/test inputs found (exactly or nearly) in train: drop from train, fail, "
        "or report.")
    contamination: list[str] = Field(
        default_factory=list, description="Evaluation files whose inputs must not appear in train (same policy).")
    augment: dict[str, Any] | None = Field(None, description="Augmentation of the train split.")
    max_records: int | None = Field(
        None, gt=0, description="Use only N records of each file, chosen as data.sample says.")
    sample: Literal["stratified", "random", "first"] = Field(
        "stratified", description="How data.max_records chooses: seeded and stratified by label (plain random "
        "without labels), seeded random, or the first N in file order.")
    max_record_chars: int | None = Field(
        1_000_000, gt=0, description="Most characters of text one record may hold; a larger one is an error naming "
        "it, before cleaning and near-duplicate search (a 50 MB record took 8 GB). null: no limit.")
    subset: SubsetConfig | None = Field(
        None, description="Train on a nested, stratified subset of the train split: {size, seed}.")
    corrections: str | None = Field(
        None, description="JSONL of gold labels found wrong (the studio's review export): each line's "
        "{text, label, corrected} sets the label (or generation target) of every record with that input and "
        "label to corrected, right after the split; counted in data_report.json.")
    add_train: list[str] = Field(
        default_factory=list, description="Files of labelled records (a studio labelling queue's export) added to the "
        "train split after the split, so validation and test stay as they were; read with data.fields, cleaned, "
        "deduplicated against train and checked for leakage like it; counted in data_report.json.")


class SubsetConfig(_Strict):
    """Train on a nested, stratified subset of the train split (``lmtune curve`` sets it for each point)."""

    size: int = Field(gt=0, description="Training examples kept after the split, cleaning and leakage checks.")
    seed: int = Field(0, ge=0, description="Orders the train split; a smaller size with the same seed keeps a "
                      "subset of a larger one's examples (nested), each label in proportion.")


class SelfTrainingConfig(_Strict):
    """Self-training: pseudo-label a pool with the fine-tuned model, mix in the confident ones, train again."""

    pool: str = Field(description="Unlabelled records (JSONL, CSV, Parquet) in the train file's format.")
    threshold: float = Field(0.9, gt=0.0, lt=1.0, description="Calibrated confidence a pseudo-label needs.")
    rounds: int = Field(1, ge=1, le=10, description="Pseudo-label, mix in, retrain: this many times.")
    max_ratio: float = Field(1.0, gt=0.0, description="At most this many pseudo-labels per labelled training "
                             "example (the most confident are kept).")
    label_field: str | None = Field(None, description="A pool field holding hidden gold labels: never trained on, "
                                    "only used to count how many pseudo-labels were wrong.")
    max_records: int | None = Field(None, gt=0, description="Read at most this many pool records.")
