"""Running a curve: each point a run directory, ``curve.json`` and ``curve.html`` rewritten after every point.

A point is ``lifecycle.run_recipe`` on the point's recipe (:func:`lmtune.curve.plan.point_recipe`), scored on the
test split. A later curve of the same directory reuses what an earlier one finished: a point whose run says
``finished`` and whose ``eval.json`` has the metric is read, not trained; one left running or interrupted is resumed
from its newest checkpoint (``run_recipe(resume=True)``), or trained again when it has none. A finished point's
checkpoints are removed (``final/`` keeps the model), as a tuning trial's are.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lmtune import atomic, outputs, run_status
from lmtune.curve import fit, page
from lmtune.curve.plan import (
    CURVE_HTML,
    CURVE_JSON,
    LOCK,
    POINTS,
    ZERO_SHOT,
    Plan,
    Point,
    baseline_recipe,
    point_recipe,
)
from lmtune.errors import UserError
from lmtune.progress import say
from lmtune.run_dir import RunDir, checkpoint_dirs

FINISHED, PENDING, RUNNING = "finished", "pending", "running"


@dataclass
class Curve:
    """A curve as it runs: the plan, each point's row of ``curve.json``, the baseline and the fit."""

    plan: Plan
    rows: list[dict[str, Any]]
    baseline: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    statement: str = ""
    notes: list[str] = field(default_factory=list)
    before: dict[str, dict[str, Any]] = field(default_factory=dict)  # an earlier curve's rows, by run
    _fitted_on: tuple = ()

    def body(self) -> dict[str, Any]:
        """``curve.json``."""
        p = self.plan
        return {"name": p.recipe.name, "recipe_sha256": p.fingerprint, "metric": p.metric, "system": p.system,
                "higher_is_better": p.higher_is_better, "split": "test", "n_train_total": p.n_total,
                "fractions": p.fractions, "repeats": p.repeats, "points": self.rows, "baseline": self.baseline,
                "fit": self.fit, "statement": self.statement, "notes": self.notes}


def run_curve(found: Plan, quiet: bool = False) -> Curve:
    """Train and score every point of a checked plan (reusing finished ones), writing the curve as it goes.

    Raises:
        UserError: another ``lmtune curve`` holds this directory, or a point's run fails with one.
    """
    directory = found.directory
    created = outputs.first_missing(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError("another lmtune curve is running in this directory; wait for it to finish or give another "
                        "--out", source=str(directory)) from None
    try:
        with _removed_unless_work(created, directory / POINTS):
            before = _previous(directory)
            curve = Curve(found, [_row(found, p, before) for p in found.points], notes=list(found.notes),
                          before=before)
            for note in found.notes:
                say(f"note: {note}", quiet)
            write(curve)
            if found.baseline:
                _baseline(curve, quiet)
            for i, point in enumerate(found.points):
                _point(curve, point, curve.rows[i], f"point {i + 1} of {len(found.points)}", quiet)
    finally:
        lock.release()
    print(curve.statement)
    print(f"curve: {directory / CURVE_JSON}\npage: {(directory / CURVE_HTML).resolve()}")
    return curve


@contextlib.contextmanager
def _removed_unless_work(created: Path | None, points: Path) -> Iterator[None]:
    """Remove the curve directory this command created if it fails before any point's run holds work."""
    try:
        yield
    except BaseException:
        if created is not None and not any(RunDir(p).is_run for p in points.glob("*")):
            shutil.rmtree(created, ignore_errors=True)
        raise


def _previous(directory: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier curve of this directory by run (their seconds are kept), ``{}`` for a new one."""
    try:
        body = json.loads((directory / CURVE_JSON).read_text())
    except (OSError, ValueError):
        return {}
    rows = list(body.get("points") or []) + ([body["baseline"]] if body.get("baseline") else [])
    return {r["run"]: r for r in rows if isinstance(r, dict) and r.get("run")}


def _row(found: Plan, point: Point, before: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A point's row of ``curve.json``: finished (measured before) or pending."""
    row = {"fraction": point.fraction, "n_train": point.n_train, "repeat": point.repeat, "run": point.run,
           "state": PENDING, "value": None, "ci_low": None, "ci_high": None, "seconds": None}
    measured = _measured(RunDir(found.directory / point.run), found.system, found.metric)
    if measured is not None:
        row.update(measured, state=FINISHED, seconds=before.get(point.run, {}).get("seconds", measured["seconds"]))
    return row


def _measured(run: RunDir, system: str, metric: str) -> dict[str, Any] | None:
    """A finished run's metric of ``system`` on test and its interval; None unless all are there. Its seconds are
    the run's own (``status.json``: from claiming its directory to its end), until the curve's wall clock replaces
    them."""
    if not run.is_run or run_status.read(run).get("state") != run_status.FINISHED or not run.eval.is_file():
        return None
    try:
        body = run.read_eval()
    except ValueError:
        return None
    result = (body.get("results") or {}).get(system) or {}
    value = result.get(metric)
    if body.get("split") != "test" or not isinstance(value, int | float):
        return None
    interval = (result.get("ci") or {}).get(metric) or [None, None]
    return {"value": float(value), "ci_low": interval[0], "ci_high": interval[1],
            "seconds": run_status.read(run).get("elapsed_s")}


def _train(run: RunDir, recipe, quiet: bool) -> None:
    """Run a point's recipe into ``run``: resumed from its newest checkpoint if it has one, else from the start."""
    from lmtune.lifecycle import run_recipe

    resume = run.is_run and bool(checkpoint_dirs(run.checkpoints, complete=True))
    if run.path.exists() and not run.is_run:
        shutil.rmtree(run.path)  # a run that stopped while claiming its directory: under points/, ours to remove
    if resume:
        say(f"      resuming {run.path.name} from its newest checkpoint", quiet)
    run_recipe(recipe, out=run.path, resume=resume, overwrite=not resume, quiet=quiet, evaluate_on="test")
    shutil.rmtree(run.checkpoints, ignore_errors=True)


def _point(curve: Curve, point: Point, row: dict[str, Any], label: str, quiet: bool) -> None:
    """One point: reused when finished before, else trained; its line printed and the curve rewritten."""
    found = curve.plan
    run = RunDir(found.directory / point.run)
    if row["state"] == FINISHED:
        _print(row, found.metric, "finished before, reused")
        return
    say(f"{label}: {point.n_train} training examples (fraction {point.fraction:g}, subset seed {point.repeat}) "
        f"in {run.path}", quiet)
    row["state"] = RUNNING
    write(curve)
    started = time.monotonic()
    try:
        _train(run, point_recipe(found, point), quiet)
    except BaseException:
        row["state"] = PENDING
        write(curve)
        raise
    measured = _measured(run, found.system, found.metric)
    if measured is None:
        row["state"] = PENDING
        write(curve)
        raise UserError(f"no {found.metric} of {found.system} on the test split in {run.eval}; is {found.system} "
                        "a system this task scores?", source=point.run)
    row.update(measured, state=FINISHED, seconds=round(time.monotonic() - started, 1))
    write(curve)
    _print(row, found.metric)


def _baseline(curve: Curve, quiet: bool) -> None:
    """The zero-shot reference, scored once (a baseline-only run, nothing trained)."""
    found = curve.plan
    run = RunDir(found.directory / POINTS / ZERO_SHOT)
    measured = _measured(run, "zero_shot", found.metric)
    reused = measured is not None
    if reused:
        measured["seconds"] = curve.before.get(f"{POINTS}/{ZERO_SHOT}", measured).get("seconds")
    else:
        say(f"zero-shot reference: scoring the base model on the test split in {run.path}", quiet)
        started = time.monotonic()
        _train(run, baseline_recipe(found), quiet)
        measured = _measured(run, "zero_shot", found.metric)
        if measured is not None:
            measured["seconds"] = round(time.monotonic() - started, 1)
    if measured is None:
        curve.notes.append(f"zero_shot has no {found.metric} on this task: the curve has no reference line")
        write(curve)
        return
    curve.baseline = {"system": "zero_shot", "value": measured["value"], "ci_low": measured["ci_low"],
                      "ci_high": measured["ci_high"], "run": f"{POINTS}/{ZERO_SHOT}", "seconds": measured["seconds"]}
    write(curve)
    _print({**curve.baseline, "n_train": 0, "repeat": None}, found.metric, "finished before, reused" if reused else "")


def _print(row: dict[str, Any], metric: str, how: str = "") -> None:
    """The point's line: n, the metric with its interval, seconds."""
    who = "zero-shot reference, n=0" if row.get("repeat") is None else f"n={row['n_train']} repeat {row['repeat']}"
    interval = f" [{row['ci_low']:.4f}, {row['ci_high']:.4f}]" if row.get("ci_low") is not None else ""
    seconds = f", {row['seconds']:.1f} s" if row.get("seconds") is not None else ""
    print(f"{who}: {metric} {row['value']:.4f}{interval}{seconds}" + (f" ({how})" if how else ""), flush=True)


def write(curve: Curve) -> None:
    """Refit when the finished points changed, then write ``curve.json`` and ``curve.html`` (atomically)."""
    found = curve.plan
    done = tuple((r["n_train"], r["value"], r["ci_low"], r["ci_high"]) for r in curve.rows if r["state"] == FINISHED)
    if done != curve._fitted_on or not curve.statement:
        points = [fit.Measured(*values) for values in done]
        curve.fit, curve.statement = fit.fit(points, found.metric, found.higher_is_better, seed=found.recipe.seed)
        curve._fitted_on = done
    atomic.write_json(found.directory / CURVE_JSON, curve.body())
    atomic.write_text(found.directory / CURVE_HTML, page.render(curve.body(), found.directory))
