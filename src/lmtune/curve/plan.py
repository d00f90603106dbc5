"""What a curve will train, checked before anything is trained or written: the fractions, the sizes, the directory.

The data stage runs once here (without ``data.subset`` and augmentation) to learn N, the training examples the
recipe's data leaves after cleaning, the split and the leakage checks. Each fraction f becomes a size
n = round(f * N), and every size is checked with :func:`lmtune.data.subset.subset` for every repeat's seed: a
size that leaves a label with no example stops the curve here, naming ``--fractions`` and the smallest fraction
that keeps every label, before the directory is created.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune import outputs
from lmtune.data import prepare as data_stage
from lmtune.data.formats import Example
from lmtune.data.subset import nested_order, subset
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.kinds import systems as system_kinds
from lmtune.recipe import Recipe, recipe_from_dict
from lmtune.run_dir import RUNS

CURVE_JSON, CURVE_HTML, LOCK, POINTS, ZERO_SHOT = "curve.json", "curve.html", "curve.lock", "points", "zero-shot"
DEFAULT_FRACTIONS = "0.1,0.25,0.5,1"
MAX_NAME = 100  # the longest run name a recipe takes (lmtune.recipe.RUN_NAME)
FRACTIONS_HELP = "give fractions of the training split in (0, 1], e.g. 0.1,0.25,0.5,1"


@dataclass(frozen=True)
class Point:
    """One point of the curve: a run on ``n_train`` examples, the subset drawn with seed ``repeat``."""

    fraction: float
    n_train: int
    repeat: int

    @property
    def run(self) -> str:
        """The point's run directory, relative to the curve's."""
        return f"{POINTS}/n{self.n_train}-r{self.repeat}"


@dataclass
class Plan:
    """A checked curve: what :func:`lmtune.curve.points.run_curve` trains, and where."""

    recipe: Recipe
    base: dict[str, Any]  # the recipe as written, ``search:`` and ``data.subset`` removed
    directory: Path
    fractions: list[float]  # those that are points (one rounding to an earlier one's size is left out)
    repeats: int
    n_total: int
    points: list[Point]
    metric: str
    system: str
    higher_is_better: bool
    baseline: bool  # eval.systems has zero_shot: scored once, the n=0 reference line
    fingerprint: str
    notes: list[str] = field(default_factory=list)


def parse_fractions(text: str) -> list[float]:
    """``--fractions`` as sorted, distinct numbers in (0, 1].

    Raises:
        UserError: a part that is not a number, or one outside (0, 1].
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UserError(f"no fractions; {FRACTIONS_HELP}", source="--fractions")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise UserError(f"{part!r} is not a number; {FRACTIONS_HELP}", source="--fractions") from None
        if not (0.0 < value <= 1.0):  # NaN fails this too
            raise UserError(f"{part} is not in (0, 1]: a fraction of the training split; {FRACTIONS_HELP}",
                            source="--fractions")
        values.append(value)
    return sorted(set(values))


def plan(recipe: Recipe, fractions: list[float], repeats: int = 1, out: Path | None = None) -> Plan:
    """Check a curve before anything slow: the directory, the data (once), every size for every repeat.

    Raises:
        UserError: the directory holds other files or another recipe's curve; the data has no test split; a
            fraction leaves a label with no example (``--fractions``, with the smallest fraction that works).
    """
    if repeats < 1:
        raise UserError(f"{repeats} is not a number of repeats; give 1 or more", source="--repeats")
    base = recipe.model_dump(mode="json", exclude_unset=True)
    base.pop("search", None)
    base.get("data", {}).pop("subset", None)
    fingerprint = hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest()
    directory = Path(out or RUNS / f"{recipe.name}-curve")
    check_directory(directory, fingerprint)
    train = _train_split(recipe)
    points, notes = _points(train, fractions, repeats)
    fractions = sorted({p.fraction for p in points})  # one that rounds to an earlier one's size is not a point
    metric = metrics.PRIMARY_METRIC.get(recipe.task.type, "loss")
    if recipe.data.subset is not None:
        notes.insert(0, f"the recipe's data.subset (size {recipe.data.subset.size}) is replaced by each point's")
    system = system_kinds.main_trained(recipe.eval.systems)
    found = Plan(recipe, base, directory, fractions, repeats, len(train), points, metric, system,
                 metrics.higher_is_better(metric), "zero_shot" in recipe.eval.systems, fingerprint, notes)
    for point in found.points:  # a point's recipe the schema refuses is found now, not after hours of others
        point_recipe(found, point)
    if found.baseline:
        baseline_recipe(found)
    return found


def check_directory(directory: Path, fingerprint: str) -> None:
    """A new or empty directory, or the curve of this same recipe (its ``curve.json`` has the fingerprint).

    Raises:
        UserError: ``directory`` cannot be written, holds other files, or holds the curve of another recipe.
    """
    outputs.check_dir_target(directory)
    if not directory.is_dir():
        return
    saved = directory / CURVE_JSON
    if not saved.is_file():
        if any(p.name != LOCK for p in directory.iterdir()):
            raise UserError(f"not empty and not a curve of lmtune curve (no {CURVE_JSON}); choose a new or empty "
                            "directory with --out", source=str(directory))
        return
    try:
        previous = json.loads(saved.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {CURVE_JSON} ({exc}); give another --out, or delete this directory to start "
                        "over", source=str(saved)) from None
    if not isinstance(previous, dict) or previous.get("recipe_sha256") != fingerprint:
        raise UserError("holds the curve of another recipe (its keys differ from this one's); give another --out, "
                        "or delete this directory to start over", source=str(directory))


def _train_split(recipe: Recipe) -> list[Example]:
    """The train split the points draw from: the data stage without ``data.subset`` and augmentation (which
    applies to each point's subset in its own run)."""
    data = recipe.data.model_copy(update={"subset": None, "augment": None})
    prepared = data_stage.prepare(data, recipe.task.type, recipe.task.labels, recipe.seed, recipe.model.name)
    if not prepared.splits.get("test"):
        raise UserError("lmtune curve scores each point on the test split, and this data has none; set "
                        "data.split.test (e.g. 0.2) or data.test", source="data.split.test")
    return prepared.splits["train"]


def _points(train: list[Example], fractions: list[float], repeats: int) -> tuple[list[Point], list[str]]:
    """Each fraction's size, checked for every repeat's seed; fractions that round to one size train once."""
    total, points, notes, seen = len(train), [], [], {}
    for fraction in fractions:
        n = math.floor(fraction * total + 0.5)  # round half up: 0.5 of 9 examples is 5
        if n in seen:
            notes.append(f"--fractions {fraction:g} and {seen[n]:g} both keep {n} of the {total} training examples: "
                         "trained once")
            continue
        seen[n] = fraction
        for repeat in range(repeats):
            try:
                if n < 1:
                    raise UserError("no example")
                subset(train, n, repeat)
            except UserError:
                raise UserError(_too_small(train, fraction, n, repeats), source="--fractions") from None
        points += [Point(fraction, n, r) for r in range(repeats)]
    return points, notes


def _too_small(train: list[Example], fraction: float, n: int, repeats: int) -> str:
    """Why a fraction cannot be a point, and the smallest fraction that keeps every label in every repeat."""
    total = len(train)
    needed = max(_smallest_size(train, seed) for seed in range(repeats))
    # The smallest round fraction whose size, rounded half up, reaches `needed` (nudged up past float error).
    smallest = math.ceil(100 * (needed - 0.5) / total) / 100
    while math.floor(smallest * total + 0.5) < needed:
        smallest = round(smallest + 0.01, 2)
    missing = _missing_label(train, n, repeats)
    head = f"{fraction:g} keeps {n} of the {total} training examples"
    if missing is not None:
        head += f", which leaves label {missing!r} with no example"
    return (f"{head}; the smallest fraction that keeps every label{' in every repeat' if repeats > 1 else ''} is "
            f"{min(smallest, 1.0):g}")


def _labels(train: list[Example]) -> list:
    """Each example's class label (None for examples of a format without labels)."""
    return [ex.record.get("label") if ex.format == "classification" else None for ex in train]


def _smallest_size(train: list[Example], seed: int) -> int:
    """The smallest subset of this seed that holds every label (the subsets are prefixes of one order)."""
    labels = _labels(train)
    wanted, seen = {str(v) for v in labels}, set()
    for count, i in enumerate(nested_order(train, seed), start=1):
        seen.add(str(labels[i]))
        if seen == wanted:
            return count
    return len(train)


def _missing_label(train: list[Example], n: int, repeats: int):
    """A label the first repeat that lacks one leaves out at size ``n`` (None when none does, e.g. n = 0)."""
    labels = _labels(train)
    for seed in range(repeats):
        kept = {str(labels[i]) for i in nested_order(train, seed)[:n]}
        missing = sorted({str(v) for v in labels} - kept)
        if n > 0 and missing:
            return missing[0]
    return None


def point_recipe(found: Plan, point: Point) -> Recipe:
    """The recipe of one point: ``data.subset = {size: n, seed: repeat}``, the fine-tuned systems only (scored on
    test), no bias or forgetting probes."""
    raw = copy.deepcopy(found.base)
    trained = [s for s in found.recipe.eval.systems if system_kinds.is_trained(s)]
    raw["name"] = _name(found.recipe.name, f"-n{point.n_train}-r{point.repeat}")
    raw.setdefault("data", {})["subset"] = {"size": point.n_train, "seed": point.repeat}
    raw.setdefault("eval", {}).update({"systems": trained or ["finetuned"], "bias": None, "forgetting": None})
    return recipe_from_dict(raw, source=f"point {point.run}")


def baseline_recipe(found: Plan) -> Recipe:
    """The zero-shot reference: a baseline-only run (nothing trained) on the same test examples."""
    raw = copy.deepcopy(found.base)
    raw["name"] = _name(found.recipe.name, "-zero-shot")
    raw.setdefault("eval", {}).update({"systems": ["zero_shot"], "bias": None, "forgetting": None})
    return recipe_from_dict(raw, source=f"{POINTS}/{ZERO_SHOT}")


def _name(name: str, suffix: str) -> str:
    """``<name><suffix>``, or ``name`` itself where that would be too long for a run name."""
    return name + suffix if len(name + suffix) <= MAX_NAME else name
