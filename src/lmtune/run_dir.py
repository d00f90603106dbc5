"""The run directory: every path of a run, and every read and write of its files, in one place.

::

    runs/<name>/
      recipe.yaml        resolved recipe          (written first: with manifest.json it marks a run)
      manifest.json      reproducibility record
      data/              <split>.jsonl as used, data_report.json
      metrics.jsonl      one JSON object per logged step
      timing.jsonl       wall-clock measurements of each training log line
      checkpoints/       step-N/ (written atomically), best.safetensors
      final/             the trained artefact, tokenizer, lmtune.json (how to load and use it)
      eval.json          every system's results
      predictions/       <system>.jsonl
      report.html        the run report
      human_eval.json    blind A/B human judgements of two systems per round (the studio's Judge page)
      status.json        running / finished / failed / interrupted, with the process and its times
      trackers.json      the tracker runs (``tracking:``) a resumed run continues: MLflow run id, W&B id, ...
      tensorboard/       TensorBoard event files (tracking: tensorboard)
      mlflow/            MLflow's local store: mlflow.db and artifacts/ (tracking: mlflow)
      wandb/             W&B's offline runs, offline-run-*/ (tracking: wandb)

The file formats are the ones the stages have always written; this module only names and moves them.
It sits low in the layers (it imports only :mod:`lmtune.atomic`), so any stage may ask it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmtune import atomic

#: Where a run goes when no ``--out`` is given: ``runs/<recipe name>``.
RUNS = Path("runs")
RECIPE, MANIFEST, METRICS, TIMING = "recipe.yaml", "manifest.json", "metrics.jsonl", "timing.jsonl"
EVAL, REPORT, STATUS = "eval.json", "report.html", "status.json"
#: Human preference judgements of the run's systems (:mod:`lmtune.guidance.judging`), one entry per round.
HUMAN_EVAL = "human_eval.json"
#: What the trackers of ``tracking:`` keep in a run directory (:mod:`lmtune.train.trackers`).
TRACKERS, TENSORBOARD, MLFLOW, WANDB = "trackers.json", "tensorboard", "mlflow", "wandb"
DEEPSPEED = "deepspeed.json"
DATA, PREDICTIONS, CHECKPOINTS, FINAL = "data", "predictions", "checkpoints", "final"
#: Files that make a directory an lmtune run (written first when a run claims its directory).
MARKERS = (RECIPE, MANIFEST)
#: What ``lmtune data prepare`` writes beside the splits; its presence marks a folder of prepared data.
DATA_REPORT = "data_report.json"
#: How to load and use a trained model folder (a run's ``final/``, or an export of it).
MODEL_INFO = "lmtune.json"
#: A checkpoint folder is ``step-N``; a complete one has its loop state written (last, before the rename).
CHECKPOINT_PREFIX, CHECKPOINT_STATE, BEST_WEIGHTS = "step-", "state.json", "best.safetensors"


@dataclass(frozen=True)
class _Folder:
    """A folder given as a path; usable wherever a path is (``os.fspath``, ``Path(...)``)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # in a message, the folder's path
        return str(self.path)


def _inside(name: str, doc: str) -> property:
    """A read-only property: the path ``name`` inside the folder."""
    return property(lambda self: self.path / name, doc=doc)


@dataclass(frozen=True)
class DataDir(_Folder):
    """A folder of prepared data: a run's ``data/``, or the ``--out`` of ``lmtune data prepare``."""

    def split(self, name: str) -> Path:
        """``<name>.jsonl``: one split's records as used (``train``, ``validation``, ``test``)."""
        return self.path / f"{name}.jsonl"

    report = _inside(DATA_REPORT, "``data_report.json``: counts, dedup, leakage, truncation, sampling.")


@dataclass(frozen=True)
class RunDir(_Folder):
    """One run directory: its paths as properties, its files read and written by its methods."""

    @classmethod
    def at(cls, out: str | Path | None, name: str) -> RunDir:
        """``out``, or ``runs/<name>`` when it is not given."""
        return cls(out or RUNS / name)

    recipe = _inside(RECIPE, "``recipe.yaml``: the resolved recipe, every default filled in (a marker).")
    manifest = _inside(MANIFEST, "``manifest.json``: versions, platform, seed, data hashes, model source (a marker).")
    metrics = _inside(METRICS, "``metrics.jsonl``: one JSON object per logged step (step, epoch, split, loss, lr).")
    timing = _inside(TIMING, "``timing.jsonl``: the wall-clock measurements of each training log line.")
    eval = _inside(EVAL, "``eval.json``: every system's results; its existence makes a run worth resuming.")
    report = _inside(REPORT, "``report.html``: the self-contained run report.")
    human_eval = _inside(HUMAN_EVAL, "``human_eval.json``: blind A/B human judgements, one entry per round.")
    status = _inside(STATUS, "``status.json``: the run's state (see :mod:`lmtune.run_status`), its process and times.")
    predictions = _inside(PREDICTIONS, "``predictions/``: :meth:`prediction` names one system's file in it.")
    checkpoints = _inside(CHECKPOINTS, "``checkpoints/``: ``step-N/`` folders and :attr:`best_weights`.")
    final = _inside(FINAL, "``final/``: the trained artefact, its tokenizer and :attr:`final_info`.")
    trackers = _inside(TRACKERS, "``trackers.json``: each tracker's run (ids) that a resumed run continues.")
    tensorboard = _inside(TENSORBOARD, "``tensorboard/``: TensorBoard event files (``tracking: [tensorboard]``).")
    mlflow = _inside(MLFLOW, "``mlflow/``: MLflow's local store, ``mlflow.db`` and ``artifacts/``.")
    wandb = _inside(WANDB, "``wandb/``: W&B's offline runs (``offline-run-*/``), for ``wandb sync``.")
    deepspeed = _inside(DEEPSPEED, "``deepspeed.json``: the config DeepSpeed was given (``strategy: deepspeed``).")

    @property
    def data(self) -> DataDir:
        """``data/``: the splits as used and their data report."""
        return DataDir(self.path / DATA)

    def prediction(self, system: str) -> Path:
        """``predictions/<system>.jsonl``: one line per test example (input, reference, prediction)."""
        return self.predictions / f"{system}.jsonl"

    def prediction_systems(self) -> list[str]:
        """The systems that have a predictions file, sorted by name."""
        return sorted(p.stem for p in self.predictions.glob("*.jsonl"))

    def checkpoint(self, step: int) -> Path:
        """``checkpoints/step-N``."""
        return checkpoint_path(self.checkpoints, step)

    @property
    def best_weights(self) -> Path:
        """The trainable weights of the best validation step (restored at the end of training)."""
        return self.checkpoints / BEST_WEIGHTS

    @property
    def final_info(self) -> Path:
        """``final/lmtune.json``: how to load and use the trained model."""
        return self.final / MODEL_INFO

    # --- what kind of directory this is ---------------------------------------------------

    @property
    def is_run(self) -> bool:
        """Whether this is an lmtune run directory (it has every file of :data:`MARKERS`)."""
        return all((self.path / name).is_file() for name in MARKERS)

    @property
    def has_work(self) -> bool:
        """Whether a checkpoint or a measured result is saved: work a resumed run continues."""
        return self.checkpoints.exists() or self.eval.exists()

    # --- reads and writes ------------------------------------------------------------------

    def write_recipe(self, recipe: dict[str, Any]) -> None:
        """The resolved recipe, keys in the recipe's order, atomically."""
        atomic.write_text(self.recipe, yaml.safe_dump(recipe, sort_keys=False))

    def read_recipe(self) -> dict[str, Any]:
        """The saved recipe (``{}`` when the file is empty).

        Raises:
            OSError: there is none; yaml.YAMLError: it is not YAML.
        """
        return yaml.safe_load(self.recipe.read_text()) or {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic.write_json(self.manifest, manifest)

    def read_eval(self) -> dict[str, Any]:
        """``eval.json``.

        Raises:
            OSError: there is none yet; json.JSONDecodeError: it is not JSON.
        """
        return json.loads(self.eval.read_text())

    def write_eval(self, body: dict[str, Any]) -> None:
        atomic.write_json(self.eval, body)

    def read_predictions(self, system: str) -> list[dict[str, Any]]:
        """``system``'s predictions, one record per test example; ``[]`` when it has none."""
        path = self.prediction(system)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def write_predictions(self, system: str, records: Iterable[dict[str, Any]]) -> None:
        atomic.write_jsonl(self.prediction(system), records)

    def read_human_eval(self) -> dict[str, Any]:
        """``human_eval.json``: ``{"rounds": [...]}``; ``{"rounds": []}`` when there is none or it cannot be read."""
        try:
            value = json.loads(self.human_eval.read_text())
        except (OSError, ValueError):
            return {"rounds": []}
        return value if isinstance(value, dict) and isinstance(value.get("rounds"), list) else {"rounds": []}

    def write_human_eval(self, body: dict[str, Any]) -> None:
        atomic.write_json(self.human_eval, body)

    def read_status(self) -> dict[str, Any] | None:
        """``status.json``; None when there is none or it cannot be read (a run from before it existed)."""
        try:
            value = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_status(self, body: dict[str, Any]) -> None:
        atomic.write_json(self.status, body)

    def read_trackers(self) -> dict[str, Any]:
        """``trackers.json``: ``{tracker name: what continuing its run needs}``; ``{}`` when there is none."""
        try:
            value = json.loads(self.trackers.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def write_trackers(self, body: dict[str, Any]) -> None:
        atomic.write_json(self.trackers, body)

    def read_final_info(self) -> dict[str, Any]:
        """``final/lmtune.json`` (see :func:`read_model_info`)."""
        return read_model_info(self.final)


def checkpoint_path(checkpoints: Path, step: int) -> Path:
    """``checkpoints/step-N``."""
    return Path(checkpoints) / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_dirs(checkpoints: Path, complete: bool = False) -> list[Path]:
    """The ``step-N`` folders under ``checkpoints``, oldest step first; half-written ``.tmp`` ones left out.

    With ``complete``, only those whose loop state was written (every file of the checkpoint is there).
    """
    found = [p for p in Path(checkpoints).glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")
             and (not complete or (p / CHECKPOINT_STATE).exists())]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    """N of a ``step-N`` folder."""
    return int(Path(path).name.split("-")[1])


def read_model_info(folder: Path) -> dict[str, Any]:
    """A model folder's ``lmtune.json``: base model and its source, method, task, head, max_length."""
    return json.loads((Path(folder) / MODEL_INFO).read_text())


def write_model_info(folder: Path, info: dict[str, Any]) -> None:
    """Write ``lmtune.json`` into a model folder being built (the folder itself is renamed into place)."""
    (Path(folder) / MODEL_INFO).write_text(json.dumps(info, indent=2))


def run_final(ref: str | Path) -> Path | None:
    """The ``final/`` directory if ``ref`` is a run directory (or its ``final/``, or an export of it), else None."""
    path = Path(ref).expanduser()
    for final in (path / FINAL, path):
        if (final / MODEL_INFO).is_file():
            return final
    return None


def run_of(final: Path) -> RunDir:
    """The run a model folder belongs to: the parent of a ``final/``, else the folder itself (an export)."""
    final = Path(final)
    return RunDir(final.parent if final.name == FINAL else final)


def shown_text(value: Any) -> str:
    """A predictions-file value (input, reference or prediction) as display text: a chat input is a list of
    messages and is shown as JSON, not as a Python repr; a missing value is empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
