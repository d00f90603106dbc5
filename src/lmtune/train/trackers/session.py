"""A run's trackers, opened together from the claim of its directory to its report.

The training loop logs each ``metrics.jsonl`` line to them as well (``<split>/<key>`` values at its
step, the line's timing with it), and the lifecycle, once ``eval.json`` and ``report.html`` are
written, the results with their intervals and the report and manifest as artifacts. Only the main
process opens trackers; the others get an empty session, as they write no ``metrics.jsonl``.

A resumed run continues each tracker's run (``trackers.json`` keeps their ids) and does not log a line
twice: the lines the earlier attempt wrote to ``metrics.jsonl`` went to the trackers then, and the
resumed loop logs them again with the same values (a resume repeats the run exactly).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.progress import say
from lmtune.run_dir import RunDir
from lmtune.train.trackers.base import Tracker, eval_results, flatten
from lmtune.train.trackers.registry import backends, install_hint, installed


class Trackers:
    """The started trackers of one run; a tracker that fails is warned about once and dropped, so a broken
    logger never costs the training it logs."""

    def __init__(self, run_dir: RunDir, started: list[Tracker] | None = None,
                 already: set[tuple[int, str]] | None = None, quiet: bool = False):
        self.run_dir = run_dir
        self.started = list(started or [])
        self.already = already or set()  # (step, split) lines an earlier attempt logged
        self.step = max((step for step, _ in self.already), default=0)  # the last step logged: evaluation's step
        self.quiet = quiet

    def log(self, record: dict[str, Any], timing: dict[str, float] | None = None) -> None:
        """One ``metrics.jsonl`` line and its timing, as ``{"train/loss": ..., "train/tokens_per_s": ...}``."""
        step, split = int(record["step"]), str(record.get("split", "train"))
        self.step = max(self.step, step)
        if not self.started or (step, split) in self.already:
            return
        values = {f"{split}/{key}": float(value) for key, value in {**record, **(timing or {})}.items()
                  if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool)}
        self._each("log", step, values)

    def log_outcome(self) -> None:
        """``eval.json``'s results with their intervals, then ``report.html`` and ``manifest.json`` as artifacts."""
        if not self.started:
            return
        run = self.run_dir
        results = eval_results(run.read_eval()) if run.eval.exists() else {}
        if results:
            self._each("log_eval", self.step, results)
        for path in (run.report, run.manifest):
            if path.exists():
                self._each("log_artifact", path)

    def close(self, status: str = "finished") -> None:
        """End every tracker's run as ``finished``, ``failed`` or ``interrupted``."""
        self._each("close", status)
        self.started = []

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.started):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # any library error: the run goes on, and the user is told
                self.started.remove(tracker)
                say(f"warning: tracking: {tracker.name} failed ({type(exc).__name__}: {exc}); the run goes on "
                    f"without it (metrics.jsonl has every line)", self.quiet)


@contextmanager
def opened(names: Iterable[str], run_dir: RunDir, recipe: dict[str, Any], resume: bool = False, main: bool = True,
           quiet: bool = False) -> Iterator[Trackers]:
    """Start the trackers of ``names`` for ``run_dir`` (nothing outside the main process) and end them with the block.

    Args:
        names: the recipe's ``tracking:`` (``jsonl`` needs nothing here: ``TrainingLog`` writes it).
        run_dir: the claimed run directory.
        recipe: the resolved recipe as plain data; logged as parameters, flattened to dotted keys.
        resume: continue the tracker runs ``trackers.json`` names, and skip the lines already logged.
        main: whether this is the main process (the only one that logs).
        quiet: no console line saying where the trackers write.

    Raises:
        UserError: (``tracking``) a tracker's library is not installed (the recipe's check says so first).
    """
    session = start(names, run_dir, recipe, resume, quiet) if main else Trackers(run_dir)
    try:
        yield session
    except KeyboardInterrupt:
        session.close("interrupted")
        raise
    except BaseException:
        session.close("failed")
        raise
    session.close("finished")


def start(names: Iterable[str], run_dir: RunDir, recipe: dict[str, Any], resume: bool = False,
          quiet: bool = False) -> Trackers:
    """The started trackers of ``names`` (see :func:`opened`); ``trackers.json`` records how to continue them."""
    classes = backends(names)
    for cls in classes:
        if not installed(cls):
            raise UserError(install_hint(cls), source="tracking")
    saved = run_dir.read_trackers() if resume else {}
    session = Trackers(run_dir, already=_logged(run_dir.metrics) if resume else set(), quiet=quiet)
    params, state = flatten(recipe), {}
    for cls in classes:
        tracker = cls()
        try:
            state[cls.name] = tracker.start(run_dir, run_dir.path.name, params, saved.get(cls.name))
        except BaseException:
            session.close("failed")  # the ones already started
            raise
        session.started.append(tracker)
    if classes:
        run_dir.write_trackers(state)
        say("      tracking: " + ", ".join(f"{t.name} ({t.location})" for t in session.started), quiet)
    return session


def _logged(metrics: Path) -> set[tuple[int, str]]:
    """The (step, split) of each line an earlier attempt wrote to ``metrics.jsonl``."""
    found = set()
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            record = json.loads(line)
            found.add((int(record["step"]), str(record.get("split", "train"))))
        except (ValueError, KeyError, TypeError):  # a line cut by the crash: it is logged again
            continue
    return found
