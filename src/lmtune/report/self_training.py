"""The report's self-training section: the gain over the supervised run in one sentence, then each round's
pseudo-labels (how many reached the threshold, how many were kept, how many were wrong where the pool had
hidden labels), the temperature that calibrated them, and the round's task metric with its interval.

Everything comes from ``eval.json``'s ``self_training`` block (:mod:`lmtune.lifecycle.self_training`).
"""

from __future__ import annotations

from typing import Any

from lmtune.report import html
from lmtune.report.run import Run

#: How a metric key reads in a sentence.
_NAMES = {"f1_macro": "macro-F1", "accuracy": "accuracy", "precision_macro": "macro-precision",
          "recall_macro": "macro-recall"}
_MINUS = "\u2212"


def section(run: Run) -> str:
    """The self-training section; "" when the run did no self-training."""
    block = (run.evaluation or {}).get("self_training")
    if not isinstance(block, dict) or not isinstance(block.get("rounds"), list):
        return ""
    rounds = [r for r in block["rounds"] if isinstance(r, dict)]
    metric = next((str(r["metric"]) for r in rounds if r.get("metric")), "metric")
    headers = ["round", "temperature", "pool scored", "reached threshold", "kept (cap)", "wrong (of known)",
               "wrong rate", "pseudo-labels by class", "trained on", f"test {metric}"]
    rows = [_row(r) for r in rounds]
    return ("<section><h2>Self-training: pseudo-labels from the unlabelled pool</h2>"
            f'<p class="summary">{html.esc(gain_sentence(block.get("gain") or {}))} {html.esc(_setup(block))}</p>'
            + html.table(headers, rows) + "</section>")


def gain_sentence(gain: dict[str, Any]) -> str:
    """``Self-training added +0.021 macro-F1 [−0.010, 0.050] (p = 0.19): not significant.``"""
    value, metric = gain.get("value"), _NAMES.get(str(gain.get("metric")), str(gain.get("metric")))
    if not html.is_number(value):
        return "Self-training's gain over the supervised run was not measured."
    verb = "added" if value >= 0 else "lost"
    text = f"Self-training {verb} {_signed(value)} {metric}"
    if html.is_number(gain.get("ci_low")) and html.is_number(gain.get("ci_high")):
        text += f" [{_signed(gain['ci_low'], plus=False)}, {_signed(gain['ci_high'], plus=False)}]"
    p = gain.get("p_value")
    if not html.is_number(p):
        return text + " over the supervised run (not tested for significance)."
    return text + f" (p = {p:.2g}): {'significant' if p < 0.05 else 'not significant'}."


def _signed(value: float, plus: bool = True) -> str:
    text = f"{abs(value):.3f}"
    return (_MINUS + text) if value < 0 else (f"+{text}" if plus else text)


def _setup(block: dict[str, Any]) -> str:
    """What was done: threshold, cap, pool and what it lost to hygiene."""
    rounds = len(block.get("rounds") or [])
    known = block.get("dropped_known") or 0
    return (f"{rounds} round{'s' if rounds != 1 else ''}, each retrained from the base model on the labelled data "
            f"plus the pool records whose calibrated confidence reached {html.fmt(block.get('threshold'))} (at most "
            f"{html.fmt(block.get('max_ratio'))} per labelled example); pool {html.fmt(block.get('pool'))}: "
            f"{html.fmt(block.get('pool_records'))} records, {known} left out as already labelled or held out.")


def _row(r: dict[str, Any]) -> list[str]:
    classes = ", ".join(f"{k} {v}" for k, v in (r.get("label_distribution") or {}).items()) or None
    wrong = None if r.get("wrong") is None else f"{r['wrong']} of {r.get('checked')}"
    trained = None if r.get("n_train") is None else f"{r['n_train']} ({r.get('pseudo_in_train')} pseudo)"
    run = r.get("run")
    link = f'<a href="{html.esc(run)}/report.html">{html.esc(run)}</a>' if isinstance(run, str) else "—"
    return [f"<th>{html.esc(r.get('round'))}<br><small>{link}</small></th>", html.cell(r.get("temperature")),
            html.cell(r.get("scored")), html.cell(r.get("above_threshold")),
            html.cell(f"{r.get('kept')} ({r.get('cap')})"), html.cell(wrong), html.cell(r.get("wrong_rate")),
            html.cell(classes), html.cell(trained), html.with_interval(r.get("value"), r.get("ci"))]
