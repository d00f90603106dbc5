"""TensorBoard: event files in ``<run>/tensorboard/``, written by PyTorch's ``SummaryWriter``.

``tensorboard --logdir runs/`` then shows every run's curves side by side, and its HParams tab the
parameters of each run against its evaluation metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.run_dir import RunDir
from lmtune.train.trackers.base import EvalResults, Tracker, eval_scalars, param_text, quiet_offline_env


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    module = "tensorboard"
    extra = "tensorboard"

    def start(self, run_dir: RunDir, name: str, params: dict[str, Any],
              resumed: dict[str, Any] | None = None) -> dict[str, Any]:
        quiet_offline_env()
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run appends a new event file to the same folder; TensorBoard reads them as one run.
        self.writer = SummaryWriter(log_dir=str(run_dir.tensorboard))
        self.location = str(run_dir.tensorboard)
        self.params = {key: param_text(value) for key, value in params.items()}
        self.metrics: dict[str, float] = {}
        return {}

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_eval(self, step: int, results: EvalResults) -> None:
        scalars = eval_scalars(results)
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.metrics.update({k: v for k, v in scalars.items() if not k.endswith(("_ci_low", "_ci_high"))})
        self.writer.add_text("eval", _table(results), step)
        self.writer.flush()

    def log_artifact(self, path: Path) -> None:
        """Nothing to copy: TensorBoard keeps no files, and the event files sit in the same run directory."""

    def close(self, status: str = "finished") -> None:
        from torch.utils.tensorboard.summary import hparams

        # The HParams tab: this run's parameters against its metrics (the scalars of the same names).
        for summary in hparams(self.params, self.metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.close()


def _table(results: EvalResults) -> str:
    """The results as a Markdown table (TensorBoard's text tab renders it)."""
    rows = ["| system | metric | value | 95% interval |", "|---|---|---|---|"]
    for system, metrics in results.items():
        for metric, entry in metrics.items():
            low, high = entry.get("ci_low"), entry.get("ci_high")
            interval = f"{low:.4g} – {high:.4g}" if low is not None and high is not None else ""
            rows.append(f"| {system} | {metric} | {entry['value']:.4g} | {interval} |")
    return "\n".join(rows)
