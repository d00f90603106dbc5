"""The report's verdict and its systems table: one row per system, the task metrics with their 95% intervals
in the cell, then tokens, cost and latency, with the machine load the latencies were measured under.

The table keeps to numbers that compare systems as a whole, so that it fits a 1280 px window with seven
systems: per-class scores have their own table (:mod:`lmtune.report.classes`), and counters
such as ``truncated_prompts`` sit in a collapsed table below it.
"""

from __future__ import annotations

from lmtune.evaluate import cost
from lmtune.evaluate.metrics import HIGHER_IS_BETTER, best_systems
from lmtune.report import html, plots
from lmtune.report.run import Run
from lmtune.report.verdict import summary_sentence, verdict_sentences

# Shown in their own columns, or implied by them (hours per 1,000 queries = latency x 1000 / 3600).
_COST_KEYS = ("prompt_tokens_mean", "completion_tokens_mean", "cost_per_1k_queries", "latency_s",
              "hours_per_1k_queries")


def load_text(run: Run) -> str:
    """The machine load the run's latencies were measured under, as words; "" when not recorded."""
    return cost.load_text([r["measured_at"] for r in run.results.values() if isinstance(r.get("measured_at"), dict)])


def verdict(run: Run, charts: bool = True) -> str:
    """The verdict section: sentences, the metric per system with intervals, and cost against quality.

    ``charts=False``: the sentences and an empty ``<div id="verdict-chart">`` that a page draws into itself.
    """
    primary = run.primary
    if not primary:
        return ""
    sentences = verdict_sentences(run.evaluation or {}, primary, load_text(run))
    if not sentences:
        return ""
    results, values = run.results, run.values(primary)
    parts = ['<section><h2>Verdict: was fine-tuning worth it?</h2>',
             f'<p class="summary">{html.esc(" ".join(sentences))}</p><div class="row">']
    if not charts:
        return "".join(parts) + '<div id="verdict-chart"></div></div></section>'
    intervals = {s: r["ci"][primary] for s, r in results.items() if (r.get("ci") or {}).get(primary)}
    winners = best_systems(values, primary)
    parts.append(html.img(plots.metric_bars(values, primary, winners[0] if len(winners) == 1 else None,
                                            intervals or None), f"{primary} per system with 95% intervals"))
    points = {s: (float(r["cost_per_1k_queries"]), float(r[primary])) for s, r in results.items()
              if html.is_number(r.get("cost_per_1k_queries")) and html.is_number(r.get(primary))}
    if len(points) > 1:
        parts.append(html.img(plots.cost_quality(points, primary, "cost per 1,000 queries"), "cost vs quality"))
    return "".join(parts) + "</div></section>"


def quality_columns(run: Run) -> list[str]:
    """The task metrics (and eval.graders' means) that compare systems as a whole, the primary one first.

    Per-class keys (``f1[negative]``) and, for classification, the micro averages (equal to accuracy
    when every example has one label) are left out.
    """
    keys = dict.fromkeys(k for r in run.results.values() for k, v in r.items() if html.is_number(v))
    columns = [k for k in keys if (k in HIGHER_IS_BETTER or k.startswith("graders.")) and k != "latency_s"
               and "[" not in k and not (run.labelled and k.endswith("_micro"))]  # graders.<name>: eval.graders
    primary = run.primary
    return ([primary] if primary in columns else []) + [c for c in columns if c != primary]


def systems(run: Run) -> str:
    """The systems side by side, with the primary metric's best value in bold."""
    results = run.results
    if not results:
        return ""
    primary, columns = run.primary, quality_columns(run)
    values = run.values(primary) if primary else {}
    winners = best_systems(values, primary) if values else []
    has_tokens = any(html.is_number(r.get("prompt_tokens_mean")) for r in results.values())
    rows = []
    for system, r in results.items():
        ci = r.get("ci") or {}
        row = [f"<th>{html.breakable(system)}</th>"]
        row += [html.with_interval(r.get(c), ci.get(c), bold=(c == primary and system in winners)) for c in columns]
        if has_tokens:
            row.append(html.cell(_tokens(r)))
        row.append(html.cell(r.get("cost_per_1k_queries")))
        row.append(html.cell(round(1000 * r["latency_s"], 1) if html.is_number(r.get("latency_s")) else None))
        rows.append(row)
    headers = ["system"] + columns + (["tokens per query (prompt + completion)"] if has_tokens else []) \
        + ["cost / 1,000 queries", "latency ms per query"]
    parts = ["<section><h2>Systems side by side</h2>"]
    if values:
        parts.append(f'<p class="summary">{html.esc(summary_sentence(values, primary))}</p>')
    # No chart here: the verdict above has the same bars, with their intervals.
    parts += [html.table(headers, rows, "systems"), _latency_note(run), _other_numbers(run, columns)]
    return "".join(parts) + "</section>"


def _tokens(result: dict) -> str | None:
    prompt, completion = result.get("prompt_tokens_mean"), result.get("completion_tokens_mean")
    if not html.is_number(prompt):
        return None
    return f"{prompt:.0f} + {completion:.1f}" if html.is_number(completion) else f"{prompt:.0f}"


def _latency_note(run: Run) -> str:
    where = load_text(run)
    measured = (f"measured at {where.removeprefix('at ')}" if where else
                "the machine load was not recorded for this run, so compare latencies only within this table")
    interval = "; 95% intervals beneath each metric" if any(r.get("ci") for r in run.results.values()) else ""
    return (f'<p class="meta">Latency: wall time per test query on this machine, {html.esc(measured)}; cost at '
            f"the recipe's prices per 1,000 tokens{interval}.</p>")


def _other_numbers(run: Run, shown: list[str]) -> str:
    """Every other number of the results (counters, micro averages), metrics as rows and systems as columns."""
    results = run.results
    keys = [k for k in dict.fromkeys(k for r in results.values() for k, v in r.items() if html.is_number(v))
            if k not in shown and k not in _COST_KEYS and "[" not in k]
    if not keys:
        return ""
    rows = [[f"<th>{html.breakable(k)}</th>"] + [html.cell(r.get(k)) for r in results.values()] for k in keys]
    return ("<details><summary>More numbers per system</summary>"
            + html.table(["number"] + list(results), rows, "systems") + "</details>")
