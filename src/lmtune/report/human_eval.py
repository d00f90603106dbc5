"""The report's "Human evaluation" section: blind A/B judgements of two systems per round, from ``human_eval.json``
(written by :mod:`lmtune.guidance.judge_results`), beside the metrics table.

Each round is one row: who was compared, how many answers, each side's wins and the ties, and B's win rate over A
(ties counted half, skips in no count) with its 95% interval and p-value against 0.5; each annotator's counts sit
below it.
"""

from __future__ import annotations

from typing import Any

from lmtune.report import html
from lmtune.report.run import Run, read_json

HEADERS = ["round", "system A", "system B", "answers", "items judged", "A wins", "B wins", "ties", "skipped",
           "B's win rate over A (ties half)", "p (vs 0.5)"]


def rounds(run: Run) -> list[dict[str, Any]]:
    """The rounds of the run's ``human_eval.json``; ``[]`` without one (a note when it cannot be read)."""
    body = read_json(run.files.human_eval, run.notes) or {}
    found = body.get("rounds")
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def section(run: Run) -> str:
    """The Human evaluation section; "" when the run has no judged round."""
    found = rounds(run)
    if not found:
        return ""
    rows = [_row(r) for r in found]
    annotators = [[html.cell(r.get("round")), html.cell(name), html.cell(c.get("answers")), html.cell(c.get("wins_a")),
                   html.cell(c.get("wins_b")), html.cell(c.get("ties")), html.cell(c.get("win_rate_b"))]
                  for r in found for name, c in (r.get("annotators") or {}).items() if isinstance(c, dict)]
    method = next((r["interval"] for r in found if isinstance(r.get("interval"), str)), "")
    return ('<section id="human-eval"><h2>Human evaluation: blind A/B judgements</h2>'
            '<p class="meta">Annotators saw two systems\' outputs for the same input, in a random order, without '
            f'their names. Interval: {html.esc(method)}.</p>'
            + html.table(HEADERS, rows, "human-eval")
            + "<details><summary>Per annotator</summary>"
            + html.table(["round", "annotator", "answers", "A wins", "B wins", "ties", "B's win rate"], annotators)
            + "</details></section>")


def _row(r: dict[str, Any]) -> list[str]:
    interval = [r.get("ci_low"), r.get("ci_high")]
    return [f"<th>{html.breakable(str(r.get('round')))}</th>", f"<td>{html.breakable(str(r.get('system_a')))}</td>",
            f"<td>{html.breakable(str(r.get('system_b')))}</td>", html.cell(r.get("answers")),
            html.cell(r.get("items_judged")), html.cell(r.get("wins_a")), html.cell(r.get("wins_b")),
            html.cell(r.get("ties")), html.cell(r.get("skipped")), html.with_interval(r.get("win_rate_b"), interval),
            html.cell(r.get("p_value"))]
