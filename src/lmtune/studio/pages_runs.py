"""The Runs page: every run in the folder (and every queued one), sortable and filterable, kept up to date.

``GET /`` renders the table with the rows of the moment; ``runs.js`` then polls ``GET /api/runs`` every
two seconds, so runs appear and their status, metric and duration change without a reload.
``GET /runs/<name>/report`` is the run's static ``report.html``, the page a user mails to a colleague.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from lmtune.studio import layout
from lmtune.studio.index import RunNotFound, run_dir

router = APIRouter()

STATUSES = ("queued", "running", "finished", "failed", "interrupted", "cancelled")
COLUMNS = [("name", "Run"), ("task", "Task"), ("model", "Model"), ("method", "Method"), ("status", "Status"),
           ("value", "Metric [95% CI]"), ("winner", "Verdict's winner"), ("started_at", "Started"),
           ("duration_s", "Duration")]


def all_rows(request: Request) -> list[dict[str, Any]]:
    """The folder's runs, with the queue's runs that have no directory yet first."""
    studio = request.app.state.studio
    rows = studio.index.rows()
    if studio.queue is None:
        return rows
    pending = studio.queue.pending()
    for row in rows:  # what the studio's job knows and status.json cannot say: queued again, cancelled
        row["status"] = studio.queue.status_of(row["name"], row["status"]) or row["status"]
    known = {r["name"] for r in rows}
    return [p for p in pending if p["name"] not in known] + rows


@router.get("/api/runs")
def api_runs(request: Request) -> dict[str, Any]:
    return {"runs": all_rows(request)}


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> str:
    studio = request.app.state.studio
    head = "".join(f'<th><button type="button" class="sort" data-key="{k}">{layout.esc(label)}</button></th>'
                   for k, label in COLUMNS)
    options = "".join(f'<option value="{s}">{s}</option>' for s in STATUSES)
    body = (f'<h1>Runs</h1><p class="meta">in <code>{layout.esc(studio.runs)}</code>; updated every 2 s</p>'
            '<div class="toolbar"><input id="filter" type="search" placeholder="Filter by name, task, model, method">'
            f'<select id="status-filter"><option value="">any status</option>{options}</select>'
            '<button type="button" id="compare-selected" disabled>Compare selected</button></div>'
            f'<table id="runs" class="runs"><thead><tr><th></th>{head}</tr></thead><tbody></tbody></table>'
            '<p id="empty" class="meta" hidden>No runs yet: start one from <a href="/new">New run</a>, '
            'or run <code>lmtune train RECIPE</code> with its output in this folder.</p>')
    return layout.page("Runs", body, "/", ("runs.js",), {"runs": all_rows(request)})


@router.get("/runs/{name}/report")
def report(request: Request, name: str) -> FileResponse:
    run = run_dir(request.app.state.studio.runs, name)
    if not run.report.is_file():
        raise RunNotFound(name)
    return FileResponse(run.report, media_type="text/html")
