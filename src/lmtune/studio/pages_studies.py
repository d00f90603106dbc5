"""The Studies page: every search, learning curve and active-learning experiment in the runs folder.

``GET /studies`` renders the table (kind, name, progress such as "7 trials: 5 complete, 2 pruned", the best value
so far, when the study last changed), newest first; ``studies.js`` polls ``GET /api/studies`` every three
seconds. Each row links to its kind's page (:mod:`~lmtune.studio.pages_tune`, :mod:`~lmtune.studio.pages_curve`,
:mod:`~lmtune.studio.pages_active`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lmtune.studio import layout, pages_active, pages_curve, studies, tune_study

router = APIRouter()

ROWS = {"tune": tune_study.row, "curve": pages_curve.row, "active": pages_active.row}
LABELS = {"tune": "hyperparameter search", "curve": "learning curve", "active": "active learning"}


def rows(root) -> list[dict[str, Any]]:
    """One row per study, newest first."""
    out = []
    for study in studies.find(root):
        row = {"kind": study.kind, "label": LABELS[study.kind], "name": study.name, "url": study.url,
               **ROWS[study.kind](root, study)}
        out.append(row)
    return sorted(out, key=lambda r: r.get("updated") or 0, reverse=True)


@router.get("/api/studies")
def api_studies(request: Request) -> dict[str, Any]:
    return {"studies": rows(request.app.state.studio.runs)}


@router.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request) -> str:
    root = request.app.state.studio.runs
    body = (f'<h1>Studies</h1><p class="meta">searches (<code>lmtune tune</code>), learning curves '
            f'(<code>lmtune curve</code>) and active-learning experiments (<code>lmtune active --oracle</code>) in '
            f'<code>{layout.esc(root)}</code>; updated every 3 s</p>'
            '<table id="studies" class="runs"><thead><tr><th>Kind</th><th>Study</th><th>Progress</th>'
            '<th>Best so far</th><th>Updated</th></tr></thead><tbody></tbody></table>'
            '<p id="empty" class="meta" hidden>No studies yet: run <code>lmtune tune</code>, <code>lmtune curve</code> '
            'or <code>lmtune active --oracle</code> with its output in this folder.</p>')
    return layout.page("Studies", body, "/studies", ("studies.js",), {"studies": rows(root)})
