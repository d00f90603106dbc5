"""The Run page: one run, from its live training curves to what each system got right and wrong.

``GET /runs/<name>`` renders the page complete (header, console, curves, verdict, systems, human evaluation,
confusion matrix, predictions browser, data, forgetting and bias) with the data its script starts from; ``run.js``
then keeps it live while the run trains, through the JSON API here:

* ``GET /api/runs/<name>/curves``: status and training curves (:func:`lmtune.studio.run_view.curves`);
* ``GET /api/runs/<name>/confusion?system=S``: gold by predicted counts of one system;
* ``GET /api/runs/<name>/predictions?system=&correct=&disagree=&q=&gold=&predicted=&sort=&offset=&limit=``: one
  page of the test examples with every system's answer (:mod:`lmtune.studio.predictions`; ``sort=confidence``:
  the judged system's most confident answers first), each row with its ``data/test.jsonl`` line (``record``), the
  record a correction of its gold label names (:mod:`lmtune.studio.pages_review`).

A run the queue holds but that has no directory yet has a page too (status and console), so the New-run page
can send the browser to it at once; the page reloads itself when the run finishes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lmtune.errors import UserError
from lmtune.evaluate.metrics import best_systems
from lmtune.report import human_eval, systems
from lmtune.report.run import Run, load
from lmtune.run_dir import RunDir
from lmtune.studio import layout, predictions, run_html, run_records, run_view
from lmtune.studio.cache import Stamped
from lmtune.studio.index import RunNotFound, run_dir

router = APIRouter()


def _find(request: Request, name: str) -> tuple[RunDir | None, dict[str, Any]]:
    """The run called ``name`` (None while only the queue knows it) and its status.

    Raises:
        RunNotFound: neither the runs folder nor the queue has it.
    """
    studio = request.app.state.studio
    try:
        run = run_dir(studio.runs, name)
    except RunNotFound:
        state = run_view.status(studio, name, None)
        if not state:
            raise
        return None, state
    return run, run_view.status(studio, name, run)


@router.get("/runs/{name}", response_class=HTMLResponse)
def run_page(request: Request, name: str) -> str:
    run, state = _find(request, name)
    found = load(run.path) if run is not None else None
    curves = run_view.curves(run, found)
    data: dict[str, Any] = {"name": name, "directory": run is not None, "status": state, "curves": curves,
                            "labelled": False, "systems": [],
                            "system": None, "confusion": None, "predictions": None}
    sections = [run_html.header(name, found, state, run is not None and run.report.is_file()), run_html.CONSOLE,
                run_html.curves_section(curves, state["state"])]
    if found is not None:
        sections += [f'<p class="note">{layout.esc(note)}</p>' for note in found.notes]
        sections += _results(run, found, data)
    title = found.name if found is not None else name
    return layout.page(title, "".join(sections), "/", ("corrections.js", "run.js"), data)


#: The result sections of the runs viewed last, until ``eval.json``, the data report or a predictions file changes.
_RENDERED = Stamped(32)


def _results(run: RunDir, found: Run, data: dict[str, Any]) -> list[str]:
    """:func:`_render_results`, cached (see :mod:`lmtune.studio.cache`)."""
    files = [run.eval, run.data.report, run.recipe, run.human_eval, run.data.split("test"),
             *sorted(run.predictions.glob("*.jsonl"))]

    def render() -> tuple[list[str], dict[str, Any]]:
        filled: dict[str, Any] = {}
        return _render_results(run, found, filled, data["name"]), filled

    sections, filled = _RENDERED.get(str(run.path), files, render)
    data.update(filled)
    return sections


def verdict_bars(found: Run) -> dict[str, Any] | None:
    """The primary metric per system with its 95% interval, for the verdict's bar chart (drawn by run.js)."""
    metric = found.primary
    if metric is None:
        return None
    values = found.values(metric)
    winners = best_systems(values, metric)
    bars = [{"name": s, "value": v, "interval": (found.results[s].get("ci") or {}).get(metric),
             "best": len(winners) == 1 and s == winners[0]} for s, v in values.items()]
    return {"metric": metric, "bars": bars}


def _render_results(run: RunDir, found: Run, data: dict[str, Any], name: str) -> list[str]:
    """The sections after the curves, filling the page data the confusion matrix and predictions browser need."""
    if found.evaluation is None:
        sections = ['<p class="meta" id="no-results">results appear when the run has evaluated</p>']
    else:
        table = run_view.predictions_table(run, found)
        system = run_view.default_system(table.systems)
        data.update(labelled=found.labelled, systems=table.systems, system=system, labels=found.labels)
        sections = [systems.verdict(found, charts=False), systems.systems(found), human_eval.section(found)]
        data["verdict"] = verdict_bars(found)
        if found.labelled and system is not None:
            data["confusion"] = predictions.confusion(table, system, found.labels)
            sections.append(run_html.confusion_section(table.systems, data["confusion"]))
        if system is not None:
            data["predictions"] = _with_records(run, found, predictions.page(table, predictions.Query(system=system)))
            sections.append(run_html.predictions_section(found.labelled, name))
    return sections + [run_html.data_section(found), *run_html.probes(found)]


@router.get("/api/runs/{name}/curves")
def api_curves(request: Request, name: str) -> dict[str, Any]:
    run, state = _find(request, name)
    return {"status": state["state"], "error": state.get("error"), "started_at": state.get("started_at"),
            "elapsed_s": state.get("elapsed_s"), "directory": run is not None, **run_view.curves(run)}


@router.get("/api/runs/{name}/confusion")
def api_confusion(request: Request, name: str, system: str = "") -> dict[str, Any]:
    run = run_dir(request.app.state.studio.runs, name)
    found = run_view.light(run)
    if not found.labelled:
        raise UserError(f"a {found.task or 'run without a task'} run's answers are not labels, so it has no "
                        "confusion matrix", source="system")
    table = run_view.predictions_table(run, found)
    system = system or run_view.default_system(table.systems)
    if system is None:
        raise UserError("this run has no predictions yet", source="system")
    return predictions.confusion(table, system, found.labels)


@router.get("/api/runs/{name}/predictions")
def api_predictions(request: Request, name: str, system: str = "", correct: str = "all", disagree: str = "0",
                    q: str = "", gold: str | None = None, predicted: str | None = None, sort: str = "index",
                    offset: str = "0", limit: str = "50") -> dict[str, Any]:
    run = run_dir(request.app.state.studio.runs, name)
    found = run_view.light(run)
    table = run_view.predictions_table(run, found)
    query = predictions.Query(system=system or run_view.default_system(table.systems), correct=correct,
                              disagree=_flag(disagree), q=q, gold=gold, predicted=predicted, sort=sort)
    return _with_records(run, found, predictions.page(table, query, _int(offset, "offset"), _int(limit, "limit")))


def _with_records(run: RunDir, found: Run, body: dict[str, Any]) -> dict[str, Any]:
    """A labelled run's predictions page with each row's ``data/test.jsonl`` line (:mod:`lmtune.studio.run_records`)."""
    return run_records.attach(run, found.recipe, body, found.task) if found.labelled else body


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} must be a whole number, not {value[:50]!r}", source=name) from None


def _flag(value: str) -> bool:
    if value.lower() in ("", "0", "false", "no", "off"):
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    raise UserError(f"disagree must be 0 or 1, not {value[:50]!r}", source="disagree")
