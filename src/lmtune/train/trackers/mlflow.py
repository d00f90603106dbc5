"""MLflow: a local SQLite store in ``<run>/mlflow/`` (``mlflow.db``, ``artifacts/``), or ``MLFLOW_TRACKING_URI``.

Without ``MLFLOW_TRACKING_URI`` each run keeps its own store, so nothing is written outside the run
directory: ``mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow/mlflow.db`` shows it. Set the
variable (e.g. ``sqlite:///$PWD/mlflow.db``) to collect every run in one store, and
``MLFLOW_EXPERIMENT_NAME`` to file them under another experiment than ``lmtune``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from lmtune.run_dir import RunDir
from lmtune.train.trackers.base import EvalResults, Tracker, eval_scalars, param_text, quiet_offline_env

EXPERIMENT = "lmtune"
#: MLflow takes at most this many parameters (and metrics) in one ``log_batch`` call.
BATCH = 100
STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
#: Longest parameter value MLflow stores; a longer one (an inline template) is cut, marked with "...".
MAX_VALUE = 6000
#: What MLflow refuses in a key (a user's label in ``data.clean.label_map``, say) becomes "_".
NOT_IN_KEY = re.compile(r"[^\w\-. /]")


class MlflowTracker(Tracker):
    name = "mlflow"
    module = "mlflow"
    extra = "mlflow"

    def start(self, run_dir: RunDir, name: str, params: dict[str, Any],
              resumed: dict[str, Any] | None = None) -> dict[str, Any]:
        quiet_offline_env()
        from mlflow import MlflowClient

        for logger in ("mlflow", "alembic"):  # creating the store's tables logs a line per migration
            logging.getLogger(logger).setLevel(logging.WARNING)
        shared = os.environ.get("MLFLOW_TRACKING_URI") or None  # None: the run's own store, wherever it is moved
        if shared is None:
            run_dir.mlflow.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=shared or f"sqlite:///{run_dir.mlflow.absolute() / 'mlflow.db'}")
        self.location = shared or str(run_dir.mlflow)
        resumed = resumed or {}
        if resumed.get("tracking_uri") == shared and self._exists(resumed.get("run_id")):
            self.run_id = resumed["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return resumed
        artifacts = (run_dir.mlflow / "artifacts").absolute().as_uri() if shared is None else None
        experiment = self._experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT, artifacts)
        self.run_id = self.client.create_run(experiment, run_name=name,
                                             tags={"lmtune.run_dir": str(run_dir.path.absolute())}).info.run_id
        self._log_params(params)
        return {"tracking_uri": shared, "run_id": self.run_id}

    def _exists(self, run_id: str | None) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return run_id is not None and self.client.get_run(run_id) is not None
        except MlflowException:
            return False

    def _experiment(self, name: str, artifacts: str | None) -> str:
        """The experiment's id, created when missing (another process may create it first)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        texts = {_key(key): _value(str(param_text(value))) for key, value in params.items()}
        items = [Param(key, text) for key, text in texts.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])

    def log(self, step: int, values: dict[str, float]) -> None:
        self._log_metrics(step, values)

    def _log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(key), float(value), now, step) for key, value in values.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + BATCH])

    def log_eval(self, step: int, results: EvalResults) -> None:
        self._log_metrics(step, eval_scalars(results))

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "finished") -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))


def _key(key: str) -> str:
    return NOT_IN_KEY.sub("_", key)


def _value(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."
