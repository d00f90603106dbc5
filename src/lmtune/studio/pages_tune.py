"""The Tune page: one search of ``lmtune tune``, live while it runs.

``GET /tune/<name>`` renders the page with the study as read at that moment (:mod:`lmtune.studio.tune_study`):
the summary, the best values, the leaderboard (each trial's state, objective, values, last validation loss,
seconds and a link to its run's page), the parameter importances and a parallel-coordinate plot of the complete
trials; ``tune.js`` draws them and polls ``GET /api/tune/<name>`` every three seconds, so trials appear and
change state while the search runs (a search can be resumed at any time, so the page never stops polling; an
unchanged study costs two ``stat`` calls).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lmtune.studio import layout, studies, tune_study

router = APIRouter()


def _view(request: Request, name: str) -> dict[str, Any]:
    root = request.app.state.studio.runs
    return tune_study.view(root, studies.study_dir(root, name, "tune"))


@router.get("/api/tune/{name}")
def api_tune(request: Request, name: str) -> dict[str, Any]:
    return _view(request, name)


@router.get("/tune/{name}", response_class=HTMLResponse)
def tune_page(request: Request, name: str) -> str:
    found = _view(request, name)
    esc = layout.esc
    note = found.get("note")
    body = (f'<h1>Hyperparameter search: {esc(name)}</h1>'
            f'<p class="meta">the Optuna study in <code>{esc(name)}/study.db</code>, read-only; updated every 3 s · '
            '<a href="/studies">all studies</a></p>'
            f'<p class="summary" id="tune-summary">{esc(found["summary"])}</p>'
            f'<p class="note" id="tune-note"{"" if note else " hidden"}>{esc(note or "")}</p>'
            '<h2>Best values</h2><div id="tune-best"><p class="meta">no complete trial yet</p></div>'
            '<h2>Leaderboard</h2><p class="meta">complete trials by their objective, then pruned, failed and '
            'running ones; a trial\'s run opens on its own page</p>'
            '<div class="wide"><table id="leaderboard" class="runs"><thead></thead><tbody></tbody></table></div>'
            '<h2>Parameter importances</h2><div id="importances"></div>'
            '<h2>Parallel coordinates</h2><p class="meta">one line per complete trial through its values and its '
            'objective (the last axis); darker is better, the best trial is drawn thickest</p>'
            '<div id="parallel" class="wide"></div>')
    return layout.page(f"tune {name}", body, "/studies", ("charts.js", "tune.js"), found)
