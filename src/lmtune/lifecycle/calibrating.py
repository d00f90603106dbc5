"""The calibration step of every label-scored system: its confidence, ECE and reliability diagram, and with
``eval.calibrate: temperature`` the temperature fitted on the validation split and applied to its test answers.

The temperature is fitted per system (zero-shot, few-shot and fine-tuned are calibrated differently): the
system answers the validation split the same way it answers test (same prompts, same shots), and
:func:`lmtune.evaluate.calibration.fit_temperature` picks the T that best predicts the gold labels there.
"""

from __future__ import annotations

from lmtune.errors import UserError
from lmtune.evaluate import calibration
from lmtune.progress import say


def check(recipe, prepared) -> None:
    """``eval.calibrate: temperature`` needs a classification task and a validation split to fit on.

    Raises:
        UserError: either is missing.
    """
    if recipe.eval.calibrate != "temperature":
        return
    if recipe.task.type != "classification":
        raise UserError(f"temperature scaling calibrates class probabilities; a {recipe.task.type} task has none: "
                        "remove eval.calibrate", source="eval.calibrate")
    if not prepared.splits.get("validation"):
        raise UserError("temperature scaling is fitted on the validation split and this recipe has none; set "
                        "data.split.validation (e.g. 0.1) or data.validation", source="eval.calibrate")


def apply(run, system: str, result, shots) -> None:
    """Add ``confidence`` to each of ``result``'s predictions and ``ece``, ``reliability`` and ``temperature``
    (plus ``ece_uncalibrated`` when a temperature was fitted) to its metrics; nothing for other systems."""
    labels, rows = run.recipe.task.labels, result.predictions
    if not labels or not rows or "scores" not in rows[0]:
        return
    temperature = 1.0
    # A trial of `lmtune tune` is scored on validation itself: a temperature fitted there would grade its own fit.
    if run.recipe.eval.calibrate == "temperature" and run.split != "validation":
        temperature = fit(run, system, shots)
        result.metrics["ece_uncalibrated"] = calibration.calibrated([dict(r) for r in rows], labels)["ece"]
    result.metrics.update(calibration.calibrated(rows, labels, temperature))


def fit(run, system: str, shots) -> float:
    """The temperature of ``system``, fitted on its answers to the validation split."""
    validation = run.prepared.splits.get("validation") or []
    say(f"      calibrate {system}: fitting a temperature on {len(validation)} validation examples", run.quiet)
    answered = run.task.run(system, run.model, run.tokenizer, run.encoder, run.spec, validation,
                            run.encoded.get("validation") or [], shots, run.prepared.splits["train"], True)
    labels = run.recipe.task.labels
    index = {label: i for i, label in enumerate(labels)}
    rows = [r for r in answered.predictions if r.get("reference") in index]
    temperature = calibration.fit_temperature(calibration.score_matrix(rows, labels),
                                              [index[r["reference"]] for r in rows])
    say(f"      calibrate {system}: temperature {temperature:.3f}", run.quiet)
    return temperature
