"""What the run report and the comparison page read from a run directory, parsed once and forgivingly.

Every file is optional: a file that is missing leaves its field empty, and one that cannot be parsed
adds a note (shown on the page) instead of failing the page. Which files there are, and where, is
:class:`~lmtune.run_dir.RunDir`'s to say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmtune.evaluate.metrics import PRIMARY_METRIC
from lmtune.kinds.tasks import find as find_task
from lmtune.recipe_model import as_mapping
from lmtune.report import html
from lmtune.run_dir import RunDir


@dataclass
class Run:
    """Everything a page reads from a run directory, already parsed."""

    directory: Path
    recipe: dict = field(default_factory=dict)
    recipe_text: str | None = None
    manifest: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    timing: list[dict] = field(default_factory=list)
    evaluation: dict | None = None
    data_report: dict | None = None
    notes: list[str] = field(default_factory=list)
    task: str | None = None

    @property
    def files(self) -> RunDir:
        return RunDir(self.directory)

    @property
    def name(self) -> str:
        return str(self.recipe.get("name") or self.directory.name)

    @property
    def results(self) -> dict[str, dict]:
        """``eval.json``'s results per system (entries that are not objects are left out)."""
        results = (self.evaluation or {}).get("results")
        if not isinstance(results, dict):
            return {}
        return {str(k): v for k, v in results.items() if isinstance(v, dict)}

    @property
    def primary(self) -> str | None:
        """The task metric the systems are ranked on, if any system has a number for it."""
        results = self.results
        for metric in ((self.evaluation or {}).get("primary_metric"), PRIMARY_METRIC.get(self.task or "")):
            if metric and any(html.is_number(r.get(metric)) for r in results.values()):
                return str(metric)
        return None

    @property
    def labelled(self) -> bool:
        """Whether the run's task answers with labels (classification), as its task kind declares."""
        return bool(getattr(find_task(self.task), "labelled", False))

    @property
    def labels(self) -> list[str] | None:
        """The classification label set: ``eval.json``'s, else the recipe's ``task.labels``."""
        labels = (self.evaluation or {}).get("labels") or html.lookup(self.recipe, "task.labels")
        return [str(label) for label in labels] if isinstance(labels, list) and labels else None

    def values(self, metric: str) -> dict[str, float]:
        """``metric`` per system that has a number for it."""
        return {s: float(r[metric]) for s, r in self.results.items() if html.is_number(r.get(metric))}

    def predictions(self, limit: int | None = None) -> dict[str, list[dict]]:
        """``predictions/<system>.jsonl`` per system, the systems of ``eval.json`` first."""
        files = self.files
        if not files.predictions.is_dir():
            return {}
        names = dict.fromkeys(list(self.results) + files.prediction_systems())
        found = {s: read_jsonl(files.prediction(s), self.notes, limit) for s in names
                 if files.prediction(s).is_file()}
        return {s: rows for s, rows in found.items() if rows}


def load(run_dir: Path) -> Run:
    """Read every file of ``run_dir`` that a page uses."""
    run = Run(directory=Path(run_dir))
    files = run.files
    if files.recipe.is_file():
        run.recipe_text = files.recipe.read_text(encoding="utf-8", errors="replace")
        try:
            parsed = yaml.safe_load(run.recipe_text)
            run.recipe = parsed if isinstance(parsed, dict) else {}
            if "model" in run.recipe:  # `model: <ref>` (older runs) compares equal to {name: <ref>, dtype: auto}
                run.recipe["model"] = as_mapping(run.recipe["model"])
        except yaml.YAMLError as exc:
            run.notes.append(f"recipe.yaml could not be parsed: {exc}")
    run.manifest = read_json(files.manifest, run.notes)
    run.evaluation = read_json(files.eval, run.notes)
    run.data_report = read_json(files.data.report, run.notes)
    run.metrics = read_jsonl(files.metrics, run.notes)
    run.timing = read_jsonl(files.timing, run.notes)
    run.task = (run.evaluation or {}).get("task") or html.lookup(run.recipe, "task.type")
    return run


def read_json(path: Path, notes: list[str]) -> dict | None:
    """A JSON object file; None (and a note) when it is missing or not an object."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(value, dict):
            return value
        problem = "it is not a JSON object"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = str(exc)
    notes.append(f"{path.name} could not be parsed and is left out: {problem}")
    return None


def read_jsonl(path: Path, notes: list[str], limit: int | None = None) -> list[dict]:
    """The objects of a JSON-lines file, at most ``limit``; lines that are not JSON are counted in a note."""
    if not path.is_file():
        return []
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
    if bad:  # a run killed mid-write leaves a torn last line; show the rest, but say so
        notes.append(f"{path.name}: skipped {bad} line(s) that are not valid JSON")
    return rows
