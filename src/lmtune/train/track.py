"""Metric logging: ``metrics.jsonl`` and ``timing.jsonl`` always, and the recipe's other trackers
(:mod:`lmtune.train.trackers`: TensorBoard, MLflow, W&B, trackio) each line as well.

What a run learned and how fast a machine ran it are kept apart: ``metrics.jsonl`` holds only values
the recipe and seed determine (step, epoch, split, loss, lr), so two runs of one recipe and seed
write the same file byte for byte (on CPU) and ``diff`` checks repeatability; ``timing.jsonl``
holds the wall-clock measurements of each training log line (tokens/s, elapsed seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.run_dir import RunDir
from lmtune.train.trackers.session import Trackers


class JsonlTracker:
    """Appends one JSON object per logged step, flushed at once so a crash loses nothing."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class TrainingLog:
    """A run's ``metrics.jsonl`` and ``timing.jsonl``, cut back together on resume; each line also goes to
    ``trackers`` (the run's other trackers, opened and closed by whoever runs the recipe)."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, trackers: Trackers | None = None):
        run = RunDir(run_dir)
        self.metrics = JsonlTracker(run.metrics, resume_step)
        self.timing = JsonlTracker(run.timing, resume_step)
        self.trackers = trackers

    def log(self, record: dict[str, Any], **timing: float) -> None:
        """Log ``record``; ``timing`` (e.g. ``tokens_per_s``) goes to ``timing.jsonl`` under the same step."""
        if timing:  # first, so whoever reads a metrics line finds its timing already written
            self.timing.log({"step": record["step"], **timing})
        self.metrics.log(record)
        if self.trackers is not None:
            self.trackers.log(record, timing)

    def close(self) -> None:
        self.metrics.close()
        self.timing.close()


class NoLog:
    """What the processes other than the main one log to: nothing (the main process logs the summed losses)."""

    def log(self, record: dict[str, Any], **timing: float) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to close."""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
