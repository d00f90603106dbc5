"""A search of ``lmtune tune`` as the studio shows it, read from its ``study.db`` while the search writes it.

The study is opened with Optuna on a read-only SQLite connection (``mode=ro``: the studio cannot write to it,
not even the bookkeeping rows Optuna adds to a new database), read at once and closed. A search locks the file
for the moment of each commit; a read that meets the lock waits :data:`BUSY_S`, tries again up to
:data:`ATTEMPTS` times and then serves what it read last, with a note saying when. What was read is kept until
``study.db`` or its ``-wal`` file changes (:mod:`lmtune.studio.cache`) and the parameter importances until the
set of complete trials does, so a page polling a running search mostly costs two ``stat`` calls.

The leaderboard, the importances (fANOVA) and the values shown are :mod:`lmtune.tune.page`'s, so the page says
what ``tune.html`` says; the search space comes from the trials' own distributions (the recipe is not needed).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from lmtune.report.run import read_json
from lmtune.run_dir import RunDir
from lmtune.studio import studies
from lmtune.studio.cache import Stamped
from lmtune.studio.studies import number, text
from lmtune.tune import page
from lmtune.tune.space import Dimension
from lmtune.tune.study import STUDY_NAME

ATTEMPTS, PAUSE_S, BUSY_S = 3, 0.2, 0.5
#: What reading a study being written may raise: the file locked by a commit, the study not created yet.
UNREADABLE = (optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, KeyError)
STATES = ("complete", "pruned", "fail", "running")

_VIEWS = Stamped(64)
_IMPORTANCES = Stamped(64)
_LAST: OrderedDict[str, dict[str, Any]] = OrderedDict()  # the last good read of each study, for a locked moment
_LOCK = threading.Lock()


class Unreadable(Exception):
    """The study cannot be read at the moment."""


def files(study: studies.Study) -> list[Path]:
    """The files whose stamps say the study changed: ``study.db`` and its write-ahead log."""
    return [study.marker, study.marker.with_name(study.marker.name + "-wal")]


def view(root: Path, study: studies.Study) -> dict[str, Any]:
    """What the Tune page shows of ``study``: its summary, search space, trials best first, the best trial,
    importances, whether a trial is running, and a ``note`` when the study could not be read just now."""
    key = str(study.path)
    try:
        return _VIEWS.get(key, files(study), lambda: _read(root, study))
    except Unreadable as exc:
        with _LOCK:
            last = _LAST.get(key)
        if last is None:
            return {**_empty(study), "note": f"the study cannot be read yet ({exc}); trying again"}
        at = time.strftime("%H:%M:%S", time.localtime(last["read_at"]))
        return {**last, "note": f"showing the study as read at {at}: it cannot be read just now ({exc})"}


def row(root: Path, study: studies.Study) -> dict[str, Any]:
    """The Studies page's row of ``study``."""
    found = view(root, study)
    counts, best = found["counts"], found["best"]
    progress = f"{len(found['trials'])} trials: " + ", ".join(
        f"{counts[s]} {'failed' if s == 'fail' else s}" for s in STATES if counts[s] or s in ("complete", "pruned"))
    best_text = f"{found['metric']} {best['value']:.4g} (trial {best['number']})" if best else None
    return {"progress": progress, "best": best_text, "live": found["live"], "updated": found["updated"],
            "note": found.get("note")}


def _read(root: Path, study: studies.Study) -> dict[str, Any]:
    """:func:`_load`, tried again while the file is locked; remembered as the last good read."""
    error: BaseException | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(PAUSE_S)
        try:
            body = _load(root, study)
        except UNREADABLE as exc:
            error = exc
            continue
        with _LOCK:
            _LAST[str(study.path)] = body
            _LAST.move_to_end(str(study.path))
            while len(_LAST) > 64:
                _LAST.popitem(last=False)
        return body
    cause = error.__cause__ or error.__context__ or error  # Optuna wraps SQLite's own words
    said = str(cause).strip().splitlines()
    raise Unreadable(text(said[0] if said else type(cause).__name__, 200))


def _storage(db: Path) -> optuna.storages.RDBStorage:
    """Optuna's storage on a read-only connection to ``db`` (no table created, no version row added)."""
    uri = f"file:{quote(str(db.resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_S, check_same_thread=False)

    return optuna.storages.RDBStorage("sqlite://", engine_kwargs={"creator": connect,
                                                                 "poolclass": sqlalchemy.pool.NullPool},
                                      skip_compatibility_check=True, skip_table_creation=True)


def _load(root: Path, study: studies.Study) -> dict[str, Any]:
    storage = _storage(study.marker)
    try:
        return _body(root, study, optuna.load_study(study_name=STUDY_NAME, storage=storage))
    finally:
        storage.engine.dispose()


def dimensions(trials: list) -> list[Dimension]:
    """The searched keys as the trials' distributions give them, in the order the search suggests them."""
    found: dict[str, Dimension] = {}
    for trial in trials:
        for key, dist in trial.distributions.items():
            if key in found:
                continue
            if isinstance(dist, CategoricalDistribution):
                found[key] = Dimension(key, choices=list(dist.choices))
            else:
                found[key] = Dimension(key, low=getattr(dist, "low", None), high=getattr(dist, "high", None),
                                       log=bool(getattr(dist, "log", False)), step=getattr(dist, "step", None))
    return list(found.values())


def _body(root: Path, study: studies.Study, found) -> dict[str, Any]:
    """The page's data from the loaded study ``found``."""
    trials = found.get_trials(deepcopy=False)
    dims = dimensions(trials)
    maximize = found.direction == StudyDirection.MAXIMIZE
    metric = text(found.user_attrs.get("metric") or "objective", 100)
    rows = page.rows(found, page.View(study.name, study.path, metric, "", maximize, dims))
    trial_rows = [{"number": r.number, "state": r.state, "value": number(r.value),
                   "params": {k: _param(v) for k, v in r.values.items()},
                   "shown": {k: text(page.shown_value(v), 200) for k, v in r.values.items()},
                   "val_loss": number(r.val_loss), "seconds": number(r.seconds),
                   "run": studies.run_link(root, study.name, r.run_dir), "reason": text(r.reason)} for r in rows]
    counts = {s: sum(r["state"] == s for r in trial_rows) for s in STATES}
    first = trial_rows[0] if trial_rows and trial_rows[0]["state"] == "complete" else None
    best = first if first is not None and first["value"] is not None else None
    system = _system(study.path, rows[0].run_dir) if best is not None else None
    body = {"name": study.name, "kind": "tune", "metric": metric, "system": system, "maximize": maximize,
            "dims": [_dim(d, short) for d, short in zip(dims, page.headers(dims))], "trials": trial_rows,
            "best": best, "counts": counts, "live": counts["running"] > 0,
            "updated": studies.updated(*files(study)), "read_at": time.time(), "note": None}
    body["summary"] = _summary(body)
    body.update(_importances(study, found, trials, dims))
    return body


def _summary(body: dict[str, Any]) -> str:
    """One paragraph: the objective, the trials by state and the best trial (the words of ``tune.html``)."""
    counts = body["counts"]
    better = "higher" if body["maximize"] else "lower"
    system = f" of {body['system']}" if body["system"] else ""
    summary = (f"Objective: {body['metric']}{system} on the validation split ({better} is better). "
               f"{len(body['trials'])} trials: {counts['complete']} complete, {counts['pruned']} pruned, "
               f"{counts['fail']} failed" + (f", {counts['running']} running" if counts["running"] else "") + ".")
    if body["best"] is not None:
        summary += f" Best: trial {body['best']['number']}, {body['metric']} {body['best']['value']:.4g}."
    return summary


def _importances(study: studies.Study, found, trials: list, dims: list[Dimension]) -> dict[str, Any]:
    """fANOVA importances (:func:`lmtune.tune.page.importances`), computed again only when a trial completes."""
    complete = tuple((t.number, t.value) for t in trials if t.state == TrialState.COMPLETE)

    def compute() -> dict[str, Any]:
        values, why = page.importances(found, dims, _seed(study.path, trials))
        if values is None:
            return {"importances": None, "importances_note": why}
        shorts = dict(zip((d.key for d in dims), page.headers(dims)))
        return {"importances": [{"key": k, "short": shorts.get(k, k), "importance": number(float(v))}
                                for k, v in values.items()], "importances_note": None}

    return _IMPORTANCES.get((str(study.path), complete), (), compute)


def _seed(path: Path, trials: list) -> int:
    """The recipe's seed (the one ``tune.html`` seeds its importance forest with), from a trial's recipe."""
    for trial in trials:
        run_dir = trial.user_attrs.get("run_dir")
        if isinstance(run_dir, str) and "/" not in run_dir and ".." not in run_dir:
            try:
                seed = RunDir(path / run_dir).read_recipe().get("seed")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(seed, int) and not isinstance(seed, bool):
                return seed
    return 0


def _system(path: Path, run_dir: str | None) -> str | None:
    """The system the objective scored: the fine-tuned system in the best trial's ``eval.json``."""
    if not isinstance(run_dir, str) or "/" in run_dir or ".." in run_dir:
        return None
    results = (read_json(RunDir(path / run_dir).eval, []) or {}).get("results")
    if not isinstance(results, dict) or not results:
        return None
    return "finetuned" if "finetuned" in results else text(next(iter(results)), 100)


def _param(value: Any) -> Any:
    """A parameter as JSON the page can plot: numbers, text, true/false or null."""
    if value is None or isinstance(value, bool | str):
        return text(value, 200) if isinstance(value, str) else value
    found = number(value)
    return found if found is not None else text(value, 200)


def _dim(dim: Dimension, short: str) -> dict[str, Any]:
    kind = "choice" if dim.choices is not None else "int" if isinstance(dim.low, int) else "float"
    return {"key": dim.key, "short": short, "type": kind, "low": number(dim.low), "high": number(dim.high),
            "log": dim.log, "choices": [_param(c) for c in dim.choices] if dim.choices is not None else None}


def _empty(study: studies.Study) -> dict[str, Any]:
    return {"name": study.name, "kind": "tune", "metric": None, "system": None, "maximize": True, "dims": [],
            "trials": [], "best": None, "counts": dict.fromkeys(STATES, 0), "live": True,
            "updated": studies.updated(*files(study)), "read_at": None, "summary": "", "importances": None,
            "importances_note": None}
