"""``active.html``: an oracle experiment's learning curves, every round of every arm, and the statement.

A self-contained page like ``tune.html``: the figure is drawn on matplotlib's Agg canvas and embedded as a PNG
``data:`` URI (:func:`lmtune.report.plots.to_data_uri`); every text is escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune import atomic
from lmtune.report import html, plots

_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def write(path: Path, body: dict[str, Any]) -> Path:
    """Write the page of ``body`` (``active.json``'s content) to ``path`` and return it."""
    better = "higher" if body["higher_is_better"] else "lower"
    parts = [f"<h1>Active learning: {html.esc(body['name'])}</h1>",
             f'<p class="summary">{html.esc(body["statement"])}</p>',
             f'<p class="meta">{html.esc(_setup(body))} Metric: {html.esc(body["metric"])} of the fine-tuned model '
             f"on the fixed test file ({better} is better).</p>",
             "<h2>Learning curves</h2>", _figure(body), _curve_table(body),
             "<h2>Every round</h2>", _rounds_table(body)]
    atomic.write_text(path, html.page(f"lmtune active: {body['name']}", "".join(parts), body.get("notes") or []))
    return path


def _setup(body: dict[str, Any]) -> str:
    return (f"Pool of {body['pool_size']} records, labels revealed from the field {body['oracle']!r}. "
            f"Round 0: {body['initial']} records at random per seed (shared by the seed's strategies); then "
            f"{body['budget']} per round selected by each strategy, {body['rounds']} rounds in all; every round "
            f"trains from scratch. Seeds: {', '.join(map(str, body['seeds']))}; intervals are 95% t-intervals over "
            "seeds (with one seed, the run's bootstrap interval).")


def _figure(body: dict[str, Any]) -> str:
    """Mean against labels per strategy, its interval shaded; random's final score as a dotted line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = {s: p for s, p in body["curves"].items() if p}
    if not curves:
        return '<p class="meta">No round has finished yet.</p>'
    fig = Figure(figsize=(7.0, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (strategy, points) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        n = [p["n_labelled"] for p in points]
        ax.plot(n, [p["mean"] for p in points], marker="o", color=color, label=strategy)
        bounds = [(p["ci_low"], p["ci_high"]) for p in points]
        if all(lo is not None and hi is not None for lo, hi in bounds):
            ax.fill_between(n, [lo for lo, _ in bounds], [hi for _, hi in bounds], color=color, alpha=0.15)
    if body.get("target"):
        ax.axhline(body["target"]["value"], color="#777", linestyle=":", label="random's final score")
    ax.set_xlabel("labelled records")
    ax.set_ylabel(body["metric"])
    ax.grid(alpha=0.3)
    ax.legend()
    return html.img(plots.to_data_uri(fig), f"{body['metric']} against labelled records per strategy")


def _curve_table(body: dict[str, Any]) -> str:
    rows = []
    for strategy, points in body["curves"].items():
        for p in points:
            rows.append([html.cell(strategy), html.cell(p["n_labelled"]),
                         html.with_interval(p["mean"], [p["ci_low"], p["ci_high"]]), html.cell(p["seeds"])])
    reach = body.get("labels_to_reach") or {}
    said = "; ".join(f"{s}: {'never' if n is None else f'{n:g}'}" for s, n in reach.items() if body.get("target"))
    note = f'<p class="meta">Labels to reach random\'s final score: {html.esc(said)}.</p>' if said else ""
    return html.table(["strategy", "labelled", f"mean {body['metric']} [95%]", "seeds"], rows) + note


def _rounds_table(body: dict[str, Any]) -> str:
    rows = []
    for arm in body["arms"]:
        for r in arm["rounds"]:
            link = "—"
            if r.get("run"):
                link = f'<a href="{html.esc(r["run"])}/report.html">{html.esc(r["run"])}</a>'
            rows.append([html.cell(arm["strategy"]), html.cell(arm["seed"]), html.cell(r["round"]),
                         html.cell(r["n_labelled"]), html.with_interval(r["value"], [r["ci_low"], r["ci_high"]]),
                         html.cell(r["state"]), html.cell(r["seconds"]), html.cell(r["selected_score_mean"]),
                         f'<td class="path">{link}</td>'])
    return html.table(["strategy", "seed", "round", "labelled", body["metric"], "state", "seconds",
                       "mean score of the selected", "run"], rows)
