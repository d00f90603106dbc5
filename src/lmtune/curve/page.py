"""``curve.html``: the learning curve as a self-contained page, drawn from ``curve.json``'s body alone.

The plot puts each finished point with its 95% interval against the number of training examples (log scale),
the fitted law solid over the data and dashed out to four times the largest point, and the zero-shot score as a
horizontal reference line. Beneath it: the fit's sentence, its parameters, and the table of points linking each
point's run report. The studio can render the same page from a ``curve.json`` it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmtune.curve import fit
from lmtune.report import html, plots
from lmtune.run_dir import RunDir

EXTRAPOLATE = 4  # the dashed part of the fitted curve reaches this many times the largest point
COLORS = {"points": "#4c72b0", "fit": "#dd8452", "zero_shot": "#55a868"}


def figure(body: dict[str, Any]) -> str | None:
    """The curve as a PNG ``data:`` URI; None while no point has finished."""
    done = [r for r in body.get("points", []) if r.get("state") == "finished" and r.get("value") is not None]
    if not done:
        return None
    fig = Figure(figsize=(7.5, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    n = np.array([r["n_train"] for r in done], dtype=float)
    y = np.array([r["value"] for r in done], dtype=float)
    has_ci = [r.get("ci_low") is not None for r in done]
    lows = np.array([max(v - r["ci_low"], 0.0) if ok else 0.0 for r, v, ok in zip(done, y, has_ci)])
    highs = np.array([max(r["ci_high"] - v, 0.0) if ok else 0.0 for r, v, ok in zip(done, y, has_ci)])
    ax.errorbar(n, y, yerr=[lows, highs], fmt="o", color=COLORS["points"], capsize=4, label="points (95% interval)")
    found = body.get("fit")
    if found:
        sign = 1.0 if body.get("higher_is_better", True) else -1.0
        params = (found["a"], found["b"], found["c"])
        inside = np.geomspace(n.min(), n.max(), 100)
        beyond = np.geomspace(n.max(), EXTRAPOLATE * n.max(), 50)
        ax.plot(inside, fit.law(inside, *params, sign), color=COLORS["fit"], label=f"fit: {found['form']}")
        ax.plot(beyond, fit.law(beyond, *params, sign), color=COLORS["fit"], linestyle="--",
                label="extrapolation")
    baseline = body.get("baseline")
    if baseline and baseline.get("value") is not None:
        ax.axhline(baseline["value"], color=COLORS["zero_shot"], linestyle=":", label="zero-shot (n=0)")
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel(f"{body.get('metric')} of {body.get('system')} on test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right" if body.get("higher_is_better", True) else "upper right")
    return plots.to_data_uri(fig)


def render(body: dict[str, Any], directory: Path) -> str:
    """The whole page for a curve's ``curve.json`` body; ``directory`` is where its point runs lie."""
    name, metric = body.get("name", ""), body.get("metric", "")
    points = body.get("points", [])
    done = sum(r.get("state") == "finished" for r in points)
    running = sum(r.get("state") == "running" for r in points)
    progress = f"{done} of {len(points)} points finished" + (f", {running} running" if running else "")
    parts = [f"<h1>Learning curve: {html.esc(name)}</h1>",
             f'<p class="meta">{html.esc(metric)} of {html.esc(body.get("system"))} on the test split against the '
             f"number of training examples (of {body.get('n_train_total')}; nested, stratified subsets; "
             f"{body.get('repeats')} repeat(s)). {html.esc(progress)}.</p>",
             f'<p class="summary">{html.esc(body.get("statement", ""))}</p>']
    uri = figure(body)
    parts.append(html.img(uri, f"{metric} against training examples") if uri else
                 '<p class="meta">no point has finished yet</p>')
    if body.get("fit"):
        parts += ["<h2>Fit</h2>", _fit_table(body["fit"])]
    parts += ["<h2>Points</h2>", _points_table(body, Path(directory))]
    return html.page(f"lmtune curve: {name}", "".join(parts), body.get("notes") or [])


def _fit_table(found: dict[str, Any]) -> str:
    rows = [["form", f"y = {found['form']}"], ["a (the asymptote)", found["a"]], ["b", found["b"]],
            ["c", found["c"]], ["largest point (n)", found["at_n"]],
            ["doubling it adds", found["doubling_gain"]],
            ["95% interval (parametric bootstrap)", found["doubling_ci"] and
             f"{found['doubling_ci'][0]:.4g} to {found['doubling_ci'][1]:.4g}"],
            ["flattens at (doubling adds < {:g})".format(found["flatten_threshold"]), found["flattens_at"]]]
    return html.table(["", "value"], [[html.cell(k), html.cell(v)] for k, v in rows], css="kv")


def _points_table(body: dict[str, Any], directory: Path) -> str:
    rows = []
    baseline = body.get("baseline")
    listed = ([{**baseline, "fraction": 0.0, "n_train": 0, "repeat": "—", "state": "finished"}] if baseline else [])
    for r in listed + list(body.get("points", [])):
        interval = [r.get("ci_low"), r.get("ci_high")] if r.get("ci_low") is not None else None
        rows.append([html.cell(r.get("system", "") if r["n_train"] == 0 else r["fraction"]), html.cell(r["n_train"]),
                     html.cell(r["repeat"]), html.cell(r["state"]), html.with_interval(r.get("value"), interval),
                     html.cell(r.get("seconds")), _link(directory, r.get("run"))])
    return html.table(["fraction", "training examples", "repeat (subset seed)", "state", body.get("metric", ""),
                       "seconds", "run"], rows)


def _link(directory: Path, run: str | None) -> str:
    """A link to the point's report (or its directory while it has none)."""
    if not run or not (directory / run).is_dir():
        return html.cell(run or "")
    target = f"{run}/report.html" if RunDir(directory / run).report.is_file() else f"{run}/"
    return f'<td style="white-space:nowrap"><a href="{html.esc(target)}">{html.esc(run)}</a></td>'
