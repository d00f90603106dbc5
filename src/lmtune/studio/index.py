"""The runs of a runs folder: which directories are runs, one summary row each, and safe lookup by name.

A run is a directory directly inside the folder that has a run's marker files (``recipe.yaml`` and
``manifest.json``, see :mod:`lmtune.run_dir`). Its name in URLs is its directory name, and
:func:`run_dir` is the only way from a name to a path: anything that is not exactly such a directory
(``..``, a slash, a symlink leading out of the folder) is not found. A run inside a study (a tune trial, a
learning curve's point, an active-learning round) is named by its path's parts joined with ``~``
(``lr-search~trial-3`` is ``<runs>/lr-search/trial-3``), each part checked the same way; only top-level runs
are rows. Rows are cached per run and rebuilt when ``eval.json`` or ``recipe.yaml`` change; the status is read
fresh each time (it changes while a run trains). A run being written never breaks a row: files that cannot be
parsed yet leave fields empty.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmtune import run_status
from lmtune.evaluate.metrics import best_systems
from lmtune.kinds import systems as system_kinds
from lmtune.recipe_model import model_name
from lmtune.report import html
from lmtune.report.run import Run as ReportRun
from lmtune.report.run import read_json
from lmtune.run_dir import RunDir
from lmtune.studio.cache import Stamped

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
#: Joins the parts of a nested run's name: no plain name holds it, and a URL carries it as it is.
NESTED = "~"
#: The most parts a nested name has: ``<study>~<strategy>-s<seed>~round-<r>`` (lmtune active) has three.
MAX_DEPTH = 3


class RunNotFound(LookupError):
    """No run of that name in the runs folder."""


def directory(root: Path, name: str, depth: int = 1) -> Path:
    """The directory ``name`` names inside ``root``: one plain directory name, or up to ``depth`` of them joined
    with :data:`NESTED`, each step a real directory of the one before (no symlink leads out of it).

    Raises:
        RunNotFound: ``name`` is not such a name, or one of its steps leaves the folder.
    """
    parts = name.split(NESTED) if isinstance(name, str) else []
    if not 1 <= len(parts) <= depth or not all(_NAME.match(p) and p not in (".", "..") for p in parts):
        raise RunNotFound(name)
    root = Path(root).resolve()
    here = root
    for part in parts:
        try:
            step = (here / part).resolve()
        except OSError:
            raise RunNotFound(name) from None
        if step.parent != here:
            raise RunNotFound(name)
        here = step
    return root.joinpath(*parts)


def run_dir(root: Path, name: str) -> RunDir:
    """The run called ``name`` in ``root`` (a run inside a study too, by its nested name).

    Raises:
        RunNotFound: ``name`` is not a plain directory name (or a nested one), or no run of that name is in
            ``root``.
    """
    run = RunDir(directory(root, name, MAX_DEPTH))
    if not run.is_run:
        raise RunNotFound(name)
    return run


class Index:
    """The runs of ``root``, as summary rows (see :func:`summary`), cached per run."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._summaries = Stamped(10_000)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _NAME.match(p.name) and RunDir(p).is_run)

    def rows(self) -> list[dict[str, Any]]:
        """Every run's row, newest first."""
        rows = [self.row(name) for name in self.names()]
        return sorted(rows, key=lambda r: r.get("started_at") or 0, reverse=True)

    def row(self, name: str) -> dict[str, Any]:
        run = run_dir(self.root, name)
        row = self._summaries.get(name, (run.recipe, run.eval, run.report), lambda: summary(run))
        status = run_status.read(run)
        return {**row, "status": status["state"], "error": status.get("error"),
                "started_at": status.get("started_at"), "duration_s": status.get("elapsed_s")}


def summary(run: RunDir) -> dict[str, Any]:
    """What the runs page shows of a run, apart from its status: task, model, method, result, verdict."""
    notes: list[str] = []
    report = ReportRun(directory=run.path, evaluation=read_json(run.eval, notes))
    try:
        recipe = run.read_recipe()
    except (OSError, ValueError):
        recipe = {}
    recipe = recipe if isinstance(recipe, dict) else {}
    report.recipe, report.task = recipe, (report.evaluation or {}).get("task") or html.lookup(recipe, "task.type")
    row = {"name": run.path.name, "title": str(recipe.get("name") or run.path.name), "task": report.task,
           "model": model_name(recipe.get("model")), "method": html.lookup(recipe, "method.name"),
           "report": run.report.is_file(),
           "metric": None, "system": None, "value": None, "ci_low": None, "ci_high": None, "winner": None}
    metric = report.primary
    if metric is None:
        return row
    values = report.values(metric)
    winners = best_systems(values, metric)
    tuned = [s for s in values if getattr(system_kinds.find(s), "trained", False)]
    system = tuned[0] if tuned else winners[0]
    interval = ((report.results[system].get("ci") or {}).get(metric)) or [None, None]
    row.update(metric=metric, system=system, value=values[system], ci_low=interval[0], ci_high=interval[1],
               winner=winners[0] if len(winners) == 1 else " = ".join(winners))
    return row


