"""What a tracker backend implements, and the shapes of what it is given.

A backend is given plain values, already flattened: parameters as ``{"training.learning_rate": 0.0002}``,
each logged step as ``{"train/loss": 1.23, "train/lr": 0.0002, "train/tokens_per_s": 850.0}``, and the
evaluation results as ``{system: {metric: {"value", "ci_low", "ci_high"}}}``. It imports its library only
in ``start``, so naming the backends (the recipe's check) costs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from lmtune.run_dir import RunDir

#: One evaluation result: ``{system: {metric: {"value": v, "ci_low": lo, "ci_high": hi}}}`` (bounds may be None).
EvalResults = dict[str, dict[str, dict[str, float | None]]]

#: Set before a backend's library is imported: nothing it does may reach the network (offline is the contract).
OFFLINE_ENV = {
    "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
}


class Tracker:
    """One tracker's run for one lmtune run. Subclasses set the class attributes and the five methods."""

    #: The name in a recipe's ``tracking:`` list.
    name: ClassVar[str] = ""
    #: The module that must be importable (checked with the recipe, before anything slow).
    module: ClassVar[str] = ""
    #: The optional extra that installs it: ``pip install 'lmtune[<extra>]'``.
    extra: ClassVar[str] = ""
    #: Where this run's tracker writes (a folder, a store's URI), said on the console once ``start`` set it.
    location: str = ""

    def start(self, run_dir: RunDir, name: str, params: dict[str, Any],
              resumed: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open the tracker's run (``resumed``: continue the one whose state an earlier attempt returned).

        Args:
            run_dir: the lmtune run directory (the tracker's files go inside it where the library allows).
            name: the run's name (its directory's name).
            params: the flattened recipe, dotted keys.
            resumed: what ``start`` returned in the attempt this one resumes; None for a new run.

        Returns:
            What a later ``start`` needs to continue this tracker run (kept in ``trackers.json``).
        """
        raise NotImplementedError

    def log(self, step: int, values: dict[str, float]) -> None:
        """Log one training or validation line at ``step``."""
        raise NotImplementedError

    def log_eval(self, step: int, results: EvalResults) -> None:
        """Log every system's test metrics and their bootstrap intervals (``step``: the last training step)."""
        raise NotImplementedError

    def log_artifact(self, path: Path) -> None:
        """Keep a file of the run (the report, the manifest) with the tracker's run."""
        raise NotImplementedError

    def close(self, status: str = "finished") -> None:
        """End the tracker's run: ``finished``, ``failed`` or ``interrupted``."""
        raise NotImplementedError


def quiet_offline_env() -> None:
    """Set :data:`OFFLINE_ENV`'s variables the user has not set (a backend calls it before its import)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"learning_rate": 1e-4}}`` as ``{"training.learning_rate": 1e-4}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def param_text(value: Any) -> str | int | float | bool:
    """A parameter as a tracker that takes only scalars shows it: numbers, booleans and text as they are,
    anything else (None, lists, empty mappings) as JSON."""
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def eval_scalars(results: EvalResults) -> dict[str, float]:
    """``{"eval/<system>/<metric>": value, ".../<metric>_ci_low": lo, ".../<metric>_ci_high": hi}``."""
    flat: dict[str, float] = {}
    for system, metrics in results.items():
        for metric, entry in metrics.items():
            for part, suffix in (("value", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
                if entry.get(part) is not None:
                    flat[f"eval/{system}/{metric}{suffix}"] = float(entry[part])
    return flat


def eval_results(body: dict[str, Any]) -> EvalResults:
    """The numeric metrics of ``eval.json``'s ``results``, each with its interval where it has one.

    Costs, latencies and counts are numbers too and are kept; the confusion matrix and the load a
    latency was measured under are not metrics and are left out.
    """
    out: EvalResults = {}
    for system, metrics in (body.get("results") or {}).items():
        intervals = metrics.get("ci") or {}
        kept = {}
        for metric, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            low, high = (intervals.get(metric) or [None, None])[:2]
            kept[metric] = {"value": float(value), "ci_low": low, "ci_high": high}
        out[system] = kept
    return out
