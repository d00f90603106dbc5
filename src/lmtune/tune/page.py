"""What a search shows: the leaderboard (console and ``tune.html``), parameter importances and a
parallel-coordinate plot, all from the Optuna study itself.

Importances are Optuna's (``optuna.importance.get_param_importances`` with fANOVA on a seeded forest), computed
when at least two trials are complete and a parameter took two values among them; the plot is Optuna's
matplotlib ``plot_parallel_coordinate``, embedded as a PNG ``data:`` URI like the run report's figures.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from lmtune import atomic
from lmtune.report import html, plots
from lmtune.run_dir import RunDir
from lmtune.tune.space import Dimension

#: The order of the leaderboard: complete trials by their objective, then pruned, failed, still running.
STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2, TrialState.RUNNING: 3}


@dataclass
class View:
    """What the page and the console table need from a search."""

    name: str
    directory: Path
    metric: str
    system: str
    maximize: bool
    dims: list[Dimension]
    seed: int = 0  # of the importance evaluator's random forest
    notes: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One trial as the leaderboard shows it."""

    number: int
    state: str
    value: float | None
    values: dict[str, Any]
    val_loss: float | None
    seconds: float | None
    run_dir: str | None
    reason: str | None


def rows(study, view: View) -> list[Row]:
    """Every trial, best first: complete ones by objective, then pruned (furthest first), failed, running."""
    sign = -1 if view.maximize else 1

    def order(t):
        finished = t.state == TrialState.COMPLETE and t.value is not None
        return (STATE_ORDER.get(t.state, 4), sign * t.value if finished else -len(t.intermediate_values), t.number)

    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=order):
        attrs = t.user_attrs
        values = {d.key: d.value(t.params[d.key]) for d in view.dims if d.key in t.params}
        reason = attrs.get("reason") or ("left running by a search that was stopped" if t.state == TrialState.FAIL
                                         else None)
        out.append(Row(t.number, t.state.name.lower(), t.value if t.state == TrialState.COMPLETE else None, values,
                       attrs.get("val_loss"), attrs.get("seconds"), attrs.get("run_dir"), reason))
    return out


def headers(dims: list[Dimension]) -> list[str]:
    """Short column names: a key's last part where no other searched key ends the same way."""
    last = [d.key.split(".")[-1] for d in dims]
    return [short if last.count(short) == 1 else d.key for d, short in zip(dims, last)]


def shown_value(value: Any) -> str:
    """A value as the console and the page show it: floats to 4 significant digits, lists and mappings as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def table(study, view: View) -> str:
    """The leaderboard as plain text, for the console."""
    table_rows = [["trial", "state", view.metric, *headers(view.dims), "val_loss", "seconds"]]
    for r in rows(study, view):
        values = [shown_value(r.values.get(d.key)) for d in view.dims]
        table_rows.append([str(r.number), r.state, shown_value(r.value), *values, shown_value(r.val_loss),
                           shown_value(r.seconds)])
    widths = [max(len(row[i]) for row in table_rows) for i in range(len(table_rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table_rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def importances(study, dims: list[Dimension], seed: int = 0) -> tuple[dict[str, float] | None, str | None]:
    """Optuna's fANOVA parameter importances over the complete trials, or None and why they were not computed."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [d.key for d in dims if len({json.dumps(t.params.get(d.key)) for t in complete}) > 1]
    if len(complete) < 2 or not varying:
        return None, ("not computed: they need at least two complete trials and a parameter that took two values "
                      f"among them ({len(complete)} complete so far)")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying), None
    except (ValueError, RuntimeError) as exc:  # e.g. every complete trial scored the same
        return None, f"not computed: {exc}"


def parallel_plot(study, view: View) -> str | None:
    """Optuna's parallel-coordinate plot of the complete trials as a PNG ``data:`` URI (None without any)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        axes = plot_parallel_coordinate(study, params=[d.key for d in view.dims], target_name=view.metric)
    figure = axes.figure
    axes.set_xticks(axes.get_xticks(), [_short(t.get_text(), view.dims) for t in axes.get_xticklabels()],
                    rotation=0)
    axes.set_title("")
    figure.set_size_inches(max(6.0, 1.8 * (len(view.dims) + 1)), 4.2)
    figure.tight_layout()
    try:
        return plots.to_data_uri(figure)
    finally:
        plt.close(figure)


def _short(label: str, dims: list[Dimension]) -> str:
    """A plot's axis label (Optuna cuts long ones to ``name...``) as the leaderboard's short column name."""
    stem = label.removesuffix("...")
    for dim, short in zip(dims, headers(dims)):
        if dim.key == label or (stem != label and dim.key.startswith(stem)):
            return short
    return label


def write(study, view: View, best_recipe: Path | None) -> Path:
    """Write ``tune.html`` into the study directory and return it."""
    found = rows(study, view)
    counts = {s: sum(r.state == s for r in found) for s in ("complete", "pruned", "fail", "running")}
    complete = [r for r in found if r.state == "complete"]
    better = "higher" if view.maximize else "lower"
    summary = (f"Objective: {view.metric} of {view.system} on the validation split ({better} is better; the test "
               f"split is never scored by a trial). {len(found)} trials: {counts['complete']} complete, "
               f"{counts['pruned']} pruned, {counts['fail']} failed"
               + (f", {counts['running']} running" if counts["running"] else "") + ".")
    if complete:
        summary += f" Best: trial {complete[0].number}, {view.metric} {complete[0].value:.4g}."
    body = [f"<h1>Hyperparameter search: {html.esc(view.name)}</h1>", f'<p class="summary">{html.esc(summary)}</p>']
    if best_recipe is not None:
        body.append(f'<p>Best recipe: <a href="{html.esc(best_recipe.name)}">{html.esc(best_recipe.name)}</a> '
                    f"(train it with <code>lmtune train {html.esc(best_recipe)}</code>).</p>")
    body += ["<h2>Leaderboard</h2>", _leaderboard(found, view), "<h2>Parameter importances</h2>",
             _importances(study, view), "<h2>Parallel coordinates</h2>", _plot(study, view),
             "<h2>Search space</h2>", _space(view.dims)]
    path = Path(view.directory) / "tune.html"
    atomic.write_text(path, html.page(f"lmtune tune: {view.name}", "".join(body), view.notes))
    return path


def _leaderboard(found: list[Row], view: View) -> str:
    head = ["trial", "state", view.metric, *headers(view.dims), "last validation loss", "seconds", "run", "note"]
    body = []
    for r in found:
        link = "—"
        if r.run_dir:
            run = RunDir(Path(view.directory) / r.run_dir)
            target = f"{r.run_dir}/report.html" if run.report.is_file() else f"{r.run_dir}/"
            link = f'<a href="{html.esc(target)}">{html.esc(r.run_dir)}</a>' if run.path.is_dir() else "—"
        link = f'<td style="white-space:nowrap">{link}</td>'
        best = r is found[0] and r.value is not None
        body.append([html.cell(r.number), html.cell(r.state), html.cell(r.value, bold=best),
                     *[html.cell(shown_value(r.values.get(d.key))) for d in view.dims], html.cell(r.val_loss),
                     html.cell(r.seconds), link, html.cell(r.reason or "")])
    return html.table(head, body)


def _importances(study, view: View) -> str:
    found, why = importances(study, view.dims, view.seed)
    if found is None:
        return f'<p class="meta">{html.esc(why)}</p>'
    body = [[html.cell(key), html.cell(round(value, 4))] for key, value in found.items()]
    return html.table(["parameter", "importance (fANOVA, sums to 1)"], body)


def _plot(study, view: View) -> str:
    uri = parallel_plot(study, view)
    if uri is None:
        return '<p class="meta">no complete trial yet</p>'
    return html.img(uri, f"parallel coordinates of the complete trials against {view.metric}")


def _space(dims: list[Dimension]) -> str:
    body = []
    for d in dims:
        what = (", ".join(shown_value(c) for c in d.choices) if d.choices is not None else
                f"{d.low} to {d.high}" + (", log scale" if d.log else "") + (f", step {d.step}" if d.step else ""))
        body.append([html.cell(d.key), html.cell("choices" if d.choices is not None else "range"), html.cell(what)])
    return html.table(["key", "kind", "values"], body)
