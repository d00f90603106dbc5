"""What the Run page shows of one run, as data: its status (from the run, or from the queue before the run has a
directory), its training curves, the systems that have predictions, and the records the data report names.

Everything here reads the run directory forgivingly, because a run may be writing it at that moment: files that
are missing leave their part empty and torn JSON lines are skipped (:mod:`lmtune.report.run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune import run_status
from lmtune.kinds import systems as system_kinds
from lmtune.report import html
from lmtune.report.run import Run, read_json, read_jsonl
from lmtune.run_dir import RunDir
from lmtune.studio.predictions import Table, table

VALIDATION_SPLITS = ("validation", "val", "eval")
#: States in which a run still changes (the page polls while it is in one).
LIVE = ("running", "queued")


def light(run: RunDir) -> Run:
    """The recipe and ``eval.json`` of a run, enough for its task, labels and systems (no other file read)."""
    found = Run(directory=run.path)
    try:
        recipe = run.read_recipe()
    except (OSError, ValueError):
        recipe = {}
    found.recipe = recipe if isinstance(recipe, dict) else {}
    found.evaluation = read_json(run.eval, found.notes)
    found.task = (found.evaluation or {}).get("task") or html.lookup(found.recipe, "task.type")
    return found


def prediction_files(run: RunDir, systems: list[str]) -> dict[str, Path]:
    """``{system: predictions file}`` for ``systems`` (``eval.json``'s) and every file in ``predictions/``.

    A name whose file would lie outside ``predictions/`` (``..`` in an ``eval.json`` key) is left out, so no
    request can make the studio read anything but the run's own prediction files.
    """
    folder = run.predictions
    if not folder.is_dir():
        return {}
    root = folder.resolve()
    files = {}
    for system in dict.fromkeys([*systems, *run.prediction_systems()]):
        path = run.prediction(system)
        try:
            inside = path.resolve().is_relative_to(root) and ".." not in Path(system).parts
        except (OSError, ValueError):
            inside = False
        if inside and path.is_file():
            files[system] = path
    return files


def predictions_table(run: RunDir, found: Run | None = None) -> Table:
    """Every system's predictions of ``run`` side by side (see :func:`lmtune.studio.predictions.table`)."""
    found = found or light(run)
    return table(prediction_files(run, list(found.results)), found.labelled)


def default_system(systems: list[str]) -> str | None:
    """The system the page judges first: the first fine-tuned one, else the first."""
    trained = [s for s in systems if getattr(system_kinds.find(s), "trained", False)]
    return (trained or systems or [None])[0]


def status(studio: Any, name: str, run: RunDir | None) -> dict[str, Any]:
    """The run's state as the page shows it: ``state``, ``error``, ``started_at``, ``elapsed_s``.

    The run's own ``status.json`` (:func:`lmtune.run_status.read`), with what only the studio's queue knows
    (queued, cancelled: :meth:`lmtune.studio.queue.RunQueue.status_of`); for a name that has no run directory
    yet, the queue's state alone, and ``{}`` when the queue does not know it either.
    """
    queue = studio.queue
    if run is not None:
        body = run_status.read(run)
        said = queue.status_of(name, body["state"]) if queue is not None else None
        return {"state": said or body["state"], "error": body.get("error"), "started_at": body.get("started_at"),
                "elapsed_s": body.get("elapsed_s")}
    said = queue.status_of(name) if queue is not None else None
    if said is None:
        return {}
    row = next((p for p in queue.pending() if p.get("name") == name), {})
    return {"state": said, "error": None, "started_at": row.get("started_at"), "elapsed_s": None}


def curves(run: RunDir | None, found: Run | None = None) -> dict[str, Any]:
    """The training curves: train loss, learning rate and tokens/s (``timing.jsonl``, matched by step) per logged
    step, validation loss, the best step and, when known, the steps the run will take."""
    body: dict[str, Any] = {"train": [], "validation": [], "best_step": None}
    if run is None:
        return body
    notes: list[str] = []
    metrics = [r for r in read_jsonl(run.metrics, notes) if html.is_number(r.get("step"))]
    speed = {r["step"]: r["tokens_per_s"] for r in read_jsonl(run.timing, notes)
             if html.is_number(r.get("step")) and html.is_number(r.get("tokens_per_s"))}
    body["train"] = [{"step": r["step"], "epoch": _number(r.get("epoch")), "loss": _number(r.get("loss")),
                      "lr": _number(r.get("lr")),  # runs from before timing.jsonl kept tokens/s here
                      "tokens_per_s": speed.get(r["step"], _number(r.get("tokens_per_s")))}
                     for r in metrics if r.get("split") == "train"]
    body["validation"] = [{"step": r["step"], "loss": r["loss"]} for r in metrics
                          if r.get("split") in VALIDATION_SPLITS and html.is_number(r.get("loss"))]
    found = found or light(run)
    best = html.lookup(found.evaluation or {}, "training.best_step")
    if not html.is_number(best) and body["validation"]:
        best = min(body["validation"], key=lambda point: point["loss"])["step"]
    body["best_step"] = best if html.is_number(best) else None
    steps = html.lookup(found.recipe, "training.max_steps") or html.lookup(found.evaluation or {},
                                                                           "training.train_steps")
    if html.is_number(steps):
        body["max_steps"] = steps
    return body


def _number(value: Any) -> float | None:
    return value if html.is_number(value) else None


# --- the records the data report names -------------------------------------------------------------------


def affected_records(report: dict | None) -> dict[str, list[dict[str, Any]]]:
    """The examples the data report records, by kind: ``{kind: [{split, source, matched, similarity}]}``.

    Sources are ``file:line`` references as the report wrote them; the files themselves are never opened (they
    lie outside the runs folder).
    """
    if not isinstance(report, dict):
        return {}
    kinds: dict[str, list[dict[str, Any]]] = {}
    for step in report.get("steps") or []:
        if isinstance(step, dict) and isinstance(step.get("examples"), list) and step["examples"]:
            kind = _step_kind(str(step.get("step") or "removed"))
            kinds.setdefault(kind, []).extend(_record(step.get("split"), e) for e in step["examples"])
    for key, kind in (("leakage", "leakage"), ("contamination", "evaluation-file contamination")):
        found = report.get(key)
        examples = found.get("examples") if isinstance(found, dict) else found
        if isinstance(examples, list) and examples:
            kinds.setdefault(kind, []).extend(_record("train", e) for e in examples)
    conflicts = report.get("conflicting_labels")
    for split, found in (conflicts.items() if isinstance(conflicts, dict) else []):
        if isinstance(found, dict) and isinstance(found.get("examples"), list):
            kinds.setdefault("conflicting labels", []).extend(_record(split, e) for e in found["examples"])
    return {kind: rows for kind, rows in kinds.items() if rows}


def _step_kind(step: str) -> str:
    for kind in ("exact duplicates", "near-duplicates"):
        if kind in step:
            return kind
    return step


def _record(split: Any, example: Any) -> dict[str, Any]:
    """One recorded example: a ``file:line`` string, ``"a vs b"`` (conflicting labels), or an object."""
    if isinstance(example, dict):
        source = example.get("source", example.get("train_line"))
        matched = next((example[k] for k in ("repeats", "matches", "test_line") if example.get(k) is not None), None)
        similarity = example.get("similarity")
        if similarity is None and example.get("kind") == "exact":
            similarity = 1.0
        return {"split": split, "source": source, "matched": matched, "similarity": similarity,
                "kind": example.get("kind")}
    source, _, matched = str(example).partition(" vs ")
    return {"split": split, "source": source, "matched": matched or None, "similarity": None, "kind": None}
