"""Weights & Biases in offline mode: ``<run>/wandb/offline-run-*/``, never the network.

``wandb sync runs/<name>/wandb/offline-run-*`` uploads a run later, where a network and an account
exist; ``wandb leet runs/<name>/wandb`` browses it in the terminal. ``WANDB_PROJECT`` names the
project (default ``lmtune``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from lmtune.run_dir import RunDir
from lmtune.train.trackers.base import EvalResults, Tracker, eval_scalars, quiet_offline_env

PROJECT = "lmtune"
EXIT_CODE = {"finished": 0, "failed": 1, "interrupted": 130}


class WandbTracker(Tracker):
    name = "wandb"
    module = "wandb"
    extra = "wandb"

    def start(self, run_dir: RunDir, name: str, params: dict[str, Any],
              resumed: dict[str, Any] | None = None) -> dict[str, Any]:
        quiet_offline_env()
        import wandb

        run_id = (resumed or {}).get("id") or uuid.uuid4().hex[:12]
        # No console capture, system sampling, machine probes (cloud metadata addresses), git or code saving:
        # the run directory and the manifest already record what those would.
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True,
                                  x_disable_machine_info=True, disable_git=True, disable_code=True, save_code=False,
                                  x_save_requirements=False)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(mode="offline", dir=str(run_dir.path), project=os.environ.get("WANDB_PROJECT", PROJECT),
                              name=name, id=run_id, resume="allow" if resumed else None, config=params,
                              settings=settings, reinit="create_new")
        self.location = f"offline, {run_dir.wandb}"
        return {"id": run_id}

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_eval(self, step: int, results: EvalResults) -> None:
        self.run.summary.update(eval_scalars(results))

    def log_artifact(self, path: Path) -> None:
        # A file in the run's files folder is one of its files: recorded now, uploaded by `wandb sync`.
        kept = Path(self.run.dir) / path.name
        shutil.copy2(path, kept)
        self.run.save(str(kept), base_path=self.run.dir, policy="now")

    def close(self, status: str = "finished") -> None:
        self.run.finish(exit_code=EXIT_CODE.get(status, 1))
