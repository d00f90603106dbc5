"""The report's calibration section: how far each label-scored system's confidence can be taken at its word.

Each system that scores the labels has an expected calibration error (ECE) and reliability bins in ``eval.json``
(:mod:`lmtune.lifecycle.calibrating`). The table puts the ECE beside the mean confidence and the accuracy of the
same answers, so the direction shows too (confidence above accuracy: overconfident), and, with
``eval.calibrate: temperature``, the ECE before scaling and the temperature fitted on the validation split. One
reliability diagram per system shows where the gap is. Active learning and self-training act on these
probabilities, so this section says whether that is safe.
"""

from __future__ import annotations

import math

from lmtune.evaluate.calibration import BINS, LOG_T_BOUNDS
from lmtune.report import html, plots
from lmtune.report.run import Run


def calibrated_systems(run: Run) -> dict[str, dict]:
    """The results of the systems that have an ECE (the label-scored ones), in ``eval.json`` order."""
    return {s: r for s, r in run.results.items() if html.is_number(r.get("ece"))}


def section(run: Run, charts: bool = True) -> str:
    """The calibration section: a table of ECE, confidence, accuracy and temperature per system, and one
    reliability diagram per system; "" when no system has an ECE. ``charts=False`` leaves the diagrams out."""
    found = calibrated_systems(run)
    if not found:
        return ""
    scaled = any(html.is_number(r.get("ece_uncalibrated")) for r in found.values())
    headers = (["system", "ECE"] + (["ECE before scaling"] if scaled else [])
               + ["mean confidence", "accuracy", "temperature", "examples"])
    rows = []
    for system, r in found.items():
        confidence, accuracy, n = _means(r.get("reliability"))
        row = [f"<th>{html.breakable(system)}</th>", html.cell(r["ece"])]
        if scaled:
            row.append(html.cell(r.get("ece_uncalibrated")))
        rows.append(row + [html.cell(confidence), html.cell(accuracy), html.cell(r.get("temperature")),
                           html.cell(n)])
    parts = ["<section><h2>Calibrated confidence</h2>", html.table(headers, rows, "systems"), _explanation(scaled),
             _at_bound_note(found)]
    if charts:
        diagrams = [html.img(plots.reliability_diagram(r["reliability"], system, float(r["ece"]),
                                                       _number(r.get("temperature"))),
                             f"reliability diagram of {system}")
                    for system, r in found.items() if _bins(r.get("reliability"))]
        parts.append('<div class="row">' + "".join(diagrams) + "</div>")
    return "".join(parts) + "</section>"


def _means(bins) -> tuple[float | None, float | None, int | None]:
    """The mean confidence, the accuracy and the count of the answers the reliability bins hold."""
    bins = _bins(bins)
    n = sum(int(b["n"]) for b in bins)
    if not n:
        return None, None, None
    return (sum(b["n"] * b["confidence"] for b in bins) / n, sum(b["n"] * b["accuracy"] for b in bins) / n, n)


def _bins(bins) -> list[dict]:
    """The well-formed reliability bins (an ``eval.json`` edited by hand may hold anything)."""
    if not isinstance(bins, list):
        return []
    keys = ("low", "high", "n", "confidence", "accuracy")
    return [b for b in bins if isinstance(b, dict) and all(html.is_number(b.get(k)) for k in keys)]


def _number(value) -> float | None:
    return float(value) if html.is_number(value) else None


def _explanation(scaled: bool) -> str:
    scaling = (" Temperature scaling divides each system's label scores by one temperature T, fitted on the "
               "validation split, before the softmax: T above 1 softens overconfident probabilities, below 1 "
               "sharpens them; the predicted labels, and so every other metric, do not change."
               if scaled else " T = 1: the probabilities are the model's own (eval.calibrate: temperature fits one "
               "on the validation split).")
    return (f'<p class="meta">Confidence: the probability a system gives its predicted label (the softmax of its '
            f"label scores). ECE: the gap between confidence and accuracy, averaged over {BINS} equal-width "
            f"confidence bins weighted by their counts; 0 means a confidence of 0.8 is right 8 times in 10. Mean "
            f"confidence above accuracy: overconfident.{html.esc(scaling)}</p>")


def _at_bound_note(found: dict[str, dict]) -> str:
    """A note for each temperature the fit left at its search bound: there the fit found no optimum inside."""
    low, high = LOG_T_BOUNDS
    at_bound = [s for s, r in found.items() if html.is_number(r.get("temperature")) and r["temperature"] > 0
                and not low + 0.01 < math.log(r["temperature"]) < high - 0.01]
    if not at_bound:
        return ""
    return (f'<p class="note">{html.esc(", ".join(at_bound))}: the temperature stopped at the edge of its search '
            f"range (e^{LOG_T_BOUNDS[0]:g} to e^{LOG_T_BOUNDS[1]:g}): the validation answers' scores say almost "
            "nothing about which answers are right, so the calibrated probabilities are close to uniform (high "
            "T) or to certainty (low T).</p>")
