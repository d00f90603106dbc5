"""The Compare page: two to eight runs side by side, and a picker to choose them.

``GET /compare?run=a&run=b`` shows the runs (task, model, method, status), every system's task metrics with their
95% intervals (the best run per row in bold; a warning when the runs were evaluated on different test sets), each
run's fine-tuned system and forgetting probes against the first run's (paired) and every run's forgetting, the loss
curves of every run overlaid, the recipe keys that differ and each run's verdict. With fewer than two runs named it
shows a picker of every run in the folder instead. ``GET /api/compare?run=a&run=b`` holds the curves; ``compare.js``
draws them and polls every two seconds while one of the runs trains. Runs are named by their directory (always
unique in the folder) and looked up only through :func:`lmtune.studio.index.run_dir`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lmtune import run_status
from lmtune.errors import UserError
from lmtune.evaluate.metrics import best_systems
from lmtune.recipe_model import model_name
from lmtune.report import compare as static_compare
from lmtune.report import compare_stats, html
from lmtune.report.run import Run, load, read_jsonl
from lmtune.report.systems import load_text, quality_columns
from lmtune.report.verdict import verdict_sentences
from lmtune.run_dir import RunDir
from lmtune.studio import layout
from lmtune.studio.index import run_dir

router = APIRouter()

MAX_RUNS = 8
LIVE = ("running", "queued")


@dataclass
class Compared:
    """One run of the comparison: its directory name, files, parsed contents and status."""

    name: str
    files: RunDir
    run: Run
    status: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.status.get("state") or "unknown")


def requested(request: Request) -> list[str]:
    """The ``run`` parameters, each once, in order.

    Raises:
        UserError: more than :data:`MAX_RUNS` runs named.
    """
    names = list(dict.fromkeys(request.query_params.getlist("run")))
    if len(names) > MAX_RUNS:
        raise UserError(f"compare at most {MAX_RUNS} runs at once; {len(names)} were given", source="run")
    return names


def curves(name: str, files: RunDir) -> dict[str, Any]:
    """A run's train and validation loss as ``[step, loss]`` pairs, from the complete lines of ``metrics.jsonl``."""
    out: dict[str, Any] = {"name": name, "status": run_status.read(files)["state"], "train": [], "validation": []}
    for row in read_jsonl(files.metrics, []):
        split = row.get("split", "train")
        if split in ("train", "validation") and html.is_number(row.get("step")) and html.is_number(row.get("loss")):
            out[split].append([row["step"], row["loss"]])
    return out


def curves_payload(names: list[str], folder) -> dict[str, Any]:
    runs = [curves(name, files) for name, files in ((n, run_dir(folder, n)) for n in names)]
    return {"runs": runs, "live": any(r["status"] in LIVE for r in runs)}


@router.get("/api/compare")
def api_compare(request: Request) -> dict[str, Any]:
    names = requested(request)
    if len(names) < 2:
        raise UserError("name at least two runs to compare, as ?run=A&run=B", source="run")
    return curves_payload(names, request.app.state.studio.runs)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> HTMLResponse:
    try:
        names = requested(request)
    except UserError as exc:
        return HTMLResponse(layout.message_page("Too many runs", str(exc)), status_code=400)
    if len(names) < 2:
        return HTMLResponse(picker(request, names))
    folder = request.app.state.studio.runs
    found = [(name, run_dir(folder, name)) for name in names]  # every name checked before anything is read
    runs = [Compared(name, files, load(files.path), run_status.read(files)) for name, files in found]
    labels = [r.name for r in runs]
    notes = "".join(f'<p class="note">{layout.esc(r.name)}: {layout.esc(n)}</p>' for r in runs for n in r.run.notes)
    body = (f"<h1>Comparison of {len(runs)} runs</h1>{notes}"
            + static_compare.test_set_warning([r.run for r in runs], labels)
            + runs_section(runs) + metrics_section(runs)
            + compare_stats.paired_section([r.run for r in runs], labels)
            + compare_stats.forgetting_section([r.run for r in runs], labels)
            + '<h2>Loss curves</h2><p class="meta">train (solid) and validation (dashed) loss per step'
            + (", updated every 2 s while a run trains" if any(r.state in LIVE for r in runs) else "")
            + '</p><div id="compare-loss"></div>'
            + recipe_section(runs) + verdicts_section(runs))
    data = {"runs": names, "curves": curves_payload(names, folder)}
    return HTMLResponse(layout.page("Compare " + ", ".join(names), body, "/compare", ("compare.js",), data))


def picker(request: Request, chosen: list[str]) -> str:
    """Every run in the folder with a checkbox; the form's GET is ``/compare?run=a&run=b``."""
    rows = request.app.state.studio.index.rows()
    if not rows:
        return layout.message_page("Compare runs", "No runs in this folder yet: there is nothing to compare.",
                                   "meta")
    lines = []
    for row in rows:
        name = layout.esc(row["name"])
        box = (f'<input type="checkbox" name="run" value="{name}" id="pick-{name}"'
               f'{" checked" if row["name"] in chosen else ""}>')
        title = row.get("title") if row.get("title") != row["name"] else None
        lines.append([f"<td>{box}</td>",
                      f'<td><label for="pick-{name}">{name}</label>'
                      + (f" <small>{layout.esc(title)}</small>" if title else "") + "</td>",
                      html.cell(row.get("task")), html.cell(row.get("model")), html.cell(row.get("method")),
                      _status_cell(row["name"], row.get("status")), html.cell(_started(row.get("started_at")))])
    table = html.table(["", "run", "task", "model", "method", "status", "started"], lines, "runs")
    hint = "Pick at least two runs." if chosen else f"Pick two to {MAX_RUNS} runs."
    body = ('<h1>Compare runs</h1><form id="compare-picker" method="get" action="/compare">'
            f'<p class="meta" id="pick-hint">{hint}</p>{table}'
            '<button type="submit" class="primary" id="compare-button">Compare</button></form>')
    return layout.page("Compare runs", body, "/compare", ("compare.js",))


def runs_section(runs: list[Compared]) -> str:
    rows = []
    for r in runs:
        title = r.run.name if r.run.name != r.name else None
        link = f'<a href="/runs/{quote(r.name)}">{layout.esc(r.name)}</a>'
        rows.append([f"<th>{link}" + (f" <small>{layout.esc(title)}</small>" if title else "") + "</th>",
                     html.cell(r.run.task), html.cell(model_name(r.run.recipe.get("model"))),
                     html.cell(html.lookup(r.run.recipe, "method.name")), _status_cell(r.name, r.state),
                     html.cell(_started(r.status.get("started_at"))),
                     html.cell((r.run.evaluation or {}).get("n"))])
    return "<h2>Runs</h2>" + html.table(["run", "task", "model", "method", "status", "started", "test examples"],
                                        rows, "compared-runs")


def _status_cell(name: str, state: str | None) -> str:
    state = state or "unknown"
    return (f'<td data-status-of="{layout.esc(name)}">'
            f'<span class="status {layout.esc(state)}">{layout.esc(state)}</span></td>')


def _started(epoch: Any) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if html.is_number(epoch) else None


def metrics_section(runs: list[Compared]) -> str:
    """Rows (system, task metric), the primary metric first within each system; columns the runs."""
    primaries = [r.run.primary for r in runs if r.run.primary]
    metrics = list(dict.fromkeys(primaries + [m for r in runs for m in quality_columns(r.run)]))
    systems = list(dict.fromkeys(s for r in runs for s in r.run.results))
    rows = []
    for system in systems:
        block = [row for row in (_metric_row(runs, system, m) for m in metrics) if row]
        for i, row in enumerate(block):
            head = f'<th rowspan="{len(block)}">{html.breakable(system)}</th>' if i == 0 else ""
            rows.append(([head] if head else []) + row)
    if not rows:
        return '<h2>Metrics</h2><p class="meta">No run has evaluated results yet.</p>'
    return ('<h2>Metrics</h2><p class="meta">each system\'s task metrics with their 95% intervals; the best run of '
            "each row in bold</p>" + html.table(["system", "metric", *[r.name for r in runs]], rows, "compare"))


def _metric_row(runs: list[Compared], system: str, metric: str) -> list[str] | None:
    results = [r.run.results.get(system) or {} for r in runs]
    values = {r.name: float(res[metric]) for r, res in zip(runs, results) if html.is_number(res.get(metric))}
    if not values:
        return None
    best = set(best_systems(values, metric)) if len(values) > 1 else set()
    cells = [html.with_interval(res.get(metric), (res.get("ci") or {}).get(metric), bold=r.name in best)
             for r, res in zip(runs, results)]
    return [f"<th>{html.breakable(metric)}</th>", *cells]


def recipe_section(runs: list[Compared]) -> str:
    """The recipe keys whose values differ (key x runs), and every key in a collapsed table."""
    flat = [html.flatten(r.run.recipe) for r in runs]
    differ = static_compare.differing_keys(flat)
    every = list(dict.fromkeys(k for recipe in flat for k in recipe))
    headers = ["recipe key", *[r.name for r in runs]]

    def rows(keys: list[str]) -> list[list[str]]:
        return [[f"<th>{layout.esc(k)}</th>"] + [html.cell(html.as_text(f[k]) if k in f else "(not set)")
                                                  for f in flat] for k in keys]

    shown = (html.table(headers, rows(differ), "recipe-diff") if differ
             else '<p class="meta">The runs\' recipes are the same.</p>')
    return ('<h2>Recipe differences</h2><p class="meta">recipe keys whose values differ between the runs</p>'
            + shown + f"<details><summary>All recipe keys ({len(every)})</summary>"
            + html.table(headers, rows(every), "recipe-all") + "</details>")


def verdicts_section(runs: list[Compared]) -> str:
    parts = []
    for r in runs:
        primary = r.run.primary
        sentences = verdict_sentences(r.run.evaluation or {}, primary, load_text(r.run)) if primary else []
        said = " ".join(sentences) or "No verdict: this run has no evaluated results yet."
        links = f'<a href="/runs/{quote(r.name)}">run page</a>'
        if r.files.report.is_file():
            links += f' · <a href="/runs/{quote(r.name)}/report">report</a>'
        parts.append(f'<h3>{layout.esc(r.name)}</h3><p class="summary">{layout.esc(said)}</p>'
                     f'<p class="meta">{links}</p>')
    return "<h2>Verdicts</h2>" + "".join(parts)
