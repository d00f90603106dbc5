"""trackio: its local SQLite store, project ``lmtune`` (``TRACKIO_PROJECT`` names another).

trackio keeps one store per machine, ``TRACKIO_DIR`` (default ``~/.cache/huggingface/trackio``), read
once when trackio is imported; it has no way to put one run's store elsewhere, so the runs of every
run directory collect there, and ``trackio show --project lmtune`` compares them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any

from lmtune.run_dir import RunDir
from lmtune.train.trackers.base import EvalResults, Tracker, eval_scalars, quiet_offline_env

PROJECT = "lmtune"


class TrackioTracker(Tracker):
    name = "trackio"
    module = "trackio"
    extra = "trackio"

    def start(self, run_dir: RunDir, name: str, params: dict[str, Any],
              resumed: dict[str, Any] | None = None) -> dict[str, Any]:
        quiet_offline_env()
        import trackio

        project = (resumed or {}).get("project") or os.environ.get("TRACKIO_PROJECT", PROJECT)
        # trackio prints a banner and dashboard instructions; lmtune's console says where the run went instead.
        with contextlib.redirect_stdout(io.StringIO()):
            self.run = trackio.init(project=project, name=name, config=params, resume="allow" if resumed else "never",
                                    embed=False, auto_log_cpu=False, auto_log_gpu=False)
        self.location = f"project {project} in {trackio.utils.TRACKIO_DIR}"
        return {"project": project, "name": self.run.name, "id": self.run.id}

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_eval(self, step: int, results: EvalResults) -> None:
        self.run.log(eval_scalars(results), step=step)

    def log_artifact(self, path: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            # Artifact names are letters, digits, '.', '_' and '-'; a run directory's name may hold others.
            name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.run.name}-{path.stem}")
            self.run.log_artifact(str(path), name=name, type=path.stem)

    def close(self, status: str = "finished") -> None:
        from trackio import context_vars

        with contextlib.redirect_stdout(io.StringIO()):
            self.run.finish()
        if context_vars.current_run.get() is self.run:  # else trackio finishes it again at exit, saying so
            context_vars.current_run.set(None)
